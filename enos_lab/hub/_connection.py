"""One client connection: reading, decoding, dispatch of each packet to its handler, the
ordered responses, writing and ending; PINGREQ and DISCONNECT.

Theory of operation
-------------------
Every connection (TCP, TLS or in-memory) is a :class:`Connection`, an ``asyncio.Protocol``:
``data_received`` feeds the sans-IO decoder and handles the decoded packets synchronously, in
order, at most ``_BURST`` per connection per loop iteration (the rest waits in a backlog and
continues with ``call_soon``), so that one busy publisher cannot keep the acknowledgements of
other clients - which free their in-flight windows - waiting. An async authenticator (or the
CONNACK delay) makes the connection wait: the packets that follow stay in the backlog (reading
is paused when it grows) and a task owned by the hub resumes them.

Each packet goes to its handler, one module per packet family (mosquitto's ``handle_*.c``):
CONNECT in :mod:`~enos_lab.hub._connect`, PUBLISH and PUBREL in :mod:`~enos_lab.hub._publish`,
SUBSCRIBE and UNSUBSCRIBE in :mod:`~enos_lab.hub._subscribe`, the acknowledgements of the hub's
own PUBLISHes (PUBACK, PUBREC, PUBCOMP) in :mod:`~enos_lab.hub._acks`; PINGREQ and DISCONNECT
are handled here. The handlers are functions of the connection; the hub's connection class
binds them as its methods (``on_publish`` ...; see :mod:`~enos_lab.hub._hub`), so that a
handler module imports this one and not the other way round. A read made of one PUBLISH (the
common read) and a chunk of nothing but PUBACKs (what a QoS 1 subscriber sends) skip the
backlog machinery. A connection talks to three collaborators of its hub: the
:class:`~enos_lab.hub._router.Router` (messages and subscriptions), the
:class:`~enos_lab.hub._sessions.Sessions` (login, sessions, wills) and the
:class:`~enos_lab.hub._output.Output` (writing).

Message handlers that return awaitables (for instance a store's commit future, so that PUBACK
means "stored") do not stop the connection: processing is pipelined. The hub keeps decoding and
handling the following packets while the awaitables run, so that a client's whole in-flight
window reaches the handlers (and a store can group it into one commit). Responses stay in
order (MQTT-4.6.0-2..4): as long as a message's acknowledgement (PUBACK / PUBREC) is pending,
every later response of the connection (acknowledgements, SUBACK, UNSUBACK, PUBCOMP, PINGRESP)
waits behind it in an ordered queue of response slots (``Connection.acks``); a slot is
either ready bytes or a :class:`_Pending` message, and ready slots are written from the head
as the awaitables complete. A message whose handler failed gets reason 0x80 (5.0); a 3.1.1
client, which has no negative acknowledgement, is disconnected when that slot reaches the head
of the queue: the messages before it are acknowledged, it and the ones after it are not (the
client sends them again). QoS 0 messages with awaitables take no slot (nothing to answer);
failures are logged. A DISCONNECT received while acknowledgements are pending waits (at most
``_DISCONNECT_GRACE``) for them to be written. When a connection ends, its pending slots are
dropped: nothing is written after the close and nothing pending is acknowledged. At most
``HubConfig.max_pending_acks`` messages per connection are pending; at the bound the
connection holds its backlog and pauses reading until one completes (5.0 clients are in
addition bounded by the server's receive maximum, which counts the pending ones). Handlers
that return ``None`` cost nothing extra: with no pending slot, responses are written directly.

Output is collected in ``Connection.out`` and written by the
:class:`~enos_lab.hub._output.Output` once per event-loop iteration. One misbehaving client is
disconnected and logged with its client id (a protocol violation: 5.0 gets DISCONNECT with the
reason code); a bug while handling its packet ends only its connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, cast

from enos_lab.errors import ProtocolError
from enos_lab.hub._state import CLOSED, CONNECTED, NEW
from enos_lab.hub._types import DisconnectReason
from enos_lab.mqtt._codec import Decoder, encode
from enos_lab.mqtt._packets import (
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
)
from enos_lab.mqtt._wire import PUBACK_HEAD

if TYPE_CHECKING:
    from enos_lab.hub._output import Output
    from enos_lab.hub._router import Router
    from enos_lab.hub._sessions import Sessions
    from enos_lab.hub._state import Session
    from enos_lab.hub._types import ClientInfo
    from enos_lab.mqtt._packets import Will

__all__ = ["HOLD", "Connection", "Step", "peer_name"]

log = logging.getLogger("enos_lab.hub")

_BACKLOG_PAUSE = 256  # packets waiting behind a pending CONNECT before reading is paused
_BURST = 64  # packets handled per connection per loop iteration
# [s] a DISCONNECT waits at most this long for pending acknowledgements; real time (the event
# loop's), not the hub's clock: it bounds how long output waits to be written before the close
_DISCONNECT_GRACE = 2.0


class _Hold:
    """Returned by packet handling: stop processing this connection's packets for now."""

    __slots__ = ()


