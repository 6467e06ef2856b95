"""Simulated fleets: devices driven by a profile on the lab's clock, each a device client over TCP.

Theory of operation
-------------------
A :class:`Fleet` is many simulated devices in one event loop. Each is a
:class:`~enos_lab.device.DeviceClient` logged in to the hub (directly, or through a fault-injecting
:class:`~enos_lab.sim.Link`), following a profile (:mod:`enos_lab.sim._profile`) and posting all
of its model's measurepoints every ``interval`` seconds of the fleet's clock:

- **Schedule.** Device ``i`` takes sample ``k`` (k = 0, 1, ...) at ``start + offset_i + k *
  interval``; ``offset_i`` is one interval (``spread=False``: the devices sample together, at
  the end of each interval) or ``(i + 1) / n`` of it (``spread=True``: evenly spread). Devices
  due at the same time share one timer of the clock (:meth:`Clock.call_at
  <enos_lab.clock.Clock.call_at>`); when it fires, each takes its sample and files its next one.
- **A sample** is the profile's values at the clock's time (with the device's own noise), posted
  with ``post_measurepoints`` and stamped with the device's time: the clock's time plus the
  device's skew. A device without a connection does not post (``offline``); one with
  ``max_in_flight`` posts waiting does not post either (``overruns``). Each post is a task the
  fleet owns; its outcome goes to the device's counters (:data:`COUNTERS
  <enos_lab.sim._fleet_state.COUNTERS>`).
- **Connections.** :meth:`Fleet.start` logs the devices in, at most ``max_connecting`` at once.
  The clients do not reconnect by themselves (``reconnect=None``): when a connection drops, the
  fleet waits ``backoff.delay(attempt)`` on its clock and logs the device in again, counting
  refused logins and other failures (:mod:`enos_lab.sim._fleet_logins`), so that reconnect
  storms, power losses and wrong credentials are the fleet's to time and count
  (:mod:`enos_lab.sim._fleet_faults`).
- **Simulated time.** On a :class:`~enos_lab.clock.SimulatedClock`, :meth:`Fleet.run` steps the
  clock from one due timer to the next (the fleet's samples and reconnects, the hub's keep-alive
  sweep, request timeouts, the link's delays, in order) and after each step waits until the
  fleets on the clock are idle: every post of the step answered and every login finished
  (:mod:`enos_lab.sim._fleet_steps`). So a run is deterministic for a seed: the same samples,
  times, replies and stored rows run after run. A post that cannot be answered without the
  clock moving (a fault lost it) holds a step for at most ``settle`` seconds of wall time;
  posts of devices the fleet partitioned are not waited for, and neither are posts behind
  packets that the link holds for the clock (a delay, a reorder window). On the system clock
  the fleet runs in real time from :meth:`Fleet.start` until :meth:`Fleet.stop`;
  :meth:`Fleet.run` only waits.

Keep alive: the hub checks keep alive on its clock (the lab's), so on a simulated clock an idle
device is closed once the clock passes 1.5 x its keep alive. Fleet devices use a keep alive well
above their posting interval (``keepalive=None``: three intervals, at least 60 s), so a posting
device stays connected and one that stops (a partition, a crash) is closed by the hub after 4.5
intervals, as on a real hub.

Bounds: one task per post in flight (at most ``max_in_flight`` per device) and per login in
progress (at most ``max_connecting`` during :meth:`Fleet.start`); one timer per distinct due time
and per pending reconnect; the reconnection records and the latency samples are bounded
(``max_records``, ``latency_samples``). Memory per device: see
:mod:`enos_lab.sim._fleet_state` (25-30 KiB with its connection, plus its share of a profile
state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl as ssl_module
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Self

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..clock import Clock, SimulatedClock, SystemClock, TimerHandle
from ..device import DEFAULT_BACKOFF, Backoff, DeviceClient
from ..errors import (
    ClosedError,
    EnosLabError,
    InvalidArgument,
    NotConnected,
    RequestFailed,
    RequestTimeout,
)
from ._faults import Link
from ._fleet_faults import FleetFaults
from ._fleet_logins import FleetLogins
from ._fleet_state import (
    COUNTERS,
    LatencyRing,
    Reconnection,
    SimDevice,
    reconnections_frame,
    stats_frame,
)
from ._fleet_steps import Activity, Cohort, cohort, span_of, step
from ._profile import Profile
from ._profiles import profile_for

__all__ = ["Fleet"]

log = logging.getLogger("enos_lab.sim")


class Fleet(FleetLogins, FleetFaults):
    """Simulated devices posting a profile's values on a clock (see the module docstring).

    Parameters
    ----------
    host, port:
        The hub's MQTT listener.
    devices:
        ``(product_key, device_key, device_secret)`` of each device (registered in the hub;
        device keys unique in the fleet). ``lab.simulate`` registers them for you.
    profile:
        A :class:`~enos_lab.sim.Profile`, or a library model id for its default profile
        (``"pv_inverter"``); every sample has all of the model's measurepoints.
    interval:
        Time between two samples of a device, on ``clock``. [s]
    clock:
        The fleet's clock: the lab's (``lab.clock``). A
        :class:`~enos_lab.clock.SimulatedClock` makes runs deterministic (:meth:`run` steps it);
        the system clock runs in real time.
    seed:
        Seed of everything random: the profile states, each device's noise, the reconnect
        jitter, the link's choices.
    spread:
        Spread the devices' samples evenly over the interval instead of sampling together.
    states:
        How many profile states the devices follow: device ``i`` follows state ``i % states``
        (the same site, weather and physics; noise of its own). ``None``: one each. A state
        keeps a block of the profile's grid, 0.25-0.37 MiB: use a few hundred at most for fleets
        of thousands.
    link:
        ``True``: connect through a :class:`~enos_lab.sim.Link` of the fleet's own (started
        and closed with the fleet), which the packet faults, partitions, power losses and
        reconnect storms need; a started ``Link`` to the hub: through that one; ``False``:
        directly.
    keepalive:
        MQTT keep alive of the devices; ``None``: three intervals, at least 60 s and at most
        65,535 s (see the module docstring). [s]
    timeout:
        Longest wait for a reply or a CONNACK, on ``clock``. [s]
    backoff:
        Reconnect policy after a lost connection (delays on ``clock``).
    max_connecting:
        Most logins in progress at once during :meth:`start`.
    max_in_flight:
        Most posts of one device waiting for their reply; a sample beyond it is not posted.
    settle:
        Longest wall time a step of :meth:`run` waits for posts and logins on a simulated
        clock before the clock moves on. [s]
    latency_samples:
        Reply latencies kept for :meth:`totals` (the latest ones).
    max_records:
        Reconnections kept for :meth:`reconnections` (the latest ones).
    ssl:
        Connect over TLS (``host``:``port`` being the hub's TLS listener): one client
        ``SSLContext`` for every device, or a function ``(product_key, device_key) ->
        SSLContext`` for a context per device (mutual TLS, each device presenting its own
        certificate); ``None``: plain TCP. Not with ``link``.

    Start it on the event loop that will run it (``await fleet.start()``), run it
    (``await fleet.run(duration=...)``) and stop it (``await fleet.stop()``); ``async with``
    starts and stops it. The fault calls are in :class:`~enos_lab.sim._fleet_faults.FleetFaults`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        devices: Iterable[tuple[str, str, str]],
        profile: Profile | str,
        *,
        interval: float = 60.0,
        clock: Clock | None = None,
        seed: int = 0,
        spread: bool = False,
        states: int | None = None,
        link: Link | bool = False,
        keepalive: int | None = None,
        timeout: float = 30.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_connecting: int = 64,
        max_in_flight: int = 4,
        settle: float = 2.0,
        latency_samples: int = 100_000,
        max_records: int = 100_000,
        ssl: ssl_module.SSLContext | Callable[[str, str], ssl_module.SSLContext] | None = None,
    ) -> None:
        self.profile: Profile = profile_for(profile) if isinstance(profile, str) else profile
        """The profile every device follows."""
        _check(
            ("interval", interval, 0.001 <= interval <= 86_400.0 * 366),
            ("seed", seed, type(seed) is int and seed >= 0),
            ("states", states, states is None or (type(states) is int and states >= 1)),
            ("timeout", timeout, timeout > 0),
            ("max_connecting", max_connecting, max_connecting >= 1),
            ("max_in_flight", max_in_flight, max_in_flight >= 1),
            ("settle", settle, settle > 0),
            ("latency_samples", latency_samples, latency_samples >= 0),
            ("max_records", max_records, max_records >= 0),
            ("keepalive", keepalive, keepalive is None or 0 <= keepalive <= 65_535),
        )
        self.host = host
        self.port = port
        self.interval = float(interval)
        """Time between two samples of a device. [s]"""
        self.clock: Clock = clock or SystemClock()
        """The fleet's clock."""
        self.seed = seed
        self.spread = spread
        self.keepalive = (
            keepalive if keepalive is not None else min(65_535, max(60, math.ceil(3 * interval)))
        )
        """The devices' MQTT keep alive. [s]"""
        self.timeout = float(timeout)
        self.backoff = backoff
        """Reconnect policy (the fault :meth:`reconnect_storm` may change its jitter)."""
        self.max_connecting = max_connecting
        self.max_in_flight = max_in_flight
        self.settle = float(settle)
        if ssl is not None and link is not False:
            raise InvalidArgument(
                "a fleet connects over TLS or through a Link, not both (the Link reads MQTT "
                "packets, which TLS hides)"
            )
        self._link_option = link
        self._link: Link | None = link if isinstance(link, Link) else None
        self.ssl = ssl
        """The devices' TLS: one client context, a function of (product key, device key)
        giving each device's (mutual TLS with its own certificate), or ``None`` (plain
        TCP)."""
        credentials = [tuple(item) for item in devices]
        if not credentials:
            raise InvalidArgument("a fleet needs at least one device")
        keys = [str(c[1]) for c in credentials]
        if len(set(keys)) != len(keys):
            twice = sorted({k for k in keys if keys.count(k) > 1})[:5]
            raise InvalidArgument(f"device keys must be unique in a fleet, repeated: {twice}")
        self._credentials = [(str(pk), str(dk), str(secret)) for pk, dk, secret in credentials]
        self._count_states = min(states or len(credentials), len(credentials))
        self._devices: list[SimDevice] = []
        self._by_key: dict[str, SimDevice] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._running_run = False
        self._t0 = 0.0
        self._slots: dict[float, list[SimDevice]] = {}
        self._slot_timers: dict[float, TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cohort: Cohort | None = None  # the fleets on the same clock and loop
        self._activity: Activity | None = None  # this fleet's posts and logins in flight
        self._changed: asyncio.Event | None = None
        self._connecting = 0
        self._peak_connecting = 0
        self._latency = LatencyRing(latency_samples)
        self._records: deque[Reconnection] = deque(maxlen=max_records)
        self._steps = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Log every device in (at most ``max_connecting`` at once) and start sampling; returns
        the fleet. A device whose login fails is counted and tried again with the backoff.
        Nothing if already started; a stopped fleet cannot start again
        (:class:`~enos_lab.errors.ClosedError`)."""
        if self._loop is not None:
            if self._stopping:
                raise ClosedError("this fleet was stopped; make a new one")
            return self
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._changed = asyncio.Event()
        self._cohort = cohort(self.clock)
        self._activity = self._cohort.join()
        if self._link_option is True:
            self._link = await Link(self.host, self.port, seed=self.seed, clock=self.clock).start()
        if self._link is not None:
            self._cohort.linked += 1
        clock = self.clock
        start = clock.now()
        self._t0 = clock.monotonic()
        states = [
            self.profile.state(_derive(self.seed, 0, j), start) for j in range(self._count_states)
        ]
        for i, (pk, dk, secret) in enumerate(self._credentials):
            noise = np.random.default_rng([self.seed, 1, i])
            device = SimDevice(i, pk, dk, secret, states[i % len(states)], noise)
            self._devices.append(device)
            self._by_key[dk] = device
        gate = asyncio.Semaphore(self.max_connecting)
        logins = [self._spawn(self._login(d, gate)) for d in self._devices]
        await asyncio.wait(logins)
        for device in self._devices:
            device.sample = 0
            self._file(device)
        log.info(
            "fleet of %d %s devices started (%d online)",
            len(self._devices),
            self.profile.model_id,
            sum(d.online for d in self._devices),
        )
        return self

    async def stop(self) -> None:
        """Stop sampling and reconnecting, wait for the posts in flight as a step of
        :meth:`run` does (the rest are cancelled), disconnect every device and close the
        fleet's own link. Idempotent."""
        if self._loop is None or self._stopping:
            return
        self._stopping = True
        assert self._stopped is not None
        self._stopped.set()
        for timer in self._slot_timers.values():
            timer.cancel()
        self._slot_timers.clear()
        self._slots.clear()
        for device in self._devices:
            if device.timer is not None:
                device.timer.cancel()
                device.timer = None
        assert self._cohort is not None and self._activity is not None
        # the posts and logins that can end without the clock moving
        await self._cohort.settle(self.clock, self.settle, only=self._activity)
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        clients = [d.client for d in self._devices if d.client is not None]
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
        for device in self._devices:
            device.online = False
        self._activity.leave()
        if self._link is not None:
            self._cohort.linked -= 1
            if self._link_option is True:
                await self._link.close()
        log.info("fleet of %d devices stopped", len(self._devices))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- properties ------------------------------------------------------------------------------

    @property
    def link(self) -> Link | None:
        """The link the devices connect through (``None``: directly). Its scopes reach any
        device that connects through it, gateways included
        (``fleet.link.device(pk, dk).partition()``)."""
        return self._link

    @property
    def running(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` did not."""
        return self._loop is not None and not self._stopping

    @property
    def device_keys(self) -> list[str]:
        """The devices' keys, in fleet order."""
        return [dk for _, dk, _ in self._credentials]

    def __len__(self) -> int:
        return len(self._credentials)

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopping else "not started")
        online = sum(d.online for d in self._devices)
        return (
            f"<Fleet {len(self)} x {self.profile.model_id} every {self.interval:g} s, "
            f"{online} online, {state}>"
        )

    # -- counters --------------------------------------------------------------------------------

    def stats(self) -> pd.DataFrame:
        """One row per device: ``product_key, device_key, online, powered, skew`` [s],
        ``in_flight``, the counters (:data:`~enos_lab.sim._fleet_state.COUNTERS`: posted,
        replied, refused, timeouts, lost, offline, overruns, errors, logins, reconnects,
        login_refusals, connect_failures, disconnects, power_losses) and ``refused_codes``
        (reply code -> posts refused with it)."""
        return stats_frame(self._devices)

    def totals(self) -> pd.Series:
        """The fleet's counters: the sum of every device's, plus ``devices, online, powered,
        in_flight, peak_in_flight`` (the most posts one device had in flight),
        ``peak_connecting`` (the most logins in progress at once), ``steps`` (clock steps of
        :meth:`run`) and the reply latency ``latency_p50``, ``latency_p99`` [ms, on the
        fleet's clock] of the latest ``latency_samples`` replies."""
        devices = self._devices
        totals: dict[str, float] = {
            "devices": len(self._credentials),
            "online": sum(d.online for d in devices),
            "powered": sum(d.powered for d in devices),
            "in_flight": sum(d.in_flight for d in devices),
        }
        for name in COUNTERS:
            totals[name] = sum(getattr(d, name) for d in devices)
        totals["peak_in_flight"] = max((d.peak_in_flight for d in devices), default=0)
        totals["peak_connecting"] = self._peak_connecting
        totals["steps"] = self._steps
        latencies = self._latency.values()
        for name, q in (("latency_p50", 50), ("latency_p99", 99)):
            totals[name] = float(np.percentile(latencies, q)) * 1000 if len(latencies) else math.nan
        return pd.Series(totals, name="fleet")

    def latencies(self) -> np.ndarray:
        """The latest reply latencies, on the fleet's clock (0 on a simulated clock, which does
        not move while a step waits for replies). [s]"""
        return self._latency.values()

    def reconnections(self) -> pd.DataFrame:
        """Each time a device came back after a lost connection or a power loss, oldest first
        (the latest ``max_records``): ``device_key``, ``lost``, ``back`` (tz-aware UTC, fleet
        clock), ``downtime`` [s] and ``attempts`` (login attempts it took). The spread of
        ``back`` after a reconnect storm shows the jitter at work."""
        return reconnections_frame(self._records)

    # -- running ---------------------------------------------------------------------------------

    async def run(
        self,
        duration: float | timedelta | None = None,
        *,
        until: datetime | None = None,
        progress: bool = False,
    ) -> None:
        """Run for ``duration`` (seconds or a timedelta) or ``until`` a time of the fleet's
        clock. On a :class:`~enos_lab.clock.SimulatedClock` step the clock there (see the module
        docstring) and return with every sample up to that time posted and answered; on the
        system clock wait that long while the fleet runs (neither given: until :meth:`stop`).
        ``progress`` shows a tqdm bar of the time covered. [s]"""
        self._check_running()
        span = span_of(self.clock, duration, until)
        if self._running_run:
            raise InvalidArgument("the fleet is already running a run(); wait for it to end")
        clock = self.clock
        if span is None and isinstance(clock, SimulatedClock):
            raise InvalidArgument("on a simulated clock, run() needs a duration or until")
        self._running_run = True
        bar = tqdm(
            total=None if span is None else round(span),
            unit="s",
            desc=f"fleet of {len(self)}",
            disable=not progress,
        )
        stopped, shared = self._stopped, self._cohort
        assert stopped is not None and shared is not None
        try:
            if isinstance(clock, SimulatedClock):
                assert span is not None
                self._steps += await step(clock, span, shared, self.settle, bar, stopped)
            else:
                await self._wait(span, bar)
        finally:
            bar.close()
            self._running_run = False

    async def _wait(self, span: float | None, bar: Any) -> None:
        """Real time: wait ``span`` (``None``: until stopped), updating ``bar``."""
        assert self._stopped is not None
        loop = asyncio.get_running_loop()
        begin = loop.time()
        shown = 0
        while not self._stopped.is_set():
            left = None if span is None else span - (loop.time() - begin)
            if left is not None and left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopped.wait(), 0.5 if left is None else min(left, 0.5)
                )
            done = round(loop.time() - begin)
            if done > shown:
                bar.update(done - shown)
                shown = done

    def _check_running(self) -> None:
        if self._loop is None:
            raise ClosedError("the fleet is not started: await fleet.start() first")
        if self._stopping:
            raise ClosedError("the fleet is stopped")

    # -- the schedule ----------------------------------------------------------------------------

    def _due(self, device: SimDevice) -> float:
        n = len(self._credentials)
        offset = (device.index + 1) / n if self.spread else 1.0
        return self._t0 + (offset + device.sample) * self.interval

    def _file(self, device: SimDevice) -> None:
        """File the device's next sample under its due time (one clock timer per time)."""
        due = self._due(device)
        slot = self._slots.get(due)
        if slot is None:
            self._slots[due] = [device]
            self._slot_timers[due] = self.clock.call_at(due, partial(self._fire, due))
        else:
            slot.append(device)

    def _fire(self, due: float) -> None:
        """The samples due at ``due``: take them, file the next ones."""
        self._slot_timers.pop(due, None)
        devices = self._slots.pop(due, ())
        if self._stopping:
            return
        for device in devices:
            try:
                self._sample(device)
            except Exception:  # a bug must not stop the other devices
                device.errors += 1
                log.exception("fleet: sample of device %s/%s failed", *device.keys)
            device.sample += 1
            self._file(device)

    def _sample(self, device: SimDevice) -> None:
        if not device.powered:
            return
        client = device.client
        if client is None or not device.online:
            device.offline += 1
            return
        if device.in_flight >= self.max_in_flight:
            device.overruns += 1
            return
        now_ms = self.clock.time_ms()
        try:
            values = self.profile.values(now_ms, device.noise, device.state)
        except EnosLabError as exc:
            device.errors += 1
            log.warning("fleet: device %s/%s: no sample: %s", *device.keys, exc)
            return
        device.posted += 1
        device.in_flight += 1
        device.peak_in_flight = max(device.peak_in_flight, device.in_flight)
        shared = self._activity
        assert shared is not None
        deadline = self.clock.monotonic() + self.timeout
        gen = -1 if device.cut_off else device.gen
        if gen >= 0:
            device.expected += 1
        shared.begin(deadline, gen >= 0)
        self._spawn(self._post(device, client, values, now_ms + device.skew_ms, deadline, gen))

    async def _post(  # noqa: PLR0917
        self,
        device: SimDevice,
        client: DeviceClient,
        values: dict[str, Any],
        at_ms: int,
        deadline: float,
        gen: int,
    ) -> None:
        """Post one sample (``deadline``: when it times out, on the clock; ``gen``: the
        device's generation when the fleet waits for it, else -1) and count its outcome."""
        clock = self.clock
        sent = clock.monotonic()
        try:
            await client.post_measurepoints(values, at_ms)
        except RequestFailed as exc:
            device.count_refused(exc.code)
        except RequestTimeout:
            device.timeouts += 1
        except (NotConnected, ClosedError):
            device.lost += 1
        except EnosLabError as exc:
            device.errors += 1
            log.warning("fleet: post of device %s/%s failed: %s", *device.keys, exc)
        except Exception:  # a bug: counted on this device, the others keep posting
            device.errors += 1
            log.exception("fleet: post of device %s/%s failed", *device.keys)
        else:
            device.replied += 1
            self._latency.add(clock.monotonic() - sent)
        finally:
            device.in_flight -= 1
            waited = gen >= 0 and gen == device.gen
            if waited:
                device.expected -= 1
            assert self._activity is not None
            self._activity.end(deadline, waited)

    # -- tasks -----------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        loop = self._loop
        assert loop is not None
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _forget(self, device: SimDevice) -> None:
        """Stop waiting for the device's posts in flight (it was partitioned)."""
        if device.expected and self._activity is not None:
            self._activity.release(device.expected)
        device.expected = 0
        device.gen += 1

    def _select(self, devices: str | Iterable[str] | None) -> list[SimDevice]:
        """The fleet's devices with these keys (``None``: all)."""
        self._check_running()
        if devices is None:
            return list(self._devices)
        keys = [devices] if isinstance(devices, str) else list(devices)
        chosen = []
        for key in keys:
            device = self._by_key.get(key)
            if device is None:
                some = ", ".join(self.device_keys[:5]) + (", ..." if len(self) > 5 else "")
                raise InvalidArgument(f"device {key!r} is not in this fleet (its keys: {some})")
            chosen.append(device)
        return chosen


def _check(*checks: tuple[str, object, bool]) -> None:
    for name, value, ok in checks:
        if not ok:
            raise InvalidArgument(f"Fleet: {name}={value!r} is out of range")


def _derive(seed: int, stream: int, index: int) -> int:
    """A seed of its own for ``index`` in ``stream``, from the fleet's ``seed``."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])
