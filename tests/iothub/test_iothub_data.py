"""Upstream data: envelopes, measurepoints, batches, events, attributes, tags, TSL, raw, ACL."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from _iothub_kit import Env

from enos_lab.errors import (
    InvalidArgument,
    NotFound,
    RegistryError,
    StoreError,
    ValidationError,
)
from enos_lab.iothub import IotHubConfig
from enos_lab.tap import RequestRefused

POST = "/sys/dirP/d1/thing/measurepoint/post"


def latest(env: Env, product_key: str, device_key: str) -> pd.DataFrame:
    """The device's latest values (empty when nothing was stored)."""
    return env.store.latest(device_key, product_key=product_key)


async def test_measurepoint_post_stored_then_replied_with_same_id(env: Env) -> None:
    client = await env.device("dirP", "d1")
    reply = await client.request(
        POST,
        {
            "measurepoints": {"temp": {"value": 21.5, "quality": 9}, "status": 2},
            "time": 1700000000000,
        },
        request_id="17",
    )
    assert reply == {"id": "17", "code": 200, "data": {}, "message": ""}
    frame = env.store.query_points("d1", ["temp", "status"], product_key="dirP")
    assert len(frame) >= 1
    frame = latest(env, "dirP", "d1")
    values = dict(zip(frame["point_id"], frame["value"], strict=True))
    assert values["temp"] == 21.5 and values["status"] == 2


async def test_reply_qos_follows_request_and_id_echoed_verbatim(env: Env) -> None:
    client = await env.device("dirP", "d1")
    await client.subscribe(POST + "_reply", 1)
    body = json.dumps({"id": "0042", "params": {"measurepoints": {"status": 1}}}).encode()
    await client.publish(POST, body, qos=0)
    reply = await client.read_publish()
    assert reply.qos == 0
    assert json.loads(reply.payload)["id"] == "0042"


async def test_time_optional_uses_receive_time(env: Env) -> None:
    client = await env.device("dirP", "d1")
    reply = await client.request(POST, {"measurepoints": {"status": 3}})
    assert reply["code"] == 200
    assert len(latest(env, "dirP", "d1")) == 1


ENVELOPE_ERRORS = [
    (b"", 1251),
    (b"{not json", 1220),
    (b"[1, 2]", 1220),
    (b'{"id": "1", "params": "' + b"x" * (512 * 1024) + b'"}', 1008),
]


async def test_envelope_errors(env: Env) -> None:
    client = await env.device("dirP", "d1")
    for payload, code in ENVELOPE_ERRORS:
        reply = await client.request(POST, raw=payload)
        assert reply["code"] == code
        assert "data" in reply and "message" in reply


async def test_validation_1204_and_format_1206(env: Env) -> None:
    client = await env.device("dirP", "d1")
    reply = await client.request(POST, {"measurepoints": {"temp": "hot"}}, request_id="a")
    assert (reply["id"], reply["code"]) == ("a", 1204)
    reply = await client.request(POST, {"measurepoints": {"nope": 1}})
    assert reply["code"] == 1204
    reply = await client.request(POST, {"measurepoints": [1, 2]})
    assert reply["code"] == 1206
    reply = await client.request(POST, {"measurepoints": {"status": 1}, "time": "yesterday"})
    assert reply["code"] == 1206
    assert len(latest(env, "dirP", "d1")) == 0


async def test_product_without_model_is_passthrough(env: Env) -> None:
    client = await env.device("plainP", "p1")
    reply = await client.request(
        "/sys/plainP/p1/thing/measurepoint/post", {"measurepoints": {"anything": 1.5}}
    )
    assert reply["code"] == 200
    assert list(latest(env, "plainP", "p1")["point_id"]) == ["anything"]


async def test_resume_rows_flagged(env: Env) -> None:
    client = await env.device("dirP", "d1")
    reply = await client.request(
        "/sys/dirP/d1/thing/measurepoint/resume",
        {"measurepoints": {"status": 5}, "time": 1600000000000},
    )
    assert reply["code"] == 200
    frame = env.store.query_points("d1", ["status"], product_key="dirP")
    assert list(frame["value"]) == [5]
    if "resume" in frame.columns:
        assert bool(frame["resume"].iloc[0])


