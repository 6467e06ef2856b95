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
    ├── SecretsError                           secrets at rest under the lab key
    │   ├── LabKeyError                        a key file that cannot be used (mode, length)
    │   ├── WrongLabKey                        sealed values that this key does not open
    │   └── SealBroken                         one sealed value that does not open for its row
    ├── ModelError                             thing models
    │   └── ValidationError                    a value does not fit its thing model
    ├── StoreError                             the time-series store
    ├── RuleError                              rules, alerts, stream computing
    │   ├── ExpressionError (also ValueError)  an expression that does not parse or type-check
    │   └── EvaluationError                    an expression that cannot run on one device's values
    │       └── MissingValue                   ... because a value it references is missing
    ├── LimitExceeded                          a bound on what the hub keeps was reached
    ├── DeviceOffline                          a command's device has no live connection
    ├── CommandFailed                          a device answered a command with a code not 200
    ├── CommandExpired                         a cached command not sent within its pending_ttl
    ├── OtaError                               firmware upgrade (OTA): campaigns, targets
    │   └── DigestMismatch                     a firmware file whose digest is not the one given
    ├── DeviceError                            the device SDK (:mod:`enos_lab.device`)
    │   ├── LoginRefused (also AuthenticationError)  the hub refused the CONNECT (return code)
    │   ├── RequestFailed                      the hub answered a request with a code other than 200
    │   ├── RequestTimeout (also TimeoutError) no reply to a request (or no CONNACK) in time
    │   ├── NotConnected                       no connection to the hub: connect failed, the
    │   │                                      connection dropped, or the client is reconnecting
    │   └── CommandError                       raised by a command handler to reply with a code
    └── ClosedError                            the lab, hub, store or device client is not running

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
    "CommandError",
    "CommandExpired",
    "CommandFailed",
    "DeviceError",
    "DeviceOffline",
    "DigestMismatch",
    "EnosLabError",
    "EnvelopeError",
    "EvaluationError",
    "ExpressionError",
    "InvalidArgument",
    "LabKeyError",
    "LimitExceeded",
    "LocalProtocolError",
    "LoginRefused",
    "MalformedPacket",
    "MissingValue",
    "ModelError",
    "NotConnected",
    "NotFound",
    "OtaError",
    "PacketTooLarge",
    "ProtocolError",
    "RegistryError",
    "RequestFailed",
    "RequestTimeout",
    "RuleError",
    "SealBroken",
    "SecretsError",
    "StoreError",
    "TopicError",
    "ValidationError",
    "WrongLabKey",
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


class SecretsError(EnosLabError):
    """A fault in the secrets kept at rest under the lab key (:mod:`enos_lab.vault`)."""


class LabKeyError(SecretsError):
    """The lab key file cannot be used: unreadable, of the wrong length, or readable by other
    users. The message names the file and what to do."""


class WrongLabKey(SecretsError):
    """Values sealed under one lab key met another key: the key file was replaced, or belongs
    to another lab. The message names the key file and the data it does not open."""


class SealBroken(SecretsError):
    """A sealed value does not open for the place it was found in (copied from another row or
    column, or altered), although the lab key is the right one."""


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


