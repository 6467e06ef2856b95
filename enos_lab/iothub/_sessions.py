"""Sessions: the EnOS connections the IoT hub keeps, their presence, and dynamic activation.

Theory of operation
-------------------
One small object per connection, :class:`Conn`, made by the login
(:class:`~enos_lab.iothub._logins.Logins`) and handed to the hub as the login's
``ClientInfo.attributes``, holds everything the services keep about it: the device's keys, its
product and thing model (shared by every connection of a product, so the per-message path runs
no SQL), the sub-devices logged in through it (:class:`Target`, one per sub-device), the custom
topics of its product and the subscriptions remembered for the 1009 answer.

:class:`Sessions` keeps the tables that connect them, on the hub's event loop:

- ``conns``: session key -> connection (every part of the services finds a connection here);
- ``owner``: device -> the session key of its connection. One connection per device: a new
  login of the same device closes the old connection, whose later disconnect no longer counts;
- ``gateway_of``: logged-in sub-device -> the session key of its gateway's connection.

It listens to the hub's connected / disconnected events (:meth:`Sessions.on_event`), records
presence (queued in the registry and written once per event-loop iteration, so the logins of one
iteration share a transaction; any registry read writes the queue first), takes sub-devices
offline with their gateway, and tells the hub when what a connection may read changes
(:meth:`Sessions.permissions_changed`). A secure-mode-3 login gets its device secret pushed on
``activate/info`` until the device confirms it (protocol reference section 3).

The tap hears of each presence change and each accepted login (``DeviceLoggedIn``) once the
presence queue holding it is written (:class:`~enos_lab.iothub._emit.Emitter` holds them until
:meth:`Sessions.flush_presence`).

Presence reasons: connected, disconnected, kicked, keep-alive timeout, taken over, gateway
offline, logged out, disabled, deleted, secret rotated (and hub restarted, written by
``IotHub.attach``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator, Mapping
from datetime import datetime
from functools import partial
from typing import Any, TypeAlias

from ..clock import Clock, TimerHandle
from ..enos import SecureMode, encode_request
from ..errors import ClosedError, NotFound, RegistryError
from ..hub import (
    ClientConnected,
    ClientDisconnected,
    ClientInfo,
    DisconnectReason,
    Hub,
    HubEvent,
    Message,
    SessionKey,
)
from ..model import ModelCatalog, ThingModel
from ..registry import Device, Product, Registry
from ._config import IotHubConfig
from ._emit import Emitter

__all__ = ["Conn", "Keys", "Sessions", "Target", "custom_topics", "identity"]

log = logging.getLogger("enos_lab.iothub")

Keys: TypeAlias = tuple[str, str]  # (product_key, device_key)
Custom: TypeAlias = tuple[tuple[str, bool, bool], ...]  # topic, may publish, may subscribe


class Target:
    """A device a connection may speak for, with its cached records.

    Only the keys of the device are kept (the device record is read from the registry where a
    handler needs it); ``product`` and ``model`` are shared by every target of the product.
    """

    __slots__ = ("ident", "model", "product")

    def __init__(self, product: Product, ident: Keys, model: ThingModel | None) -> None:
        self.product = product
        self.ident = ident  # (product_key, device_key)
        self.model = model


# shared empty containers of idle connections (replaced by a connection's own on first write)
_NO_SUBS: dict[Keys, Target] = {}
NO_CUSTOM: Custom = ()
_IDENTITY_KEYS = (
    "product_key",
    "device_key",
    "secure_mode",
    "integration",
    "activation",
    "tls",
    "certificate",
)


class Conn(Target, Mapping[str, object]):
    """One authenticated connection (a device, a mode-3 activation session or a channel).

    Made by the login and handed to the hub as the login's ``ClientInfo.attributes``
    (read-only mapping of product_key, device_key, secure_mode, integration, activation, tls,
    certificate: the serial number of the client certificate it logged in with, or ``None``),
    so one small object per connection holds everything the services keep about it. A device
    connection is its own :class:`Target`.
    """

    __slots__ = (
        "activation",
        "activation_done",
        "certificate",
        "certificate_expiry",
        "checked",
        "custom",
        "filters",
        "info",
        "integration",
        "online",
        "secure_mode",
        "subs",
        "tls",
    )

    def __init__(  # noqa: PLR0917
        self,
        product: Product,
        keys: Keys,
        secure_mode: int,
        integration: bool,
        activation: bool,
        tls: bool,
    ) -> None:
        super().__init__(product, keys, None)
        self.secure_mode = secure_mode
        self.integration = integration
        self.activation = activation
        self.tls = tls
        self.certificate: str | None = None  # serial number of the client certificate
        # when the client certificate expires; once connected, the timer that closes it then
        self.certificate_expiry: datetime | TimerHandle | None = None
        self.info: ClientInfo | None = None  # set when the hub accepted the connection
        # the registry records were read in the callback that accepts the connection
        self.checked = False
        self.online = False  # recorded online in the registry
        # logged-in sub-devices; the shared empty _NO_SUBS until the first sub-device logs in
        self.subs: dict[Keys, Target] = _NO_SUBS
        # subscriptions remembered for the 1009 answer (see _acl.subscribed), at most
        # _acl.MAX_FILTERS, the oldest forgotten first (a tuple is smallest)
        self.filters: tuple[str, ...] = ()
        self.custom: Custom = NO_CUSTOM
        self.activation_done: asyncio.Event | None = None

    @property
    def product_key(self) -> str:
        return self.ident[0]

    @property
    def device_key(self) -> str:
        return self.ident[1]

    @property
    def own(self) -> Target | None:
        """The connection's own device; None for an integration channel."""
        return None if self.integration else self

    @property
    def client_id(self) -> str:
        info = self.info
        assert info is not None
        return info.client_id

    @property
    def key(self) -> SessionKey:
        """The connection's session key in the hub (``(identity, client_id)``)."""
        info = self.info
        assert info is not None
        return info.session_key

    def target(self, keys: Keys) -> Target | None:
        if not self.integration and self.ident == keys:
            return self
        return self.subs.get(keys)

    # read-only mapping (ClientInfo.attributes)
    def __getitem__(self, key: str) -> object:
        if key in _IDENTITY_KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_IDENTITY_KEYS)

    def __len__(self) -> int:
        return len(_IDENTITY_KEYS)

    def __repr__(self) -> str:
        return repr(dict(self))


