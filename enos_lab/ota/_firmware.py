"""The firmware registry: firmware files per product and version, with their size and digest.

:meth:`FirmwareRegistry.add` checks the product, the version (one file per product and
version), computes the file's size and digest (``md5`` or ``sha256``, the EnOS ``signMethod``),
refuses a given digest that does not match (:class:`~enos_lab.errors.DigestMismatch`, naming
both) and copies the file under ``<data_dir>/ota/firmware/`` (0600) under a random name; the
firmware server serves it by an unguessable token (:meth:`Firmware.path
<enos_lab.ota.Firmware.path>`). Synchronous (file I/O): call it from a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from .._files import private_dir, write_private
from ..errors import AlreadyExists, DigestMismatch, InvalidArgument, NotFound
from ._records import Firmware, OtaRecords

__all__ = ["FIRMWARE_DIR", "SIGN_METHODS", "FirmwareRegistry", "file_digest"]

FIRMWARE_DIR = Path("ota") / "firmware"
"""Where firmware files are kept, relative to the data directory (0700)."""

SIGN_METHODS = ("md5", "sha256")
"""The digests a firmware may be signed with (EnOS ``signMethod``)."""

MAX_VERSION_LENGTH = 64
"""Longest firmware version accepted. [characters]"""

_FILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def file_digest(data: bytes, sign_method: str) -> str:
    """The hex digest of ``data`` by ``sign_method`` ("md5" or "sha256")."""
    method = check_sign_method(sign_method)
    return hashlib.new(method, data).hexdigest()


def check_sign_method(sign_method: str) -> str:
    """``sign_method`` lower-cased; InvalidArgument naming it unless md5 or sha256."""
    method = sign_method.lower() if isinstance(sign_method, str) else sign_method
    if method not in SIGN_METHODS:
        raise InvalidArgument(f"sign_method must be one of {SIGN_METHODS}, got {sign_method!r}")
    return str(method)


def check_version(version: str) -> str:
    """``version`` if it is a usable firmware version, else InvalidArgument naming it."""
    if (
        not isinstance(version, str)
        or not version.strip()
        or len(version) > MAX_VERSION_LENGTH
        or any(ord(char) < 32 for char in version)
    ):
        raise InvalidArgument(
            f"a firmware version must be a non-empty string of at most {MAX_VERSION_LENGTH} "
            f"printable characters, got {version!r}"
        )
    return version


class FirmwareRegistry:
    """Firmware files of a lab (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        records: OtaRecords,
        now_ms: Callable[[], int],
        product_exists: Callable[[str], bool],
    ) -> None:
        self._dir = data_dir / FIRMWARE_DIR
        self._records = records
        self._now_ms = now_ms
        self._product_exists = product_exists

    def add(
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
        """Register ``file`` (a path, or the firmware's bytes) as ``version`` of the product
        (see the module docstring)."""
        if not isinstance(product_key, str) or not self._product_exists(product_key):
            raise NotFound(f"product {product_key!r} does not exist")
        check_version(version)
        method = check_sign_method(sign_method)
        if self._records.firmware(product_key, version) is not None:
            raise AlreadyExists(
                f"product {product_key} has firmware version {version!r} already "
                "(remove_firmware first to replace it)"
            )
        if isinstance(file, bytes | bytearray):
            data = bytes(file)
            shown = file_name or f"{product_key}-{version}.bin"
        elif isinstance(file, str | Path):
            try:
                data = Path(file).read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"cannot read the firmware file {file}: {exc}") from exc
            shown = file_name or Path(file).name
        else:
            raise InvalidArgument(f"file must be a path or bytes, got {type(file).__name__}")
        if not _FILE_NAME.fullmatch(shown):
            shown = re.sub(r"[^A-Za-z0-9._-]", "_", shown)[:128] or "firmware.bin"
        found = hashlib.new(method, data).hexdigest()
        if digest is not None:
            expected = digest.lower() if isinstance(digest, str) else digest
            if expected != found:
                raise DigestMismatch(
                    f"firmware {product_key} {version!r} ({shown}): the {method} digest given "
                    f"is {digest!r} but the file's is {found!r}",
                    expected=str(digest),
                    found=found,
                )
        private_dir(self._dir)
        token = secrets.token_urlsafe(18)
        stored = f"{secrets.token_hex(12)}.bin"
        write_private(self._dir / stored, data)
        firmware = Firmware(
            product_key=product_key,
            version=version,
            file_name=shown,
            stored=stored,
            size=len(data),
            sign_method=method,
            sign=found,
            token=token,
            created_ms=self._now_ms(),
            name=name,
            description=description,
            signature=signature,
        )
        try:
            self._records.add_firmware(firmware)
        except BaseException:
            (self._dir / stored).unlink(missing_ok=True)
            raise
        return firmware

    def get(self, product_key: str, version: str) -> Firmware:
        """The firmware ``version`` of the product; NotFound naming both if there is none."""
        firmware = self._records.firmware(product_key, version)
        if firmware is None:
            raise NotFound(f"product {product_key} has no firmware version {version!r}")
        return firmware

    def remove(self, product_key: str, version: str) -> Firmware:
        """Forget the firmware and delete its file; NotFound if there is none."""
        firmware = self.get(product_key, version)
        self._records.remove_firmware(product_key, version)
        (self._dir / firmware.stored).unlink(missing_ok=True)
        return firmware

    def file(self, firmware: Firmware) -> Path:
        """Where the firmware's file is kept."""
        return self._dir / firmware.stored
