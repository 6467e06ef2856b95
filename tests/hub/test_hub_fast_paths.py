"""The hub's fast paths give what the general code they inline gives, for the same input.

The router delivers QoS 0 and QoS 1 to a 3.1.1 subscription with an inlined ``send()``; a
shared subscription goes through ``send()`` itself. A read made of nothing but PUBACKs is
applied in bulk; the same PUBACKs followed by another packet go through the decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from enos_lab.hub import Hub, HubConfig, Message
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import (
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)

if TYPE_CHECKING:
    from enos_lab.hub import MemoryConnection
    from tests.hub.conftest import Connector, MakeHub

pytestmark = pytest.mark.anyio


async def subscribe(conn: MemoryConnection, topic_filter: str, qos: int) -> None:
    await conn.send(encode(Subscribe(1, (Subscription(topic_filter, qos),)), 4))
    assert await conn.read_packet(4) == SubAck(1, (qos,))


@pytest.mark.parametrize("window", [1000, 1], ids=["window-open", "window-full"])
@pytest.mark.parametrize("qos", [0, 1])
async def test_route_fast_paths_write_what_send_writes(
    make_hub: MakeHub, connect: Connector, qos: int, window: int
) -> None:
    """The same messages to a plain subscription (the route's fast path) and to a shared one
    (``send()``): the same bytes, which are the codec's; with a full in-flight window the
    queued messages come out alike as the PUBACKs free it."""
    hub = await make_hub(HubConfig(anonymous=True, max_inflight=window))
    fast, _ = await connect(hub, "fast")
    general, _ = await connect(hub, "general")
    await subscribe(fast, "t/#", qos)
    await subscribe(general, "$share/g/t/#", qos)
    pub, _ = await connect(hub, "pub")
    payloads = [b"", b"x", bytes(120), bytes(200), bytes(16_400)]
    for i, payload in enumerate(payloads):
        pid = i + 1
        # from a client (the packet itself is routed) and from the hub (a Message)
        await pub.send(
            encode(Publish(f"t/{i}", payload, qos, i % 2 == 0, False, pid if qos else 0), 4)
        )
        if qos:
            assert await pub.read_packet(4) == PubAck(pid)
        await hub.publish(Message(f"t/hub/{i}", payload, qos, retain=i % 2 == 1))
    expected = []
    for i, payload in enumerate(payloads):
        for topic in (f"t/{i}", f"t/hub/{i}"):
            pid = len(expected) + 1 if qos else 0
            expected.append(encode(Publish(topic, payload, qos, False, False, pid), 4))
    for conn in (fast, general):
        got = []
        for data in expected:
            got.append(await conn.receive_exactly(len(data)))
            if qos:
                await conn.send(encode(PubAck(len(got)), 4))  # frees the window
        assert got == expected


async def publish_six(hub: Hub, connect: Connector) -> MemoryConnection:
    sub, _ = await connect(hub, "sub")
    await subscribe(sub, "w", 1)
    for i in range(1, 7):
        await hub.publish(Message("w", bytes([i]), 1))
    for pid in (1, 2, 3):
        assert await sub.read_packet(4) == Publish("w", bytes([pid]), 1, packet_id=pid)
    return sub


async def test_a_run_of_pubacks_does_what_the_decoder_path_does(
    make_hub: MakeHub, connect: Connector
) -> None:
    """Three PUBACKs in one read (taken in bulk) and the same PUBACKs followed by a PINGREQ
    (decoded one by one) free the same window: the same three messages follow."""
    acks = b"".join(encode(PubAck(pid), 4) for pid in (1, 2, 3))
    results = []
    for tail in (b"", encode(PingReq(), 4)):
        hub = await make_hub(HubConfig(anonymous=True, max_inflight=3))
        sub = await publish_six(hub, connect)
        await sub.send(acks + tail)
        if tail:
            assert await sub.read_packet(4) == PingResp()
        results.append([await sub.read_packet(4) for _ in range(3)])
    bulk, decoded = results
    assert bulk == decoded == [Publish("w", bytes([pid]), 1, packet_id=pid) for pid in (4, 5, 6)]
