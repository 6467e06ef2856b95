"""A small table of units and exact linear conversions between them.

Each unit is ``(dimension, factor, offset)`` with ``base = value * factor + offset`` in the
dimension's base unit (W, Wh, V, A, K, m/s, Pa, ...). Factors and offsets are exact fractions,
so the coefficients of a conversion (``to = from * scale + shift``) are exact and only the final
multiply-add is done in binary floating point; its result is rounded to 15 significant digits
(what a double holds faithfully) so that 212 degF gives exactly 100.0 degC.

A :class:`~enos_lab.model.Unit`'s ``multiplier`` scales its unit (``Unit("W", KILO)`` equals
``Unit("kW")``); a multiplier on an offset unit (degC, degF) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import pi

from ..errors import ModelError
from ._types import Multiplier, Unit

__all__ = ["Conversion", "conversion", "known_units", "round15", "unit_dimension"]

_F = Fraction

_TABLE: dict[str, tuple[str, Fraction, Fraction]] = {}


for _uid, _dim, _factor in (
    ("W", "power", 1),
    ("kW", "power", 10**3),
    ("MW", "power", 10**6),
    ("GW", "power", 10**9),
    ("var", "reactive power", 1),
    ("kvar", "reactive power", 10**3),
    ("Mvar", "reactive power", 10**6),
    ("VA", "apparent power", 1),
    ("kVA", "apparent power", 10**3),
    ("MVA", "apparent power", 10**6),
    ("Wh", "energy", 1),
    ("kWh", "energy", 10**3),
    ("MWh", "energy", 10**6),
    ("GWh", "energy", 10**9),
    ("J", "energy", _F(1, 3600)),
    ("kJ", "energy", _F(1000, 3600)),
    ("MJ", "energy", _F(10**6, 3600)),
    ("varh", "reactive energy", 1),
    ("kvarh", "reactive energy", 10**3),
    ("Mvarh", "reactive energy", 10**6),
    ("mV", "voltage", _F(1, 1000)),
    ("V", "voltage", 1),
    ("kV", "voltage", 10**3),
    ("mA", "current", _F(1, 1000)),
    ("A", "current", 1),
    ("kA", "current", 10**3),
    ("mAh", "charge", _F(1, 1000)),
    ("Ah", "charge", 1),
    ("kAh", "charge", 10**3),
    ("K", "temperature", 1),
    ("m/s", "speed", 1),
    ("km/h", "speed", _F(1000, 3600)),
    ("mph", "speed", _F("0.44704")),
    ("kn", "speed", _F(1852, 3600)),
    ("Pa", "pressure", 1),
    ("hPa", "pressure", 100),
    ("kPa", "pressure", 1000),
    ("MPa", "pressure", 10**6),
    ("mbar", "pressure", 100),
    ("bar", "pressure", 10**5),
    ("psi", "pressure", _F("0.45359237") * _F("9.80665") / _F("0.0254") ** 2),
    ("%", "ratio", _F(1, 100)),
    ("ratio", "ratio", 1),
    ("Hz", "frequency", 1),
    ("kHz", "frequency", 1000),
    ("rpm", "rotational speed", 1),
    ("W/m2", "irradiance", 1),
    ("kW/m2", "irradiance", 1000),
    ("Wh/m2", "irradiation", 1),
    ("kWh/m2", "irradiation", 1000),
    ("mm", "length", _F(1, 1000)),
    ("cm", "length", _F(1, 100)),
    ("m", "length", 1),
    ("km", "length", 1000),
    ("deg", "angle", 1),
    ("rad", "angle", _F(180) / _F(pi)),
    ("ms", "time", _F(1, 1000)),
    ("s", "time", 1),
    ("min", "time", 60),
    ("h", "time", 3600),
):
    _TABLE[_uid] = (_dim, _F(_factor), _F(0))
_TABLE["degC"] = ("temperature", _F(1), _F("273.15"))
_TABLE["degF"] = ("temperature", _F(5, 9), _F("273.15") - _F(32) * _F(5, 9))

_ALIASES = {"°C": "degC", "℃": "degC", "°F": "degF", "℉": "degF", "kW·h": "kWh"}


def known_units() -> list[str]:
    """Unit ids the table knows (aliases such as ``°C`` excluded)."""
    return sorted(_TABLE)


def _lookup(unit: Unit | str) -> tuple[str, Fraction, Fraction, str]:
    if isinstance(unit, str):
        unit = Unit(unit)
    uid = _ALIASES.get(unit.unit_id, unit.unit_id)
    try:
        dimension, factor, offset = _TABLE[uid]
    except KeyError:
        raise ModelError(
            f"unknown unit {unit.unit_id!r} (known: {', '.join(known_units())})"
        ) from None
    label = uid if unit.multiplier is Multiplier.ONE else f"{unit.multiplier.name} {uid}"
    if unit.multiplier is not Multiplier.ONE:
        if offset:
            raise ModelError(f"unit {uid!r} has an offset and cannot take a multiplier")
        factor *= _F(10) ** unit.multiplier.exponent
    return dimension, factor, offset, label


def unit_dimension(unit: Unit | str) -> str:
    """The dimension of a unit (``"power"`` for kW); ModelError for an unknown unit."""
    return _lookup(unit)[0]


def round15(value: float) -> float:
    """Round ``value`` to 15 significant digits (removes binary noise such as 1e-14 tails)."""
    return float(f"{value:.15g}")


@dataclass(frozen=True, slots=True)
class Conversion:
    """An exact linear conversion ``to = from * scale + shift`` (``scale``/``shift`` exact)."""

    scale: Fraction
    shift: Fraction

    @property
    def identity(self) -> bool:
        """True when the conversion changes nothing."""
        return self.scale == 1 and self.shift == 0

    def then(self, other: Conversion) -> Conversion:
        """This conversion followed by ``other``."""
        return Conversion(self.scale * other.scale, self.shift * other.scale + other.shift)

    def apply(self, value: float) -> float:
        """Convert ``value``; the result is rounded with :func:`round15`."""
        return round15(value * float(self.scale) + float(self.shift))

    def inverse(self) -> Conversion:
        """The conversion back: ``from = (to - shift) / scale`` (exact)."""
        return Conversion(1 / self.scale, -self.shift / self.scale)


def conversion(source: Unit | str, target: Unit | str) -> Conversion:
    """The conversion from ``source`` to ``target``; ModelError when dimensions differ."""
    dim_a, factor_a, offset_a, label_a = _lookup(source)
    dim_b, factor_b, offset_b, label_b = _lookup(target)
    if dim_a != dim_b:
        raise ModelError(f"cannot convert {label_a} ({dim_a}) to {label_b} ({dim_b})")
    return Conversion(factor_a / factor_b, (offset_a - offset_b) / factor_b)
