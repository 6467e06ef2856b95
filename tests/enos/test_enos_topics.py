"""The EnOS topic catalogue (protocol reference section 6)."""

from __future__ import annotations

import pytest

from enos_lab.enos import Direction, TopicKind, parse_topic, reply_topic
from enos_lab.errors import InvalidArgument


@pytest.mark.parametrize(
    ("topic", "kind", "pk", "dk", "item"),
    [
        ("/sys/pA/d1/thing/measurepoint/post", TopicKind.MEASUREPOINT_POST, "pA", "d1", ""),
        (
            "/sys/pA/d1/thing/measurepoint/post/batch",
            TopicKind.MEASUREPOINT_POST_BATCH,
            "pA",
            "d1",
            "",
        ),
        ("/sys/pA/d1/thing/measurepoint/resume", TopicKind.MEASUREPOINT_RESUME, "pA", "d1", ""),
        ("/sys/pA/d1/thing/event/overheat/post", TopicKind.EVENT_POST, "pA", "d1", "overheat"),
        ("/sys/pA/d1/thing/service/reset", TopicKind.SERVICE_INVOKE, "pA", "d1", "reset"),
        ("/sys/pA/d1/thing/service/measurepoint/set", TopicKind.MEASUREPOINT_SET, "pA", "d1", ""),
        ("/sys/pA/d1/thing/service/measurepoint/get", TopicKind.MEASUREPOINT_GET, "pA", "d1", ""),
        ("/sys/pA/d1/thing/topo/add", TopicKind.TOPO_ADD, "pA", "d1", ""),
        ("/sys/pA/d1/thing/device/register", TopicKind.DEVICE_REGISTER, "pA", "d1", ""),
        ("/sys/pA/d1/ota/device/getversion", TopicKind.OTA_GET_VERSION, "pA", "d1", ""),
        ("/sys/pA/d1/rrpc/request/77", TopicKind.RRPC_REQUEST, "pA", "d1", "77"),
        (
            "/ext/session/pA/d1/combine/login/batch",
            TopicKind.SUB_DEVICE_LOGIN_BATCH,
            "pA",
            "d1",
            "",
        ),
        ("/ext/session/pA/d1/thing/activate/info", TopicKind.ACTIVATE_INFO, "pA", "d1", ""),
        (
            "/sys/pA/integration/measurepoint/post",
            TopicKind.INTEGRATION_MEASUREPOINT_POST,
            "pA",
            "",
            "",
        ),
        # documented variants of the integration channel
        ("sys/pA/integration/attributes/post", TopicKind.INTEGRATION_ATTRIBUTE_POST, "pA", "", ""),
        ("/sys/pA/integration/up_raw", TopicKind.INTEGRATION_MODEL_UP_RAW, "pA", "", ""),
    ],
)
def test_parse_every_family(topic: str, kind: TopicKind, pk: str, dk: str, item: str) -> None:
    match = parse_topic(topic)
    assert match is not None
    assert (match.kind, match.product_key, match.device_key, match.item_id) == (kind, pk, dk, item)
    assert not match.is_reply
    reply = parse_topic(topic + "_reply")
    if kind is not TopicKind.RRPC_REQUEST:
        assert reply is not None and reply.is_reply and reply.kind is kind


@pytest.mark.parametrize(
    "topic",
    [
        "/sys/pA/d1/thing/measurepoint/posts",
        "/sys/pA/d1/thing/measurepoint",
        "/sys//d1/thing/measurepoint/post",
        "/sys/pA//thing/measurepoint/post",
        "/sys/pA/d1/thing/event//post",
        "/sys/pA/d1/thing/service/",
        "/ext/session/pA/d1/combine/unknown",
        "/pA/d1/user/update",
        "a/b",
        "",
    ],
)
def test_topics_outside_the_catalogue(topic: str) -> None:
    assert parse_topic(topic) is None


def test_format_and_reply_topics() -> None:
    topic = TopicKind.EVENT_POST.format("pA", "d1", "overheat")
    assert topic == "/sys/pA/d1/thing/event/overheat/post"
    match = parse_topic(topic)
    assert match is not None
    assert match.reply_topic == reply_topic(topic) == topic + "_reply"
    with pytest.raises(InvalidArgument, match="id"):
        TopicKind.EVENT_POST.format("pA", "d1")
    with pytest.raises(InvalidArgument, match="device key"):
        TopicKind.MEASUREPOINT_POST.format("pA")


def test_directions_methods_and_raw() -> None:
    assert TopicKind.MEASUREPOINT_POST.direction is Direction.UP
    assert TopicKind.SERVICE_INVOKE.direction is Direction.DOWN
    assert TopicKind.ACTIVATE_INFO.direction is Direction.DOWN
    assert TopicKind.MEASUREPOINT_POST_BATCH.method == "thing.measurepoint.post.batch"
    assert TopicKind.SUB_DEVICE_LOGIN.method == "combine.login"
    assert TopicKind.OTA_INFORM.method == "ota.device.inform"
    assert TopicKind.EVENT_POST.method == "thing.event.%s.post"
    assert TopicKind.ACTIVATE_INFO.method == "thing.activate.info"
    assert TopicKind.MODEL_UP_RAW.is_raw and TopicKind.MODEL_UP_RAW.method is None
    assert not TopicKind.MEASUREPOINT_POST.is_raw
