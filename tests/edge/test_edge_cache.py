"""The local cache: a private SQLite file, chronological reads, deletes of confirmed rows only,
oldest-first eviction counted per device, and a restart that continues."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enos_lab.edge import CACHE_FILE, Sample, SampleCache
from enos_lab.errors import ClosedError, InvalidArgument, StoreError

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def at(seconds: float, device: str = "inv1", power: float = 1.0) -> Sample:
    return Sample(device, T0 + timedelta(seconds=seconds), {"power": power})


async def test_the_file_is_private_and_reads_are_chronological(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "edge"
    async with SampleCache(directory) as cache:
        assert cache.path == directory / CACHE_FILE
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
        # added out of order (a late sample, two devices): handed out by time, then arrival
        assert await cache.add([at(20), at(10, "meter2"), at(30), at(10), at(5, "meter2")]) == 0
        oldest = await cache.oldest(3)
        assert [(s.device, s.time) for s in oldest] == [
            ("meter2", T0 + timedelta(seconds=5)),
            ("meter2", T0 + timedelta(seconds=10)),
            ("inv1", T0 + timedelta(seconds=10)),
        ]
        assert oldest[0].values == {"power": 1.0} and oldest[0].sample() == at(5, "meter2")
        # rows in flight are not handed out twice
        assert [s.time.second for s in await cache.oldest(10)] == [20, 30]
        assert await cache.oldest(10) == []
        stats = await cache.stats()
        assert (stats.samples, stats.in_flight, stats.lost) == (5, 5, 0)
    for extra in ("-wal", "-shm"):
        side = cache.path.with_name(cache.path.name + extra)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) == 0o600


async def test_only_confirmed_rows_are_deleted_and_failed_ones_come_back_in_order(
    tmp_path: Path,
) -> None:
    async with SampleCache(tmp_path) as cache:
        await cache.add([at(s) for s in range(6)])
        batch = await cache.oldest(4)
        assert await cache.delete([batch[0].id, batch[1].id]) == 2  # the hub said 200 for these
        await cache.release([batch[2].id, batch[3].id])  # these were not confirmed
        await cache.add(at(1.5))
        again = await cache.oldest(10)
        assert [s.time - T0 for s in again] == [timedelta(seconds=s) for s in (1.5, 2, 3, 4, 5)]
        assert await cache.delete([batch[0].id, 999_999]) == 0  # gone already / never there
        assert await cache.delete([s.id for s in again]) == 5
        stats = await cache.stats()
        assert (stats.samples, stats.bytes, stats.in_flight) == (0, 0, 0)


async def test_eviction_drops_the_oldest_first_and_counts_each_loss_per_device(
    tmp_path: Path,
) -> None:
    async with SampleCache(tmp_path, max_samples=4) as cache:
        assert await cache.add([at(1), at(2, "meter2"), at(3), at(4, "meter2")]) == 0
        assert await cache.add([at(5), at(6)]) == 2  # 1 (inv1) and 2 (meter2) go
        assert [s.time.second for s in await cache.oldest(1)] == [3]  # now in flight
        assert await cache.add(at(7, "meter2")) == 1  # in flight stays: 4 (meter2) goes
        assert await cache.add(at(0.5)) == 1  # older than all that could go: itself dropped
        stats = await cache.stats()
        assert stats.samples == 4 and stats.lost == 4
        assert stats.lost_by_device == {"inv1": 2, "meter2": 2}
        held = await cache.oldest(10)
        assert [s.time.second for s in held] == [5, 6, 7]  # 3 is still in flight
        # every row in flight: the incoming sample has no room and is dropped
        assert await cache.add(at(8)) == 1
        assert (await cache.stats()).lost_by_device == {"inv1": 3, "meter2": 2}


async def test_the_byte_bound_holds_as_the_docstring_counts(tmp_path: Path) -> None:
    one = len(b"inv1") + len(b'{"power":1.0}')  # device key and JSON payload
    async with SampleCache(tmp_path, max_bytes=3 * one) as cache:
        assert await cache.add([at(s) for s in range(5)]) == 2
        stats = await cache.stats()
        assert (stats.samples, stats.bytes) == (3, 3 * one)
        big = Sample("inv1", T0, {"power": 1.0, "note": "x" * 100})
        assert await cache.add(big) == 1  # larger than the whole cache: dropped alone
        assert (await cache.stats()).samples == 3


async def test_a_reopened_cache_continues_with_its_rows_ids_and_losses(tmp_path: Path) -> None:
    cache = await SampleCache(tmp_path, max_samples=3).open()
    await cache.add([at(s, "inv1" if s % 2 else "meter2") for s in range(5)])
    handed_out = await cache.oldest(1)
    await cache.close()
    with pytest.raises(ClosedError, match="is not open"):
        await cache.add(at(9))

    async with SampleCache(tmp_path, max_samples=3) as again:
        stats = await again.stats()
        assert (stats.samples, stats.in_flight, stats.lost) == (3, 0, 2)
        assert stats.lost_by_device == {"meter2": 1, "inv1": 1}
        rows = await again.oldest(10)  # in-flight marks do not survive: offered again
        assert [s.time.second for s in rows] == [2, 3, 4] and rows[0].id == handed_out[0].id
        assert await again.delete([rows[0].id]) == 1
        await again.add(at(10))
        (newest,) = await again.oldest(1)
        assert newest.time.second == 10 and newest.id > max(r.id for r in rows)  # never reused


async def test_a_file_that_is_not_a_cache_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"edge_cache\.sqlite' is not a usable edge cache"):
        await SampleCache(tmp_path).open()
    other = tmp_path / "other"
    other.mkdir()
    async with SampleCache(other) as cache:
        await cache.add(at(1))
    os.chmod(other / CACHE_FILE, 0o644)  # an older, looser file is tightened on open
    async with SampleCache(other):
        assert stat.S_IMODE((other / CACHE_FILE).stat().st_mode) == 0o600
    with pytest.raises(InvalidArgument, match="max_samples must be an int >= 1"):
        SampleCache(tmp_path, max_samples=0)
    with pytest.raises(InvalidArgument, match="max_bytes must be an int >= 1"):
        SampleCache(tmp_path, max_bytes=0)


async def test_concurrent_calls_from_the_loop_run_in_order_on_the_cache_thread(
    tmp_path: Path,
) -> None:
    async with SampleCache(tmp_path, max_samples=10_000) as cache:
        await asyncio.gather(*(cache.add([at(i * 10 + j) for j in range(10)]) for i in range(50)))
        stats = await cache.stats()
        assert stats.samples == 500
        rows = await cache.oldest(500)
        assert [s.time for s in rows] == sorted(s.time for s in rows)
        assert await cache.delete(s.id for s in rows) == 500
        assert {t for t in threading.enumerate() if t.name.startswith("edge-cache")}
    assert not {t for t in threading.enumerate() if t.name.startswith("edge-cache")}
