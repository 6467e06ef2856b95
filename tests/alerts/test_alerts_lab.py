"""Alerts on the Lab facade: rules kept with the lab and evaluated on the points devices post
over TCP (port 0), a simulated clock for delays, records searched, acknowledged, shelved,
closed, created and explained; everything survives a restart."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pandas as pd
import pytest

from enos_lab import Device, Lab
from enos_lab.alerts import (
    FAULT,
    RULES_FILE,
    AlertEventType,
    AlertRule,
    rule_document,
)
from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.errors import ExpressionError, InvalidArgument, NotFound, RuleError
from enos_lab.tap import AlertChanged, TapSubscription

T0 = 1_700_000_000_000  # [ms] the lab clock's start
WAIT = 10.0  # [s] real time to wait for an event that must come

HOT = AlertRule(
    rule_id="hot",
    model_id="pv_inverter",
    measurepoint="internal_temperature",
    condition="${internal_temperature} > 60",
    delay=60,
    severity=FAULT,
    description="inverter overheating",
)
OVER = AlertRule(
    rule_id="over",
    model_id="pv_inverter",
    measurepoint="active_power",
    condition="${active_power} > ${rated_power}",
)


class Site:
    """A lab on a simulated clock with an inverter product and devices that post."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        clock = lab.clock
        assert isinstance(clock, SimulatedClock)
        self.clock = clock
        self.pk = lab.create_product("Inverter", model_id="pv_inverter").product_key
        self.secrets: dict[str, str] = {}

    def device(self, device_key: str, **attributes: Any) -> None:
        device = self.lab.register_device(self.pk, device_key=device_key, attributes=attributes)
        self.secrets[device_key] = device.device_secret

    @contextmanager
    def connect(self, device_key: str) -> Iterator[Device]:
        lab = self.lab
        secret = self.secrets[device_key]
        with Device(lab.host, lab.port, self.pk, device_key, secret, clock=self.clock) as dev:
            yield dev

    def post(self, dev: Device, step: float = 30, **points: Any) -> None:
        """Post ``points`` at the lab clock's time (blocks until the hub's 200), then move
        the clock ``step`` seconds on."""
        dev.post_measurepoints(points, time=self.clock.time_ms())
        self.clock.advance(step)


@contextmanager
def site(data_dir: Path) -> Iterator[Site]:
    clock = SimulatedClock(from_epoch_ms(T0))
    with Lab(data_dir, port=0, clock=clock, rng=random.Random(5)) as lab:
        yield Site(lab)


def changes(sub: TapSubscription, count: int) -> list[AlertChanged]:
    """The next ``count`` alert changes told on the tap."""
    got = [sub.get(timeout=WAIT) for _ in range(count)]
    assert all(isinstance(event, AlertChanged) for event in got)
    return got  # type: ignore[return-value]


def test_a_delayed_alert_fires_recovers_and_is_explained(tmp_path: Path) -> None:
    with site(tmp_path / "lab") as s:
        lab = s.lab
        s.device("inv-1")
        assert lab.add_alert_rule(HOT) is HOT
        with lab.subscribe(kinds=AlertChanged) as sub, s.connect("inv-1") as dev:
            for temperature in (50, 61, 62, 63, 64, 40):  # every 30 s from T0
                s.post(dev, internal_temperature=temperature)
            opened, recovered = changes(sub, 2)
        assert (opened.change, opened.rule_id, opened.severity, opened.value) == (
            "opened", "hot", "Fault", 61.0,
        )  # fmt: skip
        assert opened.time == from_epoch_ms(T0 + 90_000)  # the run started at T0+30 s
        assert (recovered.change, recovered.value) == ("recovered", 40.0)
        assert recovered.time == from_epoch_ms(T0 + 150_000)

        assert lab.alerts().empty
        history = lab.alert_history()
        assert len(history) == 1
        row = history.iloc[0]
        assert (row.event_id, row.rule_id, row.device_key, row.point_id) == (
            opened.event_id, "hot", "inv-1", "internal_temperature",
        )  # fmt: skip
        assert (row.value, row.severity, row.rule_description) == (61.0, "Fault", HOT.description)
        assert row.event_type == AlertEventType.RECOVERED
        assert lab.alert(opened.event_id).recover_time == recovered.time

        why = lab.explain_alert(opened.event_id)
        text = str(why)
        assert "Rule 'hot'" in text and "delay 60 s" in text
        assert "internal_temperature = 61.0: an anomaly, the run starts" in text
        assert "the anomaly has lasted the delay of 60 s" in text
        assert "internal_temperature = 40.0: the condition no longer holds: recovered" in text
        roles = dict(zip(why.points["value"], why.points["role"], strict=True))
        assert roles[61.0] == "started" and roles[63.0] == "confirmed" and roles[40.0] == "ended"
        assert why.points["anomaly"].tolist() == [False, True, True, True, True, False]


