"""The :class:`Hub`: composes the parts of the server, owns their lifetime, and is the public
face (listeners, server-side publishing and delivery, extension points, statistics).

Theory of operation
-------------------
A hub is made of named parts, each in its own module, which talk to each other through their
public names (a connection holds its router, sessions and output in slots):

- :class:`~enos_lab.hub._connection.Connection` (``_connection.py``), one per client: reading,
  decoding, dispatch, ordered responses, writing, ending. Its packet handlers live in one
  module per packet family and are bound by :class:`_HubConnection` below: CONNECT in
  ``_connect.py``, PUBLISH and PUBREL in ``_publish.py``, SUBSCRIBE and UNSUBSCRIBE in
  ``_subscribe.py``, PUBACK, PUBREC and PUBCOMP in ``_acks.py``.
- :class:`~enos_lab.hub._router.Router` (``_router.py``): in-process handlers, subscriptions,
  routes, delivery to sessions (in-flight window, queue); retained messages in
  :class:`~enos_lab.hub._retained.RetainedStore` (``_retained.py``).
- :class:`~enos_lab.hub._sessions.Sessions` (``_sessions.py``): open connections, the session
  table, takeover, offline sessions and their expiry, wills, lifecycle events; the state objects
  in ``_state.py``.
- :class:`~enos_lab.hub._deadlines.Timeouts` (``_deadlines.py``): CONNECT timeouts and keep
  alive, checked per deadline; :class:`~enos_lab.hub._deadlines.Sweep`, the one timer for
  everything timed.
- :class:`~enos_lab.hub._output.Output` (``_output.py``): output written once per event-loop
  iteration, at the selector's flush point for the hub's own sockets (``_tcp.py``).
- :class:`~enos_lab.hub._tasks.Tasks` (``_tasks.py``): the hub's tasks and the futures of
  message handlers.

The wire-format shortcuts of the hot paths (pre-encoded PUBACK and CONNACK, PUBLISH encoded once
and patched per receiver) live beside the codec in :mod:`enos_lab.mqtt._wire`. There are no
per-connection tasks or timers: one sweep (:class:`~enos_lab.hub._deadlines.Sweep`, a timer on
the hub's clock armed at the next thing due) checks the deadlines, the delayed wills and
session expiry for everybody.

Time
----
The protocol's times are on the hub's clock (``Hub(clock=...)``, a :class:`~enos_lab.clock.Clock`;
:class:`~enos_lab.clock.SystemClock` by default): the connection's creation and last read
(taken on every read: with the system clock it is ``time.monotonic`` itself, as cheap as
before; a hub on another clock has a connection class of its own that reads it), the CONNECT
timeout and keep alive, delayed wills (5.0 will delay), session expiry, message expiry
intervals (5.0) and the age of retained messages. On a :class:`~enos_lab.clock.SimulatedClock`
these run in simulated time: advancing the clock fires them in order, each once the clock has
reached its time, however much or little real time passes. Four waits stay on real time (the
event loop's), because they pace I/O rather than keep protocol time: the grace a DISCONNECT
gives pending acknowledgements to be written (``_connection.py``), ``HubConfig.connack_delay``
(it lets a client get ready to read its CONNACK, ``_connect.py``), the pause before accepting
again after running out of file descriptors (``_tcp.py``) and the limit on a TLS handshake
(``_tls.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
from collections.abc import Callable, Mapping
from types import MappingProxyType

from enos_lab.clock import Clock, SystemClock
from enos_lab.errors import ClosedError, InvalidArgument, LimitExceeded
from enos_lab.hub import _acks, _connect, _publish, _subscribe
from enos_lab.hub._config import HubConfig, HubStats
from enos_lab.hub._connection import Connection
from enos_lab.hub._deadlines import Sweep, Timeouts
from enos_lab.hub._output import Output
from enos_lab.hub._router import ROUTE_CACHE_MAX, Router
from enos_lab.hub._sessions import Sessions
from enos_lab.hub._state import CONNECTED
from enos_lab.hub._tasks import Tasks
from enos_lab.hub._tcp import TcpServer
from enos_lab.hub._tls import TlsServer
from enos_lab.hub._transport import Listener, MemoryConnection
from enos_lab.hub._types import (
    Authenticator,
    Authoriser,
    ClientInfo,
    DisconnectReason,
    HandshakeFailed,
    HubEvent,
    Message,
    MessageHandler,
    SessionKey,
)
from enos_lab.mqtt._topics import validate_topic_name

__all__ = ["Hub"]

log = logging.getLogger("enos_lab.hub")


class _HubConnection(Connection):
    """A client connection with its packet handlers, one module per packet family."""

    __slots__ = ()

    on_connect = _connect.on_connect
    on_publish = _publish.on_publish
    on_pubrel = _publish.on_pubrel
    on_puback = _acks.on_puback
    on_pubacks = _acks.on_pubacks
    on_pubrec = _acks.on_pubrec
    on_pubcomp = _acks.on_pubcomp
    on_subscribe = _subscribe.on_subscribe
    on_unsubscribe = _subscribe.on_unsubscribe


class _ClockConnection(_HubConnection):
    """A connection of a hub whose clock is not the system clock: every read takes
    ``monotonic``, which the hub's own subclass sets (:func:`_connection_class`)."""

    __slots__ = ()

    def data_received(self, data: bytes, _now: Callable[[], float] | None = None) -> None:
        super().data_received(data, _now or self.monotonic)


