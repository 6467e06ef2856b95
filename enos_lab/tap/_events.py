"""The device-data events of the tap: what happened to a device's data, after it is kept.

Every event is a small frozen dataclass named as a past-tense fact, carrying the device's keys
and a tz-aware UTC ``time``: the event time the device gave for points and events, the time the
lab recorded it for everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeAlias

__all__ = [
    "AlertChanged",
    "AttributesChanged",
    "CommandReplied",
    "CommandSent",
    "DeviceActivated",
    "DeviceLoggedIn",
    "EventPosted",
    "OtaReported",
    "OtaStateChanged",
    "PointStored",
    "PresenceChanged",
    "RequestRefused",
    "TagsChanged",
    "TapEvent",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PointStored:
    """A measurepoint value is stored (committed). ``time`` is its event time; ``resume`` says
    it came as history (``measurepoint/resume``); ``quality`` is EnOS's 0..9 or ``None``."""

    product_key: str
    device_key: str
    point_id: str
    time: datetime
    value: Any
    quality: int | None = None
    resume: bool = False


@dataclass(frozen=True, slots=True)
class EventPosted:
    """A device event is stored. ``outputs`` are its output parameters; ``severity`` the
    model's event type (``INFO``, ``WARN``, ``ERROR``) or ``None`` without a model."""

    product_key: str
    device_key: str
    event_id: str
    time: datetime
    outputs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    severity: str | None = None


@dataclass(frozen=True, slots=True)
class AttributesChanged:
    """Attributes of a device changed: ``values`` set, ``deleted`` removed; ``source`` is
    ``"device"`` (reported by it) or ``"cloud"`` (set through the lab); ``previous`` the
    values before the change of the keys set or deleted that had one."""

    product_key: str
    device_key: str
    time: datetime
    values: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    deleted: tuple[str, ...] = ()
    source: str = "device"
    previous: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class TagsChanged:
    """Tags of a device changed: ``values`` set, ``deleted`` removed; ``source`` and
    ``previous`` as for :class:`AttributesChanged`."""

    product_key: str
    device_key: str
    time: datetime
    values: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    deleted: tuple[str, ...] = ()
    source: str = "device"
    previous: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A device went online or offline; ``reason`` as in the presence log (connected,
    disconnected, keep-alive timeout, gateway offline, ...)."""

    product_key: str
    device_key: str
    time: datetime
    online: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """The IoT hub answered a device's request with an error ``code`` (malformed JSON, a post
    failing the model, no permission, ...): nothing of it was kept. ``request`` is the topic
    kind's name (``MEASUREPOINT_POST``, ...); the keys are the topic's device, or the
    connection's when the request was not readable or not allowed."""

    product_key: str
    device_key: str
    time: datetime
    request: str
    code: int


@dataclass(frozen=True, slots=True)
class CommandSent:
    """The lab sent a command to a device (to its gateway's connection for a sub-device):
    ``command`` is the topic kind's name (``SERVICE_INVOKE``, ``MEASUREPOINT_SET``, ...),
    ``item_id`` the service id where there is one, ``request_id`` the id its reply will
    carry (:class:`CommandReplied`). Commands refused before sending (the device offline) are
    not reported."""

    product_key: str
    device_key: str
    time: datetime
    command: str
    item_id: str
    request_id: Any


@dataclass(frozen=True, slots=True)
class CommandReplied:
    """A device answered a command: ``command`` is the topic kind's name (``SERVICE_INVOKE``,
    ``MEASUREPOINT_SET``, ...), ``item_id`` the service id where there is one, ``code`` the
    device's reply code (200: success), ``data`` and ``message`` as it sent them. Every reply
    counts, those to commands sent without waiting for the reply included."""

    product_key: str
    device_key: str
    time: datetime
    command: str
    item_id: str
    request_id: Any
    code: int
    data: Any = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class OtaReported:
    """A device reported on firmware: ``report`` is ``"inform"`` (its ``version``) or
    ``"progress"`` (``step``: "0".."100" or a negative failure code, and ``desc``; only
    progress the OTA handler accepted, which the default handler, without upgrade tasks,
    never does)."""

    product_key: str
    device_key: str
    time: datetime
    report: str
    version: str | None = None
    step: str | None = None
    desc: str | None = None


@dataclass(frozen=True, slots=True)
class OtaStateChanged:
    """A device's firmware upgrade moved to ``state`` (pending, pushed, upgrading, rebooting,
    succeeded, failed, aborted, skipped: :class:`~enos_lab.ota.UpgradeState`'s values) in
    campaign ``campaign_id``, from ``from_version`` to ``to_version``; ``progress`` [%] as
    last reported, ``error`` why it failed (or why it goes again)."""

    product_key: str
    device_key: str
    time: datetime
    campaign_id: str
    state: str
    from_version: str | None = None
    to_version: str | None = None
    progress: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceLoggedIn:
    """A device's login was accepted (``secure_mode`` 2: device secret, 3: dynamic
    activation); ``gateway`` names the gateway of a sub-device login, else ``None``."""

    product_key: str
    device_key: str
    time: datetime
    client_id: str
    secure_mode: int
    gateway: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class DeviceActivated:
    """A device received its device secret by dynamic activation (secret-per-product): a
    direct device confirmed it (``activate/info`` reply 200), or a sub-device's login issued
    it."""

    product_key: str
    device_key: str
    time: datetime


@dataclass(frozen=True, slots=True)
class AlertChanged:
    """An alert of the alert engine changed: ``change`` is ``"opened"`` (it fired),
    ``"recovered"`` or ``"escalated"``; ``time`` is the alert's occur, recover or escalation
    time (event time), ``severity`` the name of its severity from then on, ``value`` the
    alert's value (the recovering value for a recovery). Not reported while the alert is
    shelved or masked by a root alert (its record changes all the same)."""

    product_key: str
    device_key: str
    time: datetime
    event_id: str
    rule_id: str
    change: str
    severity: str
    value: Any = None


TapEvent: TypeAlias = (
    PointStored
    | EventPosted
    | AttributesChanged
    | TagsChanged
    | PresenceChanged
    | RequestRefused
    | CommandSent
    | CommandReplied
    | OtaReported
    | OtaStateChanged
    | DeviceLoggedIn
    | DeviceActivated
    | AlertChanged
)
"""Any event of the tap."""
