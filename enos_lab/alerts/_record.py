"""One alert record: the fields of an EnOS alert (protocol reference section 13) and the lab's own.

EnOS's record fields map to :class:`AlertRecord` as follows: ``eventId`` -> ``event_id``,
``assetId`` -> ``asset_id`` (with the lab's ``product_key`` and ``device_key``), ``modelId`` ->
``model_id``, ``measurepointId`` -> ``point_id``, ``hitRuleId`` -> ``rule_id``, ``value``,
``occurTime`` / ``createTime`` / ``updateTime`` / ``recoverTime`` -> ``occur_time`` ...,
``severityId/Desc`` -> ``severity``, ``typeId/Desc`` and ``subTypeId/Desc`` and
``contentId/Desc`` -> ``content``, ``eventType`` -> ``event_type``, ``tag`` -> ``tags``,
``ruleDesc`` -> ``rule_description``, ``maskedBy`` -> ``masked_by``, ``deviceStatus`` ->
``device_status``. Occur and recover times are event times (the devices' clocks); create and
update times are the lab clock's.

The rest of the module converts records to and from the rows of the records' SQLite table
(:data:`COLUMNS`) and to DataFrames (:data:`RECORD_COLUMNS`), and checks the arguments of
:class:`~enos_lab.alerts.AlertRecords`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from numbers import Integral
from typing import Any

import pandas as pd

from ..clock import from_epoch_ms
from ..errors import InvalidArgument
from ..store import MAX_EVENT_MS, MIN_EVENT_MS
from ._definitions import AlertContent, AlertType, Severity
from ._transitions import Sample

__all__ = ["RECORD_COLUMNS", "AlertEventType", "AlertRecord", "EscalationStep"]


class AlertEventType(IntEnum):
    """How an alert record came to be in its state (EnOS ``eventType``, section 13)."""

    RECOVERED = 0
    """Recovered by the system: a recovering point arrived (EnOS 0)."""
    TRIGGERED = 1
    """Triggered by the system: an alert rule fired (EnOS 1)."""
    API_RECOVERED = 2
    """Recovered through the API (EnOS 2)."""
    API_INSERTED = 3
    """Inserted through the API: a third-party alert (EnOS 3)."""


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """One escalation an alert record went through (beyond EnOS)."""

    time: datetime
    """When it escalated (event time; tz-aware UTC)."""
    severity: Severity
    """The severity from then on."""
    previous: Severity
    """The severity before."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    """One alert, active or in history, as kept by :class:`~enos_lab.alerts.AlertRecords`.

    Active means not recovered (``recover_time is None``). Times are tz-aware UTC.
    """

    event_id: str
    """The alert's id (EnOS ``eventId``)."""
    rule_id: str | None
    """The alert rule that fired it (EnOS ``hitRuleId``); None for an inserted alert without one."""
    product_key: str
    """Product of the device."""
    device_key: str
    """The device, unique within its product."""
    asset_id: str | None
    """The device's asset id (EnOS ``assetId``), if known."""
    model_id: str | None
    """The device's thing model (EnOS ``modelId``)."""
    point_id: str | None
    """The triggering measurepoint (EnOS ``measurepointId``); None for a status trigger."""
    device_status: str | None
    """The device status of a status trigger (EnOS ``deviceStatus``, e.g. ``"offline"``)."""
    value: Any
    """The value when the alert triggered, or when its delay timer started (EnOS ``value``)."""
    occur_time: datetime
    """When the alert occurred (EnOS ``occurTime``; event time)."""
    create_time: datetime
    """When the record was created (EnOS ``createTime``; lab clock)."""
    update_time: datetime
    """When the record last changed (EnOS ``updateTime``; lab clock)."""
    recover_time: datetime | None
    """When the alert recovered (EnOS ``recoverTime``; event time); None while active."""
    severity: Severity
    """The current severity (escalated or not) (EnOS ``severityId`` / ``severityDesc``)."""
    content: AlertContent | None
    """What the alert says, with its type and subtype (EnOS ``contentId``, ``typeId`` ...)."""
    event_type: AlertEventType
    """How the record came to be in its state (EnOS ``eventType``)."""
    tags: Mapping[str, str]
    """The rule's tags, or the inserted alert's (EnOS ``tag``)."""
    rule_description: str
    """The rule's description (EnOS ``ruleDesc``)."""
    masked_by: str | None
    """The event id of the root alert masking this one (EnOS ``maskedBy``), or None."""
    acknowledged_at: datetime | None
    """Beyond EnOS: when it was acknowledged (lab clock), or None."""
    acknowledged_by: str | None
    """Beyond EnOS: who acknowledged it, if given."""
    shelved_until: datetime | None
    """Beyond EnOS: notifications are shelved until then (lab clock), or None."""
    flapping: bool
    """Beyond EnOS: whether the alert is flapping now."""
    escalations: tuple[EscalationStep, ...]
    """Beyond EnOS: the escalations it went through, oldest first."""
    started: Sample | None
    """For explain: the first anomalous point of the run (where the delay timer started)."""
    confirmed: Sample | None
    """For explain: the last anomalous point before it fired."""
    ended: Sample | None
    """For explain: the point that recovered it (None while active, or recovered via API)."""
    anomalies: int | None
    """For explain: anomalous points in the run up to firing (None for an inserted alert)."""
    by_timer: bool | None
    """For explain: whether the delay timer fired it (None for an inserted alert)."""

    @property
    def active(self) -> bool:
        """Whether the alert is active (not recovered)."""
        return self.recover_time is None


