"""Pipelined message handlers: awaitables do not stop a connection, acknowledgements stay in order.

A handler that returns an awaitable (a store's commit future) delays the acknowledgement of its
message only. The connection keeps handling the packets that follow; every response waits
behind the pending acknowledgements (MQTT-4.6.0-2..4).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import pytest

from enos_lab.errors import ClosedError
from enos_lab.hub import ClientInfo, Hub, HubConfig, Message
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import (
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)

if TYPE_CHECKING:
    from enos_lab.hub import MemoryConnection
    from tests.hub.conftest import Connector, MakeHub


class Store:
    """A handler whose commit future per message (keyed by payload) the test completes."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.commits: dict[bytes, asyncio.Future[None]] = {}

    def __call__(self, client: ClientInfo | None, message: Message) -> asyncio.Future[None]:
        self.seen.append(message.payload)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.commits[message.payload] = future
        return future

    def commit(self, *payloads: bytes) -> None:
        for payload in payloads:
            self.commits[payload].set_result(None)

    def fail(self, payload: bytes) -> None:
        self.commits[payload].set_exception(RuntimeError(f"store failed {payload!r}"))


async def settle() -> None:
    """Let done callbacks and the output flush run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def expect_nothing(conn: MemoryConnection) -> None:
    await settle()
    with pytest.raises(TimeoutError):
        await conn.receive(timeout=0.05)


def publishes(level: int, *payloads: bytes, qos: int = 1) -> bytes:
    """QoS ``qos`` PUBLISH packets on topic ``p`` with packet id = payload's first byte."""
    return b"".join(encode(Publish("p", x, qos, packet_id=x[0]), level) for x in payloads)


async def test_01_out_of_order_completion_acknowledged_in_order(
    hub: Hub, connect: Connector
) -> None:
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub")
    await pub.send(publishes(4, b"\x01", b"\x02", b"\x03"))
    await settle()
    assert store.seen == [b"\x01", b"\x02", b"\x03"]  # all handled before any commit finished
    store.commit(b"\x03", b"\x02")
    await expect_nothing(pub)  # 2 and 3 are stored but wait behind 1
    store.commit(b"\x01")
    acks = await pub.receive_exactly(12)
    assert acks == b"".join(encode(PubAck(i), 4) for i in (1, 2, 3))


async def test_02_bound_pauses_the_connection(make_hub: MakeHub, connect: Connector) -> None:
    hub = await make_hub(HubConfig(anonymous=True, max_pending_acks=2))
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(publishes(5, b"\x01", b"\x02", b"\x03", b"\x04"))
    await pub.send(publishes(5, b"\x05"))  # arrives while the connection is paused
    await settle()
    assert store.seen == [b"\x01", b"\x02"]  # the bound: the rest waits
    store.commit(b"\x02")
    await settle()
    assert store.seen == [b"\x01", b"\x02", b"\x03"]  # one slot free again
    await expect_nothing(pub)
    store.commit(b"\x01")
    assert await read(pub, 5, 2) == [PubAck(1), PubAck(2)]
    await settle()
    assert store.seen == [b"\x01", b"\x02", b"\x03", b"\x04"]
    store.commit(b"\x03", b"\x04")
    assert await read(pub, 5, 2) == [PubAck(3), PubAck(4)]
    await settle()
    assert store.seen[-1] == b"\x05"
    store.commit(b"\x05")
    assert await pub.read_packet(5) == PubAck(5)


async def read(conn: MemoryConnection, level: int, n: int) -> list[object]:
    return [await conn.read_packet(level) for _ in range(n)]


