"""Logout from the cloud side through the facade, with the lab's device SDK on the device side
(issue 14 "Logout", protocol reference 2.5 and 8.4): disable refuses and kicks but keeps data,
enable lets the device back; delete removes credentials and topology and keeps the history or
purges it (store rows and alert records); the gateway of a sub-device hears ``combine/enable``,
``disable`` and ``delete``; a deleted key registers again as a new device with a fresh secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from enos_sdk_helpers import running_lab, sdk_product

from enos_lab import Lab, TopicKind
from enos_lab.alerts import AlertRule
from enos_lab.clock import from_epoch_ms
from enos_lab.device import DeviceClient, Endpoint, Notification
from enos_lab.errors import LoginRefused, NotFound, RequestFailed
from enos_lab.registry import NodeType

WAIT = 5.0  # [s] bound of every wait
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z [ms]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with running_lab(tmp_path / "lab", seed=14) as running:
        yield running


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition()`` is true, yielding to the loop in between."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _post_history(client: Endpoint, n: int = 3) -> None:
    for i in range(n):
        reply = await client.post_measurepoints({"temp": 20.0 + i}, T0 + i * 1000)
        assert reply.code == 200, reply.message
    reply = await client.post_event("overheat", {"temp": 90.0}, T0 + 5000)
    assert reply.code == 200, reply.message


def _stored(lab: Lab, product_key: str, device_key: str) -> tuple[int, int, int]:
    """(points, events, attribute changes) stored of the device."""
    store = lab.store
    return (
        len(store.query_points(device_key, product_key=product_key)),
        len(store.query_events(device_key, product_key=product_key)),
        len(store.query_attributes(device_key, product_key=product_key)),
    )


async def test_disable_kicks_refuses_and_keeps_data_enable_lets_back(lab: Lab) -> None:
    pk = sdk_product(lab).product_key
    device = lab.register_device(pk, device_key="m1")
    client = DeviceClient(
        lab.host, lab.port, pk, "m1", device.device_secret, timeout=WAIT, reconnect=None
    )
    await client.connect()
    try:
        await _post_history(client)
        await lab.adisable_device(pk, "m1", reason="stolen")
        await _until(lambda: not client.connected, "the kick")
        assert _stored(lab, pk, "m1")[:2] == (3, 1)  # data kept
        assert not lab.device(pk, "m1").enabled
        with pytest.raises(LoginRefused):
            await DeviceClient(
                lab.host, lab.port, pk, "m1", device.device_secret, timeout=WAIT, reconnect=None
            ).connect()
        assert "stolen" in lab.refused_logins()["reason"].iloc[-1]
        await lab.aenable_device(pk, "m1")
        await client.disconnect()
        await client.connect()
        assert client.connected
        reply = await client.post_measurepoints({"temp": 30.0}, T0 + 10_000)
        assert reply.code == 200
        assert _stored(lab, pk, "m1")[0] == 4
    finally:
        await client.disconnect()


async def test_gateway_hears_enable_disable_delete_of_its_sub_device(lab: Lab) -> None:
    gw_pk = lab.create_product("Gateway", node_type=NodeType.GATEWAY).product_key
    sub_pk = sdk_product(lab, "Sub meter", node_type="sub_device").product_key
    gateway = lab.register_device(gw_pk, device_key="gw")
    sub = lab.register_device(sub_pk, device_key="s1")
    lab.registry.attach((gw_pk, "gw"), (sub_pk, "s1"))
    heard: list[Notification] = []
    async with DeviceClient(
        lab.host, lab.port, gw_pk, "gw", gateway.device_secret, timeout=WAIT
    ) as client:
        client.on_notification(heard.append)
        await client.login_sub_device(sub_pk, "s1", sub.device_secret)
        await _post_history(client.sub_device(sub_pk, "s1"))

        await lab.adisable_device(sub_pk, "s1")
        await _until(lambda: len(heard) == 1, "combine.disable")
        assert not lab.iothub.is_online(sub_pk, "s1")  # type: ignore[union-attr]
        assert client.logged_in_sub_devices == []

        await lab.aenable_device(sub_pk, "s1")
        await _until(lambda: len(heard) == 2, "combine.enable")
        await client.login_sub_device(sub_pk, "s1", sub.device_secret)  # back in
        assert lab.iothub.is_online(sub_pk, "s1")  # type: ignore[union-attr]

        deleted = await lab.adelete_device(sub_pk, "s1")
        assert deleted.device_key == "s1"
        await _until(lambda: len(heard) == 3, "combine.delete")
        assert [n.kind for n in heard] == [
            TopicKind.SUB_DEVICE_DISABLE,
            TopicKind.SUB_DEVICE_ENABLE,
            TopicKind.SUB_DEVICE_DELETE,
        ]
        for notification in heard:
            assert notification.devices == ((sub_pk, "s1"),)
            assert (notification.product_key, notification.device_key) == (gw_pk, "gw")
        assert not lab.iothub.is_online(sub_pk, "s1")  # type: ignore[union-attr]
        assert lab.iothub.online_sub_devices((gw_pk, "gw")) == []  # type: ignore[union-attr]
        assert client.connected  # the gateway itself stays
        # credentials and topology are gone: the gateway cannot log it in again
        with pytest.raises(RequestFailed) as refused:
            await client.login_sub_device(sub_pk, "s1", sub.device_secret)
        assert refused.value.code == 705  # EnOS: sub-device does not exist
        assert lab.registry.sub_devices((gw_pk, "gw")) == []
    # purge=False: the sub-device's history stays in the store
    assert _stored(lab, sub_pk, "s1")[:2] == (3, 1)


async def test_delete_keeps_or_purges_history(lab: Lab) -> None:
    pk = sdk_product(lab).product_key
    secrets = {dk: lab.register_device(pk, device_key=dk).device_secret for dk in ("k", "p", "o")}
    for dk, secret in secrets.items():
        async with DeviceClient(lab.host, lab.port, pk, dk, secret, timeout=WAIT) as client:
            await _post_history(client)
            reply = await client.update_attributes({"site": "north"})
            assert reply.code == 200, reply.message
        lab.create_alert(pk, dk, description=f"alert of {dk}")
    before = {dk: _stored(lab, pk, dk) for dk in secrets}
    assert all(counts[:2] == (3, 1) for counts in before.values())
    assert len(lab.alerts()) == 3

    lab.delete_device(pk, "k")  # purge=False: EnOS's deleteDevice
    with pytest.raises(NotFound):
        lab.device(pk, "k")
    assert _stored(lab, pk, "k") == before["k"]
    assert set(lab.alerts()["device_key"]) == {"k", "p", "o"}

    lab.delete_device(pk, "p", purge=True)
    with pytest.raises(NotFound):  # neither the registry nor the store knows it any more
        lab.store.query_points("p", product_key=pk)
    assert "p" not in set(lab.store.devices()["device_key"])
    assert "p" not in set(lab.store.series()["device_key"])
    assert set(lab.alert_history(include_active=True)["device_key"]) == {"k", "o"}
    # the others are untouched
    assert _stored(lab, pk, "o") == before["o"]
    assert _stored(lab, pk, "k") == before["k"]


async def test_a_deleted_key_registers_again_as_a_new_device(lab: Lab) -> None:
    pk = sdk_product(lab).product_key
    old = lab.register_device(pk, device_key="r1")
    async with DeviceClient(lab.host, lab.port, pk, "r1", old.device_secret, timeout=WAIT) as c:
        await _post_history(c)
    lab.delete_device(pk, "r1", purge=True)
    new = lab.register_device(pk, device_key="r1")
    assert new.device_secret != old.device_secret
    assert new.asset_id != old.asset_id
    with pytest.raises(LoginRefused):  # the old secret is gone with the old device
        await DeviceClient(
            lab.host, lab.port, pk, "r1", old.device_secret, timeout=WAIT, reconnect=None
        ).connect()
    assert _stored(lab, pk, "r1") == (0, 0, 0)  # no old data
    async with DeviceClient(lab.host, lab.port, pk, "r1", new.device_secret, timeout=WAIT) as c:
        reply = await c.post_measurepoints({"temp": 1.5}, T0 - 1000)  # older than the purged
        assert reply.code == 200
    frame = lab.store.query_points("r1", product_key=pk)
    assert frame["value"].tolist() == [1.5]


async def test_without_purge_a_registered_again_key_sees_the_kept_history(lab: Lab) -> None:
    # The store keys data by product and device key (EnOS by asset id): documented behaviour.
    pk = sdk_product(lab).product_key
    old = lab.register_device(pk, device_key="r2")
    async with DeviceClient(lab.host, lab.port, pk, "r2", old.device_secret, timeout=WAIT) as c:
        await _post_history(c)
    lab.delete_device(pk, "r2")
    lab.register_device(pk, device_key="r2")
    assert _stored(lab, pk, "r2")[:2] == (3, 1)


async def test_purge_forgets_the_alert_engine_s_state_of_the_device(lab: Lab) -> None:
    pk = sdk_product(lab).product_key
    lab.add_alert_rule(
        AlertRule(
            rule_id="hot", model_id="sdk_meter", measurepoint="temp", condition="${temp} > 50"
        )
    )
    old = lab.register_device(pk, device_key="a1")
    async with DeviceClient(lab.host, lab.port, pk, "a1", old.device_secret, timeout=WAIT) as c:
        assert (await c.post_measurepoints({"temp": 60.0}, T0)).code == 200
    await _until(lambda: len(lab.alerts()) == 1, "the alert")
    lab.delete_device(pk, "a1", purge=True)
    assert lab.alert_history(include_active=True).empty
    new = lab.register_device(pk, device_key="a1")
    async with DeviceClient(lab.host, lab.port, pk, "a1", new.device_secret, timeout=WAIT) as c:
        # a new device: its first anomaly opens a new alert, its recovery closes it
        assert (await c.post_measurepoints({"temp": 70.0}, T0 + 1000)).code == 200
        await _until(lambda: len(lab.alerts()) == 1, "the new device's alert")
        assert (await c.post_measurepoints({"temp": 20.0}, T0 + 2000)).code == 200
        await _until(lambda: len(lab.alert_history()) == 1, "the recovery")
    history = lab.alert_history()
    assert history["occur_time"].tolist() == [from_epoch_ms(T0 + 1000)]
