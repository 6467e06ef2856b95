"""Simulated fleet benchmark: a simulated day in seconds, and thousands of devices in real time.

Usage::

    python benchmarks/sim_fleet.py [--runs 3] [--only day,link-day,realtime]
        [--day-devices 100] [--day-hours 24] [--rt-devices 10000] [--rt-interval 10]
        [--rt-seconds 60] [--rt-warmup 20] [--rt-states 100]

Three workloads, each run ``--runs`` times, every run in fresh processes:

``day``
    One process holds a lab on a ``SimulatedClock`` (2024-06-01T00:00Z) and a fleet of
    ``--day-devices`` PV inverters (``lab.simulate``, library model ``pv_inverter``, one post of
    its 12 points per device and simulated minute) connected directly; ``fleet.run`` covers
    ``--day-hours``. Measured: the wall time of the run (target: under 60 s for 100 devices x
    1,440 posts = 144,000 posts), posts per second of wall time, the process's CPU, and every post
    stored: the stored points are counted per device afterwards and must be posts x 12, each
    (device, point, time) once.
``link-day``
    The same through the fleet's own fault-injecting link (``link=True``), which every post and
    reply crosses twice more: what having the faults at hand costs.
``realtime``
    ``--rt-devices`` energy meters (10 points a post), each posting every ``--rt-interval``
    seconds of the system clock (spread evenly over the interval), from one process
    (``enos_lab.sim.Fleet``, ``--rt-states`` profile states), against the hub in another
    process (``python -m enos_lab serve`` on a data directory provisioned beforehand, as in
    ``enos_devices.py``). After ``--rt-warmup`` seconds the simulator's CPU is measured over
    ``--rt-seconds`` (target: under half a core), with the reply latency p50/p99 of the posts
    answered in that window; then the fleet stops (waiting for the posts in flight), the hub
    stops, and its store is opened and counted: every post must be replied with 200 and stored.
    Also reported: the simulator's memory per device (RSS growth over the logins / devices).

Every wait is bounded; processes are stopped by PID. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _loadgen as lg
from enos_devices import count_stored_points, provision, start_serve
from mqtt_broker import HOST, BenchError, Broker, Child, children, machine_busy_s, proc_cpu_s

WORKLOADS = ("day", "link-day", "realtime")
DAY_START = datetime(2024, 6, 1, tzinfo=UTC)


def _rss_kb() -> int:
    """Resident memory of this process. [KiB]"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    """CPU time of this process (all threads). [s]"""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the simulated day (one process: the lab and the fleet) ------------------------------------


def run_day(
    *, conn: Connection, devices: int, hours: float, link: bool, seed: int
) -> dict[str, Any]:
    """A lab on a simulated clock and a fleet of PV inverters over ``hours``; counts."""
    from enos_lab import Lab, SimulatedClock
    from enos_lab.sim import profile_for

    points_per_post = len(profile_for("pv_inverter").point_ids())
    with tempfile.TemporaryDirectory(prefix="bench-day-") as tmp:
        clock = SimulatedClock(DAY_START)
        lab = Lab(Path(tmp) / "lab", port=0, clock=clock, rng=random.Random(seed)).start()
        try:
            product = lab.create_product("PV", model_id="pv_inverter", product_key="pv")
            fleet = lab.simulate(product.product_key, count=devices, seed=seed, link=link)
            cpu0, wall0 = _cpu_s(), time.perf_counter()
            fleet.run(duration=timedelta(hours=hours))
            wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
            totals = fleet.totals()
            fleet.stop()
            stored = duplicates = 0
            for key in fleet.device_keys:
                rows = lab.store.query_points(key, product_key="pv")
                stored += len(rows)
                duplicates += int(rows.duplicated(["point_id", "time"]).sum())
        finally:
            lab.stop()
    return {
        "wall_s": wall,
        "cpu": cpu / wall,
        "posted": int(totals["posted"]),
        "replied": int(totals["replied"]),
        "failed": int(totals[["refused", "timeouts", "lost", "offline", "errors"]].sum()),
        "steps": int(totals["steps"]),
        "stored": stored,
        "duplicates": duplicates,
        "points_per_post": points_per_post,
    }


def bench_day(opts: argparse.Namespace, link: bool) -> dict[str, float]:
    """One simulated day in a fresh process. [s]"""
    expected = opts.day_devices * round(opts.day_hours * 60)
    with children() as kids:
        kids.append(
            Child(run_day, devices=opts.day_devices, hours=opts.day_hours, link=link, seed=1)
        )
        res = kids[0].wait("result", 600)
    want_points = expected * res["points_per_post"]
    if res["posted"] != expected or res["replied"] != expected or res["failed"]:
        raise BenchError(
            f"{res['posted']} posted, {res['replied']} replied of {expected}; "
            f"{res['failed']} failed"
        )
    if res["stored"] != want_points or res["duplicates"]:
        raise BenchError(
            f"{res['stored']} points stored of {want_points}, {res['duplicates']} duplicates"
        )
    return {
        "wall_s": res["wall_s"],
        "rate": expected / res["wall_s"],
        "cpu": res["cpu"],
        "stored": res["stored"],
        "steps": res["steps"],
    }


# --- real time (the fleet in one process, the hub in another) ----------------------------------


def run_realtime(
    *,
    conn: Connection,
    host: str,
    port: int,
    product_key: str,
    devices: list[tuple[str, str]],
    interval: float,
    warmup: float,
    seconds: float,
    states: int,
    seed: int,
) -> dict[str, Any]:
    """The fleet in this process, in real time; CPU, latency and counts of the window."""
    from enos_lab.sim import Fleet

    lg.raise_fd_limit(len(devices) + 1024)

    async def main() -> dict[str, Any]:
        credentials = [(product_key, dk, secret) for dk, secret in devices]
        fleet = Fleet(
            host,
            port,
            credentials,
            "energy_meter",
            interval=interval,
            seed=seed,
            spread=True,
            states=states,
            latency_samples=1_000_000,
        )
        rss0, t0 = _rss_kb(), time.perf_counter()
        await fleet.start()
        login_s, rss1 = time.perf_counter() - t0, _rss_kb()
        online = int(fleet.totals()["online"])
        await fleet.run(duration=warmup)
        before = fleet.totals()
        n0 = len(fleet.latencies())
        cpu0, busy0, wall0 = _cpu_s(), machine_busy_s(), time.perf_counter()
        conn.send(("window", {}))
        await fleet.run(duration=seconds)
        cpu1, busy1, wall1 = _cpu_s(), machine_busy_s(), time.perf_counter()
        conn.send(("window", {}))
        after = fleet.totals()
        window = fleet.latencies()[n0:]
        await fleet.stop()
        final = fleet.totals()
        wall = wall1 - wall0
        ordered = sorted(window.tolist())
        return {
            "login_s": login_s,
            "online": online,
            "rss_kb_per_device": (rss1 - rss0) / len(credentials),
            "rss_mb": _rss_kb() / 1024,
            "cpu": (cpu1 - cpu0) / wall,
            "all_cpu": (busy1 - busy0) / wall,
            "window_posts": int(after["posted"] - before["posted"]),
            "rate": (after["replied"] - before["replied"]) / wall,
            "p50_ms": 1000 * ordered[len(ordered) // 2] if ordered else float("nan"),
            "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)] if ordered else float("nan"),
            "posted": int(final["posted"]),
            "replied": int(final["replied"]),
            "failed": int(final[["refused", "timeouts", "lost", "errors"]].sum()),
            "offline": int(final["offline"]),
            "overruns": int(final["overruns"]),
        }

    return asyncio.run(main())


@contextlib.contextmanager
def serving(opts: argparse.Namespace, template: Path, scratch: Path) -> Iterator[Broker]:
    """A fresh hub process on a copy of the provisioned data directory, stopped by PID."""
    workdir = Path(tempfile.mkdtemp(prefix="hub-", dir=scratch))
    data_dir = workdir / "data"
    shutil.copytree(template, data_dir)
    broker = start_serve(opts.python, data_dir, workdir)
    try:
        yield broker
    finally:
        note = "" if broker.alive() else f"hub died during the run: {broker.log_tail()}"
        stop_note = broker.stop(timeout=60.0)
        if note or stop_note:
            print(f"  ! {note or stop_note}", flush=True)


def bench_realtime(opts: argparse.Namespace, fleet: Any, scratch: Path) -> dict[str, float]:
    """10,000 devices every 10 s in real time: the simulator's CPU and latency, all stored."""
    keys = [dk for dk, _ in fleet.devices[: opts.rt_devices]]
    budget = 120 + opts.rt_warmup + opts.rt_seconds + opts.rt_devices / 100
    with serving(opts, fleet.template, scratch) as broker:
        with children() as kids:
            kids.append(
                Child(
                    run_realtime,
                    host=HOST,
                    port=broker.port,
                    product_key=fleet.product_key,
                    devices=fleet.devices[: opts.rt_devices],
                    interval=opts.rt_interval,
                    warmup=opts.rt_warmup,
                    seconds=opts.rt_seconds,
                    states=opts.rt_states,
                    seed=opts.seed,
                )
            )
            kids[0].wait("window", budget)
            hub0 = proc_cpu_s(broker.pid)
            kids[0].wait("window", opts.rt_seconds + 60)
            hub1 = proc_cpu_s(broker.pid)
            res = kids[0].wait("result", 120 + opts.rt_devices / 100)
        data_dir = broker.workdir / "data"
    stored = count_stored_points(data_dir, fleet.product_key, keys)
    shutil.rmtree(broker.workdir, ignore_errors=True)
    if res["online"] != opts.rt_devices:
        raise BenchError(f"only {res['online']} of {opts.rt_devices} devices logged in")
    if res["failed"] or res["replied"] != res["posted"]:
        raise BenchError(
            f"{res['replied']} replied of {res['posted']} posts, {res['failed']} failed"
        )
    if stored != res["replied"] * 10:
        raise BenchError(f"{stored} points stored for {res['replied']} replied posts (x 10)")
    return {
        "cpu": res["cpu"],
        "hub_cpu": (hub1 - hub0) / opts.rt_seconds,
        "all_cpu": res["all_cpu"],
        "rate": res["rate"],
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "posted": res["posted"],
        "stored": stored,
        "login_s": res["login_s"],
        "kb_per_device": res["rss_kb_per_device"],
        "rss_mb": res["rss_mb"],
        "overruns": res["overruns"] + res["offline"],
    }


