"""What a fleet keeps per simulated device, its counters, and the fleet's bounded records.

A :class:`SimDevice` is one device of a :class:`~enos_lab.sim.Fleet`: its keys and secret, its
device client (``None`` while powered off), the profile state it follows (shared with the
devices of the same state number), its own noise generator, its schedule (the next sample's
number) and its counters. Everything the fleet does to one device goes through this object, so
a device that misbehaves, or that a fault hits, changes its own counters only.

Memory per device: this object ~0.4 KiB, the noise generator ~0.8 KiB, a connected
:class:`~enos_lab.device.DeviceClient` with its gmqtt connection most of the rest: 25-30 KiB of
resident memory per device in all (``benchmarks/sim_fleet.py``, 2,000 to 10,000 devices). A
profile state is 0.25-0.37 MiB (a block of the profile's grid) and is shared by the devices that
follow it (``Fleet(states=...)``).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from ..clock import from_epoch_ms

if TYPE_CHECKING:
    from ..clock import TimerHandle
    from ..device import DeviceClient
    from ._profile import ProfileState

__all__ = [
    "COUNTERS",
    "LatencyRing",
    "Reconnection",
    "SimDevice",
    "reconnections_frame",
    "stats_frame",
]

COUNTERS: tuple[str, ...] = (
    "posted",
    "replied",
    "refused",
    "timeouts",
    "lost",
    "offline",
    "overruns",
    "errors",
    "logins",
    "reconnects",
    "login_refusals",
    "connect_failures",
    "disconnects",
    "power_losses",
)
"""The per-device counters, in the column order of :meth:`Fleet.stats
<enos_lab.sim.Fleet.stats>`:

- ``posted``: measurepoint posts sent;
- ``replied``: posts answered with code 200 (the points are stored);
- ``refused``: posts answered with another code (by code: ``refused_codes``);
- ``timeouts``: posts without a reply within the fleet's ``timeout``;
- ``lost``: posts whose connection dropped (or was cut) before the reply;
- ``offline``: samples not posted because the device had no connection;
- ``overruns``: samples not posted because ``max_in_flight`` posts were waiting already;
- ``errors``: samples that failed otherwise (a profile or client error, logged);
- ``logins``: accepted logins (the first one, after a reboot and after each loss);
- ``reconnects``: accepted logins after a lost connection;
- ``login_refusals``: logins refused by the hub (a CONNACK return code);
- ``connect_failures``: login attempts that failed otherwise (no TCP connection, no CONNACK
  in time);
- ``disconnects``: connections lost while the device was powered;
- ``power_losses``: times the device lost power.
"""


class SimDevice:
    """One simulated device of a fleet (see the module docstring)."""

    __slots__ = (
        "attempt",
        "client",
        "connect_failures",
        "cut_off",
        "device_key",
        "disconnects",
        "errors",
        "expected",
        "gen",
        "in_flight",
        "index",
        "login_refusals",
        "logins",
        "lost",
        "lost_attempts",
        "lost_ms",
        "noise",
        "offline",
        "online",
        "overruns",
        "peak_in_flight",
        "posted",
        "power_losses",
        "powered",
        "product_key",
        "reconnects",
        "refused",
        "refused_codes",
        "replied",
        "sample",
        "secret",
        "skew_ms",
        "state",
        "timeouts",
        "timer",
        "tries",
        "wrong",
    )

    def __init__(  # noqa: PLR0917
        self,
        index: int,
        product_key: str,
        device_key: str,
        secret: str,
        state: ProfileState,
        noise: np.random.Generator,
    ) -> None:
        self.index = index
        """Position in the fleet (0-based)."""
        self.product_key = product_key
        self.device_key = device_key
        self.secret = secret
        """The device's right secret (its client may be given a wrong one)."""
        self.state = state
        """The profile state it follows."""
        self.noise = noise
        """Its measurement noise."""
        self.client: DeviceClient | None = None
        """Its client; ``None`` before the first login and while powered off."""
        self.sample = 0
        """Number of its next sample (the schedule: ``start + offset + sample * interval``)."""
        self.skew_ms = 0
        """Offset of its clock from the fleet's clock, added to its timestamps. [ms]"""
        self.powered = True
        self.online = False
        """Whether it has an accepted connection (as far as it knows)."""
        self.wrong = False
        """Whether its client logs in with a wrong secret."""
        self.cut_off = False
        """Whether the fleet partitioned it (its posts are not waited for)."""
        self.gen = 0
        """Changes when its posts in flight stop being waited for."""
        self.expected = 0
        """Its posts in flight that the fleet waits for."""
        self.in_flight = 0
        self.peak_in_flight = 0
        self.attempt = 0
        """Number of the next login attempt since its connection was lost (for the backoff)."""
        self.tries = 0
        """Login attempts after a loss, ever (seeds the jitter of each)."""
        self.timer: TimerHandle | None = None
        """A pending reconnect or reboot."""
        self.lost_ms: int | None = None
        """When it lost its connection, until it is back (fleet clock). [ms]"""
        self.lost_attempts = 0
        """Login attempts since it lost its connection."""
        self.refused_codes: dict[int, int] | None = None
        """Posts refused, by reply code (made at the first refusal)."""
        # the counters (COUNTERS)
        self.posted = 0
        self.replied = 0
        self.refused = 0
        self.timeouts = 0
        self.lost = 0
        self.offline = 0
        self.overruns = 0
        self.errors = 0
        self.logins = 0
        self.reconnects = 0
        self.login_refusals = 0
        self.connect_failures = 0
        self.disconnects = 0
        self.power_losses = 0

    @property
    def keys(self) -> tuple[str, str]:
        """``(product_key, device_key)``."""
        return (self.product_key, self.device_key)

    def count_refused(self, code: int) -> None:
        """A post was answered with ``code`` (not 200)."""
        self.refused += 1
        codes = self.refused_codes
        if codes is None:
            codes = self.refused_codes = {}
        codes[code] = codes.get(code, 0) + 1


