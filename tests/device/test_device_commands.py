"""Downstream commands answered by the device SDK over real TCP, without any subscription:
services, measurepoint set/get, OTA upgrade, raw down, legacy RRPC and lifecycle
notifications, with the codes the official SDKs reply (protocol reference 4.3, 5.2, 9)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from device_helpers import TIMEOUT, Products, wait_until

from enos_lab import Lab, TopicKind
from enos_lab.device import DeviceClient, Notification
from enos_lab.enos import encode_request
from enos_lab.errors import CommandError, InvalidArgument
from enos_lab.hub import Message
from enos_lab.mqtt import MQTT_3_1_1, ConnAck, Connect, Decoder, PubAck, Publish, encode


@pytest.fixture
async def meter(lab: Lab, products: Products) -> AsyncIterator[DeviceClient]:
    """A connected meter (direct device of the SDK test model)."""
    device = lab.register_device(products.meter, device_key="m1")
    async with DeviceClient(
        lab.host, lab.port, products.meter, "m1", device.device_secret, timeout=TIMEOUT
    ) as client:
        yield client


async def command(
    lab: Lab, client: DeviceClient, kind: TopicKind, params: object, item_id: str = ""
) -> Any:
    """Send a command from the lab and return the device's reply."""
    return await lab.asend_command(
        client.product_key, client.device_key, kind, params, item_id=item_id, timeout=TIMEOUT
    )


async def test_services_answer_with_the_handler_s_result_or_code(
    lab: Lab, meter: DeviceClient
) -> None:
    calls: list[Any] = []

    def multiply(params: dict[str, int]) -> dict[str, int]:
        calls.append(params)
        return {"result": params["left"] * params["right"]}

    async def slow_add(params: dict[str, int]) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"result": params["left"] + params["right"]}

    def refuse(params: object) -> None:
        raise CommandError(2001, "busy with another job")

    def crash(params: object) -> None:
        raise ValueError("boom")

    meter.on_service("multiply", multiply)
    meter.on_service("add", slow_add)
    meter.on_service("refuse", refuse)
    meter.on_service("crash", crash)
    meter.on_service("not_json", lambda params: {1, 2})

    reply = await command(lab, meter, TopicKind.SERVICE_INVOKE, {"left": 6, "right": 7}, "multiply")
    assert (reply.code, reply.data) == (200, {"result": 42})
    assert calls == [{"left": 6, "right": 7}]
    reply = await command(lab, meter, TopicKind.SERVICE_INVOKE, {"left": 6, "right": 7}, "add")
    assert (reply.code, reply.data) == (200, {"result": 13})
    reply = await command(lab, meter, TopicKind.SERVICE_INVOKE, {}, "refuse")
    assert (reply.code, reply.message) == (2001, "busy with another job")
    reply = await command(lab, meter, TopicKind.SERVICE_INVOKE, {}, "crash")
    assert reply.code == 500  # the Python SDK's code for a handler that raised
    assert reply.message == "command handler execution failed: boom"
    reply = await command(lab, meter, TopicKind.SERVICE_INVOKE, {}, "not_json")
    assert reply.code == 500 and "not JSON" in reply.message
    reply = await command(lab, meter, TopicKind.SERVICE_INVOKE, {}, "unknown")
    assert (reply.code, reply.message) == (1101, "downstream command handler not registered")
    meter.on_service("multiply", None)
    reply = await command(lab, meter, TopicKind.SERVICE_INVOKE, {}, "multiply")
    assert reply.code == 1101
    assert meter.stats.commands == 7 and meter.stats.command_errors == 2
    assert meter.connected  # a failing handler never costs the connection
    with pytest.raises(InvalidArgument):
        meter.on_service("measurepoint", multiply)  # 6.2: never a service id


