"""A site's sun and weather on the grid: solar geometry, clear-sky irradiance, clouds,
temperature, humidity, pressure, wind and rain.

Theory of operation
-------------------
Every profile of a site computes the same weather from the same seed: the stochastic parts are
named AR(1) streams of the :class:`~enos_lab.sim.Grid` (``cloud``, ``cloud_day``, ``temp``,
``wind``, ``wind_dir``, ``pressure``, ``rain``), so a PV inverter, a weather station and a
meter with the same seed, site, climate and start see the same clouds, temperature and wind.
The models, each a documented physical or empirical one:

- Sun: declination and equation of time from Spencer's Fourier series (J. W. Spencer, "Fourier
  series representation of the position of the sun", Search 2(5), 1971), as in NOAA's "General
  Solar Position Calculations"; hour angle from true solar time; ``cos(zenith) = sin(lat)
  sin(decl) + cos(lat) cos(decl) cos(hour angle)``.
- Clear sky: Haurwitz, ``GHI = 1098 cos(z) exp(-0.059 / cos(z))`` [W/m2] (B. Haurwitz,
  "Insolation in relation to cloudiness and cloud density", J. Meteorology 2, 1945; compared in
  Reno, Hansen and Stein, SAND2012-2389).
- Clouds: cover ``N`` in 0..1 is a logistic function of a day-to-day and a fast AR(1)
  process around the climate's mean cloudiness; the clear-sky index is Kasten and Czeplak's
  ``1 - 0.75 N**3.4`` (Solar Energy 24, 1980).
- Air temperature: an annual and a daily cosine (the daily one damped by clouds, maximum at
  15:00 solar time; a simplification of Parton and Logan, Agricultural Meteorology 23, 1981)
  plus an AR(1) anomaly (correlation time 6 h).
- Humidity: the dew point follows the smooth temperature (annual cycle and anomaly) minus a
  depression, wetter under clouds; relative humidity from the Magnus formula (Alduchov and
  Eskridge, J. Applied Meteorology 35, 1996).
- Pressure: the ICAO standard atmosphere at the site's altitude plus an AR(1) anomaly (36 h).
- Wind: a Weibull-distributed AR(1) process: a standard normal AR(1) (correlation time 3 h)
  mapped through the normal and inverse Weibull distribution functions (the transformed
  Gaussian AR model of Brown, Katz and Murphy, J. Climate Appl. Meteor. 23, 1984); speeds at
  other heights by the power law with exponent 1/7; the direction wanders around the
  prevailing one.
- Rain: when the cover exceeds 0.8 and a rain process is positive, at a rate growing with the
  cover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument
from ._profile import Grid

__all__ = ["Climate", "Site", "site_weather", "solar_position", "weibull_speed"]

_DEG = math.pi / 180.0


@dataclass(frozen=True, slots=True)
class Site:
    """Where a device is.

    ``latitude`` [deg, north positive], ``longitude`` [deg, east positive], ``altitude`` above
    sea level [m], ``utc_offset``: local standard time minus UTC, for daily counters and
    schedules [h]. The default is a site near Shanghai.
    """

    latitude: float = 31.2
    longitude: float = 121.5
    altitude: float = 10.0
    utc_offset: float = 8.0

    def __post_init__(self) -> None:
        if not -90 <= self.latitude <= 90:
            raise InvalidArgument(f"Site.latitude must be -90..90 deg, got {self.latitude!r}")
        if not -180 <= self.longitude <= 180:
            raise InvalidArgument(f"Site.longitude must be -180..180 deg, got {self.longitude!r}")
        if not -14 <= self.utc_offset <= 14:
            raise InvalidArgument(f"Site.utc_offset must be -14..14 h, got {self.utc_offset!r}")


@dataclass(frozen=True, slots=True)
class Climate:
    """The weather a site has on average (the stochastic parts come from the seed).

    ``mean_temperature`` annual mean air temperature [degC]; ``seasonal_amplitude`` half the
    difference between summer and winter means [K]; ``daily_amplitude`` half the clear-day
    temperature swing [K]; ``cloudiness`` mean cloud cover [0..1]; ``mean_wind_speed`` at 10 m
    [m/s] and ``weibull_shape`` [-] of its distribution; ``wind_direction`` prevailing, the
    direction the wind comes from [deg]; ``dew_point_depression`` mean air temperature minus
    dew point [K]; ``rain_intensity`` rate of rain under full cover [mm/h].
    """

    mean_temperature: float = 16.5
    seasonal_amplitude: float = 11.0
    daily_amplitude: float = 4.0
    cloudiness: float = 0.45
    mean_wind_speed: float = 4.0
    weibull_shape: float = 2.0
    wind_direction: float = 135.0
    dew_point_depression: float = 5.0
    rain_intensity: float = 4.0

    def __post_init__(self) -> None:
        if not 0.01 <= self.cloudiness <= 0.99:
            raise InvalidArgument(f"Climate.cloudiness must be 0.01..0.99, got {self.cloudiness}")
        if self.mean_wind_speed <= 0 or self.weibull_shape <= 0:
            raise InvalidArgument(
                f"Climate.mean_wind_speed and weibull_shape must be > 0, got "
                f"{self.mean_wind_speed!r} and {self.weibull_shape!r}"
            )


def solar_position(
    t: np.ndarray, latitude: float, longitude: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(cos_zenith, solar_hour)`` at times ``t`` [s since the Unix epoch]: the cosine of the
    sun's zenith angle [-] (negative below the horizon) and the true solar time [h, 0..24).

    Spencer (1971) / NOAA: fractional year ``g`` [rad], declination and equation of time as
    Fourier series in ``g``; true solar time = UTC + 4 min/deg * longitude + equation of time.
    """
    seconds = np.floor(t).astype("int64").astype("datetime64[s]")
    year = seconds.astype("datetime64[Y]")
    year_start = year.astype("datetime64[s]").astype("int64")
    year_days = (year + 1).astype("datetime64[s]").astype("int64") - year_start
    g = 2 * np.pi * ((t - year_start) / 86_400.0 - 0.5) / (year_days / 86_400.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * np.cos(g)
        - 0.032077 * np.sin(g)
        - 0.014615 * np.cos(2 * g)
        - 0.040849 * np.sin(2 * g)
    )  # [min]
    decl = (
        0.006918
        - 0.399912 * np.cos(g)
        + 0.070257 * np.sin(g)
        - 0.006758 * np.cos(2 * g)
        + 0.000907 * np.sin(2 * g)
        - 0.002697 * np.cos(3 * g)
        + 0.00148 * np.sin(3 * g)
    )  # [rad]
    solar_minutes = np.mod(np.mod(t, 86_400.0) / 60.0 + eqtime + 4.0 * longitude, 1440.0)
    hour_angle = (solar_minutes / 4.0 - 180.0) * _DEG
    lat = latitude * _DEG
    cos_zenith = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    return cos_zenith, solar_minutes / 60.0


