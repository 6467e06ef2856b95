"""The messages of one batch, evaluated together for the rule engine's rules.

Theory of operation
-------------------
Evaluating a condition or a transform message by message costs ~1.5-2 us each in Python; a
batch of posts of one product meets the same rules, so the rule engine evaluates each rule
once over the whole batch instead. :class:`MessageFrame` holds the messages of one product in
one batch (each the point values of one device at one time) and gives, per rule,
an :class:`Outcome`: for each message whether the condition held, whether the vector path
could *decide* it, and the transform's values.

- The rule is compiled against the product's thing model (:func:`typed_rule`; cached by the
  engine), so that references have types and resolve to points or attributes as the model
  says. A rule that does not compile against it is evaluated message by message.
- A threshold condition (:attr:`~enos_lab.rules.Expression.threshold`) is one numpy
  comparison (:meth:`~enos_lab.rules.Threshold.mask`); any other condition and every transform
  are evaluated over the columns of the batch's messages with
  :meth:`~enos_lab.rules.Expression.evaluate_arrays` (the vectorised evaluation of
  :meth:`~enos_lab.rules.Expression.evaluate_frame` without building a DataFrame: a column
  ``point:<id>`` per point - doubles where every value is a number, objects otherwise - and
  ``attr:<id>`` per attribute, per device from the engine's cached device data).
- After a batch is decided, the engine keeps rows and derives points per rule and point
  over all messages at once (``RuleEngine._route_whole``) when every rule decided every
  message (:attr:`Decided.all_decided`), and passes over a product's messages on the tap
  when no rule held (:attr:`Decided.none_held`) - or its rows without gathering messages at
  all when each tap rule reads only the one point it selects (:func:`none_can_hold`).
- A message is *undecided* - and the engine evaluates it alone, which counts the skip as it
  always does - when it lacks a point an expression reads (without types an unqualified name
  then falls back to the device's attributes), has a point named like an attribute the
  expression reads, belongs to a device that lacks such an attribute, or holds a value a
  threshold cannot compare (not a number or null). An expression that raises over the frame
  (a value of the wrong kind somewhere) leaves every message of the rule undecided.

The outcomes are the ones the message-by-message evaluation gives (the engine's property
tests compare them). Below :data:`BATCH_MIN` messages the engine evaluates message by
message: the setup of the columns costs about what evaluating that many one by one does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..model import ModelCatalog, ThingModel
from ._expression import Expression, compile_expression
from ._rule import Rule

__all__ = [
    "BATCH_MIN",
    "BatchDecider",
    "Decided",
    "MessageFrame",
    "Outcome",
    "TypedRule",
    "none_can_hold",
    "typed_rule",
]

BATCH_MIN = 16
"""Messages of one product in a batch from which the rule engine evaluates its rules over a
frame (fewer: message by message, which costs less for so few). [messages]"""

Bools = npt.NDArray[np.bool_]
_MISSING = object()


@dataclass(frozen=True, slots=True)
class TypedRule:
    """A rule's condition and transform compiled against one thing model."""

    condition: Expression | None
    transform: tuple[tuple[str, Expression], ...]


