"""The EnOS topic catalogue: every device <-> cloud topic, parsed and formatted in one place.

Routing is by topic, never by ``method`` (SDKs send non-canonical methods; protocol reference
4.7). :func:`parse_topic` anchors every pattern and checks the most specific ones first, so that
``thing/service/measurepoint/set`` is a measurepoint set and never a service called
``measurepoint``. ``{pk}/{dk}`` is the device the message is about (a sub-device when a gateway
speaks for it); login, topology and register topics carry the gateway's own keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..errors import InvalidArgument

__all__ = [
    "REPLY_SUFFIX",
    "Direction",
    "TopicKind",
    "TopicMatch",
    "command_reply_topic",
    "filter_matches_request",
    "parse_topic",
    "reply_topic",
]

REPLY_SUFFIX = "_reply"
"""Every request topic ``T`` is answered on ``T + "_reply"``."""


class Direction(Enum):
    """Who sends the request on a topic."""

    UP = "up"
    """Device -> cloud requests (the hub replies)."""
    DOWN = "down"
    """Cloud -> device commands (the device replies); delivered without subscription."""


class TopicKind(Enum):
    """Every EnOS topic, with its template. ``{id}`` is an event, service or similar id."""

    # -- upstream: /sys/{pk}/{dk}/... -------------------------------------------------------
    MEASUREPOINT_POST = "/sys/{pk}/{dk}/thing/measurepoint/post"
    MEASUREPOINT_POST_BATCH = "/sys/{pk}/{dk}/thing/measurepoint/post/batch"
    MEASUREPOINT_RESUME = "/sys/{pk}/{dk}/thing/measurepoint/resume"
    MEASUREPOINT_RESUME_BATCH = "/sys/{pk}/{dk}/thing/measurepoint/resume/batch"
    EVENT_POST = "/sys/{pk}/{dk}/thing/event/{id}/post"
    MODEL_UP_RAW = "/sys/{pk}/{dk}/thing/model/up_raw"
    ATTRIBUTE_UPDATE = "/sys/{pk}/{dk}/thing/attribute/update"
    ATTRIBUTE_QUERY = "/sys/{pk}/{dk}/thing/attribute/query"
    ATTRIBUTE_DELETE = "/sys/{pk}/{dk}/thing/attribute/delete"
    TAG_UPDATE = "/sys/{pk}/{dk}/thing/tag/update"
    TAG_QUERY = "/sys/{pk}/{dk}/thing/tag/query"
    TAG_DELETE = "/sys/{pk}/{dk}/thing/tag/delete"
    TSL_TEMPLATE_GET = "/sys/{pk}/{dk}/thing/tsltemplate/get"
    DEVICE_REGISTER = "/sys/{pk}/{dk}/thing/device/register"
    TOPO_ADD = "/sys/{pk}/{dk}/thing/topo/add"
    TOPO_DELETE = "/sys/{pk}/{dk}/thing/topo/delete"
    TOPO_GET = "/sys/{pk}/{dk}/thing/topo/get"
    OTA_INFORM = "/sys/{pk}/{dk}/ota/device/inform"
    OTA_PROGRESS = "/sys/{pk}/{dk}/ota/device/progress"
    OTA_GET_VERSION = "/sys/{pk}/{dk}/ota/device/getversion"
    OTA_REQUEST = "/sys/{pk}/{dk}/ota/device/request"
    LOG_POST = "/sys/{pk}/{dk}/thing/log/post"
    NETWORK_STATUS_REPORT = "/sys/{pk}/{dk}/network/status/report"
    CONNECTION_STATE_POST = "/sys/{pk}/{dk}/connection/state/post"
    SUB_DEVICE_LOGIN = "/ext/session/{pk}/{dk}/combine/login"
    SUB_DEVICE_LOGIN_BATCH = "/ext/session/{pk}/{dk}/combine/login/batch"
    SUB_DEVICE_LOGOUT = "/ext/session/{pk}/{dk}/combine/logout"
    # -- upstream, message integration channel: /sys/{pk}/integration/... ------------------
    INTEGRATION_MEASUREPOINT_POST = "/sys/{pk}/integration/measurepoint/post"
    INTEGRATION_EVENT_POST = "/sys/{pk}/integration/event/post"
    INTEGRATION_ATTRIBUTE_POST = "/sys/{pk}/integration/attribute/post"
    INTEGRATION_MODEL_UP_RAW = "/sys/{pk}/integration/model/up_raw"
    # -- downstream commands ----------------------------------------------------------------
    SERVICE_INVOKE = "/sys/{pk}/{dk}/thing/service/{id}"
    MEASUREPOINT_SET = "/sys/{pk}/{dk}/thing/service/measurepoint/set"
    MEASUREPOINT_GET = "/sys/{pk}/{dk}/thing/service/measurepoint/get"
    MODEL_DOWN_RAW = "/sys/{pk}/{dk}/thing/model/down_raw"
    # the lab's own: EnOS documents no downstream attribute topic (enos_lab.control._config)
    ATTRIBUTE_SET = "/sys/{pk}/{dk}/thing/attribute/set"
    OTA_UPGRADE = "/sys/{pk}/{dk}/ota/device/upgrade"
    RRPC_REQUEST = "/sys/{pk}/{dk}/rrpc/request/{id}"
    THING_ENABLE = "/sys/{pk}/{dk}/thing/enable"
    THING_DISABLE = "/sys/{pk}/{dk}/thing/disable"
    THING_DELETE = "/sys/{pk}/{dk}/thing/delete"
    TRAFFIC_CONTROL = "/sys/{pk}/{dk}/traffic/control"
    ACTIVATE_INFO = "/ext/session/{pk}/{dk}/thing/activate/info"
    SUB_DEVICE_ENABLE = "/ext/session/{pk}/{dk}/combine/enable"
    SUB_DEVICE_DISABLE = "/ext/session/{pk}/{dk}/combine/disable"
    SUB_DEVICE_DELETE = "/ext/session/{pk}/{dk}/combine/delete"

    # Members compare by identity; hashing them by identity too (C level, instead of Enum's
    # Python-level hash of the name) makes the per-message set and dict lookups cheap.
    __hash__ = object.__hash__

    @property
    def direction(self) -> Direction:
        """Whether the device (UP) or the cloud (DOWN) sends requests on this topic."""
        return Direction.DOWN if self in _DOWNSTREAM else Direction.UP

    @property
    def is_raw(self) -> bool:
        """Whether payloads on this topic are raw bytes instead of a JSON envelope."""
        return self in _RAW

    @property
    def method(self) -> str | None:
        """The canonical ``method`` of requests on this topic (advisory only)."""
        return _METHODS.get(self)

    def method_for(self, item_id: str = "") -> str:
        """The canonical ``method`` of a request on this topic with ``item_id`` filled in
        (``thing.event.overheat.post``); ``""`` for raw topics, which carry no envelope."""
        method = _METHODS.get(self, "")
        return method % item_id if "%s" in method else method

    def format(self, product_key: str, device_key: str = "", item_id: str = "") -> str:
        """The topic for these keys; ``item_id`` fills ``{id}`` (event, service, rrpc id)."""
        if "{id}" in self.value and not item_id:
            raise InvalidArgument(f"topic {self.name} needs an id for {{id}}")
        if "{dk}" in self.value and not device_key:
            raise InvalidArgument(f"topic {self.name} needs a device key")
        return self.value.format(pk=product_key, dk=device_key, id=item_id)


_DOWNSTREAM = frozenset(
    {
        TopicKind.SERVICE_INVOKE,
        TopicKind.MEASUREPOINT_SET,
        TopicKind.MEASUREPOINT_GET,
        TopicKind.MODEL_DOWN_RAW,
        TopicKind.ATTRIBUTE_SET,
        TopicKind.OTA_UPGRADE,
        TopicKind.RRPC_REQUEST,
        TopicKind.THING_ENABLE,
        TopicKind.THING_DISABLE,
        TopicKind.THING_DELETE,
        TopicKind.TRAFFIC_CONTROL,
        TopicKind.ACTIVATE_INFO,
        TopicKind.SUB_DEVICE_ENABLE,
        TopicKind.SUB_DEVICE_DISABLE,
        TopicKind.SUB_DEVICE_DELETE,
    }
)
_RAW = frozenset(
    {TopicKind.MODEL_UP_RAW, TopicKind.MODEL_DOWN_RAW, TopicKind.INTEGRATION_MODEL_UP_RAW}
)


def _canonical_method(kind: TopicKind) -> str | None:
    """The method name EnOS documents: the topic's path after the keys, joined by dots."""
    if kind in _RAW:
        return None
    if kind is TopicKind.RRPC_REQUEST:
        return "thing.service.%s"
    template: str = kind.value
    tail = template.partition("{dk}/")[2] or template.partition("{pk}/")[2]
    return tail.replace("/", ".").replace("{id}", "%s")


