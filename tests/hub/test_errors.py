"""Malformed packets and protocol errors, over the in-memory transport.

MQTT 3.1.1 closes the network connection without a response (MQTT-4.8.0-1); MQTT 5.0 sends a
DISCONNECT with the reason code (0x81 malformed, 0x82 protocol error, 0x90 topic name invalid,
0x95 packet too large; 5.0 4.13) and then closes. Each case names the statement it violates.
"""

from __future__ import annotations

import pytest
from _wire import (
    READ_TIMEOUT,
    HubFactory,
    connect,
    expect,
    expect_closed,
    expect_disconnect5,
    expect_publish,
    expect_silence,
    open_client,
    prop,
    publish,
    read_connack5,
    start_hub,
    subscribe_ok,
    sync,
)

from enos_lab.errors import ClosedError
from enos_lab.hub import MemoryConnection

pytestmark = pytest.mark.anyio

# (id, statement, bytes sent after a successful 3.1.1 CONNECT)
AFTER_CONNECT_311 = [
    ("remaining-length-5-bytes", "2.2.3", "30 80 80 80 80 00"),
    ("subscribe-flags-0000", "MQTT-3.8.1-1", "80 08 00 01 00 03 61 2f 62 00"),
    ("unsubscribe-flags-0000", "MQTT-3.10.1-1", "a0 07 00 01 00 03 61 2f 62"),
    ("pubrel-flags-0000", "MQTT-3.6.1-1", "60 02 00 01"),
    ("pingreq-flags-0001", "MQTT-2.2.2-2", "c1 00"),
    ("publish-qos-3", "MQTT-3.3.1-4", "36 07 00 03 61 2f 62 00 01"),
    ("topic-ill-formed-utf8", "MQTT-1.5.3-1", "30 06 00 02 c3 28 68 69"),
    ("topic-utf16-surrogate", "MQTT-1.5.3-1", "30 05 00 03 ed a0 80"),
    ("topic-nul-character", "MQTT-1.5.3-2", "30 05 00 03 61 00 62"),
    ("topic-plus-wildcard", "MQTT-3.3.2-2", "30 05 00 03 61 2f 2b"),
    ("topic-hash-wildcard", "MQTT-3.3.2-2", "30 05 00 03 61 2f 23"),
    ("topic-empty", "MQTT-4.7.3-1", "30 03 00 00 78"),
    ("topic-longer-than-packet", "2.2.3", "30 03 00 05 61"),
    ("publish-qos1-packet-id-0", "MQTT-2.3.1-1", "32 07 00 03 61 2f 62 00 00"),
    ("publish-qos0-dup-1", "MQTT-3.3.1-2", "38 05 00 03 61 2f 62"),
    ("second-connect", "MQTT-3.1.0-2", "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 78 32"),
    ("packet-type-0", "2.2.1", "00 00"),
    ("packet-type-15", "2.2.1", "f0 00"),
    ("connack-from-client", "MQTT-4.8.0-1", "20 02 00 00"),
    ("suback-from-client", "MQTT-4.8.0-1", "90 03 00 01 00"),
    ("subscribe-no-filter", "MQTT-3.8.3-3", "82 02 00 01"),
    ("subscribe-qos-3", "MQTT-3.8.3-4", "82 08 00 01 00 03 61 2f 62 03"),
    ("subscribe-reserved-bits", "MQTT-3.8.3-4", "82 08 00 01 00 03 61 2f 62 04"),
    ("unsubscribe-no-filter", "MQTT-3.10.3-2", "a2 02 00 01"),
]


