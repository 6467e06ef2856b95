"""Monitoring: per-device counters (points in, last seen, presence, errors) behind the lab's
fleet views (:meth:`Lab.fleet <enos_lab.lab.Lab.fleet>`, ``fleet_summary``).

A :class:`Monitor` counts from the device-data tap (stored points as rows, events, presence,
logins, command replies) and the IoT hub's refusal hook (requests answered with an error code),
on the lab's clock, for at most ``max_devices`` devices. The lab attaches one on the first
monitoring call (``lab.monitor()``, ``lab.fleet()``, ``lab.fleet_summary()``), so that ingest
pays nothing until then; counting starts there (see :mod:`enos_lab.monitor._monitor`).
"""

from __future__ import annotations

from ._monitor import DEFAULT_MAX_DEVICES, DEFAULT_MINUTES, DeviceCounts, Monitor, MonitorStats

__all__ = ["DEFAULT_MAX_DEVICES", "DEFAULT_MINUTES", "DeviceCounts", "Monitor", "MonitorStats"]