def typed_rule(rule: Rule, model: ThingModel | None) -> TypedRule | None:
    """``rule``'s expressions compiled against ``model``, or None when there is no model or
    they do not compile against it (the engine then evaluates the rule message by message)."""
    if model is None:
        return None
    try:
        condition = (
            None
            if rule.condition is None
            else compile_expression(rule.condition, model=model, name=rule.name)
        )
        transform = tuple(
            (derived_id, compile_expression(text, model=model, name=rule.name, boolean=False))
            for derived_id, text in rule.transform.items()
        )
    except Exception:  # a name the model lacks, a type that does not fit: one by one
        return None
    return TypedRule(condition, transform)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a rule does with each message of a :class:`MessageFrame`: ``held`` (the condition
    held and the transform could be computed), ``decided`` (False: evaluate that message
    alone), ``derived`` (per transform id, its value per message; None: a null, left out)."""

    held: Bools
    decided: Bools
    derived: tuple[tuple[str, list[Any]], ...]


class MessageFrame:
    """The messages of one product in one batch, in order: ``values`` (point id -> value, one
    mapping per message), ``devices`` (the device key of each) and ``attributes(device_key)``
    (the device's attributes, cached by the caller; may raise: the device is undecided)."""

    __slots__ = ("_attributes", "_columns", "_devices", "_present", "_values", "size")

    def __init__(
        self,
        values: list[dict[str, Any]],
        devices: list[str],
        attributes: Callable[[str], Mapping[str, Any]],
    ) -> None:
        self._values = values
        self._devices = devices
        self._attributes = attributes
        self.size = len(values)
        self._columns: dict[str, npt.NDArray[Any]] = {}  # frame column -> its cells
        self._present: dict[str, Bools] = {}  # frame column -> which messages have it

    def _add(self, label: str, cells: list[Any]) -> None:
        """Add a column: doubles when every value there is a number (an int or a float, not a
        bool; NaN for a null or a missing one), objects otherwise (None for those)."""
        present = np.fromiter((c is not _MISSING for c in cells), np.bool_, self.size)
        column: npt.NDArray[Any] | None = None
        if all(type(c) is float or type(c) is int or c is None or c is _MISSING for c in cells):
            try:
                column = np.fromiter(
                    (math.nan if c is None or c is _MISSING else c for c in cells),
                    np.float64,
                    self.size,
                )
            except OverflowError:  # an int beyond a double: objects
                column = None
        if column is None:
            column = np.empty(self.size, dtype=object)
            column[:] = [None if c is _MISSING else c for c in cells]
        self._columns[label] = column
        self._present[label] = present

    def _point(self, point_id: str) -> str:
        label = f"point:{point_id}"
        if label not in self._columns:
            self._add(label, [v.get(point_id, _MISSING) for v in self._values])
        return label

    def _attribute(self, name: str) -> str:
        label = f"attr:{name}"
        if label not in self._columns:
            per_device: dict[str, Any] = {}
            for device_key in dict.fromkeys(self._devices):
                try:
                    per_device[device_key] = self._attributes(device_key).get(name, _MISSING)
                except Exception:  # evaluated alone, which counts the skip
                    per_device[device_key] = _MISSING
            self._add(label, [per_device[d] for d in self._devices])
        return label

    def _usable(self, expression: Expression) -> Bools:
        """The messages ``expression`` can be evaluated on over the frame (columns added)."""
        usable = np.ones(self.size, dtype=np.bool_)
        for point_id in expression.points:
            usable &= self._present[self._point(point_id)]
        for name in expression.attributes:
            usable &= self._present[self._attribute(name)]
            # a point of that name: without types the message's value would be read
            usable &= ~self._present[self._point(name)]
        return usable

    def prepare(self, rules: Iterable[TypedRule]) -> None:
        """Add the columns ``rules`` read (so that the frame is built once)."""
        for typed in rules:
            if typed.condition is not None:
                self._usable(typed.condition)
            for _, expression in typed.transform:
                self._usable(expression)

    def any_present(self, point_ids: Iterable[str]) -> Bools:
        """Which messages hold at least one of ``point_ids``."""
        found = np.zeros(self.size, dtype=np.bool_)
        for point_id in point_ids:
            found |= self._present[self._point(point_id)]
        return found

    def device_mask(self, selected: Callable[[str], bool]) -> Bools:
        """Which messages are of a device for which ``selected(device_key)`` holds (asked
        once per device)."""
        chosen = {dk: selected(dk) for dk in dict.fromkeys(self._devices)}
        return np.fromiter((chosen[dk] for dk in self._devices), np.bool_, self.size)

    def _condition(self, condition: Expression) -> tuple[Bools, Bools] | None:
        usable = self._usable(condition)
        threshold = condition.threshold
        if threshold is not None and threshold.attribute is None:
            column = self._columns[f"point:{threshold.point}"]
            if column.dtype == np.float64:
                return threshold.mask(column) & usable, usable
            numbers = np.empty(self.size, dtype=np.float64)
            for i, value in enumerate(column.tolist()):
                kind = type(value)
                if kind is float or kind is int:
                    try:
                        numbers[i] = float(value)
                        continue
                    except OverflowError:
                        pass
                elif value is None:
                    numbers[i] = math.nan
                    continue
                numbers[i] = math.nan
                usable[i] = False  # not a number: evaluated alone
            return threshold.mask(numbers) & usable, usable
        try:
            held = condition.evaluate_arrays(self._columns, self.size).astype(np.bool_)
        except Exception:  # a value of the wrong kind somewhere: every message alone
            return None
        return held & usable, usable

    def outcome(self, typed: TypedRule) -> Outcome | None:
        """The rule's outcome on every message, or None: evaluate them all one by one."""
        if typed.condition is None:
            held = np.ones(self.size, dtype=np.bool_)
            decided = np.ones(self.size, dtype=np.bool_)
        else:
            found = self._condition(typed.condition)
            if found is None:
                return None
            held, decided = found
        if not typed.transform or not held.any():
            return Outcome(held, decided, ())
        usable = np.ones(self.size, dtype=np.bool_)
        for _, expression in typed.transform:
            usable &= self._usable(expression)
        derived: list[tuple[str, list[Any]]] = []
        for derived_id, expression in typed.transform:
            try:
                array = expression.evaluate_arrays(self._columns, self.size)
            except Exception:  # a value of the wrong kind somewhere: every message alone
                return None
            cells = array.tolist()
            if array.dtype == np.float64:
                cells = [None if math.isnan(c) else c for c in cells]  # NaN: null
            else:
                cells = [None if _null(c) else c for c in cells]
            derived.append((derived_id, cells))
        # a message whose condition held but whose transform cannot be computed over the
        # frame is undecided (alone, its transform may raise: a skip)
        decided = decided & (usable | ~held)
        return Outcome(held & usable, decided, tuple(derived))


def _null(cell: Any) -> bool:
    return cell is None or cell is pd.NA or (type(cell) is float and math.isnan(cell))


@dataclass(slots=True)
class Decided:
    """The outcomes of a product's rules over its messages in a batch (rule name ->
    :class:`Outcome`), and the position of the message the engine is at."""

    rules: dict[str, Outcome] = field(default_factory=dict)
    index: int = 0
    all_decided: bool = False
    """Whether every rule given has an outcome and decided every message."""
    none_held: bool = False
    """Whether, besides, no rule held on any message."""
    frame: MessageFrame | None = None
    """The messages (:meth:`MessageFrame.any_present`, :meth:`MessageFrame.device_mask`)."""


class BatchDecider:
    """Decides the messages of a batch per product, with the rules compiled against each
    product's model (``models``, ``model_of(product_key)``; cached, at most ``max_cache``)
    and the devices' ``attributes(product_key, device_key)``."""

    __slots__ = ("_attributes", "_max_cache", "_model_of", "_models", "_typed")

    def __init__(
        self,
        models: ModelCatalog | None,
        model_of: Callable[[str], str | None],
        attributes: Callable[[str, str], Mapping[str, Any]],
        max_cache: int,
    ) -> None:
        self._models = models
        self._model_of = model_of
        self._attributes = attributes
        self._max_cache = max_cache
        self._typed: dict[tuple[str, str | None], TypedRule | None] = {}

    def clear(self) -> None:
        """Forget the compiled rules (the rule set changed)."""
        self._typed.clear()

    def typed_rule(self, rule: Rule, product_key: str) -> TypedRule | None:
        """``rule`` compiled against the product's model (:func:`typed_rule`; cached)."""
        model_id = self._model_of(product_key)
        key = (rule.name, model_id)
        if key in self._typed:
            return self._typed[key]
        models = self._models
        model = None
        if models is not None and model_id is not None and model_id in models:
            model = models.get(model_id)
        typed = typed_rule(rule, model)
        if len(self._typed) >= self._max_cache:
            self._typed.clear()
        self._typed[key] = typed
        return typed

    def decide(
        self,
        messages: Iterable[tuple[str, str, dict[str, Any]]],
        least: int,
        rules_of: Callable[[str], tuple[Rule, ...]],
    ) -> dict[str, Decided]:
        """For each product with at least ``least`` of the ``messages`` (product key, device
        key, point values; in order), the outcomes of ``rules_of(product_key)`` over them."""
        products: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
        for pk, dk, values in messages:
            group = products.get(pk)
            if group is None:
                group = products[pk] = ([], [])
            group[0].append(values)
            group[1].append(dk)
        found: dict[str, Decided] = {}
        for pk, (values_of, devices) in products.items():
            if len(values_of) < least:
                continue
            frame = MessageFrame(values_of, devices, _attributes_in(self._attributes, pk))
            typed = {rule.name: self.typed_rule(rule, pk) for rule in rules_of(pk)}
            frame.prepare(t for t in typed.values() if t is not None)
            decided = Decided()
            for name, compiled in typed.items():
                outcome = None if compiled is None else frame.outcome(compiled)
                if outcome is not None:
                    decided.rules[name] = outcome
            if decided.rules:
                decided.frame = frame
                outcomes = decided.rules.values()
                decided.all_decided = len(decided.rules) == len(typed) and all(
                    o.decided.all() for o in outcomes
                )
                decided.none_held = decided.all_decided and not any(o.held.any() for o in outcomes)
                found[pk] = decided
        return found


def none_can_hold(
    rules: tuple[Rule, ...],
    typed_of: Callable[[Rule], TypedRule | None],
    rows: list[tuple[Any, ...]],
) -> bool:
    """Whether none of ``rules`` (tap rules of one product) can match any message of these
    point ``rows`` of the product, seen point by point without gathering the messages: true
    when each rule selects one point, has no transform, and its condition (compiled:
    ``typed_of(rule)``) reads that point alone and is decided false on every row of it. (A
    message without the point is not the rule's; with it, the condition sees only it.)"""
    for rule in rules:
        typed = typed_of(rule)
        if typed is None or typed.transform or typed.condition is None or len(rule.points) != 1:
            return False
        point_id = rule.points[0]
        condition = typed.condition
        if condition.attributes or condition.points != {point_id}:
            return False
        values = [{point_id: row[4]} for row in rows if row[2] == point_id]
        if not values:
            continue
        frame = MessageFrame(values, [""] * len(values), _no_attributes)
        outcome = frame.outcome(typed)
        if outcome is None or outcome.held.any() or not outcome.decided.all():
            return False
    return True


def _no_attributes(device_key: str) -> Mapping[str, Any]:
    return {}


def _attributes_in(
    attributes: Callable[[str, str], Mapping[str, Any]], product_key: str
) -> Callable[[str], Mapping[str, Any]]:
    return lambda device_key: attributes(product_key, device_key)
