"""The CA's index of the certificates it issued: a small SQLite table in the CA directory.

Why a database of its own and not a table in the registry: the CA is a self-contained, pure
package (the registry does not import it, and it does not import the registry), its directory
holds everything that a backup or a wipe of "the lab's identity" must take together (the key,
the certificate, the CRL and the index that the CRL is built from), and a later slice encrypts
that directory under the lab key without touching the registry's hot login path. The index is
small (one row per issued certificate) and written only on issue and revocation.

Each call opens its own short-lived connection, so the index holds no file handle between
calls and may be used from any thread; writes are serialised by a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path

from .._files import private_sqlite
from ..clock import from_epoch_ms, to_epoch_ms
from ._types import CertificateRecord

__all__ = ["CertificateIndex"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial_number TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    product_key TEXT NOT NULL,
    device_key TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    issued_at_ms INTEGER NOT NULL,
    not_before_ms INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    revocation_reason TEXT,
    pem TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_device ON certificates (product_key, device_key);
"""

_COLUMNS = (
    "serial_number, kind, product_key, device_key, asset_id, key_type, issued_at_ms, "
    "not_before_ms, not_after_ms, revoked_at_ms, revocation_reason, pem"
)


class CertificateIndex:
    """The index file ``path`` (created 0600 with its table on first use)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        private_sqlite(path)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._path)) as db, db:
            yield db

    def add(self, record: CertificateRecord) -> None:
        """Record an issued certificate."""
        with self._lock, self._connect() as db:
            db.execute(
                f"INSERT INTO certificates ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.serial_number,
                    record.kind,
                    record.product_key,
                    record.device_key,
                    record.asset_id,
                    record.key_type,
                    to_epoch_ms(record.issued_at),
                    to_epoch_ms(record.not_before),
                    to_epoch_ms(record.not_after),
                    None,
                    None,
                    record.certificate,
                ),
            )

    def revoke(self, serial_number: str, at: datetime, reason: str) -> bool:
        """Mark a certificate revoked; False if it is unknown or revoked already."""
        with self._lock, self._connect() as db:
            cursor = db.execute(
                "UPDATE certificates SET revoked_at_ms = ?, revocation_reason = ? "
                "WHERE serial_number = ? AND revoked_at_ms IS NULL",
                (to_epoch_ms(at), reason, serial_number),
            )
            return cursor.rowcount == 1

    def get(self, serial_number: str) -> CertificateRecord | None:
        """The record of one serial number (hexadecimal), or ``None``."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM certificates WHERE serial_number = ?", (serial_number,)
            ).fetchone()
        return None if row is None else _record(row)

    def find(
        self,
        *,
        kind: str | None = None,
        product_key: str | None = None,
        device_key: str | None = None,
        revoked: bool | None = None,
    ) -> list[CertificateRecord]:
        """The records that match every given filter, oldest first."""
        where: list[str] = []
        args: list[object] = []
        for column, value in (
            ("kind", kind),
            ("product_key", product_key),
            ("device_key", device_key),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if revoked is not None:
            where.append("revoked_at_ms IS NOT NULL" if revoked else "revoked_at_ms IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM certificates{clause} ORDER BY issued_at_ms, rowid",
                args,
            ).fetchall()
        return [_record(row) for row in rows]


def _record(row: tuple[object, ...]) -> CertificateRecord:
    (serial, kind, pk, dk, asset, key_type, issued, before, after, revoked, reason, pem) = row
    assert isinstance(issued, int) and isinstance(before, int) and isinstance(after, int)
    return CertificateRecord(
        serial_number=str(serial),
        kind=str(kind),
        product_key=str(pk),
        device_key=str(dk),
        asset_id=str(asset),
        key_type=str(key_type),
        issued_at=from_epoch_ms(issued),
        not_before=from_epoch_ms(before),
        not_after=from_epoch_ms(after),
        revoked_at=from_epoch_ms(revoked) if isinstance(revoked, int) else None,
        revocation_reason=None if reason is None else str(reason),
        certificate=str(pem),
    )
