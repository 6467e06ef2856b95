"""Time-series store: measurepoints, events and attribute changes.

An embedded DuckDB database in the lab's data directory. Appends are group-committed by a writer
thread and return once durable; queries return tz-aware UTC pandas DataFrames. "Latest value" is
by event time; resumed history fills the past without hiding newer values. Storage policies keep
raw data N days and optionally roll it into downsampled series.

Queries take their arguments in one order: devices, the ids of what is asked for (points,
events, attributes), start, end, then keyword-only options; no data gives an empty DataFrame with
the usual columns, and a product or device that exists neither in the store's data nor in its
:class:`DeviceDirectory` (the lab's registry) raises :class:`~enos_lab.errors.NotFound`.

Duplicate policy: a second row for the same device, point and event time replaces the stored one
(value, quality, receive time), except that a resumed row never replaces a live one.
"""

from __future__ import annotations

from ._config import MIN_MEMORY_LIMIT, StoreConfig
from ._policy import RetentionReport, StoragePolicy
from ._query import AGGREGATIONS, DeviceDirectory, Ids, Source, id_list
from ._rows import AttributeRow, EventRow, PointRow, PointValue, ValueKind
from ._store import TimeSeriesStore
from ._time import MAX_EVENT_MS, MIN_EVENT_MS, TimeLike, as_ms
from ._writer import StoreStats

__all__ = [
    "AGGREGATIONS",
    "MAX_EVENT_MS",
    "MIN_EVENT_MS",
    "MIN_MEMORY_LIMIT",
    "AttributeRow",
    "DeviceDirectory",
    "EventRow",
    "Ids",
    "PointRow",
    "PointValue",
    "RetentionReport",
    "Source",
    "StoragePolicy",
    "StoreConfig",
    "StoreStats",
    "TimeLike",
    "TimeSeriesStore",
    "ValueKind",
    "as_ms",
    "id_list",
]
