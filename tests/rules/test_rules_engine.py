"""The rule engine on a real lab: devices post through the hub over TCP (the lab's device SDK,
the official EnOS SDK, paho) and the rules decide what is stored and what else happens."""

from __future__ import annotations

import asyncio
import json
import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, connected_meter, sdk_product
from paho.mqtt.enums import CallbackAPIVersion

from enos_lab.clock import from_epoch_ms
from enos_lab.device import Device
from enos_lab.enos import login_credentials
from enos_lab.errors import ExpressionError, InvalidArgument
from enos_lab.lab import Lab
from enos_lab.rules import Call, MessageKind, Republish, Rule, RuleEngine, RuleMatch, Store
from enos_lab.tap import AttributesChanged, PointStored, PresenceChanged, TagsChanged

WAIT = 5.0  # [s] longest wait for one thing the lab does
T0 = 1_700_000_000_000  # [ms] event times used below


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path / "lab", port=0, rng=random.Random(7)) as running:
        yield running


def _meter(lab: Lab, device_key: str = "m1", **kwargs: Any) -> tuple[str, Device]:
    """A product of the SDK test model and one connected device of it (the lab's SDK)."""
    product = sdk_product(lab, custom_topics=kwargs.pop("custom_topics", None))
    registered = lab.register_device(product.product_key, device_key=device_key, **kwargs)
    device = Device(
        lab.host, lab.port, product.product_key, device_key, registered.device_secret, timeout=WAIT
    )
    device.connect()
    return product.product_key, device


def _stored(lab: Lab, pk: str, device_key: str = "m1") -> dict[tuple[str, int], Any]:
    frame = lab.store.query_points(device_key, product_key=pk)
    return {
        (p, int(t.timestamp() * 1000)): v
        for p, t, v in zip(frame["point_id"], frame["time"], frame["value"], strict=True)
    }


@SDK_WARNINGS
def test_default_rule_set_stores_everything_without_a_router(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=3) as (lab, pk, sdk):
        assert [rule.name for rule in lab.rules(as_frame=False)] == ["store-all"]
        assert lab.iothub is not None and lab.iothub.point_router is None
        request = (
            MeasurepointPostRequest.builder()
            .add_measurepoint("temp", 21.5)
            .add_measurepoint("power", 3.0)
            .set_timestamp(T0)
            .build()
        )
        assert sdk.publish(request).get_code() == 200
        assert _stored(lab, pk, "meter") == {("power", T0): 3.0, ("temp", T0): 21.5}


@SDK_WARNINGS
def test_only_the_points_a_rule_stores_are_stored_and_the_device_gets_200(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=4) as (lab, pk, sdk):
        lab.set_rules([Rule("power-only", points=["power"])])
        assert lab.iothub is not None and lab.iothub.point_router is not None
        with lab.subscribe(PointStored) as points:
            request = (
                MeasurepointPostRequest.builder()
                .add_measurepoint("temp", 21.5)
                .add_measurepoint("power", 3.0)
                .add_measurepoint("state", 1)
                .set_timestamp(T0)
                .build()
            )
            assert sdk.publish(request).get_code() == 200
            event = points.get(timeout=WAIT)
            assert (event.point_id, event.value) == ("power", 3.0)
            assert len(points) == 0  # the points no rule stores are not on the tap either
        assert _stored(lab, pk, "meter") == {("power", T0): 3.0}
        # A post none of whose points is stored is acknowledged all the same.
        only_temp = (
            MeasurepointPostRequest.builder()
            .add_measurepoint("temp", 30.0)
            .set_timestamp(T0 + 1000)
            .build()
        )
        assert sdk.publish(only_temp).get_code() == 200
        assert _stored(lab, pk, "meter") == {("power", T0): 3.0}
        stats = lab.rule_stats().set_index("name")
        assert stats.loc["power-only", "stored"] == 1