def test_the_delay_timer_fires_on_the_lab_clock_without_another_point(tmp_path: Path) -> None:
    with site(tmp_path / "lab") as s:
        lab = s.lab
        s.device("inv-1")
        lab.add_alert_rule(HOT)
        with lab.subscribe(kinds=AlertChanged) as sub, s.connect("inv-1") as dev:
            s.post(dev, step=0, internal_temperature=70)
            s.clock.advance(59)
            assert sub.drain() == []
            s.clock.advance(2)
            (opened,) = changes(sub, 1)
        assert opened.time == from_epoch_ms(T0 + 60_000) and opened.value == 70.0
        record = lab.alert(opened.event_id)
        assert record.by_timer and record.active
        assert "by the delay timer" in str(lab.explain_alert(opened.event_id))


def test_per_device_thresholds_follow_the_registry(tmp_path: Path) -> None:
    with site(tmp_path / "lab") as s:
        lab = s.lab
        s.device("inv-1", rated_power=5.0)
        s.device("inv-2")  # no rated_power: its points are skipped, counted
        lab.add_alert_rule(OVER)
        with lab.subscribe(kinds=AlertChanged) as sub:
            with s.connect("inv-2") as dev:
                s.post(dev, active_power=100.0)
            with s.connect("inv-1") as dev:
                s.post(dev, active_power=4.0)
                assert sub.drain() == []
                lab.registry.update_attributes(s.pk, "inv-1", {"rated_power": 3.0})
                s.post(dev, active_power=4.0)  # the new threshold applies at once
                (opened,) = changes(sub, 1)
        assert (opened.device_key, opened.value) == ("inv-1", 4.0)
        stats = lab.alert_stats()
        assert stats.skips_by_device == {(s.pk, "inv-2"): 1}
        assert stats.fired == 1
        assert lab.alerts()["device_key"].tolist() == ["inv-1"]


def test_acknowledge_shelve_close_and_create(tmp_path: Path) -> None:
    with site(tmp_path / "lab") as s:
        lab = s.lab
        s.device("inv-1", rated_power=5.0)
        assert lab.add_alert_rule(rule_document(OVER)) == OVER  # as a document (JSON, YAML)
        with lab.subscribe(kinds=AlertChanged) as sub, s.connect("inv-1") as dev:
            s.post(dev, active_power=6.0)
            (opened,) = changes(sub, 1)
            event_id = opened.event_id

            acked = lab.acknowledge_alert(event_id, by="operator")
            assert acked.acknowledged_by == "operator"
            assert acked.acknowledged_at == from_epoch_ms(T0 + 30_000)
            lab.shelve_alert(event_id, until=from_epoch_ms(T0 + 3_600_000))
            assert lab.alerts(shelved=True)["event_id"].tolist() == [event_id]
            assert lab.alerts(shelved=False).empty
            s.post(dev, active_power=1.0)  # recovers, but the shelf holds the news back
            assert not lab.alert(event_id).active
            assert sub.drain() == []

            s.post(dev, active_power=7.0)  # a new alert
            (second,) = changes(sub, 1)
            closed = lab.close_alert(second.event_id)
            assert closed.event_type == AlertEventType.API_RECOVERED and not closed.active
            with pytest.raises(InvalidArgument, match="recovered already"):
                lab.close_alert(second.event_id)
            s.post(dev, active_power=8.0)  # the anomaly goes on: a new alert
            (third,) = changes(sub, 1)
            assert third.event_id not in (event_id, second.event_id)

        created = lab.create_alert(s.pk, "inv-1", severity=FAULT, value=1, description="by hand")
        assert created.event_type == AlertEventType.API_INSERTED and created.active
        assert created.model_id == "pv_inverter"
        active = lab.alerts("inv-1")
        assert set(active["event_id"]) == {third.event_id, created.event_id}
        assert lab.alerts(severities=FAULT)["event_id"].tolist() == [created.event_id]
        assert "Created through the API" in str(lab.explain_alert(created.event_id))
        with pytest.raises(NotFound):
            lab.create_alert(s.pk, "nobody")
        with pytest.raises(NotFound):
            lab.alert("no-such-alert")


