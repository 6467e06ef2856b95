"""Point tables: the shipped maps, conversions to and from model values, and every refusal
naming the file, the line and the value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab import datasets
from enos_lab.edge import PointTable, RegisterTable, RegisterType, WordOrder, load_point_table
from enos_lab.errors import InvalidArgument
from enos_lab.model import (
    DataSpec,
    DataType,
    I18nText,
    Measurepoint,
    ThingModel,
    Unit,
    library_model,
    vendor_mapping,
)

HEADER = "unit_id,table,address,type,word_order,bit,scale,offset,unit,point\n"


def _model() -> ThingModel:
    def point(identifier: str, spec: DataSpec, unit: str | None = None) -> Measurepoint:
        return Measurepoint(identifier, spec, unit=None if unit is None else Unit(unit))

    states = {"0": I18nText("off"), "1": I18nText("on")}
    points = [
        point("power", DataSpec(DataType.DOUBLE), "kW"),
        point("temperature", DataSpec(DataType.FLOAT), "degC"),
        point("count", DataSpec(DataType.INT)),
        point("state", DataSpec(DataType.ENUM, enum_type=DataType.INT, enum_values=states)),
        point("mode", DataSpec(DataType.ENUM, enum_type=DataType.STRING, enum_values=states)),
        point("running", DataSpec(DataType.BOOL)),
        point("label", DataSpec(DataType.STRING)),
        point("stamp", DataSpec(DataType.TIMESTAMP)),
        point("currents", DataSpec(DataType.ARRAY, item_type=DataType.FLOAT), "A"),
        point("ratio", DataSpec(DataType.DOUBLE)),
    ]
    return ThingModel(
        "edge_test", I18nText("edge test"), measurepoints={p.identifier: p for p in points}
    )


MODEL = _model()


def _load(
    tmp_path: Path, *lines: str, name: str = "map.csv", model: ThingModel = MODEL
) -> PointTable:
    path = tmp_path / name
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return load_point_table(path, model)


def _inverter() -> PointTable:
    frame, meta = datasets.load("modbus_inverter_vendor_a")
    return PointTable.from_frame(
        frame,
        library_model("pv_inverter"),
        mapping=vendor_mapping("inverter_vendor_a"),
        source=meta["file"],
    )


def _meter() -> PointTable:
    frame, meta = datasets.load("modbus_energy_meter")
    return PointTable.from_frame(frame, library_model("energy_meter"), source=meta["file"])


# ----------------------------------------------------------------------------- shipped tables


def test_the_shipped_inverter_map_reads_vendor_a_registers_into_pv_inverter_values() -> None:
    table = _inverter()
    assert table.unit_ids == (1,) and len(table) == 13 and table.mapping is not None
    field = {
        "W": 4520, "VAr": -300, "WH": 12345678, "DayWH": 18250, "DCV": 612.4, "DCA": 7.4,
        "Hz": 50.01, "PhV[0]": 230.1, "PhV[1]": 231.0, "PhV[2]": 229.8, "TmpCab": 41.5,
        "St": 4, "Evt1": 0,
    }  # fmt: skip
    values, problems = table.to_model(1, field)
    assert problems == []
    assert values == {
        "active_power": 4.52, "reactive_power": -0.3, "total_energy": 12345.678,
        "daily_energy": 18.25, "dc_voltage": 612.4, "dc_current": 7.4, "grid_frequency": 50.01,
        "phase_voltage": [230.1, 231.0, 229.8], "internal_temperature": 41.5, "state": 1,
        "fault_code": 0,
    }  # fmt: skip
    # and back: the registers a simulated inverter needs for those values
    back = table.from_model(1, values | {"efficiency": 97.1})  # unmapped points are ignored
    assert back == field
    # the same table loads from its file, naming the file in messages
    same = load_point_table(
        datasets.dataset_path("modbus_inverter_vendor_a"),
        library_model("pv_inverter"),
        mapping=vendor_mapping("inverter_vendor_a"),
    )
    assert same.rows == table.rows and same.source == "modbus_inverter_vendor_a.csv"


def test_the_shipped_meter_map_converts_units_and_assembles_arrays() -> None:
    table = _meter()
    assert table.unit_ids == (2,)
    row = table.row(2, "import_energy")
    assert (row.type, row.word_order, row.scale, row.unit) == (
        RegisterType.UINT32,
        WordOrder.LITTLE,
        10.0,
        "Wh",
    )
    values, problems = table.to_model(
        2,
        {"import_energy": 123456780, "voltage[0]": 230.1, "voltage[1]": 231.2, "voltage[2]": 229.9},
    )
    assert problems == []
    assert values == {"import_energy": 123456.78, "voltage": [230.1, 231.2, 229.9]}
    assert table.from_model(2, {"import_energy": 123456.78}) == {"import_energy": 123456780.0}


def test_a_template_moves_to_other_units() -> None:
    meter = _meter()
    third = meter.with_unit(3)
    assert third.unit_ids == (3,) and third.row(3, "active_power").address == 0
    with pytest.raises(InvalidArgument, match=r"unit_id 0 is outside 1\.\.247"):
        meter.with_unit(0)


# ----------------------------------------------------------------------------- conversions


def test_values_that_do_not_convert_or_validate_are_problems_of_their_point(tmp_path: Path) -> None:
    table = _inverter()
    values, problems = table.to_model(1, {"W": 1000, "St": 99, "PhV[0]": 230.0, "PhV[1]": 231.0})
    assert values == {"active_power": 1.0}
    assert problems == [
        (
            "St",
            "unit 1 point 'St': code 99 is not in the table of vendor point 'St' "
            "(1, 2, 3, 4, 5, 6, 7, 8)",
        ),
        ("phase_voltage", "unit 1 array 'phase_voltage' lacks items [2]"),
    ]
    own = _load(
        tmp_path,
        "1,holding,0,float32,big,,1,0,kW,power",
        "1,holding,2,uint16,big,,1,0,,state",
    )
    values, problems = own.to_model(1, {"power": math.nan, "state": 7})
    assert values == {}
    assert [p for p, _ in problems] == ["power", "state"]
    assert "expected DOUBLE (a finite number), found float nan" in problems[0][1]
    assert "unit 1: model 'edge_test' measurepoint 'state'" in problems[1][1]


def test_units_convert_both_ways(tmp_path: Path) -> None:
    table = _load(
        tmp_path,
        "7,input,0,int32,big,,1,0,W,power",
        "7,input,2,int16,big,,0.1,0,degF,temperature",
        "7,input,3,uint16,big,,1,0,mA,currents[0]",
        "7,input,4,uint16,big,,1,0,mA,currents[1]",
    )
    values, problems = table.to_model(
        7, {"power": 4520, "temperature": 212.0, "currents[0]": 1500, "currents[1]": 250}
    )
    assert problems == []
    assert values == {"power": 4.52, "temperature": 100.0, "currents": [1.5, 0.25]}
    assert table.from_model(7, values) == {
        "power": 4520.0,
        "temperature": 212.0,
        "currents[0]": 1500.0,
        "currents[1]": 250.0,
    }
    with pytest.raises(InvalidArgument, match=r"array 'currents' takes 2 items, got \[1\.0\]"):
        table.from_model(7, {"currents": [1.0]})
    with pytest.raises(InvalidArgument, match="point 'St' cannot give 'state' = 9"):
        _inverter().from_model(1, {"state": 9})


@settings(max_examples=50, deadline=None)
@given(
    power=st.floats(min_value=-2000, max_value=2000, allow_nan=False),
    energy=st.integers(min_value=0, max_value=4_000_000),
    state=st.sampled_from([0, 1, 2, 3, 4]),
)
def test_model_values_survive_the_trip_through_registers(
    power: float, energy: int, state: int
) -> None:
    """model -> field -> registers -> field -> model: the values, to a register's step."""
    table = _inverter()
    model_values = {"active_power": power, "total_energy": energy / 1000, "state": state}
    field = table.from_model(1, model_values)
    decoded = {
        name: table.row(1, name).decode(table.row(1, name).encode(value))
        for name, value in field.items()
    }
    values, problems = table.to_model(1, decoded)
    assert problems == []
    assert values["state"] == state
    assert values["total_energy"] == pytest.approx(energy / 1000, abs=5e-4)  # 1 Wh counts
    assert values["active_power"] == pytest.approx(power, abs=5e-4)  # 1 W counts


