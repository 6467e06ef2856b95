"""Callgrind benchmark: the hub's instructions per QoS 0 message and per EnOS login.

Usage::

    python benchmarks/instructions.py [--runs 3] [--only qos0,login]
        [--messages 2000,42000] [--logins 100,1100] [--qos0-rate 0]
        [--connect-concurrency 64] [--python PY] [--compare OLD_PY] [--keep DIR]

Theory of operation
-------------------
Instruction counts do not depend on how busy the machine is, so they can tell a 1 % change
where a throughput run on shared cores cannot. The hub is started as the other benchmarks start
it (``<python> -m enos_lab serve ... --port 0``), but under ``valgrind --tool=callgrind``, with
``PYTHONHASHSEED=0`` and no BLAS worker threads (``HUB_ENV``). Once the load generator
(``_loadgen.py``) has finished and the hub has gone idle, the hub is stopped with SIGTERM; it
shuts down normally and callgrind writes its totals (user-space instructions of the whole
process, every thread, start-up and shut-down included), read from the ``totals:`` line of the
output file. ``<python>`` may be a wrapper script that sets ``PYTHONPATH`` and ``exec``-s the
interpreter (valgrind follows the ``exec``). Before measuring, the hub's package is compiled to
bytecode, so that no measured run pays for writing a ``.pyc``.

Start-up costs far more than the workload, so every measurement is a pair of fresh hubs that
differ only in the amount of work: ``N1`` and ``N2`` units. Start-up and shut-down cancel in
``(Ir(N2) - Ir(N1)) / (N2 - N1)``, the instructions per unit. Two workloads:

``qos0``
    The anonymous hub (``serve --anonymous``), one subscriber on ``bench/#`` and one
    publisher sending QoS 0 messages with ``mqtt_broker.py``'s payload size to
    ``bench/0/data`` as fast as the backlog cap allows (``_loadgen.run_subscriber`` and
    ``run_publishers``). Under valgrind the hub is the bottleneck, so it reads full chunks of
    PUBLISHes: this is the throughput path. With ``--qos0-rate R`` the messages are paced at
    ``R`` per second instead (``_loadgen.run_latency``): at a low rate each message arrives
    alone, which is the latency path.
``login``
    The EnOS hub on a registry provisioned as ``enos_devices.py`` provisions it; one login
    per device by device secret (CONNECT, CONNACK; the DISCONNECTs follow when all are in),
    ``--connect-concurrency`` handshakes in flight (``_loadgen.run_connect_packets``), 64 as in
    ``enos_devices.py``: the hub then handles several logins per loop iteration, and the count
    repeats within a fraction of a percent. One at a time costs more per login (a loop
    iteration and thread hand-overs each) and repeats only within a few percent, because how
    often the threads wake depends on timing.

Each of ``--runs`` repeats measures both amounts; the table shows the median and how far the
repeats spread. With ``--compare OLD_PYTHON`` every repeat measures both interpreters (their
order alternating) and the table adds the new/old ratio. A run that fails (a hub that did not
start, a message lost, no callgrind totals) is reported and makes the script exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _loadgen as lg
import mqtt_broker as mb
from enos_devices import Fleet, provision

WORKLOADS = ("qos0", "login")
UNITS = {"qos0": "message", "login": "login"}
OUT_PREFIX = "callgrind.out."
HUB_ENV = ("PYTHONHASHSEED=0", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1")
"""Set for the hub: a fixed hash seed (set and dict orders), and no BLAS worker threads (numpy,
imported by pandas, starts OpenBLAS threads that spin while waiting for work, a count that
depends on timing)."""
MIN_TOTAL = 10_000_000  # [instructions] below this the interpreter ran outside valgrind


# --- one hub under callgrind ----------------------------------------------------------------


def hub_argv(
    opts: argparse.Namespace, python: str, out_dir: Path, data_dir: Path | None
) -> list[str]:
    """The command line of a hub under callgrind: anonymous without ``data_dir``, else EnOS.

    ``--trace-children=yes`` follows an ``exec``: ``python`` may be a wrapper script that sets
    ``PYTHONPATH`` and ``exec``-s the interpreter.
    """
    serve = ["-m", "enos_lab", "serve", "--host", mb.HOST, "--port", "0"]
    serve += ["--anonymous"] if data_dir is None else ["--data-dir", str(data_dir)]
    return [
        "env",
        *HUB_ENV,
        opts.valgrind,
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out_dir / OUT_PREFIX}%p",
        python,
        *serve,
    ]


def read_totals(out_dir: Path) -> tuple[int, int]:
    """Instructions in the callgrind files of ``out_dir`` (summed) and how many files there were.

    Each file ends with ``totals: <Ir>`` (``summary:`` in older versions of the format).
    """
    total = 0
    files = sorted(out_dir.glob(OUT_PREFIX + "*"))
    for path in files:
        found = None
        with path.open("rb") as f:
            for line in f:
                if line.startswith((b"totals:", b"summary:")):
                    found = int(line.split()[1])
        if found is None:
            raise mb.BenchError(f"no totals in {path.name}")
        total += found
    if not files:
        raise mb.BenchError("callgrind wrote no output file")
    return total, len(files)


def wait_idle(pid: int, timeout: float, interval: float = 0.5) -> None:
    """Wait until the process used less than a tenth of a core over ``interval``. [s]"""
    deadline = time.monotonic() + timeout
    last = mb.proc_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = mb.proc_cpu_s(pid)
        if now - last < 0.1 * interval:
            return
        last = now
    raise mb.BenchError(f"the hub was still busy {timeout} s after the load generator ended")


@contextlib.contextmanager
def callgrind_hub(
    opts: argparse.Namespace, python: str, scratch: Path, data_dir: Path | None
) -> Iterator[tuple[mb.Broker, Path]]:
    """A hub under callgrind, stopped with SIGTERM afterwards; yields it and its output folder."""
    workdir = Path(tempfile.mkdtemp(prefix="hub-", dir=scratch))
    out_dir = workdir / "callgrind"
    out_dir.mkdir()
    broker = mb.start_hub(hub_argv(opts, python, out_dir, data_dir), workdir, opts.start_timeout)
    try:
        yield broker, out_dir
    except BaseException:
        broker.stop(10.0)  # no totals needed: SIGKILL if it does not stop at once
        raise
    if not broker.alive():
        raise mb.BenchError(f"the hub died: {broker.log_tail()}")
    code = stop_hub(broker, opts.stop_timeout)
    if code != 0:
        raise mb.BenchError(f"the hub exited with code {code}: {broker.log_tail()}")


def stop_hub(broker: mb.Broker, timeout: float, patience: float = 5.0) -> int | None:
    """Stop the hub with SIGTERM so that callgrind writes its totals; its exit code.

    ``enos-lab serve`` waits for the signal in its main thread. Under valgrind the kernel may
    hand the signal to another thread, whose Python handler then never wakes the main thread:
    the hub stays idle. So while the hub has used no CPU for ``patience`` seconds since the last
    signal, it gets SIGINT (the same handler; SIGTERM's default would kill it once the hub has
    restored it, and callgrind would write nothing). ``None``: killed after ``timeout``. [s]
    """
    proc = broker.proc
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    cpu, since = mb.proc_cpu_s(broker.pid), time.monotonic()
    while True:
        try:
            code = proc.wait(1.0)
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now > deadline:
                proc.kill()
                proc.wait(10)
                return None
            used = mb.proc_cpu_s(broker.pid)
            if used > cpu:
                cpu, since = used, now
            elif now - since > patience:
                proc.send_signal(signal.SIGINT)
                since = now
            continue
        return code


# --- workloads ------------------------------------------------------------------------------


def load_qos0(broker: mb.Broker, n: int, opts: argparse.Namespace) -> None:
    """``n`` QoS 0 messages from one publisher to one subscriber, streamed or paced."""
    budget = opts.deadline
    with mb.children() as kids:
        if opts.qos0_rate:
            kids.append(
                mb.Child(
                    lg.run_latency,
                    host=mb.HOST,
                    port=broker.port,
                    rate=opts.qos0_rate,
                    duration_s=n / opts.qos0_rate,
                    warmup_s=0.0,
                    payload_size=opts.payload,
                    start_timeout=opts.start_timeout,
                    drain_s=opts.stall,
                )
            )
            kids[0].wait("ready", opts.start_timeout)
            kids[0].send("go")
            res = kids[0].wait("result", budget)
            if res["sent"] != n or res["received"] != n:
                raise mb.BenchError(f"{res['received']} of {res['sent']} messages arrived")
            return
        ctx = mp.get_context("spawn")
        delivered = ctx.RawValue("q", 0)
        sent_slots = ctx.RawArray("q", 1)
        kids.append(
            mb.Child(
                lg.run_subscriber,
                host=mb.HOST,
                port=broker.port,
                topic_filter="bench/#",
                qos=0,
                expected=n,
                delivered=delivered,
                nap=opts.nap / 1000,
                start_timeout=opts.start_timeout,
                idle_timeout=opts.stall,
                deadline_s=budget,
            )
        )
        kids[0].wait("ready", opts.start_timeout)
        kids.append(
            mb.Child(
                lg.run_publishers,
                host=mb.HOST,
                port=broker.port,
                first_index=0,
                publishers=1,
                messages=n,
                qos=0,
                payload_size=opts.payload,
                window=1,
                chunk=64 * 1024,
                backlog=opts.backlog,
                delivered=delivered,
                sent_slots=sent_slots,
                slot=0,
                start_timeout=opts.start_timeout,
                idle_timeout=opts.stall,
                deadline_s=budget,
            )
        )
        kids[1].wait("ready", opts.start_timeout)
        kids[1].send("go")
        pub = kids[1].wait("result", budget + 30)
        sub = kids[0].wait("result", budget + 30)
    if pub["error"]:
        raise mb.BenchError(f"publisher: {pub['error']}")
    if sub["received"] != n:
        raise mb.BenchError(f"{sub['received']} of {n} messages arrived ({sub['stalled']})")


def load_login(broker: mb.Broker, n: int, opts: argparse.Namespace, fleet: Fleet) -> None:
    """``n`` EnOS logins of distinct devices, then a DISCONNECT on each connection."""
    with mb.children() as kids:
        kids.append(
            mb.Child(
                lg.run_connect_packets,
                host=mb.HOST,
                port=broker.port,
                packets=fleet.connect_packets(n, 60),
                concurrency=opts.connect_concurrency,
                hold=False,
                start_timeout=opts.start_timeout,
                idle_timeout=opts.stall,
                deadline_s=opts.deadline,
            )
        )
        res = kids[0].wait("result", opts.deadline + 30)
    if res["error"] or res["accepted"] != n:
        raise mb.BenchError(f"{res['accepted']} of {n} logins accepted: {res['error']}")


# --- measurement ----------------------------------------------------------------------------


@dataclass(slots=True)
class Point:
    """One hub run: the units of work, the instructions callgrind counted, the wall time."""

    units: int
    instructions: int
    files: int
    seconds: float


@dataclass(slots=True)
class Series:
    """The repeats of one workload on one interpreter."""

    workload: str
    label: str
    pairs: list[tuple[Point, Point] | None] = field(default_factory=list)

    def per_unit(self) -> list[float | None]:
        """Instructions per unit of each repeat, by difference (``None``: the repeat failed)."""
        return [
            None
            if p is None
            else (p[1].instructions - p[0].instructions) / (p[1].units - p[0].units)
            for p in self.pairs
        ]


def measure(
    opts: argparse.Namespace,
    python: str,
    units: int,
    *,
    scratch: Path,
    fleet: Fleet | None,
    keep_as: str,
) -> Point:
    """Start a hub under callgrind, run ``units`` of work, stop it, count.

    Without ``fleet`` the work is ``qos0`` on an anonymous hub; with it, ``login`` on a copy of
    the fleet's registry. ``keep_as`` names the copies of the callgrind files (``--keep``).
    """
    t0 = time.monotonic()
    data_dir = None
    if fleet is not None:
        data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=scratch))
        shutil.copytree(fleet.template, data_dir, dirs_exist_ok=True)
    with callgrind_hub(opts, python, scratch, data_dir) as (broker, out_dir):
        if fleet is None:
            load_qos0(broker, units, opts)
        else:
            load_login(broker, units, opts, fleet)
        wait_idle(broker.pid, opts.stall)
    total, files = read_totals(out_dir)
    if total < MIN_TOTAL:
        raise mb.BenchError(f"only {total:,} instructions: did {python} run under valgrind?")
    if opts.keep:
        for path in sorted(out_dir.glob(OUT_PREFIX + "*")):
            suffix = "" if files == 1 else "." + path.name.removeprefix(OUT_PREFIX)
            shutil.copyfile(path, opts.keep / f"{keep_as}{suffix}.callgrind.out")
    shutil.rmtree(broker.workdir, ignore_errors=True)
    if data_dir is not None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return Point(units, total, files, time.monotonic() - t0)


def bytecode_warmup(python: str) -> None:
    """Compile the hub's package to bytecode first, so that no measured run writes a ``.pyc``."""
    code = (
        "import compileall, enos_lab, os;"
        " compileall.compile_dir(os.path.dirname(enos_lab.__file__), quiet=1)"
    )
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise mb.BenchError(f"{python} could not import enos_lab: {done.stderr.strip()[-300:]}")


