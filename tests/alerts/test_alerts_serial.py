"""Alert rules as JSON documents and the rule file: every field round-trips, malformed
documents are refused naming the rule and the field, the file is written 0600."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from enos_lab.alerts import (
    FAULT,
    INFO,
    AlertContent,
    AlertRule,
    AlertType,
    Escalation,
    FlapPolicy,
    RuleEntry,
    RuleFile,
    Severity,
    rule_document,
    rule_from_document,
)
from enos_lab.errors import InvalidArgument, RuleError

KIND = AlertType("over-limit", "over a limit")
FULL = AlertRule(
    rule_id="hot.1",
    model_id="pv_inverter",
    measurepoint="internal_temperature",
    condition="${internal_temperature} > 60",
    description="overheating",
    severity=INFO,
    content=AlertContent("c1", "too hot", KIND, AlertType("hot", "heat", parent_id="over-limit")),
    delay=120,
    is_root=True,
    scope=("inv-1", "inv-2"),
    scope_tags={"roof": "east"},
    tags={"site": "north"},
    enabled=False,
    recover_condition="${internal_temperature} < 55",
    min_repeat=3,
    flapping=FlapPolicy(4, 600),
    escalation=(Escalation(300, Severity("398000002", "Warning", 2)), Escalation(900, FAULT)),
    strict=False,
)


def test_every_field_round_trips_through_json() -> None:
    document = json.loads(json.dumps(rule_document(FULL)))
    assert rule_from_document(document) == FULL
    status = AlertRule(rule_id="off", model_id="gateway", device_status="offline")
    assert rule_from_document(rule_document(status)) == status


def test_malformed_documents_name_the_rule_and_the_field() -> None:
    document = rule_document(FULL)
    with pytest.raises(InvalidArgument, match=r"'hot\.1': unknown field 'colour'"):
        rule_from_document({**document, "colour": "red"})
    with pytest.raises(InvalidArgument, match=r"'hot\.1': severity: missing 'level'"):
        rule_from_document({**document, "severity": {"id": "1", "name": "x"}})
    with pytest.raises(InvalidArgument, match=r"'hot\.1': min_repeat"):
        rule_from_document({**document, "min_repeat": 0})
    with pytest.raises(InvalidArgument, match="escalation must be a list"):
        rule_from_document({**document, "escalation": "soon"})
    with pytest.raises(InvalidArgument, match="must be a mapping"):
        rule_from_document(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_the_rule_file_keeps_rules_in_order_privately(tmp_path: Path) -> None:
    rules = RuleFile(tmp_path / "rules.json")
    assert rules.load() == []
    entries = [
        RuleEntry(FULL, include_resumed=True),
        RuleEntry(
            FULL.__class__(
                rule_id="b",
                model_id="pv_inverter",
                measurepoint="efficiency",
                condition="${efficiency} < 0.5",
            )
        ),
    ]
    rules.save(entries)
    assert rules.load() == entries
    assert stat.S_IMODE(rules.path.stat().st_mode) == 0o600
    rules.path.write_text('{"version": 2, "rules": []}')
    with pytest.raises(RuleError, match=r"rules\.json is not valid: unknown version 2"):
        rules.load()
    rules.path.write_text('{"version": 1, "rules": [{"rule": {"rule_id": "x"}}]}')
    with pytest.raises(RuleError, match="alert rule 'x'"):
        rules.load()
