"""The incremental windower: every edge case of windows on event time, one point at a time."""

from __future__ import annotations

import math
from typing import Any

import pytest

from enos_lab.errors import InvalidArgument
from enos_lab.streams import Derived, StreamStats, Window, Windower

S = 1000  # one second [ms]


def results(out: list[Derived]) -> list[tuple[Any, int, int, Any, int]]:
    """(key, start, end, value, count) of each derived point."""
    return [(d.key, d.start_ms, d.time_ms, d.value, d.count) for d in out]


def test_a_tumbling_window_closes_with_the_first_point_at_or_after_its_end() -> None:
    w = Windower(Window.tumbling(10), "avg", point_id="p_avg")
    assert w.add("d1", 0, 1) == []
    assert w.add("d1", 5 * S, 3) == []
    assert w.add("d1", 10 * S - 1, 5) == []  # still [0, 10 s)
    out = w.add("d1", 10 * S, 7)  # the end belongs to the next window
    assert results(out) == [("d1", 0, 10 * S, 3.0, 3)]
    assert out[0].point_id == "p_avg" and out[0].time.timestamp() == 10
    assert results(w.flush()) == [("d1", 10 * S, 20 * S, 7.0, 1)]
    assert w.stats == StreamStats(points=4, emitted=2)


def test_empty_windows_have_no_result() -> None:
    w = Windower(Window.tumbling(10), "count", point_id="n")
    w.add("d1", 1 * S, 1.0)
    out = w.add("d1", 45 * S, 1.0)  # [10, 20), [20, 30), [30, 40) held nothing
    assert results(out) == [("d1", 0, 10 * S, 1, 1)]
    assert results(w.flush()) == [("d1", 40 * S, 50 * S, 1, 1)]


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        ("avg", 4.25),
        ("min", -2),
        ("max", 12),
        ("sum", 17),
        ("count", 4),
        ("first", 12),
        ("last", 3),
        ("delta", -9),
    ],
)
def test_every_aggregate_takes_the_values_in_event_time_order(
    aggregate: str, expected: float
) -> None:
    # arrival order differs from event-time order (within the lateness)
    w = Windower(Window.tumbling(60), aggregate, point_id="x", lateness=30)
    for t, v in [(20, 4), (0, 12), (50, 3), (25, -2)]:
        assert w.add("d1", t * S, v) == []
    (out,) = w.flush()
    assert out.value == expected and out.count == 4


def test_a_point_older_than_the_watermark_is_late_counted_and_dropped() -> None:
    w = Windower(Window.tumbling(10), "sum", point_id="s")
    w.add("d1", 5 * S, 1)
    w.add("d1", 12 * S, 2)  # closes [0, 10) with 1
    assert w.watermark("d1") == 12 * S
    assert w.add("d1", 8 * S, 100) == []  # its window is closed: never revised
    assert w.add("d1", 11 * S, 100) == []  # before the watermark, though its window is open
    assert w.stats.late == 2 and w.key_stats("d1").late == 2
    assert results(w.flush()) == [("d1", 10 * S, 20 * S, 2, 1)]


def test_out_of_order_points_within_the_lateness_still_count() -> None:
    w = Windower(Window.tumbling(10), "sum", point_id="s", lateness=5)
    w.add("d1", 3 * S, 1)
    assert w.add("d1", 12 * S, 2) == []  # watermark 7 s: [0, 10) stays open
    assert w.watermark("d1") == 7 * S and w.open_windows("d1") == 2
    w.add("d1", 9 * S, 4)  # out of order, within the lateness
    assert results(w.add("d1", 15 * S, 8)) == [("d1", 0, 10 * S, 5, 2)]  # watermark 10 s
    assert w.add("d1", 9 * S, 16) == []  # now late
    assert w.stats == StreamStats(points=4, late=1, emitted=1)
    assert results(w.flush()) == [("d1", 10 * S, 20 * S, 10, 2)]


def test_a_duplicate_replaces_the_earlier_value_and_counts_once() -> None:
    w = Windower(Window.tumbling(10), "sum", point_id="s", lateness=5)
    w.add("d1", 1 * S, 1)
    w.add("d1", 1 * S, 5)  # the same time again: last wins, as in the store
    w.add("d1", 2 * S, 1)
    w.add("d1", 1 * S, 7)  # again, out of order within the lateness
    assert w.stats == StreamStats(points=2, duplicates=2)
    assert results(w.flush()) == [("d1", 0, 10 * S, 8, 2)]


