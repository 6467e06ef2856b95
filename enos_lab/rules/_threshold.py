"""Conditions that are one comparison of a point with a number or an attribute.

Most alert conditions are thresholds: ``${temp} > 50``, ``${power} >= ${rated_power}``. An
engine that evaluates many of them over a batch of points does it fastest with one numpy
comparison per rule on the batch's values; :meth:`Expression.threshold
<enos_lab.rules.Expression.threshold>` says whether a condition has that shape, and
:meth:`Threshold.mask` evaluates it with the language's semantics (every number an IEEE
double, an infinity or NaN null, a comparison with null unknown and so false).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ._evaluate import RefKey
from ._nodes import Compare, Literal, Node, Ref, Unary
from ._types import ExprType

__all__ = ["Threshold", "threshold_of"]

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_UFUNC = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


@dataclass(frozen=True, slots=True)
class Threshold:
    """``${point} op value`` or ``${point} op ${attribute}``, the point on the left."""

    point: str
    """The measurepoint compared."""
    op: str
    """One of ``== != < <= > >=``."""
    value: float | None = None
    """The number it is compared with (None: an attribute)."""
    attribute: str | None = None
    """The attribute it is compared with (None: a number)."""

    UFUNCS: ClassVar[Mapping[str, Any]] = MappingProxyType(_UFUNC)
    """The numpy comparison of each operator."""

    def mask(
        self, values: npt.NDArray[np.float64], limits: npt.NDArray[np.float64] | None = None
    ) -> npt.NDArray[np.bool_]:
        """Where the condition holds, for ``values`` of the point (and, for an attribute
        threshold, ``limits``: the attribute per value); a null (NaN, an infinity) on either
        side gives False."""
        other: Any = self.value if limits is None else limits
        with np.errstate(invalid="ignore"):
            held = _UFUNC[self.op](values, other)
        known = np.isfinite(values)
        if limits is not None:
            known &= np.isfinite(limits)
        elif self.value is None or not np.isfinite(self.value):
            return np.zeros(len(values), dtype=np.bool_)
        return held & known  # type: ignore[no-any-return]


def _number_ref(node: Node, refs: dict[RefKey, ExprType] | Any, namespace: str) -> str | None:
    if (
        isinstance(node, Ref)
        and node.namespace == namespace
        and not node.path
        and refs.get((namespace, node.name, node.path)) is ExprType.NUMBER
    ):
        return node.name
    return None


def _number(node: Node) -> float | None:
    """The value of a number literal, negated or not (``-5`` parses as ``-(5)``)."""
    sign = 1.0
    while isinstance(node, Unary):
        node, sign = node.operand, -sign
    if isinstance(node, Literal) and type(node.value) is float:
        return sign * node.value
    return None


def threshold_of(tree: Node, refs: Any) -> Threshold | None:
    """The :class:`Threshold` a checked tree is, or None."""
    if not isinstance(tree, Compare):
        return None
    for left, right, op in (
        (tree.left, tree.right, tree.op),
        (tree.right, tree.left, _FLIP[tree.op]),
    ):
        point = _number_ref(left, refs, "point")
        if point is None:
            continue
        number = _number(right)
        if number is not None:
            return Threshold(point, op, value=number)
        attribute = _number_ref(right, refs, "attr")
        if attribute is not None:
            return Threshold(point, op, attribute=attribute)
    return None