@pytest.mark.parametrize(
    ("statement", "data"),
    [pytest.param(s, d, id=i) for i, s, d in AFTER_CONNECT_311],
)
async def test_311_violation_closes_without_response(
    make_hub: HubFactory, statement: str, data: str
) -> None:
    """3.1.1 MQTT-4.8.0-1: on a protocol violation (the statement in the test id's table) the
    server closes the network connection and sends nothing."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "bad")
    await conn.send(bytes.fromhex(data))
    await expect_closed(conn)
    assert "bad" not in hub.clients, statement


def patched_flags(packet: bytes, flags: int) -> bytes:
    """A CONNECT whose connect-flags byte (offset 9 for a one-byte remaining length) is
    replaced."""
    return packet[:9] + bytes([flags]) + packet[10:]


# (id, statement, CONNECT bytes)
BAD_CONNECT_311 = [
    ("first-packet-not-connect", "MQTT-3.1.0-1", "c0 00"),
    ("first-packet-publish", "MQTT-3.1.0-1", "30 05 00 03 61 2f 62"),
    ("reserved-flag-set", "MQTT-3.1.2-3", patched_flags(connect("c"), 0x03).hex()),
    ("will-qos-without-will", "MQTT-3.1.2-13", patched_flags(connect("c"), 0x0A).hex()),
    ("will-retain-without-will", "MQTT-3.1.2-15", patched_flags(connect("c"), 0x22).hex()),
    (
        "will-qos-3",
        "MQTT-3.1.2-14",
        patched_flags(connect("c", will=("w", b"x", 0, False)), 0x1E).hex(),
    ),
    (
        "password-without-user-name",
        "MQTT-3.1.2-22",
        connect("c", password=b"pw").hex(),
    ),
    (
        "client-id-ill-formed-utf8",
        "MQTT-1.5.3-1",
        "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 c3 28",
    ),
    ("connect-truncated-payload", "2.2.3", "10 0c 00 04 4d 51 54 54 04 02 00 3c 00 05"),
]


@pytest.mark.parametrize(
    ("statement", "data"),
    [pytest.param(s, d, id=i) for i, s, d in BAD_CONNECT_311],
)
async def test_311_bad_connect_closes_without_connack(
    make_hub: HubFactory, statement: str, data: str
) -> None:
    """3.1.1 MQTT-3.1.4-1 / MQTT-4.8.0-1: a CONNECT that breaks the rule in the test id (or a
    first packet that is not CONNECT) is not acknowledged; the connection is closed."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(bytes.fromhex(data))
    await expect_closed(conn)
    assert not hub.clients, statement


