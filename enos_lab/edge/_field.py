"""Field devices: real Modbus TCP servers (pymodbus) whose registers are laid out by point tables.

Theory of operation
-------------------
A :class:`FieldServer` is one Modbus TCP endpoint, a pymodbus ``ModbusTcpServer`` on
127.0.0.1 (port 0 by default: the real port is reported by :attr:`FieldServer.port`), with one
or several unit ids behind it, as a Modbus TCP gateway in front of an RS-485 line has. Each
unit's memory holds exactly the addresses its :class:`~enos_lab.edge.PointTable` maps, all 0
at first: reading or writing any other address answers exception 02 (illegal data address),
as a real device does; a unit id nobody has answers exception 0B (gateway target device failed
to respond; MODBUS Application Protocol V1.1b3, 7).

Values are set from Python, encoded by the table: :meth:`FieldServer.set` takes a field value
(the engineering value of a row, ``W`` in W) or a raw word at an address;
:meth:`FieldServer.set_model_values` takes model values (``active_power`` in kW, as a simulated
profile gives them) and runs the table backwards. The memory is guarded by a lock, so these
may be called from any thread (a notebook cell while the server runs on the lab's loop), and a
read never sees half of a 32-bit value.

pymodbus hands every request to the server context's ``async_getValues`` /
``async_setValues`` (pymodbus 3.12 and later); the context here answers from the memory, after
the unit's fault, if one is injected:

- :meth:`~FieldServer.fail`: an exception response with the given code (02 illegal address,
  04 device failure, 06 busy, ...);
- :meth:`~FieldServer.mute`: no response at all (the poller times out);
- :meth:`~FieldServer.delay`: the response after a delay (wall-clock seconds: network time is
  real, as the poller's timeouts are);

for every request, or for the next ``requests`` ones; :meth:`~FieldServer.heal` clears them.

Lifetime: :meth:`~FieldServer.start` listens; :meth:`~FieldServer.stop` releases delayed
requests unanswered, waits until no request is inside the context, closes every connection and
the listener. A stopped server starts again on the same port (the poller's reconnect tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from ..errors import InvalidArgument
from ._points import PointTable
from ._registers import PointRow, RegisterTable

__all__ = ["ExceptionCode", "FieldServer", "UnitStats"]

log = logging.getLogger(__name__)

_FUNCTION_TABLES: dict[int, RegisterTable] = {
    1: RegisterTable.COIL,
    5: RegisterTable.COIL,
    15: RegisterTable.COIL,
    2: RegisterTable.DISCRETE_INPUT,
    3: RegisterTable.HOLDING,
    6: RegisterTable.HOLDING,
    16: RegisterTable.HOLDING,
    22: RegisterTable.HOLDING,
    23: RegisterTable.HOLDING,
    4: RegisterTable.INPUT,
}


class ExceptionCode(IntEnum):
    """Modbus exception codes (MODBUS Application Protocol V1.1b3, 7)."""

    ILLEGAL_FUNCTION = 0x01
    """The function code is not allowed for the device."""
    ILLEGAL_ADDRESS = 0x02
    """An address of the request is not one the device has."""
    ILLEGAL_VALUE = 0x03
    """A value in the request is not allowed."""
    DEVICE_FAILURE = 0x04
    """An unrecoverable error while performing the request."""
    ACKNOWLEDGE = 0x05
    """Accepted, but it will take a long time."""
    DEVICE_BUSY = 0x06
    """The device is busy with a long command: retry later."""
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    """The gateway has no path to the unit."""
    GATEWAY_NO_RESPONSE = 0x0B
    """The gateway's target device did not respond."""


@dataclass(slots=True)
class UnitStats:
    """What one unit of a :class:`FieldServer` was asked and how it answered.

    Counts datastore accesses: one per read; a write request may make two (write, then read
    back the written value).
    """

    reads: int = 0
    """Read accesses, answered or not. [-]"""
    writes: int = 0
    """Write accesses, answered or not. [-]"""
    exceptions: int = 0
    """Accesses answered with an exception response (injected or an illegal address). [-]"""
    unanswered: int = 0
    """Accesses left without a response (muted, or released by stop). [-]"""
    delayed: int = 0
    """Accesses answered late by an injected delay. [-]"""


