"""The stream engine on its real collaborators: a DuckDB store in a temporary directory, the
device-data tap and a simulated clock, on the test's event loop. Points enter as the IoT hub
reports them (``PointStored`` on the tap); derived points come back in the store and on the
tap. The same engine over TCP, inside a lab, is in ``test_streams_lab.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.errors import InvalidArgument, NotFound
from enos_lab.model import ModelCatalog, load_library, model_from_json
from enos_lab.store import TimeSeriesStore
from enos_lab.streams import (
    StreamDefinition,
    StreamEngine,
    Window,
    load_definitions,
    save_definitions,
    window_frame,
)
from enos_lab.tap import PointStored, Tap, TapSubscription

pytestmark = pytest.mark.anyio  # for the parametrized async test

T0 = 1_700_000_100_000  # [ms] a multiple of 5 minutes: 2023-11-14 22:15:00 UTC
MIN = 60_000  # [ms]
PK, SITE_PK = "meters", "sites"


def _point(identifier: str, data_type: str = "DOUBLE") -> dict[str, Any]:
    return {
        "identifier": identifier,
        "name": {"defaultValue": identifier},
        "dataType": data_type,
        "dataDefinition": None,
        "hasQuality": False,
        "signalType": "AI",
        "unit": None,
    }


def _model(model_id: str, **points: str) -> dict[str, Any]:
    return {
        "modelId": model_id,
        "name": {"defaultValue": model_id},
        "attributes": {},
        "measurepoints": {name: _point(name, kind) for name, kind in points.items()},
        "services": {},
        "events": {},
    }


def catalog() -> ModelCatalog:
    models = load_library()
    meter = _model(
        "st_meter", power="DOUBLE", count="INT", label="STRING", power_avg="DOUBLE",
        power_hour_max="DOUBLE", n="INT", total="INT", avg_int="INT",
    )  # fmt: skip
    models.add(model_from_json(meter))
    models.add(model_from_json(_model("st_site", fleet_power="DOUBLE", fleet_n="INT")))
    return models


class Rig:
    """The engine with its store, tap and clock; ``post`` reports a stored point."""

    def __init__(self, engine: StreamEngine, store: TimeSeriesStore, tap: Tap) -> None:
        self.engine, self.store, self.tap = engine, store, tap
        self.clock: SimulatedClock = engine._clock  # type: ignore[assignment]
        self.derived: TapSubscription = tap.subscribe(kinds=PointStored)
        self.devices: set[tuple[str, str]] = set()  # the registered devices (rig() fills it)

    def post(
        self, device: str, time_ms: int, value: Any, *, resume: bool = False, point: str = "power"
    ) -> None:
        self.tap.emit(PointStored(PK, device, point, from_epoch_ms(time_ms), value, None, resume))

    async def results(self, point_id: str) -> list[tuple[str, int, Any]]:
        """(device, time, value) of the derived points of ``point_id`` emitted so far."""
        await self.engine.drained()
        return [
            (e.device_key, int(e.time.timestamp() * 1000), e.value)
            for e in self.derived.drain()
            if isinstance(e, PointStored) and e.point_id == point_id
        ]

    def define(self, name: str = "avg5", **fields: Any) -> StreamDefinition:
        fields.setdefault("model_id", "st_meter")
        fields.setdefault("point_id", "power")
        fields.setdefault("window", Window.tumbling(300))
        fields.setdefault("aggregate", "avg")
        fields.setdefault("output_point", "power_avg")
        definition = StreamDefinition(name=name, **fields)
        self.engine.add(definition)
        return definition


@asynccontextmanager
async def rig(tmp_path: Path, **engine_kwargs: Any) -> AsyncIterator[Rig]:
    # points may run ahead of the lab clock here, which stays at T0 unless a test moves it
    engine_kwargs.setdefault("max_ahead", 30 * 86_400)
    clock = SimulatedClock(from_epoch_ms(T0))
    store = await asyncio.to_thread(TimeSeriesStore, tmp_path / "store", clock=clock)
    tap = Tap()
    products = {PK: "st_meter", SITE_PK: "st_site"}
    devices = {(SITE_PK, "site1"), *((PK, f"m{i}") for i in range(4))}
    engine = StreamEngine(
        store,
        catalog(),
        tap=tap,
        clock=clock,
        model_of=products.get,
        device_exists=lambda pk, dk: (pk, dk) in devices,
        **engine_kwargs,
    )
    running = Rig(engine, store, tap)
    running.devices = devices
    try:
        yield running  # the engine is on the tap while it runs a stream
    finally:
        await engine.aclose()
        await asyncio.to_thread(store.close)


async def test_windows_per_device_are_stored_and_emitted(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define()
        points = [
            (f"m{i}", T0 + k * MIN + i * 1000, 10.0 * i + k) for k in range(11) for i in (1, 2)
        ]
        for device, t, v in points:
            r.post(device, t, v)
        got = await r.results("power_avg")
        # 11 minutes: the windows ending at +5 and +10 min closed, the one of minute 10 is open
        assert got == [
            ("m1", T0 + 5 * MIN, 12.0), ("m2", T0 + 5 * MIN, 22.0),
            ("m1", T0 + 10 * MIN, 17.0), ("m2", T0 + 10 * MIN, 27.0),
        ]  # fmt: skip
        stored = await asyncio.to_thread(r.store.query_points, None, "power_avg")
        assert list(zip(stored["device_key"], stored["value"], strict=True)) == [
            ("m1", 12.0),
            ("m1", 17.0),
            ("m2", 22.0),
            ("m2", 27.0),
        ]
        frame = pd.DataFrame(points, columns=["source", "time", "value"])
        expected = window_frame(frame, Window.tumbling(300), "avg", point_id="power_avg")
        closed = expected[expected["time"] <= from_epoch_ms(T0 + 10 * MIN)]
        assert sorted(zip(closed["key"], closed["value"], strict=True)) == sorted(
            (d, v) for d, _, v in got
        )
        assert r.engine.stats.written == 4 and r.engine.windower_stats("avg5").emitted == 4


async def test_late_points_duplicates_and_disorder_within_the_lateness(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define(lateness=60)
        r.post("m1", T0, 1.0)
        r.post("m1", T0 + 1 * MIN, 2.0)
        r.post("m1", T0 + 1 * MIN, 4.0)  # duplicate: the later value wins
        r.post("m1", T0 + 5 * MIN + 30_000, 100.0)  # watermark 5:30 - 1:00: window still open
        r.post("m1", T0 + 4 * MIN + 50_000, 7.0)  # out of order, within the lateness: counts
        r.post("m1", T0 + 6 * MIN + 10_000, 100.0)  # watermark 5:10: the first window closes
        r.post("m1", T0 + 4 * MIN, 1000.0)  # late: dropped, the result is never revised
        assert await r.results("power_avg") == [("m1", T0 + 5 * MIN, (1.0 + 4.0 + 7.0) / 3)]
        stats = r.engine.windower_stats("avg5")
        assert (stats.points, stats.duplicates, stats.late, stats.emitted) == (5, 1, 1, 1)


async def test_a_device_deleted_gets_no_derived_point_from_its_open_window(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        r.define()
        r.post("m1", T0 + 1 * MIN, 5.0)
        r.post("m2", T0 + 1 * MIN, 6.0)
        r.devices.discard((PK, "m2"))  # deleted while its window is open
        await r.clock.advance_async(6 * 60)  # the clock closes both windows
        assert await r.results("power_avg") == [("m1", T0 + 5 * MIN, 5.0)]
        assert r.engine.stats.deleted_dropped == 1
        stored = await asyncio.to_thread(r.store.query_points, ["m2"], "power_avg", product_key=PK)
        assert stored.empty


async def test_the_clock_closes_the_last_window_of_a_silent_device(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define(lateness=30)
        r.post("m1", T0 + 1 * MIN, 5.0)
        r.post("m1", T0 + 2 * MIN, 7.0)
        await r.clock.advance_async(5 * 60)  # at the window's end; the lateness still runs
        assert await r.results("power_avg") == []
        await r.clock.advance_async(30)  # end + lateness: the timer closes it
        assert await r.results("power_avg") == [("m1", T0 + 5 * MIN, 6.0)]
        r.post("m1", T0 + 3 * MIN, 9.0)  # behind the lab clock's watermark now: late
        await r.clock.advance_async(3600)  # nothing else is open: no more results
        assert await r.results("power_avg") == []
        assert r.engine.windower_stats("avg5").late == 1
        assert r.clock.pending == 0  # no timer left armed


async def test_group_totals_on_the_output_device(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define(
            "fleet", group=True, across="sum", output_device=(SITE_PK, "site1"),
            output_point="fleet_power",
        )  # fmt: skip
        r.define("count", group=True, aggregate="count", output_device=(SITE_PK, "site1"),
                 output_point="fleet_n")  # fmt: skip
        for k in range(5):
            r.post("m1", T0 + k * MIN, 10.0)
            r.post("m2", T0 + k * MIN, 20.0 + k)
            if k < 2:
                r.post("m3", T0 + k * MIN, 1.0)
        r.post("m1", T0 + 5 * MIN, 0.0)
        assert await r.results("fleet_power") == [("site1", T0 + 5 * MIN, 10.0 + 22.0 + 1.0)]
        assert await r.results("fleet_n") == []  # already drained above
        stored = await asyncio.to_thread(r.store.query_points, ["site1"], None, product_key=SITE_PK)
        assert dict(zip(stored["point_id"], stored["value"], strict=True)) == {
            "fleet_power": 33.0,
            "fleet_n": 12,
        }


async def test_a_device_sending_bad_values_harms_no_other(tmp_path: Path) -> None:
    async with rig(tmp_path, max_keys=2, max_ahead=300) as r:
        r.define()
        for k in range(6):
            r.post("m1", T0 + k * MIN, 3.0)
            r.post("m2", T0 + k * MIN, float("nan") if k % 2 else "x")
            r.post("m2", T0 + k * MIN + 1, True)
        for device in ("m3", "m0"):  # m0: a third key, over max_keys (m2 has none)
            r.post(device, T0, 1.0)
        r.post("m1", T0 + 301_000, 1.0)  # the lab clock is at T0: over 5 minutes ahead
        assert await r.results("power_avg") == [("m1", T0 + 5 * MIN, 3.0)]
        assert r.engine.skips(PK, "m2") == 12 and r.engine.skips(PK, "m1") == 1
        assert r.engine.windower_stats("avg5").dropped == 1
        await r.clock.advance_async(600)  # the clock closes the windows still open
        assert await r.results("power_avg") == [
            ("m3", T0 + 5 * MIN, 1.0),
            ("m1", T0 + 10 * MIN, 3.0),
        ]


async def test_a_device_with_a_clock_far_ahead_harms_no_group(tmp_path: Path) -> None:
    async with rig(tmp_path, max_ahead=300) as r:
        r.define(
            "fleet", group=True, across="sum", output_device=(SITE_PK, "site1"),
            output_point="fleet_power",
        )  # fmt: skip
        r.post("m3", T0 + 86_400_000, 1e6)  # a day ahead: would make every other point late
        for k in range(6):
            await r.clock.advance_async(60 if k else 0)
            r.post("m1", T0 + k * MIN, 1.0)
            r.post("m2", T0 + k * MIN, 2.0)
        assert await r.results("fleet_power") == [("site1", T0 + 5 * MIN, 3.0)]
        assert r.engine.skips(PK, "m3") == 1 and r.engine.windower_stats("fleet").late == 0


async def test_resumed_points_feed_no_stream(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define()
        r.post("m1", T0, 1.0, resume=True)
        r.post("m1", T0 + 6 * MIN, 1.0, resume=True)
        assert await r.results("power_avg") == []
        assert r.engine.stats.resumed_skipped == 2 and r.engine.stats.fed == 0


async def test_derived_points_feed_further_streams(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define()
        r.define(
            "hour_max", point_id="power_avg", window=Window.tumbling(3600), aggregate="max",
            output_point="power_hour_max",
        )  # fmt: skip
        for k in range(0, 125, 5):  # a point every 5 minutes for 2 h 5 min
            r.post("m1", T0 + k * MIN, float(k % 60))
        await r.engine.drained()
        assert r.engine.windower_stats("hour_max").points == 24
        # 22:15 + 1:45 = 24:00: the hour 23:00..24:00 is closed by the derived point at 24:00
        hours = await r.results("power_hour_max")
        assert hours == [("m1", T0 + 45 * MIN, 35.0), ("m1", T0 + 105 * MIN, 55.0)]


async def test_integer_outputs_and_sliding_windows(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define("n", aggregate="count", output_point="n", window=Window.sliding(120, 60))
        for k in range(4):
            r.post("m1", T0 + k * MIN, 1.5)
        got = await r.results("n")
        assert got == [("m1", T0 + 1 * MIN, 1), ("m1", T0 + 2 * MIN, 2), ("m1", T0 + 3 * MIN, 2)]
        stored = await asyncio.to_thread(r.store.query_points, ["m1"], "n")
        assert stored["value"].tolist() == [1, 2, 2]
        # the sum of an INT point into a DOUBLE point is stored as a float, into INT as an int
        r.define("as_float", point_id="count", aggregate="sum", output_point="power_avg")
        r.define("as_int", point_id="count", aggregate="sum", output_point="total")
        for k in range(6):
            r.post("m1", T0 + k * MIN, 2, point="count")
        assert await r.results("power_avg") == [("m1", T0 + 5 * MIN, 10.0)]
        stored = await asyncio.to_thread(r.store.query_points, ["m1"], ["power_avg", "total"])
        assert stored["value"].map(type).tolist() == [float, int]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_id": "nope"}, "model_id 'nope' is not a known model"),
        ({"point_id": "temp"}, "point_id 'temp' is not a measurepoint of model 'st_meter'"),
        ({"point_id": "label"}, "point_id 'label' is STRING"),
        ({"output_point": "fleet_power"}, "output_point 'fleet_power' is not a measurepoint"),
        ({"output_point": "avg_int"}, "output_point 'avg_int' is INT"),
        ({"model_id": None, "product_key": "other"}, "product_key 'other' is unknown"),
        ({"model_id": "st_site", "product_key": PK}, "uses model 'st_meter', not model_id"),
        (
            {"group": True, "output_device": (SITE_PK, "gone"), "output_point": "fleet_power"},
            "output_device sites/gone is not registered",
        ),
        (
            {"group": True, "output_device": (SITE_PK, "site1")},
            "output_point 'power_avg' is not a measurepoint of model 'st_site'",
        ),
        ({"output_point": "power"}, "'power' is its own input"),
    ],
)
async def test_definitions_the_models_refuse(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    async with rig(tmp_path) as r:
        with pytest.raises((InvalidArgument, NotFound), match="stream 'bad': ") as caught:
            r.define("bad", **fields)
        assert message in str(caught.value)
        assert r.engine.definitions == ()


async def test_a_cycle_of_streams_is_refused(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.define("a", point_id="power", output_point="power_avg")
        r.define("b", point_id="power_avg", output_point="power_hour_max")
        with pytest.raises(InvalidArgument, match=r"stream 'c': its output 'power' .* cycle"):
            r.define("c", point_id="power_hour_max", output_point="power", aggregate="last")
        # replacing 'a' by a stream outside the chain is fine
        r.define("a", point_id="count", output_point="total", aggregate="sum")
        assert [d.name for d in r.engine.definitions] == ["b", "a"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "no spaces"}, "stream name must be"),
        ({"model_id": None}, "stream 'x': input needs a model_id or a product_key"),
        ({"aggregate": "median"}, "stream 'x': aggregate must be one of"),
        ({"across": "sum"}, "stream 'x': across is only for a group"),
        ({"group": True, "across": "last", "output_device": ("p", "d")}, "across must be one of"),
        ({"group": True}, "stream 'x': output_device must be (product_key, device_key)"),
        ({"output_device": ("p", "d")}, "stream 'x': output_device is only for a group"),
        ({"lateness": -1}, "stream 'x': lateness must be seconds >= 0"),
        ({"device_keys": "m1"}, "stream 'x': device_keys must be a list"),
        ({"device_keys": ["m1", "m1"]}, "stream 'x': device_keys name a device twice"),
        ({"window": 300}, "stream 'x': window must be a Window"),
    ],
)
def test_definitions_checked_when_made(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "name": "x", "model_id": "st_meter", "point_id": "power", "window": Window.tumbling(60),
        "aggregate": "avg", "output_point": "power_avg",
    }  # fmt: skip
    with pytest.raises(InvalidArgument) as caught:
        StreamDefinition(**{**base, **fields})
    assert message in str(caught.value)


def test_definitions_round_trip_through_json(tmp_path: Path) -> None:
    definitions = [
        StreamDefinition(
            name="fleet", model_id="st_meter", point_id="power", window=Window.sliding(600, 300),
            aggregate="avg", group=True, across="sum", output_device=(SITE_PK, "site1"),
            output_point="fleet_power", lateness=30, device_keys=("m1", "m2"), description="d",
        ),
        StreamDefinition(
            name="avg5", product_key=PK, point_id="power", window=Window.tumbling(300),
            aggregate="avg", output_point="power_avg",
        ),
    ]  # fmt: skip
    path = tmp_path / "streams.json"
    save_definitions(path, definitions)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_definitions(path) == definitions
    assert load_definitions(tmp_path / "none.json") == []
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match="not JSON"):
        load_definitions(path)


async def test_the_engine_is_on_the_tap_only_while_it_runs_a_stream(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.derived.close()  # the rig's own reader
        assert not r.tap.wants(PointStored)  # no stream: the IoT hub builds no event for it
        r.define()
        assert r.tap.wants(PointStored)
        assert r.engine.remove("avg5") and not r.engine.remove("avg5")
        assert not r.tap.wants(PointStored)
