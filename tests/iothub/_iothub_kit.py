"""Test kit for the IoT Hub tests: a raw MQTT 3.1.1 device client and the test environment.

``Env`` holds a hub wired to an :class:`IotHub` over a real SQLite registry and a real
time-series store. Products: ``dirP`` (direct, model ``meter``), ``gwP`` (gateway, model
``meter``), ``subP`` (sub-device product, dynamic activation allowed, model ``meter``), ``dynP``
(direct, dynamic activation) and ``plainP`` (no model: passthrough).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from enos_lab.clock import Clock
from enos_lab.enos import SecureMode, login_credentials
from enos_lab.hub import Hub, HubConfig, MemoryConnection
from enos_lab.iothub import IotHub, IotHubConfig
from enos_lab.model import (
    Attribute,
    DataSpec,
    DataType,
    Event,
    EventType,
    I18nText,
    Measurepoint,
    ModelCatalog,
    Param,
    ThingModel,
)
from enos_lab.mqtt import (
    ConnAck,
    Connect,
    Packet,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)
from enos_lab.registry import Product, Registry
from enos_lab.store import StoreConfig, TimeSeriesStore

LEVEL = 4
TIMESTAMP = "1700000000000"


def meter_model() -> ThingModel:
    """A small thing model: points temp (FLOAT, quality), status (INT), attribute maxCurrent,
    event overheat (WARN, output level INT)."""
    return ThingModel(
        "meter",
        I18nText("Meter"),
        measurepoints={
            "temp": Measurepoint("temp", DataSpec(DataType.FLOAT), has_quality=True),
            "status": Measurepoint("status", DataSpec(DataType.INT)),
        },
        attributes={"maxCurrent": Attribute("maxCurrent", DataSpec(DataType.INT))},
        events={
            "overheat": Event(
                "overheat",
                EventType.WARN,
                (Param("level", DataSpec(DataType.INT), required=True),),
            )
        },
    )


class DeviceClient:
    """A raw MQTT 3.1.1 client on an in-memory connection (decoded packets, one reader)."""

    def __init__(self, conn: MemoryConnection, client_id: str) -> None:
        self.conn = conn
        self.client_id = client_id
        self._pid = 0
        self.inbox: list[Packet] = []

    def _next_pid(self) -> int:
        self._pid += 1
        return self._pid

    async def read_publish(self, timeout: float = 3.0, topic: str | None = None) -> Publish:
        """The next PUBLISH (on ``topic`` if given), acknowledging QoS 1; other packets are
        kept for later."""
        for index, packet in enumerate(self.inbox):
            if isinstance(packet, Publish) and topic in (None, packet.topic):
                del self.inbox[index]
                return packet
        while True:
            packet = await self.conn.read_packet(LEVEL, timeout)
            if isinstance(packet, Publish) and topic in (None, packet.topic):
                await self._ack(packet)
                return packet
            await self._stash(packet)

    async def _ack(self, packet: Publish) -> None:
        if packet.qos == 1:
            await self.conn.send(encode(PubAck(packet.packet_id), LEVEL))

    async def _stash(self, packet: Packet) -> None:
        """Keep ``packet`` for a later read (a QoS 1 PUBLISH is acknowledged now)."""
        if isinstance(packet, Publish):
            await self._ack(packet)
        self.inbox.append(packet)

    async def quiet(self, seconds: float = 0.2) -> bool:
        """True if the hub sends nothing for ``seconds``."""
        try:
            packet = await self.conn.read_packet(LEVEL, seconds)
        except TimeoutError:
            return True
        await self._stash(packet)
        return False

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe; returns the SUBACK code."""
        pid = self._next_pid()
        await self.conn.send(encode(Subscribe(pid, (Subscription(topic_filter, qos),)), LEVEL))
        while True:
            packet = await self.conn.read_packet(LEVEL, 5.0)
            if isinstance(packet, SubAck) and packet.packet_id == pid:
                return packet.reason_codes[0]
            await self._stash(packet)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish; for QoS 1 waits for the PUBACK."""
        pid = self._next_pid() if qos else 0
        await self.conn.send(encode(Publish(topic, payload, qos, packet_id=pid), LEVEL))
        if qos:
            while True:
                packet = await self.conn.read_packet(LEVEL, 5.0)
                if isinstance(packet, PubAck) and packet.packet_id == pid:
                    return
                await self._stash(packet)

    async def request(
        self,
        topic: str,
        params: Any = None,
        *,
        request_id: str = "1",
        method: str = "any",
        qos: int = 1,
        raw: bytes | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Subscribe to ``topic_reply``, publish a request, return the decoded reply."""
        await self.subscribe(topic + "_reply", qos)
        if raw is None:
            body = {"id": request_id, "version": "1.0", "method": method, "params": params}
            body.update(extra)
            raw = json.dumps(body).encode()
        await self.publish(topic, raw, qos)
        reply = await self.read_publish(topic=topic + "_reply")
        document: dict[str, Any] = json.loads(reply.payload)
        return document

    async def close(self) -> None:
        """Send DISCONNECT and wait until the hub closed the connection."""
        await self.conn.send(b"\xe0\x00")
        await self.conn.wait_closed()


