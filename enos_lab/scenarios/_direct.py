"""Connection scenario 1: a device connected directly to the hub over MQTT.

EnOS's first connection scenario (protocol reference 14): the device speaks the EnOS protocol
itself, here a :class:`~enos_lab.device.DeviceClient` (the device SDK) posting the values of a
simulated profile (:mod:`enos_lab.sim`) at every slot of ``interval`` on the lab's clock. It has
no local cache: a post that fails is counted and its sample is gone, which is what an edge's
cache and resume add (scenarios 2 to 4).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..clock import SimulatedClock
from ..device import Backoff, DeviceClient
from ..errors import DeviceError, InvalidArgument
from ..sim import Profile, profile_for
from ._base import Scenario

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["DirectDeviceScenario", "DirectDeviceStats", "direct_device"]

log = logging.getLogger("enos_lab.scenarios")


@dataclass(frozen=True, slots=True)
class DirectDeviceStats:
    """What the direct device did so far."""

    posts: int
    """Posts the hub confirmed (200). [-]"""
    failures: int
    """Posts that failed (no connection, no reply, refused). [-]"""
    connected: bool
    """Whether the device is connected now."""


class DirectDeviceScenario(Scenario):
    """Scenario 1, running (made by :func:`direct_device`): ``device`` is the device's
    client; :meth:`status` has one row."""

    def __init__(
        self, lab: Lab, device: DeviceClient, profile: Profile, interval: float, seed: int
    ) -> None:
        super().__init__(lab)
        self.device = device
        """The device (the SDK's client), on the lab's loop."""
        self.profile = profile
        """The profile it follows."""
        self.interval = interval
        """Time between posts. [s]"""
        self._state = profile.state(seed, lab.clock.now())
        self._rng = np.random.default_rng(seed)
        self._posts = self._failures = 0
        self._busy = False
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> DirectDeviceStats:
        """Its counters (a snapshot)."""
        return DirectDeviceStats(self._posts, self._failures, self.device.connected)

    def status(self) -> pd.DataFrame:
        """One row: ``product_key, device_key, model_id, connected, posts, failures``."""
        return pd.DataFrame(
            [
                {
                    "product_key": self.device.product_key,
                    "device_key": self.device.device_key,
                    "model_id": self.profile.model_id,
                    "connected": self.device.connected,
                    "posts": self._posts,
                    "failures": self._failures,
                }
            ]
        )

    async def _start(self) -> None:
        await self.device.connect()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"direct device {self.device.device}"
        )

    async def _run(self) -> None:
        clock, step = self.clock, round(self.interval * 1000)
        slot = -(-clock.time_ms() // step) * step  # the first slot at or after now
        while True:
            wait = (slot - clock.time_ms()) / 1000
            if wait > 0:
                await clock.sleep(wait)
            self._busy = True
            try:
                values = self.profile.values(slot, self._rng, self._state)
                await self.device.post_measurepoints(values, slot)
                self._posts += 1
            except DeviceError as exc:
                self._failures += 1
                log.info("direct device %s: a post failed: %s", self.device.device, exc)
            finally:
                self._busy = False
                self._progress.set()
            slot += step

    async def _advance(self, seconds: float) -> None:
        clock = self.clock
        assert isinstance(clock, SimulatedClock)
        remaining = seconds
        await self._idle()
        while remaining > 1e-9:
            move = min(self.interval, self.device.timeout, remaining)
            await clock.advance_async(move)
            remaining -= move
            await self._idle()

    async def _idle(self) -> None:
        while self._busy:
            self._progress.clear()
            await self._progress.wait()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.device.disconnect()


def direct_device(
    lab: Lab,
    *,
    model_id: str = "pv_inverter",
    device_key: str = "direct-1",
    interval: float = 60.0,
    seed: int = 0,
    profile: Profile | None = None,
) -> DirectDeviceScenario:
    """Start connection scenario 1 in ``lab`` with one call: a product of the library model
    ``model_id`` (direct connection), a device ``device_key`` in it, and that device, written
    with the SDK, connected and posting the values of its profile (``profile``, default the
    model's, seeded by ``seed``) every ``interval`` seconds of the lab's clock. [s]"""
    if not interval > 0:
        raise InvalidArgument(f"interval must be > 0 s, got {interval!r}")
    chosen = profile or profile_for(model_id)
    if chosen.model_id != model_id:
        raise InvalidArgument(f"the profile produces model {chosen.model_id!r}, not {model_id!r}")
    product = lab.create_product(f"{model_id} (direct)", model_id=model_id)
    record = lab.register_device(product.product_key, device_key=device_key)
    client = DeviceClient(
        lab.host,
        lab.port,
        product.product_key,
        device_key,
        record.device_secret,
        keepalive=0 if isinstance(lab.clock, SimulatedClock) else 60,
        timeout=min(30.0, interval),
        reconnect=Backoff(initial=1.0, maximum=60.0),
        clock=lab.clock,
        rng=random.Random(seed),
    )
    scenario = DirectDeviceScenario(lab, client, chosen, interval, seed)
    lab.run(scenario._start())
    return scenario
