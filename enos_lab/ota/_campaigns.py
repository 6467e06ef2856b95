"""Campaigns of the OTA service: choosing the targets, starting, aborting (by the user or at
the failure threshold) and rollback campaigns (see :mod:`enos_lab.ota._service` for the theory
of operation). :class:`CampaignOps` is a part of :class:`~enos_lab.ota.OtaService`; it runs on
the lab's loop."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ..clock import Clock
from ..errors import ClosedError, InvalidArgument, NotFound, OtaError
from ..registry import Registry
from ._firmware import FirmwareRegistry, check_version
from ._records import Campaign, CampaignState, OtaRecords, Upgrade, UpgradeState

__all__ = [
    "DEFAULT_ABORT_MIN_SAMPLE",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "CampaignOps",
    "campaign_settings",
]

log = logging.getLogger("enos_lab.ota._service")

DEFAULT_TIMEOUT = 600.0
"""Time a device has from the push to its upgrade's end, on the lab's clock. [s]"""
DEFAULT_RETRIES = 0
"""Pushes again after a failure, per device. [-]"""
DEFAULT_ABORT_MIN_SAMPLE = 5
"""Finished devices needed before ``abort_failure_rate`` is applied. [-]"""

_Keys = tuple[str, str]


class CampaignOps:
    """The campaign operations of :class:`~enos_lab.ota.OtaService` (which provides the state
    below and the state changes)."""

    records: OtaRecords
    firmware: FirmwareRegistry
    versions: dict[_Keys, str]
    _registry: Registry
    _clock: Clock
    _active: dict[_Keys, Upgrade]
    _campaigns: dict[str, Campaign]
    _closed: bool

    def _save(self, upgrade: Upgrade, now: int) -> None:
        raise NotImplementedError

    def _finish(self, upgrade: Upgrade, state: UpgradeState, now: int, error: str | None) -> None:
        raise NotImplementedError

    def _drive(self) -> None:
        raise NotImplementedError

    def _check_abort(self, campaign: Campaign, now: int) -> None:
        rate = campaign.settings.get("abort_failure_rate")
        if rate is None or campaign.state is not CampaignState.RUNNING:
            return
        upgrades = self.records.upgrades(campaign.campaign_id)
        failed = sum(1 for u in upgrades if u.state is UpgradeState.FAILED)
        done = failed + sum(1 for u in upgrades if u.state is UpgradeState.SUCCEEDED)
        minimum = int(campaign.settings.get("abort_min_sample", DEFAULT_ABORT_MIN_SAMPLE))
        if done >= max(1, minimum) and failed / done >= rate:
            self._abort(
                campaign,
                f"{failed} of {done} finished devices failed, at or above the abort failure "
                f"rate {rate}",
                now,
            )

    def _abort(self, campaign: Campaign, reason: str, now: int) -> None:
        campaign.state = CampaignState.ABORTED
        campaign.reason = reason
        campaign.finished_ms = now
        self.records.save_campaign(campaign)
        for upgrade in list(self._active.values()):
            if (
                upgrade.campaign_id == campaign.campaign_id
                and upgrade.state is UpgradeState.PENDING
            ):
                self._finish(upgrade, UpgradeState.ABORTED, now, f"campaign aborted: {reason}")
        log.info("OTA campaign %s aborted: %s", campaign.campaign_id, reason)

    def _rollback(self, campaign: Campaign, upgrade: Upgrade, now: int) -> str:
        """Put the device into a rollback campaign to its previous version; the note for its
        error."""
        previous = upgrade.from_version
        if previous is None or self.records.firmware(upgrade.product_key, previous) is None:
            return f"; no rollback: firmware {previous!r} is not registered"
        rollbacks: dict[str, str] = campaign.settings.setdefault("rollbacks", {})
        campaign_id = rollbacks.get(previous)
        target = None if campaign_id is None else self._campaigns.get(campaign_id)
        if target is None or target.state is not CampaignState.RUNNING:
            settings = {key: campaign.settings.get(key) for key in ("timeout", "retries", "rate")}
            settings.update(wave_size=None, rollback=False, abort_failure_rate=None)
            target = self._new_campaign(upgrade.product_key, previous, settings, now)
            target.rollback_of = campaign.campaign_id
            self.records.save_campaign(target)
            rollbacks[previous] = target.campaign_id
            self.records.save_campaign(campaign)
        seq = len(self.records.upgrades(target.campaign_id))
        # the device leaves this campaign's upgrade now (it is finished just after)
        if self._active.get(upgrade.keys) is upgrade:
            del self._active[upgrade.keys]
        rollback = Upgrade(
            target.campaign_id,
            upgrade.product_key,
            upgrade.device_key,
            seq,
            0,
            UpgradeState.PENDING,
            self.versions.get(upgrade.keys),
            previous,
            now,
            now,
        )
        self._save(rollback, now)
        self._active[upgrade.keys] = rollback
        return f"; rollback to {previous} in campaign {target.campaign_id}"

    # -- campaigns -----------------------------------------------------------------------------

    def _new_campaign(
        self, product_key: str, version: str, settings: dict[str, Any], now: int
    ) -> Campaign:
        seq = self.records.next_campaign_seq()
        campaign = Campaign(
            f"ota-{seq}", seq, product_key, version, CampaignState.RUNNING, settings, now
        )
        self._campaigns[campaign.campaign_id] = campaign
        return campaign

    def start_campaign(
        self,
        product_key: str,
        version: str,
        *,
        device_keys: Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
        from_versions: Iterable[str] | None = None,
        wave_size: int | None = None,
        rate: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        abort_failure_rate: float | None = None,
        abort_min_sample: int = DEFAULT_ABORT_MIN_SAMPLE,
        rollback: bool = False,
        strict: bool = False,
    ) -> str:
        """Start a campaign (see :mod:`enos_lab.ota._service`); its id. ``strict``: a target
        that would be skipped raises :class:`~enos_lab.errors.OtaError` instead (nothing
        started)."""
        if self._closed:
            raise ClosedError("the OTA service stopped")
        device_keys = _listed(device_keys)
        from_versions = _listed(from_versions)
        check_version(version)
        self._registry.get_product(product_key)
        self.firmware.get(product_key, version)
        settings = campaign_settings(
            wave_size, rate, timeout, retries, abort_failure_rate, abort_min_sample, rollback
        )
        targets = self._targets(product_key, device_keys, tags, from_versions)
        if not targets:
            raise OtaError(
                f"an OTA campaign of product {product_key} to {version!r} over no device: "
                f"none matches device_keys={_shown(device_keys)}, tags={tags!r}, "
                f"from_versions={_shown(from_versions)}"
            )
        skipped = {keys: self._skip_reason(keys, version) for keys in targets}
        if strict:
            for keys, reason in skipped.items():
                if reason is not None:
                    raise OtaError(f"device {keys[0]}/{keys[1]} cannot be upgraded: {reason}")
        now = self._clock.time_ms()
        campaign = self._new_campaign(product_key, version, settings, now)
        self.records.save_campaign(campaign)
        size = settings["wave_size"]
        index = 0
        for seq, keys in enumerate(targets):
            reason = skipped[keys]
            wave = 0 if reason is not None or size is None else index // size
            upgrade = Upgrade(
                campaign.campaign_id,
                *keys,
                seq,
                wave,
                UpgradeState.PENDING if reason is None else UpgradeState.SKIPPED,
                self.versions.get(keys),
                version,
                now,
                now,
                error=reason,
                finished_ms=None if reason is None else now,
            )
            self._save(upgrade, now)
            if reason is None:
                index += 1
                self._active[keys] = upgrade
        log.info(
            "OTA campaign %s: product %s to %s, %d device(s), %d skipped",
            campaign.campaign_id,
            product_key,
            version,
            index,
            len(targets) - index,
        )
        self._drive()
        return campaign.campaign_id

    def _targets(
        self,
        product_key: str,
        device_keys: Iterable[str] | None,
        tags: Mapping[str, str] | None,
        from_versions: Iterable[str] | None,
    ) -> list[_Keys]:
        devices = self._registry.devices(product_key)
        if device_keys is not None:
            wanted = [device_keys] if isinstance(device_keys, str) else list(device_keys)
            known = {device.device_key for device in devices}
            for key in wanted:
                if key not in known:
                    raise NotFound(f"product {product_key} has no device {key!r}")
            chosen = set(wanted)
            devices = [device for device in devices if device.device_key in chosen]
        if tags is not None:
            if not isinstance(tags, Mapping):
                raise InvalidArgument(f"tags must be a mapping of tag to value, got {tags!r}")
            devices = [
                device
                for device in devices
                if all(device.tags.get(tag) == value for tag, value in tags.items())
            ]
        if from_versions is not None:
            allowed = {from_versions} if isinstance(from_versions, str) else set(from_versions)
            devices = [
                device
                for device in devices
                if self.versions.get((product_key, device.device_key)) in allowed
            ]
        return [(device.product_key, device.device_key) for device in devices]

    def _skip_reason(self, keys: _Keys, version: str) -> str | None:
        reported = self.versions.get(keys)
        if reported is None:
            return "it never reported a firmware version (ota.device.inform)"
        if reported == version:
            return f"it is at version {version} already"
        busy = self._active.get(keys)
        if busy is not None:
            return f"it is being upgraded in campaign {busy.campaign_id}"
        return None

    def abort_campaign(self, campaign_id: str, reason: str = "aborted by the user") -> None:
        """Abort a campaign: its pending devices are marked aborted; NotFound if unknown."""
        campaign = self._campaigns.get(campaign_id) or self.records.campaign(campaign_id)
        if campaign.state is CampaignState.RUNNING:
            self._abort(campaign, reason, self._clock.time_ms())
            self._drive()


def campaign_settings(  # noqa: PLR0917 - the campaign's options
    wave_size: int | None,
    rate: float | None,
    timeout: float,
    retries: int,
    abort_failure_rate: float | None,
    abort_min_sample: int,
    rollback: bool,
) -> dict[str, Any]:
    """The campaign's options, checked (InvalidArgument naming a bad one)."""

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    if wave_size is not None and (
        not isinstance(wave_size, int) or isinstance(wave_size, bool) or wave_size < 1
    ):
        raise InvalidArgument(f"wave_size must be an int >= 1 or None, got {wave_size!r}")
    if rate is not None and (not number(rate) or not rate > 0):
        raise InvalidArgument(f"rate must be > 0 devices per minute or None, got {rate!r}")
    if not number(timeout) or not timeout > 0:
        raise InvalidArgument(f"timeout must be > 0 seconds, got {timeout!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise InvalidArgument(f"retries must be an int from 0 to 10, got {retries!r}")
    if abort_failure_rate is not None and (
        not number(abort_failure_rate) or not 0 < abort_failure_rate <= 1
    ):
        raise InvalidArgument(
            f"abort_failure_rate must be in (0, 1] or None, got {abort_failure_rate!r}"
        )
    if (
        not isinstance(abort_min_sample, int)
        or isinstance(abort_min_sample, bool)
        or abort_min_sample < 1
    ):
        raise InvalidArgument(f"abort_min_sample must be an int >= 1, got {abort_min_sample!r}")
    return {
        "wave_size": wave_size,
        "rate": None if rate is None else float(rate),
        "timeout": float(timeout),
        "retries": retries,
        "abort_failure_rate": None if abort_failure_rate is None else float(abort_failure_rate),
        "abort_min_sample": abort_min_sample,
        "rollback": bool(rollback),
        "wave": 0,
    }


def _shown(values: Iterable[str] | None) -> str:
    if values is None or isinstance(values, str):
        return repr(values)
    return repr(list(values))


def _listed(values: Iterable[str] | None) -> list[str] | None:
    """``values`` as a list (one string: a list of it), None as None."""
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)
