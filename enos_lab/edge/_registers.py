"""Registers of field devices: the Modbus tables, register types, the word codec and the rows
of a point table.

Theory of operation
-------------------
A point's value has two levels here (a third, the model's, is :mod:`enos_lab.edge._points`'s):

``raw``
    What the registers hold: an int of the register type's range, a float, or a bool.
    :func:`encode_words` / :func:`decode_words` convert raw values to and from 16-bit words;
    they are the only register codec of the package.
``field``
    ``raw * scale + offset`` in the row's ``unit``: the engineering value a device's manual
    lists (:meth:`PointRow.to_field` / :meth:`PointRow.to_raw`). ``FieldServer.set`` takes it.

Words are big-endian (MODBUS Application Protocol V1.1b3, 4.2: "a big-Endian representation
for addresses and data items"); the standard says nothing about values wider than a register,
so ``word_order`` says which word comes first: ``big`` the most significant (the common
"ABCD"), ``little`` the least significant ("CDAB"; for 64-bit values all four words reversed).
float32 values decode to the shortest decimal that gives the same 32 bits (230.1, not
230.10000610351562), so a decoded value encodes back to the same words.

A :class:`PointRow` is one line of a point table, parsed from its text cells by
:func:`parse_row` (columns: see :mod:`enos_lab.edge._points`); a :class:`ReadGroup` is one read
request covering contiguous addresses of one table, which decodes the rows it covers.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any

from ..errors import InvalidArgument
from ..model import Conversion

__all__ = [
    "COLUMNS",
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "REQUIRED_COLUMNS",
    "UNIT_IDS",
    "PointRow",
    "ReadGroup",
    "RegisterTable",
    "RegisterType",
    "WordOrder",
    "decode_words",
    "encode_words",
    "parse_row",
]

MAX_READ_REGISTERS = 125
"""Most registers one read may ask for (MODBUS Application Protocol V1.1b3, 6.3 and 6.4). [-]"""
MAX_READ_BITS = 2000
"""Most coils or discrete inputs one read may ask for (same, 6.1 and 6.2). [-]"""

UNIT_IDS = range(1, 248)
"""Unit identifiers a field device may have (MODBUS over serial line V1.02, 2.2). [-]"""
_ADDRESSES = range(0, 65536)


class RegisterTable(Enum):
    """The four Modbus data tables (MODBUS Application Protocol V1.1b3, 4.3)."""

    COIL = "coil"
    """Single bits, read-write (function codes 1, 5, 15)."""
    DISCRETE_INPUT = "discrete_input"
    """Single bits, read-only (function code 2)."""
    HOLDING = "holding"
    """16-bit registers, read-write (function codes 3, 6, 16)."""
    INPUT = "input"
    """16-bit registers, read-only (function code 4)."""

    @property
    def bits(self) -> bool:
        """True for the bit tables (coils, discrete inputs)."""
        return self in (RegisterTable.COIL, RegisterTable.DISCRETE_INPUT)

    @property
    def read_limit(self) -> int:
        """Most items one read of this table may ask for. [-]"""
        return MAX_READ_BITS if self.bits else MAX_READ_REGISTERS


class RegisterType(Enum):
    """How a point's value is laid out in registers."""

    INT16 = "int16"
    """Signed 16-bit integer, one register."""
    UINT16 = "uint16"
    """Unsigned 16-bit integer, one register."""
    INT32 = "int32"
    """Signed 32-bit integer, two registers."""
    UINT32 = "uint32"
    """Unsigned 32-bit integer, two registers."""
    FLOAT32 = "float32"
    """IEEE 754 single precision, two registers."""
    FLOAT64 = "float64"
    """IEEE 754 double precision, four registers."""
    BOOL = "bool"
    """One coil or discrete input, or one bit of a register."""

    @property
    def words(self) -> int:
        """Registers one value takes (0 for ``bool``: a bit). [-]"""
        return _LAYOUT[self][1]

    @property
    def integer(self) -> bool:
        """True for the integer types."""
        return self in _INT_RANGES

    @property
    def range(self) -> tuple[int, int]:
        """Smallest and largest value of an integer type; InvalidArgument for the others."""
        try:
            return _INT_RANGES[self]
        except KeyError:
            raise InvalidArgument(f"register type {self.value!r} is not an integer type") from None


