"""split_packets cuts a byte stream into whole packets exactly as the decoder delimits them,
whatever the chunking, and refuses only bad remaining lengths and packets too large."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.errors import MalformedPacket, PacketTooLarge
from enos_lab.mqtt import (
    MQTT_3_1_1,
    Connect,
    Decoder,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
    Subscription,
    encode,
    split_packets,
)

FUZZ = settings(max_examples=150, deadline=None)

packets = st.one_of(
    st.builds(
        lambda topic, payload, qos, pid: Publish(
            topic, payload, qos, False, False, pid if qos else 0
        ),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00+#"), min_size=1, max_size=20),
        st.one_of(st.binary(max_size=200), st.binary(min_size=16_380, max_size=16_400)),
        st.integers(0, 2),
        st.integers(1, 65535),
    ),
    st.builds(PubAck, st.integers(1, 65535)),
    st.just(PingReq()),
    st.builds(
        lambda pid, topic: Subscribe(pid, (Subscription(topic, 1),)),
        st.integers(1, 65535),
        st.sampled_from(["a/#", "b/+/c", "x"]),
    ),
)


def _stream(items: list[object]) -> tuple[list[bytes], bytes]:
    head = encode(Connect("c1", protocol_level=MQTT_3_1_1), MQTT_3_1_1)
    wire = [head, *(encode(p, MQTT_3_1_1) for p in items)]  # type: ignore[arg-type]
    return wire, b"".join(wire)


@FUZZ
@given(st.lists(packets, max_size=8), st.integers(1, 300))
def test_any_chunking_gives_the_packets_the_decoder_sees(items: list[object], size: int) -> None:
    wire, data = _stream(items)
    out: list[bytes] = []
    buffer = bytearray()
    for start in range(0, len(data), size):
        buffer += data[start : start + size]
        found, used = split_packets(buffer)
        del buffer[:used]
        out.extend(found)
    assert out == wire and not buffer
    decoded = Decoder().feed(b"".join(out))
    assert len(decoded) == len(wire)


def test_an_incomplete_packet_waits_and_the_rest_is_left() -> None:
    wire, data = _stream([Publish("t", b"x" * 300, 1, False, False, 5), PingReq()])
    for cut in range(len(data)):
        found, used = split_packets(data[:cut])
        assert b"".join(found) == data[:used]
        assert used <= cut
    assert split_packets(data) == (wire, len(data))
    assert split_packets(b"") == ([], 0)
    assert split_packets(b"\xc0") == ([], 0)


def test_bad_lengths_and_large_packets_are_refused() -> None:
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        split_packets(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(MalformedPacket, match="minimally"):
        split_packets(b"\x30\x80\x00")
    big = encode(Publish("t", b"x" * 2000, 0, False, False, 0), MQTT_3_1_1)
    with pytest.raises(PacketTooLarge, match="1000"):
        split_packets(big, max_packet_size=1000)
    with pytest.raises(PacketTooLarge):  # proven by the header alone
        split_packets(big[:3], max_packet_size=1000)
    assert split_packets(big, max_packet_size=len(big)) == ([big], len(big))
