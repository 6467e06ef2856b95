"""The poller against real pymodbus field servers over TCP: samples, grouped reads, faults
that stay with their device, reconnects, and the schedule on a simulated clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from _edge_kit import (
    INVERTER_VALUES,
    METER_VALUES,
    eventually,
    inverter_table,
    meter_table,
    tasks,
)

from enos_lab.clock import SimulatedClock
from enos_lab.edge import (
    ExceptionCode,
    FieldDevice,
    FieldServer,
    Poller,
    PollError,
    PollErrorKind,
    RegisterType,
    Sample,
    WordOrder,
    encode_words,
)
from enos_lab.errors import InvalidArgument

START = datetime(2025, 6, 1, tzinfo=UTC)


@dataclass
class Site:
    """An inverter (unit 1) and a meter (unit 2) behind one gateway, a meter (unit 3) alone."""

    gateway: FieldServer
    lone: FieldServer
    devices: list[FieldDevice]


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    inverter, meter = inverter_table(), meter_table()
    lone_meter = meter.with_unit(3)
    async with (
        FieldServer([inverter, meter], name="gateway") as gateway,
        FieldServer(lone_meter, name="lone") as lone,
    ):
        gateway.set_model_values(1, INVERTER_VALUES)
        gateway.set_model_values(2, METER_VALUES)
        lone.set_model_values(3, METER_VALUES | {"active_power": 3.5})
        devices = [
            FieldDevice("inv1", "127.0.0.1", gateway.port, 1, inverter),
            FieldDevice("meter2", "127.0.0.1", gateway.port, 2, meter),
            FieldDevice("meter3", "127.0.0.1", lone.port, 3, lone_meter),
        ]
        yield Site(gateway, lone, devices)


async def test_a_poll_reads_every_device_in_grouped_reads(site: Site) -> None:
    delivered: list[Sample] = []
    poller = Poller(site.devices, clock=SimulatedClock(START), on_sample=delivered.append)
    try:
        samples = await poller.poll()
    finally:
        await poller.stop()
    assert [s.device for s in samples] == ["inv1", "meter2", "meter3"]
    assert all(s.time == START for s in samples) and samples[0].time_ms == 1748736000000
    assert samples[0].values == INVERTER_VALUES
    assert samples[1].values == METER_VALUES
    assert samples[2].values == METER_VALUES | {"active_power": 3.5}
    assert delivered == []  # poll() returns samples, only background polls deliver them
    # two reads per device: input registers in one request, holding registers in another
    assert site.gateway.stats(1).reads == 2 and site.gateway.stats(2).reads == 2
    assert poller.stats("meter3").samples == 1 and poller.errors == ()


async def test_a_silent_unit_times_out_alone_and_the_others_keep_their_values(site: Site) -> None:
    errors: list[PollError] = []
    poller = Poller(site.devices, timeout=0.2, clock=SimulatedClock(START), on_error=errors.append)
    try:
        site.gateway.mute(1)
        samples = await poller.poll()
        assert [s.device for s in samples] == ["meter2", "meter3"]
        # the meter behind the same gateway is read after the timeout, on a new connection:
        # its values are its own, not a late answer meant for the inverter
        assert samples[0].values == METER_VALUES
        assert [e.kind for e in errors] == [PollErrorKind.TIMEOUT]
        assert (
            errors[0].device == "inv1"
            and "no answer to reading holding 100..101" in errors[0].message
        )

        site.gateway.heal()
        site.gateway.delay(1, 0.5, requests=1)  # an answer that comes too late
        samples = await poller.poll()
        assert [s.device for s in samples] == ["meter2", "meter3"]
        assert samples[0].values == METER_VALUES
        samples = await poller.poll()
        assert [s.values for s in samples] == [
            INVERTER_VALUES,
            METER_VALUES,
            METER_VALUES | {"active_power": 3.5},
        ]
        stats = poller.stats("inv1")
        assert stats.errors[PollErrorKind.TIMEOUT] == 2 and stats.consecutive_failures == 0
        assert (stats.polls, stats.samples) == (3, 1)
        assert poller.stats("meter2").errors[PollErrorKind.TIMEOUT] == 0
    finally:
        await poller.stop()


async def test_exception_responses_and_undecodable_values_are_counted_per_device(
    site: Site,
) -> None:
    poller = Poller(site.devices, timeout=0.5, clock=SimulatedClock(START))
    try:
        site.gateway.fail(2, ExceptionCode.DEVICE_BUSY)
        nan = encode_words(float("nan"), RegisterType.FLOAT32, WordOrder.BIG)
        site.lone.set(3, 0, nan[0], table="input")  # active_power becomes NaN
        site.lone.set(3, 1, nan[1], table="input")
        samples = {s.device: s for s in await poller.poll()}
        assert set(samples) == {"inv1", "meter3"}
        assert samples["meter3"].values == {
            k: v for k, v in METER_VALUES.items() if k != "active_power"
        }  # the other points of the sample are kept
        busy, nan_error = sorted(
            poller.errors, key=lambda e: e.device
        )  # endpoints run concurrently
        assert (busy.device, busy.kind, busy.exception_code) == (
            "meter2",
            PollErrorKind.EXCEPTION,
            ExceptionCode.DEVICE_BUSY,
        )
        assert "answered exception 0x06" in busy.message
        assert (nan_error.device, nan_error.kind, nan_error.point) == (
            "meter3",
            PollErrorKind.DECODE,
            "active_power",
        )
        assert "found float nan" in nan_error.message
        assert poller.stats("meter3").samples == 1  # a sample, with the point left out
        assert poller.stats("meter2").consecutive_failures == 1
    finally:
        await poller.stop()


async def test_an_unreachable_endpoint_fails_its_devices_and_reconnects(site: Site) -> None:
    poller = Poller(site.devices, timeout=0.5, clock=SimulatedClock(START))
    try:
        assert len(await poller.poll()) == 3
        await site.lone.stop()
        samples = await poller.poll()
        assert [s.device for s in samples] == ["inv1", "meter2"]
        (error,) = poller.errors
        assert error.kind is PollErrorKind.CONNECTION and error.device == "meter3"
        await site.lone.start()  # the same port
        samples = await poller.poll()
        assert [s.device for s in samples] == ["inv1", "meter2", "meter3"]
        assert poller.stats("meter3").consecutive_failures == 0
    finally:
        await poller.stop()


async def test_polls_follow_the_simulated_clock_slot_by_slot(site: Site) -> None:
    clock = SimulatedClock(START)
    delivered: list[Sample] = []
    before = tasks()
    poller = Poller(site.devices, interval=60, clock=clock, on_sample=delivered.append)
    async with poller:
        await poller.advance(600)
        assert clock.now() == START + timedelta(minutes=10)
        times = sorted({s.time for s in delivered})
        assert times == [START + timedelta(minutes=k) for k in range(11)]
        assert len(delivered) == 33 and poller.missed == 0
        # idle: nothing due and nothing running until the clock moves again
        await poller.idle()
        await clock.advance_async(30)
        await poller.idle()
        assert len(delivered) == 33
        await clock.advance_async(30)
        await poller.idle()
        assert len(delivered) == 36
    assert tasks() <= before  # stop() left no task behind
    assert not poller.running


async def test_background_polls_on_the_system_clock_deliver_to_an_async_sink(site: Site) -> None:
    got: list[Sample] = []
    enough = asyncio.Event()

    async def sink(sample: Sample) -> None:
        got.append(sample)
        if len(got) >= 9:
            enough.set()

    def broken(sample: Sample) -> None:
        raise RuntimeError("a sink that fails")

    poller = Poller(site.devices, interval=0.02, on_sample=sink)
    async with poller:
        await asyncio.wait_for(enough.wait(), 10)
    assert {s.device for s in got} == {"inv1", "meter2", "meter3"}
    assert all(s.time.tzinfo is UTC for s in got)

    failing = Poller(site.devices[:1], interval=0.02, on_sample=broken)
    async with failing:
        await eventually(lambda: failing.callback_errors >= 2, "two failed deliveries")
    assert failing.stats("inv1").samples >= 2  # polling went on


async def test_stop_cancels_a_poll_that_waits_for_an_answer(site: Site) -> None:
    before = tasks()
    site.gateway.mute(1)
    poller = await Poller(site.devices[:1], timeout=30, clock=SimulatedClock(START)).start()
    await eventually(lambda: site.gateway.stats(1).reads == 1, "the poll's request")
    began = time.monotonic()
    await poller.stop()
    assert time.monotonic() - began < 5  # not the 30 s timeout
    assert tasks() <= before
    assert poller.stats("inv1").errors[PollErrorKind.TIMEOUT] == 0  # a cancel is no timeout


def test_bad_configurations_are_refused() -> None:
    meter = meter_table()
    with pytest.raises(
        InvalidArgument, match=r"table 'modbus_energy_meter\.csv' has no rows for unit 1"
    ):
        FieldDevice("m", "127.0.0.1", 502, 1, meter)
    with pytest.raises(InvalidArgument, match="non-empty name"):
        FieldDevice("", "127.0.0.1", 502, 2, meter)
    device = FieldDevice("m", "127.0.0.1", 502, 2, meter)
    with pytest.raises(InvalidArgument, match=r"repeated: \['m'\]"):
        Poller([device, device])
    with pytest.raises(InvalidArgument, match="at least one field device"):
        Poller([])
    with pytest.raises(InvalidArgument, match="interval and timeout must be > 0 s"):
        Poller([device], interval=0)
    with pytest.raises(InvalidArgument, match="no field device 'x'"):
        Poller([device]).stats("x")
