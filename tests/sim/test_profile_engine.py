"""The profile engine's rules (enos_lab.sim._profile): what a device reports at a time does not
depend on how often it is sampled, counters are exact integrals of their power, ``frame`` is
successive ``values``, and the seeded processes have the statistics they claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from enos_lab.errors import InvalidArgument
from enos_lab.sim import (
    BLOCK,
    BatteryStorageProfile,
    EnergyMeterProfile,
    Grid,
    PvInverterProfile,
    WindTurbineProfile,
    profile_for,
)

START = datetime(2024, 3, 1, tzinfo=UTC)
MODELS = ["battery_storage", "energy_meter", "pv_inverter", "weather_station", "wind_turbine"]


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@pytest.mark.parametrize("model_id", MODELS)
def test_values_at_a_time_do_not_depend_on_other_samples(model_id: str) -> None:
    profile = profile_for(model_id)
    dense = profile.state(9, START)
    sparse = profile.state(9, START)
    once = profile.state(9, START)
    times = [START + timedelta(seconds=37 * k) for k in range(4000)]  # 41 h, off the grid
    wanted = times[3001]
    seen = {t: profile.values(t, None, dense) for t in times}
    for t in times[::97]:
        assert profile.values(t, None, sparse) == seen[t]
    assert profile.values(wanted, None, once) == seen[wanted]


def test_frame_is_successive_values_with_the_same_rng() -> None:
    profile = EnergyMeterProfile(pv_peak=20.0)
    index = pd.date_range(START, periods=500, freq="90s")
    frame = profile.frame(index, 4, rng=np.random.default_rng(8))
    state = profile.state(4, START)
    rng = np.random.default_rng(8)
    rows = [profile.values(t, rng, state) for t in index.to_pydatetime()]
    assert frame.to_dict("records") == rows
    # and datetimes and epoch milliseconds are the same instants
    again = profile.state(4, START)
    assert profile.values(_ms(START) + 90_000, None, again) == profile.values(
        START + timedelta(seconds=90), None, again
    )


def test_counters_are_the_exact_integral_of_the_interpolated_power() -> None:
    profile = PvInverterProfile(total_energy=10.0)
    state = profile.state(2, START, step=60.0)
    t0 = START.timestamp()
    # grid points and midpoints over two days: the power is linear between grid points, so
    # the trapezoid over these samples is its exact integral
    times = t0 + np.arange(0, 2 * 86_400 + 1, 30.0)
    rows = [state.quantities(t) for t in times]
    power = np.array([row["p_ac"] for row in rows])
    total = np.array([row["total_energy"] for row in rows])
    integral = np.concatenate(([0.0], np.cumsum((power[1:] + power[:-1]) / 2 * 30.0 / 3600)))
    assert total[0] == 10.0
    assert np.allclose(total - 10.0, integral, rtol=1e-9, atol=1e-9)
    assert total[-1] > 50.0  # two days of production


def test_held_power_is_integrated_as_a_step() -> None:
    # the battery's power is a set point held over each grid step: its counters are rectangles
    profile = BatteryStorageProfile()
    state = profile.state(1, START, step=300.0)
    t0 = START.timestamp()
    times = t0 + np.arange(0, 86_400 + 1, 300.0)
    rows = [state.quantities(t) for t in times]
    charge = np.array([row["p_charge"] for row in rows])
    total = np.array([row["charge_energy_total"] for row in rows])
    assert np.allclose(np.diff(total), charge[:-1] * 300 / 3600)
    inside = state.quantities(t0 + 300.0 * 40 + 100.0)
    assert inside["p_charge"] == rows[40]["p_charge"]
    assert inside["charge_energy_total"] == pytest.approx(
        total[40] + charge[40] * 100 / 3600, rel=1e-12
    )


def test_samples_across_blocks_and_back_in_time_agree() -> None:
    profile = WindTurbineProfile()
    state = profile.state(5, START, step=10.0)
    block = BLOCK * 10.0  # seconds per block
    around = [START + timedelta(seconds=block * k + d) for k in (1, 2, 3) for d in (-5, 0, 5)]
    forward = [profile.values(t, None, state) for t in around]
    backward = [profile.values(t, None, state) for t in reversed(around)]
    assert backward == list(reversed(forward))
    totals = [row["total_energy"] for row in forward]
    assert totals == sorted(totals)


def test_daily_counters_restart_at_each_local_midnight_across_blocks() -> None:
    profile = PvInverterProfile()  # local midnight at 16:00 UTC
    state = profile.state(3, START, step=600.0)  # a block is 7 days long
    days = [START + timedelta(days=d, hours=15, minutes=59) for d in range(10)]
    after = [START + timedelta(days=d, hours=16) for d in range(10)]
    for before_midnight, at_midnight in zip(days, after, strict=True):
        late = profile.values(before_midnight, None, state)
        assert profile.values(at_midnight, None, state)["daily_energy"] == 0.0
        assert late["daily_energy"] > 1.0
    first = profile.values(START + timedelta(hours=10), None, profile.state(3, START))
    assert first["daily_energy"] == first["total_energy"]  # the first day starts at START


def test_ar1_processes_are_stationary_standard_normal_with_their_correlation() -> None:
    t = START.timestamp() + np.arange(BLOCK + 1) * 60.0
    carry: dict[str, object] = {}
    paths = []
    for block in range(40):
        grid = Grid(17, block, t + block * BLOCK * 60.0, 60.0, carry)
        path = grid.ar1("test", 600.0)
        if paths:
            assert path[0] == paths[-1][-1]  # blocks share their end points
        paths.append(path)
    z = np.concatenate([p[1:] for p in paths])
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(z[:-1], z[1:])[0, 1] == pytest.approx(np.exp(-0.1), abs=0.02)
    again = Grid(17, 0, t, 60.0, {}).ar1("test", 600.0)
    assert np.array_equal(again, paths[0])
    other = Grid(17, 0, t, 60.0, {}).ar1("other", 600.0)
    assert not np.allclose(other, paths[0])


def test_bad_uses_are_refused_naming_the_value() -> None:
    profile = PvInverterProfile()
    state = profile.state(1, START)
    with pytest.raises(InvalidArgument, match="naive"):
        profile.values(datetime(2024, 3, 2), None, state)
    with pytest.raises(InvalidArgument, match="before the start"):
        profile.values(START - timedelta(seconds=1), None, state)
    with pytest.raises(InvalidArgument, match=r"make it with \.state"):
        PvInverterProfile(rated_power=5.0).values(START, None, state)
    with pytest.raises(InvalidArgument, match="seed"):
        profile.state(-1, START)
    with pytest.raises(InvalidArgument, match="step"):
        profile.state(1, START, step=0.0)
    with pytest.raises(InvalidArgument, match="naive"):
        profile.state(1, datetime(2024, 3, 1))
    with pytest.raises(InvalidArgument, match="tz-aware"):
        profile.frame(pd.date_range("2024-03-01", periods=3, freq="1min"), 1)
    empty = profile.frame(pd.DatetimeIndex([], tz="UTC"), 1)
    assert list(empty.columns) == list(profile.point_ids()) and empty.empty