def test_a_transform_stores_a_derived_point(lab: Lab) -> None:
    pk, device = _meter(lab)
    try:
        lab.set_rules(
            [
                Rule("raw", points=["temp"]),
                Rule(
                    "kw",
                    points=["power"],
                    transform={"power_kw": "${power} / 1000", "hot": "${temp} * 2"},
                    actions=[Store(derived_only=True)],
                ),
            ]
        )
        device.post_measurepoints({"power": 2500.0}, T0)  # no temp: "hot" is skipped
        device.post_measurepoints({"power": 1500.0, "temp": 20.0}, T0 + 1000)
        stored = _stored(lab, pk)
        assert stored[("temp", T0 + 1000)] == 20.0
        assert stored[("power_kw", T0 + 1000)] == 1.5
        assert stored[("hot", T0 + 1000)] == 40.0
        assert ("power", T0) not in stored and ("power", T0 + 1000) not in stored
        assert ("power_kw", T0) not in stored  # the message lacked temp: the rule was skipped
        stats = lab.rule_stats().set_index("name")
        assert stats.loc["kw", "skipped"] == 1
        assert stats.loc["kw", "derived"] == 2
    finally:
        device.disconnect()


def test_a_condition_on_a_device_attribute_follows_its_changes(lab: Lab) -> None:
    pk, device = _meter(lab, attributes={"rated_power": 10.0})
    try:
        lab.set_rules(
            [Rule("high", models=["sdk_meter"], condition="${power} > 0.5 * ${rated_power}")]
        )
        device.post_measurepoints({"power": 4.0}, T0)
        device.post_measurepoints({"power": 6.0}, T0 + 1000)
        assert _stored(lab, pk) == {("power", T0 + 1000): 6.0}
        # The device lowers its rating: the engine's cached attributes are dropped.
        device.update_attributes({"rated_power": 4.0})
        device.post_measurepoints({"power": 3.0}, T0 + 2000)
        assert _stored(lab, pk)[("power", T0 + 2000)] == 3.0
    finally:
        device.disconnect()


def test_a_condition_follows_an_attribute_changed_on_the_registry_directly(lab: Lab) -> None:
    pk, device = _meter(lab, attributes={"rated_power": 10.0})
    try:
        lab.set_rules(
            [Rule("high", models=["sdk_meter"], condition="${power} > 0.5 * ${rated_power}")]
        )
        device.post_measurepoints({"power": 4.0}, T0)
        assert _stored(lab, pk) == {}
        # No tap event tells of this change; the registry's revision moves, and the engine
        # reads the device again before the next batch.
        lab.registry.update_attributes(pk, "m1", {"rated_power": 4.0})
        device.post_measurepoints({"power": 3.0}, T0 + 1000)
        assert _stored(lab, pk) == {("power", T0 + 1000): 3.0}
    finally:
        device.disconnect()


def test_a_callable_action_and_a_raising_one_that_does_not_stop_ingest(lab: Lab) -> None:
    pk, device = _meter(lab)
    seen: queue.Queue[RuleMatch] = queue.Queue()
    loop_threads: set[str] = set()

    def record(match: RuleMatch) -> None:
        loop_threads.add(threading.current_thread().name)
        seen.put(match)

    def explode(match: RuleMatch) -> None:
        raise RuntimeError(f"boom on {match.device_key}")

    try:
        lab.set_rules(
            [
                Rule("store"),
                Rule("watch", condition="${temp} > 50", actions=[Call(record)]),
                Rule("bad", points=["temp"], actions=[Call(explode)]),
            ]
        )
        device.post_measurepoints({"temp": 40.0, "power": 1.0}, T0)
        device.post_measurepoints({"temp": 60.0, "power": 2.0}, T0 + 1000)
        match = seen.get(timeout=WAIT)
        assert match.rule == "watch" and match.kind is MessageKind.MEASUREPOINT
        assert match.product_key == pk and match.device_key == "m1"
        assert match.time == from_epoch_ms(T0 + 1000)
        assert dict(match.values) == {"temp": 60.0, "power": 2.0}
        assert loop_threads == {"enos-lab-loop"}
        device.post_measurepoints({"temp": 61.0}, T0 + 2000)  # still stored after the errors
        assert seen.get(timeout=WAIT).values["temp"] == 61.0
        assert _stored(lab, pk)[("temp", T0 + 2000)] == 61.0
        stats = lab.rule_stats().set_index("name")
        assert stats.loc["bad", "called"] == 3 and stats.loc["bad", "errors"] == 3
        assert stats.loc["watch", "called"] == 2 and stats.loc["watch", "errors"] == 0
    finally:
        device.disconnect()