# --- report ---------------------------------------------------------------------------------


def spread(values: list[float]) -> float:
    """(max - min) / median of the repeats. [%]"""
    return 100 * (max(values) - min(values)) / statistics.median(values) if values else 0.0


def print_table(series: list[Series], interpreters: dict[str, str]) -> None:
    """Median instructions per unit, the spread of the repeats, and the new/old ratios."""
    head = f"{'workload':<10}{'hub':<6}{'Ir per unit':>14}{'spread':>9}  per repeat"
    print(head)
    print("-" * (len(head) + 30))
    by_key = {(s.workload, s.label): s for s in series}
    for s in series:
        good = [v for v in s.per_unit() if v is not None]
        med = f"{statistics.median(good):,.0f}" if good else "failed"
        each = ", ".join("fail" if v is None else f"{v:,.0f}" for v in s.per_unit())
        print(f"{s.workload:<10}{s.label:<6}{med:>14}{spread(good):>8.2f}%  {each}")
        old = by_key.get((s.workload, "old"))
        if s.label == "new" and old is not None:
            ratios = [
                n / o
                for n, o in zip(s.per_unit(), old.per_unit(), strict=True)
                if n is not None and o
            ]
            new_good = [v for v in s.per_unit() if v is not None]
            old_good = [v for v in old.per_unit() if v is not None]
            if new_good and old_good:
                ratio = statistics.median(new_good) / statistics.median(old_good)
                each = ", ".join(f"{r:.4f}" for r in ratios)
                print(f"{'':<10}{'ratio':<6}{ratio:>14.4f}{'':>9}  new/old per repeat: {each}")
    print("\nRaw totals [instructions] (N1 -> N2 units, wall time):")
    for s in series:
        for k, pair in enumerate(s.pairs):
            if pair is None:
                print(f"  {s.workload:<8}{s.label:<5} repeat {k + 1}: failed")
                continue
            a, b = pair
            print(
                f"  {s.workload:<8}{s.label:<5} repeat {k + 1}: {a.instructions:,} ({a.units:,},"
                f" {a.seconds:.0f} s) -> {b.instructions:,} ({b.units:,}, {b.seconds:.0f} s)"
            )
    print("\nhubs: " + "; ".join(f"{k} = {v}" for k, v in interpreters.items()))


