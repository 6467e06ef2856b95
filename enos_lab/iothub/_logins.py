"""Logins: the IoT hub's authenticator, the login throttle and the login log.

Theory of operation
-------------------
:meth:`Logins.authenticate` is the hub's Authenticator: the registry's login decision
(:func:`~enos_lab.registry.authenticate`: secure modes 2, 3 and 4, every sign method) behind the
login throttle (failed logins counted per source address and user name, so that bad logins
from one address never refuse a correct one from another). Every refusal is CONNACK 5 (4 for
an unparseable username) and goes into the login log; a block that starts is logged at
WARNING, other refusals at INFO. An accepted login's identity is a
:class:`~enos_lab.iothub._sessions.Conn`, handed to the hub as ``ClientInfo.attributes``; the
session belongs to the device (its user name), not to the client id. Logins shaped like the
official Python SDK's (a timestamp with a decimal point) are answered after
``python_sdk_connack_delay``, all others at once (protocol reference 4, item 9).

The login log records one row per CONNECT refused (:meth:`LoginLog.record`, a tuple appended
to a :class:`collections.deque` with a maximum length, so that a flood of attempts keeps only the
newest ``size``); :meth:`LoginLog.rows` copies the rows of a product or device and
:func:`logins_frame` turns them into a DataFrame with tz-aware UTC times. Refused logins and their
reasons are otherwise logged at INFO only, which a device engineer rarely sees. Accepted logins
are not kept here (the presence log has them as "connected"): a row per connected device would
cost every idle connection a few hundred bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TypeAlias

import pandas as pd

from ..clock import Clock, to_epoch_ms
from ..errors import InvalidArgument
from ..hub import AuthResult, ConnectRequest, HandshakeFailed, Hub, HubEvent
from ..registry import (
    AuthDecision,
    CertificateChecker,
    LoginBlock,
    LoginThrottle,
    Registry,
    authenticate,
)
from ._apps import APP_PREFIX, Applications
from ._config import IotHubConfig
from ._sessions import Conn

__all__ = [
    "LOGIN_COLUMNS",
    "LoginLog",
    "Logins",
    "login_source",
    "logins_frame",
    "python_sdk_login",
    "username_keys",
]

log = logging.getLogger("enos_lab.iothub")

LOGIN_COLUMNS = (
    "time",
    "source",
    "client_id",
    "product_key",
    "device_key",
    "reason",
    "blocked_until",
)
"""Columns of :func:`logins_frame`: ``time`` (tz-aware UTC) of the attempt, ``source`` (the
client's address, without the port), ``client_id``, ``product_key`` and ``device_key`` from the
user name (``None`` when it has none), ``reason`` (the registry's words, or
``blocked after N failed logins until T``) and ``blocked_until`` (tz-aware UTC; set on the
failure that started a block and on the attempts refused by it, NaT otherwise)."""

LoginRow: TypeAlias = tuple[
    int, str, str, str | None, str | None, str, int | None
]  # time [ms], source, client id, product key, device key, reason, blocked until [ms]


def login_source(peer: str) -> str:
    """The address part of a connection's ``peer`` (``"host:port"``; IPv6 as ``"::1:port"``
    or ``"[::1]:port"``); a peer without a port (``"memory"``) is returned as it is."""
    host, colon, port = peer.rpartition(":")
    if not colon or not port.isdigit():
        return peer
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def username_keys(username: str | None) -> tuple[str | None, str | None]:
    """``(product_key, device_key)`` from an EnOS user name ``deviceKey&productKey``;
    ``(None, None)`` when there is none (an application's user name has none)."""
    if not username or "&" not in username or username.startswith(APP_PREFIX):
        return None, None
    device_key, _, product_key = username.partition("&")
    return product_key, device_key


class LoginLog:
    """The latest ``size`` refused login attempts, oldest first (see the module docstring).

    ``clock`` stamps the rows. Not thread-safe: the hub records from its event loop, and
    readers in other threads ask for :meth:`rows` on that loop.
    """

    def __init__(self, size: int, clock: Clock) -> None:
        if size < 0:
            raise InvalidArgument(f"the login log size must be >= 0, got {size!r}")
        self._rows: deque[LoginRow] = deque(maxlen=size)
        self._clock = clock

    @property
    def size(self) -> int:
        """Most rows kept."""
        return self._rows.maxlen or 0

    def __len__(self) -> int:
        """Rows kept now."""
        return len(self._rows)

    def record(
        self,
        source: str,
        client_id: str,
        product_key: str | None,
        device_key: str | None,
        *,
        reason: str,
        blocked_until_ms: int | None = None,
    ) -> None:
        """Add one refused attempt (the oldest row goes when the log is full);
        ``blocked_until_ms`` is the end of the block that refused it or that it started. [ms
        since the epoch]"""
        self._rows.append(
            (
                self._clock.time_ms(),
                source,
                client_id,
                product_key,
                device_key,
                reason,
                blocked_until_ms,
            )
        )

    def rows(self, product_key: str | None = None, device_key: str | None = None) -> list[LoginRow]:
        """A copy of the rows, oldest first, of one product and/or device key if given."""
        if product_key is None and device_key is None:
            return list(self._rows)
        return [
            row
            for row in self._rows
            if (product_key is None or row[3] == product_key)
            and (device_key is None or row[4] == device_key)
        ]


def logins_frame(rows: list[LoginRow]) -> pd.DataFrame:
    """The refused login attempts ``rows`` as a DataFrame with :data:`LOGIN_COLUMNS`."""
    frame = pd.DataFrame(rows, columns=list(LOGIN_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"].astype("int64"), unit="ms", utc=True)
    until = frame["blocked_until"].astype("Float64")  # None -> NaT
    frame["blocked_until"] = pd.to_datetime(until, unit="ms", utc=True)
    return frame


def python_sdk_login(timestamp: str) -> bool:
    """Whether a login's timestamp has the shape only the official Python SDK sends.

    That SDK builds it as ``str(time.time() * 1000)``, a float with a decimal point; the Java,
    Node and C SDKs send integers (or constants). Only that SDK needs its CONNACK delayed: its
    ``connect()`` starts the network loop before it waits for the CONNACK, and a CONNACK
    processed before that wait is lost (protocol reference 4, item 9).
    """
    return "." in timestamp


async def _after(delay: float, result: AuthResult) -> AuthResult:
    """``result`` after ``delay`` seconds (see :func:`python_sdk_login`). [s]"""
    await asyncio.sleep(delay)
    return result


class Logins:
    """The authenticator, its throttle and the login log (see the module docstring).

    ``throttle`` and ``login_log`` are built from ``config`` (``max_login_failures``,
    ``login_failure_window``, ``login_block``, ``max_login_tracked``, ``login_log_size``);
    ``hub`` is set by ``IotHub.attach``; ``certificates`` checks the client certificates of
    logins over TLS (``None``: none can be checked, so a login presenting one is refused).
    """

    __slots__ = (
        "applications",
        "certificates",
        "config",
        "hub",
        "login_log",
        "registry",
        "throttle",
    )

    def __init__(
        self,
        registry: Registry,
        config: IotHubConfig,
        clock: Clock,
        certificates: CertificateChecker | None = None,
    ) -> None:
        self.registry = registry
        self.certificates = certificates
        self.config = config
        self.hub: Hub | None = None
        self.throttle = LoginThrottle(
            max_failures=config.max_login_failures,
            window=config.login_failure_window,
            block=config.login_block,
            max_keys=config.max_login_tracked,
            clock=clock,
        )
        self.login_log = LoginLog(config.login_log_size, clock)
        self.applications: Applications | None = None
        """Decides the logins of applications (user name ``%app%&{access_key}``); ``None``:
        they are refused like any unknown user name."""

    def authenticate(self, request: ConnectRequest) -> AuthResult | Awaitable[AuthResult]:
        """Decide one CONNECT (hub Authenticator protocol); see the module docstring.

        The result is immediate, except for logins shaped like the official Python SDK's
        (see :func:`python_sdk_login`): those resolve after ``config.python_sdk_connack_delay``
        so that their CONNACK cannot overtake the SDK's wait for it (protocol reference 4.9).
        Meanwhile the hub keeps the connection's later packets waiting.
        """
        source = login_source(request.peer)
        identity = request.username or request.client_id
        block = self.throttle.blocked(source, identity)
        if block is not None:
            self._refused_while_blocked(request, source, block)
            return AuthResult(False, 0x87)
        apps = self.applications
        if apps is not None and (request.username or "").startswith(APP_PREFIX):
            return self._application(apps, request, source, identity)
        decision = authenticate(
            self.registry,
            request.client_id,
            request.username,
            request.password,
            tls=request.tls,
            certificate=request.certificate,
            certificates=self.certificates,
        )
        result = self._decide(request, source, identity, decision)
        delay = self.config.python_sdk_connack_delay
        login = decision.login
        if delay > 0 and login is not None and python_sdk_login(login.timestamp):
            conn = result.attributes
            if isinstance(conn, Conn):
                conn.checked = False  # re-read when the connection is accepted, after the delay
            return _after(delay, result)
        return result

    def _application(
        self, apps: Applications, request: ConnectRequest, source: str, identity: str
    ) -> AuthResult:
        """An application's login: CONNACK 5 (0x87) when refused, counted and logged like a
        device's (the login log without keys)."""
        found = apps.login(request)
        if isinstance(found, str):
            self._refused(request, source, identity, found)
            return AuthResult(False, 0x87)
        self.throttle.succeeded(source, identity)
        return AuthResult(True, attributes=found, identity=identity)

    def _decide(
        self, request: ConnectRequest, source: str, identity: str, decision: AuthDecision
    ) -> AuthResult:
        if not decision.accepted:
            self._refused(request, source, identity, decision.reason)
            # 3.1.1 return code 4 <- 0x86, 5 <- 0x87
            return AuthResult(False, 0x86 if decision.return_code == 4 else 0x87)
        self.throttle.succeeded(source, identity)
        login = decision.login
        assert login is not None
        product = decision.product
        assert product is not None
        conn = Conn(
            product,
            (product.product_key, login.device_key),  # the shared key string
            int(login.secure_mode),
            decision.integration,
            decision.activation,
            request.tls,
        )
        checked = decision.certificate
        if checked is not None:
            conn.certificate = checked.serial_number
            conn.certificate_expiry = checked.not_after
        # the records just read are current when the hub accepts the connection in this very
        # callback (no CONNACK delay); otherwise ClientConnected reads them again
        hub = self.hub
        conn.checked = hub is None or hub.config.connack_delay <= 0
        # the session belongs to the device (product key + device key), not to the client id;
        # an accepted login's user name is exactly "{device_key}&{product_key}" (identity())
        return AuthResult(True, attributes=conn, identity=identity)

    def _refused(self, request: ConnectRequest, source: str, identity: str, reason: str) -> None:
        """A refused login: count it, log it, and warn once when it starts a block."""
        product_key, device_key = username_keys(request.username)
        block = self.throttle.failed(source, identity)
        log.info("login of %r from %s refused: %s", identity, source, reason)
        until_ms = None
        if block is not None:
            until_ms = to_epoch_ms(block.until_time)
            who = (
                f"device {product_key}/{device_key}"
                if product_key is not None
                else f"identity {identity!r}"
            )
            lift = (
                f"lab.unblock_login({product_key!r}, {device_key!r}) (IotHub.unblock_login "
                "on the hub's loop)"
                if product_key is not None
                else f"IotHub.login_throttle.unblock({identity!r})"
            )
            log.warning(
                "logins of %s from %s blocked until %s after %d failed logins within %g s "
                "(last: %s); logins from other addresses still pass; see lab.refused_logins(); "
                "lift it with %s",
                who,
                source,
                block.until_time.isoformat(timespec="seconds"),
                block.failures,
                self.config.login_failure_window,
                reason,
                lift,
            )
        self.login_log.record(
            source,
            request.client_id,
            product_key,
            device_key,
            reason=reason,
            blocked_until_ms=until_ms,
        )

    def _refused_while_blocked(
        self, request: ConnectRequest, source: str, block: LoginBlock
    ) -> None:
        reason = (
            f"blocked after {block.failures} failed logins until "
            f"{block.until_time.isoformat(timespec='seconds')}"
        )
        log.info("login of %r from %s refused: %s", block.identity, source, reason)
        product_key, device_key = username_keys(request.username)
        self.login_log.record(
            source,
            request.client_id,
            product_key,
            device_key,
            reason=reason,
            blocked_until_ms=to_epoch_ms(block.until_time),
        )

    def on_event(self, event: HubEvent) -> None:
        """The hub's event listener: a failed TLS handshake becomes a row of the login log,
        without keys (no CONNECT was read); certificate refusals are logged at INFO, the rest
        at DEBUG."""
        if not isinstance(event, HandshakeFailed):
            return
        source = login_source(event.peer)
        level = logging.INFO if "certificate" in event.reason else logging.DEBUG
        log.log(level, "TLS handshake from %s failed: %s", source, event.reason)
        self.login_log.record(source, "", None, None, reason=event.reason)

    def unblock(self, product_key: str, device_key: str, source: str | None = None) -> int:
        """Lift the login blocks of the device from ``source`` (``None``: every address) and
        forget its failed logins there; returns how many blocks were lifted."""
        lifted = self.throttle.unblock(f"{device_key}&{product_key}", source)
        if lifted:
            log.info(
                "login block of device %s/%s lifted (%d address(es))",
                product_key,
                device_key,
                lifted,
            )
        return lifted
