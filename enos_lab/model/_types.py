"""Building blocks of a thing model: kinds (Enums), texts, units, data specs and elements.

Every class here is an immutable value (frozen slots dataclass). Mappings passed in are copied
into read-only views, so a model can be shared between threads without locks.

Glossary: an *element* is one attribute, measurepoint, service or event of a model; its
``identifier`` is the JSON key a device uses for it (``point_id`` for measurepoints).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from ..errors import ModelError

__all__ = [
    "MAX_ARRAY_ITEMS",
    "MAX_STRING_BYTES",
    "Attribute",
    "CallType",
    "DataSpec",
    "DataType",
    "Event",
    "EventType",
    "I18nText",
    "Measurepoint",
    "Multiplier",
    "Param",
    "Service",
    "SignalType",
    "Unit",
    "check_identifier",
    "frozen_mapping",
    "reduce_by_init",
]

MAX_STRING_BYTES = 1024
"""Upper bound of a STRING's ``maxLength`` (EnOS: 1..1024). [bytes, UTF-8]"""

MAX_ARRAY_ITEMS = 128
"""Most items an ARRAY value may hold (EnOS: <= 128). [items]"""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}\Z")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def frozen_mapping(items: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return a read-only copy of ``items`` (the empty mapping is shared)."""
    if not items:
        return _EMPTY
    return MappingProxyType(dict(items))


def _construct(cls: type[Any], kwargs: dict[str, Any]) -> Any:
    return cls(**kwargs)


def reduce_by_init(obj: Any) -> tuple[Any, ...]:
    """``__reduce__`` for frozen dataclasses holding read-only mappings or compiled checks:
    pickle (and deep-copy) the constructor arguments and rebuild through ``__init__``."""
    kwargs = {}
    for f in dataclasses.fields(obj):
        if f.init:
            value = getattr(obj, f.name)
            kwargs[f.name] = dict(value) if isinstance(value, MappingProxyType) else value
    return (_construct, (type(obj), kwargs))


def check_identifier(identifier: object, what: str) -> str:
    """Return ``identifier`` if it is a valid element identifier, else raise ModelError.

    Identifiers start with a letter or ``_`` and hold letters, digits, ``_`` and ``.`` (EnOS
    standard points look like ``INV.GenActivePW``); at most 100 characters.
    """
    if not isinstance(identifier, str) or not _IDENTIFIER.match(identifier):
        found = repr(identifier)
        if len(found) > 60:  # ids come from devices too: name a long one, do not echo it whole
            found = found[:57] + "..."
        raise ModelError(
            f"{what}: expected an identifier ([A-Za-z_][A-Za-z0-9_.]*, <= 100 chars), found {found}"
        )
    return identifier


class DataType(Enum):
    """Data type of a value in a thing model (REST ``dataType``)."""

    INT = "INT"
    """32-bit signed integer."""
    FLOAT = "FLOAT"
    """Single-precision number."""
    DOUBLE = "DOUBLE"
    """Double-precision number."""
    BOOL = "BOOL"
    """Boolean (0/1 in the EnOS console)."""
    ENUM = "ENUM"
    """One of a fixed set of int or string keys."""
    STRING = "STRING"
    """Text of at most ``max_length`` UTF-8 bytes."""
    TIMESTAMP = "TIMESTAMP"
    """Epoch milliseconds, UTC. [ms]"""
    DATE = "DATE"
    """Text ``yyyy-MM-dd HH:mm:ss``."""
    STRUCT = "STRUCT"
    """JSON object of named members (one level; members cannot be structs)."""
    ARRAY = "ARRAY"
    """JSON list of one item type (INT, FLOAT, DOUBLE or STRING), at most 128 items."""
    FILE = "FILE"
    """URI of a file."""


ARRAY_ITEM_TYPES = frozenset({DataType.INT, DataType.FLOAT, DataType.DOUBLE, DataType.STRING})
NUMERIC_TYPES = frozenset({DataType.INT, DataType.FLOAT, DataType.DOUBLE})
_NO_UNIT_TYPES = frozenset({DataType.ENUM, DataType.STRUCT})


class SignalType(Enum):
    """Kind of signal a measurepoint carries (REST ``signalType``)."""

    AI = "AI"
    """Analog input: a continuous value that can be aggregated (power, temperature)."""
    DI = "DI"
    """Digital input: a state (on/off, mode)."""
    PI = "PI"
    """Pulse input: a counter such as energy."""
    GENERIC = "GENERIC"
    """Anything else."""


class CallType(Enum):
    """How a service is invoked (REST ``callType``)."""

    SYNC = "SYNC"
    """The caller waits for the device's reply (with a timeout)."""
    ASYNC = "ASYNC"
    """The call returns at once; the device's reply is stored when it arrives."""


class EventType(Enum):
    """Severity of an event (REST ``eventType``)."""

    INFO = "INFO"
    """Information."""
    WARN = "WARN"
    """Warning."""
    ERROR = "ERROR"
    """Error / fault."""


