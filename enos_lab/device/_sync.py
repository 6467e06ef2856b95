"""The synchronous device: a :class:`~enos_lab.device.DeviceClient` on a private event loop
thread, for scripts and notebook cells.

Every blocking method runs the client's coroutine of the same name on the device's own
:class:`~enos_lab._loop.LoopThread` and waits for its result; its signature and docstring are
the coroutine's (``help(Device.post_measurepoints)``). The loop thread starts with
:meth:`Device.connect` and stops with :meth:`Device.disconnect`. Command handlers and
callbacks run on that thread: they must not call the blocking methods (that would wait for
the thread they block; it raises :class:`~enos_lab.errors.InvalidArgument`) and should return
quickly.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import ssl as ssl_module
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from .._loop import LoopThread
from ..clock import Clock
from ..enos import SignMethod
from ..errors import ClosedError
from ._client import DEFAULT_BACKOFF, DeviceClient
from ._endpoint import Endpoint
from ._gateway import Gateway, SubDevice
from ._policy import Backoff, ConnectionMode
from ._types import Callback, ClientStats, SecretCallback

__all__ = ["Device", "SyncSubDevice"]

P = ParamSpec("P")
T = TypeVar("T")


class _Blocking:
    """Base of the blocking wrappers: the wrapped object and the loop thread it runs on."""

    _target: Any
    _thread: LoopThread
    _name: str

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._thread.running:
            coro.close()
            raise ClosedError(f"{self._name} is not connected: call connect() first")
        return self._thread.call(coro)


def _blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[_Blocking, P], T]:
    """The blocking form of a coroutine method of the wrapped object (same signature)."""

    def blocking(self: _Blocking, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._target, *args, **kwargs))

    blocking.__name__ = blocking.__qualname__ = method.__name__
    blocking.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    blocking.__doc__ = (method.__doc__ or "") + "\n\nBlocks until done (the coroutine runs on "
    "the device's loop thread)."
    return blocking


def _forward(method: Callable[Concatenate[Any, P], T]) -> Callable[Concatenate[_Blocking, P], T]:
    """A plain method of the wrapped object, called directly (handler registration)."""

    def forward(self: _Blocking, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self._target, *args, **kwargs)

    forward.__name__ = forward.__qualname__ = method.__name__
    forward.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    forward.__doc__ = method.__doc__
    return forward


class _SyncEndpoint(_Blocking):
    """The blocking posts and the handler registration of one device."""

    post_measurepoints = _blocking(Endpoint.post_measurepoints)
    post_event = _blocking(Endpoint.post_event)
    post_raw = _blocking(Endpoint.post_raw)
    update_attributes = _blocking(Endpoint.update_attributes)
    query_attributes = _blocking(Endpoint.query_attributes)
    delete_attributes = _blocking(Endpoint.delete_attributes)
    update_tags = _blocking(Endpoint.update_tags)
    query_tags = _blocking(Endpoint.query_tags)
    delete_tags = _blocking(Endpoint.delete_tags)
    get_tsl_template = _blocking(Endpoint.get_tsl_template)
    report_version = _blocking(Endpoint.report_version)
    report_progress = _blocking(Endpoint.report_progress)
    query_firmware = _blocking(Endpoint.query_firmware)
    on_service = _forward(Endpoint.on_service)
    on_measurepoint_set = _forward(Endpoint.on_measurepoint_set)
    on_measurepoint_get = _forward(Endpoint.on_measurepoint_get)
    on_ota_upgrade = _forward(Endpoint.on_ota_upgrade)
    on_raw_down = _forward(Endpoint.on_raw_down)
    on_notification = _forward(Endpoint.on_notification)
    on_attribute_set = _forward(Endpoint.on_attribute_set)

    @property
    def cloud_attributes(self) -> dict[str, Any]:
        """A copy of the attributes the cloud pushed (see
        :attr:`DeviceClient.cloud_attributes <enos_lab.device.DeviceClient.cloud_attributes>`)."""
        return dict(self._target.cloud_attributes)

    @property
    def cloud_tags(self) -> dict[str, str]:
        """A copy of the tags the cloud pushed (as :attr:`cloud_attributes`)."""
        return dict(self._target.cloud_tags)

    @property
    def product_key(self) -> str:
        """The device's product key."""
        key: str = self._target.product_key
        return key

    @property
    def device_key(self) -> str:
        """The device's key."""
        key: str = self._target.device_key
        return key


class SyncSubDevice(_SyncEndpoint):
    """The blocking form of a :class:`~enos_lab.device.SubDevice` (from
    :meth:`Device.sub_device` or :meth:`Device.login_sub_device`)."""

    _target: SubDevice

    def __init__(self, gateway: Device, sub: SubDevice) -> None:
        self._gateway = gateway
        self._target = sub
        self._thread = gateway._thread
        self._name = f"gateway {gateway._target.device}"

    @property
    def gateway(self) -> Device:
        """The gateway it speaks through."""
        return self._gateway

    @property
    def sub_device(self) -> SubDevice:
        """The asyncio :class:`~enos_lab.device.SubDevice` behind this wrapper."""
        return self._target

    @property
    def logged_in(self) -> bool:
        """Whether the gateway logged it in."""
        return self._target.logged_in

    @property
    def device_secret(self) -> str | None:
        """Its secret, when the gateway knows it."""
        return self._target.device_secret

    logout = _blocking(SubDevice.logout)

    def __repr__(self) -> str:
        return f"<SyncSubDevice {self.product_key}/{self.device_key}>"


