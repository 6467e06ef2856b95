"""Sans-IO MQTT codec: bytes to packets (:class:`Decoder`), packets to bytes (:func:`encode`).

Theory of operation
-------------------
:meth:`Decoder.feed` takes whatever bytes arrived (any chunking) and returns every packet they
complete, in order. Incomplete input is kept in a buffer; a partial packet whose fixed header
declares its size is not parsed again until enough bytes have arrived, so a large packet
arriving in small chunks costs linear time. The maximum packet size is checked as soon as the
fixed header (or even the part of it received so far) proves the packet too large, before its
body is buffered, so a peer cannot make the decoder allocate memory by declaring a huge packet.

The decoder is strict: a peer that sends anything the specification forbids gets a
:class:`~enos_lab.errors.MalformedPacket` (bytes that cannot be parsed, reason 0x81), a
:class:`~enos_lab.errors.PacketTooLarge` (0x95) or a :class:`~enos_lab.errors.ProtocolError`
(parsed but not allowed here, usually 0x82). Nothing else escapes (no ``IndexError``,
``UnicodeDecodeError``...). After raising, the decoder refuses further input; the connection
is to be closed (packets completed earlier in the same :meth:`~Decoder.feed` call are not
returned: the peer broke the protocol, its connection ends).

What the codec does *not* do: resolve topic aliases, track packet ids, check topic filters of
SUBSCRIBE/UNSUBSCRIBE against MQTT 4.7 (the server answers an invalid filter with a SUBACK
failure code, so that check belongs to the session, see
:func:`~enos_lab.mqtt.validate_topic_filter`), authenticate or authorise.

Hot paths (PUBLISH, PUBACK, PINGREQ) are decoded inline in :meth:`Decoder.feed` with direct
byte indexing; every other packet goes through one decode function per packet type. Packets
without properties share :data:`~enos_lab.mqtt.NO_PROPERTIES`. A decoder remembers the last few
hundred topic names it decoded (raw bytes -> checked ``str``), so a device publishing to the
same topics again skips UTF-8 decoding and checks, and consumers get the same ``str`` object
(with its hash already computed) for the same topic. The encoder memoises the wire form of
topic names likewise.

The same wire format serves MQTT 3.1 (level 3, protocol name ``MQIsdp``) and 3.1.1 (level 4);
level 5 adds properties and reason codes. Spec statements are cited as ``MQTT-x.y.z-n``; where
3.1.1 and 5.0 number a rule differently, both are given (``3.1.1:`` / ``5.0:``).

The codec is three modules: this one decodes (and gives :func:`encode` too),
:mod:`enos_lab.mqtt._encode` encodes, and :mod:`enos_lab.mqtt._spec` holds the tables both
follow (packet types, flags, reason codes, properties).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Literal

from enos_lab.errors import (
    InvalidArgument,
    LocalProtocolError,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
)
from enos_lab.mqtt._encode import encode
from enos_lab.mqtt._packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RetainHandling,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from enos_lab.mqtt._spec import (
    _ALLOWED,
    _AUTH,
    _BOOLEAN_PROPERTIES,
    _CLIENT_RECEIVES,
    _CONNACK,
    _CONNECT,
    _DISCONNECT,
    _FIXED_FLAGS,
    _K_BIN,
    _K_BYTE,
    _K_U16,
    _K_U32,
    _K_UTF8,
    _K_VARINT,
    _NONZERO_PROPERTIES,
    _PROPERTY_NAMES,
    _PROPERTY_SPEC,
    _PUBACK,
    _PUBCOMP,
    _PUBLISH,
    _PUBLISH_QOS,
    _PUBREC,
    _PUBREL,
    _REASON_CODES,
    _SERVER_RECEIVES,
    _SUBACK,
    _SUBACK_CODES_V4,
    _SUBSCRIBE,
    _TOPIC_CACHE_SIZE,
    _UNSUBACK,
    _UNSUBSCRIBE,
    _WILL_CTX,
    DEFAULT_MAX_PACKET_SIZE,
)

__all__ = ["DEFAULT_MAX_PACKET_SIZE", "Decoder", "encode"]


# -- decoding helpers (bounded reads; every overrun is a MalformedPacket) --------------------


def _truncated(what: str) -> MalformedPacket:
    return MalformedPacket(f"packet too short: {what} runs past the end of the packet")


def _read_u16(b: bytes, p: int, end: int, what: str) -> tuple[int, int]:
    q = p + 2
    if q > end:
        raise _truncated(what)
    return (b[p] << 8) | b[p + 1], q


def _read_varint(b: bytes, p: int, end: int, what: str) -> tuple[int, int]:
    value = 0
    shift = 0
    for i in range(4):
        if p >= end:
            raise _truncated(what)
        byte = b[p]
        p += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i:
                # 5.0: MQTT-1.5.5-1, the encoding must use the minimum number of bytes
                raise MalformedPacket(f"{what}: variable byte integer not minimally encoded")
            return value, p
        shift += 7
    # 5.0 1.5.5 / 3.1.1 2.2.3: at most four bytes
    raise MalformedPacket(f"{what}: variable byte integer longer than 4 bytes")


def _check_str(s: str, what: str) -> str:
    if "\x00" in s:
        # 3.1.1: MQTT-1.5.3-2; 5.0: MQTT-1.5.4-2 (no U+0000 in UTF-8 strings)
        raise MalformedPacket(f"{what} contains U+0000")
    return s


def _read_str(b: bytes, p: int, end: int, what: str) -> tuple[str, int]:
    n, p = _read_u16(b, p, end, what)
    q = p + n
    if q > end:
        raise _truncated(what)
    try:
        # Python's strict UTF-8 decoder rejects ill-formed sequences, overlong forms and
        # encoded surrogates (3.1.1: MQTT-1.5.3-1; 5.0: MQTT-1.5.4-1); a BOM is kept, not
        # stripped (MQTT-1.5.3-3 / MQTT-1.5.4-3).
        s = b[p:q].decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"{what} is not well-formed UTF-8") from exc
    return _check_str(s, what), q


def _read_bin(b: bytes, p: int, end: int, what: str) -> tuple[bytes, int]:
    n, p = _read_u16(b, p, end, what)
    q = p + n
    if q > end:
        raise _truncated(what)
    return bytes(b[p:q]), q


def _decode_properties(b: bytes, p: int, end: int, ctx: int) -> tuple[Properties, int]:
    """Decode a property block at ``p`` (its length first) for packet type ``ctx``."""
    length, p = _read_varint(b, p, end, "property length")
    if length == 0:
        return NO_PROPERTIES, p
    pend = p + length
    if pend > end:
        raise _truncated("property block")
    allowed = _ALLOWED[ctx]
    values: dict[str, Any] = {}
    user: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while p < pend:
        pid, p = _read_varint(b, p, pend, "property identifier")
        spec = _PROPERTY_SPEC.get(pid)
        if spec is None:
            raise MalformedPacket(f"unknown property identifier 0x{pid:02X}")
        name, kind, _ = spec
        if pid not in allowed:
            # 5.0 2.2.2.2: an identifier not valid for the packet type is a Malformed Packet
            raise MalformedPacket(
                f"property {name} (0x{pid:02X}) is not allowed in {_PROPERTY_NAMES[ctx]}"
            )
        value: Any
        if kind == _K_BYTE:
            if p >= pend:
                raise _truncated(name)
            value = b[p]
            p += 1
        elif kind == _K_U16:
            value, p = _read_u16(b, p, pend, name)
        elif kind == _K_U32:
            q = p + 4
            if q > pend:
                raise _truncated(name)
            value = int.from_bytes(b[p:q], "big")
            p = q
        elif kind == _K_VARINT:
            value, p = _read_varint(b, p, pend, name)
        elif kind == _K_UTF8:
            value, p = _read_str(b, p, pend, name)
        elif kind == _K_BIN:
            value, p = _read_bin(b, p, pend, name)
        else:  # _K_PAIR
            key, p = _read_str(b, p, pend, "user property name")
            val, p = _read_str(b, p, pend, "user property value")
            user.append((key, val))
            continue
        if pid in _BOOLEAN_PROPERTIES and value > 1:
            raise ProtocolError(f"property {name} must be 0 or 1, got {value}")
        if pid in _NONZERO_PROPERTIES and value == 0:
            # MQTT-3.3.2-8: topic alias 0 is a protocol error, reported as Topic Alias invalid
            raise ProtocolError(f"property {name} must not be 0", 0x94 if pid == 0x23 else None)
        if pid == 0x0B:
            # 5.0 3.8.2.1.2: at most one Subscription Identifier in a SUBSCRIBE; a PUBLISH may
            # carry several (3.3.2.3.8).
            if sub_ids and ctx != _PUBLISH:
                raise ProtocolError("subscription_identifier included more than once")
            sub_ids.append(value)
            continue
        if pid == 0x08 and ("+" in value or "#" in value or not value):
            # 5.0: MQTT-3.3.2-14 (3.1.2.11.8 for wills), the Response Topic is a topic name
            raise ProtocolError(f"response topic {value!r} is not a valid topic name")
        if name in values:
            # 5.0 2.2.2.2 and each property's description: only User Property (and Subscription
            # Identifier in PUBLISH) may appear more than once.
            raise ProtocolError(f"property {name} (0x{pid:02X}) included more than once")
        values[name] = value
    if user:
        values["user_properties"] = tuple(user)
    if sub_ids:
        values["subscription_identifiers"] = tuple(sub_ids)
    return Properties(**values), p


def _check_reason(ptype: int, code: int) -> int:
    if code not in _REASON_CODES[ptype]:
        raise ProtocolError(f"reason code 0x{code:02X} is not valid in {PacketType(ptype).name}")
    return code


def _decode_topic(raw: bytes) -> str:
    """Decode and check a PUBLISH topic name (an empty one is checked later, see 5.0 aliases)."""
    try:
        topic = raw.decode()  # 3.1.1: MQTT-1.5.3-1; 5.0: MQTT-1.5.4-1
    except UnicodeDecodeError as exc:
        raise MalformedPacket("topic name is not well-formed UTF-8") from exc
    if "+" in topic or "#" in topic or "\x00" in topic:
        _check_topic_name(topic, MQTT_3_1_1, NO_PROPERTIES)
    return topic


def _check_publish_flags(b0: int) -> None:
    if b0 & 0x06 == 0x06:
        raise MalformedPacket("PUBLISH with QoS 3")  # MQTT-3.3.1-4
    if b0 & 0x08 and not b0 & 0x06:
        # 3.1.1: MQTT-3.3.1-2; 5.0: MQTT-3.3.1-2 (DUP must be 0 for QoS 0)
        raise MalformedPacket("PUBLISH with QoS 0 and DUP set")


def _check_topic_name(topic: str, level: int, props: Properties) -> None:
    if "+" in topic or "#" in topic:
        # 3.1.1: MQTT-3.3.2-2; 5.0: MQTT-3.3.2-2 (no wildcards in a topic name)
        raise ProtocolError(f"topic name {topic!r} contains a wildcard", 0x90)
    if "\x00" in topic:
        raise MalformedPacket("topic name contains U+0000")  # MQTT-1.5.3-2 / MQTT-1.5.4-2
    if not topic and (level != MQTT_5 or props.topic_alias is None):
        # 3.1.1: MQTT-4.7.3-1; 5.0 3.3.2.3.4: an empty topic name without a topic alias is a
        # Protocol Error
        raise ProtocolError("empty topic name without a topic alias")


# -- per-type decoders for the non-hot packets -------------------------------------------------
# Each takes the body (exactly the remaining length), the fixed-header flags and the protocol
# level, and returns a packet. ``end`` is always ``len(body)``.


def _decode_connect(body: bytes, flags: int, level: int | None) -> Connect:
    end = len(body)
    name, p = _read_str(body, 0, end, "protocol name")
    if p >= end:
        raise _truncated("protocol level")
    proto = body[p]
    p += 1
    if proto not in (MQTT_3_1, MQTT_3_1_1, MQTT_5):
        # 3.1.1: MQTT-3.1.2-2 (CONNACK 0x01 then close); 5.0 3.1.2.2 (CONNACK 0x84)
        raise ProtocolError(f"unsupported protocol level {proto}", 0x84)
    if p >= end:
        raise _truncated("connect flags")
    cflags = body[p]
    p += 1
    if cflags & 0x01:
        raise MalformedPacket("reserved connect flag is set")  # MQTT-3.1.2-3
    clean_start = bool(cflags & 0x02)
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = cflags & 0x40
    has_username = cflags & 0x80
    if not will_flag and (will_qos or will_retain):
        # 3.1.1: MQTT-3.1.2-11, MQTT-3.1.2-13, MQTT-3.1.2-15; 5.0: MQTT-3.1.2-11, MQTT-3.1.2-13
        raise MalformedPacket("will QoS or will retain set without the will flag")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")  # 3.1.1: MQTT-3.1.2-14; 5.0: MQTT-3.1.2-12
    if has_password and not has_username and proto != MQTT_5:
        raise MalformedPacket("password flag without user name flag")  # MQTT-3.1.2-22 (3.1.1)
    keep_alive, p = _read_u16(body, p, end, "keep alive")
    props = NO_PROPERTIES
    if proto == MQTT_5:
        props, p = _decode_properties(body, p, end, _CONNECT)
        if props.authentication_data is not None and props.authentication_method is None:
            # 5.0 3.1.2.11.10: authentication data without a method is a Protocol Error
            raise ProtocolError("authentication data without authentication method")
    client_id, p = _read_str(body, p, end, "client identifier")  # MQTT-3.1.3-3/4
    will = None
    if will_flag:
        will_props = NO_PROPERTIES
        if proto == MQTT_5:
            will_props, p = _decode_properties(body, p, end, _WILL_CTX)
        will_topic, p = _read_str(body, p, end, "will topic")
        _check_topic_name(will_topic, MQTT_3_1_1, NO_PROPERTIES)  # MQTT-3.1.3-11, no alias
        will_payload, p = _read_bin(body, p, end, "will payload")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = None
    if has_username:
        username, p = _read_str(body, p, end, "user name")  # MQTT-3.1.2-19
    password = None
    if has_password:
        password, p = _read_bin(body, p, end, "password")  # MQTT-3.1.2-21
    if p != end:
        raise MalformedPacket(f"{end - p} unexpected bytes at the end of CONNECT")
    return Connect(client_id, proto, name, clean_start, keep_alive, username, password, will, props)


def _decode_connack(body: bytes, flags: int, level: int | None) -> ConnAck:
    end = len(body)
    if end < 2:
        raise _truncated("CONNACK")
    ack_flags = body[0]
    code = body[1]
    if ack_flags & 0xFE:
        raise MalformedPacket("reserved CONNACK flags set")  # 3.1.1: MQTT-3.2.2-1
    session_present = bool(ack_flags)
    if session_present and code:
        # 3.1.1: MQTT-3.2.2-4; 5.0: MQTT-3.2.2-6
        raise ProtocolError("session present set in a refusing CONNACK")
    if level != MQTT_5:
        if end != 2:
            raise MalformedPacket("CONNACK remaining length must be 2")
        if code > 5:
            raise ProtocolError(f"reserved CONNACK return code {code}")  # 3.1.1 table 3.1
        return ConnAck(session_present, code)
    _check_reason(_CONNACK, code)
    props, p = _decode_properties(body, 2, end, _CONNACK) if end > 2 else (NO_PROPERTIES, 2)
    if p != end:
        raise MalformedPacket("unexpected bytes at the end of CONNACK")
    return ConnAck(session_present, code, props)


def _make_ack_decoder(
    ptype: int, cls: type[PubAck] | type[PubRec] | type[PubRel] | type[PubComp]
) -> Callable[[bytes, int, int | None], Packet]:
    def decode(body: bytes, flags: int, level: int | None) -> Packet:
        end = len(body)
        pid, p = _read_u16(body, 0, end, "packet identifier")
        if pid == 0:
            raise ProtocolError(f"{cls.__name__} with packet identifier 0")  # MQTT-2.3.1-1
        if level != MQTT_5:
            if end != 2:
                # 3.1.1 3.4.1 / 3.5.1 / 3.6.1 / 3.7.1: remaining length 2
                raise MalformedPacket(f"{cls.__name__} remaining length must be 2")
            return cls(pid)
        if end == 2:
            return cls(pid)  # 5.0 3.4.2.1: no reason code means 0x00
        code = _check_reason(ptype, body[2])
        props = NO_PROPERTIES
        p = 3
        if end > 3:  # 5.0 3.4.2.2.1: no property length means no properties
            props, p = _decode_properties(body, 3, end, ptype)
        if p != end:
            raise MalformedPacket(f"unexpected bytes at the end of {cls.__name__}")
        return cls(pid, code, props)

    return decode


def _read_options(opts: int, level: int | None, topic_filter: str) -> Subscription:
    qos = opts & 0x03
    if qos == 3:
        if level == MQTT_5:
            # 5.0 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3"
            raise ProtocolError(f"subscription QoS 3 for {topic_filter!r}")
        raise MalformedPacket(f"subscription QoS 3 for {topic_filter!r}")  # 3.1.1: MQTT-3-8.3-4
    if level != MQTT_5:
        if opts & 0xFC:
            # 3.1.1: MQTT-3-8.3-4, reserved bits of the requested QoS byte
            raise MalformedPacket(f"reserved subscription option bits set for {topic_filter!r}")
        return Subscription(topic_filter, qos)
    if opts & 0xC0:
        raise MalformedPacket(f"reserved subscription option bits set for {topic_filter!r}")
        # ^ 5.0: MQTT-3.8.3-5
    no_local = bool(opts & 0x04)
    retain_as_published = bool(opts & 0x08)
    handling = (opts >> 4) & 0x03
    if handling == 3:
        raise ProtocolError(f"retain handling 3 for {topic_filter!r}")  # 5.0 3.8.3.1
    if no_local and topic_filter.startswith("$share/"):
        raise ProtocolError(f"no local on shared subscription {topic_filter!r}")  # MQTT-3.8.3-4
    return Subscription(topic_filter, qos, no_local, retain_as_published, RetainHandling(handling))


def _decode_subscribe(body: bytes, flags: int, level: int | None) -> Subscribe:
    end = len(body)
    pid, p = _read_u16(body, 0, end, "packet identifier")
    if pid == 0:
        raise ProtocolError("SUBSCRIBE with packet identifier 0")  # MQTT-2.3.1-1
    props = NO_PROPERTIES
    if level == MQTT_5:
        props, p = _decode_properties(body, p, end, _SUBSCRIBE)
    subs: list[Subscription] = []
    while p < end:
        topic_filter, p = _read_str(body, p, end, "topic filter")
        if p >= end:
            raise _truncated("subscription options")
        subs.append(_read_options(body[p], level, topic_filter))
        p += 1
    if not subs:
        # 3.1.1: MQTT-3.8.3-3; 5.0: MQTT-3.8.3-2
        raise ProtocolError("SUBSCRIBE without topic filters")
    return Subscribe(pid, tuple(subs), props)


def _decode_suback(body: bytes, flags: int, level: int | None) -> SubAck:
    end = len(body)
    pid, p = _read_u16(body, 0, end, "packet identifier")
    if pid == 0:
        raise ProtocolError("SUBACK with packet identifier 0")
    props = NO_PROPERTIES
    if level == MQTT_5:
        props, p = _decode_properties(body, p, end, _SUBACK)
        allowed = _REASON_CODES[_SUBACK]
    else:
        allowed = _SUBACK_CODES_V4
    codes = tuple(body[p:])
    if not codes:
        raise ProtocolError("SUBACK without reason codes")  # 3.9.3: one per topic filter
    for code in codes:
        if code not in allowed:
            raise ProtocolError(f"reason code 0x{code:02X} is not valid in SUBACK")
    return SubAck(pid, codes, props)


def _decode_unsubscribe(body: bytes, flags: int, level: int | None) -> Unsubscribe:
    end = len(body)
    pid, p = _read_u16(body, 0, end, "packet identifier")
    if pid == 0:
        raise ProtocolError("UNSUBSCRIBE with packet identifier 0")  # MQTT-2.3.1-1
    props = NO_PROPERTIES
    if level == MQTT_5:
        props, p = _decode_properties(body, p, end, _UNSUBSCRIBE)
    filters: list[str] = []
    while p < end:
        topic_filter, p = _read_str(body, p, end, "topic filter")
        filters.append(topic_filter)
    if not filters:
        # 3.1.1: MQTT-3.10.3-2; 5.0: MQTT-3.10.3-2
        raise ProtocolError("UNSUBSCRIBE without topic filters")
    return Unsubscribe(pid, tuple(filters), props)


def _decode_unsuback(body: bytes, flags: int, level: int | None) -> UnsubAck:
    end = len(body)
    pid, p = _read_u16(body, 0, end, "packet identifier")
    if pid == 0:
        raise ProtocolError("UNSUBACK with packet identifier 0")
    if level != MQTT_5:
        if end != 2:
            raise MalformedPacket("UNSUBACK remaining length must be 2")  # 3.1.1 3.11.1
        return UnsubAck(pid)
    props, p = _decode_properties(body, p, end, _UNSUBACK)
    codes = tuple(body[p:])
    if not codes:
        raise ProtocolError("UNSUBACK without reason codes")  # 5.0 3.11.3
    for code in codes:
        _check_reason(_UNSUBACK, code)
    return UnsubAck(pid, codes, props)


def _decode_pingreq(body: bytes, flags: int, level: int | None) -> PingReq:
    if body:
        raise MalformedPacket("PINGREQ has a body")  # 3.12: remaining length 0
    return _PINGREQ


def _decode_pingresp(body: bytes, flags: int, level: int | None) -> PingResp:
    if body:
        raise MalformedPacket("PINGRESP has a body")  # 3.13: remaining length 0
    return _PINGRESP


def _decode_reason_and_props(
    ptype: int, body: bytes
) -> tuple[int, Properties]:  # DISCONNECT and AUTH in 5.0
    end = len(body)
    if end == 0:
        return 0, NO_PROPERTIES  # 5.0 3.14.2.1 / 3.15.2.1: absent reason code means 0x00
    code = _check_reason(ptype, body[0])
    if end == 1:
        return code, NO_PROPERTIES
    props, p = _decode_properties(body, 1, end, ptype)
    if p != end:
        raise MalformedPacket(f"unexpected bytes at the end of {PacketType(ptype).name}")
    return code, props


def _decode_disconnect(body: bytes, flags: int, level: int | None) -> Disconnect:
    if level != MQTT_5:
        if body:
            raise MalformedPacket("DISCONNECT has a body")  # 3.1.1 3.14.1
        return Disconnect()
    code, props = _decode_reason_and_props(_DISCONNECT, body)
    return Disconnect(code, props)


def _decode_auth(body: bytes, flags: int, level: int | None) -> Auth:
    code, props = _decode_reason_and_props(_AUTH, body)
    return Auth(code, props)


_PINGREQ = PingReq()
_PINGRESP = PingResp()

_DECODERS: dict[int, Callable[[bytes, int, int | None], Packet]] = {
    1: _decode_connect,
    2: _decode_connack,
    4: _make_ack_decoder(_PUBACK, PubAck),
    5: _make_ack_decoder(_PUBREC, PubRec),
    6: _make_ack_decoder(_PUBREL, PubRel),
    7: _make_ack_decoder(_PUBCOMP, PubComp),
    8: _decode_subscribe,
    9: _decode_suback,
    10: _decode_unsubscribe,
    11: _decode_unsuback,
    12: _decode_pingreq,
    13: _decode_pingresp,
    14: _decode_disconnect,
    15: _decode_auth,
}


class Decoder:
    """Incremental MQTT decoder for one connection (sans-IO).

    ``role`` is the side this decoder works for: a ``"server"`` decodes what clients send, a
    ``"client"`` what servers send. A server decoder learns the protocol level from the first
    packet, which must be a CONNECT (``protocol_level`` is ``None`` until then); a client
    decoder must be given the level it sent in its CONNECT. ``max_packet_size`` is the largest
    packet accepted, fixed header included (5.0 3.1.2.11.4, Maximum Packet Size) [bytes]; it may
    be lowered or raised at any time.

    Raises :class:`~enos_lab.errors.InvalidArgument` for an unknown role, a client role without
    a level, or a non-positive ``max_packet_size``.
    """

    __slots__ = ("_buf", "_connected", "_failed", "_need", "_server", "_topics",
                 "max_packet_size", "protocol_level", "role")  # fmt: skip

    def __init__(
        self,
        *,
        role: Literal["server", "client"] = "server",
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        protocol_level: int | None = None,
    ) -> None:
        if role not in ("server", "client"):
            raise InvalidArgument(f"role must be 'server' or 'client', got {role!r}")
        if protocol_level is not None and protocol_level not in (MQTT_3_1, MQTT_3_1_1, MQTT_5):
            raise InvalidArgument(f"protocol_level must be 3, 4 or 5, got {protocol_level!r}")
        if role == "client" and protocol_level is None:
            raise InvalidArgument("a client decoder needs the protocol_level it sent in CONNECT")
        if max_packet_size < 2:
            raise InvalidArgument(f"max_packet_size must be at least 2, got {max_packet_size}")
        self.role: Literal["server", "client"] = role
        """``"server"`` or ``"client"``: the side this decoder works for."""
        self.protocol_level: int | None = protocol_level
        """3, 4 or 5; ``None`` on a server decoder until a CONNECT has been decoded."""
        self.max_packet_size: int = max_packet_size
        """Largest packet accepted, fixed header included. [bytes]"""
        self._server = role == "server"
        # "connected": a server has decoded CONNECT, a client CONNACK. A server decoder given a
        # level starts connected (the CONNECT was decoded elsewhere).
        self._connected = self._server and protocol_level is not None
        self._buf = bytearray()
        self._need = 0  # do not parse the buffer again before it holds this many bytes
        self._failed = False
        # Recently seen PUBLISH topic names, raw bytes -> validated str (a connection publishes
        # to few topics; this skips UTF-8 decoding and checks, and hands out one str object).
        self._topics: dict[bytes, str] | None = None  # made by the first PUBLISH (idle
        # connections, most of a fleet, never need it)

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a packet. [bytes]"""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add received bytes; return every packet they complete, in order (maybe none).

        Raises :class:`~enos_lab.errors.MalformedPacket`, :class:`~enos_lab.errors.PacketTooLarge`
        or :class:`~enos_lab.errors.ProtocolError` for input the specification forbids; the
        decoder is unusable afterwards (:class:`~enos_lab.errors.LocalProtocolError` on reuse).
        """
        if self._failed:
            raise LocalProtocolError("the decoder failed earlier; close the connection")
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        try:
            # (few locals: most reads hold a single packet, so setting up costs as much as parsing)
            out: list[Packet] = []
            pos = 0
            end = len(data)
            level = self.protocol_level
            v5 = level == MQTT_5
            fast = self._connected  # hot paths only once the connection is established
            maxsize = self.max_packet_size
            topics = self._topics
            need = 0
            while pos + 1 < end:
                b0 = data[pos]
                rl = data[pos + 1]
                if rl < 0x80:
                    s = pos + 2
                elif pos + 2 < end and 0 < data[pos + 2] < 0x80:
                    # two-byte remaining length (128..16383), inlined: the common PUBLISH size
                    rl = (rl & 0x7F) | (data[pos + 2] << 7)
                    s = pos + 3
                else:
                    rl, s = self._long_length(data, pos, end, maxsize)
                    if rl < 0:
                        self._check_header(b0)
                        need = end - pos + 1
                        break
                e = s + rl
                if e - pos > maxsize:
                    raise PacketTooLarge(
                        f"packet of {e - pos} bytes exceeds the maximum packet size {maxsize}"
                    )
                if e > end:
                    self._check_header(b0)
                    need = e - pos
                    break
                if b0 >> 4 == 3 and fast:
                    # -- hot path: PUBLISH (only ever decoded here) --
                    qos = _PUBLISH_QOS[b0 & 0x0F]
                    if qos < 0:
                        _check_publish_flags(b0)
                    if rl < 2:
                        raise _truncated("topic name")
                    p = s + 2 + ((data[s] << 8) | data[s + 1])
                    if p > e:
                        raise _truncated("topic name")
                    raw = data[s + 2 : p]
                    if topics is None:
                        topics = self._topics = {}
                    topic = topics.get(raw)
                    if topic is None:
                        topic = _decode_topic(raw)
                        if len(topics) >= _TOPIC_CACHE_SIZE:
                            topics.clear()
                        topics[raw] = topic
                    if qos:
                        q = p + 2
                        if q > e:
                            raise _truncated("packet identifier")
                        pid = (data[p] << 8) | data[p + 1]
                        if not pid:
                            raise ProtocolError("PUBLISH with QoS > 0 and packet identifier 0")
                            # ^ MQTT-2.3.1-1
                        p = q
                    else:
                        pid = 0
                    if v5:
                        if p >= e:
                            raise _truncated("property length")
                        if data[p]:
                            props, p = _decode_properties(data, p, e, _PUBLISH)
                            if self._server and props.subscription_identifiers:
                                # 5.0: MQTT-3.3.4-6
                                raise ProtocolError("PUBLISH from a client with subscription id")
                        else:
                            props = NO_PROPERTIES
                            p += 1
                    else:
                        props = NO_PROPERTIES
                    if not topic:
                        _check_topic_name(topic, MQTT_5 if v5 else MQTT_3_1_1, props)
                    out.append(
                        Publish(topic, data[p:e], qos, (b0 & 1) == 1, (b0 & 8) == 8, pid, props)
                    )
                elif fast and b0 == 0x40 and rl == 2:
                    # -- hot path: PUBACK without reason code (3.1.1, and 5.0 success) --
                    pid = (data[s] << 8) | data[s + 1]
                    if not pid:
                        raise ProtocolError("PUBACK with packet identifier 0")  # MQTT-2.3.1-1
                    out.append(PubAck(pid))
                elif fast and b0 == 0xC0 and rl == 0 and self._server:
                    out.append(_PINGREQ)  # -- hot path: PINGREQ --
                else:
                    self._check_header(b0)
                    ptype = b0 >> 4
                    packet = _DECODERS[ptype](data[s:e], b0 & 0x0F, level)
                    if ptype == _CONNECT:
                        assert isinstance(packet, Connect)
                        level = self.protocol_level = packet.protocol_level
                        v5 = level == MQTT_5
                        fast = self._connected = True
                    elif ptype == _CONNACK:
                        fast = self._connected = True
                    elif ptype == _DISCONNECT and v5 and not self._server:
                        assert isinstance(packet, Disconnect)
                        if packet.properties.session_expiry_interval is not None:
                            # 5.0: MQTT-3.14.2-2, the server must not send a session expiry
                            raise ProtocolError("session expiry interval in a server DISCONNECT")
                    out.append(packet)
                pos = e
            if pos < end:
                if not need:  # one byte left: the start of a fixed header
                    self._check_header(data[pos])
                    need = 2
                self._buf += memoryview(data)[pos:]
                self._need = need
            return out
        except ProtocolError:
            self._failed = True
            raise
        except (LookupError, ValueError, struct.error, OverflowError) as exc:
            # Safety net: every read is bounds-checked, so this means a bug, still reported as
            # the peer's malformed input rather than as a crash.
            self._failed = True
            raise MalformedPacket(f"cannot decode packet: {exc}") from exc

    def _check_header(self, b0: int) -> None:
        """Validate the first byte of a fixed header against the role and state."""
        ptype = b0 >> 4
        flags = b0 & 0x0F
        level = self.protocol_level
        if ptype == 0 or (ptype == _AUTH and level is not None and level != MQTT_5):
            # packet type 0 is reserved; AUTH (15) is reserved before 5.0
            raise MalformedPacket(f"reserved packet type {ptype}")
        if ptype not in (_SERVER_RECEIVES if self._server else _CLIENT_RECEIVES):
            raise ProtocolError(f"a {self.role} must not receive {PacketType(ptype).name}")
        if self._server:
            if ptype == _CONNECT:
                if self._connected:
                    raise ProtocolError("second CONNECT")  # 3.1.1/5.0: MQTT-3.1.0-2
            elif not self._connected:
                # 3.1.1/5.0: MQTT-3.1.0-1, the first packet from a client must be CONNECT
                raise ProtocolError(f"{PacketType(ptype).name} before CONNECT")
        elif not self._connected and ptype not in (_CONNACK, _AUTH):
            # 3.1.1/5.0: MQTT-3.2.0-1, the first packet from the server must be CONNACK
            # (5.0: AUTH may come first during enhanced authentication, 4.12)
            raise ProtocolError(f"{PacketType(ptype).name} before CONNACK")
        elif ptype == _DISCONNECT and level != MQTT_5:
            raise ProtocolError("a 3.1.1 server never sends DISCONNECT")  # 3.1.1 3.14
        if ptype == _PUBLISH:
            _check_publish_flags(b0)
        elif flags != _FIXED_FLAGS[ptype]:
            # 3.1.1: MQTT-2.1.3-1; 5.0 2.1.3: invalid flags are a Malformed Packet
            raise MalformedPacket(
                f"{PacketType(ptype).name} fixed-header flags 0x{flags:X}, "
                f"expected 0x{_FIXED_FLAGS[ptype]:X}"
            )

    @staticmethod
    def _long_length(data: bytes | bytearray, pos: int, end: int, maxsize: int) -> tuple[int, int]:
        """Decode a remaining length of 2..4 bytes at ``pos + 1``; ``(-1, 0)`` if incomplete.

        Raises PacketTooLarge as soon as the bytes seen so far prove the packet too large.
        """
        value = 0
        mult = 1
        i = pos + 1
        for k in range(4):
            if i >= end:
                # Minimal encoding (MQTT-1.5.5-1): the missing last byte is at least 1.
                if value + mult > maxsize:
                    raise PacketTooLarge(
                        f"packet of at least {value + mult} bytes exceeds the maximum "
                        f"packet size {maxsize}"
                    )
                return -1, 0
            byte = data[i]
            i += 1
            value += (byte & 0x7F) * mult
            if byte < 0x80:
                if byte == 0 and k:
                    raise MalformedPacket("remaining length not minimally encoded")
                    # ^ 5.0: MQTT-1.5.5-1
                return value, i
            mult <<= 7
        raise MalformedPacket("remaining length longer than 4 bytes")  # 3.1.1 2.2.3, 5.0 1.5.5
