"""EnOS device benchmark: authenticated devices against the hub (and mosquitto for CONNECT).

Usage::

    python benchmarks/enos_devices.py [--runs 3] [--only posts,connect,memory]
        [--devices 100] [--messages 300] [--connections 2000] [--idle-devices 10000]

Three measurements, each on a fresh hub process (``python -m enos_lab serve --port 0
--data-dir D``) whose data directory holds a registry provisioned by this script beforehand
(one product with the library model ``energy_meter``, one device per connection):

``posts``
    ``--devices`` connections, each logged in as its own device (secure mode 2, signature as
    the Python SDK computes it), subscribe to their ``measurepoint/post_reply`` and post
    ``--messages`` ``thing.measurepoint.post`` requests each at QoS 1 (three points, validated
    against the model, stored, replied). Rate = replies with code 200 / (last reply - start).
    After the hub has stopped, the store in its data directory is opened and the stored
    points are counted.
``connect``
    ``--connections`` CONNECTs with EnOS credentials (``--connect-concurrency`` handshakes in
    flight) against the hub and against mosquitto with a ``password_file`` made by
    ``mosquitto_passwd -b`` for the same users and passwords: the same CONNECT packets go to
    both. The brokers take turns, alternating who goes first.
``memory``
    ``--idle-devices`` idle authenticated device connections (keep-alive 300 s); hub PSS/RSS
    growth per connection from ``/proc/<pid>/smaps_rollup``.

The load generator is ``_loadgen.py`` (hand-encoded MQTT 3.1.1, pre-encoded packets, separate
processes). Every wait is bounded; processes are stopped by PID. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
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
from mqtt_broker import (
    HOST,
    BenchError,
    Broker,
    Child,
    children,
    idle_memory,
    machine_busy_s,
    proc_cpu_s,
    start_hub,
    start_mosquitto,
)

WORKLOADS = ("posts", "connect", "memory")
MODEL_ID = "energy_meter"  # library model; the posts carry three of its points
POINTS_PER_POST = 3
TIME_BASE_MS = 1_700_000_000_000  # [ms] event time of the first post of every device


# --- provisioning ---------------------------------------------------------------------------


@dataclass(slots=True)
class Fleet:
    """A provisioned registry (template data directory) and the devices' credentials."""

    template: Path
    product_key: str
    devices: list[tuple[str, str]]  # (device_key, device_secret)
    seconds: float

    def connect_packets(self, count: int, keepalive: int) -> list[bytes]:
        """CONNECT packets of the first ``count`` devices."""
        return [
            lg.enos_connect(self.product_key, dk, secret, keepalive)
            for dk, secret in self.devices[:count]
        ]

    def logins(self, count: int) -> list[tuple[str, str]]:
        """``(username, password)`` of the first ``count`` devices."""
        out = []
        for dk, secret in self.devices[:count]:
            _, username, password = lg.enos_login(self.product_key, dk, secret)
            out.append((username, password))
        return out


def provision(workdir: Path, count: int, seed: int) -> Fleet:
    """Create the registry of ``count`` devices in ``workdir/template`` (before any hub runs)."""
    from enos_lab.lab import REGISTRY_FILE
    from enos_lab.registry import Registry

    template = workdir / "template"
    template.mkdir()
    t0 = time.monotonic()
    registry = Registry(template / REGISTRY_FILE, rng=random.Random(seed))
    try:
        product = registry.create_product("Bench meter", model_id=MODEL_ID)
        rows = [
            {"product_key": product.product_key, "device_key": f"m{i:05d}"} for i in range(count)
        ]
        result = registry.register_devices(rows)
    finally:
        registry.close()
    if len(result.errors):
        raise BenchError(f"provisioning failed: {result.errors.iloc[0].to_dict()}")
    reg = result.registered
    devices = list(zip(reg["device_key"], reg["device_secret"], strict=True))
    return Fleet(template, product.product_key, devices, time.monotonic() - t0)


