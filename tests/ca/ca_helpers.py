"""Helpers of the CA tests (imported by name: pytest puts this directory on ``sys.path``):
a TLS handshake between two ``ssl`` contexts in memory (no sockets), and CSRs made the way a
device makes them."""

from __future__ import annotations

import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "localhost") -> bytes:
    """Run a TLS handshake between ``client`` and ``server`` through memory buffers; return
    the client certificate the server received (DER). ``ssl.SSLError`` if either side refuses."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for _ in range(20):
        if not client_done:
            try:
                client_side.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            try:
                server_side.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if client_done and server_done:
            peer = server_side.getpeercert(binary_form=True)
            assert peer is not None
            return peer
    raise AssertionError("the handshake did not finish")


def make_csr(key_type: str = "RSA", **subject: str) -> tuple[str, str]:
    """A CSR (PEM) and its private key (PEM) with the subject attributes given (CN=, O=, OU=)."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if key_type == "RSA"
        else ec.generate_private_key(ec.SECP256R1())
    )
    oids = {
        "CN": NameOID.COMMON_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "C": NameOID.COUNTRY_NAME,
    }
    name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in subject.items()])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
