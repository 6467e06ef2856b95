"""The device-data tap: typed events about device data, fired once that data is kept.

Points stored, events posted, attribute and tag changes, presence changes, command replies,
OTA reports, logins and activations, each a small frozen dataclass (:data:`TapEvent`). Rules,
alerts, dashboards and application subscriptions attach here, never to the IoT hub's
internals::

    with lab.subscribe(kinds=PointStored, product_key=pk) as points:   # any thread
        for event in points:
            print(event.device_key, event.point_id, event.time, event.value)

    lab.tap.add_callback(on_presence, kinds=PresenceChanged)           # on the lab's loop

A subscription buffers at most ``maxsize`` events; a reader that falls behind loses the oldest,
counted, and never slows ingest (see :mod:`enos_lab.tap._tap`).
"""

from __future__ import annotations

from ._events import (
    AttributesChanged,
    CommandReplied,
    DeviceActivated,
    DeviceLoggedIn,
    EventPosted,
    OtaReported,
    PointStored,
    PresenceChanged,
    TagsChanged,
    TapEvent,
)
from ._tap import (
    DEFAULT_MAXSIZE,
    EVENT_KINDS,
    Tap,
    TapCallback,
    TapFilter,
    TapStats,
    TapSubscription,
)

__all__ = [
    "DEFAULT_MAXSIZE",
    "EVENT_KINDS",
    "AttributesChanged",
    "CommandReplied",
    "DeviceActivated",
    "DeviceLoggedIn",
    "EventPosted",
    "OtaReported",
    "PointStored",
    "PresenceChanged",
    "TagsChanged",
    "Tap",
    "TapCallback",
    "TapEvent",
    "TapFilter",
    "TapStats",
    "TapSubscription",
]
