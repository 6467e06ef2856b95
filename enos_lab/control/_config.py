"""Configuration from the cloud: attributes and tags set through the lab, pushed to the device.

Theory of operation. :meth:`ConfigService.change` (on the lab's loop) checks a change against
the device's thing model (attribute ids and types, ``allow_additional_attributes``; attribute
ids of a product without a model must be EnOS identifiers; tag keys and values as protocol
reference 7.4), then keeps it as a device's own report is kept: the registry (the device
record), the store for attributes (a deletion stores ``None``), the tap
(:class:`~enos_lab.tap.AttributesChanged` / :class:`~enos_lab.tap.TagsChanged` with source
``"cloud"`` and the values replaced), and the configuration history
(:class:`~enos_lab.control.ConfigHistory`, ``config.sqlite3``). Every change reported by the
devices (source ``"device"`` on the tap) goes into the same history.

Pushed to an online device. EnOS documents no downstream topic that sets a device's attributes
(protocol reference 6.2 lists none, and the official Python SDK has no such command; its
devices read their attributes with ``thing.attribute.query``, which the lab answers from the
registry). The lab therefore pushes a change to a device online at that moment on a topic of
its own, :attr:`~enos_lab.enos.TopicKind.ATTRIBUTE_SET` (``/sys/{pk}/{dk}/thing/attribute/set``,
method ``thing.attribute.set``) with params ``{"attributes": {id: value}}``,
``{"deletedAttributes": [ids]}``, ``{"tags": {key: value}}`` or ``{"deletedTags": [keys]}``.
The lab's device SDK (:mod:`enos_lab.device`) applies it and answers 200; the official SDKs
ignore a command topic they do not know (the Python SDK logs it and stays connected), so an
official device picks the change up by querying. ``pushed`` in the history says whether the
change reached the device's live connection (a sub-device's through its gateway); the push does
not wait for the device's answer. A device offline gets nothing pushed: it reads its attributes
when it comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..clock import Clock, from_epoch_ms
from ..enos import TopicKind
from ..errors import DeviceOffline, InvalidArgument, ModelError, ValidationError
from ..iothub import IotHub
from ..model import ThingModel, check_identifier
from ..registry import Registry
from ..store import AttributeRow, TimeSeriesStore
from ..tap import AttributesChanged, TagsChanged, Tap, TapCallback
from ._history import CONFIG_FILE, ConfigChange, ConfigHistory, ConfigKind, ConfigSource

__all__ = ["ConfigResult", "ConfigService", "check_change"]

log = logging.getLogger(__name__)

ModelOf = Callable[[str, str], ThingModel | None]
"""``model_of(product_key, device_key)``: the device's thing model (None: none; NotFound for an
unknown device)."""

_PARAMS = {
    (ConfigKind.ATTRIBUTE, False): "attributes",
    (ConfigKind.ATTRIBUTE, True): "deletedAttributes",
    (ConfigKind.TAG, False): "tags",
    (ConfigKind.TAG, True): "deletedTags",
}


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """What one cloud change did: the ``changed`` keys (set, or deleted that existed) and
    whether it was ``pushed`` to the device's live connection."""

    product_key: str
    device_key: str
    changed: tuple[str, ...]
    pushed: bool


