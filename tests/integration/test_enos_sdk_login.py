"""Logging in with the official EnOS Python SDK over real TCP: static secret, refusals, dynamic
activation (protocol sections 2 and 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from enos.message.upstream.integration.IntMeaturepointPostRequest import (
    IntMeaturepointPostRequest,
)
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import (
    SDK_WARNINGS,
    HubWatch,
    last_presence,
    running_lab,
    sdk_device,
    sdk_log,
    sdk_product,
)

from enos_lab.clock import from_epoch_ms
from enos_lab.hub import DisconnectReason

pytestmark = [SDK_WARNINGS]

CONNACK_NOT_AUTHORISED = 5  # EnOS answers every authentication failure with return code 5


def test_static_login_with_device_secret(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=1) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key="meter01")
        assert lab.device(product.product_key, "meter01").activated_at is None  # inactive
        watch = HubWatch(lab)
        with (
            sdk_log() as log,
            sdk_device(
                lab, product.product_key, "meter01", device_secret=device.device_secret
            ) as sdk,
        ):
            sdk.connect()
            assert sdk.client.is_connected()
            event = watch.wait_connected(product.product_key, "meter01")
            # The SDK's client id is "<deviceKey>|securemode=2,signmethod=hmacsha256,..."
            assert event.client.client_id.startswith("meter01|securemode=2,")
            assert event.client.username == f"meter01&{product.product_key}"
            assert event.client.attributes["secure_mode"] == 2
            assert event.client.attributes["activation"] is False
            assert event.client.attributes["integration"] is False
            assert lab.iothub is not None
            assert lab.iothub.is_online(product.product_key, "meter01")
            record = lab.device(product.product_key, "meter01")
            assert record.online
            assert record.activated_at is not None  # Inactive -> Online on the first login
            row = last_presence(lab, product.product_key, "meter01")
            assert bool(row["online"]) and row["reason"] == "connected"
            # connect() returned on CONNACK, not after its 10 s fallback (CONNACK race, 4.9).
            assert log.connect_timeouts == 0
        gone = watch.wait_disconnected(product.product_key, "meter01")
        assert gone.reason is DisconnectReason.CLIENT_DISCONNECT
        assert not lab.iothub.is_online(product.product_key, "meter01")
        assert not lab.device(product.product_key, "meter01").online
        row = last_presence(lab, product.product_key, "meter01")
        assert not bool(row["online"]) and row["reason"] == "disconnected"


@pytest.mark.parametrize("case", ["wrong secret", "unknown device"])
def test_wrong_credentials_are_refused(tmp_path: Path, case: str) -> None:
    with running_lab(tmp_path / "lab", seed=2) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key="meter02")
        device_key, secret = (
            ("meter02", device.device_secret[::-1] + "x")
            if case == "wrong secret"
            else ("nosuchdevice", device.device_secret)
        )
        watch = HubWatch(lab)
        with (
            sdk_log() as log,
            sdk_device(lab, product.product_key, device_key, device_secret=secret) as sdk,
        ):
            # connect() does not raise on a refusal (it would wait 10 s): connect asynchronously
            # and wait for the SDK's own report of the refused CONNACK.
            sdk.connect_async()
            codes = log.wait_refusals(1)
            assert codes[0] == CONNACK_NOT_AUTHORISED
            assert not sdk.client.is_connected()
        assert lab.iothub is not None
        assert not lab.iothub.is_online(product.product_key, device_key)
        assert watch.of(product.product_key, device_key) == []
        assert lab.hub.clients == {}
        record = lab.device(product.product_key, "meter02")
        assert not record.online and record.activated_at is None
        assert lab.presence(product.product_key, "meter02").empty


def test_dynamic_activation_then_reconnect_with_issued_secret(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=3) as lab:
        product = sdk_product(lab, "Dynamic meter", dynamic_activation=True)
        lab.register_device(product.product_key, device_key="dyn01")
        watch = HubWatch(lab)
        with sdk_device(
            lab, product.product_key, "dyn01", product_secret=product.product_secret
        ) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            first = watch.wait_connected(product.product_key, "dyn01")
            assert first.client.attributes["secure_mode"] == 3
            assert first.client.attributes["activation"] is True
            # activate/info arrives without any SUBSCRIBE; the SDK hands the secret over.
            assert sdk.activated.wait(5.0), "no thing.activate.info reached the SDK"
            issued = sdk.issued_secret
        assert issued
        registered = lab.device(product.product_key, "dyn01")
        assert issued == registered.device_secret

        with sdk_device(lab, product.product_key, "dyn01", device_secret=issued) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            second = watch.wait_connected(product.product_key, "dyn01", count=2)
            assert second.client.attributes["secure_mode"] == 2
            assert second.client.attributes["activation"] is False
            assert lab.iothub is not None
            assert lab.iothub.is_online(product.product_key, "dyn01")
            record = lab.device(product.product_key, "dyn01")
            assert record.online and record.activated_at is not None
            assert record.device_secret == issued  # the secret is fixed once activated
            response = sdk.publish(
                MeasurepointPostRequest.builder().add_measurepoint("temp", 20.5).build()
            )
            assert response.get_code() == 200, response.get_message()
        points = lab.store.query_points("dyn01", "temp", product_key=product.product_key)
        assert points["value"].tolist() == [20.5]


def test_activation_is_refused_once_the_device_is_activated(tmp_path: Path) -> None:
    # Section 3: dynamic activation only for a registered, still inactive device of a product
    # with dynamic activation on; a sub-device product's device may not connect directly.
    with running_lab(tmp_path / "lab", seed=4) as lab:
        dynamic = sdk_product(lab, "Dynamic meter", dynamic_activation=True)
        static = sdk_product(lab, "Static meter")
        sub_only = sdk_product(lab, "Sub meter", node_type="sub_device")
        activated = lab.register_device(dynamic.product_key, device_key="dyn04")
        lab.register_device(static.product_key, device_key="static04")
        sub = lab.register_device(sub_only.product_key, device_key="sub04")
        with sdk_device(
            lab, dynamic.product_key, "dyn04", device_secret=activated.device_secret
        ) as sdk:
            sdk.connect()  # a static login activates the device
            assert sdk.client.is_connected()
        attempts = [
            (dynamic.product_key, "dyn04", None, dynamic.product_secret),
            (static.product_key, "static04", None, static.product_secret),
            (sub_only.product_key, "sub04", sub.device_secret, None),
        ]
        for pk, dk, device_secret, product_secret in attempts:
            with (
                sdk_log() as log,
                sdk_device(
                    lab, pk, dk, device_secret=device_secret, product_secret=product_secret
                ) as sdk,
            ):
                sdk.connect_async()
                assert log.wait_refusals(1)[0] == CONNACK_NOT_AUTHORISED, (pk, dk)
                assert not sdk.client.is_connected()
                assert not sdk.activated.is_set()
        assert lab.device(dynamic.product_key, "dyn04").device_secret == activated.device_secret
        assert lab.device(static.product_key, "static04").activated_at is None
        assert lab.device(sub_only.product_key, "sub04").activated_at is None


def test_message_integration_channel_posts_for_devices_of_its_product(tmp_path: Path) -> None:
    # Secure mode 4 (section 11): device key "%channel%", signed with the product secret.
    with running_lab(tmp_path / "lab", seed=5) as lab:
        product = sdk_product(lab)
        for dk in ("int01", "int02"):
            lab.register_device(product.product_key, device_key=dk)
        watch = HubWatch(lab)
        with sdk_device(
            lab, product.product_key, "%channel%", product_secret=product.product_secret
        ) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            event = watch.wait_connected(product.product_key, "%channel%")
            assert event.client.attributes["secure_mode"] == 4
            assert event.client.attributes["integration"] is True
            request = (
                IntMeaturepointPostRequest.builder()
                .add_meaturepoint("int01", 1_700_000_000_000, {"temp": 20.5})
                .add_meaturepoint("int02", 1_700_000_001_000, {"temp": 21.5, "state": 3})
                .build()
            )
            response = sdk.publish(request)
            assert response.get_code() == 200, response.get_message()
            assert request.get_message_topic() == (  # keys filled in by publish()
                f"/sys/{product.product_key}/integration/measurepoint/post"
            )
        first = lab.store.query_points("int01", product_key=product.product_key)
        assert list(first["value"]) == [20.5]
        assert list(first["time"]) == [from_epoch_ms(1_700_000_000_000)]
        second = lab.store.query_points("int02", product_key=product.product_key)
        assert dict(zip(second["point_id"], second["value"], strict=True)) == {
            "state": 3,
            "temp": 21.5,
        }
