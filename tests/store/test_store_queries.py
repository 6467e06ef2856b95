"""Time-bucket aggregation, events, attribute changes, alert records and typed errors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from enos_lab.errors import InvalidArgument, NotFound, StoreError
from enos_lab.store import (
    AGGREGATIONS,
    AlertRecord,
    AttributeRow,
    EventRow,
    PointRow,
    SeriesNotFound,
    TimeSeriesStore,
)

B = 1_704_067_200_000  # 2024-01-01T00:00:00Z [ms]
S = 1000


def utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TimeSeriesStore]:
    with TimeSeriesStore(tmp_path / "data") as opened:
        # Out of order on purpose: first/last follow event time, not arrival.
        opened.append_points(
            [
                PointRow("P", "d1", "temp", B + 40 * S, 6),
                PointRow("P", "d1", "temp", B + 0 * S, 1.0),
                PointRow("P", "d1", "temp", B + 20 * S, 2.0),
                PointRow("P", "d1", "temp", B + 119 * S, 4.0),
                PointRow("P", "d1", "temp", B + 60 * S, 10.0),
                PointRow("P", "d1", "temp", B + 180 * S, -2.0),
                PointRow("P", "d2", "temp", B + 10 * S, 5.0),
                PointRow("P", "d2", "temp", B + 70 * S, 8.0),
                PointRow("P", "d1", "mode", B, "auto"),
                PointRow("P", "d1", "on", B, True),
                PointRow("P", "d1", "on", B + 30 * S, False),
                PointRow("P", "d1", "on", B + 50 * S, True),
                PointRow("Q", "d9", "temp", B, 100.0),
            ]
        )
        yield opened


def test_every_aggregation_per_device(store: TimeSeriesStore) -> None:
    frame = store.aggregate("temp", "1min", AGGREGATIONS, device_keys=["d1", "d2"])
    assert list(frame.columns) == ["product_key", "device_key", "point_id", "time", *AGGREGATIONS]
    assert str(frame["time"].dt.tz) == "UTC"
    expected = [
        ("d1", B, 3.0, 1.0, 6.0, 9.0, 3, 1.0, 6.0),
        ("d1", B + 60 * S, 7.0, 4.0, 10.0, 14.0, 2, 10.0, 4.0),
        ("d1", B + 180 * S, -2.0, -2.0, -2.0, -2.0, 1, -2.0, -2.0),
        ("d2", B, 5.0, 5.0, 5.0, 5.0, 1, 5.0, 5.0),
        ("d2", B + 60 * S, 8.0, 8.0, 8.0, 8.0, 1, 8.0, 8.0),
    ]
    got = [
        (r.device_key, r.time, r.avg, r.min, r.max, r.sum, r.count, r.first, r.last)
        for r in frame.itertuples()
    ]
    assert got == [(d, utc(t), *rest) for d, t, *rest in expected]
    assert frame["count"].dtype == "int64"


def test_fleet_wide_aggregation(store: TimeSeriesStore) -> None:
    frame = store.aggregate(
        ["temp"], timedelta(minutes=1), list(AGGREGATIONS), product_key="P", fleet=True
    )
    assert list(frame.columns) == ["point_id", "time", *AGGREGATIONS]
    rows = [tuple(r)[1:] for r in frame.itertuples(index=False)]
    assert rows[0] == (utc(B), 3.5, 1.0, 6.0, 14.0, 4, 1.0, 6.0)
    assert rows[1][0] == utc(B + 60 * S)
    assert rows[1][1] == pytest.approx(22 / 3)
    assert rows[1][2:] == (4.0, 10.0, 22.0, 3, 10.0, 4.0)
    assert rows[2] == (utc(B + 180 * S), -2.0, -2.0, -2.0, -2.0, 1, -2.0, -2.0)
    # Without a product filter the other product's device joins the fleet.
    everyone = store.aggregate("temp", "1h", ["count", "max"], fleet=True)
    assert everyone[["count", "max"]].values.tolist() == [[9, 100.0]]


def test_intervals_ranges_and_bool_points(store: TimeSeriesStore) -> None:
    hourly = store.aggregate("temp", "1h", ["avg", "count"], device_keys="d1")
    assert hourly[["avg", "count"]].values.tolist() == [[3.5, 6]]
    ranged = store.aggregate(
        "temp", "15min", "sum", utc(B + 20 * S), utc(B + 119 * S), device_keys="d1"
    )
    assert ranged["sum"].tolist() == [18.0]  # 2 + 6 + 10; 119 s is outside [start, end)
    on = store.aggregate("on", "1D", ["avg", "first", "last"], device_keys="d1")
    assert on[["avg", "first", "last"]].values.tolist() == [[2 / 3, 1.0, 1.0]]
    assert on["time"].tolist() == [utc(B)]
    # A string point has nothing to aggregate.
    assert store.aggregate("mode", "1min", device_keys="d1").empty


def test_bucket_alignment_before_the_epoch(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path) as store:
        store.append_points(
            [PointRow("P", "d", "v", -90 * S, 1.0), PointRow("P", "d", "v", -1, 3.0)]
        )
        frame = store.aggregate("v", "1min", "avg")
        assert frame["time"].tolist() == [utc(-120 * S), utc(-60 * S)]


def test_events_by_time_range(store: TimeSeriesStore) -> None:
    store.append_events(
        [
            EventRow("P", "d1", "overheat", B + 5 * S, {"temp": 91.5}, "ERROR"),
            EventRow("P", "d2", "overheat", B + 1 * S, {"temp": 88.0}),
            EventRow("P", "d1", "door", B + 9 * S, {"open": True, "who": ["a", "b"]}, "INFO"),
        ]
    )
    frame = store.query_events(utc(B), utc(B + 6 * S))
    assert list(frame.columns) == [
        "time",
        "product_key",
        "device_key",
        "event_id",
        "severity",
        "outputs",
        "receive_time",
    ]
    assert frame["device_key"].tolist() == ["d2", "d1"]
    assert frame["outputs"].tolist() == [{"temp": 88.0}, {"temp": 91.5}]
    assert frame["severity"].tolist()[1] == "ERROR"
    assert pd.isna(frame["severity"].tolist()[0])
    assert frame["time"].tolist() == [utc(B + S), utc(B + 5 * S)]
    d1 = store.query_events(device_key="d1", event_id="door")
    assert d1["outputs"].tolist() == [{"open": True, "who": ["a", "b"]}]


def test_attribute_changes(store: TimeSeriesStore) -> None:
    store.append_attributes(
        [
            AttributeRow("P", "d1", "maxCurrent", B, 1000),
            AttributeRow("P", "d1", "loc", B + S, {"lat": 1.0, "lon": 2.0}),
            AttributeRow("P", "d1", "maxCurrent", B + 2 * S, None),
        ]
    )
    frame = store.query_attributes(device_key="d1")
    assert frame["attribute_id"].tolist() == ["maxCurrent", "loc", "maxCurrent"]
    assert frame["value"].tolist() == [1000, {"lat": 1.0, "lon": 2.0}, None]
    assert frame["time"].tolist() == [utc(B), utc(B + S), utc(B + 2 * S)]
    assert len(store.query_attributes(attribute_id="loc")) == 1


def test_alert_records_are_upserted_by_alert_id(store: TimeSeriesStore) -> None:
    raised = AlertRecord(
        "a-1",
        "rule.hot",
        "P",
        "d1",
        "critical",
        "active",
        B + 40 * S,
        point_id="temp",
        value=6,
        message="temp above 5",
    )
    store.append_alert(raised)
    store.append_alert(AlertRecord("a-2", "rule.cold", "P", "d1", "warning", "active", B + 180 * S))
    active = store.query_alerts(state="active")
    assert active["alert_id"].tolist() == ["a-1", "a-2"]
    assert pd.isna(active["recover_time"]).all()
    store.append_alerts(
        [
            AlertRecord(
                "a-1",
                "rule.hot",
                "P",
                "d1",
                "critical",
                "recovered",
                B + 40 * S,
                point_id="temp",
                recover_time_ms=B + 119 * S,
                value=6,
                message="temp above 5",
            )
        ]
    )
    frame = store.query_alerts(utc(B), utc(B + 60 * S))
    assert len(frame) == 1
    rec = frame.iloc[0]
    assert (rec.alert_id, rec.rule_id, rec.device_key, rec.point_id) == (
        "a-1",
        "rule.hot",
        "d1",
        "temp",
    )
    assert (rec.severity, rec.state, rec.value, rec.message) == (
        "critical",
        "recovered",
        6,
        "temp above 5",
    )
    assert rec.occur_time == utc(B + 40 * S)
    assert rec.recover_time == utc(B + 119 * S)
    assert store.query_alerts(rule_id="rule.cold")["alert_id"].tolist() == ["a-2"]
    assert store.query_alerts(state="active")["alert_id"].tolist() == ["a-2"]


def test_series_and_devices_listing(store: TimeSeriesStore) -> None:
    assert store.devices().values.tolist() == [["P", "d1"], ["P", "d2"], ["Q", "d9"]]
    assert ["P", "d1", "mode"] in store.series().values.tolist()


def test_unknown_device_or_point_raises_series_not_found(store: TimeSeriesStore) -> None:
    with pytest.raises(SeriesNotFound) as info:
        store.query_points("nope")
    assert isinstance(info.value, NotFound)
    assert isinstance(info.value, StoreError)
    assert "nope" in str(info.value)
    with pytest.raises(SeriesNotFound, match="pressure"):
        store.query_points("d1", "pressure")
    with pytest.raises(SeriesNotFound):
        store.query_points("d9", product_key="P")  # d9 belongs to product Q
    with pytest.raises(SeriesNotFound):
        store.latest(["d1", "ghost"])
    with pytest.raises(SeriesNotFound):
        store.aggregate("temp", "1min", device_keys=["ghost"])
    with pytest.raises(SeriesNotFound):
        store.aggregate("nothing", "1min")
    with pytest.raises(SeriesNotFound):
        store.query_events(device_key="ghost")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.query_points("d1", start=B + 10, end=B),
        lambda s: s.aggregate("temp", "1min", start=utc(B + 10), end=utc(B)),
        lambda s: s.query_events(B + 1, B),
        lambda s: s.aggregate("temp", "1min", "median"),
        lambda s: s.aggregate("temp", "1min", []),
        lambda s: s.aggregate("temp", "1M"),
        lambda s: s.aggregate("temp", "soon"),
        lambda s: s.aggregate("temp", "0min"),
        lambda s: s.aggregate("temp", "1us"),
        lambda s: s.aggregate("temp", "1min", source="cache"),
        lambda s: s.query_points("d1", start=datetime(2024, 1, 1)),
        lambda s: s.query_points("d1", start="yesterday"),
        lambda s: s.query_points([]),
    ],
)
def test_bad_arguments_raise_invalid_argument(store: TimeSeriesStore, call: object) -> None:
    with pytest.raises(InvalidArgument):
        call(store)  # type: ignore[operator]


def test_nan_values_are_kept(store: TimeSeriesStore) -> None:
    store.append_points([PointRow("P", "d3", "v", B, math.nan)])
    assert math.isnan(store.query_points("d3")["value"].iloc[0])
