"""Scalar evaluation: one device's values -> the expression's value.

Theory of operation. The checked tree is compiled once into nested closures (one per node), so
evaluating walks no tree and looks nothing up by name. Each evaluation first *loads* every
reference (:func:`load`): it fetches the value from the points or attributes mapping (absent:
:class:`~enos_lab.errors.MissingValue`), walks struct members (an absent member is null),
and normalises it: every number becomes a ``float`` (NaN and infinities become null), and a
value of the wrong kind for its declared type raises
:class:`~enos_lab.errors.EvaluationError`. Loading every reference before evaluating makes the
outcome independent of short-circuits, as in the vectorised path, which loads whole columns.

Values inside are ``float``, ``str``, ``bool`` or ``None`` (null); structs and arrays are kept
as given (only ``is null`` looks at them). Logic is three-valued (SQL/Kleene): a comparison
with null is unknown (``None``), ``not`` unknown is unknown, ``false and x`` is false,
``true or x`` is true; a condition whose value is unknown is false.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from ..errors import EvaluationError, MissingValue
from ._nodes import Binary, Call, Compare, In, IsNull, Literal, Logic, Node, Not, Ref, Unary
from ._types import ExprType

__all__ = ["Env", "Evaluator", "RefKey", "compile_tree", "kind_name", "load", "normalise"]

RefKey = tuple[str | None, str, tuple[str, ...]]
"""A reference as ``(namespace, name, member path)``."""

Env = dict[RefKey, Any]
Evaluator = Callable[[Env], Any]

_KIND_NAMES = {
    float: "a number",
    str: "a string",
    bool: "a bool",
    type(None): "null",
    int: "an int",
    dict: "a dict",
    list: "a list",
}


def kind_name(value: object) -> str:
    """``"a number"``, ``"a string"``, ``"a bool"``, ``"null"`` or the type's name."""
    return _KIND_NAMES.get(type(value), f"a {type(value).__name__} value")


_NUMBERS = frozenset((ExprType.NUMBER, ExprType.ANY))
_TEXTS = frozenset((ExprType.STRING, ExprType.ANY, ExprType.STRUCT, ExprType.ARRAY))
_BOOLS = frozenset((ExprType.BOOL, ExprType.ANY))


def normalise(value: object, kind: ExprType) -> Any:
    """One value as the evaluator holds it, for a reference of type ``kind``; raises
    ``TypeError`` (with the wanted kind) for a value that cannot be one."""
    plain = type(value)  # the usual JSON values first: no ABC checks (the rule engine's path)
    if plain is float and kind in _NUMBERS:
        return value if math.isfinite(value) else None  # type: ignore[arg-type]
    if plain is int and kind in _NUMBERS:
        number = float(value)  # type: ignore[arg-type]
        return number if math.isfinite(number) else None
    if plain is str and kind in _TEXTS:
        return value
    if plain is bool and kind in _BOOLS:
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        if kind in (ExprType.BOOL, ExprType.ANY):
            return bool(value)
        if kind in (ExprType.STRUCT, ExprType.ARRAY):
            return value
        raise TypeError(kind.value)
    if isinstance(value, Real):
        if kind in (ExprType.STRUCT, ExprType.ARRAY):
            return value
        number = float(value)
        if kind in (ExprType.NUMBER, ExprType.ANY):
            return number if math.isfinite(number) else None
        if math.isnan(number):
            return None  # NaN is null for every type (pandas writes missing values as NaN)
        raise TypeError(kind.value)
    if isinstance(value, str):
        if kind in (ExprType.STRING, ExprType.ANY, ExprType.STRUCT, ExprType.ARRAY):
            return value
        raise TypeError(kind.value)
    if kind in (ExprType.STRUCT, ExprType.ARRAY, ExprType.ANY):
        return value
    raise TypeError(kind.value)


def member(value: Any, path: tuple[str, ...], name: str) -> Any:
    """Walk ``path`` into ``value`` (a struct as a mapping); null or an absent member gives
    ``None``; raises ``LookupError`` naming what is not a struct."""
    for i, part in enumerate(path):
        if value is None:
            return None
        if not isinstance(value, Mapping):
            where = "/".join((name, *path[:i]))
            raise LookupError(f"{where!r} is {kind_name(value)}, not a struct (member {part!r})")
        value = value.get(part)
    return value


def load(
    refs: Mapping[RefKey, ExprType],
    points: Mapping[str, Any],
    attributes: Mapping[str, Any],
    text: str,
    rule: str | None,
) -> Env:
    """Fetch and normalise every reference (see the module docstring)."""
    env: Env = {}
    for key, kind in refs.items():
        namespace, name, path = key
        if namespace == "attr":
            if name not in attributes:
                raise MissingValue(name, namespace, text, rule)
            value = attributes[name]
        elif name in points:
            value = points[name]
        elif namespace is None and name in attributes:
            value = attributes[name]
        else:
            raise MissingValue(name, namespace, text, rule)
        try:
            value = member(value, path, name) if path else value
            env[key] = normalise(value, kind)
        except LookupError as exc:
            raise EvaluationError(str(exc), text, rule) from None
        except TypeError as exc:
            where = "/".join((name, *path))
            raise EvaluationError(
                f"{where!r} should be {exc}, found {kind_name(value)} {value!r:.40}", text, rule
            ) from None
    return env


