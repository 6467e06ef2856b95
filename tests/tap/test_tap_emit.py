"""The IoT hub's emitter and the batcher's commit: nothing is built without a consumer, held
presence events wait for the registry's write, rows the store refuses are not told."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.errors import InvalidArgument
from enos_lab.iothub._emit import Emitter
from enos_lab.iothub._measurepoints import PointBatcher
from enos_lab.store import PointRow, TimeSeriesStore
from enos_lab.tap import (
    DeviceLoggedIn,
    EventPosted,
    PointStored,
    PresenceChanged,
    Tap,
    TapEvent,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def emitter() -> tuple[Tap, Emitter]:
    tap = Tap()
    return tap, Emitter(tap, SimulatedClock(T0))


def test_without_a_consumer_nothing_is_built() -> None:
    tap, emit = emitter()

    def rows() -> Iterator[Any]:
        raise AssertionError("rows read although nobody listens")
        yield  # pragma: no cover

    emit.points(rows())
    emit.events(rows())
    emit.presence(("pk", "d1"), True, "connected")
    emit.release()
    tap.subscribe(kinds=EventPosted)  # a consumer of another kind
    emit.points(rows())
    assert tap.stats.emitted == 0


def test_points_carry_their_event_time_and_flags() -> None:
    tap, emit = emitter()
    sub = tap.subscribe()
    emit.points([PointRow("pk", "d1", "temp", 1000, 1.5), ("pk", "d1", "power", 1000, 2.0, 9, 1)])
    at = from_epoch_ms(1000)
    assert sub.drain() == [
        PointStored("pk", "d1", "temp", at, 1.5, None, False),
        PointStored("pk", "d1", "power", at, 2.0, 9, True),
    ]


def test_point_rows_go_to_row_consumers_without_building_events() -> None:
    tap, emit = emitter()
    got: list[list[Any]] = []
    handle = tap.add_point_rows(lambda rows: got.append(list(rows)))
    assert tap.wants(PointStored) and tap.stats.emitted == 0
    rows = [PointRow("pk", "d1", "temp", 1000, 1.5), ("pk", "d2", "temp", 2000, 2.5, None, True)]
    emit.points(rows)
    assert got == [rows]
    assert tap.stats.emitted == 0  # no event consumer: no event was built
    sub = tap.subscribe(kinds=PointStored, device_key="d2")  # now both kinds of consumer
    emit.points(rows)
    assert len(got) == 2
    assert sub.drain() == [PointStored("pk", "d2", "temp", from_epoch_ms(2000), 2.5, None, True)]

    def failing(rows: Any) -> None:
        raise RuntimeError("consumer bug")

    broken = tap.add_point_rows(failing)
    emit.points(rows)  # a failing consumer is counted and logged; the others still get them
    assert broken.errors == 1 and len(got) == 3
    handle.cancel()
    broken.cancel()
    sub.close()
    assert not tap.wants(PointStored)


def test_presence_and_logins_wait_for_the_registry_write() -> None:
    tap, emit = emitter()
    sub = tap.subscribe()
    emit.logged_in(("pk", "d1"), "d1|securemode=2|", 2)
    emit.presence(("pk", "d1"), True, "connected")
    assert sub.drain() == []  # held until the presence queue is written
    emit.release()
    login, online = sub.drain()
    assert login == DeviceLoggedIn("pk", "d1", T0, "d1|securemode=2|", 2)
    assert online == PresenceChanged("pk", "d1", T0, True, "connected")
    emit.presence(("pk", "d1"), False, "disconnected")
    emit.release(kept=False)  # the registry could not write it: never told
    emit.release()
    assert sub.drain() == []


def test_no_change_tells_nothing() -> None:
    tap, emit = emitter()
    sub = tap.subscribe()
    emit.attributes(("pk", "d1"), 1000, {}, ())
    emit.tags(("pk", "d1"), deleted=[])
    assert sub.drain() == []


async def test_rows_the_store_refuses_are_not_told(tmp_path: Path) -> None:
    """One batch with general-path appends and fast-path posts; the store refuses two of them
    (appended alone after the combined append failed): only the kept rows are told, after the
    replies."""
    store = TimeSeriesStore(tmp_path / "store")
    tap, emit = emitter()
    sub = tap.subscribe(kinds=PointStored)
    order: list[str] = []

    def answer(posts: list[Any], results: list[int | BaseException] | None, replied: Any) -> None:
        order.append(f"answered, {len(sub)} told")
        replied.set_result(None)

    batcher = PointBatcher(answer, store, emit)
    refused = PointRow("P", "d0", "temp", 2**70, 1.0)  # beyond the store's event times
    try:
        stored = batcher.add([PointRow("P", "d1", "status", 1000, 7)])
        failed = batcher.add([refused])
        replied = batcher.add_post(("t1", b"ok", "p1", 1, [PointRow("P", "d2", "temp", 1000, 2)]))
        batcher.add_post(("t2", b"ok", "p2", 1, [refused]))
        assert await stored == 1
        with pytest.raises(InvalidArgument):
            await failed
        await replied
        told: list[TapEvent] = sub.drain()
        assert sorted((e.device_key, e.point_id) for e in told) == [
            ("d1", "status"),
            ("d2", "temp"),
        ]
        assert order == ["answered, 0 told"]
    finally:
        store.close()
