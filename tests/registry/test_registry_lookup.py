"""DeviceLookup: cached registry reads that follow every change committed to the registry."""

from __future__ import annotations

import random

from enos_lab.registry import DeviceLookup, Registry


def test_lookups_follow_the_registry_revision() -> None:
    registry = Registry(":memory:", rng=random.Random(3))
    try:
        product = registry.create_product("Meter", model_id="pv_inverter")
        pk = product.product_key
        gateway = registry.create_product("GW", model_id="gateway", node_type="gateway")
        registry.register_device(pk, device_key="d1", attributes={"limit": 5})
        registry.register_device(gateway.product_key, device_key="gw")
        lookup = DeviceLookup(registry)
        assert lookup.model_of(pk) == "pv_inverter"
        assert lookup.model_of("nope") is None
        assert lookup.attributes(pk, "d1") == {"limit": 5}
        assert lookup.attributes(pk, "ghost") == {}
        before = registry.revision
        assert lookup.device(pk, "d1") is lookup.device(pk, "d1")  # cached
        registry.update_attributes(pk, "d1", {"limit": 7})
        assert registry.revision == before + 1
        assert lookup.attributes(pk, "d1") == {"limit": 7}
        assert lookup.gateway(pk, "d1") is None
        registry.register_device(pk, device_key="ghost")
        assert lookup.device(pk, "ghost") is not None  # a miss is not cached past a change
    finally:
        registry.close()
