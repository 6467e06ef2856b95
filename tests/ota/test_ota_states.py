"""The per-device upgrade state machine over the OTA topics, driven by the lab's device SDK
over real TCP, with the lab on a simulated clock (timeouts and the rollout rate in simulated
time): push, progress, 764/765/1200, success only after a reconnect with the new version,
failure steps, power loss, timeouts and retries, waves, the abort threshold, rollback, and a
campaign taken up again after a restart."""

from __future__ import annotations

import queue
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.device import Device, SubDeviceCredentials
from enos_lab.errors import InvalidArgument, NotFound, OtaError, RequestFailed
from enos_lab.lab import Lab
from enos_lab.ota import UPGRADE_COLUMNS, CampaignState, UpgradeState, fetch_firmware

WAIT = 5.0  # [s] upper bound of every wait for a push
OLD, NEW = b"firmware 1.0.0" * 50, b"firmware 1.1.0" * 60


class Meter:
    """A device written with the lab's device SDK that records the upgrade pushes it gets."""

    def __init__(self, lab: Lab, product_key: str, device_key: str, secret: str) -> None:
        self.device_key = device_key
        # a long keep-alive: the simulated clock moves minutes while the device pings in real
        # time, and the hub would see it silent
        self.device = Device(
            lab.host, lab.port, product_key, device_key, secret, timeout=WAIT, keepalive=3600
        )
        self.pushes: queue.Queue[dict[str, Any]] = queue.Queue()
        self.device.on_ota_upgrade(self._on_push)

    def _on_push(self, firmware: dict[str, Any]) -> dict[str, Any]:
        self.pushes.put(firmware)
        return {}

    def start(self, version: str | None = "1.0.0") -> Meter:
        self.device.connect()
        if version is not None:
            self.device.report_version(version)
        return self

    def push(self) -> dict[str, Any]:
        return self.pushes.get(timeout=WAIT)

    def no_push(self) -> bool:
        return self.pushes.empty()

    def reboot(self, version: str) -> None:
        self.device.disconnect()
        self.device.connect()
        self.device.report_version(version)

    def progress(self, step: str, desc: str = "") -> None:
        self.device.report_progress(step, desc)

    def close(self) -> None:
        self.device.disconnect()


def _code(call: Any) -> int:
    with pytest.raises(RequestFailed) as failed:
        call()
    return failed.value.code


def _lab(path: Path, clock: SimulatedClock | None = None, seed: int = 5) -> Lab:
    return Lab(path, port=0, rng=random.Random(seed), clock=clock)


def _fleet(lab: Lab, count: int) -> tuple[str, list[Meter]]:
    pk = lab.create_product("Meter").product_key
    lab.add_firmware(pk, "1.0.0", OLD)
    lab.add_firmware(pk, "1.1.0", NEW)
    meters = []
    for index in range(count):
        secret = lab.register_device(pk, device_key=f"m{index}").device_secret
        meters.append(Meter(lab, pk, f"m{index}", secret))
    return pk, meters


def _states(lab: Lab, campaign_id: str) -> dict[str, str]:
    frame = lab.ota_campaign(campaign_id)
    return dict(zip(frame["device_key"], frame["state"], strict=True))


