"""Reconnection of the device SDK over real TCP: a gateway kicked by the hub comes back on its
backoff policy, logs its sub-devices in again, then runs ``on_connect`` and posts again;
delays follow the policy on the client's clock; retries run out (protocol reference 2.7)."""

from __future__ import annotations

import asyncio

from device_helpers import FAST, TIMEOUT, PresenceWatch, Products, kick, seeded, wait_until

from enos_lab import Lab, SimulatedClock
from enos_lab.device import Backoff, DeviceClient
from enos_lab.errors import NotConnected

T0 = 1_700_000_000_000  # [ms]


async def test_a_kicked_gateway_comes_back_logs_its_sub_devices_in_and_posts(
    lab: Lab, products: Products
) -> None:
    sub = products.sub
    gateway = lab.register_device(products.gateway, device_key="gw")
    secrets = {}
    for key in ("s1", "s2"):
        secrets[key] = lab.register_device(sub, device_key=key).device_secret
        lab.registry.attach((products.gateway, "gw"), (sub, key))
    client = DeviceClient(
        lab.host,
        lab.port,
        products.gateway,
        "gw",
        gateway.device_secret,
        timeout=TIMEOUT,
        reconnect=FAST,
        rng=seeded(),
    )
    connects: list[bool] = []  # whether the sub-devices were online when on_connect ran
    connected, dropped = asyncio.Event(), asyncio.Event()

    def on_connect() -> None:
        connects.append(lab.is_online(sub, "s1") and lab.is_online(sub, "s2"))
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = dropped.set
    watch = PresenceWatch(lab)
    await client.connect()
    try:
        for key in ("s1", "s2"):
            await client.login_sub_device(sub, key, secrets[key])
        s1 = client.sub_device(sub, "s1")
        await s1.post_measurepoints({"temp": 1.0}, T0)
        connected.clear()

        assert await kick(lab, products.gateway, "gw") == 1
        await wait_until(dropped, "on_disconnect")
        assert not client.connected and client.active
        assert await watch.reasons(sub, "s1", 2) == ["connected", "gateway offline"]
        try:
            await s1.post_measurepoints({"temp": 1.5}, T0 + 500)
        except NotConnected as exc:  # while it reconnects (unless it is back already)
            assert "reconnecting" in str(exc)

        assert await client.wait_connected(TIMEOUT)
        await wait_until(connected, "on_connect after the reconnect")
        assert connects == [False, True]  # the first login had no sub-devices yet
        assert client.stats.reconnects == 1
        assert await watch.reasons(sub, "s2", 3) == ["connected", "gateway offline", "connected"]
        await s1.post_measurepoints({"temp": 2.0}, T0 + 1000)
        await client.sub_device(sub, "s2").post_measurepoints({"temp": 3.0}, T0 + 1000)
    finally:
        await client.disconnect()
    points = lab.store.query_points(["s1", "s2"], "temp", product_key=sub)
    got = {(row.device_key, row.value) for row in points.itertuples()}
    assert {("s1", 1.0), ("s1", 2.0), ("s2", 3.0)} <= got
    gateway_presence = await watch.reasons(products.gateway, "gw", 4)
    assert gateway_presence == ["connected", "kicked", "connected", "disconnected"]
    watch.close()


async def test_reconnect_delays_follow_the_policy_on_the_client_s_clock(
    lab: Lab, products: Products
) -> None:
    device = lab.register_device(products.meter, device_key="m1")
    clock = SimulatedClock()
    policy = Backoff(initial=10.0, maximum=60.0)
    client = DeviceClient(
        lab.host,
        lab.port,
        products.meter,
        "m1",
        device.device_secret,
        timeout=TIMEOUT,
        reconnect=policy,
        clock=clock,
        rng=seeded(3),
    )
    dropped = asyncio.Event()
    client.on_disconnect = dropped.set
    await client.connect()
    try:
        first_delay = policy.delay(0, seeded(3))  # what the client's rng draws first
        assert 0 < first_delay < 10.0
        await kick(lab, products.meter, "m1")
        await wait_until(dropped, "the lost connection")
        await clock.advance_async(first_delay - 0.001)
        assert not client.connected and not lab.is_online(products.meter, "m1")
        await clock.advance_async(0.001)  # the reconnect attempt is due
        connected = asyncio.create_task(client.wait_connected())
        await asyncio.wait_for(connected, TIMEOUT)
        assert connected.result() and lab.is_online(products.meter, "m1")
    finally:
        await client.disconnect()


async def test_reconnection_gives_up_after_its_retries(lab: Lab, products: Products) -> None:
    device = lab.register_device(products.meter, device_key="m2")
    client = DeviceClient(
        lab.host,
        lab.port,
        products.meter,
        "m2",
        device.device_secret,
        timeout=TIMEOUT,
        reconnect=Backoff(initial=0.01, maximum=0.02, retries=2),
        rng=seeded(),
    )
    dropped = asyncio.Event()
    client.on_disconnect = dropped.set
    await client.connect()
    await lab.adisable_device(products.meter, "m2")  # closes it; every login is refused now
    await wait_until(dropped, "on_disconnect")
    assert not await client.wait_connected(TIMEOUT)  # False: it gave up
    assert not client.active and not client.connected
    refused = lab.refused_logins(products.meter, "m2")
    assert len(refused) == 2  # one per retry
    await client.disconnect()


async def test_no_reconnect_policy_and_an_explicit_disconnect(lab: Lab, products: Products) -> None:
    device = lab.register_device(products.meter, device_key="m3")
    dropped = asyncio.Event()
    client = DeviceClient(
        lab.host, lab.port, products.meter, "m3", device.device_secret, reconnect=None
    )
    client.on_disconnect = dropped.set
    await client.connect()
    await client.disconnect()
    assert not dropped.is_set()  # on_disconnect is for lost connections only
    await client.connect()
    await kick(lab, products.meter, "m3")
    await wait_until(dropped, "on_disconnect")
    assert not client.active and not await client.wait_connected(TIMEOUT)
    await client.connect()  # a stopped client can connect again
    assert client.connected
    await client.disconnect()
