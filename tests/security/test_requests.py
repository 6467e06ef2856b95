"""Attacks on the IoT hub's request handling, over real TCP.

Every device is an adversary of every other device: what one device posts may fail only its
own request, with its own EnOS reply code, and the connection stays up. The hub here is the
lab's hub with the EnOS services over a real SQLite registry and a real DuckDB store,
listening on 127.0.0.1 (free port); devices are raw MQTT 3.1.1 clients on TCP sockets.

Covered: registration through MQTT (a gateway operation for sub-devices, protocol 8.1); one
device's bad post in a batch shared with other devices' posts; event times the store cannot
represent; payloads that are not strict JSON (nesting depth, NaN, 1e400, lone surrogates);
identifiers of passthrough products; posts to topics outside the EnOS catalogue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from enos_lab.enos import MAX_JSON_DEPTH, SecureMode, login_credentials
from enos_lab.hub import Hub, HubConfig
from enos_lab.iothub import IotHub
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
    Decoder,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)
from enos_lab.registry import Registry
from enos_lab.store import MAX_EVENT_MS, MIN_EVENT_MS, TimeSeriesStore

pytestmark = pytest.mark.anyio

LEVEL = 4  # MQTT 3.1.1, as the EnOS SDKs speak it
WAIT = 10.0  # [s] upper bound of every wait for the hub
T0 = 1_700_000_000_000  # [ms]
PacketT = TypeVar("PacketT", bound=Packet)


def meter_model() -> ThingModel:
    """Points temp (FLOAT, quality), power (DOUBLE), status (INT); attribute maxCurrent (INT);
    event overheat (output level, INT)."""
    return ThingModel(
        "meter",
        I18nText("Meter"),
        measurepoints={
            "temp": Measurepoint("temp", DataSpec(DataType.FLOAT), has_quality=True),
            "power": Measurepoint("power", DataSpec(DataType.DOUBLE)),
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


class TcpDevice:
    """A raw MQTT 3.1.1 client on a TCP socket: the lab's codec, one reader, QoS 1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = Decoder(role="client", max_packet_size=1 << 24, protocol_level=LEVEL)
        self._packets: deque[Packet] = deque()
        self._stash: list[Packet] = []
        self._pid = 0
        self._subscribed: set[str] = set()

    @classmethod
    async def open(cls, port: int, client_id: str, username: str, password: str) -> TcpDevice:
        """Connect and log in; asserts CONNACK 0."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        device = cls(reader, writer)
        device.send(Connect(client_id, LEVEL, "MQTT", True, 60, username, password.encode()))
        connack = await device.expect(ConnAck)
        assert connack.reason_code == 0, connack
        return device

    def send(self, packet: Packet) -> None:
        self.writer.write(encode(packet, LEVEL))

    async def _next(self) -> Packet:
        while not self._packets:
            data = await asyncio.wait_for(self.reader.read(1 << 16), WAIT)
            if not data:
                raise ConnectionError("the hub closed the connection")
            self._packets.extend(self._decoder.feed(data))
        packet = self._packets.popleft()
        if isinstance(packet, Publish) and packet.qos == 1:
            self.send(PubAck(packet.packet_id))
        return packet

    async def expect(self, kind: type[PacketT], topic: str | None = None, pid: int = 0) -> PacketT:
        """The next packet of ``kind`` (on ``topic``, with packet id ``pid`` if given); other
        packets are kept for later calls."""

        def fits(packet: Packet) -> bool:
            if not isinstance(packet, kind):
                return False
            if topic is not None and getattr(packet, "topic", None) != topic:
                return False
            return not pid or getattr(packet, "packet_id", 0) == pid

        for index, packet in enumerate(self._stash):
            if fits(packet):
                del self._stash[index]
                return packet  # type: ignore[return-value]
        while True:
            packet = await self._next()
            if fits(packet):
                return packet  # type: ignore[return-value]
            self._stash.append(packet)

    async def subscribe(self, topic_filter: str) -> int:
        """Subscribe at QoS 1 (once per filter); returns the SUBACK code."""
        self._pid += 1
        self.send(Subscribe(self._pid, (Subscription(topic_filter, 1),)))
        suback = await self.expect(SubAck, pid=self._pid)
        self._subscribed.add(topic_filter)
        return suback.reason_codes[0]

    def publish_nowait(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 without waiting; returns the packet id."""
        self._pid += 1
        self.send(Publish(topic, payload, 1, packet_id=self._pid))
        return self._pid

    async def reply(self, topic: str) -> dict[str, Any]:
        """The next reply to a request on ``topic``."""
        packet = await self.expect(Publish, topic=topic + "_reply")
        document: dict[str, Any] = json.loads(packet.payload)
        return document

    async def request(self, topic: str, payload: bytes | dict[str, Any]) -> dict[str, Any]:
        """Publish a request (subscribing to its reply topic first); the reply, after the
        PUBACK of the request arrived."""
        if topic + "_reply" not in self._subscribed:
            await self.subscribe(topic + "_reply")
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        pid = self.publish_nowait(topic, raw)
        document = await self.reply(topic)
        await self.expect(PubAck, pid=pid)
        return document

    async def alive(self) -> None:
        """The connection answers a PINGREQ."""
        self.send(PingReq())
        await self.expect(PingResp)

    async def close(self) -> None:
        self.writer.write(b"\xe0\x00")
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class TcpLab:
    """The hub with the EnOS services on TCP, a registry and a store; products ``dirP``
    (direct, model ``meter``), ``gwP`` (gateway), ``subP`` (sub-device), ``plainP`` (direct, no
    model: passthrough) and ``gwDyn`` (gateway, dynamic activation)."""

    def __init__(self, tmp_path: Path) -> None:
        self.registry = Registry(tmp_path / "registry.sqlite3")
        self.store = TimeSeriesStore(tmp_path / "store")
        models = ModelCatalog()
        models.add(meter_model())
        self.iothub = IotHub(self.registry, models, self.store)
        self.hub = Hub(
            HubConfig(connect_timeout=5.0), authenticator=self.iothub, authoriser=self.iothub
        )
        self.iothub.attach(self.hub)
        r = self.registry
        r.create_product("Direct", product_key="dirP", model_id="meter")
        r.create_product("Gateway", product_key="gwP", model_id="meter", node_type="gateway")
        r.create_product("Sub", product_key="subP", model_id="meter", node_type="sub_device")
        r.create_product("Plain", product_key="plainP")
        r.create_product(
            "Gateway dyn", product_key="gwDyn", node_type="gateway", dynamic_activation=True
        )
        self.port = 0
        self.devices: list[TcpDevice] = []

    async def device(self, product_key: str, device_key: str) -> TcpDevice:
        """Register (if needed) and log in a device with its own secret (secure mode 2)."""
        found = self.registry.find_device(product_key, device_key)
        if found is None:
            found = self.registry.register_device(product_key, device_key=device_key)
        return await self._open(product_key, device_key, found.device_secret)

    async def _open(
        self,
        product_key: str,
        device_key: str,
        secret: str,
        mode: SecureMode = SecureMode.SECRET_PER_DEVICE,
    ) -> TcpDevice:
        client_id, username, password = login_credentials(
            product_key, device_key, secret, secure_mode=mode, timestamp="1700000000000"
        )
        device = await TcpDevice.open(self.port, client_id, username, password)
        self.devices.append(device)
        return device

    async def channel(self, product_key: str) -> TcpDevice:
        """A message-integration channel of ``product_key`` (secure mode 4)."""
        secret = self.registry.get_product(product_key).product_secret
        return await self._open(product_key, "%channel%", secret, SecureMode.INTEGRATION)

    async def activation_session(self, product_key: str, device_key: str) -> TcpDevice:
        """A dynamic-activation login (secure mode 3) of a registered, inactive device."""
        self.registry.register_device(product_key, device_key=device_key)
        secret = self.registry.get_product(product_key).product_secret
        return await self._open(product_key, device_key, secret, SecureMode.DYNAMIC_ACTIVATION)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[TcpLab]:
    """A started :class:`TcpLab`."""
    made = TcpLab(tmp_path)
    await made.hub.start()
    try:
        listener = await made.hub.listen_tcp("127.0.0.1", 0)
        made.port = listener.port
        yield made
    finally:
        for device in made.devices:
            with contextlib.suppress(Exception):
                await device.close()
        await made.hub.stop()
        made.store.close()
        made.registry.close()