HOLD = _Hold()
"""What a packet handler returns to stop the connection's packets until it is resumed."""

Step: TypeAlias = "Awaitable[None] | _Hold | None"
"""What a packet handler returns: ``None`` (go on), :data:`HOLD`, or an awaitable to wait for
(the packets after it wait in the backlog)."""


class _Pending:
    """A response slot waiting for the handler awaitables of one message (or a deferred action).

    ``ack`` is the acknowledgement to send on success (``None`` for QoS 0: no slot in the
    queue); ``waiting`` counts the awaitables not yet done; once it is 0, ``data`` holds the
    bytes to write (``None`` = close the 3.1.1 connection) unless ``action`` is set.
    """

    __slots__ = ("ack", "action", "conn", "data", "failed", "waiting")

    def __init__(self, conn: Connection, ack: PubAck | PubRec | None, waiting: int) -> None:
        self.conn = conn
        self.ack = ack
        self.waiting = waiting
        self.failed = False
        self.data: bytes | None = None
        self.action: Callable[[], None] | None = None

    def done(self, future: asyncio.Future[Any]) -> None:
        """Done callback of one awaitable."""
        conn = self.conn
        if future.cancelled():
            self.failed = True
            if conn.state != CLOSED:
                log.warning("client %r: message handler cancelled", conn.client_id)
        else:
            exc = future.exception()
            if exc is not None:
                self.failed = True
                log.error("client %r: message handler failed", conn.client_id, exc_info=exc)
        self.waiting -= 1
        if self.waiting == 0:
            conn.settled(self)


