"""Stream computing in a real lab: inverters of the official EnOS SDK post over TCP (port 0) on a
simulated clock, the lab's stream engine writes derived points to the store, and the facade
defines, lists, counts, removes and keeps the streams across a restart."""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, SdkDevice, running_lab, sdk_device

from enos_lab import Lab
from enos_lab.alerts import AlertEngine, AlertRecords, AlertRule
from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.errors import InvalidArgument, NotFound
from enos_lab.lab import STREAM_COLUMNS
from enos_lab.streams import StreamDefinition, Window, window_frame
from enos_lab.tap import PointStored

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_100_000  # [ms] a multiple of 5 minutes: 2023-11-14 22:15:00 UTC
MIN = 60_000  # [ms]


def _point(identifier: str, name: str) -> dict[str, Any]:
    return {
        "identifier": identifier,
        "name": {"defaultValue": name},
        "dataType": "DOUBLE",
        "dataDefinition": None,
        "hasQuality": False,
        "signalType": "AI",
        "unit": {"unitId": "kW", "multiplier": "ONE"},
    }


# The library's pv_inverter with the derived point added (a child model), and a site model.
INVERTER_MODEL: dict[str, Any] = {
    "modelId": "pv_inverter_5min",
    "name": {"defaultValue": "PV inverter with 5-minute power"},
    "parentModelId": "pv_inverter",
    "measurepoints": {
        "active_power_avg_5min": _point("active_power_avg_5min", "Active power, 5-min average")
    },
}
SITE_MODEL: dict[str, Any] = {
    "modelId": "pv_site",
    "name": {"defaultValue": "PV site"},
    "measurepoints": {"fleet_power_5min": _point("fleet_power_5min", "Fleet power, 5-min")},
}


def fleet_lab(lab: Lab, inverters: int) -> tuple[str, str, list[Any]]:
    """The models, an inverter product with ``inverters`` devices and a site device."""
    lab.add_model(INVERTER_MODEL)
    lab.add_model(SITE_MODEL)
    inverter_pk = lab.create_product("Inverters", model_id="pv_inverter_5min").product_key
    site_pk = lab.create_product("Sites", model_id="pv_site").product_key
    lab.register_device(site_pk, device_key="site1")
    devices = [lab.register_device(inverter_pk, device_key=f"inv{i}") for i in range(inverters)]
    return inverter_pk, site_pk, devices


def define_example(lab: Lab, inverter_pk: str, site_pk: str) -> None:
    """The shipped example: 5-minute average power per inverter and the fleet total."""
    lab.define_stream(
        name="inverter_power_5min", model_id="pv_inverter_5min", point_id="active_power",
        size=300, aggregate="avg", output_point="active_power_avg_5min", lateness=30,
    )  # fmt: skip
    lab.define_stream(
        name="fleet_power_5min", product_key=inverter_pk, point_id="active_power", size=300,
        aggregate="avg", group=True, across="sum", output_device=(site_pk, "site1"),
        output_point="fleet_power_5min", lateness=30,
    )  # fmt: skip


def post(sdk: SdkDevice, time_ms: int, **points: Any) -> None:
    request = MeasurepointPostRequest.builder().add_measurepoints(points)
    reply = sdk.publish(request.set_timestamp(time_ms).build())
    assert reply.get_code() == 200, reply.get_message()


