"""The incremental windower: points in, one at a time; derived points out when windows close.

Theory of operation. State is kept per *key* (the device, or its group): the watermark, and the
points of the panes that may still be in an open window, as ``pane start -> source -> time ->
value``. A point with a time before its key's watermark is late: counted and dropped. Otherwise
it is kept (a repeat of a source's time replaces the value: last wins, as in the store) and, if
it is the key's newest, moves the watermark to ``newest - lateness``; every window whose end the
watermark has reached closes, in order of end, and the panes no open window needs are dropped.
(A point dropped by the ``max_points`` bound still moves the watermark, so a full key drains.)
Keeping raw points instead of running sums is what makes "last wins" exact (a min cannot be
undone) and costs the points of ``size + lateness`` of event time per key, capped by
``max_points``. Pane starts lie in ``(watermark - size, watermark + lateness]``, so a key never
has more than ``(size + lateness) / step + 1`` open windows; the constructor refuses shapes over
``max_windows``.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..errors import InvalidArgument
from ._window import ACROSS, Aggregate, Derived, Window, _duration_ms, aggregate_values

__all__ = [
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_POINTS",
    "DEFAULT_MAX_WINDOWS",
    "StreamStats",
    "Windower",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_KEYS = 100_000
"""Most keys (devices or groups) a windower keeps state for; points of further keys are dropped."""
DEFAULT_MAX_POINTS = 100_000
"""Most points one key holds in its open windows; further points are dropped until some close."""
DEFAULT_MAX_WINDOWS = 10_000
"""Most open windows per key a window shape and lateness may imply (``(size + lateness) / step
+ 1``); a windower over it is refused when made."""


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What a windower did with the points it was given, for one key or all of them."""

    points: int = 0
    """Points taken into a window (a duplicate counts once)."""
    late: int = 0
    """Points older than the watermark: dropped."""
    duplicates: int = 0
    """Points at a time their source already had: the value replaced the earlier one."""
    invalid: int = 0
    """Points whose value is not a finite real number: dropped."""
    dropped: int = 0
    """Points dropped by a bound (``max_keys``, ``max_points``)."""
    emitted: int = 0
    """Derived points emitted."""


class _Key:
    """The state of one key (see the module docstring)."""

    __slots__ = ("closed", "counts", "floor", "held", "newest", "panes")

    def __init__(self) -> None:
        self.newest: int | None = None  # newest event time taken [ms]
        self.floor: int | None = None  # watermark set by flush [ms]
        self.closed: int | None = None  # windows ending at or before this are emitted [ms]
        self.panes: dict[int, dict[Hashable, dict[int, Any]]] = {}
        self.held = 0  # points in panes
        self.counts = [0, 0, 0, 0, 0, 0]  # as StreamStats' fields


_POINTS, _LATE, _DUPLICATES, _INVALID, _DROPPED, _EMITTED = range(6)


def _valid(value: object) -> bool:
    """Whether ``value`` can be aggregated: a finite real number, not a bool."""
    kind = type(value)
    if kind is float:  # fast path for the usual values (an ABC check costs more than the rest)
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is int:  # and within float's range, as the ABC path's isfinite needs
        return -(2**1023) < value < 2**1023  # type: ignore[operator]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