def test_one_device_upgrade_through_every_state(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        pk, (meter,) = _fleet(lab, 1)
        meter.start(version=None)
        try:
            assert _code(lambda: meter.progress("10")) == 764  # no upgrade task
            with pytest.raises(OtaError, match="never reported a firmware version"):
                lab.upgrade_device(pk, "m0", "1.1.0")
            with pytest.raises(NotFound, match="nosuch"):
                lab.upgrade_device(pk, "nosuch", "1.1.0")
            meter.device.report_version("1.0.0")
            assert lab.iothub is not None
            assert lab.iothub.firmware_version(pk, "m0") == "1.0.0"
            with pytest.raises(NotFound, match=r"9\.9\.9"):
                lab.upgrade_device(pk, "m0", "9.9.9")
            with pytest.raises(OtaError, match=r"at version 1\.0\.0 already"):
                lab.upgrade_device(pk, "m0", "1.0.0")
            assert lab.ota_state(pk, "m0") is None

            assert lab.upgrade_device(pk, "m0", "1.1.0") == UpgradeState.PUSHED
            firmware = meter.push()
            assert firmware["version"] == "1.1.0"
            assert firmware["signMethod"] == "md5"
            assert type(firmware["fileSize"]) is int and firmware["fileSize"] == len(NEW)
            assert fetch_firmware(firmware) == NEW  # downloaded over HTTP, digest checked
            assert meter.device.query_firmware() == [firmware]  # ota.device.getversion
            with pytest.raises(OtaError, match="being upgraded"):
                lab.upgrade_device(pk, "m0", "1.1.0")
            with pytest.raises(OtaError, match="being installed by campaign ota-1"):
                lab.remove_firmware(pk, "1.1.0")
            with pytest.raises(NotFound, match="ota-9"):
                lab.ota_campaign("ota-9")
            with pytest.raises(NotFound, match="ota-9"):
                lab.abort_ota_campaign("ota-9")
            meter.device.report_version("v" * 65)  # not a version: answered, not kept
            assert lab.iothub.firmware_version(pk, "m0") == "1.0.0"

            assert _code(lambda: meter.progress("fifty")) == 1200
            assert _code(lambda: meter.progress("101")) == 1200
            meter.progress("0", "starting")
            meter.progress("50", "downloaded")
            assert lab.ota_state(pk, "m0") == "upgrading"
            meter.progress("100", "written")
            assert lab.ota_state(pk, "m0") == "rebooting"
            meter.device.report_version("1.1.0")  # without a reconnect: not yet the truth
            assert lab.ota_state(pk, "m0") == "rebooting"
            meter.reboot("1.1.0")
            assert lab.ota_state(pk, "m0") == UpgradeState.SUCCEEDED
            assert lab.iothub.firmware_version(pk, "m0") == "1.1.0"
            assert _code(lambda: meter.progress("100")) == 764  # the task is over

            (row,) = lab.ota_campaign("ota-1").to_dict("records")
            assert list(lab.ota_campaign("ota-1").columns) == UPGRADE_COLUMNS
            assert row["state"] == "succeeded"
            assert (row["from_version"], row["to_version"]) == ("1.0.0", "1.1.0")
            assert (row["progress"], row["step"], row["desc"], row["attempts"]) == (
                100,
                "100",
                "written",
                1,
            )
            assert row["pushed_at"] <= row["finished_at"]
            campaigns = lab.ota_campaigns()
            assert campaigns["state"].tolist() == ["finished"]
            assert campaigns["succeeded"].tolist() == [1]
        finally:
            meter.close()


def test_failure_steps_timeouts_and_retries_on_the_lab_clock(tmp_path: Path) -> None:
    clock = SimulatedClock(datetime.now(UTC))
    with _lab(tmp_path / "lab", clock) as lab:
        pk, meters = _fleet(lab, 3)
        for meter in meters:
            meter.start()
        try:
            first = lab.start_ota_campaign(pk, "1.1.0", device_keys=["m0", "m1"], timeout=60)
            for meter in meters[:2]:
                meter.push()
            meters[0].progress("-3", "md5 mismatch")
            meters[1].progress("30")
            clock.advance(59)
            assert _states(lab, first) == {"m0": "failed", "m1": "upgrading"}
            clock.advance(2)
            frame = lab.ota_campaign(first).set_index("device_key")
            assert frame.loc["m0", "error"] == "step -3: verification failed (md5 mismatch)"
            assert frame.loc["m1", "state"] == "failed"
            assert "timed out in state upgrading" in frame.loc["m1", "error"]

            # one retry: pushed again after the first timeout, failed after the second
            second = lab.start_ota_campaign(pk, "1.1.0", device_keys=["m2"], timeout=60, retries=1)
            meters[2].push()
            clock.advance(61)
            assert meters[2].push()["version"] == "1.1.0"  # the retry
            assert _states(lab, second) == {"m2": "pushed"}
            meters[2].progress("-5", "busy")
            row = lab.ota_campaign(second).iloc[0]
            assert (row["state"], row["attempts"]) == ("failed", 2)
            assert row["error"] == "step -5: device ignored (busy)"

            with pytest.raises(InvalidArgument, match="timeout"):
                lab.start_ota_campaign(pk, "1.1.0", timeout=0)
            with pytest.raises(InvalidArgument, match="wave_size"):
                lab.start_ota_campaign(pk, "1.1.0", wave_size=0)
            with pytest.raises(OtaError, match="over no device"):
                lab.start_ota_campaign(pk, "1.1.0", tags={"site": "nowhere"})
            with pytest.raises(OtaError, match="over no device"):
                lab.start_ota_campaign(pk, "1.1.0", from_versions=["0.1"])
            with pytest.raises(NotFound, match="nosuch"):
                lab.start_ota_campaign(pk, "1.1.0", device_keys=["nosuch"])
        finally:
            for meter in meters:
                meter.close()


def test_rate_waves_and_the_task_not_started_code(tmp_path: Path) -> None:
    clock = SimulatedClock(datetime.now(UTC))
    with _lab(tmp_path / "lab", clock) as lab:
        pk, meters = _fleet(lab, 3)
        for meter in meters:
            meter.start()
        try:
            campaign = lab.start_ota_campaign(pk, "1.1.0", rate=1)  # one push a minute
            meters[0].push()
            assert meters[1].no_push() and meters[2].no_push()
            assert _code(lambda: meters[1].progress("10")) == 765  # its task has not started
            clock.advance(60)
            meters[1].push()
            clock.advance(60)
            meters[2].push()
            assert _states(lab, campaign) == dict.fromkeys(("m0", "m1", "m2"), "pushed")
            lab.abort_ota_campaign(campaign)  # in flight: they go on
            meters[0].progress("-2")
            assert lab.ota_campaigns().iloc[0]["state"] == "aborted"

            waves = lab.start_ota_campaign(pk, "1.0.0", from_versions=["1.0.0"])
            assert set(_states(lab, waves).values()) == {"skipped"}  # at 1.0.0 already
            for meter in meters[1:]:
                meter.progress("-1")
            waves = lab.start_ota_campaign(pk, "1.1.0", wave_size=2, timeout=600)
            meters[0].push()
            meters[1].push()
            assert meters[2].no_push()  # the second wave waits for the first
            meters[0].progress("-4")
            assert meters[2].no_push()
            meters[1].progress("100")
            meters[1].reboot("1.1.0")
            meters[2].push()  # released once the first wave is over
            assert _states(lab, waves) == {"m0": "failed", "m1": "succeeded", "m2": "pushed"}
            assert lab.ota_campaign(waves)["wave"].tolist() == [0, 0, 1]
        finally:
            for meter in meters:
                meter.close()


def test_power_loss_abort_threshold_and_rollback(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        pk, meters = _fleet(lab, 4)
        for meter in meters:
            meter.start()
        try:
            campaign = lab.start_ota_campaign(
                pk,
                "1.1.0",
                wave_size=2,
                abort_failure_rate=0.5,
                abort_min_sample=2,
                rollback=True,
            )
            meters[0].push()
            meters[1].push()
            meters[0].progress("100")
            meters[0].reboot("1.0.0")  # lost power: came back with the old version
            meters[1].progress("-4", "flash write error")
            frame = lab.ota_campaign(campaign).set_index("device_key")
            assert frame.loc["m0", "state"] == "failed"
            assert frame.loc["m0", "error"].startswith("reported 100% but came back with 1.0.0")
            assert frame.loc["m2", "state"] == frame.loc["m3", "state"] == "aborted"
            assert meters[2].no_push() and meters[3].no_push()
            campaigns = lab.ota_campaigns().set_index("campaign_id")
            assert campaigns.loc[campaign, "state"] == CampaignState.ABORTED
            assert "2 of 2 finished devices failed" in campaigns.loc[campaign, "reason"]

            # both failed after writing: a rollback campaign to 1.0.0 (registered)
            rollback = campaigns.index[campaigns["rollback_of"] == campaign].tolist()
            assert len(rollback) == 1
            assert "rollback to 1.0.0 in campaign" in frame.loc["m1", "error"]
            assert meters[0].push()["version"] == "1.0.0"
            assert meters[1].push()["version"] == "1.0.0"
            for meter in meters[:2]:
                meter.progress("100")
                meter.reboot("1.0.0")
            assert set(_states(lab, rollback[0]).values()) == {"succeeded"}
        finally:
            for meter in meters:
                meter.close()


def test_an_offline_target_and_a_campaign_survive_a_restart(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        pk, (meter,) = _fleet(lab, 1)
        meter.start()
        meter.close()  # offline now; its version is known
        campaign = lab.start_ota_campaign(pk, "1.1.0")
        assert _states(lab, campaign) == {"m0": "pending"}
    with _lab(tmp_path / "lab") as lab:
        assert _states(lab, campaign) == {"m0": "pending"}
        assert lab.ota_campaigns()["state"].tolist() == ["running"]
        meter = Meter(lab, pk, "m0", lab.registry.get_device(pk, "m0").device_secret)
        meter.start()  # pushed when it comes back
        try:
            assert meter.push()["version"] == "1.1.0"
            meter.progress("100")
            meter.reboot("1.1.0")
            assert lab.ota_state(pk, "m0") == "succeeded"
            assert lab.ota_campaigns()["state"].tolist() == ["finished"]
        finally:
            meter.close()


def test_a_sub_device_is_upgraded_through_its_gateway(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        gw_pk = lab.create_product("Gateway", node_type="gateway").product_key
        sub_pk = lab.create_product("Sub meter", node_type="sub_device").product_key
        lab.add_firmware(sub_pk, "1.1.0", NEW)
        gw_secret = lab.register_device(gw_pk, device_key="gw").device_secret
        sub_secret = lab.register_device(sub_pk, device_key="s1").device_secret
        with Device(lab.host, lab.port, gw_pk, "gw", gw_secret, timeout=WAIT) as gateway:
            gateway.add_topology([SubDeviceCredentials(sub_pk, "s1", sub_secret)])
            sub = gateway.login_sub_device(sub_pk, "s1", sub_secret)
            pushes: queue.Queue[dict[str, Any]] = queue.Queue()
            sub.on_ota_upgrade(lambda firmware: pushes.put(firmware) or {})
            sub.report_version("1.0.0")
            assert lab.upgrade_device(sub_pk, "s1", "1.1.0") == "pushed"
            firmware = pushes.get(timeout=WAIT)  # through the gateway's connection
            assert fetch_firmware(firmware) == NEW
            sub.report_progress(100, "written")
            sub.logout()  # the sub-device restarts: logged out, logged in again
            sub = gateway.login_sub_device(sub_pk, "s1", sub_secret)
            sub.report_version("1.1.0")
            assert lab.ota_state(sub_pk, "s1") == "succeeded"


def test_a_deleted_target_leaves_its_campaign_and_its_version_is_forgotten(
    tmp_path: Path,
) -> None:
    with _lab(tmp_path / "lab") as lab:
        pk, meters = _fleet(lab, 3)
        for meter in meters:
            meter.start()
        meters[1].close()  # m1 offline: its push waits for it
        meters[2].close()
        try:
            campaign = lab.start_ota_campaign(pk, "1.1.0")
            meters[0].push()
            meters[0].progress("100")
            meters[0].reboot("1.1.0")
            lab.delete_device(pk, "m1")  # kept history
            lab.delete_device(pk, "m2", purge=True)
            states = lab.ota_campaign(campaign).set_index("device_key")
            assert states.loc["m0", "state"] == "succeeded"
            assert states.loc["m1", "state"] == "aborted"
            assert states.loc["m1", "error"] == "the device was deleted"
            assert "m2" not in states.index  # purged
            campaigns = lab.ota_campaigns().set_index("campaign_id")
            assert campaigns.loc[campaign, "state"] == "finished"  # not stuck "running"
            # registered again under its key: a new device, with no firmware version yet
            lab.register_device(pk, device_key="m1")
            assert lab.iothub is not None and lab.iothub.firmware_version(pk, "m1") is None
            with pytest.raises(OtaError, match="never reported a firmware version"):
                lab.upgrade_device(pk, "m1", "1.1.0")
        finally:
            meters[0].close()
