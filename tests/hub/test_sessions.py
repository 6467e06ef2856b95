"""Sessions: clean/persistent sessions, session present, offline queues, in-flight redelivery,
session expiry and client-id takeover, as byte-exact conversations over the in-memory transport.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from _wire import (
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    QUIET,
    HubFactory,
    ack,
    expect,
    expect_ack5,
    expect_closed,
    expect_disconnect5,
    expect_publish,
    expect_silence,
    leave,
    open_client,
    parse_publish,
    prop,
    publish,
    read_packet,
    start_hub,
    subscribe_ok,
    sync,
    unsubscribe,
)

from enos_lab.clock import SimulatedClock
from enos_lab.hub import Hub, MemoryConnection

pytestmark = pytest.mark.anyio


async def persistent(
    hub: Hub, client_id: str, *, session_present: bool = False, **kwargs: Any
) -> MemoryConnection:
    """A 3.1.1 client with CleanSession 0."""
    return await open_client(hub, client_id, clean=False, session_present=session_present, **kwargs)


async def send_qos1(hub: Hub, topic: str, *payloads: bytes) -> None:
    """Publish QoS 1 messages from a short-lived client, each acknowledged."""
    pub = await open_client(hub, f"pub-{topic}")
    for pid, payload in enumerate(payloads, start=1):
        await pub.send(publish(topic, payload, qos=1, pid=pid))
        await expect(pub, ack(PUBACK, pid))
    await leave(pub)


# --- MQTT 3.1.1 ----------------------------------------------------------------------------------


async def test_clean_session_gets_session_present_0(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.2.2-1: CleanSession 1 is answered with Session Present 0; literal bytes."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(bytes.fromhex("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31"))
    await expect(conn, bytes.fromhex("20 02 00 00"))


async def test_persistent_session_session_present(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.2.2-3 (no stored session: Session Present 0) and MQTT-3.2.2-2 (stored session
    resumed: Session Present 1); literal bytes."""
    hub = await start_hub(make_hub)
    persistent_connect = bytes.fromhex("10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 63 32")
    conn = await hub.connect_memory()
    await conn.send(persistent_connect)
    await expect(conn, bytes.fromhex("20 02 00 00"))
    await leave(conn)
    conn = await hub.connect_memory()
    await conn.send(persistent_connect)
    await expect(conn, bytes.fromhex("20 02 01 00"))


