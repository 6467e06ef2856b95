"""Property-based tests of the MQTT codec: valid packets round-trip; any input fails cleanly."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.errors import ProtocolError
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
    RetainHandling,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)

FUZZ = settings(max_examples=200, deadline=None)

# -- strategies for valid packets --------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
blob = st.binary(max_size=12)
topic_name = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00+#"), min_size=1, max_size=12
)
topic_filter = st.one_of(
    topic_name,
    st.sampled_from(["#", "+", "a/+/b", "a/#", "+/+", "$SYS/#", "$share/g/a/+", "/"]),
)
packet_id = st.integers(1, 65535)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
flag = st.integers(0, 1)
user = st.lists(st.tuples(text, text), max_size=3).map(tuple)
sub_id = st.integers(1, 268_435_455)

# Allowed properties per packet, written from the table in MQTT 5.0 2.2.2.2.
P_PUBLISH = {
    "payload_format_indicator": flag,
    "message_expiry_interval": u32,
    "content_type": text,
    "response_topic": topic_name,
    "correlation_data": blob,
    "topic_alias": st.integers(1, 0xFFFF),
    "user_properties": user,
}
P_WILL = {
    "payload_format_indicator": flag,
    "message_expiry_interval": u32,
    "content_type": text,
    "response_topic": topic_name,
    "correlation_data": blob,
    "will_delay_interval": u32,
    "user_properties": user,
}
P_CONNECT = {
    "session_expiry_interval": u32,
    "authentication_method": text,
    "request_problem_information": flag,
    "request_response_information": flag,
    "receive_maximum": st.integers(1, 0xFFFF),
    "topic_alias_maximum": u16,
    "maximum_packet_size": st.integers(1, 0xFFFFFFFF),
    "user_properties": user,
}
P_CONNACK = {
    "session_expiry_interval": u32,
    "assigned_client_identifier": text,
    "server_keep_alive": u16,
    "authentication_method": text,
    "authentication_data": blob,
    "response_information": text,
    "server_reference": text,
    "reason_string": text,
    "receive_maximum": st.integers(1, 0xFFFF),
    "topic_alias_maximum": u16,
    "maximum_qos": flag,
    "retain_available": flag,
    "maximum_packet_size": st.integers(1, 0xFFFFFFFF),
    "wildcard_subscription_available": flag,
    "subscription_identifier_available": flag,
    "shared_subscription_available": flag,
    "user_properties": user,
}
P_ACK = {"reason_string": text, "user_properties": user}
P_SUBSCRIBE = {"subscription_identifiers": st.tuples(sub_id), "user_properties": user}
P_UNSUBSCRIBE = {"user_properties": user}
P_DISCONNECT = {"reason_string": text, "server_reference": text, "user_properties": user}
P_AUTH = {
    "authentication_method": text,
    "authentication_data": blob,
    "reason_string": text,
    "user_properties": user,
}


def props(level: int, allowed: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Properties]:
    if level != MQTT_5:
        return st.just(NO_PROPERTIES)
    return st.fixed_dictionaries({}, optional=allowed).map(lambda d: Properties(**d))


def codes(level: int, *values: int) -> st.SearchStrategy[int]:
    return st.sampled_from(values) if level == MQTT_5 else st.just(0)


def connect(level: int) -> st.SearchStrategy[Connect]:
    name = "MQIsdp" if level == MQTT_3_1 else "MQTT"
    will = st.builds(Will, topic_name, blob, st.integers(0, 2), st.booleans(), props(level, P_WILL))
    connect_props = props(level, P_CONNECT)
    if level == MQTT_5:
        # authentication data needs a method (5.0 3.1.2.11.10)
        connect_props = st.builds(
            lambda p, d: (
                Properties(**{**_asdict(p), "authentication_data": d})
                if p.authentication_method is not None
                else p
            ),
            connect_props,
            st.none() | blob,
        )
    return st.builds(
        lambda cid, clean, ka, user_name, pw, w, p: Connect(
            cid,
            level,
            name,
            clean,
            ka,
            user_name,
            pw if (user_name is not None or level == MQTT_5) else None,
            w,
            p,
        ),
        text,
        st.booleans(),
        u16,
        st.none() | text,
        st.none() | blob,
        st.none() | will,
        connect_props,
    )


def _asdict(p: Properties) -> dict[str, Any]:
    return {name: getattr(p, name) for name in Properties.__dataclass_fields__}


def publish(level: int, to_client: bool) -> st.SearchStrategy[Publish]:
    allowed = dict(P_PUBLISH)
    if to_client:
        allowed["subscription_identifiers"] = st.lists(sub_id, min_size=1, max_size=3).map(tuple)

    return st.builds(
        Publish,
        topic_name,
        st.binary(max_size=300),
        st.integers(0, 2),
        st.booleans(),
        st.booleans(),
        packet_id,
        props(level, allowed),
    ).map(
        # QoS 0: no packet id and no DUP (MQTT-3.3.1-2)
        lambda p: Publish(
            p.topic,
            p.payload,
            p.qos,
            p.retain,
            p.dup and p.qos > 0,
            p.packet_id if p.qos else 0,
            p.properties,
        )
    )


def subscription(level: int) -> st.SearchStrategy[Subscription]:
    if level != MQTT_5:
        return st.builds(Subscription, topic_filter, st.integers(0, 2))
    return st.builds(
        Subscription,
        topic_filter,
        st.integers(0, 2),
        st.booleans(),
        st.booleans(),
        st.sampled_from(list(RetainHandling)),
    ).map(
        # no local on a shared subscription is a protocol error (MQTT-3.8.3-4)
        lambda s: Subscription(
            s.topic_filter,
            s.qos,
            s.no_local and not s.topic_filter.startswith("$share/"),
            s.retain_as_published,
            s.retain_handling,
        )
    )


def to_server(level: int) -> st.SearchStrategy[Packet]:
    acks = codes(level, 0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
    rel = codes(level, 0x00, 0x92)
    options: list[st.SearchStrategy[Packet]] = [
        publish(level, to_client=False),
        st.builds(PubAck, packet_id, acks, props(level, P_ACK)),
        st.builds(PubRec, packet_id, acks, props(level, P_ACK)),
        st.builds(PubRel, packet_id, rel, props(level, P_ACK)),
        st.builds(PubComp, packet_id, rel, props(level, P_ACK)),
        st.builds(
            Subscribe,
            packet_id,
            st.lists(subscription(level), min_size=1, max_size=4).map(tuple),
            props(level, P_SUBSCRIBE),
        ),
        st.builds(
            Unsubscribe,
            packet_id,
            st.lists(topic_filter, min_size=1, max_size=4).map(tuple),
            props(level, P_UNSUBSCRIBE),
        ),
        st.just(PingReq()),
        st.builds(
            Disconnect,
            codes(level, 0x00, 0x04, 0x80, 0x81, 0x82, 0x8F, 0x98, 0xA2),
            props(level, {**P_DISCONNECT, "session_expiry_interval": u32}),
        ),
    ]
    if level == MQTT_5:
        options.append(st.builds(Auth, codes(level, 0x00, 0x18, 0x19), props(level, P_AUTH)))
    return st.one_of(options)


def to_client(level: int) -> st.SearchStrategy[Packet]:
    acks = codes(level, 0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
    rel = codes(level, 0x00, 0x92)
    suback_codes = (
        [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]
        if level == MQTT_5
        else [0x00, 0x01, 0x02, 0x80]
    )
    options: list[st.SearchStrategy[Packet]] = [
        publish(level, to_client=True),
        st.builds(PubAck, packet_id, acks, props(level, P_ACK)),
        st.builds(PubRec, packet_id, acks, props(level, P_ACK)),
        st.builds(PubRel, packet_id, rel, props(level, P_ACK)),
        st.builds(PubComp, packet_id, rel, props(level, P_ACK)),
        st.builds(
            SubAck,
            packet_id,
            st.lists(st.sampled_from(suback_codes), min_size=1, max_size=5).map(tuple),
            props(level, P_ACK),
        ),
        st.builds(
            UnsubAck,
            packet_id,
            st.lists(st.sampled_from([0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]), min_size=1).map(
                tuple
            )
            if level == MQTT_5
            else st.just(()),
            props(level, P_ACK),
        ),
        st.just(PingResp()),
    ]
    if level == MQTT_5:
        options += [
            st.builds(Disconnect, codes(level, 0x00, 0x8B, 0x8E, 0x9C), props(level, P_DISCONNECT)),
            st.builds(Auth, codes(level, 0x00, 0x18, 0x19), props(level, P_AUTH)),
        ]
    return st.one_of(options)


def connack(level: int) -> st.SearchStrategy[ConnAck]:
    return st.builds(
        lambda sp, code, p: ConnAck(sp and not code, code, p),
        st.booleans(),
        st.sampled_from([0x00, 0x80, 0x84, 0x86, 0x9C]) if level == MQTT_5 else st.integers(0, 5),
        props(level, P_CONNACK),
    )


levels = st.sampled_from([MQTT_3_1, MQTT_3_1_1, MQTT_5])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = []
    last = 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    return chunks


def feed_all(decoder: Decoder, chunks: list[bytes]) -> list[Packet]:
    out: list[Packet] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


# -- (b) valid packets round-trip, in any chunking ----------------------------------------------


@FUZZ
@given(st.data(), levels, st.lists(st.integers(0, 10_000), max_size=6))
def test_client_to_server_streams_round_trip(
    data: st.DataObject, level: int, cuts: list[int]
) -> None:
    first = data.draw(connect(level))
    rest = data.draw(st.lists(to_server(level), max_size=6))
    stream = b"".join(encode(p, level) for p in [first, *rest])
    decoder = Decoder()
    assert feed_all(decoder, split(stream, cuts)) == [first, *rest]
    assert decoder.buffered == 0
    assert decoder.protocol_level == level


@FUZZ
@given(st.data(), levels, st.lists(st.integers(0, 10_000), max_size=6))
def test_server_to_client_streams_round_trip(
    data: st.DataObject, level: int, cuts: list[int]
) -> None:
    first = data.draw(connack(level))
    rest = data.draw(st.lists(to_client(level), max_size=6))
    stream = b"".join(encode(p, level) for p in [first, *rest])
    decoder = Decoder(role="client", protocol_level=level)
    assert feed_all(decoder, split(stream, cuts)) == [first, *rest]
    assert decoder.buffered == 0


# -- (a) random bytes and (c) mutated encodings fail only with ProtocolError ------------------


def frame(b0: int, body: bytes) -> bytes:
    n = len(body)
    length = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes((b0,)) + bytes(length) + body


def decoders(level: int) -> list[Decoder]:
    """A fresh server, a connected server and a connected client decoder."""
    client = Decoder(role="client", protocol_level=level)
    client.feed(encode(ConnAck(), level))
    return [Decoder(), Decoder(role="server", protocol_level=level), client]


def survives(decoder: Decoder, chunks: list[bytes]) -> None:
    """Feed; the only acceptable failure is a ProtocolError (or subclass)."""
    try:
        for chunk in chunks:
            packets = decoder.feed(chunk)
            assert isinstance(packets, list)
    except ProtocolError:
        pass


@FUZZ
@given(levels, st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=4))
def test_random_bytes(level: int, data: bytes, cuts: list[int]) -> None:
    for decoder in decoders(level):
        survives(decoder, split(data, cuts))


@FUZZ
@given(levels, st.integers(0, 255), st.binary(max_size=200))
def test_random_bodies(level: int, b0: int, body: bytes) -> None:
    # a well-framed packet of any type with a random body reaches every body parser
    wire = frame(b0, body)
    for decoder in decoders(level):
        survives(decoder, [wire])
    connect5 = encode(Connect("c", level, "MQIsdp" if level == MQTT_3_1 else "MQTT"), level)
    survives(Decoder(), [connect5 + wire])


@st.composite
def mutated(draw: st.DrawFn, level: int, packets: st.SearchStrategy[Packet]) -> bytes:
    wire = bytearray(encode(draw(packets), level))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "flip"]))
        i = draw(st.integers(0, max(0, len(wire) - 1)))
        if kind == "replace" and wire:
            wire[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            wire.insert(i, draw(st.integers(0, 255)))
        elif kind == "delete" and wire:
            del wire[i]
        elif wire:
            wire[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(wire)


@FUZZ
@given(st.data(), levels, st.booleans())
def test_mutated_encodings(data: st.DataObject, level: int, reframe: bool) -> None:
    to_srv = data.draw(mutated(level, to_server(level)))
    to_cli = data.draw(mutated(level, to_client(level)))
    first = data.draw(mutated(level, connect(level)))
    if reframe:
        # keep the remaining length right so that the body parser sees the damage
        to_srv = frame(to_srv[0], to_srv[2:]) if to_srv else to_srv
        to_cli = frame(to_cli[0], to_cli[2:]) if to_cli else to_cli
    survives(Decoder(role="server", protocol_level=level), [to_srv])
    client = Decoder(role="client", protocol_level=level)
    client.feed(encode(ConnAck(), level))
    survives(client, [to_cli])
    survives(Decoder(), [first, to_srv])
