"""The device-side firmware agent on the lab's device SDK: a campaign over agents that succeed,
fail each way a device fails ("-2", "-3", "-4", "-5") and lose power after 100 %; each agent
reports its version after every login, so the lab knows what to target."""

from __future__ import annotations

import random
from contextlib import ExitStack
from pathlib import Path

import pytest

from enos_lab.device import Device
from enos_lab.errors import InvalidArgument
from enos_lab.lab import Lab
from enos_lab.ota import FirmwareAgent
from enos_lab.tap import OtaReported, OtaStateChanged

WAIT = 5.0  # [s] upper bound of every wait for an agent


def test_a_campaign_over_firmware_agents(tmp_path: Path) -> None:
    behaviours: dict[str, dict[str, object]] = {
        "ok": {},
        "download": {"fail": "download"},
        "verification": {"fail": "verification"},
        "write": {"fail": "write"},
        "ignore": {"fail": "ignore"},
        "cut": {"power_loss": True},
    }
    with Lab(tmp_path / "lab", port=0, rng=random.Random(9)) as lab, ExitStack() as stack:
        pk = lab.create_product("Meter").product_key
        lab.add_firmware(pk, "2.0.0", b"image 2.0.0" * 100, sign_method="sha256")
        agents = {}
        with lab.subscribe(OtaReported, product_key=pk) as reports:
            for key, options in behaviours.items():
                secret = lab.register_device(pk, device_key=key).device_secret
                device = Device(lab.host, lab.port, pk, key, secret, timeout=WAIT)
                agents[key] = FirmwareAgent(device, "1.0.0", **options)  # type: ignore[arg-type]
                device.connect()
                stack.callback(device.disconnect)
            # each agent reports its version once logged in
            informs = {reports.get(timeout=WAIT).device_key for _ in agents}
        assert informs == set(agents)
        assert lab.iothub is not None
        assert all(lab.iothub.firmware_version(pk, key) == "1.0.0" for key in agents)

        # a device without an upgrade handler answers the push with an error code
        bare_secret = lab.register_device(pk, device_key="bare").device_secret
        bare = stack.enter_context(Device(lab.host, lab.port, pk, "bare", bare_secret))
        bare.report_version("1.0.0")

        with lab.subscribe(OtaStateChanged, device_key="bare") as bare_changes:
            campaign = lab.start_ota_campaign(pk, "2.0.0")
            outcomes = {key: agent.outcomes.get(timeout=WAIT) for key, agent in agents.items()}
            while (change := bare_changes.get(timeout=WAIT)).state != "failed":
                pass
        assert change.error is not None
        assert change.error.startswith("the device answered the upgrade push with code 1101")
        assert outcomes == {
            "ok": "2.0.0",
            "download": "-2",
            "verification": "-3",
            "write": "-4",
            "ignore": "-5",
            "cut": "1.0.0",
        }
        frame = lab.ota_campaign(campaign).set_index("device_key")
        assert frame["state"].to_dict() == {
            "ok": "succeeded",
            "download": "failed",
            "verification": "failed",
            "write": "failed",
            "ignore": "failed",
            "cut": "failed",
            "bare": "failed",
        }
        assert frame.loc["verification", "error"].startswith("step -3: verification failed")
        assert frame.loc["cut", "error"] == "reported 100% but came back with 1.0.0"
        assert agents["ok"].offers[0].sign_method == "sha256"
        assert lab.iothub.firmware_version(pk, "ok") == "2.0.0"

        # one call for one device, waiting for the truth: the new version after the reboot
        lab.add_firmware(pk, "2.1.0", b"image 2.1.0" * 100)
        assert lab.upgrade_device(pk, "ok", "2.1.0", wait=True, timeout=30) == "succeeded"
        assert agents["ok"].outcomes.get(timeout=WAIT) == "2.1.0"
        assert lab.ota_state(pk, "ok") == "succeeded"

        # the lab's event view shows the steps and the state changes, kind "ota"
        view = lab.events(kinds="ota", device_key="ok")
        assert set(view["kind"]) == {"ota"}
        changes = view[[isinstance(e, OtaStateChanged) for e in view["event"]]]
        assert changes["what"].tolist()[-5:] == [
            "pending",
            "pushed",
            "upgrading",
            "rebooting",
            "succeeded",
        ]
        assert "progress" in set(view["what"]) and "inform" in set(view["what"])
        with pytest.raises(InvalidArgument, match="explode"):
            FirmwareAgent(Device(lab.host, lab.port, pk, "ok", "x"), "1.0.0", fail="explode")
