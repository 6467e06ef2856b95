"""Name resolution and type checking against a thing model's types (no lab needed)."""

from __future__ import annotations

import pytest

from enos_lab.errors import ExpressionError, InvalidArgument
from enos_lab.model import (
    Attribute,
    DataSpec,
    DataType,
    I18nText,
    Measurepoint,
    Param,
    ThingModel,
)
from enos_lab.rules import ExprType, compile_expression

STATE = DataSpec(
    DataType.STRUCT,
    members=(
        Param("code", DataSpec(DataType.INT)),
        Param("text", DataSpec(DataType.STRING)),
        Param("ok", DataSpec(DataType.BOOL)),
    ),
)
MODE = DataSpec(DataType.ENUM, enum_type=DataType.STRING, enum_values={"run": I18nText("Run")})
LEVEL = DataSpec(DataType.ENUM, enum_type=DataType.INT, enum_values={"1": I18nText("Low")})


def _mp(identifier: str, spec: DataSpec) -> Measurepoint:
    return Measurepoint(identifier, spec)


MODEL = ThingModel(
    "Inverter",
    I18nText("Inverter"),
    measurepoints={
        m.identifier: m
        for m in (
            _mp("temp", DataSpec(DataType.DOUBLE)),
            _mp("power", DataSpec(DataType.FLOAT)),
            _mp("count", DataSpec(DataType.INT)),
            _mp("stamp", DataSpec(DataType.TIMESTAMP)),
            _mp("mode", MODE),
            _mp("level", LEVEL),
            _mp("running", DataSpec(DataType.BOOL)),
            _mp("label", DataSpec(DataType.STRING)),
            _mp("day", DataSpec(DataType.DATE)),
            _mp("state", STATE),
            _mp("series", DataSpec(DataType.ARRAY, item_type=DataType.DOUBLE)),
        )
    },
    attributes={
        "max_temp": Attribute("max_temp", DataSpec(DataType.DOUBLE)),
        "rated_power": Attribute("rated_power", DataSpec(DataType.FLOAT)),
        "site": Attribute("site", DataSpec(DataType.STRING)),
    },
)


def check(text: str, **kwargs: object) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, model=MODEL, name="r1", **kwargs)  # type: ignore[arg-type]
    return info.value


def test_the_issue_examples_compile_against_a_model() -> None:
    for text in (
        "${temp} > 50",
        "${temp} > ${max_temp}",
        "${state/code} == 3",
        "${power} > 0.8 * ${rated_power} and ${mode} != 'maintenance'",
    ):
        e = compile_expression(text, model=MODEL)
        assert e.typed and e.result_type is ExprType.BOOL
    e = compile_expression("${temp} > ${max_temp} and ${state/ok}", model=MODEL)
    assert e.points == {"temp", "state"}
    assert e.attributes == {"max_temp"}


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("${temp} + ${count} * ${stamp}", ExprType.NUMBER),
        ("${level} - 1", ExprType.NUMBER),  # an INT enum is a number
        ("${mode}", ExprType.STRING),  # a STRING enum is a string
        ("${day}", ExprType.STRING),
        ("${running}", ExprType.BOOL),
        ("${state/text}", ExprType.STRING),
        ("${site}", ExprType.STRING),
        ("round(${temp}, 1)", ExprType.NUMBER),
        ("null", ExprType.NULL),
    ],
)
def test_value_expressions_have_the_model_types(text: str, result: ExprType) -> None:
    assert compile_expression(text, model=MODEL, boolean=False).result_type is result


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("${tmp} > 50", 2, "unknown measurepoint or attribute 'tmp'"),
        ("${point:max_temp} > 50", 8, "unknown measurepoint 'max_temp'"),
        ("${attr:temp} > 50", 7, "unknown attribute 'temp'"),
        (
            "${state/cod} == 3",
            8,
            "unknown member 'cod' of struct 'state' (members: code, ok, text)",
        ),
        ("${temp/x} > 1", 7, "'temp/x': 'x' is a member of a number, not of a struct"),
        ("${state/code/x} > 1", 13, "'x' is a member of a number"),
        ("${label} > 50", 9, "comparison '>' compares a string with a number"),
        ("50 == ${mode}", 3, "comparison '==' compares a number with a string"),
        ("${running} == 1", 11, "compares a bool with a number"),
        ("${running} > false", 11, "cannot order bools"),
        ("${label} + 'x' == 'y'", 2, "arithmetic '+' needs a number, found a string"),
        ("${running} * 2 > 1", 2, "arithmetic '*' needs a number, found a bool"),
        ("-${label} == 'a'", 3, "'-' needs a number, found a string"),
        ("${temp} and true", 2, "'and' needs a bool, found a number"),
        ("not ${label}", 6, "'not' needs a bool, found a string"),
        ("${temp}", 2, "a condition needs a bool, found a number"),
        ("${temp} + 1", 8, "a condition needs a bool, found a number"),
        ("${temp} == null", 8, "a comparison with null is always false"),
        ("${state} == 3", 2, "comparison '==' cannot use a struct"),
        ("${series} > 1", 2, "cannot use an array"),
        ("${temp} in ['a']", 12, "'in' compares a number with a string"),
        ("${mode} not in ['a', 1]", 21, "'not in' compares a string with a number"),
        ("abs(${label}) > 1", 6, "abs() needs a number, found a string"),
        ("abs(1, 2) > 1", 0, "abs() takes 1 argument, found 2"),
        ("min() > 1", 0, "min() takes at least 1 argument, found 0"),
        ("round(${temp}, ${count}) > 1", 17, "round()'s digits must be an integer 0..15"),
        ("round(${temp}, 1.5) > 1", 15, "round()'s digits must be an integer 0..15"),
        ("round(${temp}, 16) > 1", 15, "round()'s digits must be an integer 0..15"),
        ("round(1, 2, 3) > 1", 0, "round() takes 1 or 2 arguments, found 3"),
        ("max(${temp}, 'a') > 1", 13, "max() needs a number, found a string"),
    ],
)
def test_type_errors_name_the_rule_and_column(text: str, column: int, reason: str) -> None:
    error = check(text)
    assert reason in error.reason
    assert error.position == column
    assert error.rule == "r1"
    assert str(error).startswith(f"rule 'r1': {error.reason} at column {column}")


