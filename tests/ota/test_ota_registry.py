"""The firmware registry and the firmware HTTP server through the facade: size and digest
computed (md5, sha256), a digest that does not match refused naming both, a duplicate version
and an unknown product refused, files kept 0600 in the data directory and across a restart;
the server serves registered files only (GET, HEAD, Range), 404 for anything else."""

from __future__ import annotations

import asyncio
import hashlib
import random
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from enos_lab.errors import AlreadyExists, DigestMismatch, InvalidArgument, NotFound, OtaError
from enos_lab.lab import Lab
from enos_lab.ota import FIRMWARE_COLUMNS, FIRMWARE_DIR, afetch_firmware, fetch_firmware

IMAGE = bytes(range(256)) * 40  # a 10 KiB firmware image


def _get(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers)


def test_firmware_is_registered_with_size_and_digest(tmp_path: Path) -> None:
    source = tmp_path / "meter-1.1.0.bin"
    source.write_bytes(IMAGE)
    with Lab(tmp_path / "lab", port=0, rng=random.Random(1)) as lab:
        pk = lab.create_product("Meter").product_key
        md5 = lab.add_firmware(pk, "1.1.0", source, name="Meter firmware", description="fixes")
        assert (md5.size, md5.sign_method, md5.sign) == (
            len(IMAGE),
            "md5",
            hashlib.md5(IMAGE).hexdigest(),
        )
        assert md5.file_name == "meter-1.1.0.bin"
        sha = lab.add_firmware(
            pk,
            "1.2.0",
            IMAGE + b"!",
            sign_method="SHA256",
            digest=hashlib.sha256(IMAGE + b"!").hexdigest().upper(),
            signature="vendor-sig",
        )
        assert sha.sign_method == "sha256"
        assert sha.sign == hashlib.sha256(IMAGE + b"!").hexdigest()

        kept = lab.data_dir / FIRMWARE_DIR / md5.stored
        assert kept.read_bytes() == IMAGE
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600

        frame = lab.firmwares(pk)
        assert list(frame.columns) == [*FIRMWARE_COLUMNS, "file_url"]
        assert list(frame["version"]) == ["1.1.0", "1.2.0"]
        assert list(frame["size"]) == [len(IMAGE), len(IMAGE) + 1]
        assert str(frame["created_at"].dt.tz) == "UTC"
        assert frame["signature"].isna().tolist() == [True, False]
        assert frame["signature"][1] == "vendor-sig"
        assert all(url.startswith(lab.firmware_url + "/ota/firmware/") for url in frame["file_url"])

    with Lab(tmp_path / "lab", port=0) as lab:  # kept across a restart, served again
        frame = lab.firmwares()
        assert list(frame["version"]) == ["1.1.0", "1.2.0"]
        status, body, _ = _get(frame["file_url"][0])
        assert (status, body) == (200, IMAGE)