class _Compiler:
    def __init__(self, text: str, rule: str | None) -> None:
        self.text = text
        self.rule = rule

    def fail(self, node: Node, what: str, found: object) -> EvaluationError:
        return EvaluationError(
            f"{what} at column {node.position}, found {kind_name(found)} {found!r:.40}",
            self.text,
            self.rule,
        )

    def number(self, node: Node) -> Evaluator:
        """Compile ``node`` and check, at run time, that it gives a number or null."""
        fn = self.compile(node)

        def run(env: Env) -> Any:
            v = fn(env)
            if v is None or type(v) is float:
                return v
            raise self.fail(node, "expected a number", v)

        return run

    def truth(self, node: Node) -> Evaluator:
        fn = self.compile(node)

        def run(env: Env) -> Any:
            v = fn(env)
            if v is None or type(v) is bool:
                return v
            raise self.fail(node, "expected a bool", v)

        return run

    def compile(self, node: Node) -> Evaluator:
        if isinstance(node, Literal):
            constant = node.value
            return lambda env: constant
        if isinstance(node, Ref):
            key = (node.namespace, node.name, node.path)
            return lambda env: env[key]
        if isinstance(node, Unary):
            operand = self.number(node.operand)

            def negate(env: Env) -> Any:
                v = operand(env)
                return None if v is None else -v

            return negate
        if isinstance(node, Not):
            inner = self.truth(node.operand)

            def invert(env: Env) -> Any:
                v = inner(env)
                return None if v is None else not v

            return invert
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Logic):
            return self.logic(node)
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, In):
            return self.member_of(node)
        if isinstance(node, IsNull):
            operand_fn = self.compile(node.operand)
            negated = node.negated
            return lambda env: (operand_fn(env) is None) is not negated
        return self.call(node)

    def binary(self, node: Binary) -> Evaluator:
        left, right, op = self.number(node.left), self.number(node.right), node.op

        def run(env: Env) -> Any:
            a, b = left(env), right(env)
            if a is None or b is None:
                return None
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif b == 0.0:
                return None  # x / 0 and x % 0 are null (as in SQL engines such as DuckDB)
            elif op == "/":
                r = a / b
            else:
                r = a % b
            return r if math.isfinite(r) else None

        return run

    def logic(self, node: Logic) -> Evaluator:
        operands = tuple(self.truth(o) for o in node.operands)
        # and: false wins, else unknown wins, else true; or: the same with true and false swapped
        decisive = node.op == "or"

        def run(env: Env) -> Any:
            unknown = False
            for fn in operands:
                v = fn(env)
                if v is decisive:
                    return decisive
                if v is None:
                    unknown = True
            return None if unknown else not decisive

        return run

    def compare(self, node: Compare) -> Evaluator:
        left, right, op = self.compile(node.left), self.compile(node.right), node.op
        ordering = op not in ("==", "!=")

        def run(env: Env) -> Any:
            a, b = left(env), right(env)
            if a is None or b is None:
                return None
            ta = type(a)
            if ta is not type(b) or ta not in (float, str, bool) or (ordering and ta is bool):
                raise EvaluationError(
                    f"comparison {op!r} at column {node.position} compares {kind_name(a)} "
                    f"with {kind_name(b)}",
                    self.text,
                    self.rule,
                )
            if op == "==":
                return a == b
            if op == "!=":
                return a != b
            if op == "<":
                return a < b
            if op == "<=":
                return a <= b
            if op == ">":
                return a > b
            return a >= b

        return run

    def member_of(self, node: In) -> Evaluator:
        operand = self.compile(node.operand)
        items = frozenset(item.value for item in node.items)
        kind = type(node.items[0].value) if node.items else None
        negated = node.negated

        def run(env: Env) -> Any:
            v = operand(env)
            if v is None:
                return None
            if kind is not None and type(v) is not kind:
                raise self.fail(node, f"'in' on a list of {kind_name(node.items[0].value)}s", v)
            return (v in items) is not negated

        return run

    def call(self, node: Call) -> Evaluator:
        name = node.name
        if name == "round":
            x = self.number(node.args[0])
            digits = int(node.args[1].value) if len(node.args) == 2 else None  # type: ignore[union-attr,arg-type]

            def rounded(env: Env) -> Any:
                v = x(env)
                if v is None:
                    return None
                return float(round(v)) if digits is None else round(v, digits)

            return rounded
        if name == "abs":
            x = self.number(node.args[0])
            return lambda env: None if (v := x(env)) is None else abs(v)
        args = tuple(self.number(a) for a in node.args)
        smaller = name == "min"

        def extreme(env: Env) -> Any:
            best = None
            for i, fn in enumerate(args):
                v = fn(env)
                if v is None:
                    return None  # null if any argument is null
                if i == 0 or (v < best if smaller else v > best):
                    best = v
            return best

        return extreme


def compile_tree(tree: Node, text: str, rule: str | None, *, boolean: bool) -> Evaluator:
    """Compile a checked tree into a function of the loaded references; ``boolean``: a
    condition, whose value is checked to be a bool or null even where its type was unknown."""
    compiler = _Compiler(text, rule)
    return compiler.truth(tree) if boolean else compiler.compile(tree)