async def test_03_failure_in_the_middle_5(
    hub: Hub, connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    """5.0: the failed message gets 0x80, the others success, all in order."""
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(publishes(5, b"\x01", b"\x02", b"\x03"))
    await settle()
    store.fail(b"\x02")
    store.commit(b"\x03")
    await expect_nothing(pub)
    store.commit(b"\x01")
    assert await read(pub, 5, 3) == [PubAck(1), PubAck(2, 0x80), PubAck(3)]
    assert "store failed" in caplog.text


async def test_04_failure_in_the_middle_311(hub: Hub, connect: Connector) -> None:
    """3.1.1: the messages before the failed one are acknowledged, then the connection closes.

    The failed message and every later one are not acknowledged (the client sends them again),
    even when the later ones were stored.
    """
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub")
    await pub.send(publishes(4, b"\x01", b"\x02", b"\x03"))
    await settle()
    store.commit(b"\x03")
    store.fail(b"\x02")
    await expect_nothing(pub)  # 1 is still pending: nothing closes yet
    assert not pub.closed
    store.commit(b"\x01")
    assert await pub.read_packet(4) == PubAck(1)
    await pub.wait_closed()
    with pytest.raises(ClosedError):
        await pub.receive(timeout=1.0)


async def test_05_qos2_pending_pubrec_then_pubrel(hub: Hub, connect: Connector) -> None:
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(publishes(5, b"\x01", qos=2))
    await pub.send(publishes(5, b"\x02", qos=1))
    await pub.send(encode(Publish("p", b"\x01", 2, dup=True, packet_id=1), 5))  # resent
    await settle()
    assert store.seen == [b"\x01", b"\x02"]  # MQTT-4.3.3-9: the duplicate is not delivered
    await expect_nothing(pub)
    store.commit(b"\x02")
    await expect_nothing(pub)
    store.commit(b"\x01")
    assert await read(pub, 5, 3) == [PubRec(1), PubAck(2), PubRec(1)]
    await pub.send(encode(PubRel(1), 5))
    assert await pub.read_packet(5) == PubComp(1)


async def test_06_pubrel_and_ping_wait_behind_a_pending_pubrec(
    hub: Hub, connect: Connector
) -> None:
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub")
    await pub.send(publishes(4, b"\x07", qos=2))
    await pub.send(encode(PubRel(7), 4) + encode(PingReq(), 4))  # early PUBREL
    await expect_nothing(pub)
    store.commit(b"\x07")
    assert await read(pub, 4, 3) == [PubRec(7), PubComp(7), PingResp()]


async def test_07_suback_after_earlier_pubacks(hub: Hub, connect: Connector) -> None:
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub")
    await pub.send(publishes(4, b"\x01"))
    await pub.send(encode(Subscribe(9, (Subscription("s", 0),)), 4))
    await pub.send(publishes(4, b"\x02"))
    await expect_nothing(pub)
    store.commit(b"\x01")
    assert await read(pub, 4, 2) == [PubAck(1), SubAck(9, (0,))]
    await expect_nothing(pub)  # 2 is pending
    store.commit(b"\x02")
    assert await pub.read_packet(4) == PubAck(2)
    await hub.publish(Message("s", b"x"))  # the subscription is in place
    assert await pub.read_packet(4) == Publish("s", b"x")


async def test_08_disconnect_waits_for_pending_acks(hub: Hub, connect: Connector) -> None:
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub")
    await pub.send(publishes(4, b"\x01", b"\x02") + encode(Disconnect(), 4))
    await expect_nothing(pub)
    assert not pub.closed
    store.commit(b"\x01", b"\x02")
    assert await read(pub, 4, 2) == [PubAck(1), PubAck(2)]
    await pub.wait_closed()


async def test_09_connection_lost_while_pending(
    hub: Hub, connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing is written after the close; nothing pending is acknowledged; no errors."""
    store = Store()
    hub.add_handler(store)
    gone = asyncio.Event()
    hub.add_listener(lambda event: gone.set())
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(publishes(5, b"\x01", b"\x02", b"\x03", qos=1))
    await pub.send(publishes(5, b"\x04", qos=2))
    await settle()
    pub.close()
    await asyncio.wait_for(gone.wait(), 5.0)
    bytes_out = hub.stats.bytes_out
    with caplog.at_level(logging.WARNING, logger="enos_lab.hub"):
        store.commit(b"\x01", b"\x03", b"\x04")
        store.fail(b"\x02")
        await settle()
    assert hub.stats.bytes_out == bytes_out
    assert "internal error" not in caplog.text
    assert [
        r for r in caplog.records if "store failed" not in r.getMessage() + str(r.exc_info)
    ] == []
    again, _ = await connect(hub, "pub", level=5)  # a new connection works normally
    await again.send(publishes(5, b"\x05"))
    await settle()
    store.commit(b"\x05")
    assert await again.read_packet(5) == PubAck(5)


async def test_10_qos0_awaitables_take_no_slot(
    hub: Hub, connect: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub")
    await pub.send(encode(Publish("p", b"\x00"), 4))
    await pub.send(publishes(4, b"\x01"))
    await pub.send(encode(PingReq(), 4))
    await settle()
    store.commit(b"\x01")  # the QoS 0 message is still being stored: no reason to wait
    assert await read(pub, 4, 2) == [PubAck(1), PingResp()]
    store.fail(b"\x00")
    await settle()
    assert "store failed" in caplog.text  # logged, nothing to answer
    await pub.send(publishes(4, b"\x02"))
    await settle()
    store.commit(b"\x02")
    assert await pub.read_packet(4) == PubAck(2)


async def test_11_coroutine_handlers_pipelined_and_cancelled_on_stop(
    make_hub: MakeHub, connect: Connector
) -> None:
    hub = await make_hub()
    release = asyncio.Event()
    started: list[bytes] = []

    async def slow(client: ClientInfo | None, message: Message) -> None:
        started.append(message.payload)
        await release.wait()

    hub.add_handler(slow)
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(publishes(5, b"\x01", b"\x02"))
    await settle()
    assert started == [b"\x01", b"\x02"]
    release.set()
    assert await read(pub, 5, 2) == [PubAck(1), PubAck(2)]
    release.clear()
    await pub.send(publishes(5, b"\x03"))
    await settle()
    await hub.stop()  # the pending handler task is cancelled; no acknowledgement
    await pub.wait_closed()
    assert await pub.read_packet(5) == Disconnect(0x8B)


async def test_12_failure_before_disconnect_publishes_no_will(hub: Hub, connect: Connector) -> None:
    """3.1.1: a normal DISCONNECT discards the will even when a pending message fails first."""
    watcher, _ = await connect(hub, "watcher")
    await watcher.send(encode(Subscribe(1, (Subscription("will", 0),)), 4))
    assert await watcher.read_packet(4) == SubAck(1, (0,))
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub", will=Will("will", b"gone"))
    await pub.send(publishes(4, b"\x01") + encode(Disconnect(), 4))
    await settle()
    store.fail(b"\x01")
    await pub.wait_closed()
    with pytest.raises(ClosedError):
        await pub.receive(timeout=1.0)  # not acknowledged
    await expect_nothing(watcher)


async def test_13_disconnect_does_not_wait_forever(hub: Hub, connect: Connector) -> None:
    """A DISCONNECT waits a bounded time for pending acknowledgements, then closes without."""
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub")
    await pub.send(publishes(4, b"\x01") + encode(Disconnect(), 4))
    await pub.wait_closed(timeout=10.0)  # the commit never finishes
    with pytest.raises(ClosedError):
        await pub.receive(timeout=1.0)
    store.commit(b"\x01")
    await settle()


async def test_14_pending_messages_count_against_the_receive_maximum(
    make_hub: MakeHub, connect: Connector
) -> None:
    hub = await make_hub(HubConfig(anonymous=True, receive_maximum=2))
    store = Store()
    hub.add_handler(store)
    pub, _ = await connect(hub, "pub", level=5)
    await pub.send(publishes(5, b"\x01", b"\x02"))
    await settle()
    store.commit(b"\x01", b"\x02")
    assert await read(pub, 5, 2) == [PubAck(1), PubAck(2)]  # settled ones free the window
    await pub.send(publishes(5, b"\x03", b"\x04", b"\x05"))  # 3 pending > receive maximum 2
    assert await pub.read_packet(5) == Disconnect(0x93)  # MQTT-3.3.4-9
    await pub.wait_closed()
