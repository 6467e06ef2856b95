"""Kinds, texts and immutability of model values."""

from __future__ import annotations

import dataclasses

import pytest

from enos_lab.errors import ModelError
from enos_lab.model import (
    CallType,
    DataSpec,
    DataType,
    EventType,
    I18nText,
    Measurepoint,
    Multiplier,
    SignalType,
    ThingModel,
    check_identifier,
)


def test_enum_values_are_the_enos_wire_names() -> None:
    assert [t.value for t in DataType] == [
        "INT", "FLOAT", "DOUBLE", "BOOL", "ENUM", "STRING",
        "TIMESTAMP", "DATE", "STRUCT", "ARRAY", "FILE",
    ]  # fmt: skip
    assert [s.value for s in SignalType] == ["AI", "DI", "PI", "GENERIC"]
    assert [c.value for c in CallType] == ["SYNC", "ASYNC"]
    assert [e.value for e in EventType] == ["INFO", "WARN", "ERROR"]
    assert Multiplier["MEGA"].factor == 1e6 and Multiplier.ONE.factor == 1.0
    assert Multiplier.MICRO.exponent == -6


def test_i18n_text_falls_back_to_the_default() -> None:
    text = I18nText("Power", {"zh_CN": "功率"})
    assert text.text() == "Power"
    assert text.text("zh_CN") == "功率"
    assert text.text("fr_FR") == "Power"


def test_models_and_their_maps_are_read_only() -> None:
    model = ThingModel(
        "ro", I18nText("RO"), measurepoints={"p": Measurepoint("p", DataSpec(DataType.INT))}
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.model_id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.measurepoints["q"] = model.measurepoints["p"]  # type: ignore[index]
    source = {"a": "b"}
    text = I18nText("x", source)
    source["c"] = "d"
    assert dict(text.translations) == {"a": "b"}


def test_models_and_mappings_pickle_and_deep_copy() -> None:
    import copy
    import pickle

    from enos_lab.model import library_model, vendor_mapping

    model = library_model("battery_storage")
    again = pickle.loads(pickle.dumps(model))
    assert again == model
    assert again.validate_measurepoints({"soc": {"value": 55, "quality": 9}}).quality == {"soc": 9}
    assert copy.deepcopy(model) == model
    mapping = vendor_mapping("inverter_vendor_b")
    restored = pickle.loads(pickle.dumps(mapping))
    assert restored == mapping
    assert restored.apply({"T_INT": 212}) == {"internal_temperature": 100.0}


def test_check_identifier_names_a_long_id_without_echoing_it() -> None:
    assert check_identifier("INV.GenActivePW", "measurepoint") == "INV.GenActivePW"
    for bad in ("p" * 101, "a b", "1x", "", "\u00e9t\u00e9", 5):
        with pytest.raises(ModelError):
            check_identifier(bad, "measurepoint")
    with pytest.raises(ModelError) as info:
        check_identifier("p" * 60_000, "measurepoint")
    message = str(info.value)
    assert message.startswith("measurepoint: expected an identifier") and "'pppp" in message
    assert len(message) < 200
