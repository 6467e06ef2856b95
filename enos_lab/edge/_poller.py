"""Polling field devices over Modbus TCP on the lab's clock.

Theory of operation
-------------------
A :class:`FieldDevice` is one unit id behind a Modbus TCP endpoint, read by its point table.
Devices that share an endpoint share one connection (a gateway allows few) and are polled in
turn by one task per endpoint, a *link*; endpoints are polled concurrently. Every
``interval`` seconds of the clock a link polls each of its devices: it reads the table's
:class:`~enos_lab.edge.ReadGroup` s (contiguous addresses, within the Modbus limit of one
read), decodes them and converts them to model values; the result is a :class:`Sample`
``(device, time, {point: value})`` whose ``time`` is the clock's time when that device's poll
began.

Faults stay with their device and are values, not exceptions (:class:`PollError`, counted in
the device's :class:`DeviceStats` and passed to ``on_error``):

- ``CONNECTION``: the endpoint cannot be reached; an error for each of its devices this
  cycle (they are unreachable together). The next cycle connects again: the interval is the
  backoff, at most one attempt per cycle.
- ``TIMEOUT``: no answer within ``timeout`` (wall-clock seconds: pymodbus's own timer, as the
  network's time is real). The device's other reads this cycle are skipped, and the connection
  is closed and opened again before the next request, so that a late answer cannot be taken
  for the answer to the next request (the next device's included).
- ``EXCEPTION``: an exception response (``exception_code`` says which); the device's other
  reads this cycle are skipped.
- ``DECODE``: an answer of the wrong size, a code missing from a vendor table, a value the
  model refuses (NaN, an unknown ENUM key): one error per point; the sample keeps the others.

A failed device delays the others of its endpoint by at most ``timeout`` per cycle; other
endpoints are not delayed at all.

Schedule: the first poll when :meth:`Poller.start` runs, then one every ``interval`` of the
clock; a cycle that overruns its slot skips the slots it missed (counted in ``missed``). On a
:class:`~enos_lab.clock.SimulatedClock` polls fire as the clock is advanced, but Modbus I/O
takes real time: ``await poller.idle()`` after each step of the clock, or let
:meth:`Poller.advance` step it slot by slot, for every slot to be polled. :meth:`Poller.poll`
polls every device once, now, and returns the samples (``on_sample`` is not called).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from ..clock import Clock, SimulatedClock, SystemClock, to_epoch_ms
from ..errors import InvalidArgument
from ._points import PointTable
from ._registers import UNIT_IDS, ReadGroup, RegisterTable

__all__ = ["DeviceStats", "FieldDevice", "PollError", "PollErrorKind", "Poller", "Sample"]

log = logging.getLogger(__name__)

SampleSink = Callable[["Sample"], object]
"""Called with each sample of the background polls; may return an awaitable (awaited)."""
ErrorSink = Callable[["PollError"], object]
"""Called with each poll error; may return an awaitable (awaited)."""


@dataclass(frozen=True, slots=True)
class FieldDevice:
    """A field device to poll: unit ``unit_id`` at ``host``:``port``, read by ``table``.

    ``name`` identifies the device in samples, errors and statistics (unique per poller).
    """

    name: str
    host: str
    port: int
    unit_id: int
    table: PointTable

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgument(f"a field device needs a non-empty name, got {self.name!r}")
        if self.unit_id not in UNIT_IDS:
            raise InvalidArgument(f"field device {self.name!r}: unit_id {self.unit_id} not 1..247")
        if self.unit_id not in self.table.unit_ids:
            raise InvalidArgument(
                f"field device {self.name!r}: table {self.table.source!r} has no rows for unit "
                f"{self.unit_id} (units: {', '.join(map(str, self.table.unit_ids))})"
            )
        if not 0 < self.port < 65536:
            raise InvalidArgument(f"field device {self.name!r}: port {self.port} not 1..65535")

    @property
    def endpoint(self) -> tuple[str, int]:
        """``(host, port)``: devices with the same endpoint share a connection."""
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class Sample:
    """Model values read from one field device at one time.

    ``time`` is tz-aware UTC (the clock's time when the device's poll began); ``values`` maps
    measurepoint ids of the table's model to validated values.
    """

    device: str
    time: datetime
    values: Mapping[str, Any]

    @property
    def time_ms(self) -> int:
        """``time`` in epoch milliseconds (the EnOS wire format). [ms]"""
        return to_epoch_ms(self.time)


class PollErrorKind(Enum):
    """Why a poll of a field device failed (see the module docstring)."""

    CONNECTION = "connection"
    """The endpoint could not be reached."""
    TIMEOUT = "timeout"
    """No answer within the timeout."""
    EXCEPTION = "exception"
    """An exception response."""
    DECODE = "decode"
    """A value that does not decode or that the model refuses."""


@dataclass(frozen=True, slots=True)
class PollError:
    """One counted fault of one field device's poll; ``message`` names device and cause."""

    device: str
    time: datetime
    kind: PollErrorKind
    message: str
    exception_code: int | None = None
    """The Modbus exception code of an ``EXCEPTION``."""
    point: str | None = None
    """The point of a ``DECODE`` error."""


