"""MQTT 5.0 features: subscription options, subscription identifiers, shared subscriptions, topic
aliases, flow control, packet size limits, message expiry, property pass-through, CONNACK
properties and SUBACK reason codes; byte-exact conversations over the in-memory transport.
"""

from __future__ import annotations

from typing import Any

import pytest
from _wire import (
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    QUIET,
    HubFactory,
    Pub,
    ack,
    body_of,
    check_publish,
    connect,
    expect,
    expect_ack5,
    expect_disconnect5,
    expect_publish,
    expect_silence,
    frame,
    leave,
    open_client,
    parse_publish,
    prop,
    publish,
    read_connack5,
    read_packet,
    read_packets,
    read_vbi,
    start_hub,
    suback,
    subscribe,
    subscribe_ok,
    sync,
    u16,
    unsubscribe,
    without_suback,
)

from enos_lab.clock import SimulatedClock
from enos_lab.hub import ClientInfo, Decision, Hub, HubConfig, MemoryConnection

pytestmark = pytest.mark.anyio


def options(qos: int, *, no_local: bool = False, rap: bool = False, rh: int = 0) -> int:
    """A 5.0 subscription options byte (3.8.3.1)."""
    return qos | (0x04 if no_local else 0) | (0x08 if rap else 0) | (rh << 4)


async def client5(hub: Hub, client_id: str, **kwargs: Any) -> MemoryConnection:
    return await open_client(hub, client_id, level=5, **kwargs)


async def drain(conn: MemoryConnection, level: int = 5) -> list[Pub]:
    """Every PUBLISH the hub sends until it has been quiet for a moment."""
    out: list[Pub] = []
    while True:
        try:
            raw = await read_packet(conn, QUIET)
        except TimeoutError:
            return out
        out.append(parse_publish(raw, level))


# --- CONNACK -------------------------------------------------------------------------------------


async def test_connack_properties_follow_config(make_hub: HubFactory) -> None:
    """5.0 3.2.2.3.3 (Receive Maximum), 3.2.2.3.8 (Topic Alias Maximum), 3.2.2.3.6 (Maximum Packet
    Size) and 3.2.2.3.14 (Server Keep Alive) announce the configured limits."""
    hub = await start_hub(
        make_hub,
        receive_maximum=10,
        topic_alias_maximum=5,
        max_packet_size=4096,
        server_keep_alive=30,
    )
    conn = await hub.connect_memory()
    await conn.send(connect("cfg", level=5))
    got = await read_connack5(conn)
    assert (got.get(0x21), got.get(0x22), got.get(0x27), got.get(0x13)) == (10, 5, 4096, 30)


async def test_connack_default_properties(make_hub: HubFactory) -> None:
    """5.0 3.2.2.3: with defaults the hub announces Topic Alias Maximum 64 (absent would mean 0)
    and Maximum Packet Size 1 MiB (absent would mean unlimited); Receive Maximum is 65535 or
    absent; feature flags, if present, say "supported" (shared subscriptions, subscription
    identifiers, wildcards, retain are all used by these tests)."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(bytes.fromhex("10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 63 31"))
    got = await read_connack5(conn)
    assert got.get(0x22) == 64
    assert got.get(0x27) == 1 << 20
    assert got.get(0x21, 65535) == 65535
    for flag in (0x25, 0x28, 0x29, 0x2A):
        assert got.get(flag, 1) == 1, f"property 0x{flag:02x}"
    assert 0x24 not in got or got[0x24] in (1, 2)
    assert 0x12 not in got  # the client chose its id


async def test_connack_caps_session_expiry(make_hub: HubFactory) -> None:
    """5.0 3.2.2.3.2: a server using a Session Expiry Interval other than the client's says so
    in CONNACK (HubConfig.max_session_expiry caps it)."""
    hub = await start_hub(make_hub, max_session_expiry=10)
    conn = await hub.connect_memory()
    await conn.send(connect("cap", level=5, clean=False, properties=prop(0x11, 100)))
    assert (await read_connack5(conn)).get(0x11) == 10


async def test_assigned_client_identifier(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.2.2-16 (with MQTT-3.1.3-6): a zero-length client id is accepted and the CONNACK
    carries the Assigned Client Identifier, unique per client (MQTT-3.1.3-7 style)."""
    hub = await start_hub(make_hub)
    ids = []
    for _ in range(2):
        conn = await hub.connect_memory()
        await conn.send(connect("", level=5))
        assigned = (await read_connack5(conn)).get(0x12)
        assert isinstance(assigned, str)
        assert assigned
        ids.append(assigned)
        await sync(conn)
    assert ids[0] != ids[1]
    assert set(ids) <= set(hub.clients)