def to_json(value: Any, what: str) -> str:
    """``value`` as JSON text (numpy scalars as Python numbers); refuse what JSON cannot carry
    with a :class:`~enos_lab.errors.InvalidArgument` naming ``what``."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_plain)
    except (TypeError, ValueError) as exc:
        found = repr(value)
        if len(found) > 60:
            found = found[:57] + "..."
        raise InvalidArgument(f"{what}: expected a JSON-serialisable value, got {found}") from exc


def _plain(value: Any) -> Any:
    """A numpy scalar (or anything with ``item()``) as the Python value it holds."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def sample_json(sample: Sample | None) -> dict[str, Any] | None:
    """A sample as a JSON object (None stays None)."""
    return None if sample is None else {"time_ms": sample.time_ms, "value": sample.value}


def sample_of(data: Any) -> Sample | None:
    """Inverse of :func:`sample_json`."""
    if not isinstance(data, Mapping):
        return None
    return Sample(int(data["time_ms"]), data.get("value"))


COLUMNS = (
    "event_id",
    "rule_id",
    "product_key",
    "device_key",
    "asset_id",
    "model_id",
    "point_id",
    "device_status",
    "value",
    "occur_ms",
    "create_ms",
    "update_ms",
    "recover_ms",
    "severity_id",
    "severity_name",
    "severity_level",
    "content_id",
    "content_desc",
    "type_id",
    "type_desc",
    "subtype_id",
    "subtype_desc",
    "event_type",
    "tags",
    "rule_desc",
    "masked_by",
    "acknowledged_ms",
    "acknowledged_by",
    "shelved_until_ms",
    "flapping",
    "escalations",
    "explain",
)
"""The columns of the records' SQLite table, in order (times in epoch ms, JSON as text)."""

RECORD_COLUMNS = (
    "event_id",
    "rule_id",
    "product_key",
    "device_key",
    "asset_id",
    "model_id",
    "point_id",
    "device_status",
    "value",
    "occur_time",
    "create_time",
    "update_time",
    "recover_time",
    "severity_id",
    "severity",
    "severity_level",
    "content_id",
    "content",
    "type_id",
    "type",
    "subtype_id",
    "subtype",
    "event_type",
    "tags",
    "rule_description",
    "masked_by",
    "acknowledged_at",
    "acknowledged_by",
    "shelved_until",
    "flapping",
    "escalations",
    "explain",
)
"""Columns of :meth:`AlertRecords.active` and :meth:`AlertRecords.history`, in order (times
tz-aware UTC; ``value``, ``tags``, ``escalations`` and ``explain`` decoded from JSON)."""

_TIME_COLUMNS = {
    "occur_ms": "occur_time",
    "create_ms": "create_time",
    "update_ms": "update_time",
    "recover_ms": "recover_time",
    "acknowledged_ms": "acknowledged_at",
    "shelved_until_ms": "shelved_until",
}
_RENAMES = {
    **_TIME_COLUMNS,
    "severity_name": "severity",
    "content_desc": "content",
    "type_desc": "type",
    "subtype_desc": "subtype",
    "rule_desc": "rule_description",
}
_JSON_COLUMNS = ("value", "tags", "escalations", "explain")


def severity_row(severity: Severity) -> dict[str, Any]:
    return {
        "severity_id": severity.severity_id,
        "severity_name": severity.name,
        "severity_level": severity.level,
    }


def severity_json(severity: Severity) -> dict[str, Any]:
    return {"id": severity.severity_id, "name": severity.name, "level": severity.level}


def _severity_of(data: Mapping[str, Any]) -> Severity:
    return Severity(str(data["id"]), str(data["name"]), int(data["level"]))


def content_row(content: AlertContent | None) -> dict[str, Any]:
    kind = None if content is None else content.type
    sub = None if content is None else content.subtype
    return {
        "content_id": None if content is None else content.content_id,
        "content_desc": None if content is None else content.description,
        "type_id": None if kind is None else kind.type_id,
        "type_desc": None if kind is None else kind.description,
        "subtype_id": None if sub is None else sub.type_id,
        "subtype_desc": None if sub is None else sub.description,
    }


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else from_epoch_ms(ms)


