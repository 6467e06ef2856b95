"""Simulated fleets against a real lab over TCP: the schedule, every post stored once,
determinism for a seed, shared profile states, real time, and the bounds on logins and posts in
flight. Faults are in ``test_fleet_faults.py``, the facade in ``test_lab_simulate.py``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from enos_lab import Lab, SimulatedClock
from enos_lab.errors import ClosedError, InvalidArgument
from enos_lab.sim import Fleet, profile_for

T0 = datetime(2024, 6, 1, tzinfo=UTC)  # 08:00 at the profiles' default site: daylight
PV_POINTS = len(profile_for("pv_inverter").point_ids())
METER_POINTS = len(profile_for("energy_meter").point_ids())


def simulated_lab(make_lab: Callable[..., Lab], seed: int = 5) -> Lab:
    """A lab on a simulated clock starting at ``T0``, with seeded keys."""
    return make_lab(clock=SimulatedClock(T0), rng=random.Random(seed))


def day_of(make_lab: Callable[..., Lab], seed: int) -> pd.DataFrame:
    """Two simulated hours of three PV inverters; the stored points."""
    lab = simulated_lab(make_lab)
    lab.create_product("PV", model_id="pv_inverter", product_key="pv")
    fleet = lab.simulate("pv", count=3, interval=60, seed=seed)
    fleet.run(duration=timedelta(hours=2))
    assert fleet.totals()["replied"] == 3 * 120
    fleet.stop()
    return lab.store.query_points(product_key="pv")


def test_two_runs_with_one_seed_store_identical_frames(make_lab: Callable[..., Lab]) -> None:
    first = day_of(make_lab, seed=7)
    second = day_of(make_lab, seed=7)
    pd.testing.assert_frame_equal(first, second)  # times, values, receive times, all of it
    assert len(first) == 3 * 120 * PV_POINTS
    power = first[first["point_id"] == "active_power"]
    assert power["value"].max() > 0  # daylight at the site
    other = day_of(make_lab, seed=8)
    assert other["time"].tolist() == first["time"].tolist()
    assert other["value"].tolist() != first["value"].tolist()


def test_every_post_is_stored_once_at_its_sample_time(make_lab: Callable[..., Lab]) -> None:
    lab = simulated_lab(make_lab)
    lab.create_product("Meter", model_id="energy_meter", product_key="meter")
    fleet = lab.simulate("meter", count=4, interval=30, seed=1)
    fleet.run(duration=timedelta(minutes=10))
    stats = fleet.stats().set_index("device_key")
    assert stats["posted"].tolist() == [20] * 4
    assert stats["replied"].tolist() == [20] * 4
    assert stats[["refused", "timeouts", "lost", "offline", "overruns", "errors"]].sum().sum() == 0
    assert stats["logins"].tolist() == [1] * 4
    points = lab.store.query_points(product_key="meter")
    assert len(points) == 4 * 20 * METER_POINTS
    assert not points.duplicated(["device_key", "point_id", "time"]).any()
    expected = [T0 + timedelta(seconds=30 * k) for k in range(1, 21)]
    for _, rows in points[points["point_id"] == "voltage"].groupby("device_key"):
        assert rows["time"].tolist() == expected
        assert (rows["receive_time"] == rows["time"]).all()  # answered before the clock moved
    readings = points[points["point_id"] == "reading_time"]
    stamps = [round(t.timestamp() * 1000) for t in readings["time"]]
    assert [int(v) for v in readings["value"]] == stamps  # the meter's own reading time [ms]
    assert lab.clock.now() == T0 + timedelta(minutes=10)
    totals = fleet.totals()
    assert (totals["devices"], totals["online"], totals["posted"]) == (4, 4, 80)


def test_a_spread_fleet_samples_evenly_over_the_interval(make_lab: Callable[..., Lab]) -> None:
    lab = simulated_lab(make_lab)
    lab.create_product("Meter", model_id="energy_meter", product_key="meter")
    fleet = lab.simulate("meter", count=4, interval=60, seed=1, spread=True)
    fleet.run(duration=timedelta(minutes=2))
    points = lab.store.query_points(product_key="meter", point_ids=["voltage"])
    firsts = points.groupby("device_key")["time"].min().sort_index()
    assert firsts.tolist() == [T0 + timedelta(seconds=s) for s in (15, 30, 45, 60)]
    assert len(points) == 8
    assert fleet.totals()["steps"] >= 8  # one step per distinct due time


def test_devices_sharing_a_state_share_the_physics_not_the_noise(
    make_lab: Callable[..., Lab],
) -> None:
    lab = simulated_lab(make_lab)
    lab.create_product("Meter", model_id="energy_meter", product_key="meter")
    fleet = lab.simulate("meter", count=3, interval=60, seed=4, states=1)
    fleet.run(duration=timedelta(minutes=30))
    points = lab.store.query_points(product_key="meter")
    wide = points.pivot_table(
        index=["point_id", "time"], columns="device_key", values="value", aggfunc="first"
    )
    energy = wide.loc["import_energy"].astype(float)  # a counter: no noise
    assert (energy.nunique(axis=1) == 1).all()
    assert energy.iloc[-1, 0] > energy.iloc[0, 0]
    power = wide.loc["active_power"].astype(float)  # measured with noise of each device
    assert (power.nunique(axis=1) > 1).all()
    assert (power.max(axis=1) - power.min(axis=1) < 0.02 * power.mean(axis=1)).all()


def test_a_fleet_posts_in_real_time_on_the_system_clock(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    lab.create_product("Meter", model_id="energy_meter", product_key="meter")
    fleet = lab.simulate("meter", count=3, interval=0.05, seed=2, spread=True)
    fleet.run(duration=0.6)
    fleet.stop()
    totals = fleet.totals()
    assert totals["posted"] >= 3 * 5
    assert totals["replied"] == totals["posted"]  # stop() waits for the posts in flight
    assert totals["latency_p50"] > 0  # real round trips [ms]
    assert len(fleet.latencies()) == totals["replied"]
    points = lab.store.query_points(product_key="meter")
    assert len(points) == totals["replied"] * METER_POINTS
    with pytest.raises(ClosedError):
        fleet.run(duration=1)


def test_logins_at_start_are_bounded(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    product = lab.create_product("Meter", model_id="energy_meter")
    devices = [lab.register_device(product.product_key) for _ in range(7)]
    credentials = [(d.product_key, d.device_key, d.device_secret) for d in devices]
    fleet = Fleet(lab.host, lab.port, credentials, "energy_meter", interval=60, max_connecting=2)
    lab.run(fleet.start())
    try:
        totals = lab.run(_totals(fleet))
        assert totals["peak_connecting"] == 2
        assert totals["online"] == totals["logins"] == 7
        assert all(lab.is_online(d.product_key, d.device_key) for d in devices)
    finally:
        lab.run(fleet.stop())
    assert not any(lab.is_online(d.product_key, d.device_key) for d in devices)


async def _totals(fleet: Fleet) -> Any:
    return fleet.totals()


def test_posts_in_flight_stay_within_the_bound(make_lab: Callable[..., Lab]) -> None:
    lab = simulated_lab(make_lab)
    lab.create_product("Meter", model_id="energy_meter", product_key="meter")
    fleet = lab.simulate(
        "meter", count=3, interval=60, seed=1, link=True, max_in_flight=2, timeout=3600
    )
    fleet.partition("sim-0001")  # its posts are never answered
    fleet.run(duration=timedelta(minutes=5))
    stats = fleet.stats().set_index("device_key")
    stuck = stats.loc["sim-0001"]
    assert (stuck["posted"], stuck["in_flight"], stuck["overruns"]) == (2, 2, 3)
    assert fleet.totals()["peak_in_flight"] == 2
    assert stats.loc[["sim-0000", "sim-0002"], "replied"].tolist() == [5, 5]
    assert len(lab.store.query_points("sim-0001", product_key="meter")) == 0


def test_bad_arguments_are_refused(make_lab: Callable[..., Lab]) -> None:
    lab = simulated_lab(make_lab)
    lab.create_product("Meter", model_id="energy_meter", product_key="meter")
    with pytest.raises(InvalidArgument, match="interval"):
        Fleet(lab.host, lab.port, [("meter", "a", "s")], "energy_meter", interval=0)
    with pytest.raises(InvalidArgument, match="unique"):
        Fleet(lab.host, lab.port, [("meter", "a", "s")] * 2, "energy_meter")
    fleet = lab.simulate("meter", count=2, seed=1)
    with pytest.raises(InvalidArgument, match="duration"):
        fleet.run()  # a simulated clock needs to know where to stop
    with pytest.raises(InvalidArgument, match="link=True"):
        fleet.drop(0.5)
    with pytest.raises(InvalidArgument, match="link=True"):
        fleet.power_loss("sim-0000", off=60)
    with pytest.raises(InvalidArgument, match="not in this fleet"):
        fleet.skew(5, "nobody")
    with pytest.raises(InvalidArgument, match="ahead"):
        fleet.run(duration=-1)


async def test_the_engine_runs_on_any_event_loop(make_lab: Callable[..., Lab]) -> None:
    lab = await asyncio.to_thread(make_lab)
    product = await lab.acreate_product("Meter", model_id="energy_meter")
    device = await lab.aregister_device(product.product_key)
    credentials = [(device.product_key, device.device_key, device.device_secret)]
    async with Fleet(lab.host, lab.port, credentials, "energy_meter", interval=0.05) as fleet:
        await fleet.run(duration=0.3)
        assert fleet.totals()["replied"] >= 3
    assert not fleet.running
    assert repr(fleet).startswith("<Fleet 1 x energy_meter")
