"""The edge's local cache for breakpoint resume: samples kept on disk while the hub is away.

Theory of operation
-------------------
One SQLite file (``edge_cache.sqlite`` in the directory given; the directory is created 0700
and the file 0600, see :mod:`enos_lab._files`) holds the samples the hub has not confirmed,
one row each: an id (the order of arrival), the device, the time (epoch ms: the wire's
resolution), the values as JSON and the row's size.

- :meth:`SampleCache.add` inserts samples. **Eviction policy: oldest first.** When the cache
  would hold more than ``max_samples`` rows or ``max_bytes`` bytes, the oldest rows (by time,
  then arrival) go first, each counted as lost for its device; an incoming sample older than
  every row that could go is itself the one dropped. Rows in flight (below) are never
  evicted: when only they are left, the incoming sample is dropped, and counted. A sample
  larger than ``max_bytes`` on its own is dropped too. The loss counters are kept in the file,
  so they survive a restart.
- :meth:`SampleCache.oldest` hands out the ``n`` oldest rows not in flight, in chronological
  order, and marks them in flight: the caller sends them (``measurepoint/resume/batch``).
- :meth:`SampleCache.delete` removes exactly the rows the caller names, once the hub answered
  200; :meth:`SampleCache.release` makes rows whose sending failed available again, in their
  place in time. Nothing else ever removes a row but eviction.

In-flight marks live in memory: after a restart every row is offered again, so a row whose
200 was lost in a crash is sent twice; the lab's store keeps one value per device, point and
time, so the resend leaves the same record.

Size: ``bytes`` counts each row's device key and JSON payload (UTF-8): the figure
``max_bytes`` bounds, close to the 25 bytes per point and sample of EnOS's sizing advice.
The file on disk is larger by SQLite's pages and index, and keeps its pages after deletes
(later inserts reuse them).

Durability and threads: WAL journal with ``synchronous=FULL``, so a sample added is on disk
when :meth:`~SampleCache.add` returns, one transaction per call. Every statement runs on one
worker thread the cache owns (a single-thread executor): the event loop never waits for the
disk, calls run in the order they were made, and the connection is used from that thread
only. Use a cache from one event loop; :meth:`~SampleCache.close` closes the file and joins
the thread.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .._files import private_dir, private_sqlite, report_open_dir
from ..clock import from_epoch_ms
from ..errors import ClosedError, InvalidArgument, StoreError
from ._poller import Sample

__all__ = ["CACHE_FILE", "CacheStats", "CachedSample", "SampleCache"]

T = TypeVar("T")

CACHE_FILE = "edge_cache.sqlite"
"""The cache's file name in its directory."""

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    payload TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (time_ms, id);
CREATE TABLE IF NOT EXISTS losses (
    device TEXT PRIMARY KEY,
    lost INTEGER NOT NULL
);
"""
_CHUNK = 500  # ids per statement (SQLite allows at least 999 variables)


@dataclass(frozen=True, slots=True)
class CachedSample:
    """A cached sample: ``id`` is what :meth:`SampleCache.delete` and ``release`` take."""

    id: int
    device: str
    time: datetime
    values: Mapping[str, Any]

    def sample(self) -> Sample:
        """As a :class:`~enos_lab.edge.Sample`."""
        return Sample(self.device, self.time, self.values)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What a cache holds and what it lost."""

    samples: int
    """Rows held. [-]"""
    bytes: int
    """Bytes held, as ``max_bytes`` counts them (see the module docstring). [bytes]"""
    in_flight: int
    """Rows handed out by ``oldest`` and not yet deleted or released. [-]"""
    lost: int
    """Samples evicted or dropped since the file was created. [-]"""
    lost_by_device: Mapping[str, int] = field(default_factory=dict)
    """``lost`` by device. [-]"""


