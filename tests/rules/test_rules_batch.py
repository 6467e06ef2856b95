"""The rule engine's batch evaluation gives what evaluating message by message gives: the same
rows stored, in the same order per device and point, and the same counters, for random rule
sets and batches with missing points, nulls, values of the wrong kind and devices lacking
attributes."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enos_lab.model import load_library
from enos_lab.rules import Call, Republish, Rule, RuleEngine, RuleMatch, Store
from enos_lab.rules._batch import BATCH_MIN

T0 = 1_700_000_000_000  # [ms]
MODELS = load_library()
PRODUCTS = {"pm": "energy_meter", "pw": "wind_turbine", "px": None}

RULES = [  # the shapes of benchmarks/rules_100.yaml and tests/rules
    Rule("store-valid", models=["energy_meter"],
         condition="${frequency} > 45 and ${frequency} < 65"),
    Rule("active-power-kw", models=["energy_meter"], points=["active_power"],
         transform={"active_power_kw": "${active_power} / 1000"},
         actions=[Store(derived_only=True)]),
    Rule("implausible", models=["energy_meter"], points=["active_power"],
         condition="abs(${active_power}) > 1e9",
         actions=[Republish("/lab/rules/{deviceKey}/implausible")]),
    Rule("not-null", points=["active_power"], condition="${active_power} is not null"),
    Rule("hot", condition="${active_power} > 100"),
    Rule("below", condition="-5 >= ${frequency}"),
    Rule("over-ratio", models=["energy_meter"], condition="${active_power} > ${ct_ratio}"),
    Rule("acme", models=["energy_meter"], condition="${manufacturer} == 'acme'",
         transform={"scaled": "${active_power} * ${pt_ratio}", "who": "${manufacturer}"}),
    Rule("freq-only", points=["frequency"]),
    Rule("d1-only", devices=["d1"], transform={"twice": "${frequency} * 2"}),
    Rule("north", tags={"site": "north"}, condition="${frequency} != 50"),
    Rule("untyped", condition="${temp} > 5"),
    Rule("mixed", models=["energy_meter"],
         condition="${frequency} in [50, 60] or round(${active_power}) == 0",
         transform={"ratio": "${active_power} / ${frequency}"}),
    Rule("everything"),
]  # fmt: skip

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 49.5, 50.0, 60.0, 150.0, -7.0, 2e9, 10**400, 3, None, True, "x"]),
)
POINTS = ["frequency", "active_power", "temp", "manufacturer"]
ATTRS = st.fixed_dictionaries(
    {},
    optional={
        "ct_ratio": st.sampled_from([1.0, 200.0, None, "big", math.inf]),
        "pt_ratio": st.sampled_from([1.0, 0.5, None]),
        "manufacturer": st.sampled_from(["acme", "other", None, 3.0]),
    },
)
DEVICES = ["d0", "d1", "d2", "d3"]


def _per_point(rows: list[Any]) -> list[Any]:
    """The rows in their order per (product, device, point): what the store and the tap's
    consumers depend on."""
    return sorted(rows, key=lambda row: (row[0], row[1], row[2]))


def _engine(rules: list[Rule], info: dict[str, Any], vector_min: int | None) -> RuleEngine:
    engine = RuleEngine(
        rules,
        models=MODELS,
        model_of=PRODUCTS.get,
        device_info=lambda pk, dk: info[dk],
    )
    engine.vector_min = vector_min
    return engine


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.lists(st.sampled_from(RULES), min_size=1, max_size=6, unique_by=lambda r: r.name),
    attributes=st.lists(ATTRS, min_size=len(DEVICES), max_size=len(DEVICES)),
    tags=st.lists(st.sampled_from(["north", "south"]), min_size=4, max_size=4),
    posts=st.lists(
        st.tuples(
            st.sampled_from(list(PRODUCTS)),
            st.sampled_from(DEVICES),
            st.dictionaries(st.sampled_from(POINTS), VALUES, min_size=1),
        ),
        max_size=3 * BATCH_MIN,
    ),
    vector_min=st.sampled_from([1, 2, BATCH_MIN]),
)
def test_batches_route_as_messages_one_by_one(
    chosen: list[Rule],
    attributes: list[dict[str, Any]],
    tags: list[str],
    posts: list[tuple[str, str, dict[str, Any]]],
    vector_min: int,
) -> None:
    info = {dk: (attributes[i], {"site": tags[i]}) for i, dk in enumerate(DEVICES)}
    rows = [
        (pk, dk, point, T0 + i, value, None, i % 5 == 0)
        for i, (pk, dk, points) in enumerate(posts)
        for point, value in points.items()
    ]
    one_by_one = _engine(chosen, info, None)
    batched = _engine(chosen, info, vector_min)
    assert _per_point(batched.route(list(rows))) == _per_point(one_by_one.route(list(rows)))
    assert batched.stats() == one_by_one.stats()


def test_a_batch_of_one_product_is_decided_together() -> None:
    """The benchmark's shape: every message decided over the frame, none one by one."""
    info = {dk: ({"ct_ratio": 1.0}, {}) for dk in DEVICES}
    engine = _engine(RULES[:2], info, BATCH_MIN)
    rows = [
        (pk, f"d{i % 4}", point, T0 + i, value, None, False)
        for i in range(BATCH_MIN)
        for pk, point, value in (("pm", "frequency", 50.0), ("pm", "active_power", 2000.0 + i))
    ]
    derived = [
        ("pm", f"d{i % 4}", "active_power_kw", T0 + i, (2000.0 + i) / 1000, None, False)
        for i in range(BATCH_MIN)
    ]
    assert _per_point(engine.route(rows)) == _per_point(rows + derived)
    stats = engine.stats()
    assert stats["store-valid"].matched == BATCH_MIN and stats["store-valid"].skipped == 0
    assert stats["active-power-kw"].derived == BATCH_MIN


