"""Value objects and extension-point protocols of the hub.

Glossary: ``client_id`` is the MQTT client identifier; ``identity`` who the authenticator says
the client is (for EnOS logins the user name ``"{device_key}&{product_key}"``); ``session_key``
the name under which the hub keeps a client's session: its client id, or ``(identity,
client_id)`` for a client with an identity, so that a client id alone never reaches the session
of another identity; ``protocol_level`` 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0); ``peer`` is
``"host:port"`` for TCP connections and ``"memory"`` for the in-memory transport;
``reason_code`` an MQTT 5.0 reason code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Protocol, TypeAlias

from enos_lab.mqtt._packets import NO_PROPERTIES, Properties

__all__ = [
    "AuthResult",
    "Authenticator",
    "Authoriser",
    "ClientConnected",
    "ClientDisconnected",
    "ClientInfo",
    "ConnectRequest",
    "Decision",
    "DisconnectReason",
    "HandshakeFailed",
    "HubEvent",
    "Message",
    "MessageHandler",
    "SessionKey",
]

_EMPTY: Mapping[str, object] = MappingProxyType({})

SessionKey: TypeAlias = "str | tuple[str, str]"
"""The name of a session in the hub: the client id of a client without identity, or
``(identity, client_id)`` (see :attr:`ClientInfo.session_key`)."""


@dataclass(frozen=True, slots=True)
class Message:
    """An application message, independent of packet identifiers.

    ``properties`` are the MQTT 5.0 properties that travel with the message (message expiry
    interval, response topic, correlation data, user properties, ...).
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


_new = object.__new__
_slot = vars(Message)  # the slot descriptors set fields without the frozen __setattr__
_set_topic = _slot["topic"].__set__
_set_payload = _slot["payload"].__set__
_set_qos = _slot["qos"].__set__
_set_retain = _slot["retain"].__set__
_set_properties = _slot["properties"].__set__


