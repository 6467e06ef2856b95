"""The time-series store: appends through a group-committing writer, queries as DataFrames.

Theory of operation
-------------------
One embedded DuckDB database file (``timeseries.duckdb`` in the data directory, or in a temporary
directory removed on :meth:`TimeSeriesStore.close`). A dedicated writer thread owns the write
connection (see :mod:`._writer`): append calls turn their rows into columns in the calling thread,
queue them, and return once the transaction that holds them is committed, which DuckDB makes
durable through its write-ahead log. Synchronous callers block on a future; asyncio callers await
the same future wrapped for their loop, so the loop never blocks. Queries run on their own cursor
(a separate connection to the same database) and see every committed row.

Bad input fails alone: append calls check their rows in the calling thread, before the writer
groups them with other callers' rows (one row DuckDB cannot store would fail the whole group).
Event times must lie in ``[MIN_EVENT_MS, MAX_EVENT_MS]`` (what pandas represents; checked on the
column's minimum and maximum) and text must be encodable as UTF-8 (checked where the store
encodes it anyway, and for the keys of series not stored yet).

Event time rules: rows are keyed by (series, event time). "Latest" is the row with the greatest
event time, not the last to arrive; resumed history never replaces a newer latest value. See
:mod:`._writer` for the duplicate policy.

Times in and out: query arguments take tz-aware datetimes, epoch ms or ISO-8601 text; ranges are
half-open ``[start, end)``; DataFrames carry tz-aware UTC timestamps. Queries take devices, ids,
start, end, then keywords; no data gives an empty frame; which names they accept is the
:class:`~._query.DeviceDirectory`'s to say (see :mod:`._query`, which also holds their SQL and
DataFrame building).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import duckdb
import numpy as np
import pandas as pd

from .._files import keep_private, private_dir, tighten
from ..clock import Clock, SystemClock
from ..errors import InvalidArgument, NotFound, StoreError
from ._config import StoreConfig
from ._policy import RetentionReport, StoragePolicy, apply_policies
from ._query import (
    DeviceDirectory,
    Ids,
    Source,
    aggregate_sql,
    check_aggregations,
    check_source,
    id_list,
    json_objects,
    utc_times,
    value_frame,
    where,
)
from ._rows import (
    AttributeRow,
    EventRow,
    PointRow,
    check_record,
    check_series_keys,
    check_text,
    encode_json,
    encode_points,
)
from ._schema import SCHEMA, SCHEMA_VERSION
from ._time import TimeLike, as_ms, ms_range, parse_interval, to_utc_index
from ._writer import Batch, BatchKind, Job, StoreStats, Writer

__all__ = ["TimeSeriesStore"]

log = logging.getLogger(__name__)

DB_FILE: Final = "timeseries.duckdb"

T = TypeVar("T")
P = ParamSpec("P")


def _in_thread(
    method: Callable[Concatenate[TimeSeriesStore, P], T],
) -> Callable[Concatenate[TimeSeriesStore, P], Coroutine[Any, Any, T]]:
    """The ``*_async`` form of a query: the same call in a worker thread, so that the event
    loop keeps running; ``help()`` shows the parameters of the method."""

    async def in_thread(self: TimeSeriesStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(method, self, *args, **kwargs)

    in_thread.__name__ = method.__name__ + "_async"
    in_thread.__qualname__ = f"TimeSeriesStore.{in_thread.__name__}"
    in_thread.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    in_thread.__doc__ = (
        f":meth:`{method.__name__}` in a worker thread, so that the event loop keeps running."
    )
    return in_thread


class TimeSeriesStore:
    """Measurepoints, events and attribute changes in an embedded DuckDB.

    ``data_dir`` is the lab's data directory (created with mode 0700 if missing; the store's
    files in it are 0600); None uses a temporary directory that :meth:`close` removes. ``clock``
    gives receive times and the default retention time. ``policies`` are the storage policies
    (see :class:`StoragePolicy`). ``config`` tunes the writer and DuckDB (memory limit, threads;
    see :class:`StoreConfig`). ``directory`` says which products and devices exist besides
    those the store holds data of (the lab gives its registry): with one, queries naming
    others raise :class:`~enos_lab.errors.NotFound`; without, queries accept every name (see
    :class:`DeviceDirectory`). Thread-safe: every method may be called from any thread; the
    ``*_async`` methods never block the event loop.

    Every query takes its arguments in one order: devices, the ids of what is asked for
    (points, events, attributes), ``start``, ``end`` (a half-open range of event time), then
    keyword-only options. Each id argument takes one id or a sequence; ``None`` selects all.
    A query that finds nothing returns an empty DataFrame with its usual columns.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        policies: Iterable[StoragePolicy] = (),
        config: StoreConfig | None = None,
        directory: DeviceDirectory | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._directory = directory
        self._config = config or StoreConfig()
        self._policies = tuple(policies)
        self._temporary = data_dir is None
        if data_dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="enos_lab_store_"))  # mode 0700
        else:
            self._dir = Path(data_dir)
            private_dir(self._dir)
        self._path = self._dir / DB_FILE
        self._wal = self._dir / (DB_FILE + ".wal")
        self._spill = self._dir / (DB_FILE + ".tmp")
        try:
            con = self._connect()
        except (duckdb.Error, OSError) as exc:
            self._remove_temporary()
            raise StoreError(f"cannot open the time-series database {self._path}: {exc}") from exc
        try:
            con.execute(SCHEMA)
            (version,) = con.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchall()[0]
            if version != str(SCHEMA_VERSION):
                con.close()
                self._remove_temporary()
                raise StoreError(
                    f"the time-series database {self._path} has schema version {version}, "
                    f"this enos_lab expects {SCHEMA_VERSION}"
                )
            self._read_root = con.cursor()
        except duckdb.Error as exc:
            con.close()
            self._remove_temporary()
            raise StoreError(
                f"cannot prepare the time-series database {self._path}: {exc}"
            ) from exc
        self._read_lock = threading.Lock()
        self._writer = Writer(
            con,
            queue_size=self._config.queue_size,
            max_rows=self._config.max_rows,
            max_delay=self._config.max_delay,
            max_series_per_device=self._config.max_series_per_device,
            name=f"enos_lab-store-writer[{self._dir.name}]",
            after_commit=self._keep_wal_private,
        )
        log.debug("time-series store opened at %s", self._path)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the database with its files private to the user (see :mod:`enos_lab._files`).

        DuckDB creates its database file, its write-ahead log and its spill files with the
        umask's mode and cannot be told another. So: an existing database or log of looser mode
        is set to 0600 (with a warning) before DuckDB opens it; a new database file is set to
        0600 right after DuckDB created it, before anything is written into it; the log, which
        DuckDB deletes at every checkpoint and creates anew at the next commit, is set to 0600
        after every commit that made it (:meth:`_keep_wal_private`, one ``stat`` per commit);
        spill files go to a directory of their own made 0700 here and removed on close.
        """
        tighten(self._path)
        tighten(self._wal)
        private_dir(self._spill)
        settings: dict[str, str | bool | int | float | list[str]] = {
            **self._config.duckdb_settings(),
            "temp_directory": str(self._spill),
        }
        con = duckdb.connect(str(self._path), config=settings)
        keep_private(self._path)
        return con

    def _keep_wal_private(self) -> None:
        keep_private(self._wal)

    # ------------------------------------------------------------------ lifecycle

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def config(self) -> StoreConfig:
        """The store's settings."""
        return self._config

    def setting(self, name: str) -> str:
        """DuckDB's current value of its setting ``name`` as DuckDB shows it (for example
        ``setting("memory_limit")`` gives ``"256.0 MiB"``)."""
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT value FROM duckdb_settings() WHERE name = ?", [name]
            ).fetchall()
        if not rows:
            raise InvalidArgument(f"expected the name of a DuckDB setting, got {name!r}")
        return str(rows[0][0])

    def memory_usage(self) -> dict[str, int]:
        """DuckDB's memory in use by component, non-zero ones only (its ``duckdb_memory()``:
        ``BASE_TABLE`` is the cache of stored table blocks, ``IN_MEMORY_TABLE`` rows not yet
        checkpointed, ``ART_INDEX`` the key indexes, ...). [bytes]"""
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0"
            ).fetchall()
        return {str(tag): int(size) for tag, size in rows}

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._writer.closed

    def close(self) -> None:
        """Commit what is queued, close the database, remove a temporary directory. Idempotent."""
        if self._writer.closed:
            return
        self._writer.close()
        with self._read_lock:
            self._read_root.close()
        with contextlib.suppress(OSError):
            self._spill.rmdir()  # DuckDB empties it; a directory it did not make, it keeps
        self._remove_temporary()
        log.debug("time-series store closed at %s", self._path)

    def __enter__(self) -> TimeSeriesStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _remove_temporary(self) -> None:
        if self._temporary:
            shutil.rmtree(self._dir, ignore_errors=True)

    def stats(self) -> StoreStats:
        """Writer counters: commits, batches, rows, largest group, queue length."""
        return self._writer.stats()

    # ------------------------------------------------------------------ appends

    def submit_points(self, rows: Sequence[PointRow]) -> Future[int]:
        """Queue measurepoint rows; the future gives the row count once they are committed.

        Blocks only while the writer's queue is full (back-pressure).
        """
        return self._submit(self._points_batch(rows))

    def append_points(self, rows: Sequence[PointRow]) -> int:
        """Store measurepoint rows; returns the row count once they are committed."""
        return self.submit_points(rows).result()

    async def append_points_async(self, rows: Sequence[PointRow]) -> int:
        """Like :meth:`append_points`, without blocking the event loop."""
        return await self._submit_async(self._points_batch(rows))

    def append_events(self, rows: Sequence[EventRow]) -> int:
        """Store event rows; returns the row count once they are committed."""
        return self._submit(self._events_batch(rows)).result()

    async def append_events_async(self, rows: Sequence[EventRow]) -> int:
        """Like :meth:`append_events`, without blocking the event loop."""
        return await self._submit_async(self._events_batch(rows))

    def append_attributes(self, rows: Sequence[AttributeRow]) -> int:
        """Store attribute changes; returns the row count once they are committed."""
        return self._submit(self._attributes_batch(rows)).result()

    async def append_attributes_async(self, rows: Sequence[AttributeRow]) -> int:
        """Like :meth:`append_attributes`, without blocking the event loop."""
        return await self._submit_async(self._attributes_batch(rows))

    def _batch(self, kind: BatchKind, rows: int) -> Batch:
        return Batch(kind, rows, self._clock.time_ms(), Future())

    def _points_batch(self, rows: Sequence[PointRow]) -> Batch:
        # Everything is checked here, in the caller's thread, so that a bad row fails its own
        # call and never the group commit it would join (see encode_points).
        cols = encode_points(rows)
        batch = self._batch("points", len(cols))
        get = self._writer.series.get
        batch.points = cols
        try:
            batch.series = np.array([get(k, -1) for k in cols.keys], dtype=np.int32)
        except TypeError:  # an unhashable key part
            check_series_keys(cols.keys, range(len(cols)))
            raise
        unknown = np.flatnonzero(batch.series < 0)
        if unknown.size:  # series not stored yet: their keys were never checked
            keys = cols.keys
            first: dict[Any, int] = {}  # each new series once, at its first row
            for i in unknown.tolist():
                first.setdefault(keys[i], i)
            new_rows = list(first.values())
            check_series_keys(keys, new_rows)
            self._writer.check_new_series(cols.keys, new_rows)
        return batch

    def _events_batch(self, rows: Sequence[EventRow]) -> Batch:
        batch = self._batch("events", len(rows))
        rcv = batch.receive_ms
        for i, row in enumerate(rows):
            check_record(row.product_key, row.device_key, row.event_id, row.event_time_ms, i)
            check_text(row.severity, "severity", i, optional=True)
            batch.records.append(
                (
                    row.product_key,
                    row.device_key,
                    row.event_id,
                    row.event_time_ms,
                    rcv,
                    row.severity,
                    encode_json(dict(row.outputs), i),
                )
            )
        return batch

    def _attributes_batch(self, rows: Sequence[AttributeRow]) -> Batch:
        batch = self._batch("attributes", len(rows))
        rcv = batch.receive_ms
        for i, row in enumerate(rows):
            check_record(row.product_key, row.device_key, row.attribute_id, row.event_time_ms, i)
            text = None if row.value is None else encode_json(row.value, i)
            batch.records.append(
                (row.product_key, row.device_key, row.attribute_id, row.event_time_ms, rcv, text)
            )
        return batch

    def _submit(self, batch: Batch) -> Future[int]:
        if batch.rows == 0:
            if self._writer.closed:
                raise StoreError("the time-series store is closed")
            batch.future.set_result(0)
            return batch.future
        self._writer.submit(batch)
        return batch.future

    async def _submit_async(self, batch: Batch) -> int:
        if batch.rows == 0:
            return self._submit(batch).result()
        if not self._writer.submit(batch, block=False):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._writer.submit, batch)
        # Shielded: a cancelled caller does not withdraw rows already handed to the store.
        return await asyncio.shield(asyncio.wrap_future(batch.future))

    # ------------------------------------------------------------------ retention

    @property
    def policies(self) -> tuple[StoragePolicy, ...]:
        """The storage policies, first match wins."""
        return self._policies

    def set_policies(self, policies: Iterable[StoragePolicy]) -> None:
        """Replace the storage policies (used by the next :meth:`apply_retention`)."""
        self._policies = tuple(policies)

    def apply_retention(self, now: datetime | None = None) -> RetentionReport:
        """Apply the storage policies at ``now`` (default: the clock's now).

        For each policy with ``raw_days``: raw rows with event time before ``now - raw_days`` are
        first folded into the policy's downsampled series (numeric points; merged with buckets
        already there), then deleted. Downsampled buckets that end before
        ``now - downsample_days`` are deleted. Each series' latest row is kept whatever its age, so
        latest values stay available (it is rolled up once a newer row arrives and it expires).
        """
        now_ms = as_ms(now if now is not None else self._clock.now(), "now")
        policies = self._policies
        latest = self._writer.latest_times
        job: Job = Job(lambda con: apply_policies(con, policies, now_ms, latest), Future())
        self._writer.submit(job)
        result: RetentionReport = job.future.result()
        return result

    # ------------------------------------------------------------------ deletion

    def delete_device(self, product_key: str, device_key: str) -> dict[str, int]:
        """Delete everything stored of the device, in one transaction: its measurepoints (raw
        rows, downsampled buckets and the series themselves), events and attribute changes.
        Returns the rows deleted per table (``points, rollups, series, events, attributes,
        devices``); a device with no data gives zeros. Afterwards queries of the device find
        nothing (or raise :class:`~enos_lab.errors.NotFound` once the registry no longer knows
        it), and data it sends later starts new series.

        Appends of the device's data running at the same time may lose the race; stop its data
        first (the lab deletes the device from the registry before it purges its history).
        """
        job = self._writer.delete_device_job(product_key, device_key)
        self._writer.submit(job)
        counts: dict[str, int] = job.future.result()
        log.info("deleted the stored data of %s/%s: %s", product_key, device_key, counts)
        return counts

    # ------------------------------------------------------------------ queries

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._read_lock:
            if self._writer.closed:
                raise StoreError("the time-series store is closed")
            cur = self._read_root.cursor()
        try:
            yield cur
        except duckdb.Error as exc:
            raise StoreError(f"time-series query failed: {exc}") from exc
        finally:
            cur.close()

    def devices(self) -> pd.DataFrame:
        """Every device the store has data of: columns product_key, device_key."""
        with self._cursor() as cur:
            return cur.execute("SELECT product_key, device_key FROM devices ORDER BY 1, 2").df()

    def series(self) -> pd.DataFrame:
        """Every stored measurepoint series: columns product_key, device_key, point_id."""
        with self._cursor() as cur:
            return cur.execute(
                "SELECT product_key, device_key, point_id FROM series ORDER BY 1, 2, 3"
            ).df()

    def _check_names(
        self,
        cur: duckdb.DuckDBPyConnection,
        device_keys: Sequence[str] | None,
        product_key: str | None,
    ) -> None:
        """Refuse a product or devices neither the directory nor the store's data knows."""
        directory = self._directory
        if directory is None:
            return
        if product_key is not None and directory.find_product(product_key) is None:
            held = cur.execute(
                "SELECT 1 FROM devices WHERE product_key = ? LIMIT 1", [product_key]
            ).fetchall()
            if not held:
                raise NotFound(
                    f"product {product_key!r} does not exist (and the store holds no data of it)"
                )
        if not device_keys:
            return
        held_keys = {
            dk
            for (dk,) in cur.execute(
                "SELECT DISTINCT device_key FROM devices WHERE device_key IN (SELECT unnest(?))"
                " AND (?::VARCHAR IS NULL OR product_key = ?)",
                [list(device_keys), product_key, product_key],
            ).fetchall()
        }
        rest = [dk for dk in device_keys if dk not in held_keys]
        if rest:
            existing = directory.existing_device_keys(rest, product_key)
            missing = [dk for dk in rest if dk not in existing]
            if missing:
                of = f" of product {product_key!r}" if product_key is not None else ""
                raise NotFound(
                    f"device(s) {missing}{of} do not exist (and the store holds no data of them)"
                )

    def _series_ids(
        self,
        cur: duckdb.DuckDBPyConnection,
        device_keys: Sequence[str] | None,
        point_ids: Sequence[str] | None,
        product_key: str | None,
    ) -> list[int]:
        """Ids of the stored series that match (None matches everything)."""
        self._check_names(cur, device_keys, product_key)
        rows = cur.execute(
            """SELECT series_id FROM series
               WHERE (?::VARCHAR[] IS NULL OR device_key IN (SELECT unnest(?::VARCHAR[])))
                 AND (?::VARCHAR[] IS NULL OR point_id IN (SELECT unnest(?::VARCHAR[])))
                 AND (?::VARCHAR IS NULL OR product_key = ?)""",
            [device_keys, device_keys, point_ids, point_ids, product_key, product_key],
        ).fetchall()
        return [sid for (sid,) in rows]

    def query_points(
        self,
        device_keys: Ids | None = None,
        point_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
    ) -> pd.DataFrame:
        """Raw measurepoints of the devices and points (``None``: all) in ``[start, end)``.

        Columns: time, product_key, device_key, point_id, value, quality (nullable Int64),
        receive_time, resume; sorted by product, device, point and time. ``value`` has the
        point's natural type: float64, Int64, boolean, str, or objects (dict/list) for structs
        and arrays (object when points of different kinds are mixed). No data: an empty frame
        with these columns. Unknown products or devices raise
        :class:`~enos_lab.errors.NotFound` (see :class:`DeviceDirectory`).
        """
        devices = id_list(device_keys, "device_keys")
        points = id_list(point_ids, "point_ids")
        lo, hi = ms_range(start, end)
        with self._cursor() as cur:
            sids = self._series_ids(cur, devices, points, product_key)
            # The series, ranked by their keys: the big scan then joins and sorts integers only,
            # and the key columns are taken from these few strings (no string per row in DuckDB).
            keys = cur.execute(
                """SELECT series_id, product_key, device_key, point_id FROM series
                   WHERE series_id IN (SELECT unnest(?::INTEGER[]))
                   ORDER BY product_key, device_key, point_id""",
                [sids],
            ).fetchnumpy()
            f_rank = pd.DataFrame(  # noqa: F841 (scanned by name)
                {"series_id": keys["series_id"], "rank": np.arange(len(keys["series_id"]))}
            )
            raw = cur.execute(
                """SELECT r.rank, p.event_ms, p.kind, p.num, p.text, p.quality, p.receive_ms,
                          p.resume
                   FROM points p JOIN f_rank r USING (series_id)
                   WHERE p.event_ms >= ? AND p.event_ms < ?
                   ORDER BY r.rank, p.event_ms""",
                [lo, hi],
            ).fetchnumpy()
        rank = np.asarray(raw.pop("rank"), dtype=np.int64)
        for column in ("product_key", "device_key", "point_id"):
            raw[column] = np.asarray(keys[column], dtype=object).take(rank)
        return value_frame(raw)

    def latest(
        self,
        device_keys: Ids | None = None,
        point_ids: Ids | None = None,
        *,
        product_key: str | None = None,
    ) -> pd.DataFrame:
        """The latest value (greatest event time) per device and point (``None``: all).

        Same columns as :meth:`query_points`, one row per series; no data: an empty frame.
        """
        devices = id_list(device_keys, "device_keys")
        points = id_list(point_ids, "point_ids")
        with self._cursor() as cur:
            sids = np.asarray(self._series_ids(cur, devices, points, product_key), np.int32)
            found, times = self._writer.latest_times(sids)
            f_latest = {"series_id": found, "event_ms": times}  # noqa: F841 (scanned by name)
            raw = cur.execute(
                """SELECT p.event_ms, s.product_key, s.device_key, s.point_id, p.kind, p.num,
                          p.text, p.quality, p.receive_ms, p.resume
                   FROM f_latest q
                   JOIN points p ON p.series_id = q.series_id AND p.event_ms = q.event_ms
                   JOIN series s ON s.series_id = p.series_id
                   ORDER BY s.product_key, s.device_key, s.point_id"""
            ).fetchnumpy()
        return value_frame(raw)

    def aggregate(
        self,
        device_keys: Ids | None = None,
        point_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        interval: str | timedelta,
        aggregations: str | Sequence[str] = "avg",
        product_key: str | None = None,
        fleet: bool = False,
        source: Source | str = Source.RAW,
    ) -> pd.DataFrame:
        """Time-bucket aggregation of numeric points (bools count as 0/1; NaN is missing).

        Buckets are ``interval`` wide (``"1min"``, ``"15min"``, ``"1h"``, ``"1D"`` ...), aligned
        to the Unix epoch (so to UTC midnight for widths dividing a day), labelled by their start;
        only buckets holding data appear. ``aggregations`` are any of :data:`AGGREGATIONS`.
        Per device (default) the columns are product_key, device_key, point_id, time, then one
        column per aggregation; with ``fleet=True`` all selected devices are aggregated together:
        point_id, time, aggregations. ``device_keys`` and ``point_ids`` None select every device
        and every point. ``source`` picks raw rows, the downsampled series written by retention
        (a bucket belongs to the range if its start does; ``interval`` must be a multiple of the
        downsampling width), or both. No data (or only text points): an empty frame with these
        columns.
        """
        devices = id_list(device_keys, "device_keys")
        points = id_list(point_ids, "point_ids")
        aggs = check_aggregations(aggregations)
        width = parse_interval(interval)
        lo, hi = ms_range(start, end)
        src = check_source(source)
        sql = aggregate_sql(aggs, width, lo, src, fleet)
        with self._cursor() as cur:
            sids = self._series_ids(cur, devices, points, product_key)
            if (
                src is not Source.RAW
                and not cur.execute(
                    f"SELECT 1 FROM rollups WHERE {width} % interval_ms = 0 LIMIT 1"
                ).fetchall()
                and cur.execute("SELECT 1 FROM rollups LIMIT 1").fetchall()
            ):
                raise InvalidArgument(
                    f"interval {interval!r} is not a multiple of any downsampling width"
                )
            frame = cur.execute(sql, {"sids": sids, "lo": lo, "hi": hi}).df()
        frame.insert(
            list(frame.columns).index("bucket_ms"), "time", to_utc_index(frame["bucket_ms"])
        )
        frame = frame.drop(columns="bucket_ms")
        if "count" in frame.columns:
            frame["count"] = frame["count"].astype(np.int64)
        return frame

    def query_events(
        self,
        device_keys: Ids | None = None,
        event_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
    ) -> pd.DataFrame:
        """Events of the devices (``None``: all) with event time in ``[start, end)``.

        Columns: time, product_key, device_key, event_id, severity, outputs (dict),
        receive_time; sorted by time. No data: an empty frame with these columns.
        """
        devices = id_list(device_keys, "device_keys")
        clause, params = where(
            "event_ms",
            *ms_range(start, end),
            device_key=devices,
            product_key=None if product_key is None else [product_key],
            event_id=id_list(event_ids, "event_ids"),
        )
        with self._cursor() as cur:
            self._check_names(cur, devices, product_key)
            frame = cur.execute(
                f"""SELECT event_ms, product_key, device_key, event_id, severity, outputs,
                           receive_ms
                    FROM events WHERE {clause}
                    ORDER BY event_ms, product_key, device_key, event_id""",
                params,
            ).df()
        frame["outputs"] = json_objects(frame["outputs"])
        return utc_times(frame, {"event_ms": "time", "receive_ms": "receive_time"})

    def query_attributes(
        self,
        device_keys: Ids | None = None,
        attribute_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
    ) -> pd.DataFrame:
        """Attribute changes of the devices (``None``: all) with event time in ``[start, end)``.

        Columns: time, product_key, device_key, attribute_id, value (None = deleted),
        receive_time; sorted by time. No data: an empty frame with these columns.
        """
        devices = id_list(device_keys, "device_keys")
        clause, params = where(
            "event_ms",
            *ms_range(start, end),
            device_key=devices,
            product_key=None if product_key is None else [product_key],
            attribute_id=id_list(attribute_ids, "attribute_ids"),
        )
        with self._cursor() as cur:
            self._check_names(cur, devices, product_key)
            frame = cur.execute(
                f"""SELECT event_ms, product_key, device_key, attribute_id, value, receive_ms
                    FROM attributes WHERE {clause}
                    ORDER BY event_ms, product_key, device_key, attribute_id""",
                params,
            ).df()
        frame["value"] = json_objects(frame["value"])
        return utc_times(frame, {"event_ms": "time", "receive_ms": "receive_time"})

    # ------------------------------------------------------------------ asyncio variants

    query_points_async = _in_thread(query_points)
    latest_async = _in_thread(latest)
    aggregate_async = _in_thread(aggregate)
    query_events_async = _in_thread(query_events)
    query_attributes_async = _in_thread(query_attributes)
    apply_retention_async = _in_thread(apply_retention)
    delete_device_async = _in_thread(delete_device)
