"""Deadlines of connections: the CONNECT timeout and keep-alive (MQTT-3.1.2-24).

Theory of operation
-------------------
There are no per-connection tasks or timers. A connection is filed under the time of its next
deadline in a :class:`Deadlines` (buckets one sweep interval wide): under its CONNECT deadline
when it opens (``HubConfig.connect_timeout``), under its keep-alive deadline once connected (the
last read plus ``keep_alive * HubConfig.keep_alive_factor``; a keep alive of 0 has none). It
leaves its bucket as soon as it ends, so nothing of an ended connection is kept. The hub's one
sweep task calls :meth:`Timeouts.check` every :attr:`Timeouts.interval`: only the connections
whose deadline has come are looked at, so an idle fleet costs nothing between its deadlines. A
connection that was active meanwhile is filed again under its next deadline; one that was not
is closed (keep alive: 5.0 DISCONNECT 0x8D and its will; no CONNECT: closed without a word).

Times are ``time.monotonic()``: a connection takes it on every read
(:meth:`~enos_lab.hub._connection.Connection.data_received`), where it must be cheap.
"""

from __future__ import annotations

import logging
import math
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from enos_lab.hub._state import CLOSED, CONNECTED
from enos_lab.hub._types import DisconnectReason

if TYPE_CHECKING:
    from enos_lab.hub._state import Link

__all__ = ["Deadlines", "Timeouts"]

log = logging.getLogger("enos_lab.hub")


class Deadlines:
    """Connections to look at once a time has passed, in buckets one sweep interval wide.

    :meth:`add` files a connection under the time of its next deadline (in ``conn.due``, a
    connection is in one bucket of one ``Deadlines`` at a time) and :meth:`discard` takes it
    out, so that a connection that ended is not kept; :meth:`pop_due` hands out (once) every
    connection filed under a time that has passed. The caller looks at the connection's actual
    state and files it again under its next deadline if it has one. Times are
    ``time.monotonic()``. [s]
    """

    __slots__ = ("_buckets", "_interval", "_next")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._buckets: dict[int, set[Link]] = {}
        self._next = math.floor(_monotonic() / interval)  # the first bucket not handed out

    def add(self, conn: Link, at: float) -> None:
        """File ``conn`` to be handed out once ``at`` has passed."""
        # bucket k is handed out at k * interval or later, which is after ``at``
        slot = conn.due = max(math.floor(at / self._interval) + 1, self._next)
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = {conn}
        else:
            bucket.add(conn)

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
        buckets = self._buckets
        due: list[Link] = []
        while self._next <= last:
            bucket = buckets.pop(self._next, None)
            if bucket is not None:
                due += bucket
            self._next += 1
        return due

    def __len__(self) -> int:
        return sum(map(len, self._buckets.values()))


class Timeouts:
    """The CONNECT and keep-alive deadlines of a hub's connections.

    ``connect_timeout`` [s] is ``HubConfig.connect_timeout``; :attr:`interval` [s], how often
    the hub calls :meth:`check`, follows from it (a quarter of it, between 0.01 and 0.5).
    """

    __slots__ = ("connect_due", "connect_timeout", "interval", "keep_alive_due")

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.interval = min(0.5, max(0.01, connect_timeout / 4))  # [s]
        self.connect_due = Deadlines(self.interval)
        self.keep_alive_due = Deadlines(self.interval)

    def opened(self, conn: Link) -> None:
        """``conn`` opened: it must send a complete CONNECT before the connect timeout."""
        self.connect_due.add(conn, conn.created + self.connect_timeout)

    def connected(self, conn: Link) -> None:
        """``conn`` was accepted: from now on its keep alive (``conn.ka_limit``) applies."""
        self.connect_due.discard(conn)
        if conn.ka_limit:
            self.keep_alive_due.add(conn, conn.last + conn.ka_limit)

    def closed(self, conn: Link, was_connected: bool) -> None:
        """``conn`` ended: forget its deadline."""
        (self.keep_alive_due if was_connected else self.connect_due).discard(conn)

    def check(self, now: float) -> None:
        """Close the connections whose keep alive or CONNECT deadline passed before ``now``
        (``time.monotonic()`` [s]); file the others under their next deadline."""
        for conn in self.keep_alive_due.pop_due(now):
            limit = conn.ka_limit
            if conn.state != CONNECTED or not limit:
                continue  # ended (or replaced by a new connection object)
            if now - conn.last > limit:
                log.info("client %r: keep alive timeout", conn.client_id)
                conn.kick(0x8D, DisconnectReason.KEEP_ALIVE_TIMEOUT, publish_will=True)
            else:
                self.keep_alive_due.add(conn, conn.last + limit)
        timeout = self.connect_timeout
        for conn in self.connect_due.pop_due(now):
            if conn.state in (CONNECTED, CLOSED):
                continue
            if now - conn.created > timeout:
                log.info("peer %s: no CONNECT within %.1f s", conn.peer, timeout)
                conn.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)
            else:
                self.connect_due.add(conn, conn.created + timeout)
