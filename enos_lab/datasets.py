"""Datasets for the tutorials, loaded as a table plus its metadata.

Each dataset is a CSV file in the repository's ``datasets/`` folder (documented in its README
table: origin, licence, columns and units). Wheels carry the same files inside the package, so
:func:`load` works from a source checkout and from an installed package alike::

    frame, meta = enos_lab.datasets.load("fleet_meters")
    meta["columns"]["rated_power_kw"]        # 'Rated active power of the metered feeder. [kW]'

Notebooks load their data this way, never by a relative path.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import NotFound

__all__ = ["dataset_names", "dataset_path", "load"]

_PACKAGED_FOLDER = "_datasets"
"""Folder inside the installed package where wheels carry the datasets."""


@dataclass(frozen=True, slots=True)
class _Dataset:
    file: str
    title: str
    description: str
    origin: str
    licence: str
    columns: tuple[tuple[str, str, str], ...]
    """(name, pandas dtype, description with units)."""


def _point_table_columns(*point_doc: str) -> tuple[tuple[str, str, str], ...]:
    """The columns of an edge point-mapping table; ``point_doc`` describes its ``point``."""
    return (
        *_REGISTER_COLUMNS,
        ("point", "str", "".join(point_doc)),
        ("description", "str", "What the register holds, from the device's manual. [-]"),
    )


_REGISTER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("unit_id", "int64", "Modbus unit identifier of the field device, 1..247. [-]"),
    ("table", "str", "Register table: holding, input, coil or discrete_input. [-]"),
    ("address", "int64", "Zero-based register address on the wire, 0..65535. [-]"),
    ("type", "str", "Register type: int16, uint16, int32, uint32, float32, float64, bool. [-]"),
    ("word_order", "str", "Word order of 32- and 64-bit values: big or little. [-]"),
    ("bit", "str", "Bit of a register holding a bool, 0..15; empty otherwise. [-]"),
    ("scale", "float64", "Field value = raw * scale + offset. [-]"),
    ("offset", "float64", "Added after scaling, in the field value's unit. [unit]"),
    ("unit", "str", "Unit of the field value; empty for a point without one. [-]"),
)


_DATASETS: dict[str, _Dataset] = {
    "fleet_meters": _Dataset(
        file="fleet_meters.csv",
        title="A fleet of 20 energy meters on three sites",
        description=(
            "Energy meters to provision in bulk: one row per meter, with the site it measures, "
            "the site's UTC offset, the rated power of the metered feeder and the ratio of its "
            "current transformer. Used by notebooks/01_provisioning.ipynb."
        ),
        origin="synthetic; written for enos_lab (no real site or customer)",
        licence="CC0-1.0",
        columns=(
            ("device_key", "str", "Device key within the product; unique in the file. [-]"),
            ("name", "str", "Display name of the meter. [-]"),
            ("site", "str", "Site the meter belongs to (a tag). [-]"),
            ("timezone", "str", "UTC offset of the site, '+HH:MM'. [-]"),
            ("rated_power_kw", "float64", "Rated active power of the metered feeder. [kW]"),
            ("ct_ratio", "float64", "Current transformer ratio (primary/secondary). [-]"),
        ),
    ),
    "modbus_inverter_vendor_a": _Dataset(
        file="modbus_inverter_vendor_a.csv",
        title="Modbus register map of a Vendor A PV inverter",
        description=(
            "Point-mapping table of a PV string inverter of Vendor A at Modbus unit 1: "
            "measurements in input registers (power in W, energy in Wh as uint32, scaled "
            "voltages, currents and temperature), state and fault code in holding registers. "
            "Its points are Vendor A's point names: load it with the thing model "
            "'pv_inverter' and the vendor mapping 'inverter_vendor_a' "
            "(enos_lab.edge.PointTable.from_frame)."
        ),
        origin="synthetic; written for enos_lab after SunSpec-style point names (no real device)",
        licence="CC0-1.0",
        columns=_point_table_columns(
            "Vendor A point name (see the vendor mapping inverter_vendor_a); name[i] is "
            "item i of an ARRAY point. [-]",
        ),
    ),
    "modbus_energy_meter": _Dataset(
        file="modbus_energy_meter.csv",
        title="Modbus register map of a three-phase energy meter",
        description=(
            "Point-mapping table of a three-phase energy meter at Modbus unit 2: float32 "
            "measurements in input registers, the import energy counter as a uint32 in 10 Wh "
            "steps (little word order) and the export energy as a float64 in holding "
            "registers. Its points are measurepoints of the thing model 'energy_meter' "
            "(enos_lab.edge.PointTable.from_frame)."
        ),
        origin="synthetic; written for enos_lab (no real device)",
        licence="CC0-1.0",
        columns=_point_table_columns(
            "Measurepoint id of the model energy_meter; name[i] is item i of an ARRAY point. [-]",
        ),
    ),
    "turbine_power_curve": _Dataset(
        file="turbine_power_curve.csv",
        title="A generic power curve of a 2 MW wind turbine",
        description=(
            "Electrical power per unit of rated power against hub-height wind speed, every "
            "0.5 m/s, for a generic pitch-regulated, variable-speed 2 MW turbine with a 100 m "
            "rotor at air density 1.225 kg/m3: P = 0.5 rho A cp v^3 with an overall power "
            "coefficient of 0.40, joined smoothly to rated power (p = a / (1 + a^8)^(1/8), a "
            "the aerodynamic power per unit), zero below the 3 m/s cut-in and above the 25 m/s "
            "cut-out. Used by the wind turbine profile of enos_lab.sim."
        ),
        origin="computed from a documented physical model; written for enos_lab",
        licence="CC0-1.0",
        columns=(
            ("wind_speed", "float64", "Wind speed at hub height. [m/s]"),
            ("power", "float64", "Electrical power per unit of rated power. [-]"),
            ("cp", "float64", "Electrical power coefficient, P / (0.5 rho A v^3). [-]"),
        ),
    ),
    "daily_load_shapes": _Dataset(
        file="daily_load_shapes.csv",
        title="Daily load shapes of three kinds of consumer",
        description=(
            "Active power per unit of the day's peak, every half hour of local time, for a "
            "residential feeder (morning and evening peaks), a commercial building (office "
            "hours, a lunch dip) and an industrial site (two shifts). Sums of Gaussian peaks "
            "and logistic plateaus over a base load, each scaled to a peak of 1. Used by the "
            "energy meter profile of enos_lab.sim."
        ),
        origin="synthetic; written for enos_lab (no real site or customer)",
        licence="CC0-1.0",
        columns=(
            ("hour", "float64", "Local time of day at the start of the half hour. [h]"),
            ("residential", "float64", "Residential feeder load per unit of its peak. [-]"),
            ("commercial", "float64", "Commercial building load per unit of its peak. [-]"),
            ("industrial", "float64", "Industrial site load per unit of its peak. [-]"),
        ),
    ),
}


def dataset_names() -> list[str]:
    """Names of the shipped datasets, sorted (``fleet_meters``, ...)."""
    return sorted(_DATASETS)


def _spec(name: str) -> _Dataset:
    try:
        return _DATASETS[name]
    except KeyError:
        raise NotFound(
            f"dataset {name!r} not found (available: {', '.join(dataset_names())})"
        ) from None


def dataset_path(name: str) -> Path:
    """The CSV file of dataset ``name``, in the installed package or the source checkout.

    Raises :class:`~enos_lab.errors.NotFound` for an unknown name or a missing file.
    """
    spec = _spec(name)
    packaged = resources.files(__package__ or "enos_lab").joinpath(_PACKAGED_FOLDER, spec.file)
    candidates = [
        Path(str(packaged)),
        Path(__file__).resolve().parent.parent / "datasets" / spec.file,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NotFound(
        f"the file {spec.file!r} of dataset {name!r} is missing (looked in "
        f"{', '.join(str(c.parent) for c in candidates)})"
    )


def load(name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load dataset ``name`` as ``(frame, metadata)``.

    ``frame`` has the columns listed in ``metadata["columns"]`` (name -> description with units
    in brackets), in that order and with their documented dtypes. ``metadata`` also has
    ``name``, ``file``, ``path``, ``title``, ``description``, ``origin``, ``licence`` and
    ``rows``. Raises :class:`~enos_lab.errors.NotFound` for an unknown name.
    """
    spec = _spec(name)
    path = dataset_path(name)
    dtypes = {column: dtype for column, dtype, _ in spec.columns}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False)
    metadata: dict[str, Any] = {
        "name": name,
        "file": spec.file,
        "path": path,
        "title": spec.title,
        "description": spec.description,
        "origin": spec.origin,
        "licence": spec.licence,
        "rows": len(frame),
        "columns": {column: text for column, _, text in spec.columns},
    }
    return frame, metadata
