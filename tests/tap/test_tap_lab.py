"""The device-data tap of a real lab: devices of the official EnOS SDK over TCP (port 0), each
event kind with its fields, emitted after the store or the registry kept what it describes;
filters, the bound of a subscription nobody reads, a failing callback, async readers on another
event loop, and closing."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from enos.core.constant.DeviceCredential import DeviceCredential
from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
from enos.message.upstream.integration.IntEventPostRequest import IntEventPostRequest
from enos.message.upstream.integration.IntMeaturepointPostRequest import (
    IntMeaturepointPostRequest,
)
from enos.message.upstream.ota.OtaProgressReportRequest import OtaProgressReportRequest
from enos.message.upstream.ota.OtaVersionReportRequest import OtaVersionReportRequest
from enos.message.upstream.resume.MeasurepointResumeRequest import MeasurepointResumeRequest
from enos.message.upstream.status.SubDeviceLoginRequest import SubDeviceLoginRequest
from enos.message.upstream.status.SubDeviceLogoutRequest import SubDeviceLogoutRequest
from enos.message.upstream.tag.TagDeleteRequest import TagDeleteRequest
from enos.message.upstream.tag.TagUpdateRequest import TagUpdateRequest
from enos.message.upstream.tsl.AttributeDeleteRequest import AttributeDeleteRequest
from enos.message.upstream.tsl.AttributeUpdateRequest import AttributeUpdateRequest
from enos.message.upstream.tsl.EventPostRequest import EventPostRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import (
    SDK_WARNINGS,
    WAIT,
    SdkDevice,
    connected_meter,
    running_lab,
    sdk_device,
    sdk_product,
)

from enos_lab import (
    AttributesChanged,
    CommandReplied,
    DeviceActivated,
    DeviceLoggedIn,
    EventPosted,
    Lab,
    OtaReported,
    PointStored,
    PresenceChanged,
    StoreConfig,
    TagsChanged,
    TopicKind,
)
from enos_lab.clock import from_epoch_ms
from enos_lab.errors import ClosedError
from enos_lab.registry import Registry
from enos_lab.tap import TapEvent, TapSubscription

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_000_000  # [ms] event times used below (2023-11-14 22:13:20 UTC)


def _ok(response: Any) -> Any:
    assert response.get_code() == 200, (response.get_code(), response.get_message())
    return response


def _post(sdk: SdkDevice, at: int, **points: Any) -> Any:
    request = MeasurepointPostRequest.builder().add_measurepoints(points).set_timestamp(at)
    return sdk.publish(request.build())


def _take(sub: TapSubscription, count: int) -> list[TapEvent]:
    """The next ``count`` events (each within WAIT seconds)."""
    return [sub.get(timeout=WAIT) for _ in range(count)]


def _presence(event: TapEvent) -> tuple[str, str, bool, str]:
    assert isinstance(event, PresenceChanged), event
    return (event.product_key, event.device_key, event.online, event.reason)


# -- points ---------------------------------------------------------------------------------


def test_points_are_told_after_the_commit_with_their_fields(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=61) as (lab, pk, sdk):
        in_store: list[bool] = []

        def query_the_store(event: TapEvent) -> None:  # on the lab's loop, at emission
            assert isinstance(event, PointStored)
            frame = lab.store.query_points(event.device_key, event.point_id, product_key=pk)
            in_store.append(event.time in set(frame["time"]))

        handle = lab.tap.add_callback(query_the_store, kinds=PointStored)
        with lab.subscribe(PointStored, product_key=pk) as points:
            _ok(_post(sdk, T0, temp=21.5, power={"value": 3.25, "quality": 9}))
            resume = MeasurepointResumeRequest.builder().add_measure_point("temp", 18.0)
            _ok(sdk.publish(resume.set_timestamp(T0 - 60_000).build()))
            # a post the hub refuses (1204: not a number) tells nothing
            assert _post(sdk, T0 + 1000, temp="hot").get_code() == 1204
            events = points.drain()
            # the reader sees the rows in the store too
            stored = lab.store.query_points("meter", product_key=pk)
        handle.cancel()
        at = from_epoch_ms(T0)
        assert sorted(events, key=lambda e: (e.time, e.point_id)) == [
            PointStored(pk, "meter", "temp", from_epoch_ms(T0 - 60_000), 18.0, None, True),
            PointStored(pk, "meter", "power", at, 3.25, 9, False),
            PointStored(pk, "meter", "temp", at, 21.5, None, False),
        ]
        assert str(events[0].time.tzinfo) == "UTC"
        assert in_store == [True, True, True]
        assert len(stored) == 3 and lab.tap.stats.subscriptions == 0


def test_rows_the_store_refuses_tell_nothing(tmp_path: Path) -> None:
    # a device's second series is beyond the store's bound: 1200 from the store, no event
    config = StoreConfig(max_series_per_device=1)
    with (
        connected_meter(tmp_path, seed=62, store_config=config) as (lab, _pk, sdk),
        lab.subscribe(PointStored) as points,
    ):
        _ok(_post(sdk, T0, temp=1.0))
        refused = _post(sdk, T0, state=2)
        assert refused.get_code() == 1200, refused.get_message()
        assert [(e.point_id, e.value) for e in points.drain()] == [("temp", 1.0)]


# -- events, attributes, tags, OTA, commands ------------------------------------------------


def test_events_attributes_tags_and_ota_reports(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=63) as (lab, pk, sdk):
        kinds = [EventPosted, AttributesChanged, TagsChanged, OtaReported]
        with lab.subscribe(kinds, device_key="meter") as sub:
            event = EventPostRequest.builder().set_event_identifier("overheat")
            _ok(sdk.publish(event.add_value("temp", 95.5).set_timestamp(T0).build()))
            update = AttributeUpdateRequest.builder().add_attribute("rated_power", 7.5)
            _ok(sdk.publish(update.add_attribute("site", "north").build()))
            _ok(sdk.publish(AttributeDeleteRequest.builder().delete_attribute("site").build()))
            _ok(
                sdk.publish(
                    TagUpdateRequest.builder().add_tag("site", "A").add_tag("floor", 3).build()
                )
            )
            tag_delete = TagDeleteRequest.builder().delete_tag_key("floor")
            _ok(sdk.publish(tag_delete.delete_tag_key("never-set").build()))
            _ok(sdk.publish(OtaVersionReportRequest.builder().set_version("1.0.3").build()))
            # no upgrade task (the default OTA handler): 764, nothing told
            progress = OtaProgressReportRequest.builder().set_step("35").set_desc("downloaded")
            assert sdk.publish(progress.build()).get_code() == 764
            events = sub.drain()
        posted, updated, deleted, tagged, untagged, informed = events
        assert isinstance(posted, EventPosted)
        assert (posted.event_id, posted.time, dict(posted.outputs), posted.severity) == (
            "overheat",
            from_epoch_ms(T0),
            {"temp": 95.5},
            "WARN",
        )
        assert isinstance(updated, AttributesChanged) and updated.source == "device"
        assert dict(updated.values) == {"rated_power": 7.5, "site": "north"}
        assert not updated.deleted
        assert isinstance(deleted, AttributesChanged)
        assert (dict(deleted.values), deleted.deleted) == ({}, ("site",))
        assert isinstance(tagged, TagsChanged)
        assert dict(tagged.values) == {"site": "A", "floor": "3"}
        assert isinstance(untagged, TagsChanged) and untagged.deleted == ("floor",)
        assert informed == OtaReported(pk, "meter", informed.time, "inform", "1.0.3")
        # each told after the store / registry had it
        assert lab.store.query_events("meter", product_key=pk)["severity"].tolist() == ["WARN"]
        assert dict(lab.device(pk, "meter").tags) == {"site": "A"}

        class Campaign:  # an OTA handler with an upgrade task: progress is accepted
            def inform(self, product_key: str, device_key: str, version: str) -> None:
                pass

            def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
                return 200

            def get_versions(self, product_key: str, device_key: str) -> list[dict[str, Any]]:
                return []

        assert lab.iothub is not None
        lab.iothub.ota = Campaign()
        with lab.subscribe(OtaReported) as sub:
            _ok(sdk.publish(progress.build()))
            (reported,) = _take(sub, 1)
        assert isinstance(reported, OtaReported)
        assert (reported.report, reported.step, reported.desc) == ("progress", "35", "downloaded")


def test_command_replies_are_told(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=64) as lab:
        pk = sdk_product(lab).product_key
        device = lab.register_device(pk, device_key="m64")

        def on_set(command: Any, topic_args: list[str]) -> Any:
            return MeasurepointSetReply.builder().set_code(200).set_message("set").build()

        with sdk_device(lab, pk, "m64", device_secret=device.device_secret) as sdk:
            sdk.client.register_arrived_message_handler(MeasurepointSetCommand.get_class(), on_set)
            sdk.connect()
            with lab.subscribe(CommandReplied) as sub:
                reply = lab.send_command(pk, "m64", TopicKind.MEASUREPOINT_SET, {"temp": 25.0})
                assert reply is not None and reply.code == 200
                (told,) = _take(sub, 1)
        assert isinstance(told, CommandReplied)
        assert (told.product_key, told.device_key, told.command, told.item_id) == (
            pk,
            "m64",
            "MEASUREPOINT_SET",
            "",
        )
        assert (told.request_id, told.code, told.message) == (reply.id, 200, "set")


# -- logins, activation, presence ---------------------------------------------------------


def test_logins_and_presence_of_a_device(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=65) as lab:
        pk = sdk_product(lab).product_key
        device = lab.register_device(pk, device_key="m65")
        secret = device.device_secret
        with lab.subscribe([DeviceLoggedIn, PresenceChanged], device_key="m65") as sub:
            with sdk_device(lab, pk, "m65", device_secret=secret) as sdk:
                sdk.connect()
                login, online = _take(sub, 2)
                assert isinstance(login, DeviceLoggedIn)
                assert (login.secure_mode, login.gateway) == (2, None)
                assert login.client_id.startswith("m65|securemode=2")
                assert _presence(online) == (pk, "m65", True, "connected")
                # told after the presence log has it
                assert lab.device(pk, "m65").online
                assert lab.presence(pk, "m65")["reason"].tolist() == ["connected"]
            assert _presence(sub.get(timeout=WAIT)) == (pk, "m65", False, "disconnected")

            with sdk_device(lab, pk, "m65", device_secret=secret) as sdk:
                sdk.connect()
                assert _presence(_take(sub, 2)[1]) == (pk, "m65", True, "connected")
                lab.disable_device(pk, "m65")  # its reconnects are refused: nothing told
                assert _presence(sub.get(timeout=WAIT)) == (pk, "m65", False, "disabled")
            lab.enable_device(pk, "m65")
            with sdk_device(lab, pk, "m65", device_secret=secret) as sdk:
                sdk.connect()
                assert _presence(_take(sub, 2)[1]) == (pk, "m65", True, "connected")
                lab.delete_device(pk, "m65")
                assert _presence(sub.get(timeout=WAIT)) == (pk, "m65", False, "deleted")
            assert sub.drain() == []


def test_dynamic_activation_is_told(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=66) as lab:
        product = sdk_product(lab, "Dynamic meter", dynamic_activation=True)
        pk = product.product_key
        lab.register_device(pk, device_key="dyn")
        kinds = [DeviceLoggedIn, DeviceActivated]
        with lab.subscribe(kinds, product_key=pk) as sub:
            with sdk_device(lab, pk, "dyn", product_secret=product.product_secret) as sdk:
                sdk.connect()
                assert sdk.activated.wait(WAIT)
                login, activated = _take(sub, 2)
            assert isinstance(login, DeviceLoggedIn) and login.secure_mode == 3
            assert isinstance(activated, DeviceActivated) and activated.device_key == "dyn"
            secret = sdk.issued_secret
            assert secret == lab.device(pk, "dyn").device_secret
            with sdk_device(lab, pk, "dyn", device_secret=secret) as sdk:
                sdk.connect()
                (again,) = _take(sub, 1)
            assert isinstance(again, DeviceLoggedIn) and again.secure_mode == 2


def test_sub_device_logins_presence_and_activation_through_a_gateway(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=67) as lab:
        gw_pk = lab.create_product("Gateway", node_type="gateway").product_key
        sub_product = sdk_product(lab, "Sub meter", node_type="sub_device", dynamic_activation=True)
        sub_pk = sub_product.product_key
        gateway = lab.register_device(gw_pk, device_key="gw")
        sub = lab.register_device(sub_pk, device_key="s1")
        lab.register_device(sub_pk, device_key="s2")
        for dk in ("s1", "s2"):
            lab.registry.attach((gw_pk, "gw"), (sub_pk, dk))
        kinds = [DeviceLoggedIn, PresenceChanged, DeviceActivated]
        with lab.subscribe(kinds, product_key=sub_pk) as told:
            with sdk_device(lab, gw_pk, "gw", device_secret=gateway.device_secret) as sdk:
                sdk.connect()
                login = SubDeviceLoginRequest.builder().set_sub_device_info(
                    sub_pk, "s1", sub.device_secret
                )
                _ok(sdk.publish(login.build()))
                logged_in, online = _take(told, 2)
                assert isinstance(logged_in, DeviceLoggedIn)
                assert (logged_in.device_key, logged_in.gateway) == ("s1", (gw_pk, "gw"))
                assert logged_in.secure_mode == 2
                assert _presence(online) == (sub_pk, "s1", True, "connected")

                logout = SubDeviceLogoutRequest.builder().set_sub_product_key(sub_pk)
                _ok(sdk.publish(logout.set_sub_device_key("s1").build()))
                assert _presence(told.get(timeout=WAIT)) == (sub_pk, "s1", False, "logged out")

                # s2 activates itself with the product secret through the gateway
                credential = DeviceCredential(sub_pk, sub_product.product_secret, "s2", None)
                dynamic = SubDeviceLoginRequest.builder().set_sub_device_credential(credential)
                response = _ok(sdk.publish(dynamic.build()))
                activated, logged_in, online = _take(told, 3)
                assert isinstance(activated, DeviceActivated) and activated.device_key == "s2"
                assert isinstance(logged_in, DeviceLoggedIn) and logged_in.secure_mode == 3
                assert _presence(online) == (sub_pk, "s2", True, "connected")
                assert response.get_data()["deviceSecret"] == lab.device(sub_pk, "s2").device_secret
            # the gateway's connection ends: its sub-devices go offline with it
            assert _presence(told.get(timeout=WAIT)) == (sub_pk, "s2", False, "gateway offline")


def test_the_tap_is_there_before_start_and_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "lab"
    lab = Lab(data_dir, port=0, rng=random.Random(68))
    tap = lab.tap
    with lab.subscribe(PresenceChanged) as sub:
        with lab:
            pk = lab.create_product("Meters").product_key
            lab.register_device(pk, device_key="m68")
        # a hub that ended without closing its sessions (a crash) left the device "online"
        registry = Registry(data_dir / "registry.sqlite3")
        registry.set_online(pk, "m68")
        registry.close()
        with lab:
            assert lab.tap is tap
            assert _presence(sub.get(timeout=WAIT)) == (pk, "m68", False, "hub restarted")
            assert not lab.device(pk, "m68").online


# -- integration channel ------------------------------------------------------------------


def test_integration_channel_data_is_told(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=69) as lab:
        product = sdk_product(lab)
        pk = product.product_key
        lab.register_device(pk, device_key="int01")
        kinds = [PointStored, EventPosted, AttributesChanged]
        with (
            lab.subscribe(kinds, device_key="int01") as sub,
            sdk_device(lab, pk, "%channel%", product_secret=product.product_secret) as sdk,
        ):
            sdk.connect()
            points = IntMeaturepointPostRequest.builder()
            _ok(sdk.publish(points.add_meaturepoint("int01", T0, {"temp": 20.5}).build()))
            events = IntEventPostRequest.builder()
            _ok(sdk.publish(events.add_event("int01", T0, "overheat", {"temp": 99.0}).build()))
            # the SDK's attribute request always sends [] (protocol 11): publish it raw
            body = {
                "id": "a1",
                "version": "1.0",
                "method": "integration.attribute.post",
                "params": [{"deviceKey": "int01", "attributes": {"site": "east"}}],
            }
            sdk._paho().publish(f"/sys/{pk}/integration/attribute/post", json.dumps(body), qos=1)
            point, event, attributes = _take(sub, 3)
        assert point == PointStored(pk, "int01", "temp", from_epoch_ms(T0), 20.5, None, True)
        assert isinstance(event, EventPosted) and event.severity == "WARN"
        assert dict(event.outputs) == {"temp": 99.0}
        assert isinstance(attributes, AttributesChanged)
        assert dict(attributes.values) == {"site": "east"}


# -- consumers: filters, bounds, failing callbacks, async readers, closing ----------------


def test_filters_by_product_device_point_and_kind(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=70, device_key="a") as (lab, _pk, sdk):
        other = sdk_product(lab, "Other meters").product_key
        device_b = lab.register_device(other, device_key="b")
        subs = {
            "product": lab.subscribe(product_key=other),
            "device": lab.subscribe(device_key="a"),
            "point": lab.subscribe(point_id="power"),
            "kind": lab.subscribe(PresenceChanged),
        }
        with sdk_device(lab, other, "b", device_secret=device_b.device_secret) as sdk_b:
            sdk_b.connect()
            _ok(_post(sdk, T0, temp=1.0, power=2.0))
            _ok(_post(sdk_b, T0, temp=3.0, power=4.0))
        assert _presence(subs["kind"].get(timeout=WAIT)) == (other, "b", True, "connected")
        assert _presence(subs["kind"].get(timeout=WAIT)) == (other, "b", False, "disconnected")
        got = {name: sub.drain() for name, sub in subs.items()}
        for sub in subs.values():
            sub.close()
        assert {e.product_key for e in got["product"]} == {other}
        assert {type(e) for e in got["product"]} >= {DeviceLoggedIn, PointStored}
        assert {e.device_key for e in got["device"]} == {"a"}
        assert [type(e) for e in got["device"]] == [PointStored, PointStored]
        assert sorted((e.device_key, e.value) for e in got["point"]) == [("a", 2.0), ("b", 4.0)]
        assert got["kind"] == []
        # only the lab's own consumers stay: the configuration history (attributes and tags)
        # and the event log (lab.events()); neither takes points
        assert lab.tap.stats.subscriptions == 0 and not lab.tap.wants(PointStored)


def test_a_subscription_nobody_reads_keeps_the_newest_and_never_slows_ingest(
    tmp_path: Path,
) -> None:
    with running_lab(tmp_path / "lab", seed=71) as lab:
        pk = lab.create_product("Passthrough").product_key  # no model: any point ids
        device = lab.register_device(pk, device_key="bulk")
        posts, per_post, maxsize = 40, 100, 250
        with (
            lab.subscribe(PointStored, maxsize=maxsize) as unread,
            sdk_device(lab, pk, "bulk", device_secret=device.device_secret) as sdk,
        ):
            sdk.connect()
            for n in range(posts):
                points = {f"p{i:03d}": n * per_post + i for i in range(per_post)}
                _ok(_post(sdk, T0 + n, **points))  # every post answered 200 at once
            assert unread.received == posts * per_post
            assert len(unread) == maxsize
            assert unread.dropped == posts * per_post - maxsize
            kept = unread.drain()
        # the newest events stayed, in order
        assert [e.value for e in kept] == list(range(posts * per_post - maxsize, posts * per_post))
        assert lab.tap.stats.dropped >= unread.dropped
        assert len(lab.store.query_points("bulk", product_key=pk)) == posts * per_post


def test_a_failing_callback_is_counted_and_the_device_still_gets_its_replies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with connected_meter(tmp_path, seed=72) as (lab, pk, sdk):

        def broken(event: TapEvent) -> None:
            raise RuntimeError("a rule with a bug")

        handle = lab.tap.add_callback(broken, kinds=PointStored)
        with caplog.at_level(logging.ERROR, logger="enos_lab.tap"):
            for n in range(3):
                _ok(_post(sdk, T0 + n, temp=float(n)))
        assert handle.errors == 3 and lab.tap.stats.callback_errors == 3
        assert sum("tap callback" in r.getMessage() for r in caplog.records) == 3
        assert len(lab.store.query_points("meter", product_key=pk)) == 3
        handle.cancel()
        assert not lab.tap.wants(PointStored)


def test_async_iteration_on_another_event_loop(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=73) as (lab, _pk, sdk):
        sub = lab.subscribe(point_id="temp")

        async def read_while_posting() -> list[float]:
            values: list[float] = []
            poster = asyncio.ensure_future(
                asyncio.to_thread(lambda: [_ok(_post(sdk, T0 + n, temp=n / 2)) for n in range(5)])
            )
            async for event in sub:  # woken from the lab's loop thread
                assert isinstance(event, PointStored)
                values.append(event.value)
                if len(values) == 5:
                    sub.close()
            await poster
            return values

        assert asyncio.run(asyncio.wait_for(read_while_posting(), 2 * WAIT)) == [
            0.0,
            0.5,
            1.0,
            1.5,
            2.0,
        ]


def test_closing_unsubscribes_and_ends_readers(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=74) as (lab, _pk, sdk):
        sub = lab.subscribe(PointStored)
        assert lab.tap.wants(PointStored) and lab.tap.stats.subscriptions == 1
        done = threading.Event()
        seen: list[TapEvent] = []

        def read() -> None:
            seen.extend(sub)  # iteration ends when the subscription is closed
            done.set()

        reader = threading.Thread(target=read)
        reader.start()
        _ok(_post(sdk, T0, temp=1.0))
        sub.close()
        reader.join(WAIT)
        assert done.is_set() and [e.value for e in seen] == [1.0]
        assert not lab.tap.wants(PointStored) and lab.tap.stats.subscriptions == 0
        _ok(_post(sdk, T0 + 1, temp=2.0))
        assert sub.received == 1 and sub.drain() == []
        with pytest.raises(ClosedError):
            sub.get(timeout=0.1)
