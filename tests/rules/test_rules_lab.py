"""The rule set on the Lab facade: changed, kept across a restart, loaded and saved, dry-run
over a DataFrame of stored points, and rules on events, attribute changes and presence."""

from __future__ import annotations

import asyncio
import inspect
import queue
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from enos_sdk_helpers import sdk_product

from enos_lab.clock import from_epoch_ms
from enos_lab.device import Device
from enos_lab.errors import AlreadyExists, ExpressionError, InvalidArgument, NotFound
from enos_lab.lab import RULE_COLUMNS, RULE_STATS_COLUMNS, Lab
from enos_lab.rules import (
    DRY_RUN_COLUMNS,
    RULES_FILE,
    Call,
    MessageKind,
    Republish,
    Rule,
    RuleMatch,
    Store,
)
from enos_lab.tap import PointStored

WAIT = 5.0  # [s]
T0 = 1_700_000_000_000  # [ms]


def _lab(data_dir: Path) -> Lab:
    return Lab(data_dir, port=0, rng=random.Random(11))


def _device(lab: Lab, pk: str, dk: str, **kwargs: Any) -> Device:
    registered = lab.register_device(pk, device_key=dk, **kwargs)
    device = Device(lab.host, lab.port, pk, dk, registered.device_secret, timeout=WAIT)
    device.connect()
    return device


