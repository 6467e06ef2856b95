"""MQTT codec: round trips, incremental decoding, exact bytes, malformed input, size limits."""

from __future__ import annotations

import pytest

from enos_lab.errors import LocalProtocolError, MalformedPacket, PacketTooLarge, ProtocolError
from enos_lab.mqtt import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    RetainHandling,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)

# -- samples -------------------------------------------------------------------------------------

USER = (("k", "v"), ("k", "v2"), ("ключ", "värde"))

CONNECT_PROPS = Properties(
    session_expiry_interval=3600,
    receive_maximum=20,
    maximum_packet_size=65536,
    topic_alias_maximum=10,
    request_response_information=1,
    request_problem_information=0,
    authentication_method="SCRAM-SHA-1",
    authentication_data=b"\x01\x02",
    user_properties=USER,
)
WILL_PROPS = Properties(
    will_delay_interval=5,
    payload_format_indicator=1,
    message_expiry_interval=60,
    content_type="text/plain",
    response_topic="reply/to",
    correlation_data=b"\x00corr",
    user_properties=(("w", "1"),),
)
CONNACK_PROPS = Properties(
    session_expiry_interval=0xFFFFFFFF,
    receive_maximum=65535,
    maximum_qos=1,
    retain_available=1,
    maximum_packet_size=1 << 20,
    assigned_client_identifier="auto-0001",
    topic_alias_maximum=16,
    reason_string="welcome",
    user_properties=USER,
    wildcard_subscription_available=0,
    subscription_identifier_available=1,
    shared_subscription_available=1,
    server_keep_alive=30,
    response_information="resp/",
    server_reference="other.example:1883",
    authentication_method="SCRAM-SHA-1",
    authentication_data=b"\xff" * 3,
)
PUBLISH_PROPS = Properties(
    payload_format_indicator=0,
    message_expiry_interval=120,
    topic_alias=3,
    response_topic="r/1",
    correlation_data=b"c",
    user_properties=USER,
    content_type="application/json",
)
ACK_PROPS = Properties(reason_string="why", user_properties=USER)


def samples(level: int) -> list[tuple[str, Packet]]:
    """(receiving role, packet) pairs covering every packet type at ``level``."""
    v5 = level == MQTT_5
    name = "MQIsdp" if level == MQTT_3_1 else "MQTT"
    out: list[tuple[str, Packet]] = [
        ("server", Connect("c1", level, name)),
        (
            "server",
            Connect(
                "dev-ä",
                level,
                name,
                clean_start=False,
                keep_alive=65535,
                username="user",
                password=b"\x00secret",
                will=Will("will/topic", b"bye", 2, True, WILL_PROPS if v5 else NO_PROPERTIES),
                properties=CONNECT_PROPS if v5 else NO_PROPERTIES,
            ),
        ),
        ("server", Connect("", level, name, will=Will("w", b"", 1, False))),
        ("client", ConnAck()),
        ("client", ConnAck(session_present=True)),
        ("client", ConnAck(reason_code=0x86 if v5 else 4)),
        ("server", Publish("a/b", b"payload")),
        ("server", Publish("température/°C", b"\x00\xff" * 100, 1, True, True, 65535)),
        ("client", Publish("a", b"", 2, False, False, 1)),
        ("server", Publish("x/" * 100 + "y", b"z" * 20000, 1, packet_id=77)),
        ("server", PubAck(1)),
        ("client", PubAck(65535)),
        ("server", PubRec(2)),
        ("client", PubRel(3)),
        ("server", PubComp(4)),
        (
            "server",
            Subscribe(
                10,
                (
                    Subscription("a/+/c", 0),
                    Subscription("#", 1),
                    Subscription("$SYS/#", 2),
                ),
            ),
        ),
        ("client", SubAck(10, (0, 1, 2, 0x80))),
        ("server", Unsubscribe(11, ("a/+/c", "#"))),
        ("client", UnsubAck(11, (0, 0x11) if v5 else ())),
        ("server", PingReq()),
        ("client", PingResp()),
        ("server", Disconnect()),
    ]
    if v5:
        out += [
            ("client", ConnAck(True, 0, CONNACK_PROPS)),
            ("client", ConnAck(False, 0x9D, Properties(server_reference="b:1883"))),
            ("server", Publish("a/b", b"p", 1, False, False, 9, PUBLISH_PROPS)),
            (
                "client",
                Publish("a/b", b"p", 0, properties=Properties(subscription_identifiers=(1, 2))),
            ),
            (
                "client",
                Publish(
                    "a/b",
                    b"p",
                    2,
                    packet_id=5,
                    properties=Properties(subscription_identifiers=(268435455,)),
                ),
            ),
            ("server", Publish("", b"alias only", 0, properties=Properties(topic_alias=3))),
            ("server", PubAck(5, ReasonCode.NO_MATCHING_SUBSCRIBERS)),
            ("server", PubAck(5, 0x80, ACK_PROPS)),
            ("server", PubAck(5, 0, ACK_PROPS)),
            ("client", PubRec(6, 0x97, ACK_PROPS)),
            ("server", PubRel(7, 0x92)),
            ("client", PubComp(8, 0, ACK_PROPS)),
            (
                "server",
                Subscribe(
                    12,
                    (
                        Subscription("a/#", 1, True, True, RetainHandling.DO_NOT_SEND),
                        Subscription(
                            "$share/grp/a/+",
                            2,
                            False,
                            True,
                            RetainHandling.SEND_IF_NEW_SUBSCRIPTION,
                        ),
                    ),
                    Properties(subscription_identifiers=(268435455,), user_properties=USER),
                ),
            ),
            ("client", SubAck(12, (0x01, 0x8F, 0x9E, 0xA1, 0xA2), ACK_PROPS)),
            ("server", Unsubscribe(13, ("a/#",), Properties(user_properties=USER))),
            ("client", UnsubAck(13, (0x00, 0x80), ACK_PROPS)),
            ("server", Disconnect(0x04)),
            (
                "server",
                Disconnect(
                    0x00,
                    Properties(
                        session_expiry_interval=0, reason_string="bye", user_properties=USER
                    ),
                ),
            ),
            ("client", Disconnect(ReasonCode.SERVER_MOVED, Properties(server_reference="s:1"))),
            ("client", Disconnect(ReasonCode.SESSION_TAKEN_OVER)),
            ("server", Auth()),
            (
                "client",
                Auth(
                    ReasonCode.CONTINUE_AUTHENTICATION,
                    Properties(
                        authentication_method="SCRAM-SHA-1",
                        authentication_data=b"xyz",
                        reason_string="more",
                        user_properties=USER,
                    ),
                ),
            ),
            ("server", Auth(ReasonCode.RE_AUTHENTICATE)),
        ]
    return out