_LAYOUT: dict[RegisterType, tuple[str, int]] = {
    RegisterType.INT16: (">h", 1),
    RegisterType.UINT16: (">H", 1),
    RegisterType.INT32: (">i", 2),
    RegisterType.UINT32: (">I", 2),
    RegisterType.FLOAT32: (">f", 2),
    RegisterType.FLOAT64: (">d", 4),
    RegisterType.BOOL: ("", 0),
}
_INT_RANGES: dict[RegisterType, tuple[int, int]] = {
    RegisterType.INT16: (-(2**15), 2**15 - 1),
    RegisterType.UINT16: (0, 2**16 - 1),
    RegisterType.INT32: (-(2**31), 2**31 - 1),
    RegisterType.UINT32: (0, 2**32 - 1),
}


class WordOrder(Enum):
    """Which register of a multi-register value comes first (bytes in a register: big-endian)."""

    BIG = "big"
    """The most significant word first ("ABCD", the common order)."""
    LITTLE = "little"
    """The least significant word first ("CDAB")."""


# --------------------------------------------------------------------------- the codec


def encode_words(value: int | float, rtype: RegisterType, word_order: WordOrder) -> list[int]:
    """The registers (16-bit words, 0..65535) holding raw ``value`` as ``rtype``.

    Integer types take an ``int`` in their range; float types any real number (float32 rounds
    to the nearest single; beyond its range is refused). Raises InvalidArgument naming the value.
    """
    fmt, _ = _LAYOUT[rtype]
    if not fmt:
        raise InvalidArgument("a bool is a bit, not registers: use a coil or a register's bit")
    if rtype.integer:
        low, high = rtype.range
        if type(value) is not int or not low <= value <= high:
            raise InvalidArgument(
                f"{value!r} does not fit {rtype.value}: expected an int in {low}..{high}"
            )
    elif type(value) not in (int, float):
        raise InvalidArgument(f"{value!r} does not fit {rtype.value}: expected a number")
    try:
        data = struct.pack(fmt, value)
    except (OverflowError, struct.error) as exc:
        raise InvalidArgument(f"{value!r} does not fit {rtype.value}: {exc}") from None
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if word_order is WordOrder.LITTLE:
        words.reverse()
    return words


def decode_words(words: Sequence[int], rtype: RegisterType, word_order: WordOrder) -> int | float:
    """The raw value that the registers ``words`` hold as ``rtype`` (inverse of
    :func:`encode_words`; float32 as the shortest decimal of the same bits)."""
    fmt, count = _LAYOUT[rtype]
    if not fmt:
        raise InvalidArgument("a bool is a bit, not registers: use a coil or a register's bit")
    if len(words) != count:
        raise InvalidArgument(f"{rtype.value} takes {count} registers, got {len(words)}")
    ordered = reversed(words) if word_order is WordOrder.LITTLE else words
    data = b"".join(int(w).to_bytes(2, "big") for w in ordered)
    value: int | float = struct.unpack(fmt, data)[0]
    if rtype is RegisterType.FLOAT32 and math.isfinite(value):
        value = _shortest_float32(value, data)
    return value


def _shortest_float32(value: float, packed: bytes) -> float:
    """The shortest decimal that packs to the same float32 (what numpy prints)."""
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return value  # pragma: no cover - 9 significant digits always round-trip a float32


def _exact(number: float) -> Fraction:
    """A float as the decimal it was written as (0.1 -> 1/10)."""
    return Fraction(repr(float(number)))


# --------------------------------------------------------------------------- rows

_ITEM = re.compile(r"(?P<id>[^\[\]]+)\[(?P<index>[0-9]{1,3})\]\Z")