def _make_message(
    topic: str, payload: bytes, qos: int, retain: bool, properties: Properties
) -> Message:
    """``Message(...)`` for the hot path: same object, half the cost of the frozen ``__init__``."""
    message: Message = _new(Message)
    _set_topic(message, topic)
    _set_payload(message, payload)
    _set_qos(message, qos)
    _set_retain(message, retain)
    _set_properties(message, properties)
    return message


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A connected client as the hub sees it.

    ``attributes`` are whatever the authenticator attached (for example the device record);
    ``session_key`` names the client's session, and :attr:`identity` says who the
    authenticator says the client is (``None``: no identity, for instance on an anonymous hub);
    ``keep_alive`` is the effective keep-alive interval. [s]
    """

    client_id: str
    protocol_level: int
    username: str | None
    peer: str
    clean_start: bool
    keep_alive: int
    attributes: Mapping[str, object] = field(default_factory=lambda: _EMPTY)
    session_key: SessionKey = ""
    """The name of the client's session in the hub: ``client_id`` for a client without
    identity (also when left empty), else ``(identity, client_id)``. :meth:`Hub.deliver`,
    :meth:`Hub.disconnect_client` and :attr:`Hub.clients` use it."""

    def __post_init__(self) -> None:
        if not self.session_key:
            object.__setattr__(self, "session_key", self.client_id)

    @property
    def identity(self) -> str | None:
        """Who the authenticator says the client is; ``None`` without identity."""
        key = self.session_key
        return None if type(key) is str else key[0]


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What an authenticator sees of a CONNECT.

    ``tls`` is True on an encrypted listener; ``certificate`` is then the client's certificate
    (DER) if it presented one, already verified by the TLS handshake against the listener's
    trusted CAs (and CRL, if the context has one), ``None`` otherwise.
    """

    client_id: str
    username: str | None
    password: bytes | None
    protocol_level: int
    peer: str
    tls: bool
    properties: Properties = NO_PROPERTIES
    certificate: bytes | None = None


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of an authentication.

    ``reason_code`` is the MQTT 5.0 CONNACK reason code of a refusal; 3.1.1 clients get the
    mapped return code (0x86 -> 4, 0x85 -> 2, 0x88/0x89 -> 3, anything else -> 5).
    ``client_id`` replaces (or assigns) the client identifier when set. ``identity`` names who
    the client is (for EnOS logins the user name ``"{device_key}&{product_key}"``): the session
    then belongs to that identity, not to the client id string, so a client that authenticates
    as someone else with the same client id neither resumes nor takes over this one's session;
    and the number of sessions an identity keeps offline is bounded
    (``HubConfig.max_offline_sessions``).
    """

    accepted: bool
    reason_code: int = 0
    client_id: str | None = None
    attributes: Mapping[str, object] = field(default_factory=lambda: _EMPTY)
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """An access-control decision: allowed, or denied with a 5.0 reason code and a reason.

    ``forward`` (of an allowed publish): whether the message also goes to the subscribers;
    ``False``: to the in-process message handlers only (a request they answer with a refusal
    of their own, which no subscriber may read as if it had been accepted)."""

    allowed: bool
    reason_code: int = 0x87
    reason: str = ""
    forward: bool = True


class Authenticator(Protocol):
    """Decides whether a CONNECT is accepted (``authenticate`` may be sync or async)."""

    def authenticate(self, request: ConnectRequest) -> AuthResult | Awaitable[AuthResult]:
        """Return (or resolve to) the outcome for ``request``."""
        ...


class Authoriser(Protocol):
    """Decides per publish and per subscription whether a client may do it, and per topic
    whether a subscribed client may receive it.

    ``authorise_receive`` is asked when the hub works out who receives a topic (once per topic
    until :meth:`Hub.permissions_changed` says that answers may have changed), also for a
    session whose client is offline (``client`` is then its last connection's info): what a
    session was allowed to subscribe to is not delivered once the permission is gone.
    """

    def authorise_publish(self, client: ClientInfo, topic: str, qos: int, retain: bool) -> Decision:
        """May ``client`` publish on ``topic``?"""
        ...

    def authorise_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> Decision:
        """May ``client`` subscribe to ``topic_filter``?"""
        ...

    def authorise_receive(self, client: ClientInfo, topic: str) -> Decision:
        """May ``client``'s session receive messages published on ``topic``?"""
        ...


MessageHandler: TypeAlias = Callable[["ClientInfo | None", Message], "Awaitable[None] | None"]
"""In-process consumer of every PUBLISH accepted from a client (and of wills).

Called in the order received per connection. When it returns an awaitable the hub awaits it
before acknowledging the PUBLISH (PUBACK / PUBREC); meanwhile the connection's next packets are
handled already (pipelining, at most ``HubConfig.max_pending_acks`` messages per connection),
and the acknowledgements are still sent in the order the messages arrived. A handler that
raises, or whose awaitable fails, is logged and the message is not acknowledged as a success
(5.0: reason code 0x80; 3.1.1: the connection is closed before its acknowledgement).
"""


class DisconnectReason(Enum):
    """Why a client's connection ended."""

    CLIENT_DISCONNECT = "client_disconnect"
    KEEP_ALIVE_TIMEOUT = "keep_alive_timeout"
    TAKEN_OVER = "taken_over"
    PROTOCOL_ERROR = "protocol_error"
    CONNECTION_LOST = "connection_lost"
    KICKED = "kicked"
    SERVER_SHUTDOWN = "server_shutdown"
    SERVER_ERROR = "server_error"
    """The hub could not process the client's message (a message handler failed)."""


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """A client completed CONNECT (``session_present`` as sent in the CONNACK)."""

    client: ClientInfo
    session_present: bool


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    """A connected client's connection ended; ``will_published`` if its will went out now."""

    client: ClientInfo
    reason: DisconnectReason
    will_published: bool


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """A connection to a TLS listener ended before its handshake completed, or was refused one
    (too many handshakes in progress); ``peer`` is its address (``host:port``), ``reason``
    says why in words (``"client certificate refused: certificate revoked"``)."""

    peer: str
    reason: str


HubEvent: TypeAlias = ClientConnected | ClientDisconnected | HandshakeFailed
"""Any lifecycle event of the hub."""
