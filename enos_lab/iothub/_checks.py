"""Checks at the edge: what a device sends must be something the store can keep.

Every request handler that stores data runs its values through these before the store sees
them, so that a bad value fails its own request with an EnOS code and never a batch of other
devices' data: event times (``time``, epoch milliseconds) within
:data:`~enos_lab.store.MIN_EVENT_MS` .. :data:`~enos_lab.store.MAX_EVENT_MS` (1206 for
measurepoints, 1204 for events), and EnOS identifiers as the ids of data no thing model checked
(passthrough: 1204).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..clock import Clock
from ..errors import ModelError, ValidationError
from ..model import check_identifier
from ..store import MAX_EVENT_MS, MIN_EVENT_MS

__all__ = ["bad_time", "blank", "check_ids", "event_time", "identifier_error", "shown"]

_TIME_DIGITS = 19  # digits of a ``time`` string worth converting (int64; the range is 13)
_TIME_RULE = (
    f"time must be epoch milliseconds in {MIN_EVENT_MS}..{MAX_EVENT_MS} "
    "(1677-09-21..2262-04-11 UTC)"
)


def event_time(params: dict[str, Any], clock: Clock) -> int | None:
    """The ``time`` of an entry [ms]; receive time (``clock``) when absent; None when malformed
    or outside the event times the store keeps, :data:`~enos_lab.store.MIN_EVENT_MS` ..
    :data:`~enos_lab.store.MAX_EVENT_MS` (1677-09-21 .. 2262-04-11 UTC; EnOS 1206 for
    measurepoints, 1204 for events).

    Accepted: an integer, a float (JS/Java encoders may send 1.7e12 or a fraction of a ms;
    truncated) or a string of ASCII digits.
    """
    value = params.get("time")
    if value is None or value == "":
        return clock.time_ms()
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        # str.isdigit() alone takes "²" and other digits int() refuses
        if not (len(text) <= _TIME_DIGITS and text.isascii() and text.isdigit()):
            return None
        value = int(text)
    elif not isinstance(value, int):
        return None
    return value if MIN_EVENT_MS <= value <= MAX_EVENT_MS else None


def bad_time(params: dict[str, Any]) -> str:
    """The reply message for a ``time`` that :func:`event_time` refused."""
    return f"{_TIME_RULE}, found {shown(params.get('time'))}"


def check_ids(identifiers: Iterable[str], what: str) -> None:
    """Raise the first :func:`identifier_error` of ``identifiers`` (a request handler's 1204)."""
    for identifier in identifiers:
        error = identifier_error(identifier, what)
        if error is not None:
            raise error


def identifier_error(identifier: str, what: str) -> ValidationError | None:
    """EnOS's identifier rule (:func:`~enos_lab.model.check_identifier`) for an id that no
    thing model checked (passthrough data): 1204 naming the id, or None."""
    try:
        check_identifier(identifier, what)
    except ModelError as exc:
        return ValidationError(str(exc))
    return None


def blank(value: object) -> bool:
    """Whether a request field is absent: ``None`` or ``""``."""
    return value is None or value == ""


def shown(value: object) -> str:
    """``repr(value)`` for a message, clipped: a device may send megabytes."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
