"""Packets to bytes: :func:`encode` (the encoding half of :mod:`enos_lab.mqtt._codec`).

Every field is checked while it is encoded (a value the protocol cannot carry raises
:class:`~enos_lab.errors.InvalidArgument` or :class:`~enos_lab.errors.LocalProtocolError`);
the wire form of topic names is memoised."""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from enos_lab.errors import LocalProtocolError
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
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from enos_lab.mqtt._spec import (
    _ALLOWED,
    _AUTH,
    _BOOLEAN_PROPERTIES,
    _BYTE,
    _CONNACK,
    _CONNECT,
    _DISCONNECT,
    _ENCODE_ORDER,
    _FIXED_FLAGS,
    _K_BYTE,
    _K_PAIR,
    _K_U16,
    _K_U32,
    _K_UTF8,
    _K_VARINT,
    _MAX_VARINT,
    _NONZERO_PROPERTIES,
    _PACK_H,
    _PACK_I,
    _PROPERTY_NAMES,
    _PUBACK,
    _PUBCOMP,
    _PUBLISH,
    _PUBREC,
    _PUBREL,
    _REASON_CODES,
    _SUBACK,
    _SUBSCRIBE,
    _UNSUBACK,
    _UNSUBSCRIBE,
    _WILL_CTX,
)

__all__ = ["encode"]


# -- encoding ---------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTE[n]
    if n > _MAX_VARINT:
        raise LocalProtocolError(f"value {n} does not fit a variable byte integer")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _fixed_header(b0: int, rl: int) -> bytes:
    if rl < 0x80:
        return bytes((b0, rl))
    return _BYTE[b0] + _varint(rl)


def _str(s: str, what: str) -> bytes:
    try:
        raw = s.encode()
    except UnicodeEncodeError as exc:  # lone surrogates: MQTT-1.5.3-1 / MQTT-1.5.4-1
        raise LocalProtocolError(f"{what} cannot be encoded as UTF-8") from exc
    if len(raw) > 0xFFFF:
        raise LocalProtocolError(f"{what} is {len(raw)} bytes, more than 65535")
    if "\x00" in s:
        raise LocalProtocolError(f"{what} contains U+0000")  # MQTT-1.5.3-2 / MQTT-1.5.4-2
    return _PACK_H(len(raw)) + raw


def _bin(b: bytes, what: str) -> bytes:
    if len(b) > 0xFFFF:
        raise LocalProtocolError(f"{what} is {len(b)} bytes, more than 65535")
    return _PACK_H(len(b)) + b


def _packet_id(pid: int, what: str) -> bytes:
    if not 0 < pid <= 0xFFFF:
        # 3.1.1: MQTT-2.3.1-1; 5.0: MQTT-2.2.1-3
        raise LocalProtocolError(f"{what} packet identifier {pid} is not in 1..65535")
    return _PACK_H(pid)


def _encode_properties(props: Properties, ctx: int) -> bytes:
    if props is NO_PROPERTIES:
        return b"\x00"
    allowed = _ALLOWED[ctx]
    parts: list[bytes] = []
    for pid, (name, kind, _) in _ENCODE_ORDER:
        value = getattr(props, name)
        if value is None or value == ():
            continue
        if pid not in allowed:
            raise LocalProtocolError(
                f"property {name} is not allowed in {_PROPERTY_NAMES[ctx]}"
            )  # 5.0 2.2.2.2
        ident = _BYTE[pid]
        if kind == _K_PAIR:
            for key, val in value:
                parts.append(ident + _str(key, "user property name") + _str(val, name))
            continue
        if kind == _K_VARINT:
            if ctx != _PUBLISH and len(value) > 1:
                raise LocalProtocolError(f"more than one subscription identifier in {ctx}")
            for sub_id in value:
                if not 0 < sub_id <= _MAX_VARINT:
                    raise LocalProtocolError(f"subscription identifier {sub_id} out of range")
                parts.append(ident + _varint(sub_id))
            continue
        if pid in _BOOLEAN_PROPERTIES and value not in (0, 1):
            raise LocalProtocolError(f"property {name} must be 0 or 1, got {value}")
        if pid in _NONZERO_PROPERTIES and value == 0:
            raise LocalProtocolError(f"property {name} must not be 0")
        if pid == 0x08 and ("+" in value or "#" in value or not value):
            raise LocalProtocolError(f"response topic {value!r} is not a valid topic name")
        if kind == _K_BYTE:
            parts.append(ident + _BYTE[value])
        elif kind == _K_U16:
            parts.append(ident + _PACK_H(value))
        elif kind == _K_U32:
            parts.append(ident + _PACK_I(value))
        elif kind == _K_UTF8:
            parts.append(ident + _str(value, name))
        else:  # _K_BIN
            parts.append(ident + _bin(value, name))
    block = b"".join(parts)
    return _varint(len(block)) + block