def clear_sky_ghi(cos_zenith: np.ndarray) -> np.ndarray:
    """Haurwitz clear-sky global horizontal irradiance; 0 with the sun below the horizon.
    [W/m2]"""
    cz = np.maximum(cos_zenith, 1e-6)
    return np.where(cos_zenith > 0, 1098.0 * cz * np.exp(-0.059 / cz), 0.0)


_erfc = np.frompyfunc(math.erfc, 1, 1)


def weibull_speed(z: np.ndarray, mean: float, shape: float) -> np.ndarray:
    """Map standard normal values ``z`` to Weibull-distributed speeds with ``mean`` [m/s] and
    ``shape`` [-]: ``c * (-ln(1 - Phi(z)))**(1/k)`` with scale ``c = mean / Gamma(1 + 1/k)``."""
    scale = mean / math.gamma(1.0 + 1.0 / shape)
    tail = np.asarray(_erfc(z / math.sqrt(2.0)), dtype=float)
    upper = np.maximum(tail * 0.5, 1e-300)  # 1 - Phi(z)
    return np.asarray(scale * (-np.log(upper)) ** (1.0 / shape), dtype=float)


def _logistic(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=float)


def _saturation_pressure(temperature: np.ndarray) -> np.ndarray:
    """Magnus formula over water [hPa] at ``temperature`` [degC]."""
    return np.asarray(6.1094 * np.exp(17.625 * temperature / (temperature + 243.04)))


