"""Alert records in SQLite: active and history alerts, with EnOS's fields and the lab's own.

Theory of operation. One SQLite file (mode 0600, WAL journal) holds one row per alert. The
alert engine opens a record when a rule fires (:meth:`AlertRecords.open_alert`, from the
state machine's :class:`~enos_lab.alerts.Fired`) and updates that same row as the alert
escalates, flaps and recovers; the API inserts third-party alerts and recovers alerts by hand.
A record is *active* until it recovers and *history* afterwards (EnOS: active and history
alerts). One connection guarded by a lock serves every thread; each operation is one
transaction. Occur and recover times are event times (epoch ms); create, update, acknowledge
and shelve times are the lab clock's.

At most one alert fired by a rule is active per (rule, device) (a unique index): the state
machine never fires again before it recovers, so a second one is a caller's error.

Bounded: recovered alerts whose recover time is older than ``keep`` (default 90 days: EnOS
searches history alerts 3 months back) on the lab clock are deleted, and at most
``max_history`` of them are kept (the most recently recovered). Writes prune at most once per
:data:`PRUNE_EVERY` of the clock's time; :meth:`AlertRecords.prune` prunes at once. Active
alerts are never pruned.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from random import Random
from typing import Any

import pandas as pd

from .._sqlite import PRUNE_EVERY, PrunedRecords
from ..clock import Clock, SystemClock
from ..errors import ClosedError, InvalidArgument, NotFound, RuleError
from ..store import Ids, TimeLike, as_ms, id_list
from ._definitions import AlertContent, AlertRule, Severity
from ._record import (
    COLUMNS,
    AlertEventType,
    AlertRecord,
    Severities,
    check_keys,
    content_row,
    event_ms,
    frame_of,
    insert_row,
    record_of,
    sample_json,
    severity_ids,
    severity_json,
    severity_row,
    to_json,
)
from ._transitions import Fired

__all__ = ["KEEP", "MAX_HISTORY", "PRUNE_EVERY", "AlertRecords"]

log = logging.getLogger(__name__)

KEEP = timedelta(days=90)
"""How long recovered alerts are kept by default (EnOS searches 3 months of history)."""
MAX_HISTORY = 1_000_000
"""Most recovered alerts kept by default (the most recently recovered). [records]"""

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    event_id TEXT PRIMARY KEY,
    rule_id TEXT,
    product_key TEXT NOT NULL,
    device_key TEXT NOT NULL,
    asset_id TEXT,
    model_id TEXT,
    point_id TEXT,
    device_status TEXT,
    value TEXT NOT NULL,
    occur_ms INTEGER NOT NULL,
    create_ms INTEGER NOT NULL,
    update_ms INTEGER NOT NULL,
    recover_ms INTEGER,
    severity_id TEXT NOT NULL,
    severity_name TEXT NOT NULL,
    severity_level INTEGER NOT NULL,
    content_id TEXT,
    content_desc TEXT,
    type_id TEXT,
    type_desc TEXT,
    subtype_id TEXT,
    subtype_desc TEXT,
    event_type INTEGER NOT NULL,
    tags TEXT NOT NULL,
    rule_desc TEXT NOT NULL,
    masked_by TEXT,
    acknowledged_ms INTEGER,
    acknowledged_by TEXT,
    shelved_until_ms INTEGER,
    flapping INTEGER NOT NULL,
    escalations TEXT NOT NULL,
    explain TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_occur ON alerts (occur_ms);
CREATE INDEX IF NOT EXISTS alerts_by_device ON alerts (device_key, occur_ms);
CREATE INDEX IF NOT EXISTS alerts_by_recover ON alerts (recover_ms);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active
    ON alerts (rule_id, product_key, device_key) WHERE recover_ms IS NULL AND event_type = 1;
"""
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM alerts"


