"""What the store's queries are made of: arguments, the names they may use, SQL and DataFrames.

Every query method of :class:`~enos_lab.store.TimeSeriesStore` takes its arguments in one order:
devices, the ids of what is asked for (points, events, attributes), start, end, then keywords.
Each id argument takes one id or a sequence of ids; ``None`` selects everything. This module
normalises those arguments, builds the SQL of time-bucket aggregations and turns fetched columns
into DataFrames. A query that finds nothing returns an empty DataFrame with the same columns.

Which names a query may use is the :class:`DeviceDirectory`'s to say: a store given one (a lab
with EnOS authentication gives its registry) refuses, with
:class:`~enos_lab.errors.NotFound`, a product or device that the directory does not know and of
which the store holds no data (a deleted device's history stays readable). A store without a
directory (a store of its own, or an anonymous lab, whose devices need no registration) accepts
every name.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import InvalidArgument
from ._rows import ValueKind, decode_json
from ._time import to_utc_index

__all__ = [
    "AGGREGATIONS",
    "DeviceDirectory",
    "Ids",
    "Source",
    "aggregate_sql",
    "check_aggregations",
    "check_source",
    "id_list",
    "json_objects",
    "utc_times",
    "value_frame",
    "where",
]

Ids = str | Sequence[str]
"""One id or a sequence of ids (device keys, point ids, event ids ...)."""

AGGREGATIONS: Final = ("avg", "min", "max", "sum", "count", "first", "last")
"""Aggregations accepted by :meth:`TimeSeriesStore.aggregate`."""


class Source(StrEnum):
    """Which series an aggregation reads."""

    RAW = "raw"
    """Raw measurepoints only."""
    ROLLUP = "rollup"
    """Downsampled series only (written by retention)."""
    ALL = "all"
    """Both: downsampled buckets for what retention removed, raw rows for the rest."""


class DeviceDirectory(Protocol):
    """The products and devices that exist besides those the store holds data of.

    :class:`~enos_lab.registry.Registry` is one; the lab gives its registry to its store unless
    it is anonymous. Both methods are called from the querying thread.
    """

    def find_product(self, product_key: str) -> object | None:
        """The product with this key, or ``None``."""

    def existing_device_keys(
        self, device_keys: Iterable[str], product_key: str | None = None
    ) -> set[str]:
        """The keys among ``device_keys`` of devices that exist (in ``product_key`` if given)."""


# ---------------------------------------------------------------------- arguments


def id_list(value: Ids | None, what: str) -> list[str] | None:
    """``value`` as a list of ids (``None`` stays ``None``: everything)."""
    if value is None:
        return None
    if isinstance(value, str):
        ids = [value]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | Mapping):
        ids = list(value)
    else:
        ids = []
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidArgument(
            f"expected one or more non-empty strings for {what}, got {value!r} (queries take "
            "devices, ids, start, end in this order; pass times as start=..., end=...)"
        )
    return ids


def check_aggregations(value: str | Sequence[str]) -> list[str]:
    """``value`` as a list of distinct aggregations among :data:`AGGREGATIONS`."""
    aggs = [value] if isinstance(value, str) else list(value)
    bad = [a for a in aggs if a not in AGGREGATIONS]
    if bad or not aggs:
        raise InvalidArgument(f"expected aggregations among {list(AGGREGATIONS)}, got {value!r}")
    return list(dict.fromkeys(aggs))


def check_source(value: Source | str) -> Source:
    """``value`` as a :class:`Source`."""
    try:
        return Source(value)
    except ValueError as exc:
        raise InvalidArgument(
            f"expected source in {[s.value for s in Source]}, got {value!r}"
        ) from exc


def where(
    time_column: str, lo: int, hi: int, **filters: Collection[str] | None
) -> tuple[str, dict[str, Any]]:
    """A WHERE clause (and its named parameters) for ``lo <= time_column < hi`` and, for each
    filter that is not ``None``, ``column IN values`` (columns are named by code, never by
    callers)."""
    clauses = [f"{time_column} >= $lo AND {time_column} < $hi"]
    params: dict[str, Any] = {"lo": lo, "hi": hi}
    for column, values in filters.items():
        if values is not None:
            clauses.append(f"{column} IN (SELECT unnest(${column}::VARCHAR[]))")
            params[column] = list(values)
    return " AND ".join(clauses), params


# ---------------------------------------------------------------------- aggregation SQL

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


def aggregate_sql(aggs: Sequence[str], width: int, lo: int, src: Source, fleet: bool) -> str:
    """The SQL of :meth:`TimeSeriesStore.aggregate` over the series ``$sids`` in
    ``[$lo, $hi)``, buckets ``width`` ms wide; its result has a ``bucket_ms`` column."""
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
        return f"""
            WITH comb AS (SELECT series_id, {bucket} AS bucket_ms, {direct} {raw_rows}
                          GROUP BY ALL)
            SELECT s.product_key, s.device_key, s.point_id, bucket_ms, {names}
            FROM comb JOIN series s USING (series_id)
            ORDER BY s.product_key, s.device_key, s.point_id, bucket_ms"""
    # Partial aggregates per (series, bucket) from raw rows and/or rollups, combined.
    stage1: list[str] = []
    if src is not Source.ROLLUP:
        cols = ", ".join(f"{_PARTIALS[p][0]} AS {p}" for p in partials)
        stage1.append(f"SELECT series_id, {bucket} AS bucket_ms, {cols} {raw_rows} GROUP BY ALL")
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
        return f"""
            WITH part AS ({union}),
            comb AS (SELECT s.point_id, bucket_ms, {combined}
                     FROM part JOIN series s USING (series_id) GROUP BY ALL)
            SELECT point_id, bucket_ms, {finals} FROM comb ORDER BY point_id, bucket_ms"""
    return f"""
        WITH part AS ({union}),
        comb AS (SELECT series_id, bucket_ms, {combined} FROM part GROUP BY ALL)
        SELECT s.product_key, s.device_key, s.point_id, bucket_ms, {finals}
        FROM comb JOIN series s USING (series_id)
        ORDER BY s.product_key, s.device_key, s.point_id, bucket_ms"""


# ---------------------------------------------------------------------- DataFrames


def json_objects(column: pd.Series) -> list[Any]:
    """Decode a column of JSON text (NULL: ``None``)."""
    return [decode_json(v) if isinstance(v, str) else None for v in column]


def utc_times(frame: pd.DataFrame, renames: dict[str, str]) -> pd.DataFrame:
    """Turn the epoch-ms columns named in ``renames`` into tz-aware UTC times, renamed."""
    for col in renames:
        values = frame[col]
        if values.isna().any():
            frame[col] = pd.to_datetime(values.astype("Float64"), unit="ms", utc=True)
        else:
            frame[col] = to_utc_index(values.to_numpy(dtype=np.int64))
    return frame.rename(columns=renames)


def value_frame(raw: dict[str, Any]) -> pd.DataFrame:
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
