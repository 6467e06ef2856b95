"""Registry records: products, devices and their enums (plain frozen values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

__all__ = ["DataFormat", "Device", "DeviceState", "NodeType", "Product", "TopicPermission"]


class NodeType(Enum):
    """How devices of a product connect."""

    DIRECT = "direct"
    """Connects to the hub itself and speaks only for itself."""
    GATEWAY = "gateway"
    """Connects to the hub and may speak for sub-devices."""
    SUB_DEVICE = "sub_device"
    """Never connects directly; a gateway logs it in (EnOS 771 if it tries)."""


class DataFormat(Enum):
    """Payload format of a product's devices."""

    JSON = "json"
    """The EnOS JSON envelope (standard)."""
    CUSTOM = "custom"
    """Raw bytes on ``model/up_raw`` / ``down_raw``, translated by a per-product codec."""


class DeviceState(Enum):
    """Lifecycle state of a device as the EnOS console shows it."""

    INACTIVE = "inactive"
    """Registered, never logged in (dynamic activation is only possible now)."""
    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"
    """Refused at login; a live connection is closed when the device is disabled."""
    DELETED = "deleted"
    """Removed from the registry (only seen on the record :meth:`delete_device` returns)."""


class TopicPermission(Enum):
    """What devices may do on a custom topic."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    BOTH = "both"

    @property
    def can_publish(self) -> bool:
        """Devices may publish on the topic."""
        return self is not TopicPermission.SUBSCRIBE

    @property
    def can_subscribe(self) -> bool:
        """Devices may subscribe to the topic."""
        return self is not TopicPermission.PUBLISH


@dataclass(frozen=True, slots=True)
class Product:
    """A class of devices sharing a thing model and connection settings.

    ``custom_topics`` maps topic templates (with ``{productKey}`` and ``{deviceKey}``
    placeholders, e.g. ``/{productKey}/{deviceKey}/user/update``) to what devices may do there.
    """

    product_key: str
    product_secret: str
    name: str
    model_id: str | None = None
    node_type: NodeType = NodeType.DIRECT
    dynamic_activation: bool = False
    data_format: DataFormat = DataFormat.JSON
    certificate_required: bool = False
    description: str = ""
    custom_topics: Mapping[str, TopicPermission] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Device:
    """A registered device. Times are tz-aware UTC; ``None`` when it never happened.

    ``gateway`` is ``(product_key, device_key)`` of the gateway a sub-device is attached to
    (topology), else ``None``.
    """

    product_key: str
    device_key: str
    device_secret: str
    asset_id: str
    name: str
    name_i18n: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    timezone: str = "+00:00"
    tags: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    online: bool = False
    created_at: datetime | None = None
    activated_at: datetime | None = None
    last_online_at: datetime | None = None
    last_offline_at: datetime | None = None
    gateway: tuple[str, str] | None = None
    deleted: bool = False
    """Set only on the record :meth:`Registry.delete_device` returns."""

    @property
    def state(self) -> DeviceState:
        """The lifecycle state derived from the flags and times."""
        if self.deleted:
            return DeviceState.DELETED
        if not self.enabled:
            return DeviceState.DISABLED
        if self.online:
            return DeviceState.ONLINE
        if self.activated_at is None:
            return DeviceState.INACTIVE
        return DeviceState.OFFLINE