def machine_info(opts: argparse.Namespace, interpreters: dict[str, str]) -> None:
    """Print what the numbers were measured with."""
    try:
        done = subprocess.run(
            [opts.valgrind, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        vg = done.stdout.strip() or done.stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        vg = f"{opts.valgrind}: not runnable"
    print(f"machine : {os.cpu_count()} logical cores, {platform.platform()}")
    print(f"valgrind: {vg}, --tool=callgrind, {' '.join(HUB_ENV)}")
    print("hubs    : " + "; ".join(f"{k} = {v} -m enos_lab serve" for k, v in interpreters.items()))
    if "qos0" in opts.only:
        how = f"paced at {opts.qos0_rate} msg/s" if opts.qos0_rate else "streamed"
        n1, n2 = opts.messages
        print(
            f"qos0    : anonymous hub, 1 publisher -> 1 subscriber, QoS 0, {opts.payload} B"
            f" payload, {how}; {n1:,} and {n2:,} messages"
        )
    if "login" in opts.only:
        n1, n2 = opts.logins
        print(
            f"login   : EnOS hub, secure mode 2 by device secret, CONNECT/CONNACK/DISCONNECT,"
            f" {opts.connect_concurrency} in flight; {n1:,} and {n2:,} logins"
        )


def _pair(text: str) -> tuple[int, int]:
    n1, _, n2 = text.partition(",")
    a, b = int(n1), int(n2)
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"expected N1,N2 with 0 <= N1 < N2, got {text!r}")
    return a, b


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="repeats per workload and interpreter")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    p.add_argument("--messages", type=_pair, default=(2_000, 42_000), help="qos0 N1,N2")
    p.add_argument("--logins", type=_pair, default=(100, 1_100), help="login N1,N2")
    p.add_argument(
        "--qos0-rate", type=int, default=0, help="pace the qos0 messages (0: stream) [msg/s]"
    )
    p.add_argument(
        "--payload", type=int, default=mb.parse_args([]).payload, help="qos0 payload [bytes]"
    )
    p.add_argument(
        "--backlog", type=int, default=5000, help="qos0 messages ahead of the subscriber"
    )
    p.add_argument(
        "--nap", type=float, default=0.5, help="qos0 subscriber pause, see mqtt_broker [ms]"
    )
    p.add_argument("--connect-concurrency", type=int, default=64, help="login handshakes in flight")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated device keys")
    p.add_argument("--python", default=sys.executable, help="interpreter (or wrapper) of the hub")
    p.add_argument("--compare", metavar="OLD_PYTHON", default=None, help="a second hub to compare")
    p.add_argument("--keep", type=Path, default=None, help="copy the callgrind files into DIR")
    p.add_argument("--valgrind", default="valgrind", help="valgrind binary")
    p.add_argument("--start-timeout", type=float, default=300.0, help="hub start-up bound [s]")
    p.add_argument("--stop-timeout", type=float, default=300.0, help="hub shut-down bound [s]")
    p.add_argument("--stall", type=float, default=120.0, help="abort after no progress [s]")
    p.add_argument("--deadline", type=float, default=900.0, help="bound of one workload [s]")
    opts = p.parse_args(argv)
    opts.only = [w.strip() for w in opts.only.split(",") if w.strip()]
    bad = [w for w in opts.only if w not in WORKLOADS]
    if bad or opts.runs < 1 or opts.qos0_rate < 0:
        p.error(f"bad arguments: {bad or 'runs/qos0-rate'}")
    if shutil.which(opts.valgrind) is None:
        p.error(f"{opts.valgrind} not found (apt install valgrind)")
    if opts.keep:
        opts.keep.mkdir(parents=True, exist_ok=True)
    return opts


