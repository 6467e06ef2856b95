"""Window shapes and aggregates: what a window is, what it computes, what is refused."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from enos_lab.errors import InvalidArgument
from enos_lab.streams import Aggregate, Derived, Window
from enos_lab.streams._window import aggregate_values


def test_tumbling_windows_are_back_to_back_and_aligned_to_the_epoch() -> None:
    window = Window.tumbling(300)
    assert (window.size_ms, window.step_ms, window.panes) == (300_000, 300_000, 1)
    assert list(window.starts(0)) == [0]
    assert list(window.starts(299_999)) == [0]
    assert list(window.starts(300_000)) == [300_000]  # half-open: the end is the next window's
    assert list(window.starts(-1)) == [-300_000]  # before the epoch too
    assert Window.tumbling(timedelta(minutes=5)) == window


def test_sliding_windows_overlap_so_a_point_is_in_size_over_step_of_them() -> None:
    window = Window.sliding(60, 20)
    assert (window.size_ms, window.step_ms, window.panes) == (60_000, 20_000, 3)
    assert list(window.starts(45_000)) == [0, 20_000, 40_000]
    for start in window.starts(45_000):
        assert start <= 45_000 < start + window.size_ms
    assert Window.sliding(0.5, 0.25) == Window(500, 250)
    assert Window.sliding(10, 10) == Window.tumbling(10)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Window.tumbling(0), "size must be > 0"),
        (lambda: Window.tumbling(-1), "finite duration >= 0"),
        (lambda: Window.tumbling(math.inf), "finite duration >= 0"),
        (lambda: Window.tumbling(0.0001), "whole number of milliseconds"),
        (lambda: Window.tumbling("5m"), "seconds"),  # type: ignore[arg-type]
        (lambda: Window.tumbling(True), "seconds"),
        (lambda: Window.sliding(60, 25), "step must divide its size"),
        (lambda: Window.sliding(60, 120), "must not exceed its size"),
        (lambda: Window.sliding(60, 0), "must be > 0"),
        (lambda: Window(0, 1), "size_ms must be an int > 0"),
        (lambda: Window(10, 1.5), "step_ms must be an int > 0"),  # type: ignore[arg-type]
    ],
)
def test_bad_shapes_are_refused_naming_the_value(make: object, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        ("avg", 4.0),
        ("min", 1),
        ("max", 9),
        ("sum", 16),
        ("count", 4),
        ("first", 5),
        ("last", 1),
        ("delta", -4),
    ],
)
def test_every_aggregate_on_values_in_event_time_order(aggregate: str, expected: float) -> None:
    assert aggregate_values(Aggregate.parse(aggregate), [5, 9, 1, 1]) == expected


def test_delta_of_one_value_is_zero_and_avg_is_a_float() -> None:
    assert aggregate_values(Aggregate.DELTA, [7]) == 0
    assert aggregate_values(Aggregate.AVG, [1, 2]) == 1.5


def test_aggregates_parse_by_name_in_any_case_and_refuse_others() -> None:
    assert Aggregate.parse("AVG") is Aggregate.AVG
    assert Aggregate.parse(Aggregate.DELTA) is Aggregate.DELTA
    with pytest.raises(InvalidArgument, match=r"aggregate must be one of avg, .*'median'"):
        Aggregate.parse("median")
    with pytest.raises(InvalidArgument, match="across must be one of"):
        Aggregate.parse(3, "across")  # type: ignore[arg-type]


def test_a_derived_point_is_stamped_at_its_window_end_in_utc() -> None:
    derived = Derived("inv001", "power_avg", 1_700_000_100_123, 1_700_000_000_000, 1.5, 3)
    assert derived.time == datetime(2023, 11, 14, 22, 15, 0, 123_000, tzinfo=UTC)
    assert derived.time.tzinfo is UTC


def test_every_public_name_resolves_and_every_class_has_a_docstring_of_its_own() -> None:
    from enos_lab import streams

    assert len(set(streams.__all__)) == len(streams.__all__)
    for name in streams.__all__:
        obj = getattr(streams, name)
        if isinstance(obj, type):
            doc = vars(obj).get("__doc__") or ""
            assert doc.strip() and not doc.startswith(f"{name}("), name
