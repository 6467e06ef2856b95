"""Property tests: generated valid values validate and survive JSON; wrong types are 1204."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.errors import ValidationError
from enos_lab.model import (
    DataSpec,
    DataType,
    I18nText,
    Measurepoint,
    Param,
    ThingModel,
    conversion,
    known_units,
)
from enos_lab.model._units import unit_dimension

D = DataType
SCALARS = [D.INT, D.FLOAT, D.DOUBLE, D.BOOL, D.STRING, D.TIMESTAMP, D.DATE, D.FILE]
IDS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def enum_specs(draw: st.DrawFn) -> DataSpec:
    if draw(st.booleans()):
        keys = draw(st.sets(st.integers(-5, 50).map(str), min_size=1, max_size=5))
        return DataSpec(D.ENUM, enum_type=D.INT, enum_values={k: I18nText(k) for k in keys})
    keys = draw(st.sets(IDS, min_size=1, max_size=5))
    return DataSpec(D.ENUM, enum_type=D.STRING, enum_values={k: I18nText(k) for k in keys})


def scalar_specs() -> st.SearchStrategy[DataSpec]:
    return st.one_of(
        st.sampled_from([DataSpec(t) for t in SCALARS]),
        st.integers(1, 64).map(lambda n: DataSpec(D.STRING, max_length=n)),
        enum_specs(),
    )


@st.composite
def struct_specs(draw: st.DrawFn) -> DataSpec:
    names = draw(st.lists(IDS, min_size=1, max_size=4, unique=True))
    members = tuple(
        Param(name, draw(scalar_specs()), required=draw(st.booleans())) for name in names
    )
    return DataSpec(D.STRUCT, members=members)


SPECS = st.one_of(
    scalar_specs(),
    st.sampled_from([D.INT, D.FLOAT, D.DOUBLE, D.STRING]).map(
        lambda t: DataSpec(D.ARRAY, item_type=t)
    ),
    struct_specs(),
)


def valid_values(spec: DataSpec) -> st.SearchStrategy[Any]:
    t = spec.data_type
    if t is D.INT:
        return st.integers(-(2**31), 2**31 - 1)
    if t is D.FLOAT:
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if t is D.DOUBLE:
        return st.floats(allow_nan=False, allow_infinity=False)
    if t is D.BOOL:
        return st.one_of(st.booleans(), st.sampled_from([0, 1]))
    if t is D.ENUM:
        keys = sorted(spec.enum_values)
        if spec.enum_type is D.INT:
            return st.sampled_from([int(k) for k in keys])
        return st.sampled_from(keys)
    if t is D.STRING:
        limit = spec.max_length or 1024
        return st.text(max_size=limit).filter(lambda s: len(s.encode("utf-8")) <= limit)
    if t is D.TIMESTAMP:
        return st.integers(-(2**63), 2**63 - 1)
    if t is D.DATE:
        return st.datetimes(min_value=datetime(1000, 1, 1)).map(
            lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
        )
    if t is D.FILE:
        return st.from_regex(r"(https|local|ftp)://[a-z0-9/._-]{1,20}", fullmatch=True)
    if t is D.ARRAY:
        assert spec.item_type is not None
        return st.lists(valid_values(DataSpec(spec.item_type)), max_size=12)
    required = {m.identifier: valid_values(m.spec) for m in spec.members if m.required}
    optional = {m.identifier: valid_values(m.spec) for m in spec.members if not m.required}
    return st.fixed_dictionaries(required, optional=optional)


JSON_KINDS: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "bool": st.booleans(),
    "int": st.integers(),
    "float": st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    "string": st.text(max_size=10),
    "array": st.lists(st.integers(), max_size=3),
    "object": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
}
# JSON kinds that can never be valid for a data type.
WRONG_KINDS = {
    D.INT: ["null", "bool", "float", "string", "array", "object"],
    D.FLOAT: ["null", "bool", "string", "array", "object"],
    D.DOUBLE: ["null", "bool", "string", "array", "object"],
    D.BOOL: ["null", "float", "string", "array", "object"],
    D.ENUM: ["null", "bool", "float", "array", "object"],
    D.STRING: ["null", "bool", "int", "float", "array", "object"],
    D.TIMESTAMP: ["null", "bool", "float", "string", "array", "object"],
    D.DATE: ["null", "bool", "int", "float", "array", "object"],
    D.FILE: ["null", "bool", "int", "float", "array", "object"],
    D.ARRAY: ["null", "bool", "int", "float", "string", "object"],
    D.STRUCT: ["null", "bool", "int", "float", "string", "array"],
}


def model_of(spec: DataSpec) -> ThingModel:
    return ThingModel("prop", I18nText("Prop"), measurepoints={"pt": Measurepoint("pt", spec)})


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_valid_values_validate_and_survive_a_json_round_trip(data: st.DataObject) -> None:
    spec = data.draw(SPECS, label="spec")
    raw = data.draw(valid_values(spec), label="raw")
    model = model_of(spec)
    first = model.validate_measurepoints({"pt": raw}).values["pt"]
    wire = json.loads(json.dumps({"pt": first}))
    second = model.validate_measurepoints(wire).values["pt"]
    assert second == first
    again = model.validate_measurepoints(json.loads(json.dumps({"pt": raw}))).values["pt"]
    assert again == first


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_wrong_types_always_raise_1204_naming_the_point(data: st.DataObject) -> None:
    spec = data.draw(SPECS, label="spec")
    kinds = list(WRONG_KINDS[spec.data_type])
    if spec.data_type is D.ENUM:
        kinds.append("string" if spec.enum_type is D.INT else "int")
    kind = data.draw(st.sampled_from(kinds), label="kind")
    raw = data.draw(JSON_KINDS[kind], label="raw")
    with pytest.raises(ValidationError) as info:
        model_of(spec).validate_measurepoints({"pt": raw})
    assert info.value.code == 1204
    assert "model 'prop' measurepoint 'pt'" in str(info.value)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(SPECS, st.dictionaries(st.sampled_from(["pt", "other"]), JSON_VALUES, max_size=2))
def test_check_measurepoints_never_raises_and_partitions_the_points(
    spec: DataSpec, values: dict[str, Any]
) -> None:
    model = model_of(spec)
    report = model.check_measurepoints(values)
    bad = {p.point_id for p in report.problems}
    assert set(report.values) | bad == set(values)
    assert not set(report.values) & bad
    assert all(p.code == 1204 for p in report.problems)


UNITS = sorted(known_units())


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(UNITS).flatmap(
        lambda a: st.tuples(
            st.just(a),
            st.sampled_from([u for u in UNITS if unit_dimension(u) == unit_dimension(a)]),
        )
    ),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_unit_conversions_invert(pair: tuple[str, str], value: float) -> None:
    a, b = pair
    back = conversion(b, a).apply(conversion(a, b).apply(value))
    assert back == pytest.approx(value, rel=1e-9, abs=1e-9)
