"""Will messages: byte-exact conversations over the in-memory transport.

A subscriber watches the will topic while the will's owner goes away in the different ways the
specifications list (3.1.1 3.1.2.5, 5.0 3.1.2.5 and 3.1.3.2.2). Timed cases (keep alive, will
delay, session expiry) run the hub on a simulated clock and step it.
"""

from __future__ import annotations

import pytest
from _wire import (
    PUBACK,
    HubFactory,
    ack,
    check_publish,
    connect,
    drop,
    expect,
    expect_closed,
    expect_disconnect5,
    expect_publish,
    expect_silence,
    leave,
    open_client,
    parse_publish,
    prop,
    read_packet,
    read_packets,
    start_hub,
    suback,
    subscribe,
    subscribe_ok,
    sync,
    watcher,
    without_suback,
)

from enos_lab.clock import SimulatedClock

pytestmark = pytest.mark.anyio


async def test_will_published_when_network_connection_closes(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-8: the will is published when the network connection closes without a
    DISCONNECT; literal bytes."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w/t1")
    owner = await hub.connect_memory()
    # CONNECT "w1", clean session, will QoS 0 "w/t1" = "gone"
    await owner.send(
        bytes.fromhex("10 1a 00 04 4d 51 54 54 04 06 00 3c 00 02 77 31 00 04 77 2f 74 31 00 04")
        + b"gone"
    )
    await expect(owner, bytes.fromhex("20 02 00 00"))
    owner.close()
    await expect(sub, bytes.fromhex("30 0a 00 04 77 2f 74 31 67 6f 6e 65"))


async def test_will_not_published_after_disconnect(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-10, MQTT-3.14.4-3: a DISCONNECT discards the will."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w/t2")
    owner = await open_client(hub, "w2", will=("w/t2", b"gone", 0, False))
    await leave(owner, bytes.fromhex("e0 00"))
    await expect_silence(sub, 0.5)


async def test_will_published_on_keep_alive_timeout(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """3.1.1 MQTT-3.1.2-24 with MQTT-3.1.2-8: the hub closes a silent connection after 1.5 keep
    alive periods and, the close not being a DISCONNECT, publishes the will."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await watcher(hub, "w/t3")
    owner = await open_client(hub, "w3", keep_alive=1, will=("w/t3", b"timeout", 0, False))
    await clock.advance_async(2)
    await expect_closed(owner)
    await expect_publish(sub, "w/t3", b"timeout")


async def test_will_published_after_protocol_error(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-4.8.0-1 with 3.1.2.5: a protocol violation closes the connection and the will
    is published."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w/t4")
    owner = await open_client(hub, "w4", will=("w/t4", b"broken", 0, False))
    await owner.send(b"\x00\x00")  # packet type 0 is reserved
    await expect_closed(owner)
    await expect_publish(sub, "w/t4", b"broken")


async def test_will_published_when_kicked(make_hub: HubFactory) -> None:
    """3.1.1 3.1.2.5: the server closing the connection (here an administrative kick) without a
    DISCONNECT from the client publishes the will."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w/kick")
    owner = await open_client(hub, "wk", will=("w/kick", b"kicked", 0, False))
    assert await hub.disconnect_client("wk") is True
    await expect_closed(owner)
    await expect_publish(sub, "w/kick", b"kicked")


async def test_will_retain_1_publishes_retained_message(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-17: with Will Retain 1 the will is published as a retained message
    (existing subscribers see RETAIN=0, MQTT-3.3.1-9; new ones RETAIN=1, MQTT-3.3.1-8)."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w/ret")
    owner = await open_client(hub, "wr", will=("w/ret", b"offline", 1, True))
    owner.close()
    await expect_publish(sub, "w/ret", b"offline")
    late = await open_client(hub, "late")
    await late.send(subscribe(1, ("w/ret", 1)))
    rest = without_suback(await read_packets(late, 2), suback(1, 1))
    pid = check_publish(rest[0], "w/ret", b"offline", qos=1, retain=True)
    await late.send(ack(PUBACK, pid))


