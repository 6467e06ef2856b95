"""StoreConfig: DuckDB's memory limit and threads applied to the database, bad values refused,
and the bound on the series one device can create."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from enos_lab import Lab
from enos_lab.errors import InvalidArgument
from enos_lab.store import PointRow, StoreConfig, TimeSeriesStore

T0 = 1_700_000_000_000
MIB = 2**20


def test_default_memory_limit_and_threads_are_applied(tmp_path: Path) -> None:
    config = StoreConfig()
    assert config.memory_limit == "256MiB"
    assert config.memory_limit_bytes == 256 * MIB
    with TimeSeriesStore(tmp_path) as store:
        assert store.setting("memory_limit") == "256.0 MiB"
        assert store.setting("threads") == str(min(4, os.cpu_count() or 1))
        assert store.config == config


@pytest.mark.parametrize(
    ("limit", "shown", "size"),
    [
        ("64MiB", "64.0 MiB", 64 * MIB),
        ("1 GiB", "1.0 GiB", 2**30),
        ("100mb", "95.3 MiB", 100_000_000),
        (48 * MIB, "48.0 MiB", 48 * MIB),
    ],
)
def test_configured_memory_limit_is_applied(
    tmp_path: Path, limit: int | str, shown: str, size: int
) -> None:
    config = StoreConfig(memory_limit=limit, threads=1)
    assert config.memory_limit_bytes == size
    with TimeSeriesStore(tmp_path, config=config) as store:
        assert store.setting("memory_limit") == shown
        assert store.setting("threads") == "1"
        assert store.append_points([PointRow("P", "d", "v", T0, 1.0)]) == 1
        usage = store.memory_usage()
        assert usage and all(v > 0 for v in usage.values())
        assert sum(usage.values()) <= size


def test_no_memory_limit_leaves_duckdbs_default(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path, config=StoreConfig(memory_limit=None)) as store:
        limited = store.setting("memory_limit")
        with pytest.raises(InvalidArgument, match="'no_such_setting'"):
            store.setting("no_such_setting")
    assert limited != "256.0 MiB"
    assert StoreConfig(memory_limit=None).memory_limit_bytes is None


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("memory_limit", "lots", "'lots'"),
        ("memory_limit", "256", "'256'"),
        ("memory_limit", "-1GB", "'-1GB'"),
        ("memory_limit", "1e9MB", "'1e9MB'"),
        ("memory_limit", "8MiB", "'8MiB'"),  # DuckDB fails its checkpoints with this little
        ("memory_limit", 0, "0"),
        ("memory_limit", True, "True"),
        ("memory_limit", 2.5e9, "2500000000.0"),
        ("threads", 0, "0"),
        ("threads", -2, "-2"),
        ("threads", 1.5, "1.5"),
        ("max_series_per_device", 0, "0"),
        ("queue_size", 0, "0"),
    ],
)
def test_bad_values_are_refused(field: str, value: object, named: str) -> None:
    with pytest.raises(InvalidArgument, match=field) as info:
        StoreConfig(**{field: value})  # type: ignore[arg-type]
    assert named in str(info.value)


def test_lab_passes_its_store_config(tmp_path: Path) -> None:
    config = StoreConfig(memory_limit="96MiB", threads=1)
    with Lab(tmp_path / "lab", port=0, store_config=config, rng=random.Random(3)) as lab:
        assert lab.store.config == config
        assert lab.store.setting("memory_limit") == "96.0 MiB"


def test_one_device_cannot_create_series_without_bound(tmp_path: Path) -> None:
    config = StoreConfig(max_series_per_device=5)
    with TimeSeriesStore(tmp_path, config=config) as store:
        assert store.append_points([PointRow("P", "d1", f"p{i}", T0, 1.0) for i in range(3)]) == 3
        # stored series and new ones in one batch count together
        rows = [PointRow("P", "d1", f"p{i}", T0 + 1, 1.0) for i in range(6)]
        with pytest.raises(InvalidArgument, match=r"d1.*max_series_per_device.*5.*row 5"):
            store.append_points(rows)
        assert store.append_points(rows[:5]) == 5  # up to the bound
        assert store.append_points(rows[:5]) == 5  # known series: always accepted
        with pytest.raises(InvalidArgument, match="max_series_per_device"):
            store.append_points([PointRow("P", "d1", "p9", T0, 1.0)])
        # other devices have their own allowance
        assert store.append_points([PointRow("P", "d2", f"p{i}", T0, 1.0) for i in range(5)]) == 5
    with (
        TimeSeriesStore(tmp_path, config=config) as store,  # counted again on open
        pytest.raises(InvalidArgument, match="max_series_per_device"),
    ):
        store.append_points([PointRow("P", "d1", "p9", T0, 1.0)])
