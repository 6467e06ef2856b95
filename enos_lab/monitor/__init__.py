"""Monitoring: per-device counters (points in, last seen, presence, errors) behind the lab's
fleet views (:meth:`Lab.fleet <enos_lab.lab.Lab.fleet>`, ``fleet_summary``), and the lab's
recent event stream behind :meth:`Lab.events <enos_lab.lab.Lab.events>`.

A :class:`Monitor` counts from the device-data tap (stored points as rows, events, presence,
logins, command replies, requests the IoT hub refused with an error code), on the lab's clock,
for at most ``max_devices`` devices. The lab attaches one on the first monitoring call
(``lab.monitor()``, ``lab.fleet()``, ``lab.fleet_summary()``), so that ingest pays nothing
until then; counting starts there (see :mod:`enos_lab.monitor._monitor`).

An :class:`EventLog` keeps the newest events of the tap (all kinds but stored points, which
are in the store) in a bounded ring; the lab makes one with itself (see
:mod:`enos_lab.monitor._events`). An :class:`EventCallback` calls a function with the events
of a tap subscription in a thread of its own, off the lab's loop (:meth:`Lab.on
<enos_lab.lab.Lab.on>`).
"""

from __future__ import annotations

from ._callback import EventCallback
from ._events import DEFAULT_CAPACITY, EVENT_LOG_KINDS, EventLog, EventRow, describe
from ._monitor import DEFAULT_MAX_DEVICES, DEFAULT_MINUTES, DeviceCounts, Monitor, MonitorStats

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_DEVICES",
    "DEFAULT_MINUTES",
    "EVENT_LOG_KINDS",
    "DeviceCounts",
    "EventCallback",
    "EventLog",
    "EventRow",
    "Monitor",
    "MonitorStats",
    "describe",
]
