"""The route table: what the IoT hub does with each topic, and the shape of its replies.

Theory of operation
-------------------
A topic is parsed once (:func:`~enos_lab.enos.parse_topic`, by topic, never by ``method``) and
its :class:`Route` cached: the catalogue entry with everything the per-message path needs
precomputed, so that the ACL and the request handler each find it with one dict lookup:

- ``action``: a request from the device (JSON or raw), a device's reply to a command, or
  nothing (a command topic, a reply topic the hub sends on);
- ``scope``: who may send the request (the device for its own topics and its sub-devices',
  only a gateway for its gateway operations, only the product's integration channel);
- ``handler``: the request handler from the handler table (one mapping from
  :class:`~enos_lab.enos.TopicKind` to handler, declared in ``IotHub``; a kind missing from it is
  answered 1200 "not supported");
- ``fast``: a measurepoint post that the fast path may take.

Both caches are bounded (cleared when full). A handler's result is ``(code, data, message)``;
:func:`error_result` turns what a handler raised into that, one rule for every path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ..enos import (
    REPLY_SUFFIX,
    Direction,
    ReplyCode,
    Request,
    TopicKind,
    TopicMatch,
    parse_topic,
)
from ..errors import InvalidArgument, RegistryError, StoreError, ValidationError

if TYPE_CHECKING:
    from ._sessions import Conn

__all__ = [
    "DEVICE_REPLY",
    "IGNORE",
    "OK",
    "OK_HEAD",
    "OK_TAIL",
    "RAW_REQUEST",
    "REQUEST",
    "SCOPE_DEVICE",
    "SCOPE_GATEWAY",
    "SCOPE_INTEGRATION",
    "Handler",
    "Result",
    "Route",
    "Routes",
    "accept",
    "error_result",
]

Result: TypeAlias = tuple[int, Any, str | None]  # code, data, message (None: the code's text)
Handler: TypeAlias = Callable[["Conn", TopicMatch, Request], Awaitable[Result]]

OK: Result = (ReplyCode.SUCCESS, None, None)
# a success reply is these bytes around the JSON of the request id (same as encode_reply)
OK_HEAD = b'{"id":'
OK_TAIL = b',"code":200,"data":{},"message":""}'

# what the message handler does with a topic (decided once per topic)
IGNORE, DEVICE_REPLY, REQUEST, RAW_REQUEST = range(4)
# which connections may send a request (see _acl.may_request)
SCOPE_DEVICE, SCOPE_GATEWAY, SCOPE_INTEGRATION = range(3)

_CACHE_MAX = 20_000  # topics parsed and routed, each cache
_FAST_KINDS = frozenset({TopicKind.MEASUREPOINT_POST, TopicKind.MEASUREPOINT_RESUME})
_GATEWAY_KINDS = frozenset(
    {
        TopicKind.DEVICE_REGISTER,
        TopicKind.TOPO_ADD,
        TopicKind.TOPO_DELETE,
        TopicKind.TOPO_GET,
        TopicKind.SUB_DEVICE_LOGIN,
        TopicKind.SUB_DEVICE_LOGIN_BATCH,
        TopicKind.SUB_DEVICE_LOGOUT,
    }
)
_INTEGRATION_KINDS = frozenset(
    {
        TopicKind.INTEGRATION_MEASUREPOINT_POST,
        TopicKind.INTEGRATION_EVENT_POST,
        TopicKind.INTEGRATION_ATTRIBUTE_POST,
        TopicKind.INTEGRATION_MODEL_UP_RAW,
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """A topic's catalogue entry with everything the per-message path needs precomputed."""

    match: TopicMatch
    action: int
    scope: int
    handler: Handler | None
    reply_topic: str
    fast: bool = False  # a measurepoint post that Measurepoints.fast_post may take


class Routes:
    """Parsed topics and their routes, cached; ``handlers`` is the handler table."""

    __slots__ = ("_handlers", "_parsed", "_routes")

    def __init__(self, handlers: Mapping[TopicKind, Handler]) -> None:
        self._handlers = handlers
        self._parsed: dict[str, TopicMatch | None] = {}
        self._routes: dict[str, Route | None] = {}

    def parse(self, topic: str) -> TopicMatch | None:
        """The cached :func:`~enos_lab.enos.parse_topic` of ``topic`` (or topic filter)."""
        cache = self._parsed
        try:
            return cache[topic]
        except KeyError:
            pass
        match = parse_topic(topic)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[topic] = match
        return match

    def route(self, topic: str) -> Route | None:
        """The cached route of ``topic`` (None outside the EnOS catalogue)."""
        routes = self._routes
        try:
            return routes[topic]
        except KeyError:
            pass
        match = self.parse(topic)
        route = None if match is None else self.make_route(match, topic + REPLY_SUFFIX)
        if len(routes) >= _CACHE_MAX:
            routes.clear()
        routes[topic] = route
        return route

    def make_route(self, match: TopicMatch, reply_topic: str) -> Route:
        """The route of a parsed topic whose replies go to ``reply_topic``."""
        kind = match.kind
        up = kind.direction is Direction.UP
        if match.is_reply:
            action = IGNORE if up else DEVICE_REPLY
        elif not up:
            action = IGNORE
        else:
            action = RAW_REQUEST if kind.is_raw else REQUEST
        scope = SCOPE_DEVICE
        if kind in _INTEGRATION_KINDS:
            scope = SCOPE_INTEGRATION
        elif kind in _GATEWAY_KINDS:
            scope = SCOPE_GATEWAY
        fast = action == REQUEST and kind in _FAST_KINDS
        return Route(match, action, scope, self._handlers.get(kind), reply_topic, fast)


async def accept(conn: Conn, match: TopicMatch, request: Request) -> Result:
    """The handler of requests answered 200 with nothing kept (logs, network status, ...)."""
    return OK


def error_result(exc: BaseException) -> Result:
    """The reply to a request whose handling raised ``exc`` (never a ClosedError: those leave the
    request unanswered and unacknowledged), on the general path (``Requests``) and the
    measurepoint fast path alike. Each family its own reply:

    - :class:`~enos_lab.errors.ValidationError`: its own code (1204, 1206, ...);
    - :class:`~enos_lab.errors.InvalidArgument`: 1200 naming the value the registry or the
      store refused;
    - :class:`~enos_lab.errors.StoreError`: 1200 ``storage failed: ...`` (checked before
      RegistryError: the store's own errors are never answered as the registry's);
    - :class:`~enos_lab.errors.RegistryError` (unknown or taken ids, refused operations): 1200
      with the registry's words;
    - anything else is a bug, not the device's fault: 1200 ``internal error`` (what EnOS
      answers a request it cannot process).
    """
    if isinstance(exc, ValidationError):
        return (exc.code, None, str(exc))
    if isinstance(exc, InvalidArgument):
        return (ReplyCode.PARSE_ERROR, None, str(exc))
    if isinstance(exc, StoreError):
        return (ReplyCode.PARSE_ERROR, None, f"storage failed: {exc}")
    if isinstance(exc, RegistryError):
        return (ReplyCode.PARSE_ERROR, None, str(exc))
    return (ReplyCode.PARSE_ERROR, None, "internal error")
