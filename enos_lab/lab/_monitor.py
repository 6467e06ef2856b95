"""Monitoring from the facade: the fleet's presence, traffic, errors and latest values.

Monitoring starts on the first monitoring call (:meth:`Monitoring.monitor`,
:meth:`~Monitoring.fleet`, :meth:`~Monitoring.fleet_summary`): only then does the lab attach
a :class:`~enos_lab.monitor.Monitor` to its tap, so that a lab nobody monitors pays nothing
on ingest. Its counters (points in, events, errors, last seen) start there and live as long
as the lab object (across restarts, like the tap); call ``lab.monitor()`` right after
``start()`` to count from the beginning. Presence and lifecycle state come from the
registry, latest values from the store, so they are whole from the first call.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pandas as pd

from ..clock import from_epoch_ms
from ..errors import InvalidArgument, NotFound
from ..monitor import DEFAULT_MAX_DEVICES, DEFAULT_MINUTES, DeviceCounts, Monitor, MonitorStats
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["FLEET_COLUMNS", "FLEET_SUMMARY_COLUMNS", "Monitoring"]

FLEET_COLUMNS = (
    "product_key", "device_key", "name", "state", "gateway", "last_seen", "connected_since",
    "points", "points_per_minute", "events", "refused", "command_errors", "errors",
    "errors_per_minute", "disconnects", "latest_time", "latest",
)  # fmt: skip
"""Columns of :meth:`Monitoring.fleet`: ``state`` online, offline, inactive or disabled;
``gateway`` ``(product_key, device_key)`` of a sub-device's gateway, else None; times tz-aware
UTC (NaT: never); ``points`` stored and ``points_per_minute`` [1/min] over the last
``minutes`` of the lab clock; ``refused`` requests answered with an error code,
``command_errors`` command replies with one, ``errors`` their sum and
``errors_per_minute`` [1/min] their rate over the last ``minutes``; ``latest`` a dict
``{point_id: value}`` of the latest stored values (by event time), ``latest_time`` the newest
of their times. Counters start when monitoring started."""

FLEET_SUMMARY_COLUMNS = (
    "product_key", "devices", "online", "offline", "inactive", "disabled", "points",
    "points_per_minute", "errors", "errors_per_minute",
)  # fmt: skip
"""Columns of :meth:`Monitoring.fleet_summary`: device counts per state, and sums of the
fleet's ``points``, ``points_per_minute`` [1/min], ``errors`` and ``errors_per_minute``
[1/min] per product."""

_CREATE_LOCK = threading.Lock()  # monitors are made once per lab: one lock for every lab


class Monitoring(LabCore):
    """Fleet monitoring (mixed into :class:`~enos_lab.lab.Lab`): per-device presence, last
    seen, points and error rates, latest values (see :mod:`enos_lab.monitor`)."""

    _monitor: Monitor | None = None

    def monitor(
        self, *, max_devices: int | None = None, minutes: int | None = None
    ) -> MonitorStats:
        """Start monitoring if it has not started (idempotent) and return its state.

        ``max_devices`` bounds the devices counted (default
        :data:`~enos_lab.monitor.DEFAULT_MAX_DEVICES`; what others do is only added to
        ``untracked``), ``minutes`` the longest rate window (default 60) [min]; both take
        effect on the first call only (a later call with other values raises
        :class:`~enos_lab.errors.InvalidArgument`). Needs the IoT hub services (not an
        anonymous lab).
        """
        monitor = self._monitor_ready(max_devices, minutes)
        return self.run(plain_call(lambda: monitor.stats))

    amonitor = coroutine_form_of(monitor)

    def fleet(self, product_key: str | None = None, *, minutes: int = 5) -> pd.DataFrame:
        """One row per registered device (of one product if given), in registration order,
        columns :data:`FLEET_COLUMNS`: lifecycle state and presence from the registry, traffic
        and errors counted since monitoring started (this call starts it), latest values from
        the store. ``points_per_minute`` is the mean over the last ``minutes`` whole minutes of
        the lab clock, the current one included. [min]

        ``last_seen`` is when the lab last heard of the device (data, presence, login, reply,
        refusal) since monitoring started, else its last presence change in the registry;
        ``connected_since`` when an online device came online. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown product.
        """
        monitor = self._monitor_ready(None, None)
        if not isinstance(minutes, int) or not 1 <= minutes <= monitor.minutes:
            raise InvalidArgument(
                f"minutes must be an int in 1..{monitor.minutes} (the monitor's window), "
                f"got {minutes!r}"
            )
        devices = self.registry.devices(product_key)
        now_ms, counts = self.run(
            plain_call(lambda: (self.clock.time_ms(), monitor.snapshot(product_key)))
        )
        latest = _latest(self, product_key)
        rows = []
        for device in devices:
            keys = (device.product_key, device.device_key)
            count = counts.get(keys)
            values = latest.get(keys, ({}, None))
            rows.append(_fleet_row(device, count, values, now_ms, minutes))
        frame = pd.DataFrame(rows, columns=list(FLEET_COLUMNS))
        for column in ("last_seen", "connected_since", "latest_time"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        for column in ("points", "events", "refused", "command_errors", "errors", "disconnects"):
            frame[column] = frame[column].astype("int64")
        for column in ("points_per_minute", "errors_per_minute"):
            frame[column] = frame[column].astype("float64")
        return frame

    afleet = coroutine_form_of(fleet)

    def fleet_summary(self, *, minutes: int = 5) -> pd.DataFrame:
        """One row per product that has devices, columns :data:`FLEET_SUMMARY_COLUMNS`:
        devices per state (online, offline, inactive, disabled) and the sums of the fleet's
        ``points``, ``points_per_minute`` (over the last ``minutes`` of the lab clock)
        [1/min], ``errors`` and ``errors_per_minute`` [1/min] (see :meth:`fleet`; this call
        starts monitoring)."""
        frame = self.fleet(minutes=minutes)
        columns = list(FLEET_SUMMARY_COLUMNS)
        if frame.empty:
            return pd.DataFrame(columns=columns)
        states = pd.crosstab(frame["product_key"], frame["state"])
        for state in ("online", "offline", "inactive", "disabled"):
            if state not in states:
                states[state] = 0
        sums = frame.groupby("product_key", sort=False).agg(
            devices=("device_key", "size"),
            points=("points", "sum"),
            points_per_minute=("points_per_minute", "sum"),
            errors=("errors", "sum"),
            errors_per_minute=("errors_per_minute", "sum"),
        )
        summary = sums.join(states[["online", "offline", "inactive", "disabled"]])
        summary = summary.reset_index()[columns]
        for column in ("devices", "online", "offline", "inactive", "disabled", "points", "errors"):
            summary[column] = summary[column].astype("int64")
        return summary

    afleet_summary = coroutine_form_of(fleet_summary)

    # -- internals --------------------------------------------------------------------------

    def _monitor_ready(self, max_devices: int | None, minutes: int | None) -> Monitor:
        """The lab's monitor, made on first use and attached to the tap."""
        self._require_iothub("monitoring")  # an anonymous lab has no IoT hub to count
        with _CREATE_LOCK:
            monitor = self._monitor
            if monitor is None:
                monitor = Monitor(
                    self.clock,
                    max_devices=DEFAULT_MAX_DEVICES if max_devices is None else max_devices,
                    minutes=DEFAULT_MINUTES if minutes is None else minutes,
                )
                self._monitor = monitor
            elif (max_devices is not None and max_devices != monitor.max_devices) or (
                minutes is not None and minutes != monitor.minutes
            ):
                raise InvalidArgument(
                    f"monitoring already runs with max_devices={monitor.max_devices}, "
                    f"minutes={monitor.minutes}; got max_devices={max_devices!r}, "
                    f"minutes={minutes!r}"
                )

        self.run(plain_call(monitor.attach, self.tap))
        return monitor


