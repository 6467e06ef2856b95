"""The device registry: products, devices, credentials, lifecycle and topology, in SQLite.

Theory of operation
-------------------
One SQLite file (``registry.sqlite3`` in the lab's data directory) holds products, devices,
custom topics, the presence log and the user's thing models (REST JSON documents; the lab parses
them). :class:`Registry` is synchronous and thread-safe (one connection guarded by a lock, WAL
journal, every method one transaction), so the hub can call it on its event loop (each call is
well under a millisecond) and the notebook facade from any thread.

Presence changes (the hub's online/offline records, two per device connection) are queued by
:meth:`Registry.queue_presence` and written in batches, by a second connection in a thread of
its own for a registry on a file (:mod:`enos_lab.registry._presence`); every other method first
writes the queue and waits for the batches in progress, so nothing reads them late.

Keys and secrets are generated from an injectable random source (``rng``) so that tutorials can be
reproducible; times come from an injectable :class:`~enos_lab.clock.Clock`.

Device and product secrets are kept sealed under the lab key and opened by every reader that
hands one out; the ``vault`` table names the key (:mod:`._sealing`).

The checks of what callers give and the conversions of rows are in :mod:`._rows`; bulk
registration and the DataFrames of devices and credentials in :mod:`._tables`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from .._files import private_sqlite
from ..clock import Clock, SystemClock, from_epoch_ms
from ..errors import AlreadyExists, InvalidArgument, NotFound, RegistryError
from ..vault import KEY_FILE, LabKey
from ._presence import PRESENCE_TRIGGER, Change, PresenceWriter, insert_one, write_batch
from ._records import DataFormat, Device, NodeType, Product, TopicPermission
from ._rows import (
    check_map,
    check_tags,
    check_timezone,
    check_topic_template,
    deleted,
    device_row,
    enum_value,
    permission,
    to_ms,
)
from ._sealing import Sealer, sealed_with
from ._tables import BulkResult, credentials_frame, devices_frame, register_many

__all__ = ["BulkResult", "Registry"]

log = logging.getLogger(__name__)

_ALPHANUMERIC = string.ascii_letters + string.digits
_KEY_ALLOWED = frozenset(_ALPHANUMERIC + "_-.:")

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS products (
    product_key TEXT PRIMARY KEY,
    product_secret TEXT NOT NULL,
    name TEXT NOT NULL,
    model_id TEXT,
    node_type TEXT NOT NULL,
    dynamic_activation INTEGER NOT NULL,
    data_format TEXT NOT NULL,
    certificate_required INTEGER NOT NULL,
    description TEXT NOT NULL,
    custom_topics TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    product_key TEXT NOT NULL REFERENCES products(product_key),
    device_key TEXT NOT NULL,
    device_secret TEXT NOT NULL,
    asset_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    name_i18n TEXT NOT NULL,
    description TEXT NOT NULL,
    timezone TEXT NOT NULL,
    tags TEXT NOT NULL,
    attributes TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    online INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    activated_at INTEGER,
    last_online_at INTEGER,
    last_offline_at INTEGER,
    gateway_product_key TEXT,
    gateway_device_key TEXT,
    PRIMARY KEY (product_key, device_key)
);
CREATE INDEX IF NOT EXISTS devices_by_gateway
    ON devices (gateway_product_key, gateway_device_key);
CREATE TABLE IF NOT EXISTS presence (
    at INTEGER NOT NULL,
    product_key TEXT NOT NULL,
    device_key TEXT NOT NULL,
    online INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vault (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS disabled_reasons (
    product_key TEXT NOT NULL,
    device_key TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (product_key, device_key)
);
"""
    + PRESENCE_TRIGGER
)

_DEVICE_COLUMNS = (
    "product_key, device_key, device_secret, asset_id, name, name_i18n, description, timezone, "
    "tags, attributes, enabled, online, created_at, activated_at, last_online_at, "
    "last_offline_at, gateway_product_key, gateway_device_key"
)


