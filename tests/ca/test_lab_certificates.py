"""Certificates from the :class:`~enos_lab.Lab` facade (EnOS's certificate API shape)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ca_helpers import make_csr
from cryptography import x509

from enos_lab import Lab
from enos_lab.ca import CertificateStatus
from enos_lab.clock import SimulatedClock
from enos_lab.errors import InvalidArgument, NotFound


def _device(lab: Lab) -> tuple[str, str, str]:
    pk = lab.create_product("Meters").product_key
    device = lab.register_device(pk, device_key="m1")
    return pk, "m1", device.asset_id


def test_apply_list_revoke_and_the_crl(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(clock=SimulatedClock(datetime(2026, 3, 1, tzinfo=UTC)))
    pk, dk, asset_id = _device(lab)
    generated = lab.apply_certificate(pk, dk, key_type="EC", valid_days=30)
    assert generated.private_key is not None and generated.asset_id == asset_id
    csr, _ = make_csr("RSA", CN=asset_id, O=pk, OU=dk)
    signed = lab.apply_certificate(pk, dk, csr=csr)
    assert signed.private_key is None
    assert signed.certificate_chain.endswith(lab.ca_certificate())

    frame = lab.certificates(pk, dk)
    assert list(frame["serial_number"]) == [generated.serial_number, signed.serial_number]
    assert list(frame["key_type"]) == ["ECC", "RSA"]
    assert list(frame["status"]) == ["valid", "valid"]
    assert str(frame["not_after"].dt.tz) == "UTC"

    assert lab.revoke_certificate(pk, dk, signed.serial_number, reason="key_compromise") == [
        signed.serial_number
    ]
    crl = x509.load_pem_x509_crl(lab.crl().encode())
    assert crl.get_revoked_certificate_by_serial_number(int(signed.serial_number, 16))
    lab.clock.advance(timedelta(days=31))
    frame = lab.certificates()
    assert list(frame["status"]) == ["expired", "revoked"]
    assert frame["revocation_reason"].iloc[1] == "key_compromise"
    assert lab.ca.check(generated.certificate).status is CertificateStatus.EXPIRED

    with pytest.raises(NotFound, match=f"{pk}/{dk}"):
        lab.revoke_certificate(pk, dk, "abc")
    assert lab.revoke_certificate(pk, dk) == [generated.serial_number]  # every unrevoked one
    with pytest.raises(NotFound, match="no unrevoked certificate"):
        lab.revoke_certificate(pk, dk)
    with pytest.raises(NotFound):
        lab.apply_certificate(pk, "nobody")
    other, _ = make_csr("RSA", CN="someone-else")
    with pytest.raises(InvalidArgument, match=f"{pk}/{dk}"):
        lab.apply_certificate(pk, dk, csr=other)
    assert lab.certificates("no-such-product").empty


def test_the_ca_survives_a_restart_in_the_data_directory(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", port=0) as lab:
        pk, dk, _ = _device(lab)
        issued = lab.apply_certificate(pk, dk)
        ca_pem = lab.ca_certificate()
        assert lab.ca.directory == lab.data_dir / "ca"
    with Lab(tmp_path / "lab", port=0) as lab:
        assert lab.ca_certificate() == ca_pem
        assert list(lab.certificates()["serial_number"]) == [issued.serial_number]
        assert lab.ca.check(issued.certificate, product_key=pk, device_key=dk).ok


async def test_the_coroutine_forms(tmp_path: Path) -> None:
    async with Lab(tmp_path / "lab", port=0) as lab:
        pk = (await lab.acreate_product("Meters")).product_key
        await lab.aregister_device(pk, device_key="m1")
        issued = await lab.aapply_certificate(pk, "m1", key_type="EC")
        assert (await lab.acertificates(pk))["serial_number"].tolist() == [issued.serial_number]
        assert await lab.arevoke_certificate(pk, "m1") == [issued.serial_number]
        assert "BEGIN X509 CRL" in await lab.acrl()
        assert "BEGIN CERTIFICATE" in await lab.aca_certificate()
