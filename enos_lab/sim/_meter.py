"""The energy meter profile (library model ``energy_meter``).

The metered load follows a daily load shape in local time (the dataset ``daily_load_shapes``,
one of its columns, interpolated over the day and wrapped at midnight), scaled by
``peak_power``, reduced on weekends by ``weekend_factor`` and varied by a seeded AR(1) process
(correlation time 20 min). An optional PV array behind the meter (``pv_peak``, under the site's
irradiance) offsets it; the net power is imported when positive and exported when negative,
and the two energy registers integrate each part, so they never decrease. Reactive power comes
from the load's power factor; voltages sag with load and rise with export; currents share the
apparent power among the phases with a fixed, seeded imbalance.
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

__all__ = ["EnergyMeterProfile", "load_shape"]

_WEEK = 7 * 86_400.0


@cache
def load_shape(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Column ``kind`` of the dataset ``daily_load_shapes`` as ``(hours, per_unit)``, closed
    over the day (the first point repeated at 24 h)."""
    frame, meta = datasets.load("daily_load_shapes")
    if kind == "hour" or kind not in frame.columns:
        kinds = [c for c in meta["columns"] if c != "hour"]
        raise InvalidArgument(f"load shape {kind!r} not found (available: {', '.join(kinds)})")
    hours = np.append(frame["hour"].to_numpy(float), 24.0)
    values = frame[kind].to_numpy(float)
    return hours, np.append(values, values[0])


@dataclass(frozen=True, slots=True)
class EnergyMeterProfile(Profile):
    """A three-phase energy meter at a consumer (model ``energy_meter``).

    ``peak_power`` load at the peak of the day's shape [kW]; ``shape`` a column of the dataset
    ``daily_load_shapes`` (``residential``, ``commercial``, ``industrial``);
    ``weekend_factor`` load on Saturdays and Sundays relative to weekdays [-];
    ``load_variation`` relative spread of the load around its shape [-]; ``pv_peak`` peak
    power of a PV array behind the meter [kW] (0: none); ``power_factor`` of the load [-];
    ``nominal_voltage`` [V]; ``nominal_frequency`` [Hz]; registers at the start
    ``import_energy`` and ``export_energy`` [kWh]; ``site`` and ``climate`` (local time for
    the shape, sun for the PV).
    """

    model_id: ClassVar[str] = "energy_meter"
    continuous: ClassVar[tuple[str, ...]] = (
        "p_import",
        "p_export",
        "q",
        "v1",
        "v2",
        "v3",
        "i1",
        "i2",
        "i3",
        "frequency",
    )
    counters: ClassVar[tuple[Counter, ...]] = (
        Counter("import_energy", "p_import"),
        Counter("export_energy", "p_export"),
    )

    peak_power: float = 50.0
    shape: str = "commercial"
    weekend_factor: float = 0.5
    load_variation: float = 0.08
    pv_peak: float = 0.0
    power_factor: float = 0.95
    nominal_voltage: float = 230.0
    nominal_frequency: float = 50.0
    import_energy: float = 0.0
    export_energy: float = 0.0
    site: Site = field(default_factory=Site)
    climate: Climate = field(default_factory=Climate)

    def __post_init__(self) -> None:
        if self.peak_power <= 0 or self.pv_peak < 0 or self.weekend_factor < 0:
            raise InvalidArgument(
                f"EnergyMeterProfile: need peak_power > 0, pv_peak >= 0, weekend_factor >= 0, "
                f"got {self.peak_power!r}, {self.pv_peak!r}, {self.weekend_factor!r}"
            )
        if not 0 < self.power_factor <= 1:
            raise InvalidArgument(f"power_factor must be in (0, 1], got {self.power_factor!r}")
        load_shape(self.shape)  # an unknown shape fails here, naming the choices

    def _block(self, grid: Grid) -> Mapping[str, np.ndarray | float]:
        local = grid.t + self.site.utc_offset * 3600.0
        hours, per_unit = load_shape(self.shape)
        shape = np.interp(np.mod(local / 3600.0, 24.0), hours, per_unit)
        weekday = np.mod(np.floor(local / 86_400.0) + 3.0, 7.0)  # 0 = Monday (1970-01-01: Thu)
        shape = np.where(weekday >= 5, shape * self.weekend_factor, shape)
        wobble = np.maximum(1.0 + self.load_variation * grid.ar1("load", 1_200.0), 0.0)
        load = self.peak_power * shape * wobble
        if self.pv_peak:
            pv = self.pv_peak * site_weather(grid, self.site, self.climate)["ghi"] / 1000.0
        else:
            pv = np.zeros(len(grid.t))
        net = load - pv
        q = load * math.tan(math.acos(self.power_factor))
        apparent = np.hypot(net, q)
        sag = 1.0 - 0.03 * load / self.peak_power + 0.02 * pv / max(self.pv_peak, 1e-9)
        imbalance = 1.0 + 0.04 * grid.constants("imbalance", 3)
        volts = [
            self.nominal_voltage * (sag + 0.004 * grid.ar1(f"grid_v{n}", 600.0)) for n in (1, 2, 3)
        ]
        amps = [
            apparent * 1000.0 / (3.0 * volts[n]) * imbalance[n] / imbalance.mean() for n in range(3)
        ]
        return {
            "p_import": np.maximum(net, 0.0),
            "p_export": np.maximum(-net, 0.0),
            "q": q,
            "v1": volts[0],
            "v2": volts[1],
            "v3": volts[2],
            "i1": amps[0],
            "i2": amps[1],
            "i3": amps[2],
            "frequency": self.nominal_frequency + 0.02 * grid.ar1("grid_f", 300.0),
        }

    def _noise(self) -> Mapping[str, tuple[float, float]]:
        return {
            "p_import": (0.0, 0.002),
            "p_export": (0.0, 0.002),
            "q": (0.0, 0.005),
            **{f"v{n}": (0.1, 0.0) for n in (1, 2, 3)},
            **{f"i{n}": (0.0, 0.002) for n in (1, 2, 3)},
            "frequency": (0.002, 0.0),
        }

    def _initial(self) -> Mapping[str, float]:
        return {"import_energy": self.import_energy, "export_energy": self.export_energy}

    def _emit(self, q: dict[str, Any], at_ms: int) -> Sample:
        power = q["p_import"] - q["p_export"]
        apparent = math.hypot(power, q["q"])
        return {
            "active_power": round(power, 3),
            "reactive_power": round(q["q"], 3),
            "apparent_power": round(apparent, 3),
            "power_factor": round(abs(power) / apparent, 4) if apparent > 0 else 1.0,
            "frequency": round(q["frequency"], 3),
            "voltage": [round(q["v1"], 2), round(q["v2"], 2), round(q["v3"], 2)],
            "current": [round(max(q[f"i{n}"], 0.0), 3) for n in (1, 2, 3)],
            "import_energy": round(q["import_energy"], 3),
            "export_energy": round(q["export_energy"], 3),
            "reading_time": at_ms,
        }
