"""Properties: the windower fed point by point gives what the DataFrame computation gives."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.streams import ACROSS, Aggregate, Window, Windower, to_frame, window_frame

SOURCES = ("inv-a", "inv-b", "inv-c", "meter")
KEYS: dict[str, Callable[[Any], Hashable] | None] = {
    "device": None,
    "fleet": lambda s: "fleet",
    "kind": lambda s: s[:3],
}
values = st.integers(-1000, 1000) | st.floats(-1e3, 1e3, allow_nan=False)


@st.composite
def windows(draw: st.DrawFn) -> Window:
    step = draw(st.sampled_from([100, 250, 1000]))
    return Window(step * draw(st.integers(1, 4)), step)


@st.composite
def in_order(draw: st.DrawFn) -> list[tuple[str, int, float]]:
    """Points in event-time order (equal times allowed: duplicates within a device)."""
    t = draw(st.integers(-5_000, 5_000))
    rows = []
    for _ in range(draw(st.integers(0, 60))):
        t += draw(st.sampled_from([0, 0, 1, 50]) | st.integers(0, 3_000))
        rows.append((draw(st.sampled_from(SOURCES)), t, draw(values)))
    return rows


def live(
    rows: list[tuple[str, int, float]], window: Window, aggregate: Aggregate, **kwargs: Any
) -> tuple[pd.DataFrame, Windower]:
    w = Windower(window, aggregate, point_id="derived", **kwargs)
    out = w.extend(rows) + w.flush()
    frame = to_frame(out).sort_values(["time", "key"], kind="stable").reset_index(drop=True)
    return frame, w


def vector(
    rows: list[tuple[str, int, float]], window: Window, aggregate: Aggregate, **kwargs: Any
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "source": pd.Series([r[0] for r in rows], dtype=object),
            "time": pd.Series([r[1] for r in rows], dtype="int64"),
            "value": pd.Series([float(r[2]) for r in rows], dtype="float64"),
        }
    )
    out = window_frame(frame, window, aggregate, point_id="derived", **kwargs)
    return out.sort_values(["time", "key"], kind="stable").reset_index(drop=True)


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b)
    for column in ("key", "point_id", "start", "time", "count"):
        assert list(a[column]) == list(b[column]), column
    for x, y in zip(a["value"], b["value"], strict=True):
        assert math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-9), (x, y)


@settings(max_examples=150, deadline=None)
@given(
    rows=in_order(),
    window=windows(),
    aggregate=st.sampled_from(list(Aggregate)),
    key=st.sampled_from(sorted(KEYS)),
    across=st.none() | st.sampled_from(sorted(ACROSS, key=lambda a: a.value)),
    lateness=st.sampled_from([0, 0.1, 2]),
)
def test_in_order_points_give_the_frame_s_results(
    *,
    rows: list[tuple[str, int, float]],
    window: Window,
    aggregate: Aggregate,
    key: str,
    across: Aggregate | None,
    lateness: float,
) -> None:
    kwargs: dict[str, Any] = {"key": KEYS[key], "across": across}
    got, w = live(rows, window, aggregate, lateness=lateness, **kwargs)
    assert w.stats.late == 0  # in order: nothing is late
    assert w.stats.points + w.stats.duplicates == len(rows)
    assert_same(got, vector(rows, window, aggregate, **kwargs))


@st.composite
def disordered(draw: st.DrawFn) -> tuple[list[tuple[str, int, float]], int]:
    """Points out of order, but never older than the newest of all minus the lateness [ms]
    (so never late for any key: a key's newest is at most the newest of all)."""
    lateness = draw(st.sampled_from([0, 500, 3_000]))
    rows: list[tuple[str, int, float]] = []
    newest = 0
    for _ in range(draw(st.integers(0, 60))):
        t = draw(st.integers(newest - lateness, newest + 2_000))
        newest = max(newest, t)
        rows.append((draw(st.sampled_from(SOURCES)), t, draw(values)))
    return rows, lateness


@settings(max_examples=100, deadline=None)
@given(
    case=disordered(),
    window=windows(),
    aggregate=st.sampled_from(list(Aggregate)),
    key=st.sampled_from(sorted(KEYS)),
)
def test_disorder_within_the_lateness_changes_nothing(
    case: tuple[list[tuple[str, int, float]], int],
    window: Window,
    aggregate: Aggregate,
    key: str,
) -> None:
    rows, lateness = case
    got, w = live(rows, window, aggregate, key=KEYS[key], lateness=lateness / 1000)
    assert w.stats.late == 0
    # the frame holds the same points (arrival order decides duplicates, as live)
    assert_same(got, vector(rows, window, aggregate, key=KEYS[key]))
