"""Device certificates from the facade, in the shape of EnOS's certificate API.

EnOS's Connection Service applies a certificate to a device (``applyCertificate``: by
``productKey`` + ``deviceKey`` or ``assetId``, with a ``csr``, a ``validDay`` that defaults to
730 and an ``issueAuthority`` RSA or ECC), revokes one (``revokeCertificate``, by ``certSn``)
and lists a device's certificates (``listCertificate``). :class:`Certificates` gives the same
operations on the lab's own CA (:class:`~enos_lab.ca.CertificateAuthority`), created on first
use in the data directory's ``ca/`` and kept there across restarts, its keys encrypted with a
passphrase derived from the lab key (an older ``ca/ca.passphrase`` file is migrated and
removed): :meth:`apply_certificate`, :meth:`revoke_certificate`, :meth:`certificates`,
:meth:`ca_certificate` and :meth:`crl`.

The TLS listener that checks these certificates at every handshake comes in a later change;
until then they can be issued, listed, revoked and verified, but devices still log in over
plain TCP.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from ..ca import DEFAULT_VALID_DAYS, CertificateAuthority, IssuedCertificate, KeyType
from ..errors import NotFound
from ._core import LabCore, coroutine_form_of

__all__ = ["CA_DIR", "CA_PASSPHRASE_PURPOSE", "CERTIFICATE_COLUMNS", "Certificates"]

CA_DIR = Path("ca")
"""The CA directory, relative to the data directory (0700)."""
CA_PASSPHRASE_PURPOSE = "enos_lab ca passphrase"
"""The purpose label of the CA's key-encryption passphrase, derived from the lab key
(:meth:`enos_lab.vault.LabKey.passphrase`)."""
CERTIFICATE_COLUMNS = (
    "serial_number",
    "product_key",
    "device_key",
    "asset_id",
    "key_type",
    "status",
    "issued_at",
    "not_before",
    "not_after",
    "revoked_at",
    "revocation_reason",
    "certificate",
)
"""Columns of :meth:`Certificates.certificates`: EnOS's ``certSN`` as ``serial_number``
(hexadecimal), the device's keys, ``key_type`` (EnOS's ``issueAuthority``: RSA or ECC),
``status`` on the lab's clock (``valid``, ``expired``, ``revoked``), times tz-aware UTC
(``revoked_at`` NaT unless revoked), ``revocation_reason`` (RFC 5280 reason name or None) and
the ``certificate`` itself (PEM)."""

_CA_LOCK = threading.Lock()  # creating a lab's CA is rare: one lock for every lab


class Certificates(LabCore):
    """Device certificates and the lab's CA (mixed into :class:`~enos_lab.lab.Lab`)."""

    _ca_cache: tuple[Path, str, CertificateAuthority] | None = None

    @property
    def ca(self) -> CertificateAuthority:
        """The lab's certificate authority (:class:`~enos_lab.ca.CertificateAuthority`),
        created on first use in the data directory's ``ca/`` and loaded from there after a
        restart, its keys encrypted under the lab key. Thread-safe, synchronous."""
        directory = self.data_dir / CA_DIR
        key = self._running_key()
        with _CA_LOCK:
            cached = self._ca_cache
            if cached is None or cached[:2] != (directory, key.fingerprint):
                passphrase = key.passphrase(CA_PASSPHRASE_PURPOSE)
                ca = CertificateAuthority(directory, clock=self._clock, passphrase=passphrase)
                cached = (directory, key.fingerprint, ca)
                self._ca_cache = cached
        return cached[2]

    def apply_certificate(
        self,
        product_key: str,
        device_key: str,
        *,
        csr: str | bytes | None = None,
        key_type: KeyType | str = "RSA",
        valid_days: int = DEFAULT_VALID_DAYS,
    ) -> IssuedCertificate:
        """Issue a certificate to a registered device (EnOS ``applyCertificate``).

        ``csr`` is the device's certificate signing request (PEM): the lab signs its public key
        and the private key never leaves the device. Without one the lab generates the key pair
        and returns the private key too (PKCS#8 PEM, unencrypted: keep it safe). ``key_type``
        is EnOS's ``issueAuthority``: ``"RSA"`` (RSA 2048) or ``"EC"`` (``"ECC"``, P-256).
        ``valid_days`` is EnOS's ``validDay``. [d]

        The result carries ``certificate`` (PEM), ``certificate_chain`` (the certificate then
        the lab's CA, PEM), ``private_key`` (PEM or ``None``) and ``serial_number``. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device and
        :class:`~enos_lab.errors.InvalidArgument` for a bad CSR (bad signature, wrong key, a
        subject naming another device) or validity.
        """
        device = self.registry.get_device(product_key, device_key)
        return self.ca.issue(
            device.product_key,
            device.device_key,
            asset_id=device.asset_id,
            csr=csr,
            key_type=key_type,
            valid_days=valid_days,
        )

    aapply_certificate = coroutine_form_of(apply_certificate)

    def revoke_certificate(
        self,
        product_key: str,
        device_key: str,
        serial_number: str | None = None,
        *,
        reason: str | int = "unspecified",
    ) -> list[str]:
        """Revoke a device's certificate (EnOS ``revokeCertificate``, ``certSn``) or, without
        ``serial_number``, every unrevoked one of the device; the CRL is reissued. ``reason``
        is an RFC 5280 reason name (``unspecified``, ``key_compromise``, ``superseded``,
        ``cessation_of_operation``, ...). Returns the serial numbers revoked.

        Raises :class:`~enos_lab.errors.NotFound` for a serial number that is not one of the
        device's, or a device with no certificate to revoke.
        """
        ca = self.ca
        if serial_number is not None:
            record = ca.record(serial_number)
            if record is None or (record.product_key, record.device_key) != (
                product_key,
                device_key,
            ):
                raise NotFound(
                    f"device {product_key}/{device_key} has no certificate {serial_number}"
                )
            serials = [record.serial_number]
        else:
            serials = [
                record.serial_number
                for record in ca.records(product_key, device_key)
                if record.revoked_at is None
            ]
            if not serials:
                raise NotFound(
                    f"device {product_key}/{device_key} has no unrevoked certificate to revoke"
                )
        for serial in serials:
            ca.revoke(serial, reason)
        return serials

    arevoke_certificate = coroutine_form_of(revoke_certificate)

    def certificates(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> pd.DataFrame:
        """The device certificates the lab issued (EnOS ``listCertificate``), oldest first,
        narrowed to a product or a device; columns :data:`CERTIFICATE_COLUMNS`."""
        now = self._clock.now()
        rows = [
            {
                "serial_number": r.serial_number,
                "product_key": r.product_key,
                "device_key": r.device_key,
                "asset_id": r.asset_id,
                "key_type": r.key_type,
                "status": (
                    "revoked"
                    if r.revoked_at is not None
                    else "expired"
                    if not r.not_before <= now <= r.not_after
                    else "valid"
                ),
                "issued_at": r.issued_at,
                "not_before": r.not_before,
                "not_after": r.not_after,
                "revoked_at": r.revoked_at,
                "revocation_reason": r.revocation_reason,
                "certificate": r.certificate,
            }
            for r in self.ca.records(product_key, device_key)
        ]
        frame = pd.DataFrame(rows, columns=list(CERTIFICATE_COLUMNS))
        for column in ("issued_at", "not_before", "not_after", "revoked_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    acertificates = coroutine_form_of(certificates)

    def ca_certificate(self) -> str:
        """The lab's root CA certificate (PEM): the CA file a device verifies the hub with."""
        return self.ca.certificate_pem()

    aca_certificate = coroutine_form_of(ca_certificate)

    def crl(self) -> str:
        """The lab CA's certificate revocation list (PEM), current on the lab's clock."""
        return self.ca.crl()

    acrl = coroutine_form_of(crl)
