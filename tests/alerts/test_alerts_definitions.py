"""Alert definitions: EnOS's field rules and the beyond-EnOS policies, checked when made."""

from __future__ import annotations

import dataclasses
import math

import pytest

from enos_lab.alerts import (
    DEFAULT_SEVERITIES,
    FAULT,
    INFO,
    WARNING,
    AlertContent,
    AlertRule,
    AlertType,
    Escalation,
    FlapPolicy,
    Severity,
)
from enos_lab.errors import InvalidArgument

CRITICAL = Severity("org.critical", "Critical", 4)


def rule(**changes: object) -> AlertRule:
    fields: dict[str, object] = {
        "rule_id": "overheat",
        "model_id": "pv_inverter",
        "measurepoint": "temp",
        "condition": "${temp} > 50",
    }
    fields.update(changes)
    return AlertRule(**fields)  # type: ignore[arg-type]


def test_enos_default_severities_are_info_warning_fault_in_rising_order() -> None:
    assert [(s.severity_id, s.name) for s in DEFAULT_SEVERITIES] == [
        ("398000001", "Info"),
        ("398000002", "Warning"),
        ("398000003", "Fault"),
    ]
    assert INFO.level < WARNING.level < FAULT.level
    assert rule().severity is WARNING
    assert rule(severity=CRITICAL).severity == CRITICAL


@pytest.mark.parametrize("bad", ["", "has space", "x" * 51, "ümlaut", "a/b", 7, None])
def test_a_rule_id_is_1_to_50_letters_digits_dots_underscores_dashes(bad: object) -> None:
    with pytest.raises(InvalidArgument, match=r"rule_id.*EnOS"):
        rule(rule_id=bad)


def test_a_good_rule_keeps_its_fields_and_is_frozen() -> None:
    good = rule(rule_id="Inv.temp_high-1" + "x" * 35, tags={"site": "north"}, scope=["d1", "d2"])
    assert len(good.rule_id) == 50
    assert good.scope == ("d1", "d2") and good.tags["site"] == "north"
    assert good.enabled and not good.is_root and good.min_repeat == 1 and not good.hysteresis
    assert good.applies_to("d1") and not good.applies_to("d3") and rule().applies_to("any")
    with pytest.raises(dataclasses.FrozenInstanceError):
        good.delay = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        good.tags["site"] = "south"  # type: ignore[index]


def test_a_rule_has_exactly_one_trigger() -> None:
    with pytest.raises(InvalidArgument, match=r"'overheat'.*exactly one trigger"):
        rule(measurepoint=None)
    with pytest.raises(InvalidArgument, match="exactly one trigger"):
        rule(device_status="offline")
    offline = rule(measurepoint=None, device_status="offline", condition="")
    assert offline.device_status == "offline"
    with pytest.raises(InvalidArgument, match=r"device_status must be one of.*'online'"):
        rule(measurepoint=None, device_status="online", condition="")
    with pytest.raises(InvalidArgument, match="measurepoint trigger needs a condition"):
        rule(condition="")
    with pytest.raises(InvalidArgument, match="'overheat': measurepoint"):
        rule(measurepoint="")
    with pytest.raises(InvalidArgument, match="'overheat': condition"):
        rule(condition="${temp} > 1" * 1000)
    with pytest.raises(InvalidArgument, match="'overheat': model_id"):
        rule(model_id="")


@pytest.mark.parametrize("delay", [0, 60, 61.5, 3600, 10800])
def test_enos_delays_are_0_or_60_to_10800_seconds(delay: float) -> None:
    assert rule(delay=delay).delay_ms == round(delay * 1000)


@pytest.mark.parametrize("delay", [1, 59, 59.999, 10800.5, 86400])
def test_other_delays_are_refused_unless_not_strict(delay: float) -> None:
    with pytest.raises(InvalidArgument, match=r"'overheat': delay must be 0 or 60\.\.10800 s"):
        rule(delay=delay)
    assert rule(delay=delay, strict=False).delay == delay