def count_stored_points(data_dir: Path, product_key: str, device_keys: list[str]) -> int:
    """Points stored for these devices, read from the data directory after the hub stopped."""
    from enos_lab.store import TimeSeriesStore

    store = TimeSeriesStore(data_dir)
    try:
        return len(store.query_points(device_keys, product_key=product_key))
    finally:
        store.close()


# --- brokers --------------------------------------------------------------------------------


def start_serve(python: str, data_dir: Path, workdir: Path, timeout: float = 60.0) -> Broker:
    """``python -m enos_lab serve`` on a free port with ``data_dir``; port read from stdout."""
    argv = [python, "-m", "enos_lab", "serve", "--host", HOST, "--port", "0"]
    return start_hub([*argv, "--data-dir", str(data_dir)], workdir, timeout)


def make_password_file(passwd_binary: str, path: Path, logins: list[tuple[str, str]]) -> float:
    """``mosquitto_passwd -b`` once per user (``-c`` for the first); returns the time taken."""
    t0 = time.monotonic()
    for i, (username, password) in enumerate(logins):
        argv = [passwd_binary, *(["-c"] if i == 0 else []), "-b", str(path), username, password]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise BenchError(f"mosquitto_passwd failed for {username!r}: {done.stderr.strip()}")
    return time.monotonic() - t0


def start_mosquitto_auth(binary: str, password_file: Path, workdir: Path) -> Broker:
    """mosquitto on a free loopback port, anonymous access off, with ``password_file``.

    ``workdir`` must be a directory of its own directly inside the script's scratch directory.
    """
    local = workdir / "passwd"
    shutil.copyfile(password_file, local)
    # Started as root, mosquitto reads the password file after dropping to its own user:
    # let that user through our (0700) temporary directories to the file.
    for directory in (workdir, workdir.parent):
        directory.chmod(directory.stat().st_mode | 0o011)
    local.chmod(0o644)
    return start_mosquitto(
        binary, workdir, access=("allow_anonymous false", f"password_file {local}")
    )


