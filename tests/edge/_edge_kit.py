"""Helpers for the edge tests: the shipped point tables, a table with bits, a raw Modbus
client, and waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from pymodbus.client import AsyncModbusTcpClient

from enos_lab import datasets
from enos_lab.edge import PointRow, PointTable, RegisterTable, RegisterType
from enos_lab.model import (
    DataSpec,
    DataType,
    I18nText,
    Measurepoint,
    ThingModel,
    library_model,
    vendor_mapping,
)

WAIT = 10.0
"""Longest wait for a condition before a test fails. [s]"""

INVERTER_VALUES = {
    "active_power": 4.52,
    "reactive_power": -0.3,
    "total_energy": 12345.678,
    "daily_energy": 18.25,
    "dc_voltage": 612.4,
    "dc_current": 7.4,
    "grid_frequency": 50.01,
    "internal_temperature": 41.5,
    "state": 1,
    "fault_code": 0,
    "phase_voltage": [230.1, 231.0, 229.8],
}
"""pv_inverter values that Vendor A's registers hold exactly."""

METER_VALUES = {
    "active_power": 12.5,
    "reactive_power": 1.25,
    "apparent_power": 12.75,
    "power_factor": 0.98,
    "frequency": 49.98,
    "voltage": [230.1, 231.2, 229.9],
    "current": [18.5, 18.25, 18.75],
    "import_energy": 123456.78,
    "export_energy": 42.5,
}
"""energy_meter values that the meter's registers hold exactly (float32 shortest decimals)."""


def inverter_table() -> PointTable:
    """The shipped Vendor A inverter map (unit 1), bound to pv_inverter."""
    frame, meta = datasets.load("modbus_inverter_vendor_a")
    return PointTable.from_frame(
        frame,
        library_model("pv_inverter"),
        mapping=vendor_mapping("inverter_vendor_a"),
        source=meta["file"],
    )


def meter_table() -> PointTable:
    """The shipped energy meter map (unit 2), bound to energy_meter."""
    frame, meta = datasets.load("modbus_energy_meter")
    return PointTable.from_frame(frame, library_model("energy_meter"), source=meta["file"])


def bits_table(unit_id: int = 5) -> PointTable:
    """A breaker at ``unit_id``: a coil, a discrete input, two bits of a status register and a
    counter beside them."""
    boolean = DataSpec(DataType.BOOL)
    points = {
        name: Measurepoint(name, boolean) for name in ("closed", "tripped", "alarm", "remote")
    } | {"operations": Measurepoint("operations", DataSpec(DataType.INT))}
    model = ThingModel("breaker", I18nText("breaker"), measurepoints=points)
    rows = [
        PointRow(unit_id, RegisterTable.COIL, 0, RegisterType.BOOL, "closed", line=2),
        PointRow(unit_id, RegisterTable.DISCRETE_INPUT, 3, RegisterType.BOOL, "tripped", line=3),
        PointRow(unit_id, RegisterTable.INPUT, 10, RegisterType.BOOL, "alarm", bit=0, line=4),
        PointRow(unit_id, RegisterTable.INPUT, 10, RegisterType.BOOL, "remote", bit=15, line=5),
        PointRow(unit_id, RegisterTable.INPUT, 11, RegisterType.UINT16, "operations", line=6),
    ]
    return PointTable(rows, model, source="breaker")


@asynccontextmanager
async def modbus_client(port: int, timeout: float = 1.0) -> AsyncIterator[AsyncModbusTcpClient]:
    """A connected pymodbus client of 127.0.0.1:``port`` (no retries, no reconnects)."""
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=port, timeout=timeout, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def eventually(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Wait until ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


def tasks() -> set[asyncio.Task[object]]:
    """The running loop's tasks now (compare before and after: nothing may be left over)."""
    return set(asyncio.all_tasks())