# ----------------------------------------------------------------------------- refusals

REFUSALS = [
    (
        "1,holding,0,uint16,big,,1,0,,nope",
        r"line 2: unknown point 'nope': not a measurepoint of model 'edge_test'",
    ),
    (
        "1,holding,0,float32,big,,1,0,,count",
        r"line 2: type float32 of 'count' cannot fit point 'count' \(INT\): a float is not an "
        r"integer",
    ),
    (
        "1,holding,0,int16,big,,0.1,0,,count",
        r"line 2: type int16 of 'count' cannot fit point 'count' \(INT\): scale 0.1",
    ),
    (
        "1,holding,0,uint32,big,,1,0,,count",
        r"line 2: type uint32 of 'count' cannot fit point 'count' \(INT\): values 0..4294967295 "
        r"exceed the int32 range",
    ),
    (
        "1,holding,0,float64,big,,1,0,degC,temperature",
        r"line 2: type float64 of 'temperature' cannot fit point 'temperature' \(FLOAT\): "
        r"float64 does not fit single precision",
    ),
    (
        "1,holding,0,uint16,big,,1,0,,label",
        r"line 2: type uint16 of 'label' cannot fit point 'label' \(STRING\): registers cannot "
        r"hold a STRING",
    ),
    ("1,holding,0,uint32,big,,1,0,,stamp", r"cannot fit point 'stamp' \(TIMESTAMP\)"),
    ("1,holding,0,uint16,big,,1,0,,mode", r"cannot fit point 'mode' \(ENUM of string keys\)"),
    ("1,holding,0,uint16,big,,1,0,,running", r"cannot fit point 'running' \(BOOL\): use type bool"),
    (
        "1,coil,0,bool,big,,1,0,,power",
        r"type bool of 'power' cannot fit point 'power' \(DOUBLE\): a bool is not a number",
    ),
    (
        "1,holding,0,float32,big,,1,0,V,power",
        r"line 2: unit 'V' of 'power' does not fit point 'power' in 'kW': cannot convert V "
        r"\(voltage\) to kW \(power\)",
    ),
    (
        "1,holding,0,float32,big,,1,0,W,ratio",
        r"unit 'W' of 'ratio' does not fit point 'ratio', which has no unit",
    ),
    (
        "1,holding,0,float32,big,,1,0,parsec,power",
        r"unit 'parsec' of 'power' does not fit point 'power' in 'kW': unknown unit 'parsec'",
    ),
    (
        "1,holding,0,float32,big,,1,0,A,currents",
        r"point 'currents' is an ARRAY: map its items as currents\[0\]",
    ),
    (
        "1,holding,0,float32,big,,1,0,kW,power[0]",
        r"'power\[0\]': point 'power' is DOUBLE, not an ARRAY",
    ),
    (
        "1,register,0,float32,big,,1,0,kW,power",
        r"line 2: table 'register' is not one of coil, discrete_input, holding, input",
    ),
    ("1,holding,0,float16,big,,1,0,kW,power", r"line 2: type 'float16' is not one of int16"),
    (
        "1,holding,0,float32,middle,,1,0,kW,power",
        r"line 2: word_order 'middle' is not one of big, little",
    ),
    ("248,holding,0,float32,big,,1,0,kW,power", r"line 2: unit_id 248 is outside 1..247"),
    ("x,holding,0,float32,big,,1,0,kW,power", r"line 2: unit_id 'x' is not an integer"),
    (
        "1,holding,65535,float32,big,,1,0,kW,power",
        r"line 2: address 65535 \+ 2 registers runs past the last address 65535",
    ),
    ("1,holding,0,float32,big,,0,0,kW,power", r"line 2: scale 0 would make every value the offset"),
    ("1,holding,0,float32,big,,inf,0,kW,power", r"line 2: scale 'inf' is not a finite number"),
    ("1,holding,0,float32,big,,ten,0,kW,power", r"line 2: scale 'ten' is not a number"),
    (
        "1,holding,0,bool,big,,1,0,,running",
        r"line 2: a bool in a holding register needs a bit \(0..15\)",
    ),
    ("1,coil,0,bool,big,3,1,0,,running", r"line 2: a coil is one bit: bit 3 does not apply"),
    ("1,holding,0,uint16,big,3,1,0,,count", r"line 2: bit 3 applies only to type bool"),
    ("1,holding,0,bool,big,16,1,0,,running", r"line 2: bit 16 is outside 0..15"),
    (
        "1,coil,0,uint16,big,,1,0,,count",
        r"line 2: a coil holds one bit: type uint16 needs registers",
    ),
    ("1,holding,0,,big,,1,0,kW,power", r"line 2: type is empty"),
]