def site_weather(grid: Grid, site: Site, climate: Climate) -> dict[str, Any]:
    """The site's sun and weather at the grid points (see the module docstring).

    Keys: ``cos_zenith`` [-], ``solar_hour`` [h], ``ghi_clear`` and ``ghi`` [W/m2],
    ``cloud_cover`` [0..1], ``temperature`` [degC], ``humidity`` [%], ``pressure`` [hPa],
    ``wind_speed`` at 10 m [m/s], ``wind_z`` (its normal process) [-], ``wind_direction``
    the wind comes from, unwrapped (not reduced modulo 360) [deg], ``rain_rate`` [mm/h].
    """
    t = grid.t
    cos_zenith, solar_hour = solar_position(t, site.latitude, site.longitude)
    ghi_clear = clear_sky_ghi(cos_zenith)
    # clouds: a day-to-day regime and fast cells, around the mean cover
    mix = 0.8 * grid.ar1("cloud_day", 2 * 86_400.0) + 0.6 * grid.ar1("cloud", 2_400.0)
    mean = math.log(climate.cloudiness / (1.0 - climate.cloudiness))
    cover = _logistic(mean + 1.7 * mix)
    ghi = ghi_clear * (1.0 - 0.75 * cover**3.4)
    # temperature: annual and daily cycles, anomaly
    day_of_year = np.mod(t / 86_400.0, 365.2425)  # phase only: 0 is 1 January (in 1970)
    hemisphere = 1.0 if site.latitude >= 0 else -1.0
    season = np.cos(2 * np.pi * (day_of_year - 201) / 365.2425)  # warmest about 20 July
    anomaly = 1.5 * grid.ar1("temp", 6 * 3_600.0)
    smooth = climate.mean_temperature + climate.seasonal_amplitude * hemisphere * season + anomaly
    day_cycle = np.cos(2 * np.pi * (solar_hour - 15.0) / 24.0)  # warmest at 15:00 solar time
    temperature = smooth + climate.daily_amplitude * (1.0 - 0.6 * cover) * day_cycle
    dew_point = smooth - climate.dew_point_depression + 3.0 * (cover - 0.5)
    vapour = _saturation_pressure(np.minimum(dew_point, temperature))
    humidity = np.clip(100.0 * vapour / _saturation_pressure(temperature), 5.0, 100.0)
    standard = 1013.25 * (1.0 - 2.25577e-5 * site.altitude) ** 5.25588  # ICAO atmosphere
    pressure = standard + 6.0 * grid.ar1("pressure", 36 * 3_600.0)
    wind_z = grid.ar1("wind", 3 * 3_600.0)
    wind_speed = weibull_speed(wind_z, climate.mean_wind_speed, climate.weibull_shape)
    # unwrapped (so that it interpolates across north): take it modulo 360
    wind_direction = climate.wind_direction + 40.0 * grid.ar1("wind_dir", 8 * 3_600.0)
    rain = grid.ar1("rain", 3_600.0)
    intensity = climate.rain_intensity * (cover - 0.8) / 0.2 * np.minimum(rain, 2.0)
    rain_rate = np.where((cover > 0.8) & (rain > 0), intensity, 0.0)
    return {
        "cos_zenith": cos_zenith,
        "solar_hour": solar_hour,
        "ghi_clear": ghi_clear,
        "ghi": ghi,
        "cloud_cover": cover,
        "temperature": temperature,
        "humidity": humidity,
        "pressure": pressure,
        "wind_speed": wind_speed,
        "wind_z": wind_z,
        "wind_direction": wind_direction,
        "rain_rate": rain_rate,
    }
