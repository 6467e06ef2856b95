"""The alert engine on a real lab: devices of the official EnOS SDK post over TCP (port 0), the
engine takes the tap's events on the lab's loop and the lab's simulated clock drives its delay
timer; alerts land in real SQLite records."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from enos.message.upstream.resume.MeasurepointResumeRequest import MeasurepointResumeRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, SdkDevice, running_lab, sdk_device, sdk_product

from enos_lab import Lab
from enos_lab.alerts import AlertEngine, AlertRecords, AlertRule
from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.errors import ExpressionError
from enos_lab.tap import PointStored, PresenceChanged, TapEvent

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_000_000  # [ms] the lab clock's start (2023-11-14 22:13:20 UTC)


class Harness:
    """A lab on a simulated clock with the engine attached to its tap, and a way to wait
    until the engine has taken a number of events."""

    def __init__(self, lab: Lab, engine: AlertEngine, records: AlertRecords, pk: str) -> None:
        self.lab, self.engine, self.records, self.pk = lab, engine, records, pk
        self.clock = lab.clock
        assert isinstance(self.clock, SimulatedClock)
        self._seen = threading.Condition()
        self._count = 0

    def on_event(self, event: TapEvent) -> None:  # on the lab's loop
        self.engine.on_event(event)
        with self._seen:
            self._count += 1
            self._seen.notify_all()

    def wait_events(self, count: int) -> None:
        """Wait until the engine has taken ``count`` events in all."""
        with self._seen:
            assert self._seen.wait_for(lambda: self._count >= count, WAIT), self._count

    def device(self, device_key: str, **attributes: Any) -> Any:
        device = self.lab.register_device(self.pk, device_key=device_key)
        if attributes:
            self.lab.registry.update_attributes(self.pk, device_key, attributes)
        return device

    def post(self, sdk: SdkDevice, **points: Any) -> None:
        request = MeasurepointPostRequest.builder().add_measurepoints(points)
        reply = sdk.publish(request.set_timestamp(self.clock.time_ms()).build())
        assert reply.get_code() == 200, reply.get_message()


@contextmanager
def harness(tmp_path: Path, seed: int, *rules: AlertRule) -> Iterator[Harness]:
    clock = SimulatedClock(from_epoch_ms(T0))
    with running_lab(tmp_path / "lab", seed=seed, clock=clock) as lab:
        pk = sdk_product(lab).product_key
        with AlertRecords(tmp_path / "alerts.db", clock=clock) as records:

            def attributes(product_key: str, device_key: str) -> dict[str, Any]:
                return dict(lab.registry.get_device(product_key, device_key).attributes)

            def model_of(product_key: str) -> str | None:
                return lab.product(product_key).model_id

            engine = AlertEngine(
                records, lab.models, clock=clock, model_of=model_of, attributes=attributes
            )
            for rule in rules:
                engine.add_rule(rule)
            rig = Harness(lab, engine, records, pk)

            async def attach() -> Callable[[], None]:
                handle = lab.tap.add_callback(rig.on_event, kinds=(PointStored, PresenceChanged))
                return handle.cancel

            cancel = lab.run(attach())
            try:
                yield rig
            finally:
                cancel()

                async def close() -> None:
                    engine.close()

                lab.run(close())


def test_a_delayed_alert_fires_on_the_clock_and_recovers(tmp_path: Path) -> None:
    rule = AlertRule(
        rule_id="overheat",
        model_id="sdk_meter",
        measurepoint="temp",
        condition="${temp} > 50",
        delay=60,
    )
    with harness(tmp_path, 1, rule) as rig:
        device = rig.device("m1")
        with sdk_device(rig.lab, rig.pk, "m1", device_secret=device.device_secret) as sdk:
            sdk.connect()
            rig.post(sdk, temp=55.0)  # t0: the delay timer starts
            rig.wait_events(1)
            assert rig.records.active().empty
            rig.clock.advance(30)
            rig.post(sdk, temp=56.0)  # still anomalous
            rig.wait_events(2)
            rig.clock.advance(29)
            assert rig.records.active().empty
            rig.clock.advance(2)  # past t0 + 60 s: the engine's timer fires it
            active = rig.records.active()
            assert len(active) == 1
            alert = rig.records.get(active["event_id"].iloc[0])
            assert alert.rule_id == "overheat" and alert.device_key == "m1"
            assert alert.occur_time == from_epoch_ms(T0 + 60_000)
            assert alert.value == 55.0  # EnOS: the value when the timer started
            rig.post(sdk, temp=40.0)
            rig.wait_events(3)
            recovered = rig.records.get(alert.event_id)
            assert not recovered.active
            assert recovered.recover_time == from_epoch_ms(T0 + 61_000)
            assert rig.engine.stats.fired == 1 and rig.engine.stats.recovered == 1
            # a short anomaly that recovers within the delay raises nothing
            rig.clock.advance(1)
            rig.post(sdk, temp=70.0)
            rig.clock.advance(10)
            rig.post(sdk, temp=20.0)
            rig.wait_events(5)
            rig.clock.advance(120)
            assert rig.records.active().empty and rig.engine.stats.fired == 1
            state = rig.engine.state("overheat", rig.pk, "m1")
            assert state is not None and state.resets == 1 and state.late == 0


def test_an_offline_rule_fires_when_a_device_disconnects(tmp_path: Path) -> None:
    rule = AlertRule(rule_id="gone", model_id="sdk_meter", device_status="offline")
    with harness(tmp_path, 2, rule) as rig:
        device = rig.device("m1")
        with sdk_device(rig.lab, rig.pk, "m1", device_secret=device.device_secret) as sdk:
            sdk.connect()
            rig.wait_events(1)  # online
            assert rig.records.active().empty
            rig.clock.advance(5)
            sdk.close()
            rig.wait_events(2)  # offline
        active = rig.records.active()
        assert len(active) == 1 and active["device_key"].iloc[0] == "m1"
        assert rig.records.get(active["event_id"].iloc[0]).value == "offline"
        rig.clock.advance(5)
        with sdk_device(rig.lab, rig.pk, "m1", device_secret=device.device_secret) as sdk:
            sdk.connect()
            rig.wait_events(3)  # online again: recovered
            assert rig.records.active().empty
            assert len(rig.records.history()) == 1


def test_per_device_attribute_thresholds_and_a_device_missing_the_attribute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rule = AlertRule(
        rule_id="over-rated",
        model_id="sdk_meter",
        measurepoint="power",
        condition="${power} > 0.8 * ${rated_power}",
    )
    with harness(tmp_path, 3, rule) as rig:
        small = rig.device("small", rated_power=10.0)
        big = rig.device("big", rated_power=100.0)
        bare = rig.device("bare")  # no rated_power: skipped, counted
        with (
            sdk_device(rig.lab, rig.pk, "small", device_secret=small.device_secret) as s1,
            sdk_device(rig.lab, rig.pk, "big", device_secret=big.device_secret) as s2,
            sdk_device(rig.lab, rig.pk, "bare", device_secret=bare.device_secret) as s3,
        ):
            for sdk in (s1, s2, s3):
                sdk.connect()
            for sdk in (s3, s1, s2, s3):
                rig.post(sdk, power=9.0)
            rig.wait_events(4)
        assert list(rig.records.active()["device_key"]) == ["small"]
        assert rig.engine.skips(rig.pk, "bare") == 2
        assert rig.engine.skips(rig.pk, "big") == 0
        assert rig.engine.stats.skipped == 2
        logged = [r for r in caplog.records if "bare" in r.getMessage()]
        assert len(logged) == 1 and "rated_power" in logged[0].getMessage()


def test_a_resumed_point_does_not_alert_unless_the_rule_opts_in(tmp_path: Path) -> None:
    plain = AlertRule(
        rule_id="hot", model_id="sdk_meter", measurepoint="temp", condition="${temp} > 50"
    )
    with harness(tmp_path, 4, plain) as rig:
        rig.engine.add_rule(
            AlertRule(
                rule_id="hot-history",
                model_id="sdk_meter",
                measurepoint="temp",
                condition="${temp} > 50",
            ),
            include_resumed=True,
        )
        device = rig.device("m1")
        with sdk_device(rig.lab, rig.pk, "m1", device_secret=device.device_secret) as sdk:
            sdk.connect()
            resume = MeasurepointResumeRequest.builder().add_measure_point("temp", 99.0)
            reply = sdk.publish(resume.set_timestamp(T0 - 60_000).build())
            assert reply.get_code() == 200, reply.get_message()
            rig.wait_events(1)
        assert list(rig.records.active()["rule_id"]) == ["hot-history"]
        assert rig.engine.stats.resumed_skipped == 1


def test_a_bad_rule_is_refused_when_added(tmp_path: Path) -> None:
    with harness(tmp_path, 5) as rig:
        with pytest.raises(ExpressionError, match=r"rule 'typo'.*'tmp'") as info:
            rig.engine.add_rule(
                AlertRule(
                    rule_id="typo",
                    model_id="sdk_meter",
                    measurepoint="temp",
                    condition="${tmp} > 50",
                )
            )
        assert info.value.rule == "typo" and info.value.position == 2
        with pytest.raises(ExpressionError, match="only its trigger point 'temp'"):
            rig.engine.add_rule(
                AlertRule(
                    rule_id="two",
                    model_id="sdk_meter",
                    measurepoint="temp",
                    condition="${temp} > ${power}",
                )
            )
        assert rig.engine.rules == ()
