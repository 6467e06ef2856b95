"""paho-mqtt 2.x clients (MQTT 3.1.1 and 5.0, callback API version 2) against the hub.

paho runs its network loop in a thread (``loop_start``), so the hub runs on its own event loop
in a background thread (the ``threaded_hub`` fixture); the test thread only waits on queues.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from enos_lab.hub import Hub

WAIT = 5.0  # [s] longest wait for one event
PROTOCOLS = [
    pytest.param(MQTTProtocolVersion.MQTTv311, id="3.1.1"),
    pytest.param(MQTTProtocolVersion.MQTTv5, id="5.0"),
]


class HubThread(Protocol):
    """What the ``threaded_hub`` fixture provides."""

    hub: Hub
    port: int


@dataclass
class PahoPeer:
    """A connected paho client with queues fed by its callbacks."""

    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    subacks: queue.Queue[tuple[int, list[ReasonCode]]] = field(default_factory=queue.Queue)
    unsubacks: queue.Queue[int] = field(default_factory=queue.Queue)
    connected: threading.Event = field(default_factory=threading.Event)

    def subscribe(self, topic: str, qos: int) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted QoS / reason values."""
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        got_mid, codes = self.messages_get(self.subacks)
        assert got_mid == mid
        return [code.value for code in codes]

    def unsubscribe(self, topic: str) -> None:
        rc, mid = self.client.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        assert self.messages_get(self.unsubacks) == mid

    def publish(self, topic: str, payload: bytes, qos: int = 0, **kwargs: Any) -> None:
        """Publish and wait until the exchange for its QoS is complete."""
        info = self.client.publish(topic, payload, qos=qos, **kwargs)
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def next(self) -> mqtt.MQTTMessage:
        return self.messages_get(self.messages)

    def nothing(self, seconds: float = 0.3) -> None:
        try:
            extra = self.messages.get(timeout=seconds)
        except queue.Empty:
            return
        pytest.fail(f"unexpected message on {extra.topic!r}: {extra.payload!r}")

    @staticmethod
    def messages_get(source: queue.Queue[Any]) -> Any:
        try:
            return source.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"nothing arrived within {WAIT} s")


@pytest.fixture
def paho_peer(threaded_hub: HubThread) -> Iterator[Callable[..., PahoPeer]]:
    """Factory ``paho_peer(client_id, protocol)`` -> a connected :class:`PahoPeer` (stopped and
    disconnected after the test)."""
    made: list[PahoPeer] = []

    def factory(client_id: str, protocol: MQTTProtocolVersion) -> PahoPeer:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            reconnect_on_failure=False,
        )
        me = PahoPeer(client)

        def on_connect(_c: Any, _u: Any, _flags: Any, reason: ReasonCode, _p: Any) -> None:
            if not reason.is_failure:
                me.connected.set()

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            me.messages.put(message)

        def on_subscribe(_c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
            me.subacks.put((mid, codes))

        def on_unsubscribe(_c: Any, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
            me.unsubacks.put(mid)

        client.on_connect = on_connect
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        client.on_unsubscribe = on_unsubscribe
        client.connect("127.0.0.1", threaded_hub.port, keepalive=30)
        client.loop_start()
        made.append(me)
        assert me.connected.wait(WAIT), f"{client_id} got no successful CONNACK"
        return me

    yield factory
    for me in made:
        me.client.disconnect()
        me.client.loop_stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connect_subscribe_publish_receive(
    paho_peer: Callable[..., PahoPeer], protocol: MQTTProtocolVersion
) -> None:
    """paho connects, subscribes at QoS 2 and receives QoS 0, 1 and 2 messages published by
    another paho client, each once and at its own QoS (MQTT-3.8.4-6), in order (MQTT-4.6.0-6)."""
    sub = paho_peer("paho-sub", protocol)
    assert sub.subscribe("p/#", 2) == [2]
    pub = paho_peer("paho-pub", protocol)
    for qos in (0, 1, 2):
        pub.publish(f"p/{qos}", f"m{qos}".encode(), qos=qos)
    got = [sub.next() for _ in range(3)]
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        ("p/0", b"m0", 0, False),
        ("p/1", b"m1", 1, False),
        ("p/2", b"m2", 2, False),
    ]
    sub.nothing()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retained_and_unsubscribe(
    paho_peer: Callable[..., PahoPeer], protocol: MQTTProtocolVersion
) -> None:
    """A retained message reaches a later subscriber with RETAIN set (MQTT-3.3.1-6/8); after
    UNSUBSCRIBE nothing more arrives for that filter (MQTT-3.10.4-1)."""
    pub = paho_peer("paho-pub", protocol)
    pub.publish("p/state", b"on", qos=1, retain=True)
    sub = paho_peer("paho-sub", protocol)
    assert sub.subscribe("p/state", 1) == [1]
    got = sub.next()
    assert (got.topic, got.payload, got.qos, got.retain) == ("p/state", b"on", 1, True)
    sub.unsubscribe("p/state")
    pub.publish("p/state", b"off", qos=1)
    sub.nothing()


def test_v5_properties_round_trip(paho_peer: Callable[..., PahoPeer]) -> None:
    """5.0 MQTT-3.3.2-15..20: properties set by a paho publisher reach a paho subscriber."""
    sub = paho_peer("paho-sub", MQTTProtocolVersion.MQTTv5)
    sub.subscribe("p/req", 1)
    pub = paho_peer("paho-pub", MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "p/resp"
    props.CorrelationData = b"id-7"
    props.UserProperty = [("a", "1"), ("b", "2")]
    pub.publish("p/req", b"ping", qos=1, properties=props)
    got = sub.next()
    assert got.payload == b"ping"
    assert got.properties is not None
    assert got.properties.ResponseTopic == "p/resp"
    assert got.properties.CorrelationData == b"id-7"
    assert got.properties.UserProperty == [("a", "1"), ("b", "2")]


def test_v311_and_v5_clients_interoperate(paho_peer: Callable[..., PahoPeer]) -> None:
    """A 3.1.1 and a 5.0 paho client exchange messages through the hub in both directions."""
    old = paho_peer("paho-311", MQTTProtocolVersion.MQTTv311)
    new = paho_peer("paho-50", MQTTProtocolVersion.MQTTv5)
    old.subscribe("p/to-311", 1)
    new.subscribe("p/to-50", 1)
    new.publish("p/to-311", b"from 5.0", qos=1)
    old.publish("p/to-50", b"from 3.1.1", qos=1)
    assert old.next().payload == b"from 5.0"
    assert new.next().payload == b"from 3.1.1"
