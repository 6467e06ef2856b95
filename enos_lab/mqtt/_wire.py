"""Wire-format shortcuts for a server's hot paths: pre-encoded packets and encoded PUBLISHes
patched in place, each equal to what :func:`~enos_lab.mqtt.encode` writes.

Theory of operation
-------------------
A server sends a few packets over and over: the PUBACK of a QoS 1 message, the CONNACK that
accepts a 3.1.1 client, and one PUBLISH to many subscribers. Instead of building a packet
object and encoding it each time, it copies bytes that the codec encoded once:

- :data:`PUBACK_HEAD` is the fixed header of a PUBACK with reason code 0 and no properties,
  the same in 3.1.1 and 5.0 (5.0 3.4.2.1 allows leaving reason code 0 out): a PUBACK is
  ``PUBACK_HEAD + packet_id.to_bytes(2, "big")``. :func:`puback_ids` reads a chunk made of
  nothing but such PUBACKs (what a QoS 1 subscriber sends) with slicing and :mod:`array`,
  without a decoder; any other chunk is for the :class:`~enos_lab.mqtt.Decoder`.
- :data:`CONNACK_311` holds the accepting 3.1 / 3.1.1 CONNACKs by session present flag;
  :func:`connack_return_code` maps a 5.0 CONNACK reason code to the 3.1.1 return code.
- An encoded PUBLISH is kept as ``(prefix, suffix)``: for QoS > 0 a receiver's packet
  identifier goes between the two, so one encoding serves every receiver; for QoS 0 the prefix
  is the whole packet and the suffix is empty. :func:`publish_311` builds the 3.1.1 form from
  the codec's encoding of the topic (remembered per topic) and computes only the fixed header
  per message; :func:`split_publish` cuts any encoded QoS > 0 PUBLISH (5.0 too) at its packet
  identifier, found by :func:`packet_id_offset`.

:func:`split_packets` is for relays (a proxy that forwards packets whole, inspecting a few): it
cuts complete packets off a byte stream by their fixed header, using the decoder's reading of
the remaining length, without decoding anything else.

The tests (``tests/mqtt/test_wire.py``) check every shortcut against :func:`encode` and the
decoder, over random packets.
"""

from __future__ import annotations

import sys
from array import array

from enos_lab.errors import PacketTooLarge
from enos_lab.mqtt._codec import DEFAULT_MAX_PACKET_SIZE, Decoder, encode
from enos_lab.mqtt._encode import _topic_field
from enos_lab.mqtt._packets import ConnAck, PubAck, Publish

__all__ = [
    "CONNACK_311",
    "PUBACK_HEAD",
    "connack_return_code",
    "packet_id_offset",
    "puback_ids",
    "publish_311",
    "split_packets",
    "split_publish",
]

PUBACK_HEAD = encode(PubAck(1), 4)[:2]
"""Fixed header of a PUBACK with reason code 0 and no properties (3.1.1 and 5.0)."""
_PUBACK_FIRST, _PUBACK_SECOND = PUBACK_HEAD[:1], PUBACK_HEAD[1:]

CONNACK_311 = {present: encode(ConnAck(present, 0), 4) for present in (False, True)}
"""The CONNACK accepting a 3.1.1 (or 3.1) client, by session present."""

# 5.0 CONNACK reason code -> 3.1.1 return code (3.1.1 3.2.2.3); anything else: 5
_RC_TO_311 = {0x86: 4, 0x85: 2, 0x88: 3, 0x89: 3, 0x84: 1}

_MAX_TOPICS = 10_000  # topics whose encoded field publish_311 remembers
_topic_fields: dict[str, bytes] = {}  # topic -> its length-prefixed UTF-8 field


def connack_return_code(reason_code: int) -> int:
    """The 3.1.1 CONNACK return code for a refusing 5.0 reason code (0x86 -> 4, 0x85 -> 2,
    0x88 / 0x89 -> 3, 0x84 -> 1, anything else -> 5)."""
    return _RC_TO_311.get(reason_code, 5)


