"""Why an alert fired and why it recovered: the points and the rule's steps, for people.

:func:`explain` takes an alert record, the rule that raised it and the trigger point's stored
values around it, re-evaluates the rule's conditions on those values with the device's
attributes (the same compiled expression the engine uses), and marks the points the record
names: the one that started the run (where the delay timer started), the one that confirmed
it, the one that ended it. The record's own samples are the authority (they were taken when
the engine decided); the re-evaluated points show the context, and a point stored since then,
or a threshold attribute changed since, shows there as it is now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from ..clock import from_epoch_ms
from ..model import ThingModel
from ..rules import compile_expression
from ._definitions import AlertRule
from ._record import AlertEventType, AlertRecord
from ._transitions import Sample

__all__ = ["EXPLAIN_COLUMNS", "AlertExplanation", "explain"]

EXPLAIN_COLUMNS = ("time", "value", "anomaly", "recovering", "role")
"""Columns of :attr:`AlertExplanation.points`: the trigger point's event time (tz-aware UTC)
and value, whether the condition held (``anomaly``), whether the point was a recovering one
(the recover condition held, or with no hysteresis the condition did not), and its ``role``
in the alert (``"started"``, ``"confirmed"``, ``"ended"``, or empty)."""


@dataclass(frozen=True, slots=True)
class AlertExplanation:
    """An alert with the points and the rule steps that made it fire and recover.

    ``str()`` (or ``print``) gives the steps as text; :attr:`points` the trigger point's
    values around the alert, with what the rule made of each.
    """

    record: AlertRecord
    """The alert record."""
    rule: AlertRule | None
    """The rule that raised it (None: inserted through the API, or the rule is gone)."""
    steps: tuple[str, ...]
    """What happened, one line per step, in order."""
    points: pd.DataFrame
    """The trigger point's values around the alert (:data:`EXPLAIN_COLUMNS`)."""

    def __str__(self) -> str:
        return "\n".join(self.steps)

    def _repr_markdown_(self) -> str:
        return "\n".join(f"- {step}" for step in self.steps)


def _at(ms: int) -> str:
    return from_epoch_ms(ms).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _when(moment: datetime) -> str:
    return _at(round(moment.timestamp() * 1000))


def _seconds(ms: int) -> str:
    seconds = ms / 1000
    return f"{seconds:g} s"


def _rule_line(record: AlertRecord, rule: AlertRule) -> str:
    trigger = (
        f"device status {rule.device_status!r}"
        if rule.measurepoint is None
        else f"condition {rule.condition!r} on {rule.measurepoint!r}"
    )
    extras = []
    if rule.delay:
        extras.append(f"delay {_seconds(rule.delay_ms)}")
    if rule.recover_condition is not None:
        extras.append(f"recovers when {rule.recover_condition!r}")
    if rule.min_repeat > 1:
        extras.append(f"at least {rule.min_repeat} anomalous points")
    more = f" ({', '.join(extras)})" if extras else ""
    return (
        f"Rule {rule.rule_id!r}: {trigger}{more}, severity {rule.severity.name}, "
        f"on device {record.product_key}/{record.device_key}."
    )


def _value(sample: Sample, point: str | None) -> str:
    what = "status" if point is None else point
    return f"{what} = {sample.value!r}"


