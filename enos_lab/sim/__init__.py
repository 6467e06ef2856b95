"""Simulated devices: deterministic profiles for the library thing models, and faults.

Profiles
    A profile is a small frozen dataclass of parameters for one library thing model
    (:data:`PROFILES`, :func:`profile_for`): :class:`PvInverterProfile`,
    :class:`WindTurbineProfile`, :class:`BatteryStorageProfile`, :class:`EnergyMeterProfile`,
    :class:`WeatherStationProfile`. A device following it is a :class:`ProfileState` (a seed
    and a start); ``profile.values(at, rng, state)`` gives every measurepoint of the model at
    ``at``, valid for it, and ``profile.frame(index, seed)`` a table of them. What a device
    reports depends on the profile, the seed and the start only (measurement noise aside,
    which comes from ``rng``); energy counters are exact integrals of the power. The physics
    and the sampling rules: :mod:`enos_lab.sim._profile` and each profile's module; the site's
    sun and weather: :class:`Site`, :class:`Climate`.

Faults
    :class:`Link` is a loopback TCP proxy between MQTT clients (any: the official EnOS SDK, gmqtt,
    paho) and the hub that drops, delays, duplicates and reorders PUBLISH packets, partitions
    and cuts connections, per connection, per device or for all, and counts what it did
    (:mod:`enos_lab.sim._faults`)::

        link = await Link("127.0.0.1", lab.port, seed=1).start()   # on the lab's loop
        link.device(product_key, "meter1").partition()              # the device is cut off
        link.heal()
"""

from __future__ import annotations

from ._battery import BatteryStorageProfile
from ._fault_settings import (
    Direction,
    FlowStats,
    LinkConfig,
    LinkScope,
    LinkStats,
    PartitionMode,
)
from ._faults import Link
from ._fleet import Fleet
from ._meter import EnergyMeterProfile
from ._profile import BLOCK, Counter, Grid, Profile, ProfileState, Sample
from ._profiles import PROFILES, profile_for
from ._pv import PvInverterProfile
from ._relay import LinkConnection
from ._site import Climate, Site
from ._weather import WeatherStationProfile
from ._wind import WindTurbineProfile

__all__ = [
    "BLOCK",
    "PROFILES",
    "BatteryStorageProfile",
    "Climate",
    "Counter",
    "Direction",
    "EnergyMeterProfile",
    "Fleet",
    "FlowStats",
    "Grid",
    "Link",
    "LinkConfig",
    "LinkConnection",
    "LinkScope",
    "LinkStats",
    "PartitionMode",
    "Profile",
    "ProfileState",
    "PvInverterProfile",
    "Sample",
    "Site",
    "WeatherStationProfile",
    "WindTurbineProfile",
    "profile_for",
]
