"""Windows over a whole DataFrame at once: the backtest's and replay's way.

Each point is repeated once per window holding it (``size / step`` times), then grouped by key
and window start with pandas: the same windows, duplicate policy (last wins) and tie order as
:class:`~enos_lab.streams.Windower`, which gives the same results for data in event-time order
(the property tests prove it). No point is late here: the whole frame is known.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InvalidArgument
from ._window import ACROSS, Aggregate, Derived, Window

__all__ = ["COLUMNS", "to_frame", "window_frame"]

COLUMNS = ("key", "point_id", "start", "time", "value", "count")
"""The columns of a frame of derived points: ``start``/``time`` are tz-aware UTC (the window's
start and end; ``time`` is the derived point's event time)."""


def _utc(ms: np.ndarray[Any, Any]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True))


def to_frame(derived: Iterable[Derived]) -> pd.DataFrame:
    """Derived points as a DataFrame with :data:`COLUMNS`, in the order given."""
    rows = list(derived)
    starts = np.array([d.start_ms for d in rows], dtype="int64")
    ends = np.array([d.time_ms for d in rows], dtype="int64")
    keys = np.empty(len(rows), dtype=object)
    keys[:] = [d.key for d in rows]
    return pd.DataFrame(
        {
            "key": keys,
            "point_id": pd.Series([d.point_id for d in rows], dtype=object),
            "start": _utc(starts),
            "time": _utc(ends),
            "value": pd.Series([d.value for d in rows], dtype=None if rows else object),
            "count": pd.Series([d.count for d in rows], dtype="int64"),
        }
    )


def _times_ms(column: pd.Series[Any], name: str) -> np.ndarray[Any, Any]:
    """A column of event times (tz-aware datetimes, or ints in epoch ms) as int64 ms."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return np.asarray(column.dt.tz_convert("UTC").astype("datetime64[ms, UTC]").astype("int64"))
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype="int64")
    raise InvalidArgument(
        f"column {name!r} must hold tz-aware datetimes or ints (epoch ms), not {column.dtype}"
    )


def _objects(values: Iterable[Hashable], n: int) -> np.ndarray[Any, Any]:
    out = np.empty(n, dtype=object)
    out[:] = list(values)
    return out


def window_frame(
    frame: pd.DataFrame,
    window: Window,
    aggregate: Aggregate | str,
    *,
    point_id: str,
    key: Callable[[Any], Hashable] | None = None,
    across: Aggregate | str | None = None,
    source: str = "source",
    time: str = "time",
    value: str = "value",
) -> pd.DataFrame:
    """The derived points of every window holding a point of ``frame`` (one row per point:
    columns ``source``, ``time`` and ``value``, names configurable), as a frame with
    :data:`COLUMNS` ordered by end, then by key in order of first appearance.

    The parameters mean what :class:`~enos_lab.streams.Windower`'s do. Rows whose value is
    null or not finite are dropped; of rows with the same source and time the last wins.
    """
    if not isinstance(window, Window):
        raise InvalidArgument(f"window must be a Window, not {window!r}")
    agg = Aggregate.parse(aggregate)
    over = None if across is None else Aggregate.parse(across, "across")
    if over is not None and over not in ACROSS:
        names = ", ".join(sorted(a.value for a in ACROSS))
        raise InvalidArgument(f"across must be one of {names}, not {across!r}")
    for name in (source, time, value):
        if name not in frame.columns:
            raise InvalidArgument(f"frame has no column {name!r} (columns: {list(frame.columns)})")
    values = frame[value]
    if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
        raise InvalidArgument(f"column {value!r} must be numeric, not {values.dtype}")
    t = _times_ms(frame[time], time)
    v = values.to_numpy()
    src = frame[source].to_numpy(dtype=object)
    valid = np.isfinite(v.astype("float64"))
    t, v, src = t[valid], v[valid], src[valid]
    # per distinct device (not per row): its code, its key's code, its rank by text form
    source_codes, sources = pd.factorize(src)
    texts = np.array([str(s) for s in sources], dtype=object)
    rank = np.empty(len(sources), dtype="int64")
    rank[np.argsort(texts, kind="stable")] = np.arange(len(sources))
    # event-time order; ties between devices by their text form (as the windower); one
    # device's rows at the same time stay in arrival order, adjacent
    order = np.lexsort((np.arange(len(t)), source_codes, rank[source_codes], t))
    t, v, source_codes = t[order], v[order], source_codes[order]
    last = np.ones(len(t), dtype=bool)  # duplicates: the last of a device's rows at a time wins
    last[:-1] = (t[1:] != t[:-1]) | (source_codes[1:] != source_codes[:-1])
    t, v, source_codes = t[last], v[last], source_codes[last]
    if key is None:
        key_of_source = np.arange(len(sources))
        keys = _objects(sources, len(sources))
    else:
        key_of_source, keys = pd.factorize(_objects((key(s) for s in sources), len(sources)))
    # keys numbered in order of first appearance in event time
    key_codes, first_seen = pd.factorize(key_of_source[source_codes])
    key_values = _objects(keys[first_seen], len(first_seen))
    n = len(t)
    step, panes = window.step_ms, window.panes
    pane = t - np.mod(t, step)
    rows = np.repeat(np.arange(n), panes)
    start = pane[rows] - np.tile(np.arange(panes, dtype="int64"), n) * step
    values_in = pd.Series(v[rows])  # each point once per window holding it
    if over is None:
        grouped = values_in.groupby([key_codes[rows], start], sort=True)
        result = _aggregate(grouped, agg)
        counts = grouped.size()
    else:
        per_source = values_in.groupby([key_codes[rows], start, source_codes[rows]], sort=True)
        inner = _aggregate(per_source, agg)
        result = _aggregate(inner.groupby(level=[0, 1], sort=True), over)
        counts = per_source.size().groupby(level=[0, 1], sort=True).sum()
    codes = result.index.get_level_values(0).to_numpy(dtype="int64")
    starts = result.index.get_level_values(1).to_numpy(dtype="int64")
    ends = starts + window.size_ms
    by_end = np.lexsort((codes, ends))
    return pd.DataFrame(
        {
            "key": _objects(key_values[codes[by_end]], len(by_end)),
            "point_id": pd.Series([point_id] * len(by_end), dtype=object),
            "start": _utc(starts[by_end]),
            "time": _utc(ends[by_end]),
            "value": result.to_numpy()[by_end],
            "count": counts.to_numpy(dtype="int64")[by_end],
        }
    )


def _aggregate(grouped: Any, aggregate: Aggregate) -> pd.Series[Any]:
    """``aggregate`` of each group of a (time-ordered) grouped series."""
    if aggregate is Aggregate.DELTA:
        return grouped.last() - grouped.first()  # type: ignore[no-any-return]
    name = {Aggregate.AVG: "mean", Aggregate.COUNT: "size"}.get(aggregate, aggregate.value)
    return getattr(grouped, name)()  # type: ignore[no-any-return]
