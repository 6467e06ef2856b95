"""Device lifecycle seen through the official EnOS Python SDK: a disabled device is kicked and
refused, an enabled one gets back in; a disabled sub-device is logged out and its gateway told
(protocol sections 2.5 and 8.4)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from enos.message.downstream.device.SubDeviceDisableCommand import SubDeviceDisableCommand
from enos.message.downstream.device.SubDeviceDisableReply import SubDeviceDisableReply
from enos.message.upstream.status.SubDeviceLoginRequest import SubDeviceLoginRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import (
    SDK_WARNINGS,
    WAIT,
    HubWatch,
    SdkDevice,
    last_presence,
    running_lab,
    sdk_device,
    sdk_log,
    sdk_product,
    stored_devices,
)

from enos_lab.errors import NotFound
from enos_lab.hub import DisconnectReason

pytestmark = [SDK_WARNINGS]

CONNACK_NOT_AUTHORISED = 5


def test_disabled_device_is_kicked_refused_and_readmitted_when_enabled(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=11) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key="meter11")
        pk = product.product_key
        watch = HubWatch(lab)
        with (
            sdk_log() as log,
            sdk_device(lab, pk, "meter11", device_secret=device.device_secret) as sdk,
        ):
            sdk.connect()
            assert sdk.client.is_connected()
            watch.wait_connected(pk, "meter11")

            disabled = lab.disable_device(pk, "meter11")
            assert not disabled.enabled
            kicked = watch.wait_disconnected(pk, "meter11")
            assert kicked.reason is DisconnectReason.KICKED
            log.wait_drops(1)  # the SDK saw its connection drop ...
            # ... and its automatic reconnect (same profile, same signature) is refused.
            assert log.wait_refusals(1)[0] == CONNACK_NOT_AUTHORISED
            assert not sdk.client.is_connected()
            assert lab.iothub is not None
            assert not lab.iothub.is_online(pk, "meter11")
            record = lab.device(pk, "meter11")
            assert not record.online and not record.enabled
            row = last_presence(lab, pk, "meter11")
            assert not bool(row["online"]) and row["reason"] == "disabled"
            assert len(watch.of(pk, "meter11")) == 2  # the refused reconnect never got in

            # Enabled again: the SDK's next automatic reconnect (back-off 2 s) is accepted.
            lab.enable_device(pk, "meter11")
            watch.wait_connected(pk, "meter11", count=2)
            log.wait_connects(2)
            assert sdk.client.is_connected()
            assert lab.iothub.is_online(pk, "meter11")
            assert lab.device(pk, "meter11").online
            row = last_presence(lab, pk, "meter11")
            assert bool(row["online"]) and row["reason"] == "connected"


def test_disabled_sub_device_is_logged_out_and_gateway_notified(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=12) as lab:
        gw_product = lab.create_product("Gateway", node_type="gateway")
        sub_product = sdk_product(lab, "Sub meter", node_type="sub_device")
        gateway = lab.register_device(gw_product.product_key, device_key="gw12")
        sub = lab.register_device(sub_product.product_key, device_key="sub12")
        gw_key = (gw_product.product_key, "gw12")
        sub_key = (sub_product.product_key, "sub12")
        lab.registry.attach(gw_key, sub_key)

        notices: list[Any] = []
        noticed = threading.Event()

        def on_disable(command: Any, topic_args: list[str]) -> Any:
            notices.append((command.get_method(), command.get_params(), list(topic_args)))
            noticed.set()
            return SubDeviceDisableReply.builder().set_code(200).build()

        with sdk_device(lab, *gw_key, device_secret=gateway.device_secret) as sdk:
            sdk.client.register_arrived_message_handler(
                SubDeviceDisableCommand.get_class(), on_disable
            )
            sdk.connect()
            login = SubDeviceLoginRequest.builder().set_sub_device_info(*sub_key, sub.device_secret)
            response = sdk.publish(login.build())
            assert response.get_code() == 200, response.get_message()
            assert lab.iothub is not None
            assert lab.iothub.is_online(*sub_key)

            lab.disable_device(*sub_key)
            assert noticed.wait(WAIT), "the gateway got no combine.disable"
            method, params, topic_args = notices[0]
            assert method == "combine.disable"
            assert params == [{"productKey": sub_key[0], "deviceKey": sub_key[1]}]
            assert tuple(topic_args[:2]) == gw_key  # /ext/session/{gw}/combine/disable
            assert not lab.iothub.is_online(*sub_key)
            assert lab.iothub.online_sub_devices(gw_key) == []
            assert sdk.client.is_connected()  # the gateway itself stays connected
            assert lab.iothub.is_online(*gw_key)
            row = last_presence(lab, *sub_key)
            assert not bool(row["online"]) and row["reason"] == "disabled"

            # Data for the disabled (logged-out) sub-device is refused.
            post = (
                MeasurepointPostRequest.builder()
                .set_product_key(sub_key[0])
                .set_device_key(sub_key[1])
                .add_measurepoint("temp", 30.0)
                .build()
            )
            refused = sdk.publish(post)
            assert refused.get_code() in (1009, 1212), refused.get_message()
        assert sub_key not in stored_devices(lab)


def test_deleted_device_is_kicked_and_refused(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=13) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key="meter13")
        pk = product.product_key
        watch = HubWatch(lab)
        with (
            sdk_log() as log,
            sdk_device(lab, pk, "meter13", device_secret=device.device_secret) as sdk,
        ):
            sdk.connect()
            watch.wait_connected(pk, "meter13")
            deleted = lab.delete_device(pk, "meter13")
            assert deleted.device_key == "meter13"
            assert watch.wait_disconnected(pk, "meter13").reason is DisconnectReason.KICKED
            log.wait_drops(1)
            assert log.wait_refusals(1)[0] == CONNACK_NOT_AUTHORISED
            assert not sdk.client.is_connected()
        assert lab.iothub is not None
        assert not lab.iothub.is_online(pk, "meter13")
        with pytest.raises(NotFound):
            lab.device(pk, "meter13")


def test_second_login_of_a_device_takes_the_session_over(tmp_path: Path) -> None:
    # One session per device (section 2.7): the newer login wins, the older one is closed.
    with running_lab(tmp_path / "lab", seed=14) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key="meter14")
        pk = product.product_key
        watch = HubWatch(lab)
        with sdk_log() as log:
            first = SdkDevice(lab, pk, "meter14", device_secret=device.device_secret)
            second = SdkDevice(lab, pk, "meter14", device_secret=device.device_secret)
            try:
                first.connect()
                watch.wait_connected(pk, "meter14")
                second.connect()
                newer = watch.wait_connected(pk, "meter14", count=2)
                older = watch.wait_disconnected(pk, "meter14")
                assert older.client.client_id != newer.client.client_id
                assert older.reason is DisconnectReason.KICKED
                log.wait_drops(1)
                # Stop the older client before its automatic reconnect (1 s) takes it back.
                first.close()
                assert second.client.is_connected()
                assert lab.iothub is not None
                assert lab.iothub.is_online(pk, "meter14")
                frame = lab.presence(pk, "meter14")
                tail = list(zip(frame["online"].astype(bool), frame["reason"], strict=True))[-3:]
                assert tail == [(True, "connected"), (False, "taken over"), (True, "connected")]
            finally:
                first.close()
                second.close()
