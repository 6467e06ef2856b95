"""Resident memory of the time-series store during a long ingest, with and without a memory limit.

Each configuration runs in a fresh Python process (so that one run's memory does not carry into
the next): it opens a :class:`~enos_lab.store.TimeSeriesStore` in a temporary directory with
``StoreConfig(memory_limit=...)`` and appends ``--points`` measurepoints (``--devices`` devices x
3 points, event times in order, ``--batch`` rows per ``append_points`` call, as the hub's batches
of posts), sampling the process's RSS (``VmRSS`` from ``/proc/self/status``) after every append
and DuckDB's own accounting (``TimeSeriesStore.memory_usage()``) at every 10 % of the ingest.
A checkpoint's RSS is the largest sampled in the 10 % before it: rows not yet checkpointed
into the database file (DuckDB's ``IN_MEMORY_TABLE``, up to ~20 MiB) make a saw-tooth that a
single sample would catch anywhere between its low and high. The configurations
(``--limits``, ``none`` = DuckDB's default of 80 % of RAM) take turns within a run.

Prints, per configuration, the RSS at each checkpoint (median over ``--runs``), the growth over
the second half of the ingest (RSS at 100 % minus RSS at 50 %) and DuckDB's cache of table
blocks (``BASE_TABLE``) at the end. Target: with a limit, RSS flattens: its growth over the second
half is well below the growth without one.

Run: ``.venv/bin/python benchmarks/store_memory.py [--points 12000000] [--runs 1]
[--limits none,256MiB,64MiB]``. Needs Linux (``/proc``). The defaults take about 2.5 minutes on 2
cores. The 64 MiB column shows the flattening within that time; the lab's default (256 MiB)
flattens the same way once the cached blocks reach it, at about 50 million points
(``--points 80000000 --limits none,256MiB``, about 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from enos_lab.store import PointRow, StoreConfig, TimeSeriesStore

T0 = 1_700_000_000_000  # [ms] event time of the first row
POINTS = ("active_power", "reactive_power", "frequency")
CHECKPOINTS = 10  # samples at every 10 % of the ingest
MIB = 2**20


def rss_bytes() -> int:
    """This process's resident set size (``VmRSS``). [bytes]"""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def worker(points: int, devices: int, batch: int, limit: str | None) -> None:
    """Ingest ``points`` into a fresh store; print one JSON line per checkpoint."""
    per_step = batch // len(POINTS)  # device readings per append, 3 points each
    config = StoreConfig(memory_limit=limit)
    with tempfile.TemporaryDirectory() as tmp, TimeSeriesStore(tmp, config=config) as store:
        print(json.dumps({"done": 0, "rss": rss_bytes(), "duckdb": store.memory_usage()}))
        marks = [points * k // CHECKPOINTS for k in range(1, CHECKPOINTS + 1)]
        done = reading = peak = 0
        started = time.perf_counter()
        while done < points:
            rows: list[PointRow] = []
            for _ in range(per_step):
                device = f"m{reading % devices:05d}"
                t = T0 + (reading // devices) * 1000  # every device reports once a second
                value = float(reading % 1000)
                rows.extend(PointRow("bench", device, p, t, value) for p in POINTS)
                reading += 1
            done += store.append_points(rows)
            peak = max(peak, rss_bytes())
            if done >= marks[0]:
                marks.pop(0)
                sample = {
                    "done": done,
                    "rss": peak,
                    "duckdb": store.memory_usage(),
                    "seconds": time.perf_counter() - started,
                    "db_bytes": store.path.stat().st_size,
                }
                print(json.dumps(sample), flush=True)
                peak = 0


def run_worker(args: argparse.Namespace, limit: str | None) -> list[dict[str, Any]]:
    """One configuration in a fresh process; returns its samples."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--points",
        str(args.points),
        "--devices",
        str(args.devices),
        "--batch",
        str(args.batch),
        "--limits",
        limit or "none",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {limit} failed: {done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _mib(value: float) -> str:
    return f"{value / MIB:,.1f}"


def main() -> int:
    """Run the configurations and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=12_000_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--batch", type=int, default=3000, help="rows per append_points")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--limits",
        default="none,256MiB,64MiB",
        help="memory limits to compare, comma-separated; 'none' is DuckDB's default",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    limits = [None if x.strip().lower() == "none" else x.strip() for x in args.limits.split(",")]
    if args.worker:
        worker(args.points, args.devices, args.batch, limits[0])
        return 0

    print(
        f"points per run: {args.points:,} ({args.devices} devices x {len(POINTS)} points, "
        f"{args.batch} rows per append), runs: {args.runs}"
    )
    results: dict[str | None, list[list[dict[str, Any]]]] = {limit: [] for limit in limits}
    for run in range(args.runs):
        order = limits if run % 2 == 0 else list(reversed(limits))
        for limit in order:
            samples = run_worker(args, limit)
            results[limit].append(samples)
            last = samples[-1]
            print(
                f"  run {run + 1} limit={limit or 'none'}: {last['seconds']:.0f} s, "
                f"RSS {_mib(last['rss'])} MiB at the end",
                flush=True,
            )

    def median(limit: str | None, index: int, key: str) -> float:
        return statistics.median(float(runs[index][key]) for runs in results[limit])

    def cached(limit: str | None, index: int) -> float:
        return statistics.median(
            float(runs[index]["duckdb"].get("BASE_TABLE", 0)) for runs in results[limit]
        )

    names = [limit or "DuckDB default" for limit in limits]
    print()
    print("RSS [MiB] (largest in the 10 % before) | DuckDB's cached table blocks [MiB]")
    head = " ".join(f"{name:>15}" for name in names)
    print(f"{'ingested':>12} {head} | {head}")
    for index in range(CHECKPOINTS + 1):
        done = int(median(limits[0], index, "done"))
        rss = " ".join(f"{_mib(median(limit, index, 'rss')):>15}" for limit in limits)
        blocks = " ".join(f"{_mib(cached(limit, index)):>15}" for limit in limits)
        print(f"{done:>12,} {rss} | {blocks}")
    half = CHECKPOINTS // 2
    print()
    rows = [
        (
            "growth, 2nd half [MiB]",
            [median(x, CHECKPOINTS, "rss") - median(x, half, "rss") for x in limits],
        ),
        (
            "growth per 1M points, 2nd half [MiB]",
            [
                (median(x, CHECKPOINTS, "rss") - median(x, half, "rss"))
                / ((median(x, CHECKPOINTS, "done") - median(x, half, "done")) / 1e6)
                for x in limits
            ],
        ),
        ("database file [MiB]", [median(x, CHECKPOINTS, "db_bytes") for x in limits]),
    ]
    for label, values in rows:
        print(f"{label:<38} " + " ".join(f"{_mib(v):>16}" for v in values))
    seconds = [median(x, CHECKPOINTS, "seconds") for x in limits]
    rates = [args.points / s for s in seconds]
    print(f"{'ingest [points/s]':<38} " + " ".join(f"{r:>16,.0f}" for r in rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
