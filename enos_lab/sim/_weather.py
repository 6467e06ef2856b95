"""The weather station profile (library model ``weather_station``).

Everything comes from the site's weather (:func:`~enos_lab.sim._site.site_weather`): air
temperature, humidity, pressure, wind at 10 m and global horizontal irradiance. The module
temperature of a reference PV module follows the NOCT model; irradiation today integrates the
irradiance from local midnight; precipitation is the rain of the last hour, a rolling sum over
the grid carried across blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ._profile import Counter, Grid, Profile, Sample
from ._site import Climate, Site, site_weather

__all__ = ["WeatherStationProfile"]


@dataclass(frozen=True, slots=True)
class WeatherStationProfile(Profile):
    """A site weather station of a renewable plant (model ``weather_station``).

    ``noct`` nominal operating cell temperature of the reference module [degC];
    ``daily_irradiation`` at the start [kWh/m2]; ``site`` and ``climate``.
    """

    model_id: ClassVar[str] = "weather_station"
    continuous: ClassVar[tuple[str, ...]] = (
        "temperature",
        "module_temperature",
        "humidity",
        "pressure",
        "wind_speed",
        "wind_direction",
        "ghi",
        "ghi_kw",
        "precipitation",
    )
    discrete: ClassVar[tuple[str, ...]] = ("raining",)
    counters: ClassVar[tuple[Counter, ...]] = (
        Counter("irradiation_total", "ghi_kw", "irradiation_today"),
    )

    noct: float = 45.0
    daily_irradiation: float = 0.0
    site: Site = field(default_factory=Site)
    climate: Climate = field(default_factory=Climate)

    def _block(self, grid: Grid) -> Mapping[str, np.ndarray | float]:
        weather = site_weather(grid, self.site, self.climate)
        ghi = weather["ghi"]
        # rain of the last hour: a rolling sum of each step's rain, carried across blocks
        window = max(1, round(3600.0 / grid.step))
        rain = weather["rain_rate"] * grid.step / 3600.0  # [mm] in the step after each point
        recent: deque[float] = grid.carry.setdefault("rain", deque([0.0] * window, maxlen=window))
        total = float(sum(recent))
        last_hour = np.empty(len(rain))
        for i, amount in enumerate(rain.tolist()):
            last_hour[i] = total
            if i < len(rain) - 1:  # the last point's step belongs to the next block
                total += amount - recent[0]
                recent.append(amount)
        return {
            "temperature": weather["temperature"],
            "module_temperature": weather["temperature"] + ghi / 800.0 * (self.noct - 20.0),
            "humidity": weather["humidity"],
            "pressure": weather["pressure"],
            "wind_speed": weather["wind_speed"],
            "wind_direction": weather["wind_direction"],
            "ghi": ghi,
            "ghi_kw": ghi / 1000.0,
            "precipitation": np.maximum(last_hour, 0.0),
            "raining": weather["rain_rate"] > 0,
        }

    def _noise(self) -> Mapping[str, tuple[float, float]]:
        return {
            "temperature": (0.05, 0.0),
            "module_temperature": (0.1, 0.0),
            "humidity": (0.3, 0.0),
            "pressure": (0.05, 0.0),
            "wind_speed": (0.0, 0.05),
            "wind_direction": (2.0, 0.0),
            "ghi": (0.0, 0.01),
        }

    def _initial(self) -> Mapping[str, float]:
        return {"irradiation_total": self.daily_irradiation}

    def _utc_offset_s(self) -> float:
        return self.site.utc_offset * 3600.0

    def _emit(self, q: dict[str, Any], at_ms: int) -> Sample:
        return {
            "ambient_temperature": round(q["temperature"], 2),
            "module_temperature": round(q["module_temperature"], 2),
            "relative_humidity": round(min(max(q["humidity"], 0.0), 100.0), 1),
            "air_pressure": round(q["pressure"], 2),
            "wind_speed": round(max(q["wind_speed"], 0.0), 2),
            "wind_direction": round(q["wind_direction"] % 360.0, 1),
            "global_irradiance": round(max(q["ghi"], 0.0), 1),
            "daily_irradiation": round(q["irradiation_today"], 4),
            "precipitation": round(q["precipitation"], 2),
            "raining": bool(q["raining"]),
        }
