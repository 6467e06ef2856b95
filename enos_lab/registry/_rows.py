"""The registry's checks of what callers give it and its conversions of SQLite rows.

Pure functions, shared by :class:`~enos_lab.registry.Registry` and its tables: a value that
does not fit raises :class:`~enos_lab.errors.InvalidArgument` naming it.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..clock import from_epoch_ms, to_epoch_ms
from ..errors import InvalidArgument
from ._records import DataFormat, Device, NodeType, Product, TopicPermission

__all__ = [
    "MAX_MAP_ENTRIES",
    "check_map",
    "check_tags",
    "check_timezone",
    "check_topic_template",
    "deleted",
    "device_from_row",
    "device_row",
    "enum_value",
    "from_ms",
    "json_map",
    "permission",
    "product_from_row",
    "to_ms",
]

_ALPHANUMERIC = string.ascii_letters + string.digits
TAG_KEY_FIRST = frozenset(string.ascii_letters + "_")
TAG_KEY_ALLOWED = frozenset(_ALPHANUMERIC + "_")
MAX_MAP_ENTRIES = 200  # EnOS: at most 200 attributes / tags per device


def to_ms(moment: datetime | None) -> int | None:
    """Epoch milliseconds of ``moment`` (``None`` stays ``None``). [ms]"""
    return None if moment is None else to_epoch_ms(moment)


def from_ms(ms: int | None) -> datetime | None:
    """The UTC datetime of epoch milliseconds ``ms`` (``None`` stays ``None``)."""
    return None if ms is None else from_epoch_ms(ms)


# -- checks ------------------------------------------------------------------------------------


def enum_value(kind: Any, value: object, what: str) -> Any:
    """``kind(value)``, or :class:`InvalidArgument` naming ``what`` and the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in kind)
        raise InvalidArgument(f"{what} must be one of {choices}, got {value!r}") from None


def permission(value: TopicPermission | str) -> TopicPermission:
    """A custom topic permission from its value."""
    result: TopicPermission = enum_value(TopicPermission, value, "custom topic permission")
    return result


def check_topic_template(template: str) -> None:
    """A custom topic template: starts with ``/``, has ``{deviceKey}``, no wildcards, not
    under ``/sys/`` or ``/ext/``."""
    if not template.startswith("/") or "{deviceKey}" not in template:
        raise InvalidArgument(
            f"custom topic template {template!r} must start with '/' and contain {{deviceKey}}"
        )
    if any(c in template for c in "+#\0"):
        raise InvalidArgument(f"custom topic template {template!r} may not contain + # or NUL")
    if template.startswith(("/sys/", "/ext/")):
        raise InvalidArgument(f"custom topic template {template!r} may not use /sys/ or /ext/")


def check_timezone(value: str) -> str:
    """A UTC offset such as ``+08:00``."""
    text = str(value)
    if len(text) == 6 and text[0] in "+-" and text[3] == ":" and (text[1:3] + text[4:]).isdigit():
        return text
    raise InvalidArgument(f"timezone must look like '+08:00', got {value!r}")


def check_map(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Attributes or tags: at most :data:`MAX_MAP_ENTRIES`, JSON values."""
    if len(values) > MAX_MAP_ENTRIES:
        raise InvalidArgument(f"at most {MAX_MAP_ENTRIES} {what} per device, got {len(values)}")
    try:
        json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be JSON values: {exc}") from exc
    return dict(values)


def check_tags(tags: Mapping[str, object]) -> dict[str, str]:
    """Tags: keys of letters, digits and ``_`` (1-100, not starting with a digit), values as
    text."""
    for key in tags:
        if (
            not isinstance(key, str)
            or not key
            or len(key) > 100
            or key[0] not in TAG_KEY_FIRST
            or not set(key) <= TAG_KEY_ALLOWED
        ):
            raise InvalidArgument(
                f"tag key {key!r} must be 1-100 characters of letters, digits and _, "
                "starting with a letter or _"
            )
    return check_map({key: str(value) for key, value in tags.items()}, "tags")


# -- row conversions ---------------------------------------------------------------------------


def product_from_row(row: tuple[Any, ...]) -> Product:
    """A product from its ``products`` row."""
    (key, secret, name, model_id, node, dynamic, fmt, cert, desc, topics, created) = row
    return Product(
        product_key=key,
        product_secret=secret,
        name=name,
        model_id=model_id,
        node_type=NodeType(node),
        dynamic_activation=bool(dynamic),
        data_format=DataFormat(fmt),
        certificate_required=bool(cert),
        description=desc,
        custom_topics={t: TopicPermission(p) for t, p in json.loads(topics).items()},
        created_at=from_epoch_ms(created),
    )


def device_row(device: Device) -> tuple[object, ...]:
    """The ``devices`` row of a device."""
    gateway = device.gateway or (None, None)
    return (
        device.product_key,
        device.device_key,
        device.device_secret,
        device.asset_id,
        device.name,
        json.dumps(dict(device.name_i18n)),
        device.description,
        device.timezone,
        json.dumps(dict(device.tags)),
        json.dumps(dict(device.attributes)),
        int(device.enabled),
        int(device.online),
        to_ms(device.created_at),
        to_ms(device.activated_at),
        to_ms(device.last_online_at),
        to_ms(device.last_offline_at),
        *gateway,
    )


def device_from_row(row: tuple[Any, ...]) -> Device:
    """A device from its ``devices`` row."""
    (pk, dk, secret, asset, name, i18n, desc, tz, tags, attrs, enabled, online) = row[:12]
    created, activated, last_on, last_off, gw_pk, gw_dk = row[12:]
    return Device(
        product_key=pk,
        device_key=dk,
        device_secret=secret,
        asset_id=asset,
        name=name,
        name_i18n=json_map(i18n),
        description=desc,
        timezone=tz,
        tags=json_map(tags),
        attributes=json_map(attrs),
        enabled=bool(enabled),
        online=bool(online),
        created_at=from_ms(created),
        activated_at=from_ms(activated),
        last_online_at=from_ms(last_on),
        last_offline_at=from_ms(last_off),
        gateway=(gw_pk, gw_dk) if gw_pk is not None else None,
    )


def json_map(text: str) -> dict[str, Any]:
    """A stored JSON object (most are empty: no parsing for those)."""
    if text == "{}":
        return {}
    value: dict[str, Any] = json.loads(text)
    return value


def deleted(device: Device) -> Device:
    """The record of a device as it was deleted."""
    return replace(device, online=False, gateway=None, deleted=True)