def _check_qos(qos: int, what: str) -> None:
    if qos not in (0, 1, 2):
        raise LocalProtocolError(f"{what} QoS {qos} is not 0, 1 or 2")


# Fixed headers of PUBLISH packets with a one-byte remaining length, by (flags << 7) | length.
_SHORT_PUBLISH_HEADERS = tuple(bytes((0x30 | (i >> 7), i & 0x7F)) for i in range(16 << 7))


@lru_cache(maxsize=4096)
def _topic_field(topic: str) -> bytes:
    """The length-prefixed UTF-8 topic name of a PUBLISH (memoised: few topics, many messages)."""
    if not topic or "+" in topic or "#" in topic:
        # 3.1.1/5.0: MQTT-3.3.2-2 (no wildcards), MQTT-4.7.3-1 (at least one character)
        raise LocalProtocolError(f"invalid topic name {topic!r}")
    return _str(topic, "topic name")


def _encode_publish(p: Publish, level: int) -> bytes:
    topic = p.topic
    if topic:
        field = _topic_field(topic)
    elif level == MQTT_5 and p.properties.topic_alias is not None:
        field = b"\x00\x00"  # 5.0 3.3.2.3.4: the topic is given by its alias only
    else:
        raise LocalProtocolError("empty topic name")  # MQTT-4.7.3-1
    payload = p.payload
    qos = p.qos
    if qos:
        if qos != 1 and qos != 2:  # noqa: PLR1714 (faster than a tuple test)
            raise LocalProtocolError(f"PUBLISH QoS {qos} is not 0, 1 or 2")  # MQTT-3.3.1-4
        pid = p.packet_id
        if not 0 < pid <= 0xFFFF:
            raise LocalProtocolError(f"PUBLISH packet identifier {pid} is not in 1..65535")
        tail = _PACK_H(pid)
        b0 = 0x30 | (qos << 1)
        if p.dup:
            b0 |= 0x08
    else:
        if p.dup:
            raise LocalProtocolError("DUP set on a QoS 0 PUBLISH")  # MQTT-3.3.1-2
        tail = b""
        b0 = 0x30
    if p.retain:
        b0 |= 0x01
    if level == MQTT_5:
        props = p.properties
        if props is NO_PROPERTIES:
            tail += b"\x00"
        else:
            tail += _encode_properties(props, _PUBLISH)
    rl = len(field) + len(tail) + len(payload)
    if rl < 0x80:
        return b"".join((_SHORT_PUBLISH_HEADERS[((b0 & 0x0F) << 7) | rl], field, tail, payload))
    return b"".join((_fixed_header(b0, rl), field, tail, payload))


def _encode_connect(c: Connect, level: int) -> bytes:
    proto = c.protocol_level
    if proto != level:
        raise LocalProtocolError(
            f"CONNECT protocol_level {proto} differs from the encoding level {level}"
        )
    flags = 0x02 if c.clean_start else 0
    parts = [_str(c.protocol_name, "protocol name"), _BYTE[proto], b""]
    if not 0 <= c.keep_alive <= 0xFFFF:
        raise LocalProtocolError(f"keep alive {c.keep_alive} is not in 0..65535")
    parts.append(_PACK_H(c.keep_alive))
    if level == MQTT_5:
        parts.append(_encode_properties(c.properties, _CONNECT))
    parts.append(_str(c.client_id, "client identifier"))
    will = c.will
    if will is not None:
        _check_qos(will.qos, "will")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if level == MQTT_5:
            parts.append(_encode_properties(will.properties, _WILL_CTX))
        if not will.topic or "+" in will.topic or "#" in will.topic:
            raise LocalProtocolError(f"invalid will topic {will.topic!r}")  # MQTT-3.1.3-11
        parts.append(_str(will.topic, "will topic"))
        parts.append(_bin(will.payload, "will payload"))
    if c.username is not None:
        flags |= 0x80
        parts.append(_str(c.username, "user name"))
    if c.password is not None:
        if c.username is None and level != MQTT_5:
            raise LocalProtocolError("password without user name")  # MQTT-3.1.2-22
        flags |= 0x40
        parts.append(_bin(c.password, "password"))
    parts[2] = _BYTE[flags]
    body = b"".join(parts)
    return _fixed_header(0x10, len(body)) + body


