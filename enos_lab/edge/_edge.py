"""The edge gateway: field devices polled over Modbus TCP, sent to the hub as sub-devices.

Theory of operation
-------------------
An :class:`Edge` is an EnOS Edge (protocol reference 14): a gateway device whose device key is
its serial number, with one :class:`~enos_lab.device.DeviceClient` to the hub. Its field
devices (:class:`~enos_lab.edge.EdgeDevice`: a :class:`~enos_lab.edge.FieldDevice` and the
sub-device it is in the cloud) are

1. **set up** in the cloud once the edge is logged in (:mod:`enos_lab.edge._edge_setup`:
   register, attach, batch login, model check), each refusal on its own device;
2. **polled** by a :class:`~enos_lab.edge.Poller` on the edge's clock, on epoch-aligned slots
   (the first poll at :meth:`Edge.start` when it falls on a slot; a change of the devices
   polled starts a new poller at the next slot, so that no slot is polled twice);
3. **selected** by the upload mode (:class:`~enos_lab.edge.UploadFilter`) and **sent** by the
   :class:`~enos_lab.edge._uplink.Uplink`: live batch posts while the edge is online, the
   local :class:`~enos_lab.edge.SampleCache` (a folder of its own) while it is not, and the
   backlog resumed in chronological order once it is back.

The edge owns its connection: when it drops, the edge reconnects with its backoff
(``EdgeConfig.reconnect``, delays on the clock), counting the logins the hub refuses (an
unknown or revoked serial number) and trying again; the client logs the sub-devices in again
after each reconnect, and those it cannot, or that the cloud disabled, are tried every
``relogin_interval``. Faults stay with their device and are counted there: a Modbus timeout or
exception response (poll errors), a point table that does not fit the sub-device's model (not
polled), a sub-device whose login is refused (its samples are dropped), samples the hub refuses,
samples the full cache lost. :meth:`Edge.status` has one row per field device.

Time: everything the edge schedules runs on its clock. On a
:class:`~enos_lab.clock.SimulatedClock` Modbus and MQTT still take real time: :meth:`Edge.idle`
waits until nothing is left to do before the clock moves, and :func:`advance_edges` steps the
clock for one or several edges, to each time an edge acts by itself (a poll slot, a reconnect
attempt, a resume batch), waiting for them after each step. The connection's supervision is
in :mod:`enos_lab.edge._edge_link`, the stepping in :mod:`enos_lab.edge._edge_clock`.

Use an edge on one event loop: ``await edge.start()`` ... ``await edge.stop()`` (or ``async
with``); :meth:`Edge.abort` ends it at once, as a power loss would, dropping what it had not
sent or cached.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl as ssl_module
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..clock import Clock, SimulatedClock, SystemClock
from ..device import DeviceClient
from ..errors import DeviceError, InvalidArgument, LoginRefused, RequestFailed
from ._cache import SampleCache
from ._edge_clock import advance_edges, first_poll_in
from ._edge_config import EdgeConfig, EdgeDevice
from ._edge_link import RETRIED, Supervision
from ._edge_setup import Entry, LinkLost, Setup, status_frame
from ._edge_stats import (
    EdgeError,
    EdgeErrorKind,
    EdgeState,
    EdgeStats,
    SubDeviceState,
    SubDeviceStats,
)
from ._poller import DeviceStats, Poller, PollError, Sample
from ._uplink import Uplink
from ._upload import UploadFilter

__all__ = ["Edge"]

log = logging.getLogger("enos_lab.edge")

_POLLED = frozenset({SubDeviceState.PENDING, SubDeviceState.ONLINE, SubDeviceState.LOGIN_FAILED})
_COLLECTED = frozenset({SubDeviceState.PENDING, SubDeviceState.ONLINE})


class Edge(Supervision):
    """An edge gateway (see the module docstring).

    Parameters
    ----------
    host, port:
        The hub's MQTT listener (``lab.host``, ``lab.port``; or a fault-injecting
        :class:`~enos_lab.sim.Link` in front of it).
    product_key, serial_number, device_secret:
        The edge's product, its serial number (its device key) and its secret
        (``lab.register_edge(serial_number)`` registers one).
    devices:
        Its field devices and their sub-devices (more with :meth:`add_devices`).
    cache_dir:
        The folder of its local cache (created 0700; the cache survives a restart).
    config:
        Collection, upload, cache and connection settings (:class:`~enos_lab.edge.EdgeConfig`).
    clock:
        Polls, upload periods, request timeouts and reconnect delays run on it (the lab's).
    rng:
        Random source of the reconnect jitter (``random.Random(seed)``: repeatable).
    ssl:
        An :class:`ssl.SSLContext` (or ``True``) for TLS to the hub.
    recent_errors:
        How many recent errors :attr:`errors` keeps.
    """

    def __init__(  # noqa: PLR0917
        self,
        host: str,
        port: int,
        product_key: str,
        serial_number: str,
        device_secret: str,
        devices: Iterable[EdgeDevice] = (),
        *,
        cache_dir: str | Path,
        config: EdgeConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        ssl: ssl_module.SSLContext | bool = False,
        recent_errors: int = 100,
    ) -> None:
        self._config = config = config or EdgeConfig()
        self._clock: Clock = clock or SystemClock()
        keepalive = config.keepalive
        if keepalive is None:
            keepalive = 0 if isinstance(self._clock, SimulatedClock) else 60
        self._rng = rng or random.Random()
        self._client = DeviceClient(
            host,
            port,
            product_key,
            serial_number,
            device_secret,
            ssl=ssl,
            keepalive=keepalive,
            timeout=config.request_timeout,
            reconnect=None,  # the edge reconnects itself (it must know when it is trying)
            clock=self._clock,
            rng=self._rng,
        )
        self._client.on_disconnect = self._connection_lost
        self._client.on_notification(self._notified)
        self._cache = SampleCache(
            cache_dir, max_samples=config.cache_max_samples, max_bytes=config.cache_max_bytes
        )
        self._filter = UploadFilter(
            config.upload,
            period=config.period,
            deadbands=config.deadbands,
            default_deadband=config.default_deadband,
        )
        self._entries: dict[str, Entry] = {}
        self._by_keys: dict[tuple[str, str], str] = {}
        for device in devices:
            self._add_entry(device)
        self._errors: deque[EdgeError | PollError] = deque(maxlen=recent_errors)
        self._uplink = Uplink(
            self._client,
            self._cache,
            config,
            self._clock,
            keys=self._route,
            stats=self._stats_of,
            on_error=self._uplink_error,
            on_change=self._changed,
        )
        self._setup = Setup(self._client, config.request_timeout, self._fail)
        self._state = EdgeState.STOPPED
        self._running = False
        self._poller: Poller | None = None
        self._polled: tuple[str, ...] = ()
        # [s, clock monotonic] when the edge acts next by itself, per kind of action
        self._start_due: float | None = None  # the next poller starts
        self._attempt_due: float | None = None  # the next reconnect attempt
        self._relogin_due: float | None = None  # the next login of failed sub-devices
        self._starter: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()  # for the supervisor: a loss, or a retry asked for
        self._retry_asked = False
        self._progress = asyncio.Event()  # set on every change that idle() looks at
        self._busy = 0  # connects and setups in progress
        self._connects = 0
        self._disconnects = 0
        self._refusals = 0

    # -- what it is ----------------------------------------------------------------------------

    @property
    def product_key(self) -> str:
        """The edge's product key."""
        return self._client.product_key

    @property
    def serial_number(self) -> str:
        """The edge's serial number (its device key)."""
        return self._client.device_key

    @property
    def keys(self) -> tuple[str, str]:
        """``(product_key, serial_number)``."""
        return self._client.keys

    @property
    def client(self) -> DeviceClient:
        """The edge's gateway client (its sub-devices: ``client.sub_device(pk, dk)``)."""
        return self._client

    @property
    def config(self) -> EdgeConfig:
        """The edge's settings."""
        return self._config

    @property
    def clock(self) -> Clock:
        """The edge's clock."""
        return self._clock

    @property
    def cache(self) -> SampleCache:
        """The local cache (``await edge.cache.stats()``)."""
        return self._cache

    @property
    def state(self) -> EdgeState:
        """The link to the hub now."""
        return self._state

    @property
    def devices(self) -> tuple[EdgeDevice, ...]:
        """The field devices on the edge (not those removed)."""
        return tuple(
            e.mapping for e in self._entries.values() if e.state is not SubDeviceState.REMOVED
        )

    @property
    def errors(self) -> tuple[EdgeError | PollError, ...]:
        """The most recent errors of its field devices, oldest first."""
        return tuple(self._errors)

    @property
    def stats(self) -> EdgeStats:
        """The edge's counters (a snapshot)."""
        uplink = self._uplink
        return EdgeStats(
            self._state,
            self._connects,
            self._disconnects,
            self._refusals,
            uplink.live_posts,
            uplink.resume_posts,
            uplink.failed_posts,
            uplink.queued,
        )

    @property
    def step(self) -> float:
        """The longest step :func:`advance_edges` takes with this edge: its poll interval or
        its request timeout, whichever is shorter (so that no request times out while the
        clock jumps). [s]"""
        return min(self._config.interval, self._config.request_timeout)

    def device_state(self, device: str) -> SubDeviceState:
        """Where field device ``device``'s sub-device stands."""
        return self._entry(device).state

    def device_stats(self, device: str) -> SubDeviceStats:
        """A copy of field device ``device``'s sample counters."""
        return self._entry(device).stats.copy()

    def poll_stats(self, device: str) -> DeviceStats:
        """Field device ``device``'s poll counters since the edge was made."""
        entry = self._entry(device)
        total = entry.polls.copy()
        poller = self._poller
        if poller is not None and device in self._polled:
            _add_polls(total, poller.stats(device))
        return total

    def __repr__(self) -> str:
        return (
            f"<Edge {self.product_key}/{self.serial_number} {self._state.value}, "
            f"{len(self.devices)} field devices>"
        )

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self) -> Edge:
        """Open the cache, log in, set the sub-devices up and start polling; returns the edge.

        Raises :class:`~enos_lab.errors.LoginRefused` when the hub refuses the edge (an unknown
        or revoked serial number). When the hub cannot be reached the edge starts offline:
        it collects into its cache and keeps reconnecting.
        """
        if self._running:
            return self
        self._running = True
        try:
            await self._cache.open()
            self._busy += 1
            try:
                await self._connect()
                await self._run_setup(self._needing_setup())
                self._wake_drain()  # a backlog from an earlier run
            except LoginRefused:
                raise
            except (DeviceError, OSError) as exc:
                log.warning(
                    "edge %s starts offline (%s); collecting into its cache", self._who, exc
                )
            finally:
                self._busy -= 1
            await self._uplink.start(self._who)
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"edge supervisor {self._who}"
            )
            await self._repoll(first=True)
        except BaseException:
            await self._shutdown(flush=False)
            raise
        return self

    async def stop(self) -> None:
        """Stop polling, send (or cache, when offline) what was collected, log out, close the
        cache; the backlog stays in the cache for the next start. Idempotent."""
        await self._shutdown(flush=True)

    async def abort(self) -> None:
        """End the edge at once: no flush, what was queued is lost (the cache keeps what it
        holds). A power loss as the edge sees it; the hub sees one only when the connection
        is cut under it (a :class:`~enos_lab.sim.Link`)."""
        await self._shutdown(flush=False)

    async def __aenter__(self) -> Edge:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _shutdown(self, *, flush: bool) -> None:
        if not self._running:
            return
        self._running = False
        await self._stop_polling()
        if flush:
            held = self._filter.flush()
            if held:
                await self._uplink.push(held)
        await self._uplink.stop(flush=flush)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        await self._client.disconnect()
        await self._cache.close()
        self._state = EdgeState.STOPPED
        self._changed()

    # -- field devices -------------------------------------------------------------------------

    async def add_devices(self, devices: Iterable[EdgeDevice]) -> None:
        """Put more field devices on the edge (a device removed before may come back): set up
        at once when online, polled from the next slot."""
        entries = [self._add_entry(device) for device in devices]
        if not self._running or not entries:
            return
        if self._client.connected:
            await self._set_up([e for e in entries if e.state in RETRIED])
        else:
            await self._repoll()

    async def remove_devices(self, names: Iterable[str]) -> None:
        """Take field devices off the edge: they are no longer polled (from the next slot),
        their queued samples are sent, and their sub-devices are logged out and detached.
        Their cached samples, if any, can no longer be resumed by this edge (counted as
        rejected when the drain meets them)."""
        entries = [self._entry(name) for name in names]
        entries = [e for e in entries if e.state is not SubDeviceState.REMOVED]
        if not entries:
            return
        for entry in entries:
            entry.leaving = True
        try:
            if self._running:
                await self._repoll()
                await self._uplink.settle()
            keys = [e.keys for e in entries]
            for entry in entries:
                entry.state = SubDeviceState.REMOVED
                self._by_keys.pop(entry.keys, None)
            if self._running and self._client.connected:
                await self._detach(keys)
        finally:
            for entry in entries:
                entry.leaving = False
            self._changed()

    async def _detach(self, keys: list[tuple[str, str]]) -> None:
        client, timeout = self._client, self._config.request_timeout
        try:
            for pk, dk in keys:
                if client.sub_device(pk, dk).logged_in:
                    await client.logout_sub_device(pk, dk, timeout=timeout)
            await client.delete_topology(keys, timeout=timeout)
        except (RequestFailed, *LinkLost) as exc:
            log.warning("edge %s: detaching %s failed: %s", self._who, keys, exc)

    def _add_entry(self, device: EdgeDevice) -> Entry:
        existing = self._entries.get(device.name)
        if existing is not None:
            if existing.state is not SubDeviceState.REMOVED or existing.keys != device.keys:
                raise InvalidArgument(
                    f"edge {self._who}: a field device named {device.name!r} is on it already"
                )
            existing.mapping = device
            existing.state = SubDeviceState.PENDING
            existing.secret = device.device_secret or existing.secret
            self._by_keys[device.keys] = device.name
            return existing
        if device.keys in self._by_keys:
            raise InvalidArgument(
                f"edge {self._who}: sub-device {device.product_key}/{device.device_key} is "
                f"mapped to field device {self._by_keys[device.keys]!r} already"
            )
        entry = Entry(device, secret=device.device_secret)
        self._entries[device.name] = entry
        self._by_keys[device.keys] = device.name
        return entry

    def _entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise InvalidArgument(
                f"edge {self._who} has no field device {name!r} (devices: "
                f"{', '.join(self._entries) or 'none'})"
            ) from None

    def _stats_of(self, name: str) -> SubDeviceStats | None:
        entry = self._entries.get(name)
        return entry.stats if entry is not None else None

    def _route(self, name: str) -> tuple[str, str] | None:
        entry = self._entries.get(name)
        if entry is None or entry.state is SubDeviceState.REMOVED:
            return None
        return entry.keys

    # -- polling -------------------------------------------------------------------------------

    async def _repoll(self, *, first: bool = False) -> None:
        """Poll the devices that should be polled: a new poller from the next slot when the
        set changed (the old one finishes its poll first)."""
        wanted = tuple(
            name
            for name, entry in self._entries.items()
            if entry.state in _POLLED and not entry.leaving
        )
        if wanted == self._polled and (self._poller is not None or self._starter is not None):
            return
        await self._stop_polling()
        self._polled = wanted
        if not wanted or not self._running:
            return
        config, clock = self._config, self._clock
        poller = Poller(
            [self._entries[name].mapping.field for name in wanted],
            interval=config.interval,
            timeout=config.timeout,
            clock=clock,
            on_sample=self._on_sample,
            on_error=self._on_poll_error,
        )
        delay = first_poll_in(clock.time_ms(), config.interval, config.align, first)
        self._poller = poller
        if delay <= 0:
            await poller.start()
            return
        self._start_due = clock.monotonic() + delay
        self._starter = asyncio.get_running_loop().create_task(
            self._start_later(poller, delay), name=f"edge poll start {self._who}"
        )

    async def _start_later(self, poller: Poller, delay: float) -> None:
        try:
            await self._clock.sleep(delay)
            await poller.start()
        finally:
            self._start_due = None
            self._starter = None
            self._changed()

    async def _stop_polling(self) -> None:
        starter, self._starter = self._starter, None
        if starter is not None:
            starter.cancel()
            await asyncio.gather(starter, return_exceptions=True)
        self._start_due = None
        poller, self._poller = self._poller, None
        if poller is None:
            return
        if poller.running and self._running:
            await poller.idle()  # the slot being polled is finished
        await poller.stop()
        for name in self._polled:
            _add_polls(self._entries[name].polls, poller.stats(name))
        self._polled = ()
        self._changed()

    async def _on_sample(self, sample: Sample) -> None:
        entry = self._entries.get(sample.device)
        if entry is None:
            return
        if entry.state not in _COLLECTED:
            entry.stats.dropped += 1
            return
        selected = self._filter.push(sample)
        if selected:
            await self._uplink.push(selected)

    def _on_poll_error(self, error: PollError) -> None:
        entry = self._entries.get(error.device)
        if entry is not None:
            entry.last_error = error
        self._errors.append(error)

    # -- errors --------------------------------------------------------------------------------

    def _fail(self, entry: Entry, kind: EdgeErrorKind, message: str, code: int | None) -> None:
        error = EdgeError(entry.name, self._clock.now(), kind, message, code)
        entry.last_error = error
        self._errors.append(error)
        level = logging.DEBUG if kind in entry.warned else logging.WARNING
        entry.warned.add(kind)
        log.log(level, "edge %s: %s", self._who, message)

    def _uplink_error(
        self, device: str, kind: EdgeErrorKind, message: str, code: int | None
    ) -> None:
        entry = self._entries.get(device)
        if entry is not None:
            self._fail(entry, kind, message, code)

    # -- waiting -------------------------------------------------------------------------------

    def _changed(self) -> None:
        self._progress.set()

    def _wake_drain(self) -> None:
        self._uplink.wake()

    def _timers(self) -> list[float | None]:
        """When the edge's own waits on the clock end (``None``: not waiting)."""
        return [self._start_due, self._attempt_due, self._relogin_due, self._uplink.pause_due]

    def _quiet(self) -> bool:
        now = self._clock.monotonic()
        return (
            self._busy == 0
            and all(due is None or due > now for due in self._timers())
            and self._uplink.quiet()
        )

    async def idle(self) -> None:
        """Wait until the edge has nothing to do before its clock moves: no poll, post,
        connection attempt or setup in progress or due now."""
        while True:
            poller = self._poller
            polling = poller is not None and poller.running
            if poller is not None and polling:
                await poller.idle()
            while not self._quiet():
                self._progress.clear()
                await self._progress.wait()
            if poller is self._poller and polling == (poller is not None and poller.running):
                return

    def next_due(self) -> float | None:
        """When the edge acts next by itself, on its clock's monotonic scale: its next poll
        slot, reconnect attempt, resume batch or sub-device login; ``None`` when nothing is
        scheduled (or the next poll is not on an aligned slot). [s]"""
        clock = self._clock
        times = self._timers()
        poller = self._poller
        if poller is not None and poller.running and self._config.align:
            step = round(self._config.interval * 1000)
            now_ms = clock.time_ms()
            times.append(clock.monotonic() + (now_ms // step * step + step - now_ms) / 1000)
        due = [t for t in times if t is not None]
        return min(due) if due else None

    async def wait_state(self, state: EdgeState, timeout: float) -> bool:
        """Wait until the edge is in ``state``: True, or False after ``timeout`` seconds of
        real time (a connection takes real time whatever the clock). [s]"""

        async def reached() -> None:
            while self._state is not state:
                self._progress.clear()
                await self._progress.wait()

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            return False
        return True

    async def advance(self, seconds: float) -> None:
        """Step a :class:`~enos_lab.clock.SimulatedClock` forward by ``seconds`` with this
        edge (:func:`advance_edges`). [s]"""
        await advance_edges([self], seconds)

    # -- status --------------------------------------------------------------------------------

    async def status(self) -> pd.DataFrame:
        """One row per field device (:data:`STATUS_COLUMNS`), in the order they were added
        (removed ones included, state ``removed``)."""
        return status_frame((entry, self.poll_stats(name)) for name, entry in self._entries.items())

    @property
    def _who(self) -> str:
        return self._client.device


def _add_polls(total: DeviceStats, more: DeviceStats) -> None:
    total.polls += more.polls
    total.samples += more.samples
    for kind, count in more.errors.items():
        total.errors[kind] += count
    total.consecutive_failures = more.consecutive_failures
    if more.last_error is not None:
        total.last_error = more.last_error
