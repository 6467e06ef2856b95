"""The lab's core: its constructor, lifecycle, loop thread, properties and the tap.

:class:`~enos_lab.lab.Lab` adds the provisioning and operations facades to it (see the package
docstring for the theory of operation).
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
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from .._files import private_dir, report_open_dir
from .._loop import LoopThread
from .._services import REGISTRY_FILE, Services, TlsListener
from ..ca import CertificateAuthority, ServerContexts
from ..clock import Clock, SystemClock
from ..errors import ClosedError, InvalidArgument
from ..hub import Hub, HubConfig, Listener
from ..iothub import IotHub, IotHubConfig
from ..model import ModelCatalog
from ..monitor import EventLog
from ..registry import Registry, sealed_with
from ..store import StoreConfig, TimeSeriesStore
from ..tap import DEFAULT_MAXSIZE, Keys, Kinds, Tap, TapSubscription
from ..vault import KEY_FILE, LabKey

__all__ = [
    "CA_DIR",
    "CA_PASSPHRASE_PURPOSE",
    "DEFAULT_CONNACK_DELAY",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "LabCore",
    "coroutine_form_of",
    "plain_call",
    "plain_tcp_warning",
]

log = logging.getLogger("enos_lab.lab")

DEFAULT_PORT = 11883
"""The conventional EnOS MQTT port (plain TCP). [-]"""

DEFAULT_TLS_PORT = 18883
"""The conventional EnOS MQTT port over TLS (certificate two-way authentication). [-]"""

CA_DIR = Path("ca")
"""The CA directory, relative to the data directory (0700)."""
CA_PASSPHRASE_PURPOSE = "enos_lab ca passphrase"
"""The purpose label of the CA's key-encryption passphrase, derived from the lab key
(:meth:`enos_lab.vault.LabKey.passphrase`)."""

_CA_LOCK = threading.Lock()  # creating a lab's CA is rare: one lock for every lab

DEFAULT_CONNACK_DELAY = 0.0
"""Delay before every CONNACK (``HubConfig.connack_delay``) of the lab's hub: none. The official
Python SDK starts its network loop before it waits for CONNACK and loses an answer that arrives
sooner (its ``connect()`` stalls 10 s, protocol reference 4.9); the IoT hub services delay the
CONNACK of logins shaped like that SDK's only (``IotHubConfig.python_sdk_connack_delay``). [s]"""

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S")


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