@contextlib.contextmanager
def running(name: str, opts: argparse.Namespace, fleet: Fleet, scratch: Path) -> Iterator[Broker]:
    """A fresh broker for one measurement, always stopped (by PID) afterwards.

    The hub gets a fresh copy of the provisioned data directory, so every run starts with the
    same registry and an empty store; the copy stays in ``broker.workdir / "data"`` until the
    scratch directory is removed.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    if name == "mosquitto":
        broker = start_mosquitto_auth(opts.mosquitto, opts.password_file, workdir)
    else:
        data_dir = workdir / "data"
        shutil.copytree(fleet.template, data_dir)
        if opts.rules is not None:  # the lab's rule set, read when the hub starts
            from enos_lab.rules import load_rules, write_rule_set

            write_rule_set(data_dir, load_rules(opts.rules))
        broker = start_serve(opts.python, data_dir, workdir)
    note = ""
    try:
        yield broker
    finally:
        if not broker.alive():
            note = f"{name} died during the measurement: {broker.log_tail()}"
        stop_note = broker.stop()
        if note or stop_note:
            print(f"  ! {note or stop_note}", flush=True)


# --- measurements ---------------------------------------------------------------------------


def bench_posts(broker: Broker, opts: argparse.Namespace, fleet: Fleet) -> dict[str, float]:
    """Devices post measurepoints at QoS 1; replies with code 200 per second. [msg/s]"""
    n, m = opts.devices, opts.messages
    expected = n * m
    budget = 60 + expected / 1000  # generous: 1,000 msg/s is far below the target
    devices = [
        (packet, f"{fleet.product_key}/{dk}")
        for packet, (dk, _) in zip(fleet.connect_packets(n, 60), fleet.devices, strict=False)
    ]
    shares = [devices[i :: opts.procs] for i in range(opts.procs)]
    with children() as kids:
        for share in shares:
            kids.append(
                Child(
                    lg.run_device_posts,
                    host=HOST,
                    port=broker.port,
                    devices=share,
                    messages=m,
                    window=opts.window,
                    reply_qos=opts.reply_qos,
                    time_base_ms=TIME_BASE_MS,
                    start_timeout=30.0,
                    idle_timeout=opts.stall,
                    deadline_s=budget,
                )
            )
        for kid in kids:
            kid.wait("ready", 60 + n / 20)
        cpu0, busy0, wall0 = proc_cpu_s(broker.pid), machine_busy_s(), time.monotonic()
        for kid in kids:
            kid.send("go")
        results = [kid.wait("result", budget + 30) for kid in kids]
        cpu1, busy1, wall1 = proc_cpu_s(broker.pid), machine_busy_s(), time.monotonic()
    errors = [r["error"] for r in results if r["error"]]
    replies = sum(r["replies"] for r in results)
    bad = sum(r["bad_replies"] for r in results)
    if errors or replies != expected or bad:
        sample = next((r["bad_sample"] for r in results if r["bad_sample"]), "")
        raise BenchError(
            f"{replies} replies of {expected}, {bad} without code 200 (e.g. {sample!r}); "
            f"{'; '.join(errors)}"
        )
    span_s = (max(r["last_reply_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
    wall = wall1 - wall0
    return {
        "rate": replies / span_s,
        "hub_cpu": (cpu1 - cpu0) / wall,
        "gen_cpu": sum(r["cpu_ns"] for r in results) / 1e9 / wall,
        "all_cpu": (busy1 - busy0) / wall,
    }


def bench_connect(broker: Broker, opts: argparse.Namespace, fleet: Fleet) -> dict[str, float]:
    """CONNECT -> CONNACK with EnOS credentials, many handshakes in flight. [conn/s]"""
    packets = fleet.connect_packets(opts.connections, 60)
    with children() as kids:
        cpu0 = proc_cpu_s(broker.pid)
        kids.append(
            Child(
                lg.run_connect_packets,
                host=HOST,
                port=broker.port,
                packets=packets,
                concurrency=opts.connect_concurrency,
                hold=False,
                start_timeout=30.0,
                idle_timeout=opts.stall,
                deadline_s=60.0 + opts.connections / 100,
            )
        )
        res = kids[0].wait("result", 120 + opts.connections / 100)
        cpu1 = proc_cpu_s(broker.pid)
    if res["error"]:
        raise BenchError(res["error"])
    return {
        "rate": res["accepted"] / (res["elapsed_ns"] / 1e9),
        # CPU of the broker from before the load generator started until it finished
        # (includes the DISCONNECTs at the end): the cost of a login, whatever the latency.
        "cpu_ms": (cpu1 - cpu0) * 1000 / res["accepted"],
    }


def bench_memory(broker: Broker, opts: argparse.Namespace, fleet: Fleet) -> dict[str, float]:
    """Hub memory growth per idle authenticated device connection. [KiB/connection]"""
    n = opts.idle_devices
    packets = fleet.connect_packets(n, 300)
    return idle_memory(
        broker,
        opts,
        n,
        lg.run_connect_packets,
        120.0 + n / 50,
        packets=packets,
        concurrency=opts.connect_concurrency,
    )


# --- the table ------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the result table: a value of one workload per broker, with its target."""

    workload: str
    key: str
    label: str
    fmt: str
    target: str = ""
    values: dict[str, list[float | None]] = field(default_factory=dict)


def make_rows() -> list[Row]:
    """The table layout."""
    return [
        Row("posts", "rate", "Device posts, QoS 1 [msg/s]", ",.0f", "hub >= 30,000"),
        Row("posts", "hub_cpu", "  hub CPU [cores]", ".2f"),
        Row("posts", "gen_cpu", "  load generator CPU [cores]", ".2f"),
        Row("posts", "all_cpu", "  machine busy [cores]", ".2f"),
        Row("connect", "rate", "CONNECT + auth [conn/s]", ",.0f", "hub/mosq >= 1.0"),
        Row("connect", "cpu_ms", "  broker CPU per CONNECT [ms]", ".3f"),
        Row("memory", "pss_kb", "Idle device conn, PSS [KiB]", ".2f", "hub <= 3 KiB"),
        Row("memory", "rss_kb", "Idle device conn, RSS [KiB]", ".2f"),
        Row("memory", "base_rss_mb", "  hub RSS before [MiB]", ".1f"),
    ]


