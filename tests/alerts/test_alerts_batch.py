"""The alert engine's batch path: conditions evaluated over the points of one batch (thresholds
with numpy, others over a frame) give the same alerts as the points taken one by one;
threshold masks match the language."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.alerts import AlertEngine, AlertRecords, AlertRule
from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.model import load_library
from enos_lab.rules import compile_expression
from enos_lab.tap import PointStored

T0 = 1_700_000_000_000  # [ms]
MODEL = load_library().get("pv_inverter")
PK = "pk"
CONDITIONS = [
    "${active_power} > 5",
    "${active_power} <= 2.5",
    "${active_power} != 3",
    "4 < ${active_power}",
    "${active_power} >= ${rated_power}",
    "${active_power} > 5 and ${active_power} < 9",  # not a threshold: a frame
    "${active_power} > ${rated_power} or ${active_power} < -2",  # a frame with an attribute
]
OPS = ["<", "<=", ">", ">=", "==", "!="]
NUMBERS = st.one_of(
    st.integers(-5, 12).map(float),
    st.sampled_from([math.nan, math.inf, -math.inf, 2.5, 5.0000001]),
)


@given(
    op=st.sampled_from(OPS),
    constant=NUMBERS,
    values=st.lists(NUMBERS, max_size=30),
    attribute=st.booleans(),
)
def test_threshold_masks_match_row_by_row_evaluation(
    op: str, constant: float, values: list[float], attribute: bool
) -> None:
    if not attribute and not math.isfinite(constant):
        constant = 5.0  # a literal is always finite
    right = "${rated_power}" if attribute else repr(constant)
    expression = compile_expression(f"${{active_power}} {op} {right}", model=MODEL)
    threshold = expression.threshold
    assert threshold is not None
    array = np.array(values, dtype=np.float64)
    limits = np.full(len(values), constant) if attribute else None
    mask = threshold.mask(array, limits)
    for i, value in enumerate(values):
        attrs = {"rated_power": constant} if attribute else {}
        want = expression.evaluate({"active_power": value}, attrs) is True
        assert bool(mask[i]) == want, (value, constant, op)


@st.composite
def batches(draw: st.DrawFn) -> tuple[AlertRule, list[PointStored], dict[str, dict[str, float]]]:
    condition = draw(st.sampled_from(CONDITIONS))
    hysteresis = draw(st.booleans()) and "rated" not in condition
    rule = AlertRule(
        rule_id="r",
        model_id="pv_inverter",
        measurepoint="active_power",
        condition=condition,
        recover_condition="${active_power} < 1" if hysteresis else None,
        min_repeat=draw(st.integers(1, 3)),
        scope=draw(st.sampled_from([(), ("d0", "d2")])),
    )
    devices = [f"d{i}" for i in range(draw(st.integers(1, 4)))]
    attributes = {
        dk: ({} if draw(st.booleans()) and dk == "d1" else {"rated_power": draw(NUMBERS)})
        for dk in devices
    }
    events = []
    for step in range(draw(st.integers(0, 90))):
        dk = draw(st.sampled_from(devices))
        value = draw(NUMBERS | st.just(None)) if draw(st.integers(0, 20)) == 0 else draw(NUMBERS)
        events.append(
            PointStored(
                PK,
                dk,
                draw(st.sampled_from(["active_power", "active_power", "efficiency"])),
                from_epoch_ms(T0 + step * 1000),
                value,
                resume=draw(st.integers(0, 9)) == 0,
            )
        )
    return rule, events, attributes


def run(
    rule: AlertRule, batches: list[list[PointStored]], attributes: dict[str, dict[str, float]]
) -> tuple[object, ...]:
    clock = SimulatedClock(from_epoch_ms(T0))
    with AlertRecords(":memory:", clock=clock) as records:
        engine = AlertEngine(
            records,
            load_library(),
            clock=clock,
            model_of=lambda pk: "pv_inverter",
            attributes=lambda pk, dk: attributes[dk],
        )
        engine.add_rule(rule)
        for batch in batches:
            engine.on_events(batch)
        frame = records.history(include_active=True)
        columns = ("device_key", "occur_time", "recover_time", "value")
        alerts = [tuple(str(row[c]) for c in columns) for _, row in frame.iterrows()]
        stats = engine.stats
        return alerts, stats.fired, stats.recovered, stats.skipped, dict(stats.skips_by_device)


@settings(max_examples=150, deadline=None)
@given(batches(), st.data())
def test_a_batch_gives_the_alerts_of_its_points_one_by_one(
    case: tuple, data: st.DataObject
) -> None:  # type: ignore[type-arg]
    rule, events, attributes = case
    one_by_one = run(rule, [[event] for event in events], attributes)
    assert run(rule, [events], attributes) == one_by_one
    # in several batches: states (active alerts among them) carried from one to the next
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    bounds = [0, *cuts, len(events)]
    batches = [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    assert run(rule, batches, attributes) == one_by_one
