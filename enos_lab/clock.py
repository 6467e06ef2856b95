"""Injectable clocks, which can also schedule.

Core code never reads the wall clock directly: it asks a :class:`Clock`. :class:`SystemClock` is
the real one; :class:`SimulatedClock` only moves when told to, so that tests and simulations can
run days in seconds, deterministically.

Both give tz-aware UTC datetimes (``now()``), epoch milliseconds (``time_ms()``, the EnOS wire
format) and a monotonic reading in seconds (``monotonic()``, for timeouts and rates), and both
schedule on the running asyncio event loop: ``call_at(when, callback)`` (``when`` on the
``monotonic()`` scale), ``await sleep(seconds)`` and ``await wait_for(awaitable, timeout)``.
:class:`DeadlineTimer` keeps one timer armed at a deadline in epoch milliseconds (an engine's
earliest), on either clock.

Theory of operation (simulated timers)
--------------------------------------
A :class:`SimulatedClock` keeps its timers in a heap ordered by due time. Nothing fires until
the clock is moved: :meth:`SimulatedClock.advance` (from any thread but the event loop's, e.g.
a notebook cell driving a lab whose loop runs in a background thread) and
:meth:`SimulatedClock.advance_async` (awaited on the event loop itself) step through the due
timers in order. For each one the clock first jumps to the timer's due time, then runs the
callback on the timer's loop and lets that loop run what the callback woke up
(``SETTLE_ROUNDS`` passes of the loop), and only then goes on to the next timer. So a
keep-alive check due at 90 s, an activation re-send due at 92 s and a command timeout due at
120 s run in that order, each seeing its own time, when the clock is advanced by an hour.
Timers whose loop has stopped are dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import InvalidArgument

__all__ = [
    "SETTLE_ROUNDS",
    "Clock",
    "DeadlineTimer",
    "SimulatedClock",
    "SystemClock",
    "TimerHandle",
    "from_epoch_ms",
    "to_epoch_ms",
]

T = TypeVar("T")

SETTLE_ROUNDS = 8
"""Passes of the event loop a simulated timer's loop gets after its callback ran, so that what
the callback woke up runs at the timer's time, before the clock moves on."""


def from_epoch_ms(ms: int | float) -> datetime:
    """Convert epoch milliseconds (the EnOS wire format) to a tz-aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def to_epoch_ms(moment: datetime) -> int:
    """Convert a tz-aware datetime to epoch milliseconds; naive datetimes are refused."""
    if moment.tzinfo is None:
        raise InvalidArgument(f"expected a tz-aware datetime, got naive {moment!r}")
    return round(moment.timestamp() * 1000)


class TimerHandle(Protocol):
    """A scheduled call (:meth:`Clock.call_at`) that can be cancelled."""

    def cancel(self) -> None:
        """Do not run the callback (no effect once it has run)."""
        ...


@runtime_checkable
class Clock(Protocol):
    """What core code may ask about time, and how it waits."""

    def now(self) -> datetime:
        """The current time as a tz-aware UTC datetime."""
        ...

    def time_ms(self) -> int:
        """The current time in epoch milliseconds. [ms]"""
        ...

    def monotonic(self) -> float:
        """A reading that never goes backwards, for measuring intervals. [s]"""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Call ``callback`` on the running event loop once :meth:`monotonic` reaches ``when``.

        Must be called from a coroutine or callback running on that loop. [s]
        """
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time. [s]"""
        ...

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        """Await ``aw``; cancel it and raise :class:`TimeoutError` after ``timeout``. [s]"""
        ...


class SystemClock:
    """The real clock: the system time, ``time.monotonic()`` and asyncio's own timers.

    ``monotonic`` is ``time.monotonic`` itself, so code that reads it for every message pays
    no more than a direct call.
    """

    monotonic = staticmethod(time.monotonic)

    def now(self) -> datetime:
        """The current time as a tz-aware UTC datetime."""
        return datetime.now(UTC)

    def time_ms(self) -> int:
        """The current time in epoch milliseconds. [ms]"""
        return time.time_ns() // 1_000_000

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """``loop.call_later`` on the running loop, ``when`` on the ``time.monotonic()`` scale."""
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.monotonic()), callback)

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``. [s]"""
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        """``asyncio.wait_for``. [s]"""
        return await asyncio.wait_for(aw, timeout)