def test_sliding_windows_emit_every_overlapping_window_holding_a_point() -> None:
    w = Windower(Window.sliding(30, 10), "sum", point_id="s")
    out = w.extend([("d1", 5 * S, 1), ("d1", 15 * S, 2), ("d1", 25 * S, 4)])
    assert results(out) == [("d1", -20 * S, 10 * S, 1, 1), ("d1", -10 * S, 20 * S, 3, 2)]
    assert results(w.flush()) == [
        ("d1", 0, 30 * S, 7, 3),
        ("d1", 10 * S, 40 * S, 6, 2),
        ("d1", 20 * S, 50 * S, 4, 1),
    ]


def test_a_gap_in_sliding_windows_leaves_only_the_windows_holding_points() -> None:
    w = Windower(Window.sliding(20, 10), "count", point_id="n")
    out = w.extend([("d1", 5 * S, 1), ("d1", 65 * S, 1)])
    assert [(d.start_ms, d.time_ms) for d in out] == [(-10 * S, 10 * S), (0, 20 * S)]
    assert [(d.start_ms, d.time_ms) for d in w.flush()] == [(50 * S, 70 * S), (60 * S, 80 * S)]


def test_per_device_windows_and_watermarks_are_independent() -> None:
    w = Windower(Window.tumbling(10), "max", point_id="m")
    w.add("d1", 1 * S, 1)
    w.add("d2", 2 * S, 2)
    # d2's clock runs an hour ahead: its own window closes, d1's points are not late
    assert results(w.add("d2", 3600 * S, 9)) == [("d2", 0, 10 * S, 2, 1)]
    assert w.add("d1", 3 * S, 3) == []
    assert w.stats.late == 0 and w.keys() == ["d1", "d2"]
    assert results(w.flush()) == [("d1", 0, 10 * S, 3, 2), ("d2", 3600 * S, 3610 * S, 9, 1)]


def test_a_group_total_is_the_sum_of_each_device_s_average() -> None:
    fleet = Windower(
        Window.tumbling(300), "avg", across="sum", key=lambda device: "fleet", point_id="total"
    )
    out = fleet.extend(
        [
            (("pk", "inv1"), 0, 10.0),
            (("pk", "inv2"), 0, 100.0),
            (("pk", "inv1"), 60 * S, 20.0),  # inv1 averages 15, inv2 100
            (("pk", "inv2"), 300 * S, 50.0),  # only inv2 reports in the second window
        ]
    )
    out += fleet.flush()
    assert results(out) == [("fleet", 0, 300 * S, 115.0, 3), ("fleet", 300 * S, 600 * S, 50.0, 1)]
    assert fleet.keys() == ["fleet"] and fleet.across is not None


def test_a_group_without_across_pools_its_points_and_devices_may_share_a_time() -> None:
    w = Windower(Window.tumbling(10), "avg", key=lambda d: d[0], point_id="site_avg")
    w.extend([(("a", 1), 0, 1.0), (("a", 2), 0, 2.0), (("a", 2), 1 * S, 6.0), (("b", 1), 0, 5.0)])
    assert w.stats.duplicates == 0  # the same time on two devices is no duplicate
    assert results(w.flush()) == [("a", 0, 10 * S, 3.0, 3), ("b", 0, 10 * S, 5.0, 1)]


def test_first_and_last_of_a_group_break_ties_in_time_by_the_device() -> None:
    w = Windower(Window.tumbling(10), "first", key=lambda d: "g", point_id="f")
    w.extend([("dev-b", 0, 2), ("dev-a", 0, 1)])
    assert [d.value for d in w.flush()] == [1]


def test_a_group_s_watermark_is_its_newest_point_minus_the_lateness() -> None:
    w = Windower(Window.tumbling(10), "count", key=lambda d: "g", point_id="n", lateness=2)
    w.add("d1", 11 * S, 1)
    assert w.watermark("g") == 9 * S
    assert w.add("d2", 8 * S, 1) == []  # late for the group
    assert w.key_stats("g").late == 1


