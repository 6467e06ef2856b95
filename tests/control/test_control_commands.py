"""Command records, asynchronous and cached commands through the facade, answered by the
official EnOS Python SDK over real TCP: a command recorded through its life, an asynchronous
handle, a command timeout (a device that never answers, simulated clock), cached commands
(EnOS ``pendingTtl``) delivered on reconnect in order, the 51st refused, an expired one
marked, and the records kept across a restart."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from enos.message.downstream.tsl.ServiceInvocationCommand import ServiceInvocationCommand
from enos.message.downstream.tsl.ServiceInvocationReply import ServiceInvocationReply
from enos_sdk_helpers import SDK_WARNINGS, WAIT, running_lab, sdk_device

from enos_lab.clock import SimulatedClock
from enos_lab.control import MAX_CACHED, CommandHandle, CommandStatus
from enos_lab.errors import (
    CommandExpired,
    CommandFailed,
    DeviceOffline,
    InvalidArgument,
    LimitExceeded,
    NotFound,
)
from enos_lab.lab import Lab

pytestmark = [SDK_WARNINGS]


class Inverter:
    """An inverter written with the SDK: accepts a power limit up to 50 kW (above: its own
    code 2001); with ``hold`` set it answers only once ``release`` is set."""

    def __init__(self, *, hold: bool = False) -> None:
        self.limits: list[float] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.hold = hold

    def on_service(self, command: Any, topic_args: list[str]) -> Any:
        limit = command.get_params().get("limit", 0)
        self.limits.append(limit)
        self.arrived.set()
        if self.hold:
            self.release.wait(WAIT)
        reply = ServiceInvocationReply.builder()
        if limit > 50:
            return reply.set_code(2001).set_message("limit above rating").build()
        return reply.set_code(200).add_output_data("accepted", True).build()

    def register(self, client: Any) -> None:
        client.register_arrived_message_handler(
            ServiceInvocationCommand.get_class(), self.on_service
        )


def _inverter(lab: Lab, device_key: str) -> tuple[str, str]:
    pk = lab.create_product("Inverter", model_id="pv_inverter").product_key
    return pk, lab.register_device(pk, device_key=device_key).device_secret


def test_a_command_is_recorded_through_its_life_and_async_handles(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=141) as lab:
        pk, secret = _inverter(lab, "inv1")
        inverter = Inverter()
        with sdk_device(lab, pk, "inv1", device_secret=secret) as sdk:
            inverter.register(sdk.client)
            sdk.connect()
            assert lab.invoke_service(pk, "inv1", "set_power_limit", {"limit": 30}) == {
                "accepted": True
            }

            handle = lab.invoke_service(pk, "inv1", "set_power_limit", {"limit": 20}, wait=False)
            assert isinstance(handle, CommandHandle)
            assert handle.result(WAIT) == {"accepted": True}
            assert handle.done() and handle.status is CommandStatus.REPLIED

            async def awaited() -> Any:
                handle = await lab.ainvoke_service(
                    pk, "inv1", "set_power_limit", {"limit": 10}, wait=False
                )
                return await handle

            assert asyncio.run(awaited()) == {"accepted": True}

            failing = lab.invoke_service(pk, "inv1", "set_power_limit", {"limit": 80}, wait=False)
            with pytest.raises(CommandFailed, match="code 2001") as failed:
                failing.result(WAIT)
            assert failed.value.code == 2001
            assert inverter.limits == [30, 20, 10, 80]

        with pytest.raises(DeviceOffline):
            lab.invoke_service(pk, "inv1", "restart")

        frame = lab.commands(pk, "inv1")
        assert list(frame["status"]) == ["replied"] * 3 + ["failed", "failed"]
        assert list(frame["kind"]) == ["set_power_limit"] * 4 + ["restart"]
        assert frame["params"].iloc[0] == {"limit": 30.0}
        assert frame["data"].iloc[0] == {"accepted": True}
        assert list(frame["code"].iloc[:4]) == [200, 200, 200, 2001]
        assert frame["reason"].iloc[4] == "the device is offline"
        assert pd.isna(frame["sent"].iloc[4])
        for column in ("created", "sent", "replied", "finished"):
            assert str(frame[column].dt.tz) == "UTC"
        first = frame.iloc[0]
        assert first["created"] <= first["sent"] <= first["replied"] == first["finished"]

        record = lab.command(failing.id)
        assert (record.status, record.code, record.message) == (
            CommandStatus.FAILED,
            2001,
            "limit above rating",
        )
        assert len(lab.commands(status="failed")) == 2
        assert len(lab.commands(status=CommandStatus.REPLIED, device_key="inv1")) == 3
        assert lab.commands(pk, "inv1", start=datetime(2100, 1, 1, tzinfo=UTC)).empty
        with pytest.raises(InvalidArgument, match="status must be one of"):
            lab.commands(status="lost")
        with pytest.raises(NotFound):
            lab.command("nope")


def test_a_command_timeout_is_recorded(tmp_path: Path) -> None:
    clock = SimulatedClock(datetime.now(UTC))
    with running_lab(tmp_path / "lab", seed=142, clock=clock) as lab:
        pk, secret = _inverter(lab, "mute")
        inverter = Inverter(hold=True)  # answers only after the command timed out
        with sdk_device(lab, pk, "mute", device_secret=secret) as sdk:
            inverter.register(sdk.client)
            sdk.connect()
            handle = lab.invoke_service(
                pk, "mute", "set_power_limit", {"limit": 5}, timeout=10, wait=False
            )
            assert inverter.arrived.wait(WAIT)
            assert handle.status is CommandStatus.SENT
            lab.run(asyncio.sleep(0))  # the IoT hub waits for the reply by now
            clock.advance(11)
            with pytest.raises(TimeoutError, match="did not answer command"):
                handle.result(WAIT)
            with pytest.raises(TimeoutError, match="did not answer command"):
                handle.result()  # over: no wait needed, the command's own error
            inverter.release.set()
        record = lab.command(handle.id)
        assert record.status is CommandStatus.TIMED_OUT
        assert record.reason == "no reply in time"
        assert record.finished is not None and record.sent is not None
        assert (record.finished - record.sent).total_seconds() >= 10


def test_cached_commands_are_delivered_in_order_on_reconnect(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=143) as lab:
        pk, secret = _inverter(lab, "late")
        first = lab.invoke_service(
            pk, "late", "set_power_limit", {"limit": 1}, wait=False, pending_ttl=600
        )
        second = lab.invoke_service(
            pk, "late", "set_power_limit", {"limit": 2}, wait=False, pending_ttl=600
        )
        assert isinstance(first, CommandHandle) and isinstance(second, CommandHandle)
        assert first.status is second.status is CommandStatus.QUEUED
        inverter = Inverter()
        with sdk_device(lab, pk, "late", device_secret=secret) as sdk:
            inverter.register(sdk.client)
            sdk.connect()
            assert first.result(WAIT) == {"accepted": True}
            assert second.result(WAIT) == {"accepted": True}
            # online now: a cached command goes out at once
            assert lab.invoke_service(
                pk, "late", "set_power_limit", {"limit": 3}, pending_ttl=60
            ) == {"accepted": True}
        assert inverter.limits == [1, 2, 3]
        frame = lab.commands(pk, "late")
        assert list(frame["status"]) == ["replied"] * 3
        assert frame["queued"].notna().tolist() == [True, True, False]
        assert frame["expires"].notna().tolist() == [True, True, True]
        # one at a time: the second was sent once the first was answered
        assert frame["sent"].iloc[1] >= frame["replied"].iloc[0]


def test_at_most_50_cached_commands_per_device(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=144) as lab:
        pk, _ = _inverter(lab, "full")
        lab.register_device(pk, device_key="other")
        for limit in range(MAX_CACHED):
            lab.set_measurepoints(
                pk, "full", {"active_power": float(limit)}, wait=False, pending_ttl=600
            )
        with pytest.raises(LimitExceeded, match="50 cached commands"):
            lab.set_measurepoints(pk, "full", {"active_power": 1.0}, wait=False, pending_ttl=600)
        lab.set_measurepoints(pk, "other", {"active_power": 1.0}, wait=False, pending_ttl=600)
        assert len(lab.commands(pk, "full", status="queued")) == MAX_CACHED
        assert len(lab.commands(pk, "other", status="queued")) == 1


def test_an_expired_cached_command_is_marked(tmp_path: Path) -> None:
    clock = SimulatedClock(datetime.now(UTC))
    with running_lab(tmp_path / "lab", seed=145, clock=clock) as lab:
        pk, _ = _inverter(lab, "gone")
        soon = lab.invoke_service(pk, "gone", "restart", wait=False, pending_ttl=60)
        later = lab.invoke_service(pk, "gone", "restart", wait=False, pending_ttl=600)
        assert isinstance(soon, CommandHandle) and isinstance(later, CommandHandle)
        clock.advance(61)
        with pytest.raises(CommandExpired, match="pending_ttl"):
            soon.result(WAIT)
        assert soon.status is CommandStatus.EXPIRED
        assert later.status is CommandStatus.QUEUED
        clock.advance(600)
        assert lab.command(later.id).status is CommandStatus.EXPIRED
        with pytest.raises(InvalidArgument, match="pending_ttl"):
            lab.invoke_service(pk, "gone", "restart", pending_ttl=0)


def test_records_survive_a_restart(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=146) as lab:
        pk, _ = _inverter(lab, "kept")
        with pytest.raises(DeviceOffline):
            lab.invoke_service(pk, "kept", "restart")
        waiting = lab.invoke_service(pk, "kept", "restart", wait=False, pending_ttl=600)
        assert isinstance(waiting, CommandHandle)
        lab.stop()
        assert (tmp_path / "lab" / "commands.sqlite3").stat().st_mode & 0o777 == 0o600
        lab.start()
        frame = lab.commands(pk, "kept")
        assert list(frame["status"]) == ["failed", "failed"]
        assert frame["reason"].iloc[1] == "the lab stopped before the command finished"
        assert lab.command(waiting.id).status is CommandStatus.FAILED
