"""Dataset loaders: documented tables, found in a source checkout and in an installed wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from enos_lab import datasets
from enos_lab.errors import NotFound

ROOT = Path(__file__).resolve().parents[1]


def test_fleet_meters_loads_with_documented_columns_and_dtypes() -> None:
    frame, meta = datasets.load("fleet_meters")
    assert list(frame.columns) == list(meta["columns"])
    assert meta["rows"] == len(frame) == 20
    assert frame["device_key"].is_unique
    assert frame["rated_power_kw"].dtype == "float64"
    assert frame["ct_ratio"].dtype == "float64"
    assert (frame["rated_power_kw"] > 0).all() and (frame["ct_ratio"] >= 1).all()
    assert frame.groupby("site").size().to_dict() == {
        "east_solar_farm": 6,
        "harbour_depot": 6,
        "north_campus": 8,
    }
    assert set(frame["timezone"]) == {"+08:00", "+01:00", "-05:00"}
    assert frame.groupby("site")["timezone"].nunique().eq(1).all()
    for text in meta["columns"].values():
        assert re.search(r"\[[^\]]+\]$", text), f"no unit in brackets: {text!r}"
    assert meta["licence"] == "CC0-1.0" and "synthetic" in meta["origin"]
    assert meta["path"] == ROOT / "datasets" / "fleet_meters.csv"


def test_device_keys_are_valid_registry_keys() -> None:
    frame, _ = datasets.load("fleet_meters")
    assert frame["device_key"].str.fullmatch(r"[A-Za-z0-9_.:-]{1,64}").all()


def test_every_dataset_is_in_the_readme_table_with_its_licence_and_columns() -> None:
    readme = (ROOT / "datasets" / "README.md").read_text()
    names = datasets.dataset_names()
    assert {
        "daily_load_shapes",
        "fleet_meters",
        "modbus_energy_meter",
        "modbus_inverter_vendor_a",
        "turbine_power_curve",
    } <= set(names)
    for name in datasets.dataset_names():
        _, meta = datasets.load(name)
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{meta['file']}`"))
        assert meta["licence"] in row and meta["origin"] in row
        for column in meta["columns"]:
            assert f"`{column}`" in row
    csv_files = sorted(p.name for p in (ROOT / "datasets").glob("*.csv"))
    assert csv_files == sorted(datasets.load(n)[1]["file"] for n in datasets.dataset_names())


def test_unknown_dataset_names_the_value_and_the_choices() -> None:
    with pytest.raises(NotFound, match=r"'nope'.*fleet_meters"):
        datasets.load("nope")
    with pytest.raises(NotFound, match="nope"):
        datasets.dataset_path("nope")


def test_the_loader_finds_the_files_where_the_wheel_puts_them(tmp_path: Path) -> None:
    # The wheel configuration copies datasets/ into the package; lay a package out the same way
    # (no source checkout beside it) and load from it in a fresh interpreter.
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    target = wheel["targets"]["wheel"]["force-include"]["datasets"]
    assert target == "enos_lab/_datasets"
    site = tmp_path / "site"
    shutil.copytree(ROOT / "enos_lab", site / "enos_lab")
    shutil.copytree(ROOT / "datasets", site / target)
    code = (
        "import enos_lab.datasets as d; f, m = d.load('fleet_meters'); "
        "print(m['path']); print(len(f))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    path, rows = result.stdout.split()
    assert Path(path) == site / target / "fleet_meters.csv"
    assert int(rows) == 20


def test_the_frame_is_a_fresh_copy_each_time() -> None:
    first, meta = datasets.load("fleet_meters")
    first.loc[0, "name"] = "changed"
    meta["columns"].clear()
    second, meta2 = datasets.load("fleet_meters")
    assert second.loc[0, "name"] != "changed"
    assert meta2["columns"]
    assert isinstance(second, pd.DataFrame)