def test_flush_until_closes_what_ends_by_then_and_later_points_before_it_are_late() -> None:
    w = Windower(Window.tumbling(10), "sum", point_id="s", lateness=60)
    w.extend([("d1", 1 * S, 1), ("d1", 15 * S, 2), ("d1", 25 * S, 4)])
    assert results(w.flush(20 * S)) == [("d1", 0, 10 * S, 1, 1), ("d1", 10 * S, 20 * S, 2, 1)]
    assert w.watermark("d1") == 20 * S
    assert w.add("d1", 19 * S, 8) == [] and w.stats.late == 1
    assert w.flush(20 * S) == []  # nothing more to close
    assert results(w.flush()) == [("d1", 20 * S, 30 * S, 4, 1)]
    assert w.flush() == [] and w.open_windows("d1") == 0


def test_values_that_are_not_finite_numbers_are_counted_and_dropped() -> None:
    w = Windower(Window.tumbling(10), "sum", point_id="s")
    for bad in (None, "12", True, math.nan, math.inf, [1]):
        assert w.add("d1", 1 * S, bad) == []
    w.add("d1", 1 * S, 3)
    assert w.key_stats("d1") == StreamStats(points=1, invalid=6)
    assert results(w.flush()) == [("d1", 0, 10 * S, 3, 1)]


def test_a_key_holds_at_most_max_points_until_its_windows_close() -> None:
    w = Windower(Window.tumbling(10), "count", point_id="n", max_points=3)
    w.extend([("d1", t * S, 1) for t in range(5)])
    assert w.key_stats("d1") == StreamStats(points=3, dropped=2)
    w.add("d2", 0, 1)  # another device is not held back
    assert w.key_stats("d2").points == 1
    assert results(w.add("d1", 10 * S, 1)) == [("d1", 0, 10 * S, 3, 3)]  # room again
    w.add("d1", 11 * S, 1)
    assert w.key_stats("d1").points == 5


def test_at_most_max_keys_keys() -> None:
    w = Windower(Window.tumbling(10), "count", point_id="n", max_keys=2)
    w.extend([("d1", 0, 1), ("d2", 0, 1), ("d3", 0, 1), ("d1", 1, 1)])
    assert w.keys() == ["d1", "d2"]
    assert w.stats == StreamStats(points=3, dropped=1)


def test_a_shape_with_too_many_open_windows_per_key_is_refused() -> None:
    # (size + lateness) / step + 1 open windows at most
    Windower(Window.sliding(60, 1), "avg", point_id="x", lateness=39, max_windows=100)
    with pytest.raises(InvalidArgument, match="keeps up to 101 open windows per key"):
        Windower(Window.sliding(60, 1), "avg", point_id="x", lateness=40, max_windows=100)


def test_open_windows_never_exceed_the_bound() -> None:
    w = Windower(Window.sliding(4, 1), "count", point_id="n", lateness=3)
    bound = (4 + 3) // 1 + 1
    for t in [0, 5, 2, 3, 9, 7, 6, 8, 14, 11, 12, 13, 11]:
        w.add("d1", t * S, 1)
        assert w.open_windows("d1") <= bound


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 10}, "window must be a Window"),
        ({"aggregate": "median"}, "aggregate must be one of"),
        ({"across": "first"}, "across must be one of avg, count, max, min, sum"),
        ({"point_id": ""}, "point_id must be a non-empty string"),
        ({"lateness": -1}, "lateness must be a finite duration"),
        ({"max_keys": 0}, "max_keys must be an int >= 1"),
        ({"max_points": 1.5}, "max_points must be an int >= 1"),
    ],
)
def test_bad_parameters_are_refused_naming_the_value(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"window": Window.tumbling(10), "aggregate": "avg", "point_id": "p"}
    args.update(kwargs)
    with pytest.raises(InvalidArgument, match=match):
        Windower(args.pop("window"), args.pop("aggregate"), **args)


def test_a_time_that_is_not_epoch_milliseconds_is_refused() -> None:
    w = Windower(Window.tumbling(10), "avg", point_id="p")
    for bad in (1.5, "0", None, True):
        with pytest.raises(InvalidArgument, match="time_ms must be an int"):
            w.add("d1", bad, 1)  # type: ignore[arg-type]
    assert "point_id='p'" in repr(w) and w.lateness_ms == 0 and w.point_id == "p"