def _paho_device(lab: Lab, pk: str, dk: str, secret: str) -> tuple[mqtt.Client, queue.Queue[Any]]:
    client_id, username, password = login_credentials(pk, dk, secret, timestamp="1")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(username, password)
    inbox: queue.Queue[Any] = queue.Queue()
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.on_message = lambda _c, _u, message: inbox.put(message)
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: inbox.put([c.value for c in codes])
    client.connect("127.0.0.1", lab.port)
    client.loop_start()
    assert connected.wait(WAIT)
    return client, inbox


def test_republish_reaches_a_device_subscribed_to_its_custom_topic(lab: Lab) -> None:
    topic = "/lab/rules/{productKey}/{deviceKey}/power"
    pk, device = _meter(lab, custom_topics={topic: "subscribe"})
    watcher = lab.register_device(pk, device_key="w1")
    client, inbox = _paho_device(lab, pk, "w1", watcher.device_secret)
    try:
        lab.set_rules(
            [
                Rule("store"),
                Rule(
                    "fwd",
                    points=["power"],
                    devices=["m1"],
                    transform={"kw": "${power} / 1000"},
                    actions=[Republish("/lab/rules/{productKey}/w1/power", qos=1)],
                ),
            ]
        )
        own = f"/lab/rules/{pk}/w1/power"
        client.subscribe(own, 1)
        assert inbox.get(timeout=WAIT) == [1]
        # Devices cannot write there: the hub refuses the publish (the topic is subscribe-only).
        client.publish(own, b"forged", qos=1).wait_for_publish(WAIT)
        device.post_measurepoints({"power": 2000.0, "temp": 1.0}, T0)
        message = inbox.get(timeout=WAIT)
        assert message.topic == own
        body = json.loads(message.payload)
        assert body == {
            "rule": "fwd",
            "kind": "measurepoint",
            "productKey": pk,
            "deviceKey": "m1",
            "time": T0,
            "ids": ["power"],
            "values": {"power": 2000.0, "temp": 1.0},
            "derived": {"kw": 2.0},
        }
        assert inbox.empty()
        assert lab.rule_stats().set_index("name").loc["fwd", "republished"] == 1
    finally:
        client.loop_stop()
        client.disconnect()
        device.disconnect()


def test_a_bad_rule_is_refused_naming_the_rule_and_the_position(lab: Lab) -> None:
    with pytest.raises(ExpressionError) as caught:
        Rule("overheat", condition="${temp} > > 50")
    assert caught.value.rule == "overheat"
    assert caught.value.position == 10
    assert "rule 'overheat'" in str(caught.value)
    # Typed against the model it names: an unknown point is refused when the rule is set.
    with pytest.raises(ExpressionError) as typed:
        sdk_product(lab)
        lab.set_rules([Rule("typo", models=["sdk_meter"], condition="${tmp} > 50")])
    assert typed.value.rule == "typo" and typed.value.position == 2
    with pytest.raises(ExpressionError) as derived:
        lab.add_rule(Rule("kw", transform={"kw": "${power} / "}))
    assert derived.value.rule == "kw"
    with pytest.raises(InvalidArgument, match="derived point 'temp' is a measurepoint"):
        lab.add_rule(Rule("dup", models=["sdk_meter"], transform={"temp": "${power} * 2"}))
    assert [rule.name for rule in lab.rules(as_frame=False)] == ["store-all"]  # unchanged


# --- the engine alone: the router on rows, the tap side on events -----------------------------


def _rows(pk: str, dk: str, at: int, **points: Any) -> list[tuple[Any, ...]]:
    return [(pk, dk, point, at, value, None, False) for point, value in points.items()]


