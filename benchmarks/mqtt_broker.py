"""MQTT broker benchmark: the hub (anonymous mode) against mosquitto under the same load.

Usage::

    python benchmarks/mqtt_broker.py [--runs 3] [--messages N]
        [--only qos0,qos1,connect,memory,latency] [--brokers hub,mosquitto]

Every workload starts a fresh broker process, runs the load generator of ``_loadgen.py``
(MQTT 3.1.1, hand-encoded, in separate processes) against it, and stops the broker. Within a
run the brokers take turns (the order alternates between runs), so each ratio hub/mosquitto
compares two measurements taken a few seconds apart on the same machine. The table shows the
median over runs of each value and the median of the same-run ratios. Each throughput line
also shows the CPU share of the subscriber, the publishers, the broker and the whole machine,
so that a saturated load generator or a busy machine is visible. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import re
import selectors
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _loadgen as lg

WORKLOADS = ("qos0", "qos1", "connect", "memory", "latency")
BROKERS = ("hub", "mosquitto")
HOST = "127.0.0.1"
HUB_READY = re.compile(r"listening on mqtts?://127\.0\.0\.1:(\d+)")


class BenchError(Exception):
    """One measurement failed (broker did not start, stalled, lost messages ...)."""


# --- brokers --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class Broker:
    """A broker process started by this script, stopped by PID."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    _drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """Process id of the broker."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM, wait, SIGKILL if needed. Returns a note when the stop was not clean."""
        if self.proc.poll() is not None:
            return f"{self.name} had already exited with code {self.proc.returncode}"
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return f"{self.name} ignored SIGTERM for {timeout} s and was killed"
        if self._drain is not None:
            self._drain.join(2)
        return "" if code in (0, -signal.SIGTERM) else f"{self.name} exited with code {code}"

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the broker wrote to stderr."""
        with contextlib.suppress(OSError):
            text = (self.workdir / "stderr.log").read_text(errors="replace")
            return "\n".join(text.strip().splitlines()[-lines:])
        return ""


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"broker exited with code {proc.returncode} during start-up")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"nothing listening on port {port} after {timeout} s")


def start_mosquitto(
    binary: str,
    workdir: Path,
    nodelay: bool = False,
    access: tuple[str, ...] = (),
    listener: tuple[str, ...] = (),
) -> Broker:
    """Start mosquitto on a free loopback port with a generated configuration.

    Apart from the listener (and its ``listener`` lines, e.g. TLS files), anonymous access (or
    the ``access`` lines, e.g. a password file), no persistence, quiet logs and unbounded
    queues, mosquitto runs with its defaults (``max_inflight_messages 20``, Nagle on unless
    ``nodelay``), which measured as fast as or faster than the alternatives here.
    """
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {port} {HOST}",
                *listener,
                *(access or ("allow_anonymous true",)),
                "persistence false",
                "max_queued_messages 10000000",
                "max_connections -1",
                f"set_tcp_nodelay {'true' if nodelay else 'false'}",
                "connection_messages false",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "",
            ]
        )
    )
    with (workdir / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
    broker = Broker("mosquitto", proc, port, workdir)
    try:
        wait_port(port, proc, 10)
    except BenchError:
        broker.stop()
        raise
    return broker


def start_hub(
    argv: list[str], workdir: Path, timeout: float = 30.0, ready: re.Pattern[str] = HUB_READY
) -> Broker:
    """Run ``argv`` (a hub told to listen on port 0) and read the port from its ``listening
    on`` line (the first line that ``ready`` matches; its group 1 is the port)."""
    with (workdir / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    stdout = proc.stdout
    os.set_blocking(stdout.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(stdout, selectors.EVENT_READ)
    seen = b""
    port = 0
    deadline = time.monotonic() + timeout
    while not port and time.monotonic() < deadline:
        if sel.select(0.2):
            chunk = stdout.read()
            if not chunk:
                break
            seen += chunk
            match = ready.search(seen.decode(errors="replace"))
            if match:
                port = int(match.group(1))
        elif proc.poll() is not None:
            break
    sel.close()
    os.set_blocking(stdout.fileno(), True)
    broker = Broker("hub", proc, port, workdir)
    if not port:
        broker.stop()
        raise BenchError(
            f"hub did not print its listening line within {timeout} s; stdout {seen[-200:]!r};"
            f" stderr: {broker.log_tail()}"
        )

    def drain() -> None:
        # Keep reading stdout so that a chatty hub never blocks on a full pipe.
        while stdout.read(65536):
            pass

    broker._drain = threading.Thread(target=drain, name="hub-stdout", daemon=True)
    broker._drain.start()
    return broker


@contextlib.contextmanager
def running(name: str, opts: argparse.Namespace) -> Iterator[Broker]:
    """A fresh broker for one measurement, always stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        if name == "mosquitto":
            broker = start_mosquitto(opts.mosquitto, Path(tmp), opts.mosquitto_nodelay)
        else:
            argv = [*shlex.split(opts.hub_cmd), "serve", "--anonymous", "--host", HOST]
            broker = start_hub([*argv, "--port", "0"], Path(tmp))
        note = ""
        try:
            yield broker
        finally:
            if not broker.alive():
                note = f"{name} died during the measurement: {broker.log_tail()}"
            stop_note = broker.stop()
            if note or stop_note:
                print(f"  ! {note or stop_note}", flush=True)


