"""Faults stay with their field device, each clear and counted there, and the rest of the
edge keeps running: a Modbus timeout, an exception response, a register map that does not fit
the sub-device's model, a sub-device whose secret stopped working, a sub-device disabled in
the cloud, history the hub refuses, and a full cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pandas as pd
import pytest
from _edge_kit import METER_VALUES, meter_table
from _gateway_kit import Site, Stored, quick, run_slots

from enos_lab import Backoff
from enos_lab.edge import (
    EdgeDevice,
    EdgeError,
    EdgeErrorKind,
    EdgeState,
    ExceptionCode,
    FieldDevice,
    FieldServer,
    SubDeviceState,
)
from enos_lab.enos import ReplyCode
from enos_lab.sim import Link, PartitionMode


@pytest.fixture
async def meters(site: Site) -> AsyncIterator[FieldServer]:
    """Energy meters at units 3..6 behind a second Modbus gateway."""
    tables = [meter_table().with_unit(unit) for unit in (3, 4, 5, 6)]
    async with FieldServer(tables, name="meters") as field:
        for unit in (3, 4, 5, 6):
            field.set_model_values(unit, METER_VALUES)
        yield field


def meter_at(
    field: FieldServer, unit: int, product_key: str, key: str, secret: str | None = None
) -> EdgeDevice:
    """Meter ``unit`` of ``field`` as sub-device ``key`` of ``product_key``."""
    device = FieldDevice(f"meter{unit}", "127.0.0.1", field.port, unit, field.table(unit))
    return EdgeDevice(device, product_key, key, secret)


def errors_of(errors: tuple[object, ...], device: str) -> list[EdgeError]:
    """The edge errors (not poll errors) of one field device."""
    return [e for e in errors if isinstance(e, EdgeError) and e.device == device]


async def test_each_fault_is_counted_on_its_device_and_the_others_keep_running(
    site: Site, meters: FieldServer
) -> None:
    lab = site.lab
    other_model = await lab.acreate_product(
        "Inverters by mistake", model_id="pv_inverter", node_type="sub_device"
    )
    # a meter attached to this edge earlier, whose secret has changed since
    stale = await lab.aregister_device(site.meter_product, device_key="m6")
    lab.registry.attach(site.edge_keys, (site.meter_product, "m6"))
    meters.mute(3)  # a Modbus timeout, every poll
    meters.fail(4, ExceptionCode.DEVICE_FAILURE)  # an exception response, every poll
    devices = [
        site.inverter(),  # healthy
        meter_at(meters, 3, site.meter_product, "m3"),
        meter_at(meters, 4, site.meter_product, "m4"),
        meter_at(meters, 5, other_model.product_key, "m5"),  # a map of another model
        meter_at(meters, 6, site.meter_product, "m6", secret=stale.device_secret + "x"),
    ]
    stored = Stored(lab)
    edge = site.make_edge(devices)
    await edge.start()
    try:
        await run_slots(site, [edge], 1, 5)
        status = (await edge.status()).set_index("device")
    finally:
        await edge.stop()
        stored.take()
        stored.close()

    # the healthy inverter: every poll stored
    assert stored.counts("inv1") == dict.fromkeys(range(6), 1)
    assert status.loc["inverter", ["polls", "uploaded"]].tolist() == [6, 6]
    assert pd.isna(status.loc["inverter", "last_error"])
    # the silent meter: timeouts, nothing sent, still online
    assert status.loc["meter3", "state"] == "online"
    assert status.loc["meter3", ["polls", "timeouts", "samples", "uploaded"]].tolist() == [
        6,
        6,
        0,
        0,
    ]
    assert "no answer" in status.loc["meter3", "last_error"]
    # the failing meter: exception responses, counted with their code
    assert status.loc["meter4", ["exceptions", "uploaded"]].tolist() == [6, 0]
    assert "exception 0x04" in status.loc["meter4", "last_error"]
    # the meter mapped to a product of another model: found at setup, never polled
    assert edge.device_state("meter5") is SubDeviceState.MODEL_MISMATCH
    assert status.loc["meter5", "polls"] == 0
    (mismatch,) = errors_of(edge.errors, "meter5")
    assert mismatch.kind is EdgeErrorKind.MODEL
    assert "'energy_meter'" in mismatch.message and "'pv_inverter'" in mismatch.message
    assert not await lab.ais_online(other_model.product_key, "m5")
    # the meter whose secret stopped working: refused (742), polled, its samples dropped
    assert edge.device_state("meter6") is SubDeviceState.LOGIN_FAILED
    (refused,) = errors_of(edge.errors, "meter6")
    assert refused.kind is EdgeErrorKind.LOGIN
    assert refused.code == ReplyCode.SUB_DEVICE_SIGN_CHECK_FAILED
    assert status.loc["meter6", ["polls", "dropped", "login_failures"]].tolist() == [6, 6, 1]
    # nothing of the faulty ones reached the store
    assert {e.device_key for e in stored.events} == {"inv1"}


async def test_a_sub_device_disabled_in_the_cloud_stops_alone_and_comes_back(site: Site) -> None:
    lab = site.lab
    stored = Stored(lab)
    edge = site.make_edge([site.inverter(), site.meter()], config=quick(relogin_interval=30.0))
    await edge.start()
    try:
        await run_slots(site, [edge], 1, 2)
        await lab.adisable_device(site.meter_product, "meter1")  # combine.disable to the edge
        await run_slots(site, [edge], 3, 3)
        assert edge.device_state("meter") is SubDeviceState.LOGIN_FAILED
        assert edge.device_stats("meter").dropped >= 2
        assert "was disabled in the cloud" in str(errors_of(edge.errors, "meter")[0].message)

        await lab.aenable_device(site.meter_product, "meter1")  # combine.enable: at once
        await run_slots(site, [edge], 6, 3)
        assert edge.device_state("meter") is SubDeviceState.ONLINE
    finally:
        await edge.stop()
        stored.take()
        stored.close()
    assert stored.counts("inv1") == dict.fromkeys(range(9), 1)  # the inverter never stopped
    meter_slots = set(stored.counts("meter1"))
    assert {0, 1, 2} <= meter_slots and {7, 8} <= meter_slots and not {4, 5} & meter_slots


@pytest.fixture
async def link(site: Site) -> AsyncIterator[Link]:
    """The edge's way to the hub: a fault-injecting proxy on the lab's clock."""
    async with Link("127.0.0.1", site.lab.port, clock=site.lab.clock, seed=4) as running:
        yield running


async def test_history_the_hub_refuses_is_counted_on_its_device_alone(
    site: Site, link: Link
) -> None:
    lab = site.lab
    stored = Stored(lab)
    config = quick(reconnect=Backoff(initial=1.0, maximum=5.0, jitter=False))
    edge = site.make_edge([site.inverter(), site.meter()], port=link.port, config=config)
    await edge.start()
    try:
        await run_slots(site, [edge], 1, 1)
        link.device(*edge.keys).partition(PartitionMode.CUT)
        await run_slots(site, [edge], 2, 6)  # cached, both devices
        await lab.adisable_device(site.meter_product, "meter1")  # while the edge is away
        link.heal()
        await run_slots(site, [edge], 8, 4)
        assert edge.state is EdgeState.ONLINE
        assert (await edge.cache.stats()).samples == 0
    finally:
        await edge.stop()
        stored.take()
        stored.close()
    # the inverter's history came back; the disabled meter's was refused (1212), alone
    inverter = edge.device_stats("inverter")
    assert inverter.resumed == inverter.cached >= 6 and inverter.rejected == 0
    assert stored.counts("inv1") == dict.fromkeys(range(12), 1)
    meter = edge.device_stats("meter")
    # (a live sample posted while the edge was logging its sub-devices in again is refused too)
    assert meter.rejected >= meter.cached >= 6 and meter.resumed == 0
    rejections = [e for e in errors_of(edge.errors, "meter") if e.kind is EdgeErrorKind.REJECTED]
    assert rejections and {e.code for e in rejections} == {ReplyCode.NO_SUB_DEVICE_PERMISSION}
    assert set(stored.counts("meter1")) == {0, 1}


async def test_a_full_cache_loses_the_oldest_samples_counted_per_device(
    site: Site, link: Link
) -> None:
    lab = site.lab
    stored = Stored(lab)
    config = quick(cache_max_samples=10, reconnect=Backoff(initial=1.0, maximum=5.0, jitter=False))
    edge = site.make_edge([site.inverter(), site.meter()], port=link.port, config=config)
    await edge.start()
    try:
        await run_slots(site, [edge], 1, 1)
        link.device(*edge.keys).partition(PartitionMode.CUT)
        await run_slots(site, [edge], 2, 10)  # 20 samples for 10 places
        cache = await edge.cache.stats()
        assert (cache.samples, cache.lost) == (10, 10)
        assert cache.lost_by_device == {"inverter": 5, "meter": 5}
        link.heal()
        await run_slots(site, [edge], 12, 4)
    finally:
        await edge.stop()
        stored.take()
        stored.close()
    for device, key in (("inverter", "inv1"), ("meter", "meter1")):
        stats = edge.device_stats(device)
        assert (stats.lost, stats.resumed) == (5, stats.cached - 5)
        losses = [e for e in errors_of(edge.errors, device) if e.kind is EdgeErrorKind.CACHE_LOSS]
        assert losses and "lost" in losses[0].message
        # the oldest went: slots 2..6 are missing, 7.. came back, the newest are live
        assert not {2, 3, 4, 5, 6} & set(stored.counts(key))
        assert {7, 8, 9, 10, 11} <= set(stored.counts(key))
