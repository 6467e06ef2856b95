"""Vectorised evaluation over a DataFrame, giving what scalar evaluation gives row by row.

Theory of operation. The checked tree is walked once per frame, each node turning into numpy
arrays over all rows (no ``DataFrame.eval``/``query``, nothing of the text is executed):

- a number is a ``float64`` array, NaN marking null (scalar evaluation turns NaN and
  infinities into null too, so the two agree);
- a string is an ``object`` array with ``None`` for null;
- a bool is a pair of masks ``(true, false)``: neither set means unknown (null), which gives
  three-valued logic with plain ``&``/``|`` (``and``: true = both true, false = either false);
- a whole struct or array is an ``object`` array (only ``is null`` looks at it).

Columns are found by reference: ``point:name`` or ``attr:name``, then ``name/member`` for a
member (a flattened column), then ``name`` (a column of struct dicts, walked per row); a missing
column is :class:`~enos_lab.errors.MissingValue`. They are normalised like scalar values (a
value of the wrong kind raises :class:`~enos_lab.errors.EvaluationError`). Division and
modulo follow numpy, whose float ``%`` is Python's; ``round(x, n)`` with ``n > 0`` runs
Python's ``round`` per row (numpy's rounds differently), ``round(x)`` is numpy's half-even,
which is Python's. Expressions compiled without types evaluate row by row through the scalar
path (the column kinds are not known beforehand).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import EvaluationError, MissingValue
from ._evaluate import RefKey, kind_name, member, normalise
from ._nodes import Binary, Call, Compare, In, IsNull, Literal, Logic, Node, Not, Ref, Unary
from ._types import ExprType

__all__ = ["evaluate_arrays", "evaluate_vector", "is_missing"]

Floats = npt.NDArray[np.float64]
Masks = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]
Truth = tuple[Masks, Masks]
Vector = Floats | Objects | Truth


def is_missing(value: object) -> bool:
    """Whether a cell of a frame is null (``None``, NaN, ``pd.NA``, ``pd.NaT``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


Columns = pd.DataFrame | Mapping[str, npt.NDArray[Any]]
"""A frame, or its columns as numpy arrays (label -> array, all of one length)."""


def _column(frame: Columns, key: RefKey) -> tuple[pd.Series[Any], tuple[str, ...]]:
    """The column for a reference and the member path still to walk."""
    namespace, name, path = key
    labels = frame.columns if isinstance(frame, pd.DataFrame) else frame
    joined = "/".join((name, *path))
    for label in (f"{namespace}:{joined}", joined):
        if label in labels:
            return _series(frame[label]), ()
    for label in (f"{namespace}:{name}", name):
        if label in labels:
            return _series(frame[label]), path
    raise MissingValue(name, namespace)


def _series(column: pd.Series[Any] | npt.NDArray[Any]) -> pd.Series[Any]:
    return column if isinstance(column, pd.Series) else pd.Series(column, copy=False)


class _Vectoriser:
    def __init__(
        self,
        frame: Columns,
        n: int,
        refs: Mapping[RefKey, ExprType],
        text: str,
        rule: str | None,
    ) -> None:
        self.frame = frame
        self.n = n
        self.refs = refs
        self.text = text
        self.rule = rule

    def fail(self, message: str) -> EvaluationError:
        return EvaluationError(message, self.text, self.rule)

    # ------------------------------------------------------------------ columns

    def load(self, key: RefKey) -> Vector:
        kind = self.refs[key]
        if not key[2] and kind is ExprType.NUMBER and not isinstance(self.frame, pd.DataFrame):
            array = self.frame.get(f"{key[0]}:{key[1]}")  # the numbers of a MessageFrame
            if array is not None and array.dtype == np.float64:
                values = array.copy()
                values[~np.isfinite(values)] = np.nan
                return values
        try:
            series, path = _column(self.frame, key)
        except MissingValue as exc:
            raise MissingValue(exc.name, exc.namespace, self.text, self.rule) from None
        where = "/".join((key[1], *key[2]))
        dtype = series.dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        if not path and kind is ExprType.NUMBER and numeric:
            values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
            values[~np.isfinite(values)] = np.nan
            return values
        if not path and kind is ExprType.BOOL and dtype == np.bool_:
            values = series.to_numpy(dtype=np.bool_)
            return values, ~values
        if not path and kind is ExprType.STRING and _only_strings(series):
            # fast path of the per-cell loop below, for a column of strings and nulls
            null = series.isna().to_numpy()
            objects = series.to_numpy(dtype=object, copy=True)
            objects[null] = None
            return objects
        cells = series.to_numpy(dtype=object)
        try:
            if path:
                cells = _objects(
                    [member(None if is_missing(c) else c, path, key[1]) for c in cells]
                )
            out = [None if is_missing(c) else normalise(c, kind) for c in cells]
        except LookupError as exc:
            raise self.fail(str(exc)) from None
        except TypeError as exc:
            bad = next(c for c in cells if not is_missing(c) and _refused(c, kind))
            raise self.fail(
                f"{where!r} should be {exc}, found {kind_name(bad)} {bad!r:.40}"
            ) from None
        if kind is ExprType.NUMBER:
            return np.array([np.nan if v is None else v for v in out], dtype=np.float64)
        if kind is ExprType.BOOL:
            true = np.array([v is True for v in out], dtype=np.bool_)
            false = np.array([v is False for v in out], dtype=np.bool_)
            return true, false
        return _objects(out)

    # ------------------------------------------------------------------ nodes

    def floats(self, node: Node) -> Floats:
        v = self.visit(node)
        assert isinstance(v, np.ndarray)
        return v  # type: ignore[return-value]

    def truth(self, node: Node) -> Truth:
        v = self.visit(node)
        assert isinstance(v, tuple)
        return v

    def kind(self, node: Node) -> ExprType:
        """The static type of ``node`` (the tree is checked and typed)."""
        if isinstance(node, Literal):
            v = node.value
            if v is None:
                return ExprType.NULL
            if isinstance(v, bool):
                return ExprType.BOOL
            return ExprType.NUMBER if isinstance(v, float) else ExprType.STRING
        if isinstance(node, Ref):
            return self.refs[node.namespace, node.name, node.path]
        if isinstance(node, Unary | Binary | Call):
            return ExprType.NUMBER
        return ExprType.BOOL

    def visit(self, node: Node) -> Vector:
        n = self.n
        if isinstance(node, Literal):
            v = node.value
            if isinstance(v, bool):
                return np.full(n, v), np.full(n, not v)
            if isinstance(v, float):
                return np.full(n, v, dtype=np.float64)
            objects = np.empty(n, dtype=object)
            objects[:] = v
            return objects
        if isinstance(node, Ref):
            return self.load((node.namespace, node.name, node.path))
        if isinstance(node, Unary):
            return -self.floats(node.operand)
        if isinstance(node, Not):
            true, false = self.truth(node.operand)
            return false, true
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Logic):
            true, false = self.truth(node.operands[0])
            for operand in node.operands[1:]:
                t, f = self.truth(operand)
                if node.op == "and":
                    true, false = true & t, false | f
                else:
                    true, false = true | t, false & f
            return true, false
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, In):
            return self.member_of(node)
        if isinstance(node, IsNull):
            null = self.nulls(node.operand)
            return (~null, null) if node.negated else (null, ~null)
        return self.call(node)

    def nulls(self, node: Node) -> Masks:
        v = self.visit(node)
        if isinstance(v, tuple):
            return ~(v[0] | v[1])
        if v.dtype == np.float64:
            return np.isnan(v)
        return _nulls(v)

    def binary(self, node: Binary) -> Floats:
        a, b = self.floats(node.left), self.floats(node.right)
        with np.errstate(all="ignore"):
            if node.op == "+":
                r = a + b
            elif node.op == "-":
                r = a - b
            elif node.op == "*":
                r = a * b
            elif node.op == "/":
                r = a / b
            else:
                r = np.remainder(a, b)
        if node.op in ("/", "%"):
            r[b == 0.0] = np.nan  # x / 0 and x % 0 are null
        r[~np.isfinite(r)] = np.nan
        return r

    def compare(self, node: Compare) -> Truth:
        kind = self.kind(node.left)
        op = node.op
        if kind is ExprType.BOOL:
            (at, af), (bt, bf) = self.truth(node.left), self.truth(node.right)
            known = (at | af) & (bt | bf)
            equal = at == bt
            result = equal if op == "==" else ~equal
            return known & result, known & ~result
        a, b = self.visit(node.left), self.visit(node.right)
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        if kind is ExprType.NUMBER:
            known = ~(np.isnan(a) | np.isnan(b))
            aa, bb = a, b
        else:
            known = ~(_nulls(a) | _nulls(b))
            aa, bb = np.where(known, a, ""), np.where(known, b, "")
        if op == "==":
            r = aa == bb
        elif op == "!=":
            r = aa != bb
        elif op == "<":
            r = aa < bb
        elif op == "<=":
            r = aa <= bb
        elif op == ">":
            r = aa > bb
        else:
            r = aa >= bb
        r = np.asarray(r, dtype=np.bool_)
        return known & r, known & ~r

    def member_of(self, node: In) -> Truth:
        items = [item.value for item in node.items]
        if self.kind(node.operand) is ExprType.BOOL:
            t, f = self.truth(node.operand)
            hit = (t & (True in items)) | (f & (False in items))
            known = t | f
        else:
            v = self.visit(node.operand)
            assert isinstance(v, np.ndarray)
            if v.dtype == np.float64:
                known = ~np.isnan(v)
                hit = np.isin(v, np.array(items, dtype=np.float64)) & known
            else:
                known = ~_nulls(v)
                members = frozenset(items)
                hit = np.array([c in members for c in v], dtype=np.bool_) & known
        if node.negated:
            return known & ~hit, hit
        return hit, known & ~hit

    def call(self, node: Call) -> Floats:
        if node.name == "abs":
            return np.abs(self.floats(node.args[0]))
        if node.name == "round":
            x = self.floats(node.args[0])
            if len(node.args) == 1:
                return np.round(x)
            digits = int(node.args[1].value)  # type: ignore[union-attr,arg-type]
            return np.array(
                [v if math.isnan(v) else round(v, digits) for v in x.tolist()], dtype=np.float64
            )
        args = [self.floats(a) for a in node.args]
        combine = np.minimum if node.name == "min" else np.maximum
        r = args[0].copy()
        for a in args[1:]:
            r = combine(r, a)  # NaN (null) propagates
        return r


