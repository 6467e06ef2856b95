"""The registry's secrets at rest: sealed under the lab key, opened by every reader.

Theory of operation
-------------------
Device and product secrets are kept sealed under the lab key (:mod:`enos_lab.vault`:
AES-256-GCM, each value bound to its column and row) and opened by every reader that hands one
out (device and product records, the login path, the credentials table), so nothing in the file
is a secret in clear. :class:`Sealer` holds the key and is the one place that names the
column and row a value is bound to.

The ``vault`` table names the fingerprint of the key that sealed them:
:meth:`Sealer.check_or_seal` refuses another key (:class:`~enos_lab.errors.WrongLabKey`)
before anything is read, and seals in place, in the caller's transaction with SQLite's
``secure_delete`` on, the secrets of a registry written before secrets were sealed (no
fingerprint); the caller then checkpoints and truncates the write-ahead log, so that the clear
values are overwritten in the file. :func:`sealed_with` reads the fingerprint of a file without
opening it as a registry (the lab asks before it loads or creates its key file).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ..errors import WrongLabKey
from ..vault import LabKey, context
from ._records import Device, Product
from ._rows import device_from_row, product_from_row

__all__ = ["Sealer", "sealed_with"]

_FINGERPRINT = "SELECT value FROM vault WHERE name='key_fingerprint'"


def sealed_with(path: str | Path) -> str | None:
    """The fingerprint of the lab key that sealed the secrets of the registry file ``path``;
    ``None`` for a missing file or one whose secrets were never sealed (a new lab key may be
    made for it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute(_FINGERPRINT).fetchone()
        finally:
            db.close()
    except sqlite3.Error:  # no vault table yet, or not a registry: nothing sealed
        return None
    return None if row is None else str(row[0])


class Sealer:
    """Seals and opens the registry's secrets under ``key`` (see the module docstring)."""

    __slots__ = ("key",)

    def __init__(self, key: LabKey) -> None:
        self.key = key

    def product_secret(self, product_key: str, secret: str) -> str:
        """A product secret sealed for its row."""
        return self.key.seal(secret, context("product_secret", product_key))

    def device_secret(self, product_key: str, device_key: str, secret: str) -> str:
        """A device secret sealed for its row."""
        return self.key.seal(secret, context("device_secret", product_key, device_key))

    def open_device_secret(self, product_key: str, device_key: str, sealed: str) -> str:
        """A device secret opened (:class:`~enos_lab.errors.SealBroken` if it does not open
        for this row)."""
        return self.key.open(sealed, context("device_secret", product_key, device_key))

    def product(self, row: tuple[Any, ...]) -> Product:
        """A product from its row, its secret opened."""
        secret = self.key.open(row[1], context("product_secret", row[0]))
        return product_from_row((row[0], secret, *row[2:]))

    def device(self, row: tuple[Any, ...]) -> Device:
        """A device from its row (product key, device key, secret, ...), its secret opened."""
        secret = self.open_device_secret(row[0], row[1], row[2])
        return device_from_row((row[0], row[1], secret, *row[3:]))

    def check_or_seal(self, db: sqlite3.Connection, path: Path) -> tuple[int, int]:
        """In the caller's transaction on ``db``: refuse a database sealed under another key,
        or seal the secrets of one never sealed (``secure_delete`` left on: the caller turns
        it off after the commit). Returns how many product and device secrets were sealed."""
        key = self.key
        row = db.execute(_FINGERPRINT).fetchone()
        if row is not None:
            if row[0] != key.fingerprint:
                where = key.path if key.path is not None else "a key in memory"
                raise WrongLabKey(
                    f"the secrets in {path} were sealed under lab key {row[0]}, but the key "
                    f"file ({where}) holds key {key.fingerprint}: it was replaced or "
                    "belongs to another lab. Put the lab's own key file back (or pass it "
                    "with key_file=); without it the secrets cannot be opened"
                )
            return 0, 0
        products = db.execute("SELECT product_key, product_secret FROM products").fetchall()
        devices = db.execute(
            "SELECT product_key, device_key, device_secret FROM devices"
        ).fetchall()
        if products or devices:
            db.execute("PRAGMA secure_delete=ON")  # the clear values are overwritten
        for pk, secret in products:
            db.execute(
                "UPDATE products SET product_secret=? WHERE product_key=?",
                (self.product_secret(pk, secret), pk),
            )
        for pk, dk, secret in devices:
            db.execute(
                "UPDATE devices SET device_secret=? WHERE product_key=? AND device_key=?",
                (self.device_secret(pk, dk, secret), pk, dk),
            )
        db.execute("INSERT INTO vault VALUES ('key_fingerprint', ?)", (key.fingerprint,))
        return len(products), len(devices)
