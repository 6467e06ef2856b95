"""The vectorised backtest against the live semantics: every transition kind on hand-written
series, bad rows, and a hypothesis property test that the backtest gives the alerts of feeding
the same stored points one by one to :class:`AlertState` (with ``due`` once at the end)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, running_lab, sdk_device, sdk_product
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.alerts import (
    BACKTEST_COLUMNS,
    FAULT,
    RECORD_COLUMNS,
    AlertEngine,
    AlertRecords,
    AlertRule,
    AlertState,
    Escalated,
    Fired,
    FlapPhase,
    Flapping,
    FlapPolicy,
    Recovered,
    Severity,
    backtest,
)
from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.errors import ExpressionError, InvalidArgument
from enos_lab.model import Attribute, DataSpec, DataType, I18nText, Measurepoint, ThingModel
from enos_lab.rules import compile_expression
from enos_lab.tap import PointStored

CRITICAL = Severity("org.critical", "Critical", 4)
T0 = 1_700_000_000_000  # [ms]
MODEL = ThingModel(
    "meter",
    I18nText("Meter"),
    measurepoints={
        "temp": Measurepoint("temp", DataSpec(DataType.DOUBLE)),
        "power": Measurepoint("power", DataSpec(DataType.DOUBLE)),
    },
    attributes={"max_temp": Attribute("max_temp", DataSpec(DataType.DOUBLE))},
)


def rule(**kwargs: Any) -> AlertRule:
    fields: dict[str, Any] = {
        "rule_id": "hot",
        "model_id": "meter",
        "measurepoint": "temp",
        "condition": "${temp} > 50",
        "strict": False,
    }
    return AlertRule(**{**fields, **kwargs})


def frame(
    rows: list[tuple[str, int, Any]], *, pk: str = "pk", resume: bool = False
) -> pd.DataFrame:
    """Store-shaped points: (device_key, offset [s] from T0, temp)."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime([T0 + round(s * 1000) for _, s, _ in rows], unit="ms", utc=True),
            "product_key": [pk] * len(rows),
            "device_key": [dk for dk, _, _ in rows],
            "point_id": ["temp"] * len(rows),
            "value": pd.Series([v for _, _, v in rows], dtype="float64"),
            "resume": [resume] * len(rows),
        }
    )


