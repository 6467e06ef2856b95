"""Packets received before a client closes its socket are handled before the close.

A publisher writes a burst of QoS 0 PUBLISHes followed by DISCONNECT and closes the socket at
once. The hub handles a connection's packets a bounded number at a time (the rest waits for the
next loop iteration), so the end of the stream can arrive while most of the burst is still
waiting: every one of them must still be delivered, and the DISCONNECT still means "no will".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from enos_lab.hub import Hub, HubConfig, Message
from enos_lab.mqtt._codec import Decoder, encode
from enos_lab.mqtt._packets import Connect, Disconnect, Publish, Subscribe, Subscription, Will

Serve = Callable[..., None]  # the ``serve`` fixture of conftest.py
BURST = 200  # more than the hub handles per loop iteration, fewer than pause reading


async def _subscriber(
    port: int, *filters: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Decoder]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Connect(client_id="sub"), 4))
    writer.write(encode(Subscribe(1, tuple(Subscription(f, 0) for f in filters)), 4))
    decoder = Decoder(role="client", protocol_level=4)
    packets: list[object] = []
    while len(packets) < 2:  # CONNACK, SUBACK
        packets += decoder.feed(await reader.read(1024))
    return reader, writer, decoder


def test_burst_then_disconnect_and_close_is_delivered_completely(serve: Serve) -> None:
    async def body(hub: Hub, port: int) -> None:
        reader, writer, decoder = await _subscriber(port, "burst/#", "will")
        pub_reader, pub = await asyncio.open_connection("127.0.0.1", port)
        pub.write(encode(Connect(client_id="pub", will=Will("will", b"gone")), 4))
        assert await pub_reader.readexactly(4) == bytes.fromhex("20020000")
        burst = b"".join(encode(Publish("burst/t", b"%05d" % i), 4) for i in range(BURST))
        pub.write(burst + encode(Disconnect(), 4))
        pub.close()  # the end of the stream follows the burst immediately
        received: list[Publish] = []
        while len(received) < BURST:
            data = await asyncio.wait_for(reader.read(1 << 16), 5.0)
            assert data, f"hub closed the subscriber after {len(received)} messages"
            received += [p for p in decoder.feed(data) if isinstance(p, Publish)]
        assert [p.payload for p in received] == [b"%05d" % i for i in range(BURST)]
        await hub.publish(Message("burst/end", b"."))  # everything before it has arrived
        last = decoder.feed(await asyncio.wait_for(reader.read(1 << 16), 5.0))
        assert [p.topic for p in last if isinstance(p, Publish)] == ["burst/end"]  # no will
        writer.close()
        await writer.wait_closed()

    serve(body, HubConfig(anonymous=True))
