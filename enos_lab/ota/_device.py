"""The device side of an upgrade: download the firmware a push offers and check it.

A device that receives ``ota.device.upgrade`` (the official SDK's ``OtaUpgradeCommand``, the
lab device SDK's ``on_ota_upgrade``) gets a firmware object: ``version``, ``signMethod``,
``sign``, ``fileUrl``, ``fileSize``. :func:`fetch_firmware` (blocking, for SDK handlers that run
in threads) and :func:`afetch_firmware` (asyncio) download ``fileUrl`` over HTTP and check its
size and digest: a download that fails raises :class:`~enos_lab.errors.OtaError` (report step
"-2"), a file whose size or digest is not the one offered :class:`~enos_lab.errors.
DigestMismatch` (report "-3"); :func:`failure_step` says which step to report for either.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DigestMismatch, OtaError

__all__ = ["FirmwareOffer", "afetch_firmware", "check_image", "failure_step", "fetch_firmware"]

MAX_FIRMWARE_SIZE = 256 * 1024 * 1024
"""Largest firmware file the helpers download. [bytes]"""


@dataclass(frozen=True, slots=True)
class FirmwareOffer:
    """The firmware object of an upgrade push (protocol reference 10)."""

    version: str
    sign_method: str
    sign: str
    file_url: str
    file_size: int

    @classmethod
    def of(cls, firmware: Any) -> FirmwareOffer:
        """From the push's params (``signMethod``, ``fileUrl``, ...) or the SDK's
        ``Firmware`` (``sign_method``, ``file_url``, ...); OtaError naming a missing field."""
        if isinstance(firmware, FirmwareOffer):
            return firmware
        given: Mapping[str, Any] = firmware if isinstance(firmware, Mapping) else vars(firmware)

        def field(*names: str) -> Any:
            for name in names:
                if given.get(name) is not None:
                    return given[name]
            raise OtaError(f"the firmware offered has no {names[0]!r}: {dict(given)!r}")

        size = field("fileSize", "file_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OtaError(f"the firmware offered has fileSize {size!r}, not an integer")
        return cls(
            version=str(field("version")),
            sign_method=str(field("signMethod", "sign_method")).lower(),
            sign=str(field("sign")).lower(),
            file_url=str(field("fileUrl", "file_url")),
            file_size=size,
        )


def check_image(offer: FirmwareOffer, data: bytes) -> bytes:
    """``data`` if its size and digest are those offered; DigestMismatch otherwise."""
    if len(data) != offer.file_size:
        raise DigestMismatch(
            f"firmware {offer.version}: {len(data)} bytes downloaded, {offer.file_size} offered",
            expected=str(offer.file_size),
            found=str(len(data)),
        )
    try:
        found = hashlib.new(offer.sign_method, data).hexdigest()
    except ValueError as exc:
        raise DigestMismatch(
            f"firmware {offer.version}: unknown signMethod {offer.sign_method!r}"
        ) from exc
    if found != offer.sign:
        raise DigestMismatch(
            f"firmware {offer.version}: the {offer.sign_method} digest offered is "
            f"{offer.sign!r} but the file's is {found!r}",
            expected=offer.sign,
            found=found,
        )
    return data


def fetch_firmware(
    firmware: Mapping[str, Any] | FirmwareOffer | Any, *, timeout: float = 10.0
) -> bytes:
    """Download the firmware offered and check its size and digest (see the module
    docstring); the file's bytes. Blocking. [timeout: s]"""
    offer = FirmwareOffer.of(firmware)
    if offer.file_size > MAX_FIRMWARE_SIZE:
        raise OtaError(f"firmware {offer.version}: {offer.file_size} bytes is too large")
    if not offer.file_url.startswith(("http://", "https://")):
        raise OtaError(f"firmware {offer.version}: fileUrl {offer.file_url!r} is not HTTP")
    try:
        with urllib.request.urlopen(offer.file_url, timeout=timeout) as response:
            chunks: list[bytes] = []
            size = 0
            while size <= offer.file_size and (chunk := response.read(1 << 16)):
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)[: offer.file_size + 1]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OtaError(
            f"firmware {offer.version}: download of {offer.file_url} failed: {exc}"
        ) from exc
    return check_image(offer, data)


async def afetch_firmware(
    firmware: Mapping[str, Any] | FirmwareOffer | Any, *, timeout: float = 10.0
) -> bytes:
    """Coroutine form of :func:`fetch_firmware` (aiohttp). [timeout: s]"""
    import aiohttp  # noqa: PLC0415 - loaded only by a device that downloads firmware

    offer = FirmwareOffer.of(firmware)
    if offer.file_size > MAX_FIRMWARE_SIZE:
        raise OtaError(f"firmware {offer.version}: {offer.file_size} bytes is too large")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(offer.file_url) as response,
        ):
            response.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            # a read gives what has arrived: read on to the end, one byte past the size
            # offered at most (a longer file fails the size check)
            async for chunk in response.content.iter_chunked(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > offer.file_size:
                    break
            data = b"".join(chunks)[: offer.file_size + 1]
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise OtaError(
            f"firmware {offer.version}: download of {offer.file_url} failed: {exc}"
        ) from exc
    return check_image(offer, data)


def failure_step(error: BaseException) -> str:
    """The progress step to report for ``error``: "-3" (verification failed) for a
    :class:`~enos_lab.errors.DigestMismatch`, "-2" (download failed) for another
    :class:`~enos_lab.errors.OtaError`, "-1" (undefined) otherwise."""
    if isinstance(error, DigestMismatch):
        return "-3"
    if isinstance(error, OtaError):
        return "-2"
    return "-1"