ALL_SAMPLES = [
    pytest.param(level, role, packet, id=f"L{level}-{role}-{i}-{type(packet).__name__}")
    for level in (MQTT_3_1, MQTT_3_1_1, MQTT_5)
    for i, (role, packet) in enumerate(samples(level))
]


def receiver(role: str, level: int, packet: Packet | None = None) -> Decoder:
    """A decoder ready to receive ``packet`` (a fresh server decoder for a CONNECT)."""
    if role == "server":
        if isinstance(packet, Connect):
            return Decoder()
        return Decoder(role="server", protocol_level=level)
    decoder = Decoder(role="client", protocol_level=level)
    assert decoder.feed(encode(ConnAck(), level)) == [ConnAck()]
    return decoder


def frame(b0: int, body: bytes) -> bytes:
    """A packet with a correctly encoded remaining length."""
    n = len(body)
    length = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes((b0,)) + bytes(length) + body


def s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


# -- round trips and incremental decoding ---------------------------------------------------------


@pytest.mark.parametrize(("level", "role", "packet"), ALL_SAMPLES)
def test_round_trip(level: int, role: str, packet: Packet) -> None:
    wire = encode(packet, level)
    decoder = receiver(role, level, packet)
    assert decoder.feed(wire) == [packet]
    assert decoder.buffered == 0
    if isinstance(packet, Connect):
        assert decoder.protocol_level == level


@pytest.mark.parametrize(("level", "role", "packet"), ALL_SAMPLES)
def test_every_prefix_asks_for_more(level: int, role: str, packet: Packet) -> None:
    wire = encode(packet, level)
    step = max(1, len(wire) // 300)  # the 20 kB PUBLISH: every 70th prefix
    for cut in [*range(0, len(wire), step), len(wire) - 1]:
        decoder = receiver(role, level, packet)
        assert decoder.feed(wire[:cut]) == [], cut
        assert decoder.buffered == cut
        assert decoder.feed(wire[cut:]) == [packet], cut
        assert decoder.buffered == 0


@pytest.mark.parametrize(("level", "role", "packet"), ALL_SAMPLES)
def test_byte_by_byte_and_with_trailing_bytes(level: int, role: str, packet: Packet) -> None:
    wire = encode(packet, level)
    if len(wire) < 2000:
        decoder = receiver(role, level, packet)
        got: list[Packet] = []
        for i in range(len(wire)):
            got += decoder.feed(wire[i : i + 1])
        assert got == [packet]
    follower = encode(PingReq() if role == "server" else PingResp(), level)
    decoder = receiver(role, level, packet)
    assert decoder.feed(bytearray(wire + follower[:1])) == [packet]
    assert decoder.buffered == 1
    assert decoder.feed(memoryview(follower[1:])) == [PingReq() if role == "server" else PingResp()]
    assert decoder.buffered == 0


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_3_1_1, MQTT_5])
def test_several_packets_in_one_chunk(level: int) -> None:
    server_packets = [p for role, p in samples(level) if role == "server"]
    connect = server_packets[0]
    rest = [p for p in server_packets if not isinstance(p, Connect)]
    stream = encode(connect, level) + b"".join(encode(p, level) for p in rest)
    assert Decoder().protocol_level is None
    decoder = Decoder()
    assert decoder.feed(stream) == [connect, *rest]
    assert decoder.protocol_level == level
    # the same stream in chunks of 7 bytes
    decoder = Decoder()
    got: list[Packet] = []
    for i in range(0, len(stream), 7):
        got += decoder.feed(stream[i : i + 7])
    assert got == [connect, *rest]

    client_packets = [p for role, p in samples(level) if role == "client"]
    stream = b"".join(encode(p, level) for p in client_packets)
    decoder = Decoder(role="client", protocol_level=level)
    assert decoder.feed(stream) == client_packets


def test_large_packet_in_small_chunks() -> None:
    packet = Publish("big", bytes(range(256)) * 2000, 1, packet_id=1)
    wire = encode(packet, MQTT_3_1_1)
    decoder = Decoder(role="server", protocol_level=MQTT_3_1_1)
    got: list[Packet] = []
    for i in range(0, len(wire), 1000):
        got += decoder.feed(wire[i : i + 1000])
        if i + 1000 < len(wire):
            assert decoder.buffered == i + 1000
    assert got == [packet]


