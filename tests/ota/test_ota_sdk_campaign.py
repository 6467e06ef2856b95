"""A firmware upgrade campaign answered by the official EnOS Python SDK over real TCP: the
devices download the firmware over HTTP from the lab's firmware server and check its digest
(as a device engineer writes it with ``OtaUpgradeCommand``), one fails verification ("-3"),
one loses power after 100 % and comes back with its old version (failed), an offline target
gets its push when it comes back, the others succeed once they reconnect with the new
version; a campaign aborted at its failure threshold; a one-call single-device upgrade."""

from __future__ import annotations

import hashlib
import threading
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import enos.core.constant.OTAUpdateFailureCause as Cause
from enos.message.downstream.ota.OtaUpgradeCommand import OtaUpgradeCommand
from enos.message.downstream.ota.OtaUpgradeReply import OtaUpgradeReply
from enos.message.upstream.ota.OtaProgressReportRequest import OtaProgressReportRequest
from enos.message.upstream.ota.OtaVersionReportRequest import OtaVersionReportRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, HubWatch, SdkDevice, running_lab, sdk_device

from enos_lab.lab import Lab
from enos_lab.ota import UpgradeState
from enos_lab.tap import OtaStateChanged

pytestmark = [SDK_WARNINGS]

NEW_IMAGE = bytes(range(256)) * 64  # 16 KiB


class SdkMeter:
    """A meter's firmware agent written with the official SDK. ``behaviour``: "good"
    (download, check, write, reboot with the new version), "corrupt" (the image is damaged
    in transfer to flash: its md5 check fails, "-3") or "power_loss" (reports 100 %, then
    comes back with the old version)."""

    def __init__(self, lab: Lab, product_key: str, device_key: str, behaviour: str) -> None:
        self.lab = lab
        self.product_key = product_key
        self.device_key = device_key
        self.secret = lab.registry.get_device(product_key, device_key).device_secret
        self.behaviour = behaviour
        self.version = "1.0.0"
        self.written = threading.Event()  # 100 % reported: reboot now
        self.offered: list[Any] = []
        self.downloaded: list[bytes] = []

    def open(self, stack: ExitStack) -> SdkDevice:
        """Connect and report the running version (as after every boot)."""
        sdk = stack.enter_context(
            sdk_device(self.lab, self.product_key, self.device_key, device_secret=self.secret)
        )
        sdk.client.register_arrived_message_handler(
            OtaUpgradeCommand.get_class(), lambda command, args: self._on_upgrade(sdk, command)
        )
        sdk.connect()
        self.report_version(sdk, self.version)
        return sdk

    def report_version(self, sdk: SdkDevice, version: str) -> None:
        request = (
            OtaVersionReportRequest.builder()
            .set_product_key(self.product_key)
            .set_device_key(self.device_key)
            .set_version(version)
            .build()
        )
        assert sdk.publish(request).get_code() == 200

    def _progress(self, sdk: SdkDevice, step: str, desc: str) -> None:
        request = (
            OtaProgressReportRequest.builder()
            .set_product_key(self.product_key)
            .set_device_key(self.device_key)
            .set_step(step)
            .set_desc(desc)
            .build()
        )
        sdk.publish(request)

    def _on_upgrade(self, sdk: SdkDevice, command: Any) -> Any:
        firmware = command.get_firmware_info()
        self.offered.append(firmware)
        with urllib.request.urlopen(firmware.file_url, timeout=WAIT) as response:
            image = response.read()
        self.downloaded.append(image)
        self._progress(sdk, "40", "downloaded")
        if self.behaviour == "corrupt":
            image = image[:-1] + bytes([image[-1] ^ 0xFF])
        if len(image) != firmware.file_size or (
            hashlib.new(firmware.sign_method, image).hexdigest() != firmware.sign
        ):
            self._progress(sdk, Cause.FIRMWARE_VERIFICATION_FAILED_CODE, "md5 mismatch")
        else:
            self._progress(sdk, "80", "verified")
            self._progress(sdk, "100", "written, rebooting")
            if self.behaviour == "good":
                self.version = firmware.version
            self.written.set()
        return OtaUpgradeReply.builder().set_code(200).build()

    def reboot(self, stack: ExitStack, sdk: SdkDevice, watch: HubWatch, count: int) -> SdkDevice:
        """Wait for the written image, power-cycle (the lab sees it go) and boot."""
        assert self.written.wait(WAIT), f"{self.device_key} never reported 100%"
        self.written.clear()
        sdk.close()
        watch.wait_disconnected(self.product_key, self.device_key, count)
        return self.open(stack)