def _check_key(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidArgument(
            f"{what} must be a non-empty string of at most 64 characters: {value!r}"
        )
    if not set(value) <= _KEY_ALLOWED:
        raise InvalidArgument(
            f"{what} {value!r} may contain only letters, digits and _ - . : (it is a topic level)"
        )
    return value


class LoginRecord(NamedTuple):
    """What a login needs to know of a device (see :meth:`Registry._login_records`)."""

    device_secret: str
    enabled: bool
    online: bool
    activated: bool


class Registry:
    """Products, devices, credentials, lifecycle and topology, persisted in SQLite.

    ``path`` is the database file (created if missing; ``":memory:"`` for a throw-away
    registry). ``rng`` generates keys and secrets (default: the OS's secure source). ``key``
    seals the device and product secrets (default: the key file ``lab.key`` beside the
    database, created if missing unless the database's secrets are already sealed; a key in
    memory for an in-memory registry). Raises
    :class:`~enos_lab.errors.WrongLabKey` when the file's secrets were sealed under another
    key, and :class:`~enos_lab.errors.LabKeyError` for an unusable default key file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        key: LabKey | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._rng: random.Random = rng or secrets.SystemRandom()
        self._lock = threading.RLock()
        # on a file: created 0600 before SQLite opens it (its -wal and -shm files get the
        # database file's mode); a file of looser mode, and its -wal/-shm, are set to 0600
        memory = str(path) in ("", ":memory:") or str(path).startswith("file::memory:")
        if not memory:
            try:
                private_sqlite(Path(path))
            except OSError as exc:
                raise RegistryError(f"cannot create the registry database {path}: {exc}") from exc
        if key is None:
            key = (
                LabKey.ephemeral()
                if memory
                else LabKey.load(Path(path).parent / KEY_FILE, create=sealed_with(path) is None)
            )
        self._sealer = Sealer(key)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # 256 KiB of page cache instead of SQLite's 2 MiB: lookups are by primary key and the
        # OS caches the file; a hub with thousands of logins otherwise fills the larger cache
        self._db.execute("PRAGMA cache_size=-256")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._revision = 0  # see revision
        self._product_cache: dict[str, Product] = {}  # see get_product
        self._product_version = -1
        self._product_checked = -math.inf  # time.monotonic() of the last data_version check
        # presence changes queued by queue_presence, written before any other access
        self._queued: list[Change] = []
        # on a file, a second connection writes them in a thread, started with the first batch
        # (see _presence.py); an in-memory database has no second connection
        self._writer_path = None if memory else Path(path)
        self._writer: PresenceWriter | None = None
        try:
            self._check_or_seal(Path(path))
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the database. Further calls raise :class:`sqlite3.ProgrammingError`."""
        with self._lock:
            self._sync()
            if self._writer is not None:
                self._writer.close()
            self._db.close()

    # -- secrets at rest ------------------------------------------------------------------------

    def _check_or_seal(self, path: Path) -> None:
        """Check the key the secrets were sealed under, or seal those of an older registry
        (:meth:`Sealer.check_or_seal <enos_lab.registry._sealing.Sealer.check_or_seal>`)."""
        with self._transaction() as db:
            products, devices = self._sealer.check_or_seal(db, path)
        if products or devices:
            self._db.execute("PRAGMA secure_delete=OFF")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            log.info(
                "sealed %d product and %d device secret(s) of %s under the lab key %s",
                products,
                devices,
                path,
                self._sealer.key.fingerprint,
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested uses join the outer one."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._sync()
            writer = self._writer
            # no presence batch is written meanwhile (SQLite would make one of us wait)
            with writer.lock if writer is not None else contextlib.nullcontext():
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                self._revision += 1

    @property
    def revision(self) -> int:
        """A counter that moves with every change this registry object commits (products,
        devices, attributes, tags, topology, credentials; not presence): a cache of registry
        data is current while it has not moved (see :class:`DeviceLookup`)."""
        return self._revision

    def _sync(self) -> None:
        """Write the queued presence changes and wait for those being written, so that what
        is read next includes them (the caller holds the lock). Inside a transaction of this
        connection they wait for the next call."""
        if self._db.in_transaction:
            return
        queued, writer = self._queued, self._writer
        if queued:
            self._queued = []
            if writer is None:
                write_batch(self._db, queued)
                return
            writer.submit(queued)
        if writer is not None:
            writer.drain()

    def _now(self) -> datetime:
        """The clock's time at the millisecond precision the database keeps."""
        return from_epoch_ms(self._clock.time_ms())

    def _random_text(self, length: int) -> str:
        return "".join(self._rng.choice(_ALPHANUMERIC) for _ in range(length))

    # -- products ----------------------------------------------------------------------------

    def create_product(
        self,
        name: str,
        *,
        product_key: str | None = None,
        product_secret: str | None = None,
        model_id: str | None = None,
        node_type: NodeType | str = NodeType.DIRECT,
        dynamic_activation: bool = False,
        data_format: DataFormat | str = DataFormat.JSON,
        certificate_required: bool = False,
        description: str = "",
        custom_topics: Mapping[str, TopicPermission | str] | None = None,
    ) -> Product:
        """Create a product; keys and secrets are generated unless given.

        ``custom_topics`` maps templates such as ``/{productKey}/{deviceKey}/user/update`` to a
        :class:`TopicPermission` (``"publish"``, ``"subscribe"`` or ``"both"``).
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"product name must be a non-empty string, got {name!r}")
        key = _check_key(product_key, "product_key") if product_key else self._random_text(8)
        secret = product_secret or self._random_text(16)
        topics = {t: permission(p) for t, p in (custom_topics or {}).items()}
        for template in topics:
            check_topic_template(template)
        product = Product(
            product_key=key,
            product_secret=secret,
            name=name,
            model_id=model_id,
            node_type=enum_value(NodeType, node_type, "node_type"),
            dynamic_activation=bool(dynamic_activation),
            data_format=enum_value(DataFormat, data_format, "data_format"),
            certificate_required=bool(certificate_required),
            description=description,
            custom_topics=topics,
            created_at=self._now(),
        )
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM products WHERE product_key=?", (key,)).fetchone():
                raise AlreadyExists(f"product {key!r} already exists")
            db.execute(
                "INSERT INTO products VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    self._sealer.product_secret(key, secret),
                    name,
                    model_id,
                    product.node_type.value,
                    int(product.dynamic_activation),
                    product.data_format.value,
                    int(product.certificate_required),
                    description,
                    json.dumps({t: p.value for t, p in topics.items()}),
                    to_ms(product.created_at),
                ),
            )
        return product

    def get_product(self, product_key: str) -> Product:
        """The product with this key; :class:`~enos_lab.errors.NotFound` if there is none.

        Product records are kept in memory once read (the hub reads one per login) and
        dropped by :meth:`delete_product` (products are never updated). A deletion through
        another connection to the same file is noticed within ``_PRODUCT_CHECK`` seconds
        (SQLite's ``data_version`` tells whether another connection committed anything).
        """
        with self._lock:
            self._sync()
            return self._cached_product(product_key)

    def _cached_product(self, product_key: str) -> Product:
        """:meth:`get_product` without writing queued presence changes (lock held)."""
        db = self._db
        cache = self._product_cache
        now = time.monotonic()
        if now >= self._product_checked + _PRODUCT_CHECK:
            self._product_checked = now
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._product_version:
                cache.clear()
                self._product_version = version
        cached = cache.get(product_key)
        if cached is not None:
            return cached
        row = db.execute("SELECT * FROM products WHERE product_key=?", (product_key,)).fetchone()
        if row is None:
            raise NotFound(f"product {product_key!r} does not exist")
        product = cache[product_key] = self._sealer.product(row)
        return product

    def _login_records(
        self, product_key: str, device_key: str, *, current: bool = False
    ) -> tuple[Product | None, LoginRecord | None]:
        """The product and the login facts of a device (for
        :func:`~enos_lab.registry.authenticate`).

        Unlike the public readers this does not write queued presence changes first (logins
        come in bursts; their presence changes are written together), so ``online`` and
        ``activated`` may lag behind :meth:`queue_presence` calls - unless ``current`` is true
        (dynamic activation, which decides on them).
        """
        with self._lock:
            if current:
                self._sync()
            try:
                product = self._cached_product(product_key)
            except NotFound:
                return None, None
            row = self._db.execute(
                "SELECT device_secret, enabled, online, activated_at IS NOT NULL FROM devices "
                "WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            ).fetchone()
        if row is None:
            return product, None
        secret = self._sealer.open_device_secret(product_key, device_key, row[0])
        return product, LoginRecord(secret, bool(row[1]), bool(row[2]), bool(row[3]))

    def find_product(self, product_key: str) -> Product | None:
        """The product with this key, or ``None``."""
        try:
            return self.get_product(product_key)
        except NotFound:
            return None

    def products(self) -> list[Product]:
        """Every product, in creation order."""
        with self._lock:
            self._sync()
            rows = self._db.execute("SELECT * FROM products ORDER BY created_at, rowid").fetchall()
        return [self._sealer.product(row) for row in rows]

    def delete_product(self, product_key: str) -> None:
        """Delete a product that has no devices left."""
        with self._transaction() as db:
            self.get_product(product_key)
            count = db.execute(
                "SELECT count(*) FROM devices WHERE product_key=?", (product_key,)
            ).fetchone()[0]
            if count:
                raise RegistryError(
                    f"product {product_key!r} still has {count} device(s); delete them first"
                )
            db.execute("DELETE FROM products WHERE product_key=?", (product_key,))
            self._product_cache.pop(product_key, None)

    # -- user thing models --------------------------------------------------------------------

    def save_model(self, model_json: Mapping[str, Any]) -> None:
        """Keep a user thing model (REST ``ThingModel`` JSON with a ``modelId``).

        Raises :class:`~enos_lab.errors.AlreadyExists` when a model with that id is kept already.
        The registry only stores the document; the lab parses and validates it.
        """
        model_id = model_json.get("modelId")
        if not isinstance(model_id, str) or not model_id:
            raise InvalidArgument(f"thing model JSON needs a non-empty modelId, got {model_id!r}")
        try:
            text = json.dumps(dict(model_json), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"thing model {model_id!r} is not JSON-serialisable") from exc
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM models WHERE model_id=?", (model_id,)).fetchone():
                raise AlreadyExists(f"thing model {model_id!r} already exists")
            db.execute("INSERT INTO models VALUES (?,?,?)", (model_id, text, to_ms(self._now())))

    def delete_model(self, model_id: str) -> None:
        """Forget a kept user thing model; :class:`~enos_lab.errors.NotFound` if there is none."""
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM models WHERE model_id=?", (model_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"thing model {model_id!r} does not exist")

    def model_documents(self) -> list[dict[str, Any]]:
        """The kept user thing models as REST JSON documents, in the order they were saved."""
        with self._lock:
            self._sync()
            rows = self._db.execute("SELECT document FROM models ORDER BY rowid").fetchall()
        return [json.loads(text) for (text,) in rows]

    # -- devices -----------------------------------------------------------------------------

    def register_device(
        self,
        product_key: str,
        *,
        device_key: str | None = None,
        name: str | None = None,
        name_i18n: Mapping[str, str] | None = None,
        description: str = "",
        timezone: str = "+00:00",
        tags: Mapping[str, object] | None = None,
        attributes: Mapping[str, Any] | None = None,
        device_secret: str | None = None,
    ) -> Device:
        """Register a device of ``product_key``; its key and secret are generated unless given.

        The device starts INACTIVE. Raises :class:`~enos_lab.errors.AlreadyExists` (EnOS 702)
        for a key that is taken and :class:`~enos_lab.errors.NotFound` for an unknown product.
        """
        with self._transaction() as db:
            self.get_product(product_key)
            key = _check_key(device_key, "device_key") if device_key else None
            if key is None:
                for _ in range(10):
                    candidate = self._random_text(10)
                    if not self._device_exists(db, product_key, candidate):
                        key = candidate
                        break
                else:  # pragma: no cover - 62**10 keys
                    raise RegistryError("could not generate a free device key (EnOS 714)")
            elif self._device_exists(db, product_key, key):
                raise AlreadyExists(f"device {product_key}/{key} already exists")
            asset_id = self._random_text(8)
            while db.execute("SELECT 1 FROM devices WHERE asset_id=?", (asset_id,)).fetchone():
                asset_id = self._random_text(8)  # pragma: no cover - 62**8 ids
            device = Device(
                product_key=product_key,
                device_key=key,
                device_secret=device_secret or self._random_text(20),
                asset_id=asset_id,
                name=name if name else key,
                name_i18n=dict(name_i18n or {}),
                description=description,
                timezone=check_timezone(timezone),
                tags=check_tags(tags or {}),
                attributes=check_map(attributes or {}, "attributes"),
                created_at=self._now(),
            )
            row = device_row(device)
            sealed = self._sealer.device_secret(product_key, key, device.device_secret)
            db.execute(
                f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({','.join('?' * 18)})",
                (*row[:2], sealed, *row[3:]),
            )
        return device

    @staticmethod
    def _device_exists(db: sqlite3.Connection, product_key: str, device_key: str) -> bool:
        return bool(
            db.execute(
                "SELECT 1 FROM devices WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            ).fetchone()
        )

    def get_device(self, product_key: str, device_key: str) -> Device:
        """The device with these keys; :class:`~enos_lab.errors.NotFound` if there is none."""
        with self._lock:
            self._sync()
            row = self._db.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            ).fetchone()
        if row is None:
            raise NotFound(f"device {product_key}/{device_key} does not exist")
        return self._sealer.device(row)

    def find_device(self, product_key: str, device_key: str) -> Device | None:
        """The device with these keys, or ``None``."""
        try:
            return self.get_device(product_key, device_key)
        except NotFound:
            return None

    def existing_device_keys(
        self, device_keys: Iterable[str], product_key: str | None = None
    ) -> set[str]:
        """The keys among ``device_keys`` of registered devices (of ``product_key`` if given,
        of any product otherwise). The time-series store asks this about names it holds no data
        of (:class:`~enos_lab.store.DeviceDirectory`)."""
        keys = list(dict.fromkeys(device_keys))
        if not keys:
            return set()
        with self._lock:
            self._sync()
            rows = self._db.execute(
                "SELECT DISTINCT device_key FROM devices WHERE device_key IN "
                "(SELECT value FROM json_each(?)) AND (? IS NULL OR product_key = ?)",
                (json.dumps(keys), product_key, product_key),
            ).fetchall()
        return {str(key) for (key,) in rows}

    def device_count(self, product_key: str) -> int:
        """How many devices the product has (NotFound for an unknown product)."""
        self.get_product(product_key)
        with self._lock:
            self._sync()
            row = self._db.execute(
                "SELECT count(*) FROM devices WHERE product_key=?", (product_key,)
            ).fetchone()
        return int(row[0])

    def devices(self, product_key: str | None = None) -> list[Device]:
        """Every device (of one product if given), in registration order."""
        query = f"SELECT {_DEVICE_COLUMNS} FROM devices"
        args: tuple[str, ...] = ()
        if product_key is not None:
            self.get_product(product_key)
            query += " WHERE product_key=?"
            args = (product_key,)
        with self._lock:
            self._sync()
            rows = self._db.execute(query + " ORDER BY created_at, rowid", args).fetchall()
        return [self._sealer.device(row) for row in rows]

    def _update(self, product_key: str, device_key: str, sql: str, *args: object) -> Device:
        with self._transaction() as db:
            self.get_device(product_key, device_key)
            db.execute(
                f"UPDATE devices SET {sql} WHERE product_key=? AND device_key=?",
                (*args, product_key, device_key),
            )
            return self.get_device(product_key, device_key)

    def enable_device(self, product_key: str, device_key: str) -> Device:
        """Allow the device to log in again (and forget why it was disabled)."""
        with self._transaction() as db:
            device = self._update(product_key, device_key, "enabled=1")
            db.execute(
                "DELETE FROM disabled_reasons WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            )
        return device

    def disable_device(
        self, product_key: str, device_key: str, reason: str | None = None
    ) -> Device:
        """Refuse the device's logins (the hub also closes its live connection).

        ``reason`` (e.g. ``"edge revoked at ..."``) is kept with the registry, out of the
        device's reach, and added to the reason of every login it refuses until the device is
        enabled again (:meth:`disabled_reason`).
        """
        with self._transaction() as db:
            device = self._update(product_key, device_key, "enabled=0")
            db.execute(
                "DELETE FROM disabled_reasons WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            )
            if reason:
                db.execute(
                    "INSERT INTO disabled_reasons VALUES (?,?,?)",
                    (product_key, device_key, str(reason)),
                )
        return device

    def disabled_reason(self, product_key: str, device_key: str) -> str | None:
        """Why the device was disabled, as given to :meth:`disable_device` (``None``: no reason
        given, or the device is enabled)."""
        with self._lock:
            row = self._db.execute(
                "SELECT reason FROM disabled_reasons WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            ).fetchone()
        return None if row is None else str(row[0])

    def delete_device(self, product_key: str, device_key: str) -> Device:
        """Remove the device ("logout"); returns its last record with state DELETED.

        Sub-devices attached to a deleted gateway are detached. The key can be registered again
        (EnOS: the way to re-activate a device).
        """
        with self._transaction() as db:
            device = self.get_device(product_key, device_key)
            db.execute(
                "UPDATE devices SET gateway_product_key=NULL, gateway_device_key=NULL "
                "WHERE gateway_product_key=? AND gateway_device_key=?",
                (product_key, device_key),
            )
            db.execute(
                "DELETE FROM devices WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            )
            db.execute(
                "DELETE FROM disabled_reasons WHERE product_key=? AND device_key=?",
                (product_key, device_key),
            )
        return deleted(device)

    def activate(self, product_key: str, device_key: str) -> Device:
        """Issue a new device secret for dynamic activation (secure mode 3).

        Only for an enabled, INACTIVE device of a product with dynamic activation on; every call
        while inactive issues a different secret (EnOS behaviour).
        """
        product = self.get_product(product_key)
        if not product.dynamic_activation:
            raise RegistryError(f"product {product_key!r} does not allow dynamic activation")
        device = self.get_device(product_key, device_key)
        if device.activated_at is not None:
            raise RegistryError(
                f"device {product_key}/{device_key} is already activated; "
                "delete and re-register it to activate it again"
            )
        return self._set_device_secret(product_key, device_key, self._random_text(20))

    def _set_device_secret(self, product_key: str, device_key: str, secret: str) -> Device:
        sealed = self._sealer.device_secret(product_key, device_key, secret)
        return self._update(product_key, device_key, "device_secret=?", sealed)

    def rotate_device_secret(
        self, product_key: str, device_key: str, device_secret: str | None = None
    ) -> Device:
        """Give the device a new secret (``device_secret``, or a generated one); logins signed
        with the old secret are refused from now on. Returns the record with the new secret.

        The registry does not close the device's live connection; the IoT hub services do
        (``IotHub.rotate_device_secret``). Raises :class:`~enos_lab.errors.NotFound` for an
        unknown device.
        """
        if device_secret is not None and (not isinstance(device_secret, str) or not device_secret):
            raise InvalidArgument(f"device_secret must be a non-empty string: {device_secret!r}")
        return self._set_device_secret(
            product_key, device_key, device_secret or self._random_text(20)
        )

    def rotate_product_secret(self, product_key: str, product_secret: str | None = None) -> Product:
        """Give the product a new secret (``product_secret``, or a generated one): dynamic
        activation and integration channels signed with the old one are refused from now on.
        Returns the product with the new secret. Raises :class:`~enos_lab.errors.NotFound`
        for an unknown product."""
        if product_secret is not None and (
            not isinstance(product_secret, str) or not product_secret
        ):
            raise InvalidArgument(f"product_secret must be a non-empty string: {product_secret!r}")
        secret = product_secret or self._random_text(16)
        with self._transaction() as db:
            self.get_product(product_key)
            db.execute(
                "UPDATE products SET product_secret=? WHERE product_key=?",
                (self._sealer.product_secret(product_key, secret), product_key),
            )
            self._product_cache.pop(product_key, None)
            return self._cached_product(product_key)

    def set_online(self, product_key: str, device_key: str, reason: str = "connected") -> Device:
        """Record that the device came online (activating it on its first login)."""
        with self._lock:
            self._sync()
            self.record_presence(product_key, device_key, True, reason)
            return self.get_device(product_key, device_key)

    def set_offline(
        self, product_key: str, device_key: str, reason: str = "disconnected"
    ) -> Device:
        """Record that the device went offline (``reason``: disconnected, kicked, ...)."""
        with self._lock:
            self._sync()
            self.record_presence(product_key, device_key, False, reason)
            return self.get_device(product_key, device_key)

    def record_presence(self, product_key: str, device_key: str, online: bool, reason: str) -> None:
        """Like :meth:`set_online` / :meth:`set_offline` without reading the record back.

        One row of the presence log (whose trigger updates the device). Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device.
        """
        change = (self._clock.time_ms(), product_key, device_key, online, reason)
        with self._transaction() as db:
            if not insert_one(db, change):
                raise NotFound(f"device {product_key}/{device_key} does not exist")

    def queue_presence(self, product_key: str, device_key: str, online: bool, reason: str) -> None:
        """Like :meth:`record_presence`, written later: by :meth:`flush_presence` or before the
        next call that reads or writes the registry, whichever comes first.

        Many logins in a row then share one transaction. The time recorded is the time of
        this call; a change for a device that no longer exists is dropped.
        """
        now = self._clock.time_ms()  # what to_ms(self._now()) gives
        with self._lock:
            self._queued.append((now, product_key, device_key, online, reason))

    def flush_presence(self) -> None:
        """Write the presence changes queued by :meth:`queue_presence` (one transaction).

        A registry on a file hands them to its writer thread and returns at once; readers of
        this registry wait for them (see :mod:`enos_lab.registry._presence`).
        """
        with self._lock:
            if not self._queued:
                return
            path = self._writer_path
            if path is None or self._db.in_transaction:
                self._sync()
                return
            writer = self._writer
            if writer is None:
                writer = self._writer = PresenceWriter(path)
            queued, self._queued = self._queued, []
            writer.submit(queued)

    def close_open_presence(self, reason: str) -> int:
        """Record an offline presence row with ``reason`` for every device marked online, in
        one transaction; returns how many there were.

        For the start of the IoT hub services: a hub that ended without closing its
        connections (a crash, a kill) left those devices "online" in the registry although no
        session is left. The real disconnect time is unknown (somewhere between the device's
        last message and the restart), so the row's time is the clock's now, the restart time.
        """
        with self._transaction() as db:
            now = self._clock.time_ms()
            keys = db.execute(
                "SELECT product_key, device_key FROM devices WHERE online = 1"
            ).fetchall()
            for product_key, device_key in keys:
                insert_one(db, (now, product_key, device_key, False, reason))
        return len(keys)

    def presence_log(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> list[tuple[datetime, str, str, bool, str]]:
        """Online/offline transitions ``(time, product_key, device_key, online, reason)``."""
        query = "SELECT at, product_key, device_key, online, reason FROM presence"
        clauses, args = [], []
        if product_key is not None:
            clauses.append("product_key=?")
            args.append(product_key)
        if device_key is not None:
            clauses.append("device_key=?")
            args.append(device_key)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._lock:
            self._sync()
            rows = self._db.execute(query + " ORDER BY rowid", args).fetchall()
        return [(from_epoch_ms(at), pk, dk, bool(on), why) for at, pk, dk, on, why in rows]

    # -- attributes and tags -----------------------------------------------------------------

    def update_attributes(
        self, product_key: str, device_key: str, attributes: Mapping[str, Any]
    ) -> Device:
        """Merge ``attributes`` into the device's attributes."""
        device = self.get_device(product_key, device_key)
        merged = check_map({**device.attributes, **attributes}, "attributes")
        return self._update(product_key, device_key, "attributes=?", json.dumps(merged))

    def delete_attributes(self, product_key: str, device_key: str, ids: list[str]) -> Device:
        """Remove the named attributes (unknown ids are ignored)."""
        device = self.get_device(product_key, device_key)
        kept = {k: v for k, v in device.attributes.items() if k not in set(ids)}
        return self._update(product_key, device_key, "attributes=?", json.dumps(kept))

    def update_tags(self, product_key: str, device_key: str, tags: Mapping[str, object]) -> Device:
        """Merge ``tags`` into the device's tags (values become strings, as EnOS does)."""
        device = self.get_device(product_key, device_key)
        merged = check_tags({**device.tags, **tags})
        return self._update(product_key, device_key, "tags=?", json.dumps(merged))

    def delete_tags(self, product_key: str, device_key: str, keys: list[str]) -> Device:
        """Remove the named tags (unknown keys are ignored)."""
        device = self.get_device(product_key, device_key)
        kept = {k: v for k, v in device.tags.items() if k not in set(keys)}
        return self._update(product_key, device_key, "tags=?", json.dumps(kept))

    # -- topology ----------------------------------------------------------------------------

    def attach(self, gateway: tuple[str, str], sub_device: tuple[str, str]) -> Device:
        """Attach a sub-device to a gateway (topology add); returns the sub-device.

        Refused (RegistryError, EnOS 1255) when the gateway's product is not a gateway, the
        sub-device is itself a gateway, or it is attached to another gateway already.
        """
        gw = self.get_device(*gateway)
        if self.get_product(gw.product_key).node_type is not NodeType.GATEWAY:
            raise RegistryError(f"device {gateway[0]}/{gateway[1]} is not a gateway")
        sub = self.get_device(*sub_device)
        if self.get_product(sub.product_key).node_type is NodeType.GATEWAY:
            raise RegistryError(f"device {sub_device[0]}/{sub_device[1]} is a gateway itself")
        if sub.gateway is not None and sub.gateway != gateway:
            raise RegistryError(
                f"sub-device {sub_device[0]}/{sub_device[1]} is attached to gateway "
                f"{sub.gateway[0]}/{sub.gateway[1]}"
            )
        return self._update(
            *sub_device, "gateway_product_key=?, gateway_device_key=?", gateway[0], gateway[1]
        )

    def detach(self, gateway: tuple[str, str], sub_device: tuple[str, str]) -> Device:
        """Detach a sub-device from its gateway (topology delete); returns the sub-device."""
        sub = self.get_device(*sub_device)
        if sub.gateway != gateway:
            raise RegistryError(
                f"sub-device {sub_device[0]}/{sub_device[1]} is not attached to "
                f"{gateway[0]}/{gateway[1]}"
            )
        return self._update(*sub_device, "gateway_product_key=NULL, gateway_device_key=NULL")

    def sub_devices(self, gateway: tuple[str, str]) -> list[Device]:
        """The sub-devices attached to a gateway."""
        self.get_device(*gateway)
        with self._lock:
            self._sync()
            rows = self._db.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices "
                "WHERE gateway_product_key=? AND gateway_device_key=? ORDER BY created_at, rowid",
                gateway,
            ).fetchall()
        return [self._sealer.device(row) for row in rows]

    # -- bulk registration and tables -----------------------------------------------------------

    def register_devices(
        self,
        rows: pd.DataFrame | Iterable[Mapping[str, Any]] | str | Path,
        *,
        progress: bool = False,
    ) -> BulkResult:
        """Register many devices; a bad row is reported and the others are still registered.

        ``rows`` is a DataFrame, an iterable of mappings, or the path of a CSV file, with the
        keyword arguments of :meth:`register_device` as columns (``product_key`` required;
        ``tags`` and ``attributes`` may be JSON text). Empty cells mean "not given".
        ``progress`` shows a tqdm progress bar.
        """
        return register_many(self, rows, progress=progress)

    def devices_frame(self, product_key: str | None = None) -> pd.DataFrame:
        """Every device (of one product if given) as a DataFrame, one row per device.

        Columns: ``product_key, device_key, asset_id, name, state, enabled, online, timezone,
        gateway_product_key, gateway_device_key, created_at, activated_at, last_online_at,
        last_offline_at, tags, attributes`` (times tz-aware UTC). Secrets are left out; see
        :meth:`export_credentials`.
        """
        return devices_frame(self, product_key)

    def export_credentials(self, product_key: str | None = None) -> pd.DataFrame:
        """The credentials a device needs to connect, one row per device.

        Columns: ``product_key, device_key, device_secret, product_secret, asset_id,
        dynamic_activation``. Keep the result secret.
        """
        return credentials_frame(self, product_key)


_PRODUCT_CHECK = 1.0
"""How often cached products are checked against commits of other connections. [s]"""