def _zero_errors() -> dict[PollErrorKind, int]:
    return dict.fromkeys(PollErrorKind, 0)


@dataclass(slots=True)
class DeviceStats:
    """Counters of one field device's polls."""

    polls: int = 0
    """Polls begun. [-]"""
    samples: int = 0
    """Samples produced (polls that gave at least one value). [-]"""
    errors: dict[PollErrorKind, int] = field(default_factory=_zero_errors)
    """Errors by kind. [-]"""
    consecutive_failures: int = 0
    """Polls in a row that gave no sample. [-]"""
    last_error: PollError | None = None
    """The most recent error."""

    def copy(self) -> DeviceStats:
        """An independent copy."""
        return DeviceStats(
            self.polls, self.samples, dict(self.errors), self.consecutive_failures, self.last_error
        )


class _Link:
    """One endpoint: its connection, its devices and their schedule."""

    def __init__(self, endpoint: tuple[str, int], devices: list[FieldDevice]) -> None:
        self.endpoint = endpoint
        self.devices = devices
        self.client: AsyncModbusTcpClient | None = None
        self.lock = asyncio.Lock()
        self.due = math.inf  # [s] next poll on the clock's monotonic scale
        self.busy = False
        self.missed = 0
        self.task: asyncio.Task[None] | None = None


