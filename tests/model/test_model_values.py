"""Validation of device values against a thing model: every data type, coercion and code."""

from __future__ import annotations

from typing import Any

import pytest

from enos_lab.errors import ModelError, ValidationError
from enos_lab.model import (
    QUALITY_MAX,
    Attribute,
    DataSpec,
    DataType,
    Event,
    EventType,
    I18nText,
    Measurepoint,
    Param,
    Service,
    ThingModel,
    Unit,
    normalise_tags,
    valid_quality,
)

D = DataType


def point_model(spec: DataSpec, *, quality: bool = False, passthrough: bool = False) -> ThingModel:
    return ThingModel(
        "m1",
        I18nText("M1"),
        measurepoints={"p": Measurepoint("p", spec, has_quality=quality)},
        allow_additional_measurepoints=passthrough,
    )


def ok(spec: DataSpec, raw: Any) -> Any:
    return point_model(spec).validate_measurepoints({"p": raw}).values["p"]


def bad(spec: DataSpec, raw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        point_model(spec).validate_measurepoints({"p": raw})
    assert info.value.code == 1204
    assert "'m1'" in str(info.value) and "'p'" in str(info.value)
    return info.value


ENUM_INT = DataSpec(
    D.ENUM, enum_type=D.INT, enum_values={"0": I18nText("off"), "1": I18nText("on")}
)
ENUM_STR = DataSpec(D.ENUM, enum_type=D.STRING, enum_values={"a": I18nText("A")})
STRUCT = DataSpec(
    D.STRUCT,
    members=(Param("lat", DataSpec(D.DOUBLE), required=True), Param("tag", DataSpec(D.STRING))),
)


# ----------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(0, 0), (-(2**31), -(2**31)), (2**31 - 1, 2**31 - 1), (7.0, 7), (-3.0, -3)],
)
def test_int_accepts_int32_and_integral_floats(raw: Any, expected: int) -> None:
    value = ok(DataSpec(D.INT), raw)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("raw", [2**31, -(2**31) - 1, 1.5, True, False, "1", None, [1], {"a": 1}])
def test_int_refuses_out_of_range_bool_strings_and_fractions(raw: Any) -> None:
    err = bad(DataSpec(D.INT), raw)
    assert "INT" in str(err)


@pytest.mark.parametrize("dt", [D.FLOAT, D.DOUBLE])
def test_float_and_double_take_numbers_and_return_float(dt: DataType) -> None:
    assert ok(DataSpec(dt), 3) == 3.0 and type(ok(DataSpec(dt), 3)) is float
    assert ok(DataSpec(dt), -2.5) == -2.5


@pytest.mark.parametrize("dt", [D.FLOAT, D.DOUBLE])
@pytest.mark.parametrize("raw", [float("nan"), float("inf"), True, "1.5", None, [1.0]])
def test_float_and_double_refuse_non_numbers_and_non_finite(dt: DataType, raw: Any) -> None:
    bad(DataSpec(dt), raw)


def test_float_refuses_values_beyond_float32_but_double_takes_them() -> None:
    bad(DataSpec(D.FLOAT), 1e39)
    bad(DataSpec(D.FLOAT), 10**39)
    assert ok(DataSpec(D.DOUBLE), 1e39) == 1e39


@pytest.mark.parametrize(("raw", "expected"), [(True, True), (False, False), (1, True), (0, False)])
def test_bool_accepts_true_false_and_0_1(raw: Any, expected: bool) -> None:
    assert ok(DataSpec(D.BOOL), raw) is expected


@pytest.mark.parametrize("raw", [2, -1, "true", 1.0, None])
def test_bool_refuses_other_values(raw: Any) -> None:
    assert "BOOL" in str(bad(DataSpec(D.BOOL), raw))


def test_int_enum_takes_int_keys_only() -> None:
    assert ok(ENUM_INT, 1) == 1
    err = bad(ENUM_INT, 2)
    assert "one of 0, 1" in str(err)
    bad(ENUM_INT, "1")
    bad(ENUM_INT, True)


def test_string_enum_takes_string_keys_only() -> None:
    assert ok(ENUM_STR, "a") == "a"
    bad(ENUM_STR, "b")
    bad(ENUM_STR, 0)


def test_string_max_length_counts_utf8_bytes() -> None:
    spec = DataSpec(D.STRING, max_length=4)
    assert ok(spec, "abcd") == "abcd"
    assert ok(spec, "éé") == "éé"  # 4 bytes
    err = bad(spec, "ééé")  # 3 characters, 6 bytes
    assert "6 bytes" in str(err)
    bad(spec, 12)


