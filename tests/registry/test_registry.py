"""The device registry over a real SQLite file: products, devices, lifecycle, topology, bulk."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.errors import AlreadyExists, InvalidArgument, NotFound, RegistryError
from enos_lab.registry import DeviceState, NodeType, Registry, TopicPermission


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock()


@pytest.fixture
def registry(tmp_path: Path, clock: SimulatedClock) -> Registry:
    return Registry(tmp_path / "registry.sqlite3", clock=clock, rng=random.Random(7))


def test_product_keys_and_secrets_are_generated_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    first = Registry(path)
    product = first.create_product(
        "Inverter",
        model_id="pv_inverter",
        node_type="gateway",
        dynamic_activation=True,
        custom_topics={"/{productKey}/{deviceKey}/user/update": "publish"},
    )
    assert len(product.product_key) == 8 and product.product_key.isalnum()
    assert len(product.product_secret) == 16
    first.close()
    again = Registry(path).get_product(product.product_key)
    assert again == product
    assert again.node_type is NodeType.GATEWAY
    assert again.custom_topics == {"/{productKey}/{deviceKey}/user/update": TopicPermission.PUBLISH}


def test_generation_is_reproducible_with_a_seeded_rng(tmp_path: Path) -> None:
    keys = []
    for name in ("a", "b"):
        reg = Registry(tmp_path / f"{name}.sqlite3", rng=random.Random(42))
        product = reg.create_product("P")
        device = reg.register_device(product.product_key)
        keys.append(
            (product.product_key, product.product_secret, device.device_key, device.device_secret)
        )
    assert keys[0] == keys[1]


def test_device_lifecycle(registry: Registry, clock: SimulatedClock) -> None:
    product = registry.create_product("Meter", product_key="meterP")
    device = registry.register_device("meterP", device_key="m1", name="Meter 1")
    assert device.state is DeviceState.INACTIVE
    assert device.name == "Meter 1" and len(device.asset_id) == 8
    clock.advance(10)
    online = registry.set_online("meterP", "m1")
    assert online.state is DeviceState.ONLINE
    assert online.activated_at == online.last_online_at == clock.now()
    clock.advance(5)
    offline = registry.set_offline("meterP", "m1", reason="keep-alive timeout")
    assert offline.state is DeviceState.OFFLINE
    assert offline.activated_at == online.activated_at  # activation time is kept
    assert registry.disable_device("meterP", "m1").state is DeviceState.DISABLED
    assert registry.enable_device("meterP", "m1").state is DeviceState.OFFLINE
    log = registry.presence_log("meterP", "m1")
    assert [(on, why) for _, _, _, on, why in log] == [
        (True, "connected"),
        (False, "keep-alive timeout"),
    ]
    deleted = registry.delete_device("meterP", "m1")
    assert deleted.state is DeviceState.DELETED
    with pytest.raises(NotFound, match="meterP/m1"):
        registry.get_device("meterP", "m1")
    # the key can be registered again after deletion, as a new inactive device
    again = registry.register_device(product.product_key, device_key="m1")
    assert again.state is DeviceState.INACTIVE and again.device_secret != device.device_secret


def test_typed_errors_name_the_offending_value(registry: Registry) -> None:
    registry.create_product("P", product_key="pk1")
    registry.register_device("pk1", device_key="d1")
    with pytest.raises(AlreadyExists, match="pk1"):
        registry.create_product("Q", product_key="pk1")
    with pytest.raises(AlreadyExists, match="pk1/d1"):
        registry.register_device("pk1", device_key="d1")
    with pytest.raises(NotFound, match="nope"):
        registry.register_device("nope")
    with pytest.raises(InvalidArgument, match="a/b"):
        registry.register_device("pk1", device_key="a/b")
    with pytest.raises(InvalidArgument, match="UTC"):
        registry.register_device("pk1", timezone="UTC")
    with pytest.raises(InvalidArgument, match="9bad"):
        registry.register_device("pk1", tags={"9bad": "x"})
    with pytest.raises(InvalidArgument, match="sideways"):
        registry.create_product("R", node_type="sideways")
    with pytest.raises(InvalidArgument, match="/sys/"):
        registry.create_product("S", custom_topics={"/sys/{deviceKey}/x": "both"})
    with pytest.raises(RegistryError, match="still has 1 device"):
        registry.delete_product("pk1")


def test_dynamic_activation_issues_a_new_secret_only_while_inactive(registry: Registry) -> None:
    registry.create_product("Dyn", product_key="dynP", dynamic_activation=True)
    registry.create_product("Static", product_key="statP")
    device = registry.register_device("dynP", device_key="d1")
    first = registry.activate("dynP", "d1")
    second = registry.activate("dynP", "d1")
    assert len({device.device_secret, first.device_secret, second.device_secret}) == 3
    registry.set_online("dynP", "d1")
    with pytest.raises(RegistryError, match="already activated"):
        registry.activate("dynP", "d1")
    registry.register_device("statP", device_key="s1")
    with pytest.raises(RegistryError, match="does not allow dynamic activation"):
        registry.activate("statP", "s1")


def test_attributes_and_tags(registry: Registry) -> None:
    registry.create_product("P", product_key="p")
    registry.register_device("p", device_key="d", attributes={"rated": 5.0}, tags={"site": 1})
    device = registry.update_attributes("p", "d", {"loc": {"lat": 1.0, "lon": 2.0}})
    assert device.attributes == {"rated": 5.0, "loc": {"lat": 1.0, "lon": 2.0}}
    assert device.tags == {"site": "1"}  # tag values become strings, as in EnOS
    assert registry.delete_attributes("p", "d", ["rated", "unknown"]).attributes == {
        "loc": {"lat": 1.0, "lon": 2.0}
    }
    assert registry.update_tags("p", "d", {"zone": "north"}).tags == {"site": "1", "zone": "north"}
    assert registry.delete_tags("p", "d", ["site"]).tags == {"zone": "north"}
    with pytest.raises(InvalidArgument, match="at most 200"):
        registry.update_attributes("p", "d", {f"a{i}": i for i in range(201)})


def test_topology(registry: Registry) -> None:
    registry.create_product("GW", product_key="gwP", node_type=NodeType.GATEWAY)
    registry.create_product("Sub", product_key="subP", node_type=NodeType.SUB_DEVICE)
    registry.register_device("gwP", device_key="gw1")
    registry.register_device("gwP", device_key="gw2")
    registry.register_device("subP", device_key="s1")
    registry.register_device("subP", device_key="s2")
    registry.attach(("gwP", "gw1"), ("subP", "s1"))
    registry.attach(("gwP", "gw1"), ("subP", "s2"))
    assert [d.device_key for d in registry.sub_devices(("gwP", "gw1"))] == ["s1", "s2"]
    with pytest.raises(RegistryError, match="attached to gateway gwP/gw1"):
        registry.attach(("gwP", "gw2"), ("subP", "s1"))
    with pytest.raises(RegistryError, match="not a gateway"):
        registry.attach(("subP", "s1"), ("subP", "s2"))
    with pytest.raises(RegistryError, match="is a gateway itself"):
        registry.attach(("gwP", "gw1"), ("gwP", "gw2"))
    assert registry.detach(("gwP", "gw1"), ("subP", "s1")).gateway is None
    with pytest.raises(RegistryError, match="not attached"):
        registry.detach(("gwP", "gw1"), ("subP", "s1"))
    registry.delete_device("gwP", "gw1")
    assert registry.get_device("subP", "s2").gateway is None


def test_bulk_registration_from_csv_reports_bad_rows_and_keeps_the_rest(
    registry: Registry, tmp_path: Path
) -> None:
    registry.create_product("Meter", product_key="meterP")
    csv = tmp_path / "fleet.csv"
    csv.write_text(
        "product_key,device_key,name,timezone,tags,attributes\n"
        'meterP,m1,Meter 1,+08:00,"{""site"": ""A""}","{""rated"": 5}"\n'
        "meterP,m1,Duplicate,,,\n"
        "unknownP,x1,Nobody,,,\n"
        "meterP,,Generated,,,\n"
        "meterP,m3,Bad tz,Mars,,\n"
    )
    result = registry.register_devices(csv)
    assert list(result.registered["row"]) == [0, 3]
    assert list(result.errors["row"]) == [1, 2, 4]
    assert "AlreadyExists" in result.errors.loc[0, "error"]
    assert "unknownP" in result.errors.loc[1, "error"]
    assert "Mars" in result.errors.loc[2, "error"]
    m1 = registry.get_device("meterP", "m1")
    assert (m1.timezone, m1.tags, m1.attributes) == ("+08:00", {"site": "A"}, {"rated": 5})
    frame = registry.devices_frame("meterP")
    assert frame["device_key"].tolist() == ["m1", result.registered.loc[1, "device_key"]]
    dtype = frame["created_at"].dtype
    assert isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"
    assert set(frame["state"]) == {"inactive"}


def test_bulk_registration_from_dataframe_and_credentials_export(registry: Registry) -> None:
    registry.create_product("Meter", product_key="meterP", dynamic_activation=True)
    rows = pd.DataFrame({"product_key": ["meterP"] * 3, "device_key": ["a", "b", "c"]})
    result = registry.register_devices(rows, progress=False)
    assert result.errors.empty and list(result.registered["device_key"]) == ["a", "b", "c"]
    creds = registry.export_credentials()
    assert list(creds.columns) == [
        "product_key",
        "device_key",
        "device_secret",
        "product_secret",
        "asset_id",
        "dynamic_activation",
    ]
    assert creds["device_secret"].str.len().eq(20).all()
    assert creds["dynamic_activation"].all()
    bad = registry.register_devices([{"product_key": "meterP", "colour": "red"}])
    assert "colour" in bad.errors.loc[0, "error"]


def test_existing_device_keys_answers_the_stores_question(registry: Registry) -> None:
    a = registry.create_product("A", product_key="pkA").product_key
    b = registry.create_product("B", product_key="pkB").product_key
    registry.register_device(a, device_key="d1")
    registry.register_device(b, device_key="d2")
    asked = ["d1", "d2", "ghost", "d1"]
    assert registry.existing_device_keys(asked) == {"d1", "d2"}
    assert registry.existing_device_keys(asked, a) == {"d1"}
    assert registry.existing_device_keys([], a) == set()
    assert registry.existing_device_keys(["d1"], "nope") == set()
    registry.delete_device(a, "d1")
    assert registry.existing_device_keys(asked) == {"d2"}