def puback_ids(data: bytes) -> array[int] | None:
    """The packet identifiers of ``data`` if it is nothing but complete PUBACKs with reason
    code 0 and no properties (4 bytes each, 3.1.1 or 5.0), in order; else ``None``.

    A packet identifier 0 gives ``None`` too: the decoder reports it (MQTT-2.3.1-1).
    """
    n = len(data) >> 2
    if len(data) & 3 or data[1::4] != _PUBACK_SECOND * n or data[0::4] != _PUBACK_FIRST * n:
        return None
    words = array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    pids = words[1::2]
    if 0 in pids:
        return None
    return pids


def packet_id_offset(data: bytes) -> int:
    """Offset of the packet identifier in an encoded PUBLISH with QoS > 0 (any level): after
    the fixed header and the topic name."""
    i = 1
    while data[i] & 0x80:  # remaining length, a variable byte integer
        i += 1
    i += 1
    return i + 2 + ((data[i] << 8) | data[i + 1])


def split_publish(data: bytes) -> tuple[bytes, bytes]:
    """An encoded PUBLISH with QoS > 0 as ``(prefix, suffix)``: the bytes before and after its
    packet identifier."""
    offset = packet_id_offset(data)
    return data[:offset], data[offset + 2 :]


def publish_311(topic: str, payload: bytes, qos: int, retain: bool) -> tuple[bytes, bytes]:
    """A 3.1.1 PUBLISH (DUP 0) as ``(prefix, suffix)``: for QoS > 0 the packet identifier goes
    between them, for QoS 0 the prefix is the whole packet and the suffix empty.

    The topic field is encoded by the codec once per topic (a bad topic raises its
    :class:`~enos_lab.errors.LocalProtocolError`); per message only the fixed header is
    computed. Packets of 16 KiB or more go through :func:`encode` entirely.
    """
    field = _topic_fields.get(topic)
    if field is None:
        field = _topic_field(topic)
        if len(_topic_fields) >= _MAX_TOPICS:
            _topic_fields.clear()
        _topic_fields[topic] = field
    rl = len(field) + len(payload) + (2 if qos else 0)
    b0 = 0x30 | (qos << 1) | (1 if retain else 0)
    if rl < 0x80:
        head = bytes((b0, rl))
    elif rl < 0x4000:
        head = bytes((b0, (rl & 0x7F) | 0x80, rl >> 7))
    else:
        data = encode(Publish(topic, payload, qos, retain, False, 1 if qos else 0), 4)
        if qos:
            offset = len(data) - len(payload) - 2  # 3.1.1: the packet id ends the header
            return data[:offset], data[offset + 2 :]
        return data, b""
    if qos:
        return head + field, payload
    return b"".join((head, field, payload)), b""


def split_packets(
    data: bytes | bytearray, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
) -> tuple[list[bytes], int]:
    """Cut the complete packets off the front of ``data``: ``(packets, used)``.

    Each packet is the exact bytes received, fixed header included, delimited by the remaining
    length as :class:`~enos_lab.mqtt.Decoder` reads it (3.1.1 2.2.3, 5.0 1.5.5); ``used`` is
    how many bytes of ``data`` they take, the rest being the start of a packet still
    incomplete. Only the length is checked: a remaining length longer than 4 bytes or not
    minimally encoded raises :class:`~enos_lab.errors.MalformedPacket`, a packet larger than
    ``max_packet_size`` [bytes] (fixed header included) raises
    :class:`~enos_lab.errors.PacketTooLarge` as soon as its header proves it. Whether the
    packets are valid is for their receiver to judge.
    """
    packets: list[bytes] = []
    pos = 0
    end = len(data)
    while pos + 1 < end:
        rl, start = Decoder._long_length(data, pos, end, max_packet_size)
        if rl < 0:
            break
        stop = start + rl
        if stop - pos > max_packet_size:
            raise PacketTooLarge(
                f"packet of {stop - pos} bytes exceeds the maximum packet size {max_packet_size}"
            )
        if stop > end:
            break
        packets.append(bytes(data[pos:stop]))
        pos = stop
    return packets, pos