def test_the_rule_set_is_changed_through_the_facade(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        frame = lab.rules()
        assert isinstance(frame, pd.DataFrame)
        assert tuple(frame.columns) == RULE_COLUMNS
        assert frame["name"].tolist() == ["store-all"]
        lab.add_rule({"name": "kw", "points": ["power"], "transform": {"kw": "${power} / 1e3"}})
        with pytest.raises(AlreadyExists, match="rule 'kw' exists"):
            lab.add_rule(Rule("kw"))
        lab.add_rule(Rule("kw", points=["temp"]), replace=True)
        rules = lab.rules(as_frame=False)
        assert isinstance(rules, list)
        assert [(r.name, r.points) for r in rules] == [("store-all", ()), ("kw", ("temp",))]
        assert lab.remove_rule("store-all").name == "store-all"
        with pytest.raises(NotFound, match="no rule named 'store-all'"):
            lab.remove_rule("store-all")
        with pytest.raises(InvalidArgument, match="two rules are named 'a'"):
            lab.set_rules([Rule("a"), Rule("a")])
        with pytest.raises(InvalidArgument, match="takes a list"):
            lab.set_rules(Rule("a"))  # type: ignore[arg-type]
        assert (lab.data_dir / RULES_FILE).exists()
        assert lab.reset_rules()[0].name == "store-all"
        assert not (lab.data_dir / RULES_FILE).exists()
        stats = lab.rule_stats()
        assert tuple(stats.columns) == RULE_STATS_COLUMNS
        assert stats["name"].tolist() == ["store-all"]


def test_the_facade_methods_have_coroutine_forms_with_real_signatures() -> None:
    for name in ("rules", "add_rule", "set_rules", "dry_run", "load_rules", "rule_stats"):
        method = getattr(Lab, name)
        coroutine = getattr(Lab, f"a{name}")
        assert inspect.iscoroutinefunction(coroutine)
        assert inspect.signature(coroutine) == inspect.signature(method)
    assert list(inspect.signature(Lab.dry_run).parameters) == ["self", "messages", "rules"]


def test_rules_persist_across_a_restart_and_act_on_what_devices_post(tmp_path: Path) -> None:
    data_dir = tmp_path / "lab"
    with _lab(data_dir) as lab:
        pk = sdk_product(lab).product_key
        lab.set_rules(
            [
                Rule("raw", points=["temp"], condition="${temp} < 100"),
                Rule(
                    "kw",
                    points=["power"],
                    transform={"power_kw": "${power} / 1000"},
                    actions=[Store(derived_only=True)],
                ),
                Rule("calls", actions=[Call(print)]),
            ]
        )
    with _lab(data_dir) as lab:
        rules = lab.rules(as_frame=False)
        assert [r.name for r in rules] == ["raw", "kw", "calls"]
        assert rules[2].actions == ()  # a function is not kept in a file
        device = _device(lab, pk, "m1")
        try:
            with lab.subscribe(PointStored) as points:
                device.post_measurepoints({"temp": 20.0, "power": 500.0, "state": 1}, T0)
                device.post_measurepoints({"temp": 120.0}, T0 + 1000)
                got = {(e.point_id, e.value) for e in (points.get(WAIT), points.get(WAIT))}
            assert got == {("temp", 20.0), ("power_kw", 0.5)}
            frame = lab.store.query_points("m1", product_key=pk)
            assert sorted(zip(frame["point_id"], frame["value"], strict=True)) == [
                ("power_kw", 0.5),
                ("temp", 20.0),
            ]
        finally:
            device.disconnect()
        lab.reset_rules()
    with _lab(data_dir) as lab:
        assert [r.name for r in lab.rules(as_frame=False)] == ["store-all"]


def test_load_and_save_rules_through_the_facade(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        path = tmp_path / "rules.yaml"
        path.write_text(
            "rules:\n"
            "  - name: hot\n"
            "    condition: ${temp} > 50\n"
            "    actions:\n"
            "      - type: store\n"
            "      - type: republish\n"
            "        topic: /lab/rules/{productKey}/{deviceKey}/hot\n"
        )
        loaded = lab.load_rules(path)
        assert [r.name for r in loaded] == ["hot"]
        assert loaded[0].actions[1] == Republish("/lab/rules/{productKey}/{deviceKey}/hot")
        saved = lab.save_rules(tmp_path / "out.json")
        assert '"condition": "${temp} > 50"' in saved.read_text()
        assert lab.rules()["name"].tolist() == ["hot"]


def test_dry_run_over_the_stored_points(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        pk = sdk_product(lab).product_key
        device = _device(lab, pk, "m1", attributes={"rated_power": 10.0}, tags={"site": "north"})
        try:
            device.post_measurepoints({"temp": 20.0, "power": 8.0}, T0)
            device.post_measurepoints({"temp": 60.0, "power": 2.0}, T0 + 60_000)
        finally:
            device.disconnect()
        frame = lab.store.query_points("m1", product_key=pk)
        rules = [
            Rule(
                "high",
                models=["sdk_meter"],
                tags={"site": "north"},
                points=["power"],
                condition="${power} > 0.5 * ${rated_power}",
                transform={"kw": "${power} / 1000"},
            ),
            Rule("south", tags={"site": "south"}),
            Rule("hot", condition="${temp} > ${missing}", actions=[Call(print)]),
        ]
        result = lab.dry_run(frame, rules=rules)
        assert tuple(result.columns) == DRY_RUN_COLUMNS
        assert str(result["time"].dt.tz) == "UTC"
        high = result[result["rule"] == "high"].reset_index(drop=True)
        assert high["message"].tolist() == [0, 1]
        assert high["time"].tolist() == [from_epoch_ms(T0), from_epoch_ms(T0 + 60_000)]
        assert high["condition"].tolist() == [True, False]
        assert high["ids"].tolist() == [["power"], ["power"]]
        assert high["actions"].tolist() == [["store"], []]
        assert high["stored"].tolist() == [True, False]
        assert high["derived"].tolist() == [{"kw": 0.008}, {}]
        assert "south" not in set(result["rule"])  # its tag selector does not take the device
        hot = result[result["rule"] == "hot"]
        assert hot["condition"].isna().all()
        assert hot["skipped"].str.contains("missing").all()
        # Nothing ran: the store still has its four points and the rule set is unchanged.
        assert len(lab.store.query_points("m1", product_key=pk)) == 4
        assert lab.rules()["name"].tolist() == ["store-all"]
        # With the rules in force and messages as dicts.
        dicts = lab.dry_run([{"product_key": pk, "device_key": "m1", "values": {"temp": 1.0}}])
        assert dicts[["rule", "condition", "stored"]].values.tolist() == [["store-all", True, True]]


def test_rules_on_events_attribute_changes_and_presence(tmp_path: Path) -> None:
    seen: queue.Queue[RuleMatch] = queue.Queue()
    with _lab(tmp_path / "lab") as lab:
        pk = sdk_product(lab).product_key
        lab.set_rules(
            [
                Rule("store"),
                Rule(
                    "overheat",
                    kind="event",
                    points=["overheat"],
                    condition="${temp} > 90",
                    actions=[Call(seen.put)],
                ),
                Rule(
                    "rating",
                    kind=MessageKind.ATTRIBUTE,
                    points=["rated_power"],
                    actions=[Call(seen.put)],
                ),
                Rule(
                    "offline", kind="presence", condition="not ${online}", actions=[Call(seen.put)]
                ),
            ]
        )
        device = _device(lab, pk, "m1")
        device.post_event("overheat", {"temp": 80.0}, T0)
        device.post_event("overheat", {"temp": 95.0}, T0 + 1000)
        event = seen.get(timeout=WAIT)
        assert (event.rule, event.ids) == ("overheat", ("overheat",))
        assert dict(event.values) == {"temp": 95.0}
        device.update_attributes({"site": "x"})  # not a selected attribute
        device.update_attributes({"rated_power": 3.0, "site": "y"})
        change = seen.get(timeout=WAIT)
        assert (change.rule, change.ids) == ("rating", ("rated_power",))
        device.disconnect()
        presence = seen.get(timeout=WAIT)
        assert (presence.rule, presence.device_key, presence.values["online"]) == (
            "offline",
            "m1",
            False,
        )
        assert seen.empty()


def test_the_coroutine_forms_work_from_asyncio(tmp_path: Path) -> None:
    async def main() -> list[str]:
        async with _lab(tmp_path / "lab") as lab:
            await lab.aadd_rule(Rule("extra", points=["temp"]))
            frame = await lab.arules()
            assert isinstance(frame, pd.DataFrame)
            return list(frame["name"])

    assert asyncio.run(main()) == ["store-all", "extra"]


def test_a_kept_rule_set_that_cannot_be_applied_stops_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "lab"
    with _lab(data_dir) as lab:
        lab.add_rule(Rule("hot", condition="${temp} > 50"))
    path = data_dir / RULES_FILE
    path.write_text(path.read_text().replace("${temp} > 50", "${temp} > > 50"))
    lab = _lab(data_dir)
    with pytest.raises(ExpressionError, match="rule 'hot'"):
        lab.start()
    assert not lab.running
    assert "cannot be applied" in caplog.text and str(data_dir) in caplog.text
    path.unlink()
    with lab:
        assert lab.rules()["name"].tolist() == ["store-all"]