def _tap_rules(out: list[RuleMatch]) -> list[Rule]:
    """Rules that act on the tap (a Call), of the shapes above, reporting to ``out``."""
    call = [Call(out.append)]
    return [
        Rule(r.name, models=r.models, devices=r.devices, tags=r.tags, points=r.points,
             condition=r.condition, transform=r.transform, actions=call)
        for r in RULES
    ]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.sets(st.integers(0, len(RULES) - 1), min_size=1, max_size=6),
    attributes=st.lists(ATTRS, min_size=len(DEVICES), max_size=len(DEVICES)),
    posts=st.lists(
        st.tuples(
            st.sampled_from(list(PRODUCTS)),
            st.sampled_from(DEVICES),
            st.dictionaries(st.sampled_from(POINTS), VALUES, min_size=1),
        ),
        max_size=3 * BATCH_MIN,
    ),
    vector_min=st.sampled_from([1, 2, BATCH_MIN]),
)
def test_batches_on_the_tap_match_as_messages_one_by_one(
    chosen: set[int],
    attributes: list[dict[str, Any]],
    posts: list[tuple[str, str, dict[str, Any]]],
    vector_min: int,
) -> None:
    info = {dk: (attributes[i], {"site": "north"}) for i, dk in enumerate(DEVICES)}
    rows = [
        (pk, dk, point, T0 + i, value, None, False)
        for i, (pk, dk, points) in enumerate(posts)
        for point, value in points.items()
    ]
    results = []
    for least in (None, vector_min):
        matches: list[RuleMatch] = []
        rules = [rule for i, rule in enumerate(_tap_rules(matches)) if i in chosen]
        engine = _engine(rules, info, least)
        assert engine.wants_points
        engine.on_rows(rows)
        stats = {name: (s.matched, s.skipped, s.called) for name, s in engine.stats().items()}
        results.append(([(m.rule, m.device_key, m.time, m.ids, m.derived) for m in matches], stats))
    assert results[0] == results[1]