def test_empty_properties_are_the_shared_instance() -> None:
    decoder = Decoder(role="server", protocol_level=MQTT_5)
    stream = encode(Publish("a", b"x", 1, packet_id=1), MQTT_5)
    stream += encode(PubAck(1, 0x10), MQTT_5) + encode(Disconnect(), MQTT_5)
    for packet in decoder.feed(stream):
        assert packet.properties is NO_PROPERTIES  # type: ignore[union-attr]


def test_decoded_topic_names_are_reused() -> None:
    decoder = Decoder(role="server", protocol_level=MQTT_3_1_1)
    one, two = decoder.feed(encode(Publish("a/b", b"1"), 4) + encode(Publish("a/b", b"2"), 4))
    assert isinstance(one, Publish)
    assert isinstance(two, Publish)
    assert one.topic is two.topic
    assert (one.payload, two.payload) == (b"1", b"2")


# -- exact bytes (hand-computed from the specifications) --------------------------------------


KNOWN = [
    # MQTT 3.1.1 3.1: CONNECT, client id "abc", clean session, keep alive 60
    (MQTT_3_1_1, "server", Connect("abc"), b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc"),
    # MQTT 3.1: protocol name MQIsdp, level 3
    (
        MQTT_3_1,
        "server",
        Connect("abc", MQTT_3_1, "MQIsdp"),
        b"\x10\x11\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x03abc",
    ),
    # CONNECT with will (qos 1, retain), user name and password
    (
        MQTT_3_1_1,
        "server",
        Connect(
            "c",
            clean_start=False,
            keep_alive=10,
            username="u",
            password=b"p",
            will=Will("w", b"x", 1, True),
        ),
        b"\x10\x19\x00\x04MQTT\x04\xec\x00\x0a\x00\x01c\x00\x01w\x00\x01x\x00\x01u\x00\x01p",
    ),
    (MQTT_3_1_1, "client", ConnAck(), b"\x20\x02\x00\x00"),
    (MQTT_3_1_1, "client", ConnAck(True), b"\x20\x02\x01\x00"),
    (MQTT_3_1_1, "client", ConnAck(reason_code=5), b"\x20\x02\x00\x05"),
    (MQTT_3_1_1, "server", Publish("a/b", b"hi"), b"\x30\x07\x00\x03a/bhi"),
    (
        MQTT_3_1_1,
        "server",
        Publish("a/b", b"hi", 1, retain=True, dup=True, packet_id=10),
        b"\x3b\x09\x00\x03a/b\x00\x0ahi",
    ),
    (MQTT_3_1_1, "server", PubAck(10), b"\x40\x02\x00\x0a"),
    (MQTT_3_1_1, "server", PubRec(10), b"\x50\x02\x00\x0a"),
    (MQTT_3_1_1, "client", PubRel(10), b"\x62\x02\x00\x0a"),
    (MQTT_3_1_1, "server", PubComp(10), b"\x70\x02\x00\x0a"),
    (
        MQTT_3_1_1,
        "server",
        Subscribe(1, (Subscription("a/#", 1), Subscription("b", 2))),
        b"\x82\x0c\x00\x01\x00\x03a/#\x01\x00\x01b\x02",
    ),
    (MQTT_3_1_1, "client", SubAck(1, (1, 0x80)), b"\x90\x04\x00\x01\x01\x80"),
    (MQTT_3_1_1, "server", Unsubscribe(2, ("a/#",)), b"\xa2\x07\x00\x02\x00\x03a/#"),
    (MQTT_3_1_1, "client", UnsubAck(2), b"\xb0\x02\x00\x02"),
    (MQTT_3_1_1, "server", PingReq(), b"\xc0\x00"),
    (MQTT_3_1_1, "client", PingResp(), b"\xd0\x00"),
    (MQTT_3_1_1, "server", Disconnect(), b"\xe0\x00"),
    # MQTT 5.0
    (
        MQTT_5,
        "server",
        Connect("abc", MQTT_5),
        b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc",
    ),
    (
        MQTT_5,
        "server",
        Connect("abc", MQTT_5, properties=Properties(session_expiry_interval=10)),
        b"\x10\x15\x00\x04MQTT\x05\x02\x00\x3c\x05\x11\x00\x00\x00\x0a\x00\x03abc",
    ),
    (MQTT_5, "client", ConnAck(), b"\x20\x03\x00\x00\x00"),
    (
        MQTT_5,
        "client",
        ConnAck(False, 0x87, Properties(reason_string="no")),
        b"\x20\x08\x00\x87\x05\x1f\x00\x02no",
    ),
    (MQTT_5, "server", Publish("a", b"x"), b"\x30\x05\x00\x01a\x00x"),
    (
        MQTT_5,
        "server",
        Publish("a", b"x", 1, packet_id=2, properties=Properties(topic_alias=1)),
        b"\x32\x0a\x00\x01a\x00\x02\x03\x23\x00\x01x",
    ),
    (
        MQTT_5,
        "client",
        Publish("a", b"", properties=Properties(subscription_identifiers=(1, 200))),
        b"\x30\x09\x00\x01a\x05\x0b\x01\x0b\xc8\x01",
    ),
    (MQTT_5, "server", PubAck(10), b"\x40\x02\x00\x0a"),
    (MQTT_5, "server", PubAck(10, 0x10), b"\x40\x03\x00\x0a\x10"),
    (
        MQTT_5,
        "server",
        Subscribe(1, (Subscription("a", 1, True, True, RetainHandling.DO_NOT_SEND),)),
        b"\x82\x07\x00\x01\x00\x00\x01a\x2d",
    ),
    (MQTT_5, "client", SubAck(1, (0x8F,)), b"\x90\x04\x00\x01\x00\x8f"),
    (MQTT_5, "client", UnsubAck(2, (0x11,)), b"\xb0\x04\x00\x02\x00\x11"),
    (MQTT_5, "server", Disconnect(), b"\xe0\x00"),
    (MQTT_5, "server", Disconnect(0x04), b"\xe0\x01\x04"),
    (MQTT_5, "server", Auth(), b"\xf0\x00"),
    (MQTT_5, "server", Auth(0x19), b"\xf0\x01\x19"),
]


@pytest.mark.parametrize(("level", "role", "packet", "wire"), KNOWN)
def test_known_bytes(level: int, role: str, packet: Packet, wire: bytes) -> None:
    assert encode(packet, level) == wire
    assert receiver(role, level, packet).feed(wire) == [packet]


def test_remaining_length_encoding() -> None:
    # MQTT 3.1.1 2.2.3: 127 -> 0x7F, 128 -> 0x80 0x01, 16383 -> 0xFF 0x7F, 16384 -> 0x80 0x80 0x01
    for rl, header in [
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097152, b"\x80\x80\x80\x01"),
    ]:
        packet = Publish("t", b"p" * (rl - 3))
        wire = encode(packet, MQTT_3_1_1)
        assert wire[: 1 + len(header)] == b"\x30" + header
        assert len(wire) == 1 + len(header) + rl
        decoder = Decoder(role="server", protocol_level=4, max_packet_size=4 << 20)
        assert decoder.feed(wire) == [packet]


