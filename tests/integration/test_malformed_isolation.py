"""One client's bad bytes never hurt the others: malformed-packet isolation over real TCP.

Well-behaved gmqtt clients (3.1.1 and 5.0) exchange messages while raw sockets send garbage, a
malformed packet or an absurd declared length. Each bad socket is closed by the hub
(3.1.1 MQTT-4.8.0-1; 5.0 4.13 with a DISCONNECT reason code first); the good clients keep
publishing and receiving, and the hub still accepts new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from enos_lab.hub import Hub, HubConfig

Serve = Callable[..., None]  # the ``serve`` fixture of conftest.py
WAIT = 5.0  # [s]

CONNECT_311 = bytes.fromhex("10 10 00 04 4d 51 54 54 04 02 00 3c 00 04 62 61 64 34")  # "bad4"
CONNACK_311 = bytes.fromhex("20 02 00 00")
CONNECT_5 = bytes.fromhex("10 11 00 04 4d 51 54 54 05 02 00 3c 00 00 04 62 61 64 35")  # "bad5"


class Good:
    """A gmqtt client that records what it receives."""

    def __init__(self, client_id: str) -> None:
        self.client = gmqtt.Client(client_id)
        self.inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.subscribed: asyncio.Queue[int] = asyncio.Queue()

        def on_message(_c: Any, topic: str, payload: bytes, _qos: int, _p: Any) -> int:
            self.inbox.put_nowait((topic, payload))
            return 0

        self.client.on_message = on_message
        self.client.on_subscribe = lambda _c, mid, _q, _p: self.subscribed.put_nowait(mid)

    async def start(self, port: int, version: int, topic: str) -> None:
        await self.client.connect("127.0.0.1", port, version=version, keepalive=30)
        mid = self.client.subscribe(topic, qos=1)
        assert await asyncio.wait_for(self.subscribed.get(), WAIT) == mid


async def exchange(sender: Good, receivers: list[Good], tag: str) -> None:
    """``sender`` publishes three QoS 1 messages; every receiver gets all three in order."""
    payloads = [f"{tag}-{i}".encode() for i in range(3)]
    for payload in payloads:
        sender.client.publish("iso/data", payload, qos=1)
    for receiver in receivers:
        got = [await asyncio.wait_for(receiver.inbox.get(), WAIT) for _ in payloads]
        assert got == [("iso/data", p) for p in payloads]


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the hub sends until it closes the socket (a reset counts as closed)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


async def attack(port: int, kind: str) -> None:
    """Open a raw socket, misbehave in the way ``kind`` names, check the hub closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == "http-request":
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # MQTT-3.1.0-1
            assert await read_until_closed(reader) == b""
        elif kind == "random-bytes":
            # Seeded noise; the first byte (packet type 0, reserved) makes the outcome certain.
            writer.write(b"\x00" + random.Random(1234).randbytes(65535))
            await writer.drain()
            data = await read_until_closed(reader)
            assert not data.startswith(b"\x20\x02\x00\x00"), "garbage was accepted as CONNECT"
        elif kind == "malformed-3.1.1":
            writer.write(CONNECT_311)
            assert await reader.readexactly(4) == CONNACK_311
            writer.write(b"\x36\x00")  # PUBLISH with QoS 3, MQTT-3.3.1-4
            assert await read_until_closed(reader) == b""
        elif kind == "malformed-5.0":
            writer.write(CONNECT_5)
            connack = await reader.readexactly(2)
            assert connack[0] == 0x20
            await reader.readexactly(connack[1])
            writer.write(b"\x36\x00")
            data = await read_until_closed(reader)
            assert data[:1] == b"\xe0", data.hex(" ")
            assert data[2] == 0x81, data.hex(" ")
        elif kind == "oversized-length-3.1.1":
            writer.write(CONNECT_311)
            assert await reader.readexactly(4) == CONNACK_311
            writer.write(bytes.fromhex("30 ff ff ff 7f"))  # declares 268,435,455 bytes
            assert await read_until_closed(reader) == b""
        elif kind == "oversized-length-5.0":
            writer.write(CONNECT_5)
            connack = await reader.readexactly(2)
            await reader.readexactly(connack[1])
            writer.write(bytes.fromhex("30 ff ff ff 7f"))
            data = await read_until_closed(reader)
            assert data[:1] == b"\xe0", data.hex(" ")
            assert data[2] == 0x95, data.hex(" ")
        else:
            raise AssertionError(kind)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


ATTACKS = [
    "http-request",
    "random-bytes",
    "malformed-3.1.1",
    "malformed-5.0",
    "oversized-length-3.1.1",
    "oversized-length-5.0",
]


