"""A device's firmware agent on the lab's device SDK, for tests and notebooks.

:class:`FirmwareAgent` attaches to a :class:`~enos_lab.device.DeviceClient` (or the ``client``
of a :class:`~enos_lab.device.Device`): it reports the running version after every login
(``ota.device.inform``), and on an upgrade push downloads the file over HTTP, checks its size
and digest, reports progress ("0" downloading, "50" downloaded and verified, "100" written)
and "installs" it by reconnecting and reporting the new version, as a real device reboots.
Options make it fail the way devices do: ``fail="download"`` ("-2"), ``"verification"`` (the
image is damaged on its way to flash: "-3"), ``"write"`` ("-4"), ``"ignore"`` ("-5"); and
``power_loss=True`` reports 100 % and comes back with the old version.

Each upgrade's outcome goes into :attr:`FirmwareAgent.outcomes` (a thread-safe queue): the
version it came back with, or the failure step it reported.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from typing import Any

from ..device import Device, DeviceClient
from ..errors import InvalidArgument, OtaError
from ._device import FirmwareOffer, afetch_firmware, check_image, failure_step

__all__ = ["AGENT_FAILURES", "FirmwareAgent"]

log = logging.getLogger(__name__)

AGENT_FAILURES = ("download", "verification", "write", "ignore")
"""The failures a :class:`FirmwareAgent` can be told to have."""


class FirmwareAgent:
    """A device's firmware agent (see the module docstring)."""

    def __init__(
        self,
        device: DeviceClient | Device,
        version: str,
        *,
        fail: str | None = None,
        power_loss: bool = False,
        timeout: float = 10.0,
    ) -> None:
        if fail is not None and fail not in AGENT_FAILURES:
            raise InvalidArgument(f"fail must be one of {AGENT_FAILURES} or None, got {fail!r}")
        client = device.client if isinstance(device, Device) else device
        self.client = client
        """The device client it works on."""
        self.version = version
        """The firmware version running (reported after every login)."""
        self.fail = fail
        self.power_loss = power_loss
        self.timeout = timeout
        self.outcomes: queue.Queue[str] = queue.Queue()
        """Each upgrade's outcome: the version it came back with, or the step reported."""
        self.offers: list[FirmwareOffer] = []
        """The firmware pushed to it, in order."""
        self._rebooting = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._previous = client.on_connect
        client.on_connect = self._on_connect
        client.on_ota_upgrade(self._on_push)

    async def _on_connect(self) -> None:
        await self.client.report_version(self.version)
        if self._rebooting:
            self._rebooting = False
            self.outcomes.put(self.version)
        if self._previous is not None:
            result = self._previous()
            if asyncio.iscoroutine(result):
                await result

    def _on_push(self, firmware: Any) -> dict[str, Any]:
        task = asyncio.get_running_loop().create_task(self._upgrade(firmware))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {}

    async def _step(self, step: int | str, desc: str) -> None:
        await self.client.report_progress(step, desc)

    async def _upgrade(self, firmware: Any) -> None:
        try:
            offer = FirmwareOffer.of(firmware)
            self.offers.append(offer)
            if self.fail == "ignore":
                await self._step(-5, "busy: upgrade ignored")
                self.outcomes.put("-5")
                return
            await self._step(0, "downloading")
            try:
                if self.fail == "download":
                    raise OtaError(f"firmware {offer.version}: download interrupted")
                image = await afetch_firmware(offer, timeout=self.timeout)
                if self.fail == "verification":  # damaged on its way to flash
                    check_image(offer, image[:-1] + bytes([image[-1] ^ 0xFF]))
            except OtaError as exc:
                step = failure_step(exc)
                await self._step(step, str(exc)[:200])
                self.outcomes.put(step)
                return
            await self._step(50, "downloaded and verified")
            if self.fail == "write":
                await self._step(-4, "flash write failed")
                self.outcomes.put("-4")
                return
            await self._step(100, "written, rebooting")
            if not self.power_loss:
                self.version = offer.version
            self._rebooting = True
            await self.client.disconnect()
            await self.client.connect()  # on_connect reports the version
        except Exception as exc:
            log.warning("firmware agent of %s: upgrade failed", self.client.device, exc_info=True)
            self.outcomes.put(f"error: {exc}")
