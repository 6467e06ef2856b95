"""The asyncio MQTT 3.1.1 / 5.0 server core.

Theory of operation
-------------------
Every connection (TCP, TLS or in-memory) is a :class:`_Connection`, an ``asyncio.Protocol``:
``data_received`` feeds the sans-IO decoder and handles the decoded packets synchronously, in
order, at most ``_BURST`` per connection per loop iteration (the rest waits in a backlog and
continues with ``call_soon``), so that one busy publisher cannot keep the acknowledgements of
other clients - which free their in-flight windows - waiting. An async authenticator (or the
CONNACK delay) makes the connection wait: the packets that follow stay in the backlog (reading
is paused when it grows) and a task owned by the hub resumes them.

Message handlers that return awaitables (for instance a store's commit future, so that PUBACK
means "stored") do not stop the connection: processing is pipelined. The hub keeps decoding and
handling the following packets while the awaitables run, so that a client's whole in-flight
window reaches the handlers (and a store can group it into one commit). Responses stay in
order (MQTT-4.6.0-2..4): as long as a message's acknowledgement (PUBACK / PUBREC) is pending,
every later response of the connection (acknowledgements, SUBACK, UNSUBACK, PUBCOMP, PINGRESP)
waits behind it in an ordered queue of response slots (``_Connection.acks``); a slot is
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

State that outlives a connection (subscriptions, packet ids, queued and in-flight messages)
lives in a :class:`~enos_lab.hub._session.Session`. Subscriptions are kept in two topic trees
(plain and shared); the result of matching a topic is cached per topic and the cache is
cleared whenever any subscription changes.

Output is collected per connection and written once per event-loop iteration (one
``transport.write`` per connection per iteration; one ``call_soon`` callback per iteration
writes every connection that got output, see :mod:`enos_lab.hub._output`). A PUBLISH is
encoded once per variant (protocol family, QoS, retain flag, subscription identifiers) and the
bytes are shared by every subscriber; for QoS > 0 only the packet identifier is patched in.
For 3.1.1 the codec encodes the topic part once per topic and only the fixed header is
computed per message (:func:`enos_lab.mqtt._wire.publish_311`).

A QoS 1 subscriber answers every message with a 4-byte PUBACK; a received chunk made of
nothing but such PUBACKs is unpacked by :func:`enos_lab.mqtt._wire.puback_ids` and applied to
the in-flight window in one loop (:meth:`_Connection._on_pubacks`), without packet objects; any
other chunk goes through the decoder.

There are no per-connection tasks or timers: one sweep task checks connect timeouts, keep
alive (MQTT-3.1.2-24), delayed wills and session expiry for everybody.

Bounds: QoS 0 output to a connection whose unsent output exceeds ``max_buffered_bytes`` is
dropped; QoS 1/2 messages beyond the in-flight window wait in the session queue, bounded by
``max_queued_messages``; everything dropped is counted in :attr:`Hub.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import ssl as _ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from time import monotonic as _monotonic
from types import MappingProxyType
from typing import Any, TypeAlias, cast

from enos_lab.errors import ClosedError, InvalidArgument, LimitExceeded, ProtocolError, TopicError
from enos_lab.hub._config import HubConfig, HubStats
from enos_lab.hub._deadlines import Timeouts
from enos_lab.hub._output import Output
from enos_lab.hub._router import ROUTE_CACHE_MAX, Router
from enos_lab.hub._sessions import Sessions
from enos_lab.hub._state import (
    CLOSED,
    CONNECTED,
    CONNECTING,
    NEW,
    RELEASED,
    MessageLike,
    Session,
    Sub,
)
from enos_lab.hub._tasks import Tasks
from enos_lab.hub._tcp import TcpServer
from enos_lab.hub._transport import Listener, MemoryConnection
from enos_lab.hub._types import (
    Authenticator,
    Authoriser,
    AuthResult,
    ClientConnected,
    ClientInfo,
    ConnectRequest,
    DisconnectReason,
    HubEvent,
    Message,
    MessageHandler,
    SessionKey,
    _make_message,
)
from enos_lab.mqtt._codec import Decoder, encode
from enos_lab.mqtt._packets import (
    MQTT_5,
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from enos_lab.mqtt._topics import parse_shared, validate_topic_filter
from enos_lab.mqtt._topics import validate_topic_name as _validate_topic_name
from enos_lab.mqtt._wire import (
    CONNACK_311,
    PUBACK_HEAD,
    connack_return_code,
    puback_ids,
)

__all__ = ["Hub"]

log = logging.getLogger("enos_lab.hub")

_BACKLOG_PAUSE = 256  # packets waiting behind a pending CONNECT before reading is paused
_BURST = 64  # packets handled per connection per loop iteration
_DISCONNECT_GRACE = 2.0  # [s] a DISCONNECT waits at most this long for pending acknowledgements

_PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}  # protocol level -> name in CONNECT


class _Hold:
    """Returned by packet handling: stop processing this connection's packets for now."""

    __slots__ = ()