class Poller:
    """Polls field devices (see the module docstring).

    ``interval`` between polls and ``timeout`` of one request are in seconds (``interval`` on
    ``clock``, ``timeout`` on the wall clock); ``max_gap`` unmapped addresses may be read
    across to merge reads (0: never). ``on_sample`` / ``on_error`` receive the background
    polls' samples and every error; ``recent_errors`` bounds :attr:`errors`.
    """

    def __init__(
        self,
        devices: Sequence[FieldDevice],
        *,
        interval: float = 10.0,
        timeout: float = 1.0,
        clock: Clock | None = None,
        on_sample: SampleSink | None = None,
        on_error: ErrorSink | None = None,
        max_gap: int = 0,
        recent_errors: int = 100,
    ) -> None:
        if not interval > 0 or not timeout > 0:
            raise InvalidArgument(
                f"interval and timeout must be > 0 s, got {interval!r} and {timeout!r}"
            )
        names = [device.name for device in devices]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidArgument(f"field device names must be unique, repeated: {duplicates}")
        if not devices:
            raise InvalidArgument("a poller needs at least one field device")
        self._devices = tuple(devices)
        self._interval = float(interval)
        self._timeout = float(timeout)
        self._clock: Clock = clock or SystemClock()
        self._on_sample = on_sample
        self._on_error = on_error
        self._plans = {d.name: d.table.plan(d.unit_id, max_gap=max_gap) for d in devices}
        self._stats = {d.name: DeviceStats() for d in devices}
        self._errors: deque[PollError] = deque(maxlen=recent_errors)
        endpoints: dict[tuple[str, int], list[FieldDevice]] = {}
        for device in devices:
            endpoints.setdefault(device.endpoint, []).append(device)
        self._links = [_Link(endpoint, devs) for endpoint, devs in endpoints.items()]
        self._running = False
        self._changed: asyncio.Condition | None = None
        self.callback_errors = 0
        """Calls of ``on_sample`` / ``on_error`` that raised (logged, then ignored). [-]"""

    # ----------------------------------------------------------------- what it holds

    @property
    def devices(self) -> tuple[FieldDevice, ...]:
        """The field devices polled."""
        return self._devices

    @property
    def interval(self) -> float:
        """Time between polls, on the clock. [s]"""
        return self._interval

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    @property
    def errors(self) -> tuple[PollError, ...]:
        """The most recent errors, oldest first (at most ``recent_errors``)."""
        return tuple(self._errors)

    @property
    def missed(self) -> int:
        """Poll slots skipped because a cycle overran them. [-]"""
        return sum(link.missed for link in self._links)

    def stats(self, device: str) -> DeviceStats:
        """A copy of the counters of field device ``device``."""
        try:
            return self._stats[device].copy()
        except KeyError:
            raise InvalidArgument(
                f"no field device {device!r} (devices: {', '.join(self._stats)})"
            ) from None

    # ----------------------------------------------------------------- lifetime

    async def start(self) -> Poller:
        """Poll now and then every ``interval`` in background tasks on the running loop."""
        if self._running:
            return self
        self._running = True
        now = self._clock.monotonic()
        for link in self._links:
            link.due = now
            host, port = link.endpoint
            link.task = asyncio.create_task(self._run(link), name=f"edge poller {host}:{port}")
        return self

    async def stop(self) -> None:
        """Cancel the background polls, wait for them and close every connection."""
        self._running = False
        tasks = [link.task for link in self._links if link.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in self._links:
            link.task = None
            link.due = math.inf
            link.busy = False
            if link.client is not None:
                link.client.close()
                link.client = None
        await self._notify()

    async def __aenter__(self) -> Poller:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def poll(self) -> list[Sample]:
        """Poll every device once, now (endpoints concurrently); return the samples, in device
        order. Errors are counted and passed to ``on_error``; ``on_sample`` is not called. The
        connections stay open for the next poll: :meth:`stop` closes them."""
        results = await asyncio.gather(*(self._cycle(link, deliver=False) for link in self._links))
        by_name = {sample.device: sample for samples in results for sample in samples}
        return [by_name[d.name] for d in self._devices if d.name in by_name]

    async def idle(self) -> None:
        """Wait until no poll is running and none is due on the clock."""
        async with self._condition():
            await self._condition().wait_for(self._idle)

    async def advance(self, seconds: float) -> None:
        """Move a :class:`~enos_lab.clock.SimulatedClock` forward by ``seconds``, one poll
        slot at a time, waiting after each slot until its polls are done. [s]"""
        clock = self._clock
        if not isinstance(clock, SimulatedClock):
            raise InvalidArgument(
                f"Poller.advance needs a SimulatedClock, the poller runs on {clock!r}"
            )
        target = clock.monotonic() + seconds
        while True:
            await self.idle()
            upcoming = min((link.due for link in self._links), default=math.inf)
            if upcoming > target:
                break
            await clock.advance_async(max(0.0, upcoming - clock.monotonic()))
        await clock.advance_async(max(0.0, target - clock.monotonic()))
        await self.idle()

    # ----------------------------------------------------------------- the polls

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def _idle(self) -> bool:
        now = self._clock.monotonic()
        return all(not link.busy and link.due > now for link in self._links)

    async def _notify(self) -> None:
        async with self._condition():
            self._condition().notify_all()

    async def _run(self, link: _Link) -> None:
        """One endpoint's schedule: poll, then sleep until the next slot on the clock."""
        clock = self._clock
        while True:
            wait = link.due - clock.monotonic()
            if wait > 0:
                await clock.sleep(wait)
            await self._cycle(link, deliver=True)
            link.due += self._interval
            now = clock.monotonic()
            if link.due <= now:
                skipped = math.floor((now - link.due) / self._interval) + 1
                link.missed += skipped
                link.due += skipped * self._interval
            await self._notify()

    async def _cycle(self, link: _Link, *, deliver: bool) -> list[Sample]:
        """Poll each device of ``link`` once."""
        samples: list[Sample] = []
        async with link.lock:
            link.busy = True
            try:
                for device in link.devices:
                    sample = await self._poll_device(link, device)
                    if sample is None:
                        continue
                    samples.append(sample)
                    if deliver and self._on_sample is not None:
                        await self._call(self._on_sample, sample)
            finally:
                link.busy = False
        if not deliver:
            await self._notify()
        return samples

    async def _poll_device(self, link: _Link, device: FieldDevice) -> Sample | None:
        stats = self._stats[device.name]
        stats.polls += 1
        sample = await self._read_device(link, device)
        if sample is None:
            stats.consecutive_failures += 1
        else:
            if stats.consecutive_failures:
                log.info(
                    "field device %s answers again after %d failed polls",
                    device.name,
                    stats.consecutive_failures,
                )
            stats.samples += 1
            stats.consecutive_failures = 0
        return sample

    async def _read_device(self, link: _Link, device: FieldDevice) -> Sample | None:
        """Read and decode one device; None when no point could be read (errors counted)."""
        time = self._clock.now()
        client = await self._connected(link)
        if client is None:
            host, port = link.endpoint
            await self._fail(
                device, time, PollErrorKind.CONNECTION, f"cannot connect to {host}:{port}"
            )
            return None
        field_values: dict[str, Any] = {}
        for group in self._plans[device.name]:
            data = await self._read(link, client, device, group, time)
            if data is None:
                return None
            try:
                field_values.update(group.decode(data))
            except InvalidArgument as exc:
                await self._fail(device, time, PollErrorKind.DECODE, f"{device.name}: {exc}")
                return None
        values, problems = device.table.to_model(device.unit_id, field_values)
        for point, message in problems:
            await self._fail(
                device, time, PollErrorKind.DECODE, f"{device.name}: {message}", point=point
            )
        return Sample(device.name, time, values) if values else None

    async def _connected(self, link: _Link) -> AsyncModbusTcpClient | None:
        """The link's client, connected (one attempt), or None."""
        if link.client is None:
            host, port = link.endpoint
            link.client = AsyncModbusTcpClient(
                host,
                port=port,
                timeout=self._timeout,
                retries=0,  # the next cycle is the retry
                reconnect_delay=0,  # reconnects happen here, on the clock's schedule
                name=f"edge poller {host}:{port}",
            )
        client = link.client
        if client.connected:
            return client
        with contextlib.suppress(ModbusException, OSError):
            if await client.connect():
                return client
        client.close()
        return None

    async def _read(
        self,
        link: _Link,
        client: AsyncModbusTcpClient,
        device: FieldDevice,
        group: ReadGroup,
        time: datetime,
    ) -> list[int] | list[bool] | None:
        """One read request; None after counting its error."""
        kinds = {
            RegisterTable.HOLDING: client.read_holding_registers,
            RegisterTable.INPUT: client.read_input_registers,
            RegisterTable.COIL: client.read_coils,
            RegisterTable.DISCRETE_INPUT: client.read_discrete_inputs,
        }
        where = f"{group.table.value} {group.address}..{group.address + group.count - 1}"
        what = f"{device.name} (unit {device.unit_id} at {link.endpoint[0]}:{link.endpoint[1]})"
        try:
            response = await kinds[group.table](
                group.address, count=group.count, device_id=device.unit_id
            )
        except ConnectionException as exc:
            client.close()
            await self._fail(device, time, PollErrorKind.CONNECTION, f"{what}: {where}: {exc}")
            return None
        except ModbusIOException:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from None  # pymodbus 3.12 reports a cancel so
            client.close()  # a late answer must not be taken for the next request's
            await self._fail(
                device,
                time,
                PollErrorKind.TIMEOUT,
                f"{what}: no answer to reading {where} within {self._timeout:g} s",
            )
            return None
        except ModbusException as exc:
            client.close()
            await self._fail(device, time, PollErrorKind.DECODE, f"{what}: {where}: {exc}")
            return None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            await self._fail(
                device,
                time,
                PollErrorKind.EXCEPTION,
                f"{what}: reading {where} answered exception {code:#04x}",
                exception_code=code,
            )
            return None
        if group.table.bits:
            return list(response.bits[: group.count])
        return list(response.registers)

    async def _fail(
        self,
        device: FieldDevice,
        time: datetime,
        kind: PollErrorKind,
        message: str,
        *,
        exception_code: int | None = None,
        point: str | None = None,
    ) -> None:
        error = PollError(device.name, time, kind, message, exception_code, point)
        stats = self._stats[device.name]
        stats.errors[kind] += 1
        stats.last_error = error
        self._errors.append(error)
        # the first failure of a run is a warning, the rest of the run only debug
        level = logging.DEBUG if stats.consecutive_failures else logging.WARNING
        log.log(level, "field device poll failed: %s", message)
        if self._on_error is not None:
            await self._call(self._on_error, error)

    async def _call(self, callback: Callable[[Any], object], argument: object) -> None:
        try:
            result = callback(argument)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.callback_errors += 1
            log.exception("poller callback %r failed (ignored)", callback)