def test_is_null_applies_to_every_type_including_structs_and_arrays() -> None:
    e = compile_expression("${state} is null or ${series} is not null", model=MODEL)
    assert e.evaluate({"state": None, "series": None}) is True
    assert e.evaluate({"state": {"code": 1}, "series": None}) is False
    assert e.evaluate({"state": {"code": 1}, "series": [1.0]}) is True


def test_a_name_that_is_both_a_point_and_an_attribute_needs_a_namespace() -> None:
    types = {"points": {"limit": "double"}, "attributes": {"limit": "double"}}
    with pytest.raises(ExpressionError) as info:
        compile_expression("${limit} > 1", **types)  # type: ignore[arg-type]
    assert info.value.reason == (
        "'limit' is both a measurepoint and an attribute: write ${point:limit} or ${attr:limit}"
    )
    e = compile_expression("${point:limit} > ${attr:limit}", **types)  # type: ignore[arg-type]
    assert e.points == {"limit"} and e.attributes == {"limit"}
    assert e.evaluate({"limit": 2}, {"limit": 1}) is True


def test_plain_type_mappings_accept_specs_data_types_expression_types_and_names() -> None:
    e = compile_expression(
        "${a} + ${b} > ${c} and ${d} == 'x' and ${e/code} == 1",
        points={"a": DataType.INT, "b": ExprType.NUMBER, "d": "string", "e": STATE},
        attributes={"c": "Double"},
    )
    assert e.typed
    with pytest.raises(ExpressionError, match="unknown member 'm'"):
        compile_expression("${e/m} == 1", points={"e": STATE})
    # a STRUCT without its members: members are checked when evaluated
    assert compile_expression("${e/m} == 1", points={"e": DataType.STRUCT}).evaluate(
        {"e": {"m": 1}}
    )
    with pytest.raises(InvalidArgument, match="points 'a'"):
        compile_expression("${a} > 1", points={"a": 42})
    with pytest.raises(InvalidArgument, match="expected a mapping"):
        compile_expression("${a} > 1", points=["a"])  # type: ignore[arg-type]


def test_only_points_given_means_no_attributes() -> None:
    with pytest.raises(ExpressionError, match="unknown measurepoint or attribute 'max_temp'"):
        compile_expression("${temp} > ${max_temp}", points={"temp": "double"})


def test_without_types_everything_resolves_and_is_checked_when_evaluated() -> None:
    e = compile_expression("${temp} > ${max_temp} and ${attr:site} == 'x'")
    assert not e.typed
    assert e.points == {"temp", "max_temp"}
    assert e.attributes == {"site"}
    # the unqualified name falls back to the attributes
    assert e.evaluate({"temp": 60}, {"max_temp": 50, "site": "x"}) is True
