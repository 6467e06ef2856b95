"""The CA's files work with Python's ``ssl``: the server certificate, device certificates
(generated and from a CSR, RSA and EC) in a mutual-TLS handshake in memory, and a foreign one
refused by the handshake itself."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from ca_helpers import handshake, make_csr

from enos_lab.ca import CertificateAuthority, CertificateStatus


def _server_context(ca: CertificateAuthority) -> ssl.SSLContext:
    creds = ca.server_credentials()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(creds.certificate_chain, creds.private_key, creds.password)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=creds.ca_certificate)
    return context


def _client_context(ca_pem: str, chain: str, key: str, tmp_path: Path) -> ssl.SSLContext:
    cert_file, key_file = tmp_path / "device.crt", tmp_path / "device.key"
    cert_file.write_text(chain)
    key_file.write_text(key)
    return _client_context_of(ca_pem, cert_file, key_file)


def _client_context_of(ca_pem: str, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked against the SANs
    context.load_verify_locations(cadata=ca_pem)
    context.load_cert_chain(cert_file, key_file)  # as the SDKs' set_ssl_context does
    return context


@pytest.mark.parametrize("key_type", ["RSA", "EC"])
@pytest.mark.parametrize("from_csr", [False, True], ids=["generated", "csr"])
def test_mutual_tls_with_a_device_certificate(
    tmp_path: Path, key_type: str, from_csr: bool
) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    if from_csr:
        csr, key = make_csr(key_type, CN="a1")
        issued = ca.issue("pk1", "dev1", asset_id="a1", csr=csr, key_type=key_type)
        client = _client_context(ca.certificate_pem(), issued.certificate_chain, key, tmp_path)
    else:
        issued = ca.issue("pk1", "dev1", asset_id="a1", key_type=key_type)
        cert_file, key_file = issued.save(tmp_path / "certs")
        assert key_file is not None and cert_file.name == "dev1.crt"
        for path in (tmp_path / "certs", cert_file, key_file):
            assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
        client = _client_context_of(ca.certificate_pem(), cert_file, key_file)
    for hostname in ("localhost", "127.0.0.1"):
        peer = handshake(_server_context(ca), client, hostname)
        decision = ca.check(peer, product_key="pk1", device_key="dev1")
        assert decision.ok, decision.reason


def test_a_foreign_device_certificate_fails_the_handshake(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    stranger = CertificateAuthority(tmp_path / "stranger")
    issued = stranger.issue("pk1", "dev1")
    assert issued.private_key is not None
    client = _client_context(
        ca.certificate_pem(), issued.certificate_chain, issued.private_key, tmp_path
    )
    with pytest.raises(ssl.SSLError):
        handshake(_server_context(ca), client)
    assert ca.check(issued.certificate).status is CertificateStatus.FOREIGN


def test_a_client_that_trusts_another_ca_refuses_the_server(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    stranger = CertificateAuthority(tmp_path / "stranger")
    issued = ca.issue("pk1", "dev1")
    assert issued.private_key is not None
    client = _client_context(
        stranger.certificate_pem(), issued.certificate_chain, issued.private_key, tmp_path
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_server_context(ca), client)
