"""Rule sets in JSON and YAML files: round trips, calls kept by name only, bad files refused."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from enos_lab.errors import ExpressionError, InvalidArgument
from enos_lab.rules import (
    DEFAULT_RULES,
    Call,
    MessageKind,
    Republish,
    Rule,
    RuleMatch,
    Store,
    dump_rules,
    load_rules,
    parse_rules,
    rule_from_dict,
    rule_to_dict,
    save_rules,
)


def notify(match: RuleMatch) -> None:
    """A rule's callable (never called here)."""


RULES = [
    Rule(
        "kw",
        products=["p1"],
        models=["sdk_meter"],
        devices=["m1", "m2"],
        tags={"site": "north"},
        points=["power"],
        condition="${power} > 0.5 * ${rated_power}",
        transform={"power_kw": "${power} / 1000"},
        actions=[Store(derived_only=True), Republish("/lab/rules/{productKey}/out", qos=1)],
        description="kilowatts — derived",
    ),
    Rule("on-off", kind=MessageKind.PRESENCE, condition="not ${online}", actions=[], enabled=False),
    *DEFAULT_RULES,
]


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_a_rule_set_round_trips_through_a_file(tmp_path: Path, suffix: str) -> None:
    path = save_rules(RULES, tmp_path / f"rules{suffix}")
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()
    assert ("{" in text.splitlines()[0]) == (suffix == ".json")
    loaded = load_rules(path)
    assert loaded == RULES
    assert loaded[0].compiled_condition is not None  # compiled again when read


def test_the_file_form_of_a_rule() -> None:
    data = rule_to_dict(RULES[0])
    assert data["kind"] == "measurepoint"
    assert data["actions"] == [
        {"type": "store", "derived_only": True},
        {"type": "republish", "topic": "/lab/rules/{productKey}/out", "qos": 1},
    ]
    assert rule_from_dict(data) == RULES[0]
    # Only the name is needed; the defaults store every point of every device.
    assert rule_from_dict({"name": "all"}) == Rule("all")
    assert parse_rules('[{"name": "a", "points": "temp"}]')[0].points == ("temp",)


def test_a_call_is_saved_by_name_and_dropped_when_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rule = Rule("watch", condition="${temp} > 50", actions=[Store(), Call(notify)])
    with caplog.at_level(logging.WARNING, logger="enos_lab.rules"):
        path = save_rules([rule], tmp_path / "rules.json")
    assert '"name": "test_rules_files.notify"' in path.read_text()
    assert "saved by name only" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="enos_lab.rules"):
        (loaded,) = load_rules(path)
    assert loaded.actions == (Store(),)
    assert "test_rules_files.notify" in caplog.text and "not loaded" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"version": 2, "rules": []}', "unsupported rule file version 2"),
        ('{"rules": {"name": "a"}}', "expected a list of rules"),
        ('[{"name": "a", "colour": "red"}]', "rule 'a': unknown field 'colour'"),
        ('[{"name": "a", "actions": [{"type": "mail"}]}]', "unknown action type 'mail'"),
        ('[{"name": "a", "actions": [{"type": "store", "x": 1}]}]', "unknown store action field"),
        ('[{"name": "a", "actions": [{"type": "republish", "topic": "/sys/x"}]}]', "/lab/rules/"),
        ('[{"name": "a", "kind": "weather"}]', "unknown kind 'weather'"),
        ('[{"name": "a b"}]', "rule name 'a b'"),
        ('[{"name": "e", "kind": "event", "actions": [{"type": "store"}]}]', "measurepoint rules"),
        ("[{", "not valid JSON"),
    ],
)
def test_bad_rule_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_rules(text, source="rules.json")


def test_a_bad_expression_in_a_yaml_file_names_the_rule_and_the_column() -> None:
    text = "rules:\n  - name: hot\n    condition: ${temp} >> 5\n"
    with pytest.raises(ExpressionError) as caught:
        parse_rules(text, fmt="yaml")
    assert caught.value.rule == "hot" and caught.value.position == 9


def test_yaml_is_read_safely() -> None:
    text = "rules: !!python/object/apply:os.system ['true']\n"
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        parse_rules(text, fmt="yaml")


def test_dump_refuses_an_unknown_format() -> None:
    with pytest.raises(InvalidArgument, match="unknown rule file format 'xml'"):
        dump_rules(RULES, fmt="xml")
