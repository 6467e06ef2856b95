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
    """

    anonymous: bool = False
    max_packet_size: int = 1 << 20  # [bytes] largest packet accepted from clients
    connect_timeout: float = 10.0  # [s] a socket that sends no complete CONNECT is closed
    keep_alive_factor: float = 1.5  # close after keep_alive * factor of silence (MQTT-3.1.2-24)
    receive_maximum: int = 65535  # inbound QoS>0 in flight from one 5.0 client
    # outbound QoS>0 in flight per client (capped by a 5.0 client's receive maximum); deep enough
    # that a busy event loop iteration does not starve a fast subscriber of its window
    max_inflight: int = 1000
    max_queued_messages: int = 10000  # per-session queue bound (offline + waiting for window)
    max_buffered_bytes: int = 8 << 20  # [bytes] per-connection unsent output bound
    topic_alias_maximum: int = 64  # aliases a 5.0 client may use towards the server
    max_session_expiry: int = 2**32 - 1  # [s]
    connack_delay: float = 0.0  # [s] delay before CONNACK
    server_keep_alive: int | None = None  # [s] keep alive imposed on 5.0 clients
    # messages of one connection whose handler awaitables are still pending; when reached, the
    # connection's further packets wait (reading paused) until one of them completes
    max_pending_acks: int = 100

    def __post_init__(self) -> None:
        positive = {
            "max_packet_size": self.max_packet_size,
            "connect_timeout": self.connect_timeout,
            "keep_alive_factor": self.keep_alive_factor,
            "max_inflight": self.max_inflight,
            "max_pending_acks": self.max_pending_acks,
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
        ):
            if value < 0:
                raise InvalidArgument(f"HubConfig.{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class HubStats:
    """Counters of a hub since it was created.

    ``connections`` is the number of connections open now; ``messages_in`` / ``messages_out``
    count PUBLISH packets received / sent; ``dropped`` counts messages discarded because a
    client's queue or output buffer was full, a message expired or was too large for the client.
    """

    connections: int
    messages_in: int
    messages_out: int
    bytes_in: int  # [bytes]
    bytes_out: int  # [bytes]
    dropped: int
