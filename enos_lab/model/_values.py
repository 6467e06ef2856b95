"""Checking and normalising values against a data spec (the hot path of a hub).

Theory of operation
-------------------
:func:`compile_check` turns a :class:`DataSpec` once into a small function ``check(raw) ->
value`` that either returns the normalised Python value or raises :class:`Mismatch` (a cheap
internal exception carrying what was expected and what was found). Thing models compile their
checks when they are built, so validating a message is one dict lookup and one call per point.
Callers turn a :class:`Mismatch` into a :class:`~enos_lab.errors.ValidationError` that names the
model and the element.

The accepted values and coercions are listed in the :mod:`enos_lab.model` docstring; everything
refused is EnOS code 1204 (model validation failed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ._types import MAX_ARRAY_ITEMS, MAX_STRING_BYTES, DataSpec, DataType, Param

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "QUALITY_MAX",
    "Check",
    "Mismatch",
    "compile_check",
    "compile_params",
    "describe",
    "split_quality",
    "valid_quality",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38
QUALITY_MAX = 9
"""Highest documented measurepoint quality (EnOS: integer 0-9)."""

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\Z")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+\Z")

Check = Callable[[Any], Any]
"""A compiled check: returns the normalised value or raises :class:`Mismatch`."""


class Mismatch(Exception):
    """Internal: a value does not fit (``expected`` text, ``found`` value, ``path`` inside it)."""

    __slots__ = ("expected", "found", "path")

    def __init__(self, expected: str, found: object, path: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.found = found
        self.path = path

    def at(self, step: str) -> Mismatch:
        """Prefix ``step`` (a member id or ``[i]``) to the location inside the value."""
        if not self.path or self.path.startswith("["):
            self.path = step + self.path
        else:
            self.path = f"{step}.{self.path}"
        return self


_JSON_NAMES = {
    str: "string",
    bool: "bool",
    int: "int",
    float: "float",
    dict: "object",
    list: "array",
    type(None): "null",
}


def describe(value: object) -> str:
    """Short description of a found value for error messages: JSON type and (clipped) repr."""
    kind = _JSON_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def _check_int(raw: Any) -> int:
    if type(raw) is int:
        if INT32_MIN <= raw <= INT32_MAX:
            return raw
        raise Mismatch("INT in int32 range -2147483648..2147483647", raw)
    if type(raw) is float and raw.is_integer() and INT32_MIN <= raw <= INT32_MAX:
        return int(raw)
    raise Mismatch("INT (a JSON integer)", raw)


def _check_double(raw: Any) -> float:
    if type(raw) is float:
        if math.isfinite(raw):
            return raw
        raise Mismatch("DOUBLE (a finite number)", raw)
    if type(raw) is int:
        return float(raw)
    raise Mismatch("DOUBLE (a JSON number)", raw)


def _check_float(raw: Any) -> float:
    if type(raw) is float:
        if math.isfinite(raw) and -_FLOAT32_MAX <= raw <= _FLOAT32_MAX:
            return raw
        raise Mismatch("FLOAT (a finite number within float32 range)", raw)
    if type(raw) is int:
        if -_FLOAT32_MAX <= raw <= _FLOAT32_MAX:
            return float(raw)
        raise Mismatch("FLOAT (a finite number within float32 range)", raw)
    raise Mismatch("FLOAT (a JSON number)", raw)


def _check_bool(raw: Any) -> bool:
    if type(raw) is bool:
        return raw
    if type(raw) is int and raw in (0, 1):
        return raw == 1
    raise Mismatch("BOOL (true/false or 0/1)", raw)


def _check_timestamp(raw: Any) -> int:
    if type(raw) is int and _INT64_MIN <= raw <= _INT64_MAX:
        return raw
    if type(raw) is float and raw.is_integer() and _INT64_MIN <= raw <= _INT64_MAX:
        return int(raw)
    raise Mismatch("TIMESTAMP (epoch milliseconds as an integer)", raw)


def _check_date(raw: Any) -> str:
    if type(raw) is str:
        match = _DATE.match(raw)
        if match is not None:
            try:
                year, month, day, hour, minute, second = (int(part) for part in match.groups())
                datetime(year, month, day, hour, minute, second)  # calendar check only
            except ValueError:
                pass
            else:
                return raw
    raise Mismatch("DATE ('yyyy-MM-dd HH:mm:ss')", raw)


def _check_file(raw: Any) -> str:
    if type(raw) is str and _URI.match(raw):
        return raw
    raise Mismatch("FILE (a URI such as 'https://host/f' or 'local://f')", raw)


def _string_check(max_length: int | None) -> Check:
    limit = MAX_STRING_BYTES if max_length is None else max_length
    expected = f"STRING of at most {limit} UTF-8 bytes"

    def check(raw: Any) -> str:
        if type(raw) is str:
            # len(raw) <= limit // 4 cannot exceed the limit in UTF-8 (<= 4 bytes per char).
            if len(raw) * 4 <= limit or len(raw.encode("utf-8")) <= limit:
                return raw
            raise Mismatch(f"{expected} (found {len(raw.encode('utf-8'))} bytes)", raw)
        raise Mismatch(expected, raw)

    return check


def _enum_check(spec: DataSpec) -> Check:
    keys = frozenset(spec.enum_values)
    shown = ", ".join(sorted(keys, key=lambda k: (len(k), k)))
    if spec.enum_type is DataType.INT:
        int_keys = frozenset(int(k) for k in keys)

        def check_int(raw: Any) -> int:
            if type(raw) is int and raw in int_keys:
                return raw
            raise Mismatch(f"ENUM int key, one of {shown}", raw)

        return check_int

    def check_str(raw: Any) -> str:
        if type(raw) is str and raw in keys:
            return raw
        raise Mismatch(f"ENUM string key, one of {shown}", raw)

    return check_str


def _numeric_from_string(item: Check, item_type: DataType) -> Check:
    def check(raw: Any) -> Any:
        if type(raw) is str:
            text = raw.strip()
            try:
                number: int | float = int(text) if item_type is DataType.INT else float(text)
            except ValueError:
                raise Mismatch(f"{item_type.value} (a number or numeric string)", raw) from None
            return item(number)
        return item(raw)

    return check


def _array_check(spec: DataSpec) -> Check:
    item_type = spec.item_type
    assert item_type is not None  # guaranteed by DataSpec
    item = _SCALAR[item_type] if item_type is not DataType.STRING else _string_check(None)
    if item_type is not DataType.STRING:
        item = _numeric_from_string(item, item_type)
    expected = f"ARRAY of {item_type.value} (at most {MAX_ARRAY_ITEMS} items)"

    def check(raw: Any) -> list[Any]:
        if type(raw) is not list:
            raise Mismatch(expected, raw)
        if len(raw) > MAX_ARRAY_ITEMS:
            raise Mismatch(f"{expected}, found {len(raw)} items", raw)
        out = []
        for index, value in enumerate(raw):
            try:
                out.append(item(value))
            except Mismatch as exc:
                raise exc.at(f"[{index}]") from None
        return out

    return check


def _struct_check(spec: DataSpec) -> Check:
    members = compile_params(spec.members)
    required = tuple(m.identifier for m in spec.members if m.required)
    names = ", ".join(m.identifier for m in spec.members)
    expected = f"STRUCT (an object with members {names})"

    def check(raw: Any) -> dict[str, Any]:
        if type(raw) is not dict:
            raise Mismatch(expected, raw)
        out = {}
        for key, value in raw.items():
            member = members.get(key)
            if member is None:
                raise Mismatch(f"a member of {names}", key, str(key))
            try:
                out[key] = member(value)
            except Mismatch as exc:
                raise exc.at(str(key)) from None
        for key in required:
            if key not in out:
                raise Mismatch(f"required member {key!r}", raw, key)
        return out

    return check


_SCALAR: dict[DataType, Check] = {
    DataType.INT: _check_int,
    DataType.FLOAT: _check_float,
    DataType.DOUBLE: _check_double,
    DataType.BOOL: _check_bool,
    DataType.TIMESTAMP: _check_timestamp,
    DataType.DATE: _check_date,
    DataType.FILE: _check_file,
}


def compile_check(spec: DataSpec) -> Check:
    """Build the check function for ``spec`` (see the module docstring for what it accepts)."""
    t = spec.data_type
    if t in _SCALAR:
        return _SCALAR[t]
    if t is DataType.STRING:
        return _string_check(spec.max_length)
    if t is DataType.ENUM:
        return _enum_check(spec)
    if t is DataType.ARRAY:
        return _array_check(spec)
    return _struct_check(spec)


def compile_params(params: tuple[Param, ...]) -> dict[str, Check]:
    """Checks for a parameter list, by identifier."""
    return {p.identifier: compile_check(p.spec) for p in params}


def valid_quality(quality: object) -> bool:
    """Whether ``quality`` is a documented measurepoint quality: an int 0..:data:`QUALITY_MAX`."""
    return type(quality) is int and 0 <= quality <= QUALITY_MAX


def split_quality(raw: Mapping[str, Any]) -> tuple[Any, int | None]:
    """Split a quality encoding ``{"value": v, "quality": q}`` into ``(v, q)``.

    Raises :class:`Mismatch` when keys other than ``value``/``quality`` appear, ``value`` is
    missing or ``quality`` is not an int 0..9.
    """
    if "value" not in raw or not raw.keys() <= {"value", "quality"}:
        raise Mismatch('{"value": number, "quality": int 0..9}', dict(raw))
    quality = raw.get("quality")
    if quality is not None and not valid_quality(quality):
        raise Mismatch(f"quality as an int 0..{QUALITY_MAX}", quality, "quality")
    return raw["value"], quality