class Multiplier(Enum):
    """SI prefix applied to a unit (REST ``unit.multiplier``); ``factor`` is its value."""

    YOTTA = 24
    ZETTA = 21
    EXA = 18
    PETA = 15
    TERA = 12
    GIGA = 9
    MEGA = 6
    KILO = 3
    HECTO = 2
    DECA = 1
    ONE = 0
    DECI = -1
    CENTI = -2
    MILLI = -3
    MICRO = -6
    NANO = -9
    PICO = -12
    FEMTO = -15
    ATTO = -18
    ZEPTO = -21
    YOCTO = -24

    @property
    def exponent(self) -> int:
        """Power of ten of the prefix (``KILO`` -> 3)."""
        return int(self.value)

    @property
    def factor(self) -> float:
        """Value of the prefix (``KILO`` -> 1000.0)."""
        return float(10.0**self.value)


@dataclass(frozen=True, slots=True)
class I18nText:
    """A text with a default value and optional per-locale translations (``en_US`` -> text)."""

    default: str
    translations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.default, str):
            raise ModelError(f"i18n text: expected a string default, found {self.default!r}")
        object.__setattr__(self, "translations", frozen_mapping(self.translations))

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init(self)

    def text(self, locale: str | None = None) -> str:
        """The text for ``locale`` if translated, else the default."""
        if locale is None:
            return self.default
        return self.translations.get(locale, self.default)


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit of measure: ``unit_id`` (e.g. ``"kW"``, see :mod:`enos_lab.model` unit table) and
    an SI ``multiplier`` applied on top of it (EnOS ``{unitId, multiplier}``)."""

    unit_id: str
    multiplier: Multiplier = Multiplier.ONE


@dataclass(frozen=True, slots=True)
class DataSpec:
    """Data type plus its definition (REST ``dataType`` + ``dataDefinition``).

    Only the fields that belong to ``data_type`` may be set:

    - STRING: ``max_length`` (1..1024 UTF-8 bytes; ``None`` means the EnOS ceiling 1024);
    - ENUM: ``enum_type`` (INT or STRING), ``enum_values`` (key as string -> label, at least one),
      ``enum_default`` (one of the keys, optional);
    - BOOL: ``bool_labels`` (``"true"``/``"false"`` -> label, optional);
    - STRUCT: ``members`` (at least one; no struct members; unique identifiers);
    - ARRAY: ``item_type`` (INT, FLOAT, DOUBLE or STRING).
    """

    data_type: DataType
    max_length: int | None = None
    enum_type: DataType | None = None
    enum_values: Mapping[str, I18nText] = field(default_factory=dict)
    enum_default: str | None = None
    bool_labels: Mapping[str, I18nText] = field(default_factory=dict)
    members: tuple[Param, ...] = ()
    item_type: DataType | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "enum_values", frozen_mapping(self.enum_values))
        object.__setattr__(self, "bool_labels", frozen_mapping(self.bool_labels))
        object.__setattr__(self, "members", tuple(self.members))
        t = self.data_type
        if not isinstance(t, DataType):
            raise ModelError(f"data spec: expected a DataType, found {t!r}")
        if self.max_length is not None and (
            t is not DataType.STRING
            or type(self.max_length) is not int
            or not 1 <= self.max_length <= MAX_STRING_BYTES
        ):
            raise ModelError(
                f"data spec {t.value}: max_length must be an int 1..{MAX_STRING_BYTES} "
                f"on a STRING, found {self.max_length!r}"
            )
        if t is DataType.ENUM:
            self._check_enum()
        elif self.enum_type is not None or self.enum_values or self.enum_default is not None:
            raise ModelError(f"data spec {t.value}: enum fields are only allowed on ENUM")
        if self.bool_labels and (
            t is not DataType.BOOL or not set(self.bool_labels) <= {"true", "false"}
        ):
            raise ModelError(
                f"data spec {t.value}: bool_labels must be on a BOOL with keys 'true'/'false', "
                f"found {sorted(self.bool_labels)}"
            )
        if t is DataType.STRUCT:
            if not self.members:
                raise ModelError("data spec STRUCT: expected at least one member, found none")
            seen: set[str] = set()
            for member in self.members:
                if not isinstance(member, Param):
                    raise ModelError(f"data spec STRUCT: members must be Param, found {member!r}")
                if member.spec.data_type is DataType.STRUCT:
                    raise ModelError(
                        f"data spec STRUCT: member {member.identifier!r} is a STRUCT; "
                        "structs are one level deep"
                    )
                if member.identifier in seen:
                    raise ModelError(f"data spec STRUCT: duplicate member {member.identifier!r}")
                seen.add(member.identifier)
        elif self.members:
            raise ModelError(f"data spec {t.value}: members are only allowed on STRUCT")
        if t is DataType.ARRAY:
            if self.item_type not in ARRAY_ITEM_TYPES:
                raise ModelError(
                    "data spec ARRAY: item_type must be INT, FLOAT, DOUBLE or STRING, "
                    f"found {self.item_type!r}"
                )
        elif self.item_type is not None:
            raise ModelError(f"data spec {t.value}: item_type is only allowed on ARRAY")

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init(self)

    def _check_enum(self) -> None:
        if self.enum_type not in (DataType.INT, DataType.STRING):
            raise ModelError(
                f"data spec ENUM: enum_type must be INT or STRING, found {self.enum_type!r}"
            )
        if not self.enum_values:
            raise ModelError("data spec ENUM: expected at least one enum value, found none")
        for key in self.enum_values:
            if not isinstance(key, str):
                raise ModelError(f"data spec ENUM: keys are strings, found {key!r}")
            if self.enum_type is DataType.INT:
                try:
                    ok = str(int(key)) == key
                except ValueError:
                    ok = False
                if not ok:
                    raise ModelError(f"data spec ENUM(INT): key {key!r} is not an integer")
        if self.enum_default is not None and self.enum_default not in self.enum_values:
            raise ModelError(
                f"data spec ENUM: default {self.enum_default!r} is not one of "
                f"{sorted(self.enum_values)}"
            )


def _check_unit(owner: str, spec: DataSpec, unit: Unit | None) -> None:
    if unit is None:
        return
    if not isinstance(unit, Unit):
        raise ModelError(f"{owner}: unit must be a Unit, found {unit!r}")
    if spec.data_type in _NO_UNIT_TYPES:
        raise ModelError(f"{owner}: a {spec.data_type.value} cannot have a unit")


@dataclass(frozen=True, slots=True)
class Param:
    """A typed parameter: a struct member, a service input/output or an event output.

    ``required`` parameters must be present in the value (missing optional ones are left out).
    """

    identifier: str
    spec: DataSpec
    name: I18nText | None = None
    unit: Unit | None = None
    required: bool = False

    def __post_init__(self) -> None:
        check_identifier(self.identifier, "parameter")
        _check_unit(f"parameter {self.identifier!r}", self.spec, self.unit)


@dataclass(frozen=True, slots=True)
class Attribute:
    """A static property of a device (rated power, location), set by device or cloud."""

    identifier: str
    spec: DataSpec
    name: I18nText | None = None
    desc: I18nText | None = None
    unit: Unit | None = None
    required: bool = False
    default_value: Any = None

    def __post_init__(self) -> None:
        check_identifier(self.identifier, "attribute")
        _check_unit(f"attribute {self.identifier!r}", self.spec, self.unit)


@dataclass(frozen=True, slots=True)
class Measurepoint:
    """Runtime telemetry of a device (``point_id`` = ``identifier``).

    ``has_quality``: the device may send ``{"value": v, "quality": q}``; only INT, FLOAT and
    DOUBLE points can carry a quality (EnOS rule).
    """

    identifier: str
    spec: DataSpec
    name: I18nText | None = None
    desc: I18nText | None = None
    unit: Unit | None = None
    signal_type: SignalType = SignalType.GENERIC
    has_quality: bool = False

    def __post_init__(self) -> None:
        check_identifier(self.identifier, "measurepoint")
        _check_unit(f"measurepoint {self.identifier!r}", self.spec, self.unit)
        if self.has_quality and self.spec.data_type not in NUMERIC_TYPES:
            raise ModelError(
                f"measurepoint {self.identifier!r}: has_quality needs INT, FLOAT or DOUBLE, "
                f"found {self.spec.data_type.value}"
            )


def _check_params(owner: str, kind: str, params: tuple[Param, ...]) -> None:
    seen: set[str] = set()
    for param in params:
        if not isinstance(param, Param):
            raise ModelError(f"{owner}: {kind} must be Param, found {param!r}")
        if param.identifier in seen:
            raise ModelError(f"{owner}: duplicate {kind} parameter {param.identifier!r}")
        seen.add(param.identifier)


@dataclass(frozen=True, slots=True)
class Service:
    """A function the cloud can call on a device, with input and output parameters."""

    identifier: str
    call_type: CallType = CallType.SYNC
    input_data: tuple[Param, ...] = ()
    output_data: tuple[Param, ...] = ()
    name: I18nText | None = None
    desc: I18nText | None = None

    def __post_init__(self) -> None:
        check_identifier(self.identifier, "service")
        object.__setattr__(self, "input_data", tuple(self.input_data))
        object.__setattr__(self, "output_data", tuple(self.output_data))
        _check_params(f"service {self.identifier!r}", "input", self.input_data)
        _check_params(f"service {self.identifier!r}", "output", self.output_data)


@dataclass(frozen=True, slots=True)
class Event:
    """Something a device reports when it happens (a fault, a state change), with a severity."""

    identifier: str
    event_type: EventType = EventType.INFO
    output_data: tuple[Param, ...] = ()
    name: I18nText | None = None
    desc: I18nText | None = None

    def __post_init__(self) -> None:
        check_identifier(self.identifier, "event")
        object.__setattr__(self, "output_data", tuple(self.output_data))
        _check_params(f"event {self.identifier!r}", "output", self.output_data)
