"""PUBLISH / SUBSCRIBE conversations: QoS 0 and 1 both ways, routing rules, extension points.

Numbered by area like a broker's conversation tests; byte-exact where the bytes are short.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from enos_lab.errors import ClosedError, InvalidArgument, TopicError
from enos_lab.hub import ClientInfo, Hub, HubConfig, Message
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import (
    Disconnect,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)

if TYPE_CHECKING:
    from enos_lab.hub import MemoryConnection
    from tests.hub.conftest import Connector, MakeHub


async def subscribe(
    conn: MemoryConnection,
    level: int,
    *filters: tuple[str, int],
    packet_id: int = 1,
    properties: Properties | None = None,
    **options: bool,
) -> SubAck:
    subs = tuple(Subscription(f, q, **options) for f, q in filters)
    if properties is None:
        await conn.send(encode(Subscribe(packet_id, subs), level))
    else:
        await conn.send(encode(Subscribe(packet_id, subs, properties), level))
    suback = await conn.read_packet(level)
    assert isinstance(suback, SubAck), suback
    return suback


async def expect_nothing(conn: MemoryConnection) -> None:
    """Nothing arrives within a short grace period (after which the hub is idle)."""
    for _ in range(5):
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await conn.receive(timeout=0.05)


# -- 01 QoS 0 ---------------------------------------------------------------------------------


async def test_01_1_qos0_311_exact_bytes(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await sub.send(b"\x82\x08\x00\x01\x00\x03a/b\x00")
    assert await sub.receive_exactly(5) == b"\x90\x03\x00\x01\x00"
    pub, _ = await connect(hub, "pub")
    await pub.send(b"\x30\x0a\x00\x03a/bhello")
    assert await sub.receive_exactly(12) == b"\x30\x0a\x00\x03a/bhello"
    await expect_nothing(pub)  # no ack for QoS 0


async def test_01_2_qos0_50_to_311_and_back(hub: Hub, connect: Connector) -> None:
    s4, _ = await connect(hub, "s4")
    s5, _ = await connect(hub, "s5", level=5)
    await subscribe(s4, 4, ("t/#", 0))
    await subscribe(s5, 5, ("t/#", 0))
    p5, _ = await connect(hub, "p5", level=5)
    props = Properties(
        response_topic="t/reply",
        correlation_data=b"\x01\x02",
        user_properties=(("k", "v"), ("k", "w")),
        content_type="text/plain",
    )
    await p5.send(encode(Publish("t/1", b"x", 0, properties=props), 5))
    assert await s4.receive_exactly(8) == b"\x30\x06\x00\x03t/1x"  # 5.0 properties dropped
    assert await s5.read_packet(5) == Publish("t/1", b"x", 0, properties=props)  # passthrough


async def test_01_3_unsubscribe_stops_delivery(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("u", 0))
    await sub.send(encode(Unsubscribe(2, ("u", "never")), 4))
    assert await sub.receive_exactly(4) == b"\xb0\x02\x00\x02"
    assert await hub.publish(Message("u", b"1")) == 0
    sub5, _ = await connect(hub, "sub5", level=5)
    await subscribe(sub5, 5, ("u", 0))
    await sub5.send(encode(Unsubscribe(3, ("u", "never")), 5))
    assert await sub5.read_packet(5) == UnsubAck(3, (0x00, 0x11))


# -- 02 QoS 1 ---------------------------------------------------------------------------------


async def test_02_1_qos1_both_directions_exact_bytes(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await sub.send(encode(Subscribe(1, (Subscription("q", 1),)), 4))
    assert await sub.receive_exactly(5) == b"\x90\x03\x00\x01\x01"
    pub, _ = await connect(hub, "pub")
    await pub.send(b"\x32\x06\x00\x01q\x12\x34m")
    assert await pub.receive_exactly(4) == b"\x40\x02\x12\x34"
    assert await sub.receive_exactly(8) == b"\x32\x06\x00\x01q\x00\x01m"  # session packet id 1
    await sub.send(b"\x40\x02\x00\x01")
    await pub.send(b"\x32\x06\x00\x01q\x12\x35n")
    assert await pub.receive_exactly(4) == b"\x40\x02\x12\x35"
    assert await sub.receive_exactly(8) == b"\x32\x06\x00\x01q\x00\x02n"


async def test_02_2_qos_downgraded_to_subscription(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("d", 0))
    pub, _ = await connect(hub, "pub")
    await pub.send(encode(Publish("d", b"p", 1, packet_id=9), 4))
    assert await pub.read_packet(4) == PubAck(9)
    assert await sub.read_packet(4) == Publish("d", b"p", 0)


async def test_02_3_qos1_to_50_subscriber(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub", level=5)
    await subscribe(sub, 5, ("f/+", 1))
    await hub.publish(Message("f/1", b"a", 1))
    assert await sub.read_packet(5) == Publish("f/1", b"a", 1, packet_id=1)
    await sub.send(encode(PubAck(1), 5))
    await hub.publish(Message("f/2", b"b", 1))
    assert await sub.read_packet(5) == Publish("f/2", b"b", 1, packet_id=2)


async def test_02_4_resend_unacked_on_reconnect_with_dup(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "persist", clean_start=False)
    await subscribe(sub, 4, ("r", 1))
    await hub.publish(Message("r", b"1", 1))
    assert await sub.read_packet(4) == Publish("r", b"1", 1, packet_id=1)
    gone = asyncio.Event()
    hub.add_listener(lambda event: gone.set())
    sub.close()  # no PUBACK
    await asyncio.wait_for(gone.wait(), 5.0)
    await hub.publish(Message("r", b"2", 1))  # queued while offline
    again, connack = await connect(hub, "persist", clean_start=False)
    assert connack.session_present
    assert await again.read_packet(4) == Publish("r", b"1", 1, dup=True, packet_id=1)
    assert await again.read_packet(4) == Publish("r", b"2", 1, packet_id=2)


# -- 03 overlapping subscriptions -------------------------------------------------------------


async def test_03_1_overlapping_311_delivered_once_at_highest_qos(
    hub: Hub, connect: Connector
) -> None:
    sub, _ = await connect(hub, "sub")
    assert await subscribe(sub, 4, ("a/#", 0), ("a/+", 1), ("a/b", 0)) == SubAck(1, (0, 1, 0))
    await hub.publish(Message("a/b", b"x", 1))
    assert await sub.read_packet(4) == Publish("a/b", b"x", 1, packet_id=1)
    await expect_nothing(sub)


async def test_03_2_overlapping_50_with_all_subscription_ids(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub", level=5)
    await subscribe(sub, 5, ("a/#", 0), properties=Properties(subscription_identifiers=(7,)))
    await subscribe(
        sub, 5, ("a/+", 1), packet_id=2, properties=Properties(subscription_identifiers=(3,))
    )
    await hub.publish(Message("a/b", b"x", 1))
    packet = await sub.read_packet(5)
    assert isinstance(packet, Publish)
    assert (packet.qos, packet.properties.subscription_identifiers) == (1, (3, 7))
    await expect_nothing(sub)


async def test_03_3_resubscribe_replaces(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("z", 1))
    await subscribe(sub, 4, ("z", 0), packet_id=2)
    await hub.publish(Message("z", b"x", 1))
    assert await sub.read_packet(4) == Publish("z", b"x", 0)


# -- 04 $-topics ------------------------------------------------------------------------------


async def test_04_1_dollar_topics_not_matched_by_leading_wildcards(
    hub: Hub, connect: Connector
) -> None:
    wild, _ = await connect(hub, "wild")
    await subscribe(wild, 4, ("#", 0), ("+/x", 0))
    sys_, _ = await connect(hub, "sys")
    await subscribe(sys_, 4, ("$SYS/#", 0))
    assert await hub.publish(Message("$SYS/x", b"up")) == 1  # MQTT-4.7.2-1
    assert await sys_.read_packet(4) == Publish("$SYS/x", b"up")
    await expect_nothing(wild)


async def test_04_2_clients_may_not_publish_to_dollar_topics(hub: Hub, connect: Connector) -> None:
    sys_, _ = await connect(hub, "sys")
    await subscribe(sys_, 4, ("$SYS/#", 0))
    p5, _ = await connect(hub, "p5", level=5)
    await p5.send(encode(Publish("$SYS/x", b"fake", 1, packet_id=1), 5))
    assert await p5.read_packet(5) == PubAck(1, 0x87)
    p4, _ = await connect(hub, "p4")
    await p4.send(encode(Publish("$SYS/x", b"fake", 1, packet_id=2), 4))
    assert await p4.read_packet(4) == PubAck(2)
    await expect_nothing(sys_)


# -- 05 server-side publish and deliver -------------------------------------------------------


async def test_05_1_deliver_without_subscription(hub: Hub, connect: Connector) -> None:
    dev, _ = await connect(hub, "dev")
    command = Message("/sys/pk/dk/thing/service/reboot", b"{}", 1)
    assert await hub.deliver("dev", command) is True
    assert await dev.read_packet(4) == Publish(command.topic, b"{}", 1, packet_id=1)
    await dev.send(encode(PubAck(1), 4))
    assert await hub.deliver("dev", Message("x", b"0")) is True
    assert await dev.read_packet(4) == Publish("x", b"0")
    assert await hub.deliver("nobody", command) is False


async def test_05_2_publish_counts_sessions_and_validates(hub: Hub, connect: Connector) -> None:
    a, _ = await connect(hub, "a")
    b, _ = await connect(hub, "b")
    await subscribe(a, 4, ("n/#", 0))
    await subscribe(b, 4, ("n/+", 0))
    assert await hub.publish(Message("n/1", b"")) == 2
    assert await hub.publish(Message("m", b"")) == 0
    with pytest.raises(TopicError):
        await hub.publish(Message("bad/#", b""))


async def test_05_2b_publish_nowait_routes_before_returning(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("q/#", 1))
    assert hub.publish_nowait(Message("q/1", b"a", 1)) == 1  # routed: the bytes are queued
    assert hub.publish_nowait(Message("q/1", b"b", 1)) == 1  # (the topic was checked once)
    assert await sub.read_packet(4) == Publish("q/1", b"a", 1, packet_id=1)
    assert await sub.read_packet(4) == Publish("q/1", b"b", 1, packet_id=2)
    with pytest.raises(InvalidArgument, match="qos"):
        hub.publish_nowait(Message("q/1", b"", 3))  # a known topic is no pass for a bad QoS
    with pytest.raises(TopicError):
        hub.publish_nowait(Message("q/+", b""))
    await hub.stop()
    with pytest.raises(ClosedError):
        hub.publish_nowait(Message("q/1", b""))


async def test_05_3_stats(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("s", 0))
    pub, _ = await connect(hub, "pub")
    await pub.send(b"\x30\x04\x00\x01sx")
    assert await sub.receive_exactly(6) == b"\x30\x04\x00\x01sx"
    stats = hub.stats
    assert (stats.connections, stats.messages_in, stats.messages_out, stats.dropped) == (
        2,
        1,
        1,
        0,
    )
    assert stats.bytes_in > 0
    assert stats.bytes_out > 0


# -- 06 message handlers ----------------------------------------------------------------------


async def test_06_1_handlers_see_accepted_messages(hub: Hub, connect: Connector) -> None:
    seen: list[tuple[str | None, Message]] = []

    def handler(client: ClientInfo | None, message: Message) -> None:
        seen.append((client.client_id if client else None, message))

    hub.add_handler(handler)
    pub, _ = await connect(hub, "pub", level=5)
    props = Properties(user_properties=(("a", "b"),))
    await pub.send(encode(Publish("h/1", b"1", 1, True, packet_id=5, properties=props), 5))
    assert await pub.read_packet(5) == PubAck(5)
    assert seen == [("pub", Message("h/1", b"1", 1, True, props))]
    hub.remove_handler(handler)
    await pub.send(encode(Publish("h/2", b"2"), 5))
    await pub.send(encode(Disconnect(), 5))
    await pub.wait_closed()
    assert len(seen) == 1


async def test_06_2_awaitable_handler_delays_puback(hub: Hub, connect: Connector) -> None:
    stored = asyncio.Event()
    order: list[str] = []

    async def store(message: Message) -> None:
        await stored.wait()
        order.append(f"stored {message.topic}")

    def handler(client: ClientInfo | None, message: Message) -> asyncio.Future[None] | None:
        order.append(f"seen {message.topic}")
        if message.topic == "slow":
            return asyncio.ensure_future(store(message))
        return None

    hub.add_handler(handler)
    pub, _ = await connect(hub, "pub")
    await pub.send(encode(Publish("slow", b"1", 1, packet_id=1), 4))
    await pub.send(encode(Publish("fast", b"2", 1, packet_id=2), 4))
    await expect_nothing(pub)  # PUBACK 1 waits for the store, PUBACK 2 waits behind it
    assert order == ["seen slow", "seen fast"]  # pipelined: the next packet is handled already
    stored.set()
    assert await pub.receive_exactly(8) == b"\x40\x02\x00\x01\x40\x02\x00\x02"
    assert order == ["seen slow", "seen fast", "stored slow"]


async def test_06_3_failing_handler_means_no_success_ack_5(
    hub: Hub, connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    """A message its handler failed to take is never acknowledged as a success."""

    def broken(client: ClientInfo | None, message: Message) -> None:
        raise RuntimeError("boom")

    async def broken_later(client: ClientInfo | None, message: Message) -> None:
        raise RuntimeError("bang")

    hub.add_handler(broken)
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(encode(Publish("b", b"1", 1, packet_id=1), 5))
    assert await pub.read_packet(5) == PubAck(1, 0x80)  # Unspecified error
    await pub.send(encode(Publish("b", b"2", 2, packet_id=2), 5))
    assert await pub.read_packet(5) == PubRec(2, 0x80)  # the QoS 2 exchange ends here
    hub.remove_handler(broken)
    hub.add_handler(broken_later)
    await pub.send(encode(Publish("b", b"3", 1, packet_id=3), 5))
    assert await pub.read_packet(5) == PubAck(3, 0x80)
    hub.remove_handler(broken_later)
    await pub.send(encode(Publish("b", b"4", 1, packet_id=4), 5))
    assert await pub.read_packet(5) == PubAck(4)  # the connection keeps working
    assert "boom" in caplog.text and "bang" in caplog.text


async def test_06_4_failing_handler_closes_a_311_connection_without_puback(
    hub: Hub, connect: Connector
) -> None:
    """3.1.1 has no negative acknowledgement: the client is disconnected and resends later."""

    def broken(client: ClientInfo | None, message: Message) -> None:
        raise RuntimeError("boom")

    hub.add_handler(broken)
    pub, _ = await connect(hub, "pub")
    other, _ = await connect(hub, "other")
    await pub.send(encode(Publish("b", b"1", 1, packet_id=1), 4))
    await pub.wait_closed()
    with pytest.raises(ClosedError):
        await pub.receive(timeout=1.0)  # no PUBACK was sent before the close
    hub.remove_handler(broken)
    await other.send(encode(Publish("b", b"2", 1, packet_id=7), 4))
    assert await other.read_packet(4) == PubAck(7)  # everyone else is served


# -- 07 slow consumers and bounds -------------------------------------------------------------


async def test_07_1_qos1_bounded_by_window_and_queue(make_hub: MakeHub, connect: Connector) -> None:
    hub = await make_hub(HubConfig(anonymous=True, max_inflight=2, max_queued_messages=5))
    sub, _ = await connect(hub, "slow")
    await subscribe(sub, 4, ("w", 1))
    for i in range(20):
        await hub.publish(Message("w", bytes([i]), 1))
    assert hub.stats.dropped == 13  # 2 in flight + 5 queued
    assert await sub.read_packet(4) == Publish("w", b"\x00", 1, packet_id=1)
    assert await sub.read_packet(4) == Publish("w", b"\x01", 1, packet_id=2)
    await expect_nothing(sub)
    await sub.send(encode(PubAck(1), 4))
    assert await sub.read_packet(4) == Publish("w", b"\x02", 1, packet_id=3)
    other, _ = await connect(hub, "other")  # the hub keeps serving everyone else
    await subscribe(other, 4, ("o", 0))
    await hub.publish(Message("o", b"!"))
    assert await other.read_packet(4) == Publish("o", b"!")


async def test_07_1b_pubacks_in_one_write_free_the_window(
    make_hub: MakeHub, connect: Connector
) -> None:
    hub = await make_hub(HubConfig(anonymous=True, max_inflight=3))
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("w", 2))
    await hub.publish(Message("w", b"\x01", 2))
    for i in range(2, 7):
        await hub.publish(Message("w", bytes([i]), 1))
    assert await sub.read_packet(4) == Publish("w", b"\x01", 2, packet_id=1)
    assert await sub.read_packet(4) == Publish("w", b"\x02", 1, packet_id=2)
    assert await sub.read_packet(4) == Publish("w", b"\x03", 1, packet_id=3)
    await expect_nothing(sub)
    # one chunk of PUBACKs; the one naming the QoS 2 message does not end that exchange
    await sub.send(b"".join(encode(PubAck(pid), 4) for pid in (1, 2, 3)))
    assert await sub.read_packet(4) == Publish("w", b"\x04", 1, packet_id=4)
    assert await sub.read_packet(4) == Publish("w", b"\x05", 1, packet_id=5)
    await expect_nothing(sub)
    await sub.send(encode(PubRec(1), 4))
    assert await sub.read_packet(4) == PubRel(1)
    await sub.send(encode(PubComp(1), 4) + encode(PubAck(4), 4))
    assert await sub.read_packet(4) == Publish("w", b"\x06", 1, packet_id=6)


async def test_07_2_qos0_dropped_beyond_buffer_bound(make_hub: MakeHub, connect: Connector) -> None:
    hub = await make_hub(HubConfig(anonymous=True, max_buffered_bytes=100))
    sub, _ = await connect(hub, "slow")
    await subscribe(sub, 4, ("b", 0))
    for _ in range(50):
        await hub.publish(Message("b", b"x" * 20))  # 25 bytes each, all in one loop iteration
    dropped = hub.stats.dropped
    assert 40 <= dropped < 50
    received = await sub.receive_exactly((50 - dropped) * 25)
    assert received == b"\x30\x17\x00\x01b" + b"x" * 20 + received[25:]
    await expect_nothing(sub)


async def test_07_3_client_maximum_packet_size_respected(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "small", level=5, properties=Properties(maximum_packet_size=30))
    await subscribe(sub, 5, ("m", 1))
    await hub.publish(Message("m", b"y" * 100, 1))  # too large for this client: dropped
    await hub.publish(Message("m", b"ok", 1))
    assert await sub.read_packet(5) == Publish("m", b"ok", 1, packet_id=1)
    assert hub.stats.dropped == 1


# -- 08 MQTT 5.0 routing options --------------------------------------------------------------


async def test_08_1_no_local(hub: Hub, connect: Connector) -> None:
    me, _ = await connect(hub, "me", level=5)
    await subscribe(me, 5, ("nl", 0), no_local=True)
    await me.send(encode(Publish("nl", b"own"), 5))
    await expect_nothing(me)
    await hub.publish(Message("nl", b"other"))
    assert await me.read_packet(5) == Publish("nl", b"other")


async def test_08_2_shared_subscription_round_robin(hub: Hub, connect: Connector) -> None:
    a, _ = await connect(hub, "a", level=5)
    b, _ = await connect(hub, "b", level=5)
    await subscribe(a, 5, ("$share/g/job/+", 1))
    await subscribe(b, 5, ("$share/g/job/+", 1))
    for i in range(4):
        assert await hub.publish(Message("job/x", bytes([i]), 1)) == 1
    got_a = [await a.read_packet(5), await a.read_packet(5)]
    got_b = [await b.read_packet(5), await b.read_packet(5)]
    payloads = sorted(p.payload for p in got_a + got_b if isinstance(p, Publish))
    assert payloads == [b"\x00", b"\x01", b"\x02", b"\x03"]


async def test_08_3_inbound_topic_alias(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("alias/t", 0))
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(encode(Publish("alias/t", b"1", properties=Properties(topic_alias=1)), 5))
    await pub.send(encode(Publish("", b"2", properties=Properties(topic_alias=1)), 5))
    assert await sub.read_packet(4) == Publish("alias/t", b"1")
    assert await sub.read_packet(4) == Publish("alias/t", b"2")
    await pub.send(encode(Publish("x", b"3", properties=Properties(topic_alias=1000)), 5))
    assert await pub.read_packet(5) == Disconnect(0x94)
    await pub.wait_closed()


async def test_07_4_large_batch_handled_in_order_across_iterations(
    hub: Hub, connect: Connector
) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, ("batch", 1))
    pub, _ = await connect(hub, "pub")
    count = 1000  # far more than one loop iteration handles per connection
    await pub.send(
        b"".join(
            encode(Publish("batch", i.to_bytes(2, "big"), 1, packet_id=i + 1), 4)
            for i in range(count)
        )
    )
    acks = await pub.receive_exactly(4 * count)
    assert acks == b"".join(encode(PubAck(i + 1), 4) for i in range(count))
    for i in range(count):
        packet = await sub.read_packet(4)
        assert isinstance(packet, Publish)
        assert packet.payload == i.to_bytes(2, "big")
        await sub.send(encode(PubAck(packet.packet_id), 4))