class _Timer:
    """A timer of a :class:`SimulatedClock`."""

    __slots__ = ("callback", "cancelled", "loop", "when")

    def __init__(
        self, when: float, callback: Callable[[], object], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.when = when
        self.callback = callback
        self.loop = loop
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimulatedClock:
    """A clock that moves only when :meth:`advance` (or :meth:`advance_async`, :meth:`set`) is
    called, and fires its timers then, in order (see the module docstring).

    ``start`` is the initial time (tz-aware; defaults to 2024-01-01T00:00Z). Thread-safe: timers
    are set on event loops, the clock is advanced from any thread.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2024, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise InvalidArgument(f"start must be tz-aware, got naive {start!r}")
        self._now = start.astimezone(UTC)
        self._monotonic = 0.0
        self._lock = threading.RLock()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """The simulated time as a tz-aware UTC datetime."""
        return self._now

    def time_ms(self) -> int:
        """The simulated time in epoch milliseconds. [ms]"""
        return to_epoch_ms(self._now)

    def monotonic(self) -> float:
        """Seconds advanced since construction. [s]"""
        return self._monotonic

    @property
    def pending(self) -> int:
        """Timers not yet fired nor cancelled."""
        with self._lock:
            return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    @property
    def next_due(self) -> float | None:
        """When the earliest timer not yet fired nor cancelled is due, on the
        :meth:`monotonic` scale (``None``: no timer), so that a driver can step the clock
        from one due time to the next and let what each woke up finish in between. [s]"""
        with self._lock:
            timers = self._timers
            while timers and timers[0][2].cancelled:
                heapq.heappop(timers)
            return timers[0][0] if timers else None

    # -- scheduling --------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Call ``callback`` on the running event loop once the clock reaches ``when``; a time
        already reached runs it soon (``loop.call_soon``). [s]"""
        loop = asyncio.get_running_loop()
        timer = _Timer(when, callback, loop)
        with self._lock:
            if when <= self._monotonic:
                loop.call_soon(_run, timer)
            else:
                heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``. [s]"""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_at(self._monotonic + seconds, lambda: _resolve(future))
        try:
            await future
        finally:
            timer.cancel()

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        """Await ``aw``; when the clock passes ``timeout`` first, cancel it and raise
        :class:`TimeoutError`. [s]"""
        task = asyncio.ensure_future(aw)
        expired = False

        def expire() -> None:
            nonlocal expired
            if not task.done():
                expired = True
                task.cancel()

        timer = self.call_at(self._monotonic + max(0.0, timeout), expire)
        try:
            return await task
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError(f"no result within {timeout} s of simulated time") from None
            raise
        finally:
            timer.cancel()

    # -- moving the clock ----------------------------------------------------------------------

    def advance(self, seconds: float | timedelta) -> None:
        """Move the clock forward, firing the timers that fall due on the way, in order.

        Called from any thread but the one running the timers' event loop (for instance a
        notebook cell, with the lab's loop in its background thread): each due timer runs on
        its loop, and this returns once all have run. On the loop itself, use
        :meth:`advance_async`. Negative steps are refused.
        """
        target = self._monotonic + _step(seconds)
        for timer in self._due(target):
            loop = timer.loop
            if _running_here(loop):
                raise InvalidArgument(
                    "SimulatedClock.advance() called on the event loop its timers run on: "
                    "use `await clock.advance_async(...)` there"
                )
            if loop.is_closed() or not loop.is_running():
                continue  # that loop has stopped: nothing can run the timer
            asyncio.run_coroutine_threadsafe(_fire(timer), loop).result()
        self._move_to(target)

    async def advance_async(self, seconds: float | timedelta) -> None:
        """:meth:`advance` for code running on the event loop: the due timers of this loop run
        here, in order, each followed by ``SETTLE_ROUNDS`` passes of the loop."""
        target = self._monotonic + _step(seconds)
        for timer in self._due(target):
            loop = timer.loop
            if _running_here(loop):
                await _fire(timer)
            elif not loop.is_closed() and loop.is_running():
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_fire(timer), loop))
        self._move_to(target)

    def set(self, moment: datetime) -> None:
        """Jump forward to ``moment`` (tz-aware, not earlier than now), firing due timers."""
        if moment.tzinfo is None:
            raise InvalidArgument(f"expected a tz-aware datetime, got naive {moment!r}")
        self.advance(moment - self._now)

    def _due(self, target: float) -> Iterator[_Timer]:
        """Pop, one at a time, each timer due at or before ``target``, moving the clock to its
        time (a timer that runs may set new ones: they are popped in their turn)."""
        while True:
            with self._lock:
                timers = self._timers
                while timers and timers[0][2].cancelled:
                    heapq.heappop(timers)
                if not timers or timers[0][0] > target:
                    return
                when, _, timer = heapq.heappop(timers)
                self._move_to(when)
            yield timer

    def _move_to(self, monotonic: float) -> None:
        with self._lock:
            if monotonic > self._monotonic:
                self._now += timedelta(seconds=monotonic - self._monotonic)
                self._monotonic = monotonic


class DeadlineTimer:
    """One timer that calls ``callback()`` once ``clock``'s time reaches a deadline given in
    epoch milliseconds: what an engine with many deadlines keeps armed at the earliest one.

    :meth:`arm` (re-)arms it (the same deadline again changes nothing; ``None`` disarms it),
    :meth:`cancel` disarms it, :attr:`due_ms` is the deadline armed (None: none, and also
    while the callback runs). Use it on the loop the clock's timers run on.
    """

    __slots__ = ("_callback", "_clock", "_handle", "due_ms")

    def __init__(self, clock: Clock, callback: Callable[[], object]) -> None:
        self._clock = clock
        self._callback = callback
        self._handle: TimerHandle | None = None
        self.due_ms: int | None = None
        """The deadline armed. [ms since the epoch]"""

    def arm(self, due_ms: int | None) -> None:
        """Fire at ``due_ms`` [ms since the epoch] (at once if it has passed) instead of any
        deadline armed before; ``None``: not at all."""
        if due_ms == self.due_ms:
            return
        self.cancel()
        self.due_ms = due_ms
        if due_ms is not None:
            delay = max(0, due_ms - self._clock.time_ms()) / 1000
            self._handle = self._clock.call_at(self._clock.monotonic() + delay, self._fire)

    def cancel(self) -> None:
        """Disarm it (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.due_ms = None

    def _fire(self) -> None:
        self._handle = None
        self.due_ms = None
        self._callback()


def _step(seconds: float | timedelta) -> float:
    step = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
    if step < 0:
        raise InvalidArgument(f"a clock cannot go backwards: advance({seconds!r})")
    return step


def _running_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _run(timer: _Timer) -> None:
    if not timer.cancelled:
        timer.cancelled = True  # runs once
        timer.callback()


async def _fire(timer: _Timer) -> None:
    """Run ``timer`` on its loop, then let the loop run what it woke up."""
    _run(timer)
    for _ in range(SETTLE_ROUNDS):
        await asyncio.sleep(0)


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
