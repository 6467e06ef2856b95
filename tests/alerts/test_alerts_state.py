"""The alert state machine: every transition, on event time, fed point by point."""

from __future__ import annotations

from typing import Any

import pytest

from enos_lab.alerts import (
    FAULT,
    WARNING,
    AlertPhase,
    AlertRule,
    AlertState,
    Escalated,
    Escalation,
    Fired,
    FlapPhase,
    Flapping,
    FlapPolicy,
    Recovered,
    Sample,
    Severity,
    Suppressed,
)

S = 1000  # one second [ms]
CRITICAL = Severity("org.critical", "Critical", 4)


def state(**changes: Any) -> AlertState:
    fields: dict[str, Any] = {
        "rule_id": "overheat",
        "model_id": "pv_inverter",
        "measurepoint": "temp",
        "condition": "${temp} > 50",
        "strict": False,
    }
    fields.update(changes)
    return AlertState(AlertRule(**fields))


def feed(st: AlertState, value: float, t: int, *, fire: float = 50, clear: float | None = None):
    """Observe a temperature at ``t`` [ms]: anomaly above ``fire``, recovered below ``clear``."""
    recovered = None if clear is None else value < clear
    return st.observe(t, value > fire, recovered, value)


def test_without_delay_the_first_anomaly_fires_and_the_first_normal_point_recovers() -> None:
    st = state()
    assert feed(st, 40, 0) == () and st.phase is AlertPhase.NORMAL and st.next_due() is None
    (fired,) = feed(st, 51, 1 * S)
    assert fired == Fired(
        occur_time_ms=S,
        value=51,
        severity=WARNING,
        started=Sample(S, 51),
        confirmed=Sample(S, 51),
        anomalies=1,
        by_timer=False,
    )
    assert fired.time_ms == S and st.active and st.current == fired and st.severity is WARNING
    assert feed(st, 60, 2 * S) == ()  # still anomalous: nothing new
    assert feed(st, 50, 3 * S) == (Recovered(recover_time_ms=3 * S, value=50, occur_time_ms=S),)
    assert st.phase is AlertPhase.NORMAL and st.current is None and st.severity is None
    (again,) = feed(st, 52, 4 * S)  # a new anomaly is a new alert
    assert isinstance(again, Fired) and again.occur_time_ms == 4 * S


def test_with_a_delay_it_fires_at_t0_plus_delay_with_the_value_when_the_timer_started() -> None:
    st = state(delay=60)
    assert feed(st, 51, 0) == () and st.phase is AlertPhase.PENDING
    assert st.pending_since == Sample(0, 51)
    assert feed(st, 58, 30 * S) == ()
    assert st.next_due() == 60 * S + 1  # a point at exactly 60 s could still reset it
    assert st.due(60 * S) == ()
    (fired,) = st.due(60 * S + 1)
    assert isinstance(fired, Fired)
    assert (fired.occur_time_ms, fired.value, fired.by_timer) == (60 * S, 51, True)
    assert fired.started == Sample(0, 51) and fired.confirmed == Sample(30 * S, 58)
    assert fired.anomalies == 2 and st.active and st.next_due() is None
    assert st.due(70 * S) == ()  # nothing twice


def test_a_later_point_applies_the_delay_before_it_is_handled() -> None:
    st = state(delay=60)
    feed(st, 51, 0)
    fired, recovered = feed(st, 40, 90 * S)  # nobody called due: the point does it first
    assert isinstance(fired, Fired) and fired.occur_time_ms == 60 * S and fired.value == 51
    assert recovered == Recovered(90 * S, 40, 60 * S)


def test_an_anomalous_point_at_the_deadline_fires_it_itself() -> None:
    st = state(delay=60)
    feed(st, 51, 0)
    (fired,) = feed(st, 55, 60 * S)
    assert isinstance(fired, Fired)
    assert (fired.occur_time_ms, fired.value, fired.by_timer) == (60 * S, 51, False)


@pytest.mark.parametrize("reset_at", [1, 30 * S, 60 * S])
def test_a_recovering_point_within_the_delay_resets_the_timer(reset_at: int) -> None:
    st = state(delay=60)
    feed(st, 51, 0)
    assert feed(st, 45, reset_at) == ()
    assert st.phase is AlertPhase.NORMAL and st.resets == 1 and st.next_due() is None
    assert st.due(10_000 * S) == ()


def test_a_reoccurring_anomaly_restarts_the_delay_from_zero() -> None:
    st = state(delay=60)
    feed(st, 51, 0)
    feed(st, 45, 50 * S)
    feed(st, 52, 55 * S)  # t0 is now 55 s
    assert st.due(61 * S) == ()
    assert st.next_due() == 115 * S + 1
    (fired,) = st.due(116 * S)
    assert isinstance(fired, Fired) and fired.occur_time_ms == 115 * S and fired.value == 52


