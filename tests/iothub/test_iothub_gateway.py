"""Gateways and sub-devices (register, topology, login, logout, lifecycle), commands and the
message-integration channel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from _iothub_kit import DeviceClient, Env

from enos_lab import errors
from enos_lab.enos import (
    SecureMode,
    SignMethod,
    TopicKind,
    login_credentials,
    sign,
    sign_params,
)
from enos_lab.errors import ClosedError, NotFound
from enos_lab.iothub import DeviceOffline, IotHubConfig

LOGIN = "/ext/session/gwP/g1/combine/login"
BATCH = "/ext/session/gwP/g1/combine/login/batch"
LOGOUT = "/ext/session/gwP/g1/combine/logout"


def proof(
    pk: str,
    dk: str,
    secret: str,
    *,
    client_id: str | None = None,
    timestamp: Any = "1700000000000",
    method: str = "hmacsha256",
    key: str = "signMethod",
    **extra: Any,
) -> dict[str, Any]:
    """A signed sub-device credential (login or topo add entry)."""
    client_id = client_id if client_id is not None else f"{pk}{dk}{timestamp}"
    params = sign_params(
        client_id=client_id, product_key=pk, device_key=dk, timestamp=str(timestamp)
    )
    signature = sign(params, secret, SignMethod.parse(method))
    return {
        "productKey": pk,
        "deviceKey": dk,
        "clientId": client_id,
        "timestamp": timestamp,
        key: method,
        "sign": signature,
        **extra,
    }


async def gateway_with_subs(env: Env, *keys: str) -> tuple[DeviceClient, dict[str, str]]:
    """Gateway gwP/g1 online with sub-devices subP/<key> attached; returns secrets by key."""
    env.registry.register_device("gwP", device_key="g1")
    secrets = {}
    for dk in keys:
        secrets[dk] = env.registry.register_device("subP", device_key=dk).device_secret
        env.registry.attach(("gwP", "g1"), ("subP", dk))
    return await env.device("gwP", "g1"), secrets


async def test_register_sub_devices_and_702(env: Env) -> None:
    gateway, _ = await gateway_with_subs(env)
    topic = "/sys/gwP/g1/thing/device/register"
    reply = await gateway.request(
        topic,
        [
            {
                "productKey": "subP",
                "deviceKey": "new1",
                "deviceName": {"defaultValue": "Meter 1", "i18nValue": {"en_US": "Meter 1"}},
                "deviceDesc": "basement",
                "timezone": "+08:00",
                "deviceAttributes": {"maxCurrent": 70},
            },
            {"productKey": "subP", "deviceName": "Meter 2"},
        ],
    )
    assert reply["code"] == 200
    first, second = reply["data"]
    stored = env.registry.get_device("subP", "new1")
    assert first == {
        "assetId": stored.asset_id,
        "productKey": "subP",
        "deviceKey": "new1",
        "deviceSecret": stored.device_secret,
    }
    assert stored.name == "Meter 1" and stored.timezone == "+08:00"
    assert env.registry.get_device("subP", second["deviceKey"]).name == "Meter 2"
    reply = await gateway.request(topic, [{"productKey": "subP", "deviceKey": "new1"}])
    assert reply["code"] == 702


async def test_topo_add_get_delete(env: Env) -> None:
    gateway, _ = await gateway_with_subs(env)
    s5 = env.registry.register_device("subP", device_key="s5")
    base = "/sys/gwP/g1/thing/topo/"
    # Node style: clientId = deviceKey, timestamp a number, upper-case sign
    entry = proof("subP", "s5", s5.device_secret, client_id="s5", timestamp=1700000000000)
    entry["sign"] = entry["sign"].upper()
    assert (await gateway.request(base + "add", [entry]))["code"] == 200
    reply = await gateway.request(base + "get", {})
    assert reply["data"] == [{"productKey": "subP", "deviceKey": "s5"}]
    bad = proof("subP", "s5", "wrong")
    assert (await gateway.request(base + "add", [bad]))["code"] == 1255
    missing = proof("subP", "nope", "x")
    assert (await gateway.request(base + "add", [missing]))["code"] == 1255
    pair = [{"productKey": "subP", "deviceKey": "s5"}]
    assert (await gateway.request(base + "delete", pair))["code"] == 200
    assert (await gateway.request(base + "delete", pair))["code"] == 1256
    assert (await gateway.request(base + "get", {}))["data"] == []


async def test_topo_from_non_gateway(env: Env) -> None:
    client = await env.device("dirP", "d1")
    base = "/sys/dirP/d1/thing/topo/"
    assert (await client.request(base + "get", {}))["code"] == 1200
    assert (await client.request(base + "add", []))["code"] == 1255
    assert (await client.request(base + "delete", []))["code"] == 1256


async def test_sub_device_login_data_logout(env: Env) -> None:
    gateway, secrets = await gateway_with_subs(env, "s1")
    # Python style: cleanSession "False" and secureMode "2" are not signed
    login = proof("subP", "s1", secrets["s1"], secureMode="2", cleanSession="False")
    reply = await gateway.request(LOGIN, login, request_id="5")
    assert reply["code"] == 200
    assert reply["data"]["productKey"] == "subP" and reply["data"]["deviceKey"] == "s1"
    assert env.iothub.is_online("subP", "s1")
    assert env.iothub.online_sub_devices(("gwP", "g1")) == [("subP", "s1")]
    # data on behalf of the sub-device, topic with the sub-device's keys
    topic = "/sys/subP/s1/thing/measurepoint/post"
    assert (await gateway.request(topic, {"measurepoints": {"status": 4}}))["code"] == 200
    # batch on the gateway's topic naming the sub-device
    batch = "/sys/gwP/g1/thing/measurepoint/post/batch"
    entries = [
        {"productKey": "", "deviceKey": "", "measurepoints": {"status": 1}, "time": 1000},
        {"productKey": "subP", "deviceKey": "s1", "measurepoints": {"status": 2}, "time": 1000},
    ]
    assert (await gateway.request(batch, entries))["code"] == 200
    status = env.store.query_points("s1", ["status"], product_key="subP")
    assert sorted(status["value"]) == [2, 4]
    reply = await gateway.request(LOGOUT, {"productKey": "subP", "deviceKey": "s1"})
    assert reply["data"] == {"productKey": "subP", "deviceKey": "s1"}
    assert not env.iothub.is_online("subP", "s1")
    # after logout: 1009 on the sub-device topic, 1212 in a batch
    assert (await gateway.request(topic, {"measurepoints": {"status": 4}}))["code"] == 1009
    assert (await gateway.request(batch, entries))["code"] == 1212
    # allowOfflineSubDevice accepts a topology child
    reply = await gateway.request(batch, entries, allowOfflineSubDevice=True)
    assert reply["code"] == 200
    log = [(on, why) for *_, on, why in env.registry.presence_log("subP", "s1")]
    assert log == [(True, "connected"), (False, "logged out")]


async def test_sub_device_login_errors(env: Env) -> None:
    gateway, secrets = await gateway_with_subs(env, "s1", "s2")
    assert (await gateway.request(LOGIN, proof("subP", "zz", "x")))["code"] == 705
    assert (await gateway.request(LOGIN, proof("subP", "s1", "wrong")))["code"] == 742
    env.registry.register_device("subP", device_key="free")
    free_secret = env.registry.get_device("subP", "free").device_secret
    assert (await gateway.request(LOGIN, proof("subP", "free", free_secret)))["code"] == 740
    env.registry.disable_device("subP", "s2")
    assert (await gateway.request(LOGIN, proof("subP", "s2", secrets["s2"])))["code"] == 723
    env.registry.create_product(
        "CertSub", product_key="csP", node_type="sub_device", certificate_required=True
    )
    cs = env.registry.register_device("csP", device_key="c1")
    env.registry.attach(("gwP", "g1"), ("csP", "c1"))
    assert (await gateway.request(LOGIN, proof("csP", "c1", cs.device_secret)))["code"] == 746
    env.registry.create_product("NoDyn", product_key="ndP", node_type="sub_device")
    env.registry.register_device("ndP", device_key="n1")
    env.registry.attach(("gwP", "g1"), ("ndP", "n1"))
    nd_secret = env.registry.get_product("ndP").product_secret
    login = proof("ndP", "n1", nd_secret, secureMode=3)
    assert (await gateway.request(LOGIN, login))["code"] == 770


async def test_sub_device_dynamic_activation_returns_secret(env: Env) -> None:
    gateway, _ = await gateway_with_subs(env, "s1")
    login = proof("subP", "s1", env.sub.product_secret, secureMode=3)
    reply = await gateway.request(LOGIN, login)
    assert reply["code"] == 200
    new_secret = reply["data"]["deviceSecret"]
    assert new_secret == env.registry.get_device("subP", "s1").device_secret


async def test_batch_login_python_style(env: Env) -> None:
    gateway, secrets = await gateway_with_subs(env, "s1", "s2")
    env.registry.disable_device("subP", "s2")
    timestamp = "1700000000.25"  # Python: seconds with a fraction, hashed verbatim

    def entry(dk: str) -> dict[str, Any]:
        params = sign_params(
            client_id="login.batch", product_key="subP", device_key=dk, timestamp=timestamp
        )
        return {
            "productKey": "subP",
            "deviceKey": dk,
            "secureMode": 2,
            "sign": sign(params, secrets[dk]),
        }

    params = {
        "clientId": "login.batch",
        "timestamp": timestamp,
        "signmethod": "sha256",
        "subDevices": [entry("s1"), entry("s2")],
    }
    reply = await gateway.request(BATCH, params)
    assert reply["code"] == 723
    assert [d["deviceKey"] for d in reply["data"]["loginedSubDevices"]] == ["s1"]
    assert reply["data"]["failedSubDevices"] == [{"productKey": "subP", "deviceKey": "s2"}]
    assert "subP&s2 has error" in reply["message"]
    assert env.iothub.online_sub_devices(("gwP", "g1")) == [("subP", "s1")]
    bad = await gateway.request(BATCH, {"subDevices": "x"})
    assert bad["code"] == 1220
    assert bad["data"] == {"loginedSubDevices": [], "failedSubDevices": []}


@pytest.fixture
def iothub_config() -> IotHubConfig:
    """A gateway limit of 1 online sub-device, short activation timings."""
    return IotHubConfig(max_online_sub_devices=1, activation_delay=0.05, activation_resend=0.2)


async def test_online_sub_device_limit(env: Env) -> None:
    gateway, secrets = await gateway_with_subs(env, "s1", "s2")
    assert (await gateway.request(LOGIN, proof("subP", "s1", secrets["s1"])))["code"] == 200
    reply = await gateway.request(LOGIN, proof("subP", "s2", secrets["s2"]))
    assert reply["code"] != 200 and "limit" in reply["message"]


async def test_sub_devices_offline_when_gateway_disconnects(env: Env) -> None:
    gateway, secrets = await gateway_with_subs(env, "s1")
    assert (await gateway.request(LOGIN, proof("subP", "s1", secrets["s1"])))["code"] == 200
    await gateway.close()
    assert not env.iothub.is_online("subP", "s1")
    assert env.registry.presence_log("subP", "s1")[-1][3:] == (False, "gateway offline")


async def test_disable_sub_device_notifies_gateway_and_logs_out(env: Env) -> None:
    gateway, secrets = await gateway_with_subs(env, "s1")
    assert (await gateway.request(LOGIN, proof("subP", "s1", secrets["s1"])))["code"] == 200
    await env.iothub.disable_device("subP", "s1")
    notice = await gateway.read_publish()
    assert notice.topic == "/ext/session/gwP/g1/combine/disable"
    assert json.loads(notice.payload)["params"] == [{"productKey": "subP", "deviceKey": "s1"}]
    assert not env.iothub.is_online("subP", "s1")
    assert env.registry.presence_log("subP", "s1")[-1][3:] == (False, "disabled")
    await env.iothub.enable_device("subP", "s1")
    assert (await gateway.read_publish()).topic == "/ext/session/gwP/g1/combine/enable"
    await env.iothub.delete_device("subP", "s1")
    assert (await gateway.read_publish()).topic == "/ext/session/gwP/g1/combine/delete"


async def test_send_command_direct_and_via_gateway(env: Env) -> None:
    client = await env.device("dirP", "d1")
    task = asyncio.create_task(
        env.iothub.send_command("dirP", "d1", TopicKind.SERVICE_INVOKE, {"x": 1}, item_id="mul")
    )
    command = await client.read_publish()  # no subscription needed
    assert command.topic == "/sys/dirP/d1/thing/service/mul" and command.qos == 1
    body = json.loads(command.payload)
    assert body["method"] == "thing.service.mul"
    reply = {"id": body["id"], "code": 200, "data": {"result": 42}, "message": ""}
    await client.publish(command.topic + "_reply", json.dumps(reply).encode(), qos=0)
    result = await task
    assert result is not None and result.data == {"result": 42}
    # a reply is not routed back to anyone implicitly
    assert await client.quiet(0.1)
    with pytest.raises(TimeoutError):
        await env.iothub.send_command(
            "dirP", "d1", TopicKind.MEASUREPOINT_SET, {"status": 1}, timeout=0.1
        )
    assert (
        await env.iothub.send_command(
            "dirP", "d1", TopicKind.MEASUREPOINT_GET, ["status"], wait=False
        )
        is None
    )
    with pytest.raises(NotFound):
        await env.iothub.send_command("dirP", "zz", TopicKind.MEASUREPOINT_SET, {})
    env.registry.register_device("dirP", device_key="off")
    with pytest.raises(DeviceOffline) as offline:
        await env.iothub.send_command("dirP", "off", TopicKind.MEASUREPOINT_SET, {})
    # the device's state, not the lab being closed; one class under both names
    assert not isinstance(offline.value, ClosedError)
    assert DeviceOffline is errors.DeviceOffline
    # via the gateway for a logged-in sub-device
    gateway, secrets = await gateway_with_subs(env, "s1")
    assert (await gateway.request(LOGIN, proof("subP", "s1", secrets["s1"])))["code"] == 200
    task = asyncio.create_task(
        env.iothub.send_command("subP", "s1", TopicKind.MEASUREPOINT_SET, {"status": 2})
    )
    command = await gateway.read_publish()
    assert command.topic == "/sys/subP/s1/thing/service/measurepoint/set"
    body = json.loads(command.payload)
    ack = {"id": body["id"], "code": 200, "data": None}
    await gateway.publish(command.topic + "_reply", json.dumps(ack).encode())
    result = await task
    assert result is not None and result.ok


async def test_integration_channel(env: Env) -> None:
    env.registry.register_device("dirP", device_key="d1")
    client_id, username, password = login_credentials(
        "dirP",
        "%channel%",
        env.direct.product_secret,
        secure_mode=SecureMode.INTEGRATION,
        timestamp="1",
    )
    channel, connack = await env.connect(client_id, username, password)
    assert connack.reason_code == 0
    base = "/sys/dirP/integration/"
    reply = await channel.request(
        base + "measurepoint/post",
        [{"deviceKey": "d1", "measurepoints": {"status": 9}, "time": 1000}],
    )
    assert reply["code"] == 200
    assert list(env.store.query_points("d1", ["status"], product_key="dirP")["value"]) == [9]
    reply = await channel.request(
        base + "measurepoint/post", [{"deviceKey": "zz", "measurepoints": {}}]
    )
    assert reply["code"] == 1257
    assert (await channel.request(base + "attribute/post", []))["code"] == 200
    reply = await channel.request(
        base + "event/post", [{"deviceKey": "d1", "events": {"overheat": {"level": 1}}, "time": 5}]
    )
    assert reply["code"] == 200
    reply = await channel.request(
        base + "attribute/post", [{"deviceKey": "d1", "attributes": {"maxCurrent": 5}}]
    )
    assert reply["code"] == 200
    assert env.registry.get_device("dirP", "d1").attributes == {"maxCurrent": 5}
    # the channel may not use device topics
    assert await channel.subscribe("/sys/dirP/d1/thing/measurepoint/post_reply") == 0x80
