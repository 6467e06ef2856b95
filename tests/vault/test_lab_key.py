"""The lab key: its file (created 0600, refused when open to others or of the wrong length),
sealing bound to a value's place, and derived secrets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from enos_lab.errors import InvalidArgument, LabKeyError, SealBroken
from enos_lab.vault import KEY_BYTES, LabKey, context, is_sealed

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@posix_only
def test_a_missing_key_file_is_created_0600_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "lab.key"  # the missing directory is created too (0700)
    key = LabKey.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes()) == KEY_BYTES
    again = LabKey.load(path)
    assert again.fingerprint == key.fingerprint and again.path == path
    assert LabKey.load(tmp_path / "other.key").fingerprint != key.fingerprint
    assert key.fingerprint in repr(key) and str(path) in repr(key)


@posix_only
def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lab.key"
    LabKey.load(path)
    path.chmod(0o644)
    with pytest.raises(LabKeyError, match=r"lab\.key has mode 0o644.*chmod 600"):
        LabKey.load(path)


def test_a_key_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lab.key"
    path.write_bytes(b"too short")
    path.chmod(0o600)
    with pytest.raises(LabKeyError, match=r"lab\.key has 9 bytes, a lab key has 32"):
        LabKey.load(path)
    with pytest.raises(InvalidArgument, match="32 bytes"):
        LabKey(b"x" * 31)


def test_a_sealed_value_opens_only_where_it_was_sealed() -> None:
    key = LabKey.ephemeral()
    here = context("device_secret", "pk", "d1")
    token = key.seal("s3cret-of-d1", here)
    assert is_sealed(token) and token.isascii() and "s3cret" not in token
    assert key.open(token, here) == "s3cret-of-d1"
    assert key.seal("s3cret-of-d1", here) != token  # a fresh nonce per value
    # another row, another column, another key, an altered value: refused, naming the place
    with pytest.raises(SealBroken, match=r"device_secret of pk/d2: .*does not open here"):
        key.open(token, context("device_secret", "pk", "d2"))
    with pytest.raises(SealBroken, match="product_secret of pk"):
        key.open(token, context("product_secret", "pk"))
    with pytest.raises(SealBroken):
        LabKey.ephemeral().open(token, here)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(SealBroken):
        key.open(flipped, here)
    for bad in ("clear-text", "v1:", "v1:!!!!", token[:20]):
        with pytest.raises(SealBroken, match="device_secret of pk/d1"):
            key.open(bad, here)
    for length in range(41):  # every length of the base64 text opens (padding left out)
        text = "x" * length
        assert key.open(key.seal(text, here), here) == text


def test_derived_secrets_depend_on_the_key_and_the_purpose() -> None:
    key = LabKey(bytes(range(32)))
    same = LabKey(bytes(range(32)))
    assert key.derive("a") == same.derive("a") and len(key.derive("a")) == KEY_BYTES
    assert key.derive("a") != key.derive("b")
    assert key.derive("a") != LabKey.ephemeral().derive("a")
    assert len(key.derive("a", 8)) == 8
    phrase = key.passphrase("enos_lab ca passphrase")
    assert (
        phrase.isascii()
        and len(phrase) == 43
        and phrase == same.passphrase("enos_lab ca passphrase")
    )