@dataclass(frozen=True, slots=True)
class PointRow:
    """One row of a point table: where a point lives and how its registers encode it.

    ``name`` is the ``point`` column as written (``active_power``, ``W``, ``voltage[1]``);
    ``point`` the id without an item index and ``index`` the item index or None. ``line`` is
    the row's line in its source (the header is line 1).
    """

    unit_id: int
    table: RegisterTable
    address: int
    type: RegisterType
    name: str
    word_order: WordOrder = WordOrder.BIG
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    line: int = 0
    point: str = field(init=False)
    index: int | None = field(init=False)
    _scale: Conversion = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()
        match = _ITEM.match(self.name)
        point, index = (match["id"], int(match["index"])) if match else (self.name, None)
        object.__setattr__(self, "point", point)
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "_scale", Conversion(_exact(self.scale), _exact(self.offset)))

    def _check(self) -> None:
        """Refuse a row whose parts do not go together (InvalidArgument naming the value)."""
        table, rtype, bit = self.table, self.type, self.bit
        if self.unit_id not in UNIT_IDS:
            raise InvalidArgument(f"unit_id {self.unit_id} is outside 1..247")
        if not self.name:
            raise InvalidArgument("point is empty")
        if self.scale == 0:
            raise InvalidArgument("scale 0 would make every value the offset")
        if not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise InvalidArgument(f"scale {self.scale!r} and offset {self.offset!r}: not finite")
        if rtype is RegisterType.BOOL:
            if table.bits and bit is not None:
                raise InvalidArgument(f"a {table.value} is one bit: bit {bit} does not apply")
            if not table.bits and bit is None:
                raise InvalidArgument(f"a bool in a {table.value} register needs a bit (0..15)")
            if (self.scale, self.offset) != (1.0, 0.0):
                raise InvalidArgument("a bool takes no scale or offset")
        else:
            if table.bits:
                raise InvalidArgument(
                    f"a {table.value} holds one bit: type {rtype.value} needs registers"
                )
            if bit is not None:
                raise InvalidArgument(f"bit {bit} applies only to type bool")
        if bit is not None and bit not in range(16):
            raise InvalidArgument(f"bit {bit} is outside 0..15")
        if self.address not in _ADDRESSES:
            raise InvalidArgument(f"address {self.address} is outside 0..65535")
        span = 1 if table.bits or rtype is RegisterType.BOOL else rtype.words
        if self.address + span > _ADDRESSES.stop:
            raise InvalidArgument(
                f"address {self.address} + {span} registers runs past the last address 65535"
            )

    @property
    def words(self) -> int:
        """Registers the point takes (1 for a bit of a register, 0 in a bit table). [-]"""
        if self.table.bits:
            return 0
        return 1 if self.type is RegisterType.BOOL else self.type.words

    @property
    def span(self) -> int:
        """Addresses the point takes in its table (coils: 1). [-]"""
        return 1 if self.table.bits else self.words

    @property
    def integral(self) -> bool:
        """True when scale and offset keep integers integers."""
        return self._scale.scale.denominator == 1 and self._scale.shift.denominator == 1

    def to_field(self, raw: int | float | bool) -> int | float | bool:
        """The field value (``raw * scale + offset``) of a raw value; bools stay bools, and
        ints stay ints when scale and offset are integral."""
        if type(raw) is bool:
            return raw
        conv = self._scale
        if conv.identity:
            return raw
        if type(raw) is int and self.integral:
            return int(raw * conv.scale + conv.shift)
        return conv.apply(raw)

    def to_raw(self, value: Any) -> int | float | bool:
        """The raw value of field value ``value`` (integer types round to the nearest).

        Raises InvalidArgument naming the point when ``value`` cannot be held.
        """
        what = f"unit {self.unit_id} point {self.name!r}"
        if self.type is RegisterType.BOOL:
            if value in (0, 1) and type(value) in (bool, int):
                return bool(value)
            raise InvalidArgument(f"{what} is a bool: expected True/False or 0/1, got {value!r}")
        if type(value) not in (int, float):
            raise InvalidArgument(f"{what} ({self.type.value}): expected a number, got {value!r}")
        conv = self._scale
        raw: int | float = value
        if not conv.identity:
            if type(value) is int and self.integral and conv.scale in (1, -1):
                raw = int((value - conv.shift) / conv.scale)
            else:
                raw = float((value - float(conv.shift)) / float(conv.scale))
        if self.type.integer:
            if type(raw) is float:
                if not math.isfinite(raw):
                    raise InvalidArgument(f"{what} ({self.type.value}): cannot hold {value!r}")
                raw = round(raw)
            low, high = self.type.range
            if not low <= raw <= high:
                raise InvalidArgument(
                    f"{what}: {value!r} is raw {raw}, beyond {self.type.value} ({low}..{high})"
                )
        return raw

    def decode(self, words: Sequence[int]) -> int | float:
        """The field value of the point's registers (a register type, not a bit)."""
        return self.to_field(decode_words(words, self.type, self.word_order))

    def encode(self, value: Any) -> list[int]:
        """The registers holding field value ``value`` (a register type, not a bit)."""
        raw = self.to_raw(value)
        return encode_words(raw, self.type, self.word_order)


