"""Application credentials: registered, listed, checked at login and revoked.

An application is a name, an access key (``app`` and 16 letters and digits) and an access
secret (32), with the grants of what it may read (:class:`~enos_lab.apps.Grant`). The lab
shows the secret once, in the :class:`Application` :meth:`ApplicationStore.register` returns;
the database keeps a salted SHA-256 digest of it only (a secret of 32 random letters and digits
is far beyond guessing, so a slow hash adds nothing; a copy of the data directory shows no
secret). :meth:`ApplicationStore.check` compares in constant time.

The database is ``applications.sqlite3`` in the data directory (0600, WAL). A revoked
application stays in it (``revoked_at``), refused from then on; its access key is never given
again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .._sqlite import open_records
from ..clock import Clock, SystemClock, from_epoch_ms
from ..errors import InvalidArgument, NotFound, RegistryError
from ._grants import Grant

__all__ = ["APPLICATIONS_FILE", "Application", "ApplicationStore"]

APPLICATIONS_FILE = "applications.sqlite3"
"""The applications database, in the data directory."""

_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS applications (
    access_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    salt BLOB NOT NULL,
    digest BLOB NOT NULL,
    grants TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
"""
_ALPHANUMERIC = string.ascii_letters + string.digits
_MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class Application:
    """An application credential: ``access_key`` is its MQTT user name's key (user name
    ``%app%&{access_key}``), ``access_secret`` its password, shown only when it is registered
    (``None`` when read back), ``grants`` what it may read; times tz-aware UTC."""

    name: str
    access_key: str
    access_secret: str | None = field(repr=False)
    grants: tuple[Grant, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def username(self) -> str:
        """The MQTT user name it logs in with."""
        return f"%app%&{self.access_key}"

    @property
    def revoked(self) -> bool:
        """Whether it was revoked (its logins are refused)."""
        return self.revoked_at is not None


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class ApplicationStore:
    """The applications database (see the module docstring); thread-safe.

    ``path`` is the database file (``":memory:"`` for none); ``rng`` makes keys and secrets
    (default: the OS's secure source; a seeded one only for reproducible tutorials).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._db = open_records(
            path, schema=_SCHEMA, version=_VERSION, what="applications", error=RegistryError
        )
        self._lock = threading.Lock()
        self._clock = clock or SystemClock()
        self._rng: random.Random = rng or secrets.SystemRandom()

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()

    def _token(self, length: int) -> str:
        return "".join(self._rng.choice(_ALPHANUMERIC) for _ in range(length))

    def register(
        self, name: str, grants: Iterable[Grant | str | Mapping[str, Any]] | Grant | str
    ) -> Application:
        """A new application named ``name`` reading what ``grants`` allow (one grant or
        several: :meth:`Grant.of` forms); its secret is in the result only."""
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
            raise InvalidArgument(
                f"an application name must be a non-empty string of at most {_MAX_NAME} "
                f"characters, got {name!r}"
            )
        if isinstance(grants, (Grant, str, Mapping)):
            grants = [grants]
        chosen = tuple(Grant.of(g) for g in grants)
        if not chosen:
            raise InvalidArgument(f"application {name!r} needs at least one grant")
        secret = self._token(32)
        salt = secrets.token_bytes(16)
        now_ms = self._clock.time_ms()
        data = json.dumps([g.to_json() for g in chosen])
        with self._lock:
            while True:
                key = "app" + self._token(16)
                try:
                    self._db.execute(
                        "INSERT INTO applications VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        (key, name, salt, _digest(salt, secret), data, now_ms),
                    )
                except sqlite3.IntegrityError:
                    continue  # an access key already given: draw again
                break
        return Application(name, key, secret, chosen, from_epoch_ms(now_ms))

    def get(self, access_key: str) -> Application:
        """The application of ``access_key`` (revoked ones too); :class:`NotFound` if none."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, access_key, grants, created_ms, revoked_ms FROM applications "
                "WHERE access_key = ?",
                (access_key,),
            ).fetchone()
        if row is None:
            raise NotFound(f"application {access_key!r} not found")
        return _application(row)

    def applications(self) -> list[Application]:
        """Every application, in the order registered (secrets not shown)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, access_key, grants, created_ms, revoked_ms FROM applications "
                "ORDER BY created_ms, rowid"
            ).fetchall()
        return [_application(row) for row in rows]

    def revoke(self, access_key: str) -> Application:
        """Refuse the application's logins from now on (idempotent); :class:`NotFound` for an
        unknown access key."""
        now_ms = self._clock.time_ms()
        with self._lock:
            self._db.execute(
                "UPDATE applications SET revoked_ms = ? WHERE access_key = ? "
                "AND revoked_ms IS NULL",
                (now_ms, access_key),
            )
        return self.get(access_key)

    def check(self, access_key: str, secret: str) -> Application | None:
        """The application if ``secret`` is the secret of the unrevoked ``access_key``, else
        ``None`` (compared in constant time)."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, access_key, grants, created_ms, revoked_ms, salt, digest "
                "FROM applications WHERE access_key = ?",
                (access_key,),
            ).fetchone()
        if row is None:
            return None
        if not hmac.compare_digest(_digest(row[5], secret), row[6]) or row[4] is not None:
            return None
        return _application(row[:5])


def _application(row: tuple[Any, ...]) -> Application:
    name, key, grants, created_ms, revoked_ms = row
    return Application(
        name,
        key,
        None,
        tuple(Grant.of(g) for g in json.loads(grants)),
        from_epoch_ms(created_ms),
        None if revoked_ms is None else from_epoch_ms(revoked_ms),
    )