def record_of(row: tuple[Any, ...]) -> AlertRecord:
    """An :class:`AlertRecord` from a row of :data:`COLUMNS`."""
    r = dict(zip(COLUMNS, row, strict=True))
    content = None
    if r["content_id"] is not None:
        kind = None if r["type_id"] is None else AlertType(r["type_id"], r["type_desc"] or "")
        sub = (
            None
            if r["subtype_id"] is None or kind is None
            else AlertType(r["subtype_id"], r["subtype_desc"] or "", kind.type_id)
        )
        content = AlertContent(r["content_id"], r["content_desc"] or "", kind, sub)
    explain = json.loads(r["explain"])
    steps = tuple(
        EscalationStep(from_epoch_ms(s["time_ms"]), _severity_of(s["to"]), _severity_of(s["from"]))
        for s in json.loads(r["escalations"])
    )
    return AlertRecord(
        event_id=r["event_id"],
        rule_id=r["rule_id"],
        product_key=r["product_key"],
        device_key=r["device_key"],
        asset_id=r["asset_id"],
        model_id=r["model_id"],
        point_id=r["point_id"],
        device_status=r["device_status"],
        value=json.loads(r["value"]),
        occur_time=from_epoch_ms(r["occur_ms"]),
        create_time=from_epoch_ms(r["create_ms"]),
        update_time=from_epoch_ms(r["update_ms"]),
        recover_time=_time(r["recover_ms"]),
        severity=Severity(r["severity_id"], r["severity_name"], r["severity_level"]),
        content=content,
        event_type=AlertEventType(r["event_type"]),
        tags=json.loads(r["tags"]),
        rule_description=r["rule_desc"],
        masked_by=r["masked_by"],
        acknowledged_at=_time(r["acknowledged_ms"]),
        acknowledged_by=r["acknowledged_by"],
        shelved_until=_time(r["shelved_until_ms"]),
        flapping=bool(r["flapping"]),
        escalations=steps,
        started=sample_of(explain.get("started")),
        confirmed=sample_of(explain.get("confirmed")),
        ended=sample_of(explain.get("ended")),
        anomalies=explain.get("anomalies"),
        by_timer=explain.get("by_timer"),
    )


def frame_of(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """The DataFrame of rows of :data:`COLUMNS` (see :data:`RECORD_COLUMNS`)."""
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    for column in _JSON_COLUMNS:
        frame[column] = pd.Series(
            [json.loads(text) for text in frame[column]], index=frame.index, dtype=object
        )
    for column in _TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column].astype("Float64"), unit="ms", utc=True)
    frame["flapping"] = frame["flapping"].astype(bool)
    frame["event_type"] = frame["event_type"].astype("int64")
    frame["severity_level"] = frame["severity_level"].astype("int64")
    return frame.rename(columns=_RENAMES)[list(RECORD_COLUMNS)]


# -------------------------------------------------------------------- arguments

Severities = Severity | str | Iterable[Severity | str]
"""One severity or several, as :class:`~enos_lab.alerts.Severity` objects or severity ids."""


def check_keys(product_key: object, device_key: object) -> None:
    """Refuse keys that are not non-empty strings, naming them."""
    for what, key in (("product_key", product_key), ("device_key", device_key)):
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"expected a non-empty string {what}, got {key!r}")


def event_ms(value: object, what: str) -> int:
    """``value`` if it is an integer time the store can keep (years 1677-2262), else
    InvalidArgument naming ``what``. [ms since the epoch]"""
    if (
        isinstance(value, bool)
        or not isinstance(value, Integral)
        or not MIN_EVENT_MS <= int(value) <= MAX_EVENT_MS
    ):
        raise InvalidArgument(
            f"{what}: expected an integer time in [{MIN_EVENT_MS}, {MAX_EVENT_MS}] [ms since "
            f"the epoch] (years 1677-2262), got {value!r}"
        )
    return int(value)


def insert_row(db: sqlite3.Connection, row: Mapping[str, Any]) -> None:
    """Insert the record ``row`` (its columns by name; the ones a new record lacks: NULL)."""
    full = {
        "recover_ms": None,
        "acknowledged_ms": None,
        "acknowledged_by": None,
        "shelved_until_ms": None,
        "escalations": "[]",
        **row,
    }
    db.execute(
        f"INSERT INTO alerts ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})",
        full,
    )


def severity_ids(severities: Severities | None) -> list[str] | None:
    """The severity ids of a severities argument (None: None, every severity)."""
    if severities is None:
        return None
    items: list[object] = (
        [severities] if isinstance(severities, Severity | str) else list(severities)
    )
    ids = [s.severity_id if isinstance(s, Severity) else s for s in items]
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidArgument(
            f"expected one or more Severity objects or severity ids, got {severities!r}"
        )
    return [str(i) for i in ids]