def test_hysteresis_fires_above_50_and_recovers_only_below_45() -> None:
    st = state(recover_condition="${temp} < 45")
    assert isinstance(feed(st, 51, 0, clear=45)[0], Fired)
    assert feed(st, 48, 1 * S, clear=45) == ()  # deadband: still active
    assert feed(st, 45, 2 * S, clear=45) == ()
    assert st.active
    (recovered,) = feed(st, 44.9, 3 * S, clear=45)
    assert recovered == Recovered(3 * S, 44.9, 0)


def test_an_anomaly_never_recovers_even_if_the_recover_condition_holds() -> None:
    st = state(recover_condition="${temp} < 60")
    st.observe(0, True, True, 55)  # both hold: an anomaly
    assert st.active
    assert st.observe(1 * S, True, True, 55) == ()
    assert isinstance(st.observe(2 * S, False, True, 40)[0], Recovered)


def test_with_hysteresis_a_deadband_point_neither_resets_the_delay_nor_breaks_the_run() -> None:
    st = state(delay=60, recover_condition="${temp} < 45", min_repeat=2)
    feed(st, 51, 0, clear=45)
    feed(st, 48, 20 * S, clear=45)  # deadband
    assert st.phase is AlertPhase.PENDING and st.resets == 0
    assert st.next_due() is None  # one anomaly of two so far
    feed(st, 52, 40 * S, clear=45)
    (fired,) = st.due(60 * S + 1)
    assert isinstance(fired, Fired) and fired.anomalies == 2 and fired.occur_time_ms == 60 * S


def test_min_repeat_needs_consecutive_anomalies() -> None:
    st = state(min_repeat=3)
    assert feed(st, 51, 0) == () and feed(st, 52, 1 * S) == ()
    feed(st, 40, 2 * S)  # breaks the run
    assert st.phase is AlertPhase.NORMAL and st.resets == 1
    assert feed(st, 51, 3 * S) == () and feed(st, 52, 4 * S) == ()
    (fired,) = feed(st, 53, 5 * S)
    assert isinstance(fired, Fired)
    assert (fired.occur_time_ms, fired.value, fired.anomalies) == (5 * S, 53, 3)
    assert fired.started == Sample(3 * S, 51) and fired.confirmed == Sample(5 * S, 53)


def test_min_repeat_with_a_delay_fires_at_the_later_of_the_two() -> None:
    early = state(delay=10, min_repeat=2)  # the 2nd point comes before the delay's end
    feed(early, 51, 0)
    feed(early, 52, 5 * S)
    (fired,) = early.due(11 * S)
    assert isinstance(fired, Fired) and fired.occur_time_ms == 10 * S and fired.by_timer
    late = state(delay=10, min_repeat=2)  # ... or after it
    feed(late, 51, 0)
    assert late.due(30 * S) == ()
    (fired,) = feed(late, 52, 30 * S)
    assert isinstance(fired, Fired) and fired.occur_time_ms == 30 * S and fired.value == 51


def test_escalation_steps_while_the_alert_stays_active() -> None:
    st = state(escalation=[(60, FAULT), (120, CRITICAL)])
    feed(st, 51, 0)
    assert st.next_due() == 60 * S + 1
    assert st.due(60 * S) == ()
    assert st.due(60 * S + 1) == (Escalated(60 * S, FAULT, WARNING, 0),)
    assert st.severity is FAULT
    (step,) = feed(st, 55, 200 * S)  # a point applies the step that was due before it
    assert step == Escalated(120 * S, CRITICAL, FAULT, 0)
    assert st.next_due() is None
    (recovered,) = feed(st, 40, 201 * S)
    assert isinstance(recovered, Recovered) and st.severity is None
    (fired,) = feed(st, 51, 300 * S)  # a new alert starts from the rule's severity
    assert isinstance(fired, Fired) and fired.severity is WARNING and st.severity is WARNING


def test_a_recovery_at_the_escalation_instant_prevents_it() -> None:
    st = state(escalation=[Escalation(60, FAULT)])
    feed(st, 51, 0)
    assert isinstance(feed(st, 40, 60 * S)[0], Recovered)
    assert st.next_due() is None and st.due(1000 * S) == ()


def flapper() -> AlertState:
    return state(flapping=FlapPolicy(changes=3, window=60))