def test_rules_and_alerts_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "lab"
    broken = AlertRule(
        rule_id="broken",
        model_id="pv_inverter",
        measurepoint="efficiency",
        condition="${efficiency} < 0.5",
    )
    with site(data_dir) as s:
        pk = s.pk
        s.device("inv-1", rated_power=5.0)
        s.lab.add_alert_rule(OVER)
        s.lab.add_alert_rule(broken, include_resumed=True)
        with s.connect("inv-1") as dev:
            s.post(dev, active_power=6.0)
        event_id = s.lab.alerts()["event_id"].iloc[0]
        secret = s.secrets["inv-1"]
    document = json.loads((data_dir / RULES_FILE).read_text())
    assert [item["rule"]["rule_id"] for item in document["rules"]] == ["over", "broken"]
    assert [item["include_resumed"] for item in document["rules"]] == [False, True]
    # a kept rule that no longer compiles is listed with its error, not evaluated, not lost
    document["rules"][1]["rule"]["condition"] = "${efficiency} < ${no_such_threshold}"
    (data_dir / RULES_FILE).write_text(json.dumps(document))

    clock = SimulatedClock(from_epoch_ms(T0 + 600_000))
    with Lab(data_dir, port=0, clock=clock) as lab:
        rules = lab.alert_rules()
        assert rules["rule_id"].tolist() == ["over", "broken"]
        assert pd.isna(rules["error"].iloc[0])
        assert "no_such_threshold" in rules["error"].iloc[1]
        assert rules["include_resumed"].tolist() == [False, True]
        assert lab.alert_rule("over") == OVER
        assert lab.alerts()["event_id"].tolist() == [event_id]
        with Device(lab.host, lab.port, pk, "inv-1", secret, clock=clock) as dev:
            dev.post_measurepoints({"active_power": 1.0}, time=clock.time_ms())
        record = lab.alert(event_id)  # the alert from before the restart recovers
        assert record.recover_time == from_epoch_ms(T0 + 600_000)
        lab.remove_alert_rule("broken")
        assert lab.alert_rules()["rule_id"].tolist() == ["over"]
    assert [
        i["rule"]["rule_id"] for i in json.loads((data_dir / RULES_FILE).read_text())["rules"]
    ] == ["over"]


def test_bad_rules_are_refused_and_not_kept(tmp_path: Path) -> None:
    with site(tmp_path / "lab") as s:
        lab = s.lab
        bad = AlertRule(
            rule_id="typo",
            model_id="pv_inverter",
            measurepoint="active_power",
            condition="${active_powr} > 5",
        )
        with pytest.raises(ExpressionError, match=r"rule 'typo'.*active_powr") as caught:
            lab.add_alert_rule(bad)
        assert caught.value.position == 2
        unknown_point = AlertRule(
            rule_id="nopoint", model_id="pv_inverter", measurepoint="nope", condition="${nope} > 1"
        )
        with pytest.raises(InvalidArgument, match="no measurepoint 'nope'"):
            lab.add_alert_rule(unknown_point)
        with pytest.raises(NotFound):
            lab.add_alert_rule(
                AlertRule(rule_id="m", model_id="no_model", measurepoint="x", condition="${x} > 1")
            )
        with pytest.raises(InvalidArgument, match="expected an AlertRule or its document"):
            lab.add_alert_rule(["not", "a", "rule"])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="'dict'"):  # a document missing fields
            lab.add_alert_rule({"rule_id": "dict"})
        assert lab.alert_rules().empty
        assert not (lab.data_dir / RULES_FILE).exists()
        with pytest.raises(NotFound, match="'ghost'"):
            lab.remove_alert_rule("ghost")
        with pytest.raises(NotFound, match="'ghost'"):
            lab.alert_rule("ghost")