def peer_name(peer: Any) -> str:
    """``host:port`` of a transport's ``peername`` (``unknown`` without one)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "unknown"


class Connection(asyncio.Protocol):
    """One client connection: decoding, dispatch, ordered responses and batched output.

    The packet handlers (``on_connect`` ... ``on_unsubscribe``) are bound by the hub's
    connection class from the modules of their packets.
    """

    __slots__ = (
        "acks",
        "backlog",
        "client_id",
        "created",
        "decoder",
        "due",
        "held",
        "inflight_in",
        "info",
        "ka_limit",
        "last",
        "level",
        "max_out",
        "out",
        "out_size",
        "output",
        "paused",
        "peer",
        "pending",
        "router",
        "session",
        "session_expiry",
        "sessions",
        "state",
        "topic_aliases",
        "transport",
        "will",
        "window",
        "write_paused",
    )

    # -- the packet handlers, one module per packet family ---------------------------------
    on_connect: ClassVar[Callable[[Connection, Connect], Awaitable[None] | None]]
    on_publish: ClassVar[Callable[[Connection, Publish], Step]]
    on_pubrel: ClassVar[Callable[[Connection, PubRel], None]]
    on_puback: ClassVar[Callable[[Connection, PubAck], None]]
    on_pubacks: ClassVar[Callable[[Connection, bytes], bool]]
    on_pubrec: ClassVar[Callable[[Connection, PubRec], None]]
    on_pubcomp: ClassVar[Callable[[Connection, PubComp], None]]
    on_subscribe: ClassVar[Callable[[Connection, Subscribe], None]]
    on_unsubscribe: ClassVar[Callable[[Connection, Unsubscribe], None]]

    # The hub's clock (Clock.monotonic) [s], a class attribute (no memory per connection): a
    # hub whose clock is not the system clock sets it on a connection class of its own (_hub.py)
    monotonic = staticmethod(time.monotonic)

    def __init__(self, router: Router, sessions: Sessions, output: Output) -> None:
        self.router = router
        self.sessions = sessions
        self.output = output
        config = router.config
        # Typed as a full transport: event loops such as uvloop do not subclass asyncio's
        # transport classes, so no isinstance checks on it.
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(role="server", max_packet_size=config.max_packet_size)
        self.state = NEW
        self.level = 4
        self.client_id = ""
        self.peer = "unknown"
        self.info: ClientInfo | None = None
        self.session: Session | None = None
        self.created = self.last = self.monotonic()  # the hub's clock [s]
        self.due = 0  # the bucket of the deadlines it is filed in (see _deadlines.py)
        self.ka_limit = 0.0
        self.out: list[bytes] | None = None
        self.out_size = 0
        self.write_paused = False
        self.paused = False
        self.backlog: deque[Packet] | None = None
        self.will: Will | None = None
        self.topic_aliases: dict[int, str] | None = None
        self.inflight_in = 0  # QoS 1 messages whose acknowledgement is pending
        self.pending = 0  # messages whose handler awaitables are pending (all QoS)
        self.acks: deque[bytes | _Pending] | None = None  # ordered response slots
        self.held = False  # processing stopped at the max_pending_acks bound
        self.max_out = 0  # client's maximum packet size, 0 = unlimited
        self.window = config.max_inflight
        self.session_expiry: int | None = 0

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = peer_name(transport.get_extra_info("peername"))
        if not self.sessions.open(self):  # the hub is stopping
            transport.close()
            self.state = CLOSED

    def connection_lost(self, exc: Exception | None) -> None:
        backlog = self.backlog
        if backlog and self.state == CONNECTED and not self.held:
            # Packets that arrived before the end of the stream are handled before it: a burst
            # of PUBLISHes followed by DISCONNECT is delivered completely, without the will.
            self._run(backlog, len(backlog))
        self.out = None
        self.end(DisconnectReason.CONNECTION_LOST, publish_will=True)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    def data_received(self, data: bytes, _now: Callable[[], float] = time.monotonic) -> None:
        # ``_now`` is the hub's clock. Every read takes it, so the system clock comes as a
        # default argument, as cheap as a module global (looking up the class attribute
        # ``monotonic`` cost 140 more machine instructions per read, 0.5% of a QoS 0 message);
        # a hub on another clock passes its own.
        self.output.bytes_in += len(data)
        self.last = _now()
        state = self.state
        if state == CLOSED:
            return
        if (
            data[0] == 0x40
            and state == CONNECTED
            and self.backlog is None
            and self.on_pubacks(data)
        ):
            return
        try:
            packets = self.decoder.feed(data)
        except ProtocolError as exc:
            self._decode_failed(exc)
            return
        if self.backlog is not None:
            self.backlog.extend(packets)
            self._maybe_pause()
            return
        if len(packets) == 1 and state == CONNECTED and type(packets[0]) is Publish:
            # inlines _run() for the common read: one PUBLISH
            try:
                aw = self.on_publish(packets[0])
            except Exception as exc:
                self.internal_error(exc)
                return
            if aw is not None:
                self._suspend(aw, deque())
            return
        self._run(deque(packets))

    def eof_received(self) -> bool | None:
        return None

    # -- dispatch ------------------------------------------------------------------------------
    def _run(self, packets: deque[Packet], limit: int = _BURST) -> None:
        """Handle up to ``limit`` packets now; leave the rest for the next loop iteration.

        The limit keeps one busy connection from holding the loop: acknowledgements from
        other clients (which free their in-flight windows) are read in between.
        """
        handle = self._handle
        on_publish = self.on_publish
        on_puback = self.on_puback
        pop = packets.popleft
        try:
            for _ in range(min(len(packets), limit)):
                packet = pop()
                kind = type(packet)
                if kind is Publish and self.state == CONNECTED:
                    aw = on_publish(packet)  # type: ignore[arg-type]
                elif kind is PubAck and self.state == CONNECTED:
                    on_puback(packet)  # type: ignore[arg-type]
                    continue
                else:
                    aw = handle(packet)
                if aw is not None:
                    self._suspend(aw, packets)
                    return
                if self.state == CLOSED:
                    return
        except Exception as exc:
            self.internal_error(exc)
            return
        if packets:
            self.backlog = packets
            self._maybe_pause()
            asyncio.get_running_loop().call_soon(self._continue)
            return
        self.backlog = None
        session = self.session
        if session is not None and session.queue:
            self.router.pump(session, self)  # acknowledgements above freed in-flight slots
        if self.paused:
            self._unpause()

    def _handle(self, packet: Packet) -> Step:
        kind = type(packet)
        if kind is Publish:
            if self.state != CONNECTED:
                return self._not_connected(packet)
            return self.on_publish(packet)  # type: ignore[arg-type]
        if kind is PubAck and self.state == CONNECTED:
            self.on_puback(packet)  # type: ignore[arg-type]
            return None
        if isinstance(packet, Connect):
            return self.on_connect(packet)
        if self.state != CONNECTED:
            return self._not_connected(packet)
        if isinstance(packet, PubAck):
            self.on_puback(packet)
        elif isinstance(packet, PubRec):
            self.on_pubrec(packet)
        elif isinstance(packet, PubRel):
            self.on_pubrel(packet)
        elif isinstance(packet, PubComp):
            self.on_pubcomp(packet)
        elif isinstance(packet, Subscribe):
            self.on_subscribe(packet)
        elif isinstance(packet, Unsubscribe):
            self.on_unsubscribe(packet)
        elif isinstance(packet, PingReq):
            self.reply(encode(PingResp(), self.level))  # MQTT-3.12.4-1
        elif isinstance(packet, Disconnect):
            if self.acks:
                return self._defer_disconnect(packet)
            self._on_disconnect(packet)
        else:
            self.violation(0x82, f"unexpected {type(packet).__name__} packet")
        return None

    def _not_connected(self, packet: Packet) -> Step:
        if self.state == NEW:
            # MQTT-3.1.0-1: the first packet must be CONNECT
            log.info("peer %s: first packet is %s, not CONNECT", self.peer, type(packet).__name__)
            self.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)
        else:
            self.violation(0x82, f"{type(packet).__name__} before CONNACK")
        return None

    def _suspend(self, aw: Awaitable[None] | _Hold, rest: deque[Packet]) -> None:
        """Stop handling packets until ``aw`` is done; ``rest`` are handled after it."""
        self.backlog = rest
        if isinstance(aw, _Hold):
            self._pause_now()  # resumed by settled (or the connection ends)
            return
        self._maybe_pause()
        self.sessions.tasks.spawn(self._resume(aw), f"hub-conn-{self.client_id or self.peer}")

    async def _resume(self, aw: Awaitable[None]) -> None:
        try:
            await aw
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client %r: failure while processing a packet", self.client_id)
        backlog = self.backlog
        if backlog is not None and self.state != CLOSED:
            self._run(backlog)

    def _continue(self) -> None:
        backlog = self.backlog
        if backlog is not None and self.state != CLOSED:
            self._run(backlog)

    def _maybe_pause(self) -> None:
        backlog = self.backlog
        if backlog is not None and len(backlog) > _BACKLOG_PAUSE and not self.paused:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                self.paused = True
                transport.pause_reading()

    def _pause_now(self) -> None:
        transport = self.transport
        if not self.paused and transport is not None and not transport.is_closing():
            self.paused = True
            transport.pause_reading()

    def _unpause(self) -> None:
        self.paused = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    # -- ordered responses (pipelined acknowledgements) -----------------------------------------
    def reply(self, data: bytes) -> None:
        """Write a response, behind the pending acknowledgements if there are any."""
        acks = self.acks
        if acks:
            acks.append(data)
        else:
            self.write(data)

    def track(self, pending: list[Awaitable[None]], ack: PubAck | PubRec | None) -> Step:
        """Take a message whose handlers returned awaitables; its ack waits for them."""
        slot = _Pending(self, ack, len(pending))
        self.pending += 1
        if ack is not None:
            if type(ack) is PubAck:
                self.inflight_in += 1
            acks = self.acks
            if acks is None:
                acks = self.acks = deque()
            acks.append(slot)
        router = self.router
        tasks = router.tasks
        waiters = tasks.waiters
        as_future = tasks.as_future
        for aw in pending:
            future = as_future(aw)
            # one callback per future, however many messages wait for it
            slots = waiters.get(future)
            if slots is None:
                waiters[future] = [slot]
                future.add_done_callback(tasks.settle)
            else:
                slots.append(slot)
        if self.pending >= router.config.max_pending_acks:
            self.held = True
            return HOLD
        return None

    def settled(self, slot: _Pending) -> None:
        """All awaitables of ``slot`` are done: fill in its response, write what is ready."""
        ack = slot.ack
        if ack is None:  # QoS 0: nothing to answer
            self.pending -= 1
        elif slot.action is None:
            self.pending -= 1
            if type(ack) is PubAck:
                self.inflight_in -= 1
            if slot.failed and type(ack) is PubRec:
                session = self.session  # not stored: a resent message must be delivered
                if session is not None and session.qos2_in:
                    session.qos2_in.discard(ack.packet_id)
            if self.state == CLOSED:
                return  # nothing is written after the close, nothing pending acknowledged
            if slot.failed:
                if self.level == MQTT_5:
                    slot.data = encode(type(ack)(ack.packet_id, 0x80), MQTT_5)  # Unspecified
                # 3.1.1: data stays None -> disconnect when the slot reaches the head
            elif type(ack) is PubAck:
                slot.data = PUBACK_HEAD + ack.packet_id.to_bytes(2, "big")  # the codec's PUBACK
            else:
                slot.data = encode(ack, self.level)
            self._drain()
        if self.state == CLOSED:
            return
        if self.held and self.pending < self.router.config.max_pending_acks:
            self.held = False
            backlog = self.backlog
            if backlog is not None:
                try:
                    self._run(backlog)
                except Exception as exc:
                    self.internal_error(exc)

    def _drain(self) -> None:
        """Write the ready slots at the head of the response queue."""
        acks = self.acks
        while acks and self.state != CLOSED:
            head = acks[0]
            if type(head) is bytes:
                acks.popleft()
                self.write(head)
                continue
            assert isinstance(head, _Pending)
            if head.waiting:
                return
            acks.popleft()
            if head.action is not None:
                head.action()
            elif head.data is None:
                # 3.1.1 has no negative acknowledgement: close so that the client sends again
                self.end(DisconnectReason.SERVER_ERROR, publish_will=True)
            else:
                self.write(head.data)

    # -- DISCONNECT ----------------------------------------------------------------------------
    def _on_disconnect(self, p: Disconnect) -> None:
        publish_will = False
        if self.level == MQTT_5:
            requested = p.properties.session_expiry_interval
            if requested is not None:
                if self.session_expiry == 0 and requested != 0:
                    self.violation(0x82, "session expiry changed from 0")  # MQTT-3.14.2-2
                    return
                expiry = min(requested, self.router.config.max_session_expiry)
                self.session_expiry = None if expiry == 0xFFFFFFFF else expiry
            publish_will = p.reason_code == 0x04  # 5.0 3.14.2.1
        if not publish_will:
            self.will = None  # MQTT-3.14.4-3
        self.end(DisconnectReason.CLIENT_DISCONNECT, publish_will=publish_will)

    def _defer_disconnect(self, p: Disconnect) -> Step:
        """DISCONNECT with acknowledgements pending: close once they are written (bounded)."""
        acks = self.acks
        assert acks is not None
        if self.level == MQTT_5:
            requested = p.properties.session_expiry_interval
            if requested is not None and self.session_expiry == 0 and requested != 0:
                self._on_disconnect(p)  # a protocol violation (MQTT-3.14.2-2): close now
                return None
        if self.level != MQTT_5 or p.reason_code != 0x04:
            self.will = None  # MQTT-3.14.4-3, also if a pending message fails before the close
        slot = _Pending(self, None, 0)
        timer = asyncio.get_running_loop().call_later(_DISCONNECT_GRACE, self._disconnect_late, p)

        def action() -> None:
            timer.cancel()
            self._on_disconnect(p)

        slot.action = action
        acks.append(slot)
        return HOLD  # the client sends nothing after DISCONNECT (MQTT-3.14.4-1)

    def _disconnect_late(self, p: Disconnect) -> None:
        if self.state == CONNECTED:
            log.info("client %r: acknowledgements still pending at DISCONNECT", self.client_id)
            self._on_disconnect(p)

    # -- output --------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue ``data`` for writing (at the end of the event-loop iteration)."""
        out = self.out
        if out is None:
            if self.state == CLOSED:
                return
            self.out = [data]
            self.output.to_flush(self)
        else:
            out.append(data)
        self.out_size += len(data)

    def buffered(self) -> int:
        """Unsent output bytes (collected here plus, when writing is paused, in the transport)."""
        size = self.out_size
        if self.write_paused:
            transport = self.transport
            if transport is not None:
                size += transport.get_write_buffer_size()
        return size

    # -- ending --------------------------------------------------------------------------------
    def violation(self, reason_code: int, text: str) -> None:
        """A protocol violation: 5.0 gets DISCONNECT with ``reason_code``; then close."""
        log.warning("client %r (%s): protocol violation: %s", self.client_id, self.peer, text)
        if self.level == MQTT_5 and self.state == CONNECTED:
            self.write(encode(Disconnect(reason_code), MQTT_5))
        self.end(DisconnectReason.PROTOCOL_ERROR, publish_will=True)

    def internal_error(self, exc: Exception) -> None:
        """A bug while handling this client's packet: log it, drop only this connection."""
        log.error("client %r (%s): internal error", self.client_id, self.peer, exc_info=exc)
        self.violation(0x83, f"internal error: {exc}")

    def _decode_failed(self, exc: ProtocolError) -> None:
        if self.state == NEW and exc.reason_code == 0x84:
            # unsupported protocol level/name (MQTT-3.1.2-2): return code 1 in 3.1.1 format
            log.info("peer %s: unsupported protocol: %s", self.peer, exc)
            self.write(encode(ConnAck(False, 1), 4))
            self.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)
            return
        self.violation(exc.reason_code, f"{type(exc).__name__}: {exc}")

    def kick(self, reason_code: int, reason: DisconnectReason, *, publish_will: bool) -> None:
        """Disconnect the client (5.0 gets DISCONNECT with ``reason_code``)."""
        if self.level == MQTT_5 and self.state == CONNECTED:
            self.write(encode(Disconnect(reason_code), MQTT_5))
        self.end(reason, publish_will=publish_will)

    def end(self, reason: DisconnectReason, *, publish_will: bool) -> None:
        """Close the connection and settle the session (idempotent)."""
        state = self.state
        if state == CLOSED:
            return
        self.state = CLOSED
        self.acks = None  # pending acknowledgements are dropped: the client sends again
        self.sessions.closed(self, state == CONNECTED, reason, publish_will)
        self.will = None
        self.output.flush(self)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
