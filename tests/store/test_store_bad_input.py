"""Input the store refuses in the caller's thread, before the writer groups it with others.

Text that is not encodable as UTF-8 (a lone surrogate such as ``"\\ud800"``, which Python strings
may hold and DuckDB cannot store) and event times outside ``[MIN_EVENT_MS, MAX_EVENT_MS]`` (what
pandas represents: a stored row outside it would break every later query of its device) raise
:class:`InvalidArgument` from the append call itself, naming the value and its row; the other
callers' rows commit as if nothing happened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import duckdb
import pytest

from enos_lab.errors import InvalidArgument
from enos_lab.store import (
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    AttributeRow,
    EventRow,
    PointRow,
    TimeSeriesStore,
)
from enos_lab.store._writer import Job

T0 = 1_700_000_000_000
BAD = "\ud800"  # a lone surrogate: a valid Python str, not encodable as UTF-8


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TimeSeriesStore]:
    with TimeSeriesStore(tmp_path / "data") as opened:
        yield opened


def _good(i: int) -> PointRow:
    return PointRow("P", f"d{i}", "v", T0 + i, float(i))


BAD_POINTS: list[tuple[str, PointRow, str]] = [
    ("string value", PointRow("P", "d", "s", T0, "ok" + BAD), "'ok\\ud800'"),
    ("product key", PointRow("P" + BAD, "d", "v", T0, 1.0), "'P\\ud800'"),
    ("device key", PointRow("P", BAD, "v", T0, 1.0), "'\\ud800'"),
    ("point id", PointRow("P", "d", "v" + BAD, T0, 1.0), "'v\\ud800'"),
    ("struct key", PointRow("P", "d", "j", T0, {BAD: 1}), "'\\ud800'"),
    ("nested array", PointRow("P", "d", "j", T0, {"a": [1, ["x", BAD]]}), "'\\ud800'"),
    ("unhashable key", PointRow(["P"], "d", "v", T0, 1.0), "['P']"),  # type: ignore[arg-type]
    ("time too late", PointRow("P", "d", "v", MAX_EVENT_MS + 1, 1.0), str(MAX_EVENT_MS + 1)),
    ("time too early", PointRow("P", "d", "v", MIN_EVENT_MS - 1, 1.0), str(MIN_EVENT_MS - 1)),
    ("time beyond int64", PointRow("P", "d", "v", 2**70, 1.0), str(2**70)),
    ("time of uint64", PointRow("P", "d", "v", 2**63, 1.0), str(2**63)),
]


@pytest.mark.parametrize(("row", "shown"), [pytest.param(r, s, id=i) for i, r, s in BAD_POINTS])
def test_bad_point_is_refused_at_submit_naming_value_and_row(
    store: TimeSeriesStore, row: PointRow, shown: str
) -> None:
    rows = [_good(0), _good(1), row]
    with pytest.raises(InvalidArgument, match="row 2") as info:
        store.submit_points(rows)  # raises here, in the caller's thread
    assert shown in str(info.value)
    assert store.stats().batches == 0
    assert store.append_points([_good(0), _good(1)]) == 2  # the store goes on


def test_bad_point_among_numbers_of_one_batch_names_its_row(store: TimeSeriesStore) -> None:
    rows = [_good(i) for i in range(10)]
    rows[7] = rows[7]._replace(event_time_ms=MAX_EVENT_MS + 5)
    with pytest.raises(InvalidArgument, match=r"row 7\b"):
        store.append_points(rows)


def test_bounds_of_event_time_are_kept_and_queried(store: TimeSeriesStore) -> None:
    rows = [
        PointRow("P", "d", "v", MIN_EVENT_MS, 1.0),
        PointRow("P", "d", "v", MAX_EVENT_MS, 2.0),
    ]
    assert store.append_points(rows) == 2
    frame = store.query_points("d")
    assert list(frame["value"]) == [1.0, 2.0]
    assert str(frame["time"].iloc[0]) == "1677-09-21 00:12:43.146000+00:00"
    assert str(frame["time"].iloc[1]) == "2262-04-11 23:47:16.854000+00:00"


def test_a_bad_append_does_not_fail_the_group_it_would_have_joined(
    store: TimeSeriesStore, caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold(con: duckdb.DuckDBPyConnection) -> None:
        entered.set()
        release.wait(10)

    store._writer.submit(Job(hold, Future()))
    assert entered.wait(10)
    try:
        futures = [store.submit_points([_good(i)]) for i in range(3)]
        with pytest.raises(InvalidArgument):
            store.submit_points([PointRow("P", "d9", "v", T0, BAD)])
        with pytest.raises(InvalidArgument):
            store.submit_points([PointRow("P", "d9", "v", MAX_EVENT_MS + 1, 1.0)])
        futures += [store.submit_points([_good(i)]) for i in range(3, 6)]
    finally:
        release.set()
    with caplog.at_level(logging.WARNING):
        assert [f.result(10) for f in futures] == [1] * 6
    assert store.stats().max_group == 6  # one group, committed at the first try
    assert not [r for r in caplog.records if "group commit" in r.getMessage()]


RecordCase = tuple[str, Callable[[TimeSeriesStore], Callable[[list[Any]], int]], Any, str]
BAD_RECORDS: list[RecordCase] = [
    (
        "event output",
        lambda s: s.append_events,
        EventRow("P", "d", "e", T0, {"a": {"b": ["x" + BAD]}}),
        "'x\\ud800'",
    ),
    ("event id", lambda s: s.append_events, EventRow("P", "d", "e" + BAD, T0, {}), "'e\\ud800'"),
    (
        "event severity",
        lambda s: s.append_events,
        EventRow("P", "d", "e", T0, {}, BAD),
        "'\\ud800'",
    ),
    (
        "event time",
        lambda s: s.append_events,
        EventRow("P", "d", "e", MAX_EVENT_MS + 1, {}),
        str(MAX_EVENT_MS + 1),
    ),
    (
        "attribute value",
        lambda s: s.append_attributes,
        AttributeRow("P", "d", "a", T0, [BAD]),
        "'\\ud800'",
    ),
    (
        "attribute device",
        lambda s: s.append_attributes,
        AttributeRow("P", "d" + BAD, "a", T0, 1),
        "'d\\ud800'",
    ),
    (
        "attribute time",
        lambda s: s.append_attributes,
        AttributeRow("P", "d", "a", MIN_EVENT_MS - 1, 1),
        str(MIN_EVENT_MS - 1),
    ),
]


@pytest.mark.parametrize(
    ("append", "record", "shown"), [pytest.param(a, r, s, id=i) for i, a, r, s in BAD_RECORDS]
)
def test_bad_event_or_attribute_is_refused_naming_value_and_row(
    store: TimeSeriesStore,
    append: Callable[[TimeSeriesStore], Callable[[list[Any]], int]],
    record: Any,
    shown: str,
) -> None:
    good = {
        EventRow: EventRow("P", "d", "e", T0, {"x": 1}),
        AttributeRow: AttributeRow("P", "d", "a", T0, 1),
    }[type(record)]
    with pytest.raises(InvalidArgument, match="row 1") as info:
        append(store)([good, record])
    assert shown in str(info.value)
    assert store.stats().batches == 0
    assert append(store)([good]) == 1


def test_events_and_attributes_at_the_bounds_are_kept(store: TimeSeriesStore) -> None:
    assert store.append_events([EventRow("P", "d", "e", MAX_EVENT_MS, {"a": "日本"})]) == 1
    assert store.append_attributes([AttributeRow("P", "d", "a", MIN_EVENT_MS, "x")]) == 1
    assert store.query_events()["outputs"].tolist() == [{"a": "日本"}]
    assert len(store.query_attributes()) == 1
