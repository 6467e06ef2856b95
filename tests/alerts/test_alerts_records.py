"""Alert records in SQLite files: opening from the state machine's transitions, recovery,
escalation, flapping, masking, acknowledge, shelve, third-party alerts, DataFrames, pruning."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import numpy as np
import pandas as pd
import pytest

from enos_lab.alerts import (
    FAULT,
    INFO,
    RECORD_COLUMNS,
    WARNING,
    AlertContent,
    AlertEventType,
    AlertRecords,
    AlertRule,
    AlertState,
    AlertType,
    Escalated,
    Fired,
    FlapPolicy,
    Recovered,
    Sample,
    Severity,
)
from enos_lab.clock import SimulatedClock, to_epoch_ms
from enos_lab.errors import ClosedError, InvalidArgument, NotFound, RuleError

S = 1000  # one second [ms]
T0 = to_epoch_ms(datetime(2024, 1, 1, tzinfo=UTC))  # the simulated clock's start [ms]
OVER = AlertType("over-limit", "Over limit")
HIGH = AlertType("high", "High", parent_id="over-limit")
CONTENT = AlertContent("too-hot", "Temperature too high", OVER, HIGH)


def make_rule(**changes: Any) -> AlertRule:
    fields: dict[str, Any] = {
        "rule_id": "overheat",
        "model_id": "pv_inverter",
        "measurepoint": "temp",
        "condition": "${temp} > 50",
        "description": "Inverter too hot",
        "content": CONTENT,
        "tags": {"site": "north"},
        "delay": 60,
    }
    fields.update(changes)
    return AlertRule(**fields)


def fired(at_ms: int = T0, value: Any = 51, severity: Severity = WARNING) -> Fired:
    sample = Sample(at_ms, value)
    return Fired(at_ms, value, severity, sample, sample, 1, False)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock()


@pytest.fixture
def records(tmp_path: Path, clock: SimulatedClock) -> Iterator[AlertRecords]:
    with AlertRecords(tmp_path / "alerts.sqlite3", clock=clock, rng=Random(1)) as recs:
        yield recs


# ---------------------------------------------------------------- the file


def test_file_is_private_wal_and_survives_reopening(tmp_path: Path, clock: SimulatedClock) -> None:
    path = tmp_path / "alerts.sqlite3"
    recs = AlertRecords(path, clock=clock)
    record = recs.open_alert(make_rule(), fired(), product_key="pk", device_key="inv-1")
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name(path.name + "-wal")
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    recs.close()
    with pytest.raises(ClosedError, match="closed"):
        recs.get(record.event_id)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with AlertRecords(path, clock=clock) as again:
        assert again.get(record.event_id) == record
        assert list(again.active()["event_id"]) == [record.event_id]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    AlertRecords(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(RuleError, match="schema version 99"):
        AlertRecords(path)


def test_a_file_that_is_not_a_database_is_a_rule_error(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(RuleError, match="alert records"):
        AlertRecords(path)


def test_event_ids_stay_unique_with_a_seeded_source(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    with AlertRecords(path, rng=Random(7)) as first:
        one = first.open_alert(make_rule(), fired(), product_key="pk", device_key="inv-1")
    with AlertRecords(path, rng=Random(7)) as second:  # the same ids come up again
        two = second.open_alert(make_rule(), fired(), product_key="pk", device_key="inv-2")
        assert two.event_id != one.event_id
        assert len(second.active()) == 2


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="keep"):
        AlertRecords(tmp_path / "a.sqlite3", keep=timedelta(0))
    with pytest.raises(InvalidArgument, match="max_history"):
        AlertRecords(tmp_path / "a.sqlite3", max_history=-1)


# ---------------------------------------------------------------- lifecycle


def test_an_alert_fired_by_the_state_machine_opens_a_record_with_enos_fields(
    records: AlertRecords, clock: SimulatedClock
) -> None:
    rule = make_rule()
    state = AlertState(rule)
    assert state.observe(T0 - 120 * S, anomaly=True, value=51.5) == ()
    assert state.observe(T0 - 90 * S, anomaly=True, value=58.0) == ()
    (fire,) = state.due(T0)
    assert isinstance(fire, Fired)
    record = records.open_alert(
        rule, fire, product_key="pk", device_key="inv-1", asset_id="asset-1"
    )
    assert record.active and record.recover_time is None
    assert record.event_type is AlertEventType.TRIGGERED
    assert (record.rule_id, record.model_id, record.point_id) == ("overheat", "pv_inverter", "temp")
    assert (record.product_key, record.device_key, record.asset_id) == ("pk", "inv-1", "asset-1")
    # EnOS 13: with a delay, occur time = t0 + delay and the value when the timer started
    assert record.occur_time == datetime(2023, 12, 31, 23, 59, tzinfo=UTC)
    assert record.value == 51.5
    assert record.severity == WARNING
    assert record.content == CONTENT
    assert dict(record.tags) == {"site": "north"}
    assert record.rule_description == "Inverter too hot"
    assert record.create_time == record.update_time == clock.now()
    assert record.started == Sample(T0 - 120 * S, 51.5)
    assert record.confirmed == Sample(T0 - 90 * S, 58.0)
    assert (record.anomalies, record.by_timer, record.ended) == (2, True, None)
    assert len(record.event_id) == 32
    assert records.find_active("overheat", "pk", "inv-1") == record

    clock.advance(5)
    (recovery,) = state.observe(T0 + 30 * S, anomaly=False, value=44.0)
    assert isinstance(recovery, Recovered)
    done = records.recover(record.event_id, recovery.recover_time_ms, recovery.value)
    assert not done.active
    assert done.recover_time == datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert done.event_type is AlertEventType.RECOVERED
    assert done.ended == Sample(T0 + 30 * S, 44.0)
    assert done.update_time == clock.now() and done.create_time == record.create_time
    assert records.get(record.event_id) == done
    assert records.find_active("overheat", "pk", "inv-1") is None


def test_one_active_alert_per_rule_and_device(records: AlertRecords) -> None:
    rule = make_rule()
    first = records.open_alert(rule, fired(), product_key="pk", device_key="inv-1")
    with pytest.raises(InvalidArgument, match=first.event_id) as caught:
        records.open_alert(rule, fired(T0 + S), product_key="pk", device_key="inv-1")
    assert "'overheat'" in str(caught.value) and "pk/inv-1" in str(caught.value)
    # another device, another rule: their own alerts
    records.open_alert(rule, fired(), product_key="pk", device_key="inv-2")
    records.open_alert(make_rule(rule_id="hot2"), fired(), product_key="pk", device_key="inv-1")
    records.recover(first.event_id, T0 + 2 * S, 40)
    again = records.open_alert(rule, fired(T0 + 3 * S), product_key="pk", device_key="inv-1")
    assert again.event_id != first.event_id
    assert len(records.active()) == 3 and len(records.history()) == 1


def test_recovering_twice_or_before_the_occur_time_is_refused(records: AlertRecords) -> None:
    record = records.open_alert(make_rule(), fired(), product_key="pk", device_key="inv-1")
    with pytest.raises(InvalidArgument, match="before its occur time"):
        records.recover(record.event_id, T0 - 1, 40)
    with pytest.raises(InvalidArgument, match="recover time: expected an integer time"):
        records.recover(record.event_id, "soon", 40)  # type: ignore[arg-type]
    records.recover(record.event_id, T0, 40)
    with pytest.raises(InvalidArgument, match="recovered already"):
        records.recover(record.event_id, T0 + S, 40)
    with pytest.raises(NotFound, match="'nope'"):
        records.recover("nope", T0, 40)
    with pytest.raises(NotFound, match="'nope'"):
        records.get("nope")
    with pytest.raises(InvalidArgument, match="occur time: expected an integer time"):
        records.open_alert(make_rule(), fired(2**62), product_key="pk", device_key="inv-2")
    with pytest.raises(InvalidArgument, match="occur time"):
        records.insert(product_key="pk", device_key="d", occur_time=-(2**60), severity=INFO)


def test_escalation_steps_from_the_state_machine(records: AlertRecords) -> None:
    critical = Severity("org.critical", "Critical", 4)
    rule = make_rule(delay=0, escalation=[(60, FAULT), (600, critical)])
    state = AlertState(rule)
    (fire,) = state.observe(T0, anomaly=True, value=60)
    assert isinstance(fire, Fired)
    record = records.open_alert(rule, fire, product_key="pk", device_key="inv-1")
    for step in state.due(T0 + 601 * S):
        assert isinstance(step, Escalated)
        records.escalate(record.event_id, step.severity, step.time_ms)
    now = records.get(record.event_id)
    assert now.severity == critical
    assert [(s.time, s.previous, s.severity) for s in now.escalations] == [
        (datetime(2024, 1, 1, 0, 1, tzinfo=UTC), WARNING, FAULT),
        (datetime(2024, 1, 1, 0, 10, tzinfo=UTC), FAULT, critical),
    ]
    frame = records.active(severities=critical)
    assert list(frame["severity"]) == ["Critical"] and list(frame["severity_level"]) == [4]
    assert [s["to"]["id"] for s in frame["escalations"].iloc[0]] == ["398000003", "org.critical"]
    with pytest.raises(InvalidArgument, match="before its occur time"):
        records.escalate(record.event_id, critical, T0 - 1)
    records.recover(record.event_id, T0 + 700 * S, 1)
    with pytest.raises(InvalidArgument, match="recovered"):
        records.escalate(record.event_id, critical, T0 + 800 * S)
    with pytest.raises(InvalidArgument, match="Severity"):
        records.escalate(record.event_id, "Fault", T0)  # type: ignore[arg-type]


def test_flapping_masking_and_acknowledge(records: AlertRecords, clock: SimulatedClock) -> None:
    rule = make_rule(delay=0, flapping=FlapPolicy(2, 600))
    root = records.open_alert(
        make_rule(rule_id="gw-offline", measurepoint=None, device_status="offline", condition=""),
        fired(),
        product_key="gw",
        device_key="gw-1",
    )
    assert root.device_status == "offline" and root.point_id is None
    record = records.open_alert(rule, fired(), product_key="pk", device_key="inv-1")
    assert records.set_flapping(record.event_id, True).flapping
    assert records.set_masked(record.event_id, root.event_id).masked_by == root.event_id
    assert records.set_masked(record.event_id, None).masked_by is None
    with pytest.raises(InvalidArgument, match="masked_by"):
        records.set_masked(record.event_id, "")
    with pytest.raises(InvalidArgument, match="by must be"):
        records.acknowledge(record.event_id, by=42)  # type: ignore[arg-type]
    clock.advance(30)
    acked = records.acknowledge(record.event_id, by="operator")
    assert acked.acknowledged_at == clock.now() == acked.update_time
    assert acked.acknowledged_by == "operator"
    frame = records.active(device_keys="inv-1")
    assert bool(frame["flapping"].iloc[0]) is True
    assert frame["acknowledged_at"].iloc[0] == pd.Timestamp(clock.now())
    # a recovery ends the flapping mark
    assert not records.recover(record.event_id, T0 + S, 1).flapping


def test_shelving_on_the_clock(records: AlertRecords, clock: SimulatedClock) -> None:
    one = records.open_alert(make_rule(), fired(), product_key="pk", device_key="inv-1")
    two = records.open_alert(make_rule(), fired(), product_key="pk", device_key="inv-2")
    shelved = records.shelve(one.event_id, timedelta(hours=1))
    assert shelved.shelved_until == clock.now() + timedelta(hours=1)
    assert list(records.active(shelved=True)["event_id"]) == [one.event_id]
    assert list(records.active(shelved=False)["event_id"]) == [two.event_id]
    assert len(records.active()) == 2
    clock.advance(timedelta(hours=1))
    assert records.active(shelved=True).empty  # the shelf ran out
    assert len(records.active(shelved=False)) == 2
    until = datetime(2024, 2, 1, tzinfo=UTC)
    assert records.shelve(two.event_id, until).shelved_until == until
    assert records.shelve(two.event_id, "2024-03-01T00:00Z").shelved_until == datetime(
        2024, 3, 1, tzinfo=UTC
    )
    assert records.shelve(two.event_id, None).shelved_until is None
    with pytest.raises(InvalidArgument, match="tz-aware"):
        records.shelve(two.event_id, datetime(2024, 3, 1))


def test_third_party_alerts_are_inserted_and_recovered_through_the_api(
    records: AlertRecords,
) -> None:
    record = records.insert(
        product_key="pk",
        device_key="inv-1",
        occur_time="2024-01-01T00:00:00Z",
        severity=FAULT,
        content=CONTENT,
        point_id="temp",
        value={"code": 7, "text": "fan"},
        tags={"source": "scada"},
    )
    assert record.event_type is AlertEventType.API_INSERTED and record.active
    assert record.rule_id is None and record.anomalies is None and record.started is None
    assert record.value == {"code": 7, "text": "fan"}
    assert record.occur_time == datetime(2024, 1, 1, tzinfo=UTC)
    done = records.recover(record.event_id, T0 + 10 * S, via_api=True)
    assert done.event_type is AlertEventType.API_RECOVERED and done.ended is None
    # inserted alerts are not the rule's one active alert: any number of them
    records.insert(product_key="pk", device_key="inv-1", occur_time=T0, severity=INFO)
    records.insert(product_key="pk", device_key="inv-1", occur_time=T0, severity=INFO)
    assert len(records.active()) == 2
    with pytest.raises(InvalidArgument, match="severity"):
        records.insert(
            product_key="pk",
            device_key="inv-1",
            occur_time=T0,
            severity="Info",  # type: ignore[arg-type]
        )
    with pytest.raises(InvalidArgument, match="device_key"):
        records.insert(product_key="pk", device_key="", occur_time=T0, severity=INFO)


def test_values_are_stored_as_json(records: AlertRecords) -> None:
    rule = make_rule()
    record = records.open_alert(
        rule, fired(value=np.float64(51.25)), product_key="pk", device_key="inv-1"
    )
    assert record.value == 51.25 and type(record.value) is float
    record = records.open_alert(
        rule, fired(value={"code": np.int64(3)}), product_key="pk", device_key="inv-2"
    )
    assert record.value == {"code": 3}
    with pytest.raises(InvalidArgument, match="JSON") as caught:
        records.open_alert(rule, fired(value=object()), product_key="pk", device_key="inv-3")
    assert "overheat" in str(caught.value) and "inv-3" in str(caught.value)
    assert records.find_active("overheat", "pk", "inv-3") is None  # nothing half-written


# ---------------------------------------------------------------- DataFrames


def test_active_and_history_frames_filter_by_device_rule_product_severity_and_time(
    records: AlertRecords,
) -> None:
    minute = 60 * S
    made = []
    for i, (pk, dk, rid, severity) in enumerate(
        [
            ("pk", "inv-1", "overheat", WARNING),
            ("pk", "inv-2", "overheat", FAULT),
            ("pk", "inv-1", "undervolt", INFO),
            ("other", "inv-1", "overheat", WARNING),
        ]
    ):
        rule = make_rule(rule_id=rid, severity=severity)
        made.append(
            records.open_alert(
                rule, fired(T0 + i * minute, severity=severity), product_key=pk, device_key=dk
            )
        )
    records.recover(made[0].event_id, T0 + 10 * minute, 40)

    def ids(frame: pd.DataFrame) -> list[str]:
        return [made.index(next(m for m in made if m.event_id == e)) for e in frame["event_id"]]

    assert ids(records.active()) == [1, 2, 3]
    assert ids(records.history()) == [0]
    assert ids(records.history(include_active=True)) == [0, 1, 2, 3]
    assert ids(records.active("inv-1")) == [2, 3]
    assert ids(records.active(["inv-1"], product_key="pk")) == [2]
    assert ids(records.active(rule_ids="overheat")) == [1, 3]
    assert ids(records.active(severities=[WARNING, "398000001"])) == [2, 3]
    assert ids(records.history(start=T0 + minute, end=T0 + 3 * minute, include_active=True)) == [
        1,
        2,
    ]
    start = datetime(2024, 1, 1, 0, 2, tzinfo=UTC)
    assert ids(records.active(start=start)) == [2, 3]
    assert ids(records.active(end="2024-01-01T00:02:00+00:00")) == [1]
    with pytest.raises(InvalidArgument, match="device_keys"):
        records.active(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="severit"):
        records.active(severities=[])
    with pytest.raises(InvalidArgument, match="tz-aware"):
        records.active(start=datetime(2024, 1, 1))

    frame = records.history(include_active=True)
    assert tuple(frame.columns) == RECORD_COLUMNS
    for column in ("occur_time", "create_time", "update_time", "recover_time"):
        assert isinstance(frame[column].dtype, pd.DatetimeTZDtype)
        assert str(frame[column].dt.tz) == "UTC"
    assert frame["recover_time"].isna().tolist() == [False, True, True, True]
    row = frame.iloc[0]
    assert row["occur_time"] == pd.Timestamp("2024-01-01T00:00Z")
    assert row["recover_time"] == pd.Timestamp("2024-01-01T00:10Z")
    assert (row["type_id"], row["type"], row["subtype_id"], row["content"]) == (
        "over-limit",
        "Over limit",
        "high",
        "Temperature too high",
    )
    assert row["event_type"] == 0 and row["value"] == 51 and row["tags"] == {"site": "north"}
    assert row["explain"]["ended"] == {"time_ms": T0 + 10 * S * 60, "value": 40}


def test_no_records_is_an_empty_frame_with_the_columns(records: AlertRecords) -> None:
    for frame in (records.active(), records.history(), records.active(shelved=True)):
        assert frame.empty
        assert tuple(frame.columns) == RECORD_COLUMNS
        assert isinstance(frame["occur_time"].dtype, pd.DatetimeTZDtype)


# ---------------------------------------------------------------- bounds


def test_history_is_pruned_on_the_clock_and_active_alerts_stay(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    minute = 60 * S
    with AlertRecords(tmp_path / "a.sqlite3", clock=clock, keep=timedelta(days=2)) as recs:
        old = recs.open_alert(make_rule(), fired(T0), product_key="pk", device_key="inv-1")
        recs.recover(old.event_id, T0 + S, 40)
        young = recs.open_alert(
            make_rule(), fired(T0 + 5 * minute), product_key="pk", device_key="inv-1"
        )
        recs.recover(young.event_id, T0 + 10 * minute, 40)
        still = recs.open_alert(make_rule(), fired(T0), product_key="pk", device_key="inv-2")
        clock.advance(timedelta(days=2, seconds=2))
        # the next write prunes: the recovery more than two days ago goes
        recs.acknowledge(still.event_id)
        assert list(recs.history()["event_id"]) == [young.event_id]
        assert recs.active()["event_id"].tolist() == [still.event_id]
        with pytest.raises(NotFound):
            recs.get(old.event_id)
        # a write within the hour after a prune does not prune again; prune() does at once
        clock.advance(timedelta(minutes=30))  # young's recovery is now beyond keep too
        recs.acknowledge(still.event_id)
        assert len(recs.history()) == 1
        assert recs.prune() == 1
        assert recs.history().empty and len(recs.active()) == 1


def test_history_keeps_at_most_max_history_records(tmp_path: Path, clock: SimulatedClock) -> None:
    with AlertRecords(tmp_path / "a.sqlite3", clock=clock, max_history=3, keep=None) as recs:
        events = []
        for i in range(5):
            record = recs.open_alert(
                make_rule(), fired(T0 + i * S), product_key="p", device_key="d"
            )
            recs.recover(record.event_id, T0 + i * S, 40)
            events.append(record.event_id)
        active = recs.open_alert(make_rule(), fired(T0 + 9 * S), product_key="p", device_key="d")
        assert recs.prune() == 2
        assert recs.history()["event_id"].tolist() == events[2:]
        assert recs.active()["event_id"].tolist() == [active.event_id]


def test_threads_write_at_once(records: AlertRecords) -> None:
    rule = make_rule()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                record = records.open_alert(
                    rule, fired(T0 + i * S), product_key="pk", device_key=f"inv-{n}"
                )
                records.recover(record.event_id, T0 + i * S + 1, 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(records.history()) == 80 and records.active().empty


def test_a_batch_commits_its_writes_once_each_still_alone(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    path = tmp_path / "batch.db"
    with AlertRecords(path, clock=clock) as records:
        rule = make_rule()
        with records.batch():
            first = records.open_alert(rule, fired(), product_key="pk", device_key="d1")
            with pytest.raises(InvalidArgument, match="already has an active alert"):
                records.open_alert(rule, fired(), product_key="pk", device_key="d1")
            second = records.open_alert(rule, fired(), product_key="pk", device_key="d2")
            with records.batch():  # nested: joins the outer one
                records.recover(second.event_id, T0 + 1000, 40)
            # another connection sees nothing before the batch's commit
            other = sqlite3.connect(path)
            assert other.execute("SELECT COUNT(*) FROM alerts").fetchone() == (0,)
        assert other.execute("SELECT COUNT(*) FROM alerts").fetchone() == (2,)
        other.close()
        assert records.get(first.event_id).active
        assert not records.get(second.event_id).active
