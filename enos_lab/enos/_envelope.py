"""The EnOS JSON envelope: requests and commands (``id, version, method, params``) and replies
(``id, code, data, message``), protocol reference section 5.

Rules a hub must honour (section 4): the reply echoes ``id`` exactly as received (the Python SDK
crashes on a numeric id where it sent a string); ``code`` is the JSON integer 200 on success;
``data`` and ``message`` are always present. Empty payloads are answered with 1251, payloads that
are not a JSON object with 1220, payloads above 512 KiB with 1008.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError
from ._codes import ReplyCode

__all__ = [
    "MAX_PAYLOAD_SIZE",
    "EnvelopeError",
    "Reply",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

MAX_PAYLOAD_SIZE = 512 * 1024
"""Largest payload EnOS accepts; SDKs refuse to send more. [bytes]"""


class EnvelopeError(ProtocolError):
    """A payload that is not a usable EnOS envelope; ``code`` is the EnOS reply code to send."""

    def __init__(self, message: str, code: ReplyCode) -> None:
        super().__init__(message)
        self.code = code


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


def _load_object(payload: bytes, what: str) -> dict[str, Any]:
    if not payload:
        raise EnvelopeError(f"{what} payload is empty", ReplyCode.EMPTY_PAYLOAD)
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise EnvelopeError(
            f"{what} payload is {len(payload)} bytes, above the {MAX_PAYLOAD_SIZE}-byte limit",
            ReplyCode.MESSAGE_TOO_LARGE,
        )
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EnvelopeError(
            f"{what} payload is not valid JSON: {exc}", ReplyCode.INVALID_JSON
        ) from exc
    if not isinstance(document, dict):
        raise EnvelopeError(
            f"{what} payload must be a JSON object, got {type(document).__name__}",
            ReplyCode.INVALID_JSON,
        )
    return document


def decode_request(payload: bytes) -> Request:
    """Parse a request or command; raises :class:`EnvelopeError` carrying the reply code."""
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
    """Parse a reply; raises :class:`EnvelopeError` for payloads that are not one."""
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
