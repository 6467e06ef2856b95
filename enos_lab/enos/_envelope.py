"""The EnOS JSON envelope: requests and commands (``id, version, method, params``) and replies
(``id, code, data, message``), protocol reference section 5.

Rules a hub must honour (section 4): the reply echoes ``id`` exactly as received (the Python SDK
crashes on a numeric id where it sent a string); ``code`` is the JSON integer 200 on success;
``data`` and ``message`` are always present. Empty payloads are answered with 1251, payloads that
are not a JSON object with 1220, payloads above 512 KiB with 1008.

Payloads are decoded strictly (:func:`decode_payload`, the one JSON decoder for requests and
replies): JSON as RFC 8259 defines it, in UTF-8, with valid Unicode (no lone surrogates, neither
as ``\\ud800`` escapes nor as encoded bytes), no ``NaN`` / ``Infinity`` literals, numbers that
fit a double (``1e400`` is refused; integers above 64 bits become floats), nothing after the
document, and at most :data:`MAX_JSON_DEPTH` nested arrays and objects. Anything else is 1220
with a message naming the problem. So a value that reaches a handler can be stored, encoded
again and compared, and one device's payload cannot make the hub's code recurse without bound.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import EnvelopeError
from ._codes import ReplyCode

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_PAYLOAD_SIZE",
    "EnvelopeError",
    "Reply",
    "Request",
    "decode_payload",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

MAX_PAYLOAD_SIZE = 512 * 1024
"""Largest payload EnOS accepts; SDKs refuse to send more. [bytes]"""

MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays and objects in a payload, the envelope object counting as 1.

EnOS values are shallow (struct members are one level and not structs, arrays hold scalars): the
deepest envelope of the protocol, a batch entry's quality point holding a struct with an array
member (``{params: [{measurepoints: {id: {value: {member: [..]}}}}]}``), is 7 deep. 16 leaves
room for passthrough values and stays far below the nesting at which encoding or comparing a
value would exhaust Python's recursion limit (~1,000); orjson alone allows 1,024."""

_CONTAINERS = (dict, list)


@dataclass(frozen=True, slots=True)
class Request:
    """A request (device -> cloud) or command (cloud -> device).

    ``id`` is kept exactly as it was on the wire (normally a string, ``None`` when absent) so that
    the reply can echo it. ``extra`` holds the other top-level members (the batch flags
    ``allowOfflineSubDevice`` and ``skipInvalidMeasurepoints``, Java's ``files``, ...).
    """

    id: Any
    method: str | None
    params: Any
    version: str | None = "1.0"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def flag(self, name: str) -> bool:
        """A top-level boolean flag; absent, ``""``, ``false`` and ``"false"`` mean False."""
        value = self.extra.get(name)
        if isinstance(value, str):
            return value.strip().lower() == "true"
        return bool(value)


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply (cloud -> device for requests, device -> cloud for commands)."""

    id: Any
    code: int
    data: Any = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether ``code`` is 200."""
        return self.code == ReplyCode.SUCCESS


def decode_payload(payload: bytes | str, what: str = "request") -> Any:
    """Decode ``payload`` as strict JSON (see the module docstring); the one decoder of requests
    and replies, shared by the hub's fast and general paths.

    Raises :class:`EnvelopeError` with code 1220 naming the problem (``what`` names the payload
    in the message). Neither checks the size nor asks for an object: :func:`decode_request`
    does.
    """
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # orjson's own bound: 1024
            raise _depth_error(what) from exc
        raise EnvelopeError(
            f"{what} payload is not valid JSON: {_problem(exc)}", ReplyCode.INVALID_JSON
        ) from exc
    if isinstance(payload, str):
        payload = payload.encode()  # valid UTF-8: orjson took it
    # Only more brackets than the bound can nest deeper: then (rare: batches) it is measured.
    # Byte values as arguments: "91 in" is a memchr, half the cost of counting (measurepoint
    # posts seldom hold an array).
    opened = payload.count(123)  # {
    if 91 in payload:  # [
        opened += payload.count(91)
    if opened > MAX_JSON_DEPTH and _too_deep(document):
        raise _depth_error(what)
    return document


def _depth_error(what: str) -> EnvelopeError:
    return EnvelopeError(
        f"{what} payload nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
        ReplyCode.INVALID_JSON,
    )


def _problem(exc: orjson.JSONDecodeError) -> str:
    """orjson's message, with the literals it does not name (NaN, Infinity) named."""
    near = exc.doc[max(0, exc.pos - 1) : exc.pos + 8]
    for literal in ("NaN", "Infinity"):
        if literal in near:
            return f"{literal} is not a JSON number (char {exc.pos})"
    return str(exc)


def _too_deep(document: Any) -> bool:
    """Whether ``document`` nests arrays and objects deeper than :data:`MAX_JSON_DEPTH`."""
    if not isinstance(document, _CONTAINERS):
        return False
    stack = [(document, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = container.values() if type(container) is dict else container
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))
    return False


def _load_object(payload: bytes, what: str) -> dict[str, Any]:
    if not payload:
        raise EnvelopeError(f"{what} payload is empty", ReplyCode.EMPTY_PAYLOAD)
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise EnvelopeError(
            f"{what} payload is {len(payload)} bytes, above the {MAX_PAYLOAD_SIZE}-byte limit",
            ReplyCode.MESSAGE_TOO_LARGE,
        )
    document = decode_payload(payload, what)
    if not isinstance(document, dict):
        raise EnvelopeError(
            f"{what} payload must be a JSON object, got {type(document).__name__}",
            ReplyCode.INVALID_JSON,
        )
    return document


def decode_request(payload: bytes) -> Request:
    """Parse a request or command (strict JSON, see :func:`decode_payload`); raises
    :class:`EnvelopeError` carrying the reply code."""
    document = _load_object(payload, "request")
    method = document.pop("method", None)
    version = document.pop("version", None)
    return Request(
        id=document.pop("id", None),
        method=method if isinstance(method, str) else None,
        params=document.pop("params", None),
        version=version if isinstance(version, str) else None,
        extra=document,
    )


def decode_reply(payload: bytes) -> Reply:
    """Parse a reply (strict JSON, see :func:`decode_payload`); raises :class:`EnvelopeError`
    for payloads that are not one."""
    document = _load_object(payload, "reply")
    code = document.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if not isinstance(code, int) or isinstance(code, bool):
        raise EnvelopeError(f"reply has no integer code: {code!r}", ReplyCode.PARSE_ERROR)
    message = document.get("message")
    return Reply(
        id=document.get("id"),
        code=code,
        data=document.get("data"),
        message=message if isinstance(message, str) else "",
    )


def _dumps(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_reply(request_id: Any, code: int, data: Any = None, message: str | None = None) -> bytes:
    """Serialise a reply; ``data`` defaults to ``{}`` and ``message`` to the code's text."""
    if message is None:
        message = ReplyCode(code).message if code in ReplyCode._value2member_map_ else ""
    return _dumps(
        {
            "id": request_id,
            "code": int(code),
            "data": {} if data is None else data,
            "message": message,
        }
    )


def encode_request(
    request_id: str, method: str, params: Any, *, version: str = "1.0", **extra: Any
) -> bytes:
    """Serialise a request or command (``extra`` adds top-level members such as batch flags)."""
    return _dumps(
        {"id": request_id, "version": version, "method": method, "params": params, **extra}
    )