def main(argv: list[str] | None = None) -> int:
    """Measure every selected workload on one or two interpreters; print the table."""
    opts = parse_args(argv)
    lg.self_check()
    lg.enos_self_check()
    lg.raise_fd_limit(2 * opts.logins[1] + 1024)
    interpreters = {"new": opts.python}
    if opts.compare:
        interpreters["old"] = opts.compare
    machine_info(opts, interpreters)
    for python in interpreters.values():
        bytecode_warmup(python)
    series = [Series(w, label) for w in opts.only for label in interpreters]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        scratch = Path(tmp)
        fleet = provision(scratch, opts.logins[1], opts.seed) if "login" in opts.only else None
        for run in range(opts.runs):
            labels = list(interpreters) if run % 2 == 0 else list(interpreters)[::-1]
            for workload in opts.only:
                amounts = opts.messages if workload == "qos0" else opts.logins
                for label in labels:
                    s = next(x for x in series if x.workload == workload and x.label == label)
                    try:
                        a, b = (
                            measure(
                                opts,
                                interpreters[label],
                                n,
                                scratch=scratch,
                                fleet=fleet if workload == "login" else None,
                                keep_as=f"{label}-{workload}-{n}-run{run + 1}",
                            )
                            for n in amounts
                        )
                    except (mb.BenchError, lg.LoadError) as exc:
                        failures += 1
                        s.pairs.append(None)
                        print(f"run {run + 1} {workload:<6}{label:<4} FAILED: {exc}", flush=True)
                        continue
                    s.pairs.append((a, b))
                    per = (b.instructions - a.instructions) / (b.units - a.units)
                    print(
                        f"run {run + 1} {workload:<6}{label:<4} {a.instructions:,} Ir"
                        f" ({a.units:,}, {a.seconds:.0f} s), {b.instructions:,} Ir"
                        f" ({b.units:,}, {b.seconds:.0f} s): {per:,.0f} Ir per"
                        f" {UNITS[workload]}",
                        flush=True,
                    )
    print()
    print_table(series, interpreters)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
