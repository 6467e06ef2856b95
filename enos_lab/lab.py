"""The composition root: a :class:`Lab` owns the event loop thread and everything on it.

Theory of operation
-------------------
The hub and every long-running service run on one asyncio event loop in a background thread that
the lab starts and stops (:class:`~enos_lab._loop.LoopThread`). Notebook cells and scripts call
the synchronous, thread-safe facade
(``lab.start()``, ``lab.register_device(...)``, ``lab.stop()``); calls that touch the hub or the
IoT hub services schedule a coroutine on the lab's loop with
:func:`asyncio.run_coroutine_threadsafe` and wait for its result, while registry calls (SQLite,
thread-safe) run in the caller's thread. asyncio users get every operation as an ``a``-prefixed
coroutine (``await lab.astart()``, ``await lab.aregister_device(...)``) that waits without blocking
their own loop. Nothing here ever calls :func:`asyncio.run` inside a running loop, so the official
EnOS SDK (which blocks in ``connect()`` until CONNACK) works from a notebook cell.

What :meth:`Lab.start` builds, in the data directory (:class:`~enos_lab._services.Services`
starts them in order, and :meth:`Lab.stop` stops them in the reverse order, each part ending
its own work):

- the device registry (``registry.sqlite3``): products, devices, credentials, presence log and the
  user's thing models;
- the thing model catalog: the shipped library (:func:`enos_lab.model.load_library`) plus the
  user's models kept in the registry, so a restart keeps them;
- the time-series store (DuckDB);
- unless ``anonymous``: the EnOS IoT hub services (:class:`~enos_lab.iothub.IotHub`:
  authentication, access control, measurepoints into the store, commands), plugged into the MQTT
  hub as its authenticator and authoriser. ``anonymous=True`` makes a plain MQTT broker; the
  registry is still there to be filled.

The lab owns one device-data tap (:attr:`Lab.tap`, made with the lab and kept across restarts):
the IoT hub services report to it what they kept, and :meth:`Lab.subscribe` reads it from any
thread or event loop.

``Lab(data_dir=...)`` keeps everything in that directory; without one a temporary directory is
created by :meth:`Lab.start` and removed by :meth:`Lab.stop`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ipaddress
import logging
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import pandas as pd

from ._files import private_dir, report_open_dir
from ._loop import LoopThread
from ._services import REGISTRY_FILE, Services
from .clock import Clock
from .enos import Reply, TopicKind
from .errors import ClosedError, InvalidArgument, NotFound
from .hub import Hub, HubConfig, Listener, Message
from .iothub import IotHub, IotHubConfig, RawCodec, logins_frame
from .model import ModelCatalog, ThingModel, load_model, model_from_json
from .model import model_to_json as _model_to_json
from .mqtt import NO_PROPERTIES, Properties
from .registry import BulkResult, DataFormat, Device, NodeType, Product, Registry, TopicPermission
from .store import StoreConfig, TimeSeriesStore
from .tap import DEFAULT_MAXSIZE, Tap, TapSubscription

__all__ = ["DEFAULT_PORT", "REGISTRY_FILE", "Lab", "plain_tcp_warning"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 11883
"""The conventional EnOS MQTT port (plain TCP). [-]"""

DEFAULT_CONNACK_DELAY = 0.0
"""Delay before every CONNACK (``HubConfig.connack_delay``) of the lab's hub: none. The official
Python SDK starts its network loop before it waits for CONNACK and loses an answer that arrives
sooner (its ``connect()`` stalls 10 s, protocol reference 4.9); the IoT hub services delay the
CONNACK of logins shaped like that SDK's only (``IotHubConfig.python_sdk_connack_delay``). [s]"""

T = TypeVar("T")
P = ParamSpec("P")


def plain_tcp_warning(host: str) -> str | None:
    """The warning for a plain TCP listener on ``host``, or ``None`` for a loopback address.

    On any other address (all interfaces included: ``""``, ``0.0.0.0``, ``::``) devices log in
    over plain TCP from the network: their CONNECT and every message cross it unencrypted, and a
    captured CONNECT can be replayed (EnOS logins carry no freshness check).
    """
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name other than localhost, or "" (all interfaces)
    where = repr(host) if host else "all interfaces"
    return (
        f"the MQTT listener binds {where}, not loopback: devices on the network log in over "
        "plain TCP, so their logins and data cross the network unencrypted and a captured "
        "login can be replayed. Bind 127.0.0.1 unless devices on other machines must connect, "
        "and then only on a network you trust."
    )