@pytest.mark.parametrize("delay", [-1, math.nan, math.inf, True, "60"])
def test_a_delay_is_a_finite_duration_even_when_not_strict(delay: object) -> None:
    with pytest.raises(InvalidArgument, match="'overheat': delay must be a duration"):
        rule(delay=delay, strict=False)


def test_policies_beyond_enos_are_checked() -> None:
    hyst = rule(recover_condition="${temp} < 45", min_repeat=3)
    assert hyst.hysteresis and hyst.min_repeat == 3
    with pytest.raises(InvalidArgument, match="recover_condition"):
        rule(recover_condition="")
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidArgument, match="min_repeat must be an int >= 1"):
            rule(min_repeat=bad)
    with pytest.raises(InvalidArgument, match="flapping must be a FlapPolicy"):
        rule(flapping=(3, 60))
    with pytest.raises(InvalidArgument, match="changes must be an int >= 1"):
        FlapPolicy(0, 60)
    with pytest.raises(InvalidArgument, match="window must be a duration > 0"):
        FlapPolicy(3, 0)
    assert FlapPolicy(3, 1.5).window_ms == 1500


def test_escalation_steps_come_later_and_climb() -> None:
    steps = rule(escalation=[(600, FAULT), Escalation(1800, CRITICAL)]).escalation
    assert steps == (Escalation(600, FAULT), Escalation(1800, CRITICAL))
    assert steps[0].after_ms == 600_000
    with pytest.raises(InvalidArgument, match="later and later"):
        rule(escalation=[(600, FAULT), (600, CRITICAL)])
    with pytest.raises(InvalidArgument, match=r"'Warning' .*does not climb above 'Warning'"):
        rule(escalation=[(600, WARNING)])
    with pytest.raises(InvalidArgument, match=r"'Fault'.*does not climb above 'Critical'"):
        rule(escalation=[(600, CRITICAL), (900, FAULT)])
    with pytest.raises(InvalidArgument, match=r"Escalation.after must be a duration > 0"):
        rule(escalation=[(0, FAULT)])
    with pytest.raises(InvalidArgument, match="escalation steps are"):
        rule(escalation=[FAULT])


def test_scope_tags_and_flags_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="scope must be a sequence"):
        rule(scope="d1")
    with pytest.raises(InvalidArgument, match="scope entry"):
        rule(scope=["d1", ""])
    with pytest.raises(InvalidArgument, match="tags must be a mapping"):
        rule(tags=["a"])
    with pytest.raises(InvalidArgument, match="tag key"):
        rule(tags={"": "x"})
    with pytest.raises(InvalidArgument, match="enabled must be a bool"):
        rule(enabled=1)
    with pytest.raises(InvalidArgument, match="severity must be a Severity"):
        rule(severity="398000002")


def test_types_and_contents() -> None:
    over = AlertType("over-limit", "Over the limit")
    temp = AlertType("over-limit.temp", "Temperature over the limit", parent_id="over-limit")
    content = AlertContent("c1", "Inverter too hot", type=over, subtype=temp)
    assert rule(content=content).content is content
    with pytest.raises(InvalidArgument, match=r"'c2': subtype 'over-limit.temp' has parent"):
        AlertContent("c2", type=AlertType("other"), subtype=temp)
    with pytest.raises(InvalidArgument, match="needs a type"):
        AlertContent("c3", subtype=temp)
    with pytest.raises(InvalidArgument, match="not its own parent"):
        AlertType("t", parent_id="t")
    with pytest.raises(InvalidArgument, match=r"Severity.severity_id"):
        Severity("", "Nothing", 0)
    with pytest.raises(InvalidArgument, match="level must be an int"):
        Severity("s", "S", True)


def test_every_public_name_resolves_and_every_class_has_a_docstring_of_its_own() -> None:
    from enos_lab import alerts

    for name in alerts.__all__:
        obj = getattr(alerts, name)
        if isinstance(obj, type):
            doc = vars(obj).get("__doc__") or ""
            assert doc.strip() and not doc.startswith(f"{name}("), name
