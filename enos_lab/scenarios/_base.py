"""What every scenario has: a handle on the lab's loop, and field devices driven by profiles.

A scenario runs entirely on the lab's event loop (its field servers, links, edges and
devices), so that a notebook cell drives it with plain calls: each method of a handle runs its
coroutine there with :meth:`~enos_lab.lab.Lab.run` (asyncio users call the ``a``-prefixed
forms). Faults "for N minutes" end on the lab's clock: with a
:class:`~enos_lab.clock.SimulatedClock` when :meth:`Scenario.advance` passes that time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np

from .. import datasets
from ..clock import Clock, SimulatedClock, TimerHandle
from ..edge import FieldServer, PointTable
from ..errors import ClosedError, InvalidArgument
from ..model import library_model, vendor_mapping
from ..sim import Profile, ProfileState

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = [
    "FieldSimulator",
    "Scenario",
    "SimulatedUnit",
    "energy_meter_table",
    "inverter_table",
]

log = logging.getLogger("enos_lab.scenarios")

T = TypeVar("T")


@functools.cache
def _shipped(name: str) -> PointTable:
    frame, meta = datasets.load(name)
    if name == "modbus_inverter_vendor_a":
        model, mapping = library_model("pv_inverter"), vendor_mapping("inverter_vendor_a")
        return PointTable.from_frame(frame, model, mapping=mapping, source=str(meta["file"]))
    return PointTable.from_frame(frame, library_model("energy_meter"), source=str(meta["file"]))


def inverter_table(unit_id: int = 1) -> PointTable:
    """The shipped Vendor A inverter register map (dataset ``modbus_inverter_vendor_a``, read
    through the vendor mapping ``inverter_vendor_a`` into ``pv_inverter``) at ``unit_id``."""
    table = _shipped("modbus_inverter_vendor_a")
    return table if unit_id == 1 else table.with_unit(unit_id)


def energy_meter_table(unit_id: int = 2) -> PointTable:
    """The shipped energy meter register map (dataset ``modbus_energy_meter``, model
    ``energy_meter``) at ``unit_id``."""
    table = _shipped("modbus_energy_meter")
    return table if unit_id == 2 else table.with_unit(unit_id)


class Scenario:
    """A running scenario (see the module docstring): :meth:`advance` its simulated clock,
    :meth:`stop` it (or use it as a context manager)."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab
        self._running = True
        self._timers: list[TimerHandle] = []

    @property
    def lab(self) -> Lab:
        """The lab the scenario runs in."""
        return self._lab

    @property
    def clock(self) -> Clock:
        """The lab's clock, which the scenario runs on."""
        return self._lab.clock

    @property
    def running(self) -> bool:
        """True until :meth:`stop`."""
        return self._running

    def advance(self, seconds: float) -> None:
        """Move the lab's :class:`~enos_lab.clock.SimulatedClock` forward by ``seconds``, in
        steps, waiting after each until the scenario's parts have done what fell due. [s]"""
        self._check_simulated()
        self._call(self._advance(float(seconds)))

    async def aadvance(self, seconds: float) -> None:
        """Coroutine form of :meth:`advance`."""
        self._check_simulated()
        await self._acall(self._advance(float(seconds)))

    def stop(self) -> None:
        """Stop every part of the scenario (idempotent). What the lab stored stays."""
        if self._running:
            self._running = False
            self._lab.run(self._shutdown())

    async def astop(self) -> None:
        """Coroutine form of :meth:`stop`."""
        if self._running:
            self._running = False
            await self._lab.arun(self._shutdown())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for the scenarios ------------------------------------------------------------------

    async def _advance(self, seconds: float) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self._stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._running:
            coro.close()
            raise ClosedError(f"the scenario {type(self).__name__} is stopped")
        return self._lab.run(coro)

    async def _acall(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._running:
            coro.close()
            raise ClosedError(f"the scenario {type(self).__name__} is stopped")
        return await self._lab.arun(coro)

    def _check_simulated(self) -> None:
        if not isinstance(self.clock, SimulatedClock):
            raise InvalidArgument(
                "advance() steps a SimulatedClock; this lab runs on the system clock, where "
                "the scenario runs in real time by itself"
            )

    def _later(self, minutes: float | None, action: Callable[[], object]) -> None:
        """Run ``action`` on the lab's loop after ``minutes`` of the clock (None: never).
        Call on the lab's loop."""
        if minutes is None:
            return
        if not (minutes >= 0 and math.isfinite(minutes)):
            raise InvalidArgument(f"minutes must be a finite number >= 0, got {minutes!r}")
        clock = self.clock
        self._timers.append(clock.call_at(clock.monotonic() + minutes * 60.0, action))


@dataclass(frozen=True, slots=True)
class SimulatedUnit:
    """A unit of a field server whose registers follow a profile (a simulated device)."""

    server: FieldServer
    unit_id: int
    profile: Profile
    state: ProfileState
    seed: int


class FieldSimulator:
    """Sets the registers of simulated field units from their profiles on the clock: the values
    of each poll slot (multiples of ``interval`` since the epoch) are set half a slot before
    it, so that a poll on the slot reads exactly the profile's values at the slot's time.

    Measurement noise comes from a generator seeded per unit. A value the unit's point table
    cannot encode is logged and counted in :attr:`errors`; the other units go on.
    """

    def __init__(self, clock: Clock, interval: float, units: Sequence[SimulatedUnit]) -> None:
        if not interval > 0:
            raise InvalidArgument(f"interval must be > 0 s, got {interval!r}")
        self._clock = clock
        self._interval = float(interval)
        self._units = list(units)
        self._rngs = [np.random.default_rng(unit.seed) for unit in self._units]
        self._task: asyncio.Task[None] | None = None
        self.errors = 0
        """Values that could not be set. [-]"""

    async def start(self) -> FieldSimulator:
        """Set the values of the current slot (if now is on one) and of the next, and keep
        going in a task on the running loop."""
        step = round(self._interval * 1000)
        now = self._clock.time_ms()
        if now % step == 0:
            self._set(now)
        self._task = asyncio.get_running_loop().create_task(
            self._run(now // step * step + step), name="field simulator"
        )
        return self

    async def stop(self) -> None:
        """End the task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, slot_ms: int) -> None:
        clock, step = self._clock, round(self._interval * 1000)
        while True:
            before = (slot_ms - step // 2 - clock.time_ms()) / 1000
            if before > 0:
                await clock.sleep(before)
            self._set(slot_ms)
            until = (slot_ms - clock.time_ms()) / 1000
            if until > 0:
                await clock.sleep(until)
            slot_ms += step

    def _set(self, at_ms: int) -> None:
        for unit, rng in zip(self._units, self._rngs, strict=True):
            try:
                values = unit.profile.values(at_ms, rng, unit.state)
                unit.server.set_model_values(unit.unit_id, values)
            except InvalidArgument as exc:
                self.errors += 1
                log.warning(
                    "field simulator: unit %d of %s: %s", unit.unit_id, unit.server.name, exc
                )
