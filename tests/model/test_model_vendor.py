"""Units, vendor mappings and the shipped library (including the wheel contents)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from enos_lab.errors import ModelError, NotFound, ValidationError
from enos_lab.model import (
    Multiplier,
    PointMapping,
    Unit,
    VendorMapping,
    conversion,
    known_units,
    library_model,
    library_model_ids,
    load_library,
    load_vendor_mapping,
    vendor_mapping,
    vendor_mapping_ids,
)

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (1.0, "kW", "W", 1000.0),
        (4520, "W", "kW", 4.52),
        (1, "MWh", "kWh", 1000.0),
        (3600, "J", "Wh", 1.0),
        (2500, "mA", "A", 2.5),
        (0.4, "kV", "V", 400.0),
        (100, "degC", "degF", 212.0),
        (212, "degF", "degC", 100.0),
        (-40, "degC", "degF", -40.0),
        (0, "degC", "K", 273.15),
        (300, "K", "degC", 26.85),
        (32, "°F", "℃", 0.0),
        (36, "km/h", "m/s", 10.0),
        (1, "bar", "hPa", 1000.0),
        (1013.25, "hPa", "kPa", 101.325),
        (1, "psi", "Pa", 6894.75729316836),
        (50, "%", "ratio", 0.5),
        (0.973, "ratio", "%", 97.3),
        (1, "kWh/m2", "Wh/m2", 1000.0),
        (90, "deg", "deg", 90.0),
    ],
)
def test_unit_conversions_give_exact_numbers(
    value: float, source: str, target: str, expected: float
) -> None:
    assert conversion(source, target).apply(value) == expected


def test_multiplier_scales_a_unit() -> None:
    assert conversion(Unit("W", Multiplier.KILO), Unit("kW")).identity
    assert conversion(Unit("W", Multiplier.MILLI), "W").apply(1500) == 1.5
    assert Multiplier.KILO.factor == 1000.0 and Multiplier.YOCTO.exponent == -24


def test_unit_errors() -> None:
    with pytest.raises(ModelError, match="cannot convert kW \\(power\\) to V \\(voltage\\)"):
        conversion("kW", "V")
    with pytest.raises(ModelError, match="unknown unit 'furlong'"):
        conversion("furlong", "m")
    with pytest.raises(ModelError, match="offset"):
        conversion(Unit("degC", Multiplier.KILO), "K")
    assert {"W", "kW", "MW", "Wh", "kWh", "MWh", "V", "kV", "A", "mA", "degC", "degF", "K"} <= set(
        known_units()
    )
    assert {"m/s", "km/h", "Pa", "kPa", "hPa", "bar", "%"} <= set(known_units())


# ----------------------------------------------------------------------------- mappings

COMMON = {
    "active_power": 4.52,
    "reactive_power": -0.3,
    "daily_energy": 18.25,
    "total_energy": 12345.678,
    "dc_voltage": 612.4,
    "dc_current": 7.4,
    "grid_frequency": 50.01,
    "internal_temperature": 41.5,
    "state": 1,
    "fault_code": 0,
}


def test_vendor_a_maps_onto_the_common_pv_inverter() -> None:
    out = vendor_mapping("inverter_vendor_a").apply(
        {
            "W": 4520,
            "VAr": -300,
            "DayWH": 18250,
            "WH": 12345678,
            "DCV": 612.4,
            "DCA": 7.4,
            "Hz": 50.01,
            "TmpCab": 41.5,
            "St": 4,
            "Evt1": 0,
            "PhV": [230.1, 231.0, 229.8],
        }
    )
    assert out == COMMON | {"phase_voltage": [230.1, 231.0, 229.8]}
    assert library_model("pv_inverter").validate_measurepoints(out).ok


def test_vendor_b_maps_onto_the_same_common_values() -> None:
    out = vendor_mapping("inverter_vendor_b").apply(
        {
            "P_AC": 45200,  # 0.1 W counts
            "Q_AC": -0.3,
            "E_DAY": 18.25,
            "E_TOTAL": 12.345678,  # MWh
            "U_DC": 6124,  # 0.1 V counts
            "I_DC": 7400,  # mA
            "F_AC": 5001,  # 0.01 Hz counts
            "T_INT": 106.7,  # degF
            "EFF": 0.981,  # ratio
            "STATUS": "RUN",
            "ERR_CODE": 0,
        }
    )
    assert out == COMMON | {"efficiency": 98.1}
    model = library_model("pv_inverter")
    assert model.validate_measurepoints(out).values["state"] == 1


def test_unknown_vendor_point_is_refused_in_strict_mode_and_passed_in_lenient_mode() -> None:
    mapping = vendor_mapping("inverter_vendor_b")
    with pytest.raises(ValidationError) as info:
        mapping.apply({"P_AC": 1, "FAN_RPM": 1200})
    assert info.value.code == 1204
    assert "unknown vendor point 'FAN_RPM'" in str(info.value)
    assert "'inverter_vendor_b'" in str(info.value)
    assert mapping.apply({"P_AC": 10, "FAN_RPM": 1200}, strict=False) == {
        "active_power": 0.001,
        "FAN_RPM": 1200,
    }


def test_conversion_errors_name_the_vendor_point() -> None:
    mapping = vendor_mapping("inverter_vendor_b")
    with pytest.raises(ValidationError, match="vendor point 'P_AC': expected a number"):
        mapping.apply({"P_AC": "lots"})
    with pytest.raises(ValidationError, match="vendor point 'P_AC': expected a number"):
        mapping.apply({"P_AC": True})
    with pytest.raises(ValidationError, match="'STATUS': value string 'BOOT' is not in its table"):
        mapping.apply({"STATUS": "BOOT"})


def test_numeric_strings_and_quality_encodings_are_converted() -> None:
    mapping = vendor_mapping("inverter_vendor_b")
    assert mapping.apply({"P_AC": "1000"}) == {"active_power": 0.1}
    assert mapping.apply({"P_AC": {"value": 45200, "quality": 9}}) == {
        "active_power": {"value": 4.52, "quality": 9}
    }
    assert library_model("pv_inverter").validate_measurepoints(
        mapping.apply({"P_AC": {"value": 45200, "quality": 9}})
    ).quality == {"active_power": 9}


def test_identity_points_pass_values_unchanged() -> None:
    mapping = VendorMapping("m", "pv_inverter", (PointMapping("Code", "fault_code"),))
    out = mapping.apply({"Code": 7})
    assert out == {"fault_code": 7} and type(out["fault_code"]) is int


@pytest.mark.parametrize(
    ("points", "text"),
    [
        ((PointMapping("a", "x"), PointMapping("a", "y")), "mapped twice"),
        ((PointMapping("a", "x"), PointMapping("b", "x")), "target of two vendor points"),
    ],
)
def test_mapping_definition_errors(points: tuple[PointMapping, ...], text: str) -> None:
    with pytest.raises(ModelError, match=text):
        VendorMapping("m", "pv_inverter", points)


def test_point_mapping_definition_errors() -> None:
    with pytest.raises(ModelError, match="both source_unit and target_unit"):
        PointMapping("a", "x", source_unit="W")
    with pytest.raises(ModelError, match="value table excludes"):
        PointMapping("a", "x", scale=2, values={"1": 1})
    with pytest.raises(ModelError, match="scale must not be 0"):
        PointMapping("a", "x", scale=0)
    with pytest.raises(ModelError, match="cannot convert"):
        PointMapping("a", "x", source_unit="W", target_unit="V")


def test_verify_checks_targets_units_and_tables() -> None:
    model = library_model("pv_inverter")
    cases = [
        (VendorMapping("m", "wind_turbine", ()), "targets model 'wind_turbine'"),
        (VendorMapping("m", "pv_inverter", (PointMapping("a", "nope"),)), "'nope'"),
        (
            VendorMapping("m", "pv_inverter", (PointMapping("a", "active_power", "kW", "W"),)),
            "converts to 'W'",
        ),
        (
            VendorMapping("m", "pv_inverter", (PointMapping("a", "state", values={"1": 99}),)),
            "table entry '1'",
        ),
    ]
    for mapping, text in cases:
        with pytest.raises(ModelError, match=text):
            mapping.verify(model)


def test_mapping_json_round_trip_and_file_loading(tmp_path: Path) -> None:
    for mapping_id in vendor_mapping_ids():
        mapping = vendor_mapping(mapping_id)
        assert VendorMapping.from_json(json.dumps(mapping.to_json())) == mapping
        path = tmp_path / f"{mapping_id}.json"
        path.write_text(json.dumps(mapping.to_json()), encoding="utf-8")
        assert load_vendor_mapping(path) == mapping
    with pytest.raises(ModelError, match="invalid vendor mapping"):
        VendorMapping.from_json({"mappingId": "x"})
    with pytest.raises(ModelError, match="points\\[0\\]"):
        VendorMapping.from_json(
            {"mappingId": "x", "targetModelId": "y", "points": [{"source": "a", "target": "1"}]}
        )


# ----------------------------------------------------------------------------- library


def test_library_holds_the_common_models_and_two_inverter_vendors() -> None:
    assert set(library_model_ids()) == {
        "device_base",
        "pv_inverter",
        "wind_turbine",
        "battery_storage",
        "energy_meter",
        "weather_station",
        "gateway",
    }
    assert vendor_mapping_ids() == ["inverter_vendor_a", "inverter_vendor_b"]
    for mapping_id in vendor_mapping_ids():
        assert vendor_mapping(mapping_id).target_model_id == "pv_inverter"
    assert library_model("gateway").allow_additional_measurepoints
    for model_id in library_model_ids():
        if model_id != "device_base":
            assert library_model(model_id).parent_id == "device_base"
            assert "serial_number" in library_model(model_id).attributes


def test_load_library_returns_a_fresh_catalog_each_time() -> None:
    first = load_library()
    first.remove("wind_turbine")
    second = load_library()
    assert "wind_turbine" in second and "wind_turbine" not in first
    assert second.get("pv_inverter") == library_model("pv_inverter")


def test_unknown_library_names_raise_not_found() -> None:
    with pytest.raises(NotFound, match="available: "):
        library_model("toaster")
    with pytest.raises(NotFound, match="inverter_vendor_a"):
        vendor_mapping("inverter_vendor_z")


def test_library_files_are_in_the_wheel(tmp_path: Path) -> None:
    from hatchling.builders.wheel import WheelBuilder

    wheel = next(
        iter(WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"]))
    )
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"enos_lab/model/library/{p.name}"
        for p in (ROOT / "enos_lab" / "model" / "library").glob("*.json")
    }
    assert len(shipped) == 9
    assert shipped <= names


def test_value_tables_match_integral_floats_and_bools() -> None:
    mapping = vendor_mapping("inverter_vendor_a")
    assert mapping.apply({"St": 4.0}) == {"state": 1}
    flag = VendorMapping("f", "pv_inverter", (PointMapping("Alarm", "state", values={"true": 3}),))
    assert flag.apply({"Alarm": True}) == {"state": 3}
    with pytest.raises(ValidationError, match="must be a JSON object"):
        mapping.apply([("St", 4)])  # type: ignore[arg-type]


def test_source_value_runs_a_point_mapping_backwards() -> None:
    mapping = vendor_mapping("inverter_vendor_a")
    by_source = {p.source: p for p in mapping.points}
    for source, vendor in (("W", 4520), ("DCV", 612.4), ("TmpCab", 41.5), ("St", 4), ("Evt1", 7)):
        point = by_source[source]
        assert point.source_value(point.convert(vendor)) == vendor
    assert by_source["St"].source_value(0) == 2  # the first vendor code of 'standby'
    with pytest.raises(KeyError):
        by_source["St"].source_value(9)
    with pytest.raises(TypeError):
        by_source["W"].source_value("4.52")
    assert conversion("degC", "degF").inverse().apply(212) == 100.0