class AlertRecords(PrunedRecords):
    """Alert records in the SQLite file ``path`` (created 0600 if missing; ``":memory:"`` for
    records that live as long as the object).

    ``clock`` gives create, update, acknowledge and shelve times and the time history is
    pruned against (default: the system clock); ``keep`` is how long recovered alerts are kept
    (``None``: forever), ``max_history`` how many at most (``None``: no limit); ``rng`` makes
    event ids (default: the OS's secure source). Usable from any thread; :meth:`close` it
    when done (or use it as a context manager).
    """

    _WHAT = "alert records"
    # active alerts are never pruned
    _EXPIRED_SQL = "DELETE FROM alerts WHERE recover_ms IS NOT NULL AND recover_ms < ?"
    _OVERFLOW_SQL = (
        "DELETE FROM alerts WHERE event_id IN (SELECT event_id FROM alerts "
        "WHERE recover_ms IS NOT NULL ORDER BY recover_ms DESC, rowid DESC LIMIT -1 OFFSET ?)"
    )

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        keep: timedelta | None = KEEP,
        max_history: int | None = MAX_HISTORY,
        rng: Random | None = None,
    ) -> None:
        super().__init__(
            path, _SCHEMA, _SCHEMA_VERSION, RuleError, clock or SystemClock(), keep, max_history
        )
        self._rng: Random = rng or secrets.SystemRandom()
        self._batching = False  # inside batch(): writes join one transaction

    def __enter__(self) -> AlertRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- plumbing

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes made inside (in this thread) into one SQLite transaction,
        committed at the end: how an engine writes the alerts of one batch of points at the
        cost of one commit. Each write still succeeds or fails alone (a savepoint each); the
        lock is held throughout, so keep it short."""
        with self._lock:
            if self._batching:
                yield
                return
            self._batching = True
            try:
                yield
            finally:
                self._batching = False
                db = self._db
                if not self._closed and db.in_transaction:
                    try:
                        db.execute("COMMIT")
                    except sqlite3.Error as exc:
                        db.execute("ROLLBACK")
                        raise RuleError(f"alert records {self._path}: {exc}") from exc

    @contextmanager
    def _transaction(self, *, prune: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction (pruning first when due on the clock, unless ``prune`` is
        False), or inside :meth:`batch` one savepoint of the batch's transaction; SQLite's
        errors become :class:`~enos_lab.errors.RuleError`."""
        with self._reading() as db:
            if self._batching:
                if not db.in_transaction:
                    db.execute("BEGIN IMMEDIATE")
                db.execute("SAVEPOINT write")
                try:
                    now = self._clock.time_ms()
                    if prune and now >= self._next_prune_ms:
                        self._prune(now)
                    yield db
                except BaseException:
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    raise
                db.execute("RELEASE write")
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock.time_ms()
                if prune and now >= self._next_prune_ms:
                    self._prune(now)
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, open; SQLite's errors become RuleError."""
        with self._lock:
            self._check_open()
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise RuleError(f"alert records {self._path}: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the alert records {self._path} are closed")

    def _row(self, db: sqlite3.Connection, event_id: str) -> tuple[Any, ...]:
        row: tuple[Any, ...] | None = db.execute(
            f"{_SELECT} WHERE event_id = ?", (event_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no alert record with event id {event_id!r}")
        return row

    def _new_id(self, db: sqlite3.Connection) -> str:
        """A random event id (128 bits in hexadecimal) not taken yet."""
        while True:
            event_id = f"{self._rng.getrandbits(128):032x}"
            if (
                db.execute("SELECT 1 FROM alerts WHERE event_id = ?", (event_id,)).fetchone()
                is None
            ):
                return event_id

    # ---------------------------------------------------------------- writes

    def open_alert(
        self,
        rule: AlertRule,
        fired: Fired,
        *,
        product_key: str,
        device_key: str,
        asset_id: str | None = None,
        masked_by: str | None = None,
        flapping: bool = False,
    ) -> AlertRecord:
        """Open the record of an alert that ``rule`` fired (``fired``, from the state machine)
        on the device ``product_key``/``device_key``; EnOS ``eventType`` 1.

        The record takes the rule's model, trigger, severity (``fired.severity``), content,
        tags and description, and ``fired``'s occur time, value and explain samples.
        ``masked_by`` names the root alert masking it. Raises
        :class:`~enos_lab.errors.InvalidArgument` when the rule already has an active alert on
        that device.
        """
        if not isinstance(rule, AlertRule) or not isinstance(fired, Fired):
            raise InvalidArgument(
                f"open_alert: expected an AlertRule and a Fired, got {type(rule).__name__} "
                f"and {type(fired).__name__}"
            )
        check_keys(product_key, device_key)
        explain = {
            "started": sample_json(fired.started),
            "confirmed": sample_json(fired.confirmed),
            "ended": None,
            "anomalies": fired.anomalies,
            "by_timer": fired.by_timer,
        }
        what = f"alert rule {rule.rule_id!r} on {product_key}/{device_key}"
        occur_ms = event_ms(fired.occur_time_ms, f"{what}: occur time")
        with self._transaction() as db:
            active = self._find_active(db, rule.rule_id, product_key, device_key)
            if active is not None:
                raise InvalidArgument(
                    f"{what} already has an active alert ({active.event_id}); recover it first"
                )
            now = self._clock.time_ms()
            event_id = self._new_id(db)
            row = {
                "event_id": event_id,
                "rule_id": rule.rule_id,
                "product_key": product_key,
                "device_key": device_key,
                "asset_id": asset_id,
                "model_id": rule.model_id,
                "point_id": rule.measurepoint,
                "device_status": rule.device_status,
                "value": to_json(fired.value, f"{what}: value"),
                "occur_ms": occur_ms,
                "create_ms": now,
                "update_ms": now,
                "event_type": int(AlertEventType.TRIGGERED),
                "tags": to_json(dict(rule.tags), f"{what}: tags"),
                "rule_desc": rule.description,
                "masked_by": masked_by,
                "flapping": int(flapping),
                "explain": to_json(explain, f"{what}: samples"),
                **severity_row(fired.severity),
                **content_row(rule.content),
            }
            insert_row(db, row)
            return record_of(self._row(db, event_id))

    def insert(
        self,
        *,
        product_key: str,
        device_key: str,
        occur_time: TimeLike,
        severity: Severity,
        content: AlertContent | None = None,
        point_id: str | None = None,
        value: Any = None,
        asset_id: str | None = None,
        model_id: str | None = None,
        rule_id: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        device_status: str | None = None,
    ) -> AlertRecord:
        """Insert a third-party alert (EnOS: created through the API, ``eventType`` 3), active
        until :meth:`recover` is called with ``via_api=True``."""
        check_keys(product_key, device_key)
        what = f"inserted alert on {product_key}/{device_key}"
        if not isinstance(severity, Severity):
            raise InvalidArgument(f"{what}: severity must be a Severity, got {severity!r}")
        if content is not None and not isinstance(content, AlertContent):
            raise InvalidArgument(f"{what}: content must be an AlertContent, got {content!r}")
        tag_map = dict(tags or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tag_map.items()):
            raise InvalidArgument(f"{what}: tags must map strings to strings, got {tags!r}")
        occur_ms = event_ms(as_ms(occur_time, "occur_time"), f"{what}: occur time")
        with self._transaction() as db:
            now = self._clock.time_ms()
            event_id = self._new_id(db)
            explain = {"started": None, "confirmed": None, "ended": None}
            insert_row(
                db,
                {
                    "event_id": event_id,
                    "rule_id": rule_id,
                    "product_key": product_key,
                    "device_key": device_key,
                    "asset_id": asset_id,
                    "model_id": model_id,
                    "point_id": point_id,
                    "device_status": device_status,
                    "value": to_json(value, f"{what}: value"),
                    "occur_ms": occur_ms,
                    "create_ms": now,
                    "update_ms": now,
                    "event_type": int(AlertEventType.API_INSERTED),
                    "tags": to_json(tag_map, f"{what}: tags"),
                    "rule_desc": description,
                    "masked_by": None,
                    "flapping": 0,
                    "explain": json.dumps(explain),
                    **severity_row(severity),
                    **content_row(content),
                },
            )
            return record_of(self._row(db, event_id))

    def recover(
        self, event_id: str, time_ms: int, value: Any = None, *, via_api: bool = False
    ) -> AlertRecord:
        """Recover the active alert ``event_id`` at event time ``time_ms`` [ms since the
        epoch]: by a recovering point of value ``value`` (EnOS ``eventType`` 0), or through the
        API (``via_api``, EnOS 2). Raises :class:`~enos_lab.errors.InvalidArgument` for an alert
        already recovered or a time before its occur time, NotFound for an unknown id."""
        recover_ms = event_ms(time_ms, f"alert {event_id!r}: recover time")
        event_type = AlertEventType.API_RECOVERED if via_api else AlertEventType.RECOVERED
        with self._transaction() as db:
            row = self._row(db, event_id)
            record = record_of(row)
            if not record.active:
                raise InvalidArgument(
                    f"alert {event_id!r} recovered already at {record.recover_time}"
                )
            occur_ms = int(row[COLUMNS.index("occur_ms")])
            if recover_ms < occur_ms:
                raise InvalidArgument(
                    f"alert {event_id!r}: recover time {recover_ms} is before its occur time "
                    f"{occur_ms} [ms]"
                )
            explain = json.loads(row[COLUMNS.index("explain")])
            if not via_api:
                explain["ended"] = {"time_ms": recover_ms, "value": value}
            db.execute(
                "UPDATE alerts SET recover_ms = ?, event_type = ?, update_ms = ?, flapping = 0, "
                "explain = ? WHERE event_id = ?",
                (
                    recover_ms,
                    int(event_type),
                    self._clock.time_ms(),
                    to_json(explain, f"alert {event_id!r}: recovering value"),
                    event_id,
                ),
            )
            return record_of(self._row(db, event_id))

    def escalate(self, event_id: str, severity: Severity, time_ms: int) -> AlertRecord:
        """Give the active alert ``event_id`` the severity ``severity`` from event time
        ``time_ms`` [ms since the epoch] on (beyond EnOS); the step is kept in
        ``escalations``."""
        if not isinstance(severity, Severity):
            raise InvalidArgument(
                f"alert {event_id!r}: severity must be a Severity, got {severity!r}"
            )
        at_ms = event_ms(time_ms, f"alert {event_id!r}: escalation time")
        with self._transaction() as db:
            row = self._row(db, event_id)
            record = record_of(row)
            if not record.active:
                raise InvalidArgument(f"alert {event_id!r} is recovered: it cannot escalate")
            if at_ms < int(row[COLUMNS.index("occur_ms")]):
                raise InvalidArgument(
                    f"alert {event_id!r}: escalation time {at_ms} is before its occur time [ms]"
                )
            steps = json.loads(row[COLUMNS.index("escalations")])
            previous = severity_json(record.severity)
            steps.append({"time_ms": at_ms, "to": severity_json(severity), "from": previous})
            db.execute(
                "UPDATE alerts SET severity_id = :severity_id, severity_name = :severity_name, "
                "severity_level = :severity_level, escalations = :steps, update_ms = :now "
                "WHERE event_id = :event_id",
                {
                    **severity_row(severity),
                    "steps": json.dumps(steps),
                    "now": self._clock.time_ms(),
                    "event_id": event_id,
                },
            )
            return record_of(self._row(db, event_id))

    def set_flapping(self, event_id: str, flapping: bool) -> AlertRecord:
        """Mark the alert ``event_id`` as flapping or not (beyond EnOS)."""
        return self._update(event_id, "flapping = ?", int(bool(flapping)))

    def set_masked(self, event_id: str, masked_by: str | None) -> AlertRecord:
        """Mark the alert ``event_id`` as masked by the root alert ``masked_by`` (EnOS
        ``maskedBy``), or unmasked with None."""
        if masked_by is not None and (not isinstance(masked_by, str) or not masked_by):
            raise InvalidArgument(
                f"alert {event_id!r}: masked_by must be an event id or None, got {masked_by!r}"
            )
        return self._update(event_id, "masked_by = ?", masked_by)

    def acknowledge(self, event_id: str, by: str | None = None) -> AlertRecord:
        """Acknowledge the alert ``event_id`` now (lab clock), by ``by`` if given (beyond
        EnOS); acknowledging again records the new time and name."""
        if by is not None and not isinstance(by, str):
            raise InvalidArgument(f"alert {event_id!r}: by must be a string or None, got {by!r}")
        return self._update(
            event_id, "acknowledged_ms = ?, acknowledged_by = ?", self._clock.time_ms(), by
        )

    def shelve(self, event_id: str, until: TimeLike | timedelta | None) -> AlertRecord:
        """Shelve the alert ``event_id`` until ``until`` (a time, or a duration from now on the
        lab clock); None unshelves it (beyond EnOS). A shelved alert stays active; the engine
        holds back its notifications."""
        if until is None:
            until_ms = None
        elif isinstance(until, timedelta):
            until_ms = self._clock.time_ms() + round(until.total_seconds() * 1000)
        else:
            until_ms = as_ms(until, "until")
        if until_ms is not None:
            event_ms(until_ms, f"alert {event_id!r}: shelved until")
        return self._update(event_id, "shelved_until_ms = ?", until_ms)

    def _update(self, event_id: str, assignments: str, *values: Any) -> AlertRecord:
        with self._transaction() as db:
            self._row(db, event_id)
            db.execute(
                f"UPDATE alerts SET {assignments}, update_ms = ? WHERE event_id = ?",
                (*values, self._clock.time_ms(), event_id),
            )
            return record_of(self._row(db, event_id))

    def prune(self, now: TimeLike | None = None) -> int:
        """Delete the recovered alerts beyond ``keep`` and ``max_history`` at ``now`` (default:
        the clock's now); returns how many were deleted."""
        now_ms = self._clock.time_ms() if now is None else as_ms(now, "now")
        with self._transaction(prune=False):
            return self._prune(now_ms)

    def delete_device(self, product_key: str, device_key: str) -> int:
        """Delete every alert record of the device, active and history (how a device deleted
        with its history purged leaves no alert behind); returns how many were deleted."""
        with self._transaction(prune=False) as db:
            deleted: int = db.execute(
                "DELETE FROM alerts WHERE product_key = ? AND device_key = ?",
                (product_key, device_key),
            ).rowcount
        if deleted:
            log.info("deleted %d alert record(s) of %s/%s", deleted, product_key, device_key)
        return deleted

    # ---------------------------------------------------------------- reads

    def get(self, event_id: str) -> AlertRecord:
        """The record of ``event_id``; :class:`~enos_lab.errors.NotFound` if there is none."""
        with self._reading() as db:
            return record_of(self._row(db, event_id))

    def find_active(self, rule_id: str, product_key: str, device_key: str) -> AlertRecord | None:
        """The active alert that ``rule_id`` fired on the device, or None."""
        with self._reading() as db:
            return self._find_active(db, rule_id, product_key, device_key)

    def active_of(self, rule_id: str) -> list[AlertRecord]:
        """The active alerts ``rule_id`` fired (EnOS event type 1), by occur time."""
        with self._reading() as db:
            rows = db.execute(
                f"{_SELECT} WHERE rule_id = ? AND recover_ms IS NULL AND event_type = 1 "
                "ORDER BY occur_ms, event_id",
                (rule_id,),
            ).fetchall()
        return [record_of(row) for row in rows]

    @staticmethod
    def _find_active(
        db: sqlite3.Connection, rule_id: str, product_key: str, device_key: str
    ) -> AlertRecord | None:
        row = db.execute(
            f"{_SELECT} WHERE rule_id = ? AND product_key = ? AND device_key = ? "
            "AND recover_ms IS NULL AND event_type = 1",
            (rule_id, product_key, device_key),
        ).fetchone()
        return None if row is None else record_of(row)

    def active(
        self,
        device_keys: Ids | None = None,
        rule_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
        severities: Severities | None = None,
        shelved: bool | None = None,
    ) -> pd.DataFrame:
        """The active alerts (not recovered) of the devices and rules (``None``: all) whose
        occur time is in ``[start, end)``, optionally of some severities; ``shelved`` True or
        False keeps only the alerts shelved now (lab clock) or only those not. Columns:
        :data:`RECORD_COLUMNS`; by occur time. No data: an empty frame with these columns."""
        where = ["recover_ms IS NULL"]
        args: list[Any] = []
        if shelved is not None:
            test = "shelved_until_ms > ?" if shelved else "COALESCE(shelved_until_ms, ?) <= ?"
            where.append(test)
            now = self._clock.time_ms()
            args.extend([now] if shelved else [now, now])
        return self._frame(
            where,
            args,
            device_keys=device_keys,
            rule_ids=rule_ids,
            start=start,
            end=end,
            product_key=product_key,
            severities=severities,
        )

    def history(
        self,
        device_keys: Ids | None = None,
        rule_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
        severities: Severities | None = None,
        include_active: bool = False,
    ) -> pd.DataFrame:
        """The recovered alerts (with ``include_active``, every alert) of the devices and
        rules (``None``: all) whose occur time is in ``[start, end)``, optionally of some
        severities. Columns: :data:`RECORD_COLUMNS`; by occur time."""
        where = [] if include_active else ["recover_ms IS NOT NULL"]
        return self._frame(
            where,
            [],
            device_keys=device_keys,
            rule_ids=rule_ids,
            start=start,
            end=end,
            product_key=product_key,
            severities=severities,
        )

    def _frame(
        self,
        where: list[str],
        args: list[Any],
        *,
        device_keys: Ids | None,
        rule_ids: Ids | None,
        start: TimeLike | None,
        end: TimeLike | None,
        product_key: str | None,
        severities: Severities | None,
    ) -> pd.DataFrame:
        for column, ids in (
            ("device_key", id_list(device_keys, "device_keys")),
            ("rule_id", id_list(rule_ids, "rule_ids")),
            ("product_key", None if product_key is None else id_list(product_key, "product_key")),
            ("severity_id", severity_ids(severities)),
        ):
            if ids is not None:
                where.append(f"{column} IN ({', '.join('?' * len(ids))})")
                args.extend(ids)
        if start is not None:
            where.append("occur_ms >= ?")
            args.append(as_ms(start, "start"))
        if end is not None:
            where.append("occur_ms < ?")
            args.append(as_ms(end, "end"))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._reading() as db:
            rows = db.execute(f"{_SELECT}{clause} ORDER BY occur_ms, event_id", args).fetchall()
        return frame_of(rows)
