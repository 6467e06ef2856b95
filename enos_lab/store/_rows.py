"""Row shapes accepted by the store, and their conversion to columns.

The hub appends measurepoints in batches, so a measurepoint row is a plain tuple with a name
(:class:`PointRow`, a ``NamedTuple``): building one costs as little as building a tuple, and the
store turns a whole batch into numpy columns with ``zip(*rows)`` and a few vectorised steps.

Value encoding (one row of ``points``):

============  ===========  ==================================================
kind          column       Python value
============  ===========  ==================================================
``FLOAT``     ``num``      ``float``
``INT``       ``num``      ``int`` (exact up to 2**53; EnOS ints are int32)
``BOOL``      ``num``      ``bool`` stored as 0.0 / 1.0
``STRING``    ``str``      ``str``
``JSON``      ``str``      ``dict`` (struct) or ``list`` (array) as JSON text
============  ===========  ==================================================

Numbers of every kind live in one DOUBLE column so that aggregation never has to look at text.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgument
from ._time import MAX_EVENT_MS, MIN_EVENT_MS

__all__ = [
    "AttributeRow",
    "EventRow",
    "PointColumns",
    "PointRow",
    "PointValue",
    "ValueKind",
    "check_event_ms",
    "check_record",
    "check_series_keys",
    "check_text",
    "check_utf8",
    "decode_json",
    "encode_json",
    "encode_points",
]

PointValue = float | int | bool | str | Mapping[str, Any] | Sequence[Any]
"""A measurepoint value: number, bool, string, struct (mapping) or array (sequence)."""

_QUALITY_NONE = -1  # column sentinel for "no quality"; NULL in the table


class ValueKind(IntEnum):
    """How a stored value is encoded (the ``kind`` column)."""

    FLOAT = 0
    INT = 1
    BOOL = 2
    STRING = 3
    JSON = 4

    @property
    def numeric(self) -> bool:
        """True for kinds kept in the numeric column (aggregatable)."""
        return self <= ValueKind.BOOL


NUMERIC_KINDS_MAX = int(ValueKind.BOOL)
"""Kinds up to this value are numeric (``kind <= NUMERIC_KINDS_MAX`` in SQL)."""

_KIND_BY_TYPE: dict[type, int] = {
    float: ValueKind.FLOAT,
    int: ValueKind.INT,
    bool: ValueKind.BOOL,
    str: ValueKind.STRING,
    dict: ValueKind.JSON,
    list: ValueKind.JSON,
    tuple: ValueKind.JSON,
}
_UNKNOWN_KIND = 255


class PointRow(NamedTuple):
    """One measurepoint value of one device at one event time.

    A plain 7-tuple in the same order is accepted too.
    """

    product_key: str
    """Product of the device."""
    device_key: str
    """Device, unique within its product."""
    point_id: str
    """Measurepoint identifier from the thing model."""
    event_time_ms: int
    """Event time: the device's ``time`` field (or the receive time when absent). [ms]"""
    value: PointValue
    """The already-validated value."""
    quality: int | None = None
    """Quality code of a quality point (``{"value": v, "quality": q}``), else None."""
    resume: bool = False
    """True for historical data (``thing.measurepoint.resume``)."""


class EventRow(NamedTuple):
    """One event posted by a device (``thing.event.<eventId>.post``)."""

    product_key: str
    """Product of the device."""
    device_key: str
    """Device, unique within its product."""
    event_id: str
    """Event identifier from the thing model (it is part of the topic)."""
    event_time_ms: int
    """Event time. [ms]"""
    outputs: Mapping[str, Any]
    """The event's output parameters (JSON-serialisable)."""
    severity: str | None = None
    """Severity from the thing model (INFO, WARN, ERROR), if the caller knows it."""


class AttributeRow(NamedTuple):
    """One change of one device attribute; ``value`` None records a deletion."""

    product_key: str
    """Product of the device."""
    device_key: str
    """Device, unique within its product."""
    attribute_id: str
    """Attribute identifier from the thing model."""
    event_time_ms: int
    """When the change happened. [ms]"""
    value: PointValue | None
    """New value (JSON-serialisable), or None when the attribute was deleted."""


