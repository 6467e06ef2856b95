"""The profiles of the library models: every sample validates against its thing model, the
physics is sane (no PV power at night, the power curve's bounds, SOC within its limits,
counters that never decrease), and a seed gives the same stream every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from enos_lab.errors import InvalidArgument, NotFound
from enos_lab.model import library_model
from enos_lab.sim import (
    PROFILES,
    BatteryStorageProfile,
    Climate,
    EnergyMeterProfile,
    Profile,
    PvInverterProfile,
    Site,
    WeatherStationProfile,
    WindTurbineProfile,
    profile_for,
)
from enos_lab.sim._site import solar_position

MODELS = ["battery_storage", "energy_meter", "pv_inverter", "weather_station", "wind_turbine"]
DAYS = pd.date_range("2024-06-20", periods=3 * 24 * 60, freq="1min", tz="UTC")  # 3 days
DAY = DAYS[: 24 * 60]


def _frame(profile: Profile, index: pd.DatetimeIndex = DAYS, seed: int = 7) -> pd.DataFrame:
    return profile.frame(index, seed, rng=np.random.default_rng(seed))


def _sun_elevation(index: pd.DatetimeIndex, site: Site) -> np.ndarray:
    t = index.as_unit("ms").asi8 / 1000.0
    cos_zenith, _ = solar_position(t, site.latitude, site.longitude)
    return np.degrees(np.arcsin(np.clip(cos_zenith, -1.0, 1.0)))


def test_the_registry_has_a_profile_for_each_library_model_with_data() -> None:
    assert sorted(PROFILES) == MODELS
    for model_id, cls in PROFILES.items():
        assert cls.model_id == model_id
        profile = profile_for(model_id)
        assert isinstance(profile, cls)
        assert profile.point_ids() == tuple(library_model(model_id).measurepoints)
    assert profile_for("pv_inverter", rated_power=50.0) == PvInverterProfile(rated_power=50.0)
    with pytest.raises(NotFound, match=r"'gateway'.*pv_inverter"):
        profile_for("gateway")
    with pytest.raises(InvalidArgument, match="no_such_parameter"):
        profile_for("pv_inverter", no_such_parameter=1)


@pytest.mark.parametrize("model_id", MODELS)
def test_every_sample_has_every_point_and_validates_against_the_model(model_id: str) -> None:
    model = library_model(model_id)
    frame = _frame(profile_for(model_id))
    assert list(frame.columns) == list(model.measurepoints)
    for row in frame.to_dict("records"):
        checked = model.validate_measurepoints(row)
        assert set(checked.values) == set(model.measurepoints)


@pytest.mark.parametrize("model_id", MODELS)
def test_a_seed_gives_the_same_stream_and_another_seed_another(model_id: str) -> None:
    profile = profile_for(model_id)
    first = _frame(profile, DAY, seed=3)
    again = _frame(profile, DAY, seed=3)
    other = _frame(profile, DAY, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_pv_power_follows_the_sun_and_the_inverter_rating() -> None:
    profile = PvInverterProfile(rated_power=20.0, dc_ac_ratio=1.3)
    frame = _frame(profile)
    elevation = _sun_elevation(DAYS, profile.site)
    night = elevation < -1.0  # the grid step (60 s) moves the sun by 0.25 deg at most
    assert night.sum() > 1000
    assert (frame["active_power"][night] == 0).all()
    assert (frame["dc_current"][night] == 0).all()
    assert (frame["state"][night] == 0).all()  # standby
    assert (frame["active_power"] <= 20.0).all() and (frame["active_power"] >= 0).all()
    day = frame[elevation > 30]
    assert (day["active_power"] > 0).all()
    assert (day["efficiency"].between(80, 100)).all()
    assert set(frame["state"]) <= {0, 1, 2}
    # around noon of a summer day an oversized array clips at the rating (derated)
    assert (frame["state"] == 2).any()
    assert frame["active_power"].max() == 20.0


def test_pv_daily_energy_restarts_at_local_midnight_and_total_energy_accumulates() -> None:
    profile = PvInverterProfile(total_energy=1000.0, site=Site(utc_offset=8.0))
    frame = _frame(profile)
    total = frame["total_energy"]
    assert total.iloc[0] == 1000.0
    assert total.is_monotonic_increasing
    daily = frame["daily_energy"]
    # local midnight is 16:00 UTC: the daily counter starts again from 0 there
    midnight = frame.index.get_loc(pd.Timestamp("2024-06-20 16:00", tz="UTC"))
    assert daily.iloc[midnight] == 0.0
    assert daily.iloc[midnight - 1] > 10.0
    day_energy = total.iloc[midnight] - total.iloc[0]
    assert daily.iloc[midnight - 1] == pytest.approx(day_energy, abs=1e-3)
    # the day's energy is the integral of the power (trapezoid over the 1-min samples)
    next_midnight = midnight + 24 * 60
    power = frame["active_power"].iloc[midnight : next_midnight + 1].to_numpy()
    integral = np.trapezoid(power, dx=1 / 60)
    produced = total.iloc[next_midnight] - total.iloc[midnight]
    assert produced == pytest.approx(integral, rel=0.01)


def test_the_turbine_stays_on_its_power_curve_and_stops_in_storms() -> None:
    profile = WindTurbineProfile()
    frame = _frame(profile, pd.date_range("2024-01-01", periods=7 * 24 * 60, freq="1min", tz="UTC"))
    power = frame["active_power"]
    assert power.between(0, profile.rated_power).all()
    assert frame["total_energy"].is_monotonic_increasing
    assert frame["wind_speed"].mean() > 3
    running = frame["state"] == 1
    assert running.any() and (power[running] > 0).all()
    assert (frame["rotor_speed"][running] >= profile.min_rotor_speed * 0.97).all()
    assert np.allclose(frame["generator_speed"], frame["rotor_speed"] * 100, atol=0.6)
    # a storm: 30 m/s mean at hub height stops it (state 0, feathered, no power)
    stormy = WindTurbineProfile(climate=Climate(mean_wind_speed=22.0))
    storm = _frame(stormy, DAY)
    stopped = storm[storm["state"] == 0]
    assert len(stopped) > 60
    assert (stopped["active_power"] == 0).all() and (stopped["rotor_speed"] == 0).all()
    assert all(min(p) > 87 for p in stopped["pitch_angle"])
    # calm: idle below cut-in
    calm = _frame(WindTurbineProfile(climate=Climate(mean_wind_speed=1.0)), DAY)
    idle = calm[calm["state"] == 2]
    assert len(idle) > 60 and (idle["active_power"] == 0).all()


def test_the_wind_is_weibull_distributed_with_the_climate_mean() -> None:
    climate = Climate(mean_wind_speed=5.0, weibull_shape=2.0)
    index = pd.date_range("2024-01-01", periods=60 * 24 * 6, freq="10min", tz="UTC")  # 60 days
    frame = WeatherStationProfile(climate=climate).frame(index, 11)
    speeds = frame["wind_speed"].to_numpy()
    assert speeds.mean() == pytest.approx(5.0, rel=0.2)
    # Weibull k = 2 (Rayleigh): the coefficient of variation is about 0.52
    assert speeds.std() / speeds.mean() == pytest.approx(0.52, abs=0.12)
    # an AR(1) process: consecutive 10-min values are strongly correlated
    assert np.corrcoef(speeds[:-1], speeds[1:])[0, 1] > 0.9


def test_the_battery_keeps_its_state_of_charge_within_limits() -> None:
    profile = BatteryStorageProfile(soc_min=20.0, soc_max=90.0, initial_soc=50.0)
    frame = _frame(profile)
    soc = frame["soc"]
    assert soc.between(20.0, 90.0).all()
    assert soc.min() == pytest.approx(20.0, abs=0.01) and soc.max() == pytest.approx(90.0, abs=0.01)
    charging = frame["mode"] == 1
    discharging = frame["mode"] == 2
    assert charging.any() and discharging.any()
    assert (frame["active_power"][charging] < 0).all() and (
        frame["active_power"][discharging] > 0
    ).all()
    assert (frame["active_power"][frame["mode"] == 0] == 0).all()
    assert (frame["contactor_closed"] == (frame["mode"] != 0)).all()
    assert (frame["max_cell_voltage"] >= frame["min_cell_voltage"]).all()
    for name in ("charge_energy_total", "discharge_energy_total"):
        assert frame[name].is_monotonic_increasing and frame[name].iloc[-1] > 0
    # energy balance: the stored energy changes by what went in and out, with the losses
    stored = (soc.iloc[-1] - soc.iloc[0]) / 100 * profile.rated_capacity
    charged = frame["charge_energy_total"].iloc[-1]
    discharged = frame["discharge_energy_total"].iloc[-1]
    balance = charged * profile.charge_efficiency - discharged / profile.discharge_efficiency
    assert stored == pytest.approx(balance, abs=0.01)
    assert frame["soh"].is_monotonic_decreasing


def test_meter_registers_never_decrease_and_export_appears_with_pv() -> None:
    profile = EnergyMeterProfile(peak_power=20.0, shape="residential", pv_peak=40.0)
    frame = _frame(profile)
    for name in ("import_energy", "export_energy"):
        assert frame[name].is_monotonic_increasing
    assert frame["export_energy"].iloc[-1] > 0 and frame["import_energy"].iloc[-1] > 0
    exporting = frame["active_power"] < 0
    assert exporting.any()
    assert (frame["reading_time"] == DAYS.as_unit("ms").asi8).all()
    assert frame["power_factor"].between(0, 1).all()
    s = np.hypot(frame["active_power"], frame["reactive_power"])
    assert np.allclose(frame["apparent_power"], s, atol=0.002)
    assert all(len(v) == 3 for v in frame["voltage"])
    assert all(len(i) == 3 for i in frame["current"])
    with pytest.raises(InvalidArgument, match=r"'hospital'.*residential"):
        EnergyMeterProfile(shape="hospital")


def test_meter_load_follows_its_daily_shape_and_weekends() -> None:
    profile = EnergyMeterProfile(peak_power=100.0, shape="commercial", weekend_factor=0.4)
    # Friday 2024-06-21 and Saturday 2024-06-22, local time UTC+8
    index = pd.date_range("2024-06-20 16:00", periods=2 * 24 * 60, freq="1min", tz="UTC")
    frame = profile.frame(index, 5)
    local_hour = ((index + timedelta(hours=8)).hour).to_numpy()
    friday = frame["active_power"].to_numpy()[: 24 * 60]
    saturday = frame["active_power"].to_numpy()[24 * 60 :]
    office = (local_hour[: 24 * 60] >= 10) & (local_hour[: 24 * 60] < 16)
    night = local_hour[: 24 * 60] < 5
    assert friday[office].mean() == pytest.approx(97.0, rel=0.15)  # the shape: 0.92..1.0
    assert friday[night].mean() == pytest.approx(25.0, rel=0.2)  # the shape: 0.25
    assert saturday.mean() == pytest.approx(0.4 * friday.mean(), rel=0.15)


def test_weather_station_readings_are_physical() -> None:
    frame = _frame(WeatherStationProfile())
    elevation = _sun_elevation(DAYS, Site())
    assert (frame["global_irradiance"][elevation < -1.0] == 0).all()
    assert frame["global_irradiance"].max() < 1100
    assert frame["relative_humidity"].between(0, 100).all()
    assert frame["air_pressure"].between(980, 1050).all()
    assert frame["ambient_temperature"].between(10, 45).all()  # June near Shanghai
    assert frame["wind_direction"].between(0, 360).all()
    assert (frame["precipitation"] >= 0).all()
    assert (frame["daily_irradiation"] >= 0).all()
    sunny = frame["global_irradiance"] > 600
    assert (frame["module_temperature"][sunny] > frame["ambient_temperature"][sunny]).all()
    # the station and a PV inverter with the same seed, site and start see the same sky
    pv = _frame(PvInverterProfile())
    assert ((pv["active_power"] > 0) <= (frame["global_irradiance"] > 0)).all()


def test_the_sun_is_where_the_almanac_says() -> None:
    # 2024-06-21, latitude 31.2 N, longitude 121.5 E: solar noon near 03:55 UTC, elevation
    # 90 - 31.2 + 23.44 = 82.2 deg; sunrise near 20:50 UTC the day before
    site = Site()
    index = pd.date_range("2024-06-20 18:00", "2024-06-21 12:00", freq="1min", tz="UTC")
    elevation = _sun_elevation(index, site)
    noon = index[int(np.argmax(elevation))]
    assert abs(noon - pd.Timestamp("2024-06-21 03:55", tz="UTC")) < timedelta(minutes=5)
    assert elevation.max() == pytest.approx(82.2, abs=0.3)
    sunrise = index[int(np.argmax(elevation > -0.83))]  # upper limb, refraction
    assert abs(sunrise - pd.Timestamp("2024-06-20 20:51", tz="UTC")) < timedelta(minutes=6)
    # winter solstice at noon: 90 - 31.2 - 23.44
    winter = pd.date_range("2024-12-21 02:00", "2024-12-21 06:00", freq="1min", tz="UTC")
    assert _sun_elevation(winter, site).max() == pytest.approx(35.4, abs=0.3)
    # southern hemisphere: high sun in December
    sydney = Site(latitude=-33.9, longitude=151.2, utc_offset=10.0)
    december = pd.date_range("2024-12-21 00:00", "2024-12-21 04:00", freq="1min", tz="UTC")
    assert _sun_elevation(december, sydney).max() == pytest.approx(79.5, abs=0.5)


def test_profiles_refuse_impossible_parameters() -> None:
    with pytest.raises(InvalidArgument, match="rated_power"):
        PvInverterProfile(rated_power=0.0)
    with pytest.raises(InvalidArgument, match="soc_min"):
        BatteryStorageProfile(soc_min=50.0, initial_soc=40.0)
    with pytest.raises(InvalidArgument, match="restart_speed"):
        WindTurbineProfile(restart_speed=30.0)
    with pytest.raises(InvalidArgument, match="increasing speed"):
        WindTurbineProfile(power_curve=((5.0, 0.1), (4.0, 0.2)))
    with pytest.raises(InvalidArgument, match="latitude"):
        Site(latitude=91.0)
    with pytest.raises(InvalidArgument, match="cloudiness"):
        Climate(cloudiness=1.0)
    with pytest.raises(InvalidArgument, match="schedule entry"):
        BatteryStorageProfile(schedule=((0.0, 25.0, 0.5),))


def test_a_custom_power_curve_scales_with_the_rating() -> None:
    flat = WindTurbineProfile(rated_power=1000.0, power_curve=((0.0, 0.5), (40.0, 0.5)))
    frame = flat.frame(DAY, 1)
    assert set(frame["active_power"]) == {500.0}
    hours = (DAY[-1] - datetime(2024, 6, 20, tzinfo=UTC)).total_seconds() / 3600
    assert frame["total_energy"].iloc[-1] == pytest.approx(500.0 * hours, abs=1e-3)
