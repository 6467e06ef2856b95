"""Measurepoint round trips, latest-by-event-time, resume and the duplicate policy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.errors import InvalidArgument
from enos_lab.store import PointRow, TimeSeriesStore

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z [ms]


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture
def store(tmp_path: Path, clock: SimulatedClock) -> Iterator[TimeSeriesStore]:
    with TimeSeriesStore(tmp_path / "data", clock=clock) as opened:
        yield opened


def utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([21.5, -3.25, 0.0], "float64"),
        ([1, -7, 2**40], "Int64"),
        ([True, False, True], "boolean"),
        (["on", "", "日本"], "string"),
    ],
)
def test_round_trip_of_scalar_kinds(
    store: TimeSeriesStore, values: list[object], dtype: str
) -> None:
    rows = [PointRow("P", "d1", "pt", T0 + i * 1000, v) for i, v in enumerate(values)]
    assert store.append_points(rows) == 3
    frame = store.query_points("d1", "pt")
    if dtype == "string":
        assert pd.api.types.is_string_dtype(frame["value"])
    else:
        assert str(frame["value"].dtype) == dtype
    assert frame["value"].tolist() == values
    assert list(frame["time"]) == [utc(T0), utc(T0 + 1000), utc(T0 + 2000)]
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame["product_key"].tolist() == ["P"] * 3
    assert frame["point_id"].tolist() == ["pt"] * 3


def test_round_trip_of_struct_array_and_quality(
    store: TimeSeriesStore, clock: SimulatedClock
) -> None:
    store.append_points(
        [
            PointRow("P", "d1", "gps", T0, {"lat": 31.2, "lon": 121.5}),
            PointRow("P", "d1", "phaseCurr", T0, [1.1, 1.2, 1.3]),
            PointRow("P", "d1", "tuple", T0, (1, "a")),
            PointRow("P", "d1", "power", T0, 12.3, 9),
            PointRow("P", "d1", "power", T0 + 1, 12.4, 0),
        ]
    )
    frame = store.query_points("d1").set_index(["point_id", "time"])
    assert frame.loc[("gps", utc(T0)), "value"] == {"lat": 31.2, "lon": 121.5}
    assert frame.loc[("phaseCurr", utc(T0)), "value"] == [1.1, 1.2, 1.3]
    assert frame.loc[("tuple", utc(T0)), "value"] == [1, "a"]
    assert frame.loc[("power", utc(T0)), "value"] == 12.3
    assert frame.loc[("power", utc(T0)), "quality"] == 9
    assert frame.loc[("power", utc(T0 + 1)), "quality"] == 0
    assert pd.isna(frame.loc[("gps", utc(T0)), "quality"])
    assert (frame["receive_time"] == clock.now()).all()
    assert str(frame["quality"].dtype) == "Int64"


def test_mixed_kinds_come_back_as_python_values(store: TimeSeriesStore) -> None:
    store.append_points(
        [
            PointRow("P", "d1", "a", T0, 1.5),
            PointRow("P", "d1", "b", T0, 7),
            PointRow("P", "d1", "c", T0, False),
            PointRow("P", "d1", "d", T0, "x"),
            PointRow("P", "d1", "e", T0, {"k": [1]}),
            PointRow("P", "d1", "f", T0, np.float32(0.5)),
            PointRow("P", "d1", "g", T0, np.int64(3)),
        ]
    )
    frame = store.query_points("d1")
    assert frame["point_id"].tolist() == list("abcdefg")
    assert frame["value"].tolist() == [1.5, 7, False, "x", {"k": [1]}, 0.5, 3]
    assert [type(v) for v in frame["value"]] == [float, int, bool, str, dict, float, int]


def test_plain_tuples_and_time_range_are_half_open(store: TimeSeriesStore) -> None:
    store.append_points([("P", "d1", "t", T0 + i * 1000, float(i), None, False) for i in range(10)])
    frame = store.query_points("d1", ["t"], utc(T0 + 2000), utc(T0 + 5000))
    assert frame["value"].tolist() == [2.0, 3.0, 4.0]
    by_ms = store.query_points("d1", "t", T0 + 8000, None)
    assert by_ms["value"].tolist() == [8.0, 9.0]
    by_text = store.query_points("d1", "t", None, "2023-11-14T22:13:22+00:00")
    assert by_text["value"].tolist() == [0.0, 1.0]
    assert store.query_points("d1", "t", T0 + 3000, T0 + 3000).empty


def test_latest_is_by_event_time_not_arrival(store: TimeSeriesStore) -> None:
    store.append_points([PointRow("P", "d1", "t", T0 + 5000, 5.0)])
    store.append_points([PointRow("P", "d1", "t", T0 + 1000, 1.0)])  # late arrival, older
    store.append_points(
        [PointRow("P", "d1", "t", T0 + 9000, 9.0), PointRow("P", "d1", "t", T0 + 7000, 7.0)]
    )
    latest = store.latest("d1", "t")
    assert latest["value"].tolist() == [9.0]
    assert latest["time"].tolist() == [utc(T0 + 9000)]
    assert store.query_points("d1", "t")["value"].tolist() == [1.0, 5.0, 7.0, 9.0]


def test_resume_fills_history_without_replacing_newer_latest(store: TimeSeriesStore) -> None:
    store.append_points([PointRow("P", "d1", "t", T0 + 10_000, 10.0)])
    resumed = [PointRow("P", "d1", "t", T0 + i * 1000, float(i), None, True) for i in range(10)]
    store.append_points(resumed)
    assert store.latest("d1")["value"].tolist() == [10.0]
    history = store.query_points("d1", "t")
    assert history["value"].tolist() == [float(i) for i in range(11)]
    assert history["resume"].tolist() == [True] * 10 + [False]
    # Resumed data newer than anything stored does become the latest value.
    store.append_points([PointRow("P", "d1", "t", T0 + 20_000, 20.0, None, True)])
    latest = store.latest("d1")
    assert latest["value"].tolist() == [20.0]
    assert latest["resume"].tolist() == [True]


def test_duplicate_event_time_last_write_wins(
    store: TimeSeriesStore, clock: SimulatedClock
) -> None:
    store.append_points([PointRow("P", "d1", "t", T0, 1.0, 1)])
    first_receive = clock.now()
    clock.advance(5)
    store.append_points([PointRow("P", "d1", "t", T0, 2.0, 9)])
    frame = store.query_points("d1", "t")
    assert frame["value"].tolist() == [2.0]
    assert frame["quality"].tolist() == [9]
    assert frame["receive_time"].tolist() == [first_receive + pd.Timedelta(seconds=5)]
    assert store.latest("d1")["value"].tolist() == [2.0]
    # Within one batch too: the later row wins.
    store.append_points([PointRow("P", "d1", "t", T0, 3.0), PointRow("P", "d1", "t", T0, 4.0)])
    assert store.query_points("d1", "t")["value"].tolist() == [4.0]
    assert store.latest("d1")["value"].tolist() == [4.0]


def test_duplicate_resume_never_replaces_live_row(store: TimeSeriesStore) -> None:
    store.append_points([PointRow("P", "d1", "t", T0, 1.0), PointRow("P", "d1", "t", T0 - 5, 0.5)])
    store.append_points(
        [
            PointRow("P", "d1", "t", T0, 99.0, None, True),
            PointRow("P", "d1", "t", T0 - 5, 9.0, 1, True),
        ]
    )
    frame = store.query_points("d1", "t")
    assert frame["value"].tolist() == [0.5, 1.0]
    assert frame["resume"].tolist() == [False, False]
    assert store.latest("d1")["value"].tolist() == [1.0]
    # In one batch, live beats resume whatever the order.
    store.append_points(
        [PointRow("P", "d1", "u", T0, 2.0), PointRow("P", "d1", "u", T0, 3.0, None, True)]
    )
    assert store.query_points("d1", "u")["value"].tolist() == [2.0]
    # A resumed row replaces a resumed row; a live row replaces a resumed row.
    store.append_points([PointRow("P", "d1", "v", T0, 1.0, None, True)])
    store.append_points([PointRow("P", "d1", "v", T0, 2.0, None, True)])
    assert store.query_points("d1", "v")["value"].tolist() == [2.0]
    store.append_points([PointRow("P", "d1", "v", T0, 3.0)])
    frame = store.query_points("d1", "v")
    assert frame["value"].tolist() == [3.0]
    assert frame["resume"].tolist() == [False]
    assert store.latest("d1", "v")["value"].tolist() == [3.0]


def test_latest_per_device_and_point_for_many_devices(store: TimeSeriesStore) -> None:
    rows = [
        PointRow("P", f"d{d}", p, T0 + t * 1000, d * 100 + t)
        for t in (3, 1, 2)
        for d in range(5)
        for p in ("a", "b")
    ]
    store.append_points(rows)
    latest = store.latest()
    assert len(latest) == 10
    assert latest["value"].tolist() == [d * 100 + 3 for d in range(5) for _ in ("a", "b")]
    only = store.latest(["d1", "d3"], "b")
    assert only["device_key"].tolist() == ["d1", "d3"]
    assert only["value"].tolist() == [103, 303]


def test_latest_survives_reopen(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path) as store:
        store.append_points([PointRow("P", "d1", "t", T0 + 10, 1.0)])
        store.append_points([PointRow("P", "d1", "t", T0, 0.0)])
    with TimeSeriesStore(tmp_path) as store:
        assert store.latest("d1")["value"].tolist() == [1.0]
        store.append_points([PointRow("P", "d1", "t", T0 + 10, 5.0, None, True)])
        assert store.query_points("d1")["value"].tolist() == [0.0, 1.0]
        store.append_points([PointRow("P", "d1", "t", T0 + 10, 7.0)])
        assert store.latest("d1")["value"].tolist() == [7.0]


@pytest.mark.parametrize(
    "row",
    [
        ("P", "d1", "t", 1.5, 1.0, None, False),  # float event time
        ("P", "d1", "t", T0, None, None, False),  # no value
        ("P", "d1", "t", T0, object(), None, False),
        ("P", "d1", "t", T0, 1.0, -1, False),  # negative quality
        ("P", "d1", "t", T0, 1.0, 1.5, False),
        ("P", "", "t", T0, 1.0, None, False),  # empty device key
        ("P", "d1", "t", T0, {"x": float("nan")}, None, False),  # not JSON
        ("P", "d1", "t", T0),  # too short
    ],
)
def test_bad_rows_are_refused(store: TimeSeriesStore, row: tuple[object, ...]) -> None:
    with pytest.raises(InvalidArgument):
        store.append_points([row])  # type: ignore[list-item]
    store.append_points([PointRow("P", "ok", "t", T0, 1.0)])  # the store still works
    assert len(store.query_points("ok")) == 1
