"""The OTA records: ``ota.sqlite3`` in the data directory.

Four tables: the firmware registry (one row per product and version; the file lives under
``ota/firmware/``), the firmware version each device last reported, the campaigns, and one row
per device of a campaign (its upgrade: state, versions, progress, error, times). Every change
of an upgrade is written at once, so that a campaign's state survives a restart of the lab.
Thread-safe (one lock): the OTA service writes on the lab's loop, the facade reads from any
thread.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from .._sqlite import open_records
from ..errors import ClosedError, NotFound, OtaError

__all__ = [
    "CAMPAIGN_COLUMNS",
    "FIRMWARE_COLUMNS",
    "OTA_FILE",
    "UPGRADE_COLUMNS",
    "Campaign",
    "CampaignState",
    "Firmware",
    "OtaRecords",
    "Upgrade",
    "UpgradeState",
]

OTA_FILE = "ota.sqlite3"
"""File name of the OTA records inside the lab's data directory."""

_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS firmware (
    product_key TEXT NOT NULL, version TEXT NOT NULL, name TEXT, description TEXT,
    file_name TEXT NOT NULL, stored TEXT NOT NULL, size INTEGER NOT NULL,
    sign_method TEXT NOT NULL, sign TEXT NOT NULL, signature TEXT, token TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL, PRIMARY KEY (product_key, version));
CREATE TABLE IF NOT EXISTS versions (
    product_key TEXT NOT NULL, device_key TEXT NOT NULL, version TEXT NOT NULL,
    reported_ms INTEGER NOT NULL, PRIMARY KEY (product_key, device_key));
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, product_key TEXT NOT NULL,
    version TEXT NOT NULL, state TEXT NOT NULL, settings TEXT NOT NULL,
    rollback_of TEXT, reason TEXT, created_ms INTEGER NOT NULL, finished_ms INTEGER);
CREATE TABLE IF NOT EXISTS upgrades (
    campaign_id TEXT NOT NULL, product_key TEXT NOT NULL, device_key TEXT NOT NULL,
    seq INTEGER NOT NULL, wave INTEGER NOT NULL, state TEXT NOT NULL,
    from_version TEXT, to_version TEXT NOT NULL, progress INTEGER, step TEXT, desc TEXT,
    error TEXT, attempts INTEGER NOT NULL, offline_seen INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, pushed_ms INTEGER, updated_ms INTEGER NOT NULL,
    finished_ms INTEGER, deadline_ms INTEGER,
    PRIMARY KEY (campaign_id, product_key, device_key));
CREATE INDEX IF NOT EXISTS upgrades_device ON upgrades (product_key, device_key);
CREATE INDEX IF NOT EXISTS upgrades_state ON upgrades (state);
"""


class UpgradeState(enum.StrEnum):
    """Where one device's upgrade stands (protocol reference 10)."""

    PENDING = "pending"
    """Not pushed yet: waiting for its wave, the rollout rate, or the device to come online."""
    PUSHED = "pushed"
    """``ota.device.upgrade`` sent; no progress reported yet."""
    UPGRADING = "upgrading"
    """Progress steps "0".."99" reported."""
    REBOOTING = "rebooting"
    """Step "100" reported: waiting for the device to reconnect and report its version."""
    SUCCEEDED = "succeeded"
    """The device reported the target version after a reconnect."""
    FAILED = "failed"
    """A negative step, a timeout, or back after 100 % with another version."""
    ABORTED = "aborted"
    """Never pushed: its campaign was aborted."""
    SKIPPED = "skipped"
    """Not targeted (no version reported, already at the target, in another campaign)."""

    @property
    def final(self) -> bool:
        """Whether the upgrade is over."""
        return self in _FINAL

    @property
    def in_flight(self) -> bool:
        """Pushed and not over."""
        return self in (UpgradeState.PUSHED, UpgradeState.UPGRADING, UpgradeState.REBOOTING)


_FINAL = frozenset(
    (UpgradeState.SUCCEEDED, UpgradeState.FAILED, UpgradeState.ABORTED, UpgradeState.SKIPPED)
)


class CampaignState(enum.StrEnum):
    """Where a campaign stands."""

    RUNNING = "running"
    FINISHED = "finished"
    """Every device's upgrade is over."""
    ABORTED = "aborted"
    """Aborted (by the user or the failure threshold): no further push."""


@dataclass(frozen=True, slots=True)
class Firmware:
    """A registered firmware file: ``product_key``, ``version``, ``size`` [bytes],
    ``sign_method`` ("md5" / "sha256") and ``sign`` (the file's hex digest), an optional
    ``signature``, ``name`` and ``description``, the ``file_name`` it is served under and the
    unguessable ``token`` in its URL."""

    product_key: str
    version: str
    file_name: str
    stored: str
    size: int
    sign_method: str
    sign: str
    token: str
    created_ms: int
    name: str | None = None
    description: str | None = None
    signature: str | None = None

    def path(self) -> str:
        """The URL path the firmware server serves it under."""
        return f"/ota/firmware/{self.token}/{self.file_name}"


