"""Property: vectorised evaluation over a frame gives what scalar evaluation gives row by row,
for generated expressions over generated rows, nulls included (the backtest's guarantee)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.rules import compile_expression

POINTS = {"x": "double", "y": "double", "n": "int", "s": "string", "t": "string", "b": "bool"}
ATTRIBUTES = {"k": "double", "on": "bool"}

numbers: st.SearchStrategy[str] = st.deferred(lambda: _numbers)
strings: st.SearchStrategy[str] = st.sampled_from(["${s}", "${t}", "'a'", "'b'", "''", "'ab'"])
bools: st.SearchStrategy[str] = st.deferred(lambda: _bools)

_literals = st.sampled_from(["0", "1", "-1.5", "2", "3", "0.1", "1e300", "1e-300", "7"])
_numbers = st.recursive(
    st.one_of(st.sampled_from(["${x}", "${y}", "${n}", "${k}"]), _literals),
    lambda inner: st.one_of(
        st.builds("({} {} {})".format, inner, st.sampled_from("+-*/%"), inner),
        st.builds("(-{})".format, inner),
        st.builds("abs({})".format, inner),
        st.builds("min({}, {})".format, inner, inner),
        st.builds("max({}, {}, {})".format, inner, inner, inner),
        st.builds("round({})".format, inner),
        st.builds("round({}, {})".format, inner, st.sampled_from(["0", "1", "2", "15"])),
    ),
    max_leaves=8,
)
_comparisons = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
_bools = st.recursive(
    st.one_of(
        st.sampled_from(["${b}", "${on}", "true", "false"]),
        st.builds("({} {} {})".format, numbers, _comparisons, numbers),
        st.builds("({} {} {})".format, strings, _comparisons, strings),
        st.builds("({} in [1, -1.5, 0, 3])".format, numbers),
        st.builds("({} not in ['a', ''])".format, strings),
        st.builds("({} is null)".format, st.one_of(numbers, strings)),
        st.builds("({} is not null)".format, numbers),
        st.builds("is_null({})".format, numbers),
    ),
    lambda inner: st.one_of(
        st.builds("(not {})".format, inner),
        st.builds("({} and {})".format, inner, inner),
        st.builds("({} or {} or {})".format, inner, inner, inner),
        st.builds("({} {} {})".format, inner, st.sampled_from(["==", "!="]), inner),
        st.builds("({} in [true])".format, inner),
    ),
    max_leaves=6,
)

_double = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 1.0, -1.5, 3.0, 1e308, 5e-324]),
    st.floats(allow_nan=False, allow_infinity=False),
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "x": _double,
            "y": _double,
            "k": _double,
            "n": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
            "s": st.one_of(st.none(), st.text("ab", max_size=2)),
            "t": st.one_of(st.none(), st.text("ab", max_size=2)),
            "b": st.one_of(st.none(), st.booleans()),
            "on": st.one_of(st.none(), st.booleans()),
        }
    ),
    min_size=1,
    max_size=12,
)


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return type(a) is type(b) and a == b


def _check(text: str, table: list[dict[str, Any]], boolean: bool) -> None:
    e = compile_expression(text, points=POINTS, attributes=ATTRIBUTES, boolean=boolean)
    scalar = [e.evaluate(row, row) for row in table]
    vector = e.evaluate_frame(pd.DataFrame(table)).tolist()
    for i, (a, b) in enumerate(zip(scalar, vector, strict=True)):
        assert _same(a, b), f"row {i} {table[i]}: scalar {a!r}, vectorised {b!r} for {text}"
    arrays = e.evaluate_arrays({k: _array([r[k] for r in table]) for k in table[0]}, len(table))
    for i, (a, b) in enumerate(zip(scalar, arrays.tolist(), strict=True)):
        assert _same(a, b), f"row {i} {table[i]}: scalar {a!r}, on arrays {b!r} for {text}"


def _array(cells: list[Any]) -> np.ndarray[Any, Any]:
    """A column as the rule engine's batches give it: doubles (NaN for null) where every
    cell is a number or null, objects otherwise."""
    if all(type(c) in (int, float) or c is None for c in cells):
        return np.array([math.nan if c is None else c for c in cells], dtype=np.float64)
    column = np.empty(len(cells), dtype=object)
    column[:] = cells
    return column


@settings(max_examples=200, deadline=None)
@given(bools, rows)
def test_conditions_vectorised_equal_row_by_row(text: str, table: list[dict[str, Any]]) -> None:
    _check(text, table, boolean=True)


@settings(max_examples=150, deadline=None)
@given(st.one_of(numbers, bools, strings), rows)
def test_values_vectorised_equal_row_by_row(text: str, table: list[dict[str, Any]]) -> None:
    _check(text, table, boolean=False)
