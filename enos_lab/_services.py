"""What runs on the lab's event loop, and the order it starts and stops in.

Theory of operation
-------------------
:meth:`Services.start` builds, on the lab's loop: the device registry and the time-series store
(each opened in a worker thread: SQLite and DuckDB block), the thing model catalog, the EnOS IoT
hub services unless the lab is anonymous (reporting to the lab's device-data tap, which outlives
the services) with the alert engine (:class:`~enos_lab.alerts.AlertService`: the alert
records and the rules kept in the data directory) and the stream engine
(:class:`~enos_lab.streams.StreamEngine`, its definitions read from ``streams.json``) on that
tap, the command service (:class:`~enos_lab.control.CommandService`: command records in
``commands.sqlite3``, cached commands), the configuration service
(:class:`~enos_lab.control.ConfigService`: attribute and tag changes from the cloud, the
history of every change in ``config.sqlite3``), the application store
(``applications.sqlite3``: the credentials of applications reading device data over MQTT),
the OTA service (:class:`~enos_lab.ota.OtaService`: ``ota.sqlite3``, firmware files, the
firmware HTTP server on the lab's host, the IoT hub's OTA handler), and the MQTT hub with its
TCP listeners (plain and/or TLS), which are opened last, once everything they feed is ready. A
failure part way stops what was built. With a TLS listener the IoT hub services check client
certificates with the lab's CA (the one the listener's contexts come from).

:meth:`Services.stop` takes them down in the reverse order, each part ending its own work (no
task on the loop is cancelled from outside its owner):

1. the hub: its listeners close, every client is disconnected (5.0: DISCONNECT 0x8B) and its
   sweep ends; the IoT hub services see the disconnections (presence "disconnected");
2. the IoT hub services (:meth:`~enos_lab.iothub.IotHub.stop`): the measurepoints already
   received are committed and answered, queued presence written, their own tasks cancelled,
   commands still waiting fail with :class:`~enos_lab.errors.ClosedError`;
3. the command service (:class:`~enos_lab.control.CommandService`) leaves the tap, marks the
   cached commands still queued failed and closes its records (``commands.sqlite3``); the
   configuration service (:class:`~enos_lab.control.ConfigService`) leaves the tap and closes
   its history (``config.sqlite3``); the OTA service leaves the tap, stops its HTTP server and
   closes ``ota.sqlite3`` (campaigns running are taken up again at the next start);
4. the stream engine leaves the tap and stores the derived points it has queued (told on the
   tap, so that the alert engine still sees them);
5. the alert engine (:class:`~enos_lab.alerts.AlertService`): detached from the tap once the
   last points were evaluated, its timer cancelled, its records closed;
6. the application store, the registry and the store close (in worker threads; the store
   commits what it holds).

The rule engine (:mod:`enos_lab.rules`) starts with the IoT hub services, on the rule set kept
in the data directory (``rules.json``; none: the default set, which stores everything): its
point router goes into the services (only when the rules need one) and its tap callback onto
the tap. It stops first, before the hub: its tap actions end there (a republish would find
no hub), while its router goes on deciding what the IoT hub services store until they have
stored what they received (step 2).

Every step runs even when an earlier one failed; the first failure is raised at the end.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .alerts import AlertService
from .apps import APPLICATIONS_FILE, ApplicationStore
from .ca import ServerContexts
from .clock import Clock, SystemClock
from .control import CommandService, ConfigService
from .errors import ClosedError, EnosLabError
from .hub import ClientDisconnected, Hub, HubConfig, HubEvent, Listener, Message
from .iothub import IotHub, IotHubConfig
from .model import ModelCatalog, ThingModel, load_library, model_from_json
from .ota import OtaService
from .registry import DeviceLookup, Registry
from .rules import DEFAULT_RULES, DeviceInfo, Rule, RuleEngine, read_rule_set
from .store import StoreConfig, TimeSeriesStore
from .streams import STREAMS_FILE, StreamEngine, load_definitions
from .tap import Tap, TapCallback
from .vault import LabKey

__all__ = ["REGISTRY_FILE", "Services", "TlsListener"]

log = logging.getLogger("enos_lab.lab")

REGISTRY_FILE = "registry.sqlite3"
"""File name of the device registry database inside the lab's data directory."""


