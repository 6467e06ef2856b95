"""``Lab.simulate`` and the :class:`~enos_lab.lab.LabFleet` it returns: registration, the
profile check, the blocking and coroutine forms with real signatures, and the lab stopping its
fleets."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from enos_lab import Lab, SimulatedClock
from enos_lab.errors import InvalidArgument, NotFound
from enos_lab.lab import LabFleet
from enos_lab.sim import Fleet

T0 = datetime(2024, 6, 1, tzinfo=UTC)


def test_simulate_registers_the_devices_it_needs_and_reuses_the_others(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(clock=SimulatedClock(T0), rng=random.Random(3))
    product = lab.create_product("PV", model_id="pv_inverter")
    known = lab.register_device(product.product_key, device_key="sim-0000")
    fleet = lab.simulate(product.product_key, count=3, seed=1)  # the product's model's profile
    assert fleet.device_keys == ["sim-0000", "sim-0001", "sim-0002"]
    devices = lab.devices(product.product_key)
    assert devices["device_key"].tolist() == fleet.device_keys
    assert lab.device(product.product_key, "sim-0000").device_secret == known.device_secret
    assert devices["online"].all()
    chosen = lab.simulate(product.product_key, device_keys=["roof-a", "roof-b"], seed=2)
    assert len(chosen) == 2 and chosen.link is None
    fleet.run(duration=timedelta(minutes=3))  # one clock for both fleets
    assert fleet.totals()["replied"] == 9 and chosen.totals()["replied"] == 6
    fleet.stop()
    assert not fleet.running and chosen.running
    assert not lab.is_online(product.product_key, "sim-0000")


def test_simulate_refuses_what_it_cannot_simulate(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    with pytest.raises(NotFound):
        lab.simulate("nope")
    sub = lab.create_product("Sub", model_id="energy_meter", node_type="sub_device")
    with pytest.raises(InvalidArgument, match="sub-device"):
        lab.simulate(sub.product_key)
    free = lab.create_product("Free")  # no model
    with pytest.raises(InvalidArgument, match="profile="):
        lab.simulate(free.product_key)
    meter = lab.create_product("Meter", model_id="energy_meter")
    with pytest.raises(InvalidArgument, match="does not fit"):
        lab.simulate(meter.product_key, profile="pv_inverter")
    with pytest.raises(InvalidArgument, match="count"):
        lab.simulate(meter.product_key, count=0)
    assert len(lab.devices(meter.product_key)) == 0
    fleet = lab.simulate(free.product_key, count=1, profile="weather_station", interval=0.1)
    fleet.run(duration=0.5)
    assert fleet.totals()["replied"] >= 2  # a product without a model takes any points
    fleet.stop()
    # a child model has every point of its parent: the parent's profile fits it
    lab.add_model({"modelId": "meter_plus", "name": {"defaultValue": "Meter+"},
                   "parentModelId": "energy_meter"})  # fmt: skip
    plus = lab.create_product("Meter+", model_id="meter_plus")
    fleet = lab.simulate(plus.product_key, count=1, profile="energy_meter", interval=0.1)
    fleet.run(duration=0.5)
    assert fleet.totals()["replied"] >= 2
    fleet.stop()
    fleet = lab.simulate(plus.product_key, count=1, interval=0.1, key_prefix="default-")
    assert fleet.fleet.profile.model_id == "energy_meter"  # the parent's, by default
    with pytest.raises(InvalidArgument, match="does not fit"):
        lab.simulate(plus.product_key, profile="pv_inverter")


def test_the_facade_has_real_signatures_and_coroutine_forms() -> None:
    for name in ("run", "stats", "totals", "drop", "partition", "power_loss", "skew"):
        blocking = getattr(LabFleet, name)
        engine = getattr(Fleet, name)
        assert inspect.signature(blocking) == inspect.signature(engine)
        assert blocking.__doc__ == engine.__doc__
        assert inspect.iscoroutinefunction(getattr(LabFleet, "a" + name))
    parameters = inspect.signature(LabFleet.run).parameters
    assert list(parameters) == ["self", "duration", "until", "progress"]
    assert "interval" in inspect.signature(Lab.simulate).parameters
    assert inspect.iscoroutinefunction(Lab.asimulate)
    assert "Stop the simulated fleets" in (Lab.stop.__doc__ or "")


def test_the_lab_stops_its_fleets(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(clock=SimulatedClock(T0))
    product = lab.create_product("Meter", model_id="energy_meter")
    fleet = lab.simulate(product.product_key, count=2, link=True, seed=1)
    fleet.run(duration=timedelta(minutes=2), progress=True)
    link = fleet.link
    assert link is not None and link.stats.active == 2
    lab.stop()
    assert not fleet.running
    assert link.stats.active == 0
    fleet.stop()  # idempotent, also after the lab stopped


async def test_the_coroutine_forms_run_the_fleet_from_another_loop(
    make_lab: Callable[..., Lab],
) -> None:
    lab = await asyncio.to_thread(make_lab, clock=SimulatedClock(T0))
    product = await lab.acreate_product("Meter", model_id="energy_meter")
    fleet = await lab.asimulate(product.product_key, count=2, seed=1)
    await fleet.arun(until=T0 + timedelta(minutes=5))
    stats = await fleet.astats()
    assert stats["replied"].tolist() == [5, 5]
    await fleet.askew(10)
    await fleet.arun(duration=60)
    points = await lab.store.latest_async(None, ["voltage"], product_key=product.product_key)
    assert points["time"].tolist() == [T0 + timedelta(minutes=6, seconds=10)] * 2
    await fleet.astop()
    assert not fleet.running
    await lab.astop()