def test_string_without_max_length_allows_1024_bytes() -> None:
    assert ok(DataSpec(D.STRING), "x" * 1024) == "x" * 1024
    bad(DataSpec(D.STRING), "x" * 1025)


def test_timestamp_is_epoch_ms_int() -> None:
    assert ok(DataSpec(D.TIMESTAMP), 1700000000000) == 1700000000000
    assert ok(DataSpec(D.TIMESTAMP), 1700000000000.0) == 1700000000000
    for raw in ("1700000000000", 1.5, True, 2**63):
        bad(DataSpec(D.TIMESTAMP), raw)


def test_date_is_yyyy_mm_dd_hh_mm_ss_on_a_real_calendar() -> None:
    assert ok(DataSpec(D.DATE), "2024-02-29 23:59:59") == "2024-02-29 23:59:59"
    for raw in (
        "2023-02-29 00:00:00",
        "2024-01-01",
        "2024-01-01T00:00:00",
        "2024-13-01 00:00:00",
        0,
    ):
        assert "yyyy-MM-dd HH:mm:ss" in str(bad(DataSpec(D.DATE), raw))


def test_file_is_a_uri_with_a_scheme() -> None:
    assert ok(DataSpec(D.FILE), "local://report.csv") == "local://report.csv"
    assert ok(DataSpec(D.FILE), "https://example.com/a.bin") == "https://example.com/a.bin"
    for raw in ("report.csv", "", 5):
        bad(DataSpec(D.FILE), raw)


# ----------------------------------------------------------------------------- struct / array


def test_struct_checks_members_and_leaves_out_missing_optional_ones() -> None:
    assert ok(STRUCT, {"lat": 31, "tag": "x"}) == {"lat": 31.0, "tag": "x"}
    assert ok(STRUCT, {"lat": 1.5}) == {"lat": 1.5}


def test_struct_errors_name_the_member() -> None:
    assert "at 'tag'" in str(bad(STRUCT, {"lat": 1.0, "tag": 5}))
    assert "required member 'lat'" in str(bad(STRUCT, {"tag": "x"}))
    assert "at 'zzz'" in str(bad(STRUCT, {"lat": 1.0, "zzz": 1}))
    bad(STRUCT, [1.0])


def test_array_coerces_numeric_strings_to_the_item_type() -> None:
    floats = DataSpec(D.ARRAY, item_type=D.FLOAT)
    assert ok(floats, ["1.02", "2.02", 3]) == [1.02, 2.02, 3.0]
    ints = DataSpec(D.ARRAY, item_type=D.INT)
    assert ok(ints, ["1", 2, " 3 "]) == [1, 2, 3]
    assert ok(DataSpec(D.ARRAY, item_type=D.DOUBLE), []) == []


def test_array_errors_name_the_index() -> None:
    ints = DataSpec(D.ARRAY, item_type=D.INT)
    assert "at '[1]'" in str(bad(ints, [1, "1.5"]))
    assert "at '[0]'" in str(bad(ints, ["x"]))
    strings = DataSpec(D.ARRAY, item_type=D.STRING)
    assert ok(strings, ["a", "1"]) == ["a", "1"]
    bad(strings, ["a", 1])
    bad(ints, {"0": 1})


def test_array_holds_at_most_128_items() -> None:
    spec = DataSpec(D.ARRAY, item_type=D.INT)
    assert len(ok(spec, list(range(128)))) == 128
    assert "129 items" in str(bad(spec, list(range(129))))


# ----------------------------------------------------------------------------- quality


def test_quality_encoding_is_split_into_value_and_quality() -> None:
    model = point_model(DataSpec(D.FLOAT), quality=True)
    result = model.validate_measurepoints({"p": {"value": 12, "quality": 9}})
    assert result.values == {"p": 12.0}
    assert result.quality == {"p": 9}
    bare = model.validate_measurepoints({"p": 3.5})
    assert bare.values == {"p": 3.5} and bare.quality == {}
    no_quality = model.validate_measurepoints({"p": {"value": 1}})
    assert no_quality.values == {"p": 1.0} and no_quality.quality == {}


@pytest.mark.parametrize(
    "raw",
    [
        {"value": 1.0, "quality": 10},
        {"value": 1.0, "quality": "9"},
        {"value": 1.0, "quality": True},
        {"quality": 9},
        {"value": 1.0, "quality": 9, "extra": 1},
        {"value": "x", "quality": 9},
    ],
)
def test_bad_quality_encodings_are_1204(raw: Any) -> None:
    model = point_model(DataSpec(D.FLOAT), quality=True)
    with pytest.raises(ValidationError) as info:
        model.validate_measurepoints({"p": raw})
    assert info.value.code == 1204


