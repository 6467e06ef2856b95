"""The lab key file on the facade (in the data directory or elsewhere, 0600, refused when it is
not the data's key) and the CA's keys encrypted under it (an older ``ca.passphrase`` file
migrated and removed)."""

from __future__ import annotations

import os
import random
import ssl
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from enos_lab import Lab
from enos_lab.ca import CertificateAuthority, CertificateStatus
from enos_lab.errors import LabKeyError, WrongLabKey
from enos_lab.lab import CA_DIR, CA_PASSPHRASE_PURPOSE
from enos_lab.vault import KEY_FILE, LabKey

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@posix_only
def test_the_key_file_is_kept_0600_in_the_data_directory_or_where_the_user_says(
    tmp_path: Path,
) -> None:
    with Lab(tmp_path / "lab", port=0) as lab:
        assert lab.key_file == tmp_path / "lab" / KEY_FILE
        assert stat.S_IMODE(lab.key_file.stat().st_mode) == 0o600

    key_file = tmp_path / "secrets" / "lab.key"
    data = tmp_path / "elsewhere"
    with Lab(data, port=0, key_file=key_file, rng=random.Random(1)) as lab:
        pk = lab.create_product("Meters").product_key
        secret = lab.register_device(pk, device_key="m1").device_secret
        assert lab.key_file == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (data / KEY_FILE).exists()

    with Lab(data, port=0, key_file=key_file) as lab:  # the same key: the secrets open
        assert lab.device(pk, "m1").device_secret == secret
    # without the key file the data directory opens nothing: the missing key is named, and
    # another key is refused
    unstarted = Lab(data, port=0)
    with pytest.raises(LabKeyError, match=r"lab\.key is missing"):
        unstarted.start()
    assert not unstarted.running and not (data / KEY_FILE).exists()
    other = LabKey.load(tmp_path / "other.key").path
    with pytest.raises(WrongLabKey, match=r"other\.key.*replaced or belongs to another lab"):
        Lab(data, port=0, key_file=other).start()
    key_file.chmod(0o640)
    with pytest.raises(LabKeyError, match=r"chmod 600"):
        Lab(data, port=0, key_file=key_file).start()


def test_a_ca_with_a_passphrase_file_moves_under_the_lab_key(tmp_path: Path) -> None:
    data = tmp_path / "lab"
    with Lab(data, port=0, rng=random.Random(2)) as lab:
        pk = lab.create_product("Meters").product_key
        lab.register_device(pk, device_key="m1")
    # a CA made before its keys were encrypted under the lab key
    directory = data / CA_DIR
    legacy = CertificateAuthority(directory)
    issued = legacy.issue(pk, "m1")
    legacy.server_credentials()
    old = (directory / "ca.passphrase").read_bytes().strip()

    with Lab(data, port=0) as lab:
        ca = lab.ca
        assert not (directory / "ca.passphrase").exists()
        passphrase = LabKey.load(lab.key_file).passphrase(CA_PASSPHRASE_PURPOSE)
        for name in ("ca.key", "server.key"):
            pem = (directory / name).read_bytes()
            with pytest.raises(ValueError):
                serialization.load_pem_private_key(pem, password=old)
            serialization.load_pem_private_key(pem, password=passphrase)
        # what the CA issued before still verifies; it issues and serves TLS as before
        assert (
            ca.check(issued.certificate, product_key=pk, device_key="m1").status
            is CertificateStatus.VALID
        )
        assert lab.certificates(pk, "m1")["serial_number"].tolist() == [issued.serial_number]
        lab.apply_certificate(pk, "m1")
        server = ca.server_credentials()
        assert server.password == passphrase
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server.certificate_chain, server.private_key, server.password)

    # a migration cut short (keys re-encrypted, the file still there) completes when opened
    (directory / "ca.passphrase").write_bytes(old)
    (directory / "ca.passphrase").chmod(0o600)
    CertificateAuthority(directory, passphrase=passphrase)
    assert not (directory / "ca.passphrase").exists()
    with pytest.raises(WrongLabKey, match=r"ca\.key does not open"):
        CertificateAuthority(directory, passphrase=b"not the lab's")
    with pytest.raises(WrongLabKey, match="encrypted under a lab key"):
        CertificateAuthority(directory)


def test_a_new_lab_ca_keeps_no_passphrase_file(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", port=0) as lab:
        directory = lab.ca.directory
        assert sorted(p.name for p in directory.iterdir() if p.name.startswith("ca.")) == [
            "ca.crt",
            "ca.key",
        ]


def test_a_lost_key_file_is_reported_not_replaced(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", port=0) as lab:
        lab.create_product("Meters")
        key_file = lab.key_file
    key_file.unlink()
    with pytest.raises(LabKeyError, match="is missing"):
        Lab(tmp_path / "lab", port=0).start()
    assert not key_file.exists()  # no new key that would hide the lost one