@pytest.mark.parametrize(("line", "message"), REFUSALS)
def test_a_row_that_does_not_fit_is_refused_naming_file_line_and_value(
    tmp_path: Path, line: str, message: str
) -> None:
    with pytest.raises(
        InvalidArgument, match=rf"^map\.csv {message}" if message.startswith("line") else message
    ):
        _load(tmp_path, line)


TABLE_REFUSALS = [
    (
        ["1,holding,0,float32,big,,1,0,kW,power", "1,holding,1,uint16,big,,1,0,,count"],
        r"map\.csv line 3: 'count' uses holding 1 of unit 1, as 'power' on line 2 does",
    ),
    (
        [
            "1,holding,5,bool,big,3,1,0,,running",
            "2,holding,5,bool,big,3,1,0,,running",
            "1,holding,5,uint16,big,,1,0,,count",
        ],
        r"map\.csv line 4: 'count' uses holding 5 of unit 1, as 'running' on line 2 does",
    ),
    (
        ["1,input,9,bool,big,0,1,0,,running", "1,input,9,bool,big,1,1,0,,state_bit"],
        r"line 3: unknown point 'state_bit'",
    ),
    (
        ["1,coil,4,bool,big,,1,0,,running", "1,coil,4,bool,big,,1,0,,running"],
        r"map\.csv line 3: point 'running' of unit 1 is on line 2 too",
    ),
    (
        ["1,holding,0,float32,big,,1,0,kW,power", "1,input,0,float32,big,,1,0,W,power"],
        r"map\.csv line 3: point 'power' of unit 1 is on line 2 too",
    ),
    (
        ["1,input,0,float32,big,,1,0,A,currents[0]", "1,input,2,float32,big,,1,0,A,currents[2]"],
        r"map\.csv line 3: unit 1 array 'currents' has items \[0, 2\]: expected 0..1",
    ),
]