class SampleCache:
    """A bounded, durable cache of samples in ``directory`` (see the module docstring).

    ``max_samples`` and ``max_bytes`` bound it; ``file_name`` is its file in ``directory``.
    Use as ``async with SampleCache(path) as cache:``, or :meth:`open` and :meth:`close`.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_samples: int = 1_000_000,
        max_bytes: int = 256 * 1024 * 1024,
        file_name: str = CACHE_FILE,
    ) -> None:
        if type(max_samples) is not int or max_samples < 1:
            raise InvalidArgument(f"max_samples must be an int >= 1, got {max_samples!r}")
        if type(max_bytes) is not int or max_bytes < 1:
            raise InvalidArgument(f"max_bytes must be an int >= 1, got {max_bytes!r}")
        self._directory = Path(directory)
        self._path = self._directory / file_name
        self._max_samples = max_samples
        self._max_bytes = max_bytes
        self._executor: ThreadPoolExecutor | None = None
        # the worker thread's state (touched only there)
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._bytes = 0
        self._in_flight: set[int] = set()
        self._lost: dict[str, int] = {}

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def max_samples(self) -> int:
        """Most rows held. [-]"""
        return self._max_samples

    @property
    def max_bytes(self) -> int:
        """Most bytes held (as the module docstring counts them). [bytes]"""
        return self._max_bytes

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._executor is not None

    # ----------------------------------------------------------------- lifetime

    async def open(self) -> SampleCache:
        """Open (or create) the file and continue from what it holds; return self.

        Raises :class:`~enos_lab.errors.StoreError` naming the file when it is not a cache.
        """
        if self._executor is not None:
            return self
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-cache")
        try:
            await self._run(self._open)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close the file and join the worker thread (calls already made finish first)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            executor.shutdown(wait=True)

    async def __aenter__(self) -> SampleCache:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- operations

    async def add(self, samples: Sample | Iterable[Sample]) -> int:
        """Keep ``samples`` (one transaction); return how many samples this call lost (rows
        evicted and samples dropped, as the eviction policy says)."""
        batch = [samples] if isinstance(samples, Sample) else list(samples)
        rows = []
        for sample in batch:
            payload = json.dumps(dict(sample.values), separators=(",", ":"), allow_nan=False)
            size = len(sample.device.encode()) + len(payload.encode())
            rows.append((sample.device, sample.time_ms, payload, size))
        return await self._run(lambda: self._add(rows))

    async def oldest(self, n: int) -> list[CachedSample]:
        """The ``n`` oldest rows not in flight, chronologically (time, then arrival); they are
        in flight until :meth:`delete` or :meth:`release` names them."""
        if type(n) is not int or n < 0:
            raise InvalidArgument(f"oldest(n) takes an int n >= 0, got {n!r}")
        return await self._run(lambda: self._oldest(n))

    async def delete(self, ids: Iterable[int]) -> int:
        """Remove the rows ``ids`` (confirmed by the hub); return how many were there."""
        wanted = sorted(set(ids))
        return await self._run(lambda: self._delete(wanted))

    async def release(self, ids: Iterable[int]) -> None:
        """Rows ``ids`` are no longer in flight (their sending failed): :meth:`oldest` hands
        them out again, in their place in time."""
        wanted = set(ids)
        await self._run(lambda: self._in_flight.difference_update(wanted))

    async def stats(self) -> CacheStats:
        """What the cache holds and lost, now."""
        return await self._run(self._stats)

    # ----------------------------------------------------------------- worker thread

    async def _run(self, job: Callable[[], T]) -> T:
        executor = self._executor
        if executor is None:
            raise ClosedError(f"the edge cache {str(self._path)!r} is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, job)

    def _open(self) -> None:
        created = private_dir(self._directory)
        if not created:
            report_open_dir(self._directory, "edge cache directory")
        private_sqlite(self._path)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise StoreError(
                    f"{str(self._path)!r} is an edge cache of version {version}, "
                    f"expected {_SCHEMA_VERSION}"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            count, size = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM samples"
            ).fetchone()
            self._lost = dict(db.execute("SELECT device, lost FROM losses").fetchall())
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"{str(self._path)!r} is not a usable edge cache: {exc}") from exc
        except BaseException:
            db.close()
            raise
        self._db, self._count, self._bytes = db, int(count), int(size)
        self._in_flight.clear()

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._in_flight.clear()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ClosedError(f"the edge cache {str(self._path)!r} is not open")
        return self._db

    def _add(self, rows: list[tuple[str, int, str, int]]) -> int:
        db = self._conn()
        lost: dict[str, int] = {}
        try:
            db.execute("BEGIN IMMEDIATE")
            for device, time_ms, payload, size in rows:
                if self._make_room(db, time_ms, size, lost):
                    db.execute(
                        "INSERT INTO samples (device, time_ms, payload, size) VALUES (?, ?, ?, ?)",
                        (device, time_ms, payload, size),
                    )
                    self._count += 1
                    self._bytes += size
                else:
                    lost[device] = lost.get(device, 0) + 1
            db.executemany(
                "INSERT INTO losses (device, lost) VALUES (?, ?) "
                "ON CONFLICT (device) DO UPDATE SET lost = lost + excluded.lost",
                lost.items(),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._recount(db)
            raise
        for device, count in lost.items():
            self._lost[device] = self._lost.get(device, 0) + count
        return sum(lost.values())

    def _make_room(
        self, db: sqlite3.Connection, time_ms: int, size: int, lost: dict[str, int]
    ) -> bool:
        """Evict oldest rows until a row of ``size`` fits; False when the new row is the one
        to drop (too big, or older than every row that could go, or only rows in flight)."""
        if size > self._max_bytes:
            return False
        while self._count + 1 > self._max_samples or self._bytes + size > self._max_bytes:
            limit = len(self._in_flight) + 1
            victim = next(
                (
                    row
                    for row in db.execute(
                        "SELECT id, device, time_ms, size FROM samples "
                        "ORDER BY time_ms, id LIMIT ?",
                        (limit,),
                    )
                    if row[0] not in self._in_flight
                ),
                None,
            )
            if victim is None or victim[2] > time_ms:
                return False
            row_id, device, _, row_size = victim
            db.execute("DELETE FROM samples WHERE id = ?", (row_id,))
            self._count -= 1
            self._bytes -= row_size
            lost[device] = lost.get(device, 0) + 1
        return True

    def _oldest(self, n: int) -> list[CachedSample]:
        db = self._conn()
        out: list[CachedSample] = []
        if n == 0:
            return out
        cursor = db.execute("SELECT id, device, time_ms, payload FROM samples ORDER BY time_ms, id")
        for row_id, device, time_ms, payload in cursor:
            if row_id in self._in_flight:
                continue
            out.append(CachedSample(row_id, device, from_epoch_ms(time_ms), json.loads(payload)))
            if len(out) == n:
                break
        cursor.close()
        self._in_flight.update(sample.id for sample in out)
        return out

    def _delete(self, ids: list[int]) -> int:
        db = self._conn()
        deleted = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                count, size = db.execute(
                    f"SELECT count(*), coalesce(sum(size), 0) FROM samples WHERE id IN ({marks})",
                    chunk,
                ).fetchone()
                db.execute(f"DELETE FROM samples WHERE id IN ({marks})", chunk)
                deleted += int(count)
                self._count -= int(count)
                self._bytes -= int(size)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._recount(db)
            raise
        self._in_flight.difference_update(ids)
        return deleted

    def _recount(self, db: sqlite3.Connection) -> None:
        count, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM samples").fetchone()
        self._count, self._bytes = int(count), int(size)

    def _stats(self) -> CacheStats:
        self._conn()
        return CacheStats(
            samples=self._count,
            bytes=self._bytes,
            in_flight=len(self._in_flight),
            lost=sum(self._lost.values()),
            lost_by_device=dict(self._lost),
        )