class Windower:
    """Windowed aggregates of one point on event time, per device or per group.

    ``add(source, time_ms, value)`` takes one point of ``source`` (a device: any hashable,
    e.g. ``(product_key, device_key)``) and returns the :class:`Derived` points of the windows
    it closed. ``key`` maps a source to its key (default: the source itself, i.e. per device;
    ``lambda s: "fleet"``: one group). In a group, ``across`` says how the devices' results
    combine (e.g. ``aggregate="avg", across="sum"``: the sum of each device's average, the
    fleet's total power); without it the group's points are pooled (the average of all its
    points). ``lateness`` is how far behind its newest point a key still takes points. [s]
    """

    def __init__(
        self,
        window: Window,
        aggregate: Aggregate | str,
        *,
        point_id: str,
        key: Callable[[Any], Hashable] | None = None,
        across: Aggregate | str | None = None,
        lateness: float | timedelta = 0,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_points: int = DEFAULT_MAX_POINTS,
        max_windows: int = DEFAULT_MAX_WINDOWS,
    ) -> None:
        if not isinstance(window, Window):
            raise InvalidArgument(f"window must be a Window, not {window!r}")
        if not isinstance(point_id, str) or not point_id:
            raise InvalidArgument(f"point_id must be a non-empty string, not {point_id!r}")
        self._window = window
        self._aggregate = Aggregate.parse(aggregate)
        self._across = None if across is None else Aggregate.parse(across, "across")
        if self._across is not None and self._across not in ACROSS:
            names = ", ".join(sorted(a.value for a in ACROSS))
            raise InvalidArgument(f"across must be one of {names}, not {across!r}")
        self._point_id = point_id
        self._key = key
        self._lateness_ms = _duration_ms(lateness, "lateness")
        for name, bound in (("max_keys", max_keys), ("max_points", max_points)):
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
                raise InvalidArgument(f"{name} must be an int >= 1, not {bound!r}")
        open_windows = (window.size_ms + self._lateness_ms) // window.step_ms + 1
        if open_windows > max_windows:
            raise InvalidArgument(
                f"window {window.size_ms} ms every {window.step_ms} ms with lateness "
                f"{self._lateness_ms} ms keeps up to {open_windows} open windows per key, "
                f"more than max_windows={max_windows}"
            )
        self._max_keys = max_keys
        self._max_points = max_points
        self._keys: dict[Hashable, _Key] = {}
        self._counts = [0, 0, 0, 0, 0, 0]

    def __repr__(self) -> str:
        return (
            f"Windower(point_id={self._point_id!r}, aggregate={self._aggregate.value}, "
            f"size_ms={self._window.size_ms}, step_ms={self._window.step_ms}, "
            f"lateness_ms={self._lateness_ms}, keys={len(self._keys)})"
        )

    @property
    def window(self) -> Window:
        """The window shape."""
        return self._window

    @property
    def aggregate(self) -> Aggregate:
        """The aggregate of each device's (or the pooled group's) points."""
        return self._aggregate

    @property
    def across(self) -> Aggregate | None:
        """How a group combines its devices' results, or ``None`` (pooled points)."""
        return self._across

    @property
    def point_id(self) -> str:
        """The derived measurepoint's id."""
        return self._point_id

    @property
    def lateness_ms(self) -> int:
        """How far behind its newest point a key still takes points. [ms]"""
        return self._lateness_ms

    @property
    def stats(self) -> StreamStats:
        """Counters over all keys."""
        return StreamStats(*self._counts)

    def key_stats(self, key: Hashable) -> StreamStats:
        """Counters of one key (zeros for a key never seen)."""
        state = self._keys.get(key)
        return StreamStats(*state.counts) if state is not None else StreamStats()

    def keys(self) -> list[Hashable]:
        """The keys with state, in the order they were first seen."""
        return list(self._keys)

    def watermark(self, key: Hashable) -> int | None:
        """The key's watermark: points before it are late (``None``: nothing seen). [ms]"""
        state = self._keys.get(key)
        return None if state is None else self._watermark(state)

    def open_windows(self, key: Hashable) -> int:
        """How many windows of ``key`` hold points and have not closed."""
        state = self._keys.get(key)
        if state is None:
            return 0
        return len(self._pending_starts(state, None))

    def add(self, source: Hashable, time_ms: int, value: Any) -> list[Derived]:
        """Take one point of ``source`` at event time ``time_ms`` [ms]; return the derived
        points of the windows it closed (oldest first; usually none)."""
        if not isinstance(time_ms, int) or isinstance(time_ms, bool):
            raise InvalidArgument(f"time_ms must be an int (epoch milliseconds), not {time_ms!r}")
        key = source if self._key is None else self._key(source)
        state = self._keys.get(key)
        if state is None:
            if len(self._keys) >= self._max_keys:
                self._counts[_DROPPED] += 1
                log.debug("stream %s: key %r dropped: max_keys reached", self._point_id, key)
                return []
            state = self._keys[key] = _Key()
        if not _valid(value):
            self._count(state, _INVALID)
            return []
        mark = self._watermark(state)
        if mark is not None and time_ms < mark:
            self._count(state, _LATE)
            return []
        out: list[Derived] = []
        if state.newest is None or time_ms > state.newest:
            # the windows this closes end at or before the new watermark, so never hold this
            # point: close them first, which also makes room under max_points
            state.newest = time_ms
            out = self._close(key, state)
        pane = self._window.pane(time_ms)
        bucket = state.panes.get(pane, {}).get(source)
        if bucket is not None and time_ms in bucket:
            bucket[time_ms] = value  # last wins, as the store's duplicate policy
            self._count(state, _DUPLICATES)
        elif state.held >= self._max_points:
            self._count(state, _DROPPED)
        else:
            state.panes.setdefault(pane, {}).setdefault(source, {})[time_ms] = value
            state.held += 1
            self._count(state, _POINTS)
        return out

    def flush(self, until_ms: int | None = None) -> list[Derived]:
        """Close every window ending at or before ``until_ms`` (``None``: every window holding
        points), as if each key's watermark had reached it, and return their results ordered
        by end; later points before that are late. For the end of a replay or backtest. [ms]"""
        out: list[Derived] = []
        for key, state in self._keys.items():
            target = until_ms
            if target is None:
                if not state.panes:
                    continue
                target = max(state.panes) + self._window.size_ms
            mark = self._watermark(state)
            if mark is None or target > mark:
                state.floor = target
                out.extend(self._close(key, state))
        out.sort(key=lambda d: d.time_ms)  # stable: keys in the order first seen
        return out

    def extend(self, points: Iterable[tuple[Hashable, int, Any]]) -> list[Derived]:
        """:meth:`add` each ``(source, time_ms, value)`` in order; all the results."""
        out: list[Derived] = []
        for source, time_ms, value in points:
            out.extend(self.add(source, time_ms, value))
        return out

    # -- internals -------------------------------------------------------------------------

    def _count(self, state: _Key, field: int) -> None:
        state.counts[field] += 1
        self._counts[field] += 1

    def _watermark(self, state: _Key) -> int | None:
        mark = None if state.newest is None else state.newest - self._lateness_ms
        if state.floor is not None and (mark is None or state.floor > mark):
            mark = state.floor
        return mark

    def _pending_starts(self, state: _Key, until: int | None) -> list[int]:
        """Starts of the windows holding points, not yet closed, ending at or before
        ``until`` (``None``: any end), earliest first."""
        size = self._window.size_ms
        starts: set[int] = set()
        for pane in state.panes:
            for start in range(pane - size + self._window.step_ms, pane + 1, self._window.step_ms):
                end = start + size
                if state.closed is not None and end <= state.closed:
                    continue
                if until is None or end <= until:
                    starts.add(start)
        return sorted(starts)

    def _close(self, key: Hashable, state: _Key) -> list[Derived]:
        """Emit the windows of ``key`` that the watermark has reached; drop spent panes."""
        mark = self._watermark(state)
        if mark is None or (state.closed is not None and mark <= state.closed):
            return []
        step = self._window.step_ms
        if state.closed is not None and mark // step == state.closed // step:
            # window ends are multiples of the step: none lies in (closed, mark]
            state.closed = mark
            return []
        out = [self._result(key, state, start) for start in self._pending_starts(state, mark)]
        state.closed = mark
        size = self._window.size_ms
        for pane in [p for p in state.panes if p + size <= mark]:
            state.held -= sum(len(bucket) for bucket in state.panes.pop(pane).values())
        state.counts[_EMITTED] += len(out)
        self._counts[_EMITTED] += len(out)
        return out

    def _result(self, key: Hashable, state: _Key, start: int) -> Derived:
        """The derived point of the window starting at ``start``."""
        step = self._window.step_ms
        per_source: dict[Hashable, list[tuple[int, Any]]] = {}
        for pane in range(start, start + self._window.size_ms, step):
            for source, bucket in state.panes.get(pane, {}).items():
                per_source.setdefault(source, []).extend(bucket.items())
        count = sum(len(points) for points in per_source.values())
        if self._across is not None:
            results = [
                aggregate_values(self._aggregate, [v for _, v in sorted(points)])
                for points in per_source.values()
            ]
            value = aggregate_values(self._across, results)
        else:
            # ties in time between devices of a group: ordered by the device's text form
            pooled = sorted(
                (t, str(source), v) for source, points in per_source.items() for t, v in points
            )
            value = aggregate_values(self._aggregate, [v for _, _, v in pooled])
        return Derived(key, self._point_id, start + self._window.size_ms, start, value, count)
