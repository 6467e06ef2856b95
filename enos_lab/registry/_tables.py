"""The registry's tables: bulk registration and the DataFrames of devices and credentials."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from ..errors import InvalidArgument, RegistryError

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["BulkResult", "credentials_frame", "devices_frame", "register_many"]


def register_many(
    registry: Registry,
    rows: pd.DataFrame | Iterable[Mapping[str, Any]] | str | Path,
    *,
    progress: bool = False,
) -> BulkResult:
    """Register many devices; a bad row is reported and the others are still registered.

    ``rows`` is a DataFrame, an iterable of mappings, or the path of a CSV file, with the
    keyword arguments of :meth:`Registry.register_device` as columns (``product_key`` required;
    ``tags`` and ``attributes`` may be JSON text). Empty cells mean "not given".
    ``progress`` shows a tqdm progress bar.
    """
    records = _bulk_records(rows)
    registered: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for index, record in enumerate(tqdm(records, disable=not progress, unit="device")):
        try:
            kwargs = _bulk_kwargs(record)
            device = registry.register_device(**kwargs)
        except (InvalidArgument, RegistryError, TypeError) as exc:
            errors.append(
                {
                    "row": index,
                    "product_key": record.get("product_key"),
                    "device_key": record.get("device_key"),
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
            continue
        registered.append(
            {
                "row": index,
                "product_key": device.product_key,
                "device_key": device.device_key,
                "asset_id": device.asset_id,
                "device_secret": device.device_secret,
            }
        )
    return BulkResult(
        registered=pd.DataFrame(registered, columns=list(_REGISTERED_COLUMNS)),
        errors=pd.DataFrame(errors, columns=list(_ERROR_COLUMNS)),
    )


def devices_frame(registry: Registry, product_key: str | None = None) -> pd.DataFrame:
    """Every device (of one product if given) as a DataFrame, one row per device.

    Columns: ``product_key, device_key, asset_id, name, state, enabled, online, timezone,
    gateway_product_key, gateway_device_key, created_at, activated_at, last_online_at,
    last_offline_at, tags, attributes`` (times tz-aware UTC). Secrets are left out; see
    :meth:`Registry.export_credentials`.
    """
    rows = [
        {
            "product_key": d.product_key,
            "device_key": d.device_key,
            "asset_id": d.asset_id,
            "name": d.name,
            "state": d.state.value,
            "enabled": d.enabled,
            "online": d.online,
            "timezone": d.timezone,
            "gateway_product_key": d.gateway[0] if d.gateway else None,
            "gateway_device_key": d.gateway[1] if d.gateway else None,
            "created_at": d.created_at,
            "activated_at": d.activated_at,
            "last_online_at": d.last_online_at,
            "last_offline_at": d.last_offline_at,
            "tags": dict(d.tags),
            "attributes": dict(d.attributes),
        }
        for d in registry.devices(product_key)
    ]
    frame = pd.DataFrame(rows, columns=list(_DEVICE_FRAME_COLUMNS))
    for column in ("created_at", "activated_at", "last_online_at", "last_offline_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def credentials_frame(registry: Registry, product_key: str | None = None) -> pd.DataFrame:
    """The credentials a device needs to connect, one row per device.

    Columns: ``product_key, device_key, device_secret, product_secret, asset_id,
    dynamic_activation``. Keep the result secret.
    """
    products = {p.product_key: p for p in registry.products()}
    rows = [
        {
            "product_key": d.product_key,
            "device_key": d.device_key,
            "device_secret": d.device_secret,
            "product_secret": products[d.product_key].product_secret,
            "asset_id": d.asset_id,
            "dynamic_activation": products[d.product_key].dynamic_activation,
        }
        for d in registry.devices(product_key)
    ]
    return pd.DataFrame(rows, columns=list(_CREDENTIAL_COLUMNS))


@dataclass(frozen=True, slots=True)
class BulkResult:
    """The outcome of :meth:`~enos_lab.registry.Registry.register_devices`.

    ``registered`` has ``row, product_key, device_key, asset_id, device_secret``; ``errors`` has
    ``row, product_key, device_key, error`` (``row`` is the 0-based input row).
    """

    registered: pd.DataFrame
    errors: pd.DataFrame


_REGISTERED_COLUMNS = ("row", "product_key", "device_key", "asset_id", "device_secret")
_ERROR_COLUMNS = ("row", "product_key", "device_key", "error")
_CREDENTIAL_COLUMNS = (
    "product_key",
    "device_key",
    "device_secret",
    "product_secret",
    "asset_id",
    "dynamic_activation",
)
_DEVICE_FRAME_COLUMNS = (
    "product_key",
    "device_key",
    "asset_id",
    "name",
    "state",
    "enabled",
    "online",
    "timezone",
    "gateway_product_key",
    "gateway_device_key",
    "created_at",
    "activated_at",
    "last_online_at",
    "last_offline_at",
    "tags",
    "attributes",
)
_BULK_FIELDS = frozenset(
    {
        "product_key",
        "device_key",
        "name",
        "description",
        "timezone",
        "tags",
        "attributes",
        "device_secret",
    }
)


def _bulk_records(
    rows: pd.DataFrame | Iterable[Mapping[str, Any]] | str | Path,
) -> list[dict[str, Any]]:
    if isinstance(rows, (str, Path)):
        rows = pd.read_csv(rows, dtype=str, keep_default_na=False)
    if isinstance(rows, pd.DataFrame):
        return [{str(k): v for k, v in r.items()} for r in rows.to_dict(orient="records")]
    return [dict(r) for r in rows]


def _bulk_kwargs(record: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(record) - _BULK_FIELDS
    if unknown:
        raise InvalidArgument(
            f"unknown column(s) {sorted(unknown)}; expected {sorted(_BULK_FIELDS)}"
        )
    kwargs: dict[str, Any] = {}
    for key, raw in record.items():
        if raw is None or (isinstance(raw, float) and math.isnan(raw)) or raw == "":
            continue
        value = raw
        if key in ("tags", "attributes") and isinstance(raw, str):
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise InvalidArgument(f"{key} must be a JSON object, got {raw!r}") from exc
            if not isinstance(value, dict):
                raise InvalidArgument(f"{key} must be a JSON object, got {raw!r}")
        kwargs[key] = value
    if "product_key" not in kwargs:
        raise InvalidArgument("product_key is missing")
    product_key = kwargs.pop("product_key")
    return {"product_key": product_key, **kwargs}
