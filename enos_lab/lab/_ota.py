"""Firmware upgrade (OTA) from the facade: the firmware registry, campaigns, one-device
upgrades (protocol reference 10; :mod:`enos_lab.ota` for the theory of operation).

:meth:`Ota.add_firmware` registers a firmware file for a product and version; devices download
it over HTTP from the lab's firmware server (:attr:`Ota.firmware_url`).
:meth:`Ota.start_ota_campaign` pushes a version to a product's devices (a list, tags, a version
filter) in waves at a rollout rate; :meth:`Ota.ota_campaign` shows each device's upgrade.
:meth:`Ota.upgrade_device` is one call for one device. An upgrade succeeds only when the device
reports the new version after it reconnected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from ..errors import InvalidArgument, OtaError
from ..ota import (
    CAMPAIGN_COLUMNS,
    DEFAULT_ABORT_MIN_SAMPLE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    FIRMWARE_COLUMNS,
    Firmware,
    OtaService,
    UpgradeState,
)
from ._core import LabCore, coroutine_form_of

__all__ = ["Ota"]

_WAIT_MARGIN = 5.0  # [s] waited beyond the upgrade's timeout for its end (real time)


class Ota(LabCore):
    """Firmware registry, upgrade campaigns and one-device upgrades (mixed into
    :class:`~enos_lab.lab.Lab`)."""

    def _ota(self, what: str) -> OtaService:
        service = self._running().ota
        if service is None:
            raise InvalidArgument(
                f"{what} needs the IoT hub services, but this lab is anonymous (a plain MQTT "
                "broker); create it with anonymous=False"
            )
        return service

    @property
    def firmware_url(self) -> str:
        """The lab's firmware server (``http://127.0.0.1:port``; started now if no firmware
        was registered yet, which starts it too); each firmware's own URL is in
        :meth:`firmwares` (``file_url``)."""
        service = self._ota("firmware_url")
        return self.run(service.serve())

    # -- the firmware registry ---------------------------------------------------------------

    def add_firmware(
        self,
        product_key: str,
        version: str,
        file: str | Path | bytes,
        *,
        sign_method: str = "md5",
        digest: str | None = None,
        signature: str | None = None,
        name: str | None = None,
        description: str | None = None,
        file_name: str | None = None,
    ) -> Firmware:
        """Register ``file`` (a path, or the firmware's bytes) as firmware ``version`` of the
        product; returns the :class:`~enos_lab.ota.Firmware` (size [bytes], digest).

        Its size and digest (``sign_method``: "md5" or "sha256", the EnOS ``signMethod``) are
        computed; a ``digest`` given that does not match the file raises
        :class:`~enos_lab.errors.DigestMismatch` naming both. The file is copied into the data
        directory (``ota/firmware/``, 0600) and served by the lab's firmware server under
        ``file_name`` (default: the file's name). ``signature`` (e.g. a vendor signature),
        ``name`` and ``description`` are kept with it. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown product,
        :class:`~enos_lab.errors.AlreadyExists` for a version the product has already.
        """
        service = self._ota("add_firmware")
        firmware = service.firmware.add(
            product_key,
            version,
            file,
            sign_method=sign_method,
            digest=digest,
            signature=signature,
            name=name,
            description=description,
            file_name=file_name,
        )

        self.run(service.firmware_added(firmware))
        return firmware

    def firmwares(self, product_key: str | None = None) -> pd.DataFrame:
        """The firmware registered (for one product), in the order added: columns
        :data:`~enos_lab.ota.FIRMWARE_COLUMNS` and ``file_url`` (times tz-aware UTC)."""
        service = self._ota("firmwares")
        if product_key is not None:
            self.registry.get_product(product_key)
        rows = service.records.firmwares(product_key)
        frame = pd.DataFrame(
            [
                {
                    **{column: getattr(f, column, None) for column in FIRMWARE_COLUMNS},
                    "created_at": pd.Timestamp(f.created_ms, unit="ms", tz="UTC"),
                    "file_url": service.firmware_url(f),
                }
                for f in rows
            ],
            columns=[*FIRMWARE_COLUMNS, "file_url"],
        )
        frame["size"] = frame["size"].astype("int64")
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        return frame

    def remove_firmware(self, product_key: str, version: str) -> Firmware:
        """Remove firmware ``version`` of the product (its file too); returns what was
        removed. :class:`~enos_lab.errors.NotFound` if there is none,
        :class:`~enos_lab.errors.OtaError` while an upgrade to it is in progress."""
        service = self._ota("remove_firmware")

        async def remove() -> Firmware:
            for upgrade in service.records.upgrades(active=True):
                if upgrade.product_key == product_key and upgrade.to_version == version:
                    raise OtaError(
                        f"firmware {product_key} {version!r} is being installed by campaign "
                        f"{upgrade.campaign_id} (abort it first)"
                    )
            firmware = service.firmware.remove(product_key, version)
            service.firmware_removed(firmware)
            return firmware

        return self.run(remove())

    # -- campaigns ---------------------------------------------------------------------------

    def start_ota_campaign(
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
    ) -> str:
        """Upgrade the product's devices to firmware ``version``; returns the campaign id.

        Targets: the product's devices, narrowed to ``device_keys``, to those with every tag
        in ``tags``, to those that reported one of ``from_versions``; none left raises
        :class:`~enos_lab.errors.OtaError`. A target that never reported a version, is at
        ``version`` already, or is being upgraded by another campaign is ``skipped`` (its row
        says why). Pushes go out in waves of ``wave_size`` devices (None: one wave), the next
        once none of the earlier is in flight, at most ``rate`` per minute (None: no limit);
        offline devices get theirs when they come back. Each device has ``timeout`` [s, lab
        clock] from its push to report the new version after a reconnect, and ``retries``
        pushes more after a failure. With ``abort_failure_rate`` (e.g. 0.2), the campaign
        aborts once that share of at least ``abort_min_sample`` finished devices failed. With
        ``rollback``, a device that failed after writing (step "-4", or back after 100 % with
        its old version) goes into a rollback campaign to its previous version, if that
        firmware is registered. Follow it with :meth:`ota_campaign`.
        """
        service = self._ota("start_ota_campaign")

        async def start() -> str:
            return service.start_campaign(
                product_key,
                version,
                device_keys=device_keys,
                tags=tags,
                from_versions=from_versions,
                wave_size=wave_size,
                rate=rate,
                timeout=timeout,
                retries=retries,
                abort_failure_rate=abort_failure_rate,
                abort_min_sample=abort_min_sample,
                rollback=rollback,
            )

        return self.run(start())

    def ota_campaign(self, campaign_id: str) -> pd.DataFrame:
        """One row per device of the campaign: columns :data:`~enos_lab.ota.UPGRADE_COLUMNS`
        (state, from and to version, progress [%], the last step and its desc, the error,
        attempts, times tz-aware UTC); :class:`~enos_lab.errors.NotFound` if unknown."""
        return self._ota("ota_campaign").records.upgrades_frame(campaign_id)

    def ota_campaigns(self) -> pd.DataFrame:
        """Every campaign, oldest first: columns :data:`~enos_lab.ota.CAMPAIGN_COLUMNS`
        (state, devices per upgrade state, the campaign it rolls back, why it was aborted)."""
        records = self._ota("ota_campaigns").records
        rows = []
        for campaign in records.campaigns():
            states = [u.state for u in records.upgrades(campaign.campaign_id)]
            in_flight = sum(1 for state in states if state.in_flight)
            rows.append(
                {
                    "campaign_id": campaign.campaign_id,
                    "product_key": campaign.product_key,
                    "version": campaign.version,
                    "state": campaign.state.value,
                    "devices": len(states),
                    "pending": states.count(UpgradeState.PENDING),
                    "in_flight": in_flight,
                    "succeeded": states.count(UpgradeState.SUCCEEDED),
                    "failed": states.count(UpgradeState.FAILED),
                    "aborted": states.count(UpgradeState.ABORTED),
                    "skipped": states.count(UpgradeState.SKIPPED),
                    "rollback_of": campaign.rollback_of,
                    "reason": campaign.reason,
                    "created_at": pd.Timestamp(campaign.created_ms, unit="ms", tz="UTC"),
                    "finished_at": (
                        pd.NaT
                        if campaign.finished_ms is None
                        else pd.Timestamp(campaign.finished_ms, unit="ms", tz="UTC")
                    ),
                }
            )
        frame = pd.DataFrame(rows, columns=CAMPAIGN_COLUMNS)
        for column in ("created_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        counts = ["devices", "pending", "in_flight", "succeeded", "failed", "aborted", "skipped"]
        frame[counts] = frame[counts].astype("int64")
        return frame

    def abort_ota_campaign(self, campaign_id: str) -> None:
        """Abort a campaign: no further push; its pending devices are marked ``aborted``
        (devices in flight finish). :class:`~enos_lab.errors.NotFound` if unknown."""
        service = self._ota("abort_ota_campaign")

        async def abort() -> None:
            service.abort_campaign(campaign_id)

        self.run(abort())

    # -- one device --------------------------------------------------------------------------

    def upgrade_device(
        self,
        product_key: str,
        device_key: str,
        version: str,
        *,
        wait: bool = False,
        timeout: float | None = None,
    ) -> UpgradeState:
        """Upgrade one device to firmware ``version`` now (a campaign of one; pushed at once
        if it is online, when it comes back otherwise); returns its state, with ``wait`` once
        the upgrade is over (``succeeded`` once the device reported ``version`` after its
        reconnect), waiting at most ``timeout`` [s] (default
        :data:`~enos_lab.ota.DEFAULT_TIMEOUT`), which is also the upgrade's timeout on the lab
        clock. A device that never reported a version, is at ``version`` already or is being
        upgraded raises :class:`~enos_lab.errors.OtaError`."""
        service = self._ota("upgrade_device")
        limit = DEFAULT_TIMEOUT if timeout is None else timeout

        async def upgrade() -> UpgradeState:
            service.start_campaign(
                product_key, version, device_keys=[device_key], timeout=limit, strict=True
            )
            if wait:
                state = await service.wait(product_key, device_key, limit + _WAIT_MARGIN)
            else:
                state = service.state(product_key, device_key)
            assert state is not None  # it was just targeted
            return state

        return self.run(upgrade())

    def ota_state(self, product_key: str, device_key: str) -> UpgradeState | None:
        """The state of the device's latest upgrade (:class:`~enos_lab.ota.UpgradeState`,
        equal to its value: "pending", ..., "succeeded"); None if it was never targeted.
        :class:`~enos_lab.errors.NotFound` for an unknown device."""
        service = self._ota("ota_state")
        self.registry.get_device(product_key, device_key)

        async def state() -> UpgradeState | None:
            return service.state(product_key, device_key)

        return self.run(state())

    aadd_firmware = coroutine_form_of(add_firmware)
    afirmwares = coroutine_form_of(firmwares)
    aremove_firmware = coroutine_form_of(remove_firmware)
    astart_ota_campaign = coroutine_form_of(start_ota_campaign)
    aota_campaign = coroutine_form_of(ota_campaign)
    aota_campaigns = coroutine_form_of(ota_campaigns)
    aabort_ota_campaign = coroutine_form_of(abort_ota_campaign)
    aupgrade_device = coroutine_form_of(upgrade_device)
    aota_state = coroutine_form_of(ota_state)
