"""The alert engine fed tap events directly on an event loop with a simulated clock: escalation
and the end of flapping on the engine's timer, the bound on states, and the model filter.
Records are real SQLite files."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from enos_sdk_helpers import SDK_MODEL

from enos_lab.alerts import (
    FAULT,
    AlertEngine,
    AlertRecords,
    AlertRule,
    Escalation,
    FlapPolicy,
)
from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.model import ModelCatalog, model_from_json
from enos_lab.tap import PointStored

T0 = 1_700_000_000_000  # [ms]


def _run(
    tmp_path: Path,
    rules: list[AlertRule],
    body: Callable[[AlertEngine, AlertRecords, SimulatedClock], Awaitable[None]],
    **engine_kwargs: Any,
) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    models = ModelCatalog()
    models.add(model_from_json(SDK_MODEL))
    products = {"pk": "sdk_meter", "other": "some_other_model"}

    async def main() -> None:
        with AlertRecords(tmp_path / "alerts.db", clock=clock) as records:
            engine = AlertEngine(
                records, models, clock=clock, model_of=products.get, **engine_kwargs
            )
            for rule in rules:
                engine.add_rule(rule)
            try:
                await body(engine, records, clock)
            finally:
                engine.close()

    asyncio.run(main())


def _temp(clock: SimulatedClock, device_key: str, value: float, pk: str = "pk") -> PointStored:
    """A temp point of ``device_key`` at the clock's time."""
    return PointStored(pk, device_key, "temp", from_epoch_ms(clock.time_ms()), value)


HOT = "${temp} > 50"


def test_an_active_alert_escalates_on_the_engine_timer(tmp_path: Path) -> None:
    rule = AlertRule(
        rule_id="hot",
        model_id="sdk_meter",
        measurepoint="temp",
        condition=HOT,
        escalation=(Escalation(300, FAULT),),
    )

    async def body(engine: AlertEngine, records: AlertRecords, clock: SimulatedClock) -> None:
        engine.on_event(_temp(clock, "m1", 60.0))
        engine.on_event(_temp(clock, "m1", 61.0, pk="other"))  # another model: ignored
        (event_id,) = records.active()["event_id"]
        await clock.advance_async(299)
        assert records.get(event_id).severity.name == "Warning"
        await clock.advance_async(2)
        record = records.get(event_id)
        assert record.severity == FAULT
        assert [step.time for step in record.escalations] == [from_epoch_ms(T0 + 300_000)]
        assert engine.stats.escalated == 1 and engine.stats.timer_runs == 1

    _run(tmp_path, [rule], body)


def test_flapping_marks_the_alert_and_its_end_reports_what_holds(tmp_path: Path) -> None:
    rule = AlertRule(
        rule_id="hot",
        model_id="sdk_meter",
        measurepoint="temp",
        condition=HOT,
        flapping=FlapPolicy(changes=2, window=60),
    )

    async def body(engine: AlertEngine, records: AlertRecords, clock: SimulatedClock) -> None:
        for value in (60.0, 40.0, 60.0, 40.0, 60.0):  # fire, recover, fire (flapping) ...
            engine.on_event(_temp(clock, "m1", value))
            await clock.advance_async(1)
        assert engine.stats.fired == 1 and engine.stats.recovered == 1
        assert engine.stats.suppressed == 3 and records.active().empty
        await clock.advance_async(61)  # a quiet window: flapping ends, the alert is reported
        active = records.active()
        assert len(active) == 1
        record = records.get(active["event_id"].iloc[0])
        assert not record.flapping and record.occur_time == from_epoch_ms(T0 + 4000)

    _run(tmp_path, [rule], body)


def test_states_are_bounded_inactive_ones_evicted_first(tmp_path: Path) -> None:
    rule = AlertRule(rule_id="hot", model_id="sdk_meter", measurepoint="temp", condition=HOT)

    async def body(engine: AlertEngine, records: AlertRecords, clock: SimulatedClock) -> None:
        engine.on_event(_temp(clock, "a", 60.0))
        engine.on_event(_temp(clock, "b", 60.0))
        engine.on_event(_temp(clock, "c", 60.0))  # both states hold an alert: dropped
        assert engine.stats.dropped == 1 and engine.state_count == 2
        await clock.advance_async(1)
        engine.on_event(_temp(clock, "a", 40.0))  # a recovers: its state is inactive
        engine.on_event(_temp(clock, "c", 60.0))  # ... and is evicted for c
        assert engine.stats.evicted == 1 and engine.state_count == 2
        assert sorted(records.active()["device_key"]) == ["b", "c"]
        assert engine.state("hot", "pk", "a") is None

    _run(tmp_path, [rule], body, max_states=2)
