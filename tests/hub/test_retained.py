"""Retained messages: byte-exact conversations over the in-memory transport.

Statement ids are the OASIS ones; where MQTT 3.1.1 and 5.0 number the same rule differently, the
docstring says which version it cites. Expected bytes are computed by hand from the specification
(a few written out literally, the rest with the spec-based byte kit below).
"""

from __future__ import annotations

import pytest
from _wire import (
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    HubFactory,
    ack,
    check_publish,
    expect,
    expect_ack5,
    expect_publish,
    expect_silence,
    leave,
    open_client,
    parse_props,
    parse_publish,
    prop,
    publish,
    read_packets,
    start_hub,
    suback,
    subscribe,
    subscribe_ok,
    sync,
    without_suback,
)

from enos_lab.clock import SimulatedClock
from enos_lab.hub import Hub, Message

pytestmark = pytest.mark.anyio


async def publish_retained(hub: Hub, topic: str, payload: bytes, qos: int = 0) -> None:
    """Publish a retained message from a short-lived 3.1.1 client and wait until it is stored."""
    conn = await open_client(hub, f"retainer-{topic}-{len(payload)}")
    await conn.send(publish(topic, payload, qos=qos, pid=1, retain=True))
    if qos == 1:
        await expect(conn, ack(PUBACK, 1))
    elif qos == 2:
        await expect(conn, ack(PUBREC, 1))
        await conn.send(ack(PUBREL, 1))
        await expect(conn, ack(PUBCOMP, 1))
    await sync(conn)
    await leave(conn)


# --- MQTT 3.1.1 ----------------------------------------------------------------------------------


async def test_retained_message_stored_and_sent_to_new_subscriber_with_retain_1(
    make_hub: HubFactory,
) -> None:
    """3.1.1 MQTT-3.3.1-5, MQTT-3.3.1-6, MQTT-3.3.1-8: the server stores a RETAIN=1 message and
    sends it to a later subscriber with the RETAIN flag set."""
    hub = await start_hub(make_hub)
    pub = await hub.connect_memory()
    await pub.send(bytes.fromhex("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 70 31"))  # "p1"
    await expect(pub, bytes.fromhex("20 02 00 00"))
    # PUBLISH QoS 0 RETAIN "r/t1" "hello"
    await pub.send(bytes.fromhex("31 0b 00 04 72 2f 74 31 68 65 6c 6c 6f"))
    await sync(pub)

    sub = await open_client(hub, "s1")
    await sub.send(bytes.fromhex("82 09 00 01 00 04 72 2f 74 31 00"))  # SUBSCRIBE r/t1 QoS 0
    rest = without_suback(await read_packets(sub, 2), bytes.fromhex("90 03 00 01 00"))
    assert rest[0].hex(" ") == "31 0b 00 04 72 2f 74 31 68 65 6c 6c 6f"


async def test_established_subscription_gets_retain_0(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.3.1-9: a message sent because it matches an established subscription has
    RETAIN=0 whatever the publisher set."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s1")
    await subscribe_ok(sub, 1, ("r/t2", 0))
    pub = await open_client(hub, "p1")
    await pub.send(bytes.fromhex("31 08 00 04 72 2f 74 32 6f 6e"))  # retained "on"
    await expect(sub, bytes.fromhex("30 08 00 04 72 2f 74 32 6f 6e"))