@dataclass(slots=True)
class Campaign:
    """A campaign (see :meth:`OtaService.start_campaign
    <enos_lab.ota.OtaService.start_campaign>`); ``settings`` holds its options."""

    campaign_id: str
    seq: int
    product_key: str
    version: str
    state: CampaignState
    settings: dict[str, Any]
    created_ms: int
    rollback_of: str | None = None
    reason: str | None = None
    finished_ms: int | None = None


@dataclass(slots=True)
class Upgrade:
    """One device's upgrade in a campaign (its row in ``ota_campaign``)."""

    campaign_id: str
    product_key: str
    device_key: str
    seq: int
    wave: int
    state: UpgradeState
    from_version: str | None
    to_version: str
    created_ms: int
    updated_ms: int
    progress: int | None = None
    step: str | None = None
    desc: str | None = None
    error: str | None = None
    attempts: int = 0
    offline_seen: bool = False
    pushed_ms: int | None = None
    finished_ms: int | None = None
    deadline_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, str]:
        """``(product_key, device_key)``."""
        return (self.product_key, self.device_key)


_UPGRADE_FIELDS = [f.name for f in fields(Upgrade) if f.name != "extra"]

FIRMWARE_COLUMNS = [
    "product_key",
    "version",
    "name",
    "description",
    "file_name",
    "size",
    "sign_method",
    "sign",
    "signature",
    "created_at",
]
"""Columns of :meth:`Lab.firmwares <enos_lab.lab.Lab.firmwares>` (besides ``file_url``)."""

UPGRADE_COLUMNS = [
    "campaign_id",
    "product_key",
    "device_key",
    "wave",
    "state",
    "from_version",
    "to_version",
    "progress",
    "step",
    "desc",
    "error",
    "attempts",
    "created_at",
    "pushed_at",
    "updated_at",
    "finished_at",
]
"""Columns of :meth:`Lab.ota_campaign <enos_lab.lab.Lab.ota_campaign>` (times tz-aware UTC)."""

CAMPAIGN_COLUMNS = [
    "campaign_id",
    "product_key",
    "version",
    "state",
    "devices",
    "pending",
    "in_flight",
    "succeeded",
    "failed",
    "aborted",
    "skipped",
    "rollback_of",
    "reason",
    "created_at",
    "finished_at",
]
"""Columns of :meth:`Lab.ota_campaigns <enos_lab.lab.Lab.ota_campaigns>`."""