def encode_json(value: Any, row: int | None = None) -> str:
    """Serialise ``value`` as compact JSON text; refuse what JSON cannot carry and strings that
    are not encodable as UTF-8 (a lone surrogate, nested anywhere). ``row`` is named in errors.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"expected a JSON-serialisable value, got {_short(value)}{_at(row)}"
        ) from exc
    try:
        text.encode()  # what DuckDB does with it; a surrogate would fail the whole commit
    except UnicodeEncodeError as exc:
        bad = _bad_string(value)
        raise InvalidArgument(
            f"expected a JSON value whose strings are encodable as UTF-8, got {bad!r} "
            f"in {_short(value)}{_at(row)}"
        ) from exc
    return text


def check_text(value: object, what: str, row: int | None = None, *, optional: bool = False) -> None:
    """Refuse ``value`` unless it is a non-empty string encodable as UTF-8 (or None when
    ``optional``); the error names ``what``, the value and ``row``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"expected a non-empty string {what}, got {value!r}{_at(row)}")
    check_utf8(value, what, row)


def check_utf8(value: str, what: str, row: int | None = None) -> None:
    """Refuse the string ``value`` if it is not encodable as UTF-8 (it holds a lone surrogate,
    which a Python string may and DuckDB cannot store)."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"expected {what} encodable as UTF-8 (no lone surrogate), got {value!r}{_at(row)}"
        ) from exc


def check_event_ms(value: object, what: str = "event time", row: int | None = None) -> None:
    """Refuse ``value`` unless it is an integer in ``[MIN_EVENT_MS, MAX_EVENT_MS]``."""
    if (
        not isinstance(value, int | np.integer)
        or isinstance(value, bool)
        or not MIN_EVENT_MS <= value <= MAX_EVENT_MS
    ):
        raise InvalidArgument(
            f"expected an integer {what} in [{MIN_EVENT_MS}, {MAX_EVENT_MS}] [ms] (years "
            f"1677-2262), got {value!r}{_at(row)}"
        )


def check_record(
    product_key: object, device_key: object, ident: object, ms: object, row: int
) -> None:
    """Check the keys, id and event time of one event or attribute change."""
    check_text(product_key, "product_key", row)
    check_text(device_key, "device_key", row)
    check_text(ident, "id", row)
    check_event_ms(ms, "event time", row)


def check_series_keys(keys: Sequence[tuple[Any, ...]], rows: Iterable[int]) -> None:
    """Check the (product_key, device_key, point_id) of the measurepoint ``rows`` (indices
    into ``keys``): non-empty strings encodable as UTF-8. For series not stored yet only: a
    stored series' key passed this check when it was first stored."""
    for i in rows:
        product_key, device_key, point_id = keys[i]
        check_text(product_key, "product_key", i)
        check_text(device_key, "device_key", i)
        check_text(point_id, "point_id", i)


