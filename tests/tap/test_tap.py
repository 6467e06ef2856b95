"""The device-data tap: filters, callbacks, bounded subscriptions read from threads and loops."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from enos_lab.errors import ClosedError, InvalidArgument
from enos_lab.tap import (
    EventPosted,
    PointStored,
    PresenceChanged,
    Tap,
    TapEvent,
    TapFilter,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def point(dk: str = "d1", pid: str = "power", value: float = 1.0, pk: str = "pk") -> PointStored:
    return PointStored(pk, dk, pid, T0, value)


def presence(dk: str = "d1", online: bool = True) -> PresenceChanged:
    return PresenceChanged("pk", dk, T0, online, "connected" if online else "disconnected")


def test_filters_by_kind_product_device_and_point() -> None:
    assert TapFilter.of().matches(presence())
    by_kind = TapFilter.of(kinds=PointStored)
    assert by_kind.matches(point()) and not by_kind.matches(presence())
    several = TapFilter.of(kinds=[PointStored, PresenceChanged])
    assert several.matches(point()) and several.matches(presence())
    assert not TapFilter.of(product_key="other").matches(point())
    assert TapFilter.of(device_key="d2").matches(point("d2"))
    by_point = TapFilter.of(point_id="power")
    assert by_point.kinds == frozenset({PointStored})
    assert by_point.matches(point()) and not by_point.matches(point(pid="voltage"))
    assert not by_point.matches(presence())


@pytest.mark.parametrize("kinds", [int, [PointStored, str], []])
def test_unknown_kinds_are_refused(kinds: object) -> None:
    with pytest.raises(InvalidArgument, match="tap event classes"):
        TapFilter.of(kinds=kinds)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="point_id"):
        TapFilter.of(kinds=PresenceChanged, point_id="power")


def test_wants_follows_the_consumers() -> None:
    tap = Tap()
    assert not tap.active and not tap.wants(PointStored)
    handle = tap.add_callback(lambda e: None, kinds=PresenceChanged)
    assert tap.wants(PresenceChanged) and not tap.wants(PointStored)
    sub = tap.subscribe()
    assert tap.wants(PointStored) and tap.wants(EventPosted)
    sub.close()
    handle.cancel()
    assert not tap.active
    assert tap.stats.callbacks == 0 and tap.stats.subscriptions == 0


def test_callbacks_run_in_order_and_a_failing_one_stays() -> None:
    tap = Tap()
    seen: list[TapEvent] = []
    tap.add_callback(seen.append, device_key="d1")

    def broken(event: TapEvent) -> None:
        raise RuntimeError("consumer bug")

    bad = tap.add_callback(broken)
    events = [point(), point("d2"), presence()]
    tap.emit_many(events)
    assert seen == [events[0], events[2]]
    assert bad.errors == 3 and tap.stats.callback_errors == 3
    assert tap.stats.emitted == 3


def test_a_subscription_is_bounded_and_keeps_the_newest() -> None:
    tap = Tap()
    sub = tap.subscribe(kinds=PointStored, maxsize=3)
    for value in range(5):
        tap.emit(point(value=float(value)))
    assert len(sub) == 3
    assert sub.dropped == 2 and sub.received == 5 and tap.stats.dropped == 2
    assert [e.value for e in sub.drain()] == [2.0, 3.0, 4.0]  # type: ignore[union-attr]
    assert sub.drain() == []
    with pytest.raises(InvalidArgument, match="maxsize"):
        tap.subscribe(maxsize=0)


def test_a_batch_is_delivered_at_once_and_bounded_the_same_way() -> None:
    tap = Tap()
    sub = tap.subscribe(kinds=PointStored, maxsize=3)
    seen: list[TapEvent] = []
    tap.add_callback(seen.append, kinds=PointStored)
    tap.emit(point(value=0.0))
    batch = [point(value=float(value)) for value in range(1, 6)]
    tap.emit_many([*batch, presence()])
    assert [e.value for e in sub.drain()] == [3.0, 4.0, 5.0]  # type: ignore[union-attr]
    assert sub.received == 6 and sub.dropped == 3 and tap.stats.dropped == 3
    assert seen == [point(value=0.0), *batch] and tap.stats.emitted == 7


def test_a_subscription_read_from_another_thread() -> None:
    tap = Tap()
    got: list[TapEvent] = []
    with tap.subscribe() as sub:
        reader = threading.Thread(target=lambda: got.extend(sub))
        reader.start()
        tap.emit_many([presence(), point()])
        with pytest.raises(TimeoutError):
            tap.subscribe().get(timeout=0.01)
        while len(got) < 2:
            threading.Event().wait(0.01)
    reader.join(5)
    assert not reader.is_alive()
    assert got == [presence(), point()]
    with pytest.raises(ClosedError):
        sub.get(timeout=0)
    tap.emit(point())  # a closed subscription gets nothing more
    assert len(sub) == 0


def test_a_subscription_read_by_async_for_on_another_loop() -> None:
    tap = Tap()
    sub = tap.subscribe(kinds=PresenceChanged)
    producer_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=producer_loop.run_forever, daemon=True)
    thread.start()

    async def read() -> list[TapEvent]:
        events = []
        async for event in sub:
            events.append(event)
            if len(events) == 2:
                sub.close()
        return events

    async def main() -> list[TapEvent]:
        reading = asyncio.create_task(read())
        await asyncio.sleep(0.01)
        # emitted on the other loop, as the lab's loop does
        producer_loop.call_soon_threadsafe(tap.emit_many, [presence(), point(), presence("d2")])
        return await asyncio.wait_for(reading, 5)

    try:
        assert asyncio.run(main()) == [presence(), presence("d2")]
    finally:
        producer_loop.call_soon_threadsafe(producer_loop.stop)
        thread.join(5)
        producer_loop.close()
