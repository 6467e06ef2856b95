"""Configuration history in SQLite: every attribute and tag change of every device, either side.

Theory of operation. One SQLite file (``config.sqlite3``, mode 0600, WAL journal) holds one
row per changed key: when (lab clock), which device, ``kind`` (``attribute`` or ``tag``), the
key, its value before and after (JSON; ``None`` for "had none" / "deleted"), ``source``
(``cloud``: set through the lab; ``device``: reported by the device over MQTT), ``actor``
(who, where known: the caller's name for cloud changes, the reporting topic for device ones)
and ``pushed`` (cloud changes: whether the change reached the device's live connection;
``None`` for device changes). One connection guarded by a lock serves every thread; each
write is one transaction.

Bounded: rows older than ``keep`` (default 30 days) are deleted and at most ``max_history``
are kept (the most recent; the defaults are the command records'). Writes prune as
:class:`~enos_lab._sqlite.PrunedRecords` does: once per :data:`~enos_lab.control.PRUNE_EVERY`
of the clock's time, and as soon as a tenth of ``max_history`` rows was written since the
last prune (a device flooding attribute updates cannot grow the file for an hour).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd

from .._sqlite import PrunedRecords, where_clause
from ..clock import Clock, SystemClock
from ..errors import InvalidArgument, StoreError
from ..store import TimeLike
from ._records import KEEP, MAX_HISTORY

__all__ = [
    "CONFIG_COLUMNS",
    "CONFIG_FILE",
    "ConfigChange",
    "ConfigHistory",
    "ConfigKind",
    "ConfigSource",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.sqlite3"
"""Name of the configuration history database in the lab's data directory."""


class ConfigKind(Enum):
    """What changed."""

    ATTRIBUTE = "attribute"
    TAG = "tag"


class ConfigSource(Enum):
    """Which side made a change."""

    CLOUD = "cloud"
    """Set through the lab (:meth:`Lab.set_attributes <enos_lab.lab.Lab.set_attributes>`,
    ...)."""
    DEVICE = "device"
    """Reported by the device (``thing.attribute.update``/``delete``, ``thing.tag.*``, the
    integration channel)."""


CONFIG_COLUMNS = (
    "time",
    "product_key",
    "device_key",
    "kind",
    "key",
    "old_value",
    "new_value",
    "source",
    "actor",
    "pushed",
)
"""Columns of :meth:`ConfigHistory.frame` (``time`` tz-aware UTC; ``old_value`` /
``new_value`` ``None`` for none / deleted; ``pushed`` a nullable boolean)."""


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One changed key (a row of the history before it is written)."""

    product_key: str
    device_key: str
    kind: ConfigKind
    key: str
    old_value: Any
    new_value: Any
    source: ConfigSource
    actor: str | None = None
    pushed: bool | None = None


_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    time_ms INTEGER NOT NULL,
    product_key TEXT NOT NULL,
    device_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT,
    source TEXT NOT NULL,
    actor TEXT,
    pushed INTEGER
);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes (time_ms);
CREATE INDEX IF NOT EXISTS changes_by_device ON changes (product_key, device_key, time_ms);
"""


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class ConfigHistory(PrunedRecords):
    """The configuration history in the SQLite file ``path`` (created 0600 if missing;
    ``":memory:"`` for one that lives as long as the object).

    ``clock`` gives every time (default: the system clock); ``keep`` is how long changes are
    kept (``None``: forever), ``max_history`` how many at most (``None``: no limit). Usable from
    any thread; :meth:`close` it when done.
    """

    _WHAT = "configuration history"
    _EXPIRED_SQL = "DELETE FROM changes WHERE time_ms < ?"
    _OVERFLOW_SQL = (
        "DELETE FROM changes WHERE rowid IN (SELECT rowid FROM changes "
        "ORDER BY time_ms DESC, rowid DESC LIMIT -1 OFFSET ?)"
    )

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        keep: timedelta | None = KEEP,
        max_history: int | None = MAX_HISTORY,
    ) -> None:
        super().__init__(
            path, _SCHEMA, _SCHEMA_VERSION, StoreError, clock or SystemClock(), keep, max_history
        )

    def record(self, changes: Iterable[ConfigChange], at_ms: int | None = None) -> int:
        """Write ``changes`` made at ``at_ms`` (default: now) [ms since the epoch]; returns
        how many."""
        when = self._clock.time_ms() if at_ms is None else at_ms
        rows = [
            (
                when,
                change.product_key,
                change.device_key,
                change.kind.value,
                change.key,
                _dump(change.old_value),
                _dump(change.new_value),
                change.source.value,
                change.actor,
                None if change.pushed is None else int(change.pushed),
            )
            for change in changes
        ]
        if not rows:
            return 0
        with self._transaction() as db:
            self._wrote(len(rows))
            db.executemany(
                "INSERT INTO changes (time_ms, product_key, device_key, kind, key, old_value, "
                "new_value, source, actor, pushed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def delete_device(self, product_key: str, device_key: str) -> int:
        """Delete the history of one device (a purged deletion); returns how many rows."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM changes WHERE product_key = ? AND device_key = ?",
                (product_key, device_key),
            ).rowcount

    def frame(
        self,
        product_key: str | None = None,
        device_key: str | None = None,
        *,
        key: str | None = None,
        source: ConfigSource | str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> pd.DataFrame:
        """The changes of a product / device (``None``: all) in ``[start, end)``, optionally of
        one ``key`` and one ``source``; columns :data:`CONFIG_COLUMNS`, oldest first."""
        wanted = None
        if source is not None:
            try:
                wanted = ConfigSource(source).value
            except ValueError:
                known = ", ".join(s.value for s in ConfigSource)
                raise InvalidArgument(f"source must be one of {known}, got {source!r}") from None
        clause, args = where_clause(
            (
                ("product_key", product_key),
                ("device_key", device_key),
                ("key", key),
                ("source", wanted),
            ),
            "time_ms",
            start,
            end,
        )
        with self._reading() as db:
            rows = db.execute(
                "SELECT time_ms, product_key, device_key, kind, key, old_value, new_value, "
                f"source, actor, pushed FROM changes{clause} ORDER BY time_ms, rowid",
                args,
            ).fetchall()
        frame = pd.DataFrame(
            [
                (
                    time_ms,
                    pk,
                    dk,
                    kind,
                    name,
                    _load(old),
                    _load(new),
                    src,
                    actor,
                    None if pushed is None else bool(pushed),
                )
                for time_ms, pk, dk, kind, name, old, new, src, actor, pushed in rows
            ],
            columns=list(CONFIG_COLUMNS),
            dtype=object,  # values as kept: None stays None, whatever the other rows hold
        )
        frame["time"] = pd.to_datetime(frame["time"].astype("int64"), unit="ms", utc=True)
        frame["pushed"] = frame["pushed"].astype("boolean")
        return frame
