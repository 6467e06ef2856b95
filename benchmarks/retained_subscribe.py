"""Cost of finding the retained messages for one SUBSCRIBE: the indexed store against a scan.

Builds ``--devices`` x ``--points`` retained messages (default 10,000 x 5 = 50,000) on EnOS-like
topics ``/sys/pk{d % 10}/dev{d}/thing/property/p{p}``, once in a :class:`RetainedStore` and once
in a plain ``dict`` (topic -> (message, time stored)) scanned with ``topic_matches`` for every
SUBSCRIBE (what the hub did before the store). Then times, as medians of ``--runs`` runs:

- a narrow filter, one device's topics (``/sys/pk4/dev01234/#``, 5 matches);
- a one-topic filter (``/sys/pk4/dev01234/thing/property/p3``, 1 match);
- a wide filter, one point of every device of a product (``/sys/pk4/+/thing/property/p0``);
- storing a retained message (replacing one of the 50,000), and memory per retained message.

Both sides must find the same topics; the script exits 1 if they do not.

Run: ``.venv/bin/python benchmarks/retained_subscribe.py [--devices 10000] [--points 5] [--runs 7]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from enos_lab.hub import Message
from enos_lab.hub._retained import RetainedStore
from enos_lab.mqtt import topic_matches

_Scan = dict[str, tuple[Message, float]]


def timed(fn: Callable[[], object], runs: int, min_time: float = 0.05) -> float:
    """Median time of one call of ``fn`` [s] over ``runs`` runs of at least ``min_time`` each."""
    reps = 1
    while True:  # calibrate the calls per run
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if time.perf_counter() - t0 >= min_time or reps >= 1 << 20:
            break
        reps *= 4
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


def scan(retained: _Scan, topic_filter: str, now: float) -> list[tuple[Message, float]]:
    """The scan the hub did per SUBSCRIBE: every retained topic through ``topic_matches``."""
    out = []
    for topic, (message, stored) in list(retained.items()):
        if not topic_matches(topic_filter, topic):
            continue
        expiry = message.properties.message_expiry_interval
        if expiry is not None and stored + expiry <= now:
            del retained[topic]
            continue
        out.append((message, stored))
    return out


def build(devices: int, points: int) -> tuple[list[Message], list[str]]:
    """The retained messages and their owners (device keys)."""
    messages, owners = [], []
    for d in range(devices):
        for p in range(points):
            topic = f"/sys/pk{d % 10}/dev{d:05d}/thing/property/p{p}"
            messages.append(Message(topic, b'{"value": 21.5}', 1, True))
            owners.append(f"dev{d:05d}")
    return messages, owners


def main() -> int:
    """Build, time, print the table; 1 if the two sides disagree."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=5, help="retained topics per device")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    messages, owners = build(args.devices, args.points)
    n = len(messages)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = RetainedStore(
        max_messages=n, max_bytes=1 << 40, max_messages_per_owner=n, max_bytes_per_owner=1 << 40
    )
    for message, owner in zip(messages, owners, strict=True):
        assert store.store(message, owner, 0.0)
    store_mem = tracemalloc.get_traced_memory()[0] - before
    before = tracemalloc.get_traced_memory()[0]
    retained: _Scan = {m.topic: (m, 0.0) for m in messages}
    scan_mem = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    device = min(1234, args.devices - 1)
    prefix = f"/sys/pk{device % 10}/dev{device:05d}"
    filters = [
        ("narrow: one device's topics", f"{prefix}/#"),
        ("one topic", f"{prefix}/thing/property/p{args.points - 1}"),
        (
            "wide: one point of each device of a product",
            f"/sys/pk{device % 10}/+/thing/property/p0",
        ),
    ]
    rows = []
    failed = False
    for label, topic_filter in filters:
        got = {m.topic for m, _t in store.matching(topic_filter, 1.0)}
        expected = {m.topic for m, _t in scan(retained, topic_filter, 1.0)}
        if got != expected:
            print(f"FAIL {topic_filter}: store {len(got)} topics, scan {len(expected)}")
            failed = True
        visited = store.nodes_visited
        store.matching(topic_filter, 1.0)
        visited = store.nodes_visited - visited
        scan_s = timed(lambda f=topic_filter: scan(retained, f, 1.0), args.runs)
        store_s = timed(lambda f=topic_filter: store.matching(f, 1.0), args.runs)
        rows.append((f"{label} ({len(got):,} matches, {visited:,} nodes)", scan_s, store_s))

    replacement = Message(messages[0].topic, b'{"value": 22.0}', 1, True)
    rows.append(
        (
            "store one retained message (replace)",
            timed(lambda: retained.__setitem__(replacement.topic, (replacement, 2.0)), args.runs),
            timed(lambda: store.store(replacement, owners[0], 2.0), args.runs),
        )
    )

    print(f"{n:,} retained messages ({args.devices:,} devices x {args.points} topics)")
    print(f"Python {sys.version.split()[0]}; medians of {args.runs} runs")
    print()
    print(f"{'operation':<70} {'scan [us]':>12} {'store [us]':>11} {'speed-up':>9}")
    for label, scan_s, store_s in rows:
        speed_up = scan_s / store_s
        print(f"{label:<70} {scan_s * 1e6:>12,.1f} {store_s * 1e6:>11,.1f} {speed_up:>8.1f}x")
    print(
        f"{'memory per retained message [bytes]':<70} {scan_mem / n:>12,.0f} "
        f"{store_mem / n:>11,.0f}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
