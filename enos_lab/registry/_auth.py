"""Authentication decisions for EnOS logins, and connect-flood protection.

:func:`authenticate` turns one CONNECT (client id, username, password, transport) into an
:class:`AuthDecision` using the registry, following protocol reference sections 2 and 3: the
secret is picked by secure mode (2: device secret; 3 and 4: product secret), the signature is
checked ignoring case, and then the state checks apply (disabled, sub-device-only products,
certificate-only products, dynamic activation only for registered inactive devices). Every refusal
is CONNACK 5 except a username that cannot be parsed (CONNACK 4). The decision is a value; nothing
here raises for a refused login.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..clock import Clock, SystemClock
from ..enos import (
    INTEGRATION_DEVICE_KEY,
    BadLogin,
    LoginRequest,
    SecureMode,
    parse_login,
    verify_sign,
)
from ..errors import InvalidArgument
from ._records import Device, NodeType, Product
from ._registry import Registry

__all__ = ["AuthDecision", "LoginThrottle", "authenticate"]

ACCEPTED = 0
BAD_USERNAME_OR_PASSWORD = 4  # MQTT 3.1.1 CONNACK return code
NOT_AUTHORIZED = 5


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """The outcome of one EnOS login.

    ``return_code`` is the MQTT 3.1.1 CONNACK return code (0 accepted, 4 unparseable username,
    5 everything else); ``reason`` says why in words for logs. ``activation`` is set for an
    accepted secure-mode-3 login (the hub must push ``activate/info``); ``integration`` for a
    message-integration channel (secure mode 4, no device).
    """

    return_code: int
    reason: str
    login: LoginRequest | None = None
    product: Product | None = None
    activation: bool = False
    integration: bool = False
    registry: Registry | None = field(default=None, repr=False, compare=False)
    """The registry the decision was made against."""

    @property
    def accepted(self) -> bool:
        """Whether the login is accepted."""
        return self.return_code == ACCEPTED

    @property
    def device(self) -> Device | None:
        """The record of the device that logged in, read from the registry when asked (a login
        itself reads only what it checks); ``None`` for refused logins and integration
        channels."""
        login = self.login
        if not self.accepted or self.integration or self.registry is None or login is None:
            return None
        return self.registry.find_device(login.product_key, login.device_key)


def _refuse(
    reason: str, login: LoginRequest | None = None, code: int = NOT_AUTHORIZED
) -> AuthDecision:
    return AuthDecision(code, reason, login)


def authenticate(
    registry: Registry,
    client_id: str,
    username: str | None,
    password: bytes | str | None,
    *,
    tls: bool = False,
) -> AuthDecision:
    """Decide one EnOS login against ``registry`` (see the module docstring)."""
    try:
        login = parse_login(client_id, username)
    except BadLogin as exc:
        code = BAD_USERNAME_OR_PASSWORD if exc.field == "username" else NOT_AUTHORIZED
        return _refuse(str(exc), None, code)
    if password is None:
        return _refuse("no password", login)
    # one locked lookup for both records (integration logins need no device); dynamic
    # activation decides on the presence columns, so it reads them after the queued changes
    product, device = registry._login_records(
        login.product_key,
        login.device_key,
        current=login.secure_mode is SecureMode.DYNAMIC_ACTIVATION,
    )
    if product is None:
        return _refuse(f"product {login.product_key!r} does not exist", login)
    if product.certificate_required and not tls:
        return _refuse(f"product {product.product_key!r} requires TLS (EnOS 746)", login)

    if login.secure_mode is SecureMode.INTEGRATION:
        if login.device_key != INTEGRATION_DEVICE_KEY:
            return _refuse("secure mode 4 needs the username '%channel%&<productKey>'", login)
        if not verify_sign(login.sign_params, product.product_secret, login.sign_method, password):
            return _refuse("signature does not match the product secret", login)
        return AuthDecision(
            ACCEPTED, "integration channel", login, product, integration=True, registry=registry
        )

    if device is None:
        return _refuse(f"device {login.product_key}/{login.device_key} does not exist", login)
    if product.node_type is NodeType.SUB_DEVICE:
        return _refuse("sub device cannot connect to mqtt broker directly (EnOS 771)", login)
    if not device.enabled:
        return _refuse(f"device {login.product_key}/{login.device_key} is disabled", login)

    if login.secure_mode is SecureMode.DYNAMIC_ACTIVATION:
        if not product.dynamic_activation:
            return _refuse(
                f"product {product.product_key!r} does not allow dynamic activation", login
            )
        if device.online or device.activated:
            return _refuse(
                f"device {login.product_key}/{login.device_key} is already activated; "
                "dynamic activation works only for inactive devices",
                login,
            )
        if not verify_sign(login.sign_params, product.product_secret, login.sign_method, password):
            return _refuse("signature does not match the product secret", login)
        return AuthDecision(
            ACCEPTED, "dynamic activation", login, product, activation=True, registry=registry
        )

    if not verify_sign(login.sign_params, device.device_secret, login.sign_method, password):
        return _refuse("signature does not match the device secret", login)
    return AuthDecision(ACCEPTED, "device secret", login, product, registry=registry)


class LoginThrottle:
    """Connect-flood protection: too many failed logins block a key for a while.

    EnOS documents 4 failed attempts within 2 minutes -> blocked for 5 minutes; all three are
    configurable. Keys are whatever identifies the client (normally ``(productKey, deviceKey)``).
    """

    def __init__(
        self,
        *,
        max_failures: int = 4,
        window: float = 120.0,
        block: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        if max_failures < 1 or window <= 0 or block < 0:
            raise InvalidArgument(
                f"throttle needs max_failures >= 1, window > 0, block >= 0; got "
                f"{max_failures!r}, {window!r}, {block!r}"
            )
        self._max, self._window, self._block = max_failures, window, block
        self._clock = clock or SystemClock()
        self._failures: dict[object, deque[float]] = {}
        self._blocked_until: dict[object, float] = {}

    def blocked(self, key: object) -> bool:
        """Whether logins for ``key`` are refused right now."""
        until = self._blocked_until.get(key)
        if until is None:
            return False
        if self._clock.monotonic() >= until:
            del self._blocked_until[key]
            return False
        return True

    def failed(self, key: object) -> None:
        """Record a failed login for ``key`` (blocks it when the limit is reached)."""
        now = self._clock.monotonic()
        times = self._failures.setdefault(key, deque())
        times.append(now)
        while times and now - times[0] > self._window:
            times.popleft()
        if len(times) >= self._max:
            self._blocked_until[key] = now + self._block
            del self._failures[key]

    def succeeded(self, key: object) -> None:
        """Forget earlier failures of ``key``."""
        self._failures.pop(key, None)
