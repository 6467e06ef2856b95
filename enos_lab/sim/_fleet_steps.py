"""Stepping a simulated clock for fleets: what is in flight, and when the clock may move.

Theory of operation
-------------------
On a :class:`~enos_lab.clock.SimulatedClock` a fleet's run moves the clock from one due timer to
the next (:attr:`SimulatedClock.next_due <enos_lab.clock.SimulatedClock.next_due>`) and, after
each step, waits until what the step started has ended: the posts it sent have their replies,
the logins it began are accepted or refused. Those happen in wall time (TCP, the hub, the store's
commit), so without the wait the clock would run ahead of them and their timeouts would fire
before their replies came.

Each fleet keeps an :class:`Activity`: its posts and logins in flight, each under the clock
time at which it times out. The fleets on one clock and event loop form a :class:`Cohort`, and
a step of any of them waits for all of theirs, so fleets sharing a lab's clock do not race each
other (a fleet that stops waits for its own only). The wait ends when nothing is in
flight, or after ``settle`` seconds of wall time (a post lost to a fault is answered by its
timeout only, which needs the clock to move). When a fleet connects through a link, which may
hold packets until the clock reaches a time (a delay, a reorder window), the wait also ends after
:data:`QUIET` without progress if the clock has a timer due before anything in flight times
out: moving the clock there releases the packets and cannot time out a post.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from datetime import datetime, timedelta
from typing import Any

from ..clock import Clock, SimulatedClock
from ..errors import InvalidArgument

__all__ = ["QUIET", "Activity", "Cohort", "cohort", "gap", "span_of", "step"]

log = logging.getLogger("enos_lab.sim")

QUIET = 0.05
"""Wall time without progress after which a step may move the clock to a timer due before
anything in flight times out (fleets with a link only). [s]"""

_COHORTS: weakref.WeakKeyDictionary[Any, dict[asyncio.AbstractEventLoop, Cohort]] = (
    weakref.WeakKeyDictionary()
)


class Cohort:
    """The fleets on one clock and event loop: their :class:`Activity` records, how many of
    them connect through a link, and one event set whenever something of theirs ends."""

    __slots__ = ("activities", "linked", "progress")

    def __init__(self) -> None:
        self.activities: set[Activity] = set()
        self.linked = 0
        self.progress = asyncio.Event()

    def join(self) -> Activity:
        """A new fleet's record."""
        record = Activity(self)
        self.activities.add(record)
        return record

    def busy(self) -> int:
        """What the fleets' steps wait for now."""
        return sum(a.busy for a in self.activities)

    def clock_first(self, clock: Clock) -> bool:
        """Whether ``clock`` has a timer due before anything in flight times out."""
        if not isinstance(clock, SimulatedClock):
            return False
        deadlines = [min(a.deadlines) for a in self.activities if a.deadlines]
        due = clock.next_due
        return bool(deadlines) and due is not None and due < min(deadlines)

    async def settle(self, clock: Clock, limit: float, only: Activity | None = None) -> None:
        """Wait until nothing of the cohort (or of ``only``) is waited for, at most ``limit``
        of wall time (see the module docstring). [s]"""
        progress = self.progress
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (pending := only.busy if only is not None else self.busy()) > 0:
            left = deadline - loop.time()
            if left <= 0:
                log.debug("fleet: %d posts or logins pending after %.1f s", pending, limit)
                return
            linked = self.linked > 0
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), min(left, QUIET) if linked else left)
            except TimeoutError:
                if linked and self.clock_first(clock):
                    return


class Activity:
    """The posts and logins in flight of one fleet: ``busy`` counts those its steps wait for,
    ``deadlines`` maps the clock time at which they time out to how many."""

    __slots__ = ("busy", "cohort", "deadlines")

    def __init__(self, cohort: Cohort) -> None:
        self.cohort = cohort
        self.busy = 0
        self.deadlines: dict[float, int] = {}

    def begin(self, deadline: float, waited: bool) -> None:
        """Something in flight times out at ``deadline`` (clock) and is ``waited`` for. [s]"""
        self.deadlines[deadline] = self.deadlines.get(deadline, 0) + 1
        if waited:
            self.busy += 1

    def end(self, deadline: float, waited: bool) -> None:
        """What :meth:`begin` filed under ``deadline`` ended (``waited``: still waited for)."""
        left = self.deadlines[deadline] - 1
        if left:
            self.deadlines[deadline] = left
        else:
            del self.deadlines[deadline]
        if waited:
            self.release(1)

    def release(self, count: int) -> None:
        """Stop waiting for ``count`` things in flight."""
        if count:
            self.busy -= count
            self.cohort.progress.set()

    def leave(self) -> None:
        """The fleet stopped."""
        self.cohort.activities.discard(self)


def cohort(clock: Clock) -> Cohort:
    """The :class:`Cohort` of the fleets on ``clock`` and the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _COHORTS.setdefault(clock, {})
    for other in [lp for lp in per_loop if lp.is_closed()]:
        del per_loop[other]
    found = per_loop.get(loop)
    if found is None:
        found = per_loop[loop] = Cohort()
    return found


async def step(  # noqa: PLR0917
    clock: SimulatedClock,
    span: float,
    shared: Cohort,
    settle: float,
    bar: Any,
    stopped: asyncio.Event,
) -> int:
    """Step ``clock`` from due timer to due timer for ``span`` seconds, settling ``shared``
    (at most ``settle`` of wall time) after each; ``bar`` shows the time covered. Returns the
    steps taken. [s]"""
    begin = clock.monotonic()
    end = begin + span
    shown = steps = 0
    while not stopped.is_set():
        await shared.settle(clock, settle)
        due = clock.next_due
        if due is None or due > end:
            break
        await clock.advance_async(gap(clock.monotonic(), due))
        steps += 1
        done = round(clock.monotonic() - begin)
        if done > shown:
            bar.update(done - shown)
            shown = done
    if not stopped.is_set() and clock.monotonic() < end:
        await clock.advance_async(gap(clock.monotonic(), end))
    await shared.settle(clock, settle)
    bar.update(max(0, round(span) - shown))
    return steps


def gap(now: float, due: float) -> float:
    """A step that takes a clock from ``now`` to at least ``due`` despite rounding. [s]"""
    delta = max(0.0, due - now)
    while now + delta < due:
        delta = math.nextafter(delta, math.inf)
    return delta


def span_of(
    clock: Clock, duration: float | timedelta | None, until: datetime | None
) -> float | None:
    """The seconds a run covers: ``duration``, or up to ``until``; ``None`` when neither is
    given. [s]"""
    if duration is not None and until is not None:
        raise InvalidArgument("give run() a duration or until, not both")
    if until is not None:
        if until.tzinfo is None:
            raise InvalidArgument(f"until must be tz-aware, got naive {until!r}")
        span = (until - clock.now()).total_seconds()
    elif duration is not None:
        span = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    else:
        return None
    if not (span >= 0 and math.isfinite(span)):
        raise InvalidArgument(f"run() needs a time ahead of the clock, got {span!r} s")
    return span
