"""Windows over a whole DataFrame: the same results as the windower, in the frame shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from enos_lab.errors import InvalidArgument
from enos_lab.streams import COLUMNS, Window, Windower, to_frame, window_frame

S = 1000  # one second [ms]
T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def points(rows: list[tuple[object, int, float]]) -> pd.DataFrame:
    """A frame of (source, time [s after T0], value) rows with tz-aware times."""
    return pd.DataFrame(
        {
            "source": pd.Series([r[0] for r in rows], dtype=object),
            "time": [T0 + pd.Timedelta(seconds=r[1]) for r in rows],
            "value": [r[2] for r in rows],
        }
    )


def test_five_minute_average_per_inverter_and_the_fleet_total() -> None:
    frame = points(
        [
            ("inv1", 0, 10.0),
            ("inv2", 0, 100.0),
            ("inv1", 60, 20.0),
            ("inv2", 299, 50.0),
            ("inv1", 300, 30.0),
        ]
    )
    five = Window.tumbling(300)
    per_inverter = window_frame(frame, five, "avg", point_id="power_avg_5min")
    assert list(per_inverter.columns) == list(COLUMNS)
    assert per_inverter[["key", "value", "count"]].to_dict("records") == [
        {"key": "inv1", "value": 15.0, "count": 2},
        {"key": "inv2", "value": 75.0, "count": 2},
        {"key": "inv1", "value": 30.0, "count": 1},
    ]
    assert list(per_inverter["time"]) == [T0 + pd.Timedelta(minutes=m) for m in (5, 5, 10)]
    assert str(per_inverter["time"].dtype).endswith("UTC]")
    total = window_frame(
        frame, five, "avg", across="sum", key=lambda d: "fleet", point_id="fleet_power_5min"
    )
    assert total[["key", "value", "count"]].to_dict("records") == [
        {"key": "fleet", "value": 90.0, "count": 4},
        {"key": "fleet", "value": 30.0, "count": 1},
    ]
    assert (total["point_id"] == "fleet_power_5min").all()


def test_the_frame_gives_what_the_windower_gives_for_the_same_points() -> None:
    rows = [("d1", t, float(t % 7)) for t in range(0, 100, 3)] + [("d2", 50, 1.0)]
    rows.sort(key=lambda r: r[1])
    window = Window.sliding(20, 5)
    w = Windower(window, "delta", point_id="d")
    start = int(T0.timestamp() * 1000)
    out = w.extend((s, start + t * S, v) for s, t, v in rows) + w.flush()
    live = to_frame(out)  # in the order windows closed: d2's window waits for the flush
    live = live.sort_values(["time", "key"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(live, window_frame(points(rows), window, "delta", point_id="d"))


def test_duplicates_last_wins_and_bad_values_are_dropped() -> None:
    frame = pd.DataFrame(
        {
            "device": ["d1", "d1", "d1", "d1"],
            "ts": np.array([1_000, 1_000, 2_000, 3_000], dtype="int64"),  # epoch ms
            "v": [1.0, 5.0, np.nan, np.inf],
        }
    )
    out = window_frame(
        frame, Window.tumbling(10), "sum", point_id="s", source="device", time="ts", value="v"
    )
    assert out[["value", "count"]].to_dict("records") == [{"value": 5.0, "count": 1}]
    assert out["time"][0] == pd.Timestamp(10_000, unit="ms", tz="UTC")


def test_tuple_devices_and_an_empty_frame() -> None:
    frame = points([(("pk", "a"), 1, 2.0), (("pk", "b"), 1, 4.0)])
    out = window_frame(frame, Window.tumbling(60), "max", point_id="m")
    assert list(out["key"]) == [("pk", "a"), ("pk", "b")]
    empty = window_frame(frame.iloc[:0], Window.tumbling(60), "max", point_id="m")
    assert list(empty.columns) == list(COLUMNS) and empty.empty
    assert list(to_frame([]).columns) == list(COLUMNS)


@pytest.mark.parametrize(
    ("frame", "kwargs", "match"),
    [
        (points([("d", 0, 1.0)]).drop(columns="value"), {}, "frame has no column 'value'"),
        (points([("d", 0, 1.0)]).assign(value="x"), {}, "column 'value' must be numeric"),
        (points([("d", 0, 1.0)]).assign(value=True), {}, "column 'value' must be numeric"),
        (
            points([("d", 0, 1.0)]).assign(time=pd.Timestamp("2026-01-01")),
            {},
            "column 'time' must hold tz-aware datetimes or ints",
        ),
        (points([("d", 0, 1.0)]), {"aggregate": "p99"}, "aggregate must be one of"),
        (points([("d", 0, 1.0)]), {"across": "last"}, "across must be one of"),
        (points([("d", 0, 1.0)]), {"window": 60}, "window must be a Window"),
    ],
)
def test_bad_frames_and_parameters_are_refused(
    frame: pd.DataFrame, kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {"window": Window.tumbling(60), "aggregate": "avg"}
    args.update(kwargs)
    with pytest.raises(InvalidArgument, match=match):
        window_frame(frame, args.pop("window"), args.pop("aggregate"), point_id="p", **args)  # type: ignore[arg-type]
