"""One MQTT 3.1.1 connection of a device client, on gmqtt (CONNECT ... DISCONNECT).

gmqtt would reconnect by itself after a lost connection (and once more after a refused
CONNACK it considers transient); the device client does that itself, with its backoff policy
and an EnOS re-login, so the gmqtt client used here never reconnects. Each connection is a new
gmqtt client: a clean session starts with nothing subscribed, and a new login may carry new
credentials (after a dynamic activation).

gmqtt logs every lost connection and refused CONNACK as a WARNING, with a traceback for a
reset; the device client reports the same events in its own terms (:class:`LoginRefused`, its
connection and reconnection log lines). So that a device on a failing link does not fill a
notebook with tracebacks, gmqtt's records are kept at DEBUG: those of the clients made here go
to the logger ``enos_lab.device.mqtt``, and those of gmqtt's protocol module (which logs
through its own module logger, ``gmqtt.mqtt.protocol``) are lowered to DEBUG as they pass.
Turn on DEBUG for those loggers to see them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from ..errors import LoginRefused

__all__ = ["Connection"]

log = logging.getLogger("enos_lab.device")


class _AtDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for gmqtt's clients that records everything at DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.debug(msg, *args, **kwargs)


class _LowerToDebug(logging.Filter):
    """Lowers the records of gmqtt's protocol module (lost connections, writes to a closed
    socket) to DEBUG, so that they reach only handlers that asked for DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


mqtt_log = _AtDebug(logging.getLogger("enos_lab.device.mqtt"), {})
_protocol_log = logging.getLogger("gmqtt.mqtt.protocol")
if not any(isinstance(f, _LowerToDebug) for f in _protocol_log.filters):
    _protocol_log.addFilter(_LowerToDebug())

# MQTT 3.1.1, 3.2.2.3: the CONNACK return codes
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class _Client(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's client without its own reconnect (the device client reconnects)."""

    async def reconnect(self, delay: bool = False) -> None:
        """Do nothing: a lost connection is reported and the device client decides."""

    @property
    def connack_seen(self) -> bool:
        """Whether a CONNACK (accepting or refusing) arrived on the current connection."""
        return bool(self._connack_received.is_set())


MessageCallback = Callable[["Connection", str, bytes], None]
LostCallback = Callable[["Connection"], None]


class Connection:
    """One connection: ``await open()``, then :meth:`subscribe_once` / :meth:`publish`, then
    ``await close()``. ``on_message(connection, topic, payload)`` gets every PUBLISH;
    ``on_lost(connection)`` is called once if an open connection ends without :meth:`close`.
    ``device`` (``product_key/device_key``) names the device in errors and logs."""

    __slots__ = (
        "_closing",
        "_dropped",
        "_mqtt",
        "_on_lost",
        "_on_message",
        "_subscribed",
        "device",
        "is_open",
    )

    def __init__(  # noqa: PLR0917
        self,
        client_id: str,
        username: str,
        password: str,
        clean_session: bool,
        device: str,
        on_message: MessageCallback,
        on_lost: LostCallback,
    ) -> None:
        self.device = device
        self.is_open = False
        self._closing = False
        self._dropped: asyncio.Future[bool] | None = None  # set while open() runs
        self._subscribed: set[str] = set()
        self._on_message = on_message
        self._on_lost = on_lost
        mqtt = _Client(client_id, clean_session=clean_session, logger=mqtt_log)
        mqtt.set_auth_credentials(username, password)
        mqtt.on_message = self._message
        mqtt.on_disconnect = self._disconnected
        self._mqtt = mqtt

    async def open(
        self, host: str, port: int, ssl: ssl_module.SSLContext | bool, keepalive: int
    ) -> None:
        """Connect and log in; returns once the CONNACK accepted the login.

        Raises :class:`~enos_lab.errors.LoginRefused` for a refused CONNACK and ``OSError``
        when no TCP (or TLS) connection can be made, or when it closes before the CONNACK or
        right after it.
        """
        loop = asyncio.get_running_loop()
        dropped = self._dropped = loop.create_future()
        connecting = loop.create_task(
            self._mqtt.connect(host, port, ssl=ssl, keepalive=keepalive, version=MQTTv311),
            name=f"enos-device-connect-{self.device}",
        )
        try:
            await asyncio.wait((connecting, dropped), return_when=asyncio.FIRST_COMPLETED)
            if not connecting.done() and not dropped.result():
                # closed before any CONNACK: gmqtt's connect() would wait for one forever
                raise ConnectionResetError(
                    f"the connection of device {self.device} closed before its CONNACK"
                )
            await connecting  # a CONNACK came: connect() ends in a few loop passes
        except MQTTConnectError as exc:
            await self.close()
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
            raise LoginRefused(
                code, CONNACK_REASONS.get(code, "refused"), device=self.device
            ) from None
        except BaseException:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            await self.close()
            raise
        if dropped.done():  # accepted, then closed before the device client took it
            await self.close()
            raise ConnectionResetError(
                f"the connection of device {self.device} closed right after its CONNACK"
            )
        self.is_open = True

    @property
    def usable(self) -> bool:
        """Whether a reply may be published on this connection: it is open, or its CONNACK
        accepted the login and :meth:`open` is about to return (the hub may send a command,
        e.g. a cached one, right after the CONNACK, before the device client has taken the
        connection), and it is neither closing nor lost."""
        if self.is_open:
            return True
        dropped = self._dropped
        return (
            not self._closing
            and bool(self._mqtt.connack_seen)
            and dropped is not None
            and not dropped.done()
        )

    def subscribe_once(self, topic: str) -> None:
        """Subscribe to ``topic`` at QoS 1 unless this connection did already (protocol
        reference 4.2: the reply topic, right before the first request on its topic; the hub
        handles a connection's packets in order, so no SUBACK is awaited)."""
        if topic not in self._subscribed:
            self._subscribed.add(topic)
            self._mqtt.subscribe(topic, qos=1)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish ``payload`` on ``topic`` (not retained)."""
        self._mqtt.publish(topic, payload, qos=qos)

    async def close(self) -> None:
        """Send DISCONNECT and close the socket (idempotent; ``on_lost`` is not called)."""
        if self._closing:
            return
        self._closing = True
        self.is_open = False
        try:
            await self._mqtt.disconnect()
        except (OSError, RuntimeError, AttributeError) as exc:  # a socket already gone
            log.debug("device %s: closing its connection: %r", self.device, exc)

    # -- gmqtt callbacks ----------------------------------------------------------------------

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        if not self._closing:
            try:
                self._on_message(self, topic, payload)
            except Exception:  # a bug: keep the connection
                log.exception("device %s: handling a message on %r failed", self.device, topic)
        return 0

    def _disconnected(self, client: Any, packet: Any, exc: Any = None) -> None:
        if self._closing:
            return
        if not self.is_open:  # while open() runs: tell it (and whether a CONNACK came)
            dropped = self._dropped
            if dropped is not None and not dropped.done():
                dropped.set_result(self._mqtt.connack_seen)
            return
        self.is_open = False
        self._closing = True
        log.info("device %s: connection lost", self.device)
        # the socket is closed already (gmqtt reports a loss from connection_lost)
        self._on_lost(self)
