"""Command records in SQLite: every command the cloud sends to a device, through its life.

Theory of operation. One SQLite file (mode 0600, WAL journal) holds one row per command: who it
went to, what it was (``kind``: a service id, ``rrpc:{service id}`` for a legacy RRPC call,
``measurepoint.set``, ``measurepoint.get``, ``raw``), its parameters, and the times of each
step of its life on the lab clock: created, queued (a cached command, EnOS ``pendingTtl``,
while its device is offline), sent, replied (code, message, data), failed (the device offline,
an error code, the lab stopped), expired (a cached command whose ``pendingTtl`` passed before
it could be sent) or timed out (sent, no reply in time). :attr:`CommandStatus` is the step it
reached last. One connection guarded by a lock serves every thread; each write is one
transaction.

Bounded: finished commands (replied, failed, expired, timed out) created more than ``keep``
ago (default 30 days) are deleted, and at most ``max_history`` of them are kept (the most
recent). Writes prune at most once per :data:`PRUNE_EVERY` of the clock's time; commands
still waiting are never pruned.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from random import Random
from typing import Any

import pandas as pd

from .._sqlite import PRUNE_EVERY, PrunedRecords, where_clause
from ..clock import Clock, SystemClock
from ..errors import InvalidArgument, NotFound, StoreError
from ..store import TimeLike

__all__ = [
    "COMMANDS_FILE",
    "COMMAND_COLUMNS",
    "KEEP",
    "MAX_HISTORY",
    "PRUNE_EVERY",
    "CommandRecord",
    "CommandRecords",
    "CommandStatus",
]

log = logging.getLogger(__name__)

COMMANDS_FILE = "commands.sqlite3"
"""Name of the command records database in the lab's data directory."""
KEEP = timedelta(days=30)
"""How long finished commands are kept by default."""
MAX_HISTORY = 100_000
"""Most finished commands kept by default (the most recent). [records]"""


class CommandStatus(Enum):
    """The last step a command reached."""

    CREATED = "created"
    """Recorded, not sent yet."""
    QUEUED = "queued"
    """A cached command waiting for its device (offline, or busy with an earlier one)."""
    SENT = "sent"
    """Delivered to the device's connection; no reply yet."""
    REPLIED = "replied"
    """The device answered with code 200."""
    FAILED = "failed"
    """The device answered with another code, was offline (instant command), or the lab
    stopped first (``reason`` says which)."""
    EXPIRED = "expired"
    """A cached command whose ``pending_ttl`` passed before it could be sent."""
    TIMED_OUT = "timed_out"
    """Sent, but no reply came in time."""

    @property
    def finished(self) -> bool:
        """Whether nothing more happens to the command."""
        return self not in (CommandStatus.CREATED, CommandStatus.QUEUED, CommandStatus.SENT)


_TIMES = ("created", "queued", "expires", "sent", "replied", "finished")
COMMAND_COLUMNS = (
    "command_id",
    "product_key",
    "device_key",
    "kind",
    "params",
    "status",
    "created",
    "queued",
    "expires",
    "sent",
    "replied",
    "finished",
    "code",
    "message",
    "data",
    "reason",
)
"""Columns of :meth:`CommandRecords.frame` (times tz-aware UTC; ``finished``: when it reached
its final status; ``params`` and ``data`` as sent and answered)."""

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    product_key TEXT NOT NULL,
    device_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    queued_ms INTEGER,
    expires_ms INTEGER,
    sent_ms INTEGER,
    replied_ms INTEGER,
    finished_ms INTEGER,
    code INTEGER,
    message TEXT,
    data TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS commands_by_created ON commands (created_ms);
CREATE INDEX IF NOT EXISTS commands_by_device ON commands (product_key, device_key, created_ms);
"""
_COLUMNS_SQL = (
    "command_id, product_key, device_key, kind, params, status, created_ms, queued_ms, "
    "expires_ms, sent_ms, replied_ms, finished_ms, code, message, data, reason"
)
_SELECT = f"SELECT {_COLUMNS_SQL} FROM commands"


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else pd.Timestamp(ms, unit="ms", tz="UTC").to_pydatetime()


def _json(value: object, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not JSON: {value!r}") from exc


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One command's life (see :data:`COMMAND_COLUMNS`; times tz-aware UTC or None)."""

    command_id: str
    product_key: str
    device_key: str
    kind: str
    params: Any
    status: CommandStatus
    created: datetime
    queued: datetime | None
    expires: datetime | None
    sent: datetime | None
    replied: datetime | None
    finished: datetime | None
    code: int | None
    message: str | None
    data: Any
    reason: str | None


def _record_of(row: tuple[Any, ...]) -> CommandRecord:
    values = list(row)
    values[4] = json.loads(values[4])
    values[5] = CommandStatus(values[5])
    for index in range(6, 12):
        values[index] = _time(values[index])
    values[14] = None if values[14] is None else json.loads(values[14])
    return CommandRecord(*values)