def _encode_connack(c: ConnAck, level: int) -> bytes:
    code = c.reason_code
    if c.session_present and code:
        raise LocalProtocolError("session present in a refusing CONNACK")  # MQTT-3.2.2-4
    head = bytes((1 if c.session_present else 0, code)) if 0 <= code <= 0xFF else b""
    if level != MQTT_5:
        if not 0 <= code <= 5:
            raise LocalProtocolError(f"CONNACK return code {code} is not a 3.1.1 return code")
        return b"\x20\x02" + head
    if code not in _REASON_CODES[_CONNACK]:
        raise LocalProtocolError(f"reason code {code} is not valid in CONNACK")
    body = head + _encode_properties(c.properties, _CONNACK)
    return _fixed_header(0x20, len(body)) + body


def _encode_ack(
    ptype: int, name: str, packet: PubAck | PubRec | PubRel | PubComp, level: int
) -> bytes:
    b0 = (ptype << 4) | _FIXED_FLAGS[ptype]
    pid = _packet_id(packet.packet_id, name)
    code = packet.reason_code
    if level != MQTT_5:
        return bytes((b0, 2)) + pid
    if code not in _REASON_CODES[ptype]:
        raise LocalProtocolError(f"reason code {code} is not valid in {name}")
    props = packet.properties
    if props is NO_PROPERTIES:
        if not code:
            return bytes((b0, 2)) + pid  # 5.0 3.4.2.1: reason code 0 and no properties
        return bytes((b0, 3)) + pid + _BYTE[code]
    body = pid + _BYTE[code] + _encode_properties(props, ptype)
    return _fixed_header(b0, len(body)) + body


def _encode_puback(p: PubAck, level: int) -> bytes:
    if level != MQTT_5 or (p.properties is NO_PROPERTIES and not p.reason_code):
        pid = p.packet_id
        if 0 < pid <= 0xFFFF:
            return b"\x40\x02" + _PACK_H(pid)
    return _encode_ack(_PUBACK, "PUBACK", p, level)


def _encode_subscribe(s: Subscribe, level: int) -> bytes:
    if not s.subscriptions:
        raise LocalProtocolError("SUBSCRIBE without topic filters")  # MQTT-3.8.3-3
    parts = [_packet_id(s.packet_id, "SUBSCRIBE")]
    if level == MQTT_5:
        parts.append(_encode_properties(s.properties, _SUBSCRIBE))
    for sub in s.subscriptions:
        _check_qos(sub.qos, "subscription")
        opts = sub.qos
        if level == MQTT_5:
            handling = int(sub.retain_handling)
            if handling not in (0, 1, 2):
                raise LocalProtocolError(f"retain handling {handling} is not 0, 1 or 2")
            if sub.no_local and sub.topic_filter.startswith("$share/"):
                raise LocalProtocolError("no local on a shared subscription")  # MQTT-3.8.3-4
            opts |= (
                (0x04 if sub.no_local else 0)
                | (0x08 if sub.retain_as_published else 0)
                | (handling << 4)
            )
        parts.append(_str(sub.topic_filter, "topic filter") + _BYTE[opts])
    body = b"".join(parts)
    return _fixed_header(0x82, len(body)) + body


def _encode_suback(s: SubAck, level: int) -> bytes:
    if not s.reason_codes:
        raise LocalProtocolError("SUBACK without reason codes")
    parts = [_packet_id(s.packet_id, "SUBACK")]
    if level == MQTT_5:
        parts.append(_encode_properties(s.properties, _SUBACK))
        allowed = _REASON_CODES[_SUBACK]
        for code in s.reason_codes:
            if code not in allowed:
                raise LocalProtocolError(f"reason code {code} is not valid in SUBACK")
        parts.append(bytes(s.reason_codes))
    else:
        # 3.1.1 3.9.3: granted QoS 0..2 or 0x80 (failure); 5.0 failure codes map to 0x80.
        codes = []
        for code in s.reason_codes:
            if code not in (0, 1, 2) and code < 0x80:
                raise LocalProtocolError(f"SUBACK return code {code} is not valid in 3.1.1")
            codes.append(min(code, 0x80))
        parts.append(bytes(codes))
    body = b"".join(parts)
    return _fixed_header(0x90, len(body)) + body


def _encode_unsubscribe(u: Unsubscribe, level: int) -> bytes:
    if not u.topic_filters:
        raise LocalProtocolError("UNSUBSCRIBE without topic filters")  # MQTT-3.10.3-2
    parts = [_packet_id(u.packet_id, "UNSUBSCRIBE")]
    if level == MQTT_5:
        parts.append(_encode_properties(u.properties, _UNSUBSCRIBE))
    parts.extend(_str(f, "topic filter") for f in u.topic_filters)
    body = b"".join(parts)
    return _fixed_header(0xA2, len(body)) + body


