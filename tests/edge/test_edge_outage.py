"""The edge's local cache and breakpoint resume over real TCP: the hub link cut for 30
simulated minutes by a fault-injecting Link, then restored. Every sample collected during the
outage is stored exactly once, resumed in chronological order, while live data keeps flowing,
and the latest values never go back in time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from _gateway_kit import INTERVAL, WAIT, Site, Stored, quick, run_slots, slot_of

from enos_lab import Backoff, SimulatedClock
from enos_lab.edge import Edge, EdgeState, SubDeviceState
from enos_lab.sim import Link, PartitionMode

OUTAGE = 30 * 60.0  # [s]


@pytest.fixture
async def link(site: Site) -> AsyncIterator[Link]:
    """The edge's way to the hub: a fault-injecting proxy on the lab's clock."""
    async with Link("127.0.0.1", site.lab.port, clock=site.lab.clock, seed=2) as running:
        yield running


def latest_slot(site: Site, device_key: str, product_key: str) -> tuple[int, float]:
    """``(slot, value)`` of the device's latest stored active power."""
    frame = site.lab.store.latest([device_key], ["active_power"], product_key=product_key)
    row = frame.iloc[0]
    return slot_of(row["time"].to_pydatetime()), float(row["value"])


async def test_a_30_minute_outage_is_resumed_once_in_order_while_live_data_flows(
    site: Site, link: Link
) -> None:
    lab = site.lab
    stored = Stored(lab)
    config = quick(
        resume_batch=20,  # 360 cached samples: 18 resume batches ...
        resume_pause=INTERVAL,  # ... one per poll slot, so live data flows between them
        reconnect=Backoff(initial=1.0, maximum=20.0),
    )
    meter = await lab.aregister_device(site.meter_product, device_key="meter1")
    edge = site.make_edge(
        [site.inverter(), site.meter(secret=meter.device_secret)], port=link.port, config=config
    )
    site.set_slot(0)
    await edge.start()
    try:
        await run_slots(site, [edge], 1, 6)  # a minute online
        stored.take()
        assert len(stored.events) == 14 and not any(e.resume for e in stored.events)

        link.device(*edge.keys).partition(PartitionMode.CUT)  # the hub link goes down
        outage_slots = int(OUTAGE / INTERVAL)
        await run_slots(site, [edge], 7, outage_slots)
        assert edge.state is not EdgeState.ONLINE
        cache = await edge.cache.stats()
        assert cache.samples == 2 * outage_slots and cache.lost == 0
        assert latest_slot(site, "inv1", site.inverter_product) == (6, 6.0)  # nothing new

        link.heal()  # back: the edge reconnects (backoff on the clock), then drains
        k = 7 + outage_slots
        while edge.state is not EdgeState.ONLINE:
            await run_slots(site, [edge], k, 1)
            k += 1
            assert k < 7 + outage_slots + 10, "no reconnection within 10 slots"
        assert await edge.wait_state(EdgeState.ONLINE, WAIT)
        while (await edge.cache.stats()).samples:
            await run_slots(site, [edge], k, 1)
            k += 1
            # the latest value is always the newest live one, never resumed history
            assert latest_slot(site, "inv1", site.inverter_product) == (k - 1, float(k - 1))
            assert k < 7 + outage_slots + 60, "the backlog did not drain"
        await run_slots(site, [edge], k, 2)
        last = k + 1
    finally:
        await edge.stop()
        stored.take()
        stored.close()

    for device_key, offset in (("inv1", 0.0), ("meter1", 0.5)):
        events = stored.of(device_key)
        # every slot stored exactly once, with the value the field had then
        assert stored.counts(device_key) == dict.fromkeys(range(last + 1), 1)
        bad = [(slot_of(e.time), e.value) for e in events if e.value != slot_of(e.time) + offset]
        assert not bad, bad[:10]
        resumed = [slot_of(e.time) for e in events if e.resume]
        # what the outage collected came back as history, oldest first
        assert resumed == list(range(7, resumed[-1] + 1))
        assert len(resumed) >= outage_slots
    resumed_all = [e for e in stored.events if e.resume]
    assert [e.time for e in resumed_all] == sorted(e.time for e in resumed_all)
    first, final = stored.events.index(resumed_all[0]), stored.events.index(resumed_all[-1])
    live_during = [e for e in stored.events[first:final] if not e.resume]
    assert len(live_during) >= 2 * 10  # live data kept flowing while the backlog drained
    assert latest_slot(site, "inv1", site.inverter_product) == (last, float(last))

    status = edge_status(edge)  # the edge's counters tell the same story
    assert status["cached"] == status["resumed"]
    assert status["lost"] == status["rejected"] == status["dropped"] == 0
    assert edge.stats.disconnects == 1 and edge.stats.connects == 2


def edge_status(edge: Edge) -> dict[str, int]:
    """Sums of the edge's sample counters over its devices."""
    total: dict[str, int] = {}
    for device in ("inverter", "meter"):
        stats = edge.device_stats(device)
        for name in ("cached", "resumed", "lost", "rejected", "dropped"):
            total[name] = total.get(name, 0) + getattr(stats, name)
    return total


async def test_an_edge_that_never_reached_the_hub_keeps_its_backlog_across_a_restart(
    site: Site, link: Link
) -> None:
    lab = site.lab
    stored = Stored(lab)
    link.device(*site.edge_keys).partition(PartitionMode.CUT)  # down from the start
    first = site.make_edge([site.inverter(), site.meter()], port=link.port)
    site.set_slot(0)
    await first.start()  # no hub: it starts offline and collects into its cache
    try:
        assert first.state is EdgeState.OFFLINE
        assert first.device_state("inverter") is SubDeviceState.PENDING
        await run_slots(site, [first], 1, 5)
    finally:
        await first.stop()  # the backlog stays on disk
    assert first.device_stats("inverter").cached == 6

    link.heal()
    clock = lab.clock
    assert isinstance(clock, SimulatedClock)
    await clock.advance_async(INTERVAL / 2)  # restarted within the next slot
    second = site.make_edge([site.inverter(), site.meter()], port=link.port)
    await second.start()  # registers, attaches and logs in the devices, then resumes
    try:
        await run_slots(site, [second], 6, 3)
        assert (await second.cache.stats()).samples == 0
    finally:
        await second.stop()
        stored.take()
        stored.close()
    for device_key in ("inv1", "meter1"):
        assert stored.counts(device_key) == dict.fromkeys(range(9), 1)
        assert [slot_of(e.time) for e in stored.of(device_key) if e.resume] == list(range(6))
    assert second.device_stats("inverter").resumed == 6