def test_short_forms_of_acks_in_5() -> None:
    decoder = receiver("server", MQTT_5)
    # 5.0 3.4.2.1: reason code omitted = success; property length omitted = no properties
    assert decoder.feed(b"\x40\x03\x00\x01\x00") == [PubAck(1)]
    assert decoder.feed(b"\x50\x04\x00\x01\x10\x00") == [PubRec(1, 0x10)]
    assert decoder.feed(b"\xe0\x01\x00") == [Disconnect()]
    assert decoder.feed(b"\xe0\x02\x04\x00") == [Disconnect(0x04)]


def test_levels_3_and_4_omit_5_only_fields() -> None:
    for level in (MQTT_3_1, MQTT_3_1_1):
        assert encode(PubAck(5, 0x80, ACK_PROPS), level) == b"\x40\x02\x00\x05"
        assert encode(PubRel(5, 0x92), level) == b"\x62\x02\x00\x05"
        assert encode(UnsubAck(5, (0x11,), ACK_PROPS), level) == b"\xb0\x02\x00\x05"
        assert encode(Disconnect(0x8E, ACK_PROPS), level) == b"\xe0\x00"
        assert encode(Publish("t", b"", properties=PUBLISH_PROPS), level) == b"\x30\x03\x00\x01t"
        # 5.0 failure codes become the 3.1.1 failure code 0x80
        assert encode(SubAck(5, (0, ReasonCode.TOPIC_FILTER_INVALID)), level) == (
            b"\x90\x04\x00\x05\x00\x80"
        )
        sub = Subscribe(1, (Subscription("a", 1, True, True, RetainHandling.DO_NOT_SEND),))
        assert encode(sub, level) == b"\x82\x06\x00\x01\x00\x01a\x01"


def test_password_without_user_name_is_fine_in_5() -> None:
    packet = Connect("c", MQTT_5, password=b"pw")
    assert Decoder().feed(encode(packet, MQTT_5)) == [packet]


# -- malformed and forbidden input -------------------------------------------------------------

CONNECT4 = b"\x00\x04MQTT\x04"
CONNECT5 = b"\x00\x04MQTT\x05"


def connect_flags(flags: int, tail: bytes = b"") -> bytes:
    return frame(0x10, CONNECT4 + bytes((flags,)) + b"\x00\x3c" + s("c") + tail)


M = (MalformedPacket, 0x81)
P = (ProtocolError, 0x82)
P90 = (ProtocolError, 0x90)  # Topic Name invalid
P84 = (ProtocolError, 0x84)  # Unsupported Protocol Version
P94 = (ProtocolError, 0x94)  # Topic Alias invalid
OK = (None, 0)