def _objects(values: list[Any]) -> Objects:
    """A 1-d object array of ``values`` (lists stay cells: numpy would make a 2-d array)."""
    objects = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        objects[i] = value
    return objects


def _only_strings(series: pd.Series[Any]) -> bool:
    """Whether every cell of ``series`` is a ``str`` or null (checked in C by pandas)."""
    return bool(pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"))


def _nulls(values: Floats | Objects) -> Masks:
    """The null mask of an array (NaN in a float array, ``None`` in an object array)."""
    return pd.isna(values)


def _refused(value: object, kind: ExprType) -> bool:
    try:
        normalise(value, kind)
    except TypeError:
        return True
    return False


def evaluate_vector(
    tree: Node,
    result: ExprType,
    refs: Mapping[RefKey, ExprType],
    frame: pd.DataFrame,
    *,
    boolean: bool,
    text: str,
    rule: str | None,
) -> pd.Series[Any]:
    """Evaluate a checked, fully typed tree over ``frame`` (see the module docstring): a bool
    Series for a condition (unknown is false), else float64 (NaN for null) for a number,
    object (``None`` for null) for a string or a bool."""
    out = _Vectoriser(frame, len(frame), refs, text, rule).visit(tree)
    index = frame.index
    if isinstance(out, tuple):
        true, false = out
        if boolean:
            return pd.Series(true, index=index, dtype=bool)
        cells = [True if t else False if f else None for t, f in zip(true, false, strict=True)]
        return pd.Series(cells, index=index, dtype=object)
    if result is ExprType.NUMBER:
        return pd.Series(out, index=index, dtype=np.float64)
    return pd.Series(out, index=index, dtype=object)


def evaluate_arrays(
    tree: Node,
    result: ExprType,
    refs: Mapping[RefKey, ExprType],
    columns: Mapping[str, npt.NDArray[Any]],
    n: int,
    *,
    boolean: bool,
    text: str,
    rule: str | None,
) -> npt.NDArray[Any]:
    """:func:`evaluate_vector` over ``columns`` (label -> numpy array of ``n`` cells: float64
    with NaN for null, or objects with None), giving the Series' values as an array."""
    out = _Vectoriser(columns, n, refs, text, rule).visit(tree)
    if isinstance(out, tuple):
        true, false = out
        if boolean:
            return true
        return _objects(
            [True if t else False if f else None for t, f in zip(true, false, strict=True)]
        )
    if result is ExprType.NUMBER:
        return out.astype(np.float64, copy=False)
    return out