def check_change(
    model: ThingModel | None,
    kind: ConfigKind,
    values: Mapping[str, Any] | Iterable[str],
    *,
    delete: bool,
    device: str,
) -> dict[str, Any] | list[str]:
    """Check a change of ``device`` (``"pk/dk"``, for messages) against its thing model and
    protocol reference 7.4; returns the normalised values (set) or keys (delete). Raises
    :class:`~enos_lab.errors.ValidationError` (EnOS 1204) for an attribute the model refuses,
    :class:`~enos_lab.errors.InvalidArgument` for anything else, naming the value."""
    what = "attribute" if kind is ConfigKind.ATTRIBUTE else "tag"
    if delete:
        if isinstance(values, str | bytes | Mapping):
            raise InvalidArgument(
                f"device {device}: expected a list of {what} keys, got {values!r}"
            )
        keys = list(values)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise InvalidArgument(f"device {device}: expected {what} keys, got {values!r}")
        if (
            kind is ConfigKind.ATTRIBUTE
            and model is not None
            and not model.allow_additional_attributes
        ):
            for key in keys:
                if key not in model.attributes:
                    raise ValidationError(
                        f"device {device}: model {model.model_id!r} has no attribute {key!r}"
                    )
        return keys
    if not isinstance(values, Mapping) or not values:
        raise InvalidArgument(f"device {device}: expected {what} values, got {values!r}")
    if kind is ConfigKind.TAG:
        tags: dict[str, str] = {}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise InvalidArgument(
                    f"device {device}: tag {key!r} must be text (or a number), got {value!r}"
                )
            tags[key] = str(value)
        return tags  # keys checked by the registry (protocol 7.4), naming the bad one
    if model is not None:
        try:
            checked = model.validate_attributes(dict(values))
        except ValidationError as exc:
            raise ValidationError(f"device {device}: {exc}", exc.code) from None
    else:
        checked = dict(values)
    for key in checked:
        try:
            check_identifier(key, f"device {device}: attribute id")
        except ModelError as exc:
            raise ValidationError(str(exc)) from None
    return checked


