"""The rule engine from the facade: the lab's rule set, changed, kept, tried and counted.

The lab keeps its rule set in ``rules.json`` in the data directory (0600), read when the lab
starts; without the file the default rule set (:data:`~enos_lab.rules.DEFAULT_RULES`: store
every valid measurepoint) is in force. Every change here is checked first (a bad rule changes
nothing and raises, naming the rule and the column), put in force on the lab's loop, then
written to the file. Rules with a :class:`~enos_lab.rules.Call` action keep working until the
lab stops; the file keeps the function's name only, so after a restart such a rule runs
without its call (add it again). See :mod:`enos_lab.rules`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .._services import Services
from ..errors import AlreadyExists, EnosLabError, InvalidArgument, NotFound
from ..rules import (
    DEFAULT_RULES,
    DeviceInfo,
    Rule,
    RuleStats,
    check_rules,
    dry_run,
    load_rules,
    rule_from_dict,
    rule_to_dict,
    save_rules,
    write_rule_set,
)
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["RULE_COLUMNS", "RULE_STATS_COLUMNS", "Rules"]

RULE_COLUMNS = (
    "name",
    "kind",
    "enabled",
    "products",
    "models",
    "devices",
    "tags",
    "points",
    "condition",
    "transform",
    "actions",
    "description",
)
"""Columns of :meth:`Rules.rules`: the fields of each rule (``actions`` as their file form)."""
RULE_STATS_COLUMNS = ("name", *RuleStats.__dataclass_fields__)
"""Columns of :meth:`Rules.rule_stats`: the rule's name and its :class:`~enos_lab.rules.RuleStats`
counters."""

_RULES_LOCK = threading.Lock()  # changes to a rule set are rare: one lock for every lab


def _as_rule(rule: Rule | Mapping[str, Any]) -> Rule:
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, Mapping):
        return rule_from_dict(rule)
    raise InvalidArgument(f"expected a Rule or a dict, got {type(rule).__name__}: {rule!r}")


class Rules(LabCore):
    """The rule engine's rule set (mixed into :class:`~enos_lab.lab.Lab`)."""

    def _engine_services(self) -> Services:
        services = self._running()
        self._require_iothub("rules")
        return services

    def _current(self) -> list[Rule]:
        services = self._engine_services()
        return self.run(plain_call(lambda: list(services.rules.rules if services.rules else ())))

    def _put(self, rules: list[Rule], *, default: bool = False) -> None:
        services = self._engine_services()
        checked = check_rules(rules, self.models)
        self.run(plain_call(services.set_rules, checked))
        write_rule_set(self.data_dir, None if default else checked)

    def rules(self, *, as_frame: bool = True) -> pd.DataFrame | list[Rule]:
        """The rule set in force, in order: a DataFrame (:data:`RULE_COLUMNS`) or, with
        ``as_frame=False``, the :class:`~enos_lab.rules.Rule` objects."""
        current = self._current()
        if not as_frame:
            return current
        return pd.DataFrame(
            [rule_to_dict(rule) for rule in current], columns=list(RULE_COLUMNS)
        ).astype({"enabled": bool})

    def set_rules(self, rules: Iterable[Rule | Mapping[str, Any]]) -> list[Rule]:
        """Replace the rule set (Rules or their dicts, as in a rule file); kept in the data
        directory. An empty list stores no measurepoint at all. Returns the rules in force.
        Raises :class:`~enos_lab.errors.ExpressionError` (rule and column) or
        :class:`~enos_lab.errors.InvalidArgument`; nothing changes then."""
        if isinstance(rules, (Rule, Mapping, str)):
            raise InvalidArgument("set_rules takes a list of rules (add one with add_rule)")
        parsed = [_as_rule(rule) for rule in rules]
        with _RULES_LOCK:
            self._put(parsed)
        return parsed

    def add_rule(self, rule: Rule | Mapping[str, Any], *, replace: bool = False) -> Rule:
        """Add ``rule`` (a Rule or its dict) at the end of the rule set; ``replace``: a rule of
        the same name is replaced in place (else :class:`~enos_lab.errors.AlreadyExists`)."""
        new = _as_rule(rule)
        with _RULES_LOCK:
            current = self._current()
            names = [r.name for r in current]
            if new.name in names:
                if not replace:
                    raise AlreadyExists(
                        f"rule {new.name!r} exists; pass replace=True to replace it"
                    )
                current[names.index(new.name)] = new
            else:
                current.append(new)
            self._put(current)
        return new

    def remove_rule(self, name: str) -> Rule:
        """Remove the rule ``name`` and return it (:class:`~enos_lab.errors.NotFound` if there
        is none). Removing the last rule that stores measurepoints stops storing them."""
        with _RULES_LOCK:
            current = self._current()
            for index, rule in enumerate(current):
                if rule.name == name:
                    del current[index]
                    self._put(current)
                    return rule
        raise NotFound(f"no rule named {name!r}")

    def reset_rules(self) -> list[Rule]:
        """Back to the default rule set (store every valid measurepoint); the kept file is
        removed."""
        with _RULES_LOCK:
            self._put(list(DEFAULT_RULES), default=True)
        return list(DEFAULT_RULES)

    def load_rules(self, path: str | Path) -> list[Rule]:
        """Put the rule set of a JSON or YAML file (by its suffix) in force, and keep it; see
        :func:`enos_lab.rules.load_rules`."""
        loaded = load_rules(path)
        with _RULES_LOCK:
            self._put(loaded)
        return loaded

    def save_rules(self, path: str | Path) -> Path:
        """Write the rule set in force to ``path`` (YAML for ``.yaml``/``.yml``, else JSON;
        0600); returns the path. A :class:`~enos_lab.rules.Call` is saved by name only."""
        return save_rules(self._current(), path)

    def dry_run(
        self,
        messages: pd.DataFrame | Iterable[Any],
        rules: Iterable[Rule | Mapping[str, Any]] | None = None,
    ) -> pd.DataFrame:
        """What each rule (default: the rule set in force) would do with each message (tap
        events, dicts, or a DataFrame from ``store.query_points``); nothing runs. Models, tags
        and attributes come from the registry. See :func:`enos_lab.rules.dry_run` for the
        columns."""
        chosen = self._current() if rules is None else [_as_rule(rule) for rule in rules]
        checked = check_rules(chosen, self.models)
        registry = self.registry

        def model_of(product_key: str) -> str | None:
            return registry.get_product(product_key).model_id

        def device_info(product_key: str, device_key: str) -> DeviceInfo:
            try:
                device = registry.get_device(product_key, device_key)
            except EnosLabError:
                return {}, {}
            return dict(device.attributes), dict(device.tags)

        return dry_run(checked, messages, model_of=model_of, device_info=device_info)

    def rule_stats(self) -> pd.DataFrame:
        """Each rule's counters (:data:`RULE_STATS_COLUMNS`): messages matched, rows stored,
        derived values, skips (a missing or unusable value), republished, called, errors."""
        services = self._engine_services()
        stats = self.run(plain_call(lambda: services.rules.stats() if services.rules else {}))
        rows = [
            {"name": name, **{f: getattr(s, f) for f in RuleStats.__dataclass_fields__}}
            for name, s in stats.items()
        ]
        return pd.DataFrame(rows, columns=list(RULE_STATS_COLUMNS))

    arules = coroutine_form_of(rules)
    aset_rules = coroutine_form_of(set_rules)
    aadd_rule = coroutine_form_of(add_rule)
    aremove_rule = coroutine_form_of(remove_rule)
    areset_rules = coroutine_form_of(reset_rules)
    aload_rules = coroutine_form_of(load_rules)
    asave_rules = coroutine_form_of(save_rules)
    adry_run = coroutine_form_of(dry_run)
    arule_stats = coroutine_form_of(rule_stats)