async def test_measurepoint_set_get_and_ota_upgrade(lab: Lab, meter: DeviceClient) -> None:
    state: dict[str, Any] = {"temp": 20.0, "state": 1}
    upgrades: list[dict[str, Any]] = []
    meter.on_measurepoint_set(state.update)
    meter.on_measurepoint_get(lambda ids: {point: state[point] for point in ids})
    meter.on_ota_upgrade(upgrades.append)

    reply = await command(lab, meter, TopicKind.MEASUREPOINT_SET, {"temp": 25.5})
    assert (reply.code, reply.data) == (200, {})
    reply = await command(lab, meter, TopicKind.MEASUREPOINT_GET, ["temp", "state"])
    assert (reply.code, reply.data) == (200, {"temp": 25.5, "state": 1})
    firmware = {"version": "1.1", "signMethod": "md5", "sign": "ab", "fileUrl": "f", "fileSize": 3}
    reply = await command(lab, meter, TopicKind.OTA_UPGRADE, firmware)
    assert reply.code == 200 and upgrades == [firmware]


async def test_raw_down_commands_go_through_the_product_codec(lab: Lab) -> None:
    class Codec:
        """Commands travel as ``b"CMD" + envelope``; a raw reply ``b"R<text>"`` is 200."""

        def decode_upstream(self, payload: bytes) -> bytes:
            reply = {"id": "unknown", "code": 200, "data": {"v": payload[1:].decode()}}
            return json.dumps(reply).encode()

        def encode_downstream(self, envelope: bytes) -> bytes:
            return b"CMD" + envelope

        def encode_reply(self, reply: bytes) -> bytes:
            return reply

    product = lab.create_product("Raw", data_format="custom", codec=Codec())
    device = lab.register_device(product.product_key, device_key="r1")
    received: list[bytes] = []

    def answer(payload: bytes) -> bytes:
        received.append(payload)
        return b"Rdone"

    async with DeviceClient(
        lab.host, lab.port, product.product_key, "r1", device.device_secret, timeout=TIMEOUT
    ) as client:
        client.on_raw_down(answer)
        reply = await command(lab, client, TopicKind.MODEL_DOWN_RAW, {"x": 1})
    assert reply.code == 200 and reply.data == {"v": "done"}
    assert received[0].startswith(b"CMD") and json.loads(received[0][3:])["params"] == {"x": 1}


async def test_a_legacy_rrpc_request_reaches_the_service_handler(
    lab: Lab, meter: DeviceClient
) -> None:
    called = asyncio.Event()
    params: list[Any] = []

    def reset(args: Any) -> dict[str, bool]:
        params.append(args)
        called.set()
        return {"ok": True}

    meter.on_service("reset", reset)
    keys = [
        key
        for key, info in lab.hub.clients.items()
        if info.attributes.get("device_key") == meter.device_key
    ]
    topic = TopicKind.RRPC_REQUEST.format(meter.product_key, meter.device_key, "rr-1")
    payload = encode_request("7", "thing.service.reset", {"delay": 1})
    assert await lab.arun(lab.hub.deliver(keys[0], Message(topic, payload, 1)))
    await wait_until(called, "the RRPC request")
    assert params == [{"delay": 1}]
    assert meter.connected


async def test_lifecycle_notifications_reach_on_notification(lab: Lab, products: Products) -> None:
    gateway = lab.register_device(products.gateway, device_key="gw")
    sub = lab.register_device(products.sub, device_key="s1")
    lab.registry.attach((products.gateway, "gw"), (products.sub, "s1"))
    heard: list[Notification] = []
    arrived = asyncio.Event()

    def on_notification(notification: Notification) -> None:
        heard.append(notification)
        arrived.set()

    async with DeviceClient(
        lab.host, lab.port, products.gateway, "gw", gateway.device_secret, timeout=TIMEOUT
    ) as client:
        client.on_notification(on_notification)
        await client.login_sub_device(products.sub, "s1", sub.device_secret)
        assert client.logged_in_sub_devices == [(products.sub, "s1")]
        await lab.adisable_device(products.sub, "s1")
        await wait_until(arrived, "combine.disable")
        assert heard[0].kind is TopicKind.SUB_DEVICE_DISABLE
        assert heard[0].devices == ((products.sub, "s1"),)
        assert (heard[0].product_key, heard[0].device_key) == (products.gateway, "gw")
        # a disabled sub-device is not logged in again after a reconnect
        assert client.logged_in_sub_devices == []
        assert not client.sub_device(products.sub, "s1").logged_in
        arrived.clear()
        reply = await command(lab, client, TopicKind.THING_DISABLE, {})  # legacy form
        assert reply.code == 200
        assert heard[1].kind is TopicKind.THING_DISABLE and heard[1].devices == ()


