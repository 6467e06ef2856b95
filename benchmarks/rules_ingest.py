"""Ingest with rules and alert rules at work, and the time from a post to its alert.

Usage::

    python benchmarks/rules_ingest.py [--runs 5] [--only ingest,latency]
        [--devices 100] [--messages 300] [--alert-rules 100] [--rules FILE] [--alerts 1000]

``ingest``
    The posts workload of ``enos_devices.py`` (``--devices`` authenticated connections posting
    ``--messages`` ``thing.measurepoint.post`` requests each at QoS 1, three points of the
    library model ``energy_meter``, to a ``python -m enos_lab serve`` process), on two data
    directories provisioned alike but for their rules: ``plain`` has none (the default rule
    set: store everything); ``rules`` keeps ``--alert-rules`` alert rules on the model
    (``alert_rules.json``, see :func:`alert_rules`) and the rule engine's rule set ``--rules``
    (``rules.json``; default ``rules_100.yaml``: 100 rules, three of which meet every post:
    a conditional store, a derived point, a republish), both loaded by the lab at start. The
    two take turns within a run, alternating which goes first; the ratio rules/plain of each
    run compares two measurements taken seconds apart. Every post must be answered 200 and
    every posted point stored, in both.
``latency``
    In one process: a lab (``Lab(port=0)``) with one alert rule (``${active_power} > 500``,
    no delay) and ten devices of the lab's device SDK that post, in turn, a value above and
    below the threshold, so that every post opens or recovers an alert. The time from just
    before a post is sent to the :class:`~enos_lab.tap.AlertChanged` it causes, read from a
    tap subscription in the posting thread. ``--alerts`` posts, paced at ``--rate`` per
    second; p50 and p99 over them.

Every wait is bounded; processes are stopped by PID. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _loadgen as lg
from enos_devices import (
    MODEL_ID,
    POINTS_PER_POST,
    Fleet,
    bench_posts,
    provision,
    running,
)
from mqtt_broker import BenchError

WORKLOADS = ("ingest", "latency")
NUMBER_POINTS = (
    "active_power",
    "reactive_power",
    "apparent_power",
    "power_factor",
    "frequency",
    "import_energy",
    "export_energy",
)


def alert_rules(count: int) -> list[object]:
    """``count`` alert rules on energy_meter, the shapes users write, spread over its number
    points (the posts carry active_power, reactive_power and frequency, so about three in
    seven rules meet each post's points):

    - thresholds on a number (``${active_power} > 2500``), most never met by the posts;
    - thresholds on a device attribute (``${active_power} > ${ct_ratio} * 1``-like: the
      attribute ``ct_ratio`` is set on every device);
    - conditions that are not one comparison (``${frequency} < 49.5 or ${frequency} > 50.5``),
      evaluated point by point;
    - a delay (60 s) or hysteresis on some;
    - two rules that every device meets (``${frequency} > 50``, ``${reactive_power} > 90``):
      each device has an active alert from its first post on, so its points of those rules
      are checked for recovery.
    """
    from enos_lab.alerts import AlertRule

    rules: list[object] = []
    for i in range(count):
        point = NUMBER_POINTS[i % len(NUMBER_POINTS)]
        kind = i % 5
        extra: dict[str, object] = {}
        if i == 0:
            condition = "${frequency} > 50"
        elif i == 1:
            condition = "${reactive_power} > 90"
        elif kind == 0:
            condition = f"${{{point}}} > {2_500 + i}"
        elif kind == 1:
            condition = f"${{{point}}} > ${{ct_ratio}}"
        elif kind == 2:
            condition = f"${{{point}}} < -{i} or ${{{point}}} > {5_000 + i}"
        elif kind == 3:
            condition = f"${{{point}}} >= {3_000 + i}"
            extra["delay"] = 60
        else:
            condition = f"${{{point}}} > {4_000 + i}"
            extra["recover_condition"] = f"${{{point}}} < {3_500 + i}"
        if i == 0:
            point = "frequency"
        elif i == 1:
            point = "reactive_power"
        rules.append(
            AlertRule(
                rule_id=f"bench-{i:03d}",
                model_id=MODEL_ID,
                measurepoint=point,
                condition=condition,
                **extra,  # type: ignore[arg-type]
            )
        )
    return rules


def provision_rules(fleet: Fleet, workdir: Path, opts: argparse.Namespace) -> Fleet:
    """A copy of the fleet's template with attributes on every device and the rules kept."""
    from enos_lab.alerts import RULES_FILE, RuleEntry, RuleFile
    from enos_lab.lab import REGISTRY_FILE
    from enos_lab.registry import Registry

    template = workdir / "template-rules"
    shutil.copytree(fleet.template, template)
    registry = Registry(template / REGISTRY_FILE)
    try:
        for dk, _ in fleet.devices:
            registry.update_attributes(fleet.product_key, dk, {"ct_ratio": 10_000.0})
    finally:
        registry.close()
    entries = [RuleEntry(rule) for rule in alert_rules(opts.alert_rules)]  # type: ignore[arg-type]
    RuleFile(template / RULES_FILE).save(entries)
    if opts.rules is not None:  # the rule engine's rule set, read when the hub starts
        from enos_lab.rules import load_rules, write_rule_set

        write_rule_set(template, load_rules(opts.rules))
    return Fleet(template, fleet.product_key, fleet.devices, fleet.seconds)


def count_posted_points(data_dir: Path, product_key: str, device_keys: list[str]) -> int:
    """The posted points stored for these devices (derived points aside), read from the data
    directory after the hub stopped."""
    from enos_lab.store import TimeSeriesStore

    store = TimeSeriesStore(data_dir)
    try:
        posted = ["active_power", "reactive_power", "frequency"]
        return len(store.query_points(device_keys, posted, product_key=product_key))
    finally:
        store.close()


def run_ingest(opts: argparse.Namespace, scratch: Path) -> tuple[list[float], list[float]]:
    """The posts workload on both templates, ``--runs`` times; rates per run."""
    fleet = provision(scratch, opts.devices, opts.seed)
    fleets = {"plain": fleet, "rules": provision_rules(fleet, scratch, opts)}
    rates: dict[str, list[float]] = {"plain": [], "rules": []}
    keys = [dk for dk, _ in fleet.devices[: opts.devices]]
    for run in range(opts.runs):
        order = ["plain", "rules"] if run % 2 == 0 else ["rules", "plain"]
        for name in order:
            with running("hub", opts, fleets[name], scratch) as broker:
                result = bench_posts(broker, opts, fleets[name])
            stored = count_posted_points(broker.workdir / "data", fleet.product_key, keys)
            want = opts.devices * opts.messages * POINTS_PER_POST
            if stored != want:
                raise BenchError(f"{name}: {stored} points stored, expected {want}")
            shutil.rmtree(broker.workdir, ignore_errors=True)
            rates[name].append(result["rate"])
            print(
                f"run {run + 1} ingest {name:<6} rate={result['rate']:,.0f} msg/s "
                f"hub_cpu={result['hub_cpu']:.2f}",
                flush=True,
            )
    return rates["plain"], rates["rules"]


async def _latency(opts: argparse.Namespace, data_dir: Path) -> list[float]:
    from enos_lab import AlertChanged, AlertRule, Lab
    from enos_lab.device import DeviceClient

    lab = Lab(data_dir, port=0, rng=random.Random(opts.seed))
    await lab.astart()
    try:
        pk = (await lab.acreate_product("Bench meter", model_id=MODEL_ID)).product_key
        rule = AlertRule(
            rule_id="bench-latency",
            model_id=MODEL_ID,
            measurepoint="active_power",
            condition="${active_power} > 500",
        )
        await lab.aadd_alert_rule(rule)
        devices = [await lab.aregister_device(pk, device_key=f"lat{i:02d}") for i in range(10)]
        clients = [
            DeviceClient(lab.host, lab.port, pk, d.device_key, d.device_secret) for d in devices
        ]
        for client in clients:
            await client.connect()
        samples: list[float] = []
        with lab.subscribe(kinds=AlertChanged) as changes:
            period = 1 / opts.rate
            next_at = time.perf_counter()
            for n in range(opts.alerts):
                client = clients[n % len(clients)]
                high = (n // len(clients)) % 2 == 0  # each device: above, below, above ...
                sent = time.perf_counter()
                await client.post_measurepoints({"active_power": 600.0 if high else 100.0})
                async with asyncio.timeout(10):
                    event = await changes.aget()
                got = time.perf_counter()
                assert isinstance(event, AlertChanged)
                if event.device_key != client.device_key:
                    raise BenchError(f"alert of {event.device_key}, expected {client.device_key}")
                samples.append((got - sent) * 1000)
                next_at += period
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        for client in clients:
            await client.disconnect()
        return samples
    finally:
        await lab.astop()


def run_latency(opts: argparse.Namespace, scratch: Path) -> list[tuple[float, float]]:
    """Post -> alert latency, ``--runs`` times: (p50, p99) per run. [ms]"""
    out = []
    for run in range(opts.runs):
        samples = asyncio.run(_latency(opts, scratch / f"latency-{run}"))
        samples.sort()
        p50 = statistics.median(samples)
        p99 = samples[min(len(samples) - 1, round(0.99 * len(samples)) - 1)]
        out.append((p50, p99))
        print(f"run {run + 1} latency p50={p50:.2f} ms p99={p99:.2f} ms", flush=True)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs per workload (>= 3 for medians)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    p.add_argument("--devices", type=int, default=100, help="posting devices (connections)")
    p.add_argument("--messages", type=int, default=300, help="posts per device")
    p.add_argument("--window", type=int, default=20, help="QoS 1 in flight per device")
    p.add_argument("--reply-qos", type=int, default=1, choices=(0, 1), help="SDK uses 1")
    p.add_argument("--procs", type=int, default=1, help="load generator processes for posts")
    p.add_argument("--alert-rules", type=int, default=100, help="alert rules in force")
    p.add_argument(
        "--rules",
        type=Path,
        default=Path(__file__).resolve().parent / "rules_100.yaml",
        help="the rule engine's rule set (JSON/YAML) in the data directory with the rules; "
        "'' for none",
    )
    p.add_argument("--alerts", type=int, default=1000, help="posts (alerts) per latency run")
    p.add_argument("--rate", type=float, default=100.0, help="latency posts per second")
    p.add_argument("--stall", type=float, default=15.0, help="abort after no progress [s]")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated keys")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the hub")
    opts = p.parse_args(argv)
    opts.only = [w.strip() for w in opts.only.split(",") if w.strip()]
    if opts.rules is not None and not str(opts.rules).strip(". "):
        opts.rules = None
    bad = [w for w in opts.only if w not in WORKLOADS]
    if bad or opts.runs < 1 or not 1 <= opts.procs <= opts.devices:
        p.error(f"bad arguments: {bad or 'runs/procs'}")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the selected workloads; print medians, same-run ratios and targets."""
    opts = parse_args(argv)
    lg.self_check()
    lg.enos_self_check()
    failures = 0
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        scratch = Path(tmp)
        if "ingest" in opts.only:
            try:
                plain, rules = run_ingest(opts, scratch)
                ratios = [r / p for p, r in zip(plain, rules, strict=True)]
                ratio = statistics.median(ratios)
                lines += [
                    f"ingest without rules  {statistics.median(plain):>10,.0f} msg/s",
                    f"ingest with the rules  {statistics.median(rules):>9,.0f} msg/s "
                    f"({opts.alert_rules} alert rules, rule set "
                    f"{opts.rules.name if opts.rules else 'default'})",
                    f"  ratio with/without (median of runs) {ratio:.2f}  target >= 0.80  "
                    f"{'yes' if ratio >= 0.80 else 'NO'}",
                    "  per run: " + ", ".join(f"{x:.2f}" for x in ratios),
                ]
            except (BenchError, lg.LoadError) as exc:
                failures += 1
                lines.append(f"ingest FAILED: {exc}")
        if "latency" in opts.only:
            try:
                runs = run_latency(opts, scratch)
                lines += [
                    f"post -> alert p50 {statistics.median(r[0] for r in runs):.2f} ms, "
                    f"p99 {statistics.median(r[1] for r in runs):.2f} ms (medians of runs)",
                    "  per run (p50/p99): " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in runs),
                ]
            except BenchError as exc:
                failures += 1
                lines.append(f"latency FAILED: {exc}")
    print()
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