class Device(_SyncEndpoint):
    """An EnOS device (or gateway) for scripts and notebooks: the methods of
    :class:`~enos_lab.device.DeviceClient`, blocking (see the module docstring).

    The parameters are :class:`~enos_lab.device.DeviceClient`'s. Use it as a context manager
    (``with Device(...) as device:`` connects and disconnects) or call :meth:`connect` and
    :meth:`disconnect`.
    """

    _target: DeviceClient

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
        self._target = DeviceClient(
            host,
            port,
            product_key,
            device_key,
            device_secret,
            product_secret=product_secret,
            ssl=ssl,
            keepalive=keepalive,
            clean_session=clean_session,
            sign_method=sign_method,
            timeout=timeout,
            reconnect=reconnect,
            mode=mode,
            clock=clock,
            rng=rng,
            client_id=client_id,
            max_in_flight=max_in_flight,
            max_commands=max_commands,
        )
        self._name = f"device {self._target.device}"
        self._thread = LoopThread(f"enos-device-{self._target.device}")
        self._subs: dict[tuple[str, str], SyncSubDevice] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Start the device's loop thread and log in (see :meth:`DeviceClient.connect`)."""
        started = not self._thread.running
        self._thread.start()
        try:
            self._thread.call(self._target.connect())
        except BaseException:
            if started:
                self._thread.stop()
            raise

    def disconnect(self) -> None:
        """Disconnect (see :meth:`DeviceClient.disconnect`) and stop the loop thread
        (idempotent)."""
        if not self._thread.running:
            return
        try:
            self._thread.call(self._target.disconnect())
        finally:
            self._thread.stop()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    @contextlib.contextmanager
    def session(self) -> Iterator[Self]:
        """``with device.session():`` keeps one connection for every request in the block
        (SHORT mode; see :meth:`DeviceClient.session`)."""
        if self._target.mode is ConnectionMode.LONG:
            yield self
            return
        self._run(self._target._use())
        try:
            yield self
        finally:
            self._run(self._target._unuse())

    # -- state -----------------------------------------------------------------------------------

    @property
    def client(self) -> DeviceClient:
        """The asyncio :class:`~enos_lab.device.DeviceClient` behind this wrapper (its
        coroutines run on this device's loop thread)."""
        return self._target

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._target.connected

    @property
    def active(self) -> bool:
        """Whether :meth:`connect` succeeded and :meth:`disconnect` was not called."""
        return self._target.active

    @property
    def device_secret(self) -> str | None:
        """The device's secret (given, or issued by dynamic activation)."""
        return self._target.device_secret

    @property
    def stats(self) -> ClientStats:
        """Counters since the device was made."""
        return self._target.stats

    @property
    def on_connect(self) -> Callback | None:
        """Called after each login (on the device's loop thread)."""
        return self._target.on_connect

    @on_connect.setter
    def on_connect(self, callback: Callback | None) -> None:
        self._target.on_connect = callback

    @property
    def on_disconnect(self) -> Callback | None:
        """Called when a connection drops (on the device's loop thread)."""
        return self._target.on_disconnect

    @on_disconnect.setter
    def on_disconnect(self, callback: Callback | None) -> None:
        self._target.on_disconnect = callback

    @property
    def on_secret_issued(self) -> SecretCallback | None:
        """Called with the secret a dynamic activation issued (on the device's loop thread)."""
        return self._target.on_secret_issued

    @on_secret_issued.setter
    def on_secret_issued(self, callback: SecretCallback | None) -> None:
        self._target.on_secret_issued = callback

    # -- requests and gateway operations ---------------------------------------------------------

    wait_connected = _blocking(DeviceClient.wait_connected)
    request = _blocking(DeviceClient.request)
    post_measurepoints_batch = _blocking(Gateway.post_measurepoints_batch)
    register_sub_devices = _blocking(Gateway.register_sub_devices)
    add_topology = _blocking(Gateway.add_topology)
    delete_topology = _blocking(Gateway.delete_topology)
    get_topology = _blocking(Gateway.get_topology)
    login_sub_devices = _blocking(Gateway.login_sub_devices)
    logout_sub_device = _blocking(Gateway.logout_sub_device)

    @property
    def logged_in_sub_devices(self) -> list[tuple[str, str]]:
        """The sub-devices this gateway logged in."""
        return self._target.logged_in_sub_devices

    def sub_device(self, product_key: str, device_key: str) -> SyncSubDevice:
        """The blocking :class:`SyncSubDevice` of these keys (see
        :meth:`DeviceClient.sub_device`)."""
        keys = (product_key, device_key)
        sub = self._subs.get(keys)
        if sub is None:
            sub = SyncSubDevice(self, self._target.sub_device(product_key, device_key))
            self._subs[keys] = sub
        return sub

    def login_sub_device(
        self,
        product_key: str,
        device_key: str,
        device_secret: str | None = None,
        *,
        product_secret: str | None = None,
        clean_session: bool = False,
        timeout: float | None = None,
    ) -> SyncSubDevice:
        """Log a sub-device in through this gateway; returns its :class:`SyncSubDevice` (see
        :meth:`DeviceClient.login_sub_device`)."""
        self._run(
            self._target.login_sub_device(
                product_key,
                device_key,
                device_secret,
                product_secret=product_secret,
                clean_session=clean_session,
                timeout=timeout,
            )
        )
        return self.sub_device(product_key, device_key)

    def __repr__(self) -> str:
        return f"<Device {self._target!r}>"
