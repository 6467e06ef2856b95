"""The lab's own certificate authority (see the package docstring for the theory of operation)."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._files import private_dir, report_open_dir, tighten, write_private
from ..clock import Clock, SystemClock
from ..errors import InvalidArgument, NotFound, WrongLabKey
from ._index import CertificateIndex
from ._types import (
    CertificateCheck,
    CertificateRecord,
    CertificateStatus,
    IssuedCertificate,
    KeyType,
    ServerCredentials,
)
from ._x509 import (
    check_csr,
    device_subject,
    hex_serial,
    key_type_of,
    key_usage,
    normal_host,
    parse_certificate,
    parse_csr,
)

__all__ = [
    "CA_VALID_DAYS",
    "CRL_VALID_DAYS",
    "DEFAULT_VALID_DAYS",
    "SERVER_VALID_DAYS",
    "CertificateAuthority",
]

log = logging.getLogger(__name__)

DEFAULT_VALID_DAYS = 730
"""Validity of a device certificate when none is asked for: EnOS's ``validDay`` default. [d]"""
CA_VALID_DAYS = 3650
"""Validity of the lab's root CA certificate. [d]"""
SERVER_VALID_DAYS = 825
"""Validity of the TLS listener's certificate; reissued when less than a tenth is left. [d]"""
CRL_VALID_DAYS = 7
"""Interval between a CRL's ``thisUpdate`` and ``nextUpdate``; :meth:`CertificateAuthority.crl`
reissues a CRL past its ``nextUpdate``. [d]"""

_CA_CERT, _CA_KEY, _CA_PASS = "ca.crt", "ca.key", "ca.passphrase"
_SERVER_CERT, _SERVER_KEY = "server.crt", "server.key"
_CRL, _INDEX = "crl.pem", "certificates.sqlite3"
_SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
_REASONS = {flag.name: flag for flag in x509.ReasonFlags if flag.name != "remove_from_crl"}
_ENOS_REASONS = {
    0: "unspecified",
    1: "key_compromise",
    3: "affiliation_changed",
    4: "superseded",
    5: "cessation_of_operation",
    6: "certificate_hold",
    9: "privilege_withdrawn",
}  # EnOS revokeCertificate ``reason``: the RFC 5280 CRLReason codes it accepts
_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _check_days(valid_days: object) -> None:
    if not isinstance(valid_days, int) or isinstance(valid_days, bool) or valid_days < 1:
        raise InvalidArgument(f"valid_days must be a positive whole number, got {valid_days!r}")


