"""Alert rules as JSON documents, and the file a lab keeps its rules in.

:func:`rule_document` turns an :class:`~enos_lab.alerts.AlertRule` into a plain dictionary
(JSON-ready: field names as in the class, a severity as ``{"id", "name", "level"}``, content
with its type and subtype, flapping and escalation steps), and :func:`rule_from_document`
turns one back, checking it as the class does (an error names the rule and the field).

:class:`RuleFile` keeps a lab's rules, in the order added, with their engine options
(``include_resumed``), in one JSON file written atomically (0600), so that a lab restarted on
the same data directory evaluates the same rules::

    {"version": 1, "rules": [{"rule": {...}, "include_resumed": false}, ...]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import write_private
from ..errors import InvalidArgument, RuleError
from ._definitions import AlertContent, AlertRule, AlertType, Escalation, FlapPolicy, Severity

__all__ = ["RULES_FILE", "RuleEntry", "RuleFile", "rule_document", "rule_from_document"]

RULES_FILE = "alert_rules.json"
"""Name of the file, in the lab's data directory, that keeps its alert rules."""

_VERSION = 1


def _severity(severity: Severity) -> dict[str, Any]:
    return {"id": severity.severity_id, "name": severity.name, "level": severity.level}


def _type(kind: AlertType | None) -> dict[str, Any] | None:
    if kind is None:
        return None
    return {"id": kind.type_id, "description": kind.description, "parent_id": kind.parent_id}


def rule_document(rule: AlertRule) -> dict[str, Any]:
    """``rule`` as a JSON-ready dictionary (see the module docstring)."""
    content = rule.content
    return {
        "rule_id": rule.rule_id,
        "model_id": rule.model_id,
        "measurepoint": rule.measurepoint,
        "device_status": rule.device_status,
        "condition": rule.condition,
        "description": rule.description,
        "severity": _severity(rule.severity),
        "content": None
        if content is None
        else {
            "id": content.content_id,
            "description": content.description,
            "type": _type(content.type),
            "subtype": _type(content.subtype),
        },
        "delay": rule.delay,
        "is_root": rule.is_root,
        "scope": list(rule.scope),
        "scope_tags": dict(rule.scope_tags),
        "tags": dict(rule.tags),
        "enabled": rule.enabled,
        "recover_condition": rule.recover_condition,
        "min_repeat": rule.min_repeat,
        "flapping": None
        if rule.flapping is None
        else {"changes": rule.flapping.changes, "window": rule.flapping.window},
        "escalation": [
            {"after": step.after, "severity": _severity(step.severity)} for step in rule.escalation
        ],
        "strict": rule.strict,
    }


def _severity_of(data: Any, what: str) -> Severity:
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{what}: expected {{'id', 'name', 'level'}}, got {data!r}")
    try:
        return Severity(data["id"], data["name"], data["level"])
    except KeyError as exc:
        raise InvalidArgument(f"{what}: missing {exc.args[0]!r}") from None


def _type_of(data: Any, what: str) -> AlertType | None:
    if data is None:
        return None
    if not isinstance(data, Mapping) or "id" not in data:
        raise InvalidArgument(
            f"{what}: expected {{'id', 'description', 'parent_id'}}, got {data!r}"
        )
    return AlertType(data["id"], data.get("description", ""), data.get("parent_id"))


def rule_from_document(document: Mapping[str, Any]) -> AlertRule:
    """The :class:`AlertRule` a :func:`rule_document` dictionary describes.

    Raises :class:`~enos_lab.errors.InvalidArgument` naming the rule and the field for a
    malformed document or a rule the class refuses.
    """
    if not isinstance(document, Mapping):
        raise InvalidArgument(f"an alert rule document must be a mapping, got {document!r}")
    what = f"alert rule {document.get('rule_id')!r}"
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise InvalidArgument(f"{what}: unknown field {unknown[0]!r}")
    fields = dict(document)
    if "severity" in fields:
        fields["severity"] = _severity_of(fields["severity"], f"{what}: severity")
    content = fields.get("content")
    if content is not None:
        if not isinstance(content, Mapping) or "id" not in content:
            raise InvalidArgument(f"{what}: content must be {{'id', ...}}, got {content!r}")
        fields["content"] = AlertContent(
            content["id"],
            content.get("description", ""),
            _type_of(content.get("type"), f"{what}: content type"),
            _type_of(content.get("subtype"), f"{what}: content subtype"),
        )
    flapping = fields.get("flapping")
    if flapping is not None:
        if not isinstance(flapping, Mapping):
            raise InvalidArgument(f"{what}: flapping must be {{'changes', 'window'}}")
        fields["flapping"] = FlapPolicy(flapping.get("changes"), flapping.get("window"))  # type: ignore[arg-type]
    steps = fields.get("escalation", ())
    if not isinstance(steps, Sequence) or isinstance(steps, str):
        raise InvalidArgument(f"{what}: escalation must be a list of steps, got {steps!r}")
    fields["escalation"] = tuple(
        Escalation(
            step.get("after") if isinstance(step, Mapping) else None,  # type: ignore[arg-type]
            _severity_of(
                step.get("severity") if isinstance(step, Mapping) else None,
                f"{what}: escalation severity",
            ),
        )
        for step in steps
    )
    if "scope" in fields and isinstance(fields["scope"], list):
        fields["scope"] = tuple(fields["scope"])
    try:
        return AlertRule(**fields)
    except TypeError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None


_FIELDS = {
    "rule_id", "model_id", "measurepoint", "device_status", "condition", "description",
    "severity", "content", "delay", "is_root", "scope", "scope_tags", "tags", "enabled",
    "recover_condition", "min_repeat", "flapping", "escalation", "strict",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """A rule as a lab keeps it: the rule and its engine options."""

    rule: AlertRule
    """The rule."""
    include_resumed: bool = False
    """Whether resumed (historical) points feed it."""


class RuleFile:
    """The alert rules of a lab, in the JSON file ``path`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[RuleEntry]:
        """The rules kept (none if the file does not exist). Raises
        :class:`~enos_lab.errors.RuleError` naming the file for one that cannot be read."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RuleError(f"cannot read the alert rules file {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
                raise InvalidArgument("expected {'version': 1, 'rules': [...]}")
            if data.get("version") != _VERSION:
                raise InvalidArgument(f"unknown version {data.get('version')!r}")
            return [
                RuleEntry(rule_from_document(item["rule"]), bool(item.get("include_resumed")))
                for item in data["rules"]
            ]
        except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
            raise RuleError(f"the alert rules file {self.path} is not valid: {exc}") from exc

    def save(self, entries: Sequence[RuleEntry]) -> None:
        """Replace the file's content with ``entries`` (atomically)."""
        data = {
            "version": _VERSION,
            "rules": [
                {"rule": rule_document(entry.rule), "include_resumed": entry.include_resumed}
                for entry in entries
            ],
        }
        write_private(self.path, json.dumps(data, indent=1).encode())
