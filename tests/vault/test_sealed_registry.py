"""Secrets at rest in the registry: sealed in the file, opened by every reader, a clear registry
sealed in place when opened, another key refused, a sealed value copied into another row
refused (and only that device's login fails, over real TCP)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from enos_lab import Lab
from enos_lab.device import DeviceClient
from enos_lab.errors import LabKeyError, LoginRefused, SealBroken, WrongLabKey
from enos_lab.lab import REGISTRY_FILE
from enos_lab.registry import Registry
from enos_lab.vault import KEY_FILE, LabKey, is_sealed

DEVICES = 300  # enough rows for several database pages


def _file_bytes(path: Path) -> bytes:
    """The database file and whatever its write-ahead log holds."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _fill(registry: Registry) -> list[str]:
    """A product with dynamic activation and DEVICES devices; returns every secret."""
    product = registry.create_product("Meters", product_key="pk", dynamic_activation=True)
    rows = [{"product_key": "pk", "device_key": f"m{i:03d}"} for i in range(DEVICES)]
    registry.register_devices(rows)
    registry.register_device("pk", device_key="chosen", device_secret="Chosen-Secret-0001")
    secrets = [product.product_secret, "Chosen-Secret-0001"]
    secrets += [d.device_secret for d in registry.devices("pk")]
    return secrets


def test_no_secret_is_in_the_file_and_every_reader_opens_them(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILE
    registry = Registry(path, rng=random.Random(1))
    try:
        secrets = _fill(registry)
        stored = dict(
            sqlite3.connect(path).execute("SELECT device_key, device_secret FROM devices")
        )
        assert all(is_sealed(value) for value in stored.values())
        assert registry.get_device("pk", "chosen").device_secret == "Chosen-Secret-0001"
        credentials = registry.export_credentials("pk")
        assert set(credentials["device_secret"]) <= set(secrets)
        assert set(credentials["product_secret"]) == {secrets[0]}
        assert registry.get_product("pk").product_secret == secrets[0]
        assert registry.activate("pk", "m000").device_secret != stored["m000"]
        raw = _file_bytes(path)
    finally:
        registry.close()
    raw += _file_bytes(path)
    leaked = [s for s in secrets if s.encode() in raw]
    assert not leaked
    assert (tmp_path / KEY_FILE).exists()  # the default key file, beside the database
    assert LabKey.load(tmp_path / KEY_FILE).fingerprint.encode() in raw  # the sealing key, named


def _make_clear(path: Path, secrets: dict[tuple[str, ...], str]) -> None:
    """Turn a registry into one written before secrets were sealed: clear secrets, no vault
    table, no key file."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE vault")
    for keys, secret in secrets.items():
        if len(keys) == 1:
            db.execute("UPDATE products SET product_secret=? WHERE product_key=?", (secret, *keys))
        else:
            db.execute(
                "UPDATE devices SET device_secret=? WHERE product_key=? AND device_key=?",
                (secret, *keys),
            )
    db.close()
    (path.parent / KEY_FILE).unlink()


def test_a_registry_of_clear_secrets_is_sealed_in_place_when_opened(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILE
    registry = Registry(path, rng=random.Random(2))
    try:
        _fill(registry)
        clear: dict[tuple[str, ...], str] = {("pk",): registry.get_product("pk").product_secret}
        clear.update({(d.product_key, d.device_key): d.device_secret for d in registry.devices()})
    finally:
        registry.close()
    _make_clear(path, clear)
    raw = _file_bytes(path)
    assert sum(secret.encode() in raw for secret in clear.values()) == len(clear)

    registry = Registry(path)  # a new key file; the clear secrets are sealed under it
    try:
        assert registry.get_product("pk").product_secret == clear["pk",]
        assert {(d.product_key, d.device_key): d.device_secret for d in registry.devices()} == {
            k: v for k, v in clear.items() if len(k) == 2
        }
        raw = _file_bytes(path)
    finally:
        registry.close()
    raw += _file_bytes(path)
    assert [secret for secret in clear.values() if secret.encode() in raw] == []
    Registry(path).close()  # opened again: nothing left to seal, same key


def test_another_key_is_refused_naming_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILE
    Registry(path).close()
    wrong = LabKey.load(tmp_path / "elsewhere" / "other.key")
    with pytest.raises(WrongLabKey, match=r"sealed under lab key [0-9a-f]{16}.*other\.key"):
        Registry(path, key=wrong)
    (tmp_path / KEY_FILE).unlink()  # the key file lost: reported, not replaced by a new one
    with pytest.raises(LabKeyError, match="is missing"):
        Registry(path)
    assert not (tmp_path / KEY_FILE).exists()
    LabKey.load(tmp_path / KEY_FILE)  # a new key file where the old one was
    with pytest.raises(WrongLabKey, match="replaced or belongs to another lab"):
        Registry(path)


async def test_a_sealed_secret_copied_into_another_row_opens_nothing(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", port=0, rng=random.Random(3)) as lab:
        pk = lab.create_product("Meters").product_key
        first = lab.register_device(pk, device_key="d1")
        lab.register_device(pk, device_key="d2")
        path = lab.data_dir / REGISTRY_FILE
        # someone with write access to the file copies d1's sealed secret into d2's row
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(
            "UPDATE devices SET device_secret=(SELECT device_secret FROM devices "
            "WHERE device_key='d1') WHERE device_key='d2'"
        )
        db.close()
        with pytest.raises(SealBroken, match=f"device_secret of {pk}/d2"):
            lab.device(pk, "d2")
        thief = DeviceClient(lab.host, lab.port, pk, "d2", first.device_secret, reconnect=None)
        with pytest.raises(LoginRefused):
            await thief.connect()
        refused = await lab.arefused_logins(pk, "d2")
        assert "does not open here" in refused["reason"].iloc[-1]
        async with DeviceClient(lab.host, lab.port, pk, "d1", first.device_secret) as client:
            assert client.connected  # the device whose row is intact logs in as before
