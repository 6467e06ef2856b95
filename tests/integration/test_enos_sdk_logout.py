"""Logout with the official EnOS Python SDK on the device side (issue 14 "Logout", protocol
sections 2.5 and 8.4): the SDK gateway's sub-device enable / disable / delete handlers hear
``combine/enable|disable|delete`` for its sub-device, answer them, and the gateway stays
connected; a deleted device is refused, its history kept or purged, and its key registered
again connects with the fresh secret only."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from enos.message.downstream.device.SubDeviceDeleteCommand import SubDeviceDeleteCommand
from enos.message.downstream.device.SubDeviceDeleteReply import SubDeviceDeleteReply
from enos.message.downstream.device.SubDeviceDisableCommand import SubDeviceDisableCommand
from enos.message.downstream.device.SubDeviceDisableReply import SubDeviceDisableReply
from enos.message.downstream.device.SubDeviceEnableCommand import SubDeviceEnableCommand
from enos.message.downstream.device.SubDeviceEnableReply import SubDeviceEnableReply
from enos.message.upstream.status.SubDeviceLoginRequest import SubDeviceLoginRequest
from enos.message.upstream.topo.TopoGetRequest import TopoGetRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import (
    SDK_WARNINGS,
    WAIT,
    HubWatch,
    running_lab,
    sdk_device,
    sdk_log,
    sdk_product,
    stored_devices,
)

from enos_lab.hub import DisconnectReason

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_000_000  # [ms]
CONNACK_NOT_AUTHORISED = 5
SUB_DEVICE_NOT_EXIST = 705  # section 8.3


def _post(pk: str, dk: str, value: float, time_ms: int) -> Any:
    return (
        MeasurepointPostRequest.builder()
        .set_product_key(pk)
        .set_device_key(dk)
        .add_measurepoint("temp", value)
        .set_timestamp(time_ms)
        .build()
    )


class Notices:
    """What the SDK gateway's lifecycle handlers heard, in order, awaitable."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any, list[str]]] = []
        self._cond = threading.Condition()

    def handler(self, reply_type: Any) -> Any:
        def handle(command: Any, topic_args: list[str]) -> Any:
            with self._cond:
                self.heard.append((command.get_method(), command.get_params(), list(topic_args)))
                self._cond.notify_all()
            return reply_type.builder().set_code(200).build()

        return handle

    def wait(self, count: int) -> list[tuple[str, Any, list[str]]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.heard) >= count, WAIT), self.heard
            return list(self.heard)


def test_sdk_gateway_hears_disable_enable_delete_of_its_sub_device(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=141) as lab:
        gw_pk = lab.create_product("Gateway", node_type="gateway").product_key
        sub_pk = sdk_product(lab, "Sub meter", node_type="sub_device").product_key
        gateway = lab.register_device(gw_pk, device_key="gw141")
        sub = lab.register_device(sub_pk, device_key="sub141")
        gw_key, sub_key = (gw_pk, "gw141"), (sub_pk, "sub141")
        lab.registry.attach(gw_key, sub_key)
        assert lab.iothub is not None
        notices = Notices()
        with sdk_device(lab, *gw_key, device_secret=gateway.device_secret) as sdk:
            client = sdk.client
            client.register_arrived_message_handler(
                SubDeviceDisableCommand.get_class(), notices.handler(SubDeviceDisableReply)
            )
            client.register_arrived_message_handler(
                SubDeviceEnableCommand.get_class(), notices.handler(SubDeviceEnableReply)
            )
            client.register_arrived_message_handler(
                SubDeviceDeleteCommand.get_class(), notices.handler(SubDeviceDeleteReply)
            )
            sdk.connect()
            login = SubDeviceLoginRequest.builder().set_sub_device_info(*sub_key, sub.device_secret)
            assert sdk.publish(login.build()).get_code() == 200
            assert sdk.publish(_post(*sub_key, 21.0, T0)).get_code() == 200

            lab.disable_device(*sub_key)
            notices.wait(1)
            assert not lab.iothub.is_online(*sub_key)
            lab.enable_device(*sub_key)
            notices.wait(2)
            assert sdk.publish(login.build()).get_code() == 200  # enabled: back in
            assert lab.iothub.is_online(*sub_key)
            assert sdk.publish(_post(*sub_key, 22.0, T0 + 1000)).get_code() == 200

            lab.delete_device(*sub_key)  # history kept (EnOS deleteDevice)
            heard = notices.wait(3)
            assert [method for method, _, _ in heard] == [
                "combine.disable",
                "combine.enable",
                "combine.delete",
            ]
            for _, params, topic_args in heard:
                assert params == [{"productKey": sub_pk, "deviceKey": "sub141"}]
                assert tuple(topic_args[:2]) == gw_key  # /ext/session/{gw}/combine/...
            assert not lab.iothub.is_online(*sub_key)
            assert lab.iothub.online_sub_devices(gw_key) == []
            # The gateway answered each notice and stays connected and served.
            assert client.is_connected()
            topo = sdk.publish(TopoGetRequest.builder().build())
            assert topo.get_code() == 200 and topo.get_data() == []  # topology gone
            again = sdk.publish(login.build())
            assert again.get_code() == SUB_DEVICE_NOT_EXIST, again.get_message()
            refused = sdk.publish(_post(*sub_key, 23.0, T0 + 2000))
            assert refused.get_code() in (1009, 1212), refused.get_message()
        temp = lab.store.query_points("sub141", "temp", product_key=sub_pk)
        assert list(temp["value"]) == [21.0, 22.0]


def test_sdk_device_deleted_with_purge_then_registered_again(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=142) as lab:
        pk = sdk_product(lab).product_key
        old = lab.register_device(pk, device_key="meter142")
        watch = HubWatch(lab)
        with (
            sdk_log() as log,
            sdk_device(lab, pk, "meter142", device_secret=old.device_secret) as sdk,
        ):
            sdk.connect()
            watch.wait_connected(pk, "meter142")
            assert sdk.publish(_post(pk, "meter142", 30.0, T0)).get_code() == 200
            assert (pk, "meter142") in stored_devices(lab)

            lab.delete_device(pk, "meter142", purge=True)
            assert watch.wait_disconnected(pk, "meter142").reason is DisconnectReason.KICKED
            # The SDK's automatic reconnect with the old secret is refused.
            assert log.wait_refusals(1)[0] == CONNACK_NOT_AUTHORISED
            assert (pk, "meter142") not in stored_devices(lab)

        new = lab.register_device(pk, device_key="meter142")
        assert new.device_secret != old.device_secret
        with sdk_device(lab, pk, "meter142", device_secret=new.device_secret) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            assert sdk.publish(_post(pk, "meter142", 5.0, T0 - 1000)).get_code() == 200
        temp = lab.store.query_points("meter142", "temp", product_key=pk)
        assert list(temp["value"]) == [5.0]  # no old data
