"""The lab's own certificate authority: device certificates, the TLS listener's certificate,
revocation and the CRL (EnOS's "CA certificate mechanism", protocol reference 2.6).

Theory of operation
-------------------
EnOS signs device certificates with its own CA; a device applies for one with a CSR (or lets
the platform generate the key pair), keeps its private key, and presents the certificate in a
mutual-TLS handshake on port 18883 while still sending its usual signed login (protocol
reference 2.6). The lab does the same with a root CA of its own, one per lab, kept in a
directory (the data directory's ``ca/``, created 0700, every file 0600, see
:mod:`enos_lab._files`):

- ``ca.crt``: the root CA certificate (PEM; RSA 2048, SHA-256, ten years, pathLen 0): the CA
  file devices verify the listener with and the listener verifies devices with;
- ``ca.key``: its private key, PKCS#8 PEM encrypted at rest (``BestAvailableEncryption``) with
  a key-encryption passphrase that the lab derives from its lab key (:mod:`enos_lab.vault`,
  ``LabKey.passphrase``), so that nothing in the directory opens it without the key file. A CA
  used on its own (no ``passphrase`` given) keeps a random passphrase in the 0600 file
  ``ca.passphrase`` instead; a CA directory with that file opened by a lab has its keys
  encrypted again under the lab key and the file removed;
- ``server.crt`` / ``server.key``: the TLS listener's certificate chain (server, then root)
  and its key (encrypted with the same passphrase: ``ServerCredentials.password``), issued on
  first use with the SANs
  localhost, 127.0.0.1 and ::1 plus the hosts the caller names, EKU serverAuth;
- ``crl.pem``: the certificate revocation list (PEM), rewritten on every revocation, with a
  ``nextUpdate`` :data:`CRL_VALID_DAYS` ahead (reissued when read after that);
- ``certificates.sqlite3``: the index of every certificate issued (serial, kind, keys, validity,
  revocation time and reason, PEM). It lives beside the CA rather than in the registry
  database: the CA is self-contained and the registry does not depend on it (see
  :mod:`enos_lab.ca._index`).

A device certificate (:meth:`CertificateAuthority.issue`) binds the device in its subject:
CN = the asset id (EnOS recommends it; the device key when there is none), O = the product
key, OU = the device key. It is issued from the device's CSR (its signature is verified, its
key must be RSA 2048 or ECC P-256 as EnOS's ``issueAuthority`` RSA/ECC rules say, and a CN, O
or OU it names must be the one the CA binds) or from a key pair the CA generates and returns
once, PKCS#8 PEM unencrypted, the format ``ssl.SSLContext.load_cert_chain`` and the official
SDKs (``set_ssl_context``) load. Serial numbers are 159 random bits; EKU clientAuth; the
validity (``valid_days``, EnOS's ``validDay``, default 730) never outlasts the root.

:meth:`CertificateAuthority.renew` issues a new certificate for the key of a valid one (EnOS's
``renewCertificate``); the old one stays valid until it expires or is revoked.

The TLS listener (:class:`ServerContexts`, see :mod:`enos_lab.ca._tls`) serves the server
certificate and checks client certificates against the root and the CRL in the handshake,
rebuilding its context whenever :attr:`CertificateAuthority.revision` moves (a revocation, a
reissued server certificate). The root and the server certificate are issued valid on both the
lab's clock and the machine's (devices check them against the machine's). :func:`client_context`
is the device side.

:meth:`CertificateAuthority.check` is the call the IoT hub services make with the peer
certificate of every login over TLS: it returns a :class:`CertificateCheck` (status and reason:
valid, another device's, expired, revoked, foreign, not a device's, malformed), never raising
for a bad certificate. Time comes from an injectable :class:`~enos_lab.clock.Clock`, so that
expiry can be tested on a simulated clock. Everything here is synchronous and holds no open file
between calls.
"""

from ._authority import (
    CA_VALID_DAYS,
    CRL_VALID_DAYS,
    DEFAULT_VALID_DAYS,
    SERVER_VALID_DAYS,
    CertificateAuthority,
)
from ._tls import TLS12_CIPHERS, ServerContexts, client_context
from ._types import (
    CertificateCheck,
    CertificateRecord,
    CertificateStatus,
    IssuedCertificate,
    KeyType,
    ServerCredentials,
)

__all__ = [
    "CA_VALID_DAYS",
    "CRL_VALID_DAYS",
    "DEFAULT_VALID_DAYS",
    "SERVER_VALID_DAYS",
    "TLS12_CIPHERS",
    "CertificateAuthority",
    "CertificateCheck",
    "CertificateRecord",
    "CertificateStatus",
    "IssuedCertificate",
    "KeyType",
    "ServerContexts",
    "ServerCredentials",
    "client_context",
]