class CertificateAuthority:
    """The lab's root CA, kept in ``directory`` (created 0700; every file 0600).

    Opening a directory that holds a CA loads it; an empty or missing one gets a new root CA.
    ``passphrase`` encrypts the CA's and the server's private keys at rest (the lab derives it
    from its lab key, :meth:`enos_lab.vault.LabKey.passphrase`); without one, a random
    passphrase is kept in the file ``ca.passphrase`` beside them (a CA used on its own). A CA
    whose keys were encrypted with a ``ca.passphrase`` file and that is opened with a
    ``passphrase`` has its keys encrypted again with it and the file removed. ``clock`` gives
    the time of every certificate, revocation and check (default: the system clock).

    Raises :class:`~enos_lab.errors.WrongLabKey` when the CA's key does not open with the
    passphrase (the lab key was replaced).
    """

    def __init__(
        self, directory: str | Path, *, clock: Clock | None = None, passphrase: bytes | None = None
    ) -> None:
        self._dir = Path(directory)
        self._clock: Clock = clock or SystemClock()
        self._passphrase = passphrase  # set from the file by _create / _load when None
        self._crl_lock = threading.Lock()  # a CRL is built from the index and written whole
        self._revision = 0
        if not private_dir(self._dir):
            report_open_dir(self._dir, "CA directory")
        self._index = CertificateIndex(self._dir / _INDEX)
        if (self._dir / _CA_CERT).exists():
            self._cert, self._key = self._load()
        else:
            self._cert, self._key = self._create()
            self._write_crl()

    # -- the root -------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The CA directory."""
        return self._dir

    @property
    def certificate(self) -> x509.Certificate:
        """The root CA certificate."""
        return self._cert

    def certificate_pem(self) -> str:
        """The root CA certificate (PEM): the CA file devices verify the server with."""
        return self._cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def ca_certificate_path(self) -> Path:
        """Path of the root CA certificate file (PEM)."""
        return self._dir / _CA_CERT

    @property
    def revision(self) -> int:
        """Counts the changes a TLS listener must reload for: CRLs and server certificates
        issued by this object. [-]"""
        return self._revision

    def _create(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = self._clock.now()
        machine = datetime.now(UTC)  # valid on the lab's clock and on the machine's
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enos_lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"enos_lab root CA {secrets.token_hex(4)}"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, machine) - timedelta(minutes=5))
            .not_valid_after(max(now, machine) + timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        passphrase = self._passphrase
        if passphrase is None:
            passphrase = self._passphrase = secrets.token_urlsafe(32).encode("ascii")
            write_private(self._dir / _CA_PASS, passphrase)
        write_private(self._dir / _CA_KEY, _encrypted(key, passphrase))
        write_private(self._dir / _CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        log.info("created the lab's root CA in %s", self._dir)
        return cert, key

    def _load(self) -> tuple[x509.Certificate, _PrivateKey]:
        for name in (_CA_CERT, _CA_KEY, _CA_PASS, _CRL):
            tighten(self._dir / name)
        cert = x509.load_pem_x509_certificate((self._dir / _CA_CERT).read_bytes())
        pass_file = self._dir / _CA_PASS
        old = pass_file.read_bytes().strip() if pass_file.exists() else None
        if self._passphrase is None:
            if old is None:
                raise WrongLabKey(
                    f"the CA key {self._dir / _CA_KEY} is encrypted under a lab key (there is "
                    f"no {_CA_PASS}): open the CA through its lab, or pass its passphrase"
                )
            self._passphrase = old
        key = _load_key(self._dir / _CA_KEY, self._passphrase, old)
        if old is not None and old != self._passphrase:
            self._migrate(key, old)
        return cert, key

    def _migrate(self, ca_key: _PrivateKey, old: bytes) -> None:
        """Encrypt the CA's and the server's keys with the passphrase given (once encrypted
        with the ``ca.passphrase`` file's), then remove the file. Safe to repeat: a key that
        already opens with the new passphrase is written again unchanged in substance."""
        assert self._passphrase is not None
        write_private(self._dir / _CA_KEY, _encrypted(ca_key, self._passphrase))
        server = self._dir / _SERVER_KEY
        if server.exists():
            write_private(
                server, _encrypted(_load_key(server, self._passphrase, old), self._passphrase)
            )
        (self._dir / _CA_PASS).unlink()
        log.info(
            "the CA keys in %s are now encrypted under the lab key; %s removed", self._dir, _CA_PASS
        )

    # -- device certificates ----------------------------------------------------------------

    def issue(
        self,
        product_key: str,
        device_key: str,
        *,
        asset_id: str = "",
        csr: str | bytes | x509.CertificateSigningRequest | None = None,
        key_type: KeyType | str = KeyType.RSA,
        valid_days: int = DEFAULT_VALID_DAYS,
    ) -> IssuedCertificate:
        """Issue a device certificate bound to ``product_key`` + ``device_key`` (and
        ``asset_id``), valid for ``valid_days`` [d] from now.

        With ``csr`` (PEM text or bytes, or a parsed request) the CA signs the device's own
        public key: the request's signature must verify, its key must be RSA 2048 (``key_type``
        RSA) or ECC P-256 (EC), as EnOS's ``issueAuthority`` rules ask, and every CN, O or OU it
        names must be the one the CA puts there (other attributes, such as C or ST, are
        dropped). Without one the CA generates the key pair and returns the private key too.

        The certificate's subject is CN = asset id (EnOS recommends the asset id; the device
        key when the asset id is empty), O = product key, OU = device key. Raises
        :class:`~enos_lab.errors.InvalidArgument` for a bad CSR or validity.
        """
        kind = key_type_of(key_type)
        _check_days(valid_days)
        if not product_key or not device_key:
            raise InvalidArgument("a device certificate needs a product key and a device key")
        subject = device_subject(product_key, device_key, asset_id)
        private_pem: str | None = None
        if csr is None:
            key: _PrivateKey = (
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
                if kind is KeyType.RSA
                else ec.generate_private_key(ec.SECP256R1())
            )
            public_key = key.public_key()
            private_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode("ascii")
        else:
            request = parse_csr(csr, product_key, device_key)
            check_csr(request, subject, kind, product_key, device_key)
            csr_key = request.public_key()
            assert isinstance(csr_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
            public_key = csr_key
        return self._issue_device(
            product_key, device_key, asset_id, kind, public_key, valid_days, private_pem
        )

    def renew(
        self,
        serial_number: str,
        *,
        csr: str | bytes | x509.CertificateSigningRequest | None = None,
        valid_days: int = DEFAULT_VALID_DAYS,
    ) -> IssuedCertificate:
        """Issue a new certificate to the device of the certificate ``serial_number`` (EnOS
        ``renewCertificate``, ``certSn``): for the public key of ``csr`` (checked as
        :meth:`issue` checks it), or without one for the same public key as the old certificate
        (EnOS reuses the old request), so that the device keeps its private key. Valid for
        ``valid_days`` [d] from now. The old certificate stays valid until it expires or is
        revoked (:meth:`revoke`, reason ``superseded``).

        Raises :class:`~enos_lab.errors.NotFound` for a serial number this CA never issued to a
        device, and :class:`~enos_lab.errors.InvalidArgument` when the old certificate is
        revoked or expired (EnOS renews valid certificates only) or for a bad CSR.
        """
        serial = serial_number.lower().removeprefix("0x")
        record = self._index.get(serial)
        if record is None or record.kind != "device":
            raise NotFound(f"device certificate {serial} was not issued by this CA")
        now = self._clock.now()
        if record.revoked_at is not None or not record.not_before <= now <= record.not_after:
            state = "revoked" if record.revoked_at is not None else "expired"
            raise InvalidArgument(
                f"certificate {serial} of device {record.product_key}/{record.device_key} is "
                f"{state}: only a valid certificate can be renewed; apply for a new one"
            )
        kind = key_type_of(record.key_type)
        if csr is None:
            old = x509.load_pem_x509_certificate(record.certificate.encode("ascii"))
            old_key = old.public_key()
            assert isinstance(old_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
            public_key = old_key
        else:
            subject = device_subject(record.product_key, record.device_key, record.asset_id)
            request = parse_csr(csr, record.product_key, record.device_key)
            request_key = request.public_key()
            kind = KeyType.RSA if isinstance(request_key, rsa.RSAPublicKey) else KeyType.EC
            check_csr(request, subject, kind, record.product_key, record.device_key)
            assert isinstance(request_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
            public_key = request_key
        renewed = self._issue_device(
            record.product_key,
            record.device_key,
            record.asset_id,
            kind,
            public_key,
            valid_days,
            None,
        )
        log.info("certificate %s renewed as %s", serial, renewed.serial_number)
        return renewed

    def _issue_device(  # noqa: PLR0917 - the parts of one certificate
        self,
        product_key: str,
        device_key: str,
        asset_id: str,
        kind: KeyType,
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        valid_days: int,
        private_pem: str | None,
    ) -> IssuedCertificate:
        _check_days(valid_days)
        subject = device_subject(product_key, device_key, asset_id)
        now = self._clock.now()
        cert = self._sign(
            subject,
            public_key,
            now,
            now + timedelta(days=valid_days),
            eku=ExtendedKeyUsageOID.CLIENT_AUTH,
            san=None,
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        serial = hex_serial(cert.serial_number)
        self._index.add(
            CertificateRecord(
                serial_number=serial,
                kind="device",
                product_key=product_key,
                device_key=device_key,
                asset_id=asset_id,
                key_type=kind.value,
                issued_at=now,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                revoked_at=None,
                revocation_reason=None,
                certificate=pem,
            )
        )
        log.info("issued certificate %s to device %s/%s", serial, product_key, device_key)
        return IssuedCertificate(
            product_key=product_key,
            device_key=device_key,
            asset_id=asset_id,
            serial_number=serial,
            key_type=kind,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            certificate=pem,
            certificate_chain=pem + self.certificate_pem(),
            private_key=private_pem,
        )

    def _sign(
        self,
        subject: x509.Name,
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        not_before: datetime,
        not_after: datetime,
        *,
        eku: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName | None,
    ) -> x509.Certificate:
        ca_key = self._key
        ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())  # 159 random bits (RFC 5280 4.1.2.2)
            .not_valid_before(not_before)
            .not_valid_after(min(not_after, self._cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                key_usage(encipher=isinstance(public_key, rsa.RSAPublicKey)), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    # -- the server certificate --------------------------------------------------------------

    def server_credentials(self, hosts: Iterable[str] = ()) -> ServerCredentials:
        """The TLS listener's certificate and key files, issued on first use and reissued
        when ``hosts`` names a host or address the current one lacks, or when less than a
        tenth of its validity is left. Its SANs are localhost, 127.0.0.1 and ::1 plus
        ``hosts`` (names or IP addresses); its EKU is serverAuth."""
        wanted = tuple(dict.fromkeys((*_SERVER_HOSTS, *(h for h in hosts if h))))
        current = self._current_server(wanted)
        if current is None:
            current = self._issue_server(wanted)
        return ServerCredentials(
            certificate_chain=self._dir / _SERVER_CERT,
            private_key=self._dir / _SERVER_KEY,
            password=self._server_passphrase(),
            ca_certificate=self._dir / _CA_CERT,
            hosts=current[0],
            not_after=current[1],
        )

    def _server_passphrase(self) -> bytes:
        """The passphrase of the server's key: the CA key's (set once the CA is open)."""
        assert self._passphrase is not None
        return self._passphrase

    def _current_server(self, wanted: tuple[str, ...]) -> tuple[tuple[str, ...], datetime] | None:
        path = self._dir / _SERVER_CERT
        if not path.exists() or not (self._dir / _SERVER_KEY).exists():
            return None
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        have += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        for now in (self._clock.now(), datetime.now(UTC)):  # the lab's and the machine's
            if now < start or end - now < (end - start) / 10:
                return None
        if not {normal_host(h) for h in wanted} <= {normal_host(h) for h in have}:
            return None
        return tuple(have), cert.not_valid_after_utc

    def _issue_server(self, hosts: tuple[str, ...]) -> tuple[tuple[str, ...], datetime]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = self._clock.now()
        # devices check it against the machine's clock, the lab against its own: valid on both
        machine = datetime.now(UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enos_lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
            ]
        )
        cert = self._sign(
            subject,
            key.public_key(),
            min(now, machine) - timedelta(minutes=5),
            max(now, machine) + timedelta(days=SERVER_VALID_DAYS),
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
            san=x509.SubjectAlternativeName(names),
        )
        write_private(self._dir / _SERVER_KEY, _encrypted(key, self._server_passphrase()))
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        write_private(self._dir / _SERVER_CERT, (pem + self.certificate_pem()).encode("ascii"))
        self._index.add(
            CertificateRecord(
                serial_number=hex_serial(cert.serial_number),
                kind="server",
                product_key="",
                device_key="",
                asset_id="",
                key_type=KeyType.RSA.value,
                issued_at=now,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                revoked_at=None,
                revocation_reason=None,
                certificate=pem,
            )
        )
        self._revision += 1
        log.info("issued the TLS listener's certificate for %s", ", ".join(hosts))
        return hosts, cert.not_valid_after_utc

    # -- revocation and the CRL -----------------------------------------------------------------

    def revoke(
        self, serial_number: str | int, reason: str | int = "unspecified"
    ) -> CertificateRecord:
        """Revoke a certificate this CA issued, now, for ``reason`` (an RFC 5280 reason name:
        ``unspecified``, ``key_compromise``, ``superseded``, ``cessation_of_operation``, ...,
        or EnOS's ``reason`` code: 0, 1, 3, 4, 5, 6 or 9), and reissue the CRL. Revoking a
        revoked certificate changes nothing. Returns its record.

        Raises :class:`~enos_lab.errors.NotFound` for a serial number this CA never issued and
        :class:`~enos_lab.errors.InvalidArgument` for an unknown reason.
        """
        serial = serial_number if isinstance(serial_number, str) else hex_serial(serial_number)
        serial = serial.lower().removeprefix("0x")
        name = _ENOS_REASONS.get(reason) if isinstance(reason, int) else reason
        if name not in _REASONS:
            raise InvalidArgument(
                f"revocation reason must be one of {sorted(_REASONS)} or an EnOS reason code "
                f"{sorted(_ENOS_REASONS)}, got {reason!r}"
            )
        if self._index.get(serial) is None:
            raise NotFound(f"certificate {serial} was not issued by this CA")
        with self._crl_lock:
            if self._index.revoke(serial, self._clock.now(), name):
                self._write_crl()
        record = self._index.get(serial)
        assert record is not None
        log.info(
            "revoked certificate %s of device %s/%s (%s)",
            serial,
            record.product_key,
            record.device_key,
            name,
        )
        return record

    def records(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> list[CertificateRecord]:
        """The device certificates issued, oldest first, narrowed to a product or a device."""
        return self._index.find(kind="device", product_key=product_key, device_key=device_key)

    def record(self, serial_number: str) -> CertificateRecord | None:
        """The index record of a serial number (hexadecimal), or ``None``."""
        return self._index.get(serial_number.lower().removeprefix("0x"))

    def crl(self) -> str:
        """The certificate revocation list (PEM), reissued first if its ``nextUpdate`` has
        passed on the CA's clock."""
        path = self._dir / _CRL
        with self._crl_lock:
            if not path.exists():
                self._write_crl()
            next_update = x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
            if next_update is None or next_update <= self._clock.now():
                self._write_crl()
            return path.read_text("ascii")

    def crl_path(self) -> Path:
        """Path of the current CRL file (PEM), reissued first as :meth:`crl` does."""
        self.crl()
        return self._dir / _CRL

    def _write_crl(self) -> None:
        now = self._clock.now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now)
            .next_update(now + timedelta(days=CRL_VALID_DAYS))
        )
        for record in self._index.find(revoked=True):
            assert record.revoked_at is not None
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(record.serial_number, 16))
                .revocation_date(record.revoked_at)
                .add_extension(
                    x509.CRLReason(_REASONS[record.revocation_reason or "unspecified"]),
                    critical=False,
                )
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._key, hashes.SHA256())
        write_private(self._dir / _CRL, crl.public_bytes(serialization.Encoding.PEM))
        self._revision += 1

    # -- checking a peer certificate -------------------------------------------------------------

    def check(
        self,
        certificate: bytes | str | x509.Certificate,
        *,
        product_key: str | None = None,
        device_key: str | None = None,
    ) -> CertificateCheck:
        """Decide whether a peer certificate (DER or PEM bytes, PEM text, or parsed) identifies
        a device: the call the IoT hub services make on every login over TLS that presents one.

        In order: not a certificate (MALFORMED); not signed by this CA or not in its index
        (FOREIGN); the server certificate (NOT_A_DEVICE); revoked (REVOKED); outside its
        validity period on the CA's clock (EXPIRED); for another device than ``product_key`` /
        ``device_key`` when given (OTHER_DEVICE); else VALID. Never raises for a bad
        certificate: the outcome is the returned value, with a reason naming the serial
        number and the device.
        """
        try:
            cert = parse_certificate(certificate)
        except ValueError as exc:
            return CertificateCheck(CertificateStatus.MALFORMED, f"not an X.509 certificate: {exc}")
        serial = hex_serial(cert.serial_number)
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature):
            return CertificateCheck(
                CertificateStatus.FOREIGN,
                f"certificate {serial} ({cert.subject.rfc4514_string()}) is not signed by the "
                "lab's CA",
                serial_number=serial,
            )
        record = self._index.get(serial)
        if record is None:
            return CertificateCheck(
                CertificateStatus.FOREIGN,
                f"certificate {serial} is signed by the lab's CA but not in its index",
                serial_number=serial,
            )

        def decide(status: CertificateStatus, reason: str) -> CertificateCheck:
            return CertificateCheck(
                status,
                reason,
                serial_number=serial,
                product_key=record.product_key,
                device_key=record.device_key,
                asset_id=record.asset_id,
                not_after=record.not_after,
            )

        device = f"device {record.product_key}/{record.device_key}"
        if record.kind != "device":
            return decide(
                CertificateStatus.NOT_A_DEVICE,
                f"certificate {serial} is the lab's {record.kind} certificate, not a device's",
            )
        if record.revoked_at is not None:
            return decide(
                CertificateStatus.REVOKED,
                f"certificate {serial} of {device} was revoked at "
                f"{record.revoked_at.isoformat()} ({record.revocation_reason})",
            )
        now = self._clock.now()
        if now > cert.not_valid_after_utc or now < cert.not_valid_before_utc:
            return decide(
                CertificateStatus.EXPIRED,
                f"certificate {serial} of {device} is valid from "
                f"{cert.not_valid_before_utc.isoformat()} to "
                f"{cert.not_valid_after_utc.isoformat()}, not at {now.isoformat()}",
            )
        expected = (product_key, device_key)
        if (product_key is not None and product_key != record.product_key) or (
            device_key is not None and device_key != record.device_key
        ):
            return decide(
                CertificateStatus.OTHER_DEVICE,
                f"certificate {serial} belongs to {device}, not to device "
                f"{expected[0] or '*'}/{expected[1] or '*'}",
            )
        return decide(
            CertificateStatus.VALID,
            f"certificate {serial} of {device} is valid",
        )


def _encrypted(key: _PrivateKey, passphrase: bytes) -> bytes:
    """``key`` as PKCS#8 PEM encrypted with ``passphrase``."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _load_key(path: Path, passphrase: bytes, old: bytes | None) -> _PrivateKey:
    """The private key in ``path``, encrypted with ``passphrase`` or (not yet migrated)
    ``old``; :class:`~enos_lab.errors.WrongLabKey` if neither opens it."""
    data = path.read_bytes()
    for candidate in dict.fromkeys(p for p in (passphrase, old) if p is not None):
        try:
            key = serialization.load_pem_private_key(data, password=candidate)
        except (ValueError, TypeError):
            continue  # a wrong password is a ValueError ("Bad decrypt")
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise InvalidArgument(f"the key {path} is neither RSA nor EC")
        return key
    raise WrongLabKey(
        f"the key {path} does not open with the passphrase derived from the lab key: the lab "
        "key file was replaced or belongs to another lab. Put the lab's own key file back"
    )
