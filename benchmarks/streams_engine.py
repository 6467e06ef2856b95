"""Throughput of the stream engine: stored points fed to its tap callback, derived points written.

A real store in a temporary directory, a tap and a simulated clock; ``--devices`` devices post
``active_power`` once a minute of event time for ``--minutes`` minutes, given to the engine as
the IoT hub reports them (``PointStored`` on the tap, in batches of one minute of the fleet).
Runs with no stream, with the per-device 5-minute average, and with that plus the fleet total
(a group stream) and a 1-hour max over the derived averages (a chained stream). Prints points/s
through the callback (derived points stored and emitted included: the time ends when the engine
has drained), the median of ``--runs``.

Run: ``.venv/bin/python benchmarks/streams_engine.py [--devices 1000] [--minutes 120] [--runs 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.model import load_library, model_from_json
from enos_lab.store import TimeSeriesStore
from enos_lab.streams import StreamDefinition, StreamEngine, Window
from enos_lab.tap import PointStored, Tap, TapEvent

T0 = 1_700_000_100_000  # [ms]


def _point(identifier: str) -> dict[str, Any]:
    return {"identifier": identifier, "dataType": "DOUBLE", "name": {"defaultValue": identifier}}


def _models() -> Any:
    models = load_library()
    inverter = {
        "modelId": "bench_inverter",
        "name": {"defaultValue": "bench inverter"},
        "parentModelId": "pv_inverter",
        "measurepoints": {p: _point(p) for p in ("active_power_avg_5min", "power_max_1h")},
    }
    site = {
        "modelId": "bench_site",
        "name": {"defaultValue": "bench site"},
        "measurepoints": {"fleet_power_5min": _point("fleet_power_5min")},
    }
    models.add(model_from_json(inverter))
    models.add(model_from_json(site))
    return models


def _streams(level: int) -> list[StreamDefinition]:
    five = Window.tumbling(300)
    out = [
        StreamDefinition("avg5", "active_power", five, "avg", "active_power_avg_5min",
                         model_id="bench_inverter"),
        StreamDefinition("fleet", "active_power", five, "avg", "fleet_power_5min",
                         model_id="bench_inverter", group=True, across="sum",
                         output_device=("site", "site1")),
        StreamDefinition("max1h", "active_power_avg_5min", Window.tumbling(3600), "max",
                         "power_max_1h", model_id="bench_inverter"),
    ]  # fmt: skip
    return out[: 0 if level == 0 else 1 if level == 1 else 3]


async def run_once(devices: int, minutes: int, level: int) -> tuple[float, int]:
    """One run; returns (points/s, derived points written)."""
    clock = SimulatedClock(datetime.fromtimestamp(T0 / 1000, UTC))
    with tempfile.TemporaryDirectory() as tmp:
        store = await asyncio.to_thread(TimeSeriesStore, Path(tmp), clock=clock)
        tap = Tap()
        models = {"inv": "bench_inverter", "site": "bench_site"}
        engine = StreamEngine(
            store, _models(), tap=tap, clock=clock, model_of=models.get,
            device_exists=lambda pk, dk: pk == "site", max_ahead=minutes * 60,
        )  # fmt: skip
        for definition in _streams(level):
            engine.add(definition)
        batches: list[list[TapEvent]] = [
            [
                PointStored("inv", f"inv{d:05d}", "active_power", from_epoch_ms(T0 + m * 60_000),
                            40.0 + (d * 7 + m * 13) % 11)
                for d in range(devices)
            ]
            for m in range(minutes)
        ]  # fmt: skip
        start = time.perf_counter()
        for batch in batches:
            tap.emit_many(batch)
            await asyncio.sleep(0)  # one batch per loop iteration, as the IoT hub's commits
        await engine.drained()
        elapsed = time.perf_counter() - start
        written = engine.stats.written
        await engine.aclose()
        await asyncio.to_thread(store.close)
    return devices * minutes / elapsed, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    names = ("no stream", "per-device 5-min avg", "avg + fleet total + chained 1-h max")
    print(f"{args.devices} devices x {args.minutes} minutes = {args.devices * args.minutes} points")
    for level, name in enumerate(names):
        runs = [asyncio.run(run_once(args.devices, args.minutes, level)) for _ in range(args.runs)]
        rate = statistics.median(r[0] for r in runs)
        print(f"{name:40s} {rate:12,.0f} points/s  derived written: {runs[0][1]:,}")


if __name__ == "__main__":
    main()
