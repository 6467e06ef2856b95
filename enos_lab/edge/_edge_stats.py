"""What an edge reports: its state, its sub-devices' states, their errors and counters."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum

__all__ = [
    "EdgeError",
    "EdgeErrorKind",
    "EdgeState",
    "EdgeStats",
    "SubDeviceState",
    "SubDeviceStats",
]


class EdgeState(Enum):
    """The edge's link to the hub."""

    STOPPED = "stopped"
    """Not started, or stopped."""
    ONLINE = "online"
    """Logged in: samples go out live, the backlog drains."""
    OFFLINE = "offline"
    """The connection dropped: samples go to the cache while the edge reconnects."""
    REFUSED = "refused"
    """The hub refused the edge's last login (an unknown or revoked serial number); samples go
    to the cache and the edge keeps trying."""


class SubDeviceState(Enum):
    """Where one field device's sub-device stands."""

    PENDING = "pending"
    """Not set up in the cloud yet."""
    ONLINE = "online"
    """Logged in through the edge: polled and uploaded."""
    LOGIN_FAILED = "login_failed"
    """Its login was refused (e.g. its secret stopped working) or lost: still polled, its
    samples are dropped (counted), its login is tried again every ``relogin_interval``."""
    SETUP_FAILED = "setup_failed"
    """Registering or attaching it failed: not polled; tried again every
    ``relogin_interval``."""
    MODEL_MISMATCH = "model_mismatch"
    """Its point table feeds another thing model than its product's: not polled."""
    REMOVED = "removed"
    """Taken off the edge."""


class EdgeErrorKind(Enum):
    """Why a sub-device's data did not get through (poll errors are
    :class:`~enos_lab.edge.PollError` s)."""

    REGISTRATION = "registration"
    """``thing.device.register`` refused it (e.g. 702: the key exists; give its secret)."""
    TOPOLOGY = "topology"
    """``thing.topo.add`` refused it (1255: e.g. attached to another gateway)."""
    LOGIN = "login"
    """Its login was refused (705 unknown, 723 disabled, 740 not under this gateway, 742 sign
    check failed: a secret that stopped working)."""
    MODEL = "model"
    """Its point table does not fit its product's thing model."""
    REJECTED = "rejected"
    """The hub refused its samples (1204 a value the model refuses, 1212 not logged in)."""
    CACHE_LOSS = "cache_loss"
    """The full local cache evicted or dropped its samples."""


@dataclass(frozen=True, slots=True)
class EdgeError:
    """One counted fault of one field device's sub-device; ``message`` names device and cause.

    ``code`` is the hub's reply code when the hub refused something.
    """

    device: str
    time: datetime
    kind: EdgeErrorKind
    message: str
    code: int | None = None


@dataclass(slots=True)
class SubDeviceStats:
    """Counters of one field device's samples on their way to the hub."""

    uploaded: int = 0
    """Samples the hub confirmed live. [-]"""
    resumed: int = 0
    """Samples the hub confirmed from the cache (``measurepoint/resume/batch``). [-]"""
    cached: int = 0
    """Samples put in the cache. [-]"""
    lost: int = 0
    """Samples the full cache evicted or dropped. [-]"""
    dropped: int = 0
    """Samples not sent: the sub-device was not logged in. [-]"""
    rejected: int = 0
    """Samples the hub refused. [-]"""
    login_failures: int = 0
    """Refused logins of the sub-device. [-]"""

    def copy(self) -> SubDeviceStats:
        """An independent copy."""
        return SubDeviceStats(*(getattr(self, f.name) for f in fields(self)))


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """Counters of an edge since it was made (a snapshot)."""

    state: EdgeState
    """The link to the hub now."""
    connects: int
    """Logins accepted (the first and every reconnection). [-]"""
    disconnects: int
    """Connections lost. [-]"""
    login_refusals: int
    """Logins the hub refused (CONNACK 5: an unknown or revoked serial number). [-]"""
    live_posts: int
    """Batch posts of live samples the hub confirmed. [-]"""
    resume_posts: int
    """Resume batches the hub confirmed. [-]"""
    failed_posts: int
    """Posts without the hub's 200 (no connection, timeout, refused). [-]"""
    queued: int
    """Live samples waiting for their post now. [-]"""
