"""Sessions: connections coming and going, the session table, offline sessions and their
expiry, and wills.

Theory of operation
-------------------
Every open connection is registered here (:meth:`Sessions.open`, :meth:`Sessions.closed`)
with its CONNECT or keep-alive deadline (:mod:`~enos_lab.hub._deadlines`). Sessions are kept
under their session key (:attr:`ClientInfo.session_key <enos_lab.hub.ClientInfo.session_key>`):
the client id of a client without identity, else ``(identity, client_id)``, so that a client that
authenticates as another identity with the same client id neither resumes nor takes over this
one's session. An accepted CONNECT attaches its connection (:meth:`Sessions.attach`): an older
connection with the same key is taken over (MQTT-3.1.4-3), clean start discards the old session
(MQTT-3.1.2-6), otherwise the session is resumed (MQTT-3.1.2-4: session present).

When a connection ends (:meth:`Sessions.closed`) its will is published now, or after its will
delay when the session outlives the connection (5.0 3.1.3.2.2: at the sooner of the delay and
the session's end; not when the client disconnected normally, MQTT-3.14.4-3). The session is
then discarded (expiry 0: clean session, or a 5.0 session expiry interval of 0) or kept offline:
filed in an expiry heap by its end, and per identity, of which at most
``HubConfig.max_offline_sessions`` are kept: one more discards the one offline longest, with
its queued messages (its delayed will is published then). Heap entries of sessions taken up
again are skipped when they come up, and the heap is compacted when they outnumber the live
ones. Delayed wills are kept by session key and in a heap by their time, whose entries are
skipped in the same way when the will was published or dropped meanwhile.
The hub's sweep (:class:`~enos_lab.hub._deadlines.Sweep`) calls :meth:`Sessions.expire`
for the delayed wills and sessions whose time has come; it is told the time of every delayed
will and session end filed here (:meth:`Sweep.wake_by
<enos_lab.hub._deadlines.Sweep.wake_by>`), and :meth:`Sessions.expire` tells it the next one.
Will delays and session expiry are on the hub's clock (:meth:`Clock.monotonic
<enos_lab.clock.Clock.monotonic>`, ``Hub(clock=...)``), so on a
:class:`~enos_lab.clock.SimulatedClock` they run in simulated time.

The lifecycle events (:class:`~enos_lab.hub.ClientConnected`,
:class:`~enos_lab.hub.ClientDisconnected`) go to the listeners from here (:meth:`Sessions.emit`).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from enos_lab.hub._state import CONNECTED, Session
from enos_lab.hub._types import ClientDisconnected, DisconnectReason, Message
from enos_lab.mqtt._packets import MQTT_5, NO_PROPERTIES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from enos_lab.hub._config import HubConfig
    from enos_lab.hub._deadlines import Sweep, Timeouts
    from enos_lab.hub._router import Router
    from enos_lab.hub._state import Link
    from enos_lab.hub._tasks import Tasks
    from enos_lab.hub._types import Authenticator, ClientInfo, HubEvent, SessionKey
    from enos_lab.mqtt._packets import Will

__all__ = ["Sessions"]

log = logging.getLogger("enos_lab.hub")


class _PendingWill:
    """A will published later (5.0 will delay): due at ``due`` on the hub's clock. [s]"""

    __slots__ = ("due", "info", "will")

    def __init__(self, due: float, will: Will, info: ClientInfo) -> None:
        self.due = due
        self.will = will
        self.info = info


