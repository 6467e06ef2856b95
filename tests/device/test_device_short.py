"""Short-connection mode over real TCP (low-power devices): each operation connects, waits
for its replies and disconnects; a session keeps one connection for several requests; a
gateway logs its sub-devices in on each connection."""

from __future__ import annotations

import asyncio

from device_helpers import TIMEOUT, PresenceWatch, Products

from enos_lab import Lab, TopicKind
from enos_lab.device import ConnectionMode, DeviceClient

T0 = 1_700_000_000_000  # [ms]


ONE_CONNECTION = ["connected", "disconnected"]


async def test_each_operation_connects_and_disconnects(lab: Lab, products: Products) -> None:
    device = lab.register_device(products.meter, device_key="b1")
    watch = PresenceWatch(lab)
    client = DeviceClient(
        lab.host,
        lab.port,
        products.meter,
        "b1",
        device.device_secret,
        mode=ConnectionMode.SHORT,
        timeout=TIMEOUT,
    )
    await client.connect()  # checks the login once
    try:
        assert client.active and not client.connected
        assert await watch.reasons(products.meter, "b1", 2) == ONE_CONNECTION
        await client.post_measurepoints({"temp": 1.0}, T0)
        assert not client.connected
        assert await watch.reasons(products.meter, "b1", 4) == ONE_CONNECTION * 2
        # requests at the same time share one connection
        await asyncio.gather(
            *(client.post_measurepoints({"temp": float(n)}, T0 + n) for n in range(1, 4))
        )
        assert await watch.reasons(products.meter, "b1", 6) == ONE_CONNECTION * 3
        async with client.session():
            assert client.connected
            client.on_measurepoint_get(lambda ids: {"temp": 4.0})
            await client.post_measurepoints({"temp": 5.0}, T0 + 5)
            reply = await lab.asend_command(
                products.meter, "b1", TopicKind.MEASUREPOINT_GET, ["temp"], timeout=TIMEOUT
            )
            assert reply is not None and reply.data == {"temp": 4.0}  # commands while connected
            await client.update_attributes({"site": "roof"})
        assert not client.connected
        assert await watch.reasons(products.meter, "b1", 8) == ONE_CONNECTION * 4
    finally:
        await client.disconnect()
        watch.close()
    assert len(lab.presence(products.meter, "b1")) == 8  # one connection per operation
    points = lab.store.query_points("b1", "temp", product_key=products.meter)
    assert points["value"].tolist() == [1.0, 1.0, 2.0, 3.0, 5.0]


async def test_a_short_gateway_logs_its_sub_devices_in_on_each_connection(
    lab: Lab, products: Products
) -> None:
    gateway = lab.register_device(products.gateway, device_key="gw")
    secret = lab.register_device(products.sub, device_key="s1").device_secret
    lab.registry.attach((products.gateway, "gw"), (products.sub, "s1"))
    watch = PresenceWatch(lab)
    async with DeviceClient(
        lab.host,
        lab.port,
        products.gateway,
        "gw",
        gateway.device_secret,
        mode=ConnectionMode.SHORT,
        timeout=TIMEOUT,
    ) as client:
        sub = await client.login_sub_device(products.sub, "s1", secret)
        # offline with its gateway, until the next operation logs it in again
        assert await watch.reasons(products.sub, "s1", 2) == ["connected", "gateway offline"]
        await sub.post_measurepoints({"temp": 9.5}, T0)
    points = lab.store.query_points("s1", "temp", product_key=products.sub)
    assert points["value"].tolist() == [9.5]
    assert await watch.reasons(products.sub, "s1", 4) == ["connected", "gateway offline"] * 2
    watch.close()