async def test_subscriptions_survive_reconnect(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-4: a CleanSession 0 client resumes with the subscriptions of its
    session."""
    hub = await start_hub(make_hub)
    sub = await persistent(hub, "keeper")
    await subscribe_ok(sub, 1, ("s/keep", 0))
    await leave(sub)
    sub = await persistent(hub, "keeper", session_present=True)
    pub = await open_client(hub, "p1")
    await pub.send(bytes.fromhex("30 09 00 06 73 2f 6b 65 65 70 21"))  # "s/keep" "!"
    await expect(sub, bytes.fromhex("30 09 00 06 73 2f 6b 65 65 70 21"))


async def test_clean_session_discards_stored_session(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-6: CleanSession 1 discards the previous session (Session Present 0, no
    subscriptions) and its own session is not kept after it ends."""
    hub = await start_hub(make_hub)
    sub = await persistent(hub, "cleaner")
    await subscribe_ok(sub, 1, ("s/clean", 1))
    await leave(sub)
    sub = await open_client(hub, "cleaner", clean=True, session_present=False)
    pub = await open_client(hub, "p1")
    await pub.send(publish("s/clean", b"x"))
    await sync(pub)
    await expect_silence(sub)
    await leave(sub)
    await persistent(hub, "cleaner", session_present=False)


async def test_qos1_messages_queued_while_offline_delivered_on_reconnect(
    make_hub: HubFactory,
) -> None:
    """3.1.1 MQTT-3.1.2-5: QoS 1 messages arriving for a disconnected CleanSession 0 session are
    stored and delivered on reconnect, in order (MQTT-4.6.0-6), each with its own packet id
    (MQTT-2.3.1-2)."""
    hub = await start_hub(make_hub)
    sub = await persistent(hub, "offline")
    await subscribe_ok(sub, 1, ("s/q", 1))
    await leave(sub)
    await send_qos1(hub, "s/q", b"m1", b"m2", b"m3")
    sub = await persistent(hub, "offline", session_present=True)
    pids = [await expect_publish(sub, "s/q", m, qos=1) for m in (b"m1", b"m2", b"m3")]
    assert len(set(pids)) == 3
    for pid in pids:
        await sub.send(ack(PUBACK, pid))
    await sync(sub)


async def test_unacknowledged_qos1_resent_with_dup_on_reconnect(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.4.0-1: an unacknowledged QoS 1 PUBLISH is re-sent on reconnect with its
    original packet id and DUP=1 (MQTT-3.3.1-1); once acknowledged it is not sent again."""
    hub = await start_hub(make_hub)
    sub = await persistent(hub, "dup1")
    await subscribe_ok(sub, 1, ("s/dup", 1))
    await send_qos1(hub, "s/dup", b"once")
    pid = await expect_publish(sub, "s/dup", b"once", qos=1)
    sub.close()  # no PUBACK
    await sub.wait_closed()
    sub = await persistent(hub, "dup1", session_present=True)
    await expect_publish(sub, "s/dup", b"once", qos=1, dup=True, pid=pid)
    await sub.send(ack(PUBACK, pid))
    await sync(sub)
    await leave(sub)
    sub = await persistent(hub, "dup1", session_present=True)
    await expect_silence(sub)


async def test_unacknowledged_qos1_resend_literal_bytes(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.4.0-1 and MQTT-3.3.1-1, literal bytes: first copy 0x32, re-sent copy 0x3a."""
    hub = await start_hub(make_hub)
    sub = await persistent(hub, "dup2")
    await sub.send(bytes.fromhex("82 08 00 01 00 03 73 2f 64 01"))
    await expect(sub, bytes.fromhex("90 03 00 01 01"))
    await send_qos1(hub, "s/d", b"z")
    first = await read_packet(sub)
    pid = first[7:9]
    assert first.hex(" ") == "32 08 00 03 73 2f 64 " + pid.hex(" ") + " 7a"
    sub.close()
    await sub.wait_closed()
    sub = await persistent(hub, "dup2", session_present=True)
    await expect(sub, bytes.fromhex("3a 08 00 03 73 2f 64") + pid + b"z")
    await sub.send(b"\x40\x02" + pid)
    await sync(sub)


async def test_unacknowledged_pubrel_resent_on_reconnect(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.4.0-1: after PUBREC the hub owes PUBREL; on reconnect it re-sends the PUBREL
    (not the PUBLISH) with the original packet id."""
    hub = await start_hub(make_hub)
    sub = await persistent(hub, "rel")
    await subscribe_ok(sub, 1, ("s/two", 2))
    pub = await open_client(hub, "p2")
    await pub.send(publish("s/two", b"2", qos=2, pid=3))
    await expect(pub, ack(PUBREC, 3))
    await pub.send(ack(PUBREL, 3))
    await expect(pub, ack(PUBCOMP, 3))
    pid = await expect_publish(sub, "s/two", b"2", qos=2)
    await sub.send(ack(PUBREC, pid))
    await expect(sub, ack(PUBREL, pid))
    sub.close()  # no PUBCOMP
    await sub.wait_closed()
    sub = await persistent(hub, "rel", session_present=True)
    await expect(sub, ack(PUBREL, pid))
    await sub.send(ack(PUBCOMP, pid))
    await expect_silence(sub)


async def test_inbound_qos2_duplicate_not_delivered_twice(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.3.3-2: until PUBREL, a re-sent QoS 2 PUBLISH with the same packet id is
    answered with PUBREC again and not delivered onward a second time."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s1")
    await subscribe_ok(sub, 1, ("s/exactly", 2))
    pub = await open_client(hub, "p1")
    await pub.send(publish("s/exactly", b"1", qos=2, pid=5))
    await expect(pub, bytes.fromhex("50 02 00 05"))
    await pub.send(publish("s/exactly", b"1", qos=2, pid=5, dup=True))
    await expect(pub, bytes.fromhex("50 02 00 05"))
    await pub.send(bytes.fromhex("62 02 00 05"))
    await expect(pub, bytes.fromhex("70 02 00 05"))
    pid = await expect_publish(sub, "s/exactly", b"1", qos=2)
    await sub.send(ack(PUBREC, pid))
    await expect(sub, ack(PUBREL, pid))
    await sub.send(ack(PUBCOMP, pid))
    await expect_silence(sub)


async def test_inbound_qos2_completed_after_reconnect(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.4.0-1 (client side): a publisher that got PUBREC reconnects with CleanSession
    0 and re-sends PUBREL; the hub completes with PUBCOMP and delivers exactly once."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s1")
    await subscribe_ok(sub, 1, ("s/resume", 1))
    pub = await persistent(hub, "pubres")
    await pub.send(publish("s/resume", b"r", qos=2, pid=9))
    await expect(pub, ack(PUBREC, 9))
    pub.close()
    await pub.wait_closed()
    pub = await persistent(hub, "pubres", session_present=True)
    await pub.send(ack(PUBREL, 9))
    await expect(pub, ack(PUBCOMP, 9))
    pid = await expect_publish(sub, "s/resume", b"r", qos=1)
    await sub.send(ack(PUBACK, pid))
    await expect_silence(sub)


async def test_empty_client_id_with_clean_session_accepted(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.3-6: a zero-length client id with CleanSession 1 is accepted."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(bytes.fromhex("10 0c 00 04 4d 51 54 54 04 02 00 3c 00 00"))
    await expect(conn, bytes.fromhex("20 02 00 00"))
    await sync(conn)


async def test_empty_client_id_without_clean_session_rejected(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.3-8: a zero-length client id with CleanSession 0 gets CONNACK return code
    0x02 (identifier rejected) and the connection is closed (MQTT-3.2.2-5)."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(bytes.fromhex("10 0c 00 04 4d 51 54 54 04 00 00 3c 00 00"))
    await expect(conn, bytes.fromhex("20 02 00 02"))
    await expect_closed(conn)


async def test_unsubscribe_stops_delivery(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.10.4-1, MQTT-3.10.4-4: UNSUBSCRIBE deletes the subscription and is answered by
    UNSUBACK with the same packet id; later messages are not delivered."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s1")
    await subscribe_ok(sub, 1, ("s/u", 0), ("s/stay", 0))
    await sub.send(bytes.fromhex("a2 07 00 02 00 03 73 2f 75"))  # UNSUBSCRIBE "s/u"
    await expect(sub, bytes.fromhex("b0 02 00 02"))
    pub = await open_client(hub, "p1")
    await pub.send(publish("s/u", b"gone"))
    await pub.send(publish("s/stay", b"here"))
    await expect_publish(sub, "s/stay", b"here")
    await expect_silence(sub)


async def test_takeover_closes_existing_connection(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.4-2: a second connection with the same client id makes the server close
    the first (no bytes are sent to it in 3.1.1); the new client is accepted."""
    hub = await start_hub(make_hub)
    old = await open_client(hub, "twin")
    new = await open_client(hub, "twin")
    await expect_closed(old)
    await sync(new)
    assert "twin" in hub.clients


async def test_takeover_resumes_persistent_session(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.4-2 with MQTT-3.1.2-4: taking over a CleanSession 0 connection resumes its
    session (Session Present 1, same subscriptions)."""
    hub = await start_hub(make_hub)
    old = await persistent(hub, "twin2")
    await subscribe_ok(old, 1, ("s/twin", 0))
    new = await persistent(hub, "twin2", session_present=True)
    await expect_closed(old)
    pub = await open_client(hub, "p1")
    await pub.send(publish("s/twin", b"t"))
    await expect_publish(new, "s/twin", b"t")


# --- MQTT 5.0 ------------------------------------------------------------------------------------


def session_expiry(seconds: int) -> bytes:
    return prop(0x11, seconds)


async def test_v5_session_expiry_absent_ends_session_with_connection(
    make_hub: HubFactory,
) -> None:
    """5.0 3.1.2.11.2: an absent Session Expiry Interval means 0: the session ends when the
    connection closes, so Clean Start 0 later finds none (MQTT-3.2.2-3 in 5.0: Session Present 0
    when no session)."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "e0", level=5, clean=False)
    await subscribe_ok(sub, 1, ("s5/e0", 1), level=5)
    await leave(sub)
    sub = await open_client(hub, "e0", level=5, clean=False, session_present=False)
    await send_qos1(hub, "s5/e0", b"x")
    await expect_silence(sub)


async def test_v5_short_session_expiry(make_hub: HubFactory, clock: SimulatedClock) -> None:
    """5.0 3.1.2.11.2 and MQTT-3.2.2-2: a session with Session Expiry 1 s is resumed (with its
    queued messages) within the interval and gone after it (simulated clock)."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await open_client(hub, "e1", level=5, clean=False, properties=session_expiry(1))
    await subscribe_ok(sub, 1, ("s5/e1", 1), level=5)
    await leave(sub)
    await send_qos1(hub, "s5/e1", b"kept")
    sub = await open_client(
        hub, "e1", level=5, clean=False, session_present=True, properties=session_expiry(1)
    )
    pid = await expect_publish(sub, "s5/e1", b"kept", qos=1, level=5)
    await sub.send(ack(PUBACK, pid))
    await leave(sub)
    await clock.advance_async(0.5)
    assert hub.stats.sessions == 1
    await clock.advance_async(0.5)  # the 1 s session expiry has passed
    await open_client(hub, "e1", level=5, clean=False, session_present=False)


async def test_v5_disconnect_sets_session_expiry_to_zero(make_hub: HubFactory) -> None:
    """5.0 3.14.2.2.2: the Session Expiry Interval of DISCONNECT replaces the CONNECT value; 0
    ends the session now."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "e2", level=5, clean=False, properties=session_expiry(60))
    await subscribe_ok(sub, 1, ("s5/e2", 1), level=5)
    await leave(sub, bytes.fromhex("e0 07 00 05 11 00 00 00 00"))
    await open_client(hub, "e2", level=5, clean=False, session_present=False)


async def test_v5_disconnect_extends_session_expiry(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 3.14.2.2.2: a DISCONNECT may raise a non-zero Session Expiry Interval; the session then
    outlives the interval given in CONNECT."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await open_client(hub, "e3", level=5, clean=False, properties=session_expiry(1))
    await subscribe_ok(sub, 1, ("s5/e3", 1), level=5)
    await leave(sub, bytes.fromhex("e0 07 00 05 11 00 00 00 3c"))  # 60 s
    await clock.advance_async(59.5)
    await open_client(hub, "e3", level=5, clean=False, session_present=True)


async def test_v5_disconnect_nonzero_expiry_after_zero_is_protocol_error(
    make_hub: HubFactory,
) -> None:
    """5.0 3.14.2.2.2: a non-zero Session Expiry in DISCONNECT after 0 in CONNECT is a protocol
    error: the hub answers DISCONNECT 0x82 and, the client's DISCONNECT not being valid,
    publishes the will."""
    hub = await start_hub(make_hub)
    watch = await open_client(hub, "watch")
    await subscribe_ok(watch, 1, ("s5/will", 0))
    conn = await open_client(hub, "e4", level=5, will=("s5/will", b"w", 0, False))
    await conn.send(bytes.fromhex("e0 07 00 05 11 00 00 00 3c"))
    await expect_disconnect5(conn, 0x82)
    await expect_publish(watch, "s5/will", b"w")


async def test_v5_clean_start_discards_session(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.1.2-4: Clean Start 1 discards an existing session (Session Present 0)."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "e5", level=5, clean=False, properties=session_expiry(60))
    await subscribe_ok(sub, 1, ("s5/e5", 0), level=5)
    await leave(sub)
    sub = await open_client(hub, "e5", level=5, clean=True, session_present=False)
    pub = await open_client(hub, "p5")
    await pub.send(publish("s5/e5", b"x"))
    await sync(pub)
    await expect_silence(sub)


async def test_v5_unsubscribe_reason_codes(make_hub: HubFactory) -> None:
    """5.0 3.11.3: UNSUBACK carries 0x00 for a removed subscription and 0x11 (No subscription
    existed) for an unknown filter."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "u5", level=5)
    await subscribe_ok(sub, 1, ("s5/u", 0), level=5)
    await sub.send(unsubscribe(2, "s5/u", "s5/none", level=5))
    await expect(sub, bytes.fromhex("b0 05 00 02 00 00 11"))


async def test_v5_takeover_sends_disconnect_0x8e(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.1.4-3: the existing connection of a taken-over client id gets DISCONNECT 0x8E
    (Session taken over) and is closed."""
    hub = await start_hub(make_hub)
    old = await open_client(hub, "twin5", level=5)
    new = await open_client(hub, "twin5", level=5)
    await expect_disconnect5(old, 0x8E)
    await sync(new)


async def test_v5_takeover_with_clean_start_publishes_old_will(make_hub: HubFactory) -> None:
    """5.0 3.1.4 (CONNECT actions, take-over): the existing client's will is published as in
    3.1.2.5; with Clean Start 1 on the new connection the old session ends, so the will (no
    delay) is published."""
    hub = await start_hub(make_hub)
    watch = await open_client(hub, "watch")
    await subscribe_ok(watch, 1, ("s5/twin", 0))
    old = await open_client(hub, "twin6", level=5, will=("s5/twin", b"old", 0, False))
    await open_client(hub, "twin6", level=5, clean=True)
    await expect_disconnect5(old, 0x8E)
    await expect_publish(watch, "s5/twin", b"old")


async def test_v5_unacknowledged_qos1_resent_with_dup_on_reconnect(make_hub: HubFactory) -> None:
    """5.0 MQTT-4.4.0-1 and MQTT-3.3.1-1: with Clean Start 0 and a session present, an
    unacknowledged QoS 1 PUBLISH is re-sent with its packet id and DUP=1."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "dup5", level=5, clean=False, properties=session_expiry(60))
    await subscribe_ok(sub, 1, ("s5/dup", 1), level=5)
    await send_qos1(hub, "s5/dup", b"again")
    pid = await expect_publish(sub, "s5/dup", b"again", qos=1, level=5)
    sub.close()
    await sub.wait_closed()
    sub = await open_client(
        hub, "dup5", level=5, clean=False, session_present=True, properties=session_expiry(60)
    )
    await expect_publish(sub, "s5/dup", b"again", qos=1, dup=True, pid=pid, level=5)
    await sub.send(ack(PUBACK, pid))
    await expect_silence(sub)


async def test_max_inflight_limits_unacknowledged_messages(make_hub: HubFactory) -> None:
    """HubConfig.max_inflight (MQTT 4.9 flow control): at most 2 QoS 1 messages await PUBACK
    from a 3.1.1 client; the rest follow as acknowledgements arrive, in order (MQTT-4.6.0-6)."""
    hub = await start_hub(make_hub, max_inflight=2)
    sub = await open_client(hub, "win")
    await subscribe_ok(sub, 1, ("s/win", 1))
    await send_qos1(hub, "s/win", b"1", b"2", b"3", b"4")
    first = await expect_publish(sub, "s/win", b"1", qos=1)
    second = await expect_publish(sub, "s/win", b"2", qos=1)
    await expect_silence(sub)
    await sub.send(ack(PUBACK, first))
    third = await expect_publish(sub, "s/win", b"3", qos=1)
    await sub.send(ack(PUBACK, second))
    fourth = await expect_publish(sub, "s/win", b"4", qos=1)
    for pid in (third, fourth):
        await sub.send(ack(PUBACK, pid))
    await expect_silence(sub)


async def test_incoming_dup_flag_not_propagated(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.3.1-3: the DUP flag of an incoming PUBLISH is not propagated; the first
    delivery to a subscriber has DUP=0."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "s1")
    await subscribe_ok(sub, 1, ("s/dupin", 1))
    pub = await open_client(hub, "p1")
    await pub.send(publish("s/dupin", b"d", qos=1, pid=6, dup=True))
    await expect(pub, ack(PUBACK, 6))
    pid = await expect_publish(sub, "s/dupin", b"d", qos=1, dup=False)
    await sub.send(ack(PUBACK, pid))


async def test_pubrel_for_unknown_packet_id_gets_pubcomp(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.3.3-2 (the receiver responds to PUBREL with PUBCOMP carrying the same
    packet id) also for an id it holds no state for; literal bytes."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "rel-unknown")
    await conn.send(bytes.fromhex("62 02 00 2a"))
    await expect(conn, bytes.fromhex("70 02 00 2a"))


async def test_v5_pubrel_for_unknown_packet_id_gets_0x92(make_hub: HubFactory) -> None:
    """5.0 3.7.2.1: PUBCOMP answers a PUBREL for an unknown packet id with reason 0x92 (Packet
    Identifier not found)."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "rel-unknown5", level=5)
    await conn.send(bytes.fromhex("62 02 00 2a"))
    await expect_ack5(conn, PUBCOMP, 0x2A, 0x92)


async def test_resubscribe_replaces_subscription(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.8.4-3: a SUBSCRIBE with an existing filter replaces that subscription (new
    QoS, no duplicate copies)."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "re")
    await subscribe_ok(sub, 1, ("s/re", 1))
    await subscribe_ok(sub, 2, ("s/re", 0))
    pub = await open_client(hub, "p1")
    await pub.send(publish("s/re", b"once", qos=1, pid=1))
    await expect(pub, ack(PUBACK, 1))
    await expect_publish(sub, "s/re", b"once", qos=0)
    await expect_silence(sub)


async def test_overlapping_subscriptions_respect_maximum_qos(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.3.5-1: with overlapping subscriptions (QoS 0 and QoS 1) the message is
    delivered respecting the maximum QoS of the matching subscriptions (one copy at QoS 1, or
    one per subscription)."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "over")
    await subscribe_ok(sub, 1, ("s/ov/+", 0), ("s/ov/#", 1))
    pub = await open_client(hub, "p1")
    await pub.send(publish("s/ov/x", b"o", qos=1, pid=1))
    await expect(pub, ack(PUBACK, 1))
    copies = [parse_publish(await read_packet(sub))]
    with contextlib.suppress(TimeoutError):
        copies.append(parse_publish(await read_packet(sub, QUIET)))
    assert {(c.topic, c.payload) for c in copies} == {("s/ov/x", b"o")}
    assert max(c.qos for c in copies) == 1
    for c in copies:
        if c.qos:
            await sub.send(ack(PUBACK, c.pid))
    await expect_silence(sub)


async def test_unsubscribe_unknown_filter_still_acknowledged(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.10.4-5: UNSUBACK is sent even if no filter matched; literal bytes."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "un")
    await conn.send(bytes.fromhex("a2 08 00 09 00 04 6e 6f 6e 65"))  # UNSUBSCRIBE "none"
    await expect(conn, bytes.fromhex("b0 02 00 09"))


async def test_hub_stop_ends_connections(make_hub: HubFactory) -> None:
    """Hub.stop(): 5.0 clients get DISCONNECT 0x8B (Server shutting down, 5.0 4.13) before the
    close, 3.1.1 clients are closed silently."""
    hub = await start_hub(make_hub)
    old = await open_client(hub, "stop4")
    new = await open_client(hub, "stop5", level=5)
    await hub.stop()
    await expect_closed(old)
    await expect_disconnect5(new, 0x8B)


async def test_many_qos1_messages_delivered_in_order(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.6.0-6 with flow control: 300 QoS 1 messages (more than the default in-flight
    window) all arrive once, in publishing order, as the subscriber acknowledges them."""
    hub = await start_hub(make_hub)
    sub = await open_client(hub, "bulk-sub")
    await subscribe_ok(sub, 1, ("s/bulk", 1))
    pub = await open_client(hub, "bulk-pub")
    payloads = [f"{i:03d}".encode() for i in range(300)]
    for pid, payload in enumerate(payloads, start=1):
        await pub.send(publish("s/bulk", payload, qos=1, pid=pid))
    for pid in range(1, 301):
        await expect(pub, ack(PUBACK, pid))
    for payload in payloads:
        pid = await expect_publish(sub, "s/bulk", payload, qos=1)
        await sub.send(ack(PUBACK, pid))
    await expect_silence(sub)


async def test_offline_queue_is_bounded(make_hub: HubFactory) -> None:
    """HubConfig.max_queued_messages bounds a session's queue: with a bound of 3, five messages
    for an offline session leave at most three to deliver (in order), and the drop is counted in
    Hub.stats.dropped."""
    hub = await start_hub(make_hub, max_queued_messages=3)
    sub = await persistent(hub, "bounded")
    await subscribe_ok(sub, 1, ("s/bound", 1))
    await leave(sub)
    sent = [b"1", b"2", b"3", b"4", b"5"]
    await send_qos1(hub, "s/bound", *sent)
    sub = await persistent(hub, "bounded", session_present=True)
    got = []
    while True:
        try:
            raw = await read_packet(sub, QUIET)
        except TimeoutError:
            break
        message = parse_publish(raw)
        got.append(message.payload)
        await sub.send(ack(PUBACK, message.pid))
    assert len(got) == 3
    assert got == sorted(got)
    assert set(got) <= set(sent)
    assert hub.stats.dropped >= 2