class Reconnection(NamedTuple):
    """A device came back: lost its connection at ``lost_ms``, logged in again at ``back_ms``
    (fleet clock) after ``attempts`` login attempts. [ms]"""

    device_key: str
    lost_ms: int
    back_ms: int
    attempts: int


class LatencyRing:
    """The latest ``size`` reply latencies, in a fixed array (bounded memory). [s]"""

    __slots__ = ("_count", "_values")

    def __init__(self, size: int) -> None:
        self._values = array("d", bytes(8 * size))
        self._count = 0

    def add(self, seconds: float) -> None:
        """Record one latency. [s]"""
        values = self._values
        if values:
            values[self._count % len(values)] = seconds
            self._count += 1

    def values(self) -> np.ndarray:
        """The recorded latencies (at most ``size``, in no particular order). [s]"""
        kept = min(self._count, len(self._values))
        return np.frombuffer(self._values, dtype=np.float64, count=kept).copy()


def stats_frame(devices: Iterable[SimDevice]) -> pd.DataFrame:
    """One row per device: keys, state and the :data:`COUNTERS`."""
    rows = [
        (
            d.product_key,
            d.device_key,
            d.online,
            d.powered,
            d.skew_ms / 1000.0,
            d.in_flight,
            *(getattr(d, name) for name in COUNTERS),
            dict(d.refused_codes or {}),
        )
        for d in devices
    ]
    columns = [
        "product_key",
        "device_key",
        "online",
        "powered",
        "skew",
        "in_flight",
        *COUNTERS,
        "refused_codes",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    for name in ("in_flight", *COUNTERS):
        frame[name] = frame[name].astype("int64")
    frame["skew"] = frame["skew"].astype("float64")
    return frame


def reconnections_frame(records: deque[Reconnection]) -> pd.DataFrame:
    """The reconnections as a frame: ``device_key, lost, back`` (tz-aware UTC),
    ``downtime`` [s] and ``attempts``."""
    rows = [
        (r.device_key, from_epoch_ms(r.lost_ms), from_epoch_ms(r.back_ms), r.attempts)
        for r in records
    ]
    frame = pd.DataFrame(rows, columns=["device_key", "lost", "back", "attempts"])
    frame["lost"] = pd.to_datetime(frame["lost"], utc=True)
    frame["back"] = pd.to_datetime(frame["back"], utc=True)
    frame.insert(3, "downtime", (frame["back"] - frame["lost"]).dt.total_seconds())
    frame["attempts"] = frame["attempts"].astype("int64")
    return frame