_METHODS: dict[TopicKind, str] = {
    kind: method for kind in TopicKind if (method := _canonical_method(kind)) is not None
}


@dataclass(frozen=True, slots=True)
class TopicMatch:
    """The result of :func:`parse_topic`.

    ``item_id`` is the event id, service id or rrpc id where the topic has one (else ``""``);
    ``device_key`` is ``""`` for integration topics; ``is_reply`` tells a ``..._reply`` topic.
    """

    kind: TopicKind
    product_key: str
    device_key: str
    item_id: str = ""
    is_reply: bool = False

    @property
    def request_topic(self) -> str:
        """The request topic (without ``_reply``)."""
        return self.kind.format(self.product_key, self.device_key, self.item_id)

    @property
    def reply_topic(self) -> str:
        """The topic replies to this request go to (:func:`command_reply_topic`)."""
        return command_reply_topic(self)


# Suffix after /sys/{pk}/{dk}/ -> kind, for the fixed (id-free) /sys topics.
_SYS_SUFFIXES: dict[str, TopicKind] = {}
_SESSION_SUFFIXES: dict[str, TopicKind] = {}
_INTEGRATION_SUFFIXES: dict[str, TopicKind] = {}
for _kind in TopicKind:
    _template = _kind.value
    if "{id}" in _template:
        continue
    if _template.startswith("/sys/{pk}/{dk}/"):
        _SYS_SUFFIXES[_template.removeprefix("/sys/{pk}/{dk}/")] = _kind
    elif _template.startswith("/ext/session/{pk}/{dk}/"):
        _SESSION_SUFFIXES[_template.removeprefix("/ext/session/{pk}/{dk}/")] = _kind
    elif _template.startswith("/sys/{pk}/integration/"):
        _INTEGRATION_SUFFIXES[_template.removeprefix("/sys/{pk}/integration/")] = _kind
