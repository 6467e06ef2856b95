"""The fault-injecting link between gmqtt clients and the hub, over real TCP (127.0.0.1, port 0):
each fault, its counters, its scope, its bounds, and a client that misbehaves through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311

from enos_lab.clock import SimulatedClock
from enos_lab.errors import InvalidArgument
from enos_lab.hub import (
    ClientConnected,
    ClientDisconnected,
    DisconnectReason,
    Hub,
    HubConfig,
    HubEvent,
)
from enos_lab.sim import Direction, Link, LinkConfig, PartitionMode

WAIT = 5.0  # [s] longest wait for something that must happen
QUIET = 0.3  # [s] how long "nothing arrives" is watched


@dataclass
class Peer:
    """A connected gmqtt client whose messages and disconnects land in queues."""

    client: gmqtt.Client
    inbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.inbox.get(), WAIT)

    async def take(self, n: int) -> list[bytes]:
        return [await self.next() for _ in range(n)]

    async def nothing(self) -> None:
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(self.inbox.get(), QUIET)
            pytest.fail(f"unexpected message {extra!r}")


@dataclass
class Bench:
    """A hub, a link to it, and the clients made through the link."""

    hub: Hub
    link: Link
    events: list[HubEvent]
    changed: asyncio.Event
    peers: list[Peer] = field(default_factory=list)

    async def peer(self, client_id: str, *, subscribe: str | None = None, **kwargs: Any) -> Peer:
        client = gmqtt.Client(client_id, **kwargs)
        client.set_config({"reconnect_delay": 0.05, "reconnect_retries": 50})
        me = Peer(client)

        def on_message(_c: Any, _topic: str, payload: bytes, _qos: int, _props: Any) -> int:
            me.inbox.put_nowait(payload)
            return 0

        client.on_message = on_message
        client.on_disconnect = lambda *_: me.lost.set()
        await client.connect("127.0.0.1", self.link.port, version=MQTTv311, keepalive=60)
        self.peers.append(me)
        if subscribe:
            subscribed = asyncio.Event()
            client.on_subscribe = lambda *_: subscribed.set()
            client.subscribe(subscribe, qos=1)
            await asyncio.wait_for(subscribed.wait(), WAIT)
        return me

    async def hub_event(self, kind: type, count: int = 1) -> Any:
        """The ``count``-th hub event of ``kind`` (waits for it)."""

        def found() -> list[HubEvent]:
            return [e for e in self.events if isinstance(e, kind)]

        async def wait() -> None:
            while len(found()) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), WAIT)
        return found()[count - 1]


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Whether the other side closes the connection (end of stream or reset) before sending."""
    try:
        return await asyncio.wait_for(reader.read(1), WAIT) == b""
    except ConnectionResetError:
        return True


@contextlib.asynccontextmanager
async def bench(
    *, seed: int = 1, clock: SimulatedClock | None = None, config: LinkConfig | None = None
) -> AsyncIterator[Bench]:
    hub = Hub(HubConfig(anonymous=True), clock=clock)
    await hub.start()
    listener = await hub.listen_tcp("127.0.0.1", 0)
    link = Link("127.0.0.1", listener.port, seed=seed, clock=clock, config=config)
    await link.start()
    events: list[HubEvent] = []
    changed = asyncio.Event()

    def record(event: HubEvent) -> None:
        events.append(event)
        changed.set()

    hub.add_listener(record)
    setup = Bench(hub, link, events, changed)
    try:
        yield setup
    finally:
        for peer in setup.peers:
            peer.client.reconnect_retries = 0
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.client.disconnect(), 1.0)
        await link.close()
        await hub.stop()


async def test_packets_pass_unchanged_and_are_counted() -> None:
    async with bench() as b:
        sub = await b.peer("sub", subscribe="t/#")
        pub = await b.peer("pub")
        for qos in (0, 1, 2):
            pub.client.publish(f"t/{qos}", f"m{qos}".encode(), qos=qos)
        assert await sub.take(3) == [b"m0", b"m1", b"m2"]
        assert [c.client_id for c in b.link.connections] == ["sub", "pub"]
        stats = b.link.stats
        assert (stats.accepted, stats.active, stats.refused, stats.cut) == (2, 2, 0, 0)
        assert stats.up.publishes == 3 and stats.down.publishes == 3
        assert stats.up.dropped == stats.up.duplicated == stats.up.reordered == 0
        assert b.hub.stats.messages_in == 3
        assert stats.up.bytes == sum(c.up.bytes for c in b.link.connections)


