"""The asyncio device client: login, requests, commands and reconnection.

Theory of operation
-------------------
A :class:`DeviceClient` is one EnOS device (or gateway) speaking MQTT 3.1.1 to a hub, as the
official SDKs do. Its life is ``connect()`` ... ``disconnect()``; in between it holds at most
one :class:`~enos_lab.device._connection.Connection` (one CONNECT), ``_conn``:

- **Login** (:meth:`DeviceClient._login`): CONNECT signed with the device secret (secure mode
  2). With only a product secret, dynamic activation first (protocol reference 3): CONNECT in
  secure mode 3, wait for ``activate/info`` (it needs no SUBSCRIBE), keep the issued secret
  (:attr:`device_secret`, ``on_secret_issued``), answer 200, close, and log in again with the
  secret, as the Java SDK does; every later login uses it. A refused CONNACK raises
  :class:`~enos_lab.errors.LoginRefused`. After each login the sub-devices that were logged in
  through this gateway are logged in again (one batch login), then ``on_connect`` runs.
- **Requests** (:class:`~enos_lab.device._requests.Requests`): QoS 1 publish on ``T`` after
  subscribing to ``T_reply`` once per connection (4.2), ids from a per-client counter as
  strings (4.4), correlation and the bound on requests in flight in
  :class:`~enos_lab.device._pending.Pending`, timeouts on the client's clock.
- **Incoming messages** (:class:`~enos_lab.device._inbox.Inbox`): replies, ``activate/info``,
  and commands for the device or one of its sub-devices, each answered by that device's
  handlers (4.3).
- **Reconnection**: when an open connection drops in LONG mode, the requests waiting on it fail
  with :class:`~enos_lab.errors.NotConnected`, ``on_disconnect`` runs, and one task owned by
  the client reconnects with the :class:`~enos_lab.device.Backoff` policy (delays on the
  client's clock, full jitter from ``rng``), until a login succeeds or ``retries`` run out.
  In SHORT mode each operation (or :meth:`DeviceClient.session` block) opens a connection and
  closes it when the last request of the operation is answered.

Everything runs on the event loop that called :meth:`DeviceClient.connect`; the client is
not thread-safe (:class:`~enos_lab.device.Device` is the synchronous wrapper).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, Self

from ..clock import Clock, SystemClock
from ..enos import (
    SecureMode,
    SignMethod,
    login_credentials,
)
from ..errors import (
    ClosedError,
    DeviceError,
    InvalidArgument,
    NotConnected,
    RequestTimeout,
)
from ._connection import Connection
from ._endpoint import Endpoint
from ._gateway import Gateway
from ._inbox import Inbox
from ._pending import Pending
from ._policy import Backoff, ConnectionMode
from ._requests import Requests
from ._types import Callback, ClientStats, SecretCallback

__all__ = ["DEFAULT_BACKOFF", "DeviceClient"]


log = logging.getLogger("enos_lab.device")

DEFAULT_BACKOFF = Backoff()
"""The default reconnect policy: 1 s doubling up to 60 s, full jitter, forever."""


class DeviceClient(Requests, Inbox, Gateway, Endpoint):
    """An EnOS device (or gateway) on asyncio: MQTT 3.1.1 over gmqtt, like the official SDKs.

    Parameters
    ----------
    host, port:
        The hub's MQTT listener (``lab.host``, ``lab.port``).
    product_key, device_key:
        The device's keys.
    device_secret:
        The device's secret (secure mode 2). ``None`` with ``product_secret``: dynamic
        activation on the first :meth:`connect` (see the module docstring).
    product_secret:
        The product's secret, for dynamic activation (secret-per-product).
    ssl:
        An :class:`ssl.SSLContext` (or ``True`` for the default one) for TLS; ``False``: TCP.
    keepalive:
        MQTT keep alive; 0 turns it off (a hub on a simulated clock times out idle devices in
        simulated time). [s]
    clean_session:
        The CONNECT flag (the Python SDK sends ``True``).
    sign_method:
        Digest of the login and sub-device signatures.
    timeout:
        Default wait for a reply, a CONNACK or an activation, on ``clock``. [s]
    reconnect:
        Reconnect policy after a lost connection (LONG mode); ``None``: stay disconnected.
    mode:
        :attr:`ConnectionMode.LONG` (default) or :attr:`ConnectionMode.SHORT`.
    clock:
        Stamps posts without a time and runs timeouts and reconnect delays (default: the
        system clock; a lab's :class:`~enos_lab.clock.SimulatedClock` for simulated time).
    rng:
        Random source of the reconnect jitter (``random.Random(seed)`` for repeatable runs).
    client_id:
        The client id before the ``|`` block (default: the device key).
    max_in_flight:
        Most requests waiting for their reply at once; more wait for a slot.
    max_commands:
        Most commands whose (async) handlers run at once; more are answered 429.

    Callbacks (plain functions or coroutine functions): ``on_connect()`` after each login
    (and the re-login of sub-devices), ``on_disconnect()`` when a connection drops (not when
    :meth:`disconnect` or a SHORT operation closes it), ``on_secret_issued(device_secret)``
    when a dynamic activation issued the device's secret.
    """

    def __init__(
        self,
        host: str,
        port: int,
        product_key: str,
        device_key: str,
        device_secret: str | None = None,
        *,
        product_secret: str | None = None,
        ssl: ssl_module.SSLContext | bool = False,
        keepalive: int = 60,
        clean_session: bool = True,
        sign_method: SignMethod = SignMethod.SHA256,
        timeout: float = 30.0,
        reconnect: Backoff | None = DEFAULT_BACKOFF,
        mode: ConnectionMode = ConnectionMode.LONG,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        client_id: str | None = None,
        max_in_flight: int = 100,
        max_commands: int = 64,
    ) -> None:
        Endpoint.__init__(self, product_key, device_key)
        Gateway.__init__(self)
        if not device_secret and not product_secret:
            raise InvalidArgument(
                f"device {product_key}/{device_key} needs a device_secret, or a product_secret "
                "for dynamic activation"
            )
        if timeout <= 0:
            raise InvalidArgument(f"timeout must be > 0, got {timeout!r}")
        if keepalive < 0:
            raise InvalidArgument(f"keepalive must be >= 0, got {keepalive!r}")
        if max_commands < 1:
            raise InvalidArgument(f"max_commands must be >= 1, got {max_commands!r}")
        self.host = host
        self.port = port
        self.device_secret = device_secret or None
        """The device's secret: given, or issued by dynamic activation (then kept)."""
        self.product_secret = product_secret
        self.ssl = ssl
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.sign_method = sign_method
        self.timeout = timeout
        self.reconnect = reconnect
        self.mode = mode
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.client_id = client_id
        self.max_commands = max_commands
        self.on_connect: Callback | None = None
        self.on_disconnect: Callback | None = None
        self.on_secret_issued: SecretCallback | None = None
        self._pending = Pending(max_in_flight)
        self._ids = itertools.count(1)
        self._conn: Connection | None = None
        self._active = False  # between connect() and disconnect()
        self._lock = asyncio.Lock()  # opening and closing connections
        self._users = 0  # SHORT mode: operations using the connection
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._activation: asyncio.Future[str] | None = None  # waits for activate/info
        self._activating: Connection | None = None  # the secure mode 3 connection
        self._watchers: set[asyncio.Future[None]] = set()  # wait_connected() callers
        self._counts = dict.fromkeys(ClientStats.__dataclass_fields__, 0)

    # -- state ---------------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The client's clock (stamps, timeouts, reconnect delays)."""
        return self._clock

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (in SHORT mode: only during an operation)."""
        conn = self._conn
        return conn is not None and conn.is_open

    @property
    def active(self) -> bool:
        """Whether :meth:`connect` succeeded and :meth:`disconnect` was not called (LONG mode:
        the client reconnects while active)."""
        return self._active

    @property
    def stats(self) -> ClientStats:
        """Counters since the client was made (a snapshot)."""
        return ClientStats(**self._counts)

    @property
    def device(self) -> str:
        """``product_key/device_key``, as errors and logs name the device."""
        return f"{self.product_key}/{self.device_key}"

    def __repr__(self) -> str:
        state = "connected" if self.connected else ("active" if self._active else "closed")
        return f"<DeviceClient {self.device} {self.mode.value} {state}>"

    # -- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Log in (dynamically activating the device first if it has no secret yet).

        LONG mode keeps the connection (and reconnects); SHORT mode checks the login (and
        activates) once, then connects for each operation. Nothing if already connected.
        Raises :class:`~enos_lab.errors.LoginRefused` (CONNACK refused),
        :class:`~enos_lab.errors.NotConnected` (no TCP connection) or
        :class:`~enos_lab.errors.RequestTimeout` (no CONNACK or activation in time).
        """
        if self._active:
            return
        self._active = True
        try:
            await self._open()
            if self.mode is ConnectionMode.SHORT:
                await self._close_idle()
        except BaseException:
            self._active = False
            await self._stop_reconnecting()
            raise

    async def disconnect(self) -> None:
        """Close the connection (DISCONNECT), stop reconnecting, fail the requests still
        waiting with :class:`~enos_lab.errors.ClosedError` and end the client's tasks.
        Idempotent; :meth:`connect` may be called again afterwards."""
        self._active = False
        await self._stop_reconnecting()
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
        self._pending.fail_all(partial(ClosedError, f"device client {self.device} disconnected"))
        self._changed()
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until a connection is open: True; False when the client stops first (it gave
        up reconnecting, or :meth:`disconnect` ran) or ``timeout`` passes on the client's
        clock (``None``: no limit). LONG mode (a SHORT client is connected only during an
        operation). [s]"""
        clock = self._clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            if self.connected:
                return True
            if not self._active:
                return False
            change: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._watchers.add(change)
            try:
                if deadline is None:
                    await change
                else:
                    await clock.wait_for(change, max(0.0, deadline - clock.monotonic()))
            except TimeoutError:
                return False
            finally:
                self._watchers.discard(change)

    def _changed(self) -> None:
        """The connection opened, or the client stopped: wake :meth:`wait_connected`."""
        watchers, self._watchers = self._watchers, set()
        for change in watchers:
            if not change.done():
                change.set_result(None)

    async def _stop_reconnecting(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not asyncio.current_task():
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Self]:
        """``async with client.session():`` keeps one connection for every request in the
        block (SHORT mode: one connect and one disconnect for the lot; LONG mode: nothing)."""
        if self.mode is ConnectionMode.LONG:
            self._check_active()
            yield self
            return
        await self._use()
        try:
            yield self
        finally:
            await self._unuse()

    def _check_active(self) -> None:
        if not self._active:
            raise ClosedError(f"device client {self.device} is not connected: call connect()")

    # -- connections ---------------------------------------------------------------------------

    async def _use(self) -> None:
        """SHORT mode: an operation starts; connect unless a connection is open."""
        self._check_active()
        self._users += 1
        if self._conn is None:
            try:
                await self._open()
            except BaseException:
                self._users -= 1
                raise

    async def _unuse(self) -> None:
        """SHORT mode: an operation ended; disconnect when it was the last."""
        self._users -= 1
        if self._users == 0:
            await self._close_idle()

    async def _close_idle(self) -> None:
        async with self._lock:
            if self._users == 0 and self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()

    async def _open(self) -> None:
        """Log in (unless a connection is open), log the sub-devices in again, ``on_connect``."""
        async with self._lock:
            if self._conn is not None:
                return
            conn = await self._login()
            if not self._active:  # disconnect() ran meanwhile
                await conn.close()
                raise ClosedError(f"device client {self.device} disconnected while connecting")
            if not conn.is_open:  # dropped before it was watched
                raise NotConnected(
                    f"the connection of device {self.device} to {self.host}:{self.port} "
                    "dropped right after its login"
                )
            self._conn = conn
            await self._relogin_sub_devices()
            if self._conn is not conn:
                raise NotConnected(
                    f"the connection of device {self.device} to {self.host}:{self.port} "
                    "dropped while its sub-devices were logged in again"
                )
            self._notify(self.on_connect)
            self._changed()

    async def _login(self) -> Connection:
        if self.device_secret is None:
            await self._activate()
        assert self.device_secret is not None
        return await self._connection(SecureMode.SECRET_PER_DEVICE, self.device_secret)

    async def _activate(self) -> None:
        """Dynamic activation (protocol reference 3): log in with the product secret, take the
        device secret from ``activate/info``, answer it, close."""
        assert self.product_secret is not None
        waiting: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._activation = waiting
        try:
            conn = await self._connection(SecureMode.DYNAMIC_ACTIVATION, self.product_secret)
            self._activating = conn
            if not conn.is_open:  # dropped before it was watched
                raise NotConnected(
                    f"the hub closed the activation connection of device {self.device} "
                    "before it sent activate/info"
                )
            try:
                secret = await self._clock.wait_for(waiting, self.timeout)
            except TimeoutError:
                raise RequestTimeout(
                    f"device {self.device} logged in with its product secret but received no "
                    f"activate/info within {self.timeout} s"
                ) from None
            finally:
                await conn.close()
        finally:
            self._activation = self._activating = None
        self.device_secret = secret
        log.info("device %s: dynamically activated", self.device)
        self._notify(self.on_secret_issued, secret)

    async def _connection(self, mode: SecureMode, secret: str) -> Connection:
        """A new connection, logged in with ``secret`` in ``mode``."""
        client_id, username, password = login_credentials(
            self.product_key,
            self.device_key,
            secret,
            secure_mode=mode,
            sign_method=self.sign_method,
            timestamp=str(self._clock.time_ms()),
            sign_client_id=self.client_id,
        )
        conn = Connection(
            client_id,
            username,
            password,
            self.clean_session,
            self.device,
            self._on_message,
            self._on_lost,
        )
        try:
            await self._clock.wait_for(
                conn.open(self.host, self.port, self.ssl, self.keepalive), self.timeout
            )
        except TimeoutError:
            await conn.close()
            raise RequestTimeout(
                f"no CONNACK from {self.host}:{self.port} for device {self.device} within "
                f"{self.timeout} s"
            ) from None
        except OSError as exc:
            what = "activation login" if mode is SecureMode.DYNAMIC_ACTIVATION else "login"
            raise NotConnected(
                f"device {self.device} cannot connect to {self.host}:{self.port} for its "
                f"{what}: {exc}"
            ) from exc
        return conn

    def _on_lost(self, conn: Connection) -> None:
        """gmqtt reported an open connection gone (not closed by us)."""
        waiting = self._activation
        if conn is self._activating and waiting is not None and not waiting.done():
            waiting.set_exception(
                NotConnected(
                    f"the hub closed the activation connection of device {self.device} "
                    "before it sent activate/info"
                )
            )
        if conn is not self._conn:
            return  # an activation connection, or one already replaced
        self._conn = None
        self._pending.fail_all(
            partial(
                NotConnected,
                f"the connection of device {self.device} to {self.host}:{self.port} dropped "
                "before the reply arrived (the request may have been applied)",
            )
        )
        self._notify(self.on_disconnect)
        if not self._active or self.mode is ConnectionMode.SHORT:
            return
        if self.reconnect is None:
            # the owner chose to reconnect itself (a simulated fleet does): not a fault
            log.info("device %s: connection lost; no reconnect policy", self.device)
            self._active = False
            self._changed()
            return
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(
                self._reconnect(self.reconnect), name=f"enos-device-reconnect-{self.device}"
            )

    def _stopped(self) -> bool:
        """Whether :meth:`disconnect` ran (read again after each wait)."""
        return not self._active

    async def _reconnect(self, policy: Backoff) -> None:
        """Reconnect with ``policy`` until logged in, out of retries or disconnected."""
        attempt = 0
        while self._active:
            if policy.gives_up(attempt):
                log.error(
                    "device %s: gave up reconnecting after %d attempt(s)", self.device, attempt
                )
                self._active = False
                self._supervisor = None
                self._changed()
                return
            await self._clock.sleep(policy.delay(attempt, self._rng))
            if self._stopped():
                return
            try:
                await self._open()
            except ClosedError:
                return  # disconnect() ran meanwhile
            except (DeviceError, OSError) as exc:
                log.warning(
                    "device %s: reconnect attempt %d failed: %s", self.device, attempt + 1, exc
                )
                attempt += 1
                continue
            self._counts["reconnects"] += 1
            log.info("device %s: reconnected after %d attempt(s)", self.device, attempt + 1)
            self._supervisor = None
            return

    # -- callbacks and tasks ---------------------------------------------------------------------

    def _notify(self, callback: Callable[..., object] | None, *args: object) -> None:
        """Run a user callback: inline if plain, in an owned task if it returns an
        awaitable; what it raises is logged."""
        if callback is None:
            return
        try:
            result = callback(*args)
        except Exception:
            log.exception("device %s: callback %r raised", self.device, callback)
            return
        if inspect.isawaitable(result):
            self._spawn(self._guard(result, repr(callback)), "callback")

    async def _guard(self, awaitable: Awaitable[object], what: str) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("device %s: callback %s raised", self.device, what)

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"enos-device-{what}-{self.device}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