def test_flapping_starts_after_too_many_changes_and_suppresses_notifications() -> None:
    st = flapper()
    assert isinstance(feed(st, 51, 0)[0], Fired)
    assert isinstance(feed(st, 40, 10 * S)[0], Recovered)
    assert isinstance(feed(st, 51, 20 * S)[0], Fired)  # 3 changes: not yet
    started, held = feed(st, 40, 30 * S)  # the 4th within 60 s
    assert started == Flapping(30 * S, FlapPhase.STARTED, 4)
    assert held == Suppressed(Recovered(30 * S, 40, 20 * S)) and held.time_ms == 30 * S
    assert st.flapping and st.suppressed == 1
    (held,) = feed(st, 51, 40 * S)
    assert isinstance(held, Suppressed) and isinstance(held.transition, Fired)
    assert st.active  # the state follows the points all the same
    assert st.next_due() == 100 * S + 1  # quiet for a whole window after 40 s
    # last notified: the alert fired at 20 s; it is active again when flapping ends, so its
    # flaps merge into that one alert and nothing is owed
    assert st.due(100 * S + 1) == (Flapping(100 * S, FlapPhase.ENDED, 0),)
    assert not st.flapping and st.active


def test_when_flapping_ends_what_is_held_back_and_still_true_is_reported_once() -> None:
    st = flapper()
    for i, value in enumerate([51, 40, 51]):  # notified: fired, recovered, fired
        feed(st, value, i * 10 * S)
    feed(st, 40, 30 * S)  # flapping starts; the recovery is held back
    feed(st, 51, 40 * S)  # held back
    feed(st, 40, 50 * S)  # held back: the alert notified at 20 s has recovered meanwhile
    assert not st.active and st.flapping
    assert st.due(110 * S) == ()  # a change at exactly 110 s could still keep it flapping
    ended, recovered = st.due(110 * S + 1)
    assert ended == Flapping(110 * S, FlapPhase.ENDED, 0)
    assert recovered == Recovered(50 * S, 40, 20 * S)  # ends the alert notified at 20 s
    assert not st.flapping and st.next_due() is None
    assert isinstance(feed(st, 51, 200 * S)[0], Fired)  # notifications resume


def test_an_alert_active_when_flapping_ends_is_reported_with_its_escalated_severity() -> None:
    st = state(flapping=FlapPolicy(changes=2, window=60), escalation=[(30, FAULT)])
    feed(st, 51, 0)
    feed(st, 40, 10 * S)  # notified: fired, recovered
    started, held = feed(st, 51, 20 * S)  # the 3rd change: flapping, the fire held back
    assert isinstance(started, Flapping) and held == Suppressed(st.current)  # type: ignore[arg-type]
    (step,) = st.due(50 * S + 1)  # the escalation comes while flapping: held back
    assert step == Suppressed(Escalated(50 * S, FAULT, WARNING, 20 * S))
    ended, fired = st.due(80 * S + 1)
    assert ended == Flapping(80 * S, FlapPhase.ENDED, 0)
    assert isinstance(fired, Fired) and fired.occur_time_ms == 20 * S and fired.severity is FAULT


def test_a_notified_alert_whose_severity_climbed_while_flapping_is_escalated_at_the_end() -> None:
    st = state(flapping=FlapPolicy(changes=1, window=60), escalation=[(30, FAULT)])
    feed(st, 51, 0)  # fired, notified
    started, held = feed(st, 40, 10 * S)  # the 2nd change: flapping
    assert isinstance(started, Flapping) and isinstance(held, Suppressed)
    (held,) = feed(st, 51, 20 * S)
    assert isinstance(held, Suppressed)
    (step,) = st.due(50 * S + 1)
    assert isinstance(step, Suppressed)
    # the alert notified at 0 s is active again: it stays that alert, at its new severity
    assert st.due(80 * S + 1) == (
        Flapping(80 * S, FlapPhase.ENDED, 0),
        Escalated(80 * S, FAULT, WARNING, 0),
    )


def test_late_and_duplicate_points_are_ignored_and_counted() -> None:
    st = state()
    feed(st, 51, 10 * S)
    assert feed(st, 40, 10 * S) == () and st.duplicates == 1  # same time
    assert feed(st, 40, 5 * S) == () and st.late == 1  # older
    assert st.active and st.points == 1 and st.last_time_ms == 10 * S
    assert isinstance(feed(st, 40, 11 * S)[0], Recovered)


def test_a_point_not_newer_than_an_applied_deadline_is_late() -> None:
    st = state(delay=60)
    feed(st, 51, 0)
    assert isinstance(st.due(70 * S)[0], Fired)  # the clock ran past 60 s
    assert feed(st, 40, 30 * S) == () and feed(st, 40, 60 * S) == ()  # decided already
    assert st.late == 2 and st.active
    assert isinstance(feed(st, 40, 60 * S + 1)[0], Recovered)


def test_a_device_status_rule_is_driven_the_same_way() -> None:
    st = state(measurepoint=None, device_status="offline", condition="", delay=300, strict=True)
    assert st.observe(0, anomaly=True, value="offline") == ()
    (fired,) = st.due(300 * S + 1)
    assert isinstance(fired, Fired) and fired.value == "offline"
    assert st.observe(400 * S, anomaly=False, value="online") == (
        Recovered(400 * S, "online", 300 * S),
    )