# Variants seen in the EnOS documentation for the integration channel (reference section 11).
_INTEGRATION_SUFFIXES["attributes/post"] = TopicKind.INTEGRATION_ATTRIBUTE_POST
_INTEGRATION_SUFFIXES["up_raw"] = TopicKind.INTEGRATION_MODEL_UP_RAW


def parse_topic(topic: str) -> TopicMatch | None:
    """Identify an EnOS topic; ``None`` for any topic outside the catalogue.

    Reply topics (``..._reply``) are recognised too (``is_reply=True``), and so is the legacy
    RRPC answer ``/sys/{pk}/{dk}/rrpc/response/{id}``: the reply of ``RRPC_REQUEST`` (its
    ``request_topic`` is ``rrpc/request/{id}``). Product and device keys must be non-empty
    single levels.
    """
    is_reply = topic.endswith(REPLY_SUFFIX)
    base = topic[: -len(REPLY_SUFFIX)] if is_reply else topic
    if base.startswith("sys/"):  # documented variant without the leading slash
        base = "/" + base
    levels = base.split("/")
    if len(levels) < 5 or levels[0] != "":
        return None
    if levels[1] == "sys":
        pk = levels[2]
        if not pk:
            return None
        if levels[3] == "integration":
            kind = _INTEGRATION_SUFFIXES.get("/".join(levels[4:]))
            return TopicMatch(kind, pk, "", "", is_reply) if kind else None
        dk, rest = levels[3], levels[4:]
        if not dk:
            return None
        kind = _SYS_SUFFIXES.get("/".join(rest))
        if kind is not None:
            return TopicMatch(kind, pk, dk, "", is_reply)
        if len(rest) == 4 and rest[:2] == ["thing", "event"] and rest[3] == "post" and rest[2]:
            return TopicMatch(TopicKind.EVENT_POST, pk, dk, rest[2], is_reply)
        if len(rest) == 3 and rest[:2] == ["thing", "service"] and rest[2]:
            return TopicMatch(TopicKind.SERVICE_INVOKE, pk, dk, rest[2], is_reply)
        if len(rest) == 3 and rest[0] == "rrpc" and rest[2] and not is_reply:
            # the legacy RRPC request and its answer (protocol reference 9.4)
            if rest[1] == "request":
                return TopicMatch(TopicKind.RRPC_REQUEST, pk, dk, rest[2], False)
            if rest[1] == "response":
                return TopicMatch(TopicKind.RRPC_REQUEST, pk, dk, rest[2], True)
        return None
    if levels[1] == "ext" and len(levels) >= 6 and levels[2] == "session":
        pk, dk = levels[3], levels[4]
        kind = _SESSION_SUFFIXES.get("/".join(levels[5:]))
        if kind is None or not pk or not dk:
            return None
        return TopicMatch(kind, pk, dk, "", is_reply)
    return None