def _stop_expiry(conn: Conn) -> None:
    """Cancel the timer that would close ``conn`` when its client certificate expires."""
    timer = conn.certificate_expiry
    if timer is not None and not isinstance(timer, datetime):
        timer.cancel()
        conn.certificate_expiry = None


def custom_topics(product: Product, device_key: str) -> Custom:
    """The product's custom topics with the device's keys filled in."""
    if not product.custom_topics:
        return NO_CUSTOM
    return tuple(
        (
            template.replace("{productKey}", product.product_key).replace(
                "{deviceKey}", device_key
            ),
            permission.can_publish,
            permission.can_subscribe,
        )
        for template, permission in product.custom_topics.items()
    )


def identity(keys: Keys) -> str:
    """The hub identity of a device: its EnOS user name ``"{device_key}&{product_key}"`` (an
    integration channel: ``"%channel%&{product_key}"``), which names one device: keys never
    contain ``&``."""
    return f"{keys[1]}&{keys[0]}"


# presence reasons recorded in the registry (the Lab's presence table)
_REASONS = {
    DisconnectReason.CLIENT_DISCONNECT: "disconnected",
    DisconnectReason.KEEP_ALIVE_TIMEOUT: "keep-alive timeout",
    DisconnectReason.TAKEN_OVER: "taken over",
    DisconnectReason.PROTOCOL_ERROR: "disconnected",
    DisconnectReason.CONNECTION_LOST: "disconnected",
    DisconnectReason.KICKED: "kicked",
    DisconnectReason.SERVER_SHUTDOWN: "disconnected",
}