async def test_commands_beyond_max_commands_are_answered_429(lab: Lab, products: Products) -> None:
    device = lab.register_device(products.meter, device_key="m2")
    release = asyncio.Event()
    started = asyncio.Event()

    async def wait_for_release(params: object) -> dict[str, str]:
        started.set()
        await release.wait()
        return {"done": "yes"}

    async with DeviceClient(
        lab.host, lab.port, products.meter, "m2", device.device_secret, max_commands=1
    ) as client:
        client.on_service("job", wait_for_release)
        first = asyncio.create_task(command(lab, client, TopicKind.SERVICE_INVOKE, {}, "job"))
        await wait_until(started, "the first job")
        reply = await command(lab, client, TopicKind.SERVICE_INVOKE, {}, "job")
        assert (reply.code, reply.message) == (429, "too many commands")
        release.set()
        reply = await first
        assert (reply.code, reply.data) == (200, {"done": "yes"})


async def test_disconnect_ends_the_handlers_still_running(lab: Lab, products: Products) -> None:
    device = lab.register_device(products.meter, device_key="m3")
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(params: object) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    client = DeviceClient(lab.host, lab.port, products.meter, "m3", device.device_secret)
    await client.connect()
    client.on_service("forever", forever)
    pending = asyncio.create_task(
        lab.asend_command(
            products.meter, "m3", TopicKind.SERVICE_INVOKE, {}, item_id="forever", wait=False
        )
    )
    await pending
    await wait_until(started, "the handler")
    await client.disconnect()
    assert cancelled.is_set()


async def test_a_command_right_behind_the_connack_is_answered() -> None:
    """A hub may send a command (a cached one, EnOS ``pendingTtl``; an OTA push) the moment a
    device logs in: here in the same TCP write as the CONNACK, so that the device reads it
    before its ``connect()`` has returned. The device answers it all the same (it used to run
    the handler and drop the reply), and a request its handler makes meanwhile waits for the
    login instead of failing (it used to raise NotConnected)."""
    received: asyncio.Queue[Publish] = asyncio.Queue()
    topic = "/sys/pk/dk/thing/service/multiply"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        command = encode_request("c-1", "thing.service.multiply", {"left": 6, "right": 7})
        while data := await reader.read(65536):
            for packet in decoder.feed(data):
                if isinstance(packet, Connect):
                    writer.write(
                        encode(ConnAck(), MQTT_3_1_1)
                        + encode(Publish(topic, command, 1, packet_id=1), MQTT_3_1_1)
                    )
                elif isinstance(packet, Publish):
                    writer.write(encode(PubAck(packet.packet_id), MQTT_3_1_1))
                    await received.put(packet)
                    if not packet.topic.endswith("_reply"):  # a request: answer it
                        request_id = json.loads(packet.payload)["id"]
                        answer = json.dumps({"id": request_id, "code": 200, "data": {}})
                        writer.write(
                            encode(Publish(packet.topic + "_reply", answer.encode()), MQTT_3_1_1)
                        )
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        device = DeviceClient("127.0.0.1", port, "pk", "dk", "secret", timeout=TIMEOUT)

        async def multiply(params: dict[str, int]) -> dict[str, int]:
            await device.report_version("2.0.0")  # a request while the login completes
            return {"result": params["left"] * params["right"]}

        device.on_service("multiply", multiply)
        async with device:
            first = await asyncio.wait_for(received.get(), TIMEOUT)
            second = await asyncio.wait_for(received.get(), TIMEOUT)
            assert device.stats.commands == 1 and device.stats.command_errors == 0
        assert first.topic == "/sys/pk/dk/ota/device/inform"
        assert json.loads(first.payload)["params"] == {"version": "2.0.0"}
        assert second.topic == topic + "_reply"
        answer = json.loads(second.payload)
        assert (answer["id"], answer["code"], answer["data"]) == ("c-1", 200, {"result": 42})
    finally:
        server.close()
        await server.wait_closed()
