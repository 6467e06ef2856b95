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
half-open ``[start, end)``; DataFrames carry tz-aware UTC timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd

from .._files import keep_private, private_dir, tighten
from ..clock import Clock, SystemClock
from ..errors import InvalidArgument, StoreError
from ._config import StoreConfig
from ._errors import SeriesNotFound
from ._policy import RetentionReport, StoragePolicy, apply_policies
from ._rows import (
    AlertRecord,
    AttributeRow,
    EventRow,
    PointRow,
    ValueKind,
    check_event_ms,
    check_record,
    check_series_keys,
    check_text,
    check_utf8,
    decode_json,
    encode_json,
    encode_points,
)
from ._schema import SCHEMA, SCHEMA_VERSION
from ._time import TimeLike, as_ms, ms_range, parse_interval, to_utc_index
from ._writer import Batch, BatchKind, Job, StoreStats, Writer

__all__ = ["AGGREGATIONS", "Source", "TimeSeriesStore"]

log = logging.getLogger(__name__)

DB_FILE: Final = "timeseries.duckdb"

AGGREGATIONS: Final = ("avg", "min", "max", "sum", "count", "first", "last")
"""Aggregations accepted by :meth:`TimeSeriesStore.aggregate`."""

# Partial aggregates per (series, bucket): (column, SQL over raw rows, SQL combining partials).
_PARTIALS: Final = {
    "cnt": ("count(num)", "sum(cnt)"),
    "total": ("sum(num)", "sum(total)"),
    "vmin": ("min(num)", "min(vmin)"),
    "vmax": ("max(num)", "max(vmax)"),
    "first_ms": ("min(event_ms)", "min(first_ms)"),
    "vfirst": ("arg_min(num, event_ms)", "arg_min(vfirst, first_ms)"),
    "last_ms": ("max(event_ms)", "max(last_ms)"),
    "vlast": ("arg_max(num, event_ms)", "arg_max(vlast, last_ms)"),
}
_NEEDS: Final = {
    "avg": ("cnt", "total"),
    "sum": ("total",),
    "count": ("cnt",),
    "min": ("vmin",),
    "max": ("vmax",),
    "first": ("first_ms", "vfirst"),
    "last": ("last_ms", "vlast"),
}
_DIRECT: Final = {
    "avg": "avg(num)",
    "sum": "sum(num)",
    "count": "count(num)",
    "min": "min(num)",
    "max": "max(num)",
    "first": "arg_min(num, event_ms)",
    "last": "arg_max(num, event_ms)",
}
_FINAL: Final = {
    "avg": "total / cnt",
    "sum": "total",
    "count": "cnt::BIGINT",
    "min": "vmin",
    "max": "vmax",
    "first": "vfirst",
    "last": "vlast",
}


class Source(StrEnum):
    """Which series an aggregation reads."""

    RAW = "raw"
    """Raw measurepoints only."""
    ROLLUP = "rollup"
    """Downsampled series only (written by retention)."""
    ALL = "all"
    """Both: downsampled buckets for what retention removed, raw rows for the rest."""


