"""Authentication decisions for EnOS logins and sub-device proofs, and connect-flood protection.

:func:`authenticate` turns one CONNECT (client id, username, password, transport) into an
:class:`AuthDecision` using the registry, following protocol reference sections 2 and 3: the
secret is picked by secure mode (2: device secret; 3 and 4: product secret), the signature is
checked ignoring case, and then the state checks apply (disabled, sub-device-only products,
certificate-only products, dynamic activation only for registered inactive devices). Every refusal
is CONNACK 5 except a username that cannot be parsed (CONNACK 4). The decision is a value; nothing
here raises for a refused login.

Certificates (protocol reference 2.6): a product flagged ``certificate_required`` is refused on a
plain listener (EnOS 746) and, on a TLS listener, without a client certificate. A client that
presents one (required or not) must present its own: the checker (the lab's
:class:`~enos_lab.ca.CertificateAuthority`) decides whether it is this CA's, unrevoked, within
its validity on the lab's clock and bound to the product key and device key of the login; any
other answer refuses the login with the checker's reason. These checks come before the
signature: a stolen secret without the device's certificate and key gets nowhere.

:func:`authenticate_sub_device` decides the signature a gateway sends for a sub-device
(``combine.login``, ``combine.login.batch`` and ``topo.add``, sections 8.2 and 8.3): the secure
mode and sign method named in the request, the secret they pick and the signature, as an
:class:`SubDeviceDecision` carrying the EnOS reply code (742, 770). The state checks of a
sub-device login (exists, enabled, TLS, attached to this gateway) stay with the gateway's
request handler, which answers each with its own code before the signature is looked at.

:class:`LoginThrottle` is the connect-flood protection the hub puts in front of it: failed logins
counted per source address and identity, blocks that end, and a bounded number of keys.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ..ca import CertificateCheck, CertificateStatus
from ..clock import Clock, SystemClock
from ..enos import (
    INTEGRATION_DEVICE_KEY,
    BadLogin,
    LoginRequest,
    ReplyCode,
    SecureMode,
    SignMethod,
    parse_login,
    sign_params,
    verify_sign,
)
from ..errors import InvalidArgument, SealBroken
from ._records import Device, NodeType, Product
from ._registry import Registry

__all__ = [
    "AuthDecision",
    "CertificateChecker",
    "LoginBlock",
    "LoginThrottle",
    "SubDeviceDecision",
    "authenticate",
    "authenticate_sub_device",
]

ACCEPTED = 0
BAD_USERNAME_OR_PASSWORD = 4  # MQTT 3.1.1 CONNACK return code
NOT_AUTHORIZED = 5


class CertificateChecker(Protocol):
    """Decides whether a client certificate identifies a device (the lab's
    :class:`~enos_lab.ca.CertificateAuthority` is one)."""

    def check(
        self,
        certificate: bytes,
        *,
        product_key: str | None = None,
        device_key: str | None = None,
    ) -> CertificateCheck:
        """The certificate's status for the device named (see
        :meth:`enos_lab.ca.CertificateAuthority.check`)."""
        ...


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """The outcome of one EnOS login.

    ``return_code`` is the MQTT 3.1.1 CONNACK return code (0 accepted, 4 unparseable username,
    5 everything else); ``reason`` says why in words for logs. ``activation`` is set for an
    accepted secure-mode-3 login (the hub must push ``activate/info``); ``integration`` for a
    message-integration channel (secure mode 4, no device). ``certificate`` is the check of
    the client certificate an accepted login presented (its serial number, device and
    ``not_after``), ``None`` without one.
    """

    return_code: int
    reason: str
    login: LoginRequest | None = None
    product: Product | None = None
    activation: bool = False
    integration: bool = False
    registry: Registry | None = field(default=None, repr=False, compare=False)
    """The registry the decision was made against."""
    certificate: CertificateCheck | None = None

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
    certificate: bytes | None = None,
    certificates: CertificateChecker | None = None,
) -> AuthDecision:
    """Decide one EnOS login against ``registry`` (see the module docstring).

    ``tls``: the login came over TLS; ``certificate``: the client certificate it presented
    (DER), checked by ``certificates`` (without a checker a certificate cannot be checked and
    the login is refused).
    """
    try:
        login = parse_login(client_id, username)
    except BadLogin as exc:
        code = BAD_USERNAME_OR_PASSWORD if exc.field == "username" else NOT_AUTHORIZED
        return _refuse(str(exc), None, code)
    if password is None:
        return _refuse("no password", login)
    # one locked lookup for both records (integration logins need no device); dynamic
    # activation decides on the presence columns, so it reads them after the queued changes
    try:
        product, device = registry._login_records(
            login.product_key,
            login.device_key,
            current=login.secure_mode is SecureMode.DYNAMIC_ACTIVATION,
        )
    except SealBroken as exc:  # a secret altered or copied in the file: this login only fails
        return _refuse(str(exc), login)
    if product is None:
        return _refuse(f"product {login.product_key!r} does not exist", login)
    if product.certificate_required and not tls:
        return _refuse(f"product {product.product_key!r} requires TLS (EnOS 746)", login)
    checked: CertificateCheck | None = None
    if certificate is not None or product.certificate_required:
        outcome = _check_certificate(login, product, certificate, certificates)
        if isinstance(outcome, AuthDecision):
            return outcome
        checked = outcome

    if login.secure_mode is SecureMode.INTEGRATION:
        if login.device_key != INTEGRATION_DEVICE_KEY:
            return _refuse("secure mode 4 needs the username '%channel%&<productKey>'", login)
        if not verify_sign(login.sign_params, product.product_secret, login.sign_method, password):
            return _refuse("signature does not match the product secret", login)
        return AuthDecision(
            ACCEPTED,
            "integration channel",
            login,
            product,
            integration=True,
            registry=registry,
            certificate=checked,
        )

    if device is None:
        return _refuse(f"device {login.product_key}/{login.device_key} does not exist", login)
    if product.node_type is NodeType.SUB_DEVICE:
        return _refuse("sub device cannot connect to mqtt broker directly (EnOS 771)", login)
    if not device.enabled:
        return _refuse(_disabled(registry, login.product_key, login.device_key), login)

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
            ACCEPTED,
            "dynamic activation",
            login,
            product,
            activation=True,
            registry=registry,
            certificate=checked,
        )

    if not verify_sign(login.sign_params, device.device_secret, login.sign_method, password):
        return _refuse("signature does not match the device secret", login)
    return AuthDecision(
        ACCEPTED, "device secret", login, product, registry=registry, certificate=checked
    )


def _check_certificate(
    login: LoginRequest,
    product: Product,
    certificate: bytes | None,
    certificates: CertificateChecker | None,
) -> CertificateCheck | AuthDecision:
    """The check of the login's (valid) certificate, or the refusal (see the module
    docstring)."""
    if certificate is None:
        return _refuse(
            f"product {product.product_key!r} requires a device certificate: connect with "
            "mutual TLS, presenting the certificate the lab issued to the device",
            login,
        )
    if certificates is None:
        return _refuse(
            "a client certificate was presented, but the hub has no CA to check it", login
        )
    # an integration channel ("%channel%") speaks for the product: any of its devices' will do
    integration = login.secure_mode is SecureMode.INTEGRATION
    check = certificates.check(
        certificate,
        product_key=login.product_key,
        device_key=None if integration else login.device_key,
    )
    if check.status is not CertificateStatus.VALID:
        return _refuse(f"client certificate refused: {check.reason}", login)
    return check


def _disabled(registry: Registry, product_key: str, device_key: str) -> str:
    """Why a disabled device is refused: with the reason it was disabled for, if one was given
    (:meth:`Registry.disable_device`; kept by the registry, never by the device itself)."""
    reason = f"device {product_key}/{device_key} is disabled"
    note = registry.disabled_reason(product_key, device_key)
    return f"{reason}: {note}" if note else reason


@dataclass(frozen=True, slots=True)
class SubDeviceDecision:
    """The outcome of a sub-device's signature sent by its gateway (protocol reference 8.2, 8.3).

    ``code`` is the EnOS reply code: 200 accepted, 742 (sign check failed: an unknown secure
    mode or sign method, a missing or wrong signature) or 770 (dynamic activation not allowed);
    ``reason`` is the reply's message (empty when accepted). ``activation`` is set for an
    accepted secure-mode-3 login: the gateway gets the device's new secret.
    """

    code: int
    reason: str = ""
    activation: bool = False

    @property
    def accepted(self) -> bool:
        """Whether the signature is accepted."""
        return self.code == ReplyCode.SUCCESS


def _wire_text(value: object) -> str | None:
    """A signed field of a JSON request as the text that was signed (numbers without a decimal
    part when integral: the Node SDK sends its timestamp as a number); None for other types."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def authenticate_sub_device(
    device: Device,
    product: Product,
    *,
    client_id: object,
    timestamp: object,
    sign_method: object,
    sign: object,
    secure_mode: object = None,
) -> SubDeviceDecision:
    """Decide the signature a gateway sent for ``device`` (of ``product``).

    The arguments after ``product`` are the request's values as decoded from its JSON:
    ``secure_mode`` 2 (the default when absent or empty) signs with the device secret, 3
    (dynamic activation, only for a product that allows it and a device never activated) with
    the product secret; ``sign_method`` as :meth:`~enos_lab.enos.SignMethod.parse` reads it
    (absent: SHA-1); ``sign`` the hex signature of :func:`~enos_lab.enos.sign_params` over
    ``client_id``, the keys and ``timestamp`` (numbers as their text). A ``topo.add`` proof has
    no secure mode: the device secret.
    """
    mode_text = _wire_text(secure_mode) if not (secure_mode is None or secure_mode == "") else "2"
    try:
        mode = SecureMode(int(mode_text or "2"))
        method = SignMethod.parse(sign_method if isinstance(sign_method, str) else None)
    except (ValueError, InvalidArgument) as exc:
        return SubDeviceDecision(ReplyCode.SUB_DEVICE_SIGN_CHECK_FAILED, str(exc))
    if mode is SecureMode.DYNAMIC_ACTIVATION:
        if not product.dynamic_activation or device.activated_at is not None:
            code = ReplyCode.DYNAMIC_ACTIVATION_NOT_ALLOWED
            return SubDeviceDecision(code, code.message)
        secret = product.product_secret
    elif mode is SecureMode.SECRET_PER_DEVICE:
        secret = device.device_secret
    else:
        return SubDeviceDecision(ReplyCode.SUB_DEVICE_SIGN_CHECK_FAILED, f"secure mode {mode_text}")
    params = sign_params(
        client_id=_wire_text(client_id) or "",
        product_key=device.product_key,
        device_key=device.device_key,
        timestamp=_wire_text(timestamp) or "",
    )
    if not isinstance(sign, str) or not verify_sign(params, secret, method, sign):
        code = ReplyCode.SUB_DEVICE_SIGN_CHECK_FAILED
        return SubDeviceDecision(code, code.message)
    return SubDeviceDecision(ReplyCode.SUCCESS, activation=mode is SecureMode.DYNAMIC_ACTIVATION)


