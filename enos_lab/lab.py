"""The composition root: a :class:`Lab` owns the event loop thread and everything on it.

Theory of operation
-------------------
The hub and every long-running service run on one asyncio event loop in a background thread that
the lab starts and stops. Notebook cells and scripts call the synchronous, thread-safe facade
(``lab.start()``, ``lab.publish(...)``, ``lab.stop()``); each call schedules a coroutine on the
lab's loop with :func:`asyncio.run_coroutine_threadsafe` and waits for its result. asyncio users get
the same operations as coroutines (``await lab.astart()``, ``await lab.apublish(...)``), which wait
without blocking their own loop. Nothing here ever calls :func:`asyncio.run` inside a running loop,
so the official EnOS SDK (which blocks in ``connect()`` until CONNACK) works from a notebook cell.

``Lab(data_dir=...)`` keeps everything in that directory; without one a temporary directory is
created by :meth:`Lab.start` and removed by :meth:`Lab.stop`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .errors import ClosedError, InvalidArgument
from .hub import Hub, HubConfig, Listener, Message
from .mqtt import NO_PROPERTIES, Properties
from .store import TimeSeriesStore

__all__ = ["DEFAULT_PORT", "Lab"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 11883
"""The conventional EnOS MQTT port (plain TCP). [-]"""

T = TypeVar("T")


class Lab:
    """A running laboratory: the hub on a background event loop, with a synchronous facade.

    Parameters
    ----------
    data_dir:
        Directory for everything the lab keeps; ``None`` uses a temporary directory that
        :meth:`stop` removes.
    host:
        Address the MQTT listener binds. Loopback by default.
    port:
        TCP port of the MQTT listener; ``0`` picks a free one (read it back from :attr:`port`).
        Defaults to the conventional EnOS port 11883.
    anonymous:
        ``True`` turns the hub into a plain MQTT broker that accepts every client without
        authentication. Insecure: for generic MQTT tooling and conformance tests only.
    hub_config:
        Advanced hub settings; ``anonymous`` above overrides its ``anonymous`` field.

    Use it as a context manager (``with Lab(port=0) as lab: ...``) or call :meth:`start` and
    :meth:`stop`; from asyncio, ``async with Lab(port=0) as lab: ...``.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        anonymous: bool = False,
        hub_config: HubConfig | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be in 0..65535, got {port!r}")
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._host = host
        self._requested_port = port
        base = hub_config or HubConfig()
        if base.anonymous != anonymous:
            fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
            fields["anonymous"] = anonymous
            base = HubConfig(**fields)
        self._config = base
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hub: Hub | None = None
        self._store: TimeSeriesStore | None = None
        self._listener: Listener | None = None
        self._data_dir: Path | None = None
        self._temporary_dir = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread, the hub and its TCP listener; returns the lab itself."""
        with self._lock:
            if self._loop is not None:
                return self
            self._check_not_on_loop()
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run_loop, args=(loop, ready), name="enos-lab-loop", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            try:
                self._prepare_data_dir()
                self._submit(self._start_services()).result()
            except BaseException:
                self._shutdown_loop()
                self._cleanup_data_dir()
                raise
        if self._config.anonymous:
            log.warning(
                "enos_lab hub is ANONYMOUS on %s: every MQTT client is accepted without "
                "authentication and may publish or subscribe to any topic",
                self.url,
            )
        return self

    def stop(self) -> None:
        """Stop the hub and the loop thread; remove the temporary data directory. Idempotent."""
        with self._lock:
            if self._loop is None:
                return
            self._check_not_on_loop()
            try:
                self._submit(self._stop_services()).result()
            finally:
                self._shutdown_loop()
                self._cleanup_data_dir()

    async def astart(self) -> Self:
        """Coroutine form of :meth:`start` (does not block the caller's event loop)."""
        await asyncio.to_thread(self.start)
        return self

    async def astop(self) -> None:
        """Coroutine form of :meth:`stop` (does not block the caller's event loop)."""
        await asyncio.to_thread(self.stop)

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
        return await self.astart()

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
        return self._loop is not None

    @property
    def hub(self) -> Hub:
        """The hub. Its coroutines must run on the lab's loop (see :meth:`run`)."""
        if self._hub is None:
            raise ClosedError("the lab is not running: call start() first")
        return self._hub

    @property
    def store(self) -> TimeSeriesStore:
        """The time-series store (DuckDB in the data directory); thread-safe, sync and async."""
        if self._store is None:
            raise ClosedError("the lab is not running: call start() first")
        return self._store

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

    # -- operations ------------------------------------------------------------------------

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

    async def apublish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> int:
        """Coroutine form of :meth:`publish`."""
        message = _message(topic, payload, qos, retain, properties)
        return await self.arun(self.hub.publish(message))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the lab's loop from another thread and return its result."""
        self._check_not_on_loop(coro)
        return self._submit(coro).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the lab's loop and await it from any other event loop."""
        self._check_not_on_loop(coro)
        return await asyncio.wrap_future(self._submit(coro))

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        loop.close()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        loop = self._loop
        if loop is None:
            coro.close()
            raise ClosedError("the lab is not running: call start() first")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _check_not_on_loop(self, coro: Coroutine[Any, Any, Any] | None = None) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            if coro is not None:
                coro.close()
            raise InvalidArgument(
                "the synchronous Lab facade was called from the lab's own event loop thread; "
                "await the hub's coroutines directly there instead"
            )

    async def _start_services(self) -> None:
        try:
            self._store = await asyncio.to_thread(TimeSeriesStore, self.data_dir)
            self._hub = Hub(self._config)
            await self._hub.start()
            self._listener = await self._hub.listen_tcp(self._host, self._requested_port)
        except BaseException:
            await self._stop_services()
            raise

    async def _stop_services(self) -> None:
        hub, self._hub, self._listener = self._hub, None, None
        store, self._store = self._store, None
        try:
            if hub is not None:
                await hub.stop()
        finally:
            if store is not None:
                await asyncio.to_thread(store.close)

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        self._hub = self._listener = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()

    def _prepare_data_dir(self) -> None:
        if self._requested_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="enos-lab-"))
            self._temporary_dir = True
        else:
            self._requested_dir.mkdir(parents=True, exist_ok=True)
            self._data_dir = self._requested_dir
            self._temporary_dir = False

    def _cleanup_data_dir(self) -> None:
        if self._temporary_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None
        self._temporary_dir = False

    def _running_listener(self) -> Listener:
        if self._listener is None:
            raise ClosedError("the lab is not running: call start() first")
        return self._listener

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self._listener is not None else "stopped"
        return f"<Lab {state}>"


def _message(
    topic: str, payload: bytes | str, qos: int, retain: bool, properties: Properties
) -> Message:
    if qos not in (0, 1, 2):
        raise InvalidArgument(f"qos must be 0, 1 or 2, got {qos!r}")
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    return Message(topic=topic, payload=data, qos=qos, retain=retain, properties=properties)