def _encode_unsuback(u: UnsubAck, level: int) -> bytes:
    pid = _packet_id(u.packet_id, "UNSUBACK")
    if level != MQTT_5:
        return b"\xb0\x02" + pid
    if not u.reason_codes:
        raise LocalProtocolError("a 5.0 UNSUBACK needs one reason code per topic filter")
    for code in u.reason_codes:
        if code not in _REASON_CODES[_UNSUBACK]:
            raise LocalProtocolError(f"reason code {code} is not valid in UNSUBACK")
    body = pid + _encode_properties(u.properties, _UNSUBACK) + bytes(u.reason_codes)
    return _fixed_header(0xB0, len(body)) + body


def _encode_reason_and_props(ptype: int, code: int, props: Properties) -> bytes:
    b0 = ptype << 4
    if code not in _REASON_CODES[ptype]:
        raise LocalProtocolError(f"reason code {code} is not valid in {PacketType(ptype).name}")
    if props is NO_PROPERTIES:
        if not code:
            return bytes((b0, 0))  # 5.0 3.14.2.1 / 3.15.2.1: short form
        return bytes((b0, 1, code))
    body = _BYTE[code] + _encode_properties(props, ptype)
    return _fixed_header(b0, len(body)) + body


def _encode_disconnect(d: Disconnect, level: int) -> bytes:
    if level != MQTT_5:
        return b"\xe0\x00"
    return _encode_reason_and_props(_DISCONNECT, d.reason_code, d.properties)


def _encode_auth(a: Auth, level: int) -> bytes:
    if level != MQTT_5:
        raise LocalProtocolError("AUTH exists only in MQTT 5.0")
    return _encode_reason_and_props(_AUTH, a.reason_code, a.properties)


def _encode_pingreq(p: PingReq, level: int) -> bytes:
    return b"\xc0\x00"


def _encode_pingresp(p: PingResp, level: int) -> bytes:
    return b"\xd0\x00"


def _encode_pubrec(p: PubRec, level: int) -> bytes:
    return _encode_ack(_PUBREC, "PUBREC", p, level)


def _encode_pubrel(p: PubRel, level: int) -> bytes:
    return _encode_ack(_PUBREL, "PUBREL", p, level)


def _encode_pubcomp(p: PubComp, level: int) -> bytes:
    return _encode_ack(_PUBCOMP, "PUBCOMP", p, level)


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Publish: _encode_publish,
    PubAck: _encode_puback,
    PubRec: _encode_pubrec,
    PubRel: _encode_pubrel,
    PubComp: _encode_pubcomp,
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_unsuback,
    PingReq: _encode_pingreq,
    PingResp: _encode_pingresp,
    Disconnect: _encode_disconnect,
    Auth: _encode_auth,
}


def encode(packet: Packet, protocol_level: int) -> bytes:
    """Serialise ``packet`` for a connection at ``protocol_level`` (3, 4 or 5).

    At levels 3 and 4 the 5.0-only fields (properties, reason codes other than CONNACK's return
    code) are not written; SUBACK failure codes (>= 0x80) become 0x80. A QoS 0 PUBLISH has no
    packet identifier on the wire. Raises :class:`~enos_lab.errors.LocalProtocolError` for values
    the wire cannot carry or the specification forbids (packet id out of range, QoS > 2, a string
    longer than 65535 bytes or containing U+0000, AUTH below 5.0, a property not allowed in the
    packet type, ...).
    """
    if type(packet) is Publish and 3 <= protocol_level <= 5:
        try:
            return _encode_publish(packet, protocol_level)
        except (ValueError, struct.error, OverflowError, TypeError) as exc:
            raise LocalProtocolError(f"cannot encode {packet!r}: {exc}") from exc
    if protocol_level not in (MQTT_3_1, MQTT_3_1_1, MQTT_5):
        raise LocalProtocolError(f"protocol level {protocol_level} is not 3, 4 or 5")
    encoder = _ENCODERS.get(type(packet))
    if encoder is None:
        raise LocalProtocolError(f"not an MQTT packet: {packet!r}")
    try:
        return encoder(packet, protocol_level)
    except (ValueError, struct.error, OverflowError, TypeError, IndexError) as exc:
        raise LocalProtocolError(f"cannot encode {packet!r}: {exc}") from exc
