"""QoS 2 conversations (MQTT 4.3.3): both directions, duplicates, unknown identifiers, resend."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from enos_lab.hub import Hub, Message
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import (
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
)

if TYPE_CHECKING:
    from enos_lab.hub import MemoryConnection
    from tests.hub.conftest import Connector


async def subscribe(conn: MemoryConnection, level: int, topic_filter: str, qos: int) -> None:
    await conn.send(encode(Subscribe(1, (Subscription(topic_filter, qos),)), level))
    assert await conn.read_packet(level) == SubAck(1, (qos,))


async def expect_nothing(conn: MemoryConnection) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await conn.receive(timeout=0.05)


# -- 01 client -> hub -------------------------------------------------------------------------


async def test_01_1_inbound_exchange_exact_bytes(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, "q2", 2)
    pub, _ = await connect(hub, "pub")
    await pub.send(b"\x34\x07\x00\x02q2\x00\x07m")
    assert await pub.receive_exactly(4) == b"\x50\x02\x00\x07"  # PUBREC
    # delivered on PUBLISH (method B of MQTT 4.3.3 is allowed; we deliver at once)
    assert await sub.receive_exactly(9) == b"\x34\x07\x00\x02q2\x00\x01m"
    await pub.send(b"\x62\x02\x00\x07")  # PUBREL
    assert await pub.receive_exactly(4) == b"\x70\x02\x00\x07"  # PUBCOMP


async def test_01_2_duplicate_publish_not_delivered_twice(hub: Hub, connect: Connector) -> None:
    seen: list[Message] = []
    hub.add_handler(lambda client, message: seen.append(message))
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, "d", 0)
    pub, _ = await connect(hub, "pub")
    await pub.send(encode(Publish("d", b"once", 2, packet_id=3), 4))
    assert await pub.read_packet(4) == PubRec(3)
    await pub.send(encode(Publish("d", b"once", 2, dup=True, packet_id=3), 4))
    assert await pub.read_packet(4) == PubRec(3)  # MQTT-4.3.3-9: ack again, no new delivery
    await pub.send(encode(PubRel(3), 4))
    assert await pub.read_packet(4) == PubComp(3)
    assert await sub.read_packet(4) == Publish("d", b"once")
    await expect_nothing(sub)
    assert len(seen) == 1
    # after PUBCOMP the identifier is free: the same id is a new message
    await pub.send(encode(Publish("d", b"again", 2, packet_id=3), 4))
    assert await pub.read_packet(4) == PubRec(3)
    assert await sub.read_packet(4) == Publish("d", b"again")


async def test_01_3_pubrel_for_unknown_id(hub: Hub, connect: Connector) -> None:
    c4, _ = await connect(hub, "c4")
    await c4.send(encode(PubRel(99), 4))
    assert await c4.receive_exactly(4) == b"\x70\x02\x00\x63"
    c5, _ = await connect(hub, "c5", level=5)
    await c5.send(encode(PubRel(99), 5))
    assert await c5.read_packet(5) == PubComp(99, 0x92)  # Packet Identifier not found
    assert not c4.closed
    assert not c5.closed


async def test_01_4_50_inbound_exchange(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub", level=5)
    await subscribe(sub, 5, "x/#", 2)
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(encode(Publish("x/y", b"5", 2, packet_id=1), 5))
    assert await pub.read_packet(5) == PubRec(1)
    assert await sub.read_packet(5) == Publish("x/y", b"5", 2, packet_id=1)
    await pub.send(encode(PubRel(1), 5))
    assert await pub.read_packet(5) == PubComp(1)


# -- 02 hub -> client -------------------------------------------------------------------------


async def test_02_1_outbound_exchange_exact_bytes(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, 4, "o", 2)
    await hub.publish(Message("o", b"a", 2))
    assert await sub.receive_exactly(8) == b"\x34\x06\x00\x01o\x00\x01a"
    await sub.send(b"\x50\x02\x00\x01")  # PUBREC
    assert await sub.receive_exactly(4) == b"\x62\x02\x00\x01"  # PUBREL
    await sub.send(b"\x70\x02\x00\x01")  # PUBCOMP
    await hub.publish(Message("o", b"b", 2))
    assert await sub.receive_exactly(8) == b"\x34\x06\x00\x01o\x00\x02b"


async def test_02_2_window_frees_only_on_pubcomp(hub: Hub, connect: Connector) -> None:
    from enos_lab.hub import HubConfig

    del hub
    small = Hub(HubConfig(anonymous=True, max_inflight=1))
    await small.start()
    try:
        sub, _ = await connect(small, "sub")
        await subscribe(sub, 4, "w", 2)
        await small.publish(Message("w", b"1", 2))
        await small.publish(Message("w", b"2", 2))
        assert await sub.read_packet(4) == Publish("w", b"1", 2, packet_id=1)
        await sub.send(encode(PubRec(1), 4))
        assert await sub.read_packet(4) == PubRel(1)
        await expect_nothing(sub)  # still in flight until PUBCOMP
        await sub.send(encode(PubComp(1), 4))
        assert await sub.read_packet(4) == Publish("w", b"2", 2, packet_id=2)
    finally:
        await small.stop()


async def test_02_3_pubrec_for_unknown_id(hub: Hub, connect: Connector) -> None:
    c5, _ = await connect(hub, "c5", level=5)
    await c5.send(encode(PubRec(42), 5))
    assert await c5.read_packet(5) == PubRel(42, 0x92)


async def test_02_4_50_pubrec_error_ends_exchange(hub: Hub, connect: Connector) -> None:
    sub, _ = await connect(hub, "sub", level=5)
    await subscribe(sub, 5, "e", 2)
    await hub.publish(Message("e", b"1", 2))
    assert await sub.read_packet(5) == Publish("e", b"1", 2, packet_id=1)
    await sub.send(encode(PubRec(1, 0x80), 5))
    await expect_nothing(sub)  # no PUBREL after an error reason code (5.0 4.3.3)


# -- 03 persistent sessions -------------------------------------------------------------------


async def test_03_1_resend_publish_and_pubrel_after_reconnect(hub: Hub, connect: Connector) -> None:
    gone = asyncio.Event()
    hub.add_listener(lambda event: gone.set())
    sub, _ = await connect(hub, "p", clean_start=False)
    await subscribe(sub, 4, "s", 2)
    await hub.publish(Message("s", b"1", 2))
    await hub.publish(Message("s", b"2", 2))
    assert await sub.read_packet(4) == Publish("s", b"1", 2, packet_id=1)
    assert await sub.read_packet(4) == Publish("s", b"2", 2, packet_id=2)
    await sub.send(encode(PubRec(1), 4))
    assert await sub.read_packet(4) == PubRel(1)
    gone.clear()
    sub.close()
    await asyncio.wait_for(gone.wait(), 5.0)
    again, connack = await connect(hub, "p", clean_start=False)
    assert connack.session_present
    # MQTT-4.4.0-1: resend in the original order; PUBREL for released, DUP PUBLISH otherwise
    assert await again.read_packet(4) == PubRel(1)
    assert await again.read_packet(4) == Publish("s", b"2", 2, dup=True, packet_id=2)
    await again.send(encode(PubComp(1), 4))
    await again.send(encode(PubRec(2), 4))
    assert await again.read_packet(4) == PubRel(2)
    await again.send(encode(PubComp(2), 4))
    await expect_nothing(again)


async def test_03_2_inbound_qos2_state_survives_reconnect(hub: Hub, connect: Connector) -> None:
    gone = asyncio.Event()
    hub.add_listener(lambda event: gone.set())
    seen: list[Message] = []
    hub.add_handler(lambda client, message: seen.append(message))
    pub, _ = await connect(hub, "pub", clean_start=False)
    await pub.send(encode(Publish("k", b"1", 2, packet_id=5), 4))
    assert await pub.read_packet(4) == PubRec(5)
    gone.clear()
    pub.close()
    await asyncio.wait_for(gone.wait(), 5.0)
    again, _ = await connect(hub, "pub", clean_start=False)
    await again.send(encode(Publish("k", b"1", 2, dup=True, packet_id=5), 4))
    assert await again.read_packet(4) == PubRec(5)
    await again.send(encode(PubRel(5), 4))
    assert await again.read_packet(4) == PubComp(5)
    assert len(seen) == 1