def _at(row: int | None) -> str:
    return "" if row is None else f" (row {row})"


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _bad_string(value: Any) -> str | None:
    """The first string in ``value`` (keys and items, nested) not encodable as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, Mapping):
        items: Iterable[Any] = itertools.chain.from_iterable(value.items())
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    for item in items:
        bad = _bad_string(item)
        if bad is not None:
            return bad
    return None


def decode_json(text: str | None) -> Any:
    """Inverse of :func:`encode_json`; None stays None."""
    return None if text is None else json.loads(text)


@dataclass(frozen=True, slots=True)
class PointColumns:
    """A batch of measurepoint rows turned into columns (built in the caller's thread)."""

    keys: list[tuple[str, str, str]]
    """(product_key, device_key, point_id) per row."""
    event_ms: npt.NDArray[np.int64]
    """Event time per row. [ms]"""
    kind: npt.NDArray[np.uint8]
    """:class:`ValueKind` per row."""
    num: npt.NDArray[np.float64]
    """Numeric value, NaN for non-numeric kinds."""
    text: npt.NDArray[np.object_] | None
    """String or JSON text per row (None entries for numbers); None when the batch has none."""
    quality: npt.NDArray[np.int32]
    """Quality per row, -1 for none."""
    resume: npt.NDArray[np.bool_]
    """Resume flag per row."""

    def __len__(self) -> int:
        return len(self.keys)


def _kind_of(value: object) -> int:
    """Slow path: classify values whose exact type is not in the fast table."""
    if isinstance(value, bool | np.bool_):
        return ValueKind.BOOL
    if isinstance(value, int | np.integer):
        return ValueKind.INT
    if isinstance(value, float | np.floating):
        return ValueKind.FLOAT
    if isinstance(value, str):
        return ValueKind.STRING
    if isinstance(value, Mapping | Sequence):
        return ValueKind.JSON
    raise InvalidArgument(
        f"expected a number, bool, string, mapping or sequence as a value, got {value!r}"
    )


def _event_ms_column(values: Sequence[Any]) -> npt.NDArray[np.int64]:
    """The event times as int64, each in ``[MIN_EVENT_MS, MAX_EVENT_MS]`` (checked on the
    column's minimum and maximum; the offending row is looked for only when one is out)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" or arr.min() < MIN_EVENT_MS or arr.max() > MAX_EVENT_MS:
        # not integers (floats, bools, ints beyond 64 bits as objects) or out of range
        for i, value in enumerate(values):
            check_event_ms(value, row=i)
    return arr.astype(np.int64, copy=False)


def _float_column(values: Sequence[Any]) -> npt.NDArray[np.float64]:
    try:
        return np.array(values, dtype=np.float64)
    except (OverflowError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"expected numeric values that fit a double, got {exc}") from exc


def _valid_quality(q: object) -> bool:
    return bool(isinstance(q, int | np.integer) and not isinstance(q, bool) and 0 <= q < 2**31)


def encode_points(rows: Sequence[PointRow] | Sequence[tuple[Any, ...]]) -> PointColumns:
    """Turn measurepoint rows into :class:`PointColumns`, validating types on the way."""
    n = len(rows)
    cols = list(zip(*rows, strict=False))
    if n and len(cols) != len(PointRow._fields):
        raise InvalidArgument(
            f"expected rows of {len(PointRow._fields)} fields {PointRow._fields}, "
            f"got {min(len(r) for r in rows)}"
        )
    if not n:
        return PointColumns(
            [],
            np.empty(0, np.int64),
            np.empty(0, np.uint8),
            np.empty(0, np.float64),
            None,
            np.empty(0, np.int32),
            np.empty(0, np.bool_),
        )
    pks, dks, pids, evs, values, qualities, resumes = cols
    keys = list(zip(pks, dks, pids, strict=True))
    event_ms = _event_ms_column(evs)

    kget = _KIND_BY_TYPE.get
    types = set(map(type, values))
    if len(types) == 1:  # the usual batch: one value type
        kinds = np.full(n, kget(types.pop(), _UNKNOWN_KIND), dtype=np.uint8)
    else:
        kinds = np.array([kget(type(v), _UNKNOWN_KIND) for v in values], dtype=np.uint8)
    if (kinds == _UNKNOWN_KIND).any():
        for i in np.flatnonzero(kinds == _UNKNOWN_KIND):
            kinds[i] = _kind_of(values[i])
    text: npt.NDArray[np.object_] | None = None
    if int(kinds.max()) <= NUMERIC_KINDS_MAX:
        num = _float_column(values)
    else:
        num = np.full(n, math.nan, dtype=np.float64)
        numeric = np.flatnonzero(kinds <= NUMERIC_KINDS_MAX)
        if numeric.size:
            num[numeric] = _float_column([values[i] for i in numeric])
        text = np.full(n, None, dtype=object)
        strings = np.flatnonzero(kinds == ValueKind.STRING)
        for i in strings:
            text[i] = values[i]
        if strings.size:
            try:  # one pass over all of them; DuckDB would fail the whole commit on a surrogate
                "".join(text[strings]).encode()
            except UnicodeEncodeError:
                for i in strings:
                    check_utf8(values[i], "a string value", int(i))
        for i in np.flatnonzero(kinds == ValueKind.JSON):
            value = values[i]
            text[i] = encode_json(list(value) if isinstance(value, tuple) else value, int(i))

    if qualities.count(None) == n:
        quality = np.full(n, _QUALITY_NONE, dtype=np.int32)
    else:
        given = np.asarray([q for q in qualities if q is not None])
        if given.dtype.kind not in "iu" or (given < 0).any() or (given > 2**31 - 1).any():
            bad = next(q for q in qualities if q is not None and not _valid_quality(q))
            raise InvalidArgument(f"expected a non-negative integer quality or None, got {bad!r}")
        quality = np.array([_QUALITY_NONE if q is None else q for q in qualities], dtype=np.int32)
    resume = np.array(resumes, dtype=np.bool_)
    return PointColumns(keys, event_ms, kinds, num, text, quality, resume)
