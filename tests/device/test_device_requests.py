"""Device SDK requests against a real lab over TCP: every upstream flow of a direct device,
typed errors, correlation by id, the bound on requests in flight, timeouts on the client's
clock and requests cut by a lost connection (protocol reference 4, 7, 10)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import gmqtt
import pytest
from device_helpers import TIMEOUT, WAIT, Products
from enos_sdk_helpers import running_lab
from gmqtt.mqtt.constants import MQTTv311

from enos_lab import Lab, SimulatedClock
from enos_lab.device import DeviceClient
from enos_lab.enos import MAX_PAYLOAD_SIZE, ReplyCode
from enos_lab.errors import InvalidArgument, NotConnected, RequestFailed, RequestTimeout

T0 = 1_700_000_000_000  # [ms]


@pytest.fixture
async def meter(lab: Lab, products: Products) -> AsyncIterator[DeviceClient]:
    """A connected meter (direct device of the SDK test model)."""
    device = lab.register_device(products.meter, device_key="m1")
    async with DeviceClient(
        lab.host, lab.port, products.meter, "m1", device.device_secret, timeout=TIMEOUT
    ) as client:
        yield client


async def test_measurepoints_are_stored_with_their_times_and_qualities(
    lab: Lab, meter: DeviceClient
) -> None:
    pk = meter.product_key
    reply = await meter.post_measurepoints({"temp": 21.5, "state": 1}, T0)
    assert (reply.code, reply.data) == (200, {})
    moment = datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)  # T0 + 1 s
    await meter.post_measurepoints({"power": 3.5}, moment, quality={"power": 9})
    await meter.post_measurepoints({"temp": 19.0}, T0 - 60_000, resume=True)
    points = lab.store.query_points("m1", product_key=pk)
    rows = {
        (row.point_id, int(row.time.timestamp() * 1000)): (row.value, row.resume)
        for row in points.itertuples()
    }
    assert rows == {
        ("temp", T0): (21.5, False),
        ("state", T0): (1, False),
        ("power", T0 + 1000): (3.5, False),
        ("temp", T0 - 60_000): (19.0, True),
    }
    assert points.loc[points["point_id"] == "power", "quality"].tolist() == [9]
    latest = lab.store.latest("m1", "temp", product_key=pk)
    assert latest["value"].tolist() == [21.5]  # resumed data never replaces newer values


async def test_a_post_without_a_time_takes_the_clock_s_now(tmp_path: Any) -> None:
    clock = SimulatedClock(datetime(2024, 5, 1, tzinfo=UTC))
    with running_lab(tmp_path / "lab", seed=2) as lab:
        product = lab.create_product("Free")  # no model: any point
        device = lab.register_device(product.product_key, device_key="f1")
        async with DeviceClient(
            lab.host, lab.port, product.product_key, "f1", device.device_secret, clock=clock
        ) as client:
            await client.post_measurepoints({"x": 1.0})
            await client.post_event("started", {"code": 3})
        points = lab.store.query_points("f1", "x", product_key=product.product_key)
        assert points["time"].tolist() == [clock.now()]
        events = lab.store.query_events("f1", product_key=product.product_key)
        assert events["time"].tolist() == [clock.now()]


async def test_events_attributes_tags_and_the_template(lab: Lab, meter: DeviceClient) -> None:
    pk = meter.product_key
    await meter.post_event("overheat", {"temp": 81.5}, T0)
    events = lab.store.query_events("m1", product_key=pk)
    assert events["event_id"].tolist() == ["overheat"]
    assert events["outputs"].tolist() == [{"temp": 81.5}]

    await meter.update_attributes({"rated_power": 5.0, "site": "north"})
    assert await meter.query_attributes() == {"rated_power": 5.0, "site": "north"}
    assert await meter.query_attributes(["site"]) == {"site": "north"}
    await meter.delete_attributes(["site"])
    assert await meter.query_attributes() == {"rated_power": 5.0}

    await meter.update_tags({"line": "A", "floor": 2})  # type: ignore[dict-item]
    assert await meter.query_tags() == {"line": "A", "floor": "2"}
    await meter.delete_tags(["floor"])
    assert await meter.query_tags(["line", "floor"]) == {"line": "A"}
    assert lab.device(pk, "m1").tags == {"line": "A"}

    template = await meter.get_tsl_template()
    assert set(template["tslMeasurepointMap"]) == {"temp", "power", "state"}


class Firmware:
    """An OTA handler with one upgrade task (replaces the lab's default)."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], str] = {}
        self.steps: list[tuple[str, str]] = []

    def inform(self, product_key: str, device_key: str, version: str) -> None:
        self.versions[(product_key, device_key)] = version

    def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
        self.steps.append((step, desc))
        return 200

    def get_versions(self, product_key: str, device_key: str) -> list[dict[str, object]]:
        return [
            {"version": "1.1", "signMethod": "md5", "sign": "ab", "fileUrl": "f", "fileSize": 3}
        ]


async def test_firmware_reports(lab: Lab, meter: DeviceClient) -> None:
    assert lab.iothub is not None
    with pytest.raises(RequestFailed) as caught:  # the default handler has no upgrade task
        await meter.report_progress(10, "downloading")
    assert caught.value.code == ReplyCode.OTA_TASK_NOT_FOUND
    firmware = Firmware()
    lab.iothub.ota = firmware
    await meter.report_version("1.0")
    await meter.report_progress(35, "downloaded")
    assert await meter.query_firmware() == firmware.get_versions("", "")
    assert firmware.versions == {(meter.product_key, "m1"): "1.0"}
    assert firmware.steps == [("35", "downloaded")]  # the step travels as text


async def test_a_refused_request_raises_request_failed(lab: Lab, meter: DeviceClient) -> None:
    with pytest.raises(RequestFailed) as caught:
        await meter.post_measurepoints({"no_such_point": 1.0}, T0)
    error = caught.value
    assert error.code == ReplyCode.MODEL_VALIDATION_FAILED
    assert "no_such_point" in error.message
    assert error.topic == f"/sys/{meter.product_key}/m1/thing/measurepoint/post"
    assert error.request_id.isdigit()
    assert "failed with code 1204" in str(error) and error.topic in str(error)
    stats = meter.stats
    assert (stats.sent, stats.replies, stats.failures) == (1, 1, 1)
    with pytest.raises(InvalidArgument, match="tz-aware"):
        await meter.post_measurepoints({"temp": 1.0}, datetime(2024, 1, 1))
    with pytest.raises(InvalidArgument, match="bytes"):
        await meter.update_attributes({"site": "x" * MAX_PAYLOAD_SIZE})
    with pytest.raises(InvalidArgument, match="quality"):
        await meter.post_measurepoints({"temp": 1.0}, quality={"power": 9})


async def test_raw_posts_go_through_the_product_codec(lab: Lab) -> None:
    class Codec:
        """``b"T<int>"`` is a post of point ``status``; replies are ``b"OK"`` / ``b"ER"``."""

        def decode_upstream(self, payload: bytes) -> bytes:
            params = {"measurepoints": {"status": int(payload[1:])}, "time": T0}
            body = {"id": "unknown", "method": "thing.measurepoint.post", "params": params}
            return json.dumps(body).encode()

        def encode_downstream(self, envelope: bytes) -> bytes:
            return envelope

        def encode_reply(self, reply: bytes) -> bytes:
            return b"OK" if json.loads(reply)["code"] == 200 else b"ER"

    product = lab.create_product("Raw", data_format="custom", codec=Codec())
    device = lab.register_device(product.product_key, device_key="r1")
    async with DeviceClient(
        lab.host, lab.port, product.product_key, "r1", device.device_secret, timeout=TIMEOUT
    ) as client:
        assert await client.post_raw(b"T7") == b"OK"
        assert await client.post_raw(b"T8") == b"OK"
    points = lab.store.query_points("r1", "status", product_key=product.product_key)
    assert points["value"].tolist() == [8]  # both at T0: the later replaces the earlier


# --- correlation, the bound and timeouts, against a plain broker and a scripted responder --


class Responder:
    """A gmqtt client on an anonymous lab that receives every request and answers on cue."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        self.client = gmqtt.Client("responder")
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *args: self.subscribed.set()

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        if not topic.endswith("_reply"):  # its own answers come back too
            self.requests.put_nowait((topic, json.loads(payload)))
        return 0

    async def start(self, lab: Lab) -> None:
        await self.client.connect(lab.host, lab.port, version=MQTTv311)
        self.client.subscribe("/sys/#", qos=1)
        await asyncio.wait_for(self.subscribed.wait(), WAIT)  # SUBACK: before anyone publishes

    async def next(self) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.requests.get(), WAIT)

    def answer(self, topic: str, request_id: object, code: int = 200, data: Any = None) -> None:
        body = {"id": request_id, "code": code, "data": data or {}, "message": ""}
        self.client.publish(topic + "_reply", json.dumps(body).encode(), qos=1)


@pytest.fixture
async def broker(tmp_path: Any) -> AsyncIterator[tuple[Lab, Responder]]:
    with running_lab(tmp_path / "plain", seed=5, anonymous=True) as anonymous:
        responder = Responder()
        await responder.start(anonymous)
        try:
            yield anonymous, responder
        finally:
            await responder.client.disconnect()


async def test_replies_are_correlated_by_id_and_requests_in_flight_are_bounded(
    broker: tuple[Lab, Responder],
) -> None:
    lab, responder = broker
    async with DeviceClient(
        lab.host, lab.port, "pk", "dk", "secret", timeout=TIMEOUT, max_in_flight=2
    ) as client:
        tasks = [
            asyncio.create_task(client.update_attributes({"n": n}, timeout=TIMEOUT))
            for n in range(3)
        ]
        first = await responder.next()
        second = await responder.next()
        topic = "/sys/pk/dk/thing/attribute/update"
        assert [first[0], second[0]] == [topic, topic]
        # ids are strings from the client's counter; the method is the canonical one
        assert [first[1]["id"], second[1]["id"]] == ["1", "2"]
        assert first[1]["method"] == "thing.attribute.update"
        assert responder.requests.empty() and client.stats.sent == 2  # the third waits
        # answered out of order: each caller gets its own reply
        responder.answer(topic, "2", data={"who": 2})
        responder.answer(topic, "99", data={"who": 99})  # answers nothing: ignored
        third = await responder.next()  # a slot came free
        assert third[1]["id"] == "3" and third[1]["params"] == {"attributes": {"n": 2}}
        responder.answer(topic, "1", data={"who": 1})
        responder.answer(topic, "3", code=2100)
        assert (await tasks[0]).data == {"who": 1}
        assert (await tasks[1]).data == {"who": 2}
        with pytest.raises(RequestFailed) as caught:
            await tasks[2]
        assert caught.value.code == 2100
        assert client.stats.replies == 3


async def test_timeouts_run_on_the_client_s_clock(broker: tuple[Lab, Responder]) -> None:
    lab, responder = broker
    clock = SimulatedClock()
    async with DeviceClient(
        lab.host, lab.port, "pk", "dk", "secret", clock=clock, timeout=30.0, max_in_flight=1
    ) as client:
        waiting = asyncio.create_task(client.post_measurepoints({"x": 1}))
        queued = asyncio.create_task(client.post_measurepoints({"x": 2}, timeout=10.0))
        await responder.next()  # the first is published; the second waits for the slot
        await clock.advance_async(10.0)
        with pytest.raises(RequestTimeout, match="slots"):
            await queued
        assert not waiting.done()  # 10 s of its 30 s have passed
        await clock.advance_async(20.0)
        with pytest.raises(RequestTimeout, match="no reply") as caught:
            await waiting
        assert isinstance(caught.value, TimeoutError)
        assert client.stats.timeouts == 2
        # a late reply answers nothing; the next request is answered
        responder.answer("/sys/pk/dk/thing/measurepoint/post", "1")
        later = asyncio.create_task(client.post_measurepoints({"x": 3}))
        topic, request = await responder.next()
        responder.answer(topic, request["id"])
        assert (await later).ok


async def test_a_lost_connection_fails_the_requests_in_flight(
    broker: tuple[Lab, Responder],
) -> None:
    lab, responder = broker
    client = DeviceClient(lab.host, lab.port, "pk", "dk", "secret", reconnect=None)
    await client.connect()
    waiting = asyncio.create_task(client.post_measurepoints({"x": 1}))
    await responder.next()
    keys = [key for key, info in lab.hub.clients.items() if info.client_id.startswith("dk|")]
    assert len(keys) == 1
    await lab.arun(lab.hub.disconnect_client(keys[0]))
    with pytest.raises(NotConnected, match="dropped"):
        await waiting
    assert client.stats.lost == 1
    assert not client.connected and not client.active  # no reconnect policy
    await client.disconnect()
