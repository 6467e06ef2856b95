"""Values the certificate authority hands out: issued certificates, index rows and decisions."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .._files import private_dir, write_private

__all__ = [
    "CertificateCheck",
    "CertificateRecord",
    "CertificateStatus",
    "IssuedCertificate",
    "KeyType",
    "ServerCredentials",
]


class KeyType(enum.Enum):
    """Key algorithm of a device certificate: EnOS's ``issueAuthority`` (RSA or ECC)."""

    RSA = "RSA"
    """RSA 2048 with SHA256withRSA (EnOS's default)."""
    EC = "ECC"
    """ECC P-256 (prime256v1) with SHA256withECDSA."""

    @classmethod
    def parse(cls, value: KeyType | str) -> KeyType:
        """``"RSA"``, ``"EC"`` or ``"ECC"`` (any case) or a :class:`KeyType` as a key type.

        Raises ValueError for anything else (the facade turns it into ``InvalidArgument``).
        """
        if isinstance(value, KeyType):
            return value
        text = str(value).strip().upper()
        if text == "RSA":
            return cls.RSA
        if text in ("EC", "ECC"):
            return cls.EC
        raise ValueError(f"key_type must be 'RSA' or 'EC' (EnOS: 'ECC'), got {value!r}")


class CertificateStatus(enum.Enum):
    """Outcome of :meth:`~enos_lab.ca.CertificateAuthority.check`: whether a peer certificate
    may identify a device."""

    VALID = "valid"
    """Issued by this CA for a device, unrevoked, within its validity period (and for the
    expected device, when one was named)."""
    OTHER_DEVICE = "other_device"
    """A good certificate of this CA, but for another device than the expected one."""
    EXPIRED = "expired"
    """Past its ``notAfter`` (or before its ``notBefore``) on the CA's clock."""
    REVOKED = "revoked"
    """Revoked (it is on the CRL)."""
    FOREIGN = "foreign"
    """Not signed by this CA, or signed by it but not in its index."""
    NOT_A_DEVICE = "not_a_device"
    """Issued by this CA, but not for a device (the server certificate)."""
    MALFORMED = "malformed"
    """Not an X.509 certificate at all."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A device certificate just issued (the answer to EnOS's ``applyCertificate``).

    ``certificate`` is the device's certificate (PEM), ``certificate_chain`` the same followed
    by the CA's (PEM: what ``ssl.SSLContext.load_cert_chain`` and the SDKs load as the client
    certificate file), ``private_key`` the device's private key (PEM, PKCS#8, unencrypted) when
    the CA generated it, ``None`` when it signed the device's CSR (the key never left the
    device). ``serial_number`` is EnOS's ``certSN`` (hexadecimal, lower case).
    """

    product_key: str
    device_key: str
    asset_id: str
    serial_number: str
    key_type: KeyType
    not_before: datetime
    not_after: datetime
    certificate: str
    certificate_chain: str
    private_key: str | None

    def save(self, directory: str | Path, name: str | None = None) -> tuple[Path, Path | None]:
        """Write ``<name>.crt`` (the certificate chain) and, when the CA generated the key,
        ``<name>.key`` into ``directory`` (created 0700; files 0600), named after the device
        key unless ``name`` is given: the files ``ssl.SSLContext.load_cert_chain`` and the
        SDKs' ``set_ssl_context`` take. Returns their paths (the key's ``None`` without one)."""
        folder = Path(directory)
        private_dir(folder)
        stem = name or self.device_key
        cert_path = folder / f"{stem}.crt"
        write_private(cert_path, self.certificate_chain.encode("ascii"))
        if self.private_key is None:
            return cert_path, None
        key_path = folder / f"{stem}.key"
        write_private(key_path, self.private_key.encode("ascii"))
        return cert_path, key_path


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """A row of the CA's index of the certificates it issued.

    ``kind`` is ``"device"`` or ``"server"``; a server certificate has empty keys. Times are
    tz-aware UTC; ``revoked_at`` and ``revocation_reason`` (an RFC 5280 reason name such as
    ``"key_compromise"``) are ``None`` unless revoked.
    """

    serial_number: str
    kind: str
    product_key: str
    device_key: str
    asset_id: str
    key_type: str
    issued_at: datetime
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    certificate: str


@dataclass(frozen=True, slots=True)
class CertificateCheck:
    """The decision on a peer certificate: ``status`` with a human ``reason``.

    ``ok`` is True for :attr:`CertificateStatus.VALID` only. The identity fields are filled
    whenever the certificate is one this CA issued (empty strings otherwise), so that a login
    log can say whose certificate was refused.
    """

    status: CertificateStatus
    reason: str
    serial_number: str = ""
    product_key: str = ""
    device_key: str = ""
    asset_id: str = ""
    not_after: datetime | None = None

    @property
    def ok(self) -> bool:
        """Whether the certificate identifies the device (status VALID)."""
        return self.status is CertificateStatus.VALID


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """The TLS listener's certificate files: ``certificate_chain`` (PEM: the server
    certificate, then the CA's), ``private_key`` (PEM, PKCS#8, encrypted with ``password``) and
    ``ca_certificate`` (the CA's PEM, for verifying device certificates). Pass them to
    ``ssl.SSLContext.load_cert_chain(certificate_chain, private_key, password)``."""

    certificate_chain: Path
    private_key: Path
    password: bytes
    ca_certificate: Path
    hosts: tuple[str, ...]
    not_after: datetime
