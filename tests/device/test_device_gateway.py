"""Gateways with the device SDK over real TCP: sub-device registration, topology, login and
logout (single, batch, dynamic activation), data posted on behalf of sub-devices, batch posts
and commands that reach a sub-device's handlers (protocol reference 7.2, 8)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from device_helpers import TIMEOUT, PresenceWatch, Products

from enos_lab import Lab, TopicKind
from enos_lab.device import DeviceClient, PointsEntry, SubDeviceCredentials, SubDeviceSpec
from enos_lab.enos import ReplyCode
from enos_lab.errors import RequestFailed

T0 = 1_700_000_000_000  # [ms]


@pytest.fixture
async def gateway(lab: Lab, products: Products) -> AsyncIterator[DeviceClient]:
    """A connected gateway."""
    device = lab.register_device(products.gateway, device_key="gw")
    async with DeviceClient(
        lab.host, lab.port, products.gateway, "gw", device.device_secret, timeout=TIMEOUT
    ) as client:
        yield client


async def test_register_attach_login_and_logout(
    lab: Lab, products: Products, gateway: DeviceClient
) -> None:
    sub = products.sub
    watch = PresenceWatch(lab)
    creds = await gateway.register_sub_devices(
        [
            SubDeviceSpec(sub, "Meter 1", device_key="s1", attributes={"site": "north"}),
            SubDeviceSpec(sub, "Meter 2", description="basement", timezone="+08:00"),
        ]
    )
    assert creds[0].device_key == "s1" and creds[1].device_key  # the second generated
    for cred in creds:
        record = lab.device(sub, cred.device_key)
        assert (record.device_secret, record.asset_id) == (cred.device_secret, cred.asset_id)
    assert lab.device(sub, "s1").attributes == {"site": "north"}
    assert await gateway.get_topology() == []  # registering does not attach

    await gateway.add_topology(creds)
    assert sorted(await gateway.get_topology()) == sorted(c.keys for c in creds)

    s1 = await gateway.login_sub_device(sub, "s1", creds[0].device_secret)
    assert s1 is gateway.sub_device(sub, "s1") and s1.logged_in
    assert s1.device_secret == creds[0].device_secret
    assert lab.is_online(sub, "s1")
    with pytest.raises(RequestFailed) as caught:  # 8.2: not while it is online
        await gateway.delete_topology([(sub, "s1")])
    assert caught.value.code == ReplyCode.TOPO_DELETE_FAILED

    stranger = lab.register_device(sub, device_key="s9")  # not attached to this gateway
    result = await gateway.login_sub_devices(
        [creds[1], SubDeviceCredentials(sub, "s9", stranger.device_secret)]
    )
    assert result.logged_in == (creds[1].keys,)
    assert result.failed == ((sub, "s9"),)
    assert result.code == ReplyCode.SUB_DEVICE_NOT_UNDER_GATEWAY
    assert lab.is_online(*creds[1].keys) and not lab.is_online(sub, "s9")
    assert gateway.logged_in_sub_devices == [(sub, "s1"), creds[1].keys]

    await s1.logout()
    assert not s1.logged_in and not lab.is_online(sub, "s1")
    assert await watch.reasons(sub, "s1", 2) == ["connected", "logged out"]
    watch.close()
    await gateway.delete_topology([(sub, "s1")])
    assert await gateway.get_topology() == [creds[1].keys]


async def test_wrong_sub_device_secret_is_refused_with_742(
    lab: Lab, products: Products, gateway: DeviceClient
) -> None:
    lab.register_device(products.sub, device_key="s1")
    lab.registry.attach((products.gateway, "gw"), (products.sub, "s1"))
    with pytest.raises(RequestFailed) as caught:
        await gateway.login_sub_device(products.sub, "s1", "wrong")
    assert caught.value.code == ReplyCode.SUB_DEVICE_SIGN_CHECK_FAILED
    assert gateway.logged_in_sub_devices == []


async def test_a_sub_device_is_activated_dynamically_through_its_gateway(
    lab: Lab, products: Products, gateway: DeviceClient
) -> None:
    dynamic = lab.create_product("Dynamic sub", node_type="sub_device", dynamic_activation=True)
    lab.register_device(dynamic.product_key, device_key="d1")
    lab.registry.attach((products.gateway, "gw"), (dynamic.product_key, "d1"))
    sub = await gateway.login_sub_device(
        dynamic.product_key, "d1", product_secret=dynamic.product_secret
    )
    record = lab.device(dynamic.product_key, "d1")
    assert sub.device_secret == record.device_secret and record.activated_at is not None
    assert sub.logged_in  # with the issued secret, for the re-login after a reconnect


async def test_data_on_behalf_of_sub_devices_and_batch_posts(
    lab: Lab, products: Products, gateway: DeviceClient
) -> None:
    sub = products.sub
    secrets = {}
    for key in ("s1", "s2"):
        secrets[key] = lab.register_device(sub, device_key=key).device_secret
        lab.registry.attach((products.gateway, "gw"), (sub, key))
    s1 = await gateway.login_sub_device(sub, "s1", secrets["s1"])
    await s1.post_measurepoints({"temp": 20.5}, T0)
    await s1.post_event("overheat", {"temp": 90.0}, T0)
    await s1.update_attributes({"site": "east"})
    assert await s1.query_attributes() == {"site": "east"}

    await gateway.post_measurepoints_batch(
        [
            PointsEntry({"temp": 21.0}, T0 + 1000, product_key=sub, device_key="s1"),
            PointsEntry(
                {"power": 1.5}, T0 + 2000, product_key=sub, device_key="s1", quality={"power": 9}
            ),
        ]
    )
    # s2 is attached but offline: refused unless offline sub-devices are allowed
    offline = [PointsEntry({"temp": 5.0}, T0, product_key=sub, device_key="s2")]
    with pytest.raises(RequestFailed) as caught:
        await gateway.post_measurepoints_batch(offline)
    assert caught.value.code == ReplyCode.NO_SUB_DEVICE_PERMISSION
    await gateway.post_measurepoints_batch(offline, resume=True, allow_offline_sub_devices=True)

    points = lab.store.query_points(["s1", "s2"], product_key=sub)
    got = {
        (row.device_key, row.point_id, int(row.time.timestamp() * 1000)): row.value
        for row in points.itertuples()
    }
    assert got == {
        ("s1", "temp", T0): 20.5,
        ("s1", "temp", T0 + 1000): 21.0,
        ("s1", "power", T0 + 2000): 1.5,
        ("s2", "temp", T0): 5.0,
    }
    events = lab.store.query_events("s1", product_key=sub)
    assert events["outputs"].tolist() == [{"temp": 90.0}]


async def test_commands_for_a_sub_device_reach_its_handlers(
    lab: Lab, products: Products, gateway: DeviceClient
) -> None:
    sub = products.sub
    for key in ("s1", "s2"):
        secret = lab.register_device(sub, device_key=key).device_secret
        lab.registry.attach((products.gateway, "gw"), (sub, key))
        await gateway.login_sub_device(sub, key, secret)
    gateway.on_measurepoint_get(lambda ids: {"temp": -1.0})  # the gateway's own: not used
    s1 = gateway.sub_device(sub, "s1")
    s1.on_measurepoint_get(lambda ids: {point: 7.0 for point in ids})
    reply = await lab.asend_command(sub, "s1", TopicKind.MEASUREPOINT_GET, ["temp"])
    assert reply is not None and (reply.code, reply.data) == (200, {"temp": 7.0})
    reply = await lab.asend_command(sub, "s2", TopicKind.MEASUREPOINT_GET, ["temp"])
    assert reply is not None and reply.code == 1101  # s2 has no handler


async def test_a_direct_device_is_not_a_gateway(lab: Lab, products: Products) -> None:
    device = lab.register_device(products.meter, device_key="m1")
    async with DeviceClient(
        lab.host, lab.port, products.meter, "m1", device.device_secret, timeout=TIMEOUT
    ) as client:
        with pytest.raises(RequestFailed) as caught:
            await client.get_topology()
        assert caught.value.code == ReplyCode.PARSE_ERROR
