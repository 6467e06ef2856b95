"""Firmware upgrade (OTA, protocol reference 10): firmware registry, firmware HTTP server,
upgrade campaigns, and the device side of an upgrade.

- :class:`FirmwareRegistry` (``ota.sqlite3`` + files under ``ota/firmware/``): one file per
  product and version, with its size and digest (md5 / sha256); a digest given that does not
  match the file is refused (:class:`~enos_lab.errors.DigestMismatch`).
- :class:`FirmwareServer`: an aiohttp server on the lab's loop (127.0.0.1, a free port) that
  serves registered files only, by an unguessable URL (``/ota/firmware/{token}/{file}``).
- :class:`OtaService`: the IoT hub's OTA handler; campaigns in waves at a rollout rate, the
  per-device upgrade state machine (:class:`UpgradeState`) on the OTA topics, timeouts on the
  lab clock, retries, an abort threshold, rollback campaigns; all of it kept in
  ``ota.sqlite3`` (see :mod:`enos_lab.ota._service` for the theory of operation).
- Device side: :func:`fetch_firmware` / :func:`afetch_firmware` download the firmware a push
  offers and check its size and digest; :func:`failure_step` names the step to report;
  :class:`FirmwareAgent` is a whole device-side agent on the lab's device SDK (download,
  check, progress, reboot with the new version; failures and power loss on demand).

On the facade: :meth:`Lab.add_firmware <enos_lab.lab.Lab.add_firmware>`, ``firmwares``,
``remove_firmware``, ``start_ota_campaign``, ``ota_campaign``, ``ota_campaigns``,
``abort_ota_campaign``, ``upgrade_device``, ``ota_state``, ``firmware_url``.
"""

from ._agent import AGENT_FAILURES, FirmwareAgent
from ._device import FirmwareOffer, afetch_firmware, check_image, failure_step, fetch_firmware
from ._firmware import FIRMWARE_DIR, SIGN_METHODS, FirmwareRegistry, file_digest
from ._records import (
    CAMPAIGN_COLUMNS,
    FIRMWARE_COLUMNS,
    OTA_FILE,
    UPGRADE_COLUMNS,
    Campaign,
    CampaignState,
    Firmware,
    OtaRecords,
    Upgrade,
    UpgradeState,
)
from ._server import FirmwareServer
from ._service import (
    DEFAULT_ABORT_MIN_SAMPLE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    FAILURE_STEPS,
    OtaService,
)

__all__ = [
    "AGENT_FAILURES",
    "CAMPAIGN_COLUMNS",
    "DEFAULT_ABORT_MIN_SAMPLE",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "FAILURE_STEPS",
    "FIRMWARE_COLUMNS",
    "FIRMWARE_DIR",
    "OTA_FILE",
    "SIGN_METHODS",
    "UPGRADE_COLUMNS",
    "Campaign",
    "CampaignState",
    "Firmware",
    "FirmwareAgent",
    "FirmwareOffer",
    "FirmwareRegistry",
    "FirmwareServer",
    "OtaRecords",
    "OtaService",
    "Upgrade",
    "UpgradeState",
    "afetch_firmware",
    "check_image",
    "failure_step",
    "fetch_firmware",
    "file_digest",
]
