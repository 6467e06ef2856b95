"""Expression types, name resolution and the type check.

A thing model's data types collapse to a few expression types (:class:`ExprType`): INT, FLOAT,
DOUBLE, TIMESTAMP and INT enums are NUMBER; STRING, DATE, FILE and STRING enums are STRING;
BOOL is BOOL; STRUCT keeps its members' types (reached with ``${point/member}``); ARRAY is
ARRAY. Without types every reference is ANY and the checks move to run time (the evaluator's
``EvaluationError``).

:func:`check` walks the tree once: it resolves every ``${name}`` to the point or the attribute
of that name (refusing a name that is both, or neither), gives each node its type and refuses
what cannot work on any value: arithmetic on strings or bools, a string compared with a number,
ordering bools, logic on numbers, a comparison with the literal ``null``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

from ..errors import ExpressionError, InvalidArgument
from ..model import DataSpec, DataType
from ._nodes import Binary, Call, Compare, In, IsNull, Literal, Logic, Node, Not, Ref, Unary

__all__ = ["Checked", "ExprType", "Shape", "TypeSource", "check", "shape_of"]


class ExprType(Enum):
    """The type of an expression or of a value in it."""

    NUMBER = "number"
    """A number; every number is evaluated as an IEEE double (ints exact up to 2**53)."""
    STRING = "string"
    """A text."""
    BOOL = "bool"
    """``true`` or ``false``."""
    NULL = "null"
    """The literal ``null``."""
    STRUCT = "struct"
    """A struct point or attribute; only its members (``${name/member}``) are values."""
    ARRAY = "array"
    """An array point or attribute; it can only be tested with ``is null``."""
    ANY = "any"
    """Not known when compiled (no types given): checked when evaluated."""


_ARTICLE = {
    ExprType.NUMBER: "a number",
    ExprType.STRING: "a string",
    ExprType.BOOL: "a bool",
    ExprType.NULL: "null",
    ExprType.STRUCT: "a struct",
    ExprType.ARRAY: "an array",
    ExprType.ANY: "a value",
}


@dataclass(frozen=True, slots=True)
class Shape:
    """An expression type plus, for a STRUCT, its members' shapes (``None``: members unknown)."""

    kind: ExprType
    members: Mapping[str, Shape] | None = None


_ANY = Shape(ExprType.ANY)
_SIMPLE = {
    DataType.INT: ExprType.NUMBER,
    DataType.FLOAT: ExprType.NUMBER,
    DataType.DOUBLE: ExprType.NUMBER,
    DataType.TIMESTAMP: ExprType.NUMBER,
    DataType.STRING: ExprType.STRING,
    DataType.DATE: ExprType.STRING,
    DataType.FILE: ExprType.STRING,
    DataType.BOOL: ExprType.BOOL,
    DataType.ARRAY: ExprType.ARRAY,
}

TypeSource = DataSpec | DataType | ExprType | str | Any
"""What a types mapping may hold per name: a :class:`~enos_lab.model.DataSpec`, a model element
with a ``spec`` (:class:`~enos_lab.model.Measurepoint`, ``Attribute``, ``Param``), a
:class:`~enos_lab.model.DataType`, an :class:`ExprType`, or the name of either (``"double"``,
``"number"``)."""


def shape_of(source: TypeSource, what: str = "type") -> Shape:
    """The expression shape of a model data type (see :data:`TypeSource`)."""
    spec = getattr(source, "spec", None)
    if isinstance(spec, DataSpec):
        source = spec
    if isinstance(source, DataSpec):
        t = source.data_type
        if t is DataType.ENUM:
            return Shape(ExprType.NUMBER if source.enum_type is DataType.INT else ExprType.STRING)
        if t is DataType.STRUCT:
            members = {m.identifier: shape_of(m.spec) for m in source.members}
            return Shape(ExprType.STRUCT, MappingProxyType(members))
        return Shape(_SIMPLE[t])
    if isinstance(source, DataType):
        if source is DataType.ENUM:
            return _ANY
        if source is DataType.STRUCT:
            return Shape(ExprType.STRUCT)
        return Shape(_SIMPLE[source])
    if isinstance(source, ExprType):
        return Shape(source)
    if isinstance(source, str):
        for enum in (ExprType, DataType):
            for member in enum:
                if member.value.lower() == source.lower():
                    return shape_of(member)
    raise InvalidArgument(
        f"{what}: expected a DataSpec, a model element, a DataType or an ExprType, found {source!r}"
    )


