"""Append throughput of the time-series store through its public API.

Several threads (as the hub's connection handlers would) append batches of measurepoints with
``TimeSeriesStore.append_points``, each call returning only once its rows are committed. Prints
the committed points per second (median of the runs) for a few batch sizes and thread counts.
The target is >= 200,000 points/s.

Run: ``.venv/bin/python benchmarks/store_append.py [--points 1000000] [--runs 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time

from enos_lab.store import PointRow, TimeSeriesStore


def make_batches(total: int, batch: int, devices: int, start_ms: int) -> list[list[PointRow]]:
    """``total`` points of ``devices`` devices (one point each, quality on every 10th device)."""
    rows = []
    per_device = total // devices
    for step in range(per_device):
        t = start_ms + step * 1000
        for d in range(devices):
            rows.append(
                PointRow(
                    "bench",
                    f"dev{d:04d}",
                    "power",
                    t,
                    100.0 + d + step * 1e-3,
                    9 if d % 10 == 0 else None,
                    False,
                )
            )
    return [rows[i : i + batch] for i in range(0, len(rows), batch)]


def run_once(total: int, batch: int, threads: int, devices: int) -> tuple[float, int]:
    """One run in a fresh data directory; returns (committed points/s, commits)."""
    batches = make_batches(total, batch, devices, 1_700_000_000_000)
    with tempfile.TemporaryDirectory() as tmp, TimeSeriesStore(tmp) as store:
        lanes = [batches[i::threads] for i in range(threads)]
        committed = [0] * threads

        def work(i: int) -> None:
            for b in lanes[i]:
                committed[i] += store.append_points(b)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        stats = store.stats()
        assert sum(committed) == stats.rows == sum(len(b) for b in batches)
    return sum(committed) / elapsed, stats.commits


def run_async(total: int, batch: int, tasks: int, devices: int) -> tuple[float, int]:
    """One run with ``tasks`` asyncio tasks awaiting ``append_points_async`` (the hub's way)."""
    batches = make_batches(total, batch, devices, 1_700_000_000_000)

    async def main(store: TimeSeriesStore) -> int:
        lanes = [batches[i::tasks] for i in range(tasks)]

        async def lane(i: int) -> int:
            done = 0
            for b in lanes[i]:
                done += await store.append_points_async(b)
            return done

        return sum(await asyncio.gather(*(lane(i) for i in range(tasks))))

    with tempfile.TemporaryDirectory() as tmp, TimeSeriesStore(tmp) as store:
        t0 = time.perf_counter()
        committed = asyncio.run(main(store))
        elapsed = time.perf_counter() - t0
        stats = store.stats()
        assert committed == stats.rows == sum(len(b) for b in batches)
    return committed / elapsed, stats.commits


def main() -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    print(f"points per run: {args.points:,}, devices: {args.devices}, runs: {args.runs}")
    print(
        f"{'callers':<16} {'batch':>6} {'median pts/s':>14} {'min':>12} {'max':>12} {'commits':>8}"
    )
    cases = [
        ("threads", 1, 1000),
        ("threads", 4, 100),
        ("threads", 4, 500),
        ("threads", 4, 1000),
        ("threads", 8, 1000),
        ("asyncio tasks", 64, 100),
        ("asyncio tasks", 64, 1000),
    ]
    for how, callers, batch in cases:
        rates = []
        commits = 0
        for _ in range(args.runs):
            run = run_once if how == "threads" else run_async
            rate, commits = run(args.points, batch, callers, args.devices)
            rates.append(rate)
        label = f"{callers} {how}"
        print(
            f"{label:<16} {batch:>6} {statistics.median(rates):>14,.0f} {min(rates):>12,.0f}"
            f" {max(rates):>12,.0f} {commits:>8}"
        )


if __name__ == "__main__":
    main()
