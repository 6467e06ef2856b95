"""One exception tree for the whole package.

Every exception enos_lab raises on purpose derives from :class:`EnosLabError`::

    EnosLabError
    ├── InvalidArgument (also ValueError)      a caller passed a bad value; the message names it
    │   └── TopicError                         an invalid MQTT topic name or topic filter
    ├── ProtocolError                          MQTT protocol faults
    │   ├── MalformedPacket                    the peer sent bytes that are not a valid packet
    │   │   └── PacketTooLarge                 ... or a packet above the negotiated maximum size
    │   ├── LocalProtocolError                 we were asked to build or send an invalid packet
    │   └── EnvelopeError                      a payload that is not a usable EnOS envelope
    ├── AuthenticationError                    credentials refused (API use; on the wire: CONNACK)
    │   └── BadLogin                           a CONNECT whose client id or username is not EnOS's
    ├── RegistryError                          products, devices, credentials
    │   ├── NotFound (also KeyError)           an id that does not exist
    │   └── AlreadyExists                      an id that is taken
    ├── ModelError                             thing models
    │   └── ValidationError                    a value does not fit its thing model
    ├── StoreError                             the time-series store
    ├── RuleError                              rules, alerts, stream computing
    ├── LimitExceeded                          a bound on what the hub keeps was reached
    ├── DeviceOffline                          a command's device has no live connection
    └── ClosedError                            the lab, hub or store is not running

Expected outcomes are values, not exceptions: an access-control decision returns allow/deny with a
reason, a refused login is a CONNACK with a reason code. Foreign errors are translated at the
boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "AuthenticationError",
    "BadLogin",
    "ClosedError",
    "DeviceOffline",
    "EnosLabError",
    "EnvelopeError",
    "InvalidArgument",
    "LimitExceeded",
    "LocalProtocolError",
    "MalformedPacket",
    "ModelError",
    "NotFound",
    "PacketTooLarge",
    "ProtocolError",
    "RegistryError",
    "RuleError",
    "StoreError",
    "TopicError",
    "ValidationError",
]


class EnosLabError(Exception):
    """Root of every exception raised by enos_lab."""


class InvalidArgument(EnosLabError, ValueError):
    """A caller passed a value that cannot be used; the message names the value."""


class TopicError(InvalidArgument):
    """An MQTT topic name or topic filter breaks the rules of MQTT 4.7."""


class ProtocolError(EnosLabError):
    """A fault in an MQTT conversation.

    ``reason_code`` is the MQTT 5.0 reason code that describes the fault (used in a DISCONNECT
    sent to a 5.0 client); 3.1.1 connections are simply closed.
    """

    reason_code: int = 0x82  # Protocol Error

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(ProtocolError):
    """The peer sent bytes that do not form a valid MQTT packet (the remote side's fault)."""

    reason_code = 0x81  # Malformed Packet


class PacketTooLarge(MalformedPacket):
    """The peer declared a packet larger than the maximum packet size this side accepts."""

    reason_code = 0x95  # Packet too large


class LocalProtocolError(ProtocolError):
    """This side was asked to build or send a packet the protocol does not allow (our fault)."""


class EnvelopeError(ProtocolError):
    """A payload that is not a usable EnOS envelope; ``code`` is the EnOS reply code to send
    (1220 for what is not strict JSON, 1251 for an empty payload, 1008 above 512 KiB, ...)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(EnosLabError):
    """Credentials were refused."""


class BadLogin(AuthenticationError):
    """A CONNECT whose client id or username cannot be parsed as an EnOS login.

    ``field`` names the offending CONNECT field: ``"username"`` (a hub answers CONNACK 4) or
    ``"client_id"`` (CONNACK 5).
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class RegistryError(EnosLabError):
    """A fault in the device registry."""


class NotFound(RegistryError, KeyError):
    """An id (product, device, model, ...) that does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AlreadyExists(RegistryError):
    """An id (product, device, model, ...) that is already taken."""


class ModelError(EnosLabError):
    """A thing model is invalid or cannot be used."""


class ValidationError(ModelError):
    """A value does not fit its thing model.

    ``code`` is the EnOS reply code a hub returns for it (e.g. 1204).
    """

    code: int = 1204

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class StoreError(EnosLabError):
    """A fault in the time-series store."""


class RuleError(EnosLabError):
    """A rule, alert or stream definition is invalid or failed."""


class ClosedError(EnosLabError):
    """The lab, hub or store is not running (not started yet, or already stopped)."""


class DeviceOffline(EnosLabError):
    """A command was sent to a device that has no live connection (and no online gateway).

    The device's state, not a fault of the caller, the registry or the lab: the device exists
    (an unknown one is :class:`NotFound`) and the lab is running (otherwise
    :class:`ClosedError`); sending again once the device is back can succeed.
    """


class LimitExceeded(EnosLabError):
    """A bound on what the hub keeps (retained messages, sessions, subscriptions) was reached;
    the message names the bound (see :class:`~enos_lab.hub.HubConfig`)."""
