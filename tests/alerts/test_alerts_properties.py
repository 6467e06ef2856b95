"""Properties of the alert state machine: timers change when an alert is seen, never what it is."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.alerts import (
    FAULT,
    AlertRule,
    AlertState,
    Escalation,
    Fired,
    FlapPolicy,
    Recovered,
    Severity,
    Transition,
)

CRITICAL = Severity("org.critical", "Critical", 4)
START = 1_000_000  # first point's time [ms]


@dataclass(frozen=True)
class Point:
    time_ms: int
    anomaly: bool
    recovered: bool | None
    value: int
    dues: tuple[int, ...]  # due() calls before this point, as offsets (resolved below)


@st.composite
def rules(draw: st.DrawFn) -> AlertRule:
    hysteresis = draw(st.booleans())
    flapping = draw(st.none() | st.builds(FlapPolicy, st.integers(1, 4), st.integers(1, 8)))
    escalation = draw(
        st.sampled_from([(), (Escalation(2, FAULT),), (Escalation(1, FAULT), (5, CRITICAL))])
    )
    return AlertRule(
        rule_id="r",
        model_id="m",
        measurepoint="p",
        condition="${p} > 50",
        recover_condition="${p} < 45" if hysteresis else None,
        delay=draw(st.sampled_from([0, 0.5, 1, 3])),
        strict=False,
        min_repeat=draw(st.integers(1, 3)),
        flapping=flapping,
        escalation=escalation,
    )


@st.composite
def series(draw: st.DrawFn, hysteresis: bool) -> list[Point]:
    points: list[Point] = []
    t = START
    for _ in range(draw(st.integers(0, 40))):
        # mostly forward; sometimes the same time (a duplicate) or back in time (late)
        # on a 250 ms grid, so that points often fall exactly on a deadline
        t += draw(st.sampled_from([0, -750]) | st.integers(1, 10).map(lambda k: k * 250))
        value = draw(st.integers(40, 56))
        anomaly = value > 50
        recovered = (value < 45) if hysteresis else None
        dues = tuple(draw(st.lists(st.integers(0, 20).map(lambda k: k * 250), max_size=3)))
        points.append(Point(t, anomaly, recovered, value, dues))
    return points


def run(rule: AlertRule, points: list[Point], *, with_dues: bool) -> list[Transition]:
    """Feed ``points``; with ``with_dues``, call ``due`` in between at times no later than any
    point still to come (the live engine on a clock); always ``due`` at the end."""
    state = AlertState(rule)
    out: list[Transition] = []
    times = [p.time_ms for p in points]
    for i, point in enumerate(points):
        if with_dues:
            bound = min(times[i:])  # every point still to come is at or after this
            for offset in point.dues:
                out += state.due(bound - offset % 5000)
            nxt = state.next_due()
            if nxt is not None and nxt <= bound:
                out += state.due(nxt)  # exactly when asked to
            out += state.due(bound)  # as late as allowed: the clock at the next point's time
        out += state.observe(point.time_ms, point.anomaly, point.recovered, point.value)
    out += state.due(START + 10**9)
    return out


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_due_calls_at_any_time_give_the_transitions_of_a_single_call_at_the_end(
    data: st.DataObject,
) -> None:
    rule = data.draw(rules())
    points = data.draw(series(rule.hysteresis))
    assert run(rule, points, with_dues=True) == run(rule, points, with_dues=False)


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_notifications_alternate_and_nothing_is_left_due(data: st.DataObject) -> None:
    rule = data.draw(rules())
    points = data.draw(series(rule.hysteresis))
    state = AlertState(rule)
    notified: list[Transition] = []
    for point in points:
        for tr in state.observe(point.time_ms, point.anomaly, point.recovered, point.value):
            if isinstance(tr, Fired | Recovered):
                notified.append(tr)
    notified += [tr for tr in state.due(START + 10**9) if isinstance(tr, Fired | Recovered)]
    # fired, recovered, fired, ...: a recovery always ends the alert notified before it
    for i, tr in enumerate(notified):
        assert isinstance(tr, Fired if i % 2 == 0 else Recovered)
        if isinstance(tr, Recovered):
            before = notified[i - 1]
            assert tr.occur_time_ms == before.time_ms <= tr.recover_time_ms
    assert state.next_due() is None and not state.flapping
    assert state.points + state.late + state.duplicates == len(points)