_HOLD = _Hold()
_Step: TypeAlias = "Awaitable[None] | _Hold | None"


class _Pending:
    """A response slot waiting for the handler awaitables of one message (or a deferred action).

    ``ack`` is the acknowledgement to send on success (``None`` for QoS 0: no slot in the
    queue); ``waiting`` counts the awaitables not yet done; once it is 0, ``data`` holds the
    bytes to write (``None`` = close the 3.1.1 connection) unless ``action`` is set.
    """

    __slots__ = ("ack", "action", "conn", "data", "failed", "waiting")

    def __init__(self, conn: _Connection, ack: PubAck | PubRec | None, waiting: int) -> None:
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
            conn._settled(self)


def _peer_name(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "unknown"


class _Connection(asyncio.Protocol):
    """One client connection: decoding, per-packet handling and batched output."""

    __slots__ = (
        "acks",
        "backlog",
        "client_id",
        "created",
        "decoder",
        "due",
        "held",
        "hub",
        "inflight_in",
        "info",
        "ka_limit",
        "last",
        "level",
        "max_out",
        "out",
        "out_size",
        "paused",
        "peer",
        "pending",
        "session",
        "session_expiry",
        "state",
        "topic_aliases",
        "transport",
        "will",
        "window",
        "write_paused",
    )

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        # Typed as a full transport: event loops such as uvloop do not subclass asyncio's
        # transport classes, so no isinstance checks on it.
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(role="server", max_packet_size=hub.config.max_packet_size)
        self.state = NEW
        self.level = 4
        self.client_id = ""
        self.peer = "unknown"
        self.info: ClientInfo | None = None
        self.session: Session | None = None
        # time.monotonic(), not the loop's clock: taken for every read, it must be cheap
        self.created = self.last = _monotonic()
        self.due = 0  # the bucket of the deadlines (see _deadlines.py) it is filed in
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
        self.window = hub.config.max_inflight
        self.session_expiry: int | None = 0

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _peer_name(transport.get_extra_info("peername"))
        hub = self.hub
        if not hub._sessions.open(self):  # the hub is stopping
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

    def data_received(self, data: bytes) -> None:
        self.hub._output.bytes_in += len(data)
        self.last = _monotonic()
        state = self.state
        if state == CLOSED:
            return
        if (
            data[0] == 0x40
            and state == CONNECTED
            and self.backlog is None
            and self._on_pubacks(data)
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
            # the common read: one message (what _run does, for one PUBLISH)
            try:
                aw = self._on_publish(packets[0])
            except Exception as exc:
                self.internal_error(exc)
                return
            if aw is not None:
                self._suspend(aw, deque())
            return
        self._run(deque(packets))

    def _on_pubacks(self, data: bytes) -> bool:
        """A chunk of nothing but complete plain PUBACKs (what a QoS 1 subscriber sends), taken
        in bulk; False (nothing done) for anything else, which the decoder then handles."""
        if self.decoder.buffered:
            return False
        pids = puback_ids(data)
        if pids is None:
            return False
        session = self.session
        assert session is not None
        inflight = session.inflight
        if inflight:
            get = inflight.get
            for pid in pids:
                out = get(pid)
                if out is not None and out.qos == 1:
                    del inflight[pid]
        if session.queue:
            self.hub._router.pump(session, self)
        return True

    def _run(self, packets: deque[Packet], limit: int = _BURST) -> None:
        """Handle up to ``limit`` packets now; leave the rest for the next loop iteration.

        The limit keeps one busy connection from holding the loop: acknowledgements from
        other clients (which free their in-flight windows) are read in between.
        """
        handle = self._handle
        on_publish = self._on_publish
        on_puback = self._on_puback
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
            self.hub._loop.call_soon(self._continue)
            return
        self.backlog = None
        session = self.session
        if session is not None and session.queue:
            self.hub._router.pump(session, self)  # acknowledgements above freed in-flight slots
        if self.paused:
            self._unpause()

    def _suspend(self, aw: Awaitable[None] | _Hold, rest: deque[Packet]) -> None:
        """Stop handling packets until ``aw`` is done; ``rest`` are handled after it."""
        self.backlog = rest
        if isinstance(aw, _Hold):
            self._pause_now()  # resumed by _settled (or the connection ends)
            return
        self._maybe_pause()
        self.hub._tasks.spawn(self._resume(aw), f"hub-conn-{self.client_id or self.peer}")

    def _continue(self) -> None:
        backlog = self.backlog
        if backlog is not None and self.state != CLOSED:
            self._run(backlog)

    def _unpause(self) -> None:
        self.paused = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def internal_error(self, exc: Exception) -> None:
        """A bug while handling this client's packet: log it, drop only this connection."""
        log.error("client %r (%s): internal error", self.client_id, self.peer, exc_info=exc)
        self._violation(0x83, f"internal error: {exc}")

    def eof_received(self) -> bool | None:
        return None

    # -- processing machinery -------------------------------------------------------------
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

    # -- pipelined acknowledgements ---------------------------------------------------------
    def _reply(self, data: bytes) -> None:
        """Write a response, behind the pending acknowledgements if there are any."""
        acks = self.acks
        if acks:
            acks.append(data)
        else:
            self.write(data)

    def _settled(self, slot: _Pending) -> None:
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
                slot.data = PUBACK_HEAD + ack.packet_id.to_bytes(2, "big")
            else:
                slot.data = encode(ack, self.level)
            self._drain()
        if self.state == CLOSED:
            return
        if self.held and self.pending < self.hub.config.max_pending_acks:
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

    def _track(self, pending: list[Awaitable[None]], ack: PubAck | PubRec | None) -> _Step:
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
        hub = self.hub
        tasks = hub._tasks
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
        if self.pending >= self.hub.config.max_pending_acks:
            self.held = True
            return _HOLD
        return None

    def _defer_disconnect(self, p: Disconnect) -> _Step:
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
        timer = self.hub._loop.call_later(_DISCONNECT_GRACE, self._disconnect_late, p)

        def action() -> None:
            timer.cancel()
            self._on_disconnect(p)

        slot.action = action
        acks.append(slot)
        return _HOLD  # the client sends nothing after DISCONNECT (MQTT-3.14.4-1)

    def _disconnect_late(self, p: Disconnect) -> None:
        if self.state == CONNECTED:
            log.info("client %r: acknowledgements still pending at DISCONNECT", self.client_id)
            self._on_disconnect(p)

    def _handle(self, packet: Packet) -> _Step:
        kind = type(packet)
        if kind is Publish:
            if self.state != CONNECTED:
                return self._not_connected(packet)
            return self._on_publish(packet)  # type: ignore[arg-type]
        if kind is PubAck and self.state == CONNECTED:
            self._on_puback(packet)  # type: ignore[arg-type]
            return None
        if isinstance(packet, Connect):
            return self._on_connect(packet)
        if self.state != CONNECTED:
            return self._not_connected(packet)
        if isinstance(packet, PubAck):
            self._on_puback(packet)
        elif isinstance(packet, PubRec):
            self._on_pubrec(packet)
        elif isinstance(packet, PubRel):
            self._on_pubrel(packet)
        elif isinstance(packet, PubComp):
            self._on_pubcomp(packet)
        elif isinstance(packet, Subscribe):
            self._on_subscribe(packet)
        elif isinstance(packet, Unsubscribe):
            self._on_unsubscribe(packet)
        elif isinstance(packet, PingReq):
            self._reply(encode(PingResp(), self.level))  # MQTT-3.12.4-1
        elif isinstance(packet, Disconnect):
            if self.acks:
                return self._defer_disconnect(packet)
            self._on_disconnect(packet)
        else:
            self._violation(0x82, f"unexpected {type(packet).__name__} packet")
        return None

    def _not_connected(self, packet: Packet) -> _Step:
        if self.state == NEW:
            # MQTT-3.1.0-1: the first packet must be CONNECT
            log.info("peer %s: first packet is %s, not CONNECT", self.peer, type(packet).__name__)
            self.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)
        else:
            self._violation(0x82, f"{type(packet).__name__} before CONNACK")
        return None

    # -- output ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        out = self.out
        if out is None:
            if self.state == CLOSED:
                return
            self.out = [data]
            self.hub._output.to_flush(self)
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

    # -- ending ----------------------------------------------------------------------------
    def _violation(self, reason_code: int, text: str) -> None:
        """A protocol violation: 5.0 gets DISCONNECT with ``reason_code``; then close."""
        log.warning("client %r (%s): protocol violation: %s", self.client_id, self.peer, text)
        if self.level == MQTT_5 and self.state == CONNECTED:
            self.write(encode(Disconnect(reason_code), MQTT_5))
        self.end(DisconnectReason.PROTOCOL_ERROR, publish_will=True)

    def _decode_failed(self, exc: ProtocolError) -> None:
        if self.state == NEW and exc.reason_code == 0x84:
            # unsupported protocol level/name (MQTT-3.1.2-2): return code 1 in 3.1.1 format
            log.info("peer %s: unsupported protocol: %s", self.peer, exc)
            self.write(encode(ConnAck(False, 1), 4))
            self.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)
            return
        self._violation(exc.reason_code, f"{type(exc).__name__}: {exc}")

    def end(self, reason: DisconnectReason, *, publish_will: bool) -> None:
        """Close the connection and settle the session (idempotent)."""
        state = self.state
        if state == CLOSED:
            return
        self.state = CLOSED
        self.acks = None  # pending acknowledgements are dropped: the client sends again
        hub = self.hub
        hub._sessions.closed(self, state == CONNECTED, reason, publish_will)
        self.will = None
        hub._output.flush(self)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    # -- CONNECT ---------------------------------------------------------------------------
    def _refuse(self, level: int, reason_code: int, text: str) -> None:
        log.info("client %r (%s): CONNECT refused: %s", self.client_id, self.peer, text)
        if level == MQTT_5:
            self.write(encode(ConnAck(False, reason_code), MQTT_5))
        else:
            self.write(encode(ConnAck(False, connack_return_code(reason_code)), level))
        self.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)

    def _on_connect(self, p: Connect) -> Awaitable[None] | None:
        if self.state != NEW:
            self._violation(0x82, "second CONNECT")  # MQTT-3.1.0-2
            return None
        self.state = CONNECTING
        level = p.protocol_level
        self.client_id = p.client_id
        hub = self.hub
        expected = _PROTOCOL_NAMES.get(level)
        if expected is None or p.protocol_name != expected:
            # MQTT-3.1.2-2 / 5.0 3.1.2.2
            self._refuse(level if level == MQTT_5 else 4, 0x84, f"protocol level {level}")
            return None
        self.level = level
        client_id = p.client_id
        assigned: str | None = None
        if not client_id:
            if level == MQTT_5 or (level == 4 and p.clean_start):
                client_id = hub._sessions.assign_client_id()  # MQTT-3.1.3-6, 5.0 3.1.3.1
                assigned = client_id if level == MQTT_5 else None
            else:
                self._refuse(level, 0x85, "empty client id without clean session")  # 3.1.3-8
                return None
        if "+" in client_id or "#" in client_id or (level == 3 and len(client_id) > 23):
            self._refuse(level, 0x85, f"client id {client_id!r} not allowed")
            return None
        props = p.properties
        if level == MQTT_5 and props.authentication_method is not None:
            self._refuse(level, 0x8C, "enhanced authentication is not supported")
            return None
        tls = self.transport is not None and (
            self.transport.get_extra_info("sslcontext") is not None
        )
        authenticator = hub._sessions.authenticator
        result: AuthResult | Awaitable[AuthResult]
        if authenticator is not None:
            request = ConnectRequest(
                client_id, p.username, p.password, level, self.peer, tls, props
            )
            try:
                result = authenticator.authenticate(request)
            except Exception:
                log.exception("client %r: authenticator failed", client_id)
                result = AuthResult(False, 0x80)
        elif hub.config.anonymous:
            result = AuthResult(True)
        else:
            result = AuthResult(False, 0x87)
        if (type(result) is not AuthResult and inspect.isawaitable(result)) or (
            hub.config.connack_delay > 0
        ):
            return self._connect_async(p, client_id, assigned, result)
        assert isinstance(result, AuthResult)
        self._finish_connect(p, client_id, assigned, result)
        return None

    async def _connect_async(
        self,
        p: Connect,
        client_id: str,
        assigned: str | None,
        result: AuthResult | Awaitable[AuthResult],
    ) -> None:
        if not isinstance(result, AuthResult):
            try:
                result = await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("client %r: authenticator failed", client_id)
                result = AuthResult(False, 0x80)
        delay = self.hub.config.connack_delay
        if delay > 0:
            await asyncio.sleep(delay)
        if self.state == CONNECTING:
            self._finish_connect(p, client_id, assigned, result)

    def _finish_connect(
        self, p: Connect, client_id: str, assigned: str | None, result: AuthResult
    ) -> None:
        level = self.level
        if not result.accepted:
            code = result.reason_code if result.reason_code >= 0x80 else 0x87
            self._refuse(level, code, f"authentication refused (0x{code:02X})")
            return
        if result.client_id is not None and result.client_id != client_id:
            client_id = result.client_id
            if level == MQTT_5:
                assigned = client_id
        hub = self.hub
        cfg = hub.config
        self.client_id = client_id
        props = p.properties
        keep_alive = p.keep_alive
        connack_props: dict[str, Any] = {}
        if level == MQTT_5:
            if assigned is not None:
                connack_props["assigned_client_identifier"] = assigned
            if cfg.server_keep_alive is not None:
                keep_alive = cfg.server_keep_alive
                connack_props["server_keep_alive"] = keep_alive
            requested = props.session_expiry_interval or 0
            expiry = min(requested, cfg.max_session_expiry)
            if expiry != requested:
                connack_props["session_expiry_interval"] = expiry
            self.session_expiry = None if expiry == 0xFFFFFFFF else expiry
            if props.receive_maximum is not None:
                self.window = min(cfg.max_inflight, props.receive_maximum)
            if props.maximum_packet_size is not None:
                self.max_out = props.maximum_packet_size
            if cfg.receive_maximum != 65535:
                connack_props["receive_maximum"] = cfg.receive_maximum
            if cfg.topic_alias_maximum:
                connack_props["topic_alias_maximum"] = cfg.topic_alias_maximum
            connack_props["maximum_packet_size"] = cfg.max_packet_size
        else:
            self.session_expiry = 0 if p.clean_start else cfg.session_expiry_v311
        self.ka_limit = keep_alive * cfg.keep_alive_factor
        info = ClientInfo(
            client_id,
            level,
            p.username,
            self.peer,
            p.clean_start,
            keep_alive,
            result.attributes,
            client_id if result.identity is None else (result.identity, client_id),
        )
        self.info = info
        if p.will is not None:
            self.will = p.will
        session_present = hub._sessions.attach(self, p.clean_start)
        self.state = CONNECTED
        if level == MQTT_5:
            properties = Properties(**connack_props) if connack_props else NO_PROPERTIES
            self.write(encode(ConnAck(session_present, 0, properties), level))
        else:
            self.write(CONNACK_311[session_present])
        log.info(
            "client %r connected from %s (MQTT level %d, session present %s)",
            client_id,
            self.peer,
            level,
            session_present,
        )
        session = self.session
        assert session is not None
        hub._router.resume(session, self)
        hub._sessions.emit(ClientConnected(info, session_present))

    # -- PUBLISH in ------------------------------------------------------------------------
    def _on_publish(self, p: Publish) -> _Step:
        hub = self.hub
        hub._router.messages_in += 1
        topic = p.topic
        props = p.properties
        if props is not NO_PROPERTIES and self.level == MQTT_5:
            alias = props.topic_alias
            if alias is not None:
                if alias == 0 or alias > hub.config.topic_alias_maximum:
                    self._violation(0x94, f"topic alias {alias} out of range")
                    return None
                aliases = self.topic_aliases
                if aliases is None:
                    aliases = self.topic_aliases = {}
                if topic:
                    aliases[alias] = topic
                else:
                    known = aliases.get(alias)
                    if known is None:
                        self._violation(0x82, f"unknown topic alias {alias}")
                        return None
                    topic = known
                props = replace(props, topic_alias=None)
        if not topic:
            self._violation(0x82, "PUBLISH without topic")
            return None
        qos = p.qos
        session = self.session
        assert session is not None
        pid = p.packet_id
        if qos == 2:
            qos2 = session.qos2_in
            if qos2 is not None and pid in qos2:
                # MQTT-4.3.3-9: duplicate of a message not yet released; do not deliver again
                self._reply(encode(PubRec(pid), self.level))
                return None
        if qos and self.level == MQTT_5:
            unacked = self.inflight_in + (len(session.qos2_in) if session.qos2_in else 0)
            if unacked >= hub.config.receive_maximum:
                self._violation(0x93, "receive maximum exceeded")  # MQTT-3.3.4-9
                return None
        reason = 0
        info = self.info
        assert info is not None
        if topic[0] == "$":
            reason = 0x87  # clients may not publish to $-topics
            log.info("client %r: publish to %r denied", self.client_id, topic)
        else:
            authoriser = hub._router.authoriser
            if authoriser is not None:
                decision = authoriser.authorise_publish(info, topic, qos, p.retain)
                if not decision.allowed:
                    reason = decision.reason_code
                    log.info(
                        "client %r: publish to %r denied: %s",
                        self.client_id,
                        topic,
                        decision.reason,
                    )
        pending: list[Awaitable[None]] | None = None
        if (
            reason == 0
            and p.retain
            and not hub._router.retain(_make_message(topic, p.payload, qos, True, props), info)
        ):
            reason = 0x97  # Quota exceeded: neither retained nor delivered
            log.info(
                "client %r: retained message on %r refused: the client keeps %d messages / "
                "%d bytes at most, the hub %d / %d",
                self.client_id,
                topic,
                hub.config.max_retained_per_client,
                hub.config.max_retained_bytes_per_client,
                hub.config.max_retained_messages,
                hub.config.max_retained_bytes,
            )
        if reason == 0:
            if hub._router.handlers:
                msg: MessageLike = _make_message(topic, p.payload, qos, p.retain, props)
                pending = hub._router.call_handlers(info, msg)  # type: ignore[arg-type]
            elif topic is p.topic and props is p.properties:
                msg = p  # route the packet itself: it has the fields of a Message
            else:
                msg = _make_message(topic, p.payload, qos, p.retain, props)
            hub._router.route(msg, session)
        if qos == 0:
            if pending is not None:
                return self._track(pending, None)
            return None
        level = self.level
        rc = reason if level == MQTT_5 else 0
        if qos == 1 and rc == 0 and pending is None:
            data = PUBACK_HEAD + pid.to_bytes(2, "big")  # the common case, pre-encoded
            if self.acks:
                self.acks.append(data)  # behind pending acknowledgements (MQTT-4.6.0-2)
            else:
                self.write(data)
            return None
        if qos == 1:
            ack: PubAck | PubRec = PubAck(pid, rc)
        else:
            ack = PubRec(pid, rc)
            if rc < 0x80:
                if session.qos2_in is None:
                    session.qos2_in = set()
                session.qos2_in.add(pid)
        if pending is not None:
            return self._track(pending, ack)
        self._reply(encode(ack, level))
        return None

    def _on_pubrel(self, p: PubRel) -> None:
        session = self.session
        assert session is not None
        qos2 = session.qos2_in
        if qos2 is not None and p.packet_id in qos2:
            qos2.discard(p.packet_id)
            self._reply(encode(PubComp(p.packet_id), self.level))
        else:
            # 5.0: Packet Identifier not found; 3.1.1: complete anyway (MQTT-4.3.3-?)
            rc = 0x92 if self.level == MQTT_5 else 0
            self._reply(encode(PubComp(p.packet_id, rc), self.level))

    # -- acknowledgements of our PUBLISH ---------------------------------------------------
    def _on_puback(self, p: PubAck) -> None:
        session = self.session
        assert session is not None
        inflight = session.inflight
        if inflight is not None:
            out = inflight.get(p.packet_id)
            if out is not None and out.qos == 1:
                del inflight[p.packet_id]

    def _on_pubrec(self, p: PubRec) -> None:
        session = self.session
        assert session is not None
        inflight = session.inflight
        out = inflight.get(p.packet_id) if inflight is not None else None
        if out is None or out.qos != 2:
            if self.level == MQTT_5:
                self.write(encode(PubRel(p.packet_id, 0x92), MQTT_5))
            else:
                self.write(encode(PubRel(p.packet_id), self.level))
            return
        assert inflight is not None
        if p.reason_code >= 0x80:
            del inflight[p.packet_id]  # 5.0 4.3.3: the exchange ends here
            return
        out.state = RELEASED
        self.write(encode(PubRel(p.packet_id), self.level))

    def _on_pubcomp(self, p: PubComp) -> None:
        session = self.session
        assert session is not None
        inflight = session.inflight
        if inflight is not None:
            out = inflight.get(p.packet_id)
            if out is not None and out.state == RELEASED:
                del inflight[p.packet_id]

    # -- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------
    def _on_subscribe(self, p: Subscribe) -> None:
        hub = self.hub
        session = self.session
        info = self.info
        assert session is not None and info is not None
        level = self.level
        sub_id: int | None = None
        if level == MQTT_5 and p.properties.subscription_identifiers:
            sub_id = p.properties.subscription_identifiers[0]
        codes: list[int] = []
        retained: list[tuple[str, Sub]] = []
        max_subscriptions = hub.config.max_subscriptions
        for s in p.subscriptions:
            topic_filter = s.topic_filter
            try:
                validate_topic_filter(topic_filter)
                group, inner = parse_shared(topic_filter)
            except TopicError as exc:
                log.info("client %r: bad topic filter %r: %s", self.client_id, topic_filter, exc)
                codes.append(0x8F if level == MQTT_5 else 0x80)
                continue
            if group is not None and s.no_local:
                self._violation(0x82, "no local on a shared subscription")  # MQTT-3.8.3-4
                return
            subs = session.subs
            if subs and topic_filter not in subs and len(subs) >= max_subscriptions:
                log.info(
                    "client %r: subscribe to %r refused: %d subscriptions is the limit",
                    self.client_id,
                    topic_filter,
                    max_subscriptions,
                )
                codes.append(0x97 if level == MQTT_5 else 0x80)  # Quota exceeded
                continue
            authoriser = hub._router.authoriser
            if authoriser is not None:
                decision = authoriser.authorise_subscribe(info, topic_filter, s.qos)
                if not decision.allowed:
                    log.info(
                        "client %r: subscribe to %r denied: %s",
                        self.client_id,
                        topic_filter,
                        decision.reason,
                    )
                    codes.append(decision.reason_code if level == MQTT_5 else 0x80)
                    continue
            qos = min(s.qos, 2)
            rap = s.retain_as_published if level == MQTT_5 else False
            rh = int(s.retain_handling) if level == MQTT_5 else 0
            sub = Sub(session, qos, s.no_local and level == MQTT_5, rap, rh, sub_id)
            existed = hub._router.subscribe(session, topic_filter, group, inner, sub)
            codes.append(qos)
            # MQTT-3.3.1-6 / 5.0 3.3.1.3: retained messages on subscribe, never for shared ones
            if group is None and (rh == 0 or (rh == 1 and not existed)):
                retained.append((inner, sub))
        self._reply(encode(SubAck(p.packet_id, tuple(codes)), level))
        for inner, sub in retained:
            hub._router.send_retained(session, inner, sub)

    def _on_unsubscribe(self, p: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes: list[int] = []
        for topic_filter in p.topic_filters:
            removed = self.hub._router.unsubscribe(session, topic_filter)
            codes.append(0 if removed else 0x11)
        if self.level != MQTT_5:
            codes = []
        self._reply(encode(UnsubAck(p.packet_id, tuple(codes)), self.level))

    # -- DISCONNECT ------------------------------------------------------------------------
    def _on_disconnect(self, p: Disconnect) -> None:
        publish_will = False
        if self.level == MQTT_5:
            requested = p.properties.session_expiry_interval
            if requested is not None:
                if self.session_expiry == 0 and requested != 0:
                    self._violation(0x82, "session expiry changed from 0")  # MQTT-3.14.2-2
                    return
                expiry = min(requested, self.hub.config.max_session_expiry)
                self.session_expiry = None if expiry == 0xFFFFFFFF else expiry
            publish_will = p.reason_code == 0x04  # 5.0 3.14.2.1
        if not publish_will:
            self.will = None  # MQTT-3.14.4-3
        self.end(DisconnectReason.CLIENT_DISCONNECT, publish_will=publish_will)

    # -- commands from the hub -------------------------------------------------------------
    def kick(self, reason_code: int, reason: DisconnectReason, *, publish_will: bool) -> None:
        if self.level == MQTT_5 and self.state == CONNECTED:
            self.write(encode(Disconnect(reason_code), MQTT_5))
        self.end(reason, publish_will=publish_will)


class Hub:
    """An asyncio MQTT 3.1.1 / 5.0 server with in-process extension points.

    Use ``async with Hub(config) as hub:`` (or :meth:`start` / :meth:`stop`), then
    :meth:`listen_tcp` and/or :meth:`connect_memory`. The authenticator decides on every
    CONNECT (with ``config.anonymous`` and no authenticator everything is accepted); the
    authoriser on every PUBLISH and SUBSCRIBE. Message handlers see every accepted PUBLISH.
    """

    def __init__(
        self,
        config: HubConfig = HubConfig(),  # noqa: B008 - frozen, shared default is fine
        *,
        authenticator: Authenticator | None = None,
        authoriser: Authoriser | None = None,
    ) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._started = False
        self._closing = False
        self._tasks = Tasks()
        self._output = Output()
        self._router = Router(config, authoriser, self._output, self._tasks)
        self._sweeper: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self._timeouts = Timeouts(config.connect_timeout)
        self._sessions = Sessions(config, authenticator, self._router, self._timeouts, self._tasks)
        self._valid_topics: set[str] = set()  # topic names publish_nowait has validated

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the hub's background work (idempotent)."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._output.start(self._loop)
        self._tasks.start(self._loop)
        self._router.start(self._loop)
        self._sessions.start(self._loop)
        self._started = True
        self._closing = False
        self._sweeper = self._loop.create_task(self._sweep(), name="hub-sweep")

    async def stop(self) -> None:
        """Close listeners, disconnect every client (5.0: reason 0x8B) and end background work."""
        if not self._started or self._closing:
            return
        self._closing = self._sessions.closing = True
        for listener in list(self._listeners):
            await listener.close()
        self._sessions.close_all()
        await self._tasks.cancel(*([self._sweeper] if self._sweeper is not None else []))
        self._sweeper = None
        await asyncio.sleep(0)  # let transports run their close callbacks
        self._started = False

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _check_running(self) -> None:
        if not self._started or self._closing:
            raise ClosedError("the hub is not running (call start() first)")

    # -- listeners -------------------------------------------------------------------------
    async def listen_tcp(
        self, host: str = "127.0.0.1", port: int = 0, *, ssl: _ssl.SSLContext | None = None
    ) -> Listener:
        """Listen on ``host``:``port`` (0 = any free port; the listener reports the real one).

        ``host`` may resolve to several addresses (``"localhost"``, ``""`` for all
        interfaces): all are bound, with port 0 on one common free port. Plain TCP is served
        by the hub's own socket transport (:mod:`enos_lab.hub._tcp`); TLS, and event loops
        without ``add_reader``, by ``loop.create_server``.
        """
        self._check_running()

        def factory() -> _Connection:
            return _Connection(self)

        server: TcpServer | asyncio.Server | None = None
        if ssl is None:
            try:
                server = await TcpServer.start(factory, host, port)
            except NotImplementedError:  # e.g. the proactor loop on Windows
                server = None
        if server is None:
            server = await self._loop.create_server(
                factory, host, port, ssl=ssl, reuse_address=True
            )
        sockname = server.sockets[0].getsockname()
        listener = Listener(server, host, int(sockname[1]), ssl is not None, self._drop_listener)
        self._listeners.append(listener)
        log.info("hub listening on %s", listener.url)
        return listener

    def _drop_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def connect_memory(self) -> MemoryConnection:
        """Open an in-memory connection into the hub (same protocol code as TCP)."""
        self._check_running()
        return MemoryConnection(_Connection(self))

    # -- extension points ------------------------------------------------------------------
    def add_handler(self, handler: MessageHandler) -> None:
        """Call ``handler(client, message)`` for every PUBLISH accepted from a client."""
        self._router.handlers = (*self._router.handlers, handler)

    def remove_handler(self, handler: MessageHandler) -> None:
        """Stop calling ``handler`` (no error if it was not added)."""
        self._router.handlers = tuple(h for h in self._router.handlers if h is not handler)

    def add_listener(self, callback: Callable[[HubEvent], None]) -> None:
        """Call ``callback(event)`` for every lifecycle event (connected, disconnected)."""
        self._sessions.listeners.append(callback)

    # -- server-side operations ------------------------------------------------------------
    async def publish(self, message: Message) -> int:
        """Publish ``message`` from the server; returns the number of sessions it reached.

        Retained messages are stored (an empty payload clears the topic). Message handlers are
        not called for server-originated messages.
        """
        return self.publish_nowait(message)

    def publish_nowait(self, message: Message) -> int:
        """:meth:`publish` as a plain call, for code already running on the hub's event loop.

        The message is routed (and its bytes queued for every subscriber) before this returns;
        message handlers, for instance, answer with it without a coroutine per reply.
        """
        self._check_running()
        topic = message.topic
        if topic not in self._valid_topics or message.qos not in (0, 1, 2):
            _validate_message(message)
            valid = self._valid_topics
            if len(valid) >= ROUTE_CACHE_MAX:
                valid.clear()
            valid.add(topic)
        if message.retain and not self._router.retain(message, None):
            raise LimitExceeded(
                f"retained message on {topic!r} ({len(message.payload)} bytes) refused: the hub "
                f"keeps at most {self.config.max_retained_messages} retained messages and "
                f"{self.config.max_retained_bytes} bytes (HubConfig.max_retained_*)"
            )
        return self._router.route(message, None)

    async def deliver(self, key: SessionKey, message: Message) -> bool:
        """Send ``message`` to one connected client without any subscription.

        ``key`` names the client's session (:attr:`ClientInfo.session_key`: its client id, or
        ``(identity, client_id)``). Returns False if that client is not connected. Packet ids
        come from that session.
        """
        self._check_running()
        _validate_message(message)
        conn = self._sessions.clients.get(key)
        if conn is None or conn.state != CONNECTED or conn.session is None:
            return False
        expires_at = None
        mei = message.properties.message_expiry_interval
        if mei is not None:
            expires_at = self._loop.time() + mei
        self._router.send(conn.session, message, message.qos, message.retain, (), {}, expires_at)
        return True

    async def disconnect_client(self, key: SessionKey, reason_code: int = 0x98) -> bool:
        """Disconnect a client (5.0 gets DISCONNECT with ``reason_code``). False if unknown.

        ``key`` is the client's :attr:`ClientInfo.session_key`.
        """
        conn = self._sessions.clients.get(key)
        if conn is None:
            return False
        log.info("client %r: disconnected by the server (0x%02X)", conn.client_id, reason_code)
        conn.kick(reason_code, DisconnectReason.KICKED, publish_will=True)
        return True

    def end_identity(self, identity: str, reason_code: int = 0x87) -> int:
        """Disconnect every client of ``identity`` and forget all its sessions (subscriptions,
        queued messages, delayed wills): for a device that is disabled or deleted, whose
        persistent sessions must not keep collecting messages. 5.0 clients get DISCONNECT with
        ``reason_code``. Returns the number of sessions ended. Call on the hub's loop."""
        return self._sessions.end_identity(identity, reason_code)

    def permissions_changed(self) -> None:
        """Say that the authoriser's answers to ``authorise_receive`` may have changed (a
        sub-device moved to another gateway, a device was disabled ...): who receives a topic is
        worked out again from the next message on, for connected and offline sessions alike.
        Call on the hub's loop."""
        self._router.permissions_changed()

    @property
    def clients(self) -> Mapping[SessionKey, ClientInfo]:
        """Connected clients by session key (:attr:`ClientInfo.session_key`; a snapshot)."""
        return MappingProxyType(
            {key: c.info for key, c in self._sessions.clients.items() if c.info is not None}
        )

    @property
    def stats(self) -> HubStats:
        """Counters since the hub was created (see :class:`HubStats`)."""
        return HubStats(
            connections=len(self._sessions.connections),
            messages_in=self._router.messages_in,
            messages_out=self._router.messages_out,
            bytes_in=self._output.bytes_in,
            bytes_out=self._output.bytes_out,
            dropped=self._router.dropped,
            sessions=len(self._sessions.sessions),
            retained=len(self._router.retained),
            retained_bytes=self._router.retained.bytes,
        )

    # -- sweep -----------------------------------------------------------------------------
    async def _sweep(self) -> None:
        """Every interval: keep-alive and CONNECT timeouts, delayed wills, session expiry.

        Only the connections whose deadline has come are looked at (see
        :class:`~enos_lab.hub._deadlines.Timeouts`), so an idle fleet costs nothing between its
        deadlines.
        """
        timeouts = self._timeouts
        sessions = self._sessions
        interval = timeouts.interval
        loop = self._loop
        while True:
            await asyncio.sleep(interval)
            timeouts.check(_monotonic())
            sessions.expire(loop.time())


def _validate_message(message: Message) -> None:
    if message.qos not in (0, 1, 2):
        raise InvalidArgument(f"qos must be 0, 1 or 2, got {message.qos}")
    _validate_topic_name(message.topic)
