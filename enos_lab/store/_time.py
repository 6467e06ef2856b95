"""Time arguments of queries: instants, ranges and bucket intervals, all in epoch ms."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..clock import to_epoch_ms
from ..errors import InvalidArgument

__all__ = [
    "MAX_EVENT_MS",
    "MAX_MS",
    "MIN_EVENT_MS",
    "MIN_MS",
    "TimeLike",
    "as_ms",
    "ms_range",
    "parse_interval",
    "to_utc_index",
]

TimeLike = datetime | int | str
"""An instant: tz-aware datetime (or pandas Timestamp), epoch ms integer, or ISO-8601 text
with an offset."""

MIN_MS = -(2**62)
"""Lower bound of an open range. [ms]"""
MAX_MS = 2**62
"""Upper bound of an open range. [ms]"""

MIN_EVENT_MS = -9_223_372_036_854
"""Earliest event time the store keeps: 1677-09-21T00:12:43.146Z, the first whole millisecond
that pandas' nanosecond timestamps represent. [ms]"""
MAX_EVENT_MS = 9_223_372_036_854
"""Latest event time the store keeps: 2262-04-11T23:47:16.854Z, the last whole millisecond that
pandas' nanosecond timestamps represent. [ms]"""


def as_ms(moment: TimeLike, name: str = "time") -> int:
    """Convert ``moment`` to epoch ms; naive datetimes and unparsable text are refused."""
    if isinstance(moment, bool):
        raise InvalidArgument(f"expected a time for {name}, got {moment!r}")
    if isinstance(moment, int | np.integer):
        return int(moment)
    if isinstance(moment, str):
        try:
            moment = pd.Timestamp(moment)
        except ValueError as exc:
            raise InvalidArgument(f"expected an ISO-8601 time for {name}, got {moment!r}") from exc
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise InvalidArgument(f"expected a tz-aware time for {name}, got naive {moment!r}")
        return to_epoch_ms(moment)
    raise InvalidArgument(f"expected a datetime or epoch ms for {name}, got {moment!r}")


def ms_range(start: TimeLike | None, end: TimeLike | None) -> tuple[int, int]:
    """The half-open range ``[start, end)`` in epoch ms; None leaves that side open."""
    lo = MIN_MS if start is None else as_ms(start, "start")
    hi = MAX_MS if end is None else as_ms(end, "end")
    if lo > hi:
        raise InvalidArgument(f"expected start <= end, got start={start!r} after end={end!r}")
    return lo, hi


def parse_interval(interval: str | timedelta) -> int:
    """A bucket width such as ``"1min"``, ``"15min"``, ``"1h"``, ``"1D"`` in whole ms."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated aliases ("1H") still mean one thing
            width = pd.Timedelta(interval)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"expected a fixed interval like '1min', '15min', '1h' or '1D', got {interval!r}"
        ) from exc
    ns = int(width.value)
    if ns <= 0 or ns % 1_000_000:
        raise InvalidArgument(
            f"expected a positive interval of whole milliseconds, got {interval!r}"
        )
    return ns // 1_000_000


def to_utc_index(ms: npt.ArrayLike) -> pd.DatetimeIndex:
    """Epoch ms to a tz-aware UTC DatetimeIndex."""
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True))
