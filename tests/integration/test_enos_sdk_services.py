"""Remote control checked against the thing model, answered by the official EnOS Python SDK over
real TCP: a service invocation with its input and output checked (protocol reference 9.1), a
device's error code as CommandFailed, measurepoint set and get through the model, an offline
device (instant commands fail at once)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from enos.message.downstream.tsl.MeasurepointGetCommand import MeasurepointGetCommand
from enos.message.downstream.tsl.MeasurepointGetReply import MeasurepointGetReply
from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
from enos.message.downstream.tsl.ServiceInvocationCommand import ServiceInvocationCommand
from enos.message.downstream.tsl.ServiceInvocationReply import ServiceInvocationReply
from enos_sdk_helpers import SDK_WARNINGS, WAIT, running_lab, sdk_device

from enos_lab.errors import CommandFailed, DeviceOffline, NotFound, ValidationError

pytestmark = [SDK_WARNINGS]


class Inverter:
    """The handlers of an inverter written with the SDK: a power limit it accepts up to
    50 kW (above: its own error code 2001), and its measurepoints."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.arrived = threading.Event()
        self.bad_output = False

    def on_service(self, command: Any, topic_args: list[str]) -> Any:
        self.calls.append((command.get_method(), command.get_params()))
        self.arrived.set()
        limit = command.get_params().get("limit", 0)
        reply = ServiceInvocationReply.builder()
        if limit > 50:
            return reply.set_code(2001).set_message("limit above rating").build()
        accepted = "yes" if self.bad_output else True
        return reply.set_code(200).add_output_data("accepted", accepted).build()

    def on_set(self, command: Any, topic_args: list[str]) -> Any:
        self.calls.append((command.get_method(), command.get_params()))
        return MeasurepointSetReply.builder().set_code(200).build()

    def on_get(self, command: Any, topic_args: list[str]) -> Any:
        self.calls.append((command.get_method(), command.get_params()))
        values = {"active_power": 12.5, "internal_temperature": 41.0}
        reply = MeasurepointGetReply.builder().set_code(200)
        return reply.add_measureponits({k: values[k] for k in command.get_params()}).build()

    def register(self, client: Any) -> None:
        client.register_arrived_message_handler(
            ServiceInvocationCommand.get_class(), self.on_service
        )
        client.register_arrived_message_handler(MeasurepointSetCommand.get_class(), self.on_set)
        client.register_arrived_message_handler(MeasurepointGetCommand.get_class(), self.on_get)


def test_services_and_measurepoints_are_checked_against_the_model(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=43) as lab:
        pk = lab.create_product("Inverter", model_id="pv_inverter").product_key
        device = lab.register_device(pk, device_key="inv43")
        inverter = Inverter()
        with sdk_device(lab, pk, "inv43", device_secret=device.device_secret) as sdk:
            inverter.register(sdk.client)
            sdk.connect()
            out = lab.invoke_service(pk, "inv43", "set_power_limit", {"limit": 30})
            assert out == {"accepted": True}
            assert inverter.calls[-1] == ("thing.service.set_power_limit", {"limit": 30.0})

            sent = len(inverter.calls)
            with pytest.raises(ValidationError, match="limit") as bad:  # never sent
                lab.invoke_service(pk, "inv43", "set_power_limit", {"limit": "high"})
            assert bad.value.code == 1204
            with pytest.raises(ValidationError, match="limit"):  # a required input missing
                lab.invoke_service(pk, "inv43", "set_power_limit", {})
            with pytest.raises(NotFound, match=r"no service 'fly'.*set_power_limit"):
                lab.invoke_service(pk, "inv43", "fly")
            assert len(inverter.calls) == sent

            with pytest.raises(CommandFailed, match="code 2001: limit above rating") as failed:
                lab.invoke_service(pk, "inv43", "set_power_limit", {"limit": 80})
            assert (failed.value.code, failed.value.device_key) == (2001, "inv43")

            inverter.bad_output = True
            with pytest.raises(ValidationError, match="output that does not fit its model"):
                lab.invoke_service(pk, "inv43", "set_power_limit", {"limit": 10})

            lab.set_measurepoints(pk, "inv43", {"active_power": 20.0})
            assert inverter.calls[-1] == ("thing.service.measurepoint.set", {"active_power": 20.0})
            with pytest.raises(ValidationError):
                lab.set_measurepoints(pk, "inv43", {"active_power": "lots"})
            got = lab.get_measurepoints(pk, "inv43", ["active_power", "internal_temperature"])
            assert got == {"active_power": 12.5, "internal_temperature": 41.0}
            with pytest.raises(NotFound, match="no measurepoint 'nope'"):
                lab.get_measurepoints(pk, "inv43", ["nope"])

        with pytest.raises(DeviceOffline):  # an instant command fails at once when offline
            lab.invoke_service(pk, "inv43", "restart", timeout=WAIT)
        with pytest.raises(NotFound):
            lab.invoke_service(pk, "ghost", "restart")
