"""Credential rotation seen through the official EnOS Python SDK: a device whose secret was
rotated is disconnected, its automatic reconnect with the old secret is refused, and it gets in
with the new one."""

from __future__ import annotations

from pathlib import Path

from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, running_lab, sdk_device, sdk_log, sdk_product

pytestmark = [SDK_WARNINGS]

CONNACK_NOT_AUTHORISED = 5


def test_the_sdk_is_disconnected_refused_with_the_old_secret_and_admitted_with_the_new(
    tmp_path: Path,
) -> None:
    with running_lab(tmp_path / "lab", seed=17) as lab:
        pk = sdk_product(lab).product_key
        old = lab.register_device(pk, device_key="meter").device_secret
        with sdk_log() as log, sdk_device(lab, pk, "meter", device_secret=old) as sdk:
            sdk.connect()
            new = lab.rotate_device_secret(pk, "meter")
            log.wait_drops(1)  # the SDK saw its connection closed ...
            # ... and its automatic reconnect, signed with the old secret, is refused
            assert log.wait_refusals(1)[0] == CONNACK_NOT_AUTHORISED
            assert not sdk.client.is_connected()
        reasons = lab.refused_logins(pk, "meter")["reason"].tolist()
        assert reasons[0] == "signature does not match the device secret"
        with sdk_device(lab, pk, "meter", device_secret=new) as sdk:
            sdk.connect()
            request = MeasurepointPostRequest.builder().add_measurepoint("temp", 21.5).build()
            assert sdk.publish(request).get_code() == 200
