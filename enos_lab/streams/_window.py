"""Window shapes, aggregates and derived points: the values both windowers share.

A window is the half-open interval ``[start, end)`` of event time in epoch milliseconds, with
``end = start + size``. Windows are aligned to the epoch (UTC): their starts are the multiples
of the step. A tumbling window's step is its size; a sliding window's step divides its size, so
every window is a run of ``size / step`` whole *panes* (``[p, p + step)``), and a point lies in
exactly ``size / step`` windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from ..errors import InvalidArgument

__all__ = ["ACROSS", "Aggregate", "Derived", "Window", "aggregate_values"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Aggregate(Enum):
    """What a window computes from the values in it (ordered by event time)."""

    AVG = "avg"
    """The arithmetic mean (a float)."""
    MIN = "min"
    """The smallest value."""
    MAX = "max"
    """The largest value."""
    SUM = "sum"
    """The sum of the values."""
    COUNT = "count"
    """How many values (an int)."""
    FIRST = "first"
    """The value with the earliest event time."""
    LAST = "last"
    """The value with the latest event time."""
    DELTA = "delta"
    """The last value minus the first (0 for a single value): growth of a counter."""

    @classmethod
    def parse(cls, value: Aggregate | str, what: str = "aggregate") -> Aggregate:
        """``value`` as an :class:`Aggregate` (its name in any case, e.g. ``"avg"``); a bad one
        raises :class:`~enos_lab.errors.InvalidArgument` naming ``what``."""
        if isinstance(value, Aggregate):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        names = ", ".join(a.value for a in cls)
        raise InvalidArgument(f"{what} must be one of {names}, not {value!r}")


ACROSS = frozenset({Aggregate.AVG, Aggregate.MIN, Aggregate.MAX, Aggregate.SUM, Aggregate.COUNT})
"""The aggregates that may combine the per-device results of a group (``across=``)."""


def aggregate_values(aggregate: Aggregate, values: Sequence[Any]) -> Any:
    """``aggregate`` of ``values`` (non-empty, already in event-time order). [the values' unit]"""
    if aggregate is Aggregate.AVG:
        return math.fsum(values) / len(values)
    if aggregate is Aggregate.MIN:
        return min(values)
    if aggregate is Aggregate.MAX:
        return max(values)
    if aggregate is Aggregate.SUM:
        return sum(values)
    if aggregate is Aggregate.COUNT:
        return len(values)
    if aggregate is Aggregate.FIRST:
        return values[0]
    if aggregate is Aggregate.LAST:
        return values[-1]
    return values[-1] - values[0]  # DELTA


def _duration_ms(value: object, what: str) -> int:
    """``value`` (seconds as an int or float, or a timedelta) in whole milliseconds; it must
    be finite, >= 0 and a whole number of milliseconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgument(f"{what} must be seconds (a number) or a timedelta, not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"{what} must be a finite duration >= 0, not {value!r}")
    ms = round(seconds * 1000)
    if abs(ms - seconds * 1000) > 1e-6 * max(1.0, abs(ms)):
        raise InvalidArgument(f"{what} must be a whole number of milliseconds, not {value!r}")
    return ms


@dataclass(frozen=True)
class Window:
    """A window shape: ``size_ms`` long, a new one every ``step_ms`` (both in event time,
    aligned to the epoch). Make one with :meth:`tumbling` or :meth:`sliding`."""

    size_ms: int
    """How long each window is. [ms]"""
    step_ms: int
    """How far apart window starts are; divides ``size_ms``. [ms]"""

    def __post_init__(self) -> None:
        for name in ("size_ms", "step_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidArgument(f"Window.{name} must be an int > 0, not {value!r}")
        if self.size_ms % self.step_ms:
            raise InvalidArgument(
                f"a window's step must divide its size: size {self.size_ms} ms, "
                f"step {self.step_ms} ms"
            )

    @classmethod
    def tumbling(cls, size: float | timedelta) -> Window:
        """Back-to-back windows of ``size``: every point is in exactly one. [s]"""
        ms = _duration_ms(size, "window size")
        if ms == 0:
            raise InvalidArgument("window size must be > 0")
        return cls(ms, ms)

    @classmethod
    def sliding(cls, size: float | timedelta, step: float | timedelta) -> Window:
        """Windows of ``size`` starting every ``step`` (``step`` divides ``size``): every
        point is in ``size / step`` of them. [s]"""
        size_ms = _duration_ms(size, "window size")
        step_ms = _duration_ms(step, "window step")
        if size_ms == 0 or step_ms == 0:
            raise InvalidArgument(f"window size and step must be > 0, not {size!r}, {step!r}")
        if step_ms > size_ms:
            raise InvalidArgument(
                f"a sliding window's step must not exceed its size: size {size!r}, step {step!r}"
            )
        return cls(size_ms, step_ms)

    @property
    def panes(self) -> int:
        """How many windows each point is in (``size / step``)."""
        return self.size_ms // self.step_ms

    def pane(self, time_ms: int) -> int:
        """Start of the pane (and of the latest window) holding ``time_ms``. [ms]"""
        return time_ms - time_ms % self.step_ms

    def starts(self, time_ms: int) -> range:
        """Starts of the windows holding ``time_ms``, earliest first. [ms]"""
        last = self.pane(time_ms)
        return range(last - self.size_ms + self.step_ms, last + 1, self.step_ms)


@dataclass(frozen=True, slots=True)
class Derived:
    """A derived point: the result of one closed window for one key."""

    key: Any
    """The key: the device (its source), or the group the key function gave."""
    point_id: str
    """The derived measurepoint's id."""
    time_ms: int
    """The window's end (exclusive), the derived point's event time. [ms]"""
    start_ms: int
    """The window's start (inclusive). [ms]"""
    value: Any
    """The aggregate. [the source point's unit; count: 1]"""
    count: int
    """How many points went into it (all devices of a group)."""

    @property
    def time(self) -> datetime:
        """``time_ms`` as a tz-aware UTC datetime."""
        return _EPOCH + timedelta(milliseconds=self.time_ms)
