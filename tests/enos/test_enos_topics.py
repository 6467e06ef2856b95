"""The EnOS topic catalogue (protocol reference section 6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.enos import (
    Direction,
    TopicKind,
    TopicMatch,
    command_reply_topic,
    filter_matches_request,
    parse_topic,
    reply_topic,
)
from enos_lab.errors import InvalidArgument, TopicError
from enos_lab.mqtt import topic_matches, validate_topic_filter


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
    reply = parse_topic(match.reply_topic)
    assert reply is not None and reply.is_reply and reply.kind is kind
    assert (reply.product_key, reply.device_key, reply.item_id) == (pk, dk, item)
    assert reply.request_topic == match.request_topic


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


def test_the_rrpc_response_is_the_reply_of_its_request() -> None:
    response = parse_topic("/sys/pA/d1/rrpc/response/42")
    assert response == TopicMatch(TopicKind.RRPC_REQUEST, "pA", "d1", "42", is_reply=True)
    assert response.request_topic == "/sys/pA/d1/rrpc/request/42"
    assert parse_topic("sys/pA/d1/rrpc/response/42") == response


@pytest.mark.parametrize(
    "topic",
    [
        "/sys/pA/d1/rrpc/request/42_reply",  # answered on rrpc/response, never on _reply
        "/sys/pA/d1/rrpc/response/42_reply",
        "/sys/pA/d1/rrpc/response/",
        "/sys/pA/d1/rrpc/response",
        "/sys/pA/d1/rrpc/response/42/x",
        "/sys/pA/d1/rrpc/other/42",
    ],
)
def test_rrpc_topics_outside_the_catalogue(topic: str) -> None:
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


def test_method_for_fills_the_id() -> None:
    assert TopicKind.EVENT_POST.method_for("overheat") == "thing.event.overheat.post"
    assert TopicKind.SERVICE_INVOKE.method_for("reset") == "thing.service.reset"
    assert TopicKind.MEASUREPOINT_POST.method_for() == "thing.measurepoint.post"
    assert TopicKind.MEASUREPOINT_POST.method_for("ignored") == "thing.measurepoint.post"
    assert TopicKind.MODEL_UP_RAW.method_for() == ""  # raw topics carry no envelope


def test_command_reply_topic_answers_rrpc_on_its_response_topic() -> None:
    # protocol reference 9.4: rrpc/request/{id} is answered on rrpc/response/{id}
    rrpc = parse_topic("/sys/pA/d1/rrpc/request/42")
    assert rrpc is not None
    assert command_reply_topic(rrpc) == rrpc.reply_topic == "/sys/pA/d1/rrpc/response/42"
    service = parse_topic("/sys/pA/d1/thing/service/reset")
    assert service is not None
    assert command_reply_topic(service) == "/sys/pA/d1/thing/service/reset_reply"


# --- filters that would receive requests --------------------------------------------------

_UP_KINDS = [kind for kind in TopicKind if kind.direction is Direction.UP]


def _brute_force(topic_filter: str, pk: str, dk: str) -> bool:
    """The one matcher over the request topics the templates stand for; the id takes every
    literal level of the filter (the only ids a literal level can match) and one other."""
    ids = {level for level in topic_filter.split("/") if level not in ("+", "#", "")} | {"zz"}
    return any(
        topic_matches(topic_filter, kind.format(pk, dk, item)) for kind in _UP_KINDS for item in ids
    )


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("/sys/pA/d1/#", True),
        ("/sys/pA/d1/thing/#", True),
        ("/sys/pA/d1/thing/measurepoint/+", True),
        ("/sys/pA/d1/thing/event/overheat/+", True),  # the event id is any level
        ("/sys/pA/d1/thing/event/+/post", True),
        ("/sys/pA/d1/thing/event/+/post_reply", False),
        ("/sys/pA/d1/thing/+/post_reply", False),
        ("/sys/pA/d1/thing/service/#", False),  # commands, not requests
        ("/sys/pA/d2/#", False),
        ("/sys/+/d1/thing/measurepoint/post", True),
        ("/ext/session/pA/d1/combine/#", True),
        ("/ext/session/pA/d1/thing/activate/#", False),
        ("/sys/pA/integration/+/post", True),
        ("/sys/pA/d1/thing/measurepoint/post/batch/#", True),  # '#' takes the parent level
        ("/sys/pA/d1/thing/measurepoint/post/batch/x/#", False),
        ("#", True),
        ("+/#", True),
    ],
)
def test_filter_matches_request(topic_filter: str, expected: bool) -> None:
    assert filter_matches_request(topic_filter, "pA", "d1") is expected
    assert _brute_force(topic_filter, "pA", "d1") is expected


_LEVEL = st.sampled_from(
    ["", "+", "#", "sys", "ext", "session", "pA", "d1", "d2", "integration", "thing", "event",
     "measurepoint", "post", "batch", "resume", "combine", "login", "ota", "device", "x"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_LEVEL, min_size=1, max_size=8))
def test_filter_matches_request_agrees_with_topic_matches(levels: list[str]) -> None:
    topic_filter = "/".join(levels)
    try:
        validate_topic_filter(topic_filter)
    except TopicError:
        return
    assert filter_matches_request(topic_filter, "pA", "d1") is _brute_force(
        topic_filter, "pA", "d1"
    )