def _median(values: list[float | None]) -> float | None:
    good = [v for v in values if v is not None]
    return statistics.median(good) if good else None


def _verdict(row: Row, ratio: float | None) -> str:
    hub = _median(row.values.get("hub", []))
    if row.workload == "posts" and row.key == "rate" and hub is not None:
        return "yes" if hub >= 30_000 else "NO"
    if row.workload == "connect" and row.key == "rate" and ratio is not None:
        return "yes" if ratio >= 1.0 else "NO"
    if row.workload == "memory" and row.key == "pss_kb" and hub is not None:
        return "yes" if hub <= 3.0 else "NO"
    return ""


def print_table(rows: list[Row], runs: int) -> None:
    """Medians, the median of the same-run ratios hub/mosquitto, targets; then every run."""
    head = f"{'metric':<32}{'hub':>12}{'mosquitto':>12}{'hub/mosq':>10}  {'target':<16}{'met':>4}"
    print(head)
    print("-" * len(head))
    for row in rows:
        if not row.values:
            continue
        line = f"{row.label:<32}"
        for name in ("hub", "mosquitto"):
            vals = row.values.get(name)
            med = _median(vals) if vals else None
            cell = "-" if vals is None else ("failed" if med is None else format(med, row.fmt))
            line += f"{cell:>12}"
        ratio = None
        if "mosquitto" in row.values:
            pairs = zip(row.values["hub"], row.values["mosquitto"], strict=True)
            ratios = [h / q for h, q in pairs if h is not None and q]
            ratio = statistics.median(ratios) if ratios else None
        line += f"{'-' if ratio is None else f'{ratio:.2f}x':>10}  {row.target:<16}"
        line += f"{_verdict(row, ratio):>4}"
        print(line)
    print(f"\nPer-run values (runs 1..{runs}):")
    for row in rows:
        for name, vals in row.values.items():
            text = ", ".join("fail" if v is None else format(v, row.fmt) for v in vals)
            print(f"  {row.label:<32}{name:>10}: {text}")


