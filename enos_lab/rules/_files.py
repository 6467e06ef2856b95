"""Rule sets in files: JSON and YAML, one document ``{"version": 1, "rules": [...]}``.

Each rule is an object with the fields of :class:`~enos_lab.rules.Rule` (``name``, ``kind``,
``products``, ``models``, ``devices``, ``tags``, ``points``, ``condition``, ``transform``,
``enabled``, ``description``) and ``actions``, a list of ``{"type": "store", "derived_only":
false}``, ``{"type": "republish", "topic": ..., "qos": 0}`` or ``{"type": "call", "name":
"module.function"}``. A function cannot be written to a file: a ``call`` keeps its name for
the reader, and loading drops it with a warning (add the rule again with its function). YAML
is read with ``yaml.safe_load`` (no tags, no objects); files are at most :data:`MAX_FILE`
bytes. Unknown fields are refused, naming the rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .._files import write_private
from ..errors import InvalidArgument
from ._rule import Action, Republish, Rule, Store

__all__ = [
    "FORMAT_VERSION",
    "MAX_FILE",
    "RULES_FILE",
    "dump_rules",
    "load_rules",
    "parse_rules",
    "read_rule_set",
    "rule_from_dict",
    "rule_to_dict",
    "save_rules",
    "write_rule_set",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""The version of the rule file format."""
MAX_FILE = 4 * 1024 * 1024
"""Largest rule file read. [bytes]"""
RULES_FILE = "rules.json"
"""The lab's rule set, in its data directory (absent: the default rule set)."""

_FIELDS = (
    "name",
    "kind",
    "products",
    "models",
    "devices",
    "tags",
    "points",
    "condition",
    "transform",
    "actions",
    "enabled",
    "description",
)


def _action_to_dict(action: Action) -> dict[str, Any]:
    if isinstance(action, Store):
        return {"type": "store", "derived_only": action.derived_only}
    if isinstance(action, Republish):
        return {"type": "republish", "topic": action.topic, "qos": action.qos}
    return {"type": "call", "name": action.name}


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """``rule`` as a plain JSON-able dict (the file format's rule object)."""
    return {
        "name": rule.name,
        "kind": rule.kind.value,
        "products": list(rule.products),
        "models": list(rule.models),
        "devices": list(rule.devices),
        "tags": dict(rule.tags),
        "points": list(rule.points),
        "condition": rule.condition,
        "transform": dict(rule.transform),
        "actions": [_action_to_dict(a) for a in rule.actions],
        "enabled": rule.enabled,
        "description": rule.description,
    }


def _action_from_dict(item: Any, rule: str) -> Action | None:
    if not isinstance(item, Mapping):
        raise InvalidArgument(f"rule {rule!r}: an action must be an object, got {item!r}")
    kind = item.get("type")
    extra: set[str]
    if kind == "store":
        extra = set(item) - {"type", "derived_only"}
        action: Action | None = Store(bool(item.get("derived_only", False)))
    elif kind == "republish":
        extra = set(item) - {"type", "topic", "qos"}
        action = Republish(item.get("topic"), item.get("qos", 0))  # type: ignore[arg-type]
    elif kind == "call":
        extra = set()
        log.warning(
            "rule %r: its call action (%s) is not loaded: a function cannot come from a file; "
            "add the rule again with Call(function)",
            rule,
            item.get("name"),
        )
        action = None
    else:
        raise InvalidArgument(
            f"rule {rule!r}: unknown action type {kind!r} (store, republish or call)"
        )
    if extra:
        raise InvalidArgument(f"rule {rule!r}: unknown {kind} action field {sorted(extra)[0]!r}")
    return action


def rule_from_dict(data: Mapping[str, Any]) -> Rule:
    """A :class:`Rule` from a file's rule object (checked like any rule)."""
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"a rule must be an object, got {data!r}")
    name = data.get("name")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InvalidArgument(f"rule {name!r}: unknown field {unknown[0]!r}")
    fields = {k: v for k, v in data.items() if k != "actions"}
    for key in ("transform", "tags"):
        if fields.get(key) is None:
            fields.pop(key, None)
    if "actions" in data:
        actions = data["actions"]
        if not isinstance(actions, list):
            raise InvalidArgument(f"rule {name!r}: actions must be a list, got {actions!r}")
        parsed = (_action_from_dict(item, str(name)) for item in actions)
        fields["actions"] = tuple(a for a in parsed if a is not None)
    return Rule(**fields)


def dump_rules(rules: Iterable[Rule], *, fmt: str = "json") -> str:
    """The rule set as text: ``fmt`` ``"json"`` or ``"yaml"``."""
    items = [rule_to_dict(r) for r in rules]
    document = {"version": FORMAT_VERSION, "rules": items}
    for rule in items:
        for action in rule["actions"]:
            if action["type"] == "call":
                log.warning(
                    "rule %r: its call action (%s) is saved by name only: loading drops it",
                    rule["name"],
                    action["name"],
                )
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        return text
    raise InvalidArgument(f"unknown rule file format {fmt!r} (json or yaml)")


def parse_rules(text: str, *, fmt: str = "json", source: str = "rules") -> list[Rule]:
    """The rules of a document in ``fmt`` (``"json"`` or ``"yaml"``); ``source`` names it in
    errors. A bare list of rule objects is accepted too."""
    try:
        if fmt == "json":
            document = json.loads(text)
        elif fmt == "yaml":
            document = yaml.safe_load(text)
        else:
            raise InvalidArgument(f"unknown rule file format {fmt!r} (json or yaml)")
    except (ValueError, yaml.YAMLError) as exc:
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument(f"{source}: not valid {fmt.upper()}: {exc}") from None
    if isinstance(document, Mapping):
        version = document.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise InvalidArgument(f"{source}: unsupported rule file version {version!r}")
        document = document.get("rules")
    if not isinstance(document, list):
        raise InvalidArgument(f"{source}: expected a list of rules under 'rules'")
    return [rule_from_dict(item) for item in document]


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    return "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"


def load_rules(path: str | Path, *, fmt: str | None = None) -> list[Rule]:
    """The rules in the file ``path`` (YAML for ``.yaml``/``.yml``, else JSON; or ``fmt``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise InvalidArgument(f"{path}: {size} bytes; rule files are at most {MAX_FILE}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read rule file {path}: {exc}") from None
    return parse_rules(text, fmt=_format_of(path, fmt), source=str(path))


def save_rules(rules: Iterable[Rule], path: str | Path, *, fmt: str | None = None) -> Path:
    """Write the rules to ``path`` (0600; format as for :func:`load_rules`); returns it."""
    path = Path(path)
    text = dump_rules(list(rules), fmt=_format_of(path, fmt))
    write_private(path, text.encode())
    return path


def read_rule_set(data_dir: Path) -> list[Rule] | None:
    """The rule set kept in ``data_dir`` (:data:`RULES_FILE`), or None when there is none."""
    path = Path(data_dir) / RULES_FILE
    if not path.exists():
        return None
    return load_rules(path, fmt="json")


def write_rule_set(data_dir: Path, rules: Iterable[Rule] | None) -> None:
    """Keep ``rules`` in ``data_dir`` (None: remove the file, back to the default set)."""
    path = Path(data_dir) / RULES_FILE
    if rules is None:
        path.unlink(missing_ok=True)
        return
    save_rules(rules, path, fmt="json")
