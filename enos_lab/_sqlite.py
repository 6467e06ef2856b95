"""The records databases the lab keeps beside its registry (alert records, command records).

Each is one SQLite file (0600, WAL, ``synchronous=NORMAL``) with its schema and a schema
version in ``PRAGMA user_version``; a file of a newer version is refused rather than misread.
Each keeps finished records for a while (``keep``) and up to a number (``max_history``).
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from ._files import private_sqlite
from .errors import EnosLabError, InvalidArgument

__all__ = ["check_retention", "open_records"]


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
