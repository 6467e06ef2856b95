"""SSL contexts from the lab's CA: the TLS listener's, and a device's.

Theory of operation
-------------------
:class:`ServerContexts` is what the hub's TLS listener asks for a context at every handshake
(``Hub.listen_tcp(ssl=contexts.current)``). A context holds the server certificate chain and
key (:meth:`CertificateAuthority.server_credentials`), trusts only the lab's root for client
certificates, asks every client for one (``CERT_OPTIONAL``: devices of products that do not
require certificates may log in without; one that presents a certificate must present a good
one) and checks the leaf against the CRL. It is built once and rebuilt only when the CA's
:attr:`~CertificateAuthority.revision` moved (a revocation reissued the CRL, or the server
certificate was reissued), so a revocation applies from the next handshake on and a handshake
costs one integer comparison here.

Times: OpenSSL checks validity periods against the machine's clock, the lab keeps time on its
own (a :class:`~enos_lab.clock.SimulatedClock` may stand years away). The handshake therefore
checks the chain, the signatures, the key usages and the CRL, but not the times
(``X509_V_FLAG_NO_CHECK_TIME``); whether a device certificate is within its validity is decided
at CONNECT by :meth:`CertificateAuthority.check` on the lab's clock, where the refusal reaches
the login log with the device's keys. (A device's own client verifies the server certificate
against the machine's clock; the CA issues it valid on both.)

Protocol: TLS 1.2 and 1.3 only. TLS 1.2 is limited to ECDHE key exchange with AES-GCM or
ChaCha20-Poly1305 (forward secrecy, AEAD), which includes the suites EnOS's Java SDK pins
(ECDHE-RSA / ECDHE-ECDSA with AES-GCM); TLS 1.3 uses OpenSSL's defaults.

:func:`client_context` is the device side: trust the lab's root, check the host name (the
server certificate names localhost, 127.0.0.1 and ::1, plus the hosts the lab was given), and
present a device certificate for mutual TLS when one is given.
"""

from __future__ import annotations

import ssl
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidArgument
from ._authority import CertificateAuthority
from ._types import IssuedCertificate

__all__ = ["TLS12_CIPHERS", "ServerContexts", "client_context"]

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""OpenSSL cipher string of the TLS 1.2 suites the listener offers (TLS 1.3 suites are
OpenSSL's)."""
_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME (OpenSSL >= 1.1.0): see the docstring


class ServerContexts:
    """The TLS listener's server contexts from ``ca``, with the SANs of ``hosts`` beside
    localhost, 127.0.0.1 and ::1 (see the module docstring). Thread-safe."""

    def __init__(self, ca: CertificateAuthority, hosts: Iterable[str] = ()) -> None:
        self._ca = ca
        self._hosts = tuple(hosts)
        self._lock = threading.Lock()
        self._revision = -1
        self._context = self._build()

    @property
    def ca(self) -> CertificateAuthority:
        """The certificate authority the contexts come from."""
        return self._ca

    def current(self) -> ssl.SSLContext:
        """The context for a handshake starting now: rebuilt first if the CA's CRL or server
        certificate changed since the last one."""
        if self._ca.revision != self._revision:
            with self._lock:
                if self._ca.revision != self._revision:
                    self._context = self._build()
        return self._context

    def _build(self) -> ssl.SSLContext:
        credentials = self._ca.server_credentials(self._hosts)
        revision = self._ca.revision  # after the credentials: issuing them may move it
        crl = self._ca.crl_path()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
        context.load_cert_chain(
            credentials.certificate_chain, credentials.private_key, credentials.password
        )
        context.load_verify_locations(cafile=credentials.ca_certificate)
        context.load_verify_locations(cafile=crl)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | _NO_CHECK_TIME
        self._revision = revision
        return context


def client_context(
    ca_certificate: str | Path,
    certificate: IssuedCertificate | tuple[str | Path, str | Path] | None = None,
) -> ssl.SSLContext:
    """A device's client context for the lab's TLS listener: ``ca_certificate`` is the lab's
    root CA file (PEM); ``certificate`` the device's certificate for mutual TLS, as issued (it
    must carry its private key) or as ``(certificate_chain_file, key_file)``.

    TLS 1.2 or later, the server's certificate and host name verified.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_certificate))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate is None:
        return context
    if isinstance(certificate, IssuedCertificate):
        if certificate.private_key is None:
            raise InvalidArgument(
                f"certificate {certificate.serial_number} was issued from a CSR: its private "
                "key is the device's; pass (certificate_chain_file, key_file) instead"
            )
        # load_cert_chain reads files only: a private temporary directory, removed at once
        with tempfile.TemporaryDirectory(prefix="enos-lab-cert-") as folder:
            chain, key = certificate.save(folder)
            assert key is not None
            context.load_cert_chain(chain, key)
        return context
    chain_file, key_file = certificate
    context.load_cert_chain(chain_file, key_file)
    return context