def test_an_unreadable_rule_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "lab"
    data_dir.mkdir(mode=0o700)
    (data_dir / RULES_FILE).write_text("{not json")
    lab = Lab(data_dir, port=0)
    with pytest.raises(RuleError, match=RULES_FILE):
        lab.start()
    assert not lab.running


def test_an_anonymous_lab_has_no_alert_engine(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", port=0, anonymous=True) as lab:
        with pytest.raises(InvalidArgument, match="anonymous"):
            lab.alerts()
        with pytest.raises(InvalidArgument, match="anonymous"):
            lab.add_alert_rule(HOT)


async def test_a_root_alert_on_a_gateway_masks_its_sub_devices_alerts(tmp_path: Path) -> None:
    from enos_lab.device import DeviceClient
    from enos_lab.tap import PresenceChanged

    clock = SimulatedClock(from_epoch_ms(T0))
    with Lab(tmp_path / "lab", port=0, clock=clock, rng=random.Random(8)) as lab:
        gw_model = "gateway"  # the library's gateway model
        gw_pk = lab.create_product("Gateway", model_id=gw_model, node_type="gateway").product_key
        sub_pk = lab.create_product(
            "Inverter", model_id="pv_inverter", node_type="sub_device"
        ).product_key
        gateway = lab.register_device(gw_pk, device_key="gw")
        subs = {
            key: lab.register_device(sub_pk, device_key=key, attributes={"rated_power": 5.0})
            for key in ("s1", "s2")
        }
        for key in subs:
            lab.registry.attach((gw_pk, "gw"), (sub_pk, key))
        lab.add_alert_rule(
            AlertRule(
                rule_id="gw-offline", model_id=gw_model, device_status="offline", is_root=True
            )
        )
        lab.add_alert_rule(
            AlertRule(
                rule_id="inv-offline", model_id="pv_inverter", device_status="offline", delay=60
            )
        )
        lab.add_alert_rule(OVER)
        with lab.subscribe(kinds=PresenceChanged) as presence:

            async def wait_presence(device_key: str, online: bool) -> None:
                with anyio.fail_after(WAIT):
                    while True:
                        event = await presence.aget()
                        if (event.device_key, event.online) == (device_key, online):  # type: ignore[union-attr]
                            return

            client = DeviceClient(
                lab.host, lab.port, gw_pk, "gw", gateway.device_secret, clock=clock
            )
            await client.connect()
            s1 = await client.login_sub_device(sub_pk, "s1", subs["s1"].device_secret)
            await client.login_sub_device(sub_pk, "s2", subs["s2"].device_secret)
            await s1.post_measurepoints({"active_power": 6.0}, time=clock.time_ms())
            over = lab.alerts("s1")
            assert over["rule_id"].tolist() == ["over"] and over["masked_by"].isna().all()

            await client.disconnect()  # s1, s2 and then the gateway go offline
            await wait_presence("gw", False)
            root = lab.alerts(rule_ids="gw-offline")
            assert root["device_key"].tolist() == ["gw"]
            root_id = root["event_id"].iloc[0]
            assert lab.alert(over["event_id"].iloc[0]).masked_by == root_id  # masked after
            clock.advance(61)  # the sub-devices' offline alerts fire under the root alert
            masked = lab.alerts(masked=True)
            assert sorted(zip(masked["device_key"], masked["rule_id"], strict=True)) == [
                ("s1", "inv-offline"), ("s1", "over"), ("s2", "inv-offline"),
            ]  # fmt: skip
            assert set(masked["masked_by"]) == {root_id}
            assert lab.alerts()["event_id"].tolist() == [root_id]  # masked ones left out
            assert lab.alert_stats().masked == 1

            await client.connect()  # the gateway is back: the root alert recovers
            await wait_presence("gw", True)
            assert not lab.alert(root_id).active
            assert lab.alerts(masked=True).empty  # what it masked and is active is unmasked
            await wait_presence("s2", True)  # the client logs its sub-devices in again
            active = lab.alerts()
            assert active["rule_id"].tolist() == ["over"] and active["masked_by"].isna().all()
            history = lab.alert_history(rule_ids="inv-offline")
            assert sorted(history["device_key"]) == ["s1", "s2"]
            await client.disconnect()


def test_a_backtest_over_the_stored_points_gives_the_live_alerts(tmp_path: Path) -> None:
    with site(tmp_path / "lab") as s:
        lab = s.lab
        s.device("inv-1", rated_power=5.0)
        s.device("inv-2", rated_power=3.0)
        lab.add_alert_rule(HOT)
        lab.add_alert_rule(OVER)
        temperatures = [50, 61, 62, 63, 40, 70, 71, 59, 65, 66, 67, 68]
        for key in ("inv-1", "inv-2"):
            with s.connect(key) as dev:
                for i, temperature in enumerate(temperatures):
                    s.post(dev, internal_temperature=temperature, active_power=2.0 + i % 5)
        live = lab.alert_history(include_active=True)
        for rule_id in ("hot", "over"):
            mine = live[live.rule_id == rule_id].sort_values(["occur_time", "device_key"])
            tried = lab.backtest_alert_rule(rule_id).sort_values(["occur_time", "device_key"])
            assert len(tried) == len(mine) > 0
            for column in ("device_key", "occur_time", "recover_time", "value"):
                assert tried[column].tolist() == mine[column].tolist(), column
        # a variant tried before it goes live: a higher threshold, one device only
        stricter = dataclasses.replace(HOT, condition="${internal_temperature} > 65")
        tried = lab.backtest_alert_rule(stricter, device_keys="inv-2")
        assert tried["device_key"].tolist() == ["inv-2"]
        assert tried["value"].tolist() == [66.0]  # the run 66, 67, 68 lasted the delay
        assert lab.alert_rule("hot") == HOT  # nothing kept
        with pytest.raises(NotFound):
            lab.backtest_alert_rule("ghost")
        offline = AlertRule(rule_id="off", model_id="pv_inverter", device_status="offline")
        with pytest.raises(InvalidArgument, match="device-status"):
            lab.backtest_alert_rule(offline)


def test_a_rule_scoped_by_tags_alerts_on_the_tagged_devices_only(tmp_path: Path) -> None:
    with site(tmp_path / "lab") as s:
        lab = s.lab
        for key, roof in (("inv-1", "east"), ("inv-2", "west"), ("inv-3", "east")):
            s.device(key, rated_power=5.0)
            lab.registry.update_tags(s.pk, key, {"roof": roof})
        east = dataclasses.replace(OVER, rule_id="over-east", scope_tags={"roof": "east"})
        lab.add_alert_rule(east)
        for key in ("inv-1", "inv-2", "inv-3"):
            with s.connect(key) as dev:
                s.post(dev, active_power=9.0)
        assert sorted(lab.alerts()["device_key"]) == ["inv-1", "inv-3"]
        tried = lab.backtest_alert_rule("over-east")
        assert sorted(tried["device_key"]) == ["inv-1", "inv-3"]
        lab.registry.update_tags(s.pk, "inv-2", {"roof": "east"})  # retagged: in scope now
        with s.connect("inv-2") as dev:
            s.post(dev, active_power=9.5)
        assert sorted(lab.alerts()["device_key"]) == ["inv-1", "inv-2", "inv-3"]
