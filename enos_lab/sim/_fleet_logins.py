"""How the devices of a :class:`~enos_lab.sim.Fleet` log in, and in again.

Each device's :class:`~enos_lab.device.DeviceClient` is made with ``reconnect=None``: when its
connection drops, the client tells the fleet (``on_disconnect``) and the fleet logs it in again
after ``backoff.delay(attempt)`` on its clock, with the jitter drawn from a generator seeded by
the fleet's seed, the device and the attempt (so a run replays), counting refused logins
(``login_refusals``) and other failures (``connect_failures``) and recording each return
(:class:`~enos_lab.sim._fleet_state.Reconnection`). A login is a task the fleet owns and waits
for in a step of a simulated run, so a device that comes back at a time is logged in at that
time. A client the device no longer uses (it lost power) is ignored when it reports a loss.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from ..device import Backoff, DeviceClient
from ..errors import DeviceError, LoginRefused
from ._fleet_faults import wrong_secret
from ._fleet_state import Reconnection, SimDevice

if TYPE_CHECKING:
    import ssl as ssl_module
    from collections.abc import Callable

    from ..clock import Clock
    from ._faults import Link
    from ._fleet_steps import Activity

__all__ = ["FleetLogins"]

log = logging.getLogger("enos_lab.sim")


class FleetLogins:
    """The logins of :class:`~enos_lab.sim.Fleet` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by Fleet
        host: str
        port: int
        clock: Clock
        seed: int
        keepalive: int
        timeout: float
        backoff: Backoff
        max_in_flight: int
        ssl: ssl_module.SSLContext | Callable[[str, str], ssl_module.SSLContext] | None
        _link: Link | None
        _stopping: bool
        _changed: asyncio.Event | None
        _activity: Activity | None
        _connecting: int
        _peak_connecting: int
        _records: deque[Reconnection]

        def _spawn(self, coro: Any) -> asyncio.Task[Any]: ...

    def _new_client(self, device: SimDevice) -> DeviceClient:
        link = self._link
        host, port = (link.host, link.port) if link is not None else (self.host, self.port)
        tls = self.ssl
        if callable(tls):
            tls = tls(device.product_key, device.device_key)
        client = DeviceClient(
            host,
            port,
            device.product_key,
            device.device_key,
            wrong_secret(device.secret) if device.wrong else device.secret,
            keepalive=self.keepalive,
            timeout=self.timeout,
            reconnect=None,
            clock=self.clock,
            max_in_flight=self.max_in_flight,
            ssl=tls or False,
        )
        client.on_disconnect = partial(self._lost, device, client)
        return client

    async def _login(self, device: SimDevice, gate: asyncio.Semaphore | None = None) -> None:
        """Log ``device`` in (a new client if it has none); on failure, count and retry."""
        shared = self._activity
        assert shared is not None
        shared.busy += 1  # waited for from now (its deadline once it begins)
        try:
            if gate is None:
                await self._try_login(device)
            else:
                async with gate:
                    await self._try_login(device)
        finally:
            shared.release(1)

    async def _try_login(self, device: SimDevice) -> None:
        client = device.client
        if client is None:
            client = device.client = self._new_client(device)
        if device.lost_ms is not None:
            device.lost_attempts += 1
        self._connecting += 1
        self._peak_connecting = max(self._peak_connecting, self._connecting)
        shared = self._activity
        assert shared is not None
        deadline = self.clock.monotonic() + self.timeout
        shared.begin(deadline, waited=False)
        failed = True
        try:
            # the client's own timeout runs on the fleet's clock; on a simulated one only this
            # wall-time bound ends a login that the hub never answers
            await asyncio.wait_for(client.connect(), self.timeout + 1.0)
            failed = False
        except LoginRefused:
            device.login_refusals += 1
        except (DeviceError, OSError, TimeoutError) as exc:
            device.connect_failures += 1
            log.info("fleet: login of device %s/%s failed: %s", *device.keys, exc)
        except Exception:  # a bug: counted on this device, which tries again
            device.connect_failures += 1
            log.exception("fleet: login of device %s/%s failed", *device.keys)
        finally:
            self._connecting -= 1
            shared.end(deadline, waited=False)
        if failed:
            if client is device.client:  # not a client thrown away meanwhile (power loss)
                self._retry(device)
            return
        if client is not device.client or not device.powered or self._stopping:
            await client.disconnect()  # it lost power (or the fleet stopped) meanwhile
            return
        device.online = True
        device.logins += 1
        device.attempt = 0
        lost = device.lost_ms
        if lost is not None:
            device.reconnects += 1
            self._records.append(
                Reconnection(device.device_key, lost, self.clock.time_ms(), device.lost_attempts)
            )
            device.lost_ms = None
            device.lost_attempts = 0

    def _lost(self, device: SimDevice, client: DeviceClient) -> None:
        """``client`` (of ``device``) lost its connection."""
        if client is not device.client:
            return  # a client the device no longer uses (power loss)
        device.online = False
        changed = self._changed
        if changed is not None:
            changed.set()
        if not device.powered:
            return
        device.disconnects += 1
        if device.lost_ms is None:
            device.lost_ms = self.clock.time_ms()
            device.lost_attempts = 0
        device.attempt = 0
        self._retry(device)

    def _retry(self, device: SimDevice) -> None:
        """Log ``device`` in again after the backoff's delay (nothing if it gave up, has no
        power or the fleet stops)."""
        if self._stopping or not device.powered or device.timer is not None:
            return
        policy = self.backoff
        if policy.gives_up(device.attempt):
            log.warning(
                "fleet: device %s/%s gave up after %d login attempts", *device.keys, device.attempt
            )
            return
        jitter = random.Random(f"{self.seed}:{device.index}:{device.tries}")
        delay = policy.delay(device.attempt, jitter)
        device.attempt += 1
        device.tries += 1
        clock = self.clock
        device.timer = clock.call_at(clock.monotonic() + delay, partial(self._reconnect, device))

    def _reconnect(self, device: SimDevice) -> None:
        device.timer = None
        if self._stopping or not device.powered or device.online:
            return
        self._spawn(self._login(device))