class Env:
    """The hub, IoT Hub, registry, store and products of one test."""

    def __init__(
        self,
        tmp_path: Path,
        config: IotHubConfig,
        store_config: StoreConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.registry = Registry(tmp_path / "registry.sqlite3", clock=clock)
        self.store = TimeSeriesStore(tmp_path / "store", config=store_config, clock=clock)
        self.models = ModelCatalog()
        self.models.add(meter_model())
        self.iothub = IotHub(self.registry, self.models, self.store, config=config, clock=clock)
        self.hub = Hub(
            HubConfig(connect_timeout=5.0),
            authenticator=self.iothub,
            authoriser=self.iothub,
            clock=clock,
        )
        self.iothub.attach(self.hub)
        r = self.registry
        self.direct: Product = r.create_product("Direct", product_key="dirP", model_id="meter")
        self.gateway: Product = r.create_product(
            "Gateway", product_key="gwP", model_id="meter", node_type="gateway"
        )
        self.sub: Product = r.create_product(
            "Sub",
            product_key="subP",
            model_id="meter",
            node_type="sub_device",
            dynamic_activation=True,
        )
        self.dyn: Product = r.create_product(
            "Dyn", product_key="dynP", model_id="meter", dynamic_activation=True
        )
        self.plain: Product = r.create_product("Plain", product_key="plainP")
        self._count = 0

    async def connect(
        self, client_id: str, username: str | None, password: str | None, keep_alive: int = 60
    ) -> tuple[DeviceClient, ConnAck]:
        """Open a connection with these CONNECT fields; returns the client and the CONNACK."""
        conn = await self.hub.connect_memory()
        packet = Connect(
            client_id,
            LEVEL,
            "MQTT",
            True,
            keep_alive,
            username,
            password.encode() if password is not None else None,
        )
        await conn.send(encode(packet, LEVEL))
        connack = await conn.read_packet(LEVEL)
        assert isinstance(connack, ConnAck)
        return DeviceClient(conn, client_id), connack

    async def login(
        self,
        product_key: str,
        device_key: str,
        secret: str | None = None,
        *,
        mode: SecureMode = SecureMode.SECRET_PER_DEVICE,
        timestamp: str = TIMESTAMP,
    ) -> tuple[DeviceClient, ConnAck]:
        """Log a device in (the secret defaults to the registry's device secret)."""
        if secret is None:
            secret = self.registry.get_device(product_key, device_key).device_secret
        client_id, username, password = login_credentials(
            product_key, device_key, secret, secure_mode=mode, timestamp=timestamp
        )
        return await self.connect(client_id, username, password)

    async def device(self, product_key: str, device_key: str) -> DeviceClient:
        """Register (if needed) and log in a device; asserts CONNACK 0."""
        if self.registry.find_device(product_key, device_key) is None:
            self.registry.register_device(product_key, device_key=device_key)
        client, connack = await self.login(product_key, device_key)
        assert connack.reason_code == 0
        return client
