"""Logins of certificate-bound devices: the registry's decision with the lab's CA as checker
(protocol reference 2.6)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from enos_lab.ca import CertificateAuthority
from enos_lab.clock import SimulatedClock
from enos_lab.enos import SecureMode, login_credentials
from enos_lab.registry import Registry, authenticate


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(datetime(2026, 3, 1, tzinfo=UTC))


@pytest.fixture
def registry(tmp_path: Path, clock: SimulatedClock) -> Registry:
    reg = Registry(tmp_path / "r.sqlite3", clock=clock, rng=random.Random(1))
    reg.create_product("Cert", product_key="certP", certificate_required=True)
    reg.create_product("Plain", product_key="plainP", dynamic_activation=True)
    for pk, dk in (("certP", "c1"), ("certP", "c2"), ("plainP", "p1"), ("plainP", "p2")):
        reg.register_device(pk, device_key=dk)
    return reg


@pytest.fixture
def ca(tmp_path: Path, clock: SimulatedClock) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca", clock=clock)


def _der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)


def _creds(registry: Registry, pk: str, dk: str) -> tuple[str, str, str]:
    secret = registry.get_device(pk, dk).device_secret
    return login_credentials(pk, dk, secret, timestamp="1700000000000")


def test_a_certificate_product_logs_in_with_its_own_certificate_only(
    registry: Registry, ca: CertificateAuthority
) -> None:
    own = _der(ca.issue("certP", "c1", key_type="EC").certificate)
    other = _der(ca.issue("certP", "c2", key_type="EC").certificate)
    creds = _creds(registry, "certP", "c1")

    decision = authenticate(registry, *creds, tls=True, certificate=own, certificates=ca)
    assert decision.accepted
    assert decision.certificate is not None
    assert decision.certificate.serial_number == (
        f"{x509.load_der_x509_certificate(own).serial_number:x}"
    )

    refused = {
        "no certificate": authenticate(registry, *creds, tls=True, certificates=ca),
        "another device's": authenticate(
            registry, *creds, tls=True, certificate=other, certificates=ca
        ),
        "no checker": authenticate(registry, *creds, tls=True, certificate=own),
        "plain TCP": authenticate(registry, *creds, certificate=own, certificates=ca),
    }
    reasons = {name: d.reason for name, d in refused.items() if not d.accepted}
    assert set(reasons) == set(refused)
    assert "requires a device certificate" in reasons["no certificate"]
    assert "belongs to device certP/c2, not to device certP/c1" in reasons["another device's"]
    assert "no CA" in reasons["no checker"]
    assert "746" in reasons["plain TCP"]


def test_revoked_expired_and_foreign_certificates_refuse_the_login_before_the_signature(
    tmp_path: Path, registry: Registry, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    revoked = ca.issue("certP", "c1", key_type="EC")
    ca.revoke(revoked.serial_number, "key_compromise")
    short = ca.issue("certP", "c1", key_type="EC", valid_days=1)
    foreign = CertificateAuthority(tmp_path / "other", clock=clock).issue("certP", "c1")
    creds = _creds(registry, "certP", "c1")
    wrong_password = (creds[0], creds[1], "0" * 64)

    def reason(pem: str, login: tuple[str, str, str] = creds) -> str:
        decision = authenticate(registry, *login, tls=True, certificate=_der(pem), certificates=ca)
        assert not decision.accepted
        return decision.reason

    assert "was revoked" in reason(revoked.certificate)
    assert "not signed by the lab's CA" in reason(foreign.certificate)
    # the certificate is decided first: a stolen secret is no use without it
    assert "was revoked" in reason(revoked.certificate, wrong_password)
    assert authenticate(
        registry, *creds, tls=True, certificate=_der(short.certificate), certificates=ca
    ).accepted
    clock.advance(timedelta(days=2).total_seconds())
    assert "is valid from" in reason(short.certificate)  # expired on the lab's clock


def test_a_certificate_presented_for_a_product_that_does_not_require_one_must_still_match(
    registry: Registry, ca: CertificateAuthority
) -> None:
    p2 = _der(ca.issue("plainP", "p2", key_type="EC").certificate)
    creds = _creds(registry, "plainP", "p1")
    assert authenticate(registry, *creds, tls=True, certificates=ca).accepted
    decision = authenticate(registry, *creds, tls=True, certificate=p2, certificates=ca)
    assert not decision.accepted and "belongs to device plainP/p2" in decision.reason
    # dynamic activation (secure mode 3) with the device's own certificate
    product_secret = registry.get_product("plainP").product_secret
    activation = login_credentials(
        "plainP",
        "p2",
        product_secret,
        secure_mode=SecureMode.DYNAMIC_ACTIVATION,
        timestamp="1700000000000",
    )
    decision = authenticate(registry, *activation, tls=True, certificate=p2, certificates=ca)
    assert decision.accepted and decision.activation
