"""Field servers: real pymodbus TCP servers laid out by point tables, read and written by a
pymodbus client over TCP, with injected faults."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest
from _edge_kit import (
    INVERTER_VALUES,
    METER_VALUES,
    bits_table,
    eventually,
    inverter_table,
    meter_table,
    modbus_client,
    tasks,
)
from pymodbus.exceptions import ModbusIOException

from enos_lab.edge import (
    ExceptionCode,
    FieldServer,
    RegisterTable,
    RegisterType,
    WordOrder,
    decode_words,
    encode_words,
)
from enos_lab.errors import InvalidArgument


async def test_registers_hold_the_values_encoded_by_the_map() -> None:
    inverter, meter = inverter_table(), meter_table()
    async with FieldServer([inverter, meter], name="gateway") as field:
        assert field.port > 0 and field.unit_ids == (1, 2)
        field.set_model_values(1, INVERTER_VALUES)
        field.set_model_values(2, METER_VALUES)
        async with modbus_client(field.port) as client:
            measurements = await client.read_input_registers(0, count=15, device_id=1)
            status = await client.read_holding_registers(100, count=2, device_id=1)
            floats = await client.read_input_registers(0, count=22, device_id=2)
            energies = await client.read_holding_registers(0, count=6, device_id=2)
        words = measurements.registers
        assert words[0:2] == [0, 4520]  # W, int32 big: 4.52 kW
        assert words[2:4] == encode_words(-300, RegisterType.INT32, WordOrder.BIG)
        assert words[4:6] == encode_words(12345678, RegisterType.UINT32, WordOrder.BIG)
        assert words[8:11] == [6124, 740, 5001]  # DCV 0.1 V, DCA 0.01 A, Hz 0.01 Hz
        assert words[11:14] == [2301, 2310, 2298]  # PhV[0..2]
        assert words[14] == 415  # TmpCab 0.1 degC
        assert status.registers == [4, 0]  # St: Vendor A code 4 is 'running' (state 1)
        assert decode_words(floats.registers[0:2], RegisterType.FLOAT32, WordOrder.BIG) == 12.5
        assert decode_words(floats.registers[10:12], RegisterType.FLOAT32, WordOrder.BIG) == 230.1
        # import energy: uint32 in 10 Wh steps, the least significant word first
        assert energies.registers[0:2] == [12345678 & 0xFFFF, 12345678 >> 16]
        assert decode_words(energies.registers[2:6], RegisterType.FLOAT64, WordOrder.BIG) == 42.5
        assert field.get(2, "import_energy") == 123456780
        assert field.get(1, "St") == 4


async def test_unmapped_addresses_and_units_answer_exceptions() -> None:
    async with FieldServer(meter_table()) as field, modbus_client(field.port) as client:
        inside_and_beyond = await client.read_input_registers(20, count=4, device_id=2)
        assert inside_and_beyond.isError()
        assert inside_and_beyond.exception_code == ExceptionCode.ILLEGAL_ADDRESS
        coils = await client.read_coils(0, count=1, device_id=2)
        assert coils.exception_code == ExceptionCode.ILLEGAL_ADDRESS
        nobody = await client.read_input_registers(0, count=2, device_id=9)
        assert nobody.exception_code == ExceptionCode.GATEWAY_NO_RESPONSE
        assert field.stats(2).exceptions == 2 and field.stats(2).reads == 2


async def test_writes_reach_mapped_holding_registers_and_coils_only() -> None:
    async with FieldServer([inverter_table(), bits_table()]) as field:
        async with modbus_client(field.port) as client:
            written = await client.write_register(100, 7, device_id=1)
            assert not written.isError() and field.get(1, "St") == 7
            refused = await client.write_register(102, 1, device_id=1)
            assert refused.exception_code == ExceptionCode.ILLEGAL_ADDRESS
            assert not (await client.write_coil(0, True, device_id=5)).isError()
            assert field.get(5, "closed") is True
            field.set(5, "tripped", True)
            field.set_many(5, {"alarm": True, "remote": True, "operations": 12})
            field.set(5, "remote", False)
            assert (await client.read_discrete_inputs(3, count=1, device_id=5)).bits[0] is True
            status = await client.read_input_registers(10, count=2, device_id=5)
            assert status.registers == [0b1, 12]  # bit 0 set, bit 15 cleared again
        assert field.stats(5).writes == 1


async def test_a_value_set_from_another_thread_is_never_read_half_written() -> None:
    """set() takes the lock the server reads under: a 32-bit value is read whole."""
    async with FieldServer(inverter_table()) as field, modbus_client(field.port) as client:
        values = (0x0000FFFF, 0x7FFF0000)  # two int32 values that share no word
        stop = threading.Event()
        field.set(1, "W", values[0])

        def writer() -> None:
            while not stop.is_set():
                for value in values:
                    field.set(1, "W", value)

        thread = threading.Thread(target=writer, name="writer")
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads often: a torn read would show
        thread.start()
        try:
            for _ in range(300):
                words = (await client.read_input_registers(0, count=2, device_id=1)).registers
                assert decode_words(words, RegisterType.INT32, WordOrder.BIG) in values
        finally:
            stop.set()
            thread.join()
            sys.setswitchinterval(interval)


async def test_injected_exceptions_silence_and_delays() -> None:
    async with FieldServer([inverter_table(), meter_table()]) as field:
        async with modbus_client(field.port, timeout=0.2) as client:
            field.fail(1, ExceptionCode.DEVICE_BUSY, requests=2)
            for _ in range(2):
                busy = await client.read_holding_registers(100, count=2, device_id=1)
                assert busy.exception_code == ExceptionCode.DEVICE_BUSY
            assert not (await client.read_holding_registers(100, count=2, device_id=1)).isError()
            # unit 2 behind the same server never noticed
            assert not (await client.read_input_registers(0, count=2, device_id=2)).isError()

            field.mute(1, requests=1)
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(100, count=2, device_id=1)
            assert field.stats(1).unanswered == 1

        async with modbus_client(field.port, timeout=2.0) as client:
            field.delay(1, 0.25)
            began = time.monotonic()
            late = await client.read_holding_registers(100, count=2, device_id=1)
            assert not late.isError() and time.monotonic() - began >= 0.25
            field.heal(1)
            assert field.stats(1).delayed == 1
            assert not (await client.read_holding_registers(100, count=2, device_id=1)).isError()
        stats = field.stats(1)
        assert (stats.reads, stats.exceptions, stats.unanswered, stats.delayed) == (6, 2, 1, 1)


async def test_stop_releases_delayed_requests_and_leaves_no_task() -> None:
    before = tasks()
    field = await FieldServer(inverter_table()).start()
    field.delay(1, 60)
    async with modbus_client(field.port, timeout=30) as client:
        read = asyncio.create_task(client.read_holding_registers(100, count=2, device_id=1))
        await eventually(lambda: field.stats(1).reads == 1, "the request inside the server")
        began = time.monotonic()
        await field.stop()
        assert time.monotonic() - began < 5  # not the 60 s delay
        assert not field.running and field.stats(1).unanswered == 1
        read.cancel()
        with pytest.raises(
            (asyncio.CancelledError, ModbusIOException)
        ):  # pymodbus 3.12: the latter
            await read
    assert tasks() <= before


async def test_a_stopped_server_starts_again_on_its_port() -> None:
    field = FieldServer(meter_table())
    await field.start()
    port = field.port
    field.set(2, "active_power", 1.5)
    await field.stop()
    await field.stop()  # no-op
    await field.start()
    try:
        assert field.port == port
        async with modbus_client(port) as client:
            words = (await client.read_input_registers(0, count=2, device_id=2)).registers
        assert decode_words(words, RegisterType.FLOAT32, WordOrder.BIG) == 1.5  # values kept
    finally:
        await field.stop()


def test_bad_values_and_names_are_refused_without_changing_anything() -> None:
    field = FieldServer([inverter_table(), bits_table()])
    with pytest.raises(InvalidArgument, match=r"no unit 3 \(units: 1, 5\)"):
        field.set(3, "W", 1)
    with pytest.raises(InvalidArgument, match=r"unit 1 has no point 'Pac'"):
        field.set(1, "Pac", 1)
    with pytest.raises(
        InvalidArgument, match=r"unit 1 point 'DCV': 7000 is raw 70000, beyond uint16"
    ):
        field.set_many(1, {"W": 1000, "DCV": 7000})
    assert field.get(1, "W") == 0  # the good value of the refused batch was not applied
    with pytest.raises(InvalidArgument, match=r"unit 1 has no holding 102 in its point table"):
        field.set(1, 102, 5)
    with pytest.raises(InvalidArgument, match=r"a register holds an int 0\.\.65535, got 70000"):
        field.set(1, 100, 70000)
    with pytest.raises(InvalidArgument, match="a coil holds True or False"):
        field.set(5, 0, 1, table="coil")
    field.set(1, 100, 3)
    assert field.words(1, RegisterTable.HOLDING, 100, 2) == [3, 0]
    with pytest.raises(InvalidArgument, match="cannot give 'state' = 9"):
        field.set_model_values(1, {"state": 9})
    with pytest.raises(InvalidArgument, match="unit 1 is in"):
        FieldServer([inverter_table(), inverter_table()])
    with pytest.raises(InvalidArgument, match="requests must be >= 1"):
        field.mute(1, requests=0)
    with pytest.raises(InvalidArgument, match="delay must be >= 0 s"):
        field.delay(1, -1)