class Sessions:
    """A hub's open connections, its sessions and their wills.

    ``authenticator`` decides every CONNECT (``None``: ``config.anonymous`` decides);
    ``connections`` are the open connections, ``clients`` the connected ones by session key,
    ``sessions`` every session kept (connected or not) by session key; ``listeners`` get the
    lifecycle events. ``closing`` is set while the hub stops: no new connection is taken and
    wills are published at once. ``sweep`` is the hub's sweep: its clock times will delays and
    session expiry, and it is told when one is due.
    """

    __slots__ = (
        "_expiring",
        "_expiry_seq",
        "_next_id",
        "_offline",
        "_will_seq",
        "_will_times",
        "_wills",
        "authenticator",
        "clients",
        "closing",
        "config",
        "connections",
        "listeners",
        "router",
        "sessions",
        "sweep",
        "tasks",
        "timeouts",
    )

    def __init__(
        self,
        config: HubConfig,
        authenticator: Authenticator | None,
        router: Router,
        timeouts: Timeouts,
        tasks: Tasks,
        *,
        sweep: Sweep,
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self.router = router
        self.timeouts = timeouts
        self.tasks = tasks
        self.sweep = sweep
        self.closing = False
        self.connections: set[Link] = set()
        self.clients: dict[SessionKey, Link] = {}
        self.sessions: dict[SessionKey, Session] = {}
        # sessions waiting for their expiry: (time, sequence, session), a heap; an entry
        # whose session was taken up or discarded meanwhile is skipped when it comes up
        self._expiring: list[tuple[float, int, Session]] = []
        self._expiry_seq = 0
        # sessions of each identity kept without a connection, the longest offline first
        self._offline: dict[str, dict[SessionKey, Session]] = {}
        self._wills: dict[SessionKey, _PendingWill] = {}
        # the delayed wills by their time: (due, sequence, will), a heap; an entry whose will is
        # no longer the one in _wills is skipped when it comes up
        self._will_times: list[tuple[float, int, _PendingWill]] = []
        self._will_seq = 0
        self.listeners: list[Callable[[HubEvent], None]] = []
        self._next_id = 0

    def start(self) -> None:
        """Take connections (again)."""
        self.closing = False

    def emit(self, event: HubEvent) -> None:
        """Tell every listener about ``event`` (a failing listener is logged)."""
        for callback in self.listeners:
            try:
                callback(event)
            except Exception:
                log.exception("hub event listener failed on %r", event)

    # -- connections -----------------------------------------------------------------------
    def open(self, conn: Link) -> bool:
        """Register a new connection (its CONNECT deadline starts); False while closing."""
        if self.closing:
            return False
        self.connections.add(conn)
        self.timeouts.opened(conn)
        return True

    def assign_client_id(self) -> str:
        """A client id for a client that sent an empty one (MQTT-3.1.3-6, 5.0 3.1.3.1)."""
        while True:
            self._next_id += 1
            client_id = f"enos-lab-{self._next_id:08x}"
            if client_id not in self.sessions:
                return client_id

    def attach(self, conn: Link, clean_start: bool) -> bool:
        """Bind the accepted ``conn`` to its session (taking over an old connection, starting
        its keep alive); returns session present.

        Sessions are found by session key, never by the client id alone: a client that
        authenticated as another identity with the same client id gets a session of its own.
        """
        info = conn.info
        assert info is not None
        key = info.session_key
        old = self.clients.get(key)
        if old is not None and old is not conn:
            log.info("client %r: taken over by a new connection from %s", conn.client_id, conn.peer)
            # 5.0 3.1.4: the old will is published unless the new connection resumes the
            # session with a will delay (then the delay applies)
            old.kick(0x8E, DisconnectReason.TAKEN_OVER, publish_will=True)  # MQTT-3.1.4-3
        pending_will = self._wills.pop(key, None)
        session = self.sessions.get(key)
        if session is not None and clean_start:
            self.discard(session)
            session = None
        if pending_will is not None and session is None:
            # the session ended now: a delayed will is due (5.0 3.1.3.2.2)
            self.publish_will(pending_will.info, pending_will.will)
        present = session is not None
        if session is None:
            session = Session(info)
            self.sessions[key] = session
        elif session.identity is not None:
            offline = self._offline.get(session.identity)
            if offline is not None:
                offline.pop(key, None)
                if not offline:
                    del self._offline[session.identity]
        session.expires_at = None
        session.expiry = conn.session_expiry
        session.info = info
        session.conn = conn
        conn.session = session
        self.clients[key] = conn
        self.timeouts.connected(conn)
        return present

    def closed(
        self, conn: Link, was_connected: bool, reason: DisconnectReason, publish_will: bool
    ) -> None:
        """``conn`` ended (``was_connected``: after its CONNECT was accepted): its deadline is
        dropped, its will published (or delayed), its session discarded or kept offline."""
        self.connections.discard(conn)
        self.timeouts.closed(conn, was_connected)
        if not was_connected:
            return
        session = conn.session
        info = conn.info
        assert session is not None and info is not None
        will = conn.will if publish_will else None
        will_published = False
        owner = session.conn is conn
        expiry = conn.session_expiry
        if owner:
            session.conn = None
            del self.clients[info.session_key]
        if will is not None:
            delay = 0
            if conn.level == MQTT_5:
                delay = will.properties.will_delay_interval or 0
                if expiry is not None:
                    delay = min(delay, expiry)  # 5.0 3.1.3.2.2: sooner of delay and session end
            if delay > 0 and owner and not self.closing:
                self._delay_will(_PendingWill(self.sweep.clock.monotonic() + delay, will, info))
            else:
                self.publish_will(info, will)
                will_published = True
        if owner:
            if expiry == 0:
                self.discard(session)
            else:
                self._keep_offline(session, expiry)
        log.info("client %r disconnected: %s", conn.client_id, reason.value)
        self.emit(ClientDisconnected(info, reason, will_published))

    def close_all(self) -> None:
        """The hub stops: disconnect every client (5.0: 0x8B, with its will), close the
        connections not yet connected, and drop the delayed wills."""
        for conn in list(self.connections):
            if conn.state == CONNECTED:
                conn.kick(0x8B, DisconnectReason.SERVER_SHUTDOWN, publish_will=True)
            else:
                conn.end(DisconnectReason.SERVER_SHUTDOWN, publish_will=False)
        self._wills.clear()
        self._will_times.clear()

    # -- sessions ----------------------------------------------------------------------------
    def discard(self, session: Session) -> None:
        """Forget ``session``: its subscriptions, queued and in-flight messages."""
        subs = session.subs
        if subs:
            unsubscribe = self.router.unsubscribe
            for topic_filter in list(subs):
                unsubscribe(session, topic_filter)
        session.subs = None
        session.inflight = None
        session.queue = None
        session.qos2_in = None
        session.expires_at = None  # its entry in the expiry heap is skipped
        key = session.key
        if self.sessions.get(key) is session:
            del self.sessions[key]
        identity = session.identity
        if identity is not None:
            offline = self._offline.get(identity)
            if offline is not None and offline.get(key) is session:
                del offline[key]
                if not offline:
                    del self._offline[identity]

    def _keep_offline(self, session: Session, expiry: int | None) -> None:
        """``session`` outlives its connection: file it for expiry, and discard the sessions of
        its identity that were offline longest beyond ``HubConfig.max_offline_sessions``."""
        session.expiry = expiry
        if expiry is not None:
            session.expires_at = at = self.sweep.clock.monotonic() + expiry
            self.sweep.wake_by(at)
            self._expiry_seq += 1
            expiring = self._expiring
            heapq.heappush(expiring, (at, self._expiry_seq, session))
            if len(expiring) > 2 * len(self.sessions) + 64:
                # entries of sessions taken up again pile up with every reconnection: drop them
                self._expiring = [e for e in expiring if e[2].expires_at == e[0]]
                heapq.heapify(self._expiring)
        else:
            session.expires_at = None
        identity = session.identity
        if identity is None:
            return
        offline = self._offline.get(identity)
        if offline is None:
            offline = self._offline[identity] = {}
        offline[session.key] = session
        limit = self.config.max_offline_sessions
        while len(offline) > limit:
            oldest = next(iter(offline.values()))
            log.info(
                "session %r of %s discarded: %d offline sessions is the limit per identity",
                oldest.client_id,
                identity,
                limit,
            )
            pending = self._wills.pop(oldest.key, None)
            self.discard(oldest)
            if pending is not None:  # the session ended now: its delayed will is due
                self.publish_will(pending.info, pending.will)
            offline = self._offline.get(identity, {})

    def end_identity(self, identity: str, reason_code: int) -> int:
        """Disconnect every client of ``identity`` (5.0: with ``reason_code``) and forget all
        its sessions and delayed wills; returns the number of sessions ended."""
        ended = 0
        for key, session in list(self.sessions.items()):
            if session.identity != identity:
                continue
            conn = session.conn
            if conn is not None and conn.state == CONNECTED:
                log.info("client %r: disconnected, its identity ended", conn.client_id)
                conn.kick(reason_code, DisconnectReason.KICKED, publish_will=True)
            self._wills.pop(key, None)
            if self.sessions.get(key) is session:
                self.discard(session)
            ended += 1
        return ended

    def expire(self, now: float) -> float | None:
        """Publish the delayed wills and discard the offline sessions whose time is before
        ``now`` [s] (called by the hub's sweep); returns when the next one is due (``None``:
        none is waiting). [s]"""
        upcoming: float | None = None
        wills = self._wills
        will_times = self._will_times
        while will_times:
            due, _seq, pending = will_times[0]
            key = pending.info.session_key
            if wills.get(key) is not pending:
                heapq.heappop(will_times)  # published or dropped meanwhile
            elif due > now:
                upcoming = due
                break
            else:
                heapq.heappop(will_times)
                del wills[key]
                self.publish_will(pending.info, pending.will)
        expiring = self._expiring
        while expiring:
            at, _seq, session = expiring[0]
            # skipped: taken up again (expires_at None) or filed again with a later time
            if session.expires_at == at and session.conn is None:
                if at > now:
                    return at if upcoming is None or at < upcoming else upcoming
                log.info("session %r expired", session.client_id)
                heapq.heappop(expiring)
                self.discard(session)
            else:
                heapq.heappop(expiring)
        return upcoming

    # -- wills -------------------------------------------------------------------------------
    def _delay_will(self, pending: _PendingWill) -> None:
        """Keep ``pending`` until its time (or until its session ends or is taken up again)."""
        wills = self._wills
        wills[pending.info.session_key] = pending
        self._will_seq += 1
        will_times = self._will_times
        heapq.heappush(will_times, (pending.due, self._will_seq, pending))
        if len(will_times) > 2 * len(wills) + 64:
            # entries of wills published or dropped early pile up: drop them
            self._will_times = [e for e in will_times if wills.get(e[2].info.session_key) is e[2]]
            heapq.heapify(self._will_times)
        self.sweep.wake_by(pending.due)

    def publish_will(self, info: ClientInfo, will: Will) -> None:
        """Publish ``will`` of the client ``info`` as it would have published it: authorised,
        within its retained quota, to the handlers and the subscribers."""
        topic = will.topic
        if topic.startswith("$"):
            return
        router = self.router
        authoriser = router.authoriser
        forward = True
        if authoriser is not None:
            decision = authoriser.authorise_publish(info, topic, will.qos, will.retain)
            if not decision.allowed:
                log.info("client %r: will on %r denied", info.client_id, topic)
                return
            forward = decision.forward
        props = will.properties
        if props is not NO_PROPERTIES and props.will_delay_interval is not None:
            props = replace(props, will_delay_interval=None)
        msg = Message(topic, will.payload, will.qos, will.retain, props)
        if msg.retain and not router.retain(msg, info):
            log.info(
                "client %r: retained will on %r refused: retained quota", info.client_id, topic
            )
            return
        if router.handlers:
            pending = router.call_handlers(info, msg)
            if pending:
                self.tasks.spawn(_await_all(pending), f"hub-will-{info.client_id}")
        if forward:
            router.route(msg, None)


async def _await_all(pending: list[Awaitable[None]]) -> None:
    for aw in pending:
        try:
            await aw
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("message handler failed")