@dataclass(slots=True)
class _Fault:
    code: ExceptionCode | None = None  # an exception response
    mute: bool = False  # no response
    delay: float = 0.0  # [s] before answering
    remaining: int | None = None  # accesses left; None: until healed


class _UnitsContext(ModbusServerContext):
    """The server context pymodbus calls for every request: the field server's memory.

    Built without the base class's constructor (which wraps datastores this server does not
    use); the two attributes set are what pymodbus 3.13+ looks at to call this context
    directly, as 3.12 always does.
    """

    def __init__(self, server: FieldServer) -> None:
        self.simdevices: list[Any] = []
        self.old_simulator = True
        self._server = server

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        return await self._server._access(device_id, func_code, address, count, None)

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        result = await self._server._access(device_id, func_code, address, len(values), values)
        return result if isinstance(result, ExcCodes) else None

    def device_ids(self) -> list[int]:
        return list(self._server.unit_ids)


class FieldServer:
    """A Modbus TCP endpoint serving the units of one or several point tables (see the module
    docstring). ``name`` appears in logs.

    Use as ``async with FieldServer([inverter, meter]) as field: ... field.port``, or call
    :meth:`start` and :meth:`stop` on one event loop.
    """

    def __init__(
        self,
        tables: PointTable | Sequence[PointTable],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "field",
    ) -> None:
        tables = [tables] if isinstance(tables, PointTable) else list(tables)
        if not tables:
            raise InvalidArgument(f"field server {name!r}: give at least one point table")
        self._tables: dict[int, PointTable] = {}
        for table in tables:
            for unit_id in table.unit_ids:
                if unit_id in self._tables:
                    raise InvalidArgument(
                        f"field server {name!r}: unit {unit_id} is in {table.source!r} and in "
                        f"{self._tables[unit_id].source!r}"
                    )
                self._tables[unit_id] = table
        self._host = host
        self._port = port
        self._name = name
        self._lock = threading.Lock()
        self._memory: dict[tuple[int, RegisterTable], dict[int, int | bool]] = {}
        for unit_id, table in self._tables.items():
            for row in table.rows_of(unit_id):
                cells = self._memory.setdefault((unit_id, row.table), {})
                for address in range(row.address, row.address + row.span):
                    cells[address] = False if row.table.bits else 0
        self._faults: dict[int, _Fault] = {}
        self._stats = {unit_id: UnitStats() for unit_id in self._tables}
        self._server: ModbusTcpServer | None = None
        self._closing: asyncio.Event | None = None
        self._inside = 0
        self._left: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifetime

    @property
    def name(self) -> str:
        """The name used in logs."""
        return self._name

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port (the real one once started; 0 before a first start on port 0)."""
        return self._port

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    @property
    def unit_ids(self) -> tuple[int, ...]:
        """The unit ids served, sorted."""
        return tuple(sorted(self._tables))

    def table(self, unit_id: int) -> PointTable:
        """The point table of unit ``unit_id``."""
        return self._tables[self._unit(unit_id)]

    async def start(self) -> FieldServer:
        """Listen (on the running event loop) and return self; the real port is :attr:`port`."""
        if self._server is not None:
            return self
        server = ModbusTcpServer(
            _UnitsContext(self),
            address=(self._host, self._port),
            ignore_missing_devices=True,  # how a context leaves a request unanswered
        )
        await server.serve_forever(background=True)
        listener: Any = server.transport
        self._port = int(listener.sockets[0].getsockname()[1])
        self._server = server
        self._closing = asyncio.Event()
        self._left = asyncio.Event()
        log.info("field server %s listening on %s:%d", self._name, self._host, self._port)
        return self

    async def stop(self) -> None:
        """Stop answering, close every connection and the listener (see the module docstring)."""
        server, closing, left = self._server, self._closing, self._left
        if server is None or closing is None or left is None:
            return
        closing.set()
        while self._inside:
            left.clear()
            await left.wait()
        self._server = None
        listener: Any = server.transport
        await server.shutdown()  # type: ignore[no-untyped-call]
        if listener is not None:
            await listener.wait_closed()
        for _ in range(3):  # let the closed connections' callbacks run
            await asyncio.sleep(0)
        log.info("field server %s on port %d stopped", self._name, self._port)

    async def __aenter__(self) -> FieldServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- values

    def set(
        self,
        unit_id: int,
        point_or_register: str | int,
        value: Any,
        *,
        table: RegisterTable | str = RegisterTable.HOLDING,
    ) -> None:
        """Set one point's field value (a point name of the unit's table, encoded by its row),
        or one raw word (an address of ``table``: 0..65535, or a bool for the bit tables).

        Raises InvalidArgument naming the unit, the point and the value.
        """
        if isinstance(point_or_register, str):
            self.set_many(unit_id, {point_or_register: value})
            return
        unit = self._unit(unit_id)
        where = RegisterTable(table) if isinstance(table, str) else table
        cells = self._memory.get((unit, where), {})
        if point_or_register not in cells:
            raise InvalidArgument(
                f"field server {self._name!r}: unit {unit} has no {where.value} "
                f"{point_or_register!r} in its point table"
            )
        if where.bits:
            if type(value) is not bool:
                raise InvalidArgument(f"a {where.value} holds True or False, got {value!r}")
        elif type(value) is not int or not 0 <= value <= 0xFFFF:
            raise InvalidArgument(f"a register holds an int 0..65535, got {value!r}")
        with self._lock:
            cells[point_or_register] = value

    def set_many(self, unit_id: int, values: Mapping[str, Any]) -> None:
        """Set several points' field values at once: every value is encoded first, so a bad
        one changes nothing; a poll sees all of them or none."""
        unit = self._unit(unit_id)
        table = self._tables[unit]
        writes: list[tuple[PointRow, Any]] = []
        for name, value in values.items():
            row = table.row(unit, name)
            if row.table.bits or row.bit is not None:
                writes.append((row, row.to_raw(value)))
            else:
                writes.append((row, row.encode(value)))
        with self._lock:
            for row, encoded in writes:
                cells = self._memory[unit, row.table]
                if row.table.bits:
                    cells[row.address] = bool(encoded)
                elif row.bit is not None:
                    word = int(cells[row.address]) & ~(1 << row.bit)
                    cells[row.address] = word | (int(bool(encoded)) << row.bit)
                else:
                    for offset, word in enumerate(encoded):
                        cells[row.address + offset] = word

    def set_model_values(self, unit_id: int, values: Mapping[str, Any]) -> None:
        """Set the registers that give model values ``values`` (``active_power`` in kW, a
        state, an array), through the unit's table run backwards; model points the table
        does not map are ignored."""
        unit = self._unit(unit_id)
        self.set_many(unit, self._tables[unit].from_model(unit, values))

    def get(self, unit_id: int, point: str) -> Any:
        """The field value the registers of ``point`` hold now."""
        unit = self._unit(unit_id)
        row = self._tables[unit].row(unit, point)
        with self._lock:
            cells = self._memory[unit, row.table]
            data = [cells[a] for a in range(row.address, row.address + max(row.words, 1))]
        if row.table.bits:
            return bool(data[0])
        if row.bit is not None:
            return bool((int(data[0]) >> row.bit) & 1)
        return row.decode([int(w) for w in data])

    def words(
        self, unit_id: int, table: RegisterTable | str, address: int, count: int = 1
    ) -> list[int | bool]:
        """The raw words (or bits) at ``address``..``address + count - 1``; InvalidArgument
        for an address the unit does not have."""
        unit = self._unit(unit_id)
        where = RegisterTable(table) if isinstance(table, str) else table
        cells = self._memory.get((unit, where), {})
        with self._lock:
            try:
                return [cells[a] for a in range(address, address + count)]
            except KeyError as exc:
                raise InvalidArgument(
                    f"unit {unit} has no {where.value} {exc.args[0]} in its point table"
                ) from None

    # ----------------------------------------------------------------- faults

    def fail(
        self,
        unit_id: int,
        code: ExceptionCode | int = ExceptionCode.DEVICE_FAILURE,
        *,
        requests: int | None = None,
    ) -> None:
        """Answer unit ``unit_id``'s requests with exception ``code`` (every one, or the next
        ``requests``)."""
        self._inject(unit_id, _Fault(code=ExceptionCode(code)), requests)

    def mute(self, unit_id: int, *, requests: int | None = None) -> None:
        """Leave unit ``unit_id``'s requests unanswered (every one, or the next ``requests``)."""
        self._inject(unit_id, _Fault(mute=True), requests)

    def delay(self, unit_id: int, seconds: float, *, requests: int | None = None) -> None:
        """Answer unit ``unit_id``'s requests ``seconds`` late (every one, or the next
        ``requests``). [s, wall clock]"""
        if not seconds >= 0:
            raise InvalidArgument(f"delay must be >= 0 s, got {seconds!r}")
        self._inject(unit_id, _Fault(delay=float(seconds)), requests)

    def heal(self, unit_id: int | None = None) -> None:
        """Clear the fault of unit ``unit_id`` (of every unit when None)."""
        with self._lock:
            if unit_id is None:
                self._faults.clear()
            else:
                self._faults.pop(self._unit(unit_id), None)

    def stats(self, unit_id: int) -> UnitStats:
        """A copy of unit ``unit_id``'s counters."""
        unit = self._unit(unit_id)
        with self._lock:
            s = self._stats[unit]
            return UnitStats(s.reads, s.writes, s.exceptions, s.unanswered, s.delayed)

    def _inject(self, unit_id: int, fault: _Fault, requests: int | None) -> None:
        unit = self._unit(unit_id)
        if requests is not None and requests < 1:
            raise InvalidArgument(f"requests must be >= 1 (or None: until healed), got {requests}")
        fault.remaining = requests
        with self._lock:
            self._faults[unit] = fault

    def _unit(self, unit_id: int) -> int:
        if unit_id not in self._tables:
            raise InvalidArgument(
                f"field server {self._name!r} has no unit {unit_id!r} (units: "
                f"{', '.join(map(str, self.unit_ids))})"
            )
        return unit_id

    # ----------------------------------------------------------------- requests

    async def _access(
        self,
        unit_id: int,
        func_code: int,
        address: int,
        count: int,
        values: Sequence[int] | Sequence[bool] | None,
    ) -> list[int] | list[bool] | ExcCodes:
        """One datastore access of a request (read when ``values`` is None)."""
        stats = self._stats.get(unit_id)
        if stats is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        self._inside += 1
        try:
            with self._lock:
                if values is None:
                    stats.reads += 1
                else:
                    stats.writes += 1
                fault = self._take_fault(unit_id)
            closing = self._closing
            if fault is not None and fault.delay and closing is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), fault.delay)
                if not closing.is_set():
                    self._count(stats, "delayed")
            if closing is None or closing.is_set() or (fault is not None and fault.mute):
                self._count(stats, "unanswered")
                raise NoSuchIdException(f"unit {unit_id} does not answer")  # no response
            if fault is not None and fault.code is not None:
                self._count(stats, "exceptions")
                return ExcCodes(int(fault.code))
            return self._serve(unit_id, func_code, address, count, values, stats=stats)
        finally:
            self._inside -= 1
            if not self._inside and self._left is not None:
                self._left.set()

    def _count(self, stats: UnitStats, counter: str) -> None:
        with self._lock:
            setattr(stats, counter, getattr(stats, counter) + 1)

    def _take_fault(self, unit_id: int) -> _Fault | None:
        """The unit's fault for this access (called under the lock)."""
        fault = self._faults.get(unit_id)
        if fault is not None and fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[unit_id]
        return fault

    def _serve(
        self,
        unit_id: int,
        func_code: int,
        address: int,
        count: int,
        values: Sequence[int] | Sequence[bool] | None,
        *,
        stats: UnitStats,
    ) -> list[int] | list[bool] | ExcCodes:
        table = _FUNCTION_TABLES.get(func_code)
        if table is None:
            stats.exceptions += 1
            return ExcCodes.ILLEGAL_FUNCTION
        cells = self._memory.get((unit_id, table), {})
        addresses = range(address, address + count)
        with self._lock:
            if any(a not in cells for a in addresses):
                stats.exceptions += 1
                return ExcCodes.ILLEGAL_ADDRESS
            if values is not None:
                for at, value in zip(addresses, values, strict=True):
                    cells[at] = bool(value) if table.bits else int(value)
            if table.bits:
                return [bool(cells[a]) for a in addresses]
            return [int(cells[a]) for a in addresses]
