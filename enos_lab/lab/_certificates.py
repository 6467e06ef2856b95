"""Device certificates from the facade, in the shape of EnOS's certificate API.

EnOS's Connection Service applies a certificate to a device (``applyCertificate``: by
``productKey`` + ``deviceKey`` or ``assetId``, with a ``csr``, a ``validDay`` that defaults to
730 and an ``issueAuthority`` RSA or ECC), renews one before it expires (``renewCertificate``),
revokes one (``revokeCertificate``, by ``certSn``) and lists a device's certificates
(``listCertificate``). :class:`Certificates` gives the same operations on the lab's own CA
(:class:`~enos_lab.ca.CertificateAuthority`, :attr:`~enos_lab.lab.Lab.ca`), created on first use
in the data directory's ``ca/`` and kept there across restarts: :meth:`apply_certificate`,
:meth:`renew_certificate`, :meth:`revoke_certificate`, :meth:`certificates`,
:meth:`ca_certificate`, :meth:`crl` and :meth:`tls_context`.
The CA's keys are encrypted with a passphrase derived from the lab key (an older
``ca/ca.passphrase`` file is migrated and removed; see :attr:`~enos_lab.lab.Lab.ca`).

A lab started with ``tls_port=`` serves MQTT over TLS (EnOS's 18883) with a server certificate
from the same CA: devices verify it with :meth:`ca_certificate` (or
:meth:`tls_context`, which builds their client context), and present the certificate issued
here for mutual TLS. Products created with ``certificate_required=True`` log in only that way,
with their own certificate. Revoking a certificate reissues the CRL, which the next handshake
checks, and closes the connections that logged in with it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pandas as pd

from ..ca import DEFAULT_VALID_DAYS, IssuedCertificate, KeyType, client_context
from ..errors import NotFound
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["CERTIFICATE_COLUMNS", "Certificates"]

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


class Certificates(LabCore):
    """Device certificates and the lab's CA (mixed into :class:`~enos_lab.lab.Lab`)."""

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

    def renew_certificate(
        self,
        product_key: str,
        device_key: str,
        serial_number: str,
        *,
        csr: str | bytes | None = None,
        valid_days: int = DEFAULT_VALID_DAYS,
        revoke_old: bool = False,
    ) -> IssuedCertificate:
        """Renew a device's certificate before it expires (EnOS ``renewCertificate``,
        ``certSn``): a new certificate for the same public key (the device keeps its private
        key; the result's ``private_key`` is ``None``) or, with ``csr``, for the request's key.
        Valid ``valid_days`` [d] from now. The old certificate stays valid until it expires,
        so that the device can switch at its next connection; ``revoke_old=True`` revokes it
        at once (reason ``superseded``; its connections are closed).

        Raises :class:`~enos_lab.errors.NotFound` for a serial number that is not one of the
        device's and :class:`~enos_lab.errors.InvalidArgument` for a revoked or expired one
        (apply for a new certificate instead) or a bad CSR.
        """
        serial = self._own_certificate(product_key, device_key, serial_number)
        renewed = self.ca.renew(serial, csr=csr, valid_days=valid_days)
        if revoke_old:
            self.revoke_certificate(product_key, device_key, serial, reason="superseded")
        return renewed

    def _own_certificate(self, product_key: str, device_key: str, serial_number: str) -> str:
        """The serial number of the device's certificate ``serial_number`` (normalised), or
        :class:`~enos_lab.errors.NotFound`."""
        record = self.ca.record(serial_number)
        if record is None or (record.product_key, record.device_key) != (
            product_key,
            device_key,
        ):
            raise NotFound(f"device {product_key}/{device_key} has no certificate {serial_number}")
        return record.serial_number

    arenew_certificate = coroutine_form_of(renew_certificate)

    def revoke_certificate(
        self,
        product_key: str,
        device_key: str,
        serial_number: str | None = None,
        *,
        reason: str | int = "unspecified",
    ) -> list[str]:
        """Revoke a device's certificate (EnOS ``revokeCertificate``, ``certSn``) or, without
        ``serial_number``, every unrevoked one of the device; the CRL is reissued, the TLS
        listener refuses the certificate from the next handshake on and the connections that
        logged in with it are closed (presence reason ``certificate revoked``). ``reason``
        is an RFC 5280 reason name (``unspecified``, ``key_compromise``, ``superseded``,
        ``cessation_of_operation``, ...). Returns the serial numbers revoked.

        Raises :class:`~enos_lab.errors.NotFound` for a serial number that is not one of the
        device's, or a device with no certificate to revoke.
        """
        ca = self.ca
        if serial_number is not None:
            serials = [self._own_certificate(product_key, device_key, serial_number)]
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
        iothub = None if self._services is None else self._services.iothub
        if iothub is not None:
            for serial in serials:
                self.run(plain_call(iothub.certificate_revoked, serial))
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

    def tls_context(
        self,
        certificate: IssuedCertificate | tuple[str | Path, str | Path] | None = None,
    ) -> ssl.SSLContext:
        """A device's client ``SSLContext`` for the lab's TLS listener: it trusts the lab's CA,
        checks the host name (use ``lab.host``) and, for mutual TLS, presents ``certificate``
        (as :meth:`apply_certificate` returned it, with its private key, or as
        ``(certificate_chain_file, key_file)``). Give it to a device SDK
        (``DeviceClient(..., ssl=)``, gmqtt's ``connect(..., ssl=)``, paho's
        ``tls_set_context``); the official SDK takes the files instead (see
        :meth:`ca_certificate` and :meth:`IssuedCertificate.save
        <enos_lab.ca.IssuedCertificate.save>`)."""
        return client_context(self.ca.ca_certificate_path, certificate)

    atls_context = coroutine_form_of(tls_context)

    def crl(self) -> str:
        """The lab CA's certificate revocation list (PEM), current on the lab's clock."""
        return self.ca.crl()

    acrl = coroutine_form_of(crl)