# --- the table --------------------------------------------------------------------------------

ROWS = (
    ("day", "wall_s", "Simulated day, wall time [s]", ".1f", "< 60"),
    ("day", "rate", "  posts per second of wall time", ",.0f", ""),
    ("day", "cpu", "  process CPU [cores]", ".2f", ""),
    ("day", "stored", "  points stored (each once)", ",.0f", "all"),
    ("day", "steps", "  clock steps", ",.0f", ""),
    ("link-day", "wall_s", "Simulated day through a link [s]", ".1f", ""),
    ("link-day", "rate", "  posts per second of wall time", ",.0f", ""),
    ("link-day", "cpu", "  process CPU [cores]", ".2f", ""),
    ("realtime", "cpu", "Real time: simulator CPU [cores]", ".3f", "< 0.5"),
    ("realtime", "hub_cpu", "  hub CPU [cores]", ".3f", ""),
    ("realtime", "all_cpu", "  machine busy [cores]", ".2f", ""),
    ("realtime", "rate", "  replies per second", ",.0f", ""),
    ("realtime", "p50_ms", "  reply latency p50 [ms]", ".2f", ""),
    ("realtime", "p99_ms", "  reply latency p99 [ms]", ".2f", ""),
    ("realtime", "posted", "  posts (all replied 200)", ",.0f", "all"),
    ("realtime", "stored", "  points stored", ",.0f", "posts x 10"),
    ("realtime", "login_s", "  logins of all devices [s]", ".1f", ""),
    ("realtime", "kb_per_device", "  simulator RSS per device [KiB]", ".1f", ""),
    ("realtime", "rss_mb", "  simulator RSS at the end [MiB]", ".0f", ""),
    ("realtime", "overruns", "  samples not posted", ",.0f", "0"),
)


