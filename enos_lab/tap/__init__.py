"""The device-data tap: typed events about device data, fired once that data is kept.

Points stored, events posted, attribute and tag changes, presence changes, commands sent and
their replies, OTA reports, logins, activations and alert changes (from the alert engine), each
a small frozen dataclass (:data:`TapEvent`); filters take the classes or the kind names users
know (:data:`KINDS`: ``"measurepoint"``, ``"presence"``, ``"command"``, ``"alert"``, ...).
Rules, alerts, dashboards and application subscriptions attach here, never to the IoT hub's
internals::

    with lab.subscribe(kinds=PointStored, product_key=pk) as points:   # any thread
        for event in points:
            print(event.device_key, event.point_id, event.time, event.value)

    lab.tap.add_callback(on_presence, kinds=PresenceChanged)           # on the lab's loop

A subscription buffers at most ``maxsize`` events; a reader that falls behind loses the oldest,
counted, and never slows ingest (see :mod:`enos_lab.tap._tap`).

Where the events come from: the EnOS IoT hub services (:mod:`enos_lab.iothub`, one emitter in
``_emit.py`` that every part calls once it kept something), on the lab's event loop. Points,
events and attribute changes are emitted after the store committed them (a post the hub refuses,
or rows the store refuses, emit nothing); presence changes and logins after the registry wrote
the presence log; tag changes after the registry has them; OTA reports once the OTA handler took
them; commands once handed to the device's connection, their replies as they arrive; alert
changes once the alert engine recorded them. The :class:`~enos_lab.Lab` owns one tap
(``lab.tap``, there before ``start()`` and across restarts) and gives it to its IoT hub; an
anonymous lab (a plain MQTT broker) emits nothing.
"""

from __future__ import annotations

from ._events import (
    AlertChanged,
    AttributesChanged,
    CommandReplied,
    CommandSent,
    DeviceActivated,
    DeviceLoggedIn,
    EventPosted,
    OtaReported,
    OtaStateChanged,
    PointStored,
    PresenceChanged,
    RequestRefused,
    TagsChanged,
    TapEvent,
)
from ._tap import (
    DEFAULT_MAXSIZE,
    EVENT_KINDS,
    KIND_OF,
    KINDS,
    Keys,
    Kinds,
    PointRowLike,
    Tap,
    TapCallback,
    TapFilter,
    TapStats,
    TapSubscription,
)

__all__ = [
    "DEFAULT_MAXSIZE",
    "EVENT_KINDS",
    "KINDS",
    "KIND_OF",
    "AlertChanged",
    "AttributesChanged",
    "CommandReplied",
    "CommandSent",
    "DeviceActivated",
    "DeviceLoggedIn",
    "EventPosted",
    "Keys",
    "Kinds",
    "OtaReported",
    "OtaStateChanged",
    "PointRowLike",
    "PointStored",
    "PresenceChanged",
    "RequestRefused",
    "TagsChanged",
    "Tap",
    "TapCallback",
    "TapEvent",
    "TapFilter",
    "TapStats",
    "TapSubscription",
]