@pytest.mark.parametrize("kind", ATTACKS)
def test_bad_client_is_closed_and_others_carry_on(serve: Serve, kind: str) -> None:
    """The misbehaving socket is closed; the connected clients keep publishing and receiving
    afterwards, and a new client can connect."""

    async def body(hub: Hub, port: int) -> None:
        a = Good("iso-a")
        await a.start(port, MQTTv311, "iso/#")
        b = Good("iso-b")
        await b.start(port, MQTTv50, "iso/#")
        await exchange(a, [a, b], "before")
        await attack(port, kind)
        assert "bad4" not in hub.clients
        assert "bad5" not in hub.clients
        await exchange(b, [a, b], "after")
        c = Good("iso-c")
        await c.start(port, MQTTv50, "iso/#")
        await exchange(c, [a, b, c], "new")
        for good in (a, b, c):
            await good.client.disconnect()

    serve(body)


def test_many_bad_sockets_at_once(serve: Serve) -> None:
    """Twenty misbehaving sockets at the same time, while two clients keep exchanging."""

    async def body(hub: Hub, port: int) -> None:
        a = Good("iso-a")
        await a.start(port, MQTTv311, "iso/#")
        b = Good("iso-b")
        await b.start(port, MQTTv50, "iso/#")
        kinds = ["http-request", "random-bytes", "oversized-length-3.1.1"] * 6 + [
            "malformed-3.1.1",
            "malformed-5.0",
        ]
        attacks = asyncio.gather(*(attack(port, kind) for kind in kinds))
        await exchange(a, [a, b], "during")
        await attacks
        await exchange(b, [a, b], "after")
        assert set(hub.clients) == {"iso-a", "iso-b"}
        for good in (a, b):
            await good.client.disconnect()

    serve(body)


@pytest.mark.parametrize("version", [MQTTv311, MQTTv50], ids=["3.1.1", "5.0"])
def test_socket_dropped_mid_packet_publishes_will(serve: Serve, version: int) -> None:
    """A client whose TCP connection is reset in the middle of a packet is treated as gone: its
    will is published (MQTT-3.1.2-8) and the others are unaffected."""

    async def body(hub: Hub, port: int) -> None:
        watcher = Good("iso-watch")
        await watcher.start(port, version, "iso/#")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # CONNECT "w", clean session, will QoS 0 "iso/will" = "lost" (3.1.1)
        writer.write(
            bytes.fromhex("10 1d 00 04 4d 51 54 54 04 06 00 3c 00 01 77 00 08")
            + b"iso/will"
            + bytes.fromhex("00 04")
            + b"lost"
        )
        assert await reader.readexactly(4) == CONNACK_311
        writer.write(bytes.fromhex("30 20 00 08") + b"iso/da")  # a PUBLISH cut short
        await writer.drain()
        writer.transport.abort()
        got = await asyncio.wait_for(watcher.inbox.get(), WAIT)
        assert got == ("iso/will", b"lost")
        await exchange(watcher, [watcher], "still")
        await watcher.client.disconnect()

    serve(body)


def test_slow_reader_does_not_hold_up_others(serve: Serve) -> None:
    """A subscriber that never reads its socket (6.4 MB of QoS 0 messages pile up against a
    512 KiB output bound) neither blocks the publisher nor delays a normal subscriber; the hub
    drops that client's messages or closes it."""

    async def body(hub: Hub, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bytes.fromhex("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 73 6c"))  # "sl"
        assert await reader.readexactly(4) == CONNACK_311
        writer.write(bytes.fromhex("82 0d 00 01 00 08") + b"iso/data" + b"\x00")
        assert await reader.readexactly(5) == bytes.fromhex("90 03 00 01 00")
        fast = Good("iso-fast")
        await fast.start(port, MQTTv50, "iso/#")
        pub = Good("iso-pub")
        await pub.start(port, MQTTv311, "iso/none")
        chunk = b"x" * 65536
        for i in range(100):
            pub.client.publish("iso/data", i.to_bytes(2, "big") + chunk)
        for i in range(100):
            topic, payload = await asyncio.wait_for(fast.inbox.get(), WAIT)
            assert (topic, payload[:2]) == ("iso/data", i.to_bytes(2, "big"))
        assert "sl" not in hub.clients or hub.stats.dropped > 0
        writer.transport.abort()
        for good in (fast, pub):
            await good.client.disconnect()

    serve(body, HubConfig(anonymous=True, max_buffered_bytes=512 * 1024))