def at(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(T0 + round(seconds * 1000), unit="ms", tz="UTC")


# ------------------------------------------------------------------ the reference: live semantics


def live(
    alert_rule: AlertRule,
    points: pd.DataFrame,
    *,
    attributes: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    end_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Feed the trigger rows in frame order to one AlertState per device, with ``due(end + 1)``
    at the end, and keep records as the engine does; the alerts in occur order."""
    condition = compile_expression(alert_rule.condition, model=MODEL, name=alert_rule.rule_id)
    recover = (
        compile_expression(alert_rule.recover_condition, model=MODEL)
        if alert_rule.recover_condition
        else None
    )
    rows = points[(points["point_id"] == alert_rule.measurepoint) & ~points["resume"]]
    if end_ms is None:
        end_ms = int(rows["time"].max().value // 1_000_000) if len(rows) else 0
    states: dict[tuple[str, str], AlertState] = {}
    active: dict[tuple[str, str], dict[str, Any]] = {}
    alerts: list[dict[str, Any]] = []

    def act(device: tuple[str, str], transitions: tuple[Any, ...], state: AlertState) -> None:
        for tr in transitions:
            current = active.get(device)
            if isinstance(tr, Fired):
                if current is not None:
                    current["flapping"] = False
                    continue
                active[device] = {
                    "device_key": device[1],
                    "occur_ms": tr.occur_time_ms,
                    "value": tr.value,
                    "recover_ms": None,
                    "severity": tr.severity.severity_id,
                    "flapping": state.flapping,
                    "started": tr.started.time_ms,
                    "confirmed": tr.confirmed.time_ms,
                    "anomalies": tr.anomalies,
                    "by_timer": tr.by_timer,
                    "escalations": [],
                }
                alerts.append(active[device])
            elif current is None:
                continue
            elif isinstance(tr, Recovered):
                current["recover_ms"] = tr.recover_time_ms
                current["flapping"] = False
                del active[device]
            elif isinstance(tr, Escalated):
                current["severity"] = tr.severity.severity_id
                current["escalations"].append(tr.time_ms)
            elif isinstance(tr, Flapping):
                current["flapping"] = tr.phase is FlapPhase.STARTED

    for row in rows.itertuples():
        time_ms = row.time.value // 1_000_000
        if time_ms > end_ms:
            continue
        device = (row.product_key, row.device_key)
        attrs = (attributes or {}).get(device, {})
        try:
            anomaly = condition.evaluate({"temp": row.value}, attrs) is True
            recovered = None if recover is None else recover.evaluate({"temp": row.value}, attrs)
        except Exception:
            continue
        state = states.setdefault(device, AlertState(alert_rule))
        act(device, state.observe(time_ms, anomaly, recovered, row.value), state)
    for device, state in states.items():
        act(device, state.due(end_ms + 1), state)
    return sorted(alerts, key=lambda a: (a["occur_ms"], a["device_key"]))


def found(result: pd.DataFrame) -> list[dict[str, Any]]:
    """The backtest's alerts in the reference's shape."""
    out = []
    for row in result.itertuples():
        recover = None if pd.isna(row.recover_time) else row.recover_time.value // 1_000_000
        out.append(
            {
                "device_key": row.device_key,
                "occur_ms": row.occur_time.value // 1_000_000,
                "value": row.value,
                "recover_ms": recover,
                "severity": row.severity_id,
                "flapping": row.flapping,
                "started": row.explain["started"]["time_ms"],
                "confirmed": row.explain["confirmed"]["time_ms"],
                "anomalies": row.explain["anomalies"],
                "by_timer": row.explain["by_timer"],
                "escalations": [step["time_ms"] for step in row.escalations],
            }
        )
    return out


def same(alert_rule: AlertRule, points: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    """Backtest ``points`` and check it against the reference; return the backtest."""
    end = kwargs.pop("end", None)
    result = backtest(alert_rule, points, model=MODEL, end=end, **kwargs)
    end_ms = None if end is None else int(pd.Timestamp(end).value // 1_000_000)
    assert found(result) == live(alert_rule, points, end_ms=end_ms, **kwargs)
    return result


# ------------------------------------------------------------------ transitions


def test_no_delay_fires_at_the_first_anomaly_and_recovers_at_the_first_normal_point() -> None:
    points = frame([("d1", 0, 40), ("d1", 1, 55), ("d1", 2, 60), ("d1", 3, 45), ("d1", 4, 70)])
    result = same(rule(), points)
    assert list(result.columns) == list(BACKTEST_COLUMNS)
    assert set(BACKTEST_COLUMNS) <= set(RECORD_COLUMNS)
    assert len(result) == 2
    first, second = result.iloc[0], result.iloc[1]
    assert first["occur_time"] == at(1) and first["recover_time"] == at(3)
    assert first["value"] == 55.0 and first["event_type"] == 0
    assert first["explain"] == {
        "started": {"time_ms": T0 + 1000, "value": 55.0},
        "confirmed": {"time_ms": T0 + 1000, "value": 55.0},
        "ended": {"time_ms": T0 + 3000, "value": 45.0},
        "anomalies": 1,
        "by_timer": False,
    }
    assert second["occur_time"] == at(4) and pd.isna(second["recover_time"])
    assert second["event_type"] == 1 and second["explain"]["ended"] is None
    assert str(result["occur_time"].dtype) == "datetime64[ms, UTC]"
    assert result["severity"].tolist() == ["Warning", "Warning"]
    assert result.attrs["points"] == 5 and result.attrs["end"] == at(4)


def test_a_delay_fires_at_t0_plus_delay_with_the_value_when_the_timer_started() -> None:
    points = frame([("d1", 0, 55), ("d1", 30, 56), ("d1", 61, 40)])
    result = same(rule(delay=60), points)
    assert len(result) == 1
    alert = result.iloc[0]
    assert alert["occur_time"] == at(60) and alert["value"] == 55.0
    assert alert["explain"]["by_timer"] and alert["explain"]["anomalies"] == 2
    assert alert["explain"]["confirmed"] == {"time_ms": T0 + 30_000, "value": 56.0}
    assert alert["recover_time"] == at(61)


def test_a_recovering_point_within_the_delay_resets_it_even_at_the_deadline() -> None:
    assert same(rule(delay=60), frame([("d1", 0, 55), ("d1", 60, 40), ("d1", 200, 41)])).empty
    assert same(rule(delay=60), frame([("d1", 0, 55), ("d1", 59, 40), ("d1", 100, 56)])).empty
    # an anomalous point exactly at the deadline fires it itself
    result = same(rule(delay=60), frame([("d1", 0, 55), ("d1", 60, 57)]))
    assert result["occur_time"].tolist() == [at(60)]
    assert not result["explain"].iloc[0]["by_timer"]


def test_end_closes_the_series_a_deadline_at_end_fires_one_after_it_does_not() -> None:
    points = frame([("d1", 0, 55), ("d2", 100, 20)])
    assert same(rule(delay=60), points, end=at(59.999)).empty
    assert len(same(rule(delay=60), points, end=at(60))) == 1
    assert len(same(rule(delay=60), points)) == 1  # default end: the newest point (100 s)
    assert same(rule(delay=60), frame([("d1", 0, 55), ("d1", 30, 56)])).empty  # end = 30 s
    # rows after end are ignored
    cut = same(rule(), frame([("d1", 0, 20), ("d1", 10, 60)]), end=at(5))
    assert cut.empty and cut.attrs["points"] == 1


def test_min_repeat_fires_at_the_nth_anomaly_or_at_the_deadline() -> None:
    points = frame([("d1", 0, 55), ("d1", 1, 56), ("d1", 2, 57), ("d1", 3, 40)])
    result = same(rule(min_repeat=3), points)
    assert result["occur_time"].tolist() == [at(2)]
    assert result["explain"].iloc[0]["anomalies"] == 3
    broken = frame([("d1", 0, 55), ("d1", 1, 56), ("d1", 2, 40), ("d1", 3, 57)])
    assert same(rule(min_repeat=3), broken).empty
    # with a delay: at t0 + D if the n-th came by then, else at the n-th point
    slow = frame([("d1", 0, 55), ("d1", 70, 56), ("d1", 80, 40)])
    assert same(rule(min_repeat=2, delay=60), slow)["occur_time"].tolist() == [at(70)]
    quick = frame([("d1", 0, 55), ("d1", 10, 56), ("d1", 80, 40)])
    assert same(rule(min_repeat=2, delay=60), quick)["occur_time"].tolist() == [at(60)]


def test_hysteresis_the_deadband_neither_recovers_nor_breaks_a_run() -> None:
    hyst = rule(recover_condition="${temp} < 45", min_repeat=2)
    points = frame(
        [("d1", 0, 55), ("d1", 1, 48), ("d1", 2, 56), ("d1", 3, 47), ("d1", 4, 44), ("d1", 5, 60)]
    )
    result = same(hyst, points)
    assert result["occur_time"].tolist() == [at(2)]
    assert result["recover_time"].tolist() == [at(4)]


def test_escalation_steps_before_the_recovery_and_up_to_end() -> None:
    escalating = rule(escalation=((10, FAULT), (20, CRITICAL)))
    points = frame([("d1", 0, 55), ("d1", 12, 56), ("d1", 15, 40), ("d2", 0, 60), ("d2", 20, 61)])
    result = same(escalating, points)
    d1, d2 = result.iloc[0], result.iloc[1]
    assert d1["device_key"] == "d1" and d1["severity"] == "Fault"
    assert [s["time_ms"] for s in d1["escalations"]] == [T0 + 10_000]
    assert d1["escalations"][0]["from"]["name"] == "Warning"
    assert d2["severity"] == "Critical" and d2["severity_level"] == 4  # 20 s <= end
    # a recovering point at the step's instant comes first
    assert same(escalating, frame([("d1", 0, 55), ("d1", 10, 40)]))["severity"].tolist() == [
        "Warning"
    ]


def test_flapping_runs_the_state_machine_and_keeps_records_as_the_engine() -> None:
    flappy = rule(flapping=FlapPolicy(2, 10))
    rows = [("d1", s, 60 if s % 2 == 0 else 40) for s in range(8)] + [("d1", 30, 41)]
    result = same(flappy, frame(rows))  # from the third change on, nothing is notified
    assert result["occur_time"].tolist() == [at(0)] and result["recover_time"].tolist() == [at(1)]
    # still anomalous when flapping ends: the held-back alert is reported then, as one alert
    stuck = [("d1", s, 60 if s % 2 == 0 else 40) for s in range(7)] + [("d1", 30, 70)]
    result = same(flappy, frame(stuck))
    assert len(result) == 2 and result["event_type"].tolist() == [0, 1]
    assert not result["flapping"].iloc[1]


def test_devices_are_independent_and_alerts_come_in_occur_order() -> None:
    points = frame([("b", 0, 20), ("b", 5, 60), ("a", 0, 20), ("a", 9, 60), ("c", 1, 70)])
    result = same(rule(), points)
    assert result["device_key"].tolist() == ["c", "b", "a"]


def test_out_of_order_rows_are_sorted_and_a_repeated_time_keeps_the_first() -> None:
    points = frame([("d1", 2, 40), ("d1", 0, 20), ("d1", 1, 60), ("d1", 1, 10)])
    result = backtest(rule(), points, model=MODEL)
    assert result["occur_time"].tolist() == [at(1)] and result["recover_time"].tolist() == [at(2)]
    assert result.attrs["duplicates"] == 1


def test_resumed_rows_are_skipped_unless_included() -> None:
    history = frame([("d1", 0, 60)], resume=True)
    assert backtest(rule(), history, model=MODEL).empty
    assert backtest(rule(), history, model=MODEL).attrs["resumed_skipped"] == 1
    assert len(backtest(rule(), history, model=MODEL, include_resumed=True)) == 1


def test_other_points_and_devices_out_of_scope_are_ignored() -> None:
    points = frame([("d1", 0, 60), ("d2", 0, 60)])
    points.loc[0, "point_id"] = "power"
    assert backtest(rule(), points, model=MODEL)["device_key"].tolist() == ["d2"]
    assert backtest(rule(scope=("d1",)), points, model=MODEL).empty


def test_attribute_thresholds_per_device_and_a_device_missing_one_is_skipped_and_counted() -> None:
    over = rule(condition="${temp} > ${max_temp}")
    points = frame([("d1", 0, 60), ("d2", 0, 60), ("d3", 0, 60), ("d3", 1, 61)])
    attributes = {
        ("pk", "d1"): {"max_temp": 50.0},
        ("pk", "d2"): {"max_temp": 70},
        ("pk", "d3"): {},
    }
    result = same(over, points, attributes=attributes)
    assert result["device_key"].tolist() == ["d1"]
    assert result.attrs["skipped"] == 2
    assert result.attrs["skips_by_device"] == {("pk", "d3"): 2}
    with pytest.raises(InvalidArgument, match=r"'hot'.*max_temp"):
        backtest(over, points, model=MODEL)


def test_an_attribute_of_the_wrong_kind_skips_that_device_only() -> None:
    over = rule(condition="${temp} > ${max_temp}")
    points = frame([("d1", 0, 60), ("d2", 0, 60)])
    attributes = {("pk", "d1"): {"max_temp": "hot"}, ("pk", "d2"): {"max_temp": 50.0}}
    result = backtest(over, points, model=MODEL, attributes=attributes)
    assert result["device_key"].tolist() == ["d2"]
    assert result.attrs["skips_by_device"] == {("pk", "d1"): 1}


def test_bad_calls_are_refused_with_the_rule_named() -> None:
    points = frame([("d1", 0, 60)])
    with pytest.raises(InvalidArgument, match="device-status"):
        backtest(
            AlertRule(rule_id="off", model_id="meter", device_status="offline"), points, model=MODEL
        )
    with pytest.raises(InvalidArgument, match="'meter'"):
        backtest(rule(model_id="other"), points, model=MODEL)
    with pytest.raises(InvalidArgument, match="value"):
        backtest(rule(), points.drop(columns=["value"]), model=MODEL)
    with pytest.raises(InvalidArgument, match="tz-aware"):
        backtest(rule(), points.assign(time=points["time"].dt.tz_localize(None)), model=MODEL)
    with pytest.raises(ExpressionError, match="'hot'"):
        backtest(rule(condition="${tmp} > 1"), points, model=MODEL)


def test_no_rows_give_an_empty_frame_with_the_columns() -> None:
    result = backtest(rule(), frame([]), model=MODEL)
    assert result.empty and list(result.columns) == list(BACKTEST_COLUMNS)
    assert result.attrs["end"] is None


# ------------------------------------------------------------------ the property


@st.composite
def rules(draw: st.DrawFn) -> AlertRule:
    hysteresis = draw(st.booleans())
    return rule(
        recover_condition="${temp} < 45" if hysteresis else None,
        delay=draw(st.sampled_from([0, 0.002, 0.005, 0.01])),
        min_repeat=draw(st.integers(1, 3)),
        escalation=draw(
            st.sampled_from([(), ((0.003, FAULT),), ((0.002, FAULT), (0.006, CRITICAL))])
        ),
        flapping=draw(
            st.none()
            | st.none()
            | st.builds(FlapPolicy, st.integers(1, 3), st.sampled_from([0.004, 0.01]))
        ),
    )


@st.composite
def stored(draw: st.DrawFn) -> pd.DataFrame:
    """Arrivals with repeats and out-of-order times, as the store holds them: the last write
    of each (device, time), sorted by device and time."""
    arrivals = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["d1", "d2", "d3"]),
                st.integers(0, 40),
                st.sampled_from([None, 20.0, 44.0, 47.0, 50.0, 51.0, 70.0]),
            ),
            max_size=80,
        )
    )
    last = {(dk, ms): value for dk, ms, value in arrivals}
    rows = sorted(last.items())
    return pd.DataFrame(
        {
            "time": pd.to_datetime([T0 + ms for (_, ms), _ in rows], unit="ms", utc=True),
            "product_key": ["pk"] * len(rows),
            "device_key": [dk for (dk, _), _ in rows],
            "point_id": ["temp"] * len(rows),
            "value": pd.Series([v for _, v in rows], dtype="float64"),
            "resume": [False] * len(rows),
        }
    )


@settings(max_examples=400, deadline=None)
@given(rules(), stored(), st.none() | st.integers(0, 60))
def test_the_backtest_gives_the_alerts_of_live_evaluation(
    alert_rule: AlertRule, points: pd.DataFrame, end: int | None
) -> None:
    same(alert_rule, points, end=None if end is None else at(end / 1000))


def test_values_keep_their_type_and_nulls_become_none() -> None:
    result = backtest(rule(), frame([("d1", 0, 60), ("d1", 1, None)]), model=MODEL)
    assert type(result["value"].iloc[0]) is float
    assert type(result["explain"].iloc[0]["started"]["value"]) is float
    assert result["explain"].iloc[0]["ended"] == {"time_ms": T0 + 1000, "value": None}
    assert result["recover_time"].tolist() == [at(1)]  # a null is not an anomaly: it recovers


# ------------------------------------------------------------------ against a real lab


@SDK_WARNINGS
def test_the_backtest_of_the_stored_points_gives_the_live_engines_records(tmp_path: Path) -> None:
    """Devices post through the hub over TCP with the engine on the tap and a simulated clock;
    the backtest of ``lab.store.query_points`` gives the records the engine wrote."""
    over = AlertRule(
        rule_id="over-rated",
        model_id="sdk_meter",
        measurepoint="power",
        condition="${power} > 0.8 * ${rated_power}",
        recover_condition="${power} < 0.7 * ${rated_power}",
        delay=60,
        min_repeat=2,
        escalation=((120, FAULT),),
    )
    clock = SimulatedClock(from_epoch_ms(T0))
    rated = {"a": 10.0, "b": 20.0, "c": 40.0, "bare": None}
    rng = np.random.default_rng(5)
    levels = {dk: rng.choice([0.5, 0.75, 0.9], size=40, p=[0.4, 0.2, 0.4]) for dk in rated}
    for series in levels.values():  # persistent levels: runs long enough for the delay
        series[:] = np.repeat(series[::4], 4)
    with running_lab(tmp_path / "lab", seed=11, clock=clock) as lab:
        pk = sdk_product(lab).product_key
        seen = threading.Semaphore(0)
        with AlertRecords(tmp_path / "alerts.db", clock=clock) as records:

            def attributes_of(product_key: str, device_key: str) -> dict[str, Any]:
                return dict(lab.registry.get_device(product_key, device_key).attributes)

            engine = AlertEngine(
                records,
                lab.models,
                clock=clock,
                model_of=lambda product_key: lab.product(product_key).model_id,
                attributes=attributes_of,
            )
            engine.add_rule(over)

            def on_event(event: object) -> None:  # on the lab's loop
                engine.on_event(event)
                seen.release()

            async def attach() -> Callable[[], None]:
                return lab.tap.add_callback(on_event, kinds=(PointStored,)).cancel

            cancel = lab.run(attach())
            try:
                secrets = {}
                for dk, power in rated.items():
                    secrets[dk] = lab.register_device(pk, device_key=dk).device_secret
                    if power is not None:
                        lab.registry.update_attributes(pk, dk, {"rated_power": power})
                with ExitStack() as stack:
                    sdks = {
                        dk: stack.enter_context(sdk_device(lab, pk, dk, device_secret=secret))
                        for dk, secret in secrets.items()
                    }
                    for sdk in sdks.values():
                        sdk.connect()
                    for k in range(40):
                        for dk, sdk in sdks.items():
                            power = float(levels[dk][k]) * (rated[dk] or 10.0)
                            request = MeasurepointPostRequest.builder().add_measurepoints(
                                {"power": power}
                            )
                            reply = sdk.publish(request.set_timestamp(clock.time_ms()).build())
                            assert reply.get_code() == 200, reply.get_message()
                        clock.advance(10)
                    for _ in range(40 * len(sdks)):
                        assert seen.acquire(timeout=WAIT)
                clock.advance(300)  # past every delay and escalation: the engine's timer ran
                live_frame = pd.concat([records.active(), records.history()])
                points = lab.store.query_points(None, "power", product_key=pk)
                attributes = {
                    (pk, dk): attributes_of(pk, dk) for dk in rated
                }  # the registry's, as the engine reads them
                model = lab.models.get("sdk_meter")
                # live applies a deadline d once the clock reaches d + 1 ms
                end = from_epoch_ms(clock.time_ms() - 1)
                result = backtest(over, points, model=model, attributes=attributes, end=end)
            finally:
                cancel()

                async def close() -> None:
                    engine.close()

                lab.run(close())

    assert len(points) == 160 and len(result) >= 3
    assert engine.stats.fired == len(result) and engine.stats.escalated >= 1
    assert (
        result.attrs["skips_by_device"]
        == {(pk, "bare"): 40}
        == {key: n for key, n in engine.stats.skips_by_device.items()}
    )

    def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
        out = []
        for row in frame[list(BACKTEST_COLUMNS)].to_dict("records"):
            for column in ("occur_time", "recover_time"):
                row[column] = None if pd.isna(row[column]) else pd.Timestamp(row[column]).value
            out.append(row)
        return sorted(out, key=lambda r: (r["occur_time"], r["device_key"]))

    assert rows(result) == rows(live_frame)