async def test_will_retain_0_is_not_retained(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-16: with Will Retain 0 the will is published as a non-retained message."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w/nr")
    owner = await open_client(hub, "wn", will=("w/nr", b"offline", 0, False))
    owner.close()
    await expect_publish(sub, "w/nr", b"offline")
    late = await open_client(hub, "late")
    await subscribe_ok(late, 1, ("w/nr", 0))
    await expect_silence(late)


@pytest.mark.parametrize(("will_qos", "sub_qos", "delivered"), [(1, 1, 1), (2, 1, 1), (1, 0, 0)])
async def test_will_qos(make_hub: HubFactory, will_qos: int, sub_qos: int, delivered: int) -> None:
    """3.1.1 MQTT-3.1.2-14 (Will QoS 0..2) with MQTT-3.8.4-6 (delivered at the minimum of the will
    QoS and the granted QoS)."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w/qos", qos=sub_qos)
    owner = await open_client(hub, "wq", will=("w/qos", b"q", will_qos, False))
    owner.close()
    pid = await expect_publish(sub, "w/qos", b"q", qos=delivered)
    if delivered:
        await sub.send(ack(PUBACK, pid))
        await sync(sub)


def test_will_connect_literal_matches_kit() -> None:
    """Guard for this file's byte kit: it encodes the literal CONNECT used above."""
    literal = bytes.fromhex(
        "10 1a 00 04 4d 51 54 54 04 06 00 3c 00 02 77 31 00 04 77 2f 74 31 00 04 67 6f 6e 65"
    )
    assert connect("w1", will=("w/t1", b"gone", 0, False)) == literal


# --- MQTT 5.0 ------------------------------------------------------------------------------------


async def test_v5_disconnect_with_will_message_publishes_will(make_hub: HubFactory) -> None:
    """5.0 3.14.2.1: DISCONNECT with reason 0x04 (Disconnect with Will Message) ends the
    connection normally but publishes the will."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w5/a")
    owner = await open_client(hub, "w5a", level=5, will=("w5/a", b"bye", 0, False))
    await leave(owner, bytes.fromhex("e0 01 04"))
    await expect(sub, bytes.fromhex("30 09 00 04 77 35 2f 61 62 79 65"))


@pytest.mark.parametrize("packet", ["e0 00", "e0 01 00", "e0 02 00 00"])
async def test_v5_normal_disconnect_discards_will(make_hub: HubFactory, packet: str) -> None:
    """5.0 MQTT-3.14.4-3: DISCONNECT with reason 0x00 (also written in its short forms) discards
    the will without publishing it."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w5/b")
    owner = await open_client(hub, "w5b", level=5, will=("w5/b", b"bye", 0, False))
    await leave(owner, bytes.fromhex(packet))
    await expect_silence(sub, 0.5)