def test_valid_quality_is_the_documented_range() -> None:
    assert [q for q in range(-2, 12) if valid_quality(q)] == list(range(QUALITY_MAX + 1))
    assert not valid_quality(True) and not valid_quality(9.0) and not valid_quality("9")


def test_quality_object_on_a_point_without_quality_is_a_wrong_type() -> None:
    bad(DataSpec(D.FLOAT), {"value": 1.0, "quality": 9})


# ----------------------------------------------------------------------------- the map


def test_unknown_measurepoint_is_1204_naming_model_and_point() -> None:
    model = point_model(DataSpec(D.INT))
    with pytest.raises(ValidationError) as info:
        model.validate_measurepoints({"p": 1, "nope": 2})
    assert info.value.code == 1204
    assert str(info.value) == "model 'm1': unknown measurepoint 'nope' (declared: p)"


def test_passthrough_model_accepts_undeclared_points_unchanged() -> None:
    model = point_model(DataSpec(D.INT), passthrough=True)
    result = model.validate_measurepoints({"p": 1, "extra": {"any": ["json"]}})
    assert result.values == {"p": 1, "extra": {"any": ["json"]}}
    assert result.passthrough == frozenset({"extra"})
    bad_declared = model.check_measurepoints({"p": "x"})
    assert [p.point_id for p in bad_declared.problems] == ["p"]


def test_message_names_model_point_expected_and_found() -> None:
    err = bad(DataSpec(D.FLOAT), "abc")
    assert str(err) == (
        "model 'm1' measurepoint 'p': expected FLOAT (a JSON number), found string 'abc'"
    )


@pytest.mark.parametrize("values", [[1, 2], "x", None, 5])
def test_measurepoints_that_are_not_an_object_are_1206(values: Any) -> None:
    model = point_model(DataSpec(D.INT))
    with pytest.raises(ValidationError) as info:
        model.validate_measurepoints(values)
    assert info.value.code == 1206
    report = model.check_measurepoints(values)
    assert report.problems[0].point_id == "" and report.problems[0].code == 1206


def test_check_measurepoints_keeps_good_points_and_lists_bad_ones() -> None:
    model = ThingModel(
        "m2",
        I18nText("M2"),
        measurepoints={
            "a": Measurepoint("a", DataSpec(D.INT)),
            "b": Measurepoint("b", DataSpec(D.DOUBLE), has_quality=True),
            "c": Measurepoint("c", DataSpec(D.BOOL)),
        },
    )
    report = model.check_measurepoints(
        {"a": 1, "b": {"value": "bad", "quality": 9}, "c": 1, "zz": 0}
    )
    assert not report.ok
    assert report.values == {"a": 1, "c": True}
    assert report.quality == {}
    assert [(p.point_id, p.code) for p in report.problems] == [("b", 1204), ("zz", 1204)]
    assert isinstance(report.problems[0].error(), ValidationError)
    assert model.check_measurepoints({"a": 2}).ok


# ----------------------------------------------------------------------------- other kinds


def rich_model() -> ThingModel:
    return ThingModel(
        "rich",
        I18nText("Rich"),
        attributes={
            "rated": Attribute("rated", DataSpec(D.DOUBLE)),
            "loc": Attribute("loc", STRUCT),
        },
        services={
            "multiply": Service(
                "multiply",
                input_data=(
                    Param("left", DataSpec(D.INT), required=True),
                    Param("right", DataSpec(D.INT), required=True),
                ),
                output_data=(Param("result", DataSpec(D.INT)),),
            )
        },
        events={
            "overheat": Event(
                "overheat",
                EventType.ERROR,
                (
                    Param("temp", DataSpec(D.FLOAT), required=True),
                    Param("note", DataSpec(D.STRING)),
                ),
            )
        },
    )


def test_attributes_are_validated_and_normalised() -> None:
    model = rich_model()
    assert model.validate_attributes({"rated": 5, "loc": {"lat": 1}}) == {
        "rated": 5.0,
        "loc": {"lat": 1.0},
    }
    with pytest.raises(ValidationError) as info:
        model.validate_attributes({"rated": "5"})
    assert info.value.code == 1204 and "attribute 'rated'" in str(info.value)
    with pytest.raises(ValidationError) as info:
        model.validate_attributes({"other": 1})
    assert info.value.code == 1204 and "unknown attribute 'other'" in str(info.value)
    with pytest.raises(ValidationError) as info:
        model.validate_attributes(["rated"])
    assert info.value.code == 1207


def test_additional_attributes_pass_through_when_allowed() -> None:
    model = ThingModel("open", I18nText("Open"), allow_additional_attributes=True)
    assert model.validate_attributes({"x": [1]}) == {"x": [1]}


