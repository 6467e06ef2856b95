"""The lab's certificate authority on its own: issue, check, revoke, CRL, files, restart."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ca_helpers import make_csr
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enos_lab.ca import CertificateAuthority, CertificateStatus, KeyType
from enos_lab.clock import SimulatedClock
from enos_lab.errors import InvalidArgument, NotFound

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(START)


@pytest.fixture
def ca(tmp_path: Path, clock: SimulatedClock) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "data" / "ca", clock=clock)


def _attr(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    return str(cert.subject.get_attributes_for_oid(oid)[0].value)


@pytest.mark.parametrize("key_type", ["RSA", "EC"])
def test_a_generated_certificate_binds_the_device_and_chains_to_the_root(
    ca: CertificateAuthority, key_type: str
) -> None:
    issued = ca.issue("pk1", "dev1", asset_id="asset1", key_type=key_type, valid_days=30)
    cert = x509.load_pem_x509_certificate(issued.certificate.encode())
    cert.verify_directly_issued_by(ca.certificate)
    assert _attr(cert, NameOID.COMMON_NAME) == "asset1"
    assert _attr(cert, NameOID.ORGANIZATION_NAME) == "pk1"
    assert _attr(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == "dev1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    assert 0 < cert.serial_number < 2**159 and issued.serial_number == format(
        cert.serial_number, "x"
    )
    assert issued.key_type is KeyType.parse(key_type)
    assert issued.certificate_chain == issued.certificate + ca.certificate_pem()
    assert issued.private_key is not None and "BEGIN PRIVATE KEY" in issued.private_key  # PKCS#8
    key = serialization.load_pem_private_key(issued.private_key.encode(), password=None)
    wanted = rsa.RSAPrivateKey if key_type == "RSA" else ec.EllipticCurvePrivateKey
    assert isinstance(key, wanted)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert ca.check(cert).status is CertificateStatus.VALID


@pytest.mark.parametrize("key_type", ["RSA", "EC"])
def test_a_certificate_from_a_csr_carries_the_devices_own_key(
    ca: CertificateAuthority, key_type: str
) -> None:
    csr, _ = make_csr(key_type, CN="asset1", O="pk1", C="CN")
    issued = ca.issue("pk1", "dev1", asset_id="asset1", csr=csr, key_type=key_type)
    assert issued.private_key is None
    cert = x509.load_pem_x509_certificate(issued.certificate.encode())
    request = x509.load_pem_x509_csr(csr.encode())
    assert cert.public_key() == request.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME) == []  # dropped
    assert ca.check(issued.certificate, product_key="pk1", device_key="dev1").ok


def test_a_csr_naming_another_device_a_wrong_key_or_a_bad_signature_is_refused(
    ca: CertificateAuthority,
) -> None:
    other, _ = make_csr("RSA", CN="asset1", OU="dev2")
    with pytest.raises(InvalidArgument, match=r"pk1/dev1.*OU='dev2'"):
        ca.issue("pk1", "dev1", asset_id="asset1", csr=other)
    ec_csr, _ = make_csr("EC")
    with pytest.raises(InvalidArgument, match="RSA 2048"):
        ca.issue("pk1", "dev1", csr=ec_csr, key_type="RSA")
    rsa_csr, _ = make_csr("RSA")
    with pytest.raises(InvalidArgument, match="P-256"):
        ca.issue("pk1", "dev1", csr=rsa_csr, key_type="ECC")
    der = bytearray(
        x509.load_pem_x509_csr(rsa_csr.encode()).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0xFF  # the last byte of the signature
    with pytest.raises(InvalidArgument, match="bad signature"):
        ca.issue("pk1", "dev1", csr=bytes(der))
    with pytest.raises(InvalidArgument, match="not a certificate signing request"):
        ca.issue("pk1", "dev1", csr="-----BEGIN CERTIFICATE REQUEST-----\nxx\n")
    with pytest.raises(InvalidArgument, match="key_type"):
        ca.issue("pk1", "dev1", key_type="DSA")
    with pytest.raises(InvalidArgument, match="valid_days"):
        ca.issue("pk1", "dev1", valid_days=0)
    with pytest.raises(InvalidArgument, match="cannot be named"):
        ca.issue("pk1", "d" * 65)
    assert ca.records() == []


def test_check_tells_own_other_expired_revoked_foreign_server_and_malformed(
    ca: CertificateAuthority, clock: SimulatedClock, tmp_path: Path
) -> None:
    issued = ca.issue("pk1", "dev1", key_type="EC", valid_days=10)
    der = x509.load_pem_x509_certificate(issued.certificate.encode()).public_bytes(
        serialization.Encoding.DER
    )
    own = ca.check(der, product_key="pk1", device_key="dev1")
    assert own.ok and (own.product_key, own.device_key) == ("pk1", "dev1")
    other = ca.check(der, product_key="pk1", device_key="dev2")
    assert other.status is CertificateStatus.OTHER_DEVICE
    assert "pk1/dev1" in other.reason and issued.serial_number in other.reason

    gone = ca.issue("pk1", "dev1")
    ca.revoke(gone.serial_number, "key_compromise")
    revoked = ca.check(gone.certificate, product_key="pk1", device_key="dev1")
    assert revoked.status is CertificateStatus.REVOKED
    assert "key_compromise" in revoked.reason and gone.serial_number in revoked.reason

    stranger = CertificateAuthority(tmp_path / "other-ca", clock=clock)
    foreign = ca.check(stranger.issue("pk1", "dev1").certificate)
    assert foreign.status is CertificateStatus.FOREIGN and foreign.product_key == ""

    server = ca.server_credentials()
    server_cert = x509.load_pem_x509_certificates(server.certificate_chain.read_bytes())[0]
    assert ca.check(server_cert).status is CertificateStatus.NOT_A_DEVICE
    assert ca.check(b"\x30\x03junk").status is CertificateStatus.MALFORMED

    clock.set(START + timedelta(days=10, seconds=1))
    expired = ca.check(der, product_key="pk1", device_key="dev1")
    assert expired.status is CertificateStatus.EXPIRED and "pk1/dev1" in expired.reason


def test_revocation_is_recorded_and_the_crl_lists_the_serial(
    ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    kept = ca.issue("pk1", "dev1")
    gone = ca.issue("pk1", "dev1")
    clock.set(START + timedelta(hours=1))
    record = ca.revoke(gone.serial_number, "superseded")
    assert record.revoked_at == START + timedelta(hours=1)
    assert record.revocation_reason == "superseded"
    assert ca.revoke(gone.serial_number, "key_compromise").revocation_reason == "superseded"
    crl = x509.load_pem_x509_crl(ca.crl().encode())
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(int(gone.serial_number, 16))
    assert entry is not None and entry.revocation_date_utc == START + timedelta(hours=1)
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.superseded
    assert crl.get_revoked_certificate_by_serial_number(int(kept.serial_number, 16)) is None
    assert crl.next_update_utc == START + timedelta(hours=1, days=7)
    clock.set(START + timedelta(days=8))  # past nextUpdate: reissued when read
    assert x509.load_pem_x509_crl(ca.crl().encode()).last_update_utc == START + timedelta(days=8)
    with pytest.raises(NotFound, match="abc"):
        ca.revoke("abc")
    with pytest.raises(InvalidArgument, match="reason"):
        ca.revoke(kept.serial_number, "bored")
    with pytest.raises(InvalidArgument, match="reason"):
        ca.revoke(kept.serial_number, "remove_from_crl")
    assert ca.revoke(kept.serial_number, 5).revocation_reason == "cessation_of_operation"


def test_the_server_certificate_names_localhost_and_the_given_hosts(
    ca: CertificateAuthority,
) -> None:
    first = ca.server_credentials()
    assert ca.server_credentials().not_after == first.not_after  # kept, not reissued
    creds = ca.server_credentials(["lab.example", "10.0.0.7"])
    chain = x509.load_pem_x509_certificates(creds.certificate_chain.read_bytes())
    assert chain[1] == ca.certificate
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "lab.example"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "::1",
        "10.0.0.7",
    }
    eku = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key = serialization.load_pem_private_key(creds.private_key.read_bytes(), creds.password)
    assert key.public_key() == chain[0].public_key()


def test_files_are_private_and_the_ca_key_is_encrypted(ca: CertificateAuthority) -> None:
    ca.issue("pk1", "dev1")
    ca.server_credentials()
    assert stat.S_IMODE(os.stat(ca.directory).st_mode) == 0o700
    names = sorted(path.name for path in ca.directory.iterdir())
    assert names == [
        "ca.crt",
        "ca.key",
        "ca.passphrase",
        "certificates.sqlite3",
        "crl.pem",
        "server.crt",
        "server.key",
    ]
    for path in ca.directory.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    key_pem = (ca.directory / "ca.key").read_bytes()
    assert key_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # a password is needed
        serialization.load_pem_private_key(key_pem, password=None)


def test_a_restart_keeps_the_ca_its_index_and_its_revocations(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    first = CertificateAuthority(tmp_path / "ca", clock=clock)
    issued = first.issue("pk1", "dev1")
    revoked = first.issue("pk1", "dev2")
    first.revoke(revoked.serial_number)
    again = CertificateAuthority(tmp_path / "ca", clock=clock)
    assert again.certificate_pem() == first.certificate_pem()
    assert again.check(issued.certificate).ok
    assert again.check(revoked.certificate).status is CertificateStatus.REVOKED
    assert [r.device_key for r in again.records("pk1")] == ["dev1", "dev2"]
    assert again.issue("pk1", "dev3").certificate_chain.endswith(first.certificate_pem())
