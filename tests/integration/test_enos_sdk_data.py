"""Upstream data with the official EnOS Python SDK over real TCP: measurepoints (single, batch,
resume), events, attributes, tags, the TSL template and the publish ACL (protocol sections 4, 6,
7 and 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enos.message.upstream.resume.MeasurepointResumeRequest import MeasurepointResumeRequest
from enos.message.upstream.tag.TagDeleteRequest import TagDeleteRequest
from enos.message.upstream.tag.TagQueryRequest import TagQueryRequest
from enos.message.upstream.tag.TagUpdateRequest import TagUpdateRequest
from enos.message.upstream.tsl.AttributeDeleteRequest import AttributeDeleteRequest
from enos.message.upstream.tsl.AttributeQueryRequest import AttributeQueryRequest
from enos.message.upstream.tsl.AttributeUpdateRequest import AttributeUpdateRequest
from enos.message.upstream.tsl.EventPostRequest import EventPostRequest
from enos.message.upstream.tsl.MeasurepointPostBatchRequest import MeasurepointPostBatchRequest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos.message.upstream.tsl.TslTemplateGetRequest import TslTemplateGetRequest
from enos_sdk_helpers import (
    SDK_MODEL,
    SDK_WARNINGS,
    HubWatch,
    connected_meter,
    stored_devices,
)

from enos_lab.clock import from_epoch_ms
from enos_lab.model import render_tsltemplate

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_000_000  # [ms] event times used below (2023-11-14 22:13:20 UTC)


def _ok(response: Any) -> Any:
    assert response.get_code() == 200, (response.get_code(), response.get_message())
    return response


def test_measurepoint_post_is_validated_stored_and_queryable(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=21) as (lab, pk, sdk):
        request = (
            MeasurepointPostRequest.builder()
            .add_measurepoint("temp", 21.5)
            .add_measurepoint("power", {"value": 3.25, "quality": 9})
            .add_measurepoint("state", 2)
            .set_timestamp(T0)
            .build()
        )
        _ok(sdk.publish(request))
        frame = lab.store.query_points("meter", product_key=pk)
        assert list(frame["point_id"]) == ["power", "state", "temp"]
        assert (frame["time"] == from_epoch_ms(T0)).all()
        assert str(frame["time"].dt.tz) == "UTC"
        values = dict(zip(frame["point_id"], frame["value"], strict=True))
        assert values == {"power": 3.25, "state": 2, "temp": 21.5}
        quality = dict(zip(frame["point_id"], frame["quality"], strict=True))
        assert quality["power"] == 9
        assert not frame["resume"].any()

        # A point the model does not define: 1204, and nothing of the message is stored.
        bad = (
            MeasurepointPostRequest.builder()
            .add_measurepoint("temp", 22.0)
            .add_measurepoint("no_such_point", 1)
            .set_timestamp(T0 + 1000)
            .build()
        )
        response = sdk.publish(bad)
        assert response.get_code() == 1204, response.get_message()
        assert len(lab.store.query_points("meter", product_key=pk)) == 3


def test_measurepoint_batch_and_resume(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=22) as (lab, pk, sdk):
        # Entries built without keys: the SDK sends productKey "" / deviceKey "" and the flags
        # as "" (section 7.2); both mean "the topic's device" and "false".
        batch = (
            MeasurepointPostBatchRequest.builder()
            .add_request(
                MeasurepointPostRequest.builder()
                .add_measurepoint("temp", 20.0)
                .set_timestamp(T0 + 10_000)
                .build()
            )
            .add_request(
                MeasurepointPostRequest.builder()
                .add_measurepoint("temp", 20.5)
                .add_measurepoint("state", 1)
                .set_timestamp(T0 + 20_000)
                .build()
            )
            .build()
        )
        _ok(sdk.publish(batch))
        temp = lab.store.query_points("meter", "temp", product_key=pk)
        assert list(temp["time"]) == [from_epoch_ms(T0 + 10_000), from_epoch_ms(T0 + 20_000)]
        assert list(temp["value"]) == [20.0, 20.5]
        assert list(lab.store.query_points("meter", "state", product_key=pk)["value"]) == [1]

        # Resumed (cached, older) data fills history without replacing the latest value.
        resume = (
            MeasurepointResumeRequest.builder()
            .add_measure_point("temp", 18.0)
            .add_measure_point_with_quality("power", 1.5, 9)
            .set_timestamp(T0)
            .build()
        )
        _ok(sdk.publish(resume))
        temp = lab.store.query_points("meter", "temp", product_key=pk)
        assert list(temp["value"]) == [18.0, 20.0, 20.5]
        assert list(temp["resume"]) == [True, False, False]
        latest = lab.store.latest("meter", "temp", product_key=pk)
        assert list(latest["value"]) == [20.5]
        power = lab.store.query_points("meter", "power", product_key=pk)
        assert list(power["value"]) == [1.5] and list(power["quality"]) == [9]


def test_event_post_is_stored(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=23) as (lab, pk, sdk):
        request = (
            EventPostRequest.builder()
            .set_event_identifier("overheat")
            .add_value("temp", 95.5)
            .set_timestamp(T0)
            .build()
        )
        # The SDK publishes events at QoS 0 with the method "thing.event.%s.postoverheat"
        # (section 15.2); the hub routes by topic.
        assert request.get_qos() == 0
        _ok(sdk.publish(request))
        events = lab.store.query_events("meter", product_key=pk)
        assert len(events) == 1
        event = events.iloc[0]
        assert event["event_id"] == "overheat"
        assert event["outputs"] == {"temp": 95.5}
        assert event["time"] == from_epoch_ms(T0)
        assert event["severity"] == "WARN"

        wrong = EventPostRequest.builder().set_event_identifier("overheat").add_value("temp", "hot")
        response = sdk.publish(wrong.set_timestamp(T0 + 1).build())
        assert response.get_code() == 1204, response.get_message()
        assert len(lab.store.query_events("meter", product_key=pk)) == 1


def test_attributes_update_query_delete(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=24) as (lab, pk, sdk):
        update = (
            AttributeUpdateRequest.builder()
            .add_attribute("rated_power", 7.5)
            .add_attribute("site", "north")
            .build()
        )
        _ok(sdk.publish(update))
        assert dict(lab.device(pk, "meter").attributes) == {"rated_power": 7.5, "site": "north"}

        one = _ok(sdk.publish(AttributeQueryRequest.builder().add_attribute("site").build()))
        assert one.get_data() == {"site": "north"}
        every = _ok(sdk.publish(AttributeQueryRequest.builder().query_all().build()))
        assert every.get_data() == {"rated_power": 7.5, "site": "north"}

        _ok(sdk.publish(AttributeDeleteRequest.builder().delete_attribute("site").build()))
        assert dict(lab.device(pk, "meter").attributes) == {"rated_power": 7.5}
        every = _ok(sdk.publish(AttributeQueryRequest.builder().query_all().build()))
        assert every.get_data() == {"rated_power": 7.5}

        wrong = AttributeUpdateRequest.builder().add_attribute("rated_power", "a lot").build()
        response = sdk.publish(wrong)
        assert response.get_code() == 1204, response.get_message()
        assert dict(lab.device(pk, "meter").attributes) == {"rated_power": 7.5}


def test_tags_update_query_delete(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=25) as (lab, pk, sdk):
        # Python may send a tag value as a number; EnOS tag values are strings (section 7.4).
        _ok(
            sdk.publish(TagUpdateRequest.builder().add_tag("site", "A").add_tag("floor", 3).build())
        )
        assert dict(lab.device(pk, "meter").tags) == {"site": "A", "floor": "3"}

        one = _ok(sdk.publish(TagQueryRequest.builder().add_key("site").build()))
        assert one.get_data() == {"site": "A"}
        every = _ok(sdk.publish(TagQueryRequest.builder().query_all().build()))
        assert every.get_data() == {"site": "A", "floor": "3"}

        _ok(sdk.publish(TagDeleteRequest.builder().delete_tag_key("floor").build()))
        assert dict(lab.device(pk, "meter").tags) == {"site": "A"}
        every = _ok(sdk.publish(TagQueryRequest.builder().query_all().build()))
        assert every.get_data() == {"site": "A"}


def test_tsltemplate_get_returns_the_product_model(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=26) as (lab, _pk, sdk):
        response = _ok(sdk.publish(TslTemplateGetRequest.builder().build()))
        data = response.get_data()
        assert data["tslModelId"] == SDK_MODEL["modelId"]
        assert set(response.get_measure_points()) == {"temp", "power", "state"}
        assert set(response.get_attributes()) >= {"rated_power", "site"}
        assert set(response.get_events()) == {"overheat"}
        assert data == render_tsltemplate(lab.models.get(SDK_MODEL["modelId"]))


def test_publishing_for_another_device_gets_1009(tmp_path: Path) -> None:
    with connected_meter(tmp_path, seed=27, device_key="meterA") as (lab, pk, sdk):
        lab.register_device(pk, device_key="meterB")
        watch = HubWatch(lab)
        # The SDK lets a request carry other keys: the topic becomes /sys/{pk}/meterB/...
        foreign = (
            MeasurepointPostRequest.builder()
            .set_product_key(pk)
            .set_device_key("meterB")
            .add_measurepoint("temp", 99.0)
            .set_timestamp(T0)
            .build()
        )
        assert foreign.get_message_topic() == f"/sys/{pk}/meterB/thing/measurepoint/post"
        response = sdk.publish(foreign)
        assert response.get_code() == 1009, (response.get_code(), response.get_message())
        assert (pk, "meterB") not in stored_devices(lab)
        # The violation is answered, not punished: the session stays up and keeps working.
        assert sdk.client.is_connected()
        assert watch.of(pk, "meterA") == []
        own = MeasurepointPostRequest.builder().add_measurepoint("temp", 1.0).set_timestamp(T0)
        _ok(sdk.publish(own.build()))
        assert stored_devices(lab) == {(pk, "meterA")}