async def test_batch_with_empty_keys_and_flags(env: Env) -> None:
    client = await env.device("dirP", "d1")
    batch = "/sys/dirP/d1/thing/measurepoint/post/batch"
    reply = await client.request(
        batch,
        [
            {"productKey": "", "deviceKey": "", "measurepoints": {"status": 1}, "time": 1000},
            {"measurepoints": {"status": 2}, "time": 2000},
        ],
        allowOfflineSubDevice="",
        skipInvalidMeasurepoints="",
    )
    assert reply["code"] == 200
    assert len(env.store.query_points("d1", ["status"], product_key="dirP")) == 2
    # all-or-nothing by default
    reply = await client.request(
        batch,
        [
            {"measurepoints": {"status": 3}, "time": 3000},
            {"measurepoints": {"bad": 1}, "time": 4000},
        ],
    )
    assert reply["code"] == 1204
    assert len(env.store.query_points("d1", ["status"], product_key="dirP")) == 2
    # skipInvalidMeasurepoints drops only the bad point
    reply = await client.request(
        batch,
        [{"measurepoints": {"status": 3, "bad": 1}, "time": 3000}],
        skipInvalidMeasurepoints=True,
    )
    assert reply["code"] == 200
    assert len(env.store.query_points("d1", ["status"], product_key="dirP")) == 3
    # an entry for a device that is not a logged-in sub-device: 1212
    reply = await client.request(
        batch, [{"productKey": "dirP", "deviceKey": "other", "measurepoints": {"status": 1}}]
    )
    assert reply["code"] == 1212
    reply = await client.request(batch, {"not": "a list"})
    assert reply["code"] == 1206


async def test_events_any_qos_and_python_method(env: Env) -> None:
    client = await env.device("dirP", "d1")
    topic = "/sys/dirP/d1/thing/event/overheat/post"
    reply = await client.request(
        topic,
        {"events": {"level": 3}, "time": 1700000000000},
        method="thing.event.%s.postoverheat",
        qos=0,
    )
    assert reply["code"] == 200
    events = env.store.query_events("d1", product_key="dirP")
    assert len(events) == 1
    reply = await client.request(topic, {"events": {"level": "x"}})
    assert reply["code"] == 1204
    reply = await client.request("/sys/dirP/d1/thing/event/unknown/post", {"events": {}})
    assert reply["code"] == 1204


async def test_attributes_update_query_delete(env: Env) -> None:
    client = await env.device("dirP", "d1")
    base = "/sys/dirP/d1/thing/attribute/"
    reply = await client.request(base + "update", {"attributes": {"maxCurrent": 70}})
    assert reply["code"] == 200
    assert env.registry.get_device("dirP", "d1").attributes == {"maxCurrent": 70}
    assert len(env.store.query_attributes("d1", product_key="dirP")) == 1
    reply = await client.request(base + "query", {"attributes": []})
    assert (reply["code"], reply["data"]) == (200, {"maxCurrent": 70})
    reply = await client.request(base + "query", {"attributes": ["maxCurrent", "x"]})
    assert reply["data"] == {"maxCurrent": 70}
    reply = await client.request(base + "delete", {"attributes": []})
    assert reply["code"] == 200
    assert env.registry.get_device("dirP", "d1").attributes == {"maxCurrent": 70}
    reply = await client.request(base + "delete", {"attributes": ["maxCurrent"]})
    assert reply["code"] == 200
    assert env.registry.get_device("dirP", "d1").attributes == {}
    # errors
    assert (await client.request(base + "update", {"attributes": [1]}))["code"] == 1207
    assert (await client.request(base + "update", {"attributes": {"zz": 1}}))["code"] == 1204
    assert (await client.request(base + "query", {"attributes": "all"}))["code"] == 1208
    assert (await client.request(base + "delete", {"attributes": {}}))["code"] == 1209


async def test_tags_update_query_delete(env: Env) -> None:
    client = await env.device("dirP", "d1")
    base = "/sys/dirP/d1/thing/tag/"
    reply = await client.request(base + "update", [{"tagKey": "site", "tagValue": 7}])
    assert reply["code"] == 200
    reply = await client.request(base + "query", {"tags": []})
    assert reply["data"] == {"site": "7"}
    reply = await client.request(base + "delete", {"tags": ["site"]})
    assert reply["code"] == 200
    assert env.registry.get_device("dirP", "d1").tags == {}


async def test_tsltemplate(env: Env) -> None:
    client = await env.device("dirP", "d1")
    reply = await client.request("/sys/dirP/d1/thing/tsltemplate/get", {})
    assert reply["code"] == 200
    assert reply["data"]["tslModelId"] == "meter"


async def test_ota_hooks(env: Env) -> None:
    client = await env.device("dirP", "d1")
    reply = await client.request("/sys/dirP/d1/ota/device/inform", {"version": "1.0.3"})
    assert reply["code"] == 200
    assert env.iothub.firmware_version("dirP", "d1") == "1.0.3"
    reply = await client.request("/sys/dirP/d1/ota/device/progress", {"step": "35", "desc": "x"})
    assert reply["code"] == 764
    reply = await client.request(
        "/sys/dirP/d1/ota/device/getversion", {}, method="Ota.device.getversion"
    )
    assert (reply["code"], reply["data"]) == (200, [])