async def test_zero_byte_retained_message_is_forwarded_and_clears(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.3.1-10, MQTT-3.3.1-11: a retained PUBLISH with an empty payload is forwarded
    as normal, removes the retained message and is not itself stored."""
    hub = await start_hub(make_hub)
    await publish_retained(hub, "r/clr", b"v1")
    early = await open_client(hub, "early")
    await early.send(subscribe(1, ("r/clr", 0)))
    rest = without_suback(await read_packets(early, 2), suback(1, 0))
    check_publish(rest[0], "r/clr", b"v1", retain=True)

    pub = await open_client(hub, "p1")
    await pub.send(bytes.fromhex("31 07 00 05 72 2f 63 6c 72"))  # retained, zero-byte payload
    await sync(pub)
    await expect(early, bytes.fromhex("30 07 00 05 72 2f 63 6c 72"))  # forwarded as normal

    late = await open_client(hub, "late")
    await subscribe_ok(late, 1, ("r/clr", 0))
    await expect_silence(late)


async def test_non_retained_publish_keeps_retained_message(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.3.1-12: a RETAIN=0 PUBLISH neither stores nor replaces the retained message."""
    hub = await start_hub(make_hub)
    await publish_retained(hub, "r/keep", b"kept")
    pub = await open_client(hub, "p1")
    await pub.send(publish("r/keep", b"live"))
    await sync(pub)
    sub = await open_client(hub, "s1")
    await sub.send(subscribe(1, ("r/keep", 1)))
    rest = without_suback(await read_packets(sub, 2), suback(1, 1))
    check_publish(rest[0], "r/keep", b"kept", retain=True)
    await expect_silence(sub)


async def test_new_retained_message_replaces_previous(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.3.1-7 (QoS 0 retained discards the previous one), MQTT-3.3.1-5."""
    hub = await start_hub(make_hub)
    await publish_retained(hub, "r/rep", b"old", qos=1)
    await publish_retained(hub, "r/rep", b"new", qos=0)
    sub = await open_client(hub, "s1")
    await sub.send(subscribe(1, ("r/rep", 1)))
    rest = without_suback(await read_packets(sub, 2), suback(1, 1))
    check_publish(rest[0], "r/rep", b"new", retain=True)
    await expect_silence(sub)


@pytest.mark.parametrize(
    ("pub_qos", "sub_qos", "delivered_qos"),
    [(1, 0, 0), (2, 1, 1), (0, 2, 0), (1, 2, 1), (2, 2, 2)],
)
async def test_retained_message_delivered_at_minimum_qos(
    make_hub: HubFactory, pub_qos: int, sub_qos: int, delivered_qos: int
) -> None:
    """3.1.1 MQTT-3.3.1-5 (the QoS is stored with the message), MQTT-3.8.4-6 (delivered at the
    minimum of the message QoS and the granted QoS)."""
    hub = await start_hub(make_hub)
    await publish_retained(hub, "r/qos", b"q", qos=pub_qos)
    sub = await open_client(hub, "s1")
    await sub.send(subscribe(1, ("r/qos", sub_qos)))
    rest = without_suback(await read_packets(sub, 2), suback(1, sub_qos))
    pid = check_publish(rest[0], "r/qos", b"q", qos=delivered_qos, retain=True)
    if delivered_qos == 1:
        await sub.send(ack(PUBACK, pid))
    elif delivered_qos == 2:
        await sub.send(ack(PUBREC, pid))
        await expect(sub, ack(PUBREL, pid))
        await sub.send(ack(PUBCOMP, pid))
    await sync(sub)


async def test_retained_qos_0_literal_bytes(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.3.1-8 with a QoS 1 retained message and a QoS 0 subscription, literal bytes:
    the copy has no packet identifier (MQTT-2.3.1-5)."""
    hub = await start_hub(make_hub)
    pub = await open_client(hub, "p1")
    await pub.send(bytes.fromhex("33 09 00 03 72 2f 71 00 07 68 69"))  # QoS 1 id 7 "hi"
    await expect(pub, bytes.fromhex("40 02 00 07"))
    sub = await open_client(hub, "s1")
    await sub.send(bytes.fromhex("82 08 00 02 00 03 72 2f 71 00"))
    rest = without_suback(await read_packets(sub, 2), bytes.fromhex("90 03 00 02 00"))
    assert rest[0].hex(" ") == "31 07 00 03 72 2f 71 68 69"


async def test_wildcard_subscription_receives_every_matching_retained_message(
    make_hub: HubFactory,
) -> None:
    """3.1.1 MQTT-3.3.1-6: the last retained message on *each* matching topic is sent."""
    hub = await start_hub(make_hub)
    for topic in ("rw/a", "rw/b", "rw/a/deep", "other/a"):
        await publish_retained(hub, topic, topic.encode())
    sub = await open_client(hub, "s1")
    await sub.send(subscribe(1, ("rw/+", 0)))
    rest = without_suback(await read_packets(sub, 3), suback(1, 0))
    got = sorted((parse_publish(p).topic, parse_publish(p).payload, p[0]) for p in rest)
    assert got == [("rw/a", b"rw/a", 0x31), ("rw/b", b"rw/b", 0x31)]
    await expect_silence(sub)


async def test_dollar_topic_retained_not_matched_by_leading_wildcards(
    make_hub: HubFactory,
) -> None:
    """MQTT-4.7.2-1: filters starting with '#' or '+' do not match topics starting with '$',
    also for retained messages; a filter starting with '$' does."""
    hub = await start_hub(make_hub)
    await hub.publish(Message("$lab/status", b"up", retain=True))
    await hub.publish(Message("lab/status", b"plain", retain=True))

    hash_sub = await open_client(hub, "hash")
    await hash_sub.send(subscribe(1, ("#", 0)))
    rest = without_suback(await read_packets(hash_sub, 2), suback(1, 0))
    check_publish(rest[0], "lab/status", b"plain", retain=True)
    await expect_silence(hash_sub)

    plus_sub = await open_client(hub, "plus")
    await plus_sub.send(subscribe(1, ("+/status", 0)))
    rest = without_suback(await read_packets(plus_sub, 2), suback(1, 0))
    check_publish(rest[0], "lab/status", b"plain", retain=True)
    await expect_silence(plus_sub)

    dollar_sub = await open_client(hub, "dollar")
    await dollar_sub.send(subscribe(1, ("$lab/#", 0)))
    rest = without_suback(await read_packets(dollar_sub, 2), suback(1, 0))
    check_publish(rest[0], "$lab/status", b"up", retain=True)


# --- MQTT 5.0 ------------------------------------------------------------------------------------


async def publish_retained5(hub: Hub, topic: str, payload: bytes, properties: bytes = b"") -> None:
    """Publish a retained QoS 1 message from a short-lived 5.0 client."""
    conn = await open_client(hub, f"retainer5-{topic}", level=5)
    await conn.send(
        publish(topic, payload, qos=1, pid=1, retain=True, level=5, properties=properties)
    )
    await expect_ack5(conn, PUBACK, 1, {0x00, 0x10})
    await leave(conn)


def options(qos: int, *, no_local: bool = False, rap: bool = False, rh: int = 0) -> int:
    """A 5.0 subscription options byte (3.8.3.1)."""
    return qos | (0x04 if no_local else 0) | (0x08 if rap else 0) | (rh << 4)


async def test_v5_retained_sent_with_retain_1_on_subscribe(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.1-5 (stored), MQTT-3.3.1-9 (Retain Handling 0 sends it), 3.3.1.3 (sent with
    RETAIN=1); literal bytes."""
    hub = await start_hub(make_hub)
    await publish_retained5(hub, "r5/a", b"v")
    sub = await open_client(hub, "s5", level=5)
    await sub.send(bytes.fromhex("82 0a 00 01 00 00 04 72 35 2f 61 00"))  # SUBSCRIBE r5/a QoS 0
    rest = without_suback(await read_packets(sub, 2), bytes.fromhex("90 04 00 01 00 00"))
    assert rest[0].hex(" ") == "31 08 00 04 72 35 2f 61 00 76"


async def test_v5_retain_handling_0_sends_on_every_subscribe(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.1-9: Retain Handling 0 sends the retained messages at every SUBSCRIBE, also
    when the subscription already exists."""
    hub = await start_hub(make_hub)
    await publish_retained5(hub, "r5/h0", b"x")
    sub = await open_client(hub, "s5", level=5)
    for pid in (1, 2):
        await sub.send(subscribe(pid, ("r5/h0", options(0, rh=0)), level=5))
        rest = without_suback(await read_packets(sub, 2), suback(pid, 0, level=5))
        check_publish(rest[0], "r5/h0", b"x", retain=True, level=5)


async def test_v5_retain_handling_1_sends_only_for_new_subscription(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.1-10: Retain Handling 1 sends retained messages only if the subscription did
    not exist."""
    hub = await start_hub(make_hub)
    await publish_retained5(hub, "r5/h1", b"x")
    sub = await open_client(hub, "s5", level=5)
    await sub.send(subscribe(1, ("r5/h1", options(0, rh=1)), level=5))
    rest = without_suback(await read_packets(sub, 2), suback(1, 0, level=5))
    check_publish(rest[0], "r5/h1", b"x", retain=True, level=5)
    await subscribe_ok(sub, 2, ("r5/h1", options(0, rh=1)), level=5)
    await expect_silence(sub)


async def test_v5_retain_handling_2_never_sends(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.1-11: Retain Handling 2 does not send retained messages."""
    hub = await start_hub(make_hub)
    await publish_retained5(hub, "r5/h2", b"x")
    sub = await open_client(hub, "s5", level=5)
    await subscribe_ok(sub, 1, ("r5/h2", options(1, rh=2)), level=5)
    await expect_silence(sub)


@pytest.mark.parametrize("rap", [False, True])
async def test_v5_retain_as_published(make_hub: HubFactory, rap: bool) -> None:
    """5.0 MQTT-3.3.1-12 (Retain As Published 0: RETAIN forwarded as 0) and MQTT-3.3.1-13
    (Retain As Published 1: RETAIN forwarded as received)."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s5", level=5)
    await subscribe_ok(sub, 1, ("r5/rap", options(0, rap=rap)), level=5)
    pub = await open_client(hub, "p5", level=5)
    await pub.send(publish("r5/rap", b"1", retain=True, level=5))
    await pub.send(publish("r5/rap", b"2", retain=False, level=5))
    await expect_publish(sub, "r5/rap", b"1", retain=rap, level=5)
    await expect_publish(sub, "r5/rap", b"2", retain=False, level=5)


async def test_v5_retained_on_subscribe_has_retain_1_even_without_retain_as_published(
    make_hub: HubFactory,
) -> None:
    """5.0 3.3.1.3: retained messages sent for a new subscription carry RETAIN=1; Retain As
    Published only concerns forwarding of live messages (MQTT-3.3.1-12)."""
    hub = await start_hub(make_hub)
    await publish_retained5(hub, "r5/norap", b"x")
    sub = await open_client(hub, "s5", level=5)
    await sub.send(subscribe(1, ("r5/norap", options(1, rap=False)), level=5))
    rest = without_suback(await read_packets(sub, 2), suback(1, 1, level=5))
    pid = check_publish(rest[0], "r5/norap", b"x", qos=1, retain=True, level=5)
    await sub.send(ack(PUBACK, pid))


async def test_v5_zero_byte_retained_clears(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.1-6, MQTT-3.3.1-7: an empty retained payload removes the retained message
    and is not stored."""
    hub = await start_hub(make_hub)
    await publish_retained5(hub, "r5/clr", b"x")
    await publish_retained5(hub, "r5/clr", b"")
    sub = await open_client(hub, "s5", level=5)
    await subscribe_ok(sub, 1, ("r5/clr", 1), level=5)
    await expect_silence(sub)


async def test_v5_retained_message_keeps_its_properties(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.3.2-4 / MQTT-3.3.2-17 / MQTT-3.3.2-20: payload format indicator, content type
    and user properties travel unaltered, also with a retained copy."""
    hub = await start_hub(make_hub)
    stored = prop(0x01, 1) + prop(0x03, "text/plain") + prop(0x26, ("k", "v"))
    await publish_retained5(hub, "r5/props", b"txt", stored)
    sub = await open_client(hub, "s5", level=5)
    await sub.send(subscribe(1, ("r5/props", 0), level=5))
    rest = without_suback(await read_packets(sub, 2), suback(1, 0, level=5))
    got = parse_publish(rest[0], level=5)
    assert (got.topic, got.payload, got.retain) == ("r5/props", b"txt", True)
    assert sorted(got.properties, key=repr) == sorted(parse_props(stored), key=repr)


async def test_v5_expired_retained_message_not_sent(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.3.2-5: once the Message Expiry Interval has passed the retained message is not
    delivered any more; MQTT-3.3.2-6: a retained copy still valid carries the remaining
    interval."""
    hub = await start_hub(make_hub, clock=clock)
    await publish_retained5(hub, "r5/exp/short", b"short", prop(0x02, 1))
    await publish_retained5(hub, "r5/exp/long", b"long", prop(0x02, 30))
    await clock.advance_async(1.3)  # let the 1 s expiry interval pass
    sub = await open_client(hub, "s5", level=5)
    await sub.send(subscribe(1, ("r5/exp/+", 1), level=5))
    rest = without_suback(await read_packets(sub, 2), suback(1, 1, level=5))
    got = parse_publish(rest[0], level=5)
    assert (got.topic, got.payload, got.qos, got.retain) == ("r5/exp/long", b"long", 1, True)
    assert got.properties == [(0x02, 29)]
    await sub.send(ack(PUBACK, got.pid))
    await expect_silence(sub)


async def test_v5_retained_copy_carries_subscription_identifier(make_hub: HubFactory) -> None:
    """5.0 3.8.2.1.2 with MQTT-3.3.4-3: a retained message sent because of a SUBSCRIBE with a
    Subscription Identifier carries that identifier; literal bytes."""
    hub = await start_hub(make_hub)
    await publish_retained5(hub, "r5/id", b"v")
    sub = await open_client(hub, "s5", level=5)
    # SUBSCRIBE id 1, Subscription Identifier 9, "r5/id" QoS 0
    await sub.send(bytes.fromhex("82 0d 00 01 02 0b 09 00 05 72 35 2f 69 64 00"))
    rest = without_suback(await read_packets(sub, 2), bytes.fromhex("90 04 00 01 00 00"))
    assert rest[0].hex(" ") == "31 0b 00 05 72 35 2f 69 64 02 0b 09 76"
