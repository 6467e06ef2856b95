"""Deleting a device's stored data (``TimeSeriesStore.delete_device``): one transaction over
every table, other devices untouched, the writer's caches in line (new data after the delete
starts fresh series, also after a reopen)."""

from __future__ import annotations

from pathlib import Path

from enos_lab.store import AttributeRow, EventRow, PointRow, StoragePolicy, TimeSeriesStore

B = 1_704_067_200_000  # 2024-01-01T00:00:00Z [ms]
S = 1000


def _fill(store: TimeSeriesStore) -> None:
    for dk in ("d1", "d2"):
        store.append_points(
            [PointRow("P", dk, "temp", B + i * S, float(i)) for i in range(10)]
            + [PointRow("P", dk, "state", B, "on")]
        )
        store.append_events([EventRow("P", dk, "overheat", B, {"t": 90}, "fault")])
        store.append_attributes([AttributeRow("P", dk, "site", B, "north")])


def test_delete_device_removes_its_rows_only(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path / "data") as store:
        _fill(store)
        counts = store.delete_device("P", "d1")
        assert counts == {
            "points": 11,
            "rollups": 0,
            "series": 2,
            "events": 1,
            "attributes": 1,
            "devices": 1,
        }
        assert store.query_points("d1").empty
        assert store.latest("d1").empty
        assert store.query_events("d1").empty
        assert store.query_attributes("d1").empty
        assert list(store.devices().itertuples(index=False, name=None)) == [("P", "d2")]
        assert len(store.query_points("d2")) == 11
        assert len(store.query_events("d2")) == 1
        assert len(store.query_attributes("d2")) == 1
        # nothing left: a second delete deletes nothing
        assert set(store.delete_device("P", "d1").values()) == {0}


def test_data_after_a_delete_starts_new_series(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path / "data") as store:
        _fill(store)
        store.delete_device("P", "d1")
        # older than what was stored before: no stale "latest time" may treat it as a duplicate
        store.append_points([PointRow("P", "d1", "temp", B - S, 42.0)])
        frame = store.query_points("d1")
        assert frame["value"].tolist() == [42.0]
        assert store.latest("d1", "temp")["value"].tolist() == [42.0]
        sids = store.series()
        assert len(sids[sids["device_key"] == "d1"]) == 1
    with TimeSeriesStore(tmp_path / "data") as reopened:
        assert reopened.query_points("d1")["value"].tolist() == [42.0]
        assert len(reopened.query_points("d2")) == 11


def test_delete_device_removes_downsampled_buckets(tmp_path: Path) -> None:
    policy = StoragePolicy(raw_days=1, downsample="1min")
    with TimeSeriesStore(tmp_path / "data", policies=[policy]) as store:
        _fill(store)
        store.append_points([PointRow("P", "d1", "temp", B + 3 * 86_400_000, 1.0)])
        report = store.apply_retention(now=B + 3 * 86_400_000)
        assert report
        counts = store.delete_device("P", "d1")
        assert counts["rollups"] >= 1
        assert store.query_points("d1").empty