def post_topic(pk: str, dk: str, kind: str = "measurepoint/post") -> str:
    return f"/sys/{pk}/{dk}/thing/{kind}"


def body(request_id: str, params: Any, method: str = "thing.measurepoint.post") -> bytes:
    return json.dumps(
        {"id": request_id, "version": "1.0", "method": method, "params": params}
    ).encode()


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` nested arrays around ``leaf``."""
    return "[" * depth + leaf + "]" * depth


# -- registration through MQTT (protocol 8.1) ----------------------------------------------


async def test_direct_device_may_not_register_devices(lab: TcpLab) -> None:
    direct = await lab.device("dirP", "d1")
    for product_key in ("subP", "dirP", "plainP", "gwP"):
        reply = await direct.request(
            post_topic("dirP", "d1", "device/register"),
            body("r", [{"productKey": product_key, "deviceKey": "x1"}], "thing.device.register"),
        )
        assert (reply["id"], reply["code"]) == ("r", 1200), reply
        assert "not a gateway" in reply["message"]
        assert lab.registry.find_device(product_key, "x1") is None
    assert {d.device_key for d in lab.registry.devices()} == {"d1"}


async def test_gateway_registers_only_sub_devices(lab: TcpLab) -> None:
    gateway = await lab.device("gwP", "g1")
    topic = post_topic("gwP", "g1", "device/register")
    for product_key, kind in (("dirP", "direct"), ("plainP", "direct"), ("gwP", "gateway")):
        entries = [
            {"productKey": "subP", "deviceKey": "ok1"},
            {"productKey": product_key, "deviceKey": "x1"},
        ]
        reply = await gateway.request(topic, body("r", entries, "thing.device.register"))
        assert reply["code"] == 1200, reply
        assert product_key in reply["message"] and kind in reply["message"]
        # nothing of a refused request is registered
        assert lab.registry.find_device(product_key, "x1") is None
        assert lab.registry.find_device("subP", "ok1") is None
    reply = await gateway.request(
        topic, body("r", [{"productKey": "subP", "deviceKey": "ok1"}], "thing.device.register")
    )
    assert reply["code"] == 200, reply
    assert reply["data"][0]["deviceSecret"] == lab.registry.get_device("subP", "ok1").device_secret


async def test_activation_session_and_channel_may_not_register(lab: TcpLab) -> None:
    session = await lab.activation_session("gwDyn", "a1")
    channel = await lab.channel("plainP")
    entry = [{"productKey": "subP", "deviceKey": "x1"}]
    reply = await session.request(
        post_topic("gwDyn", "a1", "device/register"), body("r", entry, "thing.device.register")
    )
    assert reply["code"] == 1009, reply
    reply = await channel.request(
        post_topic("plainP", "%channel%", "device/register"),
        body("r", entry, "thing.device.register"),
    )
    assert reply["code"] == 1009, reply
    assert lab.registry.find_device("subP", "x1") is None


# -- one device's bad post fails alone -------------------------------------------------------


async def test_a_bad_post_fails_alone_in_a_shared_batch(lab: TcpLab) -> None:
    """Thirty devices post concurrently (their posts share store appends) while two devices
    post poison: a 30-digit ``time`` (the fast path) and a lone surrogate (the general path).
    Every good post is answered 200 and stored; each poison gets its own code."""
    goods = [await lab.device("dirP", f"g{i:02}") for i in range(30)]
    late = await lab.device("dirP", "late")
    lone = await lab.device("plainP", "lone")
    for i, device in enumerate(goods):
        assert await device.subscribe(post_topic("dirP", f"g{i:02}") + "_reply") == 1
    assert await late.subscribe(post_topic("dirP", "late") + "_reply") == 1
    assert await lone.subscribe(post_topic("plainP", "lone") + "_reply") == 1
    rounds, per_round = 4, 5
    for r in range(rounds):
        for i, device in enumerate(goods):
            for k in range(per_round):
                at = T0 + r * per_round + k
                params = {"measurepoints": {"temp": float(k)}, "time": at}
                device.publish_nowait(post_topic("dirP", f"g{i:02}"), body(f"{r}.{k}", params))
            if i == len(goods) // 2:
                late.publish_nowait(
                    post_topic("dirP", "late"),
                    body(f"late{r}", {"measurepoints": {"temp": 1.0}, "time": "9" * 30}),
                )
                lone.publish_nowait(
                    post_topic("plainP", "lone"),
                    b'{"id":"lone","params":{"measurepoints":{"x":"\\ud800"}}}',
                )
        for i, device in enumerate(goods):
            for k in range(per_round):
                reply = await device.reply(post_topic("dirP", f"g{i:02}"))
                assert (reply["id"], reply["code"]) == (f"{r}.{k}", 200), reply
        reply = await late.reply(post_topic("dirP", "late"))
        assert (reply["id"], reply["code"]) == (f"late{r}", 1206), reply
        reply = await lone.reply(post_topic("plainP", "lone"))
        assert reply["code"] == 1220, reply
    good_posts = len(goods) * rounds * per_round
    points = lab.store.query_points([f"g{i:02}" for i in range(30)], product_key="dirP")
    assert len(points) == good_posts
    stats = lab.store.stats()
    assert stats.rows == good_posts  # nothing of the poison was stored
    assert stats.batches < good_posts / 4, stats  # the posts did share appends
    for device in [late, lone]:
        await device.alive()


# -- event times the store cannot represent -------------------------------------------------

BAD_TIMES: list[Any] = [
    2**63,
    2**62 - 1,
    2**64 + 5,
    MAX_EVENT_MS + 1,
    MIN_EVENT_MS - 1,
    -(2**63),
    1e300,
    -1e300,
    float(MAX_EVENT_MS + 1000),
    "9" * 30,
    "9" * 5000,
    str(MAX_EVENT_MS + 1),
    "\u00b2",  # a digit to str.isdigit(), not to int()
    "\u0661\u0662",  # Arabic-Indic digits
]


@pytest.mark.parametrize("at", BAD_TIMES, ids=lambda v: repr(v)[:24])
async def test_out_of_range_times_are_refused_everywhere(lab: TcpLab, at: Any) -> None:
    direct = await lab.device("dirP", "d1")
    plain = await lab.device("plainP", "p1")
    gateway = await lab.device("gwP", "g1")
    channel = await lab.channel("dirP")
    lab.registry.register_device("dirP", device_key="d2")
    cases: list[tuple[TcpDevice, str, Any, int]] = [
        (direct, post_topic("dirP", "d1"), {"measurepoints": {"temp": 1.0}, "time": at}, 1206),
        (plain, post_topic("plainP", "p1"), {"measurepoints": {"x": 1}, "time": at}, 1206),
        (
            direct,
            post_topic("dirP", "d1", "measurepoint/resume"),
            {"measurepoints": {"temp": 1.0}, "time": at},
            1206,
        ),
        (
            gateway,
            post_topic("gwP", "g1", "measurepoint/post/batch"),
            [{"measurepoints": {"temp": 1.0}, "time": at}],
            1206,
        ),
        (
            direct,
            post_topic("dirP", "d1", "event/overheat/post"),
            {"events": {"level": 1}, "time": at},
            1204,
        ),
        (
            plain,
            post_topic("plainP", "p1", "event/alarm/post"),
            {"events": {"level": 1}, "time": at},
            1204,
        ),
        (
            channel,
            "/sys/dirP/integration/measurepoint/post",
            [{"deviceKey": "d2", "measurepoints": {"status": 1}, "time": at}],
            1206,
        ),
        (
            channel,
            "/sys/dirP/integration/event/post",
            [{"deviceKey": "d2", "events": {"overheat": {"level": 1}}, "time": at}],
            1204,
        ),
    ]
    for device, topic, params, code in cases:
        reply = await device.request(topic, body("t", params))
        assert (reply["id"], reply["code"]) == ("t", code), (topic, reply)
        assert "time" in reply["message"], reply
    assert lab.store.stats().rows == 0
    # the same connections still post; the fleet's latest values are readable
    reply = await direct.request(
        post_topic("dirP", "d1"), body("ok", {"measurepoints": {"temp": 1.0}, "time": MAX_EVENT_MS})
    )
    assert reply["code"] == 200, reply
    reply = await plain.request(
        post_topic("plainP", "p1"), body("ok", {"measurepoints": {"x": 1}, "time": MIN_EVENT_MS})
    )
    assert reply["code"] == 200, reply
    latest = lab.store.latest(["d1"], product_key="dirP")
    assert len(latest) == 1
    assert len(lab.store.latest(["p1"], product_key="plainP")) == 1


# -- payloads that are not strict JSON -------------------------------------------------------

POINT = '{"measurepoints":{"temp":1.0}}'


def mp(points: str) -> str:
    """A measurepoint post with id ``m`` whose ``measurepoints`` object holds ``points``."""
    return '{"id":"m","params":{"measurepoints":{' + points + "}}}"


MALFORMED: list[tuple[str, str, str, int]] = [
    # (name, product, payload, code)
    ("deep request object", "dirP", f'{{"id":"m","params":{POINT},"x":{nested(10_000)}}}', 1220),
    ("deep params", "dirP", f'{{"id":"m","params":{nested(10_000)}}}', 1220),
    ("deep point value", "plainP", mp('"x":' + nested(10_000)), 1220),
    ("point value just too deep", "plainP", mp('"x":' + nested(MAX_JSON_DEPTH - 2)), 1220),
    ("1e400 on a DOUBLE point", "dirP", mp('"power":1e400'), 1220),
    ("-1e400 on a DOUBLE point", "dirP", mp('"power":-1e400'), 1220),
    ("1e400 passthrough", "plainP", mp('"x":1e400'), 1220),
    ("400-digit integer", "plainP", mp('"x":1' + "0" * 400), 1220),
    ("NaN passthrough", "plainP", mp('"x":NaN'), 1220),
    ("Infinity on a DOUBLE point", "dirP", mp('"power":Infinity'), 1220),
    ("-Infinity passthrough", "plainP", mp('"x":-Infinity'), 1220),
    ("lone surrogate in id", "dirP", '{"id":"\\ud800","params":' + POINT + "}", 1220),
    ("lone surrogate in point id", "plainP", mp('"\\udfff":1'), 1220),
    ("lone surrogate in value", "plainP", mp('"x":"a\\ud800"'), 1220),
    ("surrogate as UTF-8 bytes", "plainP", mp('"x":"\udc80"'), 1220),
    ("2**64 on an INT point", "dirP", mp('"status":18446744073709551616'), 1204),
    ("2**63 on an INT point", "dirP", mp('"status":9223372036854775808'), 1204),
    ("quality 2**32, passthrough", "plainP", mp('"x":{"value":1,"quality":4294967296}'), 1204),
    ("quality -1, passthrough", "plainP", mp('"x":{"value":1,"quality":-1}'), 1204),
    ("60 KB point id, passthrough", "plainP", mp('"' + "p" * 60_000 + '":1'), 1204),
    ("point id with a space, passthrough", "plainP", mp('"a b":1'), 1204),
]


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(
    ("product", "payload", "code"), [pytest.param(*m[1:], id=m[0]) for m in MALFORMED]
)
async def test_malformed_post_gets_a_reply_and_the_connection_stays(
    lab: TcpLab, caplog: pytest.LogCaptureFixture, product: str, payload: str, code: int
) -> None:
    device = await lab.device(product, "m1")
    topic = post_topic(product, "m1")
    with caplog.at_level(logging.WARNING):
        reply = await device.request(topic, _encoded(payload))
        assert reply["code"] == code, reply
        assert reply["id"] in ("m", None)
        good = {"measurepoints": {"temp" if product == "dirP" else "x": 2.0}, "time": T0}
        assert (await device.request(topic, body("ok", good)))["code"] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert lab.store.stats().rows == 1


async def test_malformed_event_and_attribute_posts(lab: TcpLab) -> None:
    direct = await lab.device("dirP", "d1")
    plain = await lab.device("plainP", "p1")
    event = post_topic("plainP", "p1", "event/alarm/post")
    cases: list[tuple[TcpDevice, str, bytes, int]] = [
        (plain, event, b'{"id":"e","params":{"events":{"\\ud800":1}}}', 1220),
        (plain, event, b'{"id":"e","params":{"events":{"level":"\\udc00"}}}', 1220),
        (plain, event, b'{"id":"e","params":{"events":{"level":NaN}}}', 1220),
        (plain, event, b'{"id":"e","params":{"events":{"a-b":1}}}', 1204),
        (
            plain,
            post_topic("plainP", "p1", "event/bad id/post"),
            b'{"id":"e","params":{"events":{}}}',
            1204,
        ),
        (
            direct,
            post_topic("dirP", "d1", "event/overheat/post"),
            b'{"id":"e","params":{"events":{"level":1e400}}}',
            1220,
        ),
        (
            plain,
            post_topic("plainP", "p1", "attribute/update"),
            b'{"id":"e","params":{"attributes":{"' + b"a" * 200 + b'":1}}}',
            1204,
        ),
        (
            plain,
            post_topic("plainP", "p1", "attribute/update"),
            b'{"id":"e","params":{"attributes":{"x":' + nested(5000).encode() + b"}}}",
            1220,
        ),
    ]
    for device, topic, payload, code in cases:
        reply = await device.request(topic, payload)
        assert reply["code"] == code, (topic, payload[:80], reply)
    assert lab.registry.get_device("plainP", "p1").attributes == {}
    assert lab.store.stats().rows == 0  # no event, no attribute change stored
    reply = await plain.request(
        event, body("ok", {"events": {"level": 1}}, "thing.event.alarm.post")
    )
    assert reply["code"] == 200, reply
    events = lab.store.query_events("p1", product_key="plainP")
    assert list(events["event_id"]) == ["alarm"]
    await direct.alive()


async def test_a_failing_handler_gets_an_error_reply(
    lab: TcpLab, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception in a handler is answered (1200, internal error) and logged with
    its traceback; the connection stays up."""

    class Broken:
        def inform(self, product_key: str, device_key: str, version: str) -> None:
            raise RuntimeError("the OTA service is broken")

        def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
            return 200

        def get_versions(self, product_key: str, device_key: str) -> list[dict[str, object]]:
            return []

    lab.iothub.ota = Broken()
    device = await lab.device("dirP", "d1")
    with caplog.at_level(logging.ERROR, logger="enos_lab.iothub"):
        reply = await device.request(
            "/sys/dirP/d1/ota/device/inform", body("o", {"version": "1.0"}, "ota.device.inform")
        )
    assert (reply["id"], reply["code"]) == ("o", 1200), reply
    assert "internal error" in reply["message"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "the OTA service is broken" in caplog.text
    reply = await device.request(
        post_topic("dirP", "d1"), body("ok", {"measurepoints": {"temp": 1.0}})
    )
    assert reply["code"] == 200


# -- topics outside the EnOS catalogue ------------------------------------------------------


async def test_posts_to_unknown_sys_topics_are_logged_with_a_bound(
    lab: TcpLab, caplog: pytest.LogCaptureFixture
) -> None:
    device = await lab.device("dirP", "d1")
    with caplog.at_level(logging.WARNING, logger="enos_lab.iothub"):
        for i in range(150):
            pid = device.publish_nowait(f"/sys/dirP/d1/thing/nonsense/{i % 7}", b"{}")
            await device.expect(PubAck, pid=pid)
        await device.alive()
    lines = [r.getMessage() for r in caplog.records if r.name == "enos_lab.iothub"]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "enos_lab.iothub")
    # the first three, then the count at 10 and at 100
    assert len(lines) == 5, lines
    for i in range(3):
        assert f"'/sys/dirP/d1/thing/nonsense/{i}' is not an EnOS topic" in lines[i]
    assert ": 10 messages" in lines[3] and ": 100 messages" in lines[4], lines
