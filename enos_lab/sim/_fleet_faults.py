"""The fault calls of a :class:`~enos_lab.sim.Fleet`, one call each.

``devices`` names the devices hit (a device key, several, or ``None``: the whole fleet).

- Messages, through the fleet's :class:`~enos_lab.sim.Link`: :meth:`~FleetFaults.drop`,
  :meth:`~FleetFaults.duplicate`, :meth:`~FleetFaults.delay` and :meth:`~FleetFaults.reorder`
  act on PUBLISH packets (posts up, replies down), as the link's calls of the same names do.
- :meth:`~FleetFaults.partition` cuts devices off the network (``BLACKHOLE``: their connections
  stay open but carry nothing, so their posts time out and the hub closes them after its keep
  alive; ``CUT``: reset at once) until :meth:`~FleetFaults.heal`. A gateway that connects
  through the same link is partitioned with ``fleet.link.device(pk, dk).partition()``, which
  takes its sub-devices along.
- :meth:`~FleetFaults.skew` sets how far a device's clock is off: its posts carry the fleet's
  time plus the skew (the values are those of the true time: the device measures the world,
  its clock is wrong).
- :meth:`~FleetFaults.power_loss`: the device dies at once (its connection is reset through the
  link: no DISCONNECT; its posts in flight are lost, its client is thrown away), boots again
  ``off`` seconds later with a new client and logs in again.
- :meth:`~FleetFaults.reconnect_storm`: every connection of the fleet is reset at once; the
  devices come back after the backoff's delays, in lock-step without jitter and spread over the
  first delay with it (:meth:`Fleet.reconnections <enos_lab.sim.Fleet.reconnections>` shows
  when each came back).
- :meth:`~FleetFaults.wrong_credentials`: the device's secret stops working: it is logged out
  and every login it tries is refused by the hub (counted in ``login_refusals``) until
  ``wrong_credentials(..., wrong=False)``; the hub's login throttle may then refuse it a while
  longer. The rest of the fleet keeps posting.

Times are on the fleet's clock. The calls run on the fleet's event loop; the coroutines return
once the fault has taken effect (the devices saw their connections drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ._fault_settings import Direction, LinkScope, PartitionMode

if TYPE_CHECKING:
    from ..clock import Clock
    from ..device import Backoff, DeviceClient
    from ._faults import Link
    from ._fleet_state import SimDevice

__all__ = ["FleetFaults", "wrong_secret"]

log = logging.getLogger("enos_lab.sim")

_EFFECT_WAIT = 10.0  # [s] wall time a fault call waits for the devices to see their connection drop

Devices = str | Iterable[str] | None
"""Devices a fault hits: a device key, several, or ``None`` for the whole fleet."""


class FleetFaults:
    """The fault calls of :class:`~enos_lab.sim.Fleet` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by Fleet
        clock: Clock
        backoff: Backoff
        _link: Link | None
        _stopping: bool
        _changed: asyncio.Event | None

        def _select(self, devices: Devices) -> list[SimDevice]: ...

        def _forget(self, device: SimDevice) -> None: ...

        def _spawn(self, coro: Any) -> asyncio.Task[Any]: ...

        def _retry(self, device: SimDevice) -> None: ...

        async def _login(
            self, device: SimDevice, gate: asyncio.Semaphore | None = None
        ) -> None: ...

    # -- messages (through the link) ---------------------------------------------------------------

    def drop(
        self, rate: float, direction: Direction | str = Direction.BOTH, devices: Devices = None
    ) -> None:
        """Lose each PUBLISH (post or reply) with probability ``rate`` [0..1]."""
        for scope in self._scopes(devices, "dropping messages"):
            scope.drop(rate, direction)

    def duplicate(
        self, rate: float, direction: Direction | str = Direction.BOTH, devices: Devices = None
    ) -> None:
        """Send each PUBLISH twice with probability ``rate`` [0..1] (the hub stores a post
        sent twice once: same device, point and time)."""
        for scope in self._scopes(devices, "duplicating messages"):
            scope.duplicate(rate, direction)

    def delay(
        self, seconds: float, direction: Direction | str = Direction.BOTH, devices: Devices = None
    ) -> None:
        """Hold every packet ``seconds`` on the fleet's clock before passing it on. [s]"""
        for scope in self._scopes(devices, "delaying messages"):
            scope.delay(seconds, direction)

    def reorder(
        self,
        window: int,
        direction: Direction | str = Direction.BOTH,
        devices: Devices = None,
        *,
        hold: float = 0.5,
    ) -> None:
        """Shuffle each connection's PUBLISH packets in groups of ``window``; a group not full
        ``hold`` seconds (fleet clock) after its last packet goes as it is. [packets, s]"""
        for scope in self._scopes(devices, "reordering messages"):
            scope.reorder(window, direction, hold=hold)

    # -- partitions ------------------------------------------------------------------------------

    def partition(
        self, devices: Devices = None, mode: PartitionMode | str = PartitionMode.BLACKHOLE
    ) -> None:
        """Cut the devices off the network until :meth:`heal` (``BLACKHOLE`` or ``CUT``, see
        :class:`~enos_lab.sim.PartitionMode`); new connections are refused meanwhile."""
        targets = self._select(devices)
        for scope in self._scopes(devices, "a partition"):
            scope.partition(mode)
        for device in targets:
            device.cut_off = True
            self._forget(device)

    def heal(self, devices: Devices = None) -> None:
        """End the partition of the devices (``None``: every partition of the link)."""
        targets = self._select(devices)
        for scope in self._scopes(devices, "healing a partition"):
            scope.heal()
        for device in targets:
            device.cut_off = False

    def clear(self, devices: Devices = None) -> None:
        """Remove every message fault and partition of the devices (``None``: of the link)."""
        targets = self._select(devices)
        for scope in self._scopes(devices, "clearing faults"):
            scope.clear()
        for device in targets:
            device.cut_off = False

    # -- the devices themselves -------------------------------------------------------------------

    def skew(self, seconds: float | timedelta, devices: Devices = None) -> None:
        """Set the devices' clock skew: their posts are stamped ``seconds`` off the fleet's
        clock (negative: behind; 0: none). [s]"""
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        for device in self._select(devices):
            device.skew_ms = round(value * 1000)

    async def power_loss(self, devices: Devices, off: float | timedelta) -> None:
        """The devices lose power now (connection reset, no DISCONNECT, posts in flight lost)
        and boot again ``off`` later (fleet clock), logging in with a new client. [s]"""
        link = self._need_link("a power loss")
        off_s = off.total_seconds() if isinstance(off, timedelta) else float(off)
        if not off_s >= 0:
            raise InvalidArgument(f"power_loss: off must be >= 0 s, got {off!r}")
        clock = self.clock
        now_ms = clock.time_ms()
        for device in self._select(devices):
            if not device.powered:
                continue
            device.powered = False
            device.online = False
            device.power_losses += 1
            if device.timer is not None:
                device.timer.cancel()
            if device.lost_ms is None:
                device.lost_ms = now_ms
                device.lost_attempts = 0
            old, device.client = device.client, None
            link.device(*device.keys).cut()
            if old is not None:
                self._spawn(_discard(old))
            device.timer = clock.call_at(clock.monotonic() + off_s, partial(self._boot, device))

    def _boot(self, device: SimDevice) -> None:
        device.timer = None
        if self._stopping:
            return
        device.powered = True
        device.attempt = 0
        self._spawn(self._login(device))

    async def reconnect_storm(self, jitter: bool | None = None) -> int:
        """Reset every connection of the fleet at once; returns how many. The devices log in
        again after the backoff's delays; ``jitter`` (not ``None``) first sets whether the
        fleet's backoff draws them with jitter (``False``: all come back together)."""
        link = self._need_link("a reconnect storm")
        if jitter is not None:
            self.backoff = dataclasses.replace(self.backoff, jitter=jitter)
        victims = [d for d in self._select(None) if d.online]
        cut = link.cut()
        await self._until(lambda: not any(d.online for d in victims), "lose their connections")
        log.info("fleet: reconnect storm: %d connections reset", cut)
        return cut

    async def wrong_credentials(self, devices: Devices, wrong: bool = True) -> None:
        """The devices' secrets stop working (``wrong=False``: work again). A device that is
        online is logged out (reset through the link if there is one, else a DISCONNECT), and
        each login it tries is refused until its secret works again."""
        targets = self._select(devices)
        for device in targets:
            device.wrong = wrong
            client = device.client
            if client is not None:
                client.device_secret = wrong_secret(device.secret) if wrong else device.secret
        if not wrong:
            return
        online = [d for d in targets if d.online]
        link = self._link
        if link is not None:
            for device in online:
                link.device(*device.keys).cut()
            await self._until(lambda: not any(d.online for d in online), "be logged out")
            return
        clients = [d.client for d in online if d.client is not None]
        await asyncio.gather(*(c.disconnect() for c in clients))
        now_ms = self.clock.time_ms()
        for device in online:
            device.online = False
            if device.lost_ms is None:
                device.lost_ms = now_ms
                device.lost_attempts = 0
            device.attempt = 0
            self._retry(device)

    # -- helpers ---------------------------------------------------------------------------------

    def _need_link(self, what: str) -> Link:
        link = self._link
        if link is None:
            raise InvalidArgument(
                f"{what} needs the fleet's devices to connect through a Link: make the fleet "
                "with link=True"
            )
        return link

    def _scopes(self, devices: Devices, what: str) -> list[Link | LinkScope]:
        link = self._need_link(what)
        if devices is None:
            return [link]
        return [link.device(*device.keys) for device in self._select(devices)]

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait (at most ``_EFFECT_WAIT`` of wall time) until ``condition()`` holds."""
        changed = self._changed
        assert changed is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _EFFECT_WAIT
        while not condition():
            left = deadline - loop.time()
            if left <= 0:
                log.warning("fleet: devices did not %s within %.0f s", what, _EFFECT_WAIT)
                return
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)


async def _discard(client: DeviceClient) -> None:
    """End a client whose connection was reset (its DISCONNECT reaches nobody)."""
    await client.disconnect()


def wrong_secret(secret: str) -> str:
    """A secret that is not ``secret`` (what a device whose secret stopped working sends)."""
    return "wrong-" + secret[::-1]
