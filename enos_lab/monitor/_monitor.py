"""Per-device counters for monitoring, kept from the device-data tap.

Theory of operation
-------------------
A :class:`Monitor` costs nothing until it is :meth:`attached <Monitor.attach>`: then it adds
one row consumer to the tap (:meth:`~enos_lab.tap.Tap.add_point_rows`: stored points are
counted per device from the committed rows, no event object per point) and one callback for
the other kinds (events, presence, logins, command replies, requests refused with an error
code). Every counter starts at the attachment; the tap outlives the lab's services, so the
counting goes on across restarts.

Everything runs on the lab's loop (the tap's callbacks are called there; read a
:meth:`Monitor.snapshot` there too). Arrival times come from the lab's clock, so that rates
follow a :class:`~enos_lab.clock.SimulatedClock`: points are also counted in
per-minute buckets of the clock (the last ``minutes`` of them per device), and so are errors
(refusals and command replies with an error code), from which :meth:`DeviceCounts.per_minute`
gives a rate over the last N minutes.

Bounds: at most ``max_devices`` devices are counted (the first seen); what the others do is
only added to :attr:`Monitor.untracked`. Each device keeps at most ``minutes`` buckets of each
kind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..clock import Clock
from ..errors import InvalidArgument
from ..tap import (
    CommandReplied,
    DeviceLoggedIn,
    EventPosted,
    PointRowLike,
    PresenceChanged,
    RequestRefused,
    Tap,
    TapCallback,
    TapEvent,
)

__all__ = ["DEFAULT_MAX_DEVICES", "DEFAULT_MINUTES", "DeviceCounts", "Monitor", "MonitorStats"]

DEFAULT_MAX_DEVICES = 100_000
"""Devices a monitor counts at most (the first seen)."""

DEFAULT_MINUTES = 60
"""Per-minute buckets a monitor keeps per device: the longest rate window. [min]"""

Keys = tuple[str, str]
_MINUTE_MS = 60_000
_OK = 200  # EnOS: success


class _Buckets:
    """Counts per minute of the lab clock, the latest ``size`` minutes (oldest dropped)."""

    __slots__ = ("_counts", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._counts: deque[list[int]] = deque()  # [minute, count], ascending minutes

    def add(self, minute: int, n: int) -> None:
        counts = self._counts
        if counts and counts[-1][0] == minute:
            counts[-1][1] += n
            return
        counts.append([minute, n])
        while counts and counts[0][0] <= minute - self.size:
            counts.popleft()

    def since(self, first_minute: int) -> int:
        """The count of the minutes from ``first_minute`` on."""
        return sum(n for m, n in self._counts if m >= first_minute)


class DeviceCounts:
    """What a :class:`Monitor` counted for one device since it was attached (read on the
    lab's loop, or use the copies :meth:`Monitor.snapshot` returns).

    Times are epoch milliseconds of the lab clock, ``None`` when it never happened.
    """

    __slots__ = (
        "command_errors",
        "commands_replied",
        "connected_since_ms",
        "disconnects",
        "error_minutes",
        "events",
        "last_reason",
        "last_seen_ms",
        "logins",
        "online",
        "point_minutes",
        "points",
        "refused",
    )

    def __init__(self, minutes: int) -> None:
        self.points = 0
        """Measurepoint values stored."""
        self.events = 0
        """Events stored."""
        self.commands_replied = 0
        """Replies of the device to commands."""
        self.command_errors = 0
        """Replies with an error code (not 200)."""
        self.refused = 0
        """Requests of the device the IoT hub answered with an error code."""
        self.logins = 0
        """Accepted logins."""
        self.disconnects = 0
        """Presence changes to offline."""
        self.online: bool | None = None
        """Presence as last reported on the tap (``None``: no change seen)."""
        self.last_reason = ""
        """Reason of the last presence change."""
        self.connected_since_ms: int | None = None
        """When it last came online (while online). [ms since the epoch]"""
        self.last_seen_ms: int | None = None
        """When the lab last heard of it (data, presence, login, reply, refusal). [ms]"""
        self.point_minutes = _Buckets(minutes)
        self.error_minutes = _Buckets(minutes)

    def per_minute(self, now_ms: int, minutes: int, *, errors: bool = False) -> float:
        """Points (or ``errors``: refusals and command replies with an error code) per minute
        over the last ``minutes`` whole minutes of the lab clock up to ``now_ms``, the current
        minute included. [1/min]"""
        buckets = self.error_minutes if errors else self.point_minutes
        return buckets.since(now_ms // _MINUTE_MS - minutes + 1) / minutes

    def copy(self) -> DeviceCounts:
        """An independent copy (the buckets included)."""
        other = DeviceCounts.__new__(DeviceCounts)
        for name in DeviceCounts.__slots__:
            value = getattr(self, name)
            if isinstance(value, _Buckets):
                twin = _Buckets(value.size)
                twin._counts = deque([m, n] for m, n in value._counts)
                value = twin
            setattr(other, name, value)
        return other


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """A monitor's own state: ``devices`` counted, ``untracked`` (points, events, replies and
    refusals of devices beyond ``max_devices``), ``attached_ms`` (when counting began, epoch
    ms of the lab clock; ``None``: not attached)."""

    devices: int
    untracked: int
    max_devices: int
    attached_ms: int | None


class Monitor:
    """Per-device counters from the tap and the IoT hub's refusals (see the module docstring).

    ``clock`` is the lab's clock; ``max_devices`` bounds the devices counted, ``minutes`` the
    per-minute buckets kept per device (the longest rate window). Use it on the lab's loop.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        max_devices: int = DEFAULT_MAX_DEVICES,
        minutes: int = DEFAULT_MINUTES,
    ) -> None:
        if max_devices < 1:
            raise InvalidArgument(f"a monitor needs max_devices >= 1, got {max_devices!r}")
        if minutes < 1:
            raise InvalidArgument(f"a monitor needs minutes >= 1, got {minutes!r}")
        self._clock = clock
        self.max_devices = max_devices
        self.minutes = minutes
        self._devices: dict[Keys, DeviceCounts] = {}
        self.untracked = 0
        """What devices beyond ``max_devices`` did (points, events, replies, refusals)."""
        self._handles: list[TapCallback] = []
        self._attached_ms: int | None = None

    # -- attachment --------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether the monitor is counting."""
        return bool(self._handles)

    def attach(self, tap: Tap) -> None:
        """Start counting what ``tap`` reports (idempotent)."""
        if self._handles:
            return
        self._attached_ms = self._clock.time_ms()
        self._handles = [
            tap.add_point_rows(self._on_rows),
            tap.add_callback(
                self._on_event,
                kinds=(
                    EventPosted,
                    PresenceChanged,
                    DeviceLoggedIn,
                    CommandReplied,
                    RequestRefused,
                ),
            ),
        ]

    def detach(self) -> None:
        """Stop counting (the counts stay)."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.cancel()

    @property
    def stats(self) -> MonitorStats:
        """The monitor's own state (:class:`MonitorStats`)."""
        return MonitorStats(len(self._devices), self.untracked, self.max_devices, self._attached_ms)

    # -- counting (on the lab's loop) ----------------------------------------------------------

    def _counts(self, keys: Keys) -> DeviceCounts | None:
        counts = self._devices.get(keys)
        if counts is None:
            if len(self._devices) >= self.max_devices:
                return None
            counts = self._devices[keys] = DeviceCounts(self.minutes)
        return counts

    def _on_rows(self, rows: Sequence[PointRowLike]) -> None:
        now = self._clock.time_ms()
        minute = now // _MINUTE_MS
        # the rows of one post come together: count runs of one device
        run_keys: Keys | None = None
        run = 0
        for row in rows:
            keys = (row[0], row[1])
            if keys != run_keys:
                if run:
                    self._add_points(run_keys, run, now, minute)  # type: ignore[arg-type]
                run_keys, run = keys, 0
            run += 1
        if run:
            self._add_points(run_keys, run, now, minute)  # type: ignore[arg-type]

    def _add_points(self, keys: Keys, n: int, now: int, minute: int) -> None:
        counts = self._counts(keys)
        if counts is None:
            self.untracked += n
            return
        counts.points += n
        counts.last_seen_ms = now
        counts.point_minutes.add(minute, n)

    def _on_event(self, event: TapEvent) -> None:
        counts = self._counts((event.product_key, event.device_key))
        if counts is None:
            self.untracked += 1
            return
        now = self._clock.time_ms()
        counts.last_seen_ms = now
        if isinstance(event, EventPosted):
            counts.events += 1
        elif isinstance(event, PresenceChanged):
            counts.online = event.online
            counts.last_reason = event.reason
            if event.online:
                counts.connected_since_ms = int(event.time.timestamp() * 1000)
            else:
                counts.connected_since_ms = None
                counts.disconnects += 1
        elif isinstance(event, DeviceLoggedIn):
            counts.logins += 1
        elif isinstance(event, CommandReplied):
            counts.commands_replied += 1
            if event.code != _OK:
                counts.command_errors += 1
                counts.error_minutes.add(now // _MINUTE_MS, 1)
        elif isinstance(event, RequestRefused):
            counts.refused += 1
            counts.error_minutes.add(now // _MINUTE_MS, 1)

    # -- reading ------------------------------------------------------------------------------

    def counts(self, product_key: str, device_key: str) -> DeviceCounts | None:
        """The live counts of one device (``None``: nothing counted); read on the loop."""
        return self._devices.get((product_key, device_key))

    def snapshot(self, product_key: str | None = None) -> dict[Keys, DeviceCounts]:
        """Copies of the counts of every device counted (of one product if given)."""
        return {
            keys: counts.copy()
            for keys, counts in self._devices.items()
            if product_key is None or keys[0] == product_key
        }

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<Monitor {state}, {len(self._devices)} devices>"