async def test_drop_loses_publishes_and_gmqtt_resends_a_qos1_one_after_a_reconnect() -> None:
    async with bench() as b:
        sub = await b.peer("sub", subscribe="t")
        pub = await b.peer("pub", clean_session=False)  # gmqtt resends within a session
        b.link.client("pub").drop(1.0, Direction.UP)
        pub.client.publish("t", b"lost", qos=0)
        pub.client.publish("t", b"kept by the client", qos=1)  # no PUBACK comes back
        await sub.nothing()
        assert b.link.stats.up.dropped == 2
        b.link.client("pub").clear()
        assert b.link.client("pub").cut() == 1  # gmqtt reconnects and resends its QoS 1 message
        assert await sub.next() == b"kept by the client"
        assert b.link.stats.cut == 1


async def test_a_drop_rate_is_seeded_and_every_publish_is_accounted_for() -> None:
    received = []
    for _ in range(2):
        async with bench(seed=42) as b:
            sub = await b.peer("sub", subscribe="t")
            pub = await b.peer("pub")
            b.link.client("pub").drop(0.3, "up")
            for i in range(200):
                pub.client.publish("t", str(i).encode(), qos=0)
            stats = await b.link.wait(lambda s: s.up.publishes >= 200)
            assert 30 < stats.up.dropped < 100
            received.append(await sub.take(200 - stats.up.dropped))
            await sub.nothing()
    assert received[0] == received[1]  # the same seed loses the same messages


async def test_duplicate_sends_each_publish_twice() -> None:
    async with bench() as b:
        sub = await b.peer("sub", subscribe="t")
        pub = await b.peer("pub")
        b.link.duplicate(1.0, Direction.UP)
        for name in (b"a", b"b", b"c"):
            pub.client.publish("t", name, qos=0)
        assert await sub.take(6) == [b"a", b"a", b"b", b"b", b"c", b"c"]
        assert b.link.stats.up.duplicated == 3
        assert b.hub.stats.messages_in == 6


async def test_reorder_shuffles_within_windows_and_keeps_every_packet() -> None:
    async with bench(seed=3) as b:
        sub = await b.peer("sub", subscribe="t")
        pub = await b.peer("pub")
        b.link.reorder(5, "up", hold=0.05)
        sent = [str(i).encode() for i in range(20)]
        for payload in sent:
            pub.client.publish("t", payload, qos=0)
        got = await sub.take(20)
        assert got != sent
        for w in range(4):
            assert sorted(got[5 * w : 5 * w + 5]) == sorted(sent[5 * w : 5 * w + 5])
        assert b.link.stats.up.reordered > 0
        # an incomplete window goes after its hold time, still shuffled within itself
        for payload in (b"x", b"y"):
            pub.client.publish("t", payload, qos=0)
        assert sorted(await sub.take(2)) == [b"x", b"y"]
        assert b.link.stats.up.queued == 0


async def test_delay_waits_on_the_links_clock_and_keeps_order() -> None:
    clock = SimulatedClock()
    async with bench(clock=clock) as b:
        sub = await b.peer("sub", subscribe="t")
        pub = await b.peer("pub")
        b.link.delay(5.0, "up")
        for payload in (b"1", b"2", b"3"):
            pub.client.publish("t", payload, qos=0)
        await sub.nothing()
        assert b.link.stats.up.queued > 0
        await clock.advance_async(4.9)
        await sub.nothing()
        await clock.advance_async(0.2)
        assert await sub.take(3) == [b"1", b"2", b"3"]
        assert b.link.stats.up.delayed == 3
        assert b.link.stats.up.queued == 0


async def test_a_full_queue_stops_reading_from_the_sender() -> None:
    clock = SimulatedClock()
    async with bench(clock=clock, config=LinkConfig(max_queued_bytes=2_000)) as b:
        sub = await b.peer("sub", subscribe="t")
        pub = await b.peer("pub")
        b.link.client("pub").delay(10.0, "up")
        payload = b"x" * 500
        for _ in range(40):
            pub.client.publish("t", payload, qos=0)
        stats = await b.link.wait(lambda s: s.up.stalls >= 1)  # it stops reading at its bound
        assert 2_000 <= stats.up.queued < 2_000 + 65_536
        await sub.nothing()
        for _ in range(40):
            # each advance sends what was due, and the link reads the next part of the flood
            await clock.advance_async(10.0)
            if b.link.stats.down.publishes == 40:
                break
            await b.link.wait(lambda s: s.up.queued > 0 or s.up.publishes == 40)
        assert len(await sub.take(40)) == 40


async def test_a_blackhole_partition_loses_everything_and_refuses_new_connections() -> None:
    async with bench() as b:
        sub = await b.peer("sub", subscribe="t")
        pub = await b.peer("pub")
        b.link.partition()
        for _ in range(1000):  # a flood is counted, not kept
            pub.client.publish("t", b"x" * 100, qos=0)
        await sub.nothing()
        assert b.link.stats.up.queued == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", b.link.port)
        assert await closed_by_peer(reader)
        writer.close()
        assert b.link.stats.refused == 1
        blackholed = b.link.stats.up.blackholed
        assert blackholed > 0
        b.link.heal()
        pub.client.publish("t", b"after", qos=0)
        assert await sub.next() == b"after"
        assert b.link.stats.up.blackholed == blackholed