def print_table(results: dict[str, list[dict[str, float] | None]], runs: int) -> None:
    """Medians over the runs, then every run."""
    print(f"{'metric':<38}{'median':>14}  target")
    print("-" * 62)
    for workload, key, label, fmt, target in ROWS:
        values = [r[key] for r in results.get(workload, []) if r is not None]
        if workload not in results:
            continue
        cell = format(statistics.median(values), fmt) if values else "failed"
        print(f"{label:<38}{cell:>14}  {target}")
    print(f"\nPer-run values (runs 1..{runs}):")
    for workload, key, label, fmt, _ in ROWS:
        if workload in results:
            text = ", ".join(
                "fail" if r is None else format(r[key], fmt) for r in results[workload]
            )
            print(f"  {label:<38}: {text}")


def machine_info(opts: argparse.Namespace) -> None:
    """What the numbers were measured on and with which load."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine : {os.cpu_count()} logical cores, {model}, {platform.platform()}")
    print(f"python  : {sys.version.split()[0]} ({opts.python})")
    print(f"load avg: {load} (1/5/15 min) at start; the cores may be shared")
    print(
        f"day     : {opts.day_devices} PV inverters x {opts.day_hours:g} h at 1 min "
        f"({opts.day_devices * round(opts.day_hours * 60):,} posts)"
    )
    print(
        f"realtime: {opts.rt_devices} meters every {opts.rt_interval:g} s, warm-up "
        f"{opts.rt_warmup:g} s, window {opts.rt_seconds:g} s, {opts.rt_states} profile states; "
        f"RLIMIT_NOFILE {opts.nofile}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per workload (>= 3 for medians)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    p.add_argument("--day-devices", type=int, default=100)
    p.add_argument("--day-hours", type=float, default=24.0)
    p.add_argument("--rt-devices", type=int, default=10_000)
    p.add_argument("--rt-interval", type=float, default=10.0, help="[s]")
    p.add_argument("--rt-seconds", type=float, default=60.0, help="measured window [s]")
    p.add_argument("--rt-warmup", type=float, default=20.0, help="before the window [s]")
    p.add_argument("--rt-states", type=int, default=100, help="profile states of the fleet")
    p.add_argument("--seed", type=int, default=7, help="seed of keys and the fleet")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the hub")
    opts = p.parse_args(argv)
    opts.only = [w.strip() for w in opts.only.split(",") if w.strip()]
    bad = [w for w in opts.only if w not in WORKLOADS]
    if bad or opts.runs < 1:
        p.error(f"bad arguments: {bad or 'runs'}")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run every selected workload ``--runs`` times; print the table."""
    opts = parse_args(argv)
    opts.nofile = lg.raise_fd_limit(2 * opts.rt_devices + 1024)
    machine_info(opts)
    results: dict[str, list[dict[str, float] | None]] = {w: [] for w in opts.only}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        scratch = Path(tmp)
        fleet = None
        if "realtime" in opts.only:
            fleet = provision(scratch, opts.rt_devices, opts.seed)
            print(f"provisioned {opts.rt_devices} devices in {fleet.seconds:.1f} s", flush=True)
        for run in range(opts.runs):
            for workload in opts.only:
                label = f"run {run + 1} {workload:<9}"
                result: dict[str, float] | None = None
                try:
                    if workload == "realtime":
                        result = bench_realtime(opts, fleet, scratch)
                    else:
                        result = bench_day(opts, link=workload == "link-day")
                except (BenchError, lg.LoadError) as exc:
                    failures += 1
                    print(f"{label} FAILED: {exc}", flush=True)
                if result is not None:
                    text = ", ".join(f"{k}={v:,.3f}" for k, v in result.items())
                    print(f"{label} {text}", flush=True)
                results[workload].append(result)
    print()
    print_table(results, opts.runs)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
