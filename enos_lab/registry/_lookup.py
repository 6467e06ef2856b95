"""Registry data for code on the hot path: products' models, devices' attributes and gateways.

Consumers of device data (the alert engine, the rule engine) need, for every point they
evaluate, the model of the device's product and sometimes the device's attributes or gateway.
Reading the registry (SQLite) for each point would cost a query per point on the lab's event
loop; :class:`DeviceLookup` keeps what it read in bounded dictionaries and throws them away
whenever :attr:`Registry.revision` has moved, that is after any change committed through the
registry (attributes, tags, topology, products, devices). A lookup is one integer comparison
and one dictionary read while nothing changes; a miss is one registry read.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import NotFound
from ._records import Device
from ._registry import Registry

__all__ = ["MAX_LOOKUPS", "DeviceLookup"]

MAX_LOOKUPS = 10_000
"""Default bound on the devices (and products) a :class:`DeviceLookup` keeps."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class DeviceLookup:
    """Cached registry reads, current as of the registry's :attr:`~Registry.revision`.

    Not thread-safe: use one per thread (the lab's loop has its own).
    """

    __slots__ = ("_devices", "_max", "_models", "_registry", "_revision")

    def __init__(self, registry: Registry, *, max_entries: int = MAX_LOOKUPS) -> None:
        self._registry = registry
        self._max = max_entries
        self._revision = registry.revision
        self._devices: dict[tuple[str, str], Device | None] = {}
        self._models: dict[str, str | None] = {}

    def _current(self) -> None:
        revision = self._registry.revision
        if revision != self._revision:
            self._revision = revision
            self._devices.clear()
            self._models.clear()

    def device(self, product_key: str, device_key: str) -> Device | None:
        """The device's record, or None if it is not registered."""
        self._current()
        key = (product_key, device_key)
        try:
            return self._devices[key]
        except KeyError:
            pass
        device = self._registry.find_device(product_key, device_key)
        if len(self._devices) >= self._max:
            self._devices.clear()
        self._devices[key] = device
        return device

    def model_of(self, product_key: str) -> str | None:
        """The model id of the product, or None if there is no such product."""
        self._current()
        try:
            return self._models[product_key]
        except KeyError:
            pass
        try:
            model_id: str | None = self._registry.get_product(product_key).model_id
        except NotFound:
            model_id = None
        if len(self._models) >= self._max:
            self._models.clear()
        self._models[product_key] = model_id
        return model_id

    def attributes(self, product_key: str, device_key: str) -> Mapping[str, Any]:
        """The device's attribute values (empty for an unknown device)."""
        device = self.device(product_key, device_key)
        return _EMPTY if device is None else device.attributes

    def tags(self, product_key: str, device_key: str) -> Mapping[str, str]:
        """The device's tags (empty for an unknown device)."""
        device = self.device(product_key, device_key)
        return _EMPTY if device is None else device.tags

    def gateway(self, product_key: str, device_key: str) -> tuple[str, str] | None:
        """The (product_key, device_key) of the device's gateway, or None."""
        device = self.device(product_key, device_key)
        return None if device is None else device.gateway
