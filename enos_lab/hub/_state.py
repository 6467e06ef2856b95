"""The state the hub's parts share: connection states, a connection as the other parts see it
(:class:`Link`), and the state of a session that outlives its connection.

Objects here are small ``__slots__`` classes whose containers are created lazily, so an idle
session costs a few hundred bytes. The logic lives with the part that owns it: subscriptions and
delivery in :mod:`~enos_lab.hub._router`, the session table, expiry and wills in
:mod:`~enos_lab.hub._sessions`, the connection itself in :mod:`~enos_lab.hub._connection`.
It imports nothing of the hub but its value types, so that every part can import it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from enos_lab.hub._types import ClientInfo, DisconnectReason, SessionKey
    from enos_lab.mqtt._packets import Properties, Will

__all__ = [
    "CLOSED",
    "CONNECTED",
    "CONNECTING",
    "NEW",
    "QUEUED",
    "RELEASED",
    "SENT",
    "Link",
    "MessageLike",
    "Out",
    "Session",
    "Sub",
]

# Link.state: the states of a connection
NEW = 0  # waiting for CONNECT
CONNECTING = 1  # CONNECT received, authentication or CONNACK delay pending
CONNECTED = 2
CLOSED = 3

# Out.state values
QUEUED = 0  # waiting for an in-flight slot (or for the client to come back)
SENT = 1  # PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2)
RELEASED = 2  # PUBREL sent, waiting for PUBCOMP (QoS 2)


class MessageLike(Protocol):
    """What routing reads of a message: a :class:`~enos_lab.hub.Message` or, on the hot path,
    the received ``Publish`` packet itself (same field names, never modified)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...
    @property
    def properties(self) -> Properties: ...


class Link(Protocol):
    """A client connection as the router, the sessions, the output and the deadlines see it
    (:class:`~enos_lab.hub._connection.Connection` is the one implementation).

    ``out`` collects the connection's output until :class:`~enos_lab.hub._output.Output`
    writes it (``out_size`` bytes [bytes]); ``window`` is its outbound in-flight window and
    ``max_out`` the client's maximum packet size (0: none) [bytes]; ``created`` and ``last``
    are the times of the connection and of its last read on the hub's clock [s], ``ka_limit``
    the silence after which keep-alive closes it (0: never) [s], ``due`` the bucket of the
    deadlines it is filed in.
    """

    state: int
    level: int
    client_id: str
    peer: str
    info: ClientInfo | None
    session: Session | None
    session_expiry: int | None
    will: Will | None
    transport: asyncio.Transport | None
    out: list[bytes] | None
    out_size: int
    write_paused: bool
    window: int
    max_out: int
    created: float
    last: float
    ka_limit: float
    due: int

    def write(self, data: bytes) -> None:
        """Queue ``data`` for writing (at the end of the event-loop iteration)."""
        ...

    def buffered(self) -> int:
        """Unsent output bytes, collected and in the transport. [bytes]"""
        ...

    def kick(self, reason_code: int, reason: DisconnectReason, *, publish_will: bool) -> None:
        """Disconnect the client (5.0 gets DISCONNECT with ``reason_code``)."""
        ...

    def end(self, reason: DisconnectReason, *, publish_will: bool) -> None:
        """Close the connection and settle its session (idempotent)."""
        ...

    def internal_error(self, exc: Exception) -> None:
        """A bug while serving this client: log it and end only this connection."""
        ...


class Sub:
    """One subscription of a session (the value stored in the topic tree)."""

    __slots__ = ("no_local", "qos", "retain_as_published", "retain_handling", "session", "sub_id")

    def __init__(  # noqa: PLR0917
        self,
        session: Session,
        qos: int,
        no_local: bool,
        retain_as_published: bool,
        retain_handling: int,
        sub_id: int | None,
    ) -> None:
        self.session = session
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.sub_id = sub_id


class Out:
    """One outbound QoS 1/2 message of a session (queued or in flight)."""

    __slots__ = (
        "expires_at",
        "level5",
        "message",
        "packet_id",
        "prefix",
        "qos",
        "retain",
        "state",
        "sub_ids",
        "suffix",
    )

    def __init__(
        self,
        message: MessageLike,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        expires_at: float | None,
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.expires_at = expires_at  # on the hub's clock [s], or None
        self.packet_id = 0
        self.state = QUEUED
        # PUBLISH encoded when queued (shared with other receivers): prefix + packet id + suffix
        self.prefix: bytes | None = None
        self.suffix = b""
        self.level5 = False  # ``prefix``/``suffix`` are encoded for MQTT 5.0


class Session:
    """State of one session (a client id, of an identity if the client has one): subscriptions,
    packet ids, in-flight and queued messages."""

    __slots__ = (
        "conn",
        "expires_at",
        "expiry",
        "inflight",
        "info",
        "next_pid",
        "qos2_in",
        "queue",
        "subs",
    )

    def __init__(self, info: ClientInfo) -> None:
        self.info = info  # of the last connection: its session key, identity, permissions
        self.conn: Link | None = None
        self.subs: dict[str, Sub] | None = None  # full filter (incl. $share/...) -> sub
        self.inflight: dict[int, Out] | None = None  # packet id -> message, in send order
        self.queue: deque[Out] | None = None
        self.qos2_in: set[int] | None = None  # inbound QoS 2 ids awaiting PUBREL
        self.next_pid = 1
        self.expiry: int | None = 0  # [s] session expiry interval; None = never expires
        self.expires_at: float | None = None  # on the hub's clock [s], while offline

    @property
    def client_id(self) -> str:
        """The client id of the session."""
        return self.info.client_id

    @property
    def key(self) -> SessionKey:
        """The name of the session in the hub (:attr:`ClientInfo.session_key`)."""
        return self.info.session_key

    @property
    def identity(self) -> str | None:
        """The identity the session belongs to (``None``: the client has none)."""
        return self.info.identity

    def allocate_pid(self) -> int:
        """Next free outbound packet identifier (1..65535, MQTT-2.3.1-1)."""
        inflight = self.inflight
        pid = self.next_pid
        while True:
            nxt = pid + 1 if pid < 65535 else 1
            if inflight is None or pid not in inflight:
                self.next_pid = nxt
                return pid
            pid = nxt