def test_route_selects_by_product_model_device_tag_and_point() -> None:
    models = {"p1": "meter", "p2": "inverter"}
    info = {("p1", "a"): ({"limit": 5.0}, {"site": "north"}), ("p1", "b"): ({}, {"site": "south"})}
    engine = RuleEngine(
        [
            Rule("meters-temp", models=["meter"], points=["temp"]),
            Rule("p2-all", products=["p2"]),
            Rule("north-power", tags={"site": "north"}, points=["power"],
                 condition="${power} > ${limit}"),
            Rule("b-only", devices=["b"], points=["power"],
                 transform={"power_w": "${power} * 1000"}, actions=[Store(derived_only=True)]),
        ],
        model_of=models.get,
        device_info=lambda pk, dk: info.get((pk, dk), ({}, {})),
    )  # fmt: skip
    assert engine.router is not None
    rows = [
        *_rows("p1", "a", T0, temp=1.0, power=6.0, state=1),
        *_rows("p1", "a", T0 + 1, power=4.0),
        *_rows("p1", "b", T0, temp=2.0, power=7.0),
        *_rows("p2", "x", T0, anything=3),
        *_rows("p3", "y", T0, temp=4.0),
    ]
    kept = {(r[0], r[1], r[2], r[3], r[4]) for r in engine.route(rows)}
    assert kept == {
        ("p1", "a", "temp", T0, 1.0),
        ("p1", "a", "power", T0, 6.0),  # north and above its limit
        ("p1", "b", "temp", T0, 2.0),
        ("p1", "b", "power_w", T0, 7000.0),  # derived only
        ("p2", "x", "anything", T0, 3),
    }
    stats = engine.stats()
    assert (stats["meters-temp"].stored, stats["p2-all"].stored) == (2, 1)
    assert (stats["north-power"].matched, stats["north-power"].stored) == (1, 1)
    assert (stats["b-only"].matched, stats["b-only"].stored, stats["b-only"].derived) == (1, 1, 1)
    # A missing attribute is a skip on that device only.
    assert engine.route(_rows("p1", "b", T0 + 2, power=9.0)) == [
        ("p1", "b", "power_w", T0 + 2, 9000.0, None, False)
    ]


def test_no_router_while_a_rule_stores_everything_and_none_derives() -> None:
    assert RuleEngine().router is None
    assert RuleEngine().tap_kinds == ()  # the tap builds no event for the default rule set
    engine = RuleEngine([Rule("all"), Rule("hot", condition="${temp} > 5")])
    assert engine.router is None
    engine.set_rules([Rule("all"), Rule("kw", transform={"kw": "${p} / 1000"})])
    assert engine.router is not None
    engine.set_rules([Rule("all", enabled=False)])
    assert engine.router is not None
    assert engine.route(_rows("p", "d", T0, temp=1.0)) == []
    engine.set_rules(
        [Rule("on", kind="presence", actions=[Call(print)]), Rule("x", kind="event", actions=[])]
    )
    assert engine.tap_kinds == (PresenceChanged,)
    assert not engine.wants_points
    engine.set_rules([Rule("hot", condition="${t} > ${limit}", actions=[Call(print)])])
    assert engine.tap_kinds == (AttributesChanged, TagsChanged)
    assert engine.wants_points  # stored points come as rows (on_rows), not events


def test_tap_rules_see_the_whole_stored_post_and_never_raise() -> None:
    matches: list[RuleMatch] = []
    published: list[tuple[str, bytes, int]] = []

    def publish(topic: str, payload: bytes, qos: int) -> None:
        published.append((topic, payload, qos))

    engine = RuleEngine(
        [
            Rule("store"),
            Rule("hot", condition="${temp} > 50 and ${power} > 1", actions=[Call(matches.append)]),
            Rule("fwd", points=["power"], actions=[Republish("/lab/rules/{id}/{deviceKey}")]),
            Rule("no-hub", kind="presence", actions=[Republish("/lab/rules/presence")]),
        ],
        publish=publish,
    )

    async def feed() -> None:
        at = from_epoch_ms(T0)
        for point, value in (("temp", 60.0), ("power", 2.0), ("state", "x")):
            engine.on_event(PointStored("p", "d", point, at, value))
        engine.on_event(PointStored("p", "e", "temp", at, 70.0))  # no power: skipped
        await asyncio.sleep(0)  # the engine's flush of this iteration's points runs first
        await asyncio.sleep(0)

    asyncio.run(feed())
    assert [(m.rule, m.device_key, m.ids) for m in matches] == [
        ("hot", "d", ("temp", "power", "state"))
    ]
    assert [topic for topic, _, _ in published] == ["/lab/rules/power/d"]
    stats = engine.stats()
    assert stats["hot"].skipped == 1 and stats["fwd"].republished == 1
