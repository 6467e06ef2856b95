"""A gateway that registers devices through MQTT cannot grow the registry without bound
(issue "Close the holes", item 2: EnOS 739 at the product's quota), over real TCP."""

from __future__ import annotations

import asyncio
from typing import Any

from _attack_kit import MakeLab, RawDevice, credentials

from enos_lab.iothub import IotHubConfig


def entries(product_key: str, *keys: str) -> list[dict[str, Any]]:
    return [{"productKey": product_key, "deviceKey": key} for key in keys]


def test_registration_through_a_gateway_stops_at_the_product_quota(make_lab: MakeLab) -> None:
    lab = make_lab(iothub_config=IotHubConfig(product_device_quota=3, max_register_entries=4))
    gw = lab.create_product("Gateways", node_type="gateway").product_key
    sub = lab.create_product("Meters", node_type="sub_device").product_key
    secret = lab.register_device(gw, device_key="g1").device_secret
    topic = f"/sys/{gw}/g1/thing/device/register"

    async def body() -> None:
        gateway, _ = await RawDevice.connect(lab.port, *credentials(gw, "g1", secret))
        reply = await gateway.request(topic, entries(sub, "a", "b"))
        assert reply["code"] == 200, reply
        reply = await gateway.request(topic, entries(sub, "c", "d"))  # 4 > quota 3
        assert reply["code"] == 739, reply
        assert "quota" in reply["message"]
        reply = await gateway.request(topic, entries(sub, "c"))
        assert reply["code"] == 200, reply
        reply = await gateway.request(topic, entries(sub, "e"))
        assert reply["code"] == 739, reply
        reply = await gateway.request(topic, entries(sub, "v", "w", "x", "y", "z"))  # > 4
        assert reply["code"] == 1200, reply
        await gateway.disconnect()

    asyncio.run(body())
    assert sorted(d.device_key for d in lab.registry.devices(sub)) == ["a", "b", "c"]
    # the API is not bound by it
    lab.register_device(sub, device_key="api")
