"""Presence changes: the SQL that records them and the thread that writes them in batches.

A presence change is a row of the ``presence`` log; the trigger :data:`PRESENCE_TRIGGER` keeps
the device's ``online`` / ``last_online_at`` / ``last_offline_at`` / ``activated_at`` columns in
step with every row inserted, so recording a change is one ``INSERT`` and a batch of changes is
one statement (:func:`write_batch`, the batch passed as one JSON array), executed by SQLite
without Python in between.

The hub records two changes per device connection (online, offline). Written on the event
loop that cost about a sixth of the CPU of an EnOS login. :class:`PresenceWriter` writes the
batches on a connection and a thread of their own instead: the statement runs without the
GIL, on another core if there is one, while the loop goes on accepting devices.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
from pathlib import Path

import orjson

from .._files import private_sqlite

__all__ = ["PRESENCE_TRIGGER", "Change", "PresenceWriter", "insert_one", "write_batch"]

log = logging.getLogger("enos_lab.registry")

#: ``(time [ms], product_key, device_key, online, reason)``
Change = tuple[int, str, str, bool, str]

PRESENCE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS presence_sets_device AFTER INSERT ON presence BEGIN
    UPDATE devices SET online = NEW.online,
        last_online_at = CASE WHEN NEW.online THEN NEW.at ELSE last_online_at END,
        last_offline_at = CASE WHEN NEW.online THEN last_offline_at ELSE NEW.at END,
        activated_at = CASE WHEN NEW.online THEN coalesce(activated_at, NEW.at)
                            ELSE activated_at END
    WHERE product_key = NEW.product_key AND device_key = NEW.device_key;
END;
"""

# A change of a device that does not exist (any more) is not logged.
_INSERT_ONE = """
INSERT INTO presence SELECT ?1, ?2, ?3, ?4, ?5
WHERE EXISTS (SELECT 1 FROM devices WHERE product_key = ?2 AND device_key = ?3)
"""
# The batch as one JSON array of changes, inserted in array order (a device may come and go
# within one batch: the trigger applies its changes in that order).
_INSERT_BATCH = """
INSERT INTO presence
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]')
FROM json_each(?1)
WHERE EXISTS (SELECT 1 FROM devices WHERE product_key = json_extract(value, '$[1]')
                                      AND device_key = json_extract(value, '$[2]'))
ORDER BY key
"""


def insert_one(db: sqlite3.Connection, change: Change) -> bool:
    """Record one change (in the caller's transaction); False if the device does not exist."""
    at, product_key, device_key, online, reason = change
    args = (at, product_key, device_key, int(online), reason)
    return db.execute(_INSERT_ONE, args).rowcount > 0


def write_batch(db: sqlite3.Connection, changes: list[Change]) -> None:
    """Record ``changes`` in one transaction of their own (``db`` in autocommit mode)."""
    payload = orjson.dumps(changes)  # booleans become true/false, which SQLite reads as 1/0
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(_INSERT_BATCH, (payload.decode(),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class PresenceWriter:
    """Writes batches of presence changes on its own connection, in its own thread.

    ``submit`` hands a batch over and returns at once; batches are written in the order they
    were submitted. ``lock`` is held while a batch is written: whoever holds it (``drain``,
    or a transaction of the registry's own connection) knows that no presence write is in
    progress. A batch that fails is logged and dropped, as a failed write on the loop was.
    """

    def __init__(self, path: Path) -> None:
        private_sqlite(path)  # normally there already (the registry's connection made it)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-256")  # as the registry's own connection
        self._inbox: collections.deque[list[Change]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self.lock = threading.RLock()
        self._thread = threading.Thread(target=self._run, name="enos-lab-presence", daemon=True)
        self._thread.start()

    def submit(self, changes: list[Change]) -> None:
        """Queue a batch for the writer thread (any thread may call this)."""
        self._inbox.append(changes)
        self._wake.set()

    def drain(self) -> None:
        """Write every batch submitted so far before returning (in the calling thread if the
        writer has not started on them yet)."""
        with self.lock:
            self._write_pending()

    def close(self) -> None:
        """Write what was submitted, stop the thread and close the connection (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self.lock:
                self._write_pending()
            if self._stopping:
                return

    def _write_pending(self) -> None:
        inbox = self._inbox
        while inbox:
            changes = inbox.popleft()
            try:
                write_batch(self._db, changes)
            except Exception:
                log.warning("%d presence changes not recorded", len(changes), exc_info=True)