def coroutine_form_of(
    method: Callable[Concatenate[S, P], T],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The coroutine form of a facade method: the same call in a worker thread.

    The synchronous facade is thread-safe and never runs on the lab's loop thread, so running it
    in :func:`asyncio.to_thread` gives asyncio users every operation without blocking their loop.
    """

    async def coroutine_form(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(method, self, *args, **kwargs)

    coroutine_form.__name__ = coroutine_form.__qualname__ = "a" + method.__name__
    # help() and inspect show the parameters of the method, not (*args, **kwargs)
    coroutine_form.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    coroutine_form.__doc__ = (
        f"Coroutine form of :meth:`{method.__name__}` (runs it in a worker thread, so that the "
        "caller's event loop keeps running)."
    )
    return coroutine_form


class LabCore:
    """The lifecycle, properties and internals of :class:`~enos_lab.lab.Lab` (see there)."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = DEFAULT_PORT,
        tls_port: int | None = None,
        tls_hosts: Iterable[str] = (),
        anonymous: bool = False,
        hub_config: HubConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        iothub_config: IotHubConfig | None = None,
        store_config: StoreConfig | None = None,
        key_file: str | Path | None = None,
    ) -> None:
        for name, value in (("port", port), ("tls_port", tls_port)):
            if value is not None and not 0 <= value <= 65535:
                raise InvalidArgument(f"{name} must be in 0..65535 or None, got {value!r}")
        if port is None and tls_port is None:
            raise InvalidArgument("port and tls_port are both None: the lab needs a listener")
        if isinstance(tls_hosts, str):
            raise InvalidArgument(f"tls_hosts must be a list of host names, got {tls_hosts!r}")
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._key_file = Path(key_file) if key_file is not None else None
        self._lab_key: LabKey | None = None  # loaded by start()
        self._host = host
        self._requested_port = port
        self._requested_tls_port = tls_port
        self._tls_hosts = tuple(tls_hosts)
        self._ca_cache: tuple[Path, str, CertificateAuthority] | None = None
        if hub_config is None:
            base = HubConfig(
                anonymous=anonymous, connack_delay=0.0 if anonymous else DEFAULT_CONNACK_DELAY
            )
        else:
            base = dataclasses.replace(hub_config, anonymous=anonymous)
        self._config = base
        self._clock: Clock = clock or SystemClock()
        self._rng = rng
        self._iothub_config = iothub_config
        self._store_config = store_config
        self._lock = threading.Lock()
        self._models_lock = threading.Lock()
        self._loop_thread = LoopThread("enos-lab-loop")
        self._services: Services | None = None
        self._tap = Tap()  # one for the lab's lifetime: subscriptions outlive a restart
        self._event_log = EventLog()  # the recent events (lab.events()), kept from the start
        self._event_log.attach(self._tap)
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
                sealed = sealed_with(self.data_dir / REGISTRY_FILE)
                self._lab_key = LabKey.load(self.key_file, create=sealed is None)
                tls = None
                if self._requested_tls_port is not None:
                    hosts = (*self._tls_hosts, self._host)
                    tls = TlsListener(self._requested_tls_port, ServerContexts(self.ca, hosts))
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
                        tls=tls,
                        key=self._lab_key,
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
                " and ".join(self._urls()),
            )
        exposed = None if self._requested_port is None else plain_tcp_warning(self._host)
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

    astart = coroutine_form_of(start)

    astop = coroutine_form_of(stop)

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
    def clock(self) -> Clock:
        """The lab's clock: the time of the registry, the store, the hub and the IoT hub services
        (the system clock unless a :class:`~enos_lab.clock.SimulatedClock` was given). Simulated
        devices and edges take it too, so that a simulated day runs in order, in seconds."""
        return self._clock

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
        ``aggregate``, ``query_events`` and ``query_attributes``: arguments in the order
        devices, ids (points, events, attributes), start, end, then keywords; no data gives an
        empty frame. Unless the lab is anonymous, a product or device the registry does not
        know (and the store holds no data of) raises :class:`~enos_lab.errors.NotFound`.
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
        kinds: Kinds = None,
        *,
        product_key: Keys = None,
        device_key: Keys = None,
        point_id: Keys = None,
        maxsize: int = DEFAULT_MAXSIZE,
    ) -> TapSubscription:
        """Receive the tap's events that pass a filter, in any thread or event loop.

        ``kinds`` is a kind name (``"measurepoint"``, ``"event"``, ``"attribute"``, ``"tag"``,
        ``"presence"``, ``"login"``, ``"activation"``, ``"command"``, ``"ota"``, ``"alert"``:
        :data:`enos_lab.tap.KINDS`) or an event class of :mod:`enos_lab.tap` (``PointStored``,
        ``PresenceChanged``, ...) or several (``None``: all); ``product_key``, ``device_key``
        and ``point_id`` narrow it, each one key or several (a ``point_id`` selects
        ``PointStored`` events). For a callback instead, see :meth:`on`. Read the returned
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
        """Address the MQTT listeners are bound to."""
        self._running()
        return self._host

    @property
    def port(self) -> int:
        """TCP port of the plain MQTT listener (the real one when 0 was asked for).

        Raises :class:`~enos_lab.errors.InvalidArgument` when the lab has no plain listener
        (``port=None``: see :attr:`tls_port`)."""
        return self._plain_listener().port

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the plain MQTT listener (see :attr:`port`)."""
        return self._plain_listener().url

    @property
    def tls_port(self) -> int:
        """TCP port of the TLS listener (the real one when 0 was asked for).

        Raises :class:`~enos_lab.errors.InvalidArgument` when the lab has no TLS listener
        (``tls_port=None``, the default)."""
        return self._tls_listener().port

    @property
    def tls_url(self) -> str:
        """``mqtts://host:port`` of the TLS listener (see :attr:`tls_port`)."""
        return self._tls_listener().url

    @property
    def ca(self) -> CertificateAuthority:
        """The lab's certificate authority (:class:`~enos_lab.ca.CertificateAuthority`),
        created on first use in the data directory's ``ca/`` and loaded from there after a
        restart: it issues device certificates and the TLS listener's. Its keys are encrypted
        with a passphrase derived from the lab key (an older ``ca/ca.passphrase`` file is
        migrated and removed). Thread-safe, synchronous."""
        directory = self.data_dir / CA_DIR
        key = self._lab_key
        if key is None:  # loaded by start() before anything asks for the CA
            raise ClosedError("the lab is not running: call start() first")
        with _CA_LOCK:
            cached = self._ca_cache
            if cached is None or cached[:2] != (directory, key.fingerprint):
                passphrase = key.passphrase(CA_PASSPHRASE_PURPOSE)
                ca = CertificateAuthority(directory, clock=self._clock, passphrase=passphrase)
                cached = (directory, key.fingerprint, ca)
                self._ca_cache = cached
        return cached[2]

    @property
    def key_file(self) -> Path:
        """The lab key file (``key_file`` if given, else ``lab.key`` in the data directory):
        the 256-bit key that seals the registry's secrets and encrypts the CA's keys. Keep it
        with the data directory (a backup needs both) or, for a copy of the data that opens
        nothing alone, elsewhere (:mod:`enos_lab.vault`)."""
        if self._key_file is not None:
            return self._key_file
        return self.data_dir / KEY_FILE

    @property
    def data_dir(self) -> Path:
        """Directory holding everything the lab keeps (temporary unless one was given)."""
        if self._data_dir is None:
            raise ClosedError("the lab is not running: call start() first")
        return self._data_dir

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
        self._lab_key = None
        if self._temporary_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None
        self._temporary_dir = False

    def _plain_listener(self) -> Listener:
        listener = self._running().listener
        if listener is None:
            raise InvalidArgument(
                "this lab has no plain TCP listener (port=None): use lab.tls_port / lab.tls_url"
            )
        return listener

    def _tls_listener(self) -> Listener:
        listener = self._running().tls_listener
        if listener is None:
            raise InvalidArgument(
                "this lab has no TLS listener: create it with tls_port= (DEFAULT_TLS_PORT, "
                "18883 as EnOS, or 0 for any free port)"
            )
        return listener

    def _urls(self) -> list[str]:
        services = self._services
        listeners = [] if services is None else [services.listener, services.tls_listener]
        return [listener.url for listener in listeners if listener is not None]

    def __repr__(self) -> str:
        shown = " ".join(repr(url) for url in self._urls())
        state = f"url={shown}" if self._services is not None else "stopped"
        mode = " anonymous" if self._config.anonymous else ""
        return f"<Lab{mode} {state}>"


async def plain_call(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Wrap a plain call so that :meth:`Lab.run` can run it on the lab's loop."""
    return func(*args, **kwargs)