def _connection_class(clock: Clock) -> type[_HubConnection]:
    """The connection class of a hub on ``clock``: :class:`_HubConnection` itself for the
    system clock (``time.monotonic``), else a subclass of :class:`_ClockConnection` whose
    ``monotonic`` is ``clock``'s (a class per hub: nothing per connection)."""
    monotonic = clock.monotonic
    if monotonic is _HubConnection.monotonic:
        return _HubConnection
    return type(
        "_HubConnection",
        (_ClockConnection,),
        {"__slots__": (), "monotonic": staticmethod(monotonic)},
    )


class Hub:
    """An asyncio MQTT 3.1.1 / 5.0 server with in-process extension points.

    Use ``async with Hub(config) as hub:`` (or :meth:`start` / :meth:`stop`), then
    :meth:`listen_tcp` and/or :meth:`connect_memory`. The authenticator decides on every
    CONNECT (with ``config.anonymous`` and no authenticator everything is accepted); the
    authoriser on every PUBLISH and SUBSCRIBE. Message handlers see every accepted PUBLISH.
    ``clock`` (default :class:`~enos_lab.clock.SystemClock`) keeps the protocol's times:
    CONNECT timeout, keep alive, will delay, session and message expiry (see the module
    docstring); on a :class:`~enos_lab.clock.SimulatedClock` they fire as the clock is advanced.
    """

    def __init__(
        self,
        config: HubConfig = HubConfig(),  # noqa: B008 - frozen, shared default is fine
        *,
        authenticator: Authenticator | None = None,
        authoriser: Authoriser | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        if clock is None:
            clock = SystemClock()
        self.clock: Clock = clock
        """The hub's clock: protocol times and the sweep (see the module docstring)."""
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._started = False
        self._closing = False
        self._listeners: list[Listener] = []
        self._tasks = Tasks()
        self._output = Output()
        self._router = Router(config, authoriser, self._output, self._tasks, clock)
        self._sweep = sweep = Sweep(clock)
        self._timeouts = Timeouts(config.connect_timeout, sweep.wake_by)
        self._sessions = Sessions(
            config, authenticator, self._router, self._timeouts, self._tasks, sweep=sweep
        )
        self._connection_class = _connection_class(clock)
        self._route = self._router.route  # publish_nowait's call per message, looked up once
        self._valid_topics: set[str] = set()  # topic names publish_nowait has validated

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the hub's background work (idempotent)."""
        if self._started:
            return
        self._loop = loop = asyncio.get_running_loop()
        self._tasks.start(loop)
        self._output.start(loop)
        self._router.start(loop)
        self._sessions.start()
        self._started = True
        self._closing = False
        self._sweep.start(self._timeouts.check, self._sessions.expire)

    async def stop(self) -> None:
        """Close listeners, disconnect every client (5.0: reason 0x8B) and end background work."""
        if not self._started or self._closing:
            return
        self._closing = self._sessions.closing = True
        for listener in list(self._listeners):
            await listener.close()
        self._sessions.close_all()
        self._sweep.stop()
        await self._tasks.cancel()
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

    def _new_connection(self) -> Connection:
        return self._connection_class(self._router, self._sessions, self._output)

    # -- listeners -------------------------------------------------------------------------
    async def listen_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl: _ssl.SSLContext | Callable[[], _ssl.SSLContext] | None = None,
    ) -> Listener:
        """Listen on ``host``:``port`` (0 = any free port; the listener reports the real one).

        ``host`` may resolve to several addresses (``"localhost"``, ``""`` for all
        interfaces): all are bound, with port 0 on one common free port. Plain TCP is served
        by the hub's own socket transport (:mod:`enos_lab.hub._tcp`; event loops without
        ``add_reader`` use ``loop.create_server``).

        With ``ssl`` the listener speaks TLS (:mod:`enos_lab.hub._tls`): ``ssl`` is a server
        ``SSLContext``, or a callable that returns the context for each new connection (so that
        a reissued CRL or certificate applies from the next handshake on). A handshake must
        complete within ``config.connect_timeout`` seconds (real time); at most
        ``config.max_tls_handshakes`` run at once. A failed handshake closes the connection
        and is told to the listeners as :class:`~enos_lab.hub.HandshakeFailed`. The
        certificate a client presented reaches the authenticator
        (:attr:`ConnectRequest.certificate <enos_lab.hub.ConnectRequest.certificate>`).
        """
        self._check_running()
        factory = self._new_connection
        server: TcpServer | TlsServer | asyncio.Server | None = None
        if ssl is not None:
            server = await TlsServer.start(
                factory,
                host,
                port,
                ssl,
                self.config.connect_timeout,
                self.config.max_tls_handshakes,
                self._handshake_failed,
            )
        else:
            try:
                server = await TcpServer.start(factory, host, port)
            except NotImplementedError:  # e.g. the proactor loop on Windows
                server = await self._loop.create_server(factory, host, port, reuse_address=True)
        sockname = server.sockets[0].getsockname()
        listener = Listener(server, host, int(sockname[1]), ssl is not None, self._drop_listener)
        self._listeners.append(listener)
        log.info("hub listening on %s", listener.url)
        return listener

    def _handshake_failed(self, peer: str, reason: str) -> None:
        self._sessions.emit(HandshakeFailed(peer, reason))

    def _drop_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def connect_memory(self) -> MemoryConnection:
        """Open an in-memory connection into the hub (same protocol code as TCP)."""
        self._check_running()
        return MemoryConnection(self._new_connection())

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
        return self._route(message, None)

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
            expires_at = self.clock.monotonic() + mei
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
        router = self._router
        return HubStats(
            connections=len(self._sessions.connections),
            messages_in=router.messages_in,
            messages_out=router.messages_out,
            bytes_in=self._output.bytes_in,
            bytes_out=self._output.bytes_out,
            dropped=router.dropped,
            sessions=len(self._sessions.sessions),
            retained=len(router.retained),
            retained_bytes=router.retained.bytes,
        )


def _validate_message(message: Message) -> None:
    if message.qos not in (0, 1, 2):
        raise InvalidArgument(f"qos must be 0, 1 or 2, got {message.qos}")
    validate_topic_name(message.topic)
