"""The EnOS IoT Hub service layer: turns the MQTT hub into an EnOS device endpoint.

Theory of operation
-------------------
:class:`IotHub` is the one public class; it composes one part per area of the protocol, each in
its own module, and plugs them into a :class:`~enos_lab.hub.Hub` at four points:

- **authenticator** (:meth:`IotHub.authenticate`): logins, the login throttle and the login
  log (:mod:`~enos_lab.iothub._logins`);
- **listener** (connected / disconnected events): the connection tables, presence and dynamic
  activation (:mod:`~enos_lab.iothub._sessions`);
- **authoriser** (:meth:`IotHub.authorise_publish`, ``_subscribe``, ``_receive``): deny by
  default (:mod:`~enos_lab.iothub._acl`); applications (user name ``%app%&{access_key}``,
  :mod:`~enos_lab.iothub._apps`) read the device topics of their grants and never write;
- **message handler**: every accepted PUBLISH, dispatched by the topic's cached route
  (:mod:`~enos_lab.iothub._routes`) to the request handling and replies
  (:mod:`~enos_lab.iothub._requests`).

The requests are answered by the handler table, :func:`_handler_table`: one mapping from
:class:`~enos_lab.enos.TopicKind` to the handler of the part that owns it - measurepoints
(general path and fast path side by side), events, attributes and tags, gateways (topology and
sub-device login), OTA and the integration channel. Commands go the other way
(:mod:`~enos_lab.iothub._commands`).

The parts share state only through named collaborators: the sessions' tables, the route cache,
one request-id counter, the raw codecs, the set of the services' tasks and one
:class:`~enos_lab.iothub._emit.Emitter`, through which every part tells the device-data tap
(:attr:`IotHub.tap`) what it kept, once it is kept. The hub's
per-message entry points are the parts' own bound methods (no forwarding call per message): the
methods of :class:`IotHub` with those names document them.

Time comes from the lab's clock (activation delay and re-sends, command timeouts, the login
throttle, record times), so that a :class:`~enos_lab.clock.SimulatedClock` runs them in
simulated order. The IoT hub owns its tasks: :meth:`IotHub.stop`, after the hub's, commits what
was received, cancels the rest and fails the commands still waiting.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from typing import Any

import pandas as pd

from ..apps import ApplicationStore
from ..clock import Clock, SystemClock
from ..enos import Reply, TopicKind
from ..hub import AuthResult, ClientInfo, ConnectRequest, Decision, Hub
from ..model import ModelCatalog
from ..registry import CertificateChecker, Device, LoginThrottle, Product, Registry
from ..store import TimeSeriesStore
from ..tap import Tap
from ._acl import Acl
from ._apps import Applications
from ._attributes import Attributes
from ._commands import Commands
from ._config import IotHubConfig, OtaHandler, RawCodec
from ._emit import Emitter
from ._events import Events
from ._gateways import Gateways
from ._integration import Integration
from ._logins import LoginLog, Logins, logins_frame
from ._measurepoints import Measurepoints, PointRouter
from ._ota import MemoryOta, Ota
from ._requests import Requests
from ._routes import Handler, Routes, accept
from ._sessions import Sessions

__all__ = ["ROTATED", "IotHub", "MemoryOta"]

ROTATED = "secret rotated"
"""Presence reason of a device whose connection was closed when its secret was rotated."""


def _handler_table(  # noqa: PLR0917
    points: Measurepoints,
    events: Events,
    attributes: Attributes,
    gateways: Gateways,
    ota: Ota,
    integration: Integration,
) -> dict[TopicKind, Handler]:
    """Which part answers which upstream request topic (the one handler table; a kind missing
    here is answered 1200 "not supported")."""
    return {
        TopicKind.MEASUREPOINT_POST: points.post,
        TopicKind.MEASUREPOINT_RESUME: points.post,
        TopicKind.MEASUREPOINT_POST_BATCH: points.batch,
        TopicKind.MEASUREPOINT_RESUME_BATCH: points.batch,
        TopicKind.EVENT_POST: events.post,
        TopicKind.ATTRIBUTE_UPDATE: attributes.update,
        TopicKind.ATTRIBUTE_QUERY: attributes.query,
        TopicKind.ATTRIBUTE_DELETE: attributes.delete,
        TopicKind.TAG_UPDATE: attributes.tag_update,
        TopicKind.TAG_QUERY: attributes.tag_query,
        TopicKind.TAG_DELETE: attributes.tag_delete,
        TopicKind.TSL_TEMPLATE_GET: attributes.tsl_template,
        TopicKind.DEVICE_REGISTER: gateways.register,
        TopicKind.TOPO_ADD: gateways.topo_add,
        TopicKind.TOPO_DELETE: gateways.topo_delete,
        TopicKind.TOPO_GET: gateways.topo_get,
        TopicKind.SUB_DEVICE_LOGIN: gateways.sub_login,
        TopicKind.SUB_DEVICE_LOGIN_BATCH: gateways.sub_login_batch,
        TopicKind.SUB_DEVICE_LOGOUT: gateways.sub_logout,
        TopicKind.OTA_INFORM: ota.inform,
        TopicKind.OTA_PROGRESS: ota.progress,
        TopicKind.OTA_GET_VERSION: ota.get_version,
        TopicKind.OTA_REQUEST: accept,
        TopicKind.LOG_POST: accept,
        TopicKind.NETWORK_STATUS_REPORT: accept,
        TopicKind.CONNECTION_STATE_POST: accept,
        TopicKind.INTEGRATION_MEASUREPOINT_POST: integration.measurepoints,
        TopicKind.INTEGRATION_EVENT_POST: integration.events,
        TopicKind.INTEGRATION_ATTRIBUTE_POST: integration.attributes,
    }


class IotHub:
    """EnOS IoT Hub services on top of a :class:`~enos_lab.hub.Hub`.

    Implements the hub's Authenticator and Authoriser protocols; :meth:`attach` adds its message
    handler and event listener. Pass the same object as ``authenticator`` and ``authoriser``
    when constructing the hub. Attributes: ``registry``, ``models``, ``store`` and ``config`` as
    given (a new ``config`` applies to every part; the login throttle and log keep the sizes
    they were made with); ``ota`` is the replaceable OTA handler (default :class:`MemoryOta`);
    ``tap`` the device-data tap the services report to (given, or one of its own);
    ``certificates`` checks the client certificates of logins over TLS (the lab's
    :class:`~enos_lab.ca.CertificateAuthority`; ``None``: a login presenting one is refused,
    and so is every login of a product that requires one). Failed TLS handshakes go into the
    login log.

    Presence reasons written to the registry: connected, disconnected, kicked, keep-alive
    timeout, taken over, gateway offline, logged out, disabled, deleted, hub restarted (written
    by :meth:`attach` for devices a crashed hub left online).
    """

    def __init__(
        self,
        registry: Registry,
        models: ModelCatalog,
        store: TimeSeriesStore,
        *,
        clock: Clock | None = None,
        config: IotHubConfig = IotHubConfig(),  # noqa: B008 - frozen
        tap: Tap | None = None,
        certificates: CertificateChecker | None = None,
    ) -> None:
        self.registry = registry
        self.models = models
        self.store = store
        clock = clock or SystemClock()
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()  # the services' own tasks
        self._codecs: dict[str, RawCodec] = {}  # raw codecs by product key
        emit = self._emit = Emitter(tap or Tap(), clock)
        ids = itertools.count(1)  # request ids of what the hub sends (commands, activation)
        sessions = self._sessions = Sessions(
            registry, models, config, ids, self._tasks, clock=clock, emit=emit
        )
        self._logins = Logins(registry, config, clock, certificates)
        self._ota = Ota(emit)
        self._commands = Commands(
            registry, sessions, self._codecs, ids, config, clock=clock, emit=emit
        )
        points = self._points = Measurepoints(store, sessions, config, clock, emit)
        self._gateways = Gateways(registry, sessions, config, emit)
        routes = Routes(
            _handler_table(
                points,
                Events(store, clock, emit),
                Attributes(registry, store, clock, emit),
                self._gateways,
                self._ota,
                Integration(registry, store, sessions, points.batcher, clock, emit),
            )
        )
        apps = self._apps = Applications()
        self._logins.applications = apps
        self._acl = Acl(sessions, routes, config, apps)
        apps.on_first_login = self._acl.check_requests
        self._requests = Requests(
            sessions,
            routes,
            points.fast_post,
            self._commands.device_reply,
            self._codecs,
            config,
            emit,
        )
        self.config = config
        # the hub calls these per CONNECT and per PUBLISH: the parts' bound methods, so that no
        # forwarding call is added (the methods below with these names document them)
        self.authenticate = self._logins.authenticate  # type: ignore[method-assign]
        self.authorise_publish = self._acl.authorise_publish  # type: ignore[method-assign]
        self.authorise_subscribe = self._acl.authorise_subscribe  # type: ignore[method-assign]
        self.authorise_receive = self._acl.authorise_receive  # type: ignore[method-assign]

    @property
    def config(self) -> IotHubConfig:
        """The settings (:class:`IotHubConfig`); assigning a new one applies to every part."""
        return self._config

    @config.setter
    def config(self, config: IotHubConfig) -> None:
        self._config = config
        for part in (
            self._sessions,
            self._logins,
            self._commands,
            self._points,
            self._gateways,
            self._acl,
            self._requests,
        ):
            part.config = config

    @property
    def tap(self) -> Tap:
        """The device-data tap (:class:`~enos_lab.tap.Tap`): points stored, events posted,
        attribute and tag changes, presence, logins, activations, commands sent and replied,
        OTA reports, each after what it describes is kept, and requests refused with an error
        code (nothing kept). Consume it on the hub's loop
        (:meth:`~enos_lab.tap.Tap.add_callback`) or from anywhere
        (:meth:`~enos_lab.tap.Tap.subscribe`)."""
        return self._emit.tap

    @property
    def point_router(self) -> PointRouter | None:
        """The point router (default None): called on the loop with the validated rows of each
        measurepoint batch, it returns the rows to store (see
        :mod:`enos_lab.iothub._measurepoints`); the rule engine's, when its rules need one."""
        return self._points.batcher.router

    @point_router.setter
    def point_router(self, router: PointRouter | None) -> None:
        self._points.batcher.router = router

    @property
    def ota(self) -> OtaHandler:
        """The OTA handler (:class:`OtaHandler`; default :class:`MemoryOta`); replaceable."""
        return self._ota.handler

    @ota.setter
    def ota(self, handler: OtaHandler) -> None:
        self._ota.handler = handler

    @property
    def applications(self) -> ApplicationStore | None:
        """The application store whose applications may log in over MQTT (user name
        ``%app%&{access_key}``, see :mod:`enos_lab.iothub._apps`); default ``None``: every
        application login is refused. The lab sets its own."""
        return self._apps.store

    @applications.setter
    def applications(self, store: ApplicationStore | None) -> None:
        self._apps.store = store

    def revoke_application(self, access_key: str) -> int:
        """End the sessions of the application ``access_key`` (its connected clients are
        disconnected, 5.0 with 0x87, its persistent sessions forgotten) once the store has
        revoked it; returns how many. Call it on the hub's loop."""
        return self._apps.revoke(access_key)

    # -- wiring ----------------------------------------------------------------------------

    def attach(self, hub: Hub) -> None:
        """Add this service's message handler and event listener to ``hub`` (before start).

        Devices the registry still marks online get an offline presence row, reason
        ``hub restarted`` (and the tap a ``PresenceChanged``): no session outlives the hub that
        held it.
        """
        for part in (
            self._sessions,
            self._logins,
            self._commands,
            self._points,
            self._requests,
            self._apps,
        ):
            part.hub = hub
        hub.add_handler(self._requests.on_message)
        hub.add_listener(self._sessions.on_event)
        hub.add_listener(self._logins.on_event)
        # no session survives a restart: close what a hub that crashed left "online"
        self._emit.presence_closed(self.registry, "hub restarted")

    async def stop(self) -> None:
        """End the services' work on the event loop (idempotent); call it after the hub's
        :meth:`~enos_lab.hub.Hub.stop`, before the store and the registry close.

        In order: the measurepoint batches already received are committed and answered (what
        a device was told is stored, is); the queued presence changes are written; the
        services' own tasks (activation pushes, disconnections) are cancelled and awaited;
        commands still waiting for a reply fail with :class:`~enos_lab.errors.ClosedError`.
        """
        await self._points.batcher.drain()
        self._sessions.flush_presence()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._commands.close()

    def register_codec(self, product_key: str, codec: RawCodec) -> None:
        """Use ``codec`` for the raw payloads of a CUSTOM-format product."""
        self._codecs[product_key] = codec

    # -- the hub's authenticator and authoriser ----------------------------------------------

    def authenticate(self, request: ConnectRequest) -> AuthResult | Awaitable[AuthResult]:
        """Decide one CONNECT (hub Authenticator protocol).

        The registry's decision (secure modes 2, 3 and 4, every sign method) behind the login
        throttle; every refusal is CONNACK 5 (4 for an unparseable username) and goes into the
        login log. The result is immediate, except for logins shaped like the official Python
        SDK's (a timestamp with a decimal point): those resolve after
        ``config.python_sdk_connack_delay`` so that their CONNACK cannot overtake the SDK's wait
        for it (protocol reference 4.9). Meanwhile the hub keeps the connection's later packets
        waiting.
        """
        return self._logins.authenticate(request)

    def authorise_publish(self, client: ClientInfo, topic: str, qos: int, retain: bool) -> Decision:
        """May ``client`` publish on ``topic``? (hub Authoriser protocol).

        Requests pass (the request handler answers a violation with 1009 and the request id);
        replies only to commands sent to the device or its logged-in sub-devices; custom topics
        as the product allows them. Retained messages are refused on every EnOS topic.
        """
        return self._acl.authorise_publish(client, topic, qos, retain)

    def authorise_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> Decision:
        """May ``client`` subscribe to ``topic_filter``? (hub Authoriser protocol)."""
        return self._acl.authorise_subscribe(client, topic_filter, qos)

    def authorise_receive(self, client: ClientInfo, topic: str) -> Decision:
        """May ``client``'s session receive ``topic``? (hub Authoriser protocol).

        The same rule as for subscribing, with what the connection may read now: a gateway
        reads its sub-devices' topics only while they are logged in through it. The services
        tell the hub (:meth:`~enos_lab.hub.Hub.permissions_changed`) when a login, logout, move
        or disconnection changes the answers.
        """
        return self._acl.authorise_receive(client, topic)

    # -- logins ----------------------------------------------------------------------------

    @property
    def login_throttle(self) -> LoginThrottle:
        """The login throttle (connect-flood protection; see ``IotHubConfig``). Use it on the
        hub's event loop."""
        return self._logins.throttle

    @property
    def login_log(self) -> LoginLog:
        """The login log behind :meth:`refused_logins` (read it on the hub's event loop)."""
        return self._logins.login_log

    def refused_logins(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> pd.DataFrame:
        """The login log: the latest ``config.login_log_size`` refused login attempts, oldest
        first, of one product and/or device key if given; columns :data:`LOGIN_COLUMNS` (times
        tz-aware UTC). Call it on the hub's event loop."""
        return logins_frame(self._logins.login_log.rows(product_key, device_key))

    def unblock_login(self, product_key: str, device_key: str, source: str | None = None) -> int:
        """Lift the login blocks of the device (user name ``deviceKey&productKey``) from
        ``source`` (an address such as ``"127.0.0.1"``; ``None``: every address) and forget
        its failed logins there; returns how many blocks were lifted. Call it on the hub's
        event loop."""
        return self._logins.unblock(product_key, device_key, source)

    # -- presence --------------------------------------------------------------------------

    def certificate_revoked(self, serial_number: str) -> int:
        """Close the connections that logged in with the client certificate ``serial_number``
        (hexadecimal; call it once the certificate is revoked, so that the reconnection meets
        the new CRL). Returns how many were closed; their presence reason is
        ``certificate revoked``."""
        return self._sessions.drop_certificate(
            serial_number.lower().removeprefix("0x"), "certificate revoked"
        )

    def is_online(self, product_key: str, device_key: str) -> bool:
        """Whether the device has a live connection or is logged in through an online gateway."""
        return self._sessions.is_online(product_key, device_key)

    def online_sub_devices(self, gateway: tuple[str, str]) -> list[tuple[str, str]]:
        """Sub-devices currently logged in through ``gateway``'s connection."""
        return self._sessions.online_sub_devices(gateway)

    def firmware_version(self, product_key: str, device_key: str) -> str | None:
        """The firmware version the device last reported (default OTA handler only)."""
        return self._ota.firmware_version(product_key, device_key)

    # -- lifecycle operations --------------------------------------------------------------

    async def enable_device(self, product_key: str, device_key: str) -> Device:
        """Enable a device; its online gateway gets ``combine/enable``."""
        device = self.registry.enable_device(product_key, device_key)
        await self._commands.notify_gateway(device, TopicKind.SUB_DEVICE_ENABLE)
        return device

    async def disable_device(
        self, product_key: str, device_key: str, reason: str | None = None
    ) -> Device:
        """Disable a device: close its connection (presence "disabled") or log it out of its
        gateway, which gets ``combine/disable``. ``reason`` is added to its refused logins."""
        device = self.registry.disable_device(product_key, device_key, reason)
        self._sessions.drop_device((product_key, device_key), "disabled")
        await self._commands.notify_gateway(device, TopicKind.SUB_DEVICE_DISABLE)
        return device

    async def delete_device(self, product_key: str, device_key: str) -> Device:
        """Delete a device: like :meth:`disable_device` (presence "deleted", ``combine/delete``)."""
        keys = (product_key, device_key)
        before = self.registry.get_device(*keys)
        sessions = self._sessions
        if sessions.is_online(*keys):
            sessions.set_offline(keys, "deleted")
        sessions.drop_device(keys, "deleted", record=False)
        device = self.registry.delete_device(*keys)
        await self._commands.notify_gateway(before, TopicKind.SUB_DEVICE_DELETE)
        return device

    async def rotate_device_secret(
        self, product_key: str, device_key: str, *, disconnect: bool = True
    ) -> Device:
        """Give a device a new secret (:meth:`Registry.rotate_device_secret`): logins signed
        with the old one are refused from now on. ``disconnect``: close its live connection,
        or log it out of its gateway, the way :meth:`disable_device` does (presence "secret
        rotated"; its sessions are forgotten), so that it must log in with the new secret."""
        device = self.registry.rotate_device_secret(product_key, device_key)
        if disconnect:
            self._sessions.drop_device((product_key, device_key), ROTATED)
        return device

    async def rotate_product_secret(self, product_key: str, *, disconnect: bool = True) -> Product:
        """Give a product a new secret (:meth:`Registry.rotate_product_secret`): dynamic
        activation and integration channels signed with the old one are refused from now on.
        ``disconnect``: close the live connections that logged in with the product secret
        (secure modes 3 and 4); devices logged in with their own secret stay."""
        product = self.registry.rotate_product_secret(product_key)
        if disconnect:
            sessions = self._sessions
            for key in sessions.product_secret_logins(product_key):
                await sessions.close(key, ROTATED)
        return product

    # -- commands (9) ----------------------------------------------------------------------

    async def send_command(
        self,
        product_key: str,
        device_key: str,
        kind: TopicKind,
        params: object,
        *,
        item_id: str = "",
        wait: bool = True,
        timeout: float | None = None,
        service_id: str | None = None,
    ) -> Reply | None:
        """Send a command to a device without any subscription and (``wait``) await its reply.

        The command goes to the device's connection or, for a logged-in sub-device, its
        gateway's (the topic keeps the sub-device's keys), at QoS 1. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device,
        :class:`~enos_lab.errors.DeviceOffline` when it has no connection, :class:`TimeoutError`
        when no reply arrives in ``timeout`` seconds (default ``config.command_timeout``).

        ``item_id`` fills the topic's ``{id}`` (a service id, an rrpc id) and the method's
        (``thing.service.{id}``) unless ``service_id`` names the latter: a legacy RRPC request
        (``RRPC_REQUEST``, protocol reference 9.4) invokes ``service_id`` on
        ``rrpc/request/{item_id}`` (a fresh rrpc id when ``item_id`` is empty), answered on
        ``rrpc/response/{item_id}``.
        """
        return await self._commands.send(
            product_key, device_key, kind, params, item_id, wait, timeout, service_id
        )
