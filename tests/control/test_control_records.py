"""CommandRecords alone: statuses, the frame's filters and bounded history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.control import COMMAND_COLUMNS, CommandRecords, CommandStatus
from enos_lab.errors import ClosedError, InvalidArgument, NotFound

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_statuses_and_the_frame() -> None:
    clock = SimulatedClock(T0)
    records = CommandRecords(":memory:", clock=clock)
    a = records.create("pk", "a", "restart", {}, expires_ms=None)
    b = records.create("pk", "b", "measurepoint.set", {"p": 1.0}, expires_ms=1)
    records.sent(a)
    clock.advance(2)
    records.replied(a, 200, "", {"ok": True})
    records.finished(b, CommandStatus.EXPIRED, "pending_ttl passed")
    assert records.get(a).status is CommandStatus.REPLIED
    assert records.get(a).replied == T0 + timedelta(seconds=2)
    assert records.get(b).status is CommandStatus.EXPIRED
    frame = records.frame()
    assert list(frame.columns) == list(COMMAND_COLUMNS)
    assert list(frame["status"]) == ["replied", "expired"]
    assert list(records.frame(device_key="b")["command_id"]) == [b]
    assert records.frame(end=T0).empty and len(records.frame(start=T0)) == 2
    with pytest.raises(InvalidArgument):
        records.finished(a, CommandStatus.REPLIED, "no")
    with pytest.raises(NotFound):
        records.sent("missing")
    records.close()
    with pytest.raises(ClosedError):
        records.get(a)


def test_history_is_bounded_by_age_and_count() -> None:
    clock = SimulatedClock(T0)
    records = CommandRecords(":memory:", clock=clock, keep=timedelta(days=1), max_history=2)
    waiting = records.create("pk", "a", "restart", {})
    done = []
    for _ in range(3):
        command = records.create("pk", "a", "restart", {})
        records.finished(command, CommandStatus.FAILED, "the device is offline")
        done.append(command)
    assert records.prune() == 1  # beyond max_history: the oldest finished one
    assert [c for c in done if c in set(records.frame()["command_id"])] == done[1:]
    clock.advance(timedelta(days=2))
    assert records.prune() == 2  # older than keep
    assert list(records.frame()["command_id"]) == [waiting]  # never pruned while unfinished
    records.close()
