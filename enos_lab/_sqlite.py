"""The records databases the lab keeps beside its registry (alert records, command records,
configuration history).

Each is one SQLite file (0600, WAL, ``synchronous=NORMAL``) with its schema and a schema
version in ``PRAGMA user_version``; a file of a newer version is refused rather than misread.
Each keeps finished records for a while (``keep``) and up to a number (``max_history``).
:class:`PrunedRecords` is the plumbing the three share: a locked connection, write
transactions that prune when due, and the prune itself (the alert records put their own
batched transactions over it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from ._files import private_sqlite
from .clock import Clock
from .errors import ClosedError, EnosLabError, InvalidArgument
from .store import TimeLike, as_ms

__all__ = ["PRUNE_EVERY", "PrunedRecords", "check_retention", "open_records", "where_clause"]

log = logging.getLogger(__name__)

PRUNE_EVERY = timedelta(hours=1)
"""Writes prune history at most this often (lab clock time), unless written rows ask sooner."""


def check_retention(owner: str, keep: timedelta | None, max_history: int | None) -> int | None:
    """Check ``keep`` (a timedelta > 0 or None) and ``max_history`` (an int >= 0 or None) for
    ``owner``; returns ``keep`` in ms (None: forever)."""
    if keep is not None and (not isinstance(keep, timedelta) or keep <= timedelta(0)):
        raise InvalidArgument(f"{owner}: keep must be a timedelta > 0 or None, got {keep!r}")
    if max_history is not None and (
        not isinstance(max_history, int) or isinstance(max_history, bool) or max_history < 0
    ):
        raise InvalidArgument(
            f"{owner}: max_history must be an int >= 0 or None, got {max_history!r}"
        )
    return None if keep is None else round(keep.total_seconds() * 1000)


def where_clause(
    equal: Iterable[tuple[str, object]],
    time_column: str,
    start: TimeLike | None,
    end: TimeLike | None,
) -> tuple[str, list[Any]]:
    """A ``WHERE`` clause (empty for no condition) and its parameters: each ``(column,
    value)`` of ``equal`` whose value is not None (a non-empty string, else
    :class:`~enos_lab.errors.InvalidArgument` naming the column), and ``time_column`` in
    ``[start, end)`` [ms since the epoch]."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in equal:
        if value is not None:
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"{column} must be a non-empty string, got {value!r}")
            where.append(f"{column} = ?")
            args.append(value)
    if start is not None:
        where.append(f"{time_column} >= ?")
        args.append(as_ms(start, "start"))
    if end is not None:
        where.append(f"{time_column} < ?")
        args.append(as_ms(end, "end"))
    return (f" WHERE {' AND '.join(where)}" if where else ""), args


def open_records(
    path: str | Path, *, schema: str, version: int, what: str, error: type[EnosLabError]
) -> sqlite3.Connection:
    """Open (creating it 0600 if missing; ``":memory:"`` too) the ``what`` database at
    ``path`` with ``schema`` at ``version``; any failure raises ``error`` naming the file."""
    name = str(path)
    memory = name in ("", ":memory:") or name.startswith("file::memory:")
    try:
        if not memory:
            private_sqlite(Path(path))
        db = sqlite3.connect(name, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise error(f"cannot open the {what} database {path}: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found > version:
            raise error(
                f"the {what} database {path} has schema version {found}, newer than this "
                f"version of enos_lab reads ({version})"
            )
        db.executescript(schema)
        db.execute(f"PRAGMA user_version={version}")
    except sqlite3.Error as exc:
        db.close()
        raise error(f"cannot open the {what} database {path}: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


class PrunedRecords:
    """A records database kept by one object, usable from any thread: one connection guarded
    by a lock, each write one transaction (:meth:`_transaction`) that prunes the history when
    due: once per :data:`PRUNE_EVERY` of the clock's time and, for rows counted with
    :meth:`_wrote`, as soon as a tenth of ``max_history`` was written since the last prune (so
    that a flood of writes cannot grow the file until the next hour).

    A subclass names itself (``_WHAT``, in messages) and gives the two deletes of a prune:
    ``_EXPIRED_SQL`` (its one parameter: the cutoff [ms since the epoch]) and
    ``_OVERFLOW_SQL`` (its one parameter: ``max_history``, the newest rows kept).
    """

    _WHAT = "records"
    _EXPIRED_SQL = ""
    _OVERFLOW_SQL = ""

    def __init__(  # noqa: PLR0917 - what a records database is made of
        self,
        path: str | Path,
        schema: str,
        version: int,
        error: type[EnosLabError],
        clock: Clock,
        keep: timedelta | None,
        max_history: int | None,
    ) -> None:
        self._clock = clock
        self._keep_ms = check_retention(type(self).__name__, keep, max_history)
        self._max_history = max_history
        self._lock = threading.RLock()
        self._path = str(path)
        self._closed = False
        self._db = open_records(path, schema=schema, version=version, what=self._WHAT, error=error)
        self._next_prune_ms = clock.time_ms()
        self._written = 0  # rows counted by _wrote since the last prune
        self._prune_rows = None if max_history is None else max(1, max_history // 10)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r})"

    def close(self) -> None:
        """Close the database; further calls raise :class:`~enos_lab.errors.ClosedError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; :class:`~enos_lab.errors.ClosedError` once
        closed."""
        with self._lock:
            if self._closed:
                raise ClosedError(f"{self._path} ({self._WHAT}) is closed")
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, pruning at its end when due."""
        with self._reading() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                now = self._clock.time_ms()
                rows = self._prune_rows
                if now >= self._next_prune_ms or (rows is not None and self._written >= rows):
                    self._prune(now)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _wrote(self, rows: int) -> None:
        """Count rows written in the current transaction towards the next prune."""
        self._written += rows

    def prune(self, now: TimeLike | None = None) -> int:
        """Delete the rows beyond ``keep`` and ``max_history`` at ``now`` (default: the
        clock's now); returns how many were deleted."""
        now_ms = self._clock.time_ms() if now is None else as_ms(now, "now")
        with self._reading():
            return self._prune(now_ms)

    def _prune(self, now_ms: int) -> int:
        """Prune inside the caller's transaction; the next automatic prune is due later."""
        self._next_prune_ms = now_ms + round(PRUNE_EVERY.total_seconds() * 1000)
        self._written = 0
        deleted = 0
        if self._keep_ms is not None:
            deleted += self._db.execute(self._EXPIRED_SQL, (now_ms - self._keep_ms,)).rowcount
        if self._max_history is not None:
            deleted += self._db.execute(self._OVERFLOW_SQL, (self._max_history,)).rowcount
        if deleted:
            log.info("pruned %d row(s) of the %s %s", deleted, self._WHAT, self._path)
        return deleted