async def test_311_unsupported_protocol_level_gets_return_code_1(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-2: an unsupported protocol level is answered with CONNACK return code
    0x01 and the connection is closed."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(bytes.fromhex("10 0e 00 04 4d 51 54 54 06 02 00 3c 00 02 63 36"))
    await expect(conn, bytes.fromhex("20 02 00 01"))
    await expect_closed(conn)


async def test_311_packet_above_maximum_size_closes(make_hub: HubFactory) -> None:
    """HubConfig.max_packet_size with 3.1.1: a larger packet closes the connection silently
    (MQTT-4.8.0-1)."""
    hub = await start_hub(make_hub, max_packet_size=128)
    conn = await open_client(hub, "big")
    await conn.send(publish("e/big", b"x" * 200))
    await expect_closed(conn)


async def test_311_other_clients_unaffected_by_a_violation(make_hub: HubFactory) -> None:
    """One client's protocol violation closes only its own connection."""
    hub = await start_hub(make_hub)
    good = await open_client(hub, "good")
    await subscribe_ok(good, 1, ("e/ok", 0))
    bad = await open_client(hub, "bad")
    await bad.send(b"\x36\x00")
    await expect_closed(bad)
    await good.send(publish("e/ok", b"fine"))
    await expect_publish(good, "e/ok", b"fine")


# --- MQTT 5.0 ------------------------------------------------------------------------------------

# (id, statement, reason code, bytes sent after a successful 5.0 CONNECT)
AFTER_CONNECT_5 = [
    ("remaining-length-5-bytes", "1.5.5", 0x81, "30 80 80 80 80 00"),
    ("subscribe-flags-0000", "MQTT-3.8.1-1", 0x81, "80 09 00 01 00 00 03 61 2f 62 00"),
    ("unsubscribe-flags-0000", "MQTT-3.10.1-1", 0x81, "a0 08 00 01 00 00 03 61 2f 62"),
    ("pubrel-flags-0000", "MQTT-3.6.1-1", 0x81, "60 02 00 01"),
    ("pingreq-flags-0001", "2.1.3", 0x81, "c1 00"),
    ("publish-qos-3", "MQTT-3.3.1-4", 0x81, "36 08 00 03 61 2f 62 00 01 00"),
    ("topic-ill-formed-utf8", "MQTT-1.5.4-1", 0x81, "30 07 00 02 c3 28 00 68 69"),
    ("topic-utf16-surrogate", "MQTT-1.5.4-1", 0x81, "30 06 00 03 ed a0 80 00"),
    ("topic-nul-character", "MQTT-1.5.4-2", 0x81, "30 06 00 03 61 00 62 00"),
    # A wildcard makes the name invalid (0x90); a server may also call it malformed (0x81).
    ("topic-plus-wildcard", "MQTT-3.3.2-2", {0x81, 0x90}, "30 06 00 03 61 2f 2b 00"),
    ("topic-hash-wildcard", "MQTT-3.3.2-2", {0x81, 0x90}, "30 06 00 03 61 2f 23 00"),
    ("publish-qos0-dup-1", "MQTT-3.3.1-2", {0x81, 0x82}, "38 06 00 03 61 2f 62 00"),
    ("publish-qos1-packet-id-0", "MQTT-2.2.1-3", {0x81, 0x82}, "32 08 00 03 61 2f 62 00 00 00"),
    ("unknown-property-0x04", "2.2.2.2", 0x81, "30 08 00 03 61 2f 62 02 04 01"),
    ("topic-empty-without-alias", "3.3.2.3.4", 0x82, "30 04 00 00 00 78"),
    ("topic-longer-than-packet", "1.5.4", 0x81, "30 03 00 05 61"),
    ("property-length-beyond-packet", "2.2.2.1", 0x81, "30 07 00 03 61 2f 62 09 02"),
    # A property PUBLISH may not carry (Session Expiry Interval): 2.2.2.2 calls it malformed;
    # servers commonly answer protocol error, both are accepted.
    ("property-not-allowed", "2.2.2.2", {0x81, 0x82}, "30 0b 00 03 61 2f 62 05 11 00 00 00 0a"),
    (
        "property-twice",
        "3.3.2.3.3",
        0x82,
        "30 10 00 03 61 2f 62 0a 02 00 00 00 0a 02 00 00 00 0b",
    ),
    ("second-connect", "MQTT-3.1.0-2", 0x82, connect("x2", level=5).hex()),
    ("packet-type-0", "2.1.2", 0x81, "00 00"),
    ("subscribe-no-filter", "MQTT-3.8.3-2", 0x82, "82 03 00 01 00"),
    ("subscribe-qos-3", "3.8.3.1", 0x82, "82 09 00 01 00 00 03 61 2f 62 03"),
    ("subscribe-retain-handling-3", "3.8.3.1", 0x82, "82 09 00 01 00 00 03 61 2f 62 30"),
    ("subscribe-reserved-bits", "MQTT-3.8.3-5", 0x81, "82 09 00 01 00 00 03 61 2f 62 c0"),
    ("subscription-identifier-0", "3.8.2.1.2", 0x82, "82 0b 00 01 02 0b 00 00 03 61 2f 62 00"),
    ("unsubscribe-no-filter", "MQTT-3.10.3-2", 0x82, "a2 03 00 01 00"),
    # AUTH although CONNECT carried no Authentication Method (5.0 4.12).
    ("auth-without-method", "4.12", 0x82, "f0 00"),
]


@pytest.mark.parametrize(
    ("statement", "reason", "data"),
    [pytest.param(s, r, d, id=i) for i, s, r, d in AFTER_CONNECT_5],
)
async def test_v5_violation_gets_disconnect_with_reason(
    make_hub: HubFactory, statement: str, reason: int | set[int], data: str
) -> None:
    """5.0 4.13 / MQTT-4.13.1-1: a malformed packet or protocol error (the statement in the test
    id's table) is answered by DISCONNECT with the matching reason code, then the connection is
    closed."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "bad5", level=5)
    await conn.send(bytes.fromhex(data))
    await expect_disconnect5(conn, reason)
    assert "bad5" not in hub.clients, statement


async def expect_refused5(conn: MemoryConnection, reason: int | set[int]) -> None:
    """Before CONNACK the server either closes silently or sends CONNACK with ``reason`` and
    closes (5.0 4.13.1, MQTT-3.2.2-7)."""
    try:
        data = await conn.receive(READ_TIMEOUT)
    except ClosedError:
        return
    assert data[0] == 0x20, f"expected CONNACK or a close, got {data.hex(' ')}"
    reasons = {reason} if isinstance(reason, int) else reason
    assert data[3] in reasons, f"expected CONNACK reason {sorted(reasons)}, got {data.hex(' ')}"
    await expect_closed(conn)


BAD_CONNECT_5 = [
    ("reserved-flag-set", "MQTT-3.1.2-3", 0x81, patched_flags(connect("c", level=5), 0x03)),
    (
        "will-qos-without-will",
        "MQTT-3.1.2-11",
        {0x81, 0x82},
        patched_flags(connect("c", level=5), 0x0A),
    ),
    (
        "will-qos-3",
        "MQTT-3.1.2-12",
        0x81,
        patched_flags(connect("c", level=5, will=("w", b"x", 0, False)), 0x1E),
    ),
    (
        "session-expiry-twice",
        "3.1.2.11.2",
        0x82,
        connect("c", level=5, properties=prop(0x11, 1) + prop(0x11, 2)),
    ),
    ("receive-maximum-0", "3.1.2.11.3", 0x82, connect("c", level=5, properties=prop(0x21, 0))),
    ("maximum-packet-size-0", "3.1.2.11.4", 0x82, connect("c", level=5, properties=prop(0x27, 0))),
]


@pytest.mark.parametrize(
    ("statement", "reason", "data"),
    [pytest.param(s, r, d, id=i) for i, s, r, d in BAD_CONNECT_5],
)
async def test_v5_bad_connect_refused(
    make_hub: HubFactory, statement: str, reason: int | set[int], data: bytes
) -> None:
    """5.0 MQTT-3.1.4-1: a CONNECT that breaks the rule in the test id is not accepted; the server
    may send CONNACK with the reason code, then closes."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(data)
    await expect_refused5(conn, reason)
    assert not hub.clients, statement


async def test_v5_packet_too_large_gets_0x95(make_hub: HubFactory) -> None:
    """5.0 3.2.2.3.6 with 4.13: a packet above the Maximum Packet Size the server announced gets
    DISCONNECT 0x95 (Packet too large)."""
    hub = await start_hub(make_hub, max_packet_size=128)
    conn = await hub.connect_memory()
    await conn.send(connect("big5", level=5))
    assert (await read_connack5(conn)).get(0x27) == 128
    await conn.send(publish("e/big", b"x" * 200, level=5))
    await expect_disconnect5(conn, 0x95)


async def test_v5_maximum_packet_size_counts_whole_packet(make_hub: HubFactory) -> None:
    """5.0 3.2.2.3.6 / 3.1.2.11.4: the packet size is the total number of bytes of the packet,
    fixed header included: exactly 128 bytes pass, 129 bytes get DISCONNECT 0x95."""
    hub = await start_hub(make_hub, max_packet_size=128)
    sub = await open_client(hub, "edge-sub", level=5)
    await subscribe_ok(sub, 1, ("e/edge", 0), level=5)
    conn = await open_client(hub, "edge5", level=5)
    fits = publish("e/edge", b"y" * 117, level=5)
    assert len(fits) == 128
    await conn.send(fits)
    await sync(conn)
    await expect_publish(sub, "e/edge", b"y" * 117, level=5)
    too_big = publish("e/edge", b"y" * 118, level=5)
    assert len(too_big) == 129
    await conn.send(too_big)
    await expect_disconnect5(conn, 0x95)


async def test_v5_declared_length_above_maximum_rejected_before_body(
    make_hub: HubFactory,
) -> None:
    """5.0 3.2.2.3.6: a fixed header declaring 2 MiB against the default 1 MiB maximum gets
    DISCONNECT 0x95 at once, without waiting for the body."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "huge5", level=5)
    await conn.send(bytes.fromhex("30 ff ff 7f"))
    await expect_disconnect5(conn, 0x95)


# --- valid edge input is not an error ------------------------------------------------------------


async def test_bom_in_topic_is_kept_not_stripped(make_hub: HubFactory) -> None:
    """MQTT-1.5.3-3: U+FEFF at the start of a string is not skipped or stripped; the topic
    "\\ufeffe/bom" is its own topic, delivered unchanged and not matched by "e/bom"."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "bom")
    await subscribe_ok(sub, 1, ("\ufeffe/bom", 0), ("e/bom", 0))
    pub = await open_client(hub, "p")
    await pub.send(bytes.fromhex("30 0a 00 08 ef bb bf 65 2f 62 6f 6d"))  # no payload
    await expect(sub, bytes.fromhex("30 0a 00 08 ef bb bf 65 2f 62 6f 6d"))
    await expect_silence(sub)


async def test_single_separator_topic_matches_plus_plus(make_hub: HubFactory) -> None:
    """MQTT 4.7.1.3: "+/+" matches the topic "/" and "/+" matches "/x", while "+" does not match
    "/x"; such topics are valid, not errors."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "sep")
    await subscribe_ok(sub, 1, ("+/+", 0), ("+", 0))
    pub = await open_client(hub, "p")
    await pub.send(publish("/", b"1"))
    await pub.send(publish("/x", b"2"))
    await expect_publish(sub, "/", b"1")
    await expect_publish(sub, "/x", b"2")
    await expect_silence(sub)
