"""Provisioning from the facade: thing models, products, devices and credentials."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InvalidArgument, NotFound
from ..iothub import IotHub, RawCodec
from ..model import ThingModel, load_model, model_from_json
from ..model import model_to_json as _model_to_json
from ..registry import BulkResult, DataFormat, Device, NodeType, Product, TopicPermission
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["Provisioning"]

log = logging.getLogger("enos_lab.lab")


class Provisioning(LabCore):
    """Thing models, products, devices and credentials (mixed into :class:`~enos_lab.lab.Lab`)."""

    # -- thing models ------------------------------------------------------------------------

    def add_model(self, model: ThingModel | Mapping[str, Any] | str | Path) -> ThingModel:
        """Add a user thing model to :attr:`models` and keep it in the registry database.

        ``model`` is a :class:`~enos_lab.model.ThingModel`, EnOS REST ``ThingModel`` JSON (a
        mapping, or JSON text starting with ``{``), or the path of such a JSON file. A child
        model (``parentModelId``) may inherit from a library model or an earlier user model.
        Returns the model as stored in the catalog (resolved, with inherited elements).

        Raises :class:`~enos_lab.errors.AlreadyExists` for a ``model_id`` that is taken
        (library models included) and :class:`~enos_lab.errors.ModelError` for a bad document.
        """
        declared = _parse_model(model)
        registry, catalog = self.registry, self.models
        with self._models_lock:
            resolved = catalog.add(declared)
            try:
                registry.save_model(_model_to_json(declared))
            except BaseException:
                catalog.remove(declared.model_id)
                raise
        log.info("thing model %r added", declared.model_id)
        return resolved

    aadd_model = coroutine_form_of(add_model)

    # -- products ----------------------------------------------------------------------------

    def create_product(
        self,
        name: str,
        *,
        model_id: str | None = None,
        product_key: str | None = None,
        node_type: NodeType | str = NodeType.DIRECT,
        dynamic_activation: bool = False,
        data_format: DataFormat | str = DataFormat.JSON,
        certificate_required: bool = False,
        description: str = "",
        custom_topics: Mapping[str, TopicPermission | str] | None = None,
        codec: RawCodec | None = None,
    ) -> Product:
        """Create a product: a class of devices sharing a thing model and connection settings.

        ``model_id`` must be in :attr:`models` (:class:`~enos_lab.errors.NotFound` otherwise);
        a product without a model accepts any measurepoints (passthrough). ``product_key`` and
        the product secret are generated unless a key is given. ``node_type`` is ``"direct"``,
        ``"gateway"`` or ``"sub_device"``; ``dynamic_activation=True`` lets devices log in with
        the product secret and receive their device secret (secret-per-product).
        ``data_format="custom"`` with a ``codec`` (see :class:`~enos_lab.iothub.RawCodec`)
        translates raw payloads; the codec lives as long as this run of the lab (register it
        again with :meth:`register_codec` after a restart). ``custom_topics`` maps templates such
        as ``/{productKey}/{deviceKey}/user/update`` to ``"publish"``, ``"subscribe"`` or
        ``"both"``.
        """
        if model_id is not None and model_id not in self.models:
            raise NotFound(
                f"thing model {model_id!r} not found; add it with lab.add_model() first "
                f"(known: {', '.join(self.models.ids())})"
            )
        if codec is not None:
            self._require_iothub("a product codec")
            if _value(data_format) != DataFormat.CUSTOM.value:
                raise InvalidArgument(
                    f"a codec needs data_format='custom', got data_format={_value(data_format)!r}"
                )
        product = self.registry.create_product(
            name,
            product_key=product_key,
            model_id=model_id,
            node_type=node_type,
            dynamic_activation=dynamic_activation,
            data_format=data_format,
            certificate_required=certificate_required,
            description=description,
            custom_topics=custom_topics,
        )
        if codec is not None:
            self.register_codec(product.product_key, codec)
        return product

    acreate_product = coroutine_form_of(create_product)

    def register_codec(self, product_key: str, codec: RawCodec) -> None:
        """Use ``codec`` for the raw payloads of the (custom data format) product ``product_key``.

        Raises :class:`~enos_lab.errors.NotFound` for an unknown product.
        """
        iothub = self._require_iothub("a product codec")
        self.registry.get_product(product_key)
        self.run(plain_call(iothub.register_codec, product_key, codec))

    aregister_codec = coroutine_form_of(register_codec)

    def product(self, product_key: str) -> Product:
        """The product ``product_key``; :class:`~enos_lab.errors.NotFound` if there is none."""
        return self.registry.get_product(product_key)

    aproduct = coroutine_form_of(product)

    def products(self) -> pd.DataFrame:
        """Every product, one row each, in creation order.

        Columns: ``product_key, name, model_id, node_type, dynamic_activation, data_format,
        certificate_required, description, custom_topics, created_at`` (tz-aware UTC),
        ``devices`` (how many are registered). Product secrets are left out; see
        :meth:`export_credentials` or :meth:`product`.
        """
        registry = self.registry
        counts: dict[str, int] = {}
        for device in registry.devices():
            counts[device.product_key] = counts.get(device.product_key, 0) + 1
        rows = [
            {
                "product_key": p.product_key,
                "name": p.name,
                "model_id": p.model_id,
                "node_type": p.node_type.value,
                "dynamic_activation": p.dynamic_activation,
                "data_format": p.data_format.value,
                "certificate_required": p.certificate_required,
                "description": p.description,
                "custom_topics": {t: perm.value for t, perm in p.custom_topics.items()},
                "created_at": p.created_at,
                "devices": counts.get(p.product_key, 0),
            }
            for p in registry.products()
        ]
        frame = pd.DataFrame(rows, columns=list(_PRODUCT_COLUMNS))
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        frame["devices"] = frame["devices"].astype("int64")
        return frame

    aproducts = coroutine_form_of(products)

    # -- devices -----------------------------------------------------------------------------

    def register_device(
        self,
        product_key: str,
        *,
        device_key: str | None = None,
        name: str | None = None,
        name_i18n: Mapping[str, str] | None = None,
        description: str = "",
        timezone: str = "+00:00",
        tags: Mapping[str, object] | None = None,
        attributes: Mapping[str, Any] | None = None,
        device_secret: str | None = None,
    ) -> Device:
        """Register a device of ``product_key`` (see :meth:`Registry.register_device`).

        ``timezone`` is an offset such as ``"+08:00"``; the key and secret are generated unless
        given. The device starts INACTIVE and becomes ONLINE on its first login. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown product and
        :class:`~enos_lab.errors.AlreadyExists` for a taken ``device_key``. The ``tags`` and
        ``attributes`` it is registered with start its :meth:`config_history` (source
        ``"cloud"``, actor ``"registration"``).
        """
        device = self.registry.register_device(
            product_key,
            device_key=device_key,
            name=name,
            name_i18n=name_i18n,
            description=description,
            timezone=timezone,
            tags=tags,
            attributes=attributes,
            device_secret=device_secret,
        )
        config = self._running().config
        if config is not None and (device.attributes or device.tags):  # in the history
            config.registered(device.product_key, device.device_key)
        return device

    aregister_device = coroutine_form_of(register_device)

    def register_devices(
        self,
        rows: pd.DataFrame | Iterable[Mapping[str, Any]] | str | Path,
        *,
        progress: bool = True,
    ) -> BulkResult:
        """Register many devices (a DataFrame, mappings, or a CSV file path), one per row.

        Columns are the keyword arguments of :meth:`register_device` plus ``product_key``;
        ``tags`` and ``attributes`` may be JSON text. A bad row is reported in
        ``result.errors`` and the others are still registered (``result.registered`` has the
        new keys and secrets). ``progress`` shows a progress bar.
        """
        result = self.registry.register_devices(rows, progress=progress)
        config = self._running().config
        if config is not None:  # the tags and attributes they came with, in the history
            for pk, dk in zip(
                result.registered["product_key"], result.registered["device_key"], strict=True
            ):
                config.registered(pk, dk)
        return result

    aregister_devices = coroutine_form_of(register_devices)

    def device(self, product_key: str, device_key: str) -> Device:
        """The device record (state, times, secret); :class:`~enos_lab.errors.NotFound` if
        there is none."""
        return self.registry.get_device(product_key, device_key)

    adevice = coroutine_form_of(device)

    def devices(self, product_key: str | None = None) -> pd.DataFrame:
        """Every device (of one product if given), one row each, in registration order.

        Columns: ``product_key, device_key, asset_id, name, state`` (inactive, online, offline,
        disabled), ``enabled, online, timezone, gateway_product_key, gateway_device_key,
        created_at, activated_at, last_online_at, last_offline_at`` (tz-aware UTC), ``tags,
        attributes``. Raises :class:`~enos_lab.errors.NotFound` for an unknown product.
        """
        return self.registry.devices_frame(product_key)

    adevices = coroutine_form_of(devices)

    def enable_device(self, product_key: str, device_key: str) -> Device:
        """Allow a disabled device to log in again; returns its record."""
        iothub = self._running().iothub
        if iothub is None:
            return self.registry.enable_device(product_key, device_key)
        return self.run(iothub.enable_device(product_key, device_key))

    aenable_device = coroutine_form_of(enable_device)

    def disable_device(
        self, product_key: str, device_key: str, *, reason: str | None = None
    ) -> Device:
        """Refuse the device's logins and close its live connection (presence reason
        ``disabled``); a logged-in sub-device is logged out of its gateway. ``reason`` (e.g.
        ``"stolen"``) is added to the reason of each login refused until the device is enabled
        again (:meth:`refused_logins`). Returns its record.
        """
        iothub = self._running().iothub
        if iothub is None:
            return self.registry.disable_device(product_key, device_key, reason)
        return self.run(self._disable(iothub, product_key, device_key, reason))

    adisable_device = coroutine_form_of(disable_device)

    def delete_device(self, product_key: str, device_key: str, *, purge: bool = False) -> Device:
        """Delete the device ("logout"): close its connection, log it out of its gateway (which
        gets ``combine/delete``, protocol reference 8.4), remove its credentials and its place
        in the topology (a deleted gateway's sub-devices are detached), and return its last
        record (state ``deleted``).

        ``purge=False`` (EnOS's ``deleteDevice``: it takes only the device, its asset id or
        product key + device key, and leaves the stored time series alone; EnOS removes them
        separately with a TSDB data deletion job) keeps the device's history: measurepoints,
        events and attribute changes in the store, alerts in ``alerts.sqlite3``. The store
        keys data by product key and device key, so that history shows again under a device
        registered later with the same key. ``purge=True`` also deletes that history, in one
        store transaction (:meth:`~enos_lab.store.TimeSeriesStore.delete_device`), the
        device's alert records (active ones included, with the alert engine's state on it), its
        command records and cached commands (``commands.sqlite3``), its configuration history
        (``config.sqlite3``) and its firmware upgrade rows (``ota.sqlite3``). Either way a
        firmware upgrade in progress ends ``aborted`` and the firmware version it reported is
        forgotten.

        The key can be registered again: a new device with a fresh secret (how EnOS
        re-activates a device). Raises :class:`~enos_lab.errors.NotFound` for an unknown
        device.
        """
        services = self._running()
        iothub = services.iothub
        if iothub is None:
            device = self.registry.delete_device(product_key, device_key)
            if purge:
                self.run(self._purge_history(product_key, device_key))
            return device
        return self.run(self._delete(iothub, product_key, device_key, purge))

    adelete_device = coroutine_form_of(delete_device)

    def rotate_device_secret(
        self, product_key: str, device_key: str, *, disconnect: bool = True
    ) -> str:
        """Give the device a new secret and return it; logins signed with the old secret are
        refused from then on (:meth:`refused_logins`: "signature does not match the device
        secret").

        ``disconnect=True`` closes the device's live connection (a sub-device is logged out of
        its gateway; presence reason ``secret rotated``, its sessions forgotten), so that it
        must log in again with the new secret; with ``False`` a connection already
        authenticated stays until it ends. Raises :class:`~enos_lab.errors.NotFound` for an
        unknown device.
        """
        iothub = self._running().iothub
        if iothub is None:
            return self.registry.rotate_device_secret(product_key, device_key).device_secret
        return self.run(self._rotate_device(iothub, product_key, device_key, disconnect))

    arotate_device_secret = coroutine_form_of(rotate_device_secret)

    def rotate_product_secret(self, product_key: str, *, disconnect: bool = True) -> str:
        """Give the product a new secret and return it: dynamic activation (secure mode 3) and
        integration channels (secure mode 4) must sign with it from then on; devices that log
        in with their own device secret are not affected.

        ``disconnect=True`` closes the live connections that logged in with the old product
        secret (activation sessions and integration channels). Raises
        :class:`~enos_lab.errors.NotFound` for an unknown product.
        """
        iothub = self._running().iothub
        if iothub is None:
            return self.registry.rotate_product_secret(product_key).product_secret
        product = self.run(iothub.rotate_product_secret(product_key, disconnect=disconnect))
        return product.product_secret

    arotate_product_secret = coroutine_form_of(rotate_product_secret)

    def export_credentials(self, product_key: str | None = None) -> pd.DataFrame:
        """What devices need to connect, one row per device (of one product if given).

        Columns: ``product_key, device_key, device_secret, product_secret, asset_id,
        dynamic_activation``. Keep the result secret.
        """
        return self.registry.export_credentials(product_key)

    aexport_credentials = coroutine_form_of(export_credentials)

    async def _disable(
        self, iothub: IotHub, product_key: str, device_key: str, reason: str | None = None
    ) -> Device:
        await iothub.disable_device(product_key, device_key, reason)
        await self._until_offline(product_key, device_key)
        return await asyncio.to_thread(self.registry.get_device, product_key, device_key)

    async def _rotate_device(
        self, iothub: IotHub, product_key: str, device_key: str, disconnect: bool
    ) -> str:
        device = await iothub.rotate_device_secret(product_key, device_key, disconnect=disconnect)
        if disconnect:
            await self._until_offline(product_key, device_key)
        return device.device_secret

    async def _delete(
        self, iothub: IotHub, product_key: str, device_key: str, purge: bool
    ) -> Device:
        device = await iothub.delete_device(product_key, device_key)
        await self._until_offline(product_key, device_key)
        ota = self._running().ota
        if ota is not None:  # its upgrade in progress ends; its firmware version is forgotten
            ota.device_deleted(product_key, device_key, purge=purge)
        if purge:
            await self._purge_history(product_key, device_key)
        return device

    async def _purge_history(self, product_key: str, device_key: str) -> None:
        """Delete the (already deleted) device's stored data and alert records (on the loop)."""
        services = self._running()
        counts: dict[str, int] = {}
        if services.store is not None:
            counts = await services.store.delete_device_async(product_key, device_key)
        alerts = services.alerts
        if alerts is not None:
            if alerts.engine is not None:
                alerts.engine.forget_device(product_key, device_key)
            counts["alerts"] = await asyncio.to_thread(
                alerts.records.delete_device, product_key, device_key
            )
        if services.control is not None:  # its cached commands and its command records
            counts["commands"] = services.control.delete_device(product_key, device_key)
        if services.config is not None:
            counts["config"] = services.config.delete_device(product_key, device_key)
        log.info("history of %s/%s purged: %s", product_key, device_key, counts)

    async def _until_offline(self, product_key: str, device_key: str) -> None:
        """Wait (bounded) until the hub has closed the device's connection, so that the facade
        returns with the presence log and the device record already saying "offline"."""
        if not await self._running().until_offline(product_key, device_key, _OFFLINE_WAIT):
            log.warning(
                "device %s/%s still online %.1f s after it was dropped",
                product_key,
                device_key,
                _OFFLINE_WAIT,
            )


_PRODUCT_COLUMNS = (
    "product_key",
    "name",
    "model_id",
    "node_type",
    "dynamic_activation",
    "data_format",
    "certificate_required",
    "description",
    "custom_topics",
    "created_at",
    "devices",
)
_OFFLINE_WAIT = 5.0  # [s] how long disable/delete/rotate wait for the hub to close the connection


def _value(member: object) -> object:
    return getattr(member, "value", member)


def _parse_model(model: ThingModel | Mapping[str, Any] | str | Path) -> ThingModel:
    if isinstance(model, ThingModel):
        return model
    if isinstance(model, Mapping):
        return model_from_json(dict(model), origin="thing model JSON")
    if isinstance(model, Path):
        return load_model(model)
    if isinstance(model, str):
        if model.lstrip().startswith("{"):
            return model_from_json(model, origin="thing model JSON text")
        return load_model(model)
    raise InvalidArgument(
        "a thing model must be a ThingModel, a REST JSON mapping, JSON text or a file path, "
        f"got {type(model).__name__}"
    )
