"""Logins, throttle, one connection per device, presence, dynamic activation, disable/delete."""

from __future__ import annotations

import json
from pathlib import Path

from _iothub_kit import Env

from enos_lab.enos import SecureMode, login_credentials
from enos_lab.iothub import IotHub, IotHubConfig
from enos_lab.mqtt import Publish


def presence(env: Env, pk: str, dk: str) -> list[tuple[bool, str]]:
    return [(online, why) for _, _, _, online, why in env.registry.presence_log(pk, dk)]


async def test_static_login_accepted_and_presence_recorded(env: Env) -> None:
    client = await env.device("dirP", "d1")
    assert env.iothub.is_online("dirP", "d1")
    assert env.registry.get_device("dirP", "d1").online
    await client.close()
    assert not env.iothub.is_online("dirP", "d1")
    assert presence(env, "dirP", "d1") == [(True, "connected"), (False, "disconnected")]


async def test_wrong_secret_is_connack_5(env: Env) -> None:
    env.registry.register_device("dirP", device_key="d1")
    _, connack = await env.login("dirP", "d1", "wrong-secret")
    assert connack.reason_code == 5
    assert presence(env, "dirP", "d1") == []


async def test_unparseable_username_is_connack_4(env: Env) -> None:
    _, connack = await env.connect("d1|securemode=2,signmethod=sha256,timestamp=1|", "nope", "x")
    assert connack.reason_code == 4


async def test_sub_device_product_cannot_connect_directly_771(env: Env) -> None:
    env.registry.register_device("subP", device_key="s1")
    _, connack = await env.login("subP", "s1")
    assert connack.reason_code == 5  # EnOS 771 -> CONNACK 5


async def test_certificate_product_on_plain_tcp_refused_746(env: Env) -> None:
    env.registry.create_product("Cert", product_key="certP", certificate_required=True)
    env.registry.register_device("certP", device_key="c1")
    _, connack = await env.login("certP", "c1")
    assert connack.reason_code == 5  # EnOS 746 -> CONNACK 5


async def test_throttle_blocks_after_four_failures(env: Env) -> None:
    device = env.registry.register_device("dirP", device_key="d1")
    for _ in range(4):
        _, connack = await env.login("dirP", "d1", "bad")
        assert connack.reason_code == 5
    _, connack = await env.login("dirP", "d1", device.device_secret)
    assert connack.reason_code == 5  # blocked even with the right secret


async def test_second_login_takes_over_and_old_disconnect_keeps_online(env: Env) -> None:
    first = await env.device("dirP", "d1")
    second, connack = await env.login("dirP", "d1", timestamp="1700000000999")
    assert connack.reason_code == 0
    assert first.client_id != second.client_id
    await first.conn.wait_closed()
    assert env.iothub.is_online("dirP", "d1")
    assert env.registry.get_device("dirP", "d1").online
    assert presence(env, "dirP", "d1") == [
        (True, "connected"),
        (False, "taken over"),
        (True, "connected"),
    ]
    # the new connection works
    reply = await second.request(
        "/sys/dirP/d1/thing/measurepoint/post", {"measurepoints": {"status": 1}}
    )
    assert reply["code"] == 200


async def test_disable_kicks_and_refuses_login(env: Env) -> None:
    client = await env.device("dirP", "d1")
    await env.iothub.disable_device("dirP", "d1")
    await client.conn.wait_closed()
    assert presence(env, "dirP", "d1")[-1] == (False, "disabled")
    _, connack = await env.login("dirP", "d1")
    assert connack.reason_code == 5
    await env.iothub.enable_device("dirP", "d1")
    again, connack = await env.login("dirP", "d1")
    assert connack.reason_code == 0
    await again.close()


async def test_delete_closes_connection(env: Env) -> None:
    client = await env.device("dirP", "d1")
    deleted = await env.iothub.delete_device("dirP", "d1")
    assert deleted.deleted
    await client.conn.wait_closed()
    assert not env.iothub.is_online("dirP", "d1")
    assert env.registry.find_device("dirP", "d1") is None


