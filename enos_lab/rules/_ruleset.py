"""Rule sets checked against the thing models, one rule evaluated on one message, and the
counters of a rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..model import ModelCatalog
from ._expression import Expression, compile_expression
from ._rule import Rule

__all__ = ["RuleStats", "check_rules", "derive", "evaluate_rule"]


@dataclass(slots=True)
class RuleStats:
    """Counters of one rule (read them; the engine updates them)."""

    matched: int = 0
    """Messages the rule matched (condition true), before storage and on the tap."""
    stored: int = 0
    """Rows the rule's :class:`Store` action kept (derived points included); not counted
    while no router is needed (a rule stores everything: no row is looked at)."""
    derived: int = 0
    """Derived values computed by its transform."""
    skipped: int = 0
    """Evaluations skipped: a missing or unusable value."""
    republished: int = 0
    """Messages published by its :class:`Republish` actions."""
    called: int = 0
    """Calls of its :class:`Call` actions."""
    errors: int = 0
    """Calls that raised and publishes that failed (logged once)."""


def check_rules(rules: Iterable[Rule], models: ModelCatalog | None = None) -> list[Rule]:
    """The rules as a list, checked: each a :class:`Rule`, names unique, and the condition and
    transforms of a rule that names ``models`` compiled against each of them (types, unknown
    names). Raises :class:`~enos_lab.errors.ExpressionError` naming the rule and column,
    :class:`~enos_lab.errors.InvalidArgument` otherwise."""
    if isinstance(rules, Rule):
        rules = [rules]
    checked: list[Rule] = []
    names: set[str] = set()
    for rule in rules:
        if not isinstance(rule, Rule):
            raise InvalidArgument(f"expected a Rule, got {type(rule).__name__}: {rule!r}")
        if rule.name in names:
            raise InvalidArgument(f"two rules are named {rule.name!r}: names must be unique")
        names.add(rule.name)
        if models is not None:
            for model_id in rule.models:
                if model_id not in models:
                    raise InvalidArgument(f"rule {rule.name!r}: unknown thing model {model_id!r}")
                model = models.get(model_id)
                if rule.condition is not None:
                    compile_expression(rule.condition, model=model, name=rule.name)
                for derived_id, text in rule.transform.items():
                    if derived_id in model.measurepoints:
                        raise InvalidArgument(
                            f"rule {rule.name!r}: derived point {derived_id!r} is a measurepoint "
                            f"of model {model_id!r}; give it an id of its own"
                        )
                    compile_expression(text, model=model, name=rule.name, boolean=False)
        checked.append(rule)
    return checked


def evaluate_rule(
    rule: Rule,
    values: Mapping[str, Any],
    attributes: Callable[[], Mapping[str, Any]] | Mapping[str, Any],
) -> tuple[bool, dict[str, Any]]:
    """Whether ``rule``'s condition holds for a message's ``values`` and the device's
    ``attributes`` (a mapping, or a function giving it when needed), and its transform's
    derived values (empty unless it holds; a null derived value is left out). Raises
    :class:`~enos_lab.errors.MissingValue` / :class:`~enos_lab.errors.EvaluationError`."""
    attrs: Mapping[str, Any] | None = None if callable(attributes) else attributes
    condition = rule.compiled_condition
    if condition is not None:
        attrs = _attributes_for(condition, values, attrs, attributes)
        if condition.evaluate(values, attrs) is not True:
            return False, {}
    return True, derive(rule, values, attributes if attrs is None else attrs)


def derive(
    rule: Rule,
    values: Mapping[str, Any],
    attributes: Callable[[], Mapping[str, Any]] | Mapping[str, Any],
) -> dict[str, Any]:
    """The values of ``rule``'s transform for a message (a null one is left out); arguments
    and errors as for :func:`evaluate_rule`."""
    attrs: Mapping[str, Any] | None = None if callable(attributes) else attributes
    derived: dict[str, Any] = {}
    for derived_id, expression in rule.compiled_transform:
        attrs = _attributes_for(expression, values, attrs, attributes)
        value = expression.evaluate(values, attrs)
        if value is not None:
            derived[derived_id] = value
    return derived


def _attributes_for(
    expression: Expression,
    values: Mapping[str, Any],
    attrs: Mapping[str, Any] | None,
    source: Callable[[], Mapping[str, Any]] | Mapping[str, Any],
) -> Mapping[str, Any]:
    if attrs is not None:
        return attrs
    if expression.attributes or not expression.points.issubset(values.keys()):
        return source() if callable(source) else source
    return {}