@pytest.mark.parametrize(("lines", "message"), TABLE_REFUSALS)
def test_rows_that_clash_are_refused_naming_both_lines(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _load(tmp_path, *lines)


def test_bits_of_one_register_may_be_shared_but_not_twice(tmp_path: Path) -> None:
    model = ThingModel(
        "bits",
        I18nText("bits"),
        measurepoints={
            name: Measurepoint(name, DataSpec(DataType.BOOL)) for name in ("a", "b", "c")
        },
    )
    table = _load(
        tmp_path, "1,input,9,bool,big,0,1,0,,a", "1,input,9,bool,big,15,1,0,,b", model=model
    )
    assert [(g.address, g.count) for g in table.plan(1)] == [(9, 1)]
    with pytest.raises(
        InvalidArgument, match=r"'c' uses bit 15 of input 9 of unit 1, as 'b' on line 3"
    ):
        _load(
            tmp_path,
            "1,input,9,bool,big,0,1,0,,a",
            "1,input,9,bool,big,15,1,0,,b",
            "1,input,9,bool,big,15,1,0,,c",
            model=model,
        )


def test_vendor_tables_refuse_what_the_mapping_does_not_know(tmp_path: Path) -> None:
    model, mapping = library_model("pv_inverter"), vendor_mapping("inverter_vendor_a")
    path = tmp_path / "vendor.csv"
    path.write_text(HEADER + "1,input,0,int32,big,,1,0,W,Pac\n", encoding="utf-8")
    with pytest.raises(
        InvalidArgument,
        match=r"vendor\.csv line 2: unknown point 'Pac': not a vendor point of mapping "
        r"'inverter_vendor_a' \(W, VAr",
    ):
        load_point_table(path, model, mapping=mapping)
    path.write_text(HEADER + "1,input,0,float32,big,,1,0,,St\n", encoding="utf-8")
    with pytest.raises(
        InvalidArgument,
        match=r"line 2: type float32 of 'St' cannot give codes for the table of vendor point 'St'",
    ):
        load_point_table(path, model, mapping=mapping)
    path.write_text(HEADER + "1,input,0,float32,big,,1,0,V,W\n", encoding="utf-8")
    with pytest.raises(
        InvalidArgument, match=r"line 2: unit 'V' of 'W' does not fit point 'active_power' in 'W'"
    ):
        load_point_table(path, model, mapping=mapping)
    with pytest.raises(InvalidArgument, match="targets model 'pv_inverter', not 'energy_meter'"):
        load_point_table(path, library_model("energy_meter"), mapping=mapping)


def test_file_level_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("unit_id,table,adress,type,point\n1,holding,0,uint16,count\n", encoding="utf-8")
    with pytest.raises(InvalidArgument, match=r"odd\.csv: unknown columns \['adress'\]"):
        load_point_table(path, MODEL)
    path.write_text("unit_id,table,type,point\n1,holding,uint16,count\n", encoding="utf-8")
    with pytest.raises(InvalidArgument, match=r"odd\.csv: missing columns \['address'\]"):
        load_point_table(path, MODEL)
    path.write_text(HEADER, encoding="utf-8")
    with pytest.raises(InvalidArgument, match=r"odd\.csv: no rows under the header"):
        load_point_table(path, MODEL)
    path.write_text(HEADER + "1,holding,0,uint16,big,,1,0,,count,extra\n", encoding="utf-8")
    with pytest.raises(InvalidArgument, match=r"odd\.csv line 2: more cells than columns"):
        load_point_table(path, MODEL)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidArgument, match=r"odd\.csv: not a UTF-8 CSV file"):
        load_point_table(path, MODEL)
    with pytest.raises(InvalidArgument, match="cannot read point table"):
        load_point_table(tmp_path / "missing.csv", MODEL)


def test_lookups_name_the_choices() -> None:
    table = _meter()
    with pytest.raises(
        InvalidArgument, match=r"unit 2 has no point 'power' \(points: active_power, "
    ):
        table.row(2, "power")
    assert table.rows_of(9) == ()
    assert RegisterTable.COIL.bits and not RegisterTable.INPUT.bits