class TimeSeriesStore:
    """Measurepoints, events, attribute changes and alert records in an embedded DuckDB.

    ``data_dir`` is the lab's data directory (created with mode 0700 if missing; the store's
    files in it are 0600); None uses a temporary directory that :meth:`close` removes. ``clock``
    gives receive times and the default retention time. ``policies`` are the storage policies
    (see :class:`StoragePolicy`). ``config`` tunes the writer and DuckDB (memory limit, threads;
    see :class:`StoreConfig`). Thread-safe: every method may be called from any thread; the
    ``*_async`` methods never block the event loop.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        policies: Iterable[StoragePolicy] = (),
        config: StoreConfig | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
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

    def append_alerts(self, records: Sequence[AlertRecord]) -> int:
        """Store alert records (insert, or replace the record with the same ``alert_id``)."""
        return self._submit(self._alerts_batch(records)).result()

    def append_alert(self, record: AlertRecord) -> None:
        """Store one alert record (see :meth:`append_alerts`)."""
        self.append_alerts([record])

    async def append_alerts_async(self, records: Sequence[AlertRecord]) -> int:
        """Like :meth:`append_alerts`, without blocking the event loop."""
        return await self._submit_async(self._alerts_batch(records))

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

    def _alerts_batch(self, records: Sequence[AlertRecord]) -> Batch:
        batch = self._batch("alerts", len(records))
        rcv = batch.receive_ms
        for i, rec in enumerate(records):
            check_record(rec.product_key, rec.device_key, rec.rule_id, rec.occur_time_ms, i)
            check_text(rec.alert_id, "alert_id", i)
            check_text(rec.severity, "severity", i)
            check_text(rec.state, "state", i)
            check_text(rec.point_id, "point_id", i, optional=True)
            if not isinstance(rec.message, str):
                raise InvalidArgument(f"expected a string message, got {rec.message!r} (row {i})")
            check_utf8(rec.message, "message", i)
            if rec.recover_time_ms is not None:
                check_event_ms(rec.recover_time_ms, "recover_time_ms", i)
            value = None if rec.value is None else encode_json(rec.value, i)
            batch.records.append(
                (
                    rec.alert_id,
                    rec.rule_id,
                    rec.product_key,
                    rec.device_key,
                    rec.point_id,
                    rec.severity,
                    rec.state,
                    rec.occur_time_ms,
                    rec.recover_time_ms,
                    rcv,
                    value,
                    rec.message,
                )
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

    def _check_devices(
        self, cur: duckdb.DuckDBPyConnection, device_keys: Sequence[str], product_key: str | None
    ) -> None:
        found = {
            dk
            for (dk,) in cur.execute(
                "SELECT DISTINCT device_key FROM devices WHERE device_key IN (SELECT unnest(?))"
                " AND (? IS NULL OR product_key = ?)",
                [list(device_keys), product_key, product_key],
            ).fetchall()
        }
        missing = [dk for dk in device_keys if dk not in found]
        if missing:
            where = f" of product {product_key!r}" if product_key is not None else ""
            raise SeriesNotFound(f"no data stored for device(s) {missing}{where}")

    def _series_ids(
        self,
        cur: duckdb.DuckDBPyConnection,
        device_keys: Sequence[str] | None,
        point_ids: Sequence[str] | None,
        product_key: str | None,
    ) -> list[int]:
        """Ids of the matching series; unknown devices or points raise SeriesNotFound."""
        if device_keys is not None:
            self._check_devices(cur, device_keys, product_key)
        rows = cur.execute(
            """SELECT series_id, point_id FROM series
               WHERE (?::VARCHAR[] IS NULL OR device_key IN (SELECT unnest(?::VARCHAR[])))
                 AND (?::VARCHAR[] IS NULL OR point_id IN (SELECT unnest(?::VARCHAR[])))
                 AND (?::VARCHAR IS NULL OR product_key = ?)""",
            [device_keys, device_keys, point_ids, point_ids, product_key, product_key],
        ).fetchall()
        if point_ids is not None:
            missing = sorted(set(point_ids) - {pid for _, pid in rows})
            if missing:
                raise SeriesNotFound(
                    f"no data stored for measurepoint(s) {missing} of device(s) "
                    f"{list(device_keys) if device_keys is not None else 'any'}"
                )
        return [sid for sid, _ in rows]

    def query_points(
        self,
        device_key: str | Sequence[str],
        point_ids: str | Sequence[str] | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
    ) -> pd.DataFrame:
        """Raw measurepoints of one or more devices in ``[start, end)``.

        Columns: time, product_key, device_key, point_id, value, quality (nullable Int64),
        receive_time, resume; sorted by product, device, point and time. ``value`` has the
        point's natural type: float64, Int64, boolean, str, or objects (dict/list) for structs
        and arrays (object when points of different kinds are mixed).
        """
        devices = _names(device_key, "device_key")
        points = None if point_ids is None else _names(point_ids, "point_ids")
        lo, hi = ms_range(start, end)
        with self._cursor() as cur:
            sids = self._series_ids(cur, devices, points, product_key)
            raw = cur.execute(
                """SELECT p.event_ms, s.product_key, s.device_key, s.point_id, p.kind, p.num,
                          p.text, p.quality, p.receive_ms, p.resume
                   FROM points p JOIN series s USING (series_id)
                   WHERE p.series_id IN (SELECT unnest(?::INTEGER[]))
                     AND p.event_ms >= ? AND p.event_ms < ?
                   ORDER BY s.product_key, s.device_key, s.point_id, p.event_ms""",
                [sids, lo, hi],
            ).fetchnumpy()
        return _value_frame(raw)

    def latest(
        self,
        device_keys: str | Sequence[str] | None = None,
        point_ids: str | Sequence[str] | None = None,
        *,
        product_key: str | None = None,
    ) -> pd.DataFrame:
        """The latest value (greatest event time) per device and point.

        Same columns as :meth:`query_points`; None for ``device_keys`` means every device.
        """
        devices = None if device_keys is None else _names(device_keys, "device_keys")
        points = None if point_ids is None else _names(point_ids, "point_ids")
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
        return _value_frame(raw)

    def aggregate(
        self,
        point_ids: str | Sequence[str],
        interval: str | timedelta,
        aggregations: str | Sequence[str] = "avg",
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        device_keys: str | Sequence[str] | None = None,
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
        point_id, time, aggregations. ``device_keys`` None selects every device. ``source`` picks
        raw rows, the downsampled series written by retention (a bucket belongs to the range if
        its start does; ``interval`` must be a multiple of the downsampling width), or both.
        """
        points = _names(point_ids, "point_ids")
        devices = None if device_keys is None else _names(device_keys, "device_keys")
        aggs = _aggregations(aggregations)
        width = parse_interval(interval)
        lo, hi = ms_range(start, end)
        try:
            src = Source(source)
        except ValueError as exc:
            raise InvalidArgument(
                f"expected source in {[s.value for s in Source]}, got {source!r}"
            ) from exc
        partials = sorted({p for a in aggs for p in _NEEDS[a]})
        if lo >= 0:  # floor division is truncation for non-negative times: cheaper
            bucket = f"(event_ms - event_ms % {width})"
        else:
            bucket = f"(event_ms - (((event_ms % {width}) + {width}) % {width}))"
        raw_rows = """FROM points
                    WHERE series_id IN (SELECT unnest($sids::INTEGER[]))
                      AND event_ms >= $lo AND event_ms < $hi AND num IS NOT NULL"""
        names = ", ".join(f'"{a}"' for a in aggs)
        if src is Source.RAW and not fleet:
            # One pass over the raw rows; names are joined on the (small) result.
            direct = ", ".join(f'{_DIRECT[a]} AS "{a}"' for a in aggs)
            sql = f"""
                WITH comb AS (SELECT series_id, {bucket} AS bucket_ms, {direct} {raw_rows}
                              GROUP BY ALL)
                SELECT s.product_key, s.device_key, s.point_id, bucket_ms, {names}
                FROM comb JOIN series s USING (series_id)
                ORDER BY s.product_key, s.device_key, s.point_id, bucket_ms"""
        else:
            # Partial aggregates per (series, bucket) from raw rows and/or rollups, combined.
            stage1: list[str] = []
            if src is not Source.ROLLUP:
                cols = ", ".join(f"{_PARTIALS[p][0]} AS {p}" for p in partials)
                stage1.append(
                    f"SELECT series_id, {bucket} AS bucket_ms, {cols} {raw_rows} GROUP BY ALL"
                )
            if src is not Source.RAW:
                cols = ", ".join(partials)
                rb = bucket.replace("event_ms", "bucket_ms")
                stage1.append(
                    f"""SELECT series_id, {rb} AS bucket_ms, {cols}
                        FROM rollups
                        WHERE series_id IN (SELECT unnest($sids::INTEGER[]))
                          AND bucket_ms >= $lo AND bucket_ms < $hi AND {width} % interval_ms = 0
                        QUALIFY interval_ms = max(interval_ms) OVER (PARTITION BY series_id)"""
                )
            union = " UNION ALL ".join(stage1)
            combined = ", ".join(f"{_PARTIALS[p][1]} AS {p}" for p in partials)
            finals = ", ".join(f'{_FINAL[a]} AS "{a}"' for a in aggs)
            if fleet:
                sql = f"""
                    WITH part AS ({union}),
                    comb AS (SELECT s.point_id, bucket_ms, {combined}
                             FROM part JOIN series s USING (series_id) GROUP BY ALL)
                    SELECT point_id, bucket_ms, {finals} FROM comb ORDER BY point_id, bucket_ms"""
            else:
                sql = f"""
                    WITH part AS ({union}),
                    comb AS (SELECT series_id, bucket_ms, {combined} FROM part GROUP BY ALL)
                    SELECT s.product_key, s.device_key, s.point_id, bucket_ms, {finals}
                    FROM comb JOIN series s USING (series_id)
                    ORDER BY s.product_key, s.device_key, s.point_id, bucket_ms"""
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
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        device_key: str | None = None,
        product_key: str | None = None,
        event_id: str | None = None,
    ) -> pd.DataFrame:
        """Events with event time in ``[start, end)``.

        Columns: time, product_key, device_key, event_id, severity, outputs (dict),
        receive_time; sorted by time.
        """
        lo, hi = ms_range(start, end)
        with self._cursor() as cur:
            if device_key is not None:
                self._check_devices(cur, [device_key], product_key)
            frame = cur.execute(
                """SELECT event_ms, product_key, device_key, event_id, severity, outputs,
                          receive_ms
                   FROM events
                   WHERE event_ms >= ? AND event_ms < ?
                     AND (?::VARCHAR IS NULL OR device_key = ?)
                     AND (?::VARCHAR IS NULL OR product_key = ?)
                     AND (?::VARCHAR IS NULL OR event_id = ?)
                   ORDER BY event_ms, product_key, device_key, event_id""",
                [lo, hi, device_key, device_key, product_key, product_key, event_id, event_id],
            ).df()
        frame["outputs"] = _json_objects(frame["outputs"])
        return _times(frame, {"event_ms": "time", "receive_ms": "receive_time"})

    def query_attributes(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        device_key: str | None = None,
        product_key: str | None = None,
        attribute_id: str | None = None,
    ) -> pd.DataFrame:
        """Attribute changes with event time in ``[start, end)``.

        Columns: time, product_key, device_key, attribute_id, value (None = deleted),
        receive_time; sorted by time.
        """
        lo, hi = ms_range(start, end)
        with self._cursor() as cur:
            if device_key is not None:
                self._check_devices(cur, [device_key], product_key)
            frame = cur.execute(
                """SELECT event_ms, product_key, device_key, attribute_id, value, receive_ms
                   FROM attributes
                   WHERE event_ms >= ? AND event_ms < ?
                     AND (?::VARCHAR IS NULL OR device_key = ?)
                     AND (?::VARCHAR IS NULL OR product_key = ?)
                     AND (?::VARCHAR IS NULL OR attribute_id = ?)
                   ORDER BY event_ms, product_key, device_key, attribute_id""",
                [
                    lo,
                    hi,
                    device_key,
                    device_key,
                    product_key,
                    product_key,
                    attribute_id,
                    attribute_id,
                ],
            ).df()
        frame["value"] = _json_objects(frame["value"])
        return _times(frame, {"event_ms": "time", "receive_ms": "receive_time"})

    def query_alerts(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        device_key: str | None = None,
        product_key: str | None = None,
        rule_id: str | None = None,
        state: str | None = None,
    ) -> pd.DataFrame:
        """Alert records whose occur time is in ``[start, end)``.

        Columns: alert_id, rule_id, product_key, device_key, point_id, severity, state,
        occur_time, recover_time (NaT while active), update_time, value, message; by occur time.
        """
        lo, hi = ms_range(start, end)
        with self._cursor() as cur:
            frame = cur.execute(
                """SELECT alert_id, rule_id, product_key, device_key, point_id, severity, state,
                          occur_ms, recover_ms, update_ms, value, message
                   FROM alerts
                   WHERE occur_ms >= ? AND occur_ms < ?
                     AND (?::VARCHAR IS NULL OR device_key = ?)
                     AND (?::VARCHAR IS NULL OR product_key = ?)
                     AND (?::VARCHAR IS NULL OR rule_id = ?)
                     AND (?::VARCHAR IS NULL OR state = ?)
                   ORDER BY occur_ms, alert_id""",
                [
                    lo,
                    hi,
                    device_key,
                    device_key,
                    product_key,
                    product_key,
                    rule_id,
                    rule_id,
                    state,
                    state,
                ],
            ).df()
        frame["value"] = _json_objects(frame["value"])
        return _times(
            frame,
            {"occur_ms": "occur_time", "recover_ms": "recover_time", "update_ms": "update_time"},
        )

    # ------------------------------------------------------------------ asyncio variants

    async def query_points_async(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """:meth:`query_points` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.query_points, *args, **kwargs)

    async def latest_async(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """:meth:`latest` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.latest, *args, **kwargs)

    async def aggregate_async(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """:meth:`aggregate` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.aggregate, *args, **kwargs)

    async def query_events_async(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """:meth:`query_events` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.query_events, *args, **kwargs)

    async def query_attributes_async(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """:meth:`query_attributes` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.query_attributes, *args, **kwargs)

    async def query_alerts_async(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """:meth:`query_alerts` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.query_alerts, *args, **kwargs)

    async def apply_retention_async(self, now: datetime | None = None) -> RetentionReport:
        """:meth:`apply_retention` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.apply_retention, now)


# ---------------------------------------------------------------------- helpers


def _names(value: str | Sequence[str], what: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidArgument(f"expected one or more non-empty strings for {what}, got {value!r}")
    return names


def _aggregations(value: str | Sequence[str]) -> list[str]:
    aggs = [value] if isinstance(value, str) else list(value)
    bad = [a for a in aggs if a not in AGGREGATIONS]
    if bad or not aggs:
        raise InvalidArgument(f"expected aggregations among {list(AGGREGATIONS)}, got {value!r}")
    return list(dict.fromkeys(aggs))


def _json_objects(column: pd.Series) -> list[Any]:
    return [decode_json(v) if isinstance(v, str) else None for v in column]


def _times(frame: pd.DataFrame, renames: dict[str, str]) -> pd.DataFrame:
    for col in renames:
        values = frame[col]
        if values.isna().any():
            frame[col] = pd.to_datetime(values.astype("Float64"), unit="ms", utc=True)
        else:
            frame[col] = to_utc_index(values.to_numpy(dtype=np.int64))
    return frame.rename(columns=renames)


def _value_frame(raw: dict[str, Any]) -> pd.DataFrame:
    """Build the measurepoint DataFrame from fetched columns."""
    kind = np.asarray(raw["kind"], dtype=np.uint8)
    num = np.ma.filled(np.ma.asarray(raw["num"], dtype=np.float64), np.nan)  # NULL: NaN
    text = raw["text"]
    quality = raw["quality"]
    return pd.DataFrame(
        {
            "time": to_utc_index(raw["event_ms"]),
            "product_key": np.asarray(raw["product_key"], dtype=object),
            "device_key": np.asarray(raw["device_key"], dtype=object),
            "point_id": np.asarray(raw["point_id"], dtype=object),
            "value": _decode_values(kind, num, text),
            "quality": pd.arrays.IntegerArray(
                np.ma.asarray(quality).filled(0).astype(np.int64), np.ma.getmaskarray(quality)
            ),
            "receive_time": to_utc_index(raw["receive_ms"]),
            "resume": np.asarray(raw["resume"], dtype=bool),
        }
    )


def _decode_values(kind: npt.NDArray[np.uint8], num: npt.NDArray[np.float64], text: Any) -> Any:
    kinds = set(np.unique(kind).tolist())
    if kinds == {ValueKind.FLOAT}:
        return num
    if kinds == {ValueKind.INT}:
        return pd.array(num.astype(np.int64), dtype="Int64")
    if kinds == {ValueKind.BOOL}:
        return pd.array(num != 0, dtype="boolean")
    if kinds == {ValueKind.STRING}:
        return np.asarray(text, dtype=object)
    out = np.empty(len(kind), dtype=object)
    for i, k in enumerate(kind.tolist()):
        if k == ValueKind.FLOAT:
            out[i] = float(num[i])
        elif k == ValueKind.INT:
            out[i] = int(num[i])
        elif k == ValueKind.BOOL:
            out[i] = bool(num[i])
        elif k == ValueKind.STRING:
            out[i] = str(text[i])
        else:
            out[i] = json.loads(text[i])
    return out
