"""Vendor mappings: a vendor's point names and units onto a common thing model.

EnOS's pitch is that thousands of vendor-specific device models are unified into a few common
ones. A :class:`VendorMapping` is the declarative recipe for one vendor variant: for each vendor
point, the common point it feeds and how the value changes on the way:

1. ``values`` (optional): a lookup table for codes (vendor state 4 -> common state 1); keys are
   the vendor value's JSON text (``"4"``, ``"true"``, ``"RUN"``; ``4.0`` counts as ``"4"``);
   exclusive with 2 and 3;
2. ``common = raw * scale + offset`` (raw register scaling, e.g. 0.1 W per count);
3. unit conversion ``source_unit -> target_unit`` (see :mod:`enos_lab.model._units`).

Steps 2 and 3 are folded into one exact linear map, evaluated once in floating point and rounded
to 15 significant digits. A point with no table, scale 1, offset 0 and no units is copied
unchanged (ints stay ints). Numeric strings are accepted for converted points; a quality encoding
``{"value": v, "quality": q}`` keeps its quality and converts ``v``.

Unknown vendor points raise :class:`~enos_lab.errors.ValidationError` (code 1204) in strict mode
and pass through under their own name in lenient mode.

JSON form (shipped in ``enos_lab/model/library``)::

    {"mappingId": "inverter_vendor_a", "vendor": "...", "description": "...",
     "targetModelId": "pv_inverter", "strict": true,
     "points": [{"source": "Pac", "target": "active_power", "sourceUnit": "W",
                 "targetUnit": "kW", "scale": 1, "offset": 0, "values": null}]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import ModelError, ValidationError
from ._thing import ThingModel
from ._types import check_identifier, frozen_mapping, reduce_by_init
from ._units import Conversion, conversion
from ._values import describe

__all__ = ["PointMapping", "VendorMapping", "load_vendor_mapping"]


def _exact(number: float) -> Fraction:
    """A float as the decimal it was written as (0.1 -> 1/10, not the binary neighbour)."""
    return Fraction(repr(float(number)))


def _value_key(raw: Any) -> str:
    """JSON text of a vendor code; integral floats count as ints (4.0 -> "4")."""
    if isinstance(raw, str):
        return raw
    if type(raw) is float and raw.is_integer():
        return str(int(raw))
    return json.dumps(raw)


@dataclass(frozen=True, slots=True)
class PointMapping:
    """How one vendor point (``source``) becomes one common point (``target``)."""

    source: str
    target: str
    source_unit: str | None = None
    target_unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    values: Mapping[str, Any] = field(default_factory=dict)
    _conversion: Conversion = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        what = f"point mapping {self.source!r} -> {self.target!r}"
        if not isinstance(self.source, str) or not self.source:
            raise ModelError(
                f"point mapping: source must be a non-empty string, found {self.source!r}"
            )
        check_identifier(self.target, what)
        if (self.source_unit is None) != (self.target_unit is None):
            raise ModelError(f"{what}: give both source_unit and target_unit, or neither")
        for name in ("scale", "offset"):
            number = getattr(self, name)
            if type(number) not in (int, float):
                raise ModelError(f"{what}: {name} must be a number, found {number!r}")
        if self.scale == 0:
            raise ModelError(f"{what}: scale must not be 0")
        object.__setattr__(self, "values", frozen_mapping(self.values))
        conv = Conversion(_exact(self.scale), _exact(self.offset))
        if self.source_unit is not None and self.target_unit is not None:
            conv = conv.then(conversion(self.source_unit, self.target_unit))
        if self.values and not conv.identity:
            raise ModelError(f"{what}: a value table excludes scale, offset and units")
        object.__setattr__(self, "_conversion", conv)

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init(self)

    def convert(self, raw: Any) -> Any:
        """The common value for vendor value ``raw``.

        Raises KeyError (code not in the table), TypeError or ValueError (not a number).
        """
        if self.values:
            return self.values[_value_key(raw)]
        conv = self._conversion
        if conv.identity:
            return raw
        if type(raw) is str:
            raw = float(raw.strip())
        elif type(raw) not in (int, float):
            raise TypeError(raw)
        return conv.apply(raw)

    def source_value(self, common: Any) -> Any:
        """The vendor value that :meth:`convert` turns into ``common`` (to simulate a vendor
        device from common values).

        With a table: the first code whose value equals ``common`` (its JSON text parsed back:
        ``"4"`` -> ``4``; a code that is not JSON stays text). Otherwise the linear map run
        backwards. Raises KeyError (no code gives ``common``), TypeError (not a number).
        """
        if self.values:
            for code, value in self.values.items():
                if value == common and type(value) is type(common):
                    try:
                        return json.loads(code)
                    except ValueError:
                        return code
            raise KeyError(common)
        conv = self._conversion
        if conv.identity:
            return common
        if type(common) not in (int, float):
            raise TypeError(common)
        return conv.inverse().apply(common)


@dataclass(frozen=True, slots=True)
class VendorMapping:
    """A vendor variant of a device type mapped onto the common model ``target_model_id``."""

    mapping_id: str
    target_model_id: str
    points: tuple[PointMapping, ...]
    vendor: str = ""
    description: str = ""
    strict: bool = True
    _by_source: dict[str, PointMapping] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_identifier(self.mapping_id, "vendor mapping id")
        object.__setattr__(self, "points", tuple(self.points))
        by_source: dict[str, PointMapping] = {}
        targets: set[str] = set()
        for point in self.points:
            if not isinstance(point, PointMapping):
                raise ModelError(
                    f"vendor mapping {self.mapping_id!r}: expected PointMapping, found {point!r}"
                )
            if point.source in by_source:
                raise ModelError(
                    f"vendor mapping {self.mapping_id!r}: "
                    f"vendor point {point.source!r} mapped twice"
                )
            if point.target in targets:
                raise ModelError(
                    f"vendor mapping {self.mapping_id!r}: common point {point.target!r} is the "
                    "target of two vendor points"
                )
            by_source[point.source] = point
            targets.add(point.target)
        object.__setattr__(self, "_by_source", by_source)

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_by_init(self)

    def _error(self, message: str) -> ValidationError:
        return ValidationError(
            f"vendor mapping {self.mapping_id!r} ({self.vendor or 'vendor'} -> "
            f"{self.target_model_id!r}): {message}"
        )

    def apply(self, values: Mapping[str, Any], *, strict: bool | None = None) -> dict[str, Any]:
        """Turn a dict of vendor point values into common-model point values.

        ``strict`` (default: the mapping's own setting) refuses unknown vendor points; lenient
        mode passes them through unchanged. Raises ValidationError (1204) naming the vendor
        point for an unknown point, a value that cannot be converted or a code missing from a
        value table.
        """
        if not isinstance(values, Mapping):
            raise self._error(f"vendor values must be a JSON object, found {describe(values)}")
        strict = self.strict if strict is None else strict
        by_source = self._by_source
        out: dict[str, Any] = {}
        for name, raw in values.items():
            point = by_source.get(name)
            if point is None:
                if strict:
                    known = ", ".join(by_source)
                    raise self._error(f"unknown vendor point {name!r} (mapped: {known})")
                if name in out:
                    raise self._error(f"vendor point {name!r} collides with a mapped common point")
                out[name] = raw
                continue
            if point.target in out:
                raise self._error(
                    f"common point {point.target!r} given twice (vendor point {name!r})"
                )
            quality: Any = None
            vendor_value = raw
            if type(raw) is dict and "value" in raw:
                quality = raw.get("quality")
                vendor_value = raw["value"]
            try:
                value = point.convert(vendor_value)
            except KeyError:
                codes = ", ".join(point.values)
                raise self._error(
                    f"vendor point {name!r}: value {describe(vendor_value)} is not in its table "
                    f"({codes})"
                ) from None
            except (TypeError, ValueError):
                raise self._error(
                    f"vendor point {name!r}: expected a number to convert "
                    f"({point.source_unit or 'scaled'} -> {point.target_unit or 'scaled'}), "
                    f"found {describe(vendor_value)}"
                ) from None
            out[point.target] = value if quality is None else {"value": value, "quality": quality}
        return out

    def verify(self, model: ThingModel) -> None:
        """Check this mapping against its common model; raise ModelError naming the problem.

        Every target must be a measurepoint of ``model``; a ``target_unit`` must equal the
        point's unit; table values must validate against the point.
        """
        what = f"vendor mapping {self.mapping_id!r}"
        if model.model_id != self.target_model_id:
            raise ModelError(
                f"{what} targets model {self.target_model_id!r}, not {model.model_id!r}"
            )
        for point in self.points:
            mp = model.measurepoints.get(point.target)
            if mp is None:
                raise ModelError(
                    f"{what}: vendor point {point.source!r} targets {point.target!r}, which is not "
                    f"a measurepoint of model {model.model_id!r}"
                )
            if point.target_unit is not None and (
                mp.unit is None or not conversion(point.target_unit, mp.unit).identity
            ):
                found = None if mp.unit is None else mp.unit.unit_id
                raise ModelError(
                    f"{what}: vendor point {point.source!r} converts to {point.target_unit!r} "
                    f"but {model.model_id!r}.{point.target} is in {found!r}"
                )
            for code, value in point.values.items():
                try:
                    model.validate_measurepoints({point.target: value})
                except ValidationError as exc:
                    raise ModelError(
                        f"{what}: table entry {code!r} of {point.source!r}: {exc}"
                    ) from exc

    def to_json(self) -> dict[str, Any]:
        """The JSON form of this mapping (see the module docstring)."""
        return {
            "mappingId": self.mapping_id,
            "vendor": self.vendor,
            "description": self.description,
            "targetModelId": self.target_model_id,
            "strict": self.strict,
            "points": [
                {
                    "source": p.source,
                    "target": p.target,
                    "sourceUnit": p.source_unit,
                    "targetUnit": p.target_unit,
                    "scale": p.scale,
                    "offset": p.offset,
                    "values": dict(p.values) or None,
                }
                for p in self.points
            ],
        }

    @classmethod
    def from_json(
        cls, doc: Mapping[str, Any] | str, origin: str = "vendor mapping JSON"
    ) -> VendorMapping:
        """Build a mapping from its JSON form (a dict or a JSON string); ModelError if invalid."""
        try:
            if isinstance(doc, str):
                doc = json.loads(doc)
            if not isinstance(doc, Mapping):
                raise TypeError(f"expected a JSON object, found {doc!r}")
            points = []
            for i, p in enumerate(doc["points"]):
                try:
                    points.append(
                        PointMapping(
                            source=p["source"],
                            target=p["target"],
                            source_unit=p.get("sourceUnit"),
                            target_unit=p.get("targetUnit"),
                            scale=p.get("scale", 1.0),
                            offset=p.get("offset", 0.0),
                            values=p.get("values") or {},
                        )
                    )
                except ModelError as exc:
                    raise ModelError(f"{origin}: points[{i}]: {exc}") from None
            return cls(
                mapping_id=doc["mappingId"],
                target_model_id=doc["targetModelId"],
                points=tuple(points),
                vendor=doc.get("vendor", ""),
                description=doc.get("description", ""),
                strict=bool(doc.get("strict", True)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{origin}: invalid vendor mapping ({exc!r})") from exc


def load_vendor_mapping(path: str | Path) -> VendorMapping:
    """Read a vendor mapping JSON file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read vendor mapping file {str(p)!r}: {exc}") from exc
    return VendorMapping.from_json(text, origin=p.name)