def explain(
    record: AlertRecord,
    rule: AlertRule | None,
    points: pd.DataFrame | None = None,
    *,
    model: ThingModel | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AlertExplanation:
    """Explain ``record`` (raised by ``rule``) with the trigger point's stored values
    ``points`` (a ``query_points`` frame of the device; other points are ignored) and the
    device's ``attributes``; ``model`` is the rule's thing model (needed to re-evaluate)."""
    steps: list[str] = []
    explain_data = record_samples(record)
    started, confirmed, ended = explain_data
    if record.event_type is AlertEventType.API_INSERTED:
        steps.append(
            f"Created through the API at {_when(record.create_time)} on device "
            f"{record.product_key}/{record.device_key}, occurring at {_when(record.occur_time)}."
        )
    elif rule is None:
        steps.append(f"Raised by rule {record.rule_id!r}, which no longer exists.")
    else:
        steps.append(_rule_line(record, rule))
    point = record.point_id
    if started is not None and confirmed is not None:
        steps.append(
            f"{_at(started.time_ms)}: {_value(started, point)}: an anomaly, the run starts."
        )
        if rule is not None and rule.delay and record.by_timer:
            steps.append(
                f"{_when(record.occur_time)}: no recovering point within the delay of "
                f"{_seconds(rule.delay_ms)}: the alert fired (by the delay timer), with the "
                f"value at the start of the run."
            )
        else:
            anomalies = record.anomalies
            counted = f" ({anomalies} anomalous points)" if anomalies and anomalies > 1 else ""
            why = (
                f"the anomaly has lasted the delay of {_seconds(rule.delay_ms)}"
                if rule is not None and rule.delay
                else "the condition holds"
            )
            steps.append(
                f"{_at(confirmed.time_ms)}: {_value(confirmed, point)}{counted}: {why}: the "
                "alert fired."
            )
    if record.masked_by is not None:
        steps.append(f"Masked by the root alert {record.masked_by} on the device's gateway.")
    for step in record.escalations:
        steps.append(
            f"{_when(step.time)}: still active: escalated from {step.previous.name} to "
            f"{step.severity.name}."
        )
    if record.flapping:
        steps.append("Flapping: its notifications are held back until it is stable.")
    if record.recover_time is not None:
        if record.event_type is AlertEventType.API_RECOVERED:
            steps.append(f"{_when(record.recover_time)}: closed through the API.")
        elif ended is not None:
            what = (
                "the recover condition holds"
                if rule is not None and rule.recover_condition is not None
                else "the condition no longer holds"
            )
            steps.append(f"{_at(ended.time_ms)}: {_value(ended, point)}: {what}: recovered.")
    else:
        steps.append("Still active.")
    frame = _points(record, rule, points, model, attributes or {}, explain_data)
    return AlertExplanation(record, rule, tuple(steps), frame)


def record_samples(record: AlertRecord) -> tuple[Sample | None, Sample | None, Sample | None]:
    """The started, confirmed and ended samples of a record."""
    return record.started, record.confirmed, record.ended


def _points(  # noqa: PLR0917 - the parts of one explanation
    record: AlertRecord,
    rule: AlertRule | None,
    points: pd.DataFrame | None,
    model: ThingModel | None,
    attributes: Mapping[str, Any],
    samples: tuple[Sample | None, Sample | None, Sample | None],
) -> pd.DataFrame:
    empty = pd.DataFrame({column: pd.Series(dtype=object) for column in EXPLAIN_COLUMNS})
    empty["time"] = pd.Series(dtype="datetime64[ms, UTC]")
    if points is None or rule is None or rule.measurepoint is None or model is None:
        return empty
    rows = points[
        (points["point_id"] == rule.measurepoint)
        & (points["device_key"] == record.device_key)
        & (points["product_key"] == record.product_key)
    ]
    if rows.empty:
        return empty
    rows = rows.sort_values("time", kind="stable").reset_index(drop=True)
    condition = compile_expression(rule.condition, model=model, name=rule.rule_id)
    inputs = pd.DataFrame({f"point:{rule.measurepoint}": rows["value"]})
    for name in condition.attributes:
        inputs[f"attr:{name}"] = attributes.get(name)
    anomaly = condition.evaluate_frame(inputs).astype(bool)
    if rule.recover_condition is not None:
        recover = compile_expression(rule.recover_condition, model=model, name=rule.rule_id)
        for name in recover.attributes:
            inputs[f"attr:{name}"] = attributes.get(name)
        recovering = recover.evaluate_frame(inputs).astype(bool) & ~anomaly
    else:
        recovering = ~anomaly
    epoch = pd.Timestamp(0, tz="UTC")
    times_ms = ((rows["time"] - epoch) // pd.Timedelta(milliseconds=1)).to_numpy()
    roles = [""] * len(rows)
    for name, sample in zip(("started", "confirmed", "ended"), samples, strict=True):
        if sample is None:
            continue
        for i, at in enumerate(times_ms):
            if at == sample.time_ms:
                roles[i] = name if not roles[i] else f"{roles[i]}, {name}"
    return pd.DataFrame(
        {
            "time": rows["time"],
            "value": rows["value"],
            "anomaly": anomaly.to_numpy(),
            "recovering": recovering.to_numpy(),
            "role": roles,
        }
    )
