"""The wind turbine profile (library model ``wind_turbine``).

Hub-height wind is the site's Weibull-distributed AR(1) wind (:mod:`enos_lab.sim._site`)
raised to the hub by the power law with exponent 1/7; power follows a power curve (the dataset
``turbine_power_curve`` by default, scaled by the rated power) between cut-in and cut-out. A
storm stop has hysteresis: the turbine stops when the wind exceeds the cut-out speed and
restarts only once it falls below ``restart_speed``. Below rated wind the rotor runs at the
optimal tip-speed ratio (``rpm = 60 tsr v / (pi D)``) between its minimum and rated speeds with
the blades at fine pitch; above rated the pitch rises with the wind; idle blades are at 30
degrees, stopped ones feathered at 88. The nacelle yaws towards the wind at ``yaw_rate`` once
it is off by more than ``yaw_deadband``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

import numpy as np

from .. import datasets
from ..errors import InvalidArgument
from ._profile import Counter, Grid, Profile, Sample
from ._site import Climate, Site, site_weather

__all__ = ["WindTurbineProfile", "default_power_curve"]

_STOPPED, _RUNNING, _IDLE = 0, 1, 2
_SHEAR = 1.0 / 7.0  # power-law wind shear exponent over open land


@cache
def default_power_curve() -> tuple[tuple[float, float], ...]:
    """The dataset ``turbine_power_curve`` as ``((wind speed [m/s], power [per unit]), ...)``."""
    frame, _ = datasets.load("turbine_power_curve")
    return tuple(zip(frame["wind_speed"].tolist(), frame["power"].tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class WindTurbineProfile(Profile):
    """A horizontal-axis, pitch-regulated, variable-speed wind turbine (model
    ``wind_turbine``).

    ``rated_power`` [kW]; ``rotor_diameter`` [m]; ``hub_height`` [m]; ``power_curve``: wind
    speed [m/s] and power per unit of rated, increasing speeds (``None``: the dataset
    ``turbine_power_curve``); ``cut_out`` [m/s] and ``restart_speed`` [m/s] of the storm stop;
    ``rated_wind`` where the pitch starts to rise [m/s]; ``tip_speed_ratio`` [-];
    ``min_rotor_speed`` and ``rated_rotor_speed`` [rpm]; ``gearbox_ratio`` [-];
    ``power_factor`` [-]; ``yaw_rate`` [deg/s]; ``yaw_deadband`` [deg]; ``total_energy``
    counter value at the start [kWh]; ``site`` and ``climate`` (winds at 10 m: the default
    climate is a windy site, 5 m/s mean at 10 m).
    """

    model_id: ClassVar[str] = "wind_turbine"
    continuous: ClassVar[tuple[str, ...]] = (
        "power",
        "q",
        "wind_speed",
        "wind_direction",
        "rotor_speed",
        "pitch",
        "nacelle_temperature",
    )
    discrete: ClassVar[tuple[str, ...]] = ("stopped", "nacelle")
    counters: ClassVar[tuple[Counter, ...]] = (Counter("total_energy", "power"),)

    rated_power: float = 2000.0
    rotor_diameter: float = 100.0
    hub_height: float = 80.0
    power_curve: tuple[tuple[float, float], ...] | None = None
    cut_out: float = 25.0
    restart_speed: float = 20.0
    rated_wind: float = 11.5
    tip_speed_ratio: float = 8.0
    min_rotor_speed: float = 6.0
    rated_rotor_speed: float = 15.0
    gearbox_ratio: float = 100.0
    power_factor: float = 0.98
    yaw_rate: float = 0.5
    yaw_deadband: float = 8.0
    total_energy: float = 0.0
    site: Site = field(default_factory=Site)
    climate: Climate = field(default_factory=lambda: Climate(mean_wind_speed=5.0))

    def __post_init__(self) -> None:
        if self.rated_power <= 0 or self.rotor_diameter <= 0 or self.hub_height <= 0:
            raise InvalidArgument(
                f"WindTurbineProfile: rated_power, rotor_diameter and hub_height must be > 0, "
                f"got {self.rated_power!r}, {self.rotor_diameter!r}, {self.hub_height!r}"
            )
        if not 0 < self.restart_speed < self.cut_out:
            raise InvalidArgument(
                f"WindTurbineProfile: need 0 < restart_speed < cut_out, got "
                f"{self.restart_speed!r} and {self.cut_out!r}"
            )
        curve = self.power_curve
        if curve is not None:
            speeds = [v for v, _ in curve]
            if len(curve) < 2 or speeds != sorted(set(speeds)):
                raise InvalidArgument("power_curve needs 2 or more points of increasing speed")
            if any(not 0 <= p <= 1 for _, p in curve):
                raise InvalidArgument("power_curve powers are per unit of rated power: 0..1")

    def _curve(self) -> tuple[np.ndarray, np.ndarray]:
        curve = self.power_curve if self.power_curve is not None else default_power_curve()
        return np.array([v for v, _ in curve]), np.array([p for _, p in curve])

    def _block(self, grid: Grid) -> Mapping[str, np.ndarray | float]:
        weather = site_weather(grid, self.site, self.climate)
        wind = weather["wind_speed"] * (self.hub_height / 10.0) ** _SHEAR
        direction = weather["wind_direction"]
        carry = grid.carry
        # storm stop with hysteresis; yaw with a deadband (path-dependent: stepped point by point)
        stopped_now = bool(carry.get("stopped", False))
        nacelle_now = float(carry.get("nacelle", direction[0]))
        stopped = np.empty(len(wind))
        nacelle = np.empty(len(wind))
        max_turn = self.yaw_rate * grid.step
        for i, (v, d) in enumerate(zip(wind.tolist(), direction.tolist(), strict=True)):
            if i:  # point 0 is the last point of the block before
                stopped_now = v > self.cut_out or (stopped_now and v >= self.restart_speed)
                error = (d - nacelle_now + 180.0) % 360.0 - 180.0
                if abs(error) > self.yaw_deadband:
                    nacelle_now = (
                        nacelle_now + math.copysign(min(abs(error), max_turn), error)
                    ) % 360.0
            stopped[i] = stopped_now
            nacelle[i] = nacelle_now
        carry["stopped"] = stopped_now
        carry["nacelle"] = nacelle_now
        speeds, per_unit = self._curve()
        power = (
            np.where(stopped > 0, 0.0, np.interp(wind, speeds, per_unit, 0.0, 0.0))
            * self.rated_power
        )
        running = power > 0
        optimal = 60.0 * self.tip_speed_ratio * wind / (math.pi * self.rotor_diameter)
        rotor = np.where(
            running,
            np.clip(optimal, self.min_rotor_speed, self.rated_rotor_speed),
            np.where(stopped > 0, 0.0, 0.5),
        )
        pitch = np.where(
            running,
            np.clip(1.6 * (wind - self.rated_wind), 0.0, 30.0),
            np.where(stopped > 0, 88.0, 30.0),
        )
        load = power / self.rated_power
        return {
            "power": power,
            "q": power * math.tan(math.acos(self.power_factor)),
            "wind_speed": wind,
            "wind_direction": direction,
            "rotor_speed": rotor,
            "pitch": pitch,
            "nacelle_temperature": weather["temperature"] + 8.0 + 12.0 * load,
            "stopped": stopped,
            "nacelle": nacelle,
        }

    def _noise(self) -> Mapping[str, tuple[float, float]]:
        return {
            "power": (0.0, 0.003),
            "q": (0.0, 0.01),
            "wind_speed": (0.0, 0.05),
            "rotor_speed": (0.0, 0.005),
            "pitch": (0.05, 0.0),
            "nacelle_temperature": (0.1, 0.0),
        }

    def _initial(self) -> Mapping[str, float]:
        return {"total_energy": self.total_energy}

    def _emit(self, q: dict[str, Any], at_ms: int) -> Sample:
        power = min(max(q["power"], 0.0), self.rated_power)
        rotor = max(q["rotor_speed"], 0.0)
        pitch = min(max(q["pitch"], -2.0), 90.0)
        if q["stopped"]:
            state = _STOPPED
        elif power > 0:
            state = _RUNNING
        else:
            state = _IDLE
        return {
            "active_power": round(power, 3),
            "reactive_power": round(q["q"], 3),
            "wind_speed": round(max(q["wind_speed"], 0.0), 2),
            "wind_direction": round(q["wind_direction"] % 360.0, 1),
            "rotor_speed": round(rotor, 2),
            "generator_speed": round(rotor * self.gearbox_ratio, 1),
            "pitch_angle": [round(pitch, 2), round(pitch + 0.05, 2), round(pitch - 0.05, 2)],
            "nacelle_position": round(q["nacelle"] % 360.0, 1),
            "nacelle_temperature": round(q["nacelle_temperature"], 2),
            "total_energy": round(q["total_energy"], 3),
            "state": state,
        }