async def test_v5_will_delay_interval_delays_publication(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 3.1.3.2.2: the will is published once the Will Delay Interval has passed (the session
    outlives it), not before."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await watcher(hub, "w5/delay")
    owner = await open_client(
        hub,
        "w5d",
        level=5,
        clean=False,
        properties=prop(0x11, 30),  # session expiry 30 s
        will=("w5/delay", b"late", 0, False),
        will_properties=prop(0x18, 1),  # will delay 1 s
    )
    await drop(owner)
    await clock.advance_async(0.5)
    await sync(sub)  # nothing yet
    await clock.advance_async(0.5)
    await expect_publish(sub, "w5/delay", b"late")


async def test_v5_will_cancelled_by_reconnect_within_delay(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.1.3-9: a new connection to the session before the Will Delay Interval has
    passed cancels the will."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await watcher(hub, "w5/cancel")
    owner = await open_client(
        hub,
        "w5c",
        level=5,
        clean=False,
        properties=prop(0x11, 30),
        will=("w5/cancel", b"late", 0, False),
        will_properties=prop(0x18, 1),
    )
    owner.close()
    await owner.wait_closed()
    again = await open_client(
        hub, "w5c", level=5, clean=False, session_present=True, properties=prop(0x11, 30)
    )
    await clock.advance_async(60)
    await sync(sub)  # no will
    await leave(again, bytes.fromhex("e0 01 00"))


async def test_v5_will_published_when_session_ends_before_delay(make_hub: HubFactory) -> None:
    """5.0 3.1.3.2.2: the will is published when the delay passes *or the session ends*,
    whichever is first; with Session Expiry 0 the session ends with the connection."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w5/end")
    owner = await open_client(
        hub,
        "w5e",
        level=5,
        will=("w5/end", b"now", 0, False),
        will_properties=prop(0x18, 60),
    )
    owner.close()
    await expect_publish(sub, "w5/end", b"now")


async def test_v5_will_properties_forwarded(make_hub: HubFactory) -> None:
    """5.0 3.1.3.2 and MQTT-3.1.3-10: will properties (payload format, content type, response
    topic, correlation data, user properties in order) travel with the will; the Will Delay
    Interval is not a PUBLISH property and is not forwarded."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w5/props", level=5)
    forwarded = (
        prop(0x01, 1)
        + prop(0x03, "text/plain")
        + prop(0x08, "w5/reply")
        + prop(0x09, b"\x01\x02")
        + prop(0x26, ("b", "2"))
        + prop(0x26, ("a", "1"))
    )
    owner = await open_client(
        hub,
        "w5p",
        level=5,
        will=("w5/props", b"txt", 0, False),
        will_properties=forwarded + prop(0x18, 0),
    )
    owner.close()
    got = parse_publish(await read_packet(sub), level=5)
    assert (got.topic, got.payload, got.qos, got.retain) == ("w5/props", b"txt", 0, False)
    users = [value for key, value in got.properties if key == 0x26]
    assert users == [("b", "2"), ("a", "1")]  # MQTT-3.1.3-10: order kept
    others = sorted((key, value) for key, value in got.properties if key != 0x26)
    assert others == [(0x01, 1), (0x03, "text/plain"), (0x08, "w5/reply"), (0x09, b"\x01\x02")]


async def test_v5_will_published_after_protocol_error_with_disconnect(
    make_hub: HubFactory,
) -> None:
    """5.0 3.1.2.5: the hub ends the connection for a protocol error (DISCONNECT 0x81 here, a
    PUBLISH with QoS 3) and publishes the will."""
    hub = await start_hub(make_hub)
    sub = await watcher(hub, "w5/err")
    owner = await open_client(hub, "w5x", level=5, will=("w5/err", b"x", 0, False))
    await owner.send(bytes.fromhex("36 05 00 01 74 00 01"))  # QoS 3 is malformed, MQTT-3.3.1-4
    await expect_disconnect5(owner, 0x81)
    await expect_publish(sub, "w5/err", b"x")


async def test_v5_will_published_when_session_expires_before_delay(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 3.1.3.2.2: Session Expiry 1 s and Will Delay 60 s: the session ends first and the will
    is published then (after 1 s, not 60 s)."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await watcher(hub, "w5/expire")
    owner = await open_client(
        hub,
        "w5s",
        level=5,
        clean=False,
        properties=prop(0x11, 1),
        will=("w5/expire", b"expired", 0, False),
        will_properties=prop(0x18, 60),
    )
    await drop(owner)
    await clock.advance_async(0.5)
    await sync(sub)  # nothing yet
    await clock.advance_async(0.5)
    await expect_publish(sub, "w5/expire", b"expired")


async def test_v5_takeover_within_will_delay_does_not_publish_will(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.1.3-9: a new connection to the session (a take-over with Clean Start 0) before
    the Will Delay Interval has passed means the will is not sent; the old connection still
    gets DISCONNECT 0x8E (MQTT-3.1.4-3)."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await watcher(hub, "w5/take")
    old = await open_client(
        hub,
        "w5t",
        level=5,
        clean=False,
        properties=prop(0x11, 30),
        will=("w5/take", b"late", 0, False),
        will_properties=prop(0x18, 1),
    )
    new = await open_client(
        hub, "w5t", level=5, clean=False, session_present=True, properties=prop(0x11, 30)
    )
    await expect_disconnect5(old, 0x8E)
    await clock.advance_async(60)
    await sync(sub)  # no will
    await leave(new, bytes.fromhex("e0 01 00"))
