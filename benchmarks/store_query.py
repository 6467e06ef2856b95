"""Query speed of the time-series store against pandas on the same data.

Loads 10 million points (100 devices x 100,000 points over one day, one every 0.864 s) through
the public append API, then times, as medians of several runs:

- the store: 1-minute averages of every device over the day (``TimeSeriesStore.aggregate``);
- pandas alone on the same data already in memory (a DataFrame with device key, tz-aware time
  and value), with object and with categorical device keys;
- for reference: latest values of all devices, one device's raw day, and computing the latest
  values by a full scan (what an index-free "latest" would cost per query).

Targets: the store <= 1 s and >= 5x faster than pandas.

Run: ``.venv/bin/python benchmarks/store_query.py [--devices 100] [--points 100000] [--runs 5]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from enos_lab.store import PointRow, TimeSeriesStore

DAY = datetime(2024, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000


def timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    """Median wall time of ``runs`` calls [s] and the last result."""
    times = []
    result: object = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    """Load, time, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--points", type=int, default=100_000, help="points per device")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n_dev, n_pts = args.devices, args.points
    start_ms = int(DAY.timestamp() * 1000)
    step = DAY_MS / n_pts
    rng = np.random.default_rng(7)
    devices = [f"dev{d:03d}" for d in range(n_dev)]
    offsets = (np.arange(n_pts) * step).astype(np.int64)

    with tempfile.TemporaryDirectory() as tmp, TimeSeriesStore(tmp) as store:
        t0 = time.perf_counter()
        values = {}
        chunk = 20_000
        for lo in range(0, n_pts, chunk):
            hi = min(lo + chunk, n_pts)
            times = (start_ms + offsets[lo:hi]).tolist()
            rows = []
            for d, dev in enumerate(devices):
                vals = rng.normal(100.0 + d, 5.0, hi - lo)
                values.setdefault(dev, []).append(vals)
                rows.extend(
                    PointRow("bench", dev, "power", t, v, None, False)
                    for t, v in zip(times, vals.tolist(), strict=True)
                )
            store.append_points(rows)
        load_s = time.perf_counter() - t0
        total = n_dev * n_pts
        print(
            f"loaded {total:,} points through append_points in {load_s:.1f} s "
            f"({total / load_s:,.0f} points/s)"
        )

        frame = pd.DataFrame(
            {
                "device_key": np.repeat(np.array(devices, dtype=object), n_pts),
                "time": pd.to_datetime(np.tile(start_ms + offsets, n_dev), unit="ms", utc=True),
                "value": np.concatenate([np.concatenate(values[dev]) for dev in devices]),
            }
        )
        cat = frame.assign(device_key=frame["device_key"].astype("category"))
        begin, end = DAY, DAY + timedelta(days=1)

        def with_store() -> pd.DataFrame:
            return store.aggregate(devices, "power", begin, end, interval="1min")

        def with_pandas(df: pd.DataFrame) -> Callable[[], pd.Series]:
            def run() -> pd.Series:
                day = df[(df["time"] >= begin) & (df["time"] < end)]
                grouper = [pd.Grouper(key="device_key"), pd.Grouper(key="time", freq="1min")]
                return day.groupby(grouper, observed=True)["value"].mean()

            return run

        runs = args.runs
        store_s, result = timed(with_store, runs)
        pandas_s, expected = timed(with_pandas(frame), max(3, runs // 2))
        pandas_cat_s, _ = timed(with_pandas(cat), max(3, runs // 2))
        assert isinstance(result, pd.DataFrame) and isinstance(expected, pd.Series)
        assert len(result) == len(expected) == n_dev * 1440
        np.testing.assert_allclose(result["avg"].to_numpy(), expected.to_numpy(), rtol=1e-12)

        latest_s, latest = timed(lambda: store.latest(devices, "power"), runs)
        assert isinstance(latest, pd.DataFrame) and len(latest) == n_dev
        raw_s, raw = timed(lambda: store.query_points(devices[0], "power", begin, end), runs)
        assert isinstance(raw, pd.DataFrame) and len(raw) == n_pts

        def latest_by_scan() -> object:
            con = store._read_root.cursor()
            try:
                return con.execute(
                    "SELECT series_id, max(event_ms), arg_max(num, event_ms) FROM points"
                    " GROUP BY series_id"
                ).fetchall()
            finally:
                con.close()

        scan_s, _ = timed(latest_by_scan, runs)

    best_pandas = min(pandas_s, pandas_cat_s)
    print()
    print(f"{'query (medians)':<58} {'seconds':>9}")
    print(f"{'store: 1-min avg, ' + str(n_dev) + ' devices, 1 day':<58} {store_s:>9.3f}")
    print(f"{'pandas (object device keys), same query, data in memory':<58} {pandas_s:>9.3f}")
    print(f"{'pandas (categorical device keys), same query':<58} {pandas_cat_s:>9.3f}")
    print(f"{'speed-up vs the faster pandas':<58} {best_pandas / store_s:>8.1f}x")
    print(f"{'store: latest values of ' + str(n_dev) + ' devices':<58} {latest_s:>9.3f}")
    print(f"{'store: raw day of one device (' + format(n_pts, ',') + ' rows)':<58} {raw_s:>9.3f}")
    print(f"{'reference: latest of all series by full scan (arg_max)':<58} {scan_s:>9.3f}")


if __name__ == "__main__":
    main()
