"""The MQTT tables the codec decodes and encodes by: packet types each role receives, fixed
header flags, reason codes allowed per packet type, and the MQTT 5.0 properties (identifier,
attribute, kind, where each is allowed). See :mod:`enos_lab.mqtt._codec`."""

from __future__ import annotations

import struct

from enos_lab.mqtt._packets import PacketType

DEFAULT_MAX_PACKET_SIZE = 1 << 20
"""Default largest packet a :class:`Decoder` accepts (fixed header included). [bytes]"""

_MAX_VARINT = 268_435_455  # largest Variable Byte Integer (4 bytes), MQTT 5.0 1.5.5

_H = struct.Struct(">H")
_PACK_H = _H.pack
_PACK_I = struct.Struct(">I").pack
_BYTE = tuple(bytes((i,)) for i in range(256))

# -- packet-type tables ----------------------------------------------------------------------

_WILL_CTX = 0  # property context of will properties (packet types are 1..15)

# Packet types each role may receive (a server never receives CONNACK, SUBACK, ...).
_SERVER_RECEIVES = frozenset({1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15})
_CLIENT_RECEIVES = frozenset({2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15})

# Required low nibble of the first byte for every type but PUBLISH (MQTT-2.1.3-1; 5.0 2.1.3:
# invalid flags are a Malformed Packet).
_FIXED_FLAGS = {t: (2 if t in (6, 8, 10) else 0) for t in range(1, 16)}

# Reason codes allowed per packet type in 5.0 (tables in 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1,
# 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1, 3.15.2.1).
_PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBREL_CODES = frozenset({0x00, 0x92})
_REASON_CODES: dict[int, frozenset[int]] = {
    2: frozenset(
        {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90}
        | {0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
    ),
    4: _PUBACK_CODES,
    5: _PUBACK_CODES,
    6: _PUBREL_CODES,
    7: _PUBREL_CODES,
    9: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
    11: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    14: frozenset(
        {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93}
        | {0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1}
        | {0xA2}
    ),
    15: frozenset({0x00, 0x18, 0x19}),
}
# QoS of a PUBLISH by the low nibble of its first byte; -1 for QoS 3 or DUP with QoS 0
_PUBLISH_QOS = tuple(
    -1 if (f >> 1) & 3 == 3 or (f & 8 and not f & 6) else (f >> 1) & 3 for f in range(16)
)
_TOPIC_CACHE_SIZE = 256  # topic names remembered per decoder
_SUBACK_CODES_V4 = frozenset({0x00, 0x01, 0x02, 0x80})  # 3.1.1 3.9.3

# -- properties (MQTT 5.0 2.2.2.2) -----------------------------------------------------------

_K_BYTE, _K_U16, _K_U32, _K_VARINT, _K_UTF8, _K_BIN, _K_PAIR = range(7)

_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 1, 2, 3, 4, 5, 6, 7
_SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK, _DISCONNECT, _AUTH = 8, 9, 10, 11, 14, 15
_ACKS = (_PUBACK, _PUBREC, _PUBREL, _PUBCOMP)
_ALL_CTX: tuple[int, ...] = (_CONNECT, _CONNACK, _PUBLISH, _WILL_CTX, *_ACKS, _SUBSCRIBE)
_ALL_CTX += (_SUBACK, _UNSUBSCRIBE, _UNSUBACK, _DISCONNECT, _AUTH)

# id: (attribute, kind, contexts where it is allowed)
_PROPERTY_SPEC: dict[int, tuple[str, int, tuple[int, ...]]] = {
    0x01: ("payload_format_indicator", _K_BYTE, (_PUBLISH, _WILL_CTX)),
    0x02: ("message_expiry_interval", _K_U32, (_PUBLISH, _WILL_CTX)),
    0x03: ("content_type", _K_UTF8, (_PUBLISH, _WILL_CTX)),
    0x08: ("response_topic", _K_UTF8, (_PUBLISH, _WILL_CTX)),
    0x09: ("correlation_data", _K_BIN, (_PUBLISH, _WILL_CTX)),
    0x0B: ("subscription_identifiers", _K_VARINT, (_PUBLISH, _SUBSCRIBE)),
    0x11: ("session_expiry_interval", _K_U32, (_CONNECT, _CONNACK, _DISCONNECT)),
    0x12: ("assigned_client_identifier", _K_UTF8, (_CONNACK,)),
    0x13: ("server_keep_alive", _K_U16, (_CONNACK,)),
    0x15: ("authentication_method", _K_UTF8, (_CONNECT, _CONNACK, _AUTH)),
    0x16: ("authentication_data", _K_BIN, (_CONNECT, _CONNACK, _AUTH)),
    0x17: ("request_problem_information", _K_BYTE, (_CONNECT,)),
    0x18: ("will_delay_interval", _K_U32, (_WILL_CTX,)),
    0x19: ("request_response_information", _K_BYTE, (_CONNECT,)),
    0x1A: ("response_information", _K_UTF8, (_CONNACK,)),
    0x1C: ("server_reference", _K_UTF8, (_CONNACK, _DISCONNECT)),
    0x1F: (
        "reason_string",
        _K_UTF8,
        (_CONNACK, *_ACKS, _SUBACK, _UNSUBACK, _DISCONNECT, _AUTH),
    ),
    0x21: ("receive_maximum", _K_U16, (_CONNECT, _CONNACK)),
    0x22: ("topic_alias_maximum", _K_U16, (_CONNECT, _CONNACK)),
    0x23: ("topic_alias", _K_U16, (_PUBLISH,)),
    0x24: ("maximum_qos", _K_BYTE, (_CONNACK,)),
    0x25: ("retain_available", _K_BYTE, (_CONNACK,)),
    0x26: ("user_properties", _K_PAIR, _ALL_CTX),
    0x27: ("maximum_packet_size", _K_U32, (_CONNECT, _CONNACK)),
    0x28: ("wildcard_subscription_available", _K_BYTE, (_CONNACK,)),
    0x29: ("subscription_identifier_available", _K_BYTE, (_CONNACK,)),
    0x2A: ("shared_subscription_available", _K_BYTE, (_CONNACK,)),
}
_ALLOWED: dict[int, frozenset[int]] = {
    ctx: frozenset(pid for pid, (_, _, ctxs) in _PROPERTY_SPEC.items() if ctx in ctxs)
    for ctx in _ALL_CTX
}
# Byte properties whose only legal values are 0 and 1 ("It is a Protocol Error to ... have a
# value other than 0 or 1", 5.0 3.1.2.11.6/7, 3.2.2.3.4/5/11/12/13; 3.3.2.3.2 for the format).
_BOOLEAN_PROPERTIES = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
# Properties for which the value 0 is a Protocol Error (5.0 3.1.2.11.3/4, 3.3.2.3.4 / MQTT-3.3.2-8,
# 3.8.2.1.2).
_NONZERO_PROPERTIES = frozenset({0x21, 0x27, 0x23, 0x0B})
_PROPERTY_NAMES = {
    0: "will",
    **{int(t): t.name for t in PacketType},
}
_ENCODE_ORDER = tuple(sorted(_PROPERTY_SPEC.items()))
