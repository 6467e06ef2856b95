"""Injectable clocks.

Core code never reads the wall clock directly: it asks a :class:`Clock`. :class:`SystemClock` is
the real one; :class:`SimulatedClock` only moves when told to, so that tests and simulations can
run days in seconds, deterministically.

Both give tz-aware UTC datetimes (``now()``), epoch milliseconds (``time_ms()``, the EnOS wire
format) and a monotonic reading in seconds (``monotonic()``, for timeouts and rates).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from .errors import InvalidArgument

__all__ = ["Clock", "SimulatedClock", "SystemClock", "from_epoch_ms", "to_epoch_ms"]


def from_epoch_ms(ms: int | float) -> datetime:
    """Convert epoch milliseconds (the EnOS wire format) to a tz-aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def to_epoch_ms(moment: datetime) -> int:
    """Convert a tz-aware datetime to epoch milliseconds; naive datetimes are refused."""
    if moment.tzinfo is None:
        raise InvalidArgument(f"expected a tz-aware datetime, got naive {moment!r}")
    return round(moment.timestamp() * 1000)


@runtime_checkable
class Clock(Protocol):
    """What core code may ask about time."""

    def now(self) -> datetime:
        """The current time as a tz-aware UTC datetime."""
        ...

    def time_ms(self) -> int:
        """The current time in epoch milliseconds. [ms]"""
        ...

    def monotonic(self) -> float:
        """A reading that never goes backwards, for measuring intervals. [s]"""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time as a tz-aware UTC datetime."""
        return datetime.now(UTC)

    def time_ms(self) -> int:
        """The current time in epoch milliseconds. [ms]"""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """``time.monotonic()``. [s]"""
        return time.monotonic()


class SimulatedClock:
    """A clock that moves only when :meth:`advance` or :meth:`set` is called.

    ``start`` is the initial time (tz-aware; defaults to 2024-01-01T00:00Z).
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2024, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise InvalidArgument(f"start must be tz-aware, got naive {start!r}")
        self._now = start.astimezone(UTC)
        self._monotonic = 0.0

    def now(self) -> datetime:
        """The simulated time as a tz-aware UTC datetime."""
        return self._now

    def time_ms(self) -> int:
        """The simulated time in epoch milliseconds. [ms]"""
        return to_epoch_ms(self._now)

    def monotonic(self) -> float:
        """Seconds advanced since construction. [s]"""
        return self._monotonic

    def advance(self, seconds: float | timedelta) -> None:
        """Move the clock forward; negative steps are refused."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if step < 0:
            raise InvalidArgument(f"a clock cannot go backwards: advance({seconds!r})")
        self._now += timedelta(seconds=step)
        self._monotonic += step

    def set(self, moment: datetime) -> None:
        """Jump forward to ``moment`` (tz-aware, not earlier than now)."""
        if moment.tzinfo is None:
            raise InvalidArgument(f"expected a tz-aware datetime, got naive {moment!r}")
        self.advance(moment - self._now)