async def test_the_hub_giving_up_is_hidden_until_the_partition_heals() -> None:
    clock = SimulatedClock()
    async with bench(clock=clock) as b:
        pub = await b.peer("pub")
        b.link.client("pub").partition(PartitionMode.BLACKHOLE)
        await clock.advance_async(91.0)  # keep alive 60 s on the hub's (simulated) clock
        gone = await b.hub_event(ClientDisconnected)
        assert gone.reason is DisconnectReason.KEEP_ALIVE_TIMEOUT
        assert not pub.lost.is_set()  # the client has not been told
        assert pub.client.is_connected
        b.link.heal()  # now its connection is reset, and it reconnects
        await asyncio.wait_for(pub.lost.wait(), WAIT)


async def test_cut_resets_both_sides_without_a_disconnect() -> None:
    async with bench() as b:
        watcher = await b.peer("watcher", subscribe="will/#")
        will = gmqtt.Message("will/device", b"gone", qos=1)
        device = await b.peer("device", will_message=will)
        assert b.link.client("device").cut() == 1
        assert await watcher.next() == b"gone"  # the hub saw no DISCONNECT: it sent the will
        gone = await b.hub_event(ClientDisconnected)
        assert gone.reason is DisconnectReason.CONNECTION_LOST
        await asyncio.wait_for(device.lost.wait(), WAIT)
        assert b.link.stats.cut == 1
        await b.hub_event(ClientConnected, 3)  # the device is back
        device.client.reconnect_retries = 0
        assert b.link.cut() == 2  # every connection
        await asyncio.wait_for(watcher.lost.wait(), WAIT)


async def test_a_cut_partition_resets_and_refuses_until_healed() -> None:
    async with bench() as b:
        device = await b.peer("device")
        b.link.client("device").partition("cut")
        await asyncio.wait_for(device.lost.wait(), WAIT)
        await b.hub_event(ClientDisconnected)
        await b.link.wait(lambda s: s.refused >= 1)  # gmqtt retries every 50 ms: refused
        b.link.client("device").heal()
        await b.hub_event(ClientConnected, 2)
        assert b.link.stats.active == 1


async def test_the_most_specific_scope_decides() -> None:
    async with bench() as b:
        sub = await b.peer("sub", subscribe="t")
        first = await b.peer("first")
        second = await b.peer("second")
        b.link.drop(1.0, "up")
        b.link.client("second").drop(0.0, "up")
        first.client.publish("t", b"from first", qos=0)
        second.client.publish("t", b"from second", qos=0)
        assert await sub.next() == b"from second"
        connection = next(c for c in b.link.connections if c.client_id == "first")
        connection.drop(0.0, "up")  # this connection only
        first.client.publish("t", b"first again", qos=0)
        assert await sub.next() == b"first again"
        assert connection.up.dropped == 1
        b.link.clear()
        assert b.link.stats.up.dropped == 1


async def test_bad_settings_are_refused_naming_the_value() -> None:
    async with bench() as b:
        with pytest.raises(InvalidArgument, match=r"1\.5"):
            b.link.drop(1.5)
        with pytest.raises(InvalidArgument, match="sideways"):
            b.link.delay(1.0, "sideways")
        with pytest.raises(InvalidArgument, match="window"):
            b.link.reorder(0)
        with pytest.raises(InvalidArgument, match="'flood'"):
            b.link.partition("flood")
        with pytest.raises(InvalidArgument, match="max_queued_bytes"):
            LinkConfig(max_queued_bytes=0)


async def test_a_client_sending_garbage_ends_only_its_own_connection() -> None:
    async with bench() as b:
        sub = await b.peer("sub", subscribe="t")
        pub = await b.peer("pub")
        reader, writer = await asyncio.open_connection("127.0.0.1", b.link.port)
        writer.write(b"\x30\xff\xff\xff\xff\x01")  # a remaining length of 5 bytes
        assert await closed_by_peer(reader)
        writer.close()
        pub.client.publish("t", b"still here", qos=0)
        assert await sub.next() == b"still here"
        assert b.link.stats.active == 2


async def test_close_resets_every_connection_and_stops_listening() -> None:
    async with bench() as b:
        pub = await b.peer("pub")
        port = b.link.port
        await b.link.close()
        await asyncio.wait_for(pub.lost.wait(), WAIT)
        assert b.link.stats.active == 0
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
