"""The expression syntax tree: immutable nodes, each with its 0-based column and its depth.

``depth`` is the height of the subtree (a literal is 1); the parser refuses a tree deeper than
:data:`~enos_lab.rules.MAX_DEPTH`, so the recursive passes over it (type check, evaluation,
vectorisation) stay far from Python's recursion limit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Binary",
    "Call",
    "Compare",
    "In",
    "IsNull",
    "Literal",
    "Logic",
    "Node",
    "Not",
    "Ref",
    "Unary",
]


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: a number (``float``), a string, ``True``/``False`` or ``None`` (null)."""

    value: float | str | bool | None
    position: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Ref:
    """``${namespace:name/member/...}``; ``namespace`` is ``"point"``, ``"attr"`` or ``None``
    (resolved by the type check when types are given)."""

    namespace: str | None
    name: str
    path: tuple[str, ...]
    position: int
    depth: int = 1

    @property
    def key(self) -> str:
        """The reference as written without its namespace: ``name/member/...``."""
        return "/".join((self.name, *self.path))


@dataclass(frozen=True, slots=True)
class Unary:
    """Arithmetic negation ``-x``."""

    operand: Node
    position: int
    depth: int


@dataclass(frozen=True, slots=True)
class Not:
    """Logical ``not x`` (also ``!x``)."""

    operand: Node
    position: int
    depth: int


@dataclass(frozen=True, slots=True)
class Binary:
    """Arithmetic ``left op right``, ``op`` one of ``+ - * / %``."""

    op: str
    left: Node
    right: Node
    position: int
    depth: int


@dataclass(frozen=True, slots=True)
class Compare:
    """Comparison ``left op right``, ``op`` one of ``== != < <= > >=``."""

    op: str
    left: Node
    right: Node
    position: int
    depth: int


@dataclass(frozen=True, slots=True)
class Logic:
    """``a and b and ...`` / ``a or b or ...`` (also ``&&`` / ``||``); ``op`` is the word.

    A chain of one operator is one node, so a long ``or`` chain is a shallow tree."""

    op: str
    operands: tuple[Node, ...]
    position: int
    depth: int


@dataclass(frozen=True, slots=True)
class In:
    """``operand in [items]`` or, ``negated``, ``operand not in [items]``; items are literals."""

    operand: Node
    items: tuple[Literal, ...]
    negated: bool
    position: int
    depth: int


@dataclass(frozen=True, slots=True)
class IsNull:
    """``operand is null`` / ``is_null(operand)``, or ``operand is not null`` (``negated``)."""

    operand: Node
    negated: bool
    position: int
    depth: int


@dataclass(frozen=True, slots=True)
class Call:
    """A call of a built-in function: ``abs``, ``min``, ``max`` or ``round``."""

    name: str
    args: tuple[Node, ...]
    position: int
    depth: int


Node = Literal | Ref | Unary | Not | Binary | Compare | Logic | In | IsNull | Call
"""Any node of the syntax tree."""