def machine_info(opts: argparse.Namespace, fleet: Fleet) -> None:
    """Print what the numbers were measured on and with which load."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        out = subprocess.run(
            [opts.mosquitto, "-h"], capture_output=True, text=True, timeout=10, check=False
        )
        mosq = (out.stdout or out.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        mosq = f"{opts.mosquitto}: not runnable"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine : {os.cpu_count()} logical cores, {model}, {platform.platform()}")
    print(f"python  : {sys.version.split()[0]} ({opts.python})")
    print(f"load avg: {load} (1/5/15 min) at start; the cores may be shared")
    print(f"mosquitto: {mosq}, password_file by mosquitto_passwd -b")
    print(
        f"fleet   : {len(fleet.devices)} devices of product {fleet.product_key} (model"
        f" {MODEL_ID}) provisioned in {fleet.seconds:.1f} s"
    )
    print(
        f"load    : posts {opts.devices} devices x {opts.messages} msgs (QoS 1, window"
        f" {opts.window}, reply QoS {opts.reply_qos}, {opts.procs} process(es)); connect"
        f" {opts.connections} ({opts.connect_concurrency} in flight); memory"
        f" {opts.idle_devices} idle devices; RLIMIT_NOFILE {opts.nofile}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per workload (>= 3 for medians)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    p.add_argument("--devices", type=int, default=100, help="posting devices (connections)")
    p.add_argument("--messages", type=int, default=300, help="posts per device")
    p.add_argument("--window", type=int, default=20, help="QoS 1 in flight per device")
    p.add_argument("--reply-qos", type=int, default=1, choices=(0, 1), help="SDK uses 1")
    p.add_argument("--procs", type=int, default=1, help="load generator processes for posts")
    p.add_argument("--connections", type=int, default=2000, help="CONNECTs per connect run")
    p.add_argument("--connect-concurrency", type=int, default=64, help="handshakes in flight")
    p.add_argument("--idle-devices", type=int, default=10_000, help="idle connections")
    p.add_argument("--settle", type=float, default=2.0, help="wait before memory samples [s]")
    p.add_argument("--stall", type=float, default=15.0, help="abort after no progress [s]")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated keys")
    p.add_argument("--rules", type=Path, default=None, help="rule set (JSON/YAML) of the hub")
    p.add_argument(
        "--points-per-post",
        type=int,
        default=POINTS_PER_POST,
        help="points stored per post (other than 3 with --rules that store less or derive)",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the hub")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto", help="mosquitto binary")
    p.add_argument("--mosquitto-passwd", default="/usr/bin/mosquitto_passwd")
    opts = p.parse_args(argv)
    opts.only = [w.strip() for w in opts.only.split(",") if w.strip()]
    bad = [w for w in opts.only if w not in WORKLOADS]
    if bad or opts.runs < 1 or not 1 <= opts.procs <= opts.devices:
        p.error(f"bad arguments: {bad or 'runs/procs'}")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Provision, then run every selected workload ``--runs`` times; print the tables."""
    opts = parse_args(argv)
    lg.self_check()
    lg.enos_self_check()
    opts.nofile = lg.raise_fd_limit(max(opts.idle_devices, opts.connections) * 2 + 1024)
    rows = [r for r in make_rows() if r.workload in opts.only]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-enos-") as tmp:
        scratch = Path(tmp)
        count = max(
            opts.devices if "posts" in opts.only else 0,
            opts.connections if "connect" in opts.only else 0,
            opts.idle_devices if "memory" in opts.only else 0,
        )
        fleet = provision(scratch, count, opts.seed)
        machine_info(opts, fleet)
        if "connect" in opts.only:
            opts.password_file = scratch / "passwd"
            took = make_password_file(
                opts.mosquitto_passwd, opts.password_file, fleet.logins(opts.connections)
            )
            print(f"passwd  : {opts.connections} users by mosquitto_passwd -b in {took:.1f} s")
        for row in rows:
            row.values = {"hub": []}
            if row.workload == "connect":
                row.values["mosquitto"] = []
        for run in range(opts.runs):
            for workload in opts.only:
                names = ["hub"]
                if workload == "connect":
                    names = ["hub", "mosquitto"] if run % 2 == 0 else ["mosquitto", "hub"]
                for name in names:
                    label = f"run {run + 1} {workload:<8} {name:<10}"
                    result: dict[str, float] | None = None
                    try:
                        with running(name, opts, fleet, scratch) as broker:
                            if workload == "posts":
                                result = bench_posts(broker, opts, fleet)
                            elif workload == "connect":
                                result = bench_connect(broker, opts, fleet)
                            else:
                                result = bench_memory(broker, opts, fleet)
                        if workload == "posts":
                            data_dir = broker.workdir / "data"
                            keys = [dk for dk, _ in fleet.devices[: opts.devices]]
                            stored = count_stored_points(data_dir, fleet.product_key, keys)
                            want = opts.devices * opts.messages * opts.points_per_post
                            if stored != want:
                                raise BenchError(f"{stored} points stored, expected {want}")
                            result["stored"] = stored
                        shutil.rmtree(broker.workdir, ignore_errors=True)
                    except (BenchError, lg.LoadError) as exc:
                        failures += 1
                        print(f"{label} FAILED: {exc}", flush=True)
                        result = None
                    if result is not None:
                        text = ", ".join(f"{k}={v:,.2f}" for k, v in result.items())
                        print(f"{label} {text}", flush=True)
                    for row in rows:
                        if row.workload == workload:
                            value = None if result is None else result.get(row.key)
                            row.values[name].append(value)
        print()
        print_table(rows, opts.runs)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