@dataclass(frozen=True, slots=True)
class Checked:
    """What the type check found: the tree with resolved references, the result type, the
    shape of each reference (keyed by ``(namespace, name, path)``), the names referenced."""

    tree: Node
    result: ExprType
    refs: Mapping[tuple[str | None, str, tuple[str, ...]], ExprType]
    points: frozenset[str]
    attributes: frozenset[str]


class _Checker:
    def __init__(
        self,
        text: str,
        rule: str | None,
        points: Mapping[str, Shape] | None,
        attributes: Mapping[str, Shape] | None,
    ) -> None:
        self.text = text
        self.rule = rule
        self.typed = points is not None or attributes is not None
        self.points = points or {}
        self.attributes = attributes or {}
        self.refs: dict[tuple[str | None, str, tuple[str, ...]], ExprType] = {}

    def fail(self, reason: str, position: int) -> ExpressionError:
        return ExpressionError(reason, self.text, position, self.rule)

    def ref(self, node: Ref) -> tuple[Node, ExprType]:
        namespace = node.namespace
        shape: Shape | None
        if not self.typed:
            shape = _ANY
        elif namespace == "point":
            shape = self.points.get(node.name)
            if shape is None:
                raise self.fail(f"unknown measurepoint {node.name!r}", node.position)
        elif namespace == "attr":
            shape = self.attributes.get(node.name)
            if shape is None:
                raise self.fail(f"unknown attribute {node.name!r}", node.position)
        else:
            point, attr = self.points.get(node.name), self.attributes.get(node.name)
            if point is not None and attr is not None:
                raise self.fail(
                    f"{node.name!r} is both a measurepoint and an attribute: write "
                    f"${{point:{node.name}}} or ${{attr:{node.name}}}",
                    node.position,
                )
            if point is None and attr is None:
                raise self.fail(f"unknown measurepoint or attribute {node.name!r}", node.position)
            namespace = "point" if point is not None else "attr"
            shape = point if point is not None else attr
        assert shape is not None
        offset = node.position + len(node.name) + 1
        for member in node.path:
            if shape.kind is ExprType.ANY:
                break
            if shape.kind is not ExprType.STRUCT:
                raise self.fail(
                    f"{node.key!r}: {member!r} is a member of {_ARTICLE[shape.kind]}, "
                    "not of a struct",
                    offset,
                )
            if shape.members is not None:
                found = shape.members.get(member)
                if found is None:
                    known = ", ".join(sorted(shape.members))
                    raise self.fail(
                        f"unknown member {member!r} of struct {node.name!r} (members: {known})",
                        offset,
                    )
                shape = found
            else:
                shape = _ANY
            offset += len(member) + 1
        resolved = dataclasses.replace(node, namespace=namespace)
        self.refs[namespace, node.name, node.path] = shape.kind
        return resolved, shape.kind

    def value(self, node: Node, what: str) -> tuple[Node, ExprType]:
        """Check ``node`` where a plain value is needed (not a whole struct or array)."""
        tree, t = self.visit(node)
        if t in (ExprType.STRUCT, ExprType.ARRAY):
            hint = " name a member: ${name/member}" if t is ExprType.STRUCT else ""
            raise self.fail(
                f"{what} cannot use {_ARTICLE[t]} (test it with 'is null');{hint}", node.position
            )
        return tree, t

    def expect(self, node: Node, kinds: tuple[ExprType, ...], what: str) -> Node:
        tree, t = self.value(node, what)
        if t not in kinds and t is not ExprType.ANY:
            wanted = " or ".join(_ARTICLE[k] for k in kinds)
            raise self.fail(f"{what} needs {wanted}, found {_ARTICLE[t]}", node.position)
        return tree

    def visit(self, node: Node) -> tuple[Node, ExprType]:
        if isinstance(node, Literal):
            v = node.value
            if v is None:
                return node, ExprType.NULL
            if isinstance(v, bool):
                return node, ExprType.BOOL
            return node, ExprType.NUMBER if isinstance(v, float) else ExprType.STRING
        if isinstance(node, Ref):
            return self.ref(node)
        if isinstance(node, Unary):
            operand = self.expect(node.operand, (ExprType.NUMBER,), "'-'")
            return dataclasses.replace(node, operand=operand), ExprType.NUMBER
        if isinstance(node, Not):
            operand = self.expect(node.operand, (ExprType.BOOL,), "'not'")
            return dataclasses.replace(node, operand=operand), ExprType.BOOL
        if isinstance(node, Binary):
            what = f"arithmetic {node.op!r}"
            left = self.expect(node.left, (ExprType.NUMBER,), what)
            right = self.expect(node.right, (ExprType.NUMBER,), what)
            return dataclasses.replace(node, left=left, right=right), ExprType.NUMBER
        if isinstance(node, Logic):
            operands = tuple(
                self.expect(o, (ExprType.BOOL,), f"{node.op!r}") for o in node.operands
            )
            return dataclasses.replace(node, operands=operands), ExprType.BOOL
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, In):
            what = "'not in'" if node.negated else "'in'"
            operand, t = self.value(node.operand, what)
            for item in node.items:
                _, item_t = self.visit(item)
                if t is ExprType.ANY:
                    t = item_t  # the first item fixes the list's type
                elif item_t is not t:
                    raise self.fail(
                        f"{what} compares {_ARTICLE[t]} with {_ARTICLE[item_t]}", item.position
                    )
            return dataclasses.replace(node, operand=operand), ExprType.BOOL
        if isinstance(node, IsNull):
            operand, _ = self.visit(node.operand)
            return dataclasses.replace(node, operand=operand), ExprType.BOOL
        return self.call(node)

    def compare(self, node: Compare) -> tuple[Node, ExprType]:
        what = f"comparison {node.op!r}"
        left, lt = self.value(node.left, what)
        right, rt = self.value(node.right, what)
        if ExprType.NULL in (lt, rt):
            raise self.fail(
                "a comparison with null is always false: write 'x is null' or 'x is not null'",
                node.position,
            )
        if lt is not rt and ExprType.ANY not in (lt, rt):
            raise self.fail(f"{what} compares {_ARTICLE[lt]} with {_ARTICLE[rt]}", node.position)
        if node.op not in ("==", "!=") and ExprType.BOOL in (lt, rt):
            raise self.fail(f"{what} cannot order bools (use == or !=)", node.position)
        return dataclasses.replace(node, left=left, right=right), ExprType.BOOL

    def call(self, node: Call) -> tuple[Node, ExprType]:
        name, args = node.name, node.args
        if name == "abs" and len(args) != 1:
            raise self.fail(f"abs() takes 1 argument, found {len(args)}", node.position)
        if name in ("min", "max") and not args:
            raise self.fail(f"{name}() takes at least 1 argument, found 0", node.position)
        if name == "round":
            if len(args) not in (1, 2):
                raise self.fail(f"round() takes 1 or 2 arguments, found {len(args)}", node.position)
            if len(args) == 2:
                digits = args[1]
                ok = (
                    isinstance(digits, Literal)
                    and isinstance(digits.value, float)
                    and digits.value.is_integer()
                    and 0 <= digits.value <= 15
                )
                if not ok:
                    raise self.fail(
                        "round()'s digits must be an integer 0..15 written as a number",
                        digits.position,
                    )
                first = self.expect(args[0], (ExprType.NUMBER,), "round()")
                return dataclasses.replace(node, args=(first, digits)), ExprType.NUMBER
        checked = tuple(self.expect(a, (ExprType.NUMBER,), f"{name}()") for a in args)
        return dataclasses.replace(node, args=checked), ExprType.NUMBER


def check(
    tree: Node,
    text: str,
    *,
    points: Mapping[str, Shape] | None,
    attributes: Mapping[str, Shape] | None,
    rule: str | None = None,
    boolean: bool = True,
) -> Checked:
    """Resolve and type-check ``tree`` (parsed from ``text``). With ``points`` and
    ``attributes`` both ``None`` every reference is ANY. ``boolean``: the result must be a
    bool (a condition). Raises :class:`~enos_lab.errors.ExpressionError`."""
    checker = _Checker(text, rule, points, attributes)
    if boolean:
        resolved = checker.expect(tree, (ExprType.BOOL,), "a condition")
        result = ExprType.BOOL
    else:
        resolved, result = checker.value(tree, "an expression")
    refs = checker.refs
    return Checked(
        resolved,
        result,
        MappingProxyType(refs),
        frozenset(name for ns, name, _ in refs if ns != "attr"),
        frozenset(name for ns, name, _ in refs if ns == "attr"),
    )
