"""EnOS CONNECT fields: the client id extension block, the username, and building credentials.

Layout (protocol reference 2.1)::

    ClientId : <signClientId>|securemode=<N>,signmethod=<name>,timestamp=<ts>[,k=v...]|
    Username : <deviceKey>&<productKey>
    Password : sign({clientId: signClientId, deviceKey, productKey, timestamp}, secret)

``signClientId`` is everything before the first ``|`` (the Java SDK appends
``{ip=..,version=..,compress=..}`` to the device key, the C SDK uses ``pk.dk``). Spaces after
commas are tolerated. Secure mode 2 signs with the device secret, 3 (dynamic activation) and 4
(message integration, username ``%channel%&pk``) with the product secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import BadLogin
from ._signing import SignMethod, sign, sign_params

__all__ = [
    "INTEGRATION_DEVICE_KEY",
    "BadLogin",
    "LoginRequest",
    "SecureMode",
    "login_credentials",
    "parse_login",
    "sub_device_proof",
]

INTEGRATION_DEVICE_KEY = "%channel%"
"""The device key a message-integration channel (secure mode 4) logs in with."""


class SecureMode(IntEnum):
    """EnOS secure modes (protocol reference 2.3)."""

    SECRET_PER_DEVICE = 2
    """Static authentication with the device secret."""
    DYNAMIC_ACTIVATION = 3
    """Secret-per-product: the hub issues a device secret on first login."""
    INTEGRATION = 4
    """Message integration channel of a product (username ``%channel%&pk``)."""


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """The EnOS meaning of one CONNECT's client id and username."""

    sign_client_id: str
    secure_mode: SecureMode
    sign_method: SignMethod
    timestamp: str
    device_key: str
    product_key: str
    extras: Mapping[str, str] = field(default_factory=dict)
    """Other ``k=v`` pairs of the extension block (e.g. Java's ``compress``)."""

    @property
    def sign_params(self) -> dict[str, str]:
        """The four values a password signature covers, exactly as sent
        (:func:`~enos_lab.enos.sign_params`)."""
        return sign_params(
            client_id=self.sign_client_id,
            product_key=self.product_key,
            device_key=self.device_key,
            timestamp=self.timestamp,
        )


_MODES = {str(int(mode)): mode for mode in SecureMode}  # the usual spelling, without int()
_slot = vars(LoginRequest)  # the slot descriptors set fields without the frozen __setattr__
_set_sign_client_id = _slot["sign_client_id"].__set__
_set_secure_mode = _slot["secure_mode"].__set__
_set_sign_method = _slot["sign_method"].__set__
_set_timestamp = _slot["timestamp"].__set__
_set_device_key = _slot["device_key"].__set__
_set_product_key = _slot["product_key"].__set__
_set_extras = _slot["extras"].__set__


def parse_login(client_id: str, username: str | None) -> LoginRequest:
    """Parse an EnOS CONNECT; raises :class:`BadLogin` naming the field that does not parse."""
    sign_client_id, bar, rest = client_id.partition("|")
    if not bar:
        raise BadLogin(
            f"client id {client_id!r} has no '|securemode=..,signmethod=..,timestamp=..|' block",
            "client_id",
        )
    block, _, _ = rest.partition("|")
    pairs: dict[str, str] = {}
    for item in block.split(","):
        key, eq, value = item.partition("=")
        if not item.strip():
            continue
        if not eq:
            raise BadLogin(f"client id block item {item.strip()!r} is not key=value", "client_id")
        pairs[key.strip().lower()] = value.strip()
    mode_text = pairs.pop("securemode", None)
    if mode_text is None:
        raise BadLogin(f"client id {client_id!r} has no securemode", "client_id")
    try:
        mode = _MODES.get(mode_text) or SecureMode(int(mode_text))
    except ValueError:
        raise BadLogin(
            f"securemode {mode_text!r} is not 2, 3 or 4 in client id {client_id!r}", "client_id"
        ) from None
    try:
        method = SignMethod.parse(pairs.pop("signmethod", None))
    except ValueError as exc:
        raise BadLogin(str(exc), "client_id") from exc
    timestamp = pairs.pop("timestamp", "")
    if username is None or "&" not in username:
        raise BadLogin(f"username {username!r} is not '<deviceKey>&<productKey>'", "username")
    device_key, _, product_key = username.partition("&")
    if not device_key or not product_key:
        raise BadLogin(f"username {username!r} is not '<deviceKey>&<productKey>'", "username")
    # LoginRequest(...) without the frozen __init__ (one per CONNECT)
    login: LoginRequest = object.__new__(LoginRequest)
    _set_sign_client_id(login, sign_client_id)
    _set_secure_mode(login, mode)
    _set_sign_method(login, method)
    _set_timestamp(login, timestamp)
    _set_device_key(login, device_key)
    _set_product_key(login, product_key)
    _set_extras(login, pairs)
    return login


def login_credentials(
    product_key: str,
    device_key: str,
    secret: str,
    *,
    secure_mode: SecureMode = SecureMode.SECRET_PER_DEVICE,
    sign_method: SignMethod = SignMethod.SHA256,
    timestamp: str,
    sign_client_id: str | None = None,
) -> tuple[str, str, str]:
    """Build ``(client_id, username, password)`` for an EnOS CONNECT.

    ``sign_client_id`` defaults to the device key (the product key in secure mode 4, whose device
    key is :data:`INTEGRATION_DEVICE_KEY`).
    """
    if sign_client_id is None:
        integration = secure_mode is SecureMode.INTEGRATION
        sign_client_id = product_key if integration else device_key
    params = sign_params(
        client_id=sign_client_id,
        product_key=product_key,
        device_key=device_key,
        timestamp=timestamp,
    )
    client_id = (
        f"{sign_client_id}|securemode={int(secure_mode)},"
        f"signmethod=hmac{sign_method.value},timestamp={timestamp}|"
    )
    return client_id, f"{device_key}&{product_key}", sign(params, secret, sign_method)


def sub_device_proof(
    product_key: str,
    device_key: str,
    secret: str,
    *,
    timestamp: str,
    client_id: str | None = None,
    sign_method: SignMethod = SignMethod.SHA256,
) -> dict[str, str]:
    """The signed identity of a sub-device that a gateway sends: a ``thing.topo.add`` entry, or
    the ``params`` of ``combine.login`` (protocol reference 8.2, 8.3).

    ``{"productKey", "deviceKey", "clientId", "timestamp", "signMethod", "sign"}``; ``sign``
    covers :func:`~enos_lab.enos.sign_params` of the client id, the keys and the timestamp
    (never the secure mode or clean-session flag) with ``secret`` (the sub-device's secret, or
    its product's secret for dynamic activation). ``client_id`` defaults to
    ``"{product_key}.{device_key}.{timestamp}"``, as the Java SDK sends it.
    """
    if client_id is None:
        client_id = f"{product_key}.{device_key}.{timestamp}"
    params = sign_params(
        client_id=client_id, product_key=product_key, device_key=device_key, timestamp=timestamp
    )
    return {
        "productKey": product_key,
        "deviceKey": device_key,
        "clientId": client_id,
        "timestamp": timestamp,
        "signMethod": sign_method.value,
        "sign": sign(params, secret, sign_method),
    }