def test_a_campaign_over_official_sdk_devices(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=214) as lab, ExitStack() as stack:
        pk = lab.create_product("Meter").product_key
        lab.add_firmware(pk, "1.0.0", b"old image")
        firmware = lab.add_firmware(pk, "1.1.0", NEW_IMAGE, file_name="meter-1.1.0.bin")
        behaviours = {"good1": "good", "good2": "good", "bad": "corrupt", "cut": "power_loss"}
        meters = {}
        for key, behaviour in {**behaviours, "late": "good"}.items():
            lab.register_device(pk, device_key=key)
            meters[key] = SdkMeter(lab, pk, key, behaviour)
        watch = HubWatch(lab)
        sdks = {key: meters[key].open(stack) for key in meters}
        late = meters["late"]
        sdks["late"].close()  # offline now; it reported its version
        watch.wait_disconnected(pk, "late")

        campaign = lab.start_ota_campaign(pk, "1.1.0", timeout=120)
        for key in ("good1", "good2", "cut"):
            sdks[key] = meters[key].reboot(stack, sdks[key], watch, count=1)
        assert lab.ota_state(pk, "late") == "pending"
        sdks["late"] = late.open(stack)  # back: gets its push now
        sdks["late"] = late.reboot(stack, sdks["late"], watch, count=2)

        frame = lab.ota_campaign(campaign).set_index("device_key")
        assert frame["state"].to_dict() == {
            "good1": "succeeded",
            "good2": "succeeded",
            "bad": "failed",
            "cut": "failed",
            "late": "succeeded",
        }
        assert frame.loc["bad", "error"] == "step -3: verification failed (md5 mismatch)"
        assert frame.loc["cut", "error"] == "reported 100% but came back with 1.0.0"
        assert frame.loc["cut", "progress"] == 100
        assert set(frame["from_version"]) == {"1.0.0"}
        for meter in meters.values():  # every device downloaded the real image over HTTP
            (offer,) = meter.offered
            assert offer.file_url == lab.firmwares(pk)["file_url"][1]
            assert (offer.sign_method, offer.sign, offer.file_size) == (
                "md5",
                firmware.sign,
                len(NEW_IMAGE),
            )
            assert meter.downloaded == [NEW_IMAGE]
        assert lab.iothub is not None
        assert lab.iothub.firmware_version(pk, "good1") == "1.1.0"
        assert lab.iothub.firmware_version(pk, "cut") == "1.0.0"
        summary = lab.ota_campaigns().iloc[0]
        assert (summary["state"], summary["succeeded"], summary["failed"]) == ("finished", 3, 2)


def test_abort_threshold_and_one_call_upgrade_with_the_sdk(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=215) as lab, ExitStack() as stack:
        pk = lab.create_product("Meter").product_key
        lab.add_firmware(pk, "1.1.0", NEW_IMAGE)
        meters = {}
        for key, behaviour in (("a", "corrupt"), ("b", "corrupt"), ("c", "good"), ("d", "good")):
            lab.register_device(pk, device_key=key)
            meters[key] = SdkMeter(lab, pk, key, behaviour)
        watch = HubWatch(lab)
        sdks = {key: meter.open(stack) for key, meter in meters.items()}

        with lab.subscribe(OtaStateChanged, product_key=pk) as changes:
            campaign = lab.start_ota_campaign(
                pk, "1.1.0", wave_size=2, abort_failure_rate=0.5, abort_min_sample=2
            )
            # the first wave fails verification; the second is never pushed
            final: dict[str, str] = {}
            steps: list[tuple[str, str]] = []
            while len(final) < 4:
                event = changes.get(timeout=WAIT)
                assert event.campaign_id == campaign
                steps.append((event.device_key, event.state))
                if UpgradeState(event.state).final:
                    final[event.device_key] = event.state
        assert [state for key, state in steps if key == "a"] == [
            "pending",
            "pushed",
            "upgrading",
            "failed",
        ]
        assert [state for key, state in steps if key == "c"] == ["pending", "aborted"]
        states = lab.ota_campaign(campaign).set_index("device_key")["state"]
        assert states.to_dict() == {"a": "failed", "b": "failed", "c": "aborted", "d": "aborted"}
        assert not meters["c"].offered and not meters["d"].offered
        assert lab.ota_campaigns().iloc[0]["state"] == "aborted"

        # one call for one device; succeeded once it reported the new version after reboot
        assert lab.upgrade_device(pk, "c", "1.1.0") == UpgradeState.PUSHED
        sdks["c"] = meters["c"].reboot(stack, sdks["c"], watch, count=1)
        assert lab.ota_state(pk, "c") == UpgradeState.SUCCEEDED
        assert lab.ota_state(pk, "d") == UpgradeState.ABORTED