class Sessions:
    """The connection tables, presence and dynamic activation (see the module docstring).

    ``conns``, ``owner`` and ``gateway_of`` are the tables every part reads; only this class
    changes them. ``unknown_topics`` counts, per session key, the publishes of the few
    connections that write to topics outside the EnOS catalogue (the ACL logs them); it is
    forgotten with the connection. ``hub`` is set by ``IotHub.attach``; ``emit`` tells the tap
    (default: a tap of its own, without consumers).
    """

    def __init__(
        self,
        registry: Registry,
        models: ModelCatalog,
        config: IotHubConfig,
        ids: Iterator[int],
        tasks: set[asyncio.Task[Any]],
        *,
        clock: Clock,
        emit: Emitter | None = None,
    ) -> None:
        self.registry = registry
        self._emit = emit or Emitter.idle()
        self.models = models
        self.config = config
        self.hub: Hub | None = None
        self.conns: dict[SessionKey, Conn] = {}
        self.owner: dict[Keys, SessionKey] = {}
        self.gateway_of: dict[Keys, SessionKey] = {}
        self.unknown_topics: dict[SessionKey, int] = {}
        self._kick_reasons: dict[SessionKey, str] = {}  # session key -> presence reason
        self._products: dict[str, Product] = {}  # shared product records (see share)
        self._presence_flush = False  # a flush of queued presence changes is scheduled
        self._ids = ids
        self._tasks = tasks
        self._clock = clock

    # -- records -------------------------------------------------------------------------

    def model(self, product: Product) -> ThingModel | None:
        """The thing model of ``product`` (None without one, or when the catalog lacks it)."""
        if product.model_id is None:
            return None
        try:
            return self.models.get(product.model_id)
        except NotFound:
            log.warning(
                "product %s names model %r, which is not in the catalog; data passes unchecked",
                product.product_key,
                product.model_id,
            )
            return None

    def share(self, product: Product) -> Product:
        """One record per product for every connection (equal records are shared)."""
        known = self._products.get(product.product_key)
        if known is product or (known is not None and known == product):
            return known
        self._products[product.product_key] = product
        return product

    def target_for(self, device: Device, product: Product | None = None) -> Target:
        """A target for ``device`` with its shared product record and model."""
        product = self.share(product or self.registry.get_product(device.product_key))
        return Target(product, (device.product_key, device.device_key), self.model(product))

    def offline_sub_device(self, conn: Conn, keys: Keys) -> Target | None:
        """A topology child of the connection's device that is not logged in (for a batch's
        ``allowOfflineSubDevice``), or None."""
        if conn.own is None or keys[0] == "" or keys[1] == "":
            return None
        device = self.registry.find_device(*keys)
        if device is None or device.gateway != conn.own.ident or not device.enabled:
            return None
        return self.target_for(device)

    # -- tasks ---------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task of the services (failures logged)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("iothub task %s failed", task.get_name(), exc_info=task.exception())

    # -- presence ------------------------------------------------------------------------

    def set_online(self, keys: Keys, reason: str = "connected") -> None:
        """Record that the device is online."""
        self._presence(keys, True, reason)

    def set_offline(self, keys: Keys, reason: str) -> None:
        """Record that the device is offline, and why."""
        self._presence(keys, False, reason)

    def _presence(self, keys: Keys, online: bool, reason: str) -> None:
        """Record a presence change; never fails the connection event that caused it.

        The change is queued in the registry and written once per event-loop iteration, so
        that the logins of one iteration share a transaction; any registry read (the Lab's
        presence table, a device record) writes the queue first, so nobody sees it late.
        """
        try:
            self.registry.queue_presence(*keys, online, reason)
        except Exception:  # e.g. the registry was closed before the hub stopped
            log.warning("presence of %s/%s (%s) not recorded", *keys, reason, exc_info=True)
            return
        self._emit.presence(keys, online, reason)
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Write the queued presence changes (and release their tap events) once this
        event-loop iteration is done."""
        if not self._presence_flush:
            self._presence_flush = True
            try:
                asyncio.get_running_loop().call_soon(self.flush_presence)
            except RuntimeError:  # no loop (not from a hub callback): write now
                self.flush_presence()

    def flush_presence(self) -> None:
        """Write the queued presence changes (once per loop iteration; at a stop, now)."""
        self._presence_flush = False
        try:
            self.registry.flush_presence()
        except Exception:  # e.g. the registry was closed before the hub stopped
            log.warning("presence changes not recorded", exc_info=True)
            self._emit.release(kept=False)
            return
        self._emit.release()

    def is_online(self, product_key: str, device_key: str) -> bool:
        """Whether the device has a live connection or is logged in through an online gateway."""
        keys = (product_key, device_key)
        cid = self.owner.get(keys)
        if cid is not None:
            conn = self.conns.get(cid)
            return conn is not None and conn.online
        return keys in self.gateway_of

    def online_sub_devices(self, gateway: Keys) -> list[Keys]:
        """Sub-devices currently logged in through ``gateway``'s connection."""
        cid = self.owner.get(gateway)
        conn = self.conns.get(cid) if cid is not None else None
        return list(conn.subs) if conn is not None else []

    # -- connection events ---------------------------------------------------------------

    def on_event(self, event: HubEvent) -> None:
        """The hub's event listener: connections accepted and ended."""
        if isinstance(event, ClientConnected):
            self._connected(event.client)
        elif isinstance(event, ClientDisconnected):
            self._disconnected(event.client, event.reason)

    def _connected(self, info: ClientInfo) -> None:
        attrs = info.attributes
        conn = attrs if type(attrs) is Conn and attrs.info is None else None
        if conn is not None:  # our own login (the usual case)
            pk, dk = conn.ident
            integration = conn.integration
        else:
            pk_attr, dk_attr = attrs.get("product_key"), attrs.get("device_key")
            if not isinstance(pk_attr, str) or not isinstance(dk_attr, str):
                return  # not authenticated by us
            pk, dk = pk_attr, dk_attr
            integration = bool(attrs.get("integration"))
        try:
            if conn is not None and conn.checked:
                product = conn.product
            else:
                product = self.registry.get_product(pk)
                if not integration:
                    self.registry.get_device(pk, dk)  # still registered
        except NotFound:
            log.warning("client %r: %s/%s vanished during login", info.client_id, pk, dk)
            self.kick(info.session_key, "deleted")
            return
        product = self.share(product)
        if conn is None:  # attributes of another authenticator with an EnOS identity
            secure_mode = attrs.get("secure_mode")
            conn = Conn(
                product,
                (pk, dk),
                secure_mode if isinstance(secure_mode, int) else 0,
                integration,
                bool(attrs.get("activation")),
                bool(attrs.get("tls")),
            )
        conn.product = product
        conn.model = self.model(product)
        conn.info = info
        previous = self.conns.get(info.session_key)
        if previous is not None and previous is not conn:  # the same client id, taken over
            _stop_expiry(previous)
        self.conns[info.session_key] = conn
        expiry = conn.certificate_expiry
        if isinstance(expiry, datetime):
            clock = self._clock
            when = clock.monotonic() + (expiry - clock.now()).total_seconds()
            conn.certificate_expiry = clock.call_at(when, partial(self._expired, conn))
        if integration:
            return
        conn.custom = custom_topics(product, dk)
        keys = conn.ident
        old_cid = self.owner.get(keys)
        self.owner[keys] = info.session_key
        if old_cid is not None and old_cid != info.session_key:
            old = self.conns.pop(old_cid, None)
            if old is not None:
                self._release(old, "taken over")
                self.kick(old_cid, "taken over")
        self._emit.logged_in(keys, info.client_id, conn.secure_mode)
        if conn.activation:
            conn.activation_done = asyncio.Event()
            self.spawn(self._activate(conn), f"iothub-activate-{pk}/{dk}")
            self._flush_soon()  # nothing to write: the login's event alone
            return
        conn.online = True
        self.set_online(keys)

    def _expired(self, conn: Conn) -> None:
        """``conn``'s client certificate expired (on the lab's clock): close it."""
        conn.certificate_expiry = None
        if conn.info is not None and self.conns.get(conn.key) is conn:
            log.info(
                "certificate %s of device %s/%s expired: connection closed",
                conn.certificate,
                conn.product_key,
                conn.device_key,
            )
            self.kick(conn.key, "certificate expired")

    def _release(self, conn: Conn, reason: str) -> None:
        """Forget ``conn``'s sub-devices and mark its device offline (if it was online); stop
        its certificate's expiry timer."""
        _stop_expiry(conn)
        if self.unknown_topics:
            self.unknown_topics.pop(conn.key, None)
        sub_reason = "gateway offline"
        if conn.subs:
            self.permissions_changed()
        for keys in list(conn.subs):
            del conn.subs[keys]
            if self.gateway_of.get(keys) == conn.key:
                del self.gateway_of[keys]
            self.set_offline(keys, sub_reason)
        if conn.online and conn.own is not None:
            conn.online = False
            self.set_offline(conn.own.ident, reason)
        if conn.activation_done is not None:
            conn.activation_done.set()

    def _disconnected(self, info: ClientInfo, reason: DisconnectReason) -> None:
        cid = info.session_key
        why = self._kick_reasons.pop(cid, None) or _REASONS.get(reason, "disconnected")
        conn = self.conns.get(cid)
        if conn is None or conn.info is not info:
            return  # superseded (taken over) or not ours
        del self.conns[cid]
        keys = (conn.product_key, conn.device_key)
        if self.owner.get(keys) == cid:
            del self.owner[keys]
        self._release(conn, why)

    def kick(self, key: SessionKey, reason: str) -> None:
        """Close the connection of session ``key``; its presence row gets ``reason``."""
        hub = self.hub
        if hub is None:
            return
        self._kick_reasons[key] = reason
        self.spawn(self._disconnect(hub, key), f"iothub-kick-{key}")

    async def close(self, key: SessionKey, reason: str) -> None:
        """Like :meth:`kick`, done before returning."""
        hub = self.hub
        if hub is not None:
            self._kick_reasons[key] = reason
            await self._disconnect(hub, key)

    def product_secret_logins(self, product_key: str) -> list[SessionKey]:
        """The connections of ``product_key`` that logged in with its product secret: dynamic
        activation sessions (secure mode 3) and integration channels (4)."""
        return [
            key
            for key, conn in self.conns.items()
            if conn.product_key == product_key
            and conn.secure_mode in (SecureMode.DYNAMIC_ACTIVATION, SecureMode.INTEGRATION)
        ]

    async def _disconnect(self, hub: Hub, key: SessionKey) -> None:
        if not await hub.disconnect_client(key, 0x87):
            self._kick_reasons.pop(key, None)  # already gone

    def drop_certificate(self, serial_number: str, reason: str) -> int:
        """Close every connection that logged in with the client certificate ``serial_number``
        (hexadecimal); its presence row gets ``reason``. Returns how many were closed."""
        keys = [
            conn.key
            for conn in self.conns.values()
            if conn.certificate == serial_number and conn.info is not None
        ]
        for key in keys:
            self.kick(key, reason)
        return len(keys)

    def drop_device(self, keys: Keys, reason: str, *, record: bool = True) -> None:
        """Close the device's connection and forget its sessions in the hub (a disabled or
        deleted device's persistent sessions must not keep collecting messages); log it out of
        its gateway, whose session stops receiving its topics. ``record=False``: the caller
        wrote the presence row already."""
        cid = self.owner.get(keys)
        if cid is not None:
            conn = self.conns.get(cid)
            if conn is not None and not record:
                conn.online = False
            self._kick_reasons[cid] = reason
        hub = self.hub
        if hub is not None:
            hub.end_identity(identity(keys))  # the disconnection is handled in this call
        if cid is not None:
            self._kick_reasons.pop(cid, None)
        gw_cid = self.gateway_of.get(keys)
        if gw_cid is not None:
            gateway = self.conns.get(gw_cid)
            if gateway is not None:
                if record:
                    self.logout_sub(gateway, keys, reason)
                else:
                    gateway.subs.pop(keys, None)
                    del self.gateway_of[keys]
                    self.permissions_changed()

    # -- sub-devices ---------------------------------------------------------------------

    def login_sub(self, conn: Conn, keys: Keys, target: Target) -> None:
        """``target`` (sub-device ``keys``) is logged in through ``conn`` (from its former
        gateway, if any): online, and the hub works out again who reads its topics."""
        other = self.gateway_of.get(keys)
        if other is not None and other != conn.key:
            old = self.conns.get(other)
            if old is not None:
                old.subs.pop(keys, None)
        if conn.subs is _NO_SUBS:
            conn.subs = {}
        conn.subs[keys] = target
        self.gateway_of[keys] = conn.key
        self.set_online(keys)
        self.permissions_changed()

    def logout_sub(self, conn: Conn, keys: Keys, reason: str) -> bool:
        """Log sub-device ``keys`` out of ``conn`` (offline with ``reason``); False if it was
        not logged in there."""
        if conn.subs.pop(keys, None) is None:
            return False
        if self.gateway_of.get(keys) == conn.key:
            del self.gateway_of[keys]
        self.set_offline(keys, reason)
        self.permissions_changed()
        return True

    def permissions_changed(self) -> None:
        """What a connection may read changed (a sub-device logged in, out or moved): the hub
        works out again who receives each topic (see ``Acl.authorise_receive``)."""
        hub = self.hub
        if hub is not None:
            hub.permissions_changed()

    # -- dynamic activation (section 3) --------------------------------------------------

    async def _activate(self, conn: Conn) -> None:
        """Push the new device secret on ``activate/info`` until the device confirms it."""
        hub = self.hub
        done = conn.activation_done
        assert hub is not None and done is not None
        cfg = self.config
        clock = self._clock
        await clock.sleep(cfg.activation_delay)
        if self.conns.get(conn.key) is not conn:
            return
        try:
            device = self.registry.activate(conn.product_key, conn.device_key)
        except RegistryError as exc:
            log.warning("activation of %s/%s failed: %s", conn.product_key, conn.device_key, exc)
            self.kick(conn.key, "kicked")
            return
        topic = f"/ext/session/{conn.product_key}/{conn.device_key}/thing/activate/info"
        payload = encode_request(
            f"act-{next(self._ids)}",
            "thing.activate.info",
            {
                "assetId": device.asset_id,
                "productKey": device.product_key,
                "deviceKey": device.device_key,
                "deviceSecret": device.device_secret,
            },
        )
        deadline = clock.monotonic() + cfg.activation_timeout
        while not done.is_set() and clock.monotonic() < deadline:
            try:
                delivered = await hub.deliver(conn.key, Message(topic, payload, 1))
            except ClosedError:
                return  # the hub stopped
            if not delivered:
                return
            with contextlib.suppress(TimeoutError):
                await clock.wait_for(
                    done.wait(), min(cfg.activation_resend, max(0.0, deadline - clock.monotonic()))
                )
        if not done.is_set():
            log.warning(
                "device %s/%s did not confirm activation within %.1f s",
                conn.product_key,
                conn.device_key,
                cfg.activation_timeout,
            )
