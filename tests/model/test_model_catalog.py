"""Inheritance through ModelCatalog, clone, and catalog bookkeeping."""

from __future__ import annotations

import pytest

from enos_lab.errors import AlreadyExists, ModelError, NotFound
from enos_lab.model import (
    Attribute,
    DataSpec,
    DataType,
    Event,
    I18nText,
    InheritedIds,
    Measurepoint,
    ModelCatalog,
    Service,
    ThingModel,
    model_from_json,
    model_to_json,
)

D = DataType


def base() -> ThingModel:
    return ThingModel(
        "base",
        I18nText("Base"),
        attributes={"serial": Attribute("serial", DataSpec(D.STRING))},
        measurepoints={"temp": Measurepoint("temp", DataSpec(D.FLOAT))},
        services={"reboot": Service("reboot")},
        events={"fault": Event("fault")},
    )


def child(**kw: object) -> ThingModel:
    fields: dict[str, object] = {
        "measurepoints": {"power": Measurepoint("power", DataSpec(D.DOUBLE))},
        "parent_id": "base",
    }
    fields.update(kw)
    return ThingModel("child", I18nText("Child"), **fields)  # type: ignore[arg-type]


def test_child_gets_parent_elements_and_records_them_as_inherited() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    resolved = catalog.add(child())
    assert set(resolved.measurepoints) == {"temp", "power"}
    assert set(resolved.attributes) == {"serial"}
    assert set(resolved.services) == {"reboot"} and set(resolved.events) == {"fault"}
    assert resolved.inherited == InheritedIds(
        attributes=frozenset({"serial"}),
        measurepoints=frozenset({"temp"}),
        services=frozenset({"reboot"}),
        events=frozenset({"fault"}),
    )
    assert resolved.validate_measurepoints({"temp": 1, "power": 2}).values == {
        "temp": 1.0,
        "power": 2.0,
    }
    assert catalog.get("child") is resolved
    assert resolved.own_elements() == child()


def test_multi_level_inheritance() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    catalog.add(child())
    grandchild = ThingModel(
        "grandchild",
        I18nText("GC"),
        measurepoints={"freq": Measurepoint("freq", DataSpec(D.FLOAT))},
        parent_id="child",
    )
    resolved = catalog.add(grandchild)
    assert set(resolved.measurepoints) == {"temp", "power", "freq"}
    assert resolved.inherited.measurepoints == frozenset({"temp", "power"})
    assert catalog.children("child") == ["grandchild"]


@pytest.mark.parametrize(
    ("kind", "element", "name"),
    [
        (
            "measurepoints",
            {"temp": Measurepoint("temp", DataSpec(D.DOUBLE))},
            "measurepoint 'temp'",
        ),
        ("attributes", {"serial": Attribute("serial", DataSpec(D.STRING))}, "attribute 'serial'"),
        ("services", {"reboot": Service("reboot")}, "service 'reboot'"),
        ("events", {"fault": Event("fault")}, "event 'fault'"),
    ],
)
def test_redefining_an_inherited_element_is_refused_naming_it(
    kind: str, element: object, name: str
) -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    with pytest.raises(ModelError) as info:
        catalog.add(child(**{kind: element}))
    assert str(info.value) == (
        f"model 'child' cannot redefine {name} inherited from parent model 'base'"
    )
    assert "child" not in catalog


def test_cross_kind_clash_with_parent_names_the_identifier() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    with pytest.raises(ModelError, match="identifier 'temp' is used by both"):
        catalog.add(child(attributes={"temp": Attribute("temp", DataSpec(D.INT))}))


def test_missing_parent_duplicate_and_unknown_ids() -> None:
    catalog = ModelCatalog()
    with pytest.raises(ModelError, match="parent model 'base' is not in the catalog"):
        catalog.add(child())
    catalog.add(base())
    with pytest.raises(AlreadyExists):
        catalog.add(base())
    with pytest.raises(NotFound, match="'nope'"):
        catalog.get("nope")


def test_resolved_model_survives_json_round_trip_and_re_adding() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    resolved = catalog.add(child())
    doc = model_to_json(resolved)
    assert doc["parentModelId"] == "base"
    assert doc["inheritedMeasurepointIds"] == ["temp"]
    again = model_from_json(doc)
    assert again == resolved
    other = ModelCatalog()
    other.add(base())
    assert other.add(again) == resolved


def test_resolved_model_with_tampered_inherited_element_is_refused() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    resolved = catalog.add(child())
    doc = model_to_json(resolved)
    doc["measurepoints"]["temp"]["dataType"] = "INT"
    other = ModelCatalog()
    other.add(base())
    with pytest.raises(ModelError, match="cannot redefine measurepoint 'temp'"):
        other.add(model_from_json(doc))


def test_remove_refuses_parents_with_children() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    catalog.add(child())
    with pytest.raises(ModelError, match="child models \\['child'\\]"):
        catalog.remove("base")
    catalog.remove("child")
    catalog.remove("base")
    assert len(catalog) == 0


def test_clone_is_independent_and_has_no_parent() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    resolved = catalog.add(child())
    copy = resolved.clone("copy", I18nText("Copy"))
    assert copy.parent_id is None and not copy.inherited
    assert copy.measurepoints == resolved.measurepoints
    assert catalog.add(copy).model_id == "copy"
    catalog.remove("child")
    catalog.remove("base")
    assert catalog.get("copy").validate_measurepoints({"temp": 1.0}).ok


def test_catalog_iterates_models_in_insertion_order() -> None:
    catalog = ModelCatalog()
    catalog.add(base())
    catalog.add(child())
    assert [m.model_id for m in catalog] == ["base", "child"] == catalog.ids()
