"""Deadlines: the CONNECT timeout and keep alive of connections (MQTT-3.1.2-24), and the sweep
that does every timed duty of the hub.

Theory of operation
-------------------
There are no per-connection tasks or timers. A connection is filed under the time of its next
deadline in a :class:`Deadlines`, in buckets :attr:`Timeouts.interval` wide (a quarter of the
CONNECT timeout, at most 0.5 s: how late after its deadline a connection may be closed): under
its CONNECT deadline when it opens (``HubConfig.connect_timeout``), under its keep-alive
deadline once connected (the last read plus ``keep_alive * HubConfig.keep_alive_factor``; a
keep alive of 0 has none). It leaves its bucket as soon as it ends, so nothing of an ended
connection is kept. When a bucket's time has come, :meth:`Timeouts.check` looks at its
connections only, so an idle fleet costs nothing between its deadlines. A connection that was
active meanwhile is filed again under its next deadline; one that was not is closed (keep
alive: 5.0 DISCONNECT 0x8D and its will; no CONNECT: closed without a word). The buckets' numbers
are kept in a heap, so the next one due is found at once however far away it is.

The :class:`Sweep` is one timer on the hub's clock (:meth:`Clock.call_at
<enos_lab.clock.Clock.call_at>`), armed at the time of the next thing due: the earliest
non-empty deadline bucket, delayed will or session expiry. Whoever files something tells it
(:meth:`Sweep.wake_by`; a deadline only when it opens a new bucket), and it is re-armed when that
is earlier than the time it is armed at. When it fires it does the hub's duties for that time
(:meth:`Timeouts.check`, then :meth:`Sessions.expire <enos_lab.hub._sessions.Sessions.expire>`)
and arms itself at the next time they report. So a hub with nothing due does not wake at all,
and on a :class:`~enos_lab.clock.SimulatedClock` advancing the clock fires the CONNECT and
keep-alive timeouts, delayed wills and session expiry in order, each once the clock has reached
its time and not before, at one wake-up per time something is due (a simulated day with
nothing due costs none, not one per sweep interval).

Every time here is a reading of the hub's clock (:meth:`Clock.monotonic
<enos_lab.clock.Clock.monotonic>`) [s]: a connection takes it on every read
(:meth:`~enos_lab.hub._connection.Connection.data_received`), where it must be cheap.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import TYPE_CHECKING

from enos_lab.hub._state import CLOSED, CONNECTED
from enos_lab.hub._types import DisconnectReason

if TYPE_CHECKING:
    from collections.abc import Callable

    from enos_lab.clock import Clock, TimerHandle
    from enos_lab.hub._state import Link

__all__ = ["Deadlines", "Sweep", "Timeouts"]

log = logging.getLogger("enos_lab.hub")

_COMPACT_SLACK = 64  # stale heap items tolerated beyond twice the live buckets
_RETRY_AFTER_FAILURE = 1.0  # [s] of the hub's clock before a sweep that failed runs again


class Deadlines:
    """Connections to look at once a time has passed, in buckets ``interval`` wide. [s]

    :meth:`add` files a connection under the time of its next deadline (in ``conn.due``, a
    connection is in one bucket of one ``Deadlines`` at a time) and :meth:`discard` takes it
    out, so that a connection that ended is not kept; :meth:`pop_due` hands out (once) every
    connection filed under a time that has passed. The caller looks at the connection's actual
    state and files it again under its next deadline if it has one. Bucket ``k`` holds the
    deadlines before ``k * interval`` and is handed out at that time (:meth:`time_of`).
    Times are readings of the hub's clock. [s]
    """

    __slots__ = ("_buckets", "_interval", "_next", "_slots")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._buckets: dict[int, set[Link]] = {}
        # the numbers of the buckets, a heap; an item whose bucket was emptied meanwhile is
        # skipped when it comes up (and may be pushed again when the bucket is made again)
        self._slots: list[int] = []
        self._next = 0  # the first bucket not handed out

    def add(self, conn: Link, at: float) -> float | None:
        """File ``conn`` to be handed out once ``at`` has passed.

        Returns the time the bucket is handed out when ``conn`` opened a new bucket (a time the
        sweep may not be armed for yet), else ``None``. [s]
        """
        # bucket k is handed out at k * interval or later, which is after ``at``
        slot = conn.due = max(math.floor(at / self._interval) + 1, self._next)
        buckets = self._buckets
        bucket = buckets.get(slot)
        if bucket is not None:
            bucket.add(conn)
            return None
        buckets[slot] = {conn}
        slots = self._slots
        heapq.heappush(slots, slot)
        if len(slots) > 2 * len(buckets) + _COMPACT_SLACK:
            self._slots = sorted(buckets)  # a sorted list is a heap
        return self.time_of(slot)

    def discard(self, conn: Link) -> None:
        """Take ``conn`` out (no error if it is not filed)."""
        bucket = self._buckets.get(conn.due)
        if bucket is not None:
            bucket.discard(conn)
            if not bucket:
                del self._buckets[conn.due]

    def pop_due(self, now: float) -> list[Link]:
        """Every connection filed under a time before ``now``, each once."""
        last = math.floor(now / self._interval)
        if last < self._next:
            return []
        buckets = self._buckets
        slots = self._slots
        due: list[Link] = []
        while slots and slots[0] <= last:
            bucket = buckets.pop(heapq.heappop(slots), None)
            if bucket is not None:
                due += bucket
        self._next = last + 1
        return due

    def next_due(self) -> float | None:
        """The time the earliest non-empty bucket is handed out (``None``: nothing filed). [s]"""
        slots = self._slots
        buckets = self._buckets
        while slots and slots[0] not in buckets:
            heapq.heappop(slots)
        return self.time_of(slots[0]) if slots else None

    def time_of(self, slot: int) -> float:
        """The time bucket ``slot`` is handed out: the first time :meth:`pop_due` takes it. [s]"""
        interval = self._interval
        at = slot * interval
        while math.floor(at / interval) < slot:  # floating point: never a hair before
            at = math.nextafter(at, math.inf)
        return at

    def __len__(self) -> int:
        return sum(map(len, self._buckets.values()))


class Timeouts:
    """The CONNECT and keep-alive deadlines of a hub's connections.

    ``connect_timeout`` [s] is ``HubConfig.connect_timeout``; :attr:`interval` [s], the width of
    a deadline bucket (how late after its deadline a connection may be closed), follows from it
    (a quarter of it, between 0.01 and 0.5). ``wake_by`` is the hub's :meth:`Sweep.wake_by`,
    told when a deadline opens a new bucket.
    """

    __slots__ = ("connect_due", "connect_timeout", "interval", "keep_alive_due", "wake_by")

    def __init__(self, connect_timeout: float, wake_by: Callable[[float], None]) -> None:
        self.connect_timeout = connect_timeout
        self.interval = min(0.5, max(0.01, connect_timeout / 4))  # [s]
        self.connect_due = Deadlines(self.interval)
        self.keep_alive_due = Deadlines(self.interval)
        self.wake_by = wake_by

    def opened(self, conn: Link) -> None:
        """``conn`` opened: it must send a complete CONNECT before the connect timeout."""
        at = self.connect_due.add(conn, conn.created + self.connect_timeout)
        if at is not None:
            self.wake_by(at)

    def connected(self, conn: Link) -> None:
        """``conn`` was accepted: from now on its keep alive (``conn.ka_limit``) applies."""
        self.connect_due.discard(conn)
        if conn.ka_limit:
            at = self.keep_alive_due.add(conn, conn.last + conn.ka_limit)
            if at is not None:
                self.wake_by(at)

    def closed(self, conn: Link, was_connected: bool) -> None:
        """``conn`` ended: forget its deadline."""
        (self.keep_alive_due if was_connected else self.connect_due).discard(conn)

    def check(self, now: float) -> float | None:
        """Close the connections whose keep alive or CONNECT deadline passed before ``now``
        [s]; file the others under their next deadline. Returns when a deadline is next due
        (``None``: none is filed). [s]"""
        keep_alive_due = self.keep_alive_due
        for conn in keep_alive_due.pop_due(now):
            limit = conn.ka_limit
            if conn.state != CONNECTED or not limit:
                continue  # ended (or replaced by a new connection object)
            if now - conn.last > limit:
                log.info("client %r: keep alive timeout", conn.client_id)
                conn.kick(0x8D, DisconnectReason.KEEP_ALIVE_TIMEOUT, publish_will=True)
            else:
                keep_alive_due.add(conn, conn.last + limit)
        timeout = self.connect_timeout
        connect_due = self.connect_due
        for conn in connect_due.pop_due(now):
            if conn.state in (CONNECTED, CLOSED):
                continue
            if now - conn.created > timeout:
                log.info("peer %s: no CONNECT within %.1f s", conn.peer, timeout)
                conn.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)
            else:
                connect_due.add(conn, conn.created + timeout)
        return _earliest(keep_alive_due.next_due(), connect_due.next_due())


class Sweep:
    """One timer on the hub's clock for every timed duty of the hub (see the module docstring).

    :meth:`start` gives it the duties: callables that each do what is due at a time [s] and
    return when they next have something due (``None``: nothing), run in the order given.
    :meth:`wake_by` makes sure they run by a time; :meth:`stop` cancels the timer.
    """

    __slots__ = ("_at", "_duties", "_handle", "_running", "clock")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._duties: tuple[Callable[[float], float | None], ...] = ()
        self._handle: TimerHandle | None = None
        self._at = math.inf  # the time the timer is armed for (while running: to arm for)
        self._running = False

    def start(self, *duties: Callable[[float], float | None]) -> None:
        """Do ``duties`` from now on; the first run is at once (on the running event loop)."""
        self._duties = duties
        self._at = math.inf
        self._arm(self.clock.monotonic())

    def stop(self) -> None:
        """Cancel the timer; nothing runs until :meth:`start`."""
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._handle = None
        self._duties = ()
        self._at = math.inf

    def wake_by(self, at: float) -> None:
        """Something is due at ``at`` [s]: run by then (re-armed if armed for later)."""
        if at < self._at:
            if self._running:
                self._at = at  # armed when the run ends
            elif self._duties:
                self._arm(at)

    def _arm(self, at: float) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._at = at
        self._handle = self.clock.call_at(at, self._fire)

    def _fire(self) -> None:
        if not self._duties:
            return
        # the timer's time has come even if the clock reads a hair earlier (the event loop runs
        # timers within its clock resolution): what is due then is due now
        now = max(self.clock.monotonic(), self._at)
        self._handle = None
        self._at = math.inf
        self._running = True
        upcoming = math.inf
        try:
            for duty in self._duties:
                due = duty(now)
                if due is not None and due < upcoming:
                    upcoming = due
        except Exception:
            log.exception("the hub's sweep failed")
            upcoming = now + _RETRY_AFTER_FAILURE
        finally:
            self._running = False
        at = min(self._at, upcoming)  # self._at: what was filed while running
        if at < math.inf and self._duties:
            self._arm(at)


def _earliest(a: float | None, b: float | None) -> float | None:
    """The earlier of two times, either of which may be ``None`` (nothing due)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