# fmt: off
BAD = [
    # (id, receiving role, level, bytes, (exception type, reason code))
    ("varint-5-bytes", "server", 4, b"\x30\xff\xff\xff\xff\x01", M),
    ("varint-not-minimal", "server", 4, b"\x30\x80\x00", M),
    ("varint-not-minimal-2", "server", 4, b"\x30\x81\x80\x00" + b"\x00" * 3, M),
    ("reserved-type-0", "server", 4, b"\x00\x00", M),
    ("auth-in-3.1.1", "server", 4, b"\xf0\x00", M),
    ("puback-flags", "server", 4, b"\x41\x02\x00\x01", M),
    ("pubrel-flags", "server", 4, b"\x60\x02\x00\x01", M),
    ("subscribe-flags", "server", 4, frame(0x80, b"\x00\x01" + s("a") + b"\x00"), M),
    ("unsubscribe-flags", "server", 4, frame(0xA0, b"\x00\x01" + s("a")), M),
    ("pingreq-flags", "server", 4, b"\xc1\x00", M),
    ("disconnect-flags", "server", 5, b"\xe8\x00", M),
    ("publish-qos-3", "server", 4, frame(0x36, s("a") + b"\x00\x01"), M),
    ("publish-qos0-dup-4", "server", 4, frame(0x38, s("a")), M),
    ("publish-qos0-dup-5", "server", 5, frame(0x38, s("a") + b"\x00"), M),
    ("publish-too-short", "server", 4, b"\x30\x01\x00", M),
    ("publish-topic-overrun", "server", 4, b"\x30\x03\x00\x05a", M),
    ("publish-no-packet-id", "server", 4, frame(0x32, s("a") + b"\x00"), M),
    ("publish-packet-id-0", "server", 4, frame(0x32, s("a") + b"\x00\x00"), P),
    ("publish-bad-utf8", "server", 4, frame(0x30, b"\x00\x02\xc3\x28"), M),
    ("publish-surrogate", "server", 4, frame(0x30, b"\x00\x03\xed\xa0\x80"), M),
    ("publish-overlong", "server", 4, frame(0x30, b"\x00\x02\xc0\xaf"), M),
    ("publish-nul", "server", 4, frame(0x30, b"\x00\x02a\x00"), M),
    ("publish-plus", "server", 4, frame(0x30, s("a/+")), P90),
    ("publish-hash", "server", 5, frame(0x30, s("#") + b"\x00"), P90),
    ("publish-empty-topic-4", "server", 4, frame(0x30, s("") + b"x"), P),
    ("publish-empty-topic-5", "server", 5, frame(0x30, s("") + b"\x00x"), P),
    ("publish-no-property-length", "server", 5, frame(0x30, s("a")), M),
    ("publish-property-overrun", "server", 5, frame(0x30, s("a") + b"\x05\x01\x00"), M),
    ("publish-property-truncated", "server", 5, frame(0x30, s("a") + b"\x02\x02\x00"), M),
    ("publish-property-not-allowed", "server", 5,
     frame(0x30, s("a") + b"\x05\x11\x00\x00\x00\x01"), M),
    ("publish-unknown-property", "server", 5, frame(0x30, s("a") + b"\x02\x7f\x00"), M),
    ("publish-duplicate-property", "server", 5,
     frame(0x30, s("a") + b"\x0a\x02\x00\x00\x00\x01\x02\x00\x00\x00\x01"), P),
    ("publish-duplicate-content-type", "server", 5,
     frame(0x30, s("a") + b"\x08\x03" + s("a") + b"\x03" + s("b")), P),
    ("publish-topic-alias-0", "server", 5, frame(0x30, s("a") + b"\x03\x23\x00\x00"), P94),
    ("publish-payload-format-2", "server", 5, frame(0x30, s("a") + b"\x02\x01\x02"), P),
    ("publish-response-topic-wildcard", "server", 5, frame(0x30, s("a") + b"\x04\x08" + s("+")), P),
    ("publish-subscription-id-from-client", "server", 5,
     frame(0x30, s("a") + b"\x02\x0b\x01"), P),
    ("publish-subscription-id-0", "client", 5, frame(0x30, s("a") + b"\x02\x0b\x00"), P),
    ("publish-property-bad-utf8", "server", 5,
     frame(0x30, s("a") + b"\x05\x03\x00\x02\xc3\x28"), M),
    ("publish-user-property-nul", "server", 5,
     frame(0x30, s("a") + b"\x07\x26" + s("\x00") + s("")), M),
    ("puback-packet-id-0", "server", 4, b"\x40\x02\x00\x00", P),
    ("puback-long-3.1.1", "server", 4, b"\x40\x03\x00\x01\x00", M),
    ("puback-short", "server", 4, b"\x40\x01\x00", M),
    ("puback-bad-reason", "server", 5, b"\x40\x03\x00\x01\x05", P),
    ("pubrel-bad-reason", "client", 5, b"\x62\x03\x00\x01\x10", P),
    ("puback-trailing-bytes", "server", 5, b"\x40\x05\x00\x01\x00\x00\x00", M),
    ("pingreq-body", "server", 4, b"\xc0\x01\x00", M),
    ("disconnect-body-3.1.1", "server", 4, b"\xe0\x01\x00", M),
    ("disconnect-bad-reason", "server", 5, b"\xe0\x01\x01", P),
    ("subscribe-no-filters-4", "server", 4, b"\x82\x02\x00\x01", P),  # MQTT-3.8.3-3
    ("subscribe-no-filters-5", "server", 5, b"\x82\x03\x00\x01\x00", P),
    ("subscribe-packet-id-0", "server", 4, frame(0x82, b"\x00\x00" + s("a") + b"\x00"), P),
    ("subscribe-no-options", "server", 4, frame(0x82, b"\x00\x01" + s("a")), M),
    ("subscribe-reserved-bits-4", "server", 4, frame(0x82, b"\x00\x01" + s("a") + b"\x04"), M),
    ("subscribe-qos-3-4", "server", 4, frame(0x82, b"\x00\x01" + s("a") + b"\x03"), M),
    ("subscribe-reserved-bits-5", "server", 5,
     frame(0x82, b"\x00\x01\x00" + s("a") + b"\x40"), M),
    ("subscribe-qos-3-5", "server", 5, frame(0x82, b"\x00\x01\x00" + s("a") + b"\x03"), P),
    ("subscribe-retain-handling-3", "server", 5,
     frame(0x82, b"\x00\x01\x00" + s("a") + b"\x30"), P),
    ("subscribe-no-local-shared", "server", 5,
     frame(0x82, b"\x00\x01\x00" + s("$share/g/a") + b"\x04"), P),
    ("subscribe-two-subscription-ids", "server", 5,
     frame(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02" + s("a") + b"\x00"), P),
    ("subscribe-filter-bad-utf8", "server", 4, frame(0x82, b"\x00\x01\x00\x01\xff\x00"), M),
    ("unsubscribe-no-filters", "server", 4, b"\xa2\x02\x00\x01", P),
    ("unsubscribe-no-filters-5", "server", 5, b"\xa2\x03\x00\x01\x00", P),
    ("unsubscribe-property-not-allowed", "server", 5,
     frame(0xA2, b"\x00\x01\x03\x1f\x00\x00" + s("a")), M),
    ("second-connect", "server", 4, frame(0x10, CONNECT4 + b"\x02\x00\x3c" + s("c")), P),
    ("server-gets-connack", "server", 4, b"\x20\x02\x00\x00", P),
    ("server-gets-suback", "server", 4, b"\x90\x03\x00\x01\x00", P),
    ("server-gets-pingresp", "server", 4, b"\xd0\x00", P),
    ("client-gets-subscribe", "client", 4, frame(0x82, b"\x00\x01" + s("a") + b"\x00"), P),
    ("client-gets-pingreq", "client", 5, b"\xc0\x00", P),
    ("client-gets-connect", "client", 5,
     frame(0x10, CONNECT5 + b"\x02\x00\x3c\x00" + s("c")), P),
    ("client-gets-disconnect-3.1.1", "client", 4, b"\xe0\x00", P),
    ("client-gets-second-connack", "client", 4, b"\x20\x02\x00\x00", OK),
    ("client-gets-session-expiry", "client", 5, b"\xe0\x07\x00\x05\x11\x00\x00\x00\x01", P),
    ("suback-bad-code-4", "client", 4, b"\x90\x03\x00\x01\x03", P),
    ("suback-bad-code-5", "client", 5, b"\x90\x04\x00\x01\x00\x03", P),
    ("suback-empty", "client", 4, b"\x90\x02\x00\x01", P),
    ("unsuback-long-3.1.1", "client", 4, b"\xb0\x03\x00\x01\x00", M),
    ("unsuback-bad-code", "client", 5, b"\xb0\x04\x00\x01\x00\x01", P),
    ("auth-bad-reason", "server", 5, b"\xf0\x01\x01", P),
    ("auth-property-not-allowed", "server", 5, b"\xf0\x04\x18\x02\x23\x00", M),
]
BAD_CONNECT = [
    # (id, bytes, (exception type, reason code))
    ("not-connect-first", b"\x30\x03\x00\x01a", P),  # MQTT-3.1.0-1
    ("pingreq-first", b"\xc0\x00", P),
    ("http-first", b"GET / HTTP/1.1\r\n\r\n", P),
    ("connect-flags", b"\x11\x00", M),
    ("reserved-connect-flag", connect_flags(0x03), M),  # MQTT-3.1.2-3
    ("will-qos-without-will", connect_flags(0x0A), M),  # MQTT-3.1.2-13
    ("will-retain-without-will", connect_flags(0x22), M),  # MQTT-3.1.2-15
    ("will-qos-3", connect_flags(0x1E, s("w") + s("x")), M),  # MQTT-3.1.2-14
    ("will-missing", connect_flags(0x06), M),  # MQTT-3.1.2-9
    ("will-topic-wildcard", connect_flags(0x06, s("w/#") + s("x")), P90),
    ("password-without-user", connect_flags(0x42, s("pw")), M),  # MQTT-3.1.2-22
    ("user-missing", connect_flags(0x82), M),  # MQTT-3.1.2-19
    ("password-missing", connect_flags(0xC2, s("u")), M),  # MQTT-3.1.2-21
    ("trailing-bytes", connect_flags(0x02, b"\x00"), M),
    ("client-id-nul", frame(0x10, CONNECT4 + b"\x02\x00\x3c" + s("a\x00")), M),
    ("unsupported-level", frame(0x10, b"\x00\x04MQTT\x06\x02\x00\x3c" + s("c")), P84),
    ("level-0", frame(0x10, b"\x00\x04MQTT\x00\x02\x00\x3c" + s("c")), P84),
    ("truncated-name", frame(0x10, b"\x00\x04MQ"), M),
    ("no-keep-alive", frame(0x10, CONNECT4 + b"\x02\x00"), M),
    ("5-no-properties", frame(0x10, CONNECT5 + b"\x02\x00\x3c"), M),
    ("5-receive-maximum-0", frame(0x10, CONNECT5 + b"\x02\x00\x3c\x03\x21\x00\x00" + s("c")), P),
    ("5-duplicate-session-expiry",
     frame(0x10, CONNECT5 + b"\x02\x00\x3c\x0a" + b"\x11\x00\x00\x00\x01" * 2 + s("c")), P),
    ("5-request-problem-2", frame(0x10, CONNECT5 + b"\x02\x00\x3c\x02\x17\x02" + s("c")), P),
    ("5-auth-data-without-method",
     frame(0x10, CONNECT5 + b"\x02\x00\x3c\x03\x16\x00\x00" + s("c")), P),
    ("5-topic-alias-in-connect",
     frame(0x10, CONNECT5 + b"\x02\x00\x3c\x03\x23\x00\x01" + s("c")), M),
    ("5-will-delay-in-connect",
     frame(0x10, CONNECT5 + b"\x02\x00\x3c\x05\x18\x00\x00\x00\x01" + s("c")), M),
    ("5-session-expiry-in-will",
     frame(0x10, CONNECT5 + b"\x06\x00\x3c\x00" + s("c") + b"\x05\x11\x00\x00\x00\x01"
           + s("w") + s("x")), M),
]
# fmt: on


def _check_raises(
    decoder: Decoder, wire: bytes, exc_type: type[ProtocolError], reason: int
) -> None:
    with pytest.raises(ProtocolError) as info:
        decoder.feed(wire)
    assert type(info.value) is exc_type, info.value
    assert info.value.reason_code == reason
    with pytest.raises(LocalProtocolError):  # unusable afterwards
        decoder.feed(b"\xc0\x00")


@pytest.mark.parametrize(
    ("role", "level", "wire", "exc_type", "reason"),
    [pytest.param(*case[1:4], *case[4], id=case[0]) for case in BAD],
)
def test_bad_input(
    role: str, level: int, wire: bytes, exc_type: type[ProtocolError] | None, reason: int
) -> None:
    decoder = receiver(role, level)
    if exc_type is None:
        # a repeated CONNACK is a session matter, not the codec's
        assert decoder.feed(wire) == [ConnAck()]
        return
    _check_raises(decoder, wire, exc_type, reason)
    # fed byte by byte, the error comes at the latest with the last byte
    decoder = receiver(role, level)
    with pytest.raises(exc_type):
        for i in range(len(wire)):
            decoder.feed(wire[i : i + 1])


@pytest.mark.parametrize(
    ("wire", "exc_type", "reason"),
    [pytest.param(case[1], *case[2], id=case[0]) for case in BAD_CONNECT],
)
def test_bad_first_packet(wire: bytes, exc_type: type[ProtocolError], reason: int) -> None:
    _check_raises(Decoder(), wire, exc_type, reason)


def test_wrong_packet_type_is_refused_from_the_header_alone() -> None:
    # a server refuses a SUBACK before its body arrives
    decoder = Decoder(role="server", protocol_level=4)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x90")
    decoder = Decoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x30\xff\xff")  # a PUBLISH before CONNECT, not buffered


def test_client_needs_connack_first() -> None:
    decoder = Decoder(role="client", protocol_level=MQTT_5)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x30\x04\x00\x01a\x00")
    decoder = Decoder(role="client", protocol_level=MQTT_5)
    assert decoder.feed(b"\xf0\x01\x18\x20\x03\x00\x00\x00") == [Auth(0x18), ConnAck()]


def test_wrong_protocol_name_is_kept_for_the_server_to_refuse() -> None:
    wire = frame(0x10, b"\x00\x04MQXX\x04\x02\x00\x3c" + s("c"))
    (packet,) = Decoder().feed(wire)
    assert isinstance(packet, Connect)
    assert packet.protocol_name == "MQXX"


def test_subscription_ids_in_publish_to_client() -> None:
    decoder = receiver("client", MQTT_5)
    (packet,) = decoder.feed(frame(0x30, s("a") + b"\x04\x0b\x01\x0b\x01"))
    assert isinstance(packet, Publish)
    assert packet.properties.subscription_identifiers == (1, 1)


# -- maximum packet size -------------------------------------------------------------------------


def test_huge_declared_length_raises_before_buffering() -> None:
    decoder = Decoder(role="server", protocol_level=MQTT_3_1_1)
    with pytest.raises(PacketTooLarge) as info:
        decoder.feed(b"\x30\xff\xff\xff\x7f")  # 268435455 bytes declared
    assert info.value.reason_code == 0x95
    assert decoder.buffered == 0
    # an incomplete length is refused as soon as it cannot stay below the limit
    decoder = Decoder(role="server", protocol_level=MQTT_3_1_1)
    with pytest.raises(PacketTooLarge):
        decoder.feed(b"\x30\x80\x80\x80")
    assert decoder.buffered == 0
    decoder = Decoder(role="server", protocol_level=MQTT_3_1_1, max_packet_size=100)
    assert decoder.feed(b"\x30") == []
    with pytest.raises(PacketTooLarge):
        decoder.feed(b"\xff")  # >= 127 + 128 bytes


def test_max_packet_size_counts_the_whole_packet() -> None:
    packet = Publish("t", b"x" * 95)
    wire = encode(packet, MQTT_3_1_1)
    assert len(wire) == 100
    assert Decoder(role="server", protocol_level=4, max_packet_size=100).feed(wire) == [packet]
    decoder = Decoder(role="server", protocol_level=4, max_packet_size=99)
    with pytest.raises(PacketTooLarge):
        decoder.feed(wire[:2])
    assert decoder.buffered == 0
    # the limit may change between packets (e.g. after CONNACK)
    decoder = Decoder(role="server", protocol_level=4)
    assert decoder.feed(wire) == [packet]
    decoder.max_packet_size = 50
    with pytest.raises(PacketTooLarge):
        decoder.feed(wire)


def test_the_connect_itself_is_size_checked() -> None:
    wire = encode(Connect("c" * 200), MQTT_3_1_1)
    with pytest.raises(PacketTooLarge):
        Decoder(max_packet_size=128).feed(wire)


# -- decoder construction and encoder errors ---------------------------------------------------


def test_decoder_arguments() -> None:
    from enos_lab.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        Decoder(role="client")
    with pytest.raises(InvalidArgument):
        Decoder(role="broker")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Decoder(protocol_level=6)
    with pytest.raises(InvalidArgument):
        Decoder(max_packet_size=0)
    assert Decoder().feed(b"") == []


# fmt: off
ENCODE_ERRORS: list[tuple[str, Packet, int]] = [
    ("publish-qos-3", Publish("a", b"", 3, packet_id=1), 4),
    ("publish-qos-negative", Publish("a", b"", -1), 4),
    ("publish-packet-id-0", Publish("a", b"", 1), 4),
    ("publish-packet-id-big", Publish("a", b"", 1, packet_id=65536), 5),
    ("publish-dup-qos-0", Publish("a", b"", dup=True), 4),
    ("publish-wildcard", Publish("a/+", b""), 4),
    ("publish-hash", Publish("#", b""), 5),
    ("publish-nul", Publish("a\x00", b""), 4),
    ("publish-surrogate", Publish("a\udc80", b""), 4),
    ("publish-empty-topic", Publish("", b""), 4),
    ("publish-empty-topic-5", Publish("", b""), 5),
    ("publish-empty-topic-alias-4", Publish("", b"", properties=Properties(topic_alias=1)), 4),
    ("publish-topic-too-long", Publish("a" * 65536, b""), 4),
    ("publish-session-expiry", Publish("a", properties=Properties(session_expiry_interval=1)), 5),
    ("publish-topic-alias-0", Publish("a", properties=Properties(topic_alias=0)), 5),
    ("publish-payload-format-7",
     Publish("a", properties=Properties(payload_format_indicator=7)), 5),
    ("publish-expiry-2**32",
     Publish("a", properties=Properties(message_expiry_interval=1 << 32)), 5),
    ("publish-subscription-id-0",
     Publish("a", properties=Properties(subscription_identifiers=(0,))), 5),
    ("publish-response-topic-wildcard",
     Publish("a", properties=Properties(response_topic="r/#")), 5),
    ("puback-packet-id-0", PubAck(0), 4),
    ("puback-packet-id-0-5", PubAck(0), 5),
    ("pubrec-bad-reason", PubRec(1, 0x92), 5),
    ("pubrel-bad-reason", PubRel(1, 0x10), 5),
    ("auth-in-4", Auth(), 4),
    ("auth-bad-reason", Auth(0x80), 5),
    ("connack-5-code-in-4", ConnAck(reason_code=0x86), 4),
    ("connack-bad-code", ConnAck(reason_code=0x01), 5),
    ("connack-session-present-refused", ConnAck(True, 0x86), 5),
    ("connack-will-delay", ConnAck(properties=Properties(will_delay_interval=1)), 5),
    ("connect-level-mismatch", Connect("c", MQTT_5), 4),
    ("connect-password-without-user", Connect("c", password=b"p"), 4),
    ("connect-keep-alive", Connect("c", keep_alive=70000), 4),
    ("connect-will-qos-3", Connect("c", will=Will("w", b"", 3)), 4),
    ("connect-will-wildcard", Connect("c", will=Will("w/+", b"")), 4),
    ("connect-password-too-long", Connect("c", username="u", password=b"p" * 65536), 4),
    ("connect-client-id-nul", Connect("\x00"), 4),
    ("subscribe-empty", Subscribe(1, ()), 4),
    ("subscribe-qos-3", Subscribe(1, (Subscription("a", 3),)), 4),
    ("subscribe-packet-id-0", Subscribe(0, (Subscription("a"),)), 4),
    ("subscribe-no-local-shared", Subscribe(1, (Subscription("$share/g/a", 0, True),)), 5),
    ("subscribe-two-ids",
     Subscribe(1, (Subscription("a"),), Properties(subscription_identifiers=(1, 2))), 5),
    ("suback-empty", SubAck(1, ()), 4),
    ("suback-bad-code-4", SubAck(1, (3,)), 4),
    ("suback-bad-code-5", SubAck(1, (0x92,)), 5),
    ("unsubscribe-empty", Unsubscribe(1, ()), 4),
    ("unsuback-5-without-codes", UnsubAck(1), 5),
    ("disconnect-bad-reason", Disconnect(0x01), 5),
    ("level-6", PingReq(), 6),
    ("publish-level-6", Publish("a"), 6),
    ("not-a-packet", "CONNECT", 4),  # type: ignore[list-item]
]
# fmt: on


@pytest.mark.parametrize(
    ("packet", "level"), [pytest.param(p, lvl, id=name) for name, p, lvl in ENCODE_ERRORS]
)
def test_encode_errors(packet: Packet, level: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode(packet, level)


def test_reason_code_enums_encode_like_ints() -> None:
    assert encode(PubAck(1, ReasonCode.QUOTA_EXCEEDED), MQTT_5) == b"\x40\x03\x00\x01\x97"
    assert encode(SubAck(1, (ReasonCode.GRANTED_QOS_2,)), MQTT_3_1_1) == b"\x90\x03\x00\x01\x02"
