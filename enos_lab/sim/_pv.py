"""The PV inverter profile (library model ``pv_inverter``).

Irradiance on horizontal modules is the site's global horizontal irradiance (Haurwitz clear sky
under seeded clouds, :mod:`enos_lab.sim._site`); the rest follows PVWatts (A. P. Dobos,
"PVWatts Version 5 Manual", NREL/TP-6A20-62641, 2014):

- cell temperature by the NOCT model, ``T_cell = T_air + G / 800 * (NOCT - 20)`` (Duffie and
  Beckman, Solar Engineering of Thermal Processes, 23.3);
- DC power ``P_dc = P_dc0 * G / 1000 * (1 + gamma * (T_cell - 25))``, ``P_dc0 = dc_ac_ratio *
  rated_power``;
- the PVWatts inverter efficiency curve ``eta = eta_nom / 0.9637 * (-0.0162 z - 0.0059 / z +
  0.9858)``, ``z = P_dc / (rated_power / eta_nom)``, and AC power clipped at ``rated_power``;
- the inverter waits in standby until the array gives 1 % of its rated power.

DC voltage is the maximum-power voltage, falling with cell temperature (``beta``) and weakly
with irradiance; daylight standby shows the open-circuit voltage, night 0 V.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidArgument
from ._profile import Counter, Grid, Profile, Sample
from ._site import Climate, Site, site_weather

__all__ = ["PvInverterProfile"]

_STATE_STANDBY, _STATE_RUNNING, _STATE_DERATED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PvInverterProfile(Profile):
    """A grid-tied PV string inverter and its array (model ``pv_inverter``).

    ``rated_power`` AC rating of the inverter [kW]; ``dc_ac_ratio`` array DC rating over AC
    rating [-]; ``gamma`` power temperature coefficient [1/K]; ``noct`` nominal operating cell
    temperature [degC]; ``v_mp`` array maximum-power voltage at STC [V]; ``beta`` its
    temperature coefficient [1/K]; ``eta_nominal`` nominal inverter efficiency [-];
    ``power_factor`` [-] (1: no reactive power); ``nominal_voltage`` phase voltage [V];
    ``nominal_frequency`` [Hz]; ``total_energy`` counter value at the start [kWh]; ``site`` and
    ``climate``: where it is and its weather.
    """

    model_id: ClassVar[str] = "pv_inverter"
    continuous: ClassVar[tuple[str, ...]] = (
        "p_ac",
        "p_dc",
        "q",
        "v_dc",
        "t_internal",
        "v1",
        "v2",
        "v3",
        "frequency",
    )
    counters: ClassVar[tuple[Counter, ...]] = (Counter("total_energy", "p_ac", "daily_energy"),)

    rated_power: float = 10.0
    dc_ac_ratio: float = 1.2
    gamma: float = -0.0037
    noct: float = 45.0
    v_mp: float = 600.0
    beta: float = -0.0033
    eta_nominal: float = 0.96
    power_factor: float = 1.0
    nominal_voltage: float = 230.0
    nominal_frequency: float = 50.0
    total_energy: float = 0.0
    site: Site = field(default_factory=Site)
    climate: Climate = field(default_factory=Climate)

    def __post_init__(self) -> None:
        if self.rated_power <= 0 or self.dc_ac_ratio <= 0 or self.v_mp <= 0:
            raise InvalidArgument(
                f"PvInverterProfile: rated_power, dc_ac_ratio and v_mp must be > 0, got "
                f"{self.rated_power!r}, {self.dc_ac_ratio!r}, {self.v_mp!r}"
            )
        if not 0 < self.power_factor <= 1 or not 0 < self.eta_nominal <= 1:
            raise InvalidArgument(
                f"PvInverterProfile: power_factor and eta_nominal must be in (0, 1], got "
                f"{self.power_factor!r}, {self.eta_nominal!r}"
            )

    def _block(self, grid: Grid) -> Mapping[str, np.ndarray | float]:
        weather = site_weather(grid, self.site, self.climate)
        ghi = weather["ghi"]
        t_cell = weather["temperature"] + ghi / 800.0 * (self.noct - 20.0)
        p_dc0 = self.dc_ac_ratio * self.rated_power
        p_dc = np.maximum(p_dc0 * ghi / 1000.0 * (1.0 + self.gamma * (t_cell - 25.0)), 0.0)
        running = p_dc >= 0.01 * self.rated_power
        zeta = np.maximum(p_dc, 1e-9) / (self.rated_power / self.eta_nominal)
        eta = self.eta_nominal / 0.9637 * (-0.0162 * zeta - 0.0059 / zeta + 0.9858)
        p_ac = np.where(running, np.clip(eta * p_dc, 0.0, self.rated_power), 0.0)
        p_dc = np.where(running, p_dc, 0.0)
        v_temp = self.v_mp * (1.0 + self.beta * (t_cell - 25.0))
        v_mp = v_temp * np.maximum(0.85, 1.0 + 0.03 * np.log(np.maximum(ghi, 1.0) / 1000.0))
        v_dc = np.where(running, v_mp, np.where(ghi >= 1.0, 1.2 * v_temp, 0.0))
        load = p_ac / self.rated_power
        phases = [
            self.nominal_voltage * (1.0 + 0.004 * grid.ar1(f"grid_v{n}", 600.0) + 0.01 * load)
            for n in (1, 2, 3)
        ]
        return {
            "p_ac": p_ac,
            "p_dc": p_dc,
            "q": p_ac * math.tan(math.acos(self.power_factor)),
            "v_dc": v_dc,
            "t_internal": weather["temperature"] + 5.0 + 20.0 * load,
            "v1": phases[0],
            "v2": phases[1],
            "v3": phases[2],
            "frequency": self.nominal_frequency + 0.02 * grid.ar1("grid_f", 300.0),
        }

    def _noise(self) -> Mapping[str, tuple[float, float]]:
        return {
            "p_ac": (0.0, 0.002),
            "q": (0.0, 0.01),
            "v_dc": (0.0, 0.002),
            "t_internal": (0.1, 0.0),
            "v1": (0.2, 0.0),
            "v2": (0.2, 0.0),
            "v3": (0.2, 0.0),
            "frequency": (0.005, 0.0),
        }

    def _initial(self) -> Mapping[str, float]:
        return {"total_energy": self.total_energy}

    def _utc_offset_s(self) -> float:
        return self.site.utc_offset * 3600.0

    def _emit(self, q: dict[str, Any], at_ms: int) -> Sample:
        p_ac = min(max(q["p_ac"], 0.0), self.rated_power)
        p_dc = q["p_dc"]
        v_dc = max(q["v_dc"], 0.0)
        if p_ac <= 0.0:
            state = _STATE_STANDBY
        elif p_ac >= 0.999 * self.rated_power:
            state = _STATE_DERATED
        else:
            state = _STATE_RUNNING
        return {
            "active_power": round(p_ac, 4),
            "reactive_power": round(q["q"], 4),
            "daily_energy": round(q["daily_energy"], 4),
            "total_energy": round(q["total_energy"], 4),
            "dc_voltage": round(v_dc, 2),
            "dc_current": round(p_dc * 1000.0 / v_dc, 3) if p_ac > 0 and v_dc > 0 else 0.0,
            "grid_frequency": round(q["frequency"], 3),
            "phase_voltage": [round(q["v1"], 2), round(q["v2"], 2), round(q["v3"], 2)],
            "internal_temperature": round(q["t_internal"], 2),
            "efficiency": round(min(100.0 * p_ac / p_dc, 100.0), 2) if p_ac > 0 else 0.0,
            "state": state,
            "fault_code": 0,
        }
