"""The register codec, point rows and read planning: round trips, known words, limits."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enos_lab.edge import (
    MAX_READ_REGISTERS,
    PointRow,
    PointTable,
    ReadGroup,
    RegisterTable,
    RegisterType,
    WordOrder,
    decode_words,
    encode_words,
)
from enos_lab.errors import InvalidArgument
from enos_lab.model import DataSpec, DataType, I18nText, Measurepoint, ThingModel

INTEGERS = [RegisterType.INT16, RegisterType.UINT16, RegisterType.INT32, RegisterType.UINT32]
ORDERS = list(WordOrder)
WORDS = st.integers(min_value=0, max_value=0xFFFF)


@pytest.mark.parametrize(
    ("value", "rtype", "order", "words"),
    [
        (-2, RegisterType.INT16, WordOrder.BIG, [0xFFFE]),
        (0xBEEF, RegisterType.UINT16, WordOrder.LITTLE, [0xBEEF]),
        (0x12345678, RegisterType.INT32, WordOrder.BIG, [0x1234, 0x5678]),
        (0x12345678, RegisterType.UINT32, WordOrder.LITTLE, [0x5678, 0x1234]),
        (-1, RegisterType.INT32, WordOrder.BIG, [0xFFFF, 0xFFFF]),
        (1.0, RegisterType.FLOAT32, WordOrder.BIG, [0x3F80, 0x0000]),
        (1.0, RegisterType.FLOAT32, WordOrder.LITTLE, [0x0000, 0x3F80]),
        (-2.5, RegisterType.FLOAT64, WordOrder.BIG, [0xC004, 0, 0, 0]),
        (-2.5, RegisterType.FLOAT64, WordOrder.LITTLE, [0, 0, 0, 0xC004]),
    ],
)
def test_known_words(value: float, rtype: RegisterType, order: WordOrder, words: list[int]) -> None:
    assert encode_words(value, rtype, order) == words
    assert decode_words(words, rtype, order) == value


@pytest.mark.parametrize("rtype", INTEGERS)
@pytest.mark.parametrize("order", ORDERS)
@given(data=st.data())
def test_integers_round_trip(rtype: RegisterType, order: WordOrder, data: st.DataObject) -> None:
    low, high = rtype.range
    value = data.draw(st.integers(min_value=low, max_value=high))
    words = encode_words(value, rtype, order)
    assert len(words) == rtype.words and all(0 <= w <= 0xFFFF for w in words)
    assert decode_words(words, rtype, order) == value


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(allow_nan=False))
def test_float64_round_trips_exactly(order: WordOrder, value: float) -> None:
    assert (
        decode_words(encode_words(value, RegisterType.FLOAT64, order), RegisterType.FLOAT64, order)
        == value
    )


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(width=32, allow_nan=False))
def test_float32_decodes_to_the_shortest_decimal_of_the_same_bits(
    order: WordOrder, value: float
) -> None:
    words = encode_words(value, RegisterType.FLOAT32, order)
    decoded = decode_words(words, RegisterType.FLOAT32, order)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)
    assert encode_words(decoded, RegisterType.FLOAT32, order) == words
    assert len(repr(decoded)) <= max(len(repr(value)), len(f"{value:.9g}") + 2)


@pytest.mark.parametrize("rtype", [t for t in RegisterType if t is not RegisterType.BOOL])
@pytest.mark.parametrize("order", ORDERS)
@given(data=st.data())
def test_any_words_that_decode_to_a_number_encode_back_to_themselves(
    rtype: RegisterType, order: WordOrder, data: st.DataObject
) -> None:
    words = data.draw(st.lists(WORDS, min_size=rtype.words, max_size=rtype.words))
    value = decode_words(words, rtype, order)
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payloads are not kept: a NaN encodes as the canonical NaN
    assert encode_words(value, rtype, order) == words


def test_values_that_do_not_fit_are_refused_by_name() -> None:
    with pytest.raises(
        InvalidArgument, match=r"70000 does not fit uint16: expected an int in 0\.\.65535"
    ):
        encode_words(70000, RegisterType.UINT16, WordOrder.BIG)
    with pytest.raises(InvalidArgument, match=r"1\.5 does not fit int32"):
        encode_words(1.5, RegisterType.INT32, WordOrder.BIG)
    with pytest.raises(InvalidArgument, match=r"1e\+39 does not fit float32"):
        encode_words(1e39, RegisterType.FLOAT32, WordOrder.BIG)
    with pytest.raises(InvalidArgument, match="expected a number"):
        encode_words("1", RegisterType.FLOAT64, WordOrder.BIG)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="takes 2 registers, got 1"):
        decode_words([1], RegisterType.FLOAT32, WordOrder.BIG)
    with pytest.raises(InvalidArgument, match="a bool is a bit"):
        encode_words(1, RegisterType.BOOL, WordOrder.BIG)


SCALES = [0.1, 0.01, 0.001, 10.0, -0.5, 2.5]


@pytest.mark.parametrize("rtype", INTEGERS)
@pytest.mark.parametrize("scale", SCALES)
@given(data=st.data(), offset=st.sampled_from([0.0, -40.0, 273.15]))
def test_a_scaled_row_gives_back_the_raw_value_of_its_field_value(
    rtype: RegisterType, scale: float, offset: float, data: st.DataObject
) -> None:
    row = PointRow(1, RegisterTable.HOLDING, 0, rtype, "p", scale=scale, offset=offset)
    low, high = rtype.range
    raw = data.draw(st.integers(min_value=low, max_value=high))
    words = encode_words(raw, rtype, WordOrder.BIG)
    assert row.encode(row.decode(words)) == words


def test_field_values_keep_integers_integers_when_the_scale_is_integral() -> None:
    tenfold = PointRow(1, RegisterTable.INPUT, 0, RegisterType.UINT32, "e", scale=10)
    assert tenfold.to_field(12345) == 123450 and type(tenfold.to_field(12345)) is int
    assert tenfold.to_raw(1234567.8) == 123457  # nearest count
    tenth = PointRow(1, RegisterTable.INPUT, 0, RegisterType.UINT16, "v", scale=0.1)
    assert tenth.to_field(2301) == 230.1  # exact decimal, not 230.10000000000002
    with pytest.raises(
        InvalidArgument, match=r"unit 1 point 'v': 6553\.6 is raw 65536, beyond uint16"
    ):
        tenth.to_raw(6553.6)
    flag = PointRow(1, RegisterTable.COIL, 3, RegisterType.BOOL, "on")
    assert flag.to_raw(1) is True
    with pytest.raises(InvalidArgument, match="is a bool"):
        flag.to_raw(2)


def _model() -> ThingModel:
    double = DataSpec(DataType.DOUBLE)
    points = {f"p{i}": Measurepoint(f"p{i}", double) for i in range(8)} | {
        "flag": Measurepoint("flag", DataSpec(DataType.BOOL)),
        "alarm": Measurepoint("alarm", DataSpec(DataType.BOOL)),
    }
    return ThingModel("plan_test", I18nText("plan test"), measurepoints=points)


def test_plan_merges_contiguous_addresses_within_the_read_limit() -> None:
    rows = [
        PointRow(1, RegisterTable.HOLDING, 0, RegisterType.FLOAT32, "p0", line=2),
        PointRow(1, RegisterTable.HOLDING, 2, RegisterType.FLOAT64, "p1", line=3),
        PointRow(1, RegisterTable.HOLDING, 10, RegisterType.UINT16, "p2", line=4),  # gap of 4
        PointRow(1, RegisterTable.HOLDING, 120, RegisterType.FLOAT32, "p3", line=5),
        PointRow(1, RegisterTable.HOLDING, 122, RegisterType.FLOAT64, "p4", line=6),
        PointRow(1, RegisterTable.HOLDING, 126, RegisterType.FLOAT32, "p5", line=7),  # 120..127
        PointRow(1, RegisterTable.INPUT, 0, RegisterType.UINT16, "p6", line=8),
        PointRow(1, RegisterTable.COIL, 5, RegisterType.BOOL, "flag", line=9),
        PointRow(1, RegisterTable.INPUT, 1, RegisterType.BOOL, "alarm", bit=3, line=10),
        PointRow(2, RegisterTable.HOLDING, 0, RegisterType.UINT16, "p7", line=11),
    ]
    table = PointTable(rows, _model())
    spans = [(g.table, g.address, g.count) for g in table.plan(1)]
    assert spans == [
        (RegisterTable.COIL, 5, 1),
        (RegisterTable.HOLDING, 0, 6),
        (RegisterTable.HOLDING, 10, 1),
        (RegisterTable.HOLDING, 120, 8),
        (RegisterTable.INPUT, 0, 2),
    ]
    across = [
        (g.address, g.count) for g in table.plan(1, max_gap=4) if g.table is RegisterTable.HOLDING
    ]
    assert across == [(0, 11), (120, 8)]
    wide = [
        (g.address, g.count) for g in table.plan(1, max_gap=200) if g.table is RegisterTable.HOLDING
    ]
    # never beyond one read's limit, and a point is never split between two reads
    assert wide == [(0, 122), (122, 6)]
    assert all(g.count <= MAX_READ_REGISTERS for g in table.plan(1, max_gap=200))
    assert [g.count for g in table.plan(2)] == [1]


def test_a_group_decodes_its_rows_and_refuses_a_short_answer() -> None:
    rows = (
        PointRow(1, RegisterTable.HOLDING, 0, RegisterType.INT16, "a", scale=0.1),
        PointRow(1, RegisterTable.HOLDING, 1, RegisterType.BOOL, "b", bit=0),
        PointRow(1, RegisterTable.HOLDING, 1, RegisterType.BOOL, "c", bit=15),
        PointRow(
            1, RegisterTable.HOLDING, 2, RegisterType.UINT32, "d", word_order=WordOrder.LITTLE
        ),
    )
    group = ReadGroup(1, RegisterTable.HOLDING, 0, 4, rows)
    assert group.decode([0xFFF6, 0x8000, 0x0002, 0x0001]) == {
        "a": -1.0,
        "b": False,
        "c": True,
        "d": 0x10002,
    }
    with pytest.raises(InvalidArgument, match="holds 3 of 4 registers"):
        group.decode([0, 0, 0])
