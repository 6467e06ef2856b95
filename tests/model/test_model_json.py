"""REST ThingModel JSON (load, save, round-trip) and the tsltemplate/get rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enos_lab.errors import ModelError
from enos_lab.model import (
    DataType,
    EventType,
    Multiplier,
    SignalType,
    library_model,
    library_model_ids,
    load_model,
    model_from_json,
    model_to_json,
    render_tsltemplate,
    save_model,
)

# The constructed example of the protocol reference, section 12.2 (a).
METER = {
    "modelId": "Meter",
    "orgId": "o1",
    "name": {"defaultValue": "Meter", "i18nValue": {"en_US": "Meter"}},
    "attributes": {
        "maxCurrent": {
            "identifier": "maxCurrent",
            "dataType": "DOUBLE",
            "dataDefinition": None,
            "isRequired": False,
            "defaultValue": 1000.0,
            "unit": {"unitId": "mA", "multiplier": "ONE"},
        }
    },
    "measurepoints": {
        "rt_current": {
            "identifier": "rt_current",
            "dataType": "DOUBLE",
            "hasQuality": False,
            "signalType": "AI",
            "unit": {"unitId": "mA", "multiplier": "ONE"},
        },
        "mode": {
            "identifier": "mode",
            "dataType": "ENUM",
            "signalType": "DI",
            "dataDefinition": '{"enumType":"INT","enumDesc":{"0":{"defaultValue":"off"},'
            '"1":{"defaultValue":"on"}}}',
        },
    },
    "services": {
        "reset": {
            "identifier": "reset",
            "callType": "SYNC",
            "inputData": [{"identifier": "delay", "dataType": "INT"}],
            "outputData": [{"identifier": "ok", "dataType": "BOOL"}],
        }
    },
    "events": {
        "overheat": {
            "identifier": "overheat",
            "eventType": "ERROR",
            "outputData": [{"identifier": "temp", "dataType": "FLOAT"}],
        }
    },
}


def test_reference_example_loads() -> None:
    model = model_from_json(METER)
    assert model.model_id == "Meter" and model.org_id == "o1"
    assert model.name.text("en_US") == "Meter"
    attr = model.attributes["maxCurrent"]
    assert attr.spec.data_type is DataType.DOUBLE and attr.default_value == 1000.0
    assert attr.unit is not None and attr.unit.unit_id == "mA"
    assert attr.unit.multiplier is Multiplier.ONE
    mode = model.measurepoints["mode"]
    assert mode.signal_type is SignalType.DI
    assert dict(mode.spec.enum_values.items())["1"].default == "on"
    assert model.services["reset"].input_data[0].spec.data_type is DataType.INT
    assert model.events["overheat"].event_type is EventType.ERROR
    assert model.validate_measurepoints({"mode": 1, "rt_current": 3}).values == {
        "mode": 1,
        "rt_current": 3.0,
    }


def test_reference_example_round_trips() -> None:
    model = model_from_json(METER)
    doc = model_to_json(model)
    assert isinstance(doc["measurepoints"]["mode"]["dataDefinition"], str)
    assert json.loads(doc["measurepoints"]["mode"]["dataDefinition"])["enumType"] == "INT"
    assert model_from_json(json.dumps(doc)) == model


@pytest.mark.parametrize("model_id", library_model_ids())
def test_every_library_model_round_trips_in_rest_shape(model_id: str) -> None:
    model = library_model(model_id)
    doc = model_to_json(model)
    text = json.dumps(doc, ensure_ascii=False)
    assert set(doc) >= {"modelId", "name", "attributes", "measurepoints", "services", "events"}
    for element in doc["measurepoints"].values():
        assert element["dataDefinition"] is None or isinstance(element["dataDefinition"], str)
    assert model_from_json(text) == model
    assert model_to_json(model_from_json(text)) == doc


def test_save_and_load_a_file(tmp_path: Path) -> None:
    model = library_model("battery_storage")
    path = tmp_path / "battery.json"
    save_model(model, path)
    assert json.loads(path.read_text(encoding="utf-8"))["modelId"] == "battery_storage"
    assert load_model(path) == model
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("mutate", "text"),
    [
        (
            lambda d: d["measurepoints"]["mode"].update(dataType="COLOR"),
            "measurepoints.mode.dataType",
        ),
        (lambda d: d["measurepoints"]["mode"].update(dataDefinition="{oops"), "not valid JSON"),
        (lambda d: d["measurepoints"]["rt_current"].update(identifier="other"), "differs"),
        (lambda d: d["measurepoints"]["rt_current"].update(signalType="XX"), "signalType"),
        (lambda d: d["attributes"]["maxCurrent"]["unit"].update(multiplier="HUGE"), "multiplier"),
        (lambda d: d["services"]["reset"].update(inputData={"a": 1}), "inputData"),
        (lambda d: d.pop("modelId"), "modelId"),
        (lambda d: d.update(measurepoints=[]), "measurepoints"),
    ],
)
def test_malformed_json_raises_model_error_with_its_path(mutate: object, text: str) -> None:
    doc = json.loads(json.dumps(METER))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(ModelError, match=text):
        model_from_json(doc, origin="meter.json")


def test_tsltemplate_rendering_uses_enos_key_names() -> None:
    model = library_model("pv_inverter")
    data = render_tsltemplate(model)
    assert set(data) >= {
        "tslModelId",
        "tslModelName",
        "tslModelDesc",
        "tslModelCatagory",
        "tslAttributeMap",
        "tslMeasurepointMap",
        "tslServiceMap",
        "tslEventMap",
        "tag",
        "allowAdditionalAttribute",
        "inheritedAttributeIds",
        "inheritedMeasurepointIds",
        "inheritedServiceIds",
        "inheritedEventIds",
    }
    assert data["tslModelId"] == "pv_inverter"
    assert data["tslModelName"] == "PV inverter"
    assert data["tslModelCatagory"] == "Solar"
    assert data["tag"] == {"tagMap": {}}
    assert data["inheritedAttributeIds"] == [
        "commissioning_date",
        "firmware_version",
        "manufacturer",
        "model_name",
        "serial_number",
    ]
    power = data["tslMeasurepointMap"]["active_power"]
    for key in (
        "identifier",
        "name",
        "desc",
        "required",
        "accessMode",
        "hasQuality",
        "unit",
        "tags",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "defaultValue",
    ):
        assert key in power
    assert power["hasQuality"] is True
    assert power["unit"] == {"unitId": "kW", "multiplier": "ONE"}
    assert power["tags"] == {"tagMap": {}}
    assert data["tslAttributeMap"]["rated_power"]["required"] is True
    service = data["tslServiceMap"]["set_power_limit"]
    assert service["callType"] == "SYNC"
    assert [p["identifier"] for p in service["inputData"]] == ["limit"]
    assert [p["identifier"] for p in service["outputData"]] == ["accepted"]
    assert data["tslEventMap"]["fault"]["eventType"] == "ERROR"
    json.dumps(data)  # serialisable


def test_tsltemplate_of_a_model_without_parent_has_empty_inherited_lists() -> None:
    data = render_tsltemplate(model_from_json(METER))
    assert data["inheritedMeasurepointIds"] == []
    assert data["tslModelCatagory"] is None
    assert data["tslMeasurepointMap"]["mode"]["name"] == "mode"


def test_enum_type_is_inferred_from_the_keys_when_absent() -> None:
    doc = json.loads(json.dumps(METER))
    doc["measurepoints"]["mode"]["dataDefinition"] = '{"enumDesc":{"0":"off","1":"on"}}'
    doc["measurepoints"]["level"] = {
        "identifier": "level",
        "dataType": "ENUM",
        "dataDefinition": {"enumDesc": {"lo": "low", "1": "one"}},
    }
    model = model_from_json(doc)
    assert model.measurepoints["mode"].spec.enum_type is DataType.INT
    assert model.measurepoints["level"].spec.enum_type is DataType.STRING
    assert model.validate_measurepoints({"mode": 0, "level": "1"}).values == {
        "mode": 0,
        "level": "1",
    }


def test_attribute_default_must_fit_its_type() -> None:
    doc = json.loads(json.dumps(METER))
    doc["attributes"]["maxCurrent"]["defaultValue"] = "high"
    with pytest.raises(ModelError, match="attribute 'maxCurrent': default value string 'high'"):
        model_from_json(doc)