def _times(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for column in columns:
        ms = column.removesuffix("_at") + "_ms"
        frame[column] = pd.to_datetime(frame.pop(ms), unit="ms", utc=True)
    return frame


class OtaRecords:
    """The OTA records database (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self._db: sqlite3.Connection | None = open_records(
            path, schema=_SCHEMA, version=_VERSION, what="OTA", error=OtaError
        )
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ClosedError("the OTA records are closed")
        return self._db

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._conn().execute(sql, args)

    # -- firmware ---------------------------------------------------------------------------

    def add_firmware(self, firmware: Firmware) -> None:
        """Insert a firmware row."""
        row = asdict(firmware)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._write(f"INSERT INTO firmware ({names}) VALUES ({marks})", tuple(row.values()))

    def remove_firmware(self, product_key: str, version: str) -> None:
        """Delete a firmware row."""
        self._write(
            "DELETE FROM firmware WHERE product_key=? AND version=?", (product_key, version)
        )

    def firmware(self, product_key: str, version: str) -> Firmware | None:
        """The firmware ``version`` of the product, or None."""
        rows = self._all(
            "SELECT * FROM firmware WHERE product_key=? AND version=?", (product_key, version)
        )
        return Firmware(**dict(rows[0])) if rows else None

    def firmwares(self, product_key: str | None = None) -> list[Firmware]:
        """Every firmware (of one product), in the order registered."""
        if product_key is None:
            rows = self._all("SELECT * FROM firmware ORDER BY created_ms, rowid")
        else:
            rows = self._all(
                "SELECT * FROM firmware WHERE product_key=? ORDER BY created_ms, rowid",
                (product_key,),
            )
        return [Firmware(**dict(row)) for row in rows]

    # -- reported versions ------------------------------------------------------------------

    def set_version(self, product_key: str, device_key: str, version: str, at_ms: int) -> None:
        """Keep the version a device reported."""
        self._write(
            "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?)",
            (product_key, device_key, version, at_ms),
        )

    def versions(self) -> dict[tuple[str, str], str]:
        """The version each device last reported."""
        rows = self._all("SELECT product_key, device_key, version FROM versions")
        return {(row[0], row[1]): row[2] for row in rows}

    def forget_device(self, product_key: str, device_key: str, *, upgrades: bool) -> int:
        """Delete the version a deleted device reported and, with ``upgrades`` (a purge), its
        upgrade rows; returns how many upgrade rows."""
        keys = (product_key, device_key)
        with self._lock:
            db = self._conn()
            db.execute("DELETE FROM versions WHERE product_key=? AND device_key=?", keys)
            if not upgrades:
                return 0
            return int(
                db.execute(
                    "DELETE FROM upgrades WHERE product_key=? AND device_key=?", keys
                ).rowcount
            )

    # -- campaigns and upgrades -------------------------------------------------------------

    def next_campaign_seq(self) -> int:
        """The sequence number of the next campaign."""
        rows = self._all("SELECT COALESCE(MAX(seq), 0) + 1 FROM campaigns")
        return int(rows[0][0])

    def save_campaign(self, campaign: Campaign) -> None:
        """Insert or update a campaign."""
        self._write(
            "INSERT OR REPLACE INTO campaigns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                campaign.campaign_id,
                campaign.seq,
                campaign.product_key,
                campaign.version,
                campaign.state.value,
                json.dumps(campaign.settings),
                campaign.rollback_of,
                campaign.reason,
                campaign.created_ms,
                campaign.finished_ms,
            ),
        )

    def campaign(self, campaign_id: str) -> Campaign:
        """The campaign ``campaign_id``; NotFound if there is none."""
        rows = self._all("SELECT * FROM campaigns WHERE campaign_id=?", (campaign_id,))
        if not rows:
            raise NotFound(f"no OTA campaign {campaign_id!r}")
        return _campaign(rows[0])

    def campaigns(self, state: CampaignState | None = None) -> list[Campaign]:
        """Every campaign (in one state), oldest first."""
        if state is None:
            rows = self._all("SELECT * FROM campaigns ORDER BY seq")
        else:
            rows = self._all("SELECT * FROM campaigns WHERE state=? ORDER BY seq", (state.value,))
        return [_campaign(row) for row in rows]

    def save_upgrade(self, upgrade: Upgrade) -> None:
        """Insert or update one device's upgrade."""
        values = tuple(
            getattr(upgrade, name).value
            if name == "state"
            else int(upgrade.offline_seen)
            if name == "offline_seen"
            else getattr(upgrade, name)
            for name in _UPGRADE_FIELDS
        )
        names = ", ".join(_UPGRADE_FIELDS)
        marks = ", ".join("?" for _ in _UPGRADE_FIELDS)
        self._write(f"INSERT OR REPLACE INTO upgrades ({names}) VALUES ({marks})", values)

    def upgrades(
        self,
        campaign_id: str | None = None,
        *,
        active: bool = False,
        device: tuple[str, str] | None = None,
    ) -> list[Upgrade]:
        """The upgrades of a campaign (all: None), only those not over (``active``), only of
        one ``device``; in campaign order, then the order targeted."""
        where, args = [], []
        if campaign_id is not None:
            where.append("campaign_id=?")
            args.append(campaign_id)
        if active:
            final = ", ".join(f"'{state.value}'" for state in _FINAL)
            where.append(f"state NOT IN ({final})")
        if device is not None:
            where.append("product_key=? AND device_key=?")
            args.extend(device)
        sql = "SELECT * FROM upgrades"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ms, campaign_id, seq"
        return [_upgrade(row) for row in self._all(sql, tuple(args))]

    def upgrades_frame(self, campaign_id: str) -> pd.DataFrame:
        """One row per device of the campaign: :data:`UPGRADE_COLUMNS`."""
        self.campaign(campaign_id)
        # straight from the rows (one object per device, no Upgrade in between: a campaign of
        # thousands of devices is read in milliseconds, for a progress view polling it)
        rows = self._all(
            f"SELECT {', '.join(_UPGRADE_FIELDS)} FROM upgrades WHERE campaign_id=? "
            "ORDER BY created_ms, campaign_id, seq",
            (campaign_id,),
        )
        frame = pd.DataFrame([tuple(row) for row in rows], columns=_UPGRADE_FIELDS)
        frame = _times(frame, ["created_at", "pushed_at", "updated_at", "finished_at"])
        frame["progress"] = frame["progress"].astype("Int64")
        return frame[UPGRADE_COLUMNS].reset_index(drop=True)


def _campaign(row: sqlite3.Row) -> Campaign:
    data = dict(row)
    data["state"] = CampaignState(data["state"])
    data["settings"] = json.loads(data["settings"])
    return Campaign(**data)


def _upgrade(row: sqlite3.Row) -> Upgrade:
    data = dict(row)
    data["state"] = UpgradeState(data["state"])
    data["offline_seen"] = bool(data["offline_seen"])
    return Upgrade(**data)
