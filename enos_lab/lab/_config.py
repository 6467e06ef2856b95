"""Configuration from the facade: attributes and tags set from the cloud, one device or many,
and the history of every change.

:meth:`Configuration.set_attributes`, :meth:`~Configuration.delete_attributes`,
:meth:`~Configuration.set_tags` and :meth:`~Configuration.delete_tags` check a change against
the device's thing model (attribute ids and types) and protocol reference 7.4 (tag keys), keep
it in the registry (and the store, for attributes), tell the tap (source ``"cloud"``), push it
to the device when it is online (``thing.attribute.set``, a topic of the lab's own, see
:mod:`enos_lab.control`) and record it. :meth:`~Configuration.config_history` shows every
change, from either side. :meth:`~Configuration.bulk_set_attributes` and
:meth:`~Configuration.bulk_set_tags` change many devices at once, chosen by product, tags or
list, with a progress bar and one result row per device; a failing device does not stop the
others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ..control import ConfigKind, ConfigResult, ConfigService, ConfigSource
from ..errors import EnosLabError, InvalidArgument, NotFound
from ..store import TimeLike
from ._core import LabCore, coroutine_form_of

__all__ = ["CONFIG_BULK_COLUMNS", "Configuration"]

CONFIG_BULK_COLUMNS = ("product_key", "device_key", "ok", "error", "pushed")
"""Columns of the result of :meth:`Configuration.bulk_set_attributes` (``error``: the
message of what failed, ``None`` when ``ok``)."""


class Configuration(LabCore):
    """Attributes and tags from the cloud, and their history (mixed into
    :class:`~enos_lab.lab.Lab`)."""

    def _config_service(self, what: str) -> ConfigService:
        service = self._running().config
        if service is None:
            raise InvalidArgument(
                f"{what} needs the IoT hub services, but this lab is anonymous (a plain MQTT "
                "broker); create it with anonymous=False"
            )
        return service

    def _change(
        self,
        what: str,
        product_key: str,
        device_key: str,
        kind: ConfigKind,
        values: Mapping[str, Any] | Iterable[str],
        *,
        delete: bool,
        actor: str | None,
    ) -> ConfigResult:
        service = self._config_service(what)
        if actor is not None and not isinstance(actor, str):
            raise InvalidArgument(f"{what}: actor must be text or None, got {actor!r}")
        if delete and not isinstance(values, str | bytes | Mapping):
            values = list(values)  # an iterator is read here, once
        return self.run(
            service.change(product_key, device_key, kind, values, delete=delete, actor=actor)
        )

    def set_attributes(
        self,
        product_key: str,
        device_key: str,
        values: Mapping[str, Any],
        *,
        actor: str | None = None,
    ) -> bool:
        """Set attributes of a device from the cloud and return whether the change was pushed
        to it (it was online).

        ``values`` (``{attribute_id: value}``) are checked against the device's thing model
        (:class:`~enos_lab.errors.ValidationError`, EnOS 1204, naming the attribute: unknown
        ids unless the model allows additional attributes, values of the wrong type; a
        product without a model takes EnOS identifiers with JSON values). They are kept in the
        registry and the store, told on the tap (:class:`~enos_lab.tap.AttributesChanged`,
        source ``"cloud"``), pushed to the device if it is online (``thing.attribute.set``:
        the lab's device SDK applies it; an official SDK device ignores it and reads its
        attributes with ``thing.attribute.query``) and recorded in :meth:`config_history`
        with ``actor`` (who made the change, free text). Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device.
        """
        return self._change(
            "set_attributes",
            product_key,
            device_key,
            ConfigKind.ATTRIBUTE,
            values,
            delete=False,
            actor=actor,
        ).pushed

    def delete_attributes(
        self,
        product_key: str,
        device_key: str,
        attribute_ids: Iterable[str],
        *,
        actor: str | None = None,
    ) -> bool:
        """Delete attributes of a device from the cloud; ids the model lacks are refused
        (:class:`~enos_lab.errors.ValidationError`), ids the device has no value for are
        ignored. Kept, told, pushed and recorded as :meth:`set_attributes` does; returns
        whether the change was pushed (False too when nothing was deleted)."""
        return self._change(
            "delete_attributes",
            product_key,
            device_key,
            ConfigKind.ATTRIBUTE,
            attribute_ids,
            delete=True,
            actor=actor,
        ).pushed

    def set_tags(
        self,
        product_key: str,
        device_key: str,
        tags: Mapping[str, Any],
        *,
        actor: str | None = None,
    ) -> bool:
        """Set tags of a device from the cloud (``{tag_key: value}``; keys of 1-100 letters,
        digits and ``_`` not starting with a digit, values text or numbers kept as text:
        protocol reference 7.4, :class:`~enos_lab.errors.InvalidArgument` naming the bad one).
        Kept in the registry, told (:class:`~enos_lab.tap.TagsChanged`, source ``"cloud"``),
        pushed and recorded as :meth:`set_attributes` does; returns whether it was pushed."""
        return self._change(
            "set_tags", product_key, device_key, ConfigKind.TAG, tags, delete=False, actor=actor
        ).pushed

    def delete_tags(
        self,
        product_key: str,
        device_key: str,
        tag_keys: Iterable[str],
        *,
        actor: str | None = None,
    ) -> bool:
        """Delete tags of a device from the cloud (keys it lacks are ignored); as
        :meth:`set_tags`, returns whether the change was pushed."""
        return self._change(
            "delete_tags",
            product_key,
            device_key,
            ConfigKind.TAG,
            tag_keys,
            delete=True,
            actor=actor,
        ).pushed

    def attributes(self, product_key: str, device_key: str) -> dict[str, Any]:
        """The device's attributes now (``{attribute_id: value}``, a copy);
        :class:`~enos_lab.errors.NotFound` for an unknown device."""
        return dict(self.registry.get_device(product_key, device_key).attributes)

    def tags(self, product_key: str, device_key: str) -> dict[str, str]:
        """The device's tags now (``{tag_key: value}``, a copy);
        :class:`~enos_lab.errors.NotFound` for an unknown device."""
        return dict(self.registry.get_device(product_key, device_key).tags)

    def config_history(
        self,
        product_key: str | None = None,
        device_key: str | None = None,
        *,
        key: str | None = None,
        source: ConfigSource | str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> pd.DataFrame:
        """Every attribute and tag change of a product's / a device's devices (``None``: all)
        in ``[start, end)``, optionally of one ``key`` and one ``source`` (``"cloud"``: set
        through the lab, registrations included; ``"device"``: reported by the device),
        oldest first. Columns :data:`~enos_lab.control.CONFIG_COLUMNS`: ``time`` (tz-aware
        UTC), ``product_key, device_key, kind`` (attribute, tag), ``key, old_value,
        new_value`` (``None``: none before / deleted), ``source, actor`` (who, if known) and
        ``pushed`` (cloud changes: whether the device's connection got it). Kept across
        restarts (``config.sqlite3``, the last 30 days, at most 100,000 changes)."""
        return self._config_service("config_history").history.frame(
            product_key, device_key, key=key, source=source, start=start, end=end
        )

    # -- many devices ------------------------------------------------------------------------

    def _targets(
        self,
        product_key: str | None,
        tags: Mapping[str, Any] | None,
        device_keys: Iterable[str | tuple[str, str]] | None,
    ) -> list[tuple[str, str]]:
        """The devices a bulk change goes to (registration order); refused when empty."""
        if product_key is None and tags is None and device_keys is None:
            raise InvalidArgument(
                "a bulk change needs targets: product_key, tags and/or device_keys"
            )
        if tags is not None and (not isinstance(tags, Mapping) or not tags):
            raise InvalidArgument(f"tags must be a non-empty {{key: value}} filter, got {tags!r}")
        if device_keys is not None:
            if isinstance(device_keys, str):
                raise InvalidArgument(
                    f"device_keys must be a list of device keys, got {device_keys!r}"
                )
            targets: list[tuple[str, str]] = []
            for entry in device_keys:
                if isinstance(entry, str):
                    if product_key is None:
                        raise InvalidArgument(
                            f"device key {entry!r} needs product_key= (or give "
                            "(product_key, device_key) pairs)"
                        )
                    targets.append((product_key, entry))
                elif isinstance(entry, tuple | list) and len(entry) == 2:
                    targets.append((str(entry[0]), str(entry[1])))
                else:
                    raise InvalidArgument(f"device_keys: expected a device key, got {entry!r}")
            if product_key is not None:
                targets = [t for t in targets if t[0] == product_key]
            if tags is not None:
                wanted = {str(k): str(v) for k, v in tags.items()}
                kept = []
                for keys in targets:
                    try:
                        device_tags = self.registry.get_device(*keys).tags
                    except NotFound:
                        kept.append(keys)  # reported as failing in the results
                        continue
                    if all(device_tags.get(k) == v for k, v in wanted.items()):
                        kept.append(keys)
                targets = kept
        else:
            wanted = {} if tags is None else {str(k): str(v) for k, v in tags.items()}
            targets = [
                (device.product_key, device.device_key)
                for device in self.registry.devices(product_key)
                if all(device.tags.get(k) == v for k, v in wanted.items())
            ]
        if not targets:
            raise NotFound(
                f"no device matches the bulk change's targets (product_key={product_key!r}, "
                f"tags={dict(tags) if tags else None!r}, device_keys given: "
                f"{device_keys is not None})"
            )
        return list(dict.fromkeys(targets))

    def _bulk(  # noqa: PLR0917
        self,
        what: str,
        kind: ConfigKind,
        values: Mapping[str, Any],
        product_key: str | None,
        tags: Mapping[str, Any] | None,
        device_keys: Iterable[str | tuple[str, str]] | None,
        progress: bool,
        actor: str | None,
    ) -> pd.DataFrame:
        if not isinstance(values, Mapping) or not values:
            raise InvalidArgument(f"{what}: expected values to set, got {values!r}")
        service = self._config_service(what)
        targets = self._targets(product_key, tags, device_keys)
        rows: list[tuple[str, str, bool, str | None, bool]] = []
        # no tqdm object at all without a bar: tqdm starts its monitor thread with any
        shown = tqdm(targets, unit="device", desc=what) if progress else targets
        for keys in shown:
            try:
                result = self.run(service.change(keys[0], keys[1], kind, dict(values), actor=actor))
            except EnosLabError as exc:
                rows.append((*keys, False, f"{type(exc).__name__}: {exc}", False))
            else:
                rows.append((*keys, True, None, result.pushed))
        frame = pd.DataFrame(rows, columns=list(CONFIG_BULK_COLUMNS), dtype=object)
        frame["ok"] = frame["ok"].astype(bool)
        frame["pushed"] = frame["pushed"].astype(bool)
        return frame

    def bulk_set_attributes(
        self,
        values: Mapping[str, Any],
        *,
        product_key: str | None = None,
        tags: Mapping[str, Any] | None = None,
        device_keys: Sequence[str | tuple[str, str]] | None = None,
        progress: bool = True,
        actor: str | None = None,
    ) -> pd.DataFrame:
        """Set the same attributes on many devices, each as :meth:`set_attributes` does.

        Targets: the devices of ``product_key``, those whose tags include every pair of
        ``tags`` (``{key: value}``), the ``device_keys`` (keys of ``product_key``, or
        ``(product_key, device_key)`` pairs), or those that pass all the filters given. No
        target: :class:`~enos_lab.errors.NotFound`. ``progress`` shows a tqdm bar. A device
        that fails (its model refuses the values, ...) does not stop the others: returns one
        row per device, columns :data:`CONFIG_BULK_COLUMNS` (``product_key, device_key, ok, error,
        pushed``).
        """
        return self._bulk(
            "bulk_set_attributes",
            ConfigKind.ATTRIBUTE,
            values,
            product_key,
            tags,
            device_keys,
            progress,
            actor,
        )

    def bulk_set_tags(
        self,
        values: Mapping[str, Any],
        *,
        product_key: str | None = None,
        tags: Mapping[str, Any] | None = None,
        device_keys: Sequence[str | tuple[str, str]] | None = None,
        progress: bool = True,
        actor: str | None = None,
    ) -> pd.DataFrame:
        """Set the same tags (``values``) on many devices, each as :meth:`set_tags` does;
        targets (``tags`` is the filter), progress and results as
        :meth:`bulk_set_attributes`."""
        return self._bulk(
            "bulk_set_tags", ConfigKind.TAG, values, product_key, tags, device_keys, progress, actor
        )

    aset_attributes = coroutine_form_of(set_attributes)
    adelete_attributes = coroutine_form_of(delete_attributes)
    aset_tags = coroutine_form_of(set_tags)
    adelete_tags = coroutine_form_of(delete_tags)
    aattributes = coroutine_form_of(attributes)
    atags = coroutine_form_of(tags)
    aconfig_history = coroutine_form_of(config_history)
    abulk_set_attributes = coroutine_form_of(bulk_set_attributes)
    abulk_set_tags = coroutine_form_of(bulk_set_tags)
