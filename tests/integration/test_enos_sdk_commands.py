"""Downstream commands answered by the official EnOS Python SDK over real TCP: measurepoint
set/get to a direct device and, through its gateway, to a sub-device (protocol sections 4.3,
6.2 and 9.2)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from enos.message.downstream.tsl.MeasurepointGetCommand import MeasurepointGetCommand
from enos.message.downstream.tsl.MeasurepointGetReply import MeasurepointGetReply
from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
from enos.message.upstream.status.SubDeviceLoginRequest import SubDeviceLoginRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, running_lab, sdk_device, sdk_product

from enos_lab.enos import TopicKind
from enos_lab.errors import EnosLabError

pytestmark = [SDK_WARNINGS]


class Handlers:
    """Measurepoint set/get handlers as a device engineer registers them with the SDK."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any, list[str]]] = []
        self.arrived = threading.Event()

    def on_set(self, command: Any, topic_args: list[str]) -> Any:
        self.received.append((command.get_method(), command.get_params(), list(topic_args)))
        self.arrived.set()
        return MeasurepointSetReply.builder().set_code(200).set_message("set").build()

    def on_get(self, command: Any, topic_args: list[str]) -> Any:
        self.received.append((command.get_method(), command.get_params(), list(topic_args)))
        self.arrived.set()
        values = {"temp": 21.5, "state": 1}
        reply = MeasurepointGetReply.builder().set_code(200)
        return reply.add_measureponits({k: values[k] for k in command.get_params()}).build()

    def register(self, client: Any) -> None:
        client.register_arrived_message_handler(MeasurepointSetCommand.get_class(), self.on_set)
        client.register_arrived_message_handler(MeasurepointGetCommand.get_class(), self.on_get)


def test_measurepoint_set_and_get_reach_a_direct_device_without_subscription(
    tmp_path: Path,
) -> None:
    with running_lab(tmp_path / "lab", seed=41) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key="meter41")
        pk = product.product_key
        handlers = Handlers()
        with sdk_device(lab, pk, "meter41", device_secret=device.device_secret) as sdk:
            handlers.register(sdk.client)
            sdk.connect()
            reply = lab.send_command(pk, "meter41", TopicKind.MEASUREPOINT_SET, {"temp": 25.0})
            assert reply is not None and reply.code == 200, reply
            assert handlers.received[0][:2] == (
                "thing.service.measurepoint.set",
                {"temp": 25.0},
            )
            assert handlers.received[0][2][:2] == [pk, "meter41"]

            reply = lab.send_command(pk, "meter41", TopicKind.MEASUREPOINT_GET, ["temp"])
            assert reply is not None and reply.code == 200, reply
            assert reply.data == {"temp": 21.5}
            assert handlers.received[1][1] == ["temp"]

        with pytest.raises(EnosLabError):  # offline now
            lab.send_command(pk, "meter41", TopicKind.MEASUREPOINT_SET, {"temp": 1.0}, timeout=WAIT)


def test_command_for_a_sub_device_goes_through_its_gateway(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=42) as lab:
        gw_product = lab.create_product("Gateway", node_type="gateway")
        sub_product = sdk_product(lab, "Sub meter", node_type="sub_device")
        gateway = lab.register_device(gw_product.product_key, device_key="gw42")
        sub = lab.register_device(sub_product.product_key, device_key="sub42")
        gw_key = (gw_product.product_key, "gw42")
        sub_key = (sub_product.product_key, "sub42")
        lab.registry.attach(gw_key, sub_key)
        handlers = Handlers()
        with sdk_device(lab, *gw_key, device_secret=gateway.device_secret) as sdk:
            handlers.register(sdk.client)
            sdk.connect()
            login = SubDeviceLoginRequest.builder().set_sub_device_info(*sub_key, sub.device_secret)
            response = sdk.publish(login.build())
            assert response.get_code() == 200, response.get_message()

            reply = lab.send_command(*sub_key, TopicKind.MEASUREPOINT_SET, {"temp": 19.5})
            assert reply is not None and reply.code == 200, reply
            method, params, topic_args = handlers.received[0]
            assert (method, params) == ("thing.service.measurepoint.set", {"temp": 19.5})
            # The topic keeps the sub-device's keys; the gateway's SDK answers for it.
            assert topic_args[:2] == list(sub_key)