@dataclass(frozen=True, slots=True)
class LoginBlock:
    """Logins of one identity from one source address refused until a time.

    ``identity`` is the CONNECT's user name (``deviceKey&productKey``; the client id when there
    is no user name); ``failures`` is how many failed logins started the block; ``until`` is
    the clock's monotonic reading when it ends [s] and ``until_time`` the same moment as a
    tz-aware UTC datetime, for people.
    """

    source: str
    identity: str
    failures: int
    until: float
    until_time: datetime


class LoginThrottle:
    """Connect-flood protection: too many failed logins block a (source, identity) pair a while.

    EnOS documents 4 failed attempts within 2 minutes -> blocked for 5 minutes; all three are
    configurable. A key is the client's source address together with the identity it claims
    (normally the user name ``deviceKey&productKey``), so that failures sent from one address
    never refuse a correct login from another: knowing a device's public user name is not
    enough to lock it out.

    Theory of operation: failure records sit in an ordered mapping by their latest failure and
    blocks in another by their end (every block lasts ``block`` seconds, so the order of
    insertion is the order of ending). Each new failure first drops, from the front of both,
    the records older than ``window`` and the blocks that ended, so keys that never come back
    are forgotten; then, beyond ``max_keys`` keys in all, the oldest failure records go first
    and the oldest blocks after them. The throttle has no I/O and reads time only from its
    clock. Not thread-safe: the hub calls it from its event loop.
    """

    def __init__(
        self,
        *,
        max_failures: int = 4,
        window: float = 120.0,
        block: float = 300.0,
        max_keys: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        if max_failures < 1 or window <= 0 or block < 0 or max_keys < 1:
            raise InvalidArgument(
                f"throttle needs max_failures >= 1, window > 0, block >= 0, max_keys >= 1; "
                f"got max_failures={max_failures!r}, window={window!r}, block={block!r}, "
                f"max_keys={max_keys!r}"
            )
        self._max, self._window, self._block = max_failures, window, block
        self._max_keys = max_keys
        self._clock = clock or SystemClock()
        # (source, identity) -> times of its failures within the window, oldest key first
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        # (source, identity) -> its block, the one that ends first first
        self._blocks: OrderedDict[tuple[str, str], LoginBlock] = OrderedDict()

    def __len__(self) -> int:
        """How many (source, identity) keys the throttle holds (failure records and blocks)."""
        return len(self._failures) + len(self._blocks)

    def blocked(self, source: str, identity: str) -> LoginBlock | None:
        """The block refusing logins of ``identity`` from ``source`` now, or ``None``."""
        blocks = self._blocks
        if not blocks:
            return None
        key = (source, identity)
        block = blocks.get(key)
        if block is None:
            return None
        if self._clock.monotonic() >= block.until:
            del blocks[key]
            return None
        return block

    def failed(self, source: str, identity: str) -> LoginBlock | None:
        """Record a failed login of ``identity`` from ``source``.

        Returns the block this failure started (``max_failures`` failures within ``window``),
        otherwise ``None``; a failure while the key is blocked changes nothing.
        """
        now = self._clock.monotonic()
        self._expire(now)
        key = (source, identity)
        if key in self._blocks:  # still blocked: _expire dropped ended blocks
            return None
        failures = self._failures
        times = failures.get(key)
        if times is None:
            failures[key] = times = []
        else:
            failures.move_to_end(key)
            while times and now - times[0] > self._window:
                del times[0]
        times.append(now)
        if len(times) >= self._max:
            del failures[key]
            until_time = self._clock.now() + timedelta(seconds=self._block)
            block = LoginBlock(source, identity, len(times), now + self._block, until_time)
            self._blocks[key] = block
            return block
        self._evict()
        return None

    def succeeded(self, source: str, identity: str) -> None:
        """Forget earlier failures of ``identity`` from ``source`` (an accepted login)."""
        if self._failures:
            self._failures.pop((source, identity), None)

    def unblock(self, identity: str, source: str | None = None) -> int:
        """Lift the blocks of ``identity`` from ``source`` (``None``: from every source) and
        forget their failures; returns how many blocks were in force and are lifted."""
        now = self._clock.monotonic()
        if source is not None:
            keys = [(source, identity)]
        else:
            keys = [k for k in (*self._blocks, *self._failures) if k[1] == identity]
        lifted = 0
        for key in keys:
            block = self._blocks.pop(key, None)
            if block is not None and now < block.until:
                lifted += 1
            self._failures.pop(key, None)
        return lifted

    def _expire(self, now: float) -> None:
        """Drop failure records older than the window and ended blocks (oldest first)."""
        failures, window = self._failures, self._window
        while failures:
            key = next(iter(failures))
            if now - failures[key][-1] <= window:
                break
            del failures[key]
        blocks = self._blocks
        while blocks:
            key = next(iter(blocks))
            if now < blocks[key].until:
                break
            del blocks[key]

    def _evict(self) -> None:
        """Beyond ``max_keys``: drop the oldest failure records, then the oldest blocks; the
        record just written (the newest) stays."""
        failures, blocks = self._failures, self._blocks
        while len(failures) + len(blocks) > self._max_keys:
            if len(failures) > 1:
                failures.popitem(last=False)
            else:
                blocks.popitem(last=False)
