"""Configuration from the cloud over real TCP: attributes and tags set through the facade,
pushed to an online device of the lab's SDK (``thing.attribute.set``), set while an official
SDK device is offline and read by it with ``thing.attribute.query`` after it connects, a push
the official SDK ignores without harm, device-side changes in the history, model violations
refused, bulk changes by tag with a failing device, and the history purged with the device."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from enos.message.upstream.tag.TagUpdateRequest import TagUpdateRequest
from enos.message.upstream.tsl.AttributeDeleteRequest import AttributeDeleteRequest
from enos.message.upstream.tsl.AttributeQueryRequest import AttributeQueryRequest
from enos.message.upstream.tsl.AttributeUpdateRequest import AttributeUpdateRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_MODEL, SDK_WARNINGS, WAIT, running_lab, sdk_device, sdk_product

from enos_lab.control import CONFIG_COLUMNS, ConfigChange, ConfigHistory, ConfigKind, ConfigSource
from enos_lab.device import Device, SubDeviceSpec
from enos_lab.errors import InvalidArgument, NotFound, ValidationError
from enos_lab.lab import CONFIG_BULK_COLUMNS
from enos_lab.tap import AttributesChanged, TagsChanged

pytestmark = [SDK_WARNINGS]


def _ok(response: Any) -> Any:
    assert response.get_code() == 200, response.get_message()
    return response


def test_a_cloud_change_is_pushed_to_an_online_lab_device(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=151) as lab:
        pk = sdk_product(lab).product_key
        record = lab.register_device(pk, device_key="m1", tags={"site": "north"})
        heard: list[dict[str, Any]] = []
        arrived = threading.Event()

        def on_set(params: dict[str, Any]) -> None:
            heard.append(params)
            arrived.set()

        with (
            lab.subscribe((AttributesChanged, TagsChanged), device_key="m1") as events,
            Device(lab.host, lab.port, pk, "m1", record.device_secret) as device,
        ):
            device.on_attribute_set(on_set)
            assert lab.set_attributes(pk, "m1", {"rated_power": 7.5}, actor="ops") is True
            assert arrived.wait(WAIT)
            assert heard == [{"attributes": {"rated_power": 7.5}}]
            assert device.cloud_attributes == {"rated_power": 7.5}
            assert device.query_attributes(["rated_power"]) == {"rated_power": 7.5}

            arrived.clear()
            assert lab.set_tags(pk, "m1", {"site": "south", "row": 3}) is True
            assert arrived.wait(WAIT)
            assert device.cloud_tags == {"site": "south", "row": "3"}
            arrived.clear()
            assert lab.delete_tags(pk, "m1", ["row", "absent"]) is True
            assert arrived.wait(WAIT)
            assert device.cloud_tags == {"site": "south"}
            arrived.clear()
            assert lab.delete_attributes(pk, "m1", ["rated_power"]) is True
            assert arrived.wait(WAIT)
            assert device.cloud_attributes == {}
            told = [events.get(timeout=WAIT) for _ in range(4)]
        assert [type(e) for e in told] == [
            AttributesChanged,
            TagsChanged,
            TagsChanged,
            AttributesChanged,
        ]
        assert {e.source for e in told} == {"cloud"}
        assert told[1].previous == {"site": "north"} and told[1].values["row"] == "3"
        assert told[3].deleted == ("rated_power",) and told[3].previous == {"rated_power": 7.5}
        assert lab.attributes(pk, "m1") == {}
        assert lab.tags(pk, "m1") == {"site": "south"}
        # attributes are in the store as device-side ones are (a deletion stores None)
        stored = lab.store.query_attributes("m1", "rated_power", product_key=pk)
        assert stored["value"].iloc[0] == 7.5 and pd.isna(stored["value"].iloc[1])

        history = lab.config_history(pk, "m1")
        assert list(history.columns) == list(CONFIG_COLUMNS)
        assert str(history["time"].dt.tz) == "UTC"
        rows = history[["kind", "key", "old_value", "new_value", "source", "pushed"]]
        assert rows.to_dict("records") == [
            # registered with the tag
            {"kind": "tag", "key": "site", "old_value": None, "new_value": "north",
             "source": "cloud", "pushed": False},
            {"kind": "attribute", "key": "rated_power", "old_value": None, "new_value": 7.5,
             "source": "cloud", "pushed": True},
            {"kind": "tag", "key": "site", "old_value": "north", "new_value": "south",
             "source": "cloud", "pushed": True},
            {"kind": "tag", "key": "row", "old_value": None, "new_value": "3",
             "source": "cloud", "pushed": True},
            {"kind": "tag", "key": "row", "old_value": "3", "new_value": None,
             "source": "cloud", "pushed": True},
            {"kind": "attribute", "key": "rated_power", "old_value": 7.5, "new_value": None,
             "source": "cloud", "pushed": True},
        ]  # fmt: skip
        assert history["actor"].iloc[:2].tolist() == ["registration", "ops"]
        assert history["actor"].iloc[2:].isna().all()
        assert len(lab.config_history(key="site")) == 2
        assert lab.config_history(pk, start=datetime(2100, 1, 1, tzinfo=UTC)).empty
        with pytest.raises(InvalidArgument, match="source must be one of"):
            lab.config_history(source="nobody")


def test_an_offline_device_reads_the_change_and_the_official_sdk_ignores_the_push(
    tmp_path: Path,
) -> None:
    with running_lab(tmp_path / "lab", seed=152) as lab:
        pk = sdk_product(lab).product_key
        secret = lab.register_device(pk, device_key="m2").device_secret
        assert lab.set_attributes(pk, "m2", {"site": "west"}) is False  # offline: not pushed
        with sdk_device(lab, pk, "m2", device_secret=secret) as sdk:
            sdk.connect()
            query = AttributeQueryRequest.builder().query_all().build()
            assert _ok(sdk.publish(query)).get_data() == {"site": "west"}
            # online: pushed on the lab's topic, which the official SDK does not know
            assert lab.set_attributes(pk, "m2", {"rated_power": 3.0}) is True
            assert _ok(sdk.publish(query)).get_data() == {"site": "west", "rated_power": 3.0}
            post = MeasurepointPostRequest.builder().add_measurepoint("temp", 20.5).build()
            _ok(sdk.publish(post))  # it stays connected and keeps working
            assert lab.is_online(pk, "m2")
        history = lab.config_history(pk, "m2", key="rated_power")
        assert history["pushed"].tolist() == [True]
        assert lab.config_history(pk, "m2", key="site")["pushed"].tolist() == [False]


def test_device_side_changes_are_in_the_history(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=153) as lab:
        pk = sdk_product(lab).product_key
        secret = lab.register_device(pk, device_key="m3").device_secret
        lab.set_attributes(pk, "m3", {"site": "east"}, actor="planner")
        with sdk_device(lab, pk, "m3", device_secret=secret) as sdk:
            sdk.connect()
            update = AttributeUpdateRequest.builder().add_attribute("site", "harbour").build()
            _ok(sdk.publish(update))
            _ok(sdk.publish(AttributeDeleteRequest.builder().delete_attribute("site").build()))
            _ok(sdk.publish(TagUpdateRequest.builder().add_tag("zone", "b").build()))
        device = lab.config_history(pk, "m3", source=ConfigSource.DEVICE)
        assert device[["kind", "key", "old_value", "new_value", "pushed"]].to_dict(
            "records"
        ) == [
            {"kind": "attribute", "key": "site", "old_value": "east", "new_value": "harbour",
             "pushed": None},
            {"kind": "attribute", "key": "site", "old_value": "harbour", "new_value": None,
             "pushed": None},
            {"kind": "tag", "key": "zone", "old_value": None, "new_value": "b", "pushed": None},
        ]  # fmt: skip
        assert pd.isna(device["pushed"]).all()
        cloud = lab.config_history(pk, "m3", source="cloud")
        assert cloud["actor"].tolist() == ["planner"]


def test_model_violations_are_refused_naming_the_value(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=154) as lab:
        pk = sdk_product(lab).product_key
        lab.register_device(pk, device_key="m4")
        with pytest.raises(ValidationError, match="colour"):
            lab.set_attributes(pk, "m4", {"colour": "red"})
        with pytest.raises(ValidationError, match="rated_power"):
            lab.set_attributes(pk, "m4", {"rated_power": "a lot"})
        with pytest.raises(ValidationError, match="colour"):
            lab.delete_attributes(pk, "m4", ["colour"])
        with pytest.raises(InvalidArgument, match="9lives"):
            lab.set_tags(pk, "m4", {"9lives": "x"})
        with pytest.raises(InvalidArgument, match="site"):
            lab.set_tags(pk, "m4", {"site": ["a"]})
        with pytest.raises(InvalidArgument, match="expected attribute values"):
            lab.set_attributes(pk, "m4", {})
        with pytest.raises(InvalidArgument, match="list of tag keys"):
            lab.delete_tags(pk, "m4", "site")
        with pytest.raises(NotFound):
            lab.set_attributes(pk, "nobody", {"site": "x"})
        assert lab.attributes(pk, "m4") == {} and lab.tags(pk, "m4") == {}
        assert lab.config_history(pk, "m4").empty
        # a product without a model takes EnOS identifiers only
        free = lab.create_product("Free").product_key
        lab.register_device(free, device_key="f1")
        assert lab.set_attributes(free, "f1", {"any_thing": {"a": 1}}) is False
        with pytest.raises(ValidationError, match="has space"):
            lab.set_attributes(free, "f1", {"has space": 1})


def test_bulk_changes_by_tag_report_each_device(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=155) as lab:
        pk = sdk_product(lab).product_key
        free = lab.create_product("Free").product_key
        for key in ("b1", "b2", "b3"):
            lab.register_device(pk, device_key=key, tags={"site": "north"})
        lab.register_device(pk, device_key="b4", tags={"site": "south"})
        lab.register_device(free, device_key="f1", tags={"site": "north"})
        # "colour" is not in the sdk_meter model: the model-less device takes it, the rest fail
        result = lab.bulk_set_attributes({"colour": "red"}, tags={"site": "north"}, progress=False)
        assert list(result.columns) == list(CONFIG_BULK_COLUMNS)
        assert list(zip(result["device_key"], result["ok"], strict=True)) == [
            ("b1", False),
            ("b2", False),
            ("b3", False),
            ("f1", True),
        ]
        assert result["error"].iloc[0].startswith("ValidationError") and "colour" in str(
            result["error"].iloc[0]
        )
        assert result["error"].iloc[3] is None
        assert not result["pushed"].any()

        result = lab.bulk_set_attributes(
            {"site": "n1"}, product_key=pk, tags={"site": "north"}, progress=False
        )
        assert result["device_key"].tolist() == ["b1", "b2", "b3"] and result["ok"].all()
        listed = lab.bulk_set_tags(
            {"crew": "A"}, device_keys=[(pk, "b4"), (pk, "gone"), (free, "f1")], progress=False
        )
        assert listed["ok"].tolist() == [True, False, True]
        assert "gone" in listed["error"].iloc[1]
        assert lab.tags(pk, "b4") == {"site": "south", "crew": "A"}
        by_key = lab.bulk_set_tags(
            {"crew": "B"}, product_key=pk, device_keys=["b1"], progress=False
        )
        assert by_key["device_key"].tolist() == ["b1"]
        with pytest.raises(NotFound, match="no device matches"):
            lab.bulk_set_attributes({"site": "x"}, tags={"site": "nowhere"}, progress=False)
        with pytest.raises(InvalidArgument, match="needs targets"):
            lab.bulk_set_attributes({"site": "x"}, progress=False)
        with pytest.raises(InvalidArgument, match="needs product_key"):
            lab.bulk_set_tags({"crew": "C"}, device_keys=["b1"], progress=False)


def test_purge_deletes_the_history_and_keeping_keeps_it(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=156) as lab:
        pk = sdk_product(lab).product_key
        for key in ("p1", "p2"):
            lab.register_device(pk, device_key=key)
            lab.set_attributes(pk, key, {"site": key})
        lab.delete_device(pk, "p1", purge=False)
        lab.delete_device(pk, "p2", purge=True)
        assert len(lab.config_history(pk, "p1")) == 1
        assert lab.config_history(pk, "p2").empty
    # kept across a restart
    with running_lab(tmp_path / "lab", seed=157) as lab:
        assert lab.config_history(device_key="p1")["new_value"].tolist() == ["p1"]


def test_the_history_is_bounded(tmp_path: Path) -> None:
    history = ConfigHistory(tmp_path / "config.sqlite3", keep=None, max_history=3)
    try:
        change = ConfigChange("pk", "dk", ConfigKind.TAG, "k", None, "v", ConfigSource.CLOUD)
        for at in range(5):
            history.record([change], at_ms=1_700_000_000_000 + at)
        # writes pruned as they went (every tenth of max_history written: here every row)
        assert len(history.frame()) == 3
        assert history.prune() == 0
        assert history.delete_device("pk", "dk") == 3
    finally:
        history.close()
    assert (tmp_path / "config.sqlite3").stat().st_mode & 0o777 == 0o600


def test_a_sub_device_gets_the_push_through_its_gateway(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=158) as lab:
        lab.add_model(SDK_MODEL)
        gateway_pk = lab.create_product("Gateway", node_type="gateway").product_key
        sub_pk = lab.create_product(
            "Sub meter", node_type="sub_device", model_id=SDK_MODEL["modelId"]
        ).product_key
        gateway = lab.register_device(gateway_pk, device_key="gw")
        arrived = threading.Event()
        with Device(lab.host, lab.port, gateway_pk, "gw", gateway.device_secret) as device:
            spec = SubDeviceSpec(sub_pk, "Sub one", device_key="s1", attributes={"site": "yard"})
            (credentials,) = device.register_sub_devices([spec])
            device.add_topology([credentials])
            sub = device.login_sub_device(sub_pk, "s1", credentials.device_secret)
            sub.on_attribute_set(lambda params: arrived.set())
            assert lab.set_attributes(sub_pk, "s1", {"site": "shed"}) is True
            assert arrived.wait(WAIT)
            assert sub.cloud_attributes == {"site": "shed"}
        history = lab.config_history(sub_pk, "s1")
        assert history[["old_value", "new_value", "source", "pushed"]].to_dict("records") == [
            # registered by the gateway with deviceAttributes
            {"old_value": None, "new_value": "yard", "source": "device", "pushed": None},
            {"old_value": "yard", "new_value": "shed", "source": "cloud", "pushed": True},
        ]