_Latest = dict[tuple[str, str], tuple[dict[str, Any], Any]]


def _latest(lab: LabCore, product_key: str | None) -> _Latest:
    """``{(product_key, device_key): ({point_id: value}, newest time)}`` from the store."""
    try:
        frame = lab.store.latest(product_key=product_key)
    except NotFound:  # a product the store holds no data of
        return {}
    out: _Latest = {}
    if frame.empty:
        return out
    for pk, dk, point_id, value, at in zip(
        frame["product_key"],
        frame["device_key"],
        frame["point_id"],
        frame["value"].astype(object),
        frame["time"],
        strict=True,
    ):
        values, newest = out.get((pk, dk), ({}, None))
        values[point_id] = None if value is pd.NA else value
        out[(pk, dk)] = (values, at if newest is None or at > newest else newest)
    return out


def _fleet_row(
    device: Any,
    count: DeviceCounts | None,
    latest: tuple[dict[str, Any], Any],
    now_ms: int,
    minutes: int,
) -> tuple[Any, ...]:
    state = device.state.value
    last_seen: datetime | None = None
    since: datetime | None = None
    if count is not None and count.last_seen_ms is not None:
        last_seen = from_epoch_ms(count.last_seen_ms)
    else:
        seen = [t for t in (device.last_online_at, device.last_offline_at) if t is not None]
        last_seen = max(seen) if seen else None
    if device.online:
        if count is not None and count.online and count.connected_since_ms is not None:
            since = from_epoch_ms(count.connected_since_ms)
        else:
            since = device.last_online_at
    if count is None:
        points = events = refused = command_errors = disconnects = 0
        rate = error_rate = 0.0
    else:
        points, events = count.points, count.events
        refused, command_errors = count.refused, count.command_errors
        disconnects = count.disconnects
        rate = count.per_minute(now_ms, minutes)
        error_rate = count.per_minute(now_ms, minutes, errors=True)
    values, latest_time = latest
    return (
        device.product_key,
        device.device_key,
        device.name,
        state,
        device.gateway,
        last_seen,
        since,
        points,
        rate,
        events,
        refused,
        command_errors,
        refused + command_errors,
        error_rate,
        disconnects,
        latest_time,
        values,
    )
