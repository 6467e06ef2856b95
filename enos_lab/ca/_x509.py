"""X.509 building blocks of the CA: subjects, key usage, CSR checks, parsing, private files."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ..errors import InvalidArgument
from ._types import KeyType

__all__ = [
    "check_csr",
    "device_subject",
    "hex_serial",
    "key_type_of",
    "key_usage",
    "normal_host",
    "parse_certificate",
    "parse_csr",
]


def hex_serial(serial: int) -> str:
    """A serial number as EnOS's ``certSN`` text: hexadecimal, lower case, no prefix."""
    return format(serial, "x")


def normal_host(host: str) -> str:
    """A host name in lower case, or an IP address in its canonical text form."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def key_type_of(value: KeyType | str) -> KeyType:
    """:meth:`KeyType.parse`, raising :class:`~enos_lab.errors.InvalidArgument`."""
    try:
        return KeyType.parse(value)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc


def key_usage(*, cert_sign: bool = False, encipher: bool = False) -> x509.KeyUsage:
    """digitalSignature, plus keyCertSign and cRLSign for a CA, keyEncipherment for RSA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def device_subject(product_key: str, device_key: str, asset_id: str) -> x509.Name:
    """A device certificate's subject: CN = asset id (or device key), O = product key,
    OU = device key. Each is at most 64 characters (RFC 5280 upper bounds)."""
    try:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, asset_id or device_key),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, product_key),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, device_key),
            ]
        )
    except ValueError as exc:
        raise InvalidArgument(
            f"device {product_key}/{device_key} cannot be named in a certificate: {exc}"
        ) from exc


def parse_csr(
    csr: str | bytes | x509.CertificateSigningRequest, product_key: str, device_key: str
) -> x509.CertificateSigningRequest:
    """A CSR from PEM text or bytes, DER bytes or a parsed request (InvalidArgument if none)."""
    if isinstance(csr, x509.CertificateSigningRequest):
        return csr
    data = csr.encode("ascii", "replace") if isinstance(csr, str) else csr
    try:
        if data.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise InvalidArgument(
            f"the CSR for device {product_key}/{device_key} is not a certificate signing "
            f"request (PEM or DER): {exc}"
        ) from exc


def check_csr(
    request: x509.CertificateSigningRequest,
    subject: x509.Name,
    kind: KeyType,
    product_key: str,
    device_key: str,
) -> None:
    """Refuse (InvalidArgument) a CSR with a bad signature, a key that ``kind`` does not allow,
    or a CN, O or OU other than the one ``subject`` binds."""
    device = f"device {product_key}/{device_key}"
    if not request.is_signature_valid:
        raise InvalidArgument(f"the CSR for {device} has a bad signature")
    key = request.public_key()
    if kind is KeyType.RSA and not (isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048):
        raise InvalidArgument(
            f"the CSR for {device} must carry an RSA 2048 public key (issueAuthority RSA)"
        )
    if kind is KeyType.EC and not (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        raise InvalidArgument(
            f"the CSR for {device} must carry an ECC P-256 public key (issueAuthority ECC)"
        )
    for oid, short in (
        (NameOID.COMMON_NAME, "CN"),
        (NameOID.ORGANIZATION_NAME, "O"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
    ):
        wanted = subject.get_attributes_for_oid(oid)[0].value
        for attribute in request.subject.get_attributes_for_oid(oid):
            if attribute.value != wanted:
                raise InvalidArgument(
                    f"the CSR for {device} names {short}={attribute.value!r} in its "
                    f"subject; the certificate binds {short}={wanted!r}"
                )


def parse_certificate(certificate: bytes | str | x509.Certificate) -> x509.Certificate:
    """A certificate from PEM text or bytes, DER bytes or a parsed one (ValueError if none)."""
    if isinstance(certificate, x509.Certificate):
        return certificate
    data = certificate.encode("ascii", "replace") if isinstance(certificate, str) else certificate
    if data.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)
