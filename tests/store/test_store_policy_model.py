"""Property test: any sequence of batches gives what a plain-Python model of the policy gives.

Model: rows are applied one by one in arrival order; a row replaces the stored row at the same
(series, event time) unless the row is resumed and the stored one is live. The latest value of a
series is its stored row with the greatest event time.
"""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.store import PointRow, TimeSeriesStore

T0 = 1_700_000_000_000

row = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # point
    st.integers(0, 6),  # event time offset [s]
    st.integers(-100, 100),  # value
    st.booleans(),  # resume
)
batches = st.lists(st.lists(row, min_size=1, max_size=8), min_size=1, max_size=6)


def model(
    all_batches: list[list[tuple[str, int, int, bool]]],
) -> dict[tuple[str, int], tuple[float, bool]]:
    stored: dict[tuple[str, int], tuple[float, bool]] = {}
    for batch in all_batches:
        for point, t, value, resume in batch:
            old = stored.get((point, t))
            if old is not None and resume and not old[1]:
                continue
            stored[(point, t)] = (float(value), resume)
    return stored


def append(store: TimeSeriesStore, batch: list[tuple[str, int, int, bool]]) -> None:
    store.append_points(
        [PointRow("P", "d", p, T0 + t * 1000, float(v), None, r) for p, t, v, r in batch]
    )


@settings(max_examples=40, deadline=None)
@given(batches)
def test_store_matches_the_policy_model(
    all_batches: list[list[tuple[str, int, int, bool]]],
) -> None:
    expected = model(all_batches)
    half = len(all_batches) // 2
    with tempfile.TemporaryDirectory() as tmp:
        with TimeSeriesStore(tmp) as first:  # reopened half-way: state rebuilt from disk
            for batch in all_batches[:half]:
                append(first, batch)
        with TimeSeriesStore(tmp) as store:
            for batch in all_batches[half:]:
                append(store, batch)
            frame = store.query_points("d")
            got = {
                (p, (t.value // 1_000_000 - T0) // 1000): (v, r)
                for p, t, v, r in zip(
                    frame["point_id"], frame["time"], frame["value"], frame["resume"], strict=True
                )
            }
            assert got == expected
            latest = store.latest("d")
            want_latest = {}
            for (p, t), (v, _) in sorted(expected.items()):
                want_latest[p] = (t, v)
            got_latest = {
                p: ((t.value // 1_000_000 - T0) // 1000, v)
                for p, t, v in zip(latest["point_id"], latest["time"], latest["value"], strict=True)
            }
            assert got_latest == want_latest
