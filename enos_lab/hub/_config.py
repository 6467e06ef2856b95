"""Configuration and statistics of the hub (frozen value objects)."""

from __future__ import annotations

from dataclasses import dataclass

from enos_lab.errors import InvalidArgument

__all__ = ["HubConfig", "HubStats"]


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Settings of a :class:`~enos_lab.hub.Hub`.

    ``anonymous=True`` turns the hub into a plain MQTT broker that accepts every CONNECT; with
    ``anonymous=False`` and no authenticator every CONNECT is refused (3.1.1 return code 5,
    5.0 reason code 0x87).

    Bounds on what one client can make the hub keep: its unsent output
    (``max_buffered_bytes``), its queued messages (``max_queued_messages``), its subscriptions
    (``max_subscriptions``), its retained messages (``max_retained_per_client``,
    ``max_retained_bytes_per_client``; "client" is the identity the authenticator gave, else the
    client id) and how long its session outlives its connection (``max_session_expiry``,
    ``session_expiry_v311``); the sessions an identity keeps while offline
    (``max_offline_sessions``); and in total, the retained messages (``max_retained_messages``,
    ``max_retained_bytes``).

    Times: ``connect_timeout``, the keep alive (``keep_alive_factor``, ``server_keep_alive``)
    and session expiry (``max_session_expiry``, ``session_expiry_v311``) run on the hub's clock
    (``Hub(clock=...)``; simulated time on a :class:`~enos_lab.clock.SimulatedClock`), as do
    will delays and message expiry intervals; ``connack_delay`` is real time (it paces I/O).
    """

    anonymous: bool = False
    max_packet_size: int = 1 << 20  # [bytes] largest packet accepted from clients
    # [s] a socket that sends no complete CONNECT in this time (hub's clock) is closed; a quarter
    # of it (0.01 .. 0.5 s) is how late after a deadline a connection may be closed
    connect_timeout: float = 10.0
    # close after keep_alive * factor of silence on the hub's clock (MQTT-3.1.2-24)
    keep_alive_factor: float = 1.5
    receive_maximum: int = 65535  # inbound QoS>0 in flight from one 5.0 client
    # outbound QoS>0 in flight per client (capped by a 5.0 client's receive maximum); deep enough
    # that a busy event loop iteration does not starve a fast subscriber of its window
    max_inflight: int = 1000
    max_queued_messages: int = 10000  # per-session queue bound (offline + waiting for window)
    max_buffered_bytes: int = 8 << 20  # [bytes] per-connection unsent output bound
    topic_alias_maximum: int = 64  # aliases a 5.0 client may use towards the server
    # [s] longest a session outlives its connection (hub's clock): a 5.0 client asking for more
    # is told this in the CONNACK (2 days: EnOS keeps a device's cached commands at most 48 h)
    max_session_expiry: int = 172_800
    # [s] how long a 3.1 / 3.1.1 session with clean session 0 outlives its connection (hub's
    # clock; the protocol has no expiry); None keeps it until the client comes back
    session_expiry_v311: int | None = 172_800
    # sessions of one identity (see AuthResult.identity) kept while no connection uses them;
    # when one more ends, the one offline longest is discarded with its queued messages
    max_offline_sessions: int = 1
    max_subscriptions: int = 4096  # per session; more are refused (SUBACK 0x97 / 0x80)
    max_retained_messages: int = 100_000  # retained messages in the hub
    max_retained_bytes: int = 64 << 20  # [bytes] payload and topic of all retained messages
    max_retained_per_client: int = 1000  # retained messages one client (identity) keeps
    max_retained_bytes_per_client: int = 4 << 20  # [bytes] the same, in bytes
    connack_delay: float = 0.0  # [s] delay before CONNACK, in real time (event loop's)
    server_keep_alive: int | None = None  # [s] keep alive imposed on 5.0 clients (hub's clock)
    # messages of one connection whose handler awaitables are still pending; when reached, the
    # connection's further packets wait (reading paused) until one of them completes
    max_pending_acks: int = 100
    # TLS handshakes one TLS listener runs at once; a connection beyond that is closed unshaken
    # (each handshake holds OpenSSL state and a task until it completes or times out)
    max_tls_handshakes: int = 256

    def __post_init__(self) -> None:
        positive = {
            "max_packet_size": self.max_packet_size,
            "connect_timeout": self.connect_timeout,
            "keep_alive_factor": self.keep_alive_factor,
            "max_inflight": self.max_inflight,
            "max_pending_acks": self.max_pending_acks,
            "max_tls_handshakes": self.max_tls_handshakes,
            "max_offline_sessions": self.max_offline_sessions,
            "max_subscriptions": self.max_subscriptions,
            "max_retained_messages": self.max_retained_messages,
            "max_retained_bytes": self.max_retained_bytes,
            "max_retained_per_client": self.max_retained_per_client,
            "max_retained_bytes_per_client": self.max_retained_bytes_per_client,
        }
        for name, value in positive.items():
            if value <= 0:
                raise InvalidArgument(f"HubConfig.{name} must be > 0, got {value!r}")
        if not 1 <= self.receive_maximum <= 65535:
            raise InvalidArgument(
                f"HubConfig.receive_maximum must be 1..65535, got {self.receive_maximum!r}"
            )
        if not 0 <= self.topic_alias_maximum <= 65535:
            raise InvalidArgument(
                f"HubConfig.topic_alias_maximum must be 0..65535, got {self.topic_alias_maximum!r}"
            )
        for name, value in (
            ("max_queued_messages", self.max_queued_messages),
            ("max_buffered_bytes", self.max_buffered_bytes),
            ("max_session_expiry", self.max_session_expiry),
            ("connack_delay", self.connack_delay),
            ("session_expiry_v311", self.session_expiry_v311 or 0),
        ):
            if value < 0:
                raise InvalidArgument(f"HubConfig.{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class HubStats:
    """Counters of a hub since it was created.

    ``connections`` is the number of connections open now; ``messages_in`` / ``messages_out``
    count PUBLISH packets received / sent; ``dropped`` counts messages discarded because a
    client's queue or output buffer was full, a message expired or was too large for the client.
    ``sessions`` counts the sessions kept now (connected or not), ``retained`` the retained
    messages and ``retained_bytes`` their size (payload and topic).
    """

    connections: int
    messages_in: int
    messages_out: int
    bytes_in: int  # [bytes]
    bytes_out: int  # [bytes]
    dropped: int
    sessions: int = 0
    retained: int = 0
    retained_bytes: int = 0  # [bytes]
