"""MQTT control packets as plain value objects (MQTT 3.1.1 and 5.0).

One class per packet type. The same classes serve both protocol versions: fields that only exist
in 5.0 (reason codes on acknowledgements, properties) keep their defaults in 3.1.1 and are ignored
by the 3.1.1 encoder. Version-dependent wire details live in the codec, not here.

Packets are ``slots`` dataclasses. They are *not* frozen because the hub builds and decodes
hundreds of thousands of them per second and a frozen ``__init__`` costs four times as much;
treat them as immutable all the same (never change a packet after handing it over). The
:class:`Properties` of a packet *are* frozen, and packets without properties share one empty
instance, :data:`NO_PROPERTIES`.

Glossary: ``qos`` is the quality-of-service level (0, 1 or 2); ``packet_id`` the 16-bit packet
identifier (1..65535, 0 when the packet has none); ``reason_code`` an MQTT 5.0 reason code
(:class:`ReasonCode`) or, in a 3.1.1 CONNACK, a connect return code (:class:`ConnectReturnCode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

__all__ = [
    "MQTT_3_1",
    "MQTT_3_1_1",
    "MQTT_5",
    "NO_PROPERTIES",
    "Auth",
    "ConnAck",
    "Connect",
    "ConnectReturnCode",
    "Disconnect",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "PropertyId",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "ReasonCode",
    "RetainHandling",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]

MQTT_3_1 = 3
"""Protocol level of MQTT 3.1 (protocol name ``MQIsdp``)."""
MQTT_3_1_1 = 4
"""Protocol level of MQTT 3.1.1 (protocol name ``MQTT``)."""
MQTT_5 = 5
"""Protocol level of MQTT 5.0 (protocol name ``MQTT``)."""


class PacketType(IntEnum):
    """Control packet types (the high nibble of the fixed header's first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15  # MQTT 5.0 only


class ReasonCode(IntEnum):
    """MQTT 5.0 reason codes (MQTT 5.0 section 2.4)."""

    SUCCESS = 0x00  # also NORMAL_DISCONNECTION and GRANTED_QOS_0
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnectReturnCode(IntEnum):
    """MQTT 3.1.1 CONNACK return codes (MQTT 3.1.1 table 3.1)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class RetainHandling(IntEnum):
    """MQTT 5.0 subscription option: when retained messages are sent (3.8.3.1)."""

    SEND_ON_SUBSCRIBE = 0
    SEND_IF_NEW_SUBSCRIPTION = 1
    DO_NOT_SEND = 2


class PropertyId(IntEnum):
    """MQTT 5.0 property identifiers (2.2.2.2)."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


@dataclass(frozen=True, slots=True)
class Properties:
    """MQTT 5.0 properties of a packet or will message; ``None`` means "absent".

    Which properties a packet may carry is checked by the codec (a property not allowed in that
    packet type is a protocol error, MQTT 5.0 2.2.2.2). ``subscription_identifiers`` is a tuple
    because a PUBLISH may carry several (one per matching subscription); a SUBSCRIBE carries at
    most one. ``user_properties`` keeps order and duplicates (MQTT-3.3.2-18).
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None  # [s]
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None  # [s]
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None  # [s]
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None  # [s]
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None  # [bytes]
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __bool__(self) -> bool:
        return self != NO_PROPERTIES


NO_PROPERTIES = Properties()
"""The empty property set, shared by every packet that has no properties."""


@dataclass(slots=True)
class Will:
    """The will message of a CONNECT (published when the connection ends abnormally)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES  # will properties (5.0 3.1.3.2)


@dataclass(slots=True)
class Connect:
    """CONNECT (client -> server).

    ``protocol_level`` is 3 (MQTT 3.1, name ``MQIsdp``), 4 (3.1.1) or 5 (5.0); ``protocol_name``
    is kept as received so that the server can refuse a wrong one. ``clean_start`` is 3.1.1's
    CleanSession flag. ``keep_alive`` is in seconds (0 = disabled).
    """

    client_id: str
    protocol_level: int = MQTT_3_1_1
    protocol_name: str = "MQTT"
    clean_start: bool = True
    keep_alive: int = 60  # [s]
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class ConnAck:
    """CONNACK (server -> client). ``reason_code`` is a 3.1.1 return code or 5.0 reason code."""

    session_present: bool = False
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class Publish:
    """PUBLISH (both directions). ``packet_id`` is 0 for QoS 0.

    In 5.0 an incoming PUBLISH may name its topic by alias only (empty ``topic`` plus
    ``properties.topic_alias``); resolving aliases is session state, done by the hub, not the codec.
    """

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class PubAck:
    """PUBACK: acknowledges a QoS 1 PUBLISH."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class PubRec:
    """PUBREC: first acknowledgement of a QoS 2 PUBLISH."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class PubRel:
    """PUBREL: release of a QoS 2 PUBLISH (fixed-header flags 0b0010)."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class PubComp:
    """PUBCOMP: completes a QoS 2 exchange."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (5.0 3.8.3.1; 3.1.1 has only ``qos``)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: RetainHandling = RetainHandling.SEND_ON_SUBSCRIBE


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE (client -> server; fixed-header flags 0b0010)."""

    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class SubAck:
    """SUBACK: one reason code per subscription (3.1.1: granted QoS or 0x80)."""

    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (client -> server; fixed-header flags 0b0010)."""

    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class UnsubAck:
    """UNSUBACK: 5.0 has one reason code per filter; 3.1.1 has none (``reason_codes`` empty)."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class PingReq:
    """PINGREQ."""


@dataclass(slots=True)
class PingResp:
    """PINGRESP."""


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT. 3.1.1: client -> server only, no body. 5.0: both directions, reason code."""

    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class Auth:
    """AUTH (5.0 only): enhanced authentication exchange."""

    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


Packet: TypeAlias = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
"""Any MQTT control packet."""