def test_bad_firmware_is_refused_with_typed_errors(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", port=0, rng=random.Random(2)) as lab:
        pk = lab.create_product("Meter").product_key
        wrong = "0" * 32
        with pytest.raises(DigestMismatch) as mismatch:
            lab.add_firmware(pk, "1.1.0", IMAGE, digest=wrong)
        found = hashlib.md5(IMAGE).hexdigest()
        assert wrong in str(mismatch.value) and found in str(mismatch.value)
        assert (mismatch.value.expected, mismatch.value.found) == (wrong, found)
        assert isinstance(mismatch.value, OtaError)
        assert lab.firmwares().empty  # nothing kept
        assert not any((lab.data_dir / FIRMWARE_DIR).glob("*.bin"))

        lab.add_firmware(pk, "1.1.0", IMAGE)
        with pytest.raises(AlreadyExists, match=r"1\.1\.0"):
            lab.add_firmware(pk, "1.1.0", IMAGE + b"x")
        with pytest.raises(NotFound, match="nosuchpk"):
            lab.add_firmware("nosuchpk", "1.0.0", IMAGE)
        with pytest.raises(InvalidArgument, match="crc32"):
            lab.add_firmware(pk, "2.0.0", IMAGE, sign_method="crc32")
        with pytest.raises(InvalidArgument, match="version"):
            lab.add_firmware(pk, "", IMAGE)
        with pytest.raises(InvalidArgument, match="cannot read"):
            lab.add_firmware(pk, "2.0.0", tmp_path / "missing.bin")
        with pytest.raises(NotFound, match=r"9\.9"):
            lab.remove_firmware(pk, "9.9")
        with pytest.raises(NotFound):
            lab.firmwares("nosuchpk")


def test_the_server_serves_registered_files_only(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", port=0, rng=random.Random(3)) as lab:
        pk = lab.create_product("Meter").product_key
        firmware = lab.add_firmware(pk, "1.1.0", IMAGE, file_name="meter.bin")
        url = lab.firmwares(pk)["file_url"][0]
        assert url == f"{lab.firmware_url}/ota/firmware/{firmware.token}/meter.bin"
        assert lab.firmware_url.startswith("http://127.0.0.1:")

        status, body, headers = _get(url)
        assert (status, body) == (200, IMAGE)
        assert headers["Content-Type"] == "application/octet-stream"
        status, body, headers = _get(url, method="HEAD")
        assert (status, body, int(headers["Content-Length"])) == (200, b"", len(IMAGE))
        status, body, _ = _get(url, headers={"Range": "bytes=10-19"})
        assert (status, body) == (206, IMAGE[10:20])

        base = lab.firmware_url
        for path in (
            "/ota/firmware/guessed-token/meter.bin",
            f"/ota/firmware/{firmware.token}/other.bin",
            f"/ota/firmware/{firmware.token}/../../ota.sqlite3",
            f"/ota/firmware/{firmware.stored}/meter.bin",
            "/ota/firmware/",
            "/",
            "/ota.sqlite3",
        ):
            assert _get(base + path)[0] == 404, path
        assert _get(url, method="POST")[0] == 405

        # the device-side helper downloads and checks it
        offer = {
            "version": "1.1.0",
            "signMethod": "md5",
            "sign": firmware.sign,
            "fileUrl": url,
            "fileSize": firmware.size,
        }
        assert fetch_firmware(offer) == IMAGE
        with pytest.raises(DigestMismatch):
            fetch_firmware({**offer, "sign": "0" * 32})
        with pytest.raises(DigestMismatch):
            fetch_firmware({**offer, "fileSize": firmware.size - 1})

        lab.remove_firmware(pk, "1.1.0")
        assert _get(url)[0] == 404
        assert not (lab.data_dir / FIRMWARE_DIR / firmware.stored).exists()
        with pytest.raises(OtaError, match="download"):
            fetch_firmware(offer)


def test_a_firmware_of_several_megabytes_downloads_whole(tmp_path: Path) -> None:
    """The device-side helpers read the file to its end, however it arrives in pieces."""
    image = random.Random(3).randbytes(3 << 20)
    with Lab(tmp_path / "lab", port=0, rng=random.Random(2)) as lab:
        pk = lab.create_product("Meter").product_key
        firmware = lab.add_firmware(pk, "2.0.0", image, sign_method="sha256")
        offer = {
            "version": "2.0.0",
            "signMethod": "sha256",
            "sign": firmware.sign,
            "fileUrl": lab.firmwares(pk)["file_url"].iloc[0],
            "fileSize": firmware.size,
        }
        assert fetch_firmware(offer) == image
        assert asyncio.run(afetch_firmware(offer)) == image
        with pytest.raises(DigestMismatch, match="bytes downloaded"):
            asyncio.run(afetch_firmware({**offer, "fileSize": firmware.size - 1}))


def test_the_firmware_server_starts_with_the_first_firmware_and_again_after_a_restart(
    tmp_path: Path,
) -> None:
    with Lab(tmp_path / "lab", port=0, rng=random.Random(4)) as lab:
        service = lab._running().ota
        assert service is not None and not service.server.running  # nothing to serve yet
        pk = lab.create_product("Meter").product_key
        lab.add_firmware(pk, "1.0.0", IMAGE)
        assert service.server.running
        lab.stop()
        lab.start()
        # firmware registered: served from the start, before anyone asks for the URL
        url = lab.firmwares(pk)["file_url"].iloc[0]
        assert url.startswith("http://127.0.0.1:")
        assert _get(url)[:2] == (200, IMAGE)