# --- subscription options ------------------------------------------------------------------------


async def test_no_local_suppresses_own_messages(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.8.3-3: with No Local set, the client's own messages are not forwarded back to
    it (a later message on a normal subscription shows nothing was queued before it)."""
    hub = await start_hub(make_hub)
    conn = await client5(hub, "nl")
    await conn.send(bytes.fromhex("82 0a 00 01 00 00 04 6e 6c 2f 74 04"))  # "nl/t", No Local
    await expect(conn, bytes.fromhex("90 04 00 01 00 00"))
    await subscribe_ok(conn, 2, ("nl/after", 0), level=5)
    await conn.send(bytes.fromhex("30 08 00 04 6e 6c 2f 74 00 78"))  # own PUBLISH to "nl/t"
    await conn.send(publish("nl/after", b"y", level=5))
    await expect(conn, bytes.fromhex("30 0c 00 08 6e 6c 2f 61 66 74 65 72 00 79"))
    other = await client5(hub, "other")
    await other.send(publish("nl/t", b"z", level=5))
    await expect_publish(conn, "nl/t", b"z", level=5)


async def test_without_no_local_own_messages_come_back(make_hub: HubFactory) -> None:
    """5.0 3.8.3.1: No Local 0 (the default) forwards the client's own messages to it."""
    hub = await start_hub(make_hub)
    conn = await client5(hub, "own")
    await subscribe_ok(conn, 1, ("nl/own", 0), level=5)
    await conn.send(publish("nl/own", b"me", level=5))
    await expect_publish(conn, "nl/own", b"me", level=5)


async def test_granted_qos_caps_delivery(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.8.4-8 (3.1.1 MQTT-3.8.4-6): a QoS 2 message to a QoS 1 subscription is
    delivered at QoS 1."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "g1")
    await subscribe_ok(sub, 1, ("g/q", 1), level=5)
    pub = await client5(hub, "p")
    await pub.send(publish("g/q", b"2", qos=2, pid=1, level=5))
    await expect_ack5(pub, PUBREC, 1, {0x00, 0x10})
    await pub.send(ack(PUBREL, 1))
    await expect_ack5(pub, PUBCOMP, 1)
    pid = await expect_publish(sub, "g/q", b"2", qos=1, level=5)
    await sub.send(ack(PUBACK, pid))


# --- subscription identifiers --------------------------------------------------------------------


async def test_subscription_identifier_in_delivered_publish(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.4-3: the Subscription Identifier of the matching subscription is sent with
    the message; literal bytes."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "si")
    await sub.send(bytes.fromhex("82 0c 00 01 02 0b 07 00 04 73 69 2f 74 00"))  # id 7
    await expect(sub, bytes.fromhex("90 04 00 01 00 00"))
    pub = await client5(hub, "p")
    await pub.send(bytes.fromhex("30 08 00 04 73 69 2f 74 00 78"))
    await expect(sub, bytes.fromhex("30 0a 00 04 73 69 2f 74 02 0b 07 78"))


async def test_multi_byte_subscription_identifier(make_hub: HubFactory) -> None:
    """5.0 3.8.2.1.2: identifiers are Variable Byte Integers up to 268,435,455."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "si2")
    await subscribe_ok(sub, 1, ("si/big", 0), level=5, properties=prop(0x0B, 268_435_455))
    pub = await client5(hub, "p")
    await pub.send(publish("si/big", b"b", level=5))
    await expect_publish(sub, "si/big", b"b", level=5, properties=prop(0x0B, 268_435_455))


async def test_overlapping_subscriptions_carry_all_identifiers(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.4-4 / MQTT-3.3.4-5: with two matching subscriptions (ids 1 and 2) the server
    sends either one copy with both identifiers or one copy per subscription with its own."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "ov")
    await subscribe_ok(sub, 1, ("ov/+", 0), level=5, properties=prop(0x0B, 1))
    await subscribe_ok(sub, 2, ("ov/#", 0), level=5, properties=prop(0x0B, 2))
    pub = await client5(hub, "p")
    await pub.send(publish("ov/x", b"o", level=5))
    copies = await drain(sub)
    assert copies, "no message delivered"
    assert all((c.topic, c.payload) == ("ov/x", b"o") for c in copies)
    ids = [sorted(v for k, v in c.properties if k == 0x0B) for c in copies]
    assert sorted(ids) in ([[1, 2]], [[1], [2]])


# --- shared subscriptions ------------------------------------------------------------------------


async def test_shared_subscription_delivers_each_message_to_one_member(
    make_hub: HubFactory,
) -> None:
    """5.0 4.8.2: each message matching a shared subscription goes to exactly one session of the
    group; the hub spreads 20 messages over both members."""
    hub = await start_hub(make_hub)
    members = [await client5(hub, f"m{i}") for i in range(2)]
    for member in members:
        await subscribe_ok(member, 1, ("$share/g/sh/t", 0), level=5)
    pub = await client5(hub, "p")
    sent = [f"{i:02d}".encode() for i in range(20)]
    for payload in sent:
        await pub.send(publish("sh/t", payload, level=5))
    await sync(pub)
    received = [await drain(member) for member in members]
    for copies in received:
        assert all(c.topic == "sh/t" for c in copies)
        assert copies, "a member of the group received nothing"
    assert sorted(c.payload for copies in received for c in copies) == sent


async def test_shared_subscription_groups_each_get_a_copy(make_hub: HubFactory) -> None:
    """5.0 4.8.2: every share group, and every non-shared subscription, gets its own copy."""
    hub = await start_hub(make_hub)
    a = await client5(hub, "a")
    await subscribe_ok(a, 1, ("$share/g1/sh/x", 0), level=5)
    b = await client5(hub, "b")
    await subscribe_ok(b, 1, ("$share/g2/sh/x", 0), level=5)
    c = await client5(hub, "c")
    await subscribe_ok(c, 1, ("sh/x", 0), level=5)
    pub = await client5(hub, "p")
    await pub.send(publish("sh/x", b"all", level=5))
    for conn in (a, b, c):
        await expect_publish(conn, "sh/x", b"all", level=5)


async def test_shared_subscription_gets_no_retained_messages(make_hub: HubFactory) -> None:
    """5.0 3.3.1.3 / 4.8.2: retained messages are sent for a new *non-shared* subscription
    only."""
    hub = await start_hub(make_hub)
    pub = await client5(hub, "p")
    await pub.send(publish("sh/r", b"kept", retain=True, level=5))
    await sync(pub)
    member = await client5(hub, "m")
    await subscribe_ok(member, 1, ("$share/g/sh/r", 0), level=5)
    await expect_silence(member)


async def test_no_local_on_shared_subscription_is_protocol_error(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.8.3-4: No Local on a shared subscription is a protocol error (DISCONNECT
    0x82)."""
    hub = await start_hub(make_hub)
    conn = await client5(hub, "nls")
    await conn.send(subscribe(1, ("$share/g/a", options(0, no_local=True)), level=5))
    await expect_disconnect5(conn, 0x82)


# --- topic aliases (client to server) ------------------------------------------------------------


async def test_topic_alias_set_then_used_with_empty_topic(make_hub: HubFactory) -> None:
    """5.0 3.3.2.3.4: a PUBLISH with a topic and Topic Alias sets the mapping; a later PUBLISH
    with an empty topic and that alias goes to the mapped topic. Subscribers get the full topic
    and no alias (their Topic Alias Maximum is 0, MQTT-3.3.2-10 / 3.2.2.3.8); literal bytes."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s311")
    await subscribe_ok(sub, 1, ("ta/x", 0))
    sub5 = await client5(hub, "s5")
    await subscribe_ok(sub5, 1, ("ta/x", 0), level=5)
    pub = await client5(hub, "p")
    await pub.send(bytes.fromhex("30 0b 00 04 74 61 2f 78 03 23 00 01 61"))  # alias 1 := ta/x
    await pub.send(bytes.fromhex("30 07 00 00 03 23 00 01 62"))  # alias 1, empty topic
    await expect(sub, bytes.fromhex("30 07 00 04 74 61 2f 78 61"))
    await expect(sub, bytes.fromhex("30 07 00 04 74 61 2f 78 62"))
    await expect(sub5, bytes.fromhex("30 08 00 04 74 61 2f 78 00 61"))
    await expect(sub5, bytes.fromhex("30 08 00 04 74 61 2f 78 00 62"))


async def test_topic_alias_can_be_remapped(make_hub: HubFactory) -> None:
    """5.0 3.3.2.3.4: a PUBLISH with a topic and an alias already in use replaces the mapping."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s")
    await subscribe_ok(sub, 1, ("ta/#", 0))
    pub = await client5(hub, "p")
    alias = prop(0x23, 1)
    await pub.send(publish("ta/a", b"1", level=5, properties=alias))
    await pub.send(publish("ta/b", b"2", level=5, properties=alias))
    await pub.send(publish("", b"3", level=5, properties=alias))
    await expect_publish(sub, "ta/a", b"1")
    await expect_publish(sub, "ta/b", b"2")
    await expect_publish(sub, "ta/b", b"3")


@pytest.mark.parametrize(
    ("alias", "statement"),
    [(0, "MQTT-3.3.2-8"), (3, "MQTT-3.3.2-9"), (65535, "MQTT-3.3.2-9")],
)
async def test_topic_alias_out_of_range_disconnects_0x94(
    make_hub: HubFactory, alias: int, statement: str
) -> None:
    """5.0 MQTT-3.3.2-8 (alias 0) and MQTT-3.3.2-9 (alias above the Topic Alias Maximum of 2):
    DISCONNECT 0x94 (Topic Alias invalid). The specification names 0x94 for an alias above the
    maximum and no code for alias 0; the agreed hub contract uses 0x94 for both."""
    hub = await start_hub(make_hub, topic_alias_maximum=2)
    conn = await hub.connect_memory()
    await conn.send(connect("tab", level=5))
    assert (await read_connack5(conn)).get(0x22) == 2, statement
    await conn.send(publish("ta/z", b"", level=5, properties=prop(0x23, alias)))
    await expect_disconnect5(conn, 0x94)


async def test_topic_alias_when_maximum_is_zero_disconnects_0x94(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.2-9 with Topic Alias Maximum 0 (no aliases accepted)."""
    hub = await start_hub(make_hub, topic_alias_maximum=0)
    conn = await hub.connect_memory()
    await conn.send(connect("ta0", level=5))
    assert (await read_connack5(conn)).get(0x22, 0) == 0
    await conn.send(publish("ta/z", b"", level=5, properties=prop(0x23, 1)))
    await expect_disconnect5(conn, 0x94)


async def test_unknown_topic_alias_with_empty_topic_is_protocol_error(
    make_hub: HubFactory,
) -> None:
    """5.0 3.3.2.3.4: an empty topic with an alias that has no mapping is a protocol error
    (DISCONNECT 0x82); mappings do not outlive their connection."""
    hub = await start_hub(make_hub)
    conn = await client5(hub, "tu")
    await conn.send(publish("ta/u", b"1", level=5, properties=prop(0x23, 1)))
    await sync(conn)
    conn.close()
    conn = await client5(hub, "tu")
    await conn.send(bytes.fromhex("30 07 00 00 03 23 00 01 62"))
    await expect_disconnect5(conn, 0x82)


# --- flow control and sizes ----------------------------------------------------------------------


async def test_receive_maximum_limits_unacknowledged_messages(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.4-9: the server never has more QoS 1 messages awaiting PUBACK than the
    client's Receive Maximum (2); each PUBACK releases the next, order kept."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "rm", properties=prop(0x21, 2))
    await subscribe_ok(sub, 1, ("rm/t", 1), level=5)
    pub = await open_client(hub, "p")
    for pid in range(1, 6):
        await pub.send(publish("rm/t", bytes([0x30 + pid]), qos=1, pid=pid))
        await expect(pub, ack(PUBACK, pid))
    first = await expect_publish(sub, "rm/t", b"1", qos=1, level=5)
    second = await expect_publish(sub, "rm/t", b"2", qos=1, level=5)
    await expect_silence(sub)
    await sub.send(ack(PUBACK, first))
    third = await expect_publish(sub, "rm/t", b"3", qos=1, level=5)
    await expect_silence(sub)
    await sub.send(ack(PUBACK, second))
    await sub.send(ack(PUBACK, third))
    for payload in (b"4", b"5"):
        pid = await expect_publish(sub, "rm/t", payload, qos=1, level=5)
        await sub.send(ack(PUBACK, pid))
    await expect_silence(sub)


async def test_inbound_receive_maximum_exceeded_disconnects_0x93(make_hub: HubFactory) -> None:
    """5.0 3.3.4 (MQTT-3.3.4-7 on the client side): more unacknowledged QoS 2 PUBLISH packets
    than the server's Receive Maximum (2) get DISCONNECT 0x93."""
    hub = await start_hub(make_hub, receive_maximum=2)
    conn = await hub.connect_memory()
    await conn.send(connect("rx", level=5))
    assert (await read_connack5(conn)).get(0x21) == 2
    for pid in (1, 2):
        await conn.send(publish("rx/t", b"x", qos=2, pid=pid, level=5))
        await expect_ack5(conn, PUBREC, pid, {0x00, 0x10})
    await conn.send(publish("rx/t", b"x", qos=2, pid=3, level=5))
    await expect_disconnect5(conn, 0x93)


async def test_client_maximum_packet_size_respected(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.1.2-24 / MQTT-3.1.2-25: the server never sends a packet larger than the
    client's Maximum Packet Size (64 bytes); such a message is dropped for that client only."""
    hub = await start_hub(make_hub)
    small = await client5(hub, "small", properties=prop(0x27, 64))
    await subscribe_ok(small, 1, ("mp/t", 0), level=5)
    big = await client5(hub, "big")
    await subscribe_ok(big, 1, ("mp/t", 0), level=5)
    pub = await client5(hub, "p")
    await pub.send(publish("mp/t", b"L" * 100, level=5))
    await pub.send(publish("mp/t", b"ok", level=5))
    await expect_publish(small, "mp/t", b"ok", level=5)
    await expect_publish(big, "mp/t", b"L" * 100, level=5)
    await expect_publish(big, "mp/t", b"ok", level=5)


# --- message expiry and property pass-through ----------------------------------------------------


async def test_message_expiry_drops_expired_and_decrements_remaining(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.3.2-5 (an expired queued message is not delivered) and MQTT-3.3.2-6 (the
    forwarded Message Expiry Interval is reduced by the time spent waiting, rounded up)."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await client5(hub, "exp", clean=False, properties=prop(0x11, 60))
    await subscribe_ok(sub, 1, ("me/t", 1), level=5)
    await leave(sub)
    pub = await client5(hub, "p")
    for pid, payload, expiry in ((1, b"short", prop(0x02, 1)), (2, b"long", prop(0x02, 30))):
        await pub.send(publish("me/t", payload, qos=1, pid=pid, level=5, properties=expiry))
        await expect_ack5(pub, PUBACK, pid, {0x00, 0x10})
    await pub.send(publish("me/t", b"forever", qos=1, pid=3, level=5))
    await expect_ack5(pub, PUBACK, 3, {0x00, 0x10})
    await clock.advance_async(1.3)  # the 1 s message expires, 28.7 s remain of the 30 s one
    sub = await client5(hub, "exp", clean=False, session_present=True, properties=prop(0x11, 60))
    got = parse_publish(await read_packet(sub), level=5)
    assert (got.topic, got.payload, got.qos) == ("me/t", b"long", 1)
    assert got.properties == [(0x02, 29)]
    await sub.send(ack(PUBACK, got.pid))
    pid = await expect_publish(sub, "me/t", b"forever", qos=1, level=5)
    await sub.send(ack(PUBACK, pid))
    await expect_silence(sub)


async def test_message_expiry_forwarded_to_live_subscriber(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.2-6: a message forwarded at once keeps (almost) its full expiry interval."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "live")
    await subscribe_ok(sub, 1, ("me/live", 0), level=5)
    pub = await client5(hub, "p")
    await pub.send(publish("me/live", b"x", level=5, properties=prop(0x02, 60)))
    got = parse_publish(await read_packet(sub), level=5)
    assert len(got.properties) == 1
    assert got.properties[0][0] == 0x02
    remaining = got.properties[0][1]
    assert isinstance(remaining, int)
    assert 57 <= remaining <= 60


async def test_request_response_and_user_properties_pass_through(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.2-4 (payload format), MQTT-3.3.2-15 (response topic), MQTT-3.3.2-16
    (correlation data), MQTT-3.3.2-17 / MQTT-3.3.2-18 (user properties, order kept) and
    MQTT-3.3.2-20 (content type) are forwarded unaltered."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "rr")
    await subscribe_ok(sub, 1, ("rr/req", 1), level=5)
    pub = await client5(hub, "p")
    sent = (
        prop(0x01, 1)
        + prop(0x08, "rr/resp/42")
        + prop(0x09, b"\x00\xffcorr")
        + prop(0x26, ("z", "1"))
        + prop(0x26, ("a", "2"))
        + prop(0x26, ("z", "3"))
        + prop(0x03, "application/json")
    )
    await pub.send(publish("rr/req", b"{}", qos=1, pid=4, level=5, properties=sent))
    await expect_ack5(pub, PUBACK, 4, {0x00, 0x10})
    got = parse_publish(await read_packet(sub), level=5)
    assert (got.topic, got.payload, got.qos) == ("rr/req", b"{}", 1)
    users = [v for k, v in got.properties if k == 0x26]
    assert users == [("z", "1"), ("a", "2"), ("z", "3")]
    others = sorted(((k, v) for k, v in got.properties if k != 0x26), key=repr)
    assert others == sorted(
        [(0x01, 1), (0x08, "rr/resp/42"), (0x09, b"\x00\xffcorr"), (0x03, "application/json")],
        key=repr,
    )
    await sub.send(ack(PUBACK, got.pid))


# --- SUBACK reason codes -------------------------------------------------------------------------


async def test_invalid_topic_filter_gets_0x8f(make_hub: HubFactory) -> None:
    """5.0 3.9.3 / MQTT-4.7.1-1 / MQTT-4.7.1-2: filters breaking the wildcard rules get SUBACK
    0x8F (Topic Filter invalid); the valid one in the same SUBSCRIBE is granted."""
    hub = await start_hub(make_hub)
    conn = await client5(hub, "bad-filter")
    await conn.send(subscribe(1, ("ok/t", 1), ("bad/#/x", 0), ("x+/y", 0), level=5))
    raw = await read_packet(conn)
    body = body_of(raw)
    assert raw[0] == 0x90
    assert body[:2] == u16(1)
    plen, n = read_vbi(body, 2)
    assert body[2 + n + plen :].hex(" ") == "01 8f 8f"
    await sync(conn)


class DenyPrefix:
    """An authoriser that refuses everything under ``deny/``."""

    def authorise_publish(self, client: ClientInfo, topic: str, qos: int, retain: bool) -> Decision:
        return Decision(allowed=not topic.startswith("deny/"))

    def authorise_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> Decision:
        return Decision(allowed=not topic_filter.startswith("deny/"))


async def deny_hub(make_hub: HubFactory) -> Hub:
    return await make_hub(HubConfig(anonymous=True), authoriser=DenyPrefix())


async def test_denied_subscribe_gets_0x87(make_hub: HubFactory) -> None:
    """5.0 3.9.3: a subscription the server does not authorise gets SUBACK 0x87 (Not
    authorized); the connection stays."""
    hub = await deny_hub(make_hub)
    conn = await client5(hub, "den5")
    await conn.send(subscribe(1, ("deny/x", 0), ("fine/x", 0), level=5))
    raw = await read_packet(conn)
    body = body_of(raw)
    plen, n = read_vbi(body, 2)
    assert (raw[0], body[:2], body[2 + n + plen :]) == (0x90, u16(1), b"\x87\x00")
    await sync(conn)


async def test_denied_subscribe_311_gets_0x80(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.9.3-2 / 3.9.3: a refused subscription gets return code 0x80 (Failure)."""
    hub = await deny_hub(make_hub)
    conn = await open_client(hub, "den4")
    await conn.send(subscribe(1, ("deny/x", 0), ("fine/x", 1)))
    await expect(conn, bytes.fromhex("90 04 00 01 80 01"))
    await sync(conn)


async def test_denied_publish_acknowledged_not_delivered(make_hub: HubFactory) -> None:
    """A refused PUBLISH is not forwarded: 5.0 gets PUBACK 0x87 (3.4.2.1), 3.1.1 a plain PUBACK;
    neither connection is closed."""
    hub = await deny_hub(make_hub)
    sub = await open_client(hub, "watch")
    await subscribe_ok(sub, 1, ("#", 0))
    p5 = await client5(hub, "p5")
    await p5.send(publish("deny/a", b"no", qos=1, pid=1, level=5))
    await expect_ack5(p5, PUBACK, 1, 0x87)
    p4 = await open_client(hub, "p4")
    await p4.send(publish("deny/b", b"no", qos=1, pid=1))
    await expect(p4, bytes.fromhex("40 02 00 01"))
    await p4.send(publish("deny/c", b"no"))
    await p4.send(publish("fine/c", b"yes"))
    await expect_publish(sub, "fine/c", b"yes")
    await sync(p5)
    await expect_silence(sub)


async def test_no_reason_string_when_problem_information_not_requested(
    make_hub: HubFactory,
) -> None:
    """5.0 MQTT-3.1.2-29: with Request Problem Information 0 the server sends no Reason String
    or User Property on SUBACK / PUBACK; literal bytes of the refusals."""
    hub = await deny_hub(make_hub)
    conn = await client5(hub, "quiet", properties=prop(0x17, 0))
    await conn.send(subscribe(1, ("deny/x", 0), level=5))
    await expect(conn, bytes.fromhex("90 04 00 01 00 87"))
    await conn.send(publish("deny/y", b"n", qos=1, pid=2, level=5))
    raw = await read_packet(conn)
    assert raw.hex(" ") in ("40 03 00 02 87", "40 04 00 02 87 00")  # 3.4.2.2: both forms


async def test_receive_maximum_counts_qos2_until_pubcomp(make_hub: HubFactory) -> None:
    """5.0 4.9 / MQTT-3.3.4-9: a QoS 2 message stays in the send quota until PUBCOMP (not
    PUBREC); with Receive Maximum 1 the next PUBLISH waits for it."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "rm2", properties=prop(0x21, 1))
    await subscribe_ok(sub, 1, ("rm/two", 2), level=5)
    pub = await open_client(hub, "p")
    for pid in (1, 2):
        await pub.send(publish("rm/two", bytes([0x30 + pid]), qos=2, pid=pid))
        await expect(pub, ack(PUBREC, pid))
        await pub.send(ack(PUBREL, pid))
        await expect(pub, ack(PUBCOMP, pid))
    first = await expect_publish(sub, "rm/two", b"1", qos=2, level=5)
    await sub.send(ack(PUBREC, first))
    await expect_ack5(sub, PUBREL, first)
    await expect_silence(sub)
    await sub.send(ack(PUBCOMP, first))
    second = await expect_publish(sub, "rm/two", b"2", qos=2, level=5)
    await sub.send(ack(PUBREC, second))
    await expect_ack5(sub, PUBREL, second)
    await sub.send(ack(PUBCOMP, second))
    await expect_silence(sub)


async def test_pubrec_with_error_ends_qos2_exchange(make_hub: HubFactory) -> None:
    """5.0 MQTT-4.3.3-4 (PUBREL only after a PUBREC below 0x80) and 4.9 (a PUBREC with reason
    0x80 or above returns the send quota): no PUBREL follows, and with Receive Maximum 1 the
    next message is sent."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "rec-err", properties=prop(0x21, 1))
    await subscribe_ok(sub, 1, ("rm/err", 2), level=5)
    pub = await open_client(hub, "p")
    for pid in (1, 2):
        await pub.send(publish("rm/err", bytes([0x30 + pid]), qos=2, pid=pid))
        await expect(pub, ack(PUBREC, pid))
        await pub.send(ack(PUBREL, pid))
        await expect(pub, ack(PUBCOMP, pid))
    first = await expect_publish(sub, "rm/err", b"1", qos=2, level=5)
    await sub.send(frame(PUBREC, u16(first) + b"\x80"))  # PUBREC, Unspecified error
    second = await expect_publish(sub, "rm/err", b"2", qos=2, level=5)
    await sub.send(ack(PUBREC, second))
    await expect_ack5(sub, PUBREL, second)
    await sub.send(ack(PUBCOMP, second))
    await expect_silence(sub)


async def test_receive_maximum_of_new_connection_applies_to_queued_messages(
    make_hub: HubFactory,
) -> None:
    """5.0 3.1.2.11.3 / MQTT-3.3.4-9: messages queued for an offline session are sent within the
    Receive Maximum (1) of the connection that resumes it."""
    hub = await start_hub(make_hub)
    sub = await client5(hub, "rmq", clean=False, properties=prop(0x11, 60))
    await subscribe_ok(sub, 1, ("rm/q", 1), level=5)
    await leave(sub)
    pub = await open_client(hub, "p")
    for pid in (1, 2, 3):
        await pub.send(publish("rm/q", bytes([0x30 + pid]), qos=1, pid=pid))
        await expect(pub, ack(PUBACK, pid))
    sub = await client5(
        hub, "rmq", clean=False, session_present=True, properties=prop(0x11, 60) + prop(0x21, 1)
    )
    for payload in (b"1", b"2", b"3"):
        pid = await expect_publish(sub, "rm/q", payload, qos=1, level=5)
        await expect_silence(sub)
        await sub.send(ack(PUBACK, pid))


async def test_client_maximum_packet_size_applies_to_retained_messages(
    make_hub: HubFactory,
) -> None:
    """5.0 MQTT-3.1.2-24 / MQTT-3.1.2-25 also for retained messages sent on subscribe: the one
    too large for the client's Maximum Packet Size (64 bytes) is skipped."""
    hub = await start_hub(make_hub)
    pub = await client5(hub, "p")
    await pub.send(publish("mp/r/big", b"B" * 100, retain=True, level=5))
    await pub.send(publish("mp/r/small", b"s", retain=True, level=5))
    await sync(pub)
    sub = await client5(hub, "tiny", properties=prop(0x27, 64))
    await sub.send(subscribe(1, ("mp/r/+", 0), level=5))
    rest = without_suback(await read_packets(sub, 2), suback(1, 0, level=5))
    check_publish(rest[0], "mp/r/small", b"s", retain=True, level=5)
    await expect_silence(sub)


async def test_no_local_survives_session_resumption(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.8.3-3 with MQTT-3.1.2-4 (5.0): subscription options are part of the session;
    after resuming it, No Local still suppresses the client's own messages."""
    hub = await start_hub(make_hub)
    conn = await client5(hub, "nlp", clean=False, properties=prop(0x11, 60))
    await subscribe_ok(conn, 1, ("nl/p", options(0, no_local=True)), ("nl/p2", 0), level=5)
    await leave(conn)
    conn = await client5(hub, "nlp", clean=False, session_present=True, properties=prop(0x11, 60))
    await conn.send(publish("nl/p", b"own", level=5))
    await conn.send(publish("nl/p2", b"marker", level=5))
    await expect_publish(conn, "nl/p2", b"marker", level=5)
    await expect_silence(conn)


async def test_shared_subscription_member_leaving(make_hub: HubFactory) -> None:
    """5.0 4.8.2: when a member unsubscribes (UNSUBACK 0x00) or leaves, the remaining member
    gets every message of the group."""
    hub = await start_hub(make_hub)
    a = await client5(hub, "sa")
    b = await client5(hub, "sb")
    c = await client5(hub, "sc")
    for member in (a, b, c):
        await subscribe_ok(member, 1, ("$share/g/sh/l", 0), level=5)
    await a.send(unsubscribe(2, "$share/g/sh/l", level=5))
    await expect(a, bytes.fromhex("b0 04 00 02 00 00"))
    await leave(b, bytes.fromhex("e0 00"))
    pub = await client5(hub, "p")
    for i in range(4):
        await pub.send(publish("sh/l", bytes([0x30 + i]), level=5))
    for i in range(4):
        await expect_publish(c, "sh/l", bytes([0x30 + i]), level=5)
    await expect_silence(a)


async def test_resent_message_carries_decremented_expiry(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.3.2-6 for a re-sent in-flight message (MQTT-4.4.0-1): the copy sent again after
    reconnecting carries the expiry interval minus the time the message has waited."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await client5(hub, "rexp", clean=False, properties=prop(0x11, 60))
    await subscribe_ok(sub, 1, ("me/re", 1), level=5)
    pub = await client5(hub, "p")
    await pub.send(publish("me/re", b"r", qos=1, pid=1, level=5, properties=prop(0x02, 30)))
    await expect_ack5(pub, PUBACK, 1)
    first = parse_publish(await read_packet(sub), level=5)
    assert first.properties[0][0] == 0x02
    sub.close()  # no PUBACK
    await sub.wait_closed()
    await clock.advance_async(1.2)
    sub = await client5(hub, "rexp", clean=False, session_present=True, properties=prop(0x11, 60))
    again = parse_publish(await read_packet(sub), level=5)
    assert (again.topic, again.payload, again.pid, again.dup) == ("me/re", b"r", first.pid, True)
    assert again.properties == [(0x02, 29)]
    await sub.send(ack(PUBACK, again.pid))