def test_event_outputs_are_validated() -> None:
    model = rich_model()
    assert model.validate_event("overheat", {"temp": 90}) == {"temp": 90.0}
    cases = [
        ("overheat", {"temp": "hot"}, "parameter 'temp'"),
        ("overheat", {"note": "x"}, "required parameter 'temp' is missing"),
        ("overheat", {"temp": 1.0, "x": 1}, "unknown parameter 'x'"),
        ("nope", {}, "unknown event 'nope'"),
        ("overheat", [1], "must be a JSON object"),
    ]
    for event_id, values, text in cases:
        with pytest.raises(ValidationError) as info:
            model.validate_event(event_id, values)
        assert info.value.code == 1204
        assert text in str(info.value) and "'rich'" in str(info.value)


def test_service_input_and_output_are_validated() -> None:
    model = rich_model()
    assert model.validate_service_input("multiply", {"left": 6, "right": 7}) == {
        "left": 6,
        "right": 7,
    }
    assert model.validate_service_output("multiply", {"result": 42}) == {"result": 42}
    assert model.validate_service_output("multiply", None) == {}
    assert model.validate_service_output("multiply", "") == {}
    with pytest.raises(ValidationError, match="required parameter 'right'"):
        model.validate_service_input("multiply", {"left": 6})
    with pytest.raises(ValidationError, match="output of service 'multiply' parameter 'result'"):
        model.validate_service_output("multiply", {"result": 4.5})
    with pytest.raises(ValidationError, match="unknown service 'divide'"):
        model.validate_service_input("divide", {})


def test_tags_are_normalised_to_strings() -> None:
    tags = normalise_tags(
        [
            {"tagKey": "site", "tagValue": "A"},
            {"tagKey": "row", "tagValue": 3},
            {"tagKey": "_x", "tagValue": 1.5},
            {"tagKey": "on", "tagValue": True},
        ]
    )
    assert tags == {"site": "A", "row": "3", "_x": "1.5", "on": "true"}
    assert normalise_tags({"k": 1}) == {"k": "1"}
    for params in (
        [{"tagKey": "1bad", "tagValue": "v"}],
        [{"tagKey": "k"}],
        "x",
        [{"tagKey": "k", "tagValue": None}],
    ):
        with pytest.raises(ValidationError) as info:
            normalise_tags(params)
        assert info.value.code == 1200
    with pytest.raises(ValidationError, match="at most 200"):
        normalise_tags({f"k{i}": i for i in range(201)})


# ----------------------------------------------------------------------------- model errors


@pytest.mark.parametrize(
    ("build", "text"),
    [
        (
            lambda: DataSpec(D.ENUM, enum_type=D.INT, enum_values={"x": I18nText("x")}),
            "not an integer",
        ),
        (
            lambda: DataSpec(D.ENUM, enum_type=D.BOOL, enum_values={"1": I18nText("x")}),
            "INT or STRING",
        ),
        (lambda: DataSpec(D.ENUM, enum_type=D.INT), "at least one"),
        (lambda: DataSpec(D.STRING, max_length=2000), "max_length"),
        (lambda: DataSpec(D.INT, max_length=5), "max_length"),
        (lambda: DataSpec(D.ARRAY, item_type=D.BOOL), "item_type"),
        (lambda: DataSpec(D.ARRAY), "item_type"),
        (lambda: DataSpec(D.STRUCT), "at least one member"),
        (lambda: DataSpec(D.STRUCT, members=(Param("s", STRUCT),)), "one level deep"),
        (lambda: DataSpec(D.BOOL, bool_labels={"yes": I18nText("y")}), "bool_labels"),
        (lambda: Measurepoint("m", DataSpec(D.STRING), has_quality=True), "has_quality"),
        (lambda: Measurepoint("1m", DataSpec(D.INT)), "identifier"),
        (lambda: Attribute("a", ENUM_INT, unit=Unit("kW")), "unit"),
        (
            lambda: ThingModel(
                "m",
                I18nText("m"),
                attributes={"x": Attribute("x", DataSpec(D.INT))},
                measurepoints={"x": Measurepoint("x", DataSpec(D.INT))},
            ),
            "identifier 'x' is used by both attribute and measurepoint",
        ),
        (
            lambda: ThingModel(
                "m", I18nText("m"), measurepoints={"x": Measurepoint("y", DataSpec(D.INT))}
            ),
            "differs from identifier",
        ),
    ],
)
def test_invalid_definitions_raise_model_error(build: Any, text: str) -> None:
    with pytest.raises(ModelError, match=text):
        build()
