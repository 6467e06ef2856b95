"""Evaluating expressions: one device's values and whole frames, nulls, division, missing
values and values of the wrong kind."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from enos_lab.errors import EvaluationError, MissingValue, RuleError
from enos_lab.model import DataSpec, DataType, Param
from enos_lab.rules import ExprType, compile_expression

TYPES = {"temp": "double", "mode": "string", "on": "bool", "n": "int"}
ATTRS = {"max_temp": "double"}


def cond(text: str) -> object:
    return compile_expression(text, points=TYPES, attributes=ATTRS)


def both(text: str, rows: list[dict[str, object]], **kwargs: object) -> list[object]:
    """Evaluate row by row and over the frame; assert they agree; return the values."""
    e = compile_expression(text, points=TYPES, attributes=ATTRS, **kwargs)  # type: ignore[arg-type]
    scalar = [e.evaluate(row, row) for row in rows]
    frame = e.evaluate_frame(pd.DataFrame(rows))
    vector = [None if isinstance(v, float) and math.isnan(v) else v for v in frame.tolist()]
    assert vector == scalar
    return scalar


def test_thresholds_per_device_from_attributes() -> None:
    e = compile_expression(
        "${temp} > ${max_temp} and ${mode} != 'maintenance'", points=TYPES, attributes=ATTRS
    )
    assert e.evaluate({"temp": 51, "mode": "run"}, {"max_temp": 50}) is True
    assert e.evaluate({"temp": 51, "mode": "run"}, {"max_temp": 60}) is False
    assert e.evaluate({"temp": 51, "mode": "maintenance"}, {"max_temp": 50}) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # comparisons with null are unknown; a condition that ends unknown is false
        ("${temp} > 1", [True, False, False]),
        ("not ${temp} > 1", [False, True, False]),
        ("${temp} != 1", [True, True, False]),
        ("${temp} in [5]", [True, False, False]),
        ("${temp} not in [5]", [False, True, False]),
        # three-valued logic
        ("${temp} > 1 or true", [True, True, True]),
        ("${temp} > 1 and false", [False, False, False]),
        ("not (${temp} > 1 and true)", [False, True, False]),
        ("${temp} > 1 or ${temp} <= 1", [True, True, False]),
        # is null is never unknown
        ("${temp} is null", [False, False, True]),
        ("is_null(${temp})", [False, False, True]),
        ("${temp} is not null", [True, True, False]),
        ("is_null(${temp} + 1)", [False, False, True]),
        ("is_null(${temp} / 0)", [True, True, True]),
        ("is_null(${temp} % 0)", [True, True, True]),
        ("is_null(${on})", [False, False, True]),
        ("${on}", [True, False, False]),
        ("not ${on}", [False, True, False]),
        ("${on} == true", [True, False, False]),
        ("${on} in [false]", [False, True, False]),
        ("${mode} == 'a'", [True, False, False]),
        ("${mode} is null", [False, False, True]),
        ("is_null(min(${temp}, 1))", [False, False, True]),
        ("is_null(round(${temp}, 2))", [False, False, True]),
    ],
)
def test_nulls_propagate_like_sql(text: str, expected: list[bool]) -> None:
    rows = [
        {"temp": 5.0, "on": True, "mode": "a", "max_temp": 1.0},
        {"temp": 0.5, "on": False, "mode": "b", "max_temp": 1.0},
        {"temp": None, "on": None, "mode": None, "max_temp": None},
    ]
    assert both(text, rows) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${temp} / ${n}", [2.5, None, None]),
        ("${temp} % ${n}", [1.0, None, None]),
        ("${temp} * 1e308 * 10", [None, None, None]),  # overflow to infinity is null
        ("-${temp}", [-5.0, -5.0, None]),
        ("abs(-${temp})", [5.0, 5.0, None]),
        ("max(${temp}, ${n}, 3)", [5.0, 5.0, None]),
        ("min(${temp}, ${n})", [2.0, 0.0, None]),
        ("round(${temp} / 3, 3)", [1.667, 1.667, None]),
    ],
)
def test_division_by_zero_and_overflow_are_null(text: str, expected: list[object]) -> None:
    rows = [{"temp": 5, "n": 2}, {"temp": 5, "n": 0}, {"temp": None, "n": 3}]
    assert both(text, rows, boolean=False) == expected


def test_value_expressions_return_numbers_strings_bools_and_null() -> None:
    rows = [{"temp": 3, "mode": "x", "on": True}, {"temp": None, "mode": None, "on": None}]
    assert both("${temp} * 2", rows, boolean=False) == [6.0, None]
    assert both("${mode}", rows, boolean=False) == ["x", None]
    assert both("${on} and true", rows, boolean=False) == [True, None]
    assert both("null", rows, boolean=False) == [None, None]
    e = compile_expression("${temp} + 1", points=TYPES, boolean=False)
    assert e.result_type is ExprType.NUMBER
    assert e.evaluate_frame(pd.DataFrame(rows)).dtype == np.float64


def test_numbers_are_doubles_and_nan_and_infinity_are_null() -> None:
    e = compile_expression("${temp} is null", points=TYPES)
    for null in (None, float("nan"), float("inf"), -float("inf")):
        assert e.evaluate({"temp": null}) is True
    assert compile_expression("${n} == 3", points=TYPES).evaluate({"n": np.int64(3)}) is True
    assert compile_expression("${on}", points=TYPES).evaluate({"on": np.True_}) is True
    assert compile_expression("${temp} is null", points=TYPES).evaluate({"temp": pd.NA}) is True
    assert compile_expression("${n} / 2 == 1.5", points=TYPES).evaluate({"n": 3}) is True


def test_missing_values_raise_missing_value_naming_what_is_missing() -> None:
    e = compile_expression("${temp} > ${max_temp}", points=TYPES, attributes=ATTRS, name="hot")
    with pytest.raises(MissingValue) as info:
        e.evaluate({"temp": 1.0}, {})
    assert (info.value.name, info.value.namespace, info.value.rule) == ("max_temp", "attr", "hot")
    assert str(info.value) == "rule 'hot': missing attribute 'max_temp' in '${temp} > ${max_temp}'"
    assert isinstance(info.value, EvaluationError)
    assert isinstance(info.value, RuleError)
    with pytest.raises(MissingValue, match="missing measurepoint 'temp'"):
        e.evaluate({}, {"max_temp": 1.0})
    # a reference is missing even where a short-circuit would not read it
    with pytest.raises(MissingValue, match="'max_temp'"):
        compile_expression("true or ${max_temp} > 1", attributes=ATTRS).evaluate({})
    with pytest.raises(MissingValue, match="missing attribute 'max_temp'"):
        e.evaluate_frame(pd.DataFrame({"temp": [1.0]}))


def test_values_of_the_wrong_kind_raise_evaluation_error() -> None:
    e = compile_expression("${temp} > 1", points=TYPES, name="hot")
    for bad in ("12", True, [1], {"a": 1}):
        with pytest.raises(EvaluationError, match="'temp' should be number") as info:
            e.evaluate({"temp": bad})
        assert info.value.rule == "hot"
        with pytest.raises(EvaluationError, match="'temp' should be number"):
            e.evaluate_frame(pd.DataFrame({"temp": [1.0, bad]}))
    with pytest.raises(EvaluationError, match="'on' should be bool, found an int 1"):
        compile_expression("${on}", points=TYPES).evaluate({"on": 1})
    with pytest.raises(EvaluationError, match="'mode' should be string, found an int 1"):
        compile_expression("${mode} == 'a'", points=TYPES).evaluate({"mode": 1})


def test_untyped_expressions_check_kinds_when_evaluated() -> None:
    e = compile_expression("${a} > ${b}")
    assert e.evaluate({"a": 2, "b": 1}) is True
    assert e.evaluate({"a": "b", "b": "a"}) is True
    assert e.evaluate({"a": None, "b": "a"}) is False
    with pytest.raises(EvaluationError, match="compares a string with a number"):
        e.evaluate({"a": "x", "b": 1})
    with pytest.raises(EvaluationError, match="compares a bool with a bool"):
        e.evaluate({"a": True, "b": False})
    with pytest.raises(EvaluationError, match="expected a number"):
        compile_expression("${a} + 1 > 0").evaluate({"a": "x"})
    with pytest.raises(EvaluationError, match="expected a bool"):
        compile_expression("${a} and true").evaluate({"a": 1})
    with pytest.raises(EvaluationError, match=r"expected a bool at column 2, found a number 5\.0"):
        compile_expression("${a}").evaluate({"a": 5})
    assert compile_expression("${a}").evaluate({"a": None}) is False
    with pytest.raises(EvaluationError, match="'in' on a list of a numbers"):
        compile_expression("${a} in [1]").evaluate({"a": True})
    with pytest.raises(EvaluationError, match="compares a dict"):
        compile_expression("${a} == 1").evaluate({"a": {"x": 1}})
    # frames of untyped expressions run row by row, with the same outcome
    frame = pd.DataFrame({"a": [2, None, "x"], "b": [1, 1, "y"]})
    assert e.evaluate_frame(frame).tolist() == [True, False, False]


def test_struct_members_from_dicts_and_flattened_columns() -> None:
    state = DataSpec(
        DataType.STRUCT,
        members=(Param("code", DataSpec(DataType.INT)), Param("ok", DataSpec(DataType.BOOL))),
    )
    e = compile_expression("${state/code} == 3 and ${state/ok}", points={"state": state})
    rows = [{"code": 3, "ok": True}, {"code": 3}, None, {"code": 2, "ok": True}]
    assert [e.evaluate({"state": s}) for s in rows] == [True, False, False, False]
    frame = pd.DataFrame({"state": rows})
    assert e.evaluate_frame(frame).tolist() == [True, False, False, False]
    flat = pd.DataFrame({"state/code": [3, 3, None, 2], "state/ok": [True, None, None, True]})
    assert e.evaluate_frame(flat).tolist() == [True, False, False, False]
    with pytest.raises(EvaluationError, match="'state' is a string, not a struct"):
        e.evaluate({"state": "x"})
    with pytest.raises(EvaluationError, match="'state' is a string, not a struct"):
        e.evaluate_frame(pd.DataFrame({"state": ["x"]}))


def test_arrays_and_structs_in_frames_are_cells() -> None:
    series = DataSpec(DataType.ARRAY, item_type=DataType.DOUBLE)
    e = compile_expression("${series} is null", points={"series": series})
    frame = pd.DataFrame({"series": [[1.0, 2.0], [3.0, 4.0]]})
    assert e.evaluate_frame(frame).tolist() == [False, False]
    assert e.evaluate_frame(pd.DataFrame({"series": [[1.0], None]})).tolist() == [False, True]
    nested = compile_expression("${a/b} is null")
    assert nested.evaluate_frame(pd.DataFrame({"a": [{"b": [1, 2]}, {"b": [3, 4]}]})).tolist() == [
        False,
        False,
    ]


def test_frame_columns_by_namespace_and_index_kept() -> None:
    e = compile_expression(
        "${point:limit} > ${attr:limit}", points={"limit": "int"}, attributes={"limit": "int"}
    )
    frame = pd.DataFrame(
        {"point:limit": [1, 5], "attr:limit": [2, 2]}, index=pd.Index([10, 20], name="t")
    )
    out = e.evaluate_frame(frame)
    assert out.tolist() == [False, True]
    assert out.index.equals(frame.index)
    assert out.dtype == bool


def test_frames_with_nullable_and_object_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "temp": pd.array([3.0, None, 1.0], dtype="Float64"),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "on": pd.array([True, None, False], dtype="boolean"),
            "mode": pd.array(["a", None, "c"], dtype="string"),
        }
    )
    e = compile_expression("${temp} > ${n} or ${on} or ${mode} == 'c'", points=TYPES)
    assert e.evaluate_frame(frame).tolist() == [True, False, True]
    assert e.evaluate_frame(frame.iloc[:0]).tolist() == []


def test_expressions_are_immutable() -> None:
    e = compile_expression("${a} > 1", name="r")
    with pytest.raises(AttributeError):
        e.text = "x"  # type: ignore[misc]
    assert repr(e) == "Expression('${a} > 1', name='r', result_type=bool)"


def test_string_columns_read_whole_and_per_cell_agree() -> None:
    state = DataSpec(DataType.STRUCT, members=(Param("text", DataSpec(DataType.STRING)),))
    e = compile_expression("${state/text} >= 'b'", points={"state": state})
    texts = ["a", None, "b", "c", float("nan")]
    whole = e.evaluate_frame(pd.DataFrame({"state/text": texts}))  # a column of strings
    cells = e.evaluate_frame(pd.DataFrame({"state": [{"text": t} for t in texts]}))
    rows = [e.evaluate({"state": {"text": t}}) for t in texts]
    assert whole.tolist() == cells.tolist() == rows == [False, False, True, True, False]
