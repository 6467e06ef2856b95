"""The lab's recent event stream: a bounded ring of the tap's events, for notebooks.

Theory of operation
-------------------
An :class:`EventLog` is one callback on the device-data tap for every kind of event but stored
points (connects and disconnects with their reason, logins of devices and sub-devices,
activations, commands sent and replied, OTA reports and upgrade state changes, alerts,
attribute and tag changes, device events): each event is appended as it is, the object the
tap made, to a :class:`collections.deque` with a maximum length (``capacity``, default
:data:`DEFAULT_CAPACITY`), so that the oldest goes when it is full and memory stays bounded
however busy the devices are. :meth:`EventLog.rows` turns the kept events into rows (one per
event: time, kind, keys, what happened and a short text) only when they are read.

Stored points are not kept by default: they are in the time-series store already (queried
with ``lab.store.query_points``), and one point per ring slot would push every other event
out within seconds of a busy fleet. With ``points=True`` the log also takes the committed rows
of points (:meth:`~enos_lab.tap.Tap.add_point_rows`: no object per point until read); ingest
pays for that only while it is on.

The tap calls the log on the lab's loop; readers in other threads copy the ring under a lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..clock import from_epoch_ms
from ..errors import InvalidArgument
from ..tap import (
    EVENT_KINDS,
    KIND_OF,
    AlertChanged,
    AttributesChanged,
    CommandReplied,
    CommandSent,
    DeviceActivated,
    DeviceLoggedIn,
    EventPosted,
    OtaReported,
    OtaStateChanged,
    PointRowLike,
    PointStored,
    PresenceChanged,
    RequestRefused,
    TagsChanged,
    Tap,
    TapCallback,
    TapEvent,
)

__all__ = ["DEFAULT_CAPACITY", "EVENT_LOG_KINDS", "EventLog", "EventRow", "describe"]

DEFAULT_CAPACITY = 10_000
"""Events an :class:`EventLog` keeps (the newest)."""

EVENT_LOG_KINDS: tuple[type, ...] = tuple(k for k in EVENT_KINDS if k is not PointStored)
"""The event classes an :class:`EventLog` always keeps (all but stored points)."""

EventRow = tuple[Any, str, str, str, str, str, int | None, Any]
"""One event as :meth:`EventLog.rows` gives it: (time, kind, product_key, device_key, what,
detail, code, event)."""


class EventLog:
    """The newest ``capacity`` events of a tap (see the module docstring)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        _check_capacity(capacity)
        self._lock = threading.Lock()
        self._ring: deque[TapEvent | PointRowLike] = deque(maxlen=capacity)
        self._handle: TapCallback | None = None
        self._points: TapCallback | None = None
        self._tap: Tap | None = None
        self.seen = 0
        """Events (and point rows) appended since the log was made, the dropped included."""

    @property
    def capacity(self) -> int:
        """Events kept at most."""
        return self._ring.maxlen or 0

    @capacity.setter
    def capacity(self, capacity: int) -> None:
        _check_capacity(capacity)
        with self._lock:
            self._ring = deque(self._ring, maxlen=capacity)

    @property
    def points(self) -> bool:
        """Whether stored points are kept too (see the module docstring)."""
        return self._points is not None

    def __len__(self) -> int:
        """Events kept now."""
        return len(self._ring)

    def attach(self, tap: Tap, *, points: bool = False) -> None:
        """Keep the events ``tap`` reports from now on (idempotent); ``points``: stored points
        too (changes the setting when attached already)."""
        with self._lock:
            if self._handle is None:
                self._tap = tap
                self._handle = tap.add_callback(self._on_event, kinds=EVENT_LOG_KINDS)
            if points and self._points is None:
                self._points = tap.add_point_rows(self._on_rows)
            elif not points and self._points is not None:
                self._points.cancel()
                self._points = None

    def detach(self) -> None:
        """Stop keeping events (those kept stay)."""
        with self._lock:
            for handle in (self._handle, self._points):
                if handle is not None:
                    handle.cancel()
            self._handle = self._points = None

    def _on_event(self, event: TapEvent) -> None:
        with self._lock:
            self._ring.append(event)
            self.seen += 1

    def _on_rows(self, rows: Sequence[PointRowLike]) -> None:
        with self._lock:
            self._ring.extend(rows)
            self.seen += len(rows)

    def events(self) -> list[TapEvent | PointRowLike]:
        """A copy of what is kept, oldest first (point rows as the tap gave them)."""
        with self._lock:
            return list(self._ring)

    def clear(self) -> None:
        """Forget what is kept."""
        with self._lock:
            self._ring.clear()


