"""gmqtt clients (MQTT 5.0 and 3.1.1 mode) against the hub over real TCP.

Each test runs inside ``asyncio.run`` (the ``serve`` fixture) with the hub listening on
127.0.0.1, port 0, and real gmqtt clients on the same event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from enos_lab.hub import Hub

Serve = Callable[..., None]  # the ``serve`` fixture of conftest.py
VERSIONS = [pytest.param(MQTTv311, id="3.1.1"), pytest.param(MQTTv50, id="5.0")]
WAIT = 5.0  # [s] longest wait for one event


@dataclass
class Received:
    """One message as gmqtt's on_message saw it."""

    topic: str
    payload: bytes
    qos: int
    properties: dict[str, Any]

    @property
    def retain(self) -> bool:
        return bool(self.properties.get("retain"))


@dataclass
class Peer:
    """A connected gmqtt client with queues fed by its callbacks."""

    client: gmqtt.Client
    inbox: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    subacks: asyncio.Queue[tuple[int, list[int]]] = field(default_factory=asyncio.Queue)
    unsubacks: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    async def subscribe(self, topic: str, qos: int) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted QoS list."""
        mid = self.client.subscribe(topic, qos=qos)
        got_mid, granted = await asyncio.wait_for(self.subacks.get(), WAIT)
        assert got_mid == mid
        return granted

    async def unsubscribe(self, topic: str) -> None:
        mid = self.client.unsubscribe(topic)
        assert await asyncio.wait_for(self.unsubacks.get(), WAIT) == mid

    async def next(self) -> Received:
        return await asyncio.wait_for(self.inbox.get(), WAIT)

    async def nothing(self, seconds: float = 0.3) -> None:
        """No message arrives for ``seconds``."""
        try:
            extra = await asyncio.wait_for(self.inbox.get(), seconds)
        except TimeoutError:
            return
        pytest.fail(f"unexpected message {extra}")


async def peer(
    client_id: str,
    port: int,
    version: int,
    *,
    will: gmqtt.Message | None = None,
    **properties: Any,
) -> Peer:
    """Connect a gmqtt client and wire its callbacks into a :class:`Peer`."""
    client = gmqtt.Client(client_id, will_message=will, **properties)
    me = Peer(client)

    def on_message(_c: Any, topic: str, payload: bytes, qos: int, props: dict[str, Any]) -> int:
        me.inbox.put_nowait(Received(topic, payload, qos, props))
        return 0

    def on_subscribe(_c: Any, mid: int, qos: list[int], _props: Any) -> None:
        me.subacks.put_nowait((mid, list(qos)))

    def on_unsubscribe(_c: Any, mid: int, _qos: Any) -> None:
        me.unsubacks.put_nowait(mid)

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_unsubscribe = on_unsubscribe
    await client.connect("127.0.0.1", port, version=version, keepalive=30)
    assert client.is_connected
    return me


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_and_receive_at_qos_0_1_2(serve: Serve, version: int) -> None:
    """Subscribe at QoS 2 and publish at QoS 0, 1 and 2: each message arrives once, at the QoS
    it was published with (MQTT-3.8.4-6 / 5.0 MQTT-3.8.4-8), in order (MQTT-4.6.0-6)."""

    async def body(hub: Hub, port: int) -> None:
        sub = await peer("g-sub", port, version)
        assert await sub.subscribe("g/+/data", 2) == [2]
        pub = await peer("g-pub", port, version)
        for qos in (0, 1, 2):
            pub.client.publish(f"g/{qos}/data", f"q{qos}".encode(), qos=qos)
        got = [await sub.next() for _ in range(3)]
        assert [(m.topic, m.payload, m.qos) for m in got] == [
            ("g/0/data", b"q0", 0),
            ("g/1/data", b"q1", 1),
            ("g/2/data", b"q2", 2),
        ]
        await sub.nothing()
        await pub.client.disconnect()
        await sub.client.disconnect()

    serve(body)


@pytest.mark.parametrize("version", VERSIONS)
def test_subscription_qos_caps_delivery(serve: Serve, version: int) -> None:
    """A QoS 2 message to a QoS 1 subscription arrives at QoS 1 (MQTT-3.8.4-6)."""

    async def body(hub: Hub, port: int) -> None:
        sub = await peer("g-sub", port, version)
        assert await sub.subscribe("g/cap", 1) == [1]
        pub = await peer("g-pub", port, version)
        pub.client.publish("g/cap", b"two", qos=2)
        got = await sub.next()
        assert (got.topic, got.payload, got.qos) == ("g/cap", b"two", 1)
        await pub.client.disconnect()
        await sub.client.disconnect()

    serve(body)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_reaches_later_subscriber(serve: Serve, version: int) -> None:
    """A retained message is stored and sent to a later subscriber with the RETAIN flag
    (MQTT-3.3.1-6 / MQTT-3.3.1-8); a live copy to an existing subscription has RETAIN 0
    (3.1.1 MQTT-3.3.1-9; 5.0 default Retain As Published 0, MQTT-3.3.1-12)."""

    async def body(hub: Hub, port: int) -> None:
        early = await peer("g-early", port, version)
        await early.subscribe("g/ret", 1)
        pub = await peer("g-pub", port, version)
        pub.client.publish("g/ret", b"state", qos=1, retain=True)
        live = await early.next()
        assert (live.payload, live.retain) == (b"state", False)
        late = await peer("g-late", port, version)
        await late.subscribe("g/ret", 1)
        got = await late.next()
        assert (got.topic, got.payload, got.qos, got.retain) == ("g/ret", b"state", 1, True)
        for client in (pub, early, late):
            await client.client.disconnect()

    serve(body)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_when_connection_is_dropped(serve: Serve, version: int) -> None:
    """The will is published when the connection ends without DISCONNECT (MQTT-3.1.2-8); here
    the hub drops the client (an administrative kick)."""

    async def body(hub: Hub, port: int) -> None:
        sub = await peer("g-sub", port, version)
        await sub.subscribe("g/will", 1)
        dying = await peer("g-dying", port, version, will=gmqtt.Message("g/will", b"gone", qos=1))
        dying.client.set_config({"reconnect_delay": 60})
        assert await hub.disconnect_client("g-dying") is True
        got = await sub.next()
        assert (got.topic, got.payload, got.qos) == ("g/will", b"gone", 1)
        await sub.client.disconnect()

    serve(body)


def test_v5_disconnect_with_will_reason_publishes_will(serve: Serve) -> None:
    """5.0 3.14.2.1: DISCONNECT with reason 0x04 publishes the will; reason 0x00 does not
    (MQTT-3.14.4-3)."""

    async def body(hub: Hub, port: int) -> None:
        sub = await peer("g-sub", port, MQTTv50)
        await sub.subscribe("g/w5", 0)
        quiet = await peer("g-quiet", port, MQTTv50, will=gmqtt.Message("g/w5", b"no"))
        await quiet.client.disconnect()
        loud = await peer("g-loud", port, MQTTv50, will=gmqtt.Message("g/w5", b"yes"))
        await loud.client.disconnect(reason_code=4)
        got = await sub.next()
        assert (got.topic, got.payload) == ("g/w5", b"yes")
        await sub.nothing()
        await sub.client.disconnect()

    serve(body)


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(serve: Serve, version: int) -> None:
    """After UNSUBACK no more messages arrive for the filter (MQTT-3.10.4-1); other
    subscriptions stay."""

    async def body(hub: Hub, port: int) -> None:
        sub = await peer("g-sub", port, version)
        await sub.subscribe("g/u", 0)
        await sub.subscribe("g/keep", 0)
        await sub.unsubscribe("g/u")
        pub = await peer("g-pub", port, version)
        pub.client.publish("g/u", b"dropped")
        pub.client.publish("g/keep", b"kept")
        got = await sub.next()
        assert (got.topic, got.payload) == ("g/keep", b"kept")
        await sub.nothing()
        await pub.client.disconnect()
        await sub.client.disconnect()

    serve(body)


def test_v5_properties_pass_through(serve: Serve) -> None:
    """5.0 MQTT-3.3.2-15..20: response topic, correlation data, content type and user
    properties published by one gmqtt client reach another unaltered."""

    async def body(hub: Hub, port: int) -> None:
        sub = await peer("g-sub", port, MQTTv50)
        await sub.subscribe("g/req", 1)
        pub = await peer("g-pub", port, MQTTv50)
        pub.client.publish(
            "g/req",
            b"{}",
            qos=1,
            response_topic="g/resp",
            correlation_data=b"c-1",
            content_type="application/json",
            user_property=[("k", "v"), ("k", "w")],
        )
        got = await sub.next()
        assert got.payload == b"{}"
        assert got.properties["response_topic"] == ["g/resp"]
        assert got.properties["correlation_data"] == [b"c-1"]
        assert got.properties["content_type"] == ["application/json"]
        assert got.properties["user_property"] == [("k", "v"), ("k", "w")]
        await pub.client.disconnect()
        await sub.client.disconnect()

    serve(body)


def test_mixed_versions_talk_to_each_other(serve: Serve) -> None:
    """A 3.1.1 client and a 5.0 client on the same hub exchange messages both ways."""

    async def body(hub: Hub, port: int) -> None:
        old = await peer("g-311", port, MQTTv311)
        new = await peer("g-50", port, MQTTv50)
        await old.subscribe("g/to-311", 1)
        await new.subscribe("g/to-50", 1)
        new.client.publish("g/to-311", b"hello 3.1.1", qos=1)
        old.client.publish("g/to-50", b"hello 5.0", qos=1)
        assert (await old.next()).payload == b"hello 3.1.1"
        assert (await new.next()).payload == b"hello 5.0"
        await old.client.disconnect()
        await new.client.disconnect()

    serve(body)