class CommandRecords(PrunedRecords):
    """Command records in the SQLite file ``path`` (created 0600 if missing; ``":memory:"``
    for records that live as long as the object).

    ``clock`` gives every time (default: the system clock); ``keep`` is how long finished
    commands are kept (``None``: forever), ``max_history`` how many at most (``None``: no
    limit); ``rng`` makes command ids (default: the OS's secure source). Usable from any
    thread; :meth:`close` it when done.
    """

    _WHAT = "command records"
    # commands still waiting are never pruned
    _EXPIRED_SQL = "DELETE FROM commands WHERE finished_ms IS NOT NULL AND created_ms < ?"
    _OVERFLOW_SQL = (
        "DELETE FROM commands WHERE command_id IN (SELECT command_id FROM commands "
        "WHERE finished_ms IS NOT NULL ORDER BY created_ms DESC, rowid DESC LIMIT -1 OFFSET ?)"
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
            path, _SCHEMA, _SCHEMA_VERSION, StoreError, clock or SystemClock(), keep, max_history
        )
        self._rng: Random = rng or secrets.SystemRandom()

    # ---------------------------------------------------------------- writes

    def create(
        self,
        product_key: str,
        device_key: str,
        kind: str,
        params: object,
        expires_ms: int | None = None,
    ) -> str:
        """Record a new command (status ``created``, now; a cached one with the time it
        expires, ``expires_ms`` [ms since the epoch]) and return its id."""
        command_id = format(self._rng.getrandbits(64), "016x")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO commands (command_id, product_key, device_key, kind, params, "
                "status, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    command_id,
                    product_key,
                    device_key,
                    kind,
                    _json(params, f"command {kind!r}: params"),
                    CommandStatus.CREATED.value,
                    self._clock.time_ms(),
                    expires_ms,
                ),
            )
        return command_id

    def queued(self, command_id: str, expires_ms: int | None) -> None:
        """The cached command ``command_id`` waits for its device until ``expires_ms``."""
        self._set(
            command_id,
            CommandStatus.QUEUED,
            "queued_ms = COALESCE(queued_ms, ?), expires_ms = ?",
            self._clock.time_ms(),
            expires_ms,
        )

    def sent(self, command_id: str) -> None:
        """``command_id`` was delivered to its device's connection."""
        self._set(command_id, CommandStatus.SENT, "sent_ms = ?", self._clock.time_ms())

    def replied(self, command_id: str, code: int, message: str, data: object) -> None:
        """The device answered ``command_id`` with ``code`` (200: ``replied``, else
        ``failed``), ``message`` and ``data``."""
        now = self._clock.time_ms()
        status = CommandStatus.REPLIED if code == 200 else CommandStatus.FAILED
        try:
            text = json.dumps(data)
        except (TypeError, ValueError):
            text = json.dumps(repr(data))
        self._set(
            command_id,
            status,
            "replied_ms = ?, finished_ms = ?, code = ?, message = ?, data = ?, reason = ?",
            now,
            now,
            code,
            message,
            text,
            None if code == 200 else f"the device answered with code {code}",
        )

    def finished(self, command_id: str, status: CommandStatus, reason: str) -> None:
        """``command_id`` ended as ``status`` (failed, expired, timed out) for ``reason``."""
        if not status.finished or status is CommandStatus.REPLIED:
            raise InvalidArgument(f"command {command_id}: {status} is not an end without reply")
        self._set(command_id, status, "finished_ms = ?, reason = ?", self._clock.time_ms(), reason)

    def fail_unfinished(self, reason: str) -> int:
        """Mark every command not finished as failed for ``reason`` (left over by a lab that
        stopped); returns how many."""
        now = self._clock.time_ms()
        with self._transaction() as db:
            return db.execute(
                "UPDATE commands SET status = ?, finished_ms = ?, reason = ? "
                "WHERE status IN (?, ?, ?)",
                (
                    CommandStatus.FAILED.value,
                    now,
                    reason,
                    CommandStatus.CREATED.value,
                    CommandStatus.QUEUED.value,
                    CommandStatus.SENT.value,
                ),
            ).rowcount

    def delete_device(self, product_key: str, device_key: str) -> int:
        """Delete every record of one device (a purged deletion); returns how many."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM commands WHERE product_key = ? AND device_key = ?",
                (product_key, device_key),
            ).rowcount

    def _set(self, command_id: str, status: CommandStatus, assignments: str, *values: Any) -> None:
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE commands SET status = ?, {assignments} WHERE command_id = ?",
                (status.value, *values, command_id),
            ).rowcount
            if not changed:
                raise NotFound(f"no command {command_id!r}")

    # ---------------------------------------------------------------- reads

    def get(self, command_id: str) -> CommandRecord:
        """The record of ``command_id``; :class:`~enos_lab.errors.NotFound` if there is none."""
        with self._reading() as db:
            row = db.execute(f"{_SELECT} WHERE command_id = ?", (command_id,)).fetchone()
        if row is None:
            raise NotFound(f"no command {command_id!r}")
        return _record_of(row)

    def frame(
        self,
        product_key: str | None = None,
        device_key: str | None = None,
        *,
        status: CommandStatus | str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> pd.DataFrame:
        """The commands of a product / device (``None``: all) created in ``[start, end)``,
        optionally of one ``status``; columns :data:`COMMAND_COLUMNS`, by creation time."""
        wanted = None
        if status is not None:
            try:
                wanted = CommandStatus(status).value
            except ValueError:
                known = ", ".join(s.value for s in CommandStatus)
                raise InvalidArgument(f"status must be one of {known}, got {status!r}") from None
        clause, args = where_clause(
            (("product_key", product_key), ("device_key", device_key), ("status", wanted)),
            "created_ms",
            start,
            end,
        )
        with self._reading() as db:
            rows = db.execute(f"{_SELECT}{clause} ORDER BY created_ms, rowid", args).fetchall()
        records = [_record_of(row) for row in rows]
        frame = pd.DataFrame(
            [
                {
                    **{name: getattr(record, name) for name in COMMAND_COLUMNS},
                    "status": record.status.value,
                }
                for record in records
            ],
            columns=list(COMMAND_COLUMNS),
        )
        for name in _TIMES:
            frame[name] = pd.to_datetime(frame[name], utc=True)
        frame["code"] = frame["code"].astype("Int64")
        return frame