async def test_dynamic_activation_pushes_secret_without_subscription(env: Env) -> None:
    env.registry.register_device("dynP", device_key="v1")
    client, connack = await env.login(
        "dynP", "v1", env.dyn.product_secret, mode=SecureMode.DYNAMIC_ACTIVATION
    )
    assert connack.reason_code == 0
    first = await client.read_publish()
    assert first.topic == "/ext/session/dynP/v1/thing/activate/info"
    body = json.loads(first.payload)
    params = body["params"]
    assert params["productKey"] == "dynP" and params["deviceKey"] == "v1"
    secret = params["deviceSecret"]
    assert secret == env.registry.get_device("dynP", "v1").device_secret
    assert params["assetId"] == env.registry.get_device("dynP", "v1").asset_id
    # not acknowledged: re-sent with the same secret
    second = await client.read_publish()
    assert json.loads(second.payload)["params"]["deviceSecret"] == secret
    # a mode-3 session may only use its activate topics
    assert await client.subscribe("/sys/dynP/v1/thing/measurepoint/post_reply") == 0x80
    ack = {"id": body["id"], "code": 200, "data": None, "message": "device activate success"}
    await client.publish("/ext/session/dynP/v1/thing/activate/info_reply", json.dumps(ack).encode())
    # drain a re-send that may have crossed the reply, then silence
    while not await client.quiet(0.4):
        packet = client.inbox.pop()
        assert isinstance(packet, Publish)
    assert not env.registry.get_device("dynP", "v1").online  # not activated yet
    await client.close()
    # reconnect with mode 2 and the new secret: online, activated
    final, connack = await env.login("dynP", "v1", secret)
    assert connack.reason_code == 0
    device = env.registry.get_device("dynP", "v1")
    assert device.online and device.activated_at is not None
    await final.close()


async def test_dynamic_activation_refused_for_activated_device(env: Env) -> None:
    env.registry.register_device("dynP", device_key="v2")
    client = await env.device("dynP", "v2")  # static login activates it
    await client.close()
    _, connack = await env.login(
        "dynP", "v2", env.dyn.product_secret, mode=SecureMode.DYNAMIC_ACTIVATION
    )
    assert connack.reason_code == 5


async def test_integration_channel_login(env: Env) -> None:
    client_id, username, password = login_credentials(
        "dirP",
        "%channel%",
        env.direct.product_secret,
        secure_mode=SecureMode.INTEGRATION,
        timestamp="1",
    )
    client, connack = await env.connect(client_id, username, password)
    assert connack.reason_code == 0
    await client.close()


def test_config_is_validated() -> None:
    import pytest

    from enos_lab.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        IotHubConfig(activation_resend=0)
    assert IotHub.__doc__


async def test_keep_alive_timeout_recorded(env: Env) -> None:
    device = env.registry.register_device("dirP", device_key="d1")
    client_id, username, password = login_credentials(
        "dirP", "d1", device.device_secret, timestamp="1"
    )
    client, connack = await env.connect(client_id, username, password, keep_alive=1)
    assert connack.reason_code == 0
    await client.conn.wait_closed(timeout=5.0)  # silent for 1.5 x keep alive
    assert presence(env, "dirP", "d1")[-1] == (False, "keep-alive timeout")
    assert not env.iothub.is_online("dirP", "d1")


async def test_same_client_id_reconnect_takes_over(env: Env) -> None:
    first = await env.device("dirP", "d1")
    second, connack = await env.login("dirP", "d1")  # identical client id
    assert connack.reason_code == 0 and first.client_id == second.client_id
    await first.conn.wait_closed()
    assert env.iothub.is_online("dirP", "d1")
    assert presence(env, "dirP", "d1")[-2:] == [(False, "taken over"), (True, "connected")]
    reply = await second.request(
        "/sys/dirP/d1/thing/measurepoint/post", {"measurepoints": {"status": 1}}
    )
    assert reply["code"] == 200


async def test_activation_session_may_not_post_data(env: Env) -> None:
    env.registry.register_device("dynP", device_key="v3")
    client, connack = await env.login(
        "dynP", "v3", env.dyn.product_secret, mode=SecureMode.DYNAMIC_ACTIVATION
    )
    assert connack.reason_code == 0
    reply = await client.request(
        "/sys/dynP/v3/thing/measurepoint/post", {"measurepoints": {"status": 1}}, request_id="x"
    )
    assert (reply["id"], reply["code"]) == ("x", 1009)
    assert len(env.registry.presence_log("dynP", "v3")) == 0


async def test_activation_resend_gives_up_after_timeout(tmp_path: Path) -> None:
    config = IotHubConfig(activation_delay=0.0, activation_resend=0.1, activation_timeout=0.35)
    env = Env(tmp_path, config)
    await env.hub.start()
    try:
        env.registry.register_device("dynP", device_key="v9")
        client, connack = await env.login(
            "dynP", "v9", env.dyn.product_secret, mode=SecureMode.DYNAMIC_ACTIVATION
        )
        assert connack.reason_code == 0
        secrets = set()
        pushes = 0
        while True:
            try:
                push = await client.read_publish(timeout=0.5)
            except TimeoutError:
                break
            pushes += 1
            secrets.add(json.loads(push.payload)["params"]["deviceSecret"])
        assert 3 <= pushes <= 5  # every 0.1 s for 0.35 s, then silence
        assert len(secrets) == 1  # re-sent, not re-issued
    finally:
        await env.hub.stop()
        env.store.close()
        env.registry.close()
