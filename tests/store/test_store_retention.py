"""Storage policies: raw retention, downsampled series and reading them back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from enos_lab.clock import SimulatedClock, to_epoch_ms
from enos_lab.errors import InvalidArgument
from enos_lab.store import AGGREGATIONS, PointRow, RetentionReport, StoragePolicy, TimeSeriesStore

DAY = datetime(2024, 1, 1, tzinfo=UTC)
B = to_epoch_ms(DAY)
MIN = 60_000
HOUR = 60 * MIN


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(DAY)


@pytest.fixture
def store(tmp_path: Path, clock: SimulatedClock) -> Iterator[TimeSeriesStore]:
    policies = [
        StoragePolicy("temp*", raw_days=1, downsample="1h", downsample_days=10),
        StoragePolicy("*", raw_days=2),
    ]
    with TimeSeriesStore(tmp_path, clock=clock, policies=policies) as opened:
        yield opened


def three_days(store: TimeSeriesStore) -> None:
    """Every 10 minutes for three days: temp = minute of the day, status = a string."""
    rows = []
    for k in range(3 * 24 * 6):
        t = B + k * 10 * MIN
        rows.append(PointRow("P", "d1", "temp", t, float(k % 144)))
        rows.append(PointRow("P", "d1", "status", t, f"s{k}"))
    store.append_points(rows)


def test_retention_rolls_up_then_deletes_raw_rows(
    store: TimeSeriesStore, clock: SimulatedClock
) -> None:
    three_days(store)
    before = store.aggregate(
        "d1", "temp", end=B + 2 * 24 * HOUR, interval="1h", aggregations=list(AGGREGATIONS)
    )
    clock.set(DAY + timedelta(days=3))
    report = store.apply_retention()
    # temp: raw older than now - 1 day (2 days x 144) rolled and deleted;
    # status: older than now - 2 days deleted (144 rows), never rolled (not numeric).
    assert report == RetentionReport(rolled_rows=288, deleted_rows=288 + 144, deleted_buckets=0)
    raw = store.query_points("d1", "temp")
    assert raw["time"].min() == pd.Timestamp(B + 2 * 24 * HOUR, unit="ms", tz="UTC")
    assert len(store.query_points("d1", "status")) == 288
    rolled = store.aggregate(
        "d1", "temp", interval="1h", aggregations=list(AGGREGATIONS), source="rollup"
    )
    pd.testing.assert_frame_equal(rolled, before)
    # Coarser buckets re-aggregate the hourly rollups exactly.
    daily = store.aggregate(
        "d1",
        "temp",
        interval="1D",
        aggregations=["avg", "min", "max", "count", "first", "last"],
        source="rollup",
    )
    assert daily[["avg", "min", "max", "count", "first", "last"]].values.tolist() == [
        [71.5, 0.0, 143.0, 144, 0.0, 143.0],
        [71.5, 0.0, 143.0, 144, 0.0, 143.0],
    ]
    # Source "all" joins downsampled history with the raw rows that are left.
    everything = store.aggregate(
        "d1", "temp", interval="1D", aggregations=["count", "sum"], source="all"
    )
    assert everything["count"].tolist() == [144, 144, 144]
    assert everything["sum"].tolist() == [sum(range(144))] * 3
    # Latest values are not trimmed.
    assert store.latest("d1", "temp")["value"].tolist() == [143.0]


def test_late_history_is_merged_into_existing_buckets(
    store: TimeSeriesStore, clock: SimulatedClock
) -> None:
    # The latest row of a series never expires: keep it out of the way.
    store.append_points([PointRow("P", "d1", "temp", B + 36 * HOUR, 0.0)])
    store.append_points(
        [
            PointRow("P", "d1", "temp", B + 10 * MIN, 5.0),
            PointRow("P", "d1", "temp", B + 20 * MIN, 7.0),
        ]
    )
    clock.set(DAY + timedelta(days=2))
    assert store.apply_retention().rolled_rows == 2
    # Resumed data for the same hour arrives later: one earlier, one later than the rolled rows.
    store.append_points(
        [
            PointRow("P", "d1", "temp", B + 5 * MIN, 1.0, None, True),
            PointRow("P", "d1", "temp", B + 50 * MIN, 9.0, None, True),
        ]
    )
    assert store.apply_retention() == RetentionReport(2, 2, 0)
    hour = store.aggregate(
        "d1", "temp", interval="1h", aggregations=list(AGGREGATIONS), source="rollup"
    )
    assert hour[list(AGGREGATIONS)].values.tolist() == [[5.5, 1.0, 9.0, 22.0, 4, 1.0, 9.0]]
    assert store.query_points("d1", "temp")["value"].tolist() == [0.0]


def test_downsampled_buckets_expire(store: TimeSeriesStore, clock: SimulatedClock) -> None:
    three_days(store)
    clock.set(DAY + timedelta(days=3))
    store.apply_retention()
    report = store.apply_retention(DAY + timedelta(days=11, hours=12))
    # Buckets ending before now - 10 days: the first 36 hours.
    assert report.deleted_buckets == 36
    # Third day of temp and last two days of status, but each series' latest row is kept.
    assert report.deleted_rows == 143 + 287
    assert report.rolled_rows == 143
    assert store.latest("d1")["value"].tolist() == ["s431", 143.0]
    left = store.aggregate("d1", "temp", interval="1h", aggregations="count", source="rollup")
    assert left["time"].min() == pd.Timestamp(B + 36 * HOUR, unit="ms", tz="UTC")


def test_policies_can_be_replaced_and_without_policies_nothing_expires(
    store: TimeSeriesStore, clock: SimulatedClock
) -> None:
    three_days(store)
    store.set_policies([])
    assert store.policies == ()
    clock.set(DAY + timedelta(days=30))
    assert store.apply_retention() == RetentionReport(0, 0, 0)
    store.set_policies([StoragePolicy("status", raw_days=1, product_key="other")])
    assert store.apply_retention().deleted_rows == 0
    store.set_policies([StoragePolicy("status", raw_days=1, product_key="P")])
    assert store.apply_retention().deleted_rows == 3 * 144 - 1  # all but the latest row


def test_rollup_interval_must_be_a_multiple(store: TimeSeriesStore, clock: SimulatedClock) -> None:
    three_days(store)
    clock.set(DAY + timedelta(days=3))
    store.apply_retention()
    with pytest.raises(InvalidArgument):
        store.aggregate("d1", "temp", interval="15min", source="rollup")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"raw_days": 0},
        {"raw_days": -1.0},
        {"downsample": "1h"},  # nothing would ever fill it
        {"raw_days": 1, "downsample": "1M"},
        {"raw_days": 1, "downsample": "1h", "downsample_days": 0},
        {"points": ""},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        StoragePolicy(**kwargs)  # type: ignore[arg-type]