class ConfigService:
    """Cloud changes of attributes and tags, and the history of every change (see the module
    docstring). Build it with :meth:`start`; call :meth:`change` on the lab's loop; read
    :attr:`history` from any thread."""

    def __init__(  # noqa: PLR0917 - the parts it works with
        self,
        history: ConfigHistory,
        registry: Registry,
        store: TimeSeriesStore,
        iothub: IotHub,
        tap: Tap,
        clock: Clock,
        model_of: ModelOf,
    ) -> None:
        self.history = history
        self._registry = registry
        self._store = store
        self._iothub = iothub
        self._tap = tap
        self._clock = clock
        self.model_of = model_of
        self._callback: TapCallback | None = tap.add_callback(
            self._on_event, kinds=(AttributesChanged, TagsChanged)
        )

    @classmethod
    async def start(  # noqa: PLR0917 - the parts it works with
        cls,
        data_dir: Path,
        registry: Registry,
        store: TimeSeriesStore,
        iothub: IotHub,
        tap: Tap,
        clock: Clock,
        model_of: ModelOf,
    ) -> ConfigService:
        """Open the history in ``data_dir`` and listen on ``tap`` (on the loop)."""
        history = await asyncio.to_thread(ConfigHistory, data_dir / CONFIG_FILE, clock=clock)
        return cls(history, registry, store, iothub, tap, clock, model_of)

    async def stop(self) -> None:
        """Leave the tap and close the history."""
        if self._callback is not None:
            self._callback.cancel()
            self._callback = None
        await asyncio.to_thread(self.history.close)

    # -- changes from the devices -----------------------------------------------------------

    def _on_event(self, event: object) -> None:
        if not isinstance(event, AttributesChanged | TagsChanged) or event.source != "device":
            return
        kind = ConfigKind.ATTRIBUTE if isinstance(event, AttributesChanged) else ConfigKind.TAG
        changes = [
            ConfigChange(
                event.product_key,
                event.device_key,
                kind,
                key,
                event.previous.get(key),
                value,
                ConfigSource.DEVICE,
            )
            for key, value in event.values.items()
        ]
        changes.extend(
            ConfigChange(
                event.product_key,
                event.device_key,
                kind,
                key,
                event.previous.get(key),
                None,
                ConfigSource.DEVICE,
            )
            for key in event.deleted
        )
        try:
            self.history.record(changes, round(event.time.timestamp() * 1000))
        except Exception:  # the history never takes the device's request down
            log.exception("configuration history: could not record %r", event)

    # -- changes from the cloud -------------------------------------------------------------

    def registered(self, product_key: str, device_key: str, actor: str = "registration") -> int:
        """Record the attributes and tags a device was registered with (source cloud, not
        pushed); returns how many rows."""
        device = self._registry.get_device(product_key, device_key)
        changes = [
            ConfigChange(
                product_key, device_key, kind, key, None, value, ConfigSource.CLOUD, actor, False
            )
            for kind, values in (
                (ConfigKind.ATTRIBUTE, device.attributes),
                (ConfigKind.TAG, device.tags),
            )
            for key, value in values.items()
        ]
        return self.history.record(changes)

    async def change(
        self,
        product_key: str,
        device_key: str,
        kind: ConfigKind,
        values: Mapping[str, Any] | Iterable[str],
        *,
        delete: bool = False,
        actor: str | None = None,
    ) -> ConfigResult:
        """Check, keep, tell, push and record one cloud change (see the module docstring)."""
        keys = (product_key, device_key)
        name = f"{product_key}/{device_key}"
        model = self.model_of(*keys)  # NotFound for an unknown device
        checked = check_change(model, kind, values, delete=delete, device=name)
        device = self._registry.get_device(*keys)
        before = dict(device.attributes if kind is ConfigKind.ATTRIBUTE else device.tags)
        now = self._clock.time_ms()
        if delete:
            gone = [key for key in checked if key in before]
            new: dict[str, Any] = {}
            if gone:
                if kind is ConfigKind.ATTRIBUTE:
                    self._registry.delete_attributes(*keys, gone)
                else:
                    self._registry.delete_tags(*keys, gone)
        else:
            assert isinstance(checked, dict)
            gone, new = [], checked
            if kind is ConfigKind.ATTRIBUTE:
                self._registry.update_attributes(*keys, new)
            else:
                self._registry.update_tags(*keys, new)
        changed = [*new, *gone]
        if not changed:
            return ConfigResult(product_key, device_key, (), False)
        if kind is ConfigKind.ATTRIBUTE:
            rows = [AttributeRow(*keys, key, now, value) for key, value in new.items()]
            rows.extend(AttributeRow(*keys, key, now, None) for key in gone)
            await self._store.append_attributes_async(rows)
        self._tell(keys, kind, now, new, gone, {k: before[k] for k in changed if k in before})
        pushed = await self._push(keys, kind, new if not delete else gone, delete)
        self.history.record(
            [
                ConfigChange(
                    *keys,
                    kind,
                    key,
                    before.get(key),
                    new.get(key),
                    ConfigSource.CLOUD,
                    actor,
                    pushed,
                )
                for key in changed
            ],
            now,
        )
        return ConfigResult(product_key, device_key, tuple(changed), pushed)

    def _tell(  # noqa: PLR0917
        self,
        keys: tuple[str, str],
        kind: ConfigKind,
        now: int,
        new: Mapping[str, Any],
        gone: list[str],
        previous: Mapping[str, Any],
    ) -> None:
        event_kind = AttributesChanged if kind is ConfigKind.ATTRIBUTE else TagsChanged
        if not self._tap.wants(event_kind):
            return
        self._tap.emit(
            event_kind(
                *keys,
                from_epoch_ms(now),
                MappingProxyType(dict(new)),
                tuple(gone),
                ConfigSource.CLOUD.value,
                MappingProxyType(dict(previous)),
            )
        )

    async def _push(
        self,
        keys: tuple[str, str],
        kind: ConfigKind,
        values: Mapping[str, Any] | list[str],
        delete: bool,
    ) -> bool:
        """Deliver the change to the device's live connection; whether it was delivered."""
        if not self._iothub.is_online(*keys):
            return False
        params = {_PARAMS[(kind, delete)]: values}
        try:
            await self._iothub.send_command(
                *keys, TopicKind.ATTRIBUTE_SET, params, wait=False, timeout=None
            )
        except DeviceOffline:
            return False
        return True

    def delete_device(self, product_key: str, device_key: str) -> int:
        """Delete the device's configuration history (a purged deletion); how many rows."""
        return self.history.delete_device(product_key, device_key)