def test_five_minute_power_per_inverter_and_the_fleet_total(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    with running_lab(tmp_path / "lab", seed=1, clock=clock) as lab:
        inverter_pk, site_pk, devices = fleet_lab(lab, 3)
        define_example(lab, inverter_pk, site_pk)
        with ExitStack() as stack:
            derived = stack.enter_context(lab.subscribe(PointStored, device_key="site1"))
            sdks = []
            for device in devices:
                secret = device.device_secret
                sdk = stack.enter_context(
                    sdk_device(lab, inverter_pk, device.device_key, device_secret=secret)
                )
                sdk.connect()
                sdks.append(sdk)
            for minute in range(15):
                for i, sdk in enumerate(sdks):
                    if i == 2 and minute >= 12:
                        continue  # inv2 goes quiet: the lab clock closes its last window
                    power = 40.0 + 7.5 * i + (minute * 13 + i * 5) % 11
                    post(sdk, clock.time_ms() + i * 1000, active_power=power)
                clock.advance(60)
            clock.advance(60)  # 22:31: past 22:30 + 30 s, the last windows close on the clock
            fleet = [derived.get(timeout=WAIT) for _ in range(3)]
        assert [e.time for e in fleet] == [from_epoch_ms(T0 + k * 5 * MIN) for k in (1, 2, 3)]

        raw = lab.store.query_points(None, "active_power", product_key=inverter_pk)
        assert len(raw) == 15 * 3 - 3
        frame = raw.rename(columns={"device_key": "source"})
        window = Window.tumbling(300)
        per_inverter = window_frame(frame, window, "avg", point_id="active_power_avg_5min")
        stored = lab.store.query_points(None, "active_power_avg_5min", product_key=inverter_pk)
        assert len(stored) == len(per_inverter) == 9
        expected = {
            (key, time): value
            for key, time, value in per_inverter[["key", "time", "value"]].itertuples(index=False)
        }
        got = {
            (key, time): value
            for key, time, value in stored[["device_key", "time", "value"]].itertuples(index=False)
        }
        assert got == pytest.approx(expected)

        total = window_frame(
            frame, window, "avg", point_id="fleet_power_5min", key=lambda _: "fleet", across="sum"
        )
        site = lab.store.query_points(["site1"], "fleet_power_5min", product_key=site_pk)
        assert site["time"].tolist() == total["time"].tolist()
        assert site["value"].tolist() == pytest.approx(total["value"].tolist())
        assert [e.value for e in fleet] == pytest.approx(total["value"].tolist())

        stats = lab.stream_stats()
        assert stats.set_index("name").loc["inverter_power_5min", "emitted"] == 9
        assert stats.set_index("name").loc["fleet_power_5min", "points"] == 42
        per_key = lab.stream_stats("inverter_power_5min", by_key=True)
        assert per_key["device_key"].tolist() == ["inv0", "inv1", "inv2"]
        assert per_key["points"].tolist() == [15, 15, 12] and per_key["late"].sum() == 0


def test_an_alert_rule_fires_on_a_derived_point(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    with (
        running_lab(tmp_path / "lab", seed=5, clock=clock) as lab,
        AlertRecords(tmp_path / "alerts.db", clock=clock) as records,
    ):
        inverter_pk, site_pk, devices = fleet_lab(lab, 2)
        define_example(lab, inverter_pk, site_pk)
        engine = AlertEngine(
            records, lab.models, clock=clock, model_of=lambda pk: lab.product(pk).model_id
        )
        rule = "${fleet_power_5min} > 100"
        engine.add_rule(
            AlertRule(rule_id="fleet_high", model_id="pv_site", measurepoint="fleet_power_5min",
                      condition=rule)
        )  # fmt: skip

        async def attach() -> Any:  # before the test's reader: it has seen what the reader sees
            return lab.tap.add_callback(engine.on_event, kinds=PointStored)

        handle = lab.run(attach())
        with ExitStack() as stack:
            derived = stack.enter_context(lab.subscribe(PointStored, device_key="site1"))
            sdks = []
            for device in devices:
                secret = device.device_secret
                sdk = stack.enter_context(
                    sdk_device(lab, inverter_pk, device.device_key, device_secret=secret)
                )
                sdk.connect()
                sdks.append(sdk)
            for minute in range(10):
                for i, sdk in enumerate(sdks):
                    power = 40.0 if minute < 5 else 55.0  # the fleet: 80 kW, then 110 kW
                    post(sdk, clock.time_ms() + i, active_power=power)
                clock.advance(60)
            first = derived.get(timeout=WAIT)
            assert first.value == pytest.approx(80.0) and records.active().empty
            clock.advance(60)  # 22:26: past 22:25 + 30 s
            second = derived.get(timeout=WAIT)
            assert second.value == pytest.approx(110.0)
            active = records.active()
            assert active["rule_id"].tolist() == ["fleet_high"]
            assert active["device_key"].tolist() == ["site1"]
            assert records.get(active["event_id"].iloc[0]).occur_time == second.time

        async def detach() -> None:
            handle.cancel()
            engine.close()

        lab.run(detach())


def test_streams_are_kept_with_the_lab(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=2) as lab:
        inverter_pk, site_pk, _ = fleet_lab(lab, 1)
        define_example(lab, inverter_pk, site_pk)
        lab.define_stream(
            StreamDefinition(
                name="spare", model_id="pv_inverter_5min", point_id="dc_voltage",
                window=Window.tumbling(60), aggregate="max", output_point="active_power_avg_5min",
            )
        )  # fmt: skip
        lab.remove_stream("spare")
        before = lab.streams()
    with running_lab(tmp_path / "lab", seed=2) as lab:
        after = lab.streams()
        pd.testing.assert_frame_equal(after, before)
        assert after["name"].tolist() == ["inverter_power_5min", "fleet_power_5min"]
        assert after.loc[1, "output_device_key"] == "site1"
        assert after.loc[0, "window_size"] == pd.Timedelta(minutes=5)
        assert lab.stream_stats()["points"].tolist() == [0, 0]
        lab.remove_stream("fleet_power_5min")
    (tmp_path / "lab" / "streams.json").write_text("[broken")
    with pytest.raises(InvalidArgument, match=r"streams\.json: not JSON"):
        Lab(tmp_path / "lab", port=0).start()


def test_the_facade_refuses_bad_streams(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=3) as lab:
        inverter_pk, site_pk, _ = fleet_lab(lab, 1)
        define_example(lab, inverter_pk, site_pk)
        with pytest.raises(InvalidArgument, match=r"stream 'loop': its output .* cycle"):
            lab.define_stream(
                name="loop", model_id="pv_inverter_5min", point_id="active_power_avg_5min",
                size=900, aggregate="max", output_point="active_power",
            )  # fmt: skip
        with pytest.raises(InvalidArgument, match="stream 'x': size"):
            lab.define_stream(name="x", model_id="pv_inverter_5min", point_id="active_power")
        with pytest.raises(InvalidArgument, match="point_id 'phase_voltage' is ARRAY"):
            lab.define_stream(
                name="x", model_id="pv_inverter_5min", point_id="phase_voltage", size=60,
                output_point="active_power_avg_5min",
            )  # fmt: skip
        with pytest.raises(InvalidArgument, match="output_point 'fleet_power_5min' is not a"):
            lab.define_stream(
                name="x", model_id="pv_inverter", point_id="active_power", size=60,
                output_point="fleet_power_5min",
            )  # fmt: skip
        with pytest.raises(NotFound, match="no stream named 'nope'"):
            lab.remove_stream("nope")
        assert lab.streams()["name"].tolist() == ["inverter_power_5min", "fleet_power_5min"]
        assert list(lab.streams().columns) == list(STREAM_COLUMNS)
        assert "output_point" in str(inspect.signature(Lab.define_stream))
        assert "output_point" in str(inspect.signature(Lab.adefine_stream))


def test_an_anonymous_lab_has_no_streams(tmp_path: Path) -> None:
    with (
        running_lab(tmp_path / "lab", seed=4, anonymous=True) as lab,
        pytest.raises(InvalidArgument, match="streams need the IoT hub services"),
    ):
        lab.streams()