def _check_capacity(capacity: object) -> None:
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise InvalidArgument(f"an event log needs a capacity int >= 1, got {capacity!r}")


def describe(item: TapEvent | PointRowLike) -> EventRow:
    """The row of one kept event or point row: ``what`` is the change in a word or two
    (``online``, ``offline``, ``sent``, ``replied``, ``opened``, ...), ``detail`` a short
    text, ``code`` a reply code (a command's reply) or ``None``."""
    if isinstance(item, tuple):
        pk, dk, point_id, at_ms, value, quality, resume = item
        event = PointStored(pk, dk, point_id, from_epoch_ms(at_ms), value, quality, bool(resume))
        item = event
    kind = KIND_OF[type(item)]
    keys = (item.time, kind, item.product_key, item.device_key)
    if isinstance(item, PresenceChanged):
        what = "online" if item.online else "offline"
        return (*keys, what, item.reason, None, item)
    if isinstance(item, DeviceLoggedIn):
        if item.gateway is not None:
            gateway = "/".join(item.gateway)
            return (*keys, "sub-device login", f"through gateway {gateway}", None, item)
        text = f"client {item.client_id}, secure mode {item.secure_mode}"
        return (*keys, "login", text, None, item)
    if isinstance(item, DeviceActivated):
        return (*keys, "activated", "device secret issued by dynamic activation", None, item)
    if isinstance(item, RequestRefused):
        return (*keys, "refused", f"{item.request}: code {item.code}", item.code, item)
    if isinstance(item, CommandSent):
        name = f"{item.command} {item.item_id}".rstrip()
        return (*keys, "sent", f"{name} (request {item.request_id})", None, item)
    if isinstance(item, CommandReplied):
        name = f"{item.command} {item.item_id}".rstrip()
        text = f"{name} (request {item.request_id}): code {item.code}"
        if item.message:
            text += f" {item.message}"
        return (*keys, "replied", text, item.code, item)
    if isinstance(item, OtaReported):
        if item.report == "inform":
            return (*keys, "inform", f"version {item.version}", None, item)
        text = f"step {item.step}" + (f": {item.desc}" if item.desc else "")
        return (*keys, item.report, text, None, item)
    if isinstance(item, OtaStateChanged):
        text = f"campaign {item.campaign_id}: {item.from_version} -> {item.to_version}"
        if item.progress is not None:
            text += f", {item.progress}%"
        if item.error:
            text += f": {item.error}"
        return (*keys, item.state, text, None, item)
    if isinstance(item, AlertChanged):
        text = f"{item.event_id} rule {item.rule_id}, {item.severity}, value {item.value!r}"
        return (*keys, item.change, text, None, item)
    if isinstance(item, (AttributesChanged, TagsChanged)):
        parts = [f"{k}={v!r}" for k, v in item.values.items()]
        parts.extend(f"-{k}" for k in item.deleted)
        return (*keys, f"changed by {item.source}", ", ".join(parts), None, item)
    if isinstance(item, EventPosted):
        text = ", ".join(f"{k}={v!r}" for k, v in item.outputs.items())
        what = item.event_id if item.severity is None else f"{item.event_id} ({item.severity})"
        return (*keys, what, text, None, item)
    point = item
    text = f"{point.point_id}={point.value!r}" + (" (resumed)" if point.resume else "")
    return (*keys, "stored", text, None, item)
