"""Backtest of one alert rule over 10 million stored points, against evaluating them one by one.

Loads 10 million points (1,000 devices x 10,000 points, one every 10 s, a temperature that
wanders around 40 degrees with excursions past the threshold) through the store's public append
API, then times, as medians of several runs:

- the backtest: ``TimeSeriesStore.query_points`` of the trigger point over the whole range
  plus :func:`enos_lab.alerts.backtest` of the rule ``${temp} > ${max_temp}`` (a per-device
  attribute threshold) with a 60 s delay, ``min_repeat`` 2 and hysteresis;
- the backtest alone, on the queried frame;
- the live way over the same queried frame: per point, the compiled conditions'
  ``Expression.evaluate`` and ``AlertState.observe`` (as the engine calls them), then ``due``
  at the end; and ``AlertState.observe`` alone on conditions computed beforehand (the
  strictest comparison). Both on ``--live-devices`` devices (default 100: 1 million points),
  scaled to all.

Both give the same alerts (checked on the devices evaluated one by one). Targets: query plus
backtest under 2 s, and at least 10x faster than one by one.

Run: ``.venv/bin/python benchmarks/alert_backtest.py [--devices 1000] [--points 10000]
[--runs 3] [--live-devices 100]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from enos_lab.alerts import AlertRule, AlertState, Fired, backtest
from enos_lab.model import Attribute, DataSpec, DataType, I18nText, Measurepoint, ThingModel
from enos_lab.rules import compile_expression
from enos_lab.store import TimeSeriesStore

START = datetime(2024, 1, 1, tzinfo=UTC)
STEP_MS = 10_000
MODEL = ThingModel(
    "bench_meter",
    I18nText("Benchmark meter"),
    measurepoints={"temp": Measurepoint("temp", DataSpec(DataType.DOUBLE))},
    attributes={"max_temp": Attribute("max_temp", DataSpec(DataType.DOUBLE))},
)
RULE = AlertRule(
    rule_id="overheat",
    model_id="bench_meter",
    measurepoint="temp",
    condition="${temp} > ${max_temp}",
    recover_condition="${temp} < ${max_temp} - 2",
    delay=60,
    min_repeat=2,
)


def timed(fn: Callable[[], object], runs: int) -> tuple[float, list[float], object]:
    """Median wall time of ``runs`` calls [s], every run's, and the last result."""
    times = []
    result: object = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def load(store: TimeSeriesStore, devices: list[str], n_pts: int) -> None:
    """Fill the store: a random walk per device, in batches of whole time slices."""
    start_ms = int(START.timestamp() * 1000)
    rng = np.random.default_rng(13)
    chunk = max(1, 1_000_000 // len(devices))
    level = np.full(len(devices), 40.0)
    for lo in range(0, n_pts, chunk):
        hi = min(lo + chunk, n_pts)
        walk = np.empty((hi - lo, len(devices)))
        noise = rng.normal(0.0, 1.5, walk.shape)
        for k in range(hi - lo):  # AR(1) around 40 degrees: excursions past 55..64
            level = 40.0 + 0.99 * (level - 40.0) + noise[k]
            walk[k] = level
        times = (start_ms + np.arange(lo, hi, dtype=np.int64) * STEP_MS).tolist()
        rows: list[tuple[Any, ...]] = []
        for d, device in enumerate(devices):
            rows.extend(
                ("bench", device, "temp", t, v, None, False)
                for t, v in zip(times, walk[:, d].tolist(), strict=True)
            )
        store.append_points(rows)  # type: ignore[arg-type]


def one_by_one(frame: pd.DataFrame, attributes: dict[tuple[str, str], dict[str, Any]]) -> int:
    """The live way: per point, the engine's evaluate and observe; alerts fired."""
    condition = compile_expression(RULE.condition, model=MODEL, name=RULE.rule_id)
    assert RULE.recover_condition is not None
    recover = compile_expression(RULE.recover_condition, model=MODEL, name=RULE.rule_id)
    states: dict[tuple[str, str], AlertState] = {}
    fired = 0
    times = pd.DatetimeIndex(frame["time"]).as_unit("ms").asi8.tolist()
    cols = zip(frame["product_key"], frame["device_key"], times, frame["value"], strict=True)
    for pk, dk, t, value in cols:
        attrs = attributes[(pk, dk)]
        points = {"temp": value}
        anomaly = condition.evaluate(points, attrs) is True
        recovered = recover.evaluate(points, attrs) is True
        state = states.get((pk, dk))
        if state is None:
            state = states[(pk, dk)] = AlertState(RULE)
        for tr in state.observe(t, anomaly, recovered, value):
            fired += isinstance(tr, Fired)
    end = max(times) + 1
    for state in states.values():
        fired += sum(isinstance(tr, Fired) for tr in state.due(end))
    return fired


def observe_only(frame: pd.DataFrame, attributes: dict[tuple[str, str], dict[str, Any]]) -> int:
    """The state machine alone: conditions computed beforehand, ``observe`` per point."""
    limit = np.array(
        [
            attributes[(p, d)]["max_temp"]
            for p, d in zip(frame["product_key"], frame["device_key"], strict=True)
        ]
    )
    value = frame["value"].to_numpy()
    anomalies = (value > limit).tolist()
    recovering = (value < limit - 2).tolist()
    times = pd.DatetimeIndex(frame["time"]).as_unit("ms").asi8.tolist()
    states: dict[str, AlertState] = {}
    fired = 0
    rows = zip(frame["device_key"], times, anomalies, recovering, value.tolist(), strict=True)
    for dk, t, anomaly, recovered, v in rows:
        state = states.get(dk)
        if state is None:
            state = states[dk] = AlertState(RULE)
        for tr in state.observe(t, anomaly, recovered, v):
            fired += isinstance(tr, Fired)
    end = max(times) + 1
    for state in states.values():
        fired += sum(isinstance(tr, Fired) for tr in state.due(end))
    return fired


def main() -> None:
    """Load, time, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--points", type=int, default=10_000, help="points per device")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--live-devices", type=int, default=100)
    args = parser.parse_args()
    n_dev, n_pts = args.devices, args.points
    devices = [f"dev{d:04d}" for d in range(n_dev)]
    attributes = {("bench", dk): {"max_temp": 55.0 + (d % 10)} for d, dk in enumerate(devices)}
    total = n_dev * n_pts
    with tempfile.TemporaryDirectory() as tmp, TimeSeriesStore(tmp) as store:
        t0 = time.perf_counter()
        load(store, devices, n_pts)
        load_s = time.perf_counter() - t0
        print(f"loaded {total:,} points through append_points in {load_s:.1f} s")

        def query() -> pd.DataFrame:
            return store.query_points(None, "temp", product_key="bench")

        def query_and_backtest() -> pd.DataFrame:
            return backtest(RULE, query(), model=MODEL, attributes=attributes)

        runs = args.runs
        both_s, both_runs, result = timed(query_and_backtest, runs)
        assert isinstance(result, pd.DataFrame)
        frame = query()
        assert len(frame) == total, len(frame)
        query_s, _, _ = timed(query, runs)
        alone_s, alone_runs, _ = timed(
            lambda: backtest(RULE, frame, model=MODEL, attributes=attributes), runs
        )
        live_devices = devices[: args.live_devices]
        subset = frame[frame["device_key"].isin(live_devices)]
        live_s, _, fired = timed(lambda: one_by_one(subset, attributes), max(1, runs // 2))
        observe_s, _, observed = timed(lambda: observe_only(subset, attributes), max(1, runs // 2))
        expected = int((result["device_key"].isin(live_devices)).sum())
        assert fired == observed == expected, (fired, observed, expected)

    scaled = live_s * total / len(subset)
    print(f"{len(result):,} alerts ({result.attrs['points']:,} points evaluated)")
    print()
    print(f"{'backtest of one rule (medians)':<62} {'seconds':>9}")
    print(f"{'query_points + backtest, ' + format(total, ',') + ' points':<62} {both_s:>9.3f}")
    print(f"{'  query_points alone':<62} {query_s:>9.3f}")
    print(f"{'  backtest alone (frame in memory)':<62} {alone_s:>9.3f}")
    label = f"one by one (evaluate + observe), {len(subset):,} points"
    print(f"{label:<62} {live_s:>9.3f}")
    print(f"{'  scaled to ' + format(total, ',') + ' points':<62} {scaled:>9.3f}")
    print(f"{'  = points/s one by one':<62} {len(subset) / live_s:>9,.0f}")
    observe_scaled = observe_s * total / len(subset)
    print(
        f"{'AlertState.observe alone (conditions precomputed), scaled':<62} {observe_scaled:>9.3f}"
    )
    print(f"{'  = points/s':<62} {len(subset) / observe_s:>9,.0f}")
    label = "speed-up: one by one (scaled) / (query + backtest)"
    print(f"{label:<62} {scaled / both_s:>8.1f}x")
    label = "speed-up: one by one (scaled) / backtest alone"
    print(f"{label:<62} {scaled / alone_s:>8.1f}x")
    label = "speed-up: observe alone (scaled) / backtest alone"
    print(f"{label:<62} {observe_scaled / alone_s:>8.1f}x")
    print(f"{'targets: query + backtest < 2 s, speed-up >= 10x':<62}")
    print("runs (query + backtest): " + ", ".join(f"{s:.3f}" for s in both_runs))
    print("runs (backtest alone): " + ", ".join(f"{s:.3f}" for s in alone_runs))


if __name__ == "__main__":
    main()
