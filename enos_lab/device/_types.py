"""Values the device SDK takes and returns: batch entries, sub-device specs and credentials,
notifications, statistics, and the shapes of command handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from ..enos import TopicKind

__all__ = [
    "ClientStats",
    "Notification",
    "PointsEntry",
    "SubDeviceCredentials",
    "SubDeviceSpec",
]

Callback: TypeAlias = Callable[[], "object | Awaitable[object]"]
"""``on_connect`` / ``on_disconnect``: a plain function or a coroutine function."""
SecretCallback: TypeAlias = Callable[[str], "object | Awaitable[object]"]
"""``on_secret_issued(device_secret)``: a plain function or a coroutine function."""
Handler: TypeAlias = Callable[[Any], Any]
"""A command handler: called with the command's params; returns the reply's data, or an
awaitable of it."""
EventTime: TypeAlias = "int | datetime | None"
"""A device timestamp: epoch milliseconds, a tz-aware datetime, or ``None`` for the client
clock's now."""


@dataclass(frozen=True, slots=True)
class PointsEntry:
    """One entry of a batch measurepoint post (protocol reference 7.2).

    ``values`` maps point ids to values; ``time`` is epoch milliseconds, a tz-aware datetime
    or ``None`` (the client clock's now); ``product_key`` / ``device_key`` name a sub-device
    behind the gateway (``None``: the device of the topic, the gateway itself); ``quality``
    maps point ids to quality codes (sent as ``{"value": v, "quality": q}``).
    """

    values: Mapping[str, Any]
    time: int | datetime | None = None
    product_key: str | None = None
    device_key: str | None = None
    quality: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class SubDeviceSpec:
    """A device a gateway registers with ``thing.device.register`` (protocol reference 8.1).

    ``product_key`` must be a sub-device product; ``device_key`` ``None`` lets the hub generate
    one; ``timezone`` is an offset such as ``"+08:00"``.
    """

    product_key: str
    name: str
    device_key: str | None = None
    description: str = ""
    timezone: str = "+00:00"
    attributes: Mapping[str, Any] | None = None
    name_i18n: Mapping[str, str] | None = None

    def params(self) -> dict[str, Any]:
        """The entry of the request's ``params`` list."""
        entry: dict[str, Any] = {
            "productKey": self.product_key,
            "deviceName": {"defaultValue": self.name, "i18nValue": dict(self.name_i18n or {})},
            "timezone": self.timezone,
        }
        if self.device_key:
            entry["deviceKey"] = self.device_key
        if self.description:
            entry["deviceDesc"] = self.description
        if self.attributes:
            entry["deviceAttributes"] = dict(self.attributes)
        return entry


@dataclass(frozen=True, slots=True)
class SubDeviceCredentials:
    """What a gateway needs to attach and log in a sub-device: its keys and secret (and the
    asset id the hub gave it, when known)."""

    product_key: str
    device_key: str
    device_secret: str
    asset_id: str | None = None

    @property
    def keys(self) -> tuple[str, str]:
        """``(product_key, device_key)``."""
        return (self.product_key, self.device_key)


@dataclass(frozen=True, slots=True)
class Notification:
    """A lifecycle notification from the cloud (protocol reference 6.2, 8.4).

    ``kind`` is ``SUB_DEVICE_ENABLE`` / ``DISABLE`` / ``DELETE`` (``combine.*``, sent to a
    gateway about its sub-devices, listed in ``devices``) or ``THING_ENABLE`` / ``DISABLE`` /
    ``DELETE`` (the legacy per-device form about the device of the topic);
    ``product_key`` / ``device_key`` are the topic's keys and ``params`` the command's params.
    """

    kind: TopicKind
    product_key: str
    device_key: str
    devices: tuple[tuple[str, str], ...] = ()
    params: Any = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters of one device client since it was made (a snapshot)."""

    sent: int = 0
    """Requests published."""
    replies: int = 0
    """Replies received to requests (any code)."""
    failures: int = 0
    """Replies with a code other than 200."""
    timeouts: int = 0
    """Requests without a reply within their timeout."""
    lost: int = 0
    """Requests whose connection dropped before their reply arrived."""
    reconnects: int = 0
    """Successful reconnections after a lost connection."""
    commands: int = 0
    """Downstream commands received."""
    command_errors: int = 0
    """Commands whose handler raised something other than ``CommandError``."""
