"""The wire-format shortcuts of :mod:`enos_lab.mqtt._wire` give exactly what the codec encodes
and decodes, over random packets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.errors import LocalProtocolError, ProtocolError
from enos_lab.mqtt import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    ConnAck,
    Decoder,
    Properties,
    PubAck,
    Publish,
    encode,
)
from enos_lab.mqtt._wire import (
    CONNACK_311,
    PUBACK_HEAD,
    connack_return_code,
    packet_id_offset,
    puback_ids,
    publish_311,
    split_publish,
)

FUZZ = settings(max_examples=200, deadline=None)

levels = st.sampled_from([MQTT_3_1, MQTT_3_1_1, MQTT_5])
packet_ids = st.integers(1, 65535)
topics = st.text(st.characters(codec="utf-8", exclude_characters="\x00+#"), min_size=1, max_size=40)
# payloads around the sizes where the remaining length takes 1, 2 and 3 bytes
payloads = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from([120, 16_300, 16_400, 20_000]), st.binary(max_size=8)).map(
        lambda t: bytes(t[0]) + t[1]
    ),
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "message_expiry_interval": st.integers(0, 0xFFFFFFFF),
        "content_type": st.text(max_size=8).filter(lambda s: "\x00" not in s),
        "correlation_data": st.binary(max_size=12),
        "user_properties": st.lists(
            st.tuples(st.just("k"), st.text(max_size=200).filter(lambda s: "\x00" not in s)),
            max_size=3,
        ).map(tuple),
        "subscription_identifiers": st.lists(
            st.integers(1, 268_435_455), min_size=1, max_size=3
        ).map(tuple),
    },
).map(lambda d: Properties(**d) if d else NO_PROPERTIES)


def decode_all(level: int, data: bytes) -> list[object]:
    """Packets a connected server decoder at ``level`` reads from ``data``."""
    return list(Decoder(role="server", protocol_level=level).feed(data))


# -- PUBACK -------------------------------------------------------------------------------------


@FUZZ
@given(levels, packet_ids)
def test_puback_head_and_packet_id_is_the_codecs_puback(level: int, pid: int) -> None:
    assert PUBACK_HEAD + pid.to_bytes(2, "big") == encode(PubAck(pid), level)


@FUZZ
@given(levels, st.lists(packet_ids, min_size=1, max_size=50))
def test_a_run_of_pubacks_gives_their_packet_ids(level: int, pids: list[int]) -> None:
    data = b"".join(encode(PubAck(pid), level) for pid in pids)
    ids = puback_ids(data)
    assert ids is not None and list(ids) == pids
    assert decode_all(level, data) == [PubAck(pid) for pid in pids]


@FUZZ
@given(levels, st.lists(packet_ids, min_size=1, max_size=8), st.data())
def test_anything_else_is_left_to_the_decoder(
    level: int, pids: list[int], data: st.DataObject
) -> None:
    """A damaged run of PUBACKs, or random bytes: either no ids, or exactly what the decoder
    reads (complete PUBACKs with reason 0)."""
    wire = bytearray(b"".join(encode(PubAck(pid), level) for pid in pids))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    for chunk in (bytes(wire), data.draw(st.binary(max_size=40))):
        ids = puback_ids(chunk)
        if ids is None:
            continue
        assert decode_all(level, chunk) == [PubAck(pid) for pid in ids]


@pytest.mark.parametrize(
    "chunk",
    [
        bytes.fromhex("4002 0000"),  # packet id 0: the decoder reports it
        bytes.fromhex("4002 0001 40"),  # incomplete
        bytes.fromhex("4003 0001 10"),  # 5.0 reason code 0x10
        bytes.fromhex("5002 0001"),  # PUBREC
        bytes.fromhex("4002 0001 3002"),
    ],
)
def test_what_is_not_a_run_of_plain_pubacks(chunk: bytes) -> None:
    assert puback_ids(chunk) is None


def test_an_empty_chunk_has_no_packet_ids() -> None:
    ids = puback_ids(b"")
    assert ids is not None and len(ids) == 0


def test_packet_id_0_is_a_protocol_error_for_the_decoder() -> None:
    with pytest.raises(ProtocolError):
        decode_all(MQTT_3_1_1, bytes.fromhex("4002 0000"))


# -- CONNACK ------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_3_1_1])
@pytest.mark.parametrize("present", [False, True])
def test_pre_encoded_connacks_are_the_codecs(level: int, present: bool) -> None:
    assert CONNACK_311[present] == encode(ConnAck(present, 0), level)


@pytest.mark.parametrize(
    ("reason_code", "return_code"),
    [(0x84, 1), (0x85, 2), (0x88, 3), (0x89, 3), (0x86, 4), (0x87, 5), (0x80, 5), (0x8C, 5)],
)
def test_connack_return_codes_of_5_0_reason_codes(reason_code: int, return_code: int) -> None:
    assert connack_return_code(reason_code) == return_code
    encode(ConnAck(False, return_code), MQTT_3_1_1)  # a valid 3.1.1 return code


# -- PUBLISH ------------------------------------------------------------------------------------


@FUZZ
@given(topics, payloads, st.integers(0, 2), st.booleans(), packet_ids)
def test_publish_311_is_the_codecs_publish(
    topic: str, payload: bytes, qos: int, retain: bool, pid: int
) -> None:
    prefix, suffix = publish_311(topic, payload, qos, retain)
    if qos:
        data = prefix + pid.to_bytes(2, "big") + suffix
        assert data == encode(Publish(topic, payload, qos, retain, False, pid), MQTT_3_1_1)
    else:
        data = prefix
        assert suffix == b""
        assert data == encode(Publish(topic, payload, 0, retain), MQTT_3_1_1)
    (packet,) = decode_all(MQTT_3_1_1, data)
    assert packet == Publish(topic, payload, qos, retain, False, pid if qos else 0)


@pytest.mark.parametrize("topic", ["", "a/+", "a/#", "a\x00b"])
def test_publish_311_refuses_what_the_codec_refuses(topic: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode(Publish(topic, b"x"), MQTT_3_1_1)
    with pytest.raises(LocalProtocolError):
        publish_311(topic, b"x", 0, False)


@FUZZ
@given(
    st.sampled_from([MQTT_3_1_1, MQTT_5]),
    topics,
    payloads,
    st.integers(1, 2),
    st.booleans(),
    properties,
    packet_ids,
    packet_ids,
)
def test_an_encoded_publish_splits_at_its_packet_id(  # noqa: PLR0917
    level: int,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    props: Properties,
    pid: int,
    other: int,
) -> None:
    if level != MQTT_5:
        props = NO_PROPERTIES
    data = encode(Publish(topic, payload, qos, retain, False, pid, props), level)
    offset = packet_id_offset(data)
    assert data[offset : offset + 2] == pid.to_bytes(2, "big")
    prefix, suffix = split_publish(data)
    patched = prefix + other.to_bytes(2, "big") + suffix
    assert patched == encode(Publish(topic, payload, qos, retain, False, other, props), level)