def reply_topic(topic: str) -> str:
    """``topic + "_reply"``: where the answer to a request on ``topic`` goes."""
    return topic + REPLY_SUFFIX


def command_reply_topic(match: TopicMatch) -> str:
    """Where the request ``match`` is answered: ``topic + "_reply"``, except for the legacy
    RRPC request ``/sys/{pk}/{dk}/rrpc/request/{id}``, answered on
    ``/sys/{pk}/{dk}/rrpc/response/{id}`` (protocol reference 9.4). The one place that maps a
    request to its reply topic (:attr:`TopicMatch.reply_topic` too)."""
    if match.kind is TopicKind.RRPC_REQUEST:
        return f"/sys/{match.product_key}/{match.device_key}/rrpc/response/{match.item_id}"
    return match.request_topic + REPLY_SUFFIX


# The upstream request templates as levels; None stands for the {id} level.
_REQUEST_LEVELS: tuple[tuple[str | None, ...], ...] = tuple(
    tuple(None if part == "{id}" else part for part in kind.value.split("/"))
    for kind in TopicKind
    if kind.direction is Direction.UP
)
_REQUESTS_BY_SIZE: dict[int, tuple[tuple[str | None, ...], ...]] = {
    size: tuple(t for t in _REQUEST_LEVELS if len(t) == size)
    for size in {len(t) for t in _REQUEST_LEVELS}
}


def filter_matches_request(topic_filter: str, product_key: str, device_key: str) -> bool:
    """Whether ``topic_filter`` matches an upstream request topic of this device, whatever its
    id (an event id ...): a subscription with it would receive what devices send as requests.

    The rules of MQTT 4.7 (``+`` one level, an empty one too; ``#`` the parent level and all
    below), applied to the catalogue's templates with ``{id}`` standing for any non-empty level:
    :func:`enos_lab.mqtt.topic_matches` against the topics the templates stand for gives the
    same answer (the tests check it); this costs a few level comparisons per template instead
    of a topic match per template and id, which matters because it runs for every filter of a
    SUBSCRIBE.
    """
    levels = topic_filter.split("/")
    if levels[-1] == "#":
        # '#' matches its parent level and everything below: templates at least that long
        templates: tuple[tuple[str | None, ...], ...] = _REQUEST_LEVELS
    else:
        templates = _REQUESTS_BY_SIZE.get(len(levels), ())
    return any(_levels_match(levels, template, product_key, device_key) for template in templates)


def _levels_match(
    levels: list[str], template: tuple[str | None, ...], product_key: str, device_key: str
) -> bool:
    size = len(template)
    for i, level in enumerate(levels):
        if level == "#":
            return True  # the template's first i levels matched; '#' takes the rest
        if i >= size:
            return False
        part = template[i]
        if level == "+":
            continue
        if part is None:
            if not level:
                return False  # an id is never empty
            continue
        if part == "{pk}":
            part = product_key
        elif part == "{dk}":
            part = device_key
        if level != part:
            return False
    return len(levels) == size
