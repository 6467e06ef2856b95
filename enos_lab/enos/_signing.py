"""EnOS signatures: CONNECT passwords, sub-device login and topology proofs.

Theory of operation
-------------------
Every EnOS signature is a *plain digest* (not an HMAC, despite the ``hmac*`` method names) of the
sorted ``key + value`` concatenation of ``{clientId, deviceKey, productKey, timestamp}`` (built
by :func:`sign_params`, for every kind of signature) followed by the secret, hex encoded
(protocol reference 2.2). Values are hashed exactly as sent: the
timestamp is an opaque string (the Python SDK sends ``"1700000000000.123"``, the C SDK a constant
in 2050) and is never re-formatted or checked for freshness (2.4). Hex digests are compared
ignoring case (Python sends lower case, Node and C upper case). For ``hmacsha1`` a real
HMAC-SHA1 keyed with the secret is accepted too (the Node SDK's variant).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from enum import Enum

from ..errors import InvalidArgument

__all__ = ["SignMethod", "sign", "sign_content", "sign_params", "verify_sign"]


class SignMethod(Enum):
    """Digest named by ``signmethod`` (names are matched case-insensitively)."""

    SHA256 = "sha256"
    SHA1 = "sha1"
    MD5 = "md5"

    @classmethod
    def parse(cls, name: str | None) -> SignMethod:
        """Map a wire name (``sha256``, ``hmacsha256``, ``SHA1``, ...) to a method.

        A missing name means SHA-1 (the Java SDK's default). Unknown names raise
        :class:`~enos_lab.errors.InvalidArgument` naming the value.
        """
        if name is None or name.strip() == "":
            return cls.SHA1
        method = _BY_NAME.get(name.strip().lower().removeprefix("hmac"))
        if method is not None:
            return method
        raise InvalidArgument(
            f"unknown sign method {name!r}: expected sha256, sha1 or md5 (optionally hmac-prefixed)"
        )


_BY_NAME = {method.value: method for method in SignMethod}
_DIGESTS = {
    SignMethod.SHA256: hashlib.sha256,
    SignMethod.SHA1: hashlib.sha1,
    SignMethod.MD5: hashlib.md5,
}


def sign_params(
    *, client_id: str, product_key: str, device_key: str, timestamp: str
) -> dict[str, str]:
    """The four values an EnOS signature covers, each exactly as it travels on the wire
    (protocol reference 2.2): ``{"clientId", "deviceKey", "productKey", "timestamp"}``.

    The one builder of them, for CONNECT passwords (``client_id`` is the sign client id, before
    the ``|`` block), sub-device logins and topology proofs.
    """
    return {
        "clientId": client_id,
        "deviceKey": device_key,
        "productKey": product_key,
        "timestamp": timestamp,
    }


def sign_content(params: Mapping[str, str]) -> str:
    """The signed text without the secret: ``k1 v1 k2 v2 ...`` with keys sorted, no separators."""
    return "".join(f"{key}{params[key]}" for key in sorted(params))


def sign(params: Mapping[str, str], secret: str, method: SignMethod = SignMethod.SHA256) -> str:
    """Sign ``params`` with ``secret``; returns lower-case hex.

    ``params`` is normally :func:`sign_params`: ``{"clientId", "deviceKey", "productKey",
    "timestamp"}`` with every value a string exactly as it travels on the wire.
    """
    content = (sign_content(params) + secret).encode("utf-8")
    return _DIGESTS[method](content).hexdigest()


def verify_sign(
    params: Mapping[str, str], secret: str, method: SignMethod, signature: str | bytes
) -> bool:
    """Whether ``signature`` is the signature of ``params`` with ``secret`` (case-insensitive)."""
    given = signature.decode("ascii", "replace") if isinstance(signature, bytes) else signature
    given = given.strip().lower()
    expected = sign(params, secret, method)
    if hmac.compare_digest(given, expected):
        return True
    if method is SignMethod.SHA1:
        content = (sign_content(params) + secret).encode("utf-8")
        keyed = hmac.new(secret.encode("utf-8"), content, hashlib.sha1).hexdigest()
        return hmac.compare_digest(given, keyed)
    return False