@dataclass(frozen=True, slots=True)
class ReadGroup:
    """One read request of a poll: contiguous addresses of one table of one unit.

    ``count`` is in registers (or bits for the bit tables), at most the table's read limit.
    """

    unit_id: int
    table: RegisterTable
    address: int
    count: int
    rows: tuple[PointRow, ...]

    def decode(self, data: Sequence[int] | Sequence[bool]) -> dict[str, Any]:
        """Field values by point name from the words (or bits) this group's read returned.

        Raises InvalidArgument when ``data`` holds fewer items than ``count``.
        """
        if len(data) < self.count:
            raise InvalidArgument(
                f"unit {self.unit_id} {self.table.value} {self.address}..."
                f"{self.address + self.count - 1}: the answer holds {len(data)} of "
                f"{self.count} {'bits' if self.table.bits else 'registers'}"
            )
        out: dict[str, Any] = {}
        for row in self.rows:
            at = row.address - self.address
            if self.table.bits:
                out[row.name] = bool(data[at])
            elif row.bit is not None:
                out[row.name] = bool((int(data[at]) >> row.bit) & 1)
            else:
                out[row.name] = row.decode([int(w) for w in data[at : at + row.words]])
        return out


# --------------------------------------------------------------------------- parsing

COLUMNS = (
    "unit_id",
    "table",
    "address",
    "type",
    "word_order",
    "bit",
    "scale",
    "offset",
    "unit",
    "point",
    "description",
)
"""The columns a point table may have (see :mod:`enos_lab.edge._points`)."""
REQUIRED_COLUMNS = ("unit_id", "table", "address", "type", "point")
"""The columns every point table has."""


def _enum(kind: type[Any], text: str, column: str) -> Any:
    try:
        return kind(text.strip().lower())
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise InvalidArgument(f"{column} {text!r} is not one of {choices}") from None


def _int(text: str, column: str, allowed: range) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidArgument(f"{column} {text!r} is not an integer") from None
    if value not in allowed:
        raise InvalidArgument(f"{column} {value} is outside {allowed.start}..{allowed.stop - 1}")
    return value


def _number(text: str, column: str, default: float) -> float:
    if not text.strip():
        return default
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidArgument(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidArgument(f"{column} {text!r} is not a finite number")
    return value


def _parse_cells(cells: Mapping[str, str], line: int) -> PointRow:
    """A row from its text cells; InvalidArgument (without the source: the caller adds it)."""
    for column in REQUIRED_COLUMNS:
        if not cells.get(column, "").strip():
            raise InvalidArgument(f"{column} is empty")
    table = _enum(RegisterTable, cells["table"], "table")
    rtype = _enum(RegisterType, cells["type"], "type")
    word_order = _enum(WordOrder, cells.get("word_order", "") or "big", "word_order")
    bit_text = cells.get("bit", "").strip()
    bit = _int(bit_text, "bit", range(16)) if bit_text else None
    return PointRow(
        unit_id=_int(cells["unit_id"], "unit_id", UNIT_IDS),
        table=table,
        address=_int(cells["address"], "address", _ADDRESSES),
        type=rtype,
        name=cells["point"].strip(),
        word_order=word_order,
        bit=bit,
        scale=_number(cells.get("scale", ""), "scale", 1.0),
        offset=_number(cells.get("offset", ""), "offset", 0.0),
        unit=cells.get("unit", "").strip() or None,
        line=line,
    )


def _cells(record: Mapping[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in record.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            text = ""
        elif isinstance(value, float) and value.is_integer():
            text = str(int(value))
        else:
            text = str(value)
        out[str(key).strip().lower()] = text
    return out


def parse_row(cells: Mapping[str, object], line: int, source: str) -> PointRow:
    """Row ``line`` of ``source`` from its cells; InvalidArgument naming source and line."""
    normalised = _cells(cells)
    unknown = sorted(set(normalised) - set(COLUMNS))
    missing = [c for c in REQUIRED_COLUMNS if c not in normalised]
    if unknown or missing:
        problem = f"unknown columns {unknown}" if unknown else f"missing columns {missing}"
        raise InvalidArgument(
            f"{source}: {problem} (columns: {', '.join(COLUMNS)}; required: "
            f"{', '.join(REQUIRED_COLUMNS)})"
        )
    try:
        return _parse_cells(normalised, line)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{source} line {line}: {exc}") from None