# --- load-generator processes ---------------------------------------------------------------


class Child:
    """A load-generator process running one ``_loadgen`` workload."""

    def __init__(self, func: Callable[..., dict[str, Any]], **kwargs: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.name = func.__name__
        self.proc = ctx.Process(
            target=lg.child_main, args=(child_conn, func, kwargs), name=self.name, daemon=True
        )
        self.proc.start()
        child_conn.close()

    def wait(self, kind: str, timeout: float) -> dict[str, Any]:
        """Wait for a ``(kind, dict)`` message; a reported error or a timeout raises."""
        if not self.conn.poll(timeout):
            raise BenchError(f"{self.name}: no '{kind}' within {timeout:.0f} s")
        try:
            tag, value = self.conn.recv()
        except EOFError as exc:
            raise BenchError(f"{self.name} exited without reporting") from exc
        if tag == "error":
            raise BenchError(f"{self.name}: {value}")
        if tag != kind:
            raise BenchError(f"{self.name}: expected '{kind}', got '{tag}'")
        return dict(value)

    def send(self, msg: str) -> None:
        """Send a command (``"go"`` or ``"close"``)."""
        self.conn.send(msg)

    def finish(self, timeout: float = 10.0) -> None:
        """Join the process; terminate it (by its own handle) if it does not end."""
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """Collect children started in a block and always reap them."""
    started: list[Child] = []
    grace = 10.0
    try:
        yield started
    except BaseException:
        grace = 0.0  # the measurement failed: do not wait for the others to time out
        raise
    finally:
        for child in started:
            child.finish(grace)


# --- measurements ---------------------------------------------------------------------------


def proc_memory_kb(pid: int) -> dict[str, int]:
    """Rss and Pss of a process and its descendants from ``smaps_rollup``. [kB]"""
    total = {"Rss": 0, "Pss": 0}
    pids = [pid]
    while pids:
        p = pids.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in total:
                    total[key] += int(rest.split()[0])
            for task in Path(f"/proc/{p}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
    return total


def proc_cpu_s(pid: int) -> float:
    """User + system CPU time of a process (all its threads). [s]"""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of proc(5) (utime, stime); index 0 here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU time spent by all cores outside idle and iowait since boot (/proc/stat). [s]"""
    with contextlib.suppress(OSError):
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def bench_throughput(broker: Broker, opts: argparse.Namespace, qos: int) -> dict[str, float]:
    """N publishers -> 1 wildcard subscriber; rate seen by the subscriber. [msg/s]"""
    expected = opts.publishers * opts.messages
    budget = 30 + expected / 2000  # generous: 2,000 msg/s is far below any broker here
    ctx = mp.get_context("spawn")
    delivered = ctx.RawValue("q", 0)
    sent_slots = ctx.RawArray("q", opts.pub_procs)
    with children() as kids:
        sub = lg.run_subscriber
        kids.append(
            Child(
                sub,
                host=HOST,
                port=broker.port,
                topic_filter="bench/#",
                qos=qos,
                expected=expected,
                delivered=delivered,
                nap=0.0 if qos else opts.nap / 1000,
                start_timeout=30.0,
                idle_timeout=opts.stall,
                deadline_s=budget,
            )
        )
        kids[0].wait("ready", 60)
        per = [len(range(k, opts.publishers, opts.pub_procs)) for k in range(opts.pub_procs)]
        first = 0
        for slot, n in enumerate(per):
            kids.append(
                Child(
                    lg.run_publishers,
                    host=HOST,
                    port=broker.port,
                    first_index=first,
                    publishers=n,
                    messages=opts.messages,
                    qos=qos,
                    payload_size=opts.payload,
                    window=opts.window,
                    chunk=opts.chunk,
                    backlog=opts.backlog,
                    delivered=delivered,
                    sent_slots=sent_slots,
                    slot=slot,
                    start_timeout=30.0,
                    idle_timeout=opts.stall,
                    deadline_s=budget,
                )
            )
            first += n
        for pub in kids[1:]:
            pub.wait("ready", 120)
        cpu0, busy0, wall0 = proc_cpu_s(broker.pid), machine_busy_s(), time.monotonic()
        for pub in kids[1:]:
            pub.send("go")
        pubs = [pub.wait("result", budget + 30) for pub in kids[1:]]
        errors = [p["error"] for p in pubs if p["error"]]
        if errors:
            raise BenchError(f"publishers: {'; '.join(errors)}")
        res = kids[0].wait("result", budget + 30)
        wall = time.monotonic() - wall0
        broker_cpu = (proc_cpu_s(broker.pid) - cpu0) / wall
        machine_cpu = (machine_busy_s() - busy0) / wall
    if res["received"] < 2 or res["last_ns"] <= res["first_ns"]:
        raise BenchError(f"subscriber received {res['received']} messages ({res['stalled']})")
    if res["received"] < expected:
        lost = expected - res["received"]
        raise BenchError(f"lost {lost} of {expected} messages ({res['stalled']})")
    window_ns = res["last_ns"] - res["first_ns"]
    send_ns = max(p["elapsed_ns"] for p in pubs)
    return {
        "rate": res["received"] / (window_ns / 1e9),
        "pub_rate": expected / (send_ns / 1e9),
        # Share of one core used while the messages flowed: a load generator near 1.0 would
        # be the bottleneck.
        "sub_cpu": res["cpu_ns"] / window_ns,
        "pub_cpu": sum(p["cpu_ns"] for p in pubs) / send_ns,
        "broker_cpu": broker_cpu,
        # Cores busy machine-wide: 2.0 on a 2-core machine means everything competed.
        "all_cpu": machine_cpu,
    }


def bench_connect(broker: Broker, opts: argparse.Namespace) -> dict[str, float]:
    """Open N connections (CONNECT -> CONNACK) from a few concurrent handshakes. [conn/s]"""
    with children() as kids:
        kids.append(
            Child(
                lg.run_connect,
                host=HOST,
                port=broker.port,
                count=opts.connections,
                concurrency=opts.connect_concurrency,
                keepalive=60,
                prefix="bench-c",
                hold=False,
                start_timeout=30.0,
                idle_timeout=opts.stall,
                deadline_s=60.0 + opts.connections / 100,
            )
        )
        res = kids[0].wait("result", 120 + opts.connections / 100)
    if res["error"]:
        raise BenchError(res["error"])
    return {"rate": res["accepted"] / (res["elapsed_ns"] / 1e9)}


def idle_memory(
    broker: Broker,
    opts: argparse.Namespace,
    n: int,
    connect: Callable[..., dict[str, Any]],
    deadline_s: float,
    **workload: Any,
) -> dict[str, float]:
    """Broker memory growth while ``n`` connections opened by ``connect`` (a ``_loadgen``
    connect workload, given ``workload``) are held idle: PSS and RSS from smaps_rollup.
    [KiB/connection]"""
    time.sleep(opts.settle)
    before = proc_memory_kb(broker.pid)
    with children() as kids:
        kids.append(
            Child(
                connect,
                host=HOST,
                port=broker.port,
                hold=True,
                start_timeout=30.0,
                idle_timeout=opts.stall,
                deadline_s=deadline_s,
                **workload,
            )
        )
        info = kids[0].wait("ready", deadline_s + 60)
        if info["error"] or info["accepted"] != n:
            raise BenchError(f"only {info['accepted']} of {n} connections: {info['error']}")
        time.sleep(opts.settle)
        after = proc_memory_kb(broker.pid)
        kids[0].send("close")
        kids[0].wait("result", 60)
    return {
        "pss_kb": (after["Pss"] - before["Pss"]) / n,
        "rss_kb": (after["Rss"] - before["Rss"]) / n,
        "base_rss_mb": before["Rss"] / 1024,
    }


def bench_memory(broker: Broker, opts: argparse.Namespace) -> dict[str, float]:
    """Broker memory growth per idle connection (PSS from smaps_rollup). [KiB/connection]"""
    n = opts.idle_connections
    return idle_memory(
        broker,
        opts,
        n,
        lg.run_connect,
        60.0 + n / 50,
        count=n,
        concurrency=64,
        keepalive=300,
        prefix="bench-idle",
    )


def bench_latency(broker: Broker, opts: argparse.Namespace) -> dict[str, float]:
    """p50/p99 end-to-end latency at a paced QoS 0 rate. [ms]"""
    with children() as kids:
        kids.append(
            Child(
                lg.run_latency,
                host=HOST,
                port=broker.port,
                rate=opts.latency_rate,
                duration_s=opts.latency_seconds,
                warmup_s=0.5,
                payload_size=opts.payload,
                start_timeout=30.0,
                drain_s=5.0,
            )
        )
        kids[0].wait("ready", 60)
        kids[0].send("go")
        res = kids[0].wait("result", 60 + opts.latency_seconds)
    return {"p50": res["p50_ms"], "p99": res["p99_ms"], "max": res["max_ms"]}


# --- report ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the result table."""

    workload: str
    key: str
    label: str
    fmt: str
    target: str = ""
    check: Callable[[float | None, float | None], bool | None] | None = None
    values: dict[str, list[float | None]] = field(default_factory=dict)


def _ratio_at_least(limit: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda ratio, _hub: None if ratio is None else ratio >= limit


def _ratio_at_most(limit: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda ratio, _hub: None if ratio is None else ratio <= limit


def _hub_at_most(limit: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda _ratio, hub: None if hub is None else hub <= limit


def make_rows() -> list[Row]:
    """The table layout: which value of which workload, and its target."""
    return [
        Row("qos0", "rate", "QoS0 throughput [msg/s]", ",.0f", ">= 1.0x", _ratio_at_least(1.0)),
        Row("qos1", "rate", "QoS1 throughput [msg/s]", ",.0f", ">= 1.0x", _ratio_at_least(1.0)),
        Row("connect", "rate", "Connections [conn/s]", ",.0f"),
        Row("memory", "pss_kb", "Idle memory, PSS [KiB/conn]", ".2f", "<= 3 KiB", _hub_at_most(3)),
        Row("memory", "rss_kb", "Idle memory, RSS [KiB/conn]", ".2f"),
        Row("latency", "p50", "Latency p50 [ms]", ".3f"),
        Row("latency", "p99", "Latency p99 [ms]", ".3f", "<= 1.5x", _ratio_at_most(1.5)),
    ]


def _median(values: list[float | None]) -> float | None:
    good = [v for v in values if v is not None]
    return statistics.median(good) if good else None


def print_table(rows: list[Row], brokers: list[str], runs: int) -> None:
    """Medians, same-run ratios and targets; then every run's value."""
    both = "hub" in brokers and "mosquitto" in brokers
    width = max([30, *(len(row.label) + 2 for row in rows if row.values)])
    head = f"{'metric':<{width}}" + "".join(f"{b:>14}" for b in brokers)
    if both:
        head += f"{'hub/mosq':>10}  {'target':<10}{'met':>5}"
    print(head)
    print("-" * len(head))
    for row in rows:
        if not row.values:
            continue
        line = f"{row.label:<{width}}"
        for b in brokers:
            med = _median(row.values[b])
            line += f"{'failed' if med is None else format(med, row.fmt):>14}"
        if both:
            pairs = zip(row.values["hub"], row.values["mosquitto"], strict=True)
            ratios = [h / m for h, m in pairs if h is not None and m]
            ratio = statistics.median(ratios) if ratios else None
            line += f"{'-' if ratio is None else f'{ratio:.2f}x':>10}  {row.target:<10}"
            verdict = row.check(ratio, _median(row.values["hub"])) if row.check else None
            line += f"{'' if verdict is None else ('yes' if verdict else 'NO'):>5}"
        print(line)
    print(f"\nPer-run values (runs 1..{runs}):")
    for row in rows:
        if not row.values:
            continue
        for b in brokers:
            vals = ", ".join("fail" if v is None else format(v, row.fmt) for v in row.values[b])
            print(f"  {row.label:<{width}}{b:>10}: {vals}")


def machine_lines(mosquitto: str) -> list[str]:
    """What the numbers are measured on: cores and CPU model, Python, load, mosquitto's
    version (from ``mosquitto -h``)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        out = subprocess.run(
            [mosquitto, "-h"], capture_output=True, text=True, timeout=10, check=False
        )
        mosq = (out.stdout or out.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        mosq = f"{mosquitto}: not runnable"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"machine : {os.cpu_count()} logical cores, {model}, {platform.platform()}",
        f"python  : {sys.version.split()[0]} ({sys.executable})",
        f"load avg: {load} (1/5/15 min) at start; the cores may be shared",
        f"broker  : {mosq}",
    ]


def machine_info(opts: argparse.Namespace) -> None:
    """Print what the numbers were measured on."""
    lines = machine_lines(opts.mosquitto)
    lines[-1] += f"; hub command: {opts.hub_cmd} serve --anonymous"
    print("\n".join(lines))
    print(
        f"load    : {opts.publishers} publishers x {opts.messages} msgs, {opts.payload} B payload,"
        f" {opts.pub_procs} publisher process(es) + 1 subscriber process, QoS1 window"
        f" {opts.window}, backlog cap {opts.backlog or 'none'}; {opts.connections} connects"
        f" ({opts.connect_concurrency} concurrent);"
        f" {opts.idle_connections} idle conns; latency {opts.latency_rate} msg/s for"
        f" {opts.latency_seconds} s; RLIMIT_NOFILE {opts.nofile}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per broker and workload")
    p.add_argument("--messages", type=int, default=20_000, help="messages per publisher")
    p.add_argument("--publishers", type=int, default=10)
    p.add_argument("--pub-procs", type=int, default=1, help="processes for the publishers")
    p.add_argument("--payload", type=int, default=120, help="payload size [bytes]")
    p.add_argument("--window", type=int, default=100, help="QoS1 in-flight per publisher")
    p.add_argument(
        "--backlog",
        type=int,
        default=5000,
        help="max messages published but not yet received by the subscriber (0: no cap)",
    )
    p.add_argument(
        "--nap",
        type=float,
        default=0.5,
        help="QoS0 subscriber pause after a read under 32 KiB (0: none) [ms]",
    )
    p.add_argument("--chunk", type=int, default=64 * 1024, help="bytes per send() [bytes]")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--connect-concurrency", type=int, default=8)
    p.add_argument("--idle-connections", type=int, default=5000)
    p.add_argument("--latency-rate", type=int, default=1000, help="[msg/s]")
    p.add_argument("--latency-seconds", type=float, default=5.0, help="[s]")
    p.add_argument("--stall", type=float, default=10.0, help="abort after no progress [s]")
    p.add_argument("--settle", type=float, default=1.0, help="wait before memory samples [s]")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    p.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated brokers")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto", help="mosquitto binary")
    p.add_argument(
        "--mosquitto-nodelay",
        action="store_true",
        help="set_tcp_nodelay true in mosquitto (default: its default, Nagle on)",
    )
    p.add_argument(
        "--hub-cmd",
        default=f"{shlex.quote(sys.executable)} -m enos_lab",
        help="command prefix that accepts 'serve --anonymous --host H --port 0'",
    )
    opts = p.parse_args(argv)
    opts.only = [w.strip() for w in opts.only.split(",") if w.strip()]
    opts.brokers = [b.strip() for b in opts.brokers.split(",") if b.strip()]
    bad = [w for w in opts.only if w not in WORKLOADS] + [
        b for b in opts.brokers if b not in BROKERS
    ]
    if bad or opts.runs < 1 or not 1 <= opts.pub_procs <= opts.publishers:
        p.error(f"bad arguments: {bad or 'runs/pub-procs'}")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run every selected workload on every selected broker, ``--runs`` times; print tables."""
    opts = parse_args(argv)
    lg.self_check()
    # Inherited by the brokers and the load generators: 5,000 idle sockets each side.
    opts.nofile = lg.raise_fd_limit(max(opts.idle_connections, opts.connections) * 2 + 1024)
    machine_info(opts)
    benches: dict[str, Callable[[Broker, argparse.Namespace], dict[str, float]]] = {
        "qos0": lambda b, o: bench_throughput(b, o, 0),
        "qos1": lambda b, o: bench_throughput(b, o, 1),
        "connect": bench_connect,
        "memory": bench_memory,
        "latency": bench_latency,
    }
    rows = [r for r in make_rows() if r.workload in opts.only]
    for row in rows:
        row.values = {b: [] for b in opts.brokers}
    failures = 0
    for run in range(opts.runs):
        order = opts.brokers if run % 2 == 0 else opts.brokers[::-1]
        for workload in opts.only:
            for name in order:
                t0 = time.monotonic()
                try:
                    with running(name, opts) as broker:
                        result: dict[str, float] | None = benches[workload](broker, opts)
                    detail = ", ".join(f"{k}={v:,.3f}" for k, v in (result or {}).items())
                except (BenchError, lg.LoadError) as exc:
                    result = None
                    failures += 1
                    detail = f"FAILED: {exc}"
                took = time.monotonic() - t0
                print(f"run {run + 1} {workload:<8}{name:<10}{took:6.1f} s  {detail}", flush=True)
                for row in rows:
                    if row.workload == workload:
                        row.values[name].append(None if result is None else result[row.key])
    print()
    print_table(rows, opts.brokers, opts.runs)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
