"""Gateways with the official EnOS Python SDK over real TCP: sub-device registration, topology,
sub-device login/logout and data on a sub-device's behalf (protocol section 8)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from enos.core.util.StringI18n import StringI18n
from enos.message.upstream.register.DeviceRegisterRequest import DeviceRegisterRequest
from enos.message.upstream.status.SubDeviceLoginBatchRequest import SubDeviceLoginBatchRequest
from enos.message.upstream.status.SubDeviceLoginRequest import SubDeviceLoginRequest
from enos.message.upstream.status.SubDeviceLogoutRequest import SubDeviceLogoutRequest
from enos.message.upstream.topo.SubDeviceInfo import SubDeviceInfo
from enos.message.upstream.topo.TopoAddRequest import TopoAddRequest
from enos.message.upstream.topo.TopoDeleteRequest import TopoDeleteRequest
from enos.message.upstream.topo.TopoGetRequest import TopoGetRequest
from enos.message.upstream.tsl.MeasurepointPostBatchRequest import MeasurepointPostBatchRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import (
    SDK_WARNINGS,
    HubWatch,
    SdkDevice,
    last_presence,
    running_lab,
    sdk_device,
    sdk_product,
)

from enos_lab.clock import from_epoch_ms
from enos_lab.lab import Lab

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_000_000  # [ms]
SUB_LOGIN_SIGN_FAILED = 742  # section 8.3


@contextmanager
def connected_gateway(
    tmp_path: Path, seed: int
) -> Iterator[tuple[Lab, tuple[str, str], str, SdkDevice]]:
    """A lab with a gateway (connected through the SDK) and a sub-device product."""
    with running_lab(tmp_path / "lab", seed=seed) as lab:
        gw_product = lab.create_product("Gateway", node_type="gateway")
        sub_product = sdk_product(lab, "Sub meter", node_type="sub_device")
        gateway = lab.register_device(gw_product.product_key, device_key="gw")
        gw_key = (gw_product.product_key, "gw")
        with sdk_device(lab, *gw_key, device_secret=gateway.device_secret) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            yield lab, gw_key, sub_product.product_key, sdk


def _ok(response: Any) -> Any:
    assert response.get_code() == 200, (response.get_code(), response.get_message())
    return response


def _keys(entries: Any) -> list[tuple[str, str]]:
    return sorted((e["productKey"], e["deviceKey"]) for e in entries)


def test_sub_device_register(tmp_path: Path) -> None:
    with connected_gateway(tmp_path, seed=31) as (lab, gw_key, sub_pk, sdk):
        request = (
            DeviceRegisterRequest.builder()
            .add_register_information(
                sub_pk, "sub01", StringI18n("Meter 1"), "basement", "+08:00", {"rated_power": 7.5}
            )
            .add_register_information(sub_pk, "sub02", StringI18n("Meter 2"), "roof", "+00:00")
            .build()
        )
        response = _ok(sdk.publish(request))
        data = response.get_data()
        assert _keys(data) == [(sub_pk, "sub01"), (sub_pk, "sub02")]
        for entry in data:
            record = lab.device(sub_pk, entry["deviceKey"])
            assert entry["deviceSecret"] == record.device_secret
            assert entry["assetId"] == record.asset_id
        first = lab.device(sub_pk, "sub01")
        assert first.name == "Meter 1"
        assert first.description == "basement"
        assert first.timezone == "+08:00"
        assert dict(first.attributes) == {"rated_power": 7.5}
        assert first.gateway is None  # registering does not add topology
        assert lab.registry.sub_devices(gw_key) == []

        duplicate = DeviceRegisterRequest.builder().add_register_information(
            sub_pk, "sub01", StringI18n("again"), "", "+00:00"
        )
        response = sdk.publish(duplicate.build())
        assert response.get_code() == 702, response.get_message()  # deviceKey exists


def test_topology_add_get_delete(tmp_path: Path) -> None:
    with connected_gateway(tmp_path, seed=32) as (lab, gw_key, sub_pk, sdk):
        sub = lab.register_device(sub_pk, device_key="sub01")
        other = lab.register_device(sub_pk, device_key="sub02")

        add = TopoAddRequest.builder().add_sub_device(
            SubDeviceInfo(sub_pk, "sub01", sub.device_secret)
        )
        _ok(sdk.publish(add.build()))
        assert [(d.product_key, d.device_key) for d in lab.registry.sub_devices(gw_key)] == [
            (sub_pk, "sub01")
        ]
        assert lab.device(sub_pk, "sub01").gateway == gw_key

        # A proof signed with the wrong secret is refused (1255) and attaches nothing.
        forged = TopoAddRequest.builder().add_sub_device(
            SubDeviceInfo(sub_pk, "sub02", other.device_secret + "x")
        )
        response = sdk.publish(forged.build())
        assert response.get_code() == 1255, response.get_message()
        assert lab.device(sub_pk, "sub02").gateway is None

        listed = _ok(sdk.publish(TopoGetRequest.builder().build()))
        assert _keys(listed.get_data()) == [(sub_pk, "sub01")]

        _ok(sdk.publish(TopoDeleteRequest.builder().delete_sub_device(sub_pk, "sub01").build()))
        assert lab.registry.sub_devices(gw_key) == []
        assert lab.device(sub_pk, "sub01").gateway is None
        listed = _ok(sdk.publish(TopoGetRequest.builder().build()))
        assert listed.get_data() == []


def test_sub_device_login_data_logout(tmp_path: Path) -> None:
    with connected_gateway(tmp_path, seed=33) as (lab, gw_key, sub_pk, sdk):
        sub = lab.register_device(sub_pk, device_key="sub01")
        sub_key = (sub_pk, "sub01")
        lab.registry.attach(gw_key, sub_key)
        assert lab.iothub is not None

        forged = SubDeviceLoginRequest.builder().set_sub_device_info(
            sub_pk, "sub01", sub.device_secret + "x"
        )
        response = sdk.publish(forged.build())
        assert response.get_code() == SUB_LOGIN_SIGN_FAILED, response.get_message()
        assert not lab.iothub.is_online(*sub_key)

        login = SubDeviceLoginRequest.builder().set_sub_device_info(
            sub_pk, "sub01", sub.device_secret
        )
        response = _ok(sdk.publish(login.build()))
        assert response.get_sub_product_key() == sub_pk
        assert response.get_sub_device_key() == "sub01"
        assert lab.iothub.is_online(*sub_key)
        assert lab.iothub.online_sub_devices(gw_key) == [sub_key]
        assert lab.device(*sub_key).online
        assert bool(last_presence(lab, *sub_key)["online"])

        # Data on the sub-device's behalf: /sys/{sub pk}/{sub dk}/... on the gateway's session.
        post = (
            MeasurepointPostRequest.builder()
            .set_product_key(sub_pk)
            .set_device_key("sub01")
            .add_measurepoint("temp", 30.5)
            .set_timestamp(T0)
            .build()
        )
        _ok(sdk.publish(post))
        # A batch on the gateway's topic with an entry for the sub-device.
        batch = (
            MeasurepointPostBatchRequest.builder()
            .add_request(
                MeasurepointPostRequest.builder()
                .set_product_key(sub_pk)
                .set_device_key("sub01")
                .add_measurepoint("temp", 31.0)
                .set_timestamp(T0 + 1000)
                .build()
            )
            .set_allow_offline_sub_device(False)
            .set_skip_invalid_measurepoints(False)
            .build()
        )
        _ok(sdk.publish(batch))
        temp = lab.store.query_points("sub01", "temp", product_key=sub_pk)
        assert list(temp["value"]) == [30.5, 31.0]
        assert list(temp["time"]) == [from_epoch_ms(T0), from_epoch_ms(T0 + 1000)]

        logout = SubDeviceLogoutRequest.builder().set_sub_product_key(sub_pk)
        response = _ok(sdk.publish(logout.set_sub_device_key("sub01").build()))
        assert response.get_data() == {"productKey": sub_pk, "deviceKey": "sub01"}
        assert not lab.iothub.is_online(*sub_key)
        assert lab.iothub.online_sub_devices(gw_key) == []
        row = last_presence(lab, *sub_key)
        assert not bool(row["online"]) and row["reason"] == "logged out"

        # After logout, data for the sub-device is refused (section 8.3: 1009/1212).
        again = (
            MeasurepointPostRequest.builder()
            .set_product_key(sub_pk)
            .set_device_key("sub01")
            .add_measurepoint("temp", 32.0)
            .set_timestamp(T0 + 2000)
            .build()
        )
        response = sdk.publish(again)
        assert response.get_code() in (1009, 1212), response.get_message()
        assert len(lab.store.query_points("sub01", "temp", product_key=sub_pk)) == 2


def test_gateway_disconnect_takes_its_sub_devices_offline(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=34) as lab:
        gw_product = lab.create_product("Gateway", node_type="gateway")
        sub_product = sdk_product(lab, "Sub meter", node_type="sub_device")
        gateway = lab.register_device(gw_product.product_key, device_key="gw")
        sub = lab.register_device(sub_product.product_key, device_key="sub01")
        gw_key = (gw_product.product_key, "gw")
        sub_key = (sub_product.product_key, "sub01")
        lab.registry.attach(gw_key, sub_key)
        watch = HubWatch(lab)
        with sdk_device(lab, *gw_key, device_secret=gateway.device_secret) as sdk:
            sdk.connect()
            login = SubDeviceLoginRequest.builder().set_sub_device_info(*sub_key, sub.device_secret)
            _ok(sdk.publish(login.build()))
            assert lab.device(*sub_key).online
        watch.wait_disconnected(*gw_key)
        assert lab.iothub is not None
        assert not lab.iothub.is_online(*sub_key)
        record = lab.device(*sub_key)
        assert not record.online
        row = last_presence(lab, *sub_key)
        assert not bool(row["online"]) and row["reason"] == "gateway offline"


def test_sub_device_batch_login(tmp_path: Path) -> None:
    with connected_gateway(tmp_path, seed=35) as (lab, gw_key, sub_pk, sdk):
        subs = [lab.register_device(sub_pk, device_key=f"sub0{i}") for i in (1, 2)]
        for sub in subs:
            lab.registry.attach(gw_key, (sub_pk, sub.device_key))
        # The SDK signs every entry with the shared clientId "login.batch" and a timestamp in
        # seconds with a fraction (section 8.3).
        batch = SubDeviceLoginBatchRequest.builder()
        for sub in subs:
            batch.add_sub_device_info(sub_pk, sub.device_key, sub.device_secret)
        response = _ok(sdk.publish(batch.build()))
        data = response.get_data()
        assert _keys(data["loginedSubDevices"]) == [(sub_pk, "sub01"), (sub_pk, "sub02")]
        assert data["failedSubDevices"] == []
        assert lab.iothub is not None
        assert sorted(lab.iothub.online_sub_devices(gw_key)) == [
            (sub_pk, "sub01"),
            (sub_pk, "sub02"),
        ]
        for sub in subs:
            assert lab.device(sub_pk, sub.device_key).online