def _caret(text: str, position: int, width: int = 72) -> str:
    """Two indented lines: ``text`` (a window of it around ``position`` when long) and a caret
    under ``position``."""
    start = max(0, min(position - width // 2, len(text) - width))
    window = text[start : start + width].replace("\n", " ").replace("\t", " ")
    lead = "..." if start > 0 else ""
    tail = "..." if start + width < len(text) else ""
    return f"  {lead}{window}{tail}\n  {' ' * (len(lead) + position - start)}^"


class ExpressionError(RuleError, ValueError):
    """An expression (a rule's condition) that does not parse, names something unknown or
    mixes types, found when it is compiled.

    ``expression`` is the text, ``position`` the 0-based column (offset) of the fault in it,
    ``rule`` the rule's name (or ``None``) and ``reason`` the bare description. The message
    names the rule and the column and shows the expression with a caret under the fault::

        rule 'overheat': unknown measurepoint or attribute 'tmp' at column 2
          ${tmp} > 50
            ^
    """

    def __init__(
        self, reason: str, expression: str, position: int, rule: str | None = None
    ) -> None:
        position = max(0, min(position, len(expression)))
        where = f"rule {rule!r}: " if rule is not None else ""
        super().__init__(f"{where}{reason} at column {position}\n{_caret(expression, position)}")
        self.reason = reason
        self.expression = expression
        self.position = position
        self.rule = rule


class EvaluationError(RuleError):
    """An expression could not be evaluated on one device's values: a value of the wrong kind
    (a string where the expression needs a number) where the types were not known when it was
    compiled. The engine counts and logs a skip on that device; ingest goes on.

    ``expression`` is the text, ``rule`` the rule's name (or ``None``).
    """

    def __init__(self, message: str, expression: str = "", rule: str | None = None) -> None:
        where = f"rule {rule!r}: " if rule is not None else ""
        super().__init__(f"{where}{message} in {expression!r}" if expression else where + message)
        self.expression = expression
        self.rule = rule


class MissingValue(EvaluationError):
    """A value an expression references is missing (a point not in the message, an attribute
    the device does not have).

    ``name`` is the point or attribute id, ``namespace`` ``"point"``, ``"attr"`` or ``None``
    (either, when compiled without types).
    """

    def __init__(
        self, name: str, namespace: str | None, expression: str = "", rule: str | None = None
    ) -> None:
        what = {"point": "measurepoint", "attr": "attribute"}.get(
            namespace or "", "measurepoint or attribute"
        )
        super().__init__(f"missing {what} {name!r}", expression, rule)
        self.name = name
        self.namespace = namespace


class ClosedError(EnosLabError):
    """The lab, hub, store or a device client is not running (not started or connected yet,
    or already stopped)."""


class DeviceOffline(EnosLabError):
    """A command was sent to a device that has no live connection (and no online gateway).

    The device's state, not a fault of the caller, the registry or the lab: the device exists
    (an unknown one is :class:`NotFound`) and the lab is running (otherwise
    :class:`ClosedError`); sending again once the device is back can succeed.
    """


class LimitExceeded(EnosLabError):
    """A bound on what the hub keeps (retained messages, sessions, subscriptions) was reached;
    the message names the bound (see :class:`~enos_lab.hub.HubConfig`)."""


class CommandFailed(EnosLabError):
    """A device answered a command (a service invocation, a measurepoint set or get) with a
    code other than 200.

    ``code`` is the device's code (EnOS: user-defined codes are 2000 or above; protocol
    reference 5.2), ``message`` and ``data`` what it sent, ``product_key`` / ``device_key``
    the device and ``command`` what was sent (e.g. ``"service set_power_limit"``).
    """

    def __init__(
        self,
        code: int,
        message: str = "",
        *,
        data: object = None,
        product_key: str = "",
        device_key: str = "",
        command: str = "",
    ) -> None:
        super().__init__(
            f"device {product_key}/{device_key} answered {command or 'the command'} with code "
            f"{code}" + (f": {message}" if message else "")
        )
        self.code = code
        self.message = message
        self.data = data
        self.product_key = product_key
        self.device_key = device_key
        self.command = command


class CommandExpired(EnosLabError):
    """A cached command (EnOS ``pendingTtl``) waited for its device longer than its
    ``pending_ttl`` and was not sent; its record says ``expired``."""


class OtaError(EnosLabError):
    """A firmware upgrade (OTA) that cannot be done as asked: a campaign over no device, a
    device that never reported a firmware version, a device already being upgraded; the
    message names the product, device, version or campaign."""


class DigestMismatch(OtaError):
    """A firmware file whose digest is not the one given (``expected``, ``found``, by
    ``sign_method``): refused before it is offered to any device."""

    def __init__(self, message: str, *, expected: str = "", found: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class DeviceError(EnosLabError):
    """A fault seen by the device SDK (:mod:`enos_lab.device`): a refused login, a request the
    hub refused or did not answer, a missing connection."""


class LoginRefused(DeviceError, AuthenticationError):
    """The hub refused a device's CONNECT.

    ``code`` is the MQTT 3.1.1 CONNACK return code (EnOS answers 5 "not authorised" for every
    authentication failure, 4 for a user name it cannot parse; protocol reference 2.5),
    ``reason`` its meaning and ``device`` the ``product_key/device_key`` that tried.
    """

    def __init__(self, code: int, reason: str = "", *, device: str = "") -> None:
        who = f"device {device}" if device else "device"
        super().__init__(
            f"login of {who} refused: CONNACK return code {code}"
            + (f" ({reason})" if reason else "")
        )
        self.code = code
        self.reason = reason
        self.device = device


class RequestFailed(DeviceError):
    """The hub answered a device's request with a code other than 200.

    ``code`` is the EnOS reply code (e.g. 1204 model validation failed, 1009 no write
    permission; :class:`~enos_lab.enos.ReplyCode`), ``message`` the hub's text, ``data`` the
    reply's ``data``, ``topic`` the request topic and ``request_id`` the request's id.
    """

    def __init__(
        self,
        code: int,
        message: str = "",
        data: object = None,
        *,
        topic: str = "",
        request_id: str = "",
    ) -> None:
        where = f" {request_id} on {topic}" if topic else ""
        super().__init__(
            f"request{where} failed with code {code}" + (f": {message}" if message else "")
        )
        self.code = code
        self.message = message
        self.data = data
        self.topic = topic
        self.request_id = request_id


class RequestTimeout(DeviceError, TimeoutError):
    """No reply to a device's request (or no CONNACK to its CONNECT) within its timeout; the
    request may still have been applied by the hub."""


class NotConnected(DeviceError):
    """The device client has no connection to the hub: the connect attempt failed (TCP), the
    connection dropped before a request's reply arrived (the request may have been applied), or
    the client is reconnecting. Unlike :class:`ClosedError`, the client may come back."""


class CommandError(DeviceError):
    """Raised by a device's command handler to answer the command with ``code`` and
    ``message`` instead of 200 (EnOS: user-defined codes are 2000 or above; protocol reference
    5.2)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(f"command failed with code {code}: {message}")
        self.code = code
        self.message = message