def _coroutine_form(
    method: Callable[Concatenate[Lab, P], T],
) -> Callable[Concatenate[Lab, P], Coroutine[Any, Any, T]]:
    """The coroutine form of a facade method: the same call in a worker thread.

    The synchronous facade is thread-safe and never runs on the lab's loop thread, so running it
    in :func:`asyncio.to_thread` gives asyncio users every operation without blocking their loop.
    """

    async def coroutine_form(self: Lab, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(method, self, *args, **kwargs)

    coroutine_form.__name__ = coroutine_form.__qualname__ = "a" + method.__name__
    # help() and inspect show the parameters of the method, not (*args, **kwargs)
    coroutine_form.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    coroutine_form.__doc__ = (
        f"Coroutine form of :meth:`{method.__name__}` (runs it in a worker thread, so that the "
        "caller's event loop keeps running)."
    )
    return coroutine_form


class Lab:
    """A running laboratory: the hub on a background event loop, with a synchronous facade.

    Parameters
    ----------
    data_dir:
        Directory for everything the lab keeps (registry, thing models, time series); ``None``
        uses a temporary directory that :meth:`stop` removes.
    host:
        Address the MQTT listener binds. Loopback by default.
    port:
        TCP port of the MQTT listener; ``0`` picks a free one (read it back from :attr:`port`).
        Defaults to the conventional EnOS port 11883.
    anonymous:
        ``True`` turns the hub into a plain MQTT broker that accepts every client without
        authentication and has no IoT hub services (the registry is still available). Insecure:
        for generic MQTT tooling and conformance tests only.
    hub_config:
        Advanced hub settings; ``anonymous`` above overrides its ``anonymous`` field. Default:
        :class:`~enos_lab.hub.HubConfig` without CONNACK delay (``DEFAULT_CONNACK_DELAY``); the
        IoT hub services delay the CONNACK of Python-SDK-shaped logins only (see
        ``IotHubConfig.python_sdk_connack_delay``).
    clock:
        Time source of the registry, the store and the IoT hub services (default: the system
        clock); a :class:`~enos_lab.clock.SimulatedClock` makes runs deterministic.
    rng:
        Random source for generated keys and secrets (default: the OS's secure source);
        ``random.Random(seed)`` makes tutorials reproducible. Never use a seeded source for
        real credentials.
    iothub_config:
        Settings of the IoT hub services (activation timing, limits, command timeout).
    store_config:
        Settings of the time-series store (default :class:`~enos_lab.store.StoreConfig`):
        among them DuckDB's memory limit (default 256 MiB, so that the lab's memory stays
        bounded however much data it stores), its threads and the group commit.

    Use it as a context manager (``with Lab(port=0) as lab: ...``) or call :meth:`start` and
    :meth:`stop`; from asyncio, ``async with Lab(port=0) as lab: ...``. Everything but the
    constructor needs a running lab (:class:`~enos_lab.errors.ClosedError` otherwise).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        anonymous: bool = False,
        hub_config: HubConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        iothub_config: IotHubConfig | None = None,
        store_config: StoreConfig | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be in 0..65535, got {port!r}")
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._host = host
        self._requested_port = port
        if hub_config is None:
            base = HubConfig(
                anonymous=anonymous, connack_delay=0.0 if anonymous else DEFAULT_CONNACK_DELAY
            )
        else:
            base = dataclasses.replace(hub_config, anonymous=anonymous)
        self._config = base
        self._clock = clock
        self._rng = rng
        self._iothub_config = iothub_config
        self._store_config = store_config
        self._lock = threading.Lock()
        self._models_lock = threading.Lock()
        self._loop_thread = LoopThread("enos-lab-loop")
        self._services: Services | None = None
        self._tap = Tap()  # one for the lab's lifetime: subscriptions outlive a restart
        self._data_dir: Path | None = None
        self._temporary_dir = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread, the registry, the store, the hub and its TCP listener.

        Returns the lab itself. Calling it on a running lab does nothing.
        """
        with self._lock:
            if self._services is not None:
                return self
            self._check_not_on_loop()
            loop_thread = self._loop_thread.start()
            try:
                self._prepare_data_dir()
                self._services = loop_thread.call(
                    Services.start(
                        self.data_dir,
                        self._host,
                        self._requested_port,
                        self._config,
                        self._iothub_config or IotHubConfig(),
                        self._store_config,
                        self._clock,
                        self._rng,
                        tap=self._tap,
                    )
                )
            except BaseException:
                loop_thread.stop()
                self._cleanup_data_dir()
                raise
        if self._config.anonymous:
            log.warning(
                "enos_lab hub is ANONYMOUS on %s: every MQTT client is accepted without "
                "authentication and may publish or subscribe to any topic",
                self.url,
            )
        exposed = plain_tcp_warning(self._host)
        if exposed is not None:
            log.warning("%s", exposed)
        return self

    def stop(self) -> None:
        """Stop the hub, the services and the loop thread; remove a temporary data directory.

        Idempotent. Devices still connected are disconnected; the measurepoints the hub has
        received are stored and answered first; commands still waiting for a reply fail with
        :class:`~enos_lab.errors.ClosedError`.
        """
        with self._lock:
            services = self._services
            if services is None:
                return
            self._check_not_on_loop()
            self._services = None
            try:
                self._loop_thread.call(services.stop())
            finally:
                self._loop_thread.stop()
                self._cleanup_data_dir()

    astart = _coroutine_form(start)

    astop = _coroutine_form(stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- properties ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the lab has been started and not stopped."""
        return self._services is not None

    @property
    def anonymous(self) -> bool:
        """Whether the hub is a plain MQTT broker without authentication or IoT hub services."""
        return self._config.anonymous

    @property
    def hub(self) -> Hub:
        """The hub. Its coroutines must run on the lab's loop (see :meth:`run`)."""
        part = self._running().hub
        assert part is not None  # set for as long as the lab runs
        return part

    @property
    def store(self) -> TimeSeriesStore:
        """The time-series store (DuckDB in the data directory); thread-safe, sync and async.

        Query device data as DataFrames with ``lab.store.query_points``, ``latest``,
        ``aggregate``, ``query_events``, ``query_attributes`` and ``query_alerts``: arguments
        in the order devices, ids (points, events, attributes), start, end, then keywords; no
        data gives an empty frame. Unless the lab is anonymous, a product or device the
        registry does not know (and the store holds no data of) raises
        :class:`~enos_lab.errors.NotFound`.
        """
        part = self._running().store
        assert part is not None  # set for as long as the lab runs
        return part

    @property
    def registry(self) -> Registry:
        """The device registry (SQLite in the data directory); thread-safe, synchronous."""
        part = self._running().registry
        assert part is not None  # set for as long as the lab runs
        return part

    @property
    def models(self) -> ModelCatalog:
        """The thing model catalog: the shipped library plus the models added with
        :meth:`add_model` (kept in the registry, so they survive a restart). Read it freely;
        add models only through :meth:`add_model`."""
        part = self._running().models
        assert part is not None  # set for as long as the lab runs
        return part

    @property
    def iothub(self) -> IotHub | None:
        """The EnOS IoT hub services, or ``None`` for an anonymous lab.

        Its coroutines must run on the lab's loop (see :meth:`run`).
        """
        return self._running().iothub

    # -- device data as it is kept (the tap) ---------------------------------------------------

    @property
    def tap(self) -> Tap:
        """The device-data tap (:class:`~enos_lab.tap.Tap`): what the IoT hub services kept, as
        typed events (points stored, events posted, attribute and tag changes, presence,
        logins, activations, command replies, OTA reports; see :mod:`enos_lab.tap`).

        It exists before :meth:`start` and is the same across restarts. Its callbacks
        (:meth:`~enos_lab.tap.Tap.add_callback`) run on the lab's loop and must be quick; from
        a notebook or another loop use :meth:`subscribe`. An anonymous lab emits nothing.
        """
        return self._tap

    def subscribe(
        self,
        kinds: type | Iterable[type] | None = None,
        *,
        product_key: str | None = None,
        device_key: str | None = None,
        point_id: str | None = None,
        maxsize: int = DEFAULT_MAXSIZE,
    ) -> TapSubscription:
        """Receive the tap's events that pass a filter, in any thread or event loop.

        ``kinds`` is an event class of :mod:`enos_lab.tap` (``PointStored``, ``PresenceChanged``,
        ...) or several (``None``: all); ``product_key``, ``device_key`` and ``point_id`` narrow
        it (a ``point_id`` selects ``PointStored`` events). Read the returned
        :class:`~enos_lab.tap.TapSubscription` with ``get(timeout=)``, ``drain()`` or ``for
        event in sub`` from a notebook thread, or ``async for event in sub`` on any event loop;
        close it (or use it as a context manager) to unsubscribe. It buffers at most
        ``maxsize`` events: a reader that falls behind loses the oldest, counted in
        ``sub.dropped``, and never slows the devices down. Works before :meth:`start` and
        across restarts.
        """
        return self._tap.subscribe(
            kinds=kinds,
            product_key=product_key,
            device_key=device_key,
            point_id=point_id,
            maxsize=maxsize,
        )

    @property
    def host(self) -> str:
        """Address the MQTT listener is bound to."""
        return self._running_listener().host

    @property
    def port(self) -> int:
        """TCP port of the MQTT listener (the real one when 0 was asked for)."""
        return self._running_listener().port

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the MQTT listener."""
        return self._running_listener().url

    @property
    def data_dir(self) -> Path:
        """Directory holding everything the lab keeps (temporary unless one was given)."""
        if self._data_dir is None:
            raise ClosedError("the lab is not running: call start() first")
        return self._data_dir

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

    aadd_model = _coroutine_form(add_model)

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

    acreate_product = _coroutine_form(create_product)

    def register_codec(self, product_key: str, codec: RawCodec) -> None:
        """Use ``codec`` for the raw payloads of the (custom data format) product ``product_key``.

        Raises :class:`~enos_lab.errors.NotFound` for an unknown product.
        """
        iothub = self._require_iothub("a product codec")
        self.registry.get_product(product_key)
        self.run(_call(iothub.register_codec, product_key, codec))

    aregister_codec = _coroutine_form(register_codec)

    def product(self, product_key: str) -> Product:
        """The product ``product_key``; :class:`~enos_lab.errors.NotFound` if there is none."""
        return self.registry.get_product(product_key)

    aproduct = _coroutine_form(product)

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

    aproducts = _coroutine_form(products)

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
        :class:`~enos_lab.errors.AlreadyExists` for a taken ``device_key``.
        """
        return self.registry.register_device(
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

    aregister_device = _coroutine_form(register_device)

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
        return self.registry.register_devices(rows, progress=progress)

    aregister_devices = _coroutine_form(register_devices)

    def device(self, product_key: str, device_key: str) -> Device:
        """The device record (state, times, secret); :class:`~enos_lab.errors.NotFound` if
        there is none."""
        return self.registry.get_device(product_key, device_key)

    adevice = _coroutine_form(device)

    def devices(self, product_key: str | None = None) -> pd.DataFrame:
        """Every device (of one product if given), one row each, in registration order.

        Columns: ``product_key, device_key, asset_id, name, state`` (inactive, online, offline,
        disabled), ``enabled, online, timezone, gateway_product_key, gateway_device_key,
        created_at, activated_at, last_online_at, last_offline_at`` (tz-aware UTC), ``tags,
        attributes``. Raises :class:`~enos_lab.errors.NotFound` for an unknown product.
        """
        return self.registry.devices_frame(product_key)

    adevices = _coroutine_form(devices)

    def enable_device(self, product_key: str, device_key: str) -> Device:
        """Allow a disabled device to log in again; returns its record."""
        iothub = self._running().iothub
        if iothub is None:
            return self.registry.enable_device(product_key, device_key)
        return self.run(iothub.enable_device(product_key, device_key))

    aenable_device = _coroutine_form(enable_device)

    def disable_device(self, product_key: str, device_key: str) -> Device:
        """Refuse the device's logins and close its live connection (presence reason
        ``disabled``); a logged-in sub-device is logged out of its gateway. Returns its record.
        """
        iothub = self._running().iothub
        if iothub is None:
            return self.registry.disable_device(product_key, device_key)
        return self.run(self._disable(iothub, product_key, device_key))

    adisable_device = _coroutine_form(disable_device)

    def delete_device(self, product_key: str, device_key: str) -> Device:
        """Delete the device ("logout"): close its connection and remove it from the registry.

        Returns its last record (state ``deleted``). The key can be registered again, which is
        how a device is re-activated.
        """
        iothub = self._running().iothub
        if iothub is None:
            return self.registry.delete_device(product_key, device_key)
        return self.run(self._delete(iothub, product_key, device_key))

    adelete_device = _coroutine_form(delete_device)

    def export_credentials(self, product_key: str | None = None) -> pd.DataFrame:
        """What devices need to connect, one row per device (of one product if given).

        Columns: ``product_key, device_key, device_secret, product_secret, asset_id,
        dynamic_activation``. Keep the result secret.
        """
        return self.registry.export_credentials(product_key)

    aexport_credentials = _coroutine_form(export_credentials)

    def presence(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> pd.DataFrame:
        """Online/offline transitions, oldest first, optionally for one product or device.

        Columns: ``time`` (tz-aware UTC), ``product_key, device_key, online`` (bool),
        ``reason`` (connected, disconnected, kicked, keep-alive timeout, gateway offline,
        logged out, disabled, deleted, taken over, hub restarted: the lab started and found the
        device still marked online by a hub that ended without closing its sessions, a crash).
        """
        rows = self.registry.presence_log(product_key, device_key)
        frame = pd.DataFrame(rows, columns=list(_PRESENCE_COLUMNS))
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
        frame["online"] = frame["online"].astype(bool)
        return frame

    apresence = _coroutine_form(presence)

    def refused_logins(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> pd.DataFrame:
        """The login log: the refused login attempts, oldest first (the latest
        ``IotHubConfig.login_log_size``), optionally of one product or device. Accepted logins
        are in :meth:`presence` ("connected").

        Columns: ``time`` (tz-aware UTC), ``source`` (the client's address), ``client_id,
        product_key, device_key``, ``reason`` (why the registry refused it, or ``blocked after N
        failed logins until T``) and ``blocked_until`` (tz-aware UTC: set on the failure that
        started a block and on the attempts it refused). Failed logins block a device's logins
        from that address only (4 within 120 s: 300 s, ``IotHubConfig``); :meth:`unblock_login`
        lifts a block.
        """
        iothub = self._require_iothub("the login log")
        rows = self.run(_call(iothub.login_log.rows, product_key, device_key))
        return logins_frame(rows)

    arefused_logins = _coroutine_form(refused_logins)

    def unblock_login(self, product_key: str, device_key: str, source: str | None = None) -> int:
        """Lift the login throttle's blocks of a device from ``source`` (the address as in
        :meth:`refused_logins`, e.g. ``"127.0.0.1"``; ``None``: every address) and forget its
        failed logins there, so that its next correct login is accepted at once. Returns how many
        blocks were lifted.
        """
        iothub = self._require_iothub("unblock_login")
        return self.run(_call(iothub.unblock_login, product_key, device_key, source))

    aunblock_login = _coroutine_form(unblock_login)

    def is_online(self, product_key: str, device_key: str) -> bool:
        """Whether the device has a live session on the hub now (always False when anonymous)."""
        iothub = self._running().iothub
        if iothub is None:
            self.registry.get_device(product_key, device_key)
            return False
        return self.run(_call(iothub.is_online, product_key, device_key))

    ais_online = _coroutine_form(is_online)

    # -- commands ----------------------------------------------------------------------------

    def send_command(
        self,
        product_key: str,
        device_key: str,
        kind: TopicKind,
        params: object,
        *,
        item_id: str = "",
        wait: bool = True,
        timeout: float | None = None,
    ) -> Reply | None:
        """Send a downstream command (service invocation, measurepoint set, ...) to a device.

        ``kind`` is the command's :class:`~enos_lab.enos.TopicKind` and ``item_id`` the service
        or similar id in its topic. The device needs no subscription. With ``wait=True`` the
        device's reply is returned (:class:`TimeoutError` after ``timeout`` [s], default the
        IoT hub's ``command_timeout``); with ``wait=False`` it returns ``None`` once sent.
        Raises :class:`~enos_lab.errors.NotFound` for an unknown device and a typed error when
        it is offline.
        """
        iothub = self._require_iothub("commands")
        return self.run(
            iothub.send_command(
                product_key, device_key, kind, params, item_id=item_id, wait=wait, timeout=timeout
            )
        )

    asend_command = _coroutine_form(send_command)

    # -- raw hub operations ------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> int:
        """Publish a message from the hub side; returns how many sessions it reached.

        ``payload`` may be ``str`` (sent as UTF-8).
        """
        message = _message(topic, payload, qos, retain, properties)
        return self.run(self.hub.publish(message))

    apublish = _coroutine_form(publish)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the lab's loop from another thread and return its result."""
        self._check_not_on_loop(coro)
        return self._running_loop().call(coro)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the lab's loop and await it from any other event loop."""
        self._check_not_on_loop(coro)
        return await asyncio.wrap_future(self._running_loop().submit(coro))

    # -- internals -------------------------------------------------------------------------

    def _running(self) -> Services:
        services = self._services
        if services is None:
            raise ClosedError("the lab is not running: call start() first")
        return services

    def _running_loop(self) -> LoopThread:
        self._running()
        return self._loop_thread

    def _check_not_on_loop(self, coro: Coroutine[Any, Any, Any] | None = None) -> None:
        if self._loop_thread.on_loop_thread():
            if coro is not None:
                coro.close()
            raise InvalidArgument(
                "the synchronous Lab facade was called from the lab's own event loop thread; "
                "await the hub's coroutines directly there instead"
            )

    def _require_iothub(self, what: str) -> IotHub:
        iothub = self._running().iothub
        if iothub is None:
            raise InvalidArgument(
                f"{what} need(s) the IoT hub services, but this lab is anonymous (a plain MQTT "
                "broker); create it with anonymous=False"
            )
        return iothub

    async def _disable(self, iothub: IotHub, product_key: str, device_key: str) -> Device:
        await iothub.disable_device(product_key, device_key)
        await self._until_offline(product_key, device_key)
        return await asyncio.to_thread(self.registry.get_device, product_key, device_key)

    async def _delete(self, iothub: IotHub, product_key: str, device_key: str) -> Device:
        device = await iothub.delete_device(product_key, device_key)
        await self._until_offline(product_key, device_key)
        return device

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

    def _prepare_data_dir(self) -> None:
        if self._requested_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="enos-lab-"))  # mode 0700
            self._temporary_dir = True
        else:
            # a directory the lab creates is private; an existing one is the user's: reported
            # if others can reach it, never changed (see enos_lab._files)
            if not private_dir(self._requested_dir):
                report_open_dir(self._requested_dir)
            self._data_dir = self._requested_dir
            self._temporary_dir = False

    def _cleanup_data_dir(self) -> None:
        if self._temporary_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None
        self._temporary_dir = False

    def _running_listener(self) -> Listener:
        listener = self._running().listener
        assert listener is not None  # set for as long as the lab runs
        return listener

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self._services is not None else "stopped"
        mode = " anonymous" if self._config.anonymous else ""
        return f"<Lab{mode} {state}>"


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
_PRESENCE_COLUMNS = ("time", "product_key", "device_key", "online", "reason")
_OFFLINE_WAIT = 5.0  # [s] how long disable/delete wait for the hub to close the connection


async def _call(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Wrap a plain call so that :meth:`Lab.run` can run it on the lab's loop."""
    return func(*args, **kwargs)


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


def _message(
    topic: str, payload: bytes | str, qos: int, retain: bool, properties: Properties
) -> Message:
    if qos not in (0, 1, 2):
        raise InvalidArgument(f"qos must be 0, 1 or 2, got {qos!r}")
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    return Message(topic=topic, payload=data, qos=qos, retain=retain, properties=properties)
