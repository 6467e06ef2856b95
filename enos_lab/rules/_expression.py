"""``compile_expression`` and :class:`Expression`: parse, check, then evaluate many times."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy.typing as npt
import pandas as pd

from ..errors import InvalidArgument
from ._evaluate import Evaluator, RefKey, compile_tree, load
from ._nodes import Node
from ._parser import parse
from ._threshold import Threshold, threshold_of
from ._types import ExprType, Shape, TypeSource, check, shape_of
from ._vector import evaluate_arrays, evaluate_vector, is_missing

if TYPE_CHECKING:
    from ..model import ThingModel

__all__ = ["Expression", "compile_expression"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Expression:
    """A compiled expression: immutable, safe to share between threads.

    Build one with :func:`compile_expression`. ``text`` is the source, ``name`` the rule's name
    (or ``None``), ``points`` / ``attributes`` the names it references (without types, an
    unqualified ``${name}`` is listed in ``points`` and read from the attributes when the points
    lack it), ``result_type`` its :class:`ExprType`, ``boolean`` whether it is a condition,
    ``typed`` whether it was checked against types.
    """

    __slots__ = (
        "_fn",
        "_refs",
        "_tree",
        "attributes",
        "boolean",
        "name",
        "points",
        "result_type",
        "text",
        "typed",
    )

    text: str
    name: str | None
    points: frozenset[str]
    attributes: frozenset[str]
    result_type: ExprType
    boolean: bool
    typed: bool
    _tree: Node
    _refs: Mapping[RefKey, ExprType]
    _fn: Evaluator

    def __init__(
        self,
        text: str,
        *,
        name: str | None,
        boolean: bool,
        typed: bool,
        points: Mapping[str, Shape] | None,
        attributes: Mapping[str, Shape] | None,
    ) -> None:
        tree = parse(text, name)
        checked = check(
            tree, text, points=points, attributes=attributes, rule=name, boolean=boolean
        )
        fields = {
            "text": text,
            "name": name,
            "boolean": boolean,
            "typed": typed,
            "points": checked.points,
            "attributes": checked.attributes,
            "result_type": checked.result,
            "_tree": checked.tree,
            "_refs": checked.refs,
            "_fn": compile_tree(checked.tree, text, name, boolean=boolean),
        }
        for key, value in fields.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"Expression is immutable (cannot set {key!r})")

    @property
    def threshold(self) -> Threshold | None:
        """The condition as a :class:`~enos_lab.rules.Threshold` (one comparison of a
        number point with a number or a number attribute), or None when it is anything else:
        engines evaluate thresholds over whole batches with numpy."""
        if not self.boolean:
            return None
        return threshold_of(self._tree, self._refs)

    def __repr__(self) -> str:
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"Expression({self.text!r}{where}, result_type={self.result_type.value})"

    def evaluate(self, points: Mapping[str, Any], attributes: Mapping[str, Any] = _EMPTY) -> Any:
        """The value of the expression for one device's ``points`` (point id -> value) and
        ``attributes`` (attribute id -> value).

        A condition gives ``True`` or ``False`` (unknown, from nulls, is ``False``); a value
        expression gives a ``float``, ``str``, ``bool`` or ``None``. Raises
        :class:`~enos_lab.errors.MissingValue` when a referenced point or attribute is absent
        from the mappings (``None`` is present: null) and
        :class:`~enos_lab.errors.EvaluationError` for a value of the wrong kind.
        """
        result = self._fn(load(self._refs, points, attributes, self.text, self.name))
        if self.boolean:
            return result is True
        return result

    def evaluate_frame(self, frame: pd.DataFrame) -> pd.Series[Any]:
        """Evaluate over every row of ``frame`` at once; the same values as :meth:`evaluate`
        row by row (NaN for a null number).

        ``frame`` has a column per referenced name, points and attributes alike (``name``, or
        ``point:name`` / ``attr:name``; ``name/member`` or a column of struct dicts for a
        member); nulls are ``None``, NaN or ``pd.NA``. Returns a bool Series for a condition,
        float64 for a number, object for a string or a bool, on ``frame``'s index. Raises
        :class:`~enos_lab.errors.MissingValue` for a missing column and
        :class:`~enos_lab.errors.EvaluationError` for a value of the wrong kind. References
        whose type was not known when compiling (no types given, a STRUCT without its members,
        an ENUM given as a bare ``DataType``) are evaluated row by row: correct, but slower.
        """
        if not isinstance(frame, pd.DataFrame):
            raise InvalidArgument(
                f"evaluate_frame: expected a pandas DataFrame, found {type(frame).__name__}"
            )
        if any(kind is ExprType.ANY for kind in self._refs.values()):
            return self._rows(frame)
        return evaluate_vector(
            self._tree,
            self.result_type,
            self._refs,
            frame,
            boolean=self.boolean,
            text=self.text,
            rule=self.name,
        )

    def evaluate_arrays(
        self, columns: Mapping[str, npt.NDArray[Any]], size: int
    ) -> npt.NDArray[Any]:
        """:meth:`evaluate_frame` over columns given as numpy arrays of ``size`` cells each
        (label -> float64 with NaN for null, or objects with None), without building a frame
        where the types are known: the values as an array (bool, float64 or objects)."""
        if any(kind is ExprType.ANY for kind in self._refs.values()):
            frame = pd.DataFrame(dict(columns), copy=False)
            return self._rows(frame).to_numpy()
        return evaluate_arrays(
            self._tree,
            self.result_type,
            self._refs,
            columns,
            size,
            boolean=self.boolean,
            text=self.text,
            rule=self.name,
        )

    def _rows(self, frame: pd.DataFrame) -> pd.Series[Any]:
        """Row-by-row evaluation, for references whose type is not known beforehand."""
        points: dict[str, list[Any]] = {}
        attributes: dict[str, list[Any]] = {}
        for namespace, name, _ in self._refs:
            for label in (f"{namespace}:{name}", name):
                if label in frame.columns:
                    cells = [None if is_missing(c) else c for c in frame[label].tolist()]
                    (attributes if namespace == "attr" else points)[name] = cells
                    break
        values = [
            self.evaluate(
                {k: v[i] for k, v in points.items()}, {k: v[i] for k, v in attributes.items()}
            )
            for i in range(len(frame))
        ]
        if self.boolean:
            return pd.Series(values, index=frame.index, dtype=bool)
        if self.result_type is ExprType.NUMBER:
            return pd.Series(
                [float("nan") if v is None else v for v in values],
                index=frame.index,
                dtype="float64",
            )
        return pd.Series(values, index=frame.index, dtype=object)


def _shapes(types: Mapping[str, TypeSource] | None, what: str) -> dict[str, Shape] | None:
    if types is None:
        return None
    if not isinstance(types, Mapping):
        raise InvalidArgument(f"{what}: expected a mapping of name -> type, found {types!r}")
    return {name: shape_of(source, f"{what} {name!r}") for name, source in types.items()}


def compile_expression(
    text: str,
    *,
    points: Mapping[str, TypeSource] | None = None,
    attributes: Mapping[str, TypeSource] | None = None,
    model: ThingModel | None = None,
    name: str | None = None,
    boolean: bool = True,
) -> Expression:
    """Parse and check an expression; see :mod:`enos_lab.rules` for the language.

    ``points`` / ``attributes`` map names to types (a :class:`~enos_lab.model.DataSpec`, a
    model element such as ``model.measurepoints``' values, a ``DataType``, an
    :class:`ExprType` or its name); ``model`` takes both from a
    :class:`~enos_lab.model.ThingModel`. With any of them given, every reference must resolve
    and types must fit; with none, references are checked when evaluated. ``name`` is the rule's
    name, quoted in errors. ``boolean``: the expression is a condition and must give a bool
    (``False``: a value expression of any type).

    Raises :class:`~enos_lab.errors.ExpressionError` with the column of the fault.
    """
    if model is not None:
        points = {**model.measurepoints, **(points or {})}
        attributes = {**model.attributes, **(attributes or {})}
    point_shapes = _shapes(points, "points")
    attribute_shapes = _shapes(attributes, "attributes")
    typed = point_shapes is not None or attribute_shapes is not None
    return Expression(
        text,
        name=name,
        boolean=boolean,
        typed=typed,
        points=point_shapes,
        attributes=attribute_shapes,
    )
