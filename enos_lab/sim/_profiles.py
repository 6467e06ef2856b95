"""The registry of profiles: one per library thing model."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import InvalidArgument, NotFound
from ._battery import BatteryStorageProfile
from ._meter import EnergyMeterProfile
from ._profile import Profile
from ._pv import PvInverterProfile
from ._weather import WeatherStationProfile
from ._wind import WindTurbineProfile

__all__ = ["PROFILES", "profile_for"]

PROFILES: Mapping[str, type[Profile]] = MappingProxyType(
    {
        cls.model_id: cls
        for cls in (
            BatteryStorageProfile,
            EnergyMeterProfile,
            PvInverterProfile,
            WeatherStationProfile,
            WindTurbineProfile,
        )
    }
)
"""Profile class by the id of the library thing model it produces (read-only)."""


def profile_for(model_id: str, **parameters: Any) -> Profile:
    """The profile of library model ``model_id`` with ``parameters`` (its dataclass fields;
    the defaults otherwise), e.g. ``profile_for("pv_inverter", rated_power=50.0)``.

    Raises :class:`~enos_lab.errors.NotFound` for a model without a profile (naming those that
    have one) and :class:`~enos_lab.errors.InvalidArgument` for an unknown parameter.
    """
    try:
        cls = PROFILES[model_id]
    except KeyError:
        raise NotFound(
            f"no profile for model {model_id!r} (profiles exist for {', '.join(sorted(PROFILES))})"
        ) from None
    try:
        return cls(**parameters)
    except TypeError as exc:
        raise InvalidArgument(f"profile for {model_id!r}: {exc}") from exc