@dataclass(frozen=True, slots=True)
class TlsListener:
    """The lab's TLS listener: its ``port`` (0: any free one) and the server ``contexts`` from
    the lab's CA."""

    port: int
    contexts: ServerContexts


class Services:
    """The parts of a started lab (see the module docstring). Build it with :meth:`start`."""

    def __init__(self) -> None:
        self.registry: Registry | None = None
        self.store: TimeSeriesStore | None = None
        self.models: ModelCatalog | None = None
        self.iothub: IotHub | None = None
        self.alerts: AlertService | None = None
        self.control: CommandService | None = None
        self.config: ConfigService | None = None
        self.applications: ApplicationStore | None = None
        self.ota: OtaService | None = None
        self.hub: Hub | None = None
        self.listener: Listener | None = None
        self.tls_listener: Listener | None = None
        self.streams: StreamEngine | None = None
        self.rules: RuleEngine | None = None
        self._rules_callback: TapCallback | None = None
        self._rules_rows: TapCallback | None = None
        self._disconnect_waiters: set[asyncio.Future[None]] = set()

    @classmethod
    async def start(  # noqa: PLR0917 - the lab's settings, passed through
        cls,
        data_dir: Path,
        host: str,
        port: int | None,
        hub_config: HubConfig,
        iothub_config: IotHubConfig,
        store_config: StoreConfig | None,
        clock: Clock | None,
        rng: random.Random | None,
        *,
        tap: Tap | None = None,
        tls: TlsListener | None = None,
        key: LabKey | None = None,
    ) -> Services:
        """Build and start every part in ``data_dir``, the plain listener on ``host``:``port``
        (none for ``None``) and the TLS listener ``tls`` on ``host``; the IoT hub services
        report to ``tap`` (the lab's device-data tap); the registry's secrets are sealed under
        ``key`` (default: ``lab.key`` beside the registry)."""
        self = cls()
        try:
            self.registry = registry = await asyncio.to_thread(
                Registry, data_dir / REGISTRY_FILE, clock=clock, rng=rng, key=key
            )
            # The registry says which devices queries may name, unless the hub is anonymous
            # (its devices need no registration): see enos_lab.store.DeviceDirectory.
            self.store = store = await asyncio.to_thread(
                TimeSeriesStore,
                data_dir,
                clock=clock,
                config=store_config,
                directory=None if hub_config.anonymous else registry,
            )
            self.models = models = await asyncio.to_thread(load_models, registry)
            if hub_config.anonymous:
                hub = self.hub = Hub(hub_config, clock=clock)
            else:
                iothub = self.iothub = IotHub(
                    registry,
                    models,
                    store,
                    clock=clock,
                    config=iothub_config,
                    tap=tap,
                    certificates=None if tls is None else tls.contexts.ca,
                )
                hub = self.hub = Hub(
                    hub_config, authenticator=iothub, authoriser=iothub, clock=clock
                )
                iothub.attach(hub)
                hub.add_listener(self._on_hub_event)
                # applications over MQTT: their credentials in applications.sqlite3
                self.applications = iothub.applications = await asyncio.to_thread(
                    ApplicationStore, data_dir / APPLICATIONS_FILE, clock=clock, rng=rng
                )
                await self._start_rules(data_dir, registry, models, iothub, hub)
                if tap is not None:
                    self.alerts = await AlertService.start(
                        data_dir, registry, models, clock or SystemClock(), tap
                    )
                    await self._start_streams(data_dir, registry, store, models, tap, clock)
                if tap is not None:  # commands: records, cached commands (on the tap)
                    self.control = await CommandService.start(
                        data_dir, iothub, clock or SystemClock(), tap
                    )
                    self.config = await _start_config(
                        data_dir, registry, store, models, iothub, tap, clock
                    )
                if tap is not None:  # OTA: firmware, its HTTP server, campaigns (on the tap)
                    self.ota = await OtaService.start(
                        data_dir, iothub, registry, clock or SystemClock(), tap, host
                    )
            await hub.start()
            if port is not None:
                self.listener = await hub.listen_tcp(host, port)
            if tls is not None:
                self.tls_listener = await hub.listen_tcp(host, tls.port, ssl=tls.contexts.current)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start_streams(  # noqa: PLR0917 - the parts it is built from
        self,
        data_dir: Path,
        registry: Registry,
        store: TimeSeriesStore,
        models: ModelCatalog,
        tap: Tap,
        clock: Clock | None,
    ) -> None:
        """The stream engine (on the tap while it runs a stream), with the definitions kept in
        ``streams.json``; a definition that no longer checks (its model or output device is
        gone) is logged and left out (and dropped from the file when streams are next saved);
        a file that cannot be read fails the start, naming it."""

        lookup = DeviceLookup(registry)  # the engine runs on the loop, and so does this

        def device_exists(product_key: str, device_key: str) -> bool:
            return lookup.device(product_key, device_key) is not None

        engine = self.streams = StreamEngine(
            store,
            models,
            tap=tap,
            clock=clock or SystemClock(),
            model_of=lookup.model_of,
            device_exists=device_exists,
        )
        for definition in await asyncio.to_thread(load_definitions, data_dir / STREAMS_FILE):
            try:
                engine.add(definition)
            except EnosLabError as exc:
                log.warning("stream %r kept in %s left out: %s", definition.name, STREAMS_FILE, exc)

    # -- the rule engine --------------------------------------------------------------------

    async def _start_rules(
        self, data_dir: Path, registry: Registry, models: ModelCatalog, iothub: IotHub, hub: Hub
    ) -> None:
        """Start the rule engine on the kept rule set (see the module docstring); a kept rule
        set that cannot be read or applied stops the start, logged with the data directory."""

        def model_of(product_key: str) -> str | None:
            return registry.get_product(product_key).model_id

        def device_info(product_key: str, device_key: str) -> DeviceInfo:
            device = registry.get_device(product_key, device_key)
            return dict(device.attributes), dict(device.tags)

        def publish(topic: str, payload: bytes, qos: int) -> None:
            hub.publish_nowait(Message(topic, payload, qos))

        try:
            kept = await asyncio.to_thread(read_rule_set, data_dir)
            engine = RuleEngine(
                DEFAULT_RULES if kept is None else kept,
                models=models,
                model_of=model_of,
                device_info=device_info,
                publish=publish,
                revision=lambda: registry.revision,
            )
        except EnosLabError as exc:  # the lab does not start on rules it cannot apply
            log.error("the rule set in %s cannot be applied (%s): fix or remove it", data_dir, exc)
            raise
        self.rules = engine
        self._rules_in_force(engine, iothub)

    def set_rules(self, rules: list[Rule]) -> None:
        """Put ``rules`` in force (on the loop): the engine's rules and the services' router."""
        engine, iothub = self.rules, self.iothub
        if engine is None or iothub is None:
            raise ClosedError("the rule engine is not running")
        engine.set_rules(rules)
        self._rules_in_force(engine, iothub)

    def _rules_in_force(self, engine: RuleEngine, iothub: IotHub) -> None:
        """The engine's router in the services, its callback on the tap for the events its
        rules need (none for the default rule set: ingest pays nothing)."""
        iothub.point_router = engine.router
        self._cancel_rules_callbacks()
        if engine.tap_kinds:
            self._rules_callback = iothub.tap.add_callback(engine.on_event, kinds=engine.tap_kinds)
        if engine.wants_points:  # stored points as rows: no event object per point
            self._rules_rows = iothub.tap.add_point_rows(engine.on_rows)

    def _cancel_rules_callbacks(self) -> None:
        for handle in (self._rules_callback, self._rules_rows):
            if handle is not None:
                handle.cancel()
        self._rules_callback = self._rules_rows = None

    def _stop_rules(self) -> None:
        self._cancel_rules_callbacks()
        if self.rules is not None:
            self.rules.close()
            self.rules = None

    async def stop(self) -> None:
        """Stop every part in order (see the module docstring); idempotent."""
        self._stop_rules()
        hub, iothub, registry, store = self.hub, self.iothub, self.registry, self.store
        alerts, streams, control, config = self.alerts, self.streams, self.control, self.config
        applications, ota = self.applications, self.ota
        self.hub = self.iothub = self.listener = self.tls_listener = self.alerts = None
        self.control = self.config = self.applications = self.ota = None
        self.registry = self.store = self.models = self.streams = None
        steps: list[Callable[[], Awaitable[object]]] = []
        if hub is not None:
            steps.append(hub.stop)
        if iothub is not None:
            steps.append(iothub.stop)
        if control is not None:
            steps.append(control.stop)
        if config is not None:
            steps.append(config.stop)
        if ota is not None:
            steps.append(ota.stop)
        if streams is not None:
            steps.append(streams.aclose)
        if alerts is not None:
            steps.append(alerts.stop)
        if applications is not None:
            steps.append(lambda: asyncio.to_thread(applications.close))
        if registry is not None:
            steps.append(lambda: asyncio.to_thread(registry.close))
        if store is not None:
            steps.append(lambda: asyncio.to_thread(store.close))
        error: BaseException | None = None
        for step in steps:
            try:
                await step()
            except BaseException as exc:  # the later steps still run
                log.warning("stopping the lab: %s failed", step, exc_info=True)
                error = error or exc
        if error is not None:
            raise error

    async def until_offline(self, product_key: str, device_key: str, limit: float) -> bool:
        """Wait until the IoT hub no longer sees the device online, at most ``limit`` seconds
        (real time: the hub closing a connection is I/O); False if it still is. [s]"""
        iothub = self.iothub
        if iothub is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while iothub.is_online(product_key, device_key):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._disconnect_waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                self._disconnect_waiters.discard(waiter)
        return True

    def _on_hub_event(self, event: HubEvent) -> None:
        # Runs after the IoT hub's own listener, which has updated presence by now.
        if isinstance(event, ClientDisconnected):
            for waiter in self._disconnect_waiters:
                if not waiter.done():
                    waiter.set_result(None)


async def _start_config(  # noqa: PLR0917 - the parts it works with
    data_dir: Path,
    registry: Registry,
    store: TimeSeriesStore,
    models: ModelCatalog,
    iothub: IotHub,
    tap: Tap,
    clock: Clock | None,
) -> ConfigService:
    """The configuration service (history in ``config.sqlite3``, on the tap)."""

    def model_of(product_key: str, device_key: str) -> ThingModel | None:
        registry.get_device(product_key, device_key)
        model_id = registry.get_product(product_key).model_id
        return None if model_id is None else models.get(model_id)

    return await ConfigService.start(
        data_dir, registry, store, iothub, tap, clock or SystemClock(), model_of
    )


def load_models(registry: Registry) -> ModelCatalog:
    """The library models plus the user models kept in the registry, in the order added."""
    catalog = load_library()
    for document in registry.model_documents():
        try:
            catalog.add(model_from_json(document, origin="the registry's thing models"))
        except Exception as exc:
            log.warning(
                "thing model %r kept in the registry could not be loaded: %s",
                document.get("modelId"),
                exc,
            )
    return catalog