class _NotFoundInStore(NotFound, StoreError):
    """An error of two families (the store's ``SeriesNotFound`` is one)."""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (ValidationError("level out of range", 1206), 1206, "level out of range"),
        (InvalidArgument("bad value"), 1200, "bad value"),
        (NotFound("device dirP/zz not found"), 1200, "device dirP/zz not found"),
        (RegistryError("not a gateway"), 1200, "not a gateway"),
        (StoreError("disk full"), 1200, "storage failed: disk full"),
        (_NotFoundInStore("no data"), 1200, "storage failed: no data"),
        (RuntimeError("a bug"), 1200, "internal error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
async def test_each_error_family_gets_its_own_reply(
    env: Env, error: Exception, code: int, message: str
) -> None:
    """What a handler raises decides the reply: a store error is answered as the store's, never
    as the registry's, whatever else it also is."""

    class Failing:
        def inform(self, product_key: str, device_key: str, version: str) -> None:
            raise error

        def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
            return 200

        def get_versions(self, product_key: str, device_key: str) -> list[dict[str, object]]:
            return []

    env.iothub.ota = Failing()
    client = await env.device("dirP", "d1")
    reply = await client.request(
        "/sys/dirP/d1/ota/device/inform", {"version": "1.0"}, request_id="e"
    )
    assert reply == {"id": "e", "code": code, "data": {}, "message": message}


async def test_java_extras_accepted(env: Env) -> None:
    client = await env.device("dirP", "d1")
    for suffix in ("thing/log/post", "network/status/report", "connection/state/post"):
        reply = await client.request(f"/sys/dirP/d1/{suffix}", {})
        assert reply["code"] == 200


async def test_acl_1009_on_other_device_and_subscribe_denied(env: Env) -> None:
    env.registry.register_device("dirP", device_key="d2")
    other = await env.device("dirP", "d2")
    await other.subscribe("/sys/dirP/d2/thing/measurepoint/post_reply")
    client = await env.device("dirP", "d1")
    # may not subscribe to another device's topics
    assert await client.subscribe("/sys/dirP/d2/thing/measurepoint/post_reply") == 0x80
    assert await client.subscribe("/sys/dirP/d2/#") == 0x80
    assert await client.subscribe("#") == 0x80
    # own topics: replies and commands (also by wildcard), never request topics
    assert await client.subscribe("/sys/dirP/d1/thing/service/+") == 1
    assert await client.subscribe("/sys/dirP/d1/thing/event/+/post_reply") == 1
    assert await client.subscribe("/sys/dirP/d1/thing/measurepoint/post") == 0x80
    assert await client.subscribe("/sys/dirP/d1/#") == 0x80
    # publishing on another device's topic: dropped, never a disconnect; nothing stored
    body = json.dumps({"id": "9", "params": {"measurepoints": {"status": 1}}}).encode()
    await client.publish("/sys/dirP/d2/thing/measurepoint/post", body)
    denied = await client.read_publish()  # asked for the reply (refused SUBACK): 1009
    assert denied.topic == "/sys/dirP/d2/thing/measurepoint/post_reply"
    assert json.loads(denied.payload)["id"] == "9"
    assert json.loads(denied.payload)["code"] == 1009
    assert await other.quiet(0.2)  # the owner gets no forged reply
    assert len(latest(env, "dirP", "d2")) == 0
    # command topics and forged replies are refused at the MQTT layer
    await client.publish("/sys/dirP/d2/thing/service/reboot", b"{}")
    assert await other.quiet(0.2)
    # a sub-device that is not logged in: 1009 goes to the publisher when it listens
    env.registry.register_device("gwP", device_key="g1")
    gateway = await env.device("gwP", "g1")
    assert await gateway.subscribe("/sys/subP/s9/thing/measurepoint/post_reply") == 0x80
    # the connection still works
    reply = await client.request(POST, {"measurepoints": {"status": 1}})
    assert reply["code"] == 200


async def test_1009_reply_when_subscribed(env: Env) -> None:
    env.registry.create_product(
        "Custom", product_key="cusP", custom_topics={"/{productKey}/{deviceKey}/up": "both"}
    )
    # a sub-device logged out keeps its reply subscription on the gateway: covered in the
    # gateway tests; here the device listens on a custom topic and publishes to a foreign one
    gateway_keys = ("gwP", "g1")
    env.registry.register_device(*gateway_keys[:1], device_key=gateway_keys[1])
    sub = env.registry.register_device("subP", device_key="s1")
    env.registry.attach(gateway_keys, ("subP", "s1"))
    gateway = await env.device(*gateway_keys)
    from enos_lab.enos import sign, sign_params

    params = sign_params(client_id="s1", product_key="subP", device_key="s1", timestamp="1")
    login = {**params, "signMethod": "sha256", "sign": sign(params, sub.device_secret)}
    reply = await gateway.request("/ext/session/gwP/g1/combine/login", login)
    assert reply["code"] == 200
    topic = "/sys/subP/s1/thing/measurepoint/post"
    assert (await gateway.request(topic, {"measurepoints": {"status": 1}}))["code"] == 200
    reply = await gateway.request(
        "/ext/session/gwP/g1/combine/logout", {"productKey": "subP", "deviceKey": "s1"}
    )
    assert reply["data"] == {"productKey": "subP", "deviceKey": "s1"}
    reply = await gateway.request(topic, {"measurepoints": {"status": 1}}, request_id="77")
    assert (reply["id"], reply["code"]) == ("77", 1009)


async def test_custom_topics_acl_and_routing(env: Env) -> None:
    env.registry.create_product(
        "Custom",
        product_key="cusP",
        custom_topics={
            "/{productKey}/{deviceKey}/user/up": "publish",
            "/{productKey}/{deviceKey}/user/down": "subscribe",
        },
    )
    client = await env.device("cusP", "c1")
    assert await client.subscribe("/cusP/c1/user/down") == 1
    assert await client.subscribe("/cusP/c1/user/up") == 0x80
    assert await client.subscribe("/cusP/c2/user/down") == 0x80
    seen: list[str] = []
    env.hub.add_handler(lambda info, message: seen.append(message.topic) or None)
    await client.publish("/cusP/c1/user/up", b"hello")
    assert seen == ["/cusP/c1/user/up"]
    await client.publish("/cusP/c1/user/down", b"nope")  # subscribe-only: dropped
    assert seen == ["/cusP/c1/user/up"]


async def test_strict_methods_1260(env: Env) -> None:
    env.iothub.config = IotHubConfig(strict_methods=True)
    client = await env.device("dirP", "d1")
    reply = await client.request(POST, {"measurepoints": {"status": 1}}, method="thing.event.post")
    assert reply["code"] == 1260
    reply = await client.request(
        POST, {"measurepoints": {"status": 1}}, method="thing.measurepoint.post"
    )
    assert reply["code"] == 200


class Codec:
    """A toy codec: upstream ``b"T<int>"`` is a status post; replies become ``b"OK"``/``b"ER"``."""

    def decode_upstream(self, payload: bytes) -> bytes:
        if payload.startswith(b"R"):
            return json.dumps(
                {"id": "unknown", "code": 200, "data": {"v": payload[1:].decode()}}
            ).encode()
        value = int(payload[1:])
        body: dict[str, Any] = {
            "id": "unknown",
            "method": "thing.measurepoint.post",
            "params": {"measurepoints": {"status": value}},
        }
        return json.dumps(body).encode()

    def encode_downstream(self, envelope: bytes) -> bytes:
        return b"CMD" + envelope

    def encode_reply(self, reply: bytes) -> bytes:
        return b"OK" if json.loads(reply)["code"] == 200 else b"ER"


async def test_raw_codec_upstream_and_downstream(env: Env) -> None:
    env.registry.create_product("Raw", product_key="rawP", model_id="meter", data_format="custom")
    env.iothub.register_codec("rawP", Codec())
    refused: list[tuple[tuple[str, str], str, int]] = []
    env.iothub.tap.add_callback(
        lambda e: refused.append(((e.product_key, e.device_key), e.request, e.code)),
        kinds=RequestRefused,
    )
    client = await env.device("rawP", "r1")
    topic = "/sys/rawP/r1/thing/model/up_raw"
    await client.subscribe(topic + "_reply")
    await client.publish(topic, b"T7")
    reply = await client.read_publish()
    assert (reply.topic, reply.payload) == (topic + "_reply", b"OK")
    assert list(latest(env, "rawP", "r1")["value"]) == [7]
    await client.publish(topic, b"T99999999999")  # out of int32 range: 1204
    assert (await client.read_publish()).payload == b"ER"
    await client.publish(topic, b"Tx")  # the codec fails: 1200
    assert (await client.read_publish()).payload == b"ER"
    assert refused == [
        (("rawP", "r1"), "MEASUREPOINT_POST", 1204),
        (("rawP", "r1"), "MODEL_UP_RAW", 1200),
    ]
    # downstream: encoded by the codec, reply decoded by the codec
    import asyncio

    from enos_lab.enos import TopicKind

    task = asyncio.create_task(
        env.iothub.send_command("rawP", "r1", TopicKind.MODEL_DOWN_RAW, {"x": 1}, timeout=3)
    )
    command = await client.read_publish()
    assert command.topic == "/sys/rawP/r1/thing/model/down_raw"
    assert command.payload.startswith(b"CMD")
    await client.publish("/sys/rawP/r1/thing/model/down_raw_reply", b"Rdone")
    result = await task
    assert result is not None and result.ok and result.data == {"v": "done"}
