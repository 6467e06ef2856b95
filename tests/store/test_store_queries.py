"""Time-bucket aggregation, events, attribute changes, empty results, errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from enos_lab.errors import InvalidArgument, NotFound
from enos_lab.store import (
    AGGREGATIONS,
    AttributeRow,
    DeviceDirectory,
    EventRow,
    PointRow,
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
    frame = store.aggregate(["d1", "d2"], "temp", interval="1min", aggregations=AGGREGATIONS)
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
        point_ids=["temp"],
        interval=timedelta(minutes=1),
        aggregations=list(AGGREGATIONS),
        product_key="P",
        fleet=True,
    )
    assert list(frame.columns) == ["point_id", "time", *AGGREGATIONS]
    rows = [tuple(r)[1:] for r in frame.itertuples(index=False)]
    assert rows[0] == (utc(B), 3.5, 1.0, 6.0, 14.0, 4, 1.0, 6.0)
    assert rows[1][0] == utc(B + 60 * S)
    assert rows[1][1] == pytest.approx(22 / 3)
    assert rows[1][2:] == (4.0, 10.0, 22.0, 3, 10.0, 4.0)
    assert rows[2] == (utc(B + 180 * S), -2.0, -2.0, -2.0, -2.0, 1, -2.0, -2.0)
    # Without a product filter the other product's device joins the fleet.
    everyone = store.aggregate(
        None, "temp", interval="1h", aggregations=["count", "max"], fleet=True
    )
    assert everyone[["count", "max"]].values.tolist() == [[9, 100.0]]


def test_intervals_ranges_and_bool_points(store: TimeSeriesStore) -> None:
    hourly = store.aggregate("d1", "temp", interval="1h", aggregations=["avg", "count"])
    assert hourly[["avg", "count"]].values.tolist() == [[3.5, 6]]
    ranged = store.aggregate(
        "d1", "temp", utc(B + 20 * S), utc(B + 119 * S), interval="15min", aggregations="sum"
    )
    assert ranged["sum"].tolist() == [18.0]  # 2 + 6 + 10; 119 s is outside [start, end)
    on = store.aggregate("d1", "on", interval="1D", aggregations=["avg", "first", "last"])
    assert on[["avg", "first", "last"]].values.tolist() == [[2 / 3, 1.0, 1.0]]
    assert on["time"].tolist() == [utc(B)]
    # A string point has nothing to aggregate.
    assert store.aggregate("d1", "mode", interval="1min").empty


def test_bucket_alignment_before_the_epoch(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path) as store:
        store.append_points(
            [PointRow("P", "d", "v", -90 * S, 1.0), PointRow("P", "d", "v", -1, 3.0)]
        )
        frame = store.aggregate(point_ids="v", interval="1min")
        assert frame["time"].tolist() == [utc(-120 * S), utc(-60 * S)]


def test_events_by_time_range(store: TimeSeriesStore) -> None:
    store.append_events(
        [
            EventRow("P", "d1", "overheat", B + 5 * S, {"temp": 91.5}, "ERROR"),
            EventRow("P", "d2", "overheat", B + 1 * S, {"temp": 88.0}),
            EventRow("P", "d1", "door", B + 9 * S, {"open": True, "who": ["a", "b"]}, "INFO"),
        ]
    )
    frame = store.query_events(start=utc(B), end=utc(B + 6 * S))
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
    d1 = store.query_events("d1", "door")
    assert d1["outputs"].tolist() == [{"open": True, "who": ["a", "b"]}]


def test_attribute_changes(store: TimeSeriesStore) -> None:
    store.append_attributes(
        [
            AttributeRow("P", "d1", "maxCurrent", B, 1000),
            AttributeRow("P", "d1", "loc", B + S, {"lat": 1.0, "lon": 2.0}),
            AttributeRow("P", "d1", "maxCurrent", B + 2 * S, None),
        ]
    )
    frame = store.query_attributes("d1")
    assert frame["attribute_id"].tolist() == ["maxCurrent", "loc", "maxCurrent"]
    assert frame["value"].tolist() == [1000, {"lat": 1.0, "lon": 2.0}, None]
    assert frame["time"].tolist() == [utc(B), utc(B + S), utc(B + 2 * S)]
    assert len(store.query_attributes(attribute_ids="loc")) == 1


def test_series_and_devices_listing(store: TimeSeriesStore) -> None:
    assert store.devices().values.tolist() == [["P", "d1"], ["P", "d2"], ["Q", "d9"]]
    assert ["P", "d1", "mode"] in store.series().values.tolist()


POINT_COLUMNS = [
    "time",
    "product_key",
    "device_key",
    "point_id",
    "value",
    "quality",
    "receive_time",
    "resume",
]
EVENT_COLUMNS = ["time", "product_key", "device_key", "event_id", "severity", "outputs"]
ATTRIBUTE_COLUMNS = ["time", "product_key", "device_key", "attribute_id", "value"]

# Every query with the names of devices (and products) it has no data of.
NO_DATA: list[tuple[str, Callable[[TimeSeriesStore], pd.DataFrame], list[str]]] = [
    ("points", lambda s: s.query_points("nope"), POINT_COLUMNS),
    ("points of a point", lambda s: s.query_points("d1", "pressure"), POINT_COLUMNS),
    ("points of a product", lambda s: s.query_points("d9", product_key="P"), POINT_COLUMNS),
    ("points in a range", lambda s: s.query_points("d1", None, B + 999 * S), POINT_COLUMNS),
    ("latest", lambda s: s.latest(["nope", "ghost"]), POINT_COLUMNS),
    (
        "aggregate",
        lambda s: s.aggregate("ghost", interval="1min"),
        ["product_key", "device_key", "point_id", "time", "avg"],
    ),
    (
        "fleet aggregate",
        lambda s: s.aggregate(None, "nothing", interval="1min", fleet=True),
        ["point_id", "time", "avg"],
    ),
    ("events", lambda s: s.query_events("ghost"), [*EVENT_COLUMNS, "receive_time"]),
    ("attributes", lambda s: s.query_attributes("ghost"), [*ATTRIBUTE_COLUMNS, "receive_time"]),
]


@pytest.mark.parametrize(("what", "query", "columns"), NO_DATA, ids=[n[0] for n in NO_DATA])
def test_no_data_is_an_empty_frame_with_the_usual_columns(
    store: TimeSeriesStore,
    what: str,
    query: Callable[[TimeSeriesStore], pd.DataFrame],
    columns: list[str],
) -> None:
    frame = query(store)
    assert frame.empty, what
    assert list(frame.columns) == columns, what


def test_every_query_takes_devices_ids_start_end_in_that_order(store: TimeSeriesStore) -> None:
    import inspect

    store.append_events([EventRow("P", "d1", "door", B, {})])
    for name in (
        "query_points",
        "latest",
        "aggregate",
        "query_events",
        "query_attributes",
    ):
        for method in (getattr(store, name), getattr(store, f"{name}_async")):
            params = list(inspect.signature(method).parameters.values())
            positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
            assert positional[0] == "device_keys", name
            assert positional[1].endswith("_ids"), name
            assert positional[2:] == ([] if name == "latest" else ["start", "end"]), name
            assert "product_key" in [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        assert inspect.signature(getattr(store, f"{name}_async")) == inspect.signature(
            getattr(store, name)
        )
    # the call of the issue: a device key alone
    assert store.query_events("d1")["event_id"].tolist() == ["door"]


class Directory:
    """A DeviceDirectory with fixed products and devices."""

    def __init__(self, devices: set[tuple[str, str]]) -> None:
        self.devices = devices

    def find_product(self, product_key: str) -> object | None:
        return product_key if product_key in {pk for pk, _ in self.devices} else None

    def existing_device_keys(
        self, device_keys: Iterable[str], product_key: str | None = None
    ) -> set[str]:
        return {
            dk for pk, dk in self.devices if dk in set(device_keys) and product_key in (None, pk)
        }


def test_with_a_directory_unknown_products_and_devices_raise_not_found(tmp_path: Path) -> None:
    directory: DeviceDirectory = Directory({("P", "d1"), ("P", "quiet")})
    with TimeSeriesStore(tmp_path, directory=directory) as store:
        # "old" has data but is no longer in the directory (a deleted device): still readable
        store.append_points(
            [PointRow("P", "d1", "temp", B, 1.0), PointRow("P", "old", "t", B, 2.0)]
        )
        store.append_events([EventRow("Q", "evq", "boot", B, {})])
        assert store.query_points("quiet").empty  # registered, nothing stored yet
        assert store.query_points(["d1", "quiet"], "temp")["value"].tolist() == [1.0]
        assert store.query_points("old")["value"].tolist() == [2.0]
        assert store.query_events("evq", product_key="Q")["event_id"].tolist() == ["boot"]
        for query in (
            lambda: store.query_points("typo"),
            lambda: store.query_points(["d1", "typo"], "temp"),
            lambda: store.query_points("evq", product_key="P"),  # a device of another product
            lambda: store.latest("typo"),
            lambda: store.aggregate("typo", interval="1h"),
            lambda: store.query_events("typo"),
            lambda: store.query_attributes("typo"),
        ):
            with pytest.raises(NotFound, match=r"typo|evq"):
                query()
        for query in (
            lambda: store.query_points(product_key="NOPE"),
            lambda: store.latest(product_key="NOPE"),
            lambda: store.query_events(product_key="NOPE"),
        ):
            with pytest.raises(NotFound, match="product 'NOPE'"):
                query()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.query_points("d1", start=B + 10, end=B),
        lambda s: s.aggregate(None, "temp", utc(B + 10), utc(B), interval="1min"),
        lambda s: s.query_events(None, None, B + 1, B),
        lambda s: s.aggregate(None, "temp", interval="1min", aggregations="median"),
        lambda s: s.aggregate(None, "temp", interval="1min", aggregations=[]),
        lambda s: s.aggregate(None, "temp", interval="1M"),
        lambda s: s.aggregate(None, "temp", interval="soon"),
        lambda s: s.aggregate(None, "temp", interval="0min"),
        lambda s: s.aggregate(None, "temp", interval="1us"),
        lambda s: s.aggregate(None, "temp", interval="1min", source="cache"),
        lambda s: s.query_points("d1", start=datetime(2024, 1, 1)),
        lambda s: s.query_points("d1", start="yesterday"),
        lambda s: s.query_points([]),
        lambda s: s.query_events("d1", datetime(2024, 1, 1)),  # a time where ids go
    ],
)
def test_bad_arguments_raise_invalid_argument(store: TimeSeriesStore, call: object) -> None:
    with pytest.raises(InvalidArgument):
        call(store)  # type: ignore[operator]


def test_nan_values_are_kept(store: TimeSeriesStore) -> None:
    store.append_points([PointRow("P", "d3", "v", B, math.nan)])
    assert math.isnan(store.query_points("d3")["value"].iloc[0])
