"""The EnOS IoT Hub service layer: turns the MQTT hub into an EnOS device endpoint.

Theory of operation
-------------------
:class:`IotHub` plugs into a :class:`~enos_lab.hub.Hub` at four points:

- **authenticator** (:meth:`IotHub.authenticate`): the registry's login decision plus the login
  throttle (failed logins counted per source address and user name, so that bad logins from
  one address never refuse a correct one from another); every refusal is CONNACK 5 (4 for an
  unparseable username). Every refusal goes into the login log
  (:meth:`IotHub.refused_logins`); a block that starts is logged at WARNING, other refusals at
  INFO. The identity goes into
  ``ClientInfo.attributes``: that mapping is the connection's own record (``_Conn``), the one
  small object the services keep per connection. Logins shaped like the official Python SDK's
  (a timestamp with a decimal point) are answered after ``python_sdk_connack_delay``, all
  others at once (protocol reference 4, item 9).
- **listener** (connected / disconnected events): one connection per device (a new login of
  the same device closes the old connection, whose later disconnect no longer counts), the
  presence log, dynamic activation pushes, sub-devices going offline with their gateway.
- **authoriser**: deny by default. A device may use its own ``/sys/{pk}/{dk}/...`` and
  ``/ext/session/{pk}/{dk}/...`` topics, those of sub-devices logged in through it, the
  integration topics of its product (secure mode 4) and its product's custom topics. Upstream
  *request* topics pass the MQTT layer so that the request handler can answer a violation with
  code 1009 on ``T_reply`` echoing the request id (the authoriser cannot see the payload); the
  handler then drops the request.
- **handler**: one call per accepted PUBLISH, dispatched by :func:`~enos_lab.enos.parse_topic`
  (by topic, never by ``method``). It returns an awaitable so that the PUBACK goes out only
  after the store committed and the reply was published.

Replies are ``{"id": <echo>, "code": <int>, "data": .., "message": ..}`` on ``T + "_reply"``,
published through the hub (so only subscribers get them) at QoS min(request QoS, 1). Commands
go to a connection without subscription (:meth:`~enos_lab.hub.Hub.deliver`).

The per-message path runs no SQL: product and model records (shared by every connection of a
product) are cached on the connection when it logs in, and on the sub-device entry when a
sub-device logs in.

Measurepoint posts (``measurepoint/post`` and ``resume``) take a fast path without a coroutine
per message (:meth:`IotHub._fast_post`): the rows of every post handled in one event-loop
iteration go to the store as one append; after the commit one task publishes the batch's replies
(:meth:`~enos_lab.hub.Hub.publish_nowait`, no coroutine per reply) and then resolves the one
future of the batch, on which the hub waits before each PUBACK. Both paths decode payloads with
:func:`~enos_lab.enos.decode_payload` (strict JSON, bounded nesting: 1220 otherwise). Any post
that is not well-formed and valid takes the general path, which gives the error replies.

A bad message fails alone, with its own reply code, and the connection stays:

- what the store cannot keep never reaches it: event times outside
  :data:`~enos_lab.store.MIN_EVENT_MS` .. :data:`~enos_lab.store.MAX_EVENT_MS` (1206 for
  measurepoints, 1204 for events), identifiers of passthrough data that are not EnOS
  identifiers (1204), qualities outside 0..9 (1204);
- if the combined append of a batch fails all the same, the rows of each request of the batch
  are appended again on their own (:class:`_PointBatcher`), so that only the culprit gets the
  error reply;
- an unexpected exception in a handler is logged with its traceback and answered with 1200
  "internal error" (the code EnOS gives requests it cannot process; the cause is ours, not the
  device's), never with a dropped connection.

Publishes to ``/sys/`` and ``/ext/`` topics outside the catalogue are dropped (the authoriser
refuses them) and logged at WARNING: the first few of each connection, then a count at every
power of ten.

Presence changes are queued in the registry and written once per event-loop iteration (one
transaction for all logins of the iteration); every other registry access writes them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring as _encode_json_str
from typing import Any, TypeAlias

import pandas as pd

from ..clock import Clock, SystemClock, to_epoch_ms
from ..enos import (
    MAX_PAYLOAD_SIZE,
    REPLY_SUFFIX,
    Direction,
    EnvelopeError,
    Reply,
    ReplyCode,
    Request,
    TopicKind,
    TopicMatch,
    decode_payload,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    filter_matches_request,
    parse_topic,
)
from ..errors import (
    AlreadyExists,
    ClosedError,
    DeviceOffline,
    InvalidArgument,
    ModelError,
    NotFound,
    RegistryError,
    StoreError,
    ValidationError,
)
from ..hub import (
    AuthResult,
    ClientConnected,
    ClientDisconnected,
    ClientInfo,
    ConnectRequest,
    Decision,
    DisconnectReason,
    Hub,
    HubEvent,
    Message,
    SessionKey,
)
from ..hub._types import _make_message
from ..model import (
    QUALITY_MAX,
    ModelCatalog,
    ThingModel,
    check_identifier,
    normalise_tags,
    render_tsltemplate,
    valid_quality,
)
from ..mqtt import NO_PROPERTIES, topic_matches
from ..registry import (
    AuthDecision,
    DataFormat,
    Device,
    LoginBlock,
    LoginThrottle,
    NodeType,
    Product,
    Registry,
    authenticate,
    authenticate_sub_device,
)
from ..store import (
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    AttributeRow,
    EventRow,
    PointRow,
    TimeSeriesStore,
)
from ._config import IotHubConfig, OtaHandler, RawCodec
from ._logins import LoginLog, login_source, logins_frame, username_keys

__all__ = ["IotHub", "MemoryOta"]

log = logging.getLogger("enos_lab.iothub")

_Keys: TypeAlias = tuple[str, str]
_Result: TypeAlias = tuple[int, Any, str | None]  # code, data, message (None: the code's text)
_OK: _Result = (ReplyCode.SUCCESS, None, None)
# a success reply is these bytes around the JSON of the request id (same as encode_reply)
_OK_HEAD = b'{"id":'
_OK_TAIL = b',"code":200,"data":{},"message":""}'

_PARSE_CACHE_MAX = 20_000
_TIME_DIGITS = 19  # digits of a ``time`` string worth converting (int64; the range is 13)
_TIME_RULE = (
    f"time must be epoch milliseconds in {MIN_EVENT_MS}..{MAX_EVENT_MS} "
    "(1677-09-21..2262-04-11 UTC)"
)
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
# presence reasons recorded in the registry (the Lab's presence table)
_REASONS = {
    DisconnectReason.CLIENT_DISCONNECT: "disconnected",
    DisconnectReason.KEEP_ALIVE_TIMEOUT: "keep-alive timeout",
    DisconnectReason.TAKEN_OVER: "taken over",
    DisconnectReason.PROTOCOL_ERROR: "disconnected",
    DisconnectReason.CONNECTION_LOST: "disconnected",
    DisconnectReason.KICKED: "kicked",
    DisconnectReason.SERVER_SHUTDOWN: "disconnected",
}
# canonical method -> kind, for envelopes decoded from raw (custom format) payloads
_UP_METHODS: dict[str, TopicKind] = {
    kind.method: kind
    for kind in TopicKind
    if kind.direction is Direction.UP and kind.method is not None and "%s" not in kind.method
}


_Handler: TypeAlias = Callable[["_Conn", TopicMatch, Request], Awaitable[_Result]]

# what the message handler does with a topic (decided once per topic, see IotHub._route)
_IGNORE, _DEVICE_REPLY, _REQUEST, _RAW_REQUEST = range(4)
# which connections may send a request (IotHub._may_request)
_SCOPE_DEVICE, _SCOPE_GATEWAY, _SCOPE_INTEGRATION = range(3)


@dataclass(frozen=True, slots=True)
class _Route:
    """A topic's catalogue entry with everything the per-message path needs precomputed."""

    match: TopicMatch
    action: int
    scope: int
    handler: _Handler | None
    reply_topic: str
    fast: bool = False  # a measurepoint post that IotHub._fast_post may take


class MemoryOta:
    """The default OTA handler: remembers reported versions; there are no upgrade tasks.

    ``progress`` answers 764 (no task) and ``get_versions`` an empty list. Replace it through
    :attr:`IotHub.ota` to run upgrade campaigns.
    """

    def __init__(self) -> None:
        self.versions: dict[_Keys, str] = {}
        """Firmware version last reported per ``(product_key, device_key)``."""

    def inform(self, product_key: str, device_key: str, version: str) -> None:
        """Remember the reported version."""
        self.versions[(product_key, device_key)] = version

    def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
        """No upgrade task exists: 764."""
        return int(ReplyCode.OTA_TASK_NOT_FOUND)

    def get_versions(self, product_key: str, device_key: str) -> list[dict[str, object]]:
        """No firmware is offered."""
        return []


class _Target:
    """A device a connection may speak for, with its cached records.

    Only the keys of the device are kept (the device record is read from the registry where a
    handler needs it); ``product`` and ``model`` are shared by every target of the product.
    """

    __slots__ = ("ident", "model", "product")

    def __init__(self, product: Product, ident: _Keys, model: ThingModel | None) -> None:
        self.product = product
        self.ident = ident  # (product_key, device_key)
        self.model = model


_Custom: TypeAlias = tuple[tuple[str, bool, bool], ...]  # topic, may publish, may subscribe
# shared empty containers of idle connections (replaced by a connection's own on first write)
_NO_SUBS: dict[_Keys, _Target] = {}
_NO_CUSTOM: _Custom = ()
_IDENTITY_KEYS = ("product_key", "device_key", "secure_mode", "integration", "activation", "tls")


class _Conn(_Target, Mapping[str, object]):
    """One authenticated connection (a device, a mode-3 activation session or a channel).

    Made by :meth:`IotHub.authenticate` and handed to the hub as the login's
    ``ClientInfo.attributes`` (read-only mapping of product_key, device_key, secure_mode,
    integration, activation, tls), so one small object per connection holds everything the
    services keep about it. A device connection is its own :class:`_Target`.
    """

    __slots__ = (
        "activation",
        "activation_done",
        "checked",
        "custom",
        "filters",
        "info",
        "integration",
        "online",
        "secure_mode",
        "subs",
        "tls",
    )

    def __init__(  # noqa: PLR0917
        self,
        product: Product,
        keys: _Keys,
        secure_mode: int,
        integration: bool,
        activation: bool,
        tls: bool,
    ) -> None:
        super().__init__(product, keys, None)
        self.secure_mode = secure_mode
        self.integration = integration
        self.activation = activation
        self.tls = tls
        self.info: ClientInfo | None = None  # set when the hub accepted the connection
        # the registry records were read in the callback that accepts the connection
        self.checked = False
        self.online = False  # recorded online in the registry
        # logged-in sub-devices; the shared empty _NO_SUBS until the first sub-device logs in
        self.subs: dict[_Keys, _Target] = _NO_SUBS
        # subscriptions remembered for the 1009 answer (see IotHub._subscribed), at most
        # _MAX_FILTERS, the oldest forgotten first (a tuple is smallest)
        self.filters: tuple[str, ...] = ()
        self.custom: _Custom = _NO_CUSTOM
        self.activation_done: asyncio.Event | None = None

    @property
    def product_key(self) -> str:
        return self.ident[0]

    @property
    def device_key(self) -> str:
        return self.ident[1]

    @property
    def own(self) -> _Target | None:
        """The connection's own device; None for an integration channel."""
        return None if self.integration else self

    @property
    def client_id(self) -> str:
        info = self.info
        assert info is not None
        return info.client_id

    @property
    def key(self) -> SessionKey:
        """The connection's session key in the hub (``(identity, client_id)``)."""
        info = self.info
        assert info is not None
        return info.session_key

    def target(self, keys: _Keys) -> _Target | None:
        if not self.integration and self.ident == keys:
            return self
        return self.subs.get(keys)

    # read-only mapping (ClientInfo.attributes)
    def __getitem__(self, key: str) -> object:
        if key in _IDENTITY_KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_IDENTITY_KEYS)

    def __len__(self) -> int:
        return len(_IDENTITY_KEYS)

    def __repr__(self) -> str:
        return repr(dict(self))


def _custom_topics(product: Product, device_key: str) -> _Custom:
    if not product.custom_topics:
        return _NO_CUSTOM
    return tuple(
        (
            template.replace("{productKey}", product.product_key).replace(
                "{deviceKey}", device_key
            ),
            permission.can_publish,
            permission.can_subscribe,
        )
        for template, permission in product.custom_topics.items()
    )


def python_sdk_login(timestamp: str) -> bool:
    """Whether a login's timestamp has the shape only the official Python SDK sends.

    That SDK builds it as ``str(time.time() * 1000)``, a float with a decimal point; the Java,
    Node and C SDKs send integers (or constants). Only that SDK needs its CONNACK delayed: its
    ``connect()`` starts the network loop before it waits for the CONNACK, and a CONNACK
    processed before that wait is lost (protocol reference 4, item 9).
    """
    return "." in timestamp


async def _after(delay: float, result: AuthResult) -> AuthResult:
    """``result`` after ``delay`` seconds (see :func:`python_sdk_login`). [s]"""
    await asyncio.sleep(delay)
    return result


def _blank(value: object) -> bool:
    return value is None or value == ""


# One measurepoint request on the fast path, waiting for the commit of its batch:
# (reply topic, success reply, request id, request QoS, its rows)
_Post: TypeAlias = tuple[str, bytes, Any, int, list[Any]]
# One request of the general path in a batch: its rows and the future its handler awaits
_Add: TypeAlias = tuple[list[Any], asyncio.Future[int]]


class _PointBatcher:
    """Collects the measurepoint rows of every request handled in one event-loop iteration and
    hands them to the store as one append.

    The store groups concurrent appends too, but each append has a fixed cost on the event loop
    (encoding, futures, a task); one append per iteration keeps that cost per batch, not per
    message. Two kinds of callers: :meth:`add` (the general request path awaits the commit) and
    :meth:`add_post` (the measurepoint fast path): the batch's commit task publishes the replies
    of its posts - success after the commit, the storage error otherwise - and then resolves
    the batch's one future, on which the hub waits before it acknowledges each PUBLISH. Every post
    of every connection handled in one iteration (with a pipelining hub, many of one
    connection) is committed by one append.

    A bad request fails alone: when the combined append fails, the rows of each request of the
    batch are appended again on their own, concurrently (the store's writer commits them as a
    group and, when that fails, batch by batch), so that only the requests whose rows the store
    refuses get its error; the others are stored and answered 200. The common case costs
    nothing extra (a post's rows travel in its reply tuple).
    """

    __slots__ = ("_adds", "_owner", "_posts", "_replied", "_rows", "_scheduled", "_store", "_tasks")

    def __init__(
        self, owner: IotHub, store: TimeSeriesStore, tasks: set[asyncio.Task[Any]]
    ) -> None:
        self._owner = owner
        self._store = store
        self._tasks = tasks
        self._rows: list[Any] = []
        self._posts: list[_Post] = []
        self._adds: list[_Add] = []
        self._scheduled = False  # a flush of this batch is scheduled
        self._replied: asyncio.Future[None] | None = None  # the posts of this batch answered

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return loop

    def add(self, rows: list[Any]) -> asyncio.Future[int]:
        """Queue ``rows``; the returned future gives their count once they are committed, or
        the store's error for them."""
        future: asyncio.Future[int] = self._loop().create_future()
        self._adds.append((rows, future))
        self._rows.extend(rows)
        return future

    def add_post(self, post: _Post) -> asyncio.Future[None]:
        """Queue the rows of one request (the last item of ``post``); the returned future
        (shared by the batch) resolves once the batch is committed and every reply of the
        batch published."""
        replied = self._replied
        if replied is None:
            replied = self._replied = self._loop().create_future()
        self._rows.extend(post[4])
        self._posts.append(post)
        return replied

    def _flush(self) -> None:
        rows, posts, adds, replied = self._rows, self._posts, self._adds, self._replied
        self._rows, self._posts, self._adds, self._replied = [], [], [], None
        self._scheduled = False
        task = asyncio.get_running_loop().create_task(self._commit(rows, posts, adds, replied))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit(
        self,
        rows: list[Any],
        posts: list[_Post],
        adds: list[_Add],
        replied: asyncio.Future[None] | None,
    ) -> None:
        try:
            await self._store.append_points_async(rows)
        except Exception as exc:
            requests = len(posts) + len(adds)
            results: list[int | BaseException] = [exc] * requests
            if requests > 1 and not isinstance(exc, ClosedError):
                log.warning(
                    "storing a batch of %d measurepoint requests failed (%s); storing each alone",
                    requests,
                    exc,
                )
                parts = [post[4] for post in posts] + [add[0] for add in adds]
                results = await asyncio.gather(
                    *(self._store.append_points_async(part) for part in parts),
                    return_exceptions=True,
                )
            count = len(posts)
            for (_, future), result in zip(adds, results[count:], strict=True):
                if future.done():
                    continue
                if isinstance(result, asyncio.CancelledError):
                    future.cancel()
                elif isinstance(result, BaseException):
                    future.set_exception(result)
                    future.exception()  # retrieved here: its handler gets it all the same
                else:
                    future.set_result(result)
            if replied is not None:
                self._owner._answer_posts(posts, results[:count], replied)
            return
        for part, future in adds:
            if not future.done():
                future.set_result(len(part))
        if replied is not None:
            self._owner._answer_posts(posts, None, replied)


class IotHub:
    """EnOS IoT Hub services on top of a :class:`~enos_lab.hub.Hub`.

    Implements the hub's Authenticator and Authoriser protocols; :meth:`attach` adds its message
    handler and event listener. Pass the same object as ``authenticator`` and ``authoriser``
    when constructing the hub. Attributes: ``registry``, ``models``, ``store`` and ``config`` as
    given; ``ota`` is the replaceable OTA handler (default :class:`MemoryOta`).

    Presence reasons written to the registry: connected, disconnected, kicked, keep-alive
    timeout, taken over, gateway offline, logged out, disabled, deleted, hub restarted (written
    by :meth:`attach` for devices a crashed hub left online).
    """

    def __init__(
        self,
        registry: Registry,
        models: ModelCatalog,
        store: TimeSeriesStore,
        *,
        clock: Clock | None = None,
        config: IotHubConfig = IotHubConfig(),  # noqa: B008 - frozen
    ) -> None:
        self.registry = registry
        self.models = models
        self.store = store
        self.config = config
        self.ota: OtaHandler = MemoryOta()
        self._clock = clock or SystemClock()
        self._throttle = LoginThrottle(
            max_failures=config.max_login_failures,
            window=config.login_failure_window,
            block=config.login_block,
            max_keys=config.max_login_tracked,
            clock=self._clock,
        )
        self._logins = LoginLog(config.login_log_size, self._clock)
        self._hub: Hub | None = None
        self._codecs: dict[str, RawCodec] = {}
        self._conns: dict[SessionKey, _Conn] = {}  # session key -> connection
        self._owner: dict[_Keys, SessionKey] = {}  # device -> session key of its connection
        self._gateway_of: dict[_Keys, SessionKey] = {}  # logged-in sub-device -> its gateway's
        self._kick_reasons: dict[SessionKey, str] = {}  # session key -> presence reason of a kick
        # session key -> publishes of the connection to topics outside the EnOS catalogue
        self._unknown_topics: dict[SessionKey, int] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[Reply]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._parsed: dict[str, TopicMatch | None] = {}
        self._points = _PointBatcher(self, store, self._tasks)
        self._routes: dict[str, _Route | None] = {}
        self._products: dict[str, Product] = {}  # shared product records (see _share)
        self._presence_flush = False  # a flush of queued presence changes is scheduled
        self._dispatch: dict[TopicKind, _Handler]
        self._dispatch = {
            TopicKind.MEASUREPOINT_POST: self._measurepoint_post,
            TopicKind.MEASUREPOINT_RESUME: self._measurepoint_post,
            TopicKind.MEASUREPOINT_POST_BATCH: self._measurepoint_batch,
            TopicKind.MEASUREPOINT_RESUME_BATCH: self._measurepoint_batch,
            TopicKind.EVENT_POST: self._event_post,
            TopicKind.ATTRIBUTE_UPDATE: self._attribute_update,
            TopicKind.ATTRIBUTE_QUERY: self._attribute_query,
            TopicKind.ATTRIBUTE_DELETE: self._attribute_delete,
            TopicKind.TAG_UPDATE: self._tag_update,
            TopicKind.TAG_QUERY: self._tag_query,
            TopicKind.TAG_DELETE: self._tag_delete,
            TopicKind.TSL_TEMPLATE_GET: self._tsl_template,
            TopicKind.DEVICE_REGISTER: self._device_register,
            TopicKind.TOPO_ADD: self._topo_add,
            TopicKind.TOPO_DELETE: self._topo_delete,
            TopicKind.TOPO_GET: self._topo_get,
            TopicKind.SUB_DEVICE_LOGIN: self._sub_login,
            TopicKind.SUB_DEVICE_LOGIN_BATCH: self._sub_login_batch,
            TopicKind.SUB_DEVICE_LOGOUT: self._sub_logout,
            TopicKind.OTA_INFORM: self._ota_inform,
            TopicKind.OTA_PROGRESS: self._ota_progress,
            TopicKind.OTA_GET_VERSION: self._ota_get_version,
            TopicKind.OTA_REQUEST: self._accept,
            TopicKind.LOG_POST: self._accept,
            TopicKind.NETWORK_STATUS_REPORT: self._accept,
            TopicKind.CONNECTION_STATE_POST: self._accept,
            TopicKind.INTEGRATION_MEASUREPOINT_POST: self._integration_measurepoints,
            TopicKind.INTEGRATION_EVENT_POST: self._integration_events,
            TopicKind.INTEGRATION_ATTRIBUTE_POST: self._integration_attributes,
        }

    # -- wiring ----------------------------------------------------------------------------

    def attach(self, hub: Hub) -> None:
        """Add this service's message handler and event listener to ``hub`` (before start).

        Devices the registry still marks online get an offline presence row, reason
        ``hub restarted``: no session outlives the hub that held it.
        """
        self._hub = hub
        hub.add_handler(self._on_message)
        hub.add_listener(self._on_event)
        # no session survives a restart: close what a hub that crashed left "online"
        self.registry.close_open_presence("hub restarted")

    def register_codec(self, product_key: str, codec: RawCodec) -> None:
        """Use ``codec`` for the raw payloads of a CUSTOM-format product."""
        self._codecs[product_key] = codec

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("iothub task %s failed", task.get_name(), exc_info=task.exception())

    def _parse(self, topic: str) -> TopicMatch | None:
        cache = self._parsed
        try:
            return cache[topic]
        except KeyError:
            pass
        match = parse_topic(topic)
        if len(cache) >= _PARSE_CACHE_MAX:
            cache.clear()
        cache[topic] = match
        return match

    def _route(self, topic: str) -> _Route | None:
        """The cached route of ``topic`` (None outside the EnOS catalogue)."""
        routes = self._routes
        try:
            return routes[topic]
        except KeyError:
            pass
        match = self._parse(topic)
        route = None if match is None else self._make_route(match, topic + REPLY_SUFFIX)
        if len(routes) >= _PARSE_CACHE_MAX:
            routes.clear()
        routes[topic] = route
        return route

    def _make_route(self, match: TopicMatch, reply_topic: str) -> _Route:
        kind = match.kind
        up = kind.direction is Direction.UP
        if match.is_reply:
            action = _IGNORE if up else _DEVICE_REPLY
        elif not up:
            action = _IGNORE
        else:
            action = _RAW_REQUEST if kind.is_raw else _REQUEST
        scope = _SCOPE_DEVICE
        if kind in _INTEGRATION_KINDS:
            scope = _SCOPE_INTEGRATION
        elif kind in _GATEWAY_KINDS:
            scope = _SCOPE_GATEWAY
        fast = action == _REQUEST and kind in _FAST_KINDS
        return _Route(match, action, scope, self._dispatch.get(kind), reply_topic, fast)

    def _model(self, product: Product) -> ThingModel | None:
        if product.model_id is None:
            return None
        try:
            return self.models.get(product.model_id)
        except NotFound:
            log.warning(
                "product %s names model %r, which is not in the catalog; data passes unchecked",
                product.product_key,
                product.model_id,
            )
            return None

    def _share(self, product: Product) -> Product:
        """One record per product for every connection (equal records are shared)."""
        known = self._products.get(product.product_key)
        if known is product or (known is not None and known == product):
            return known
        self._products[product.product_key] = product
        return product

    def _target_for(self, device: Device, product: Product | None = None) -> _Target:
        product = self._share(product or self.registry.get_product(device.product_key))
        return _Target(product, (device.product_key, device.device_key), self._model(product))

    # -- presence --------------------------------------------------------------------------

    def _set_online(self, keys: _Keys, reason: str = "connected") -> None:
        self._presence(keys, True, reason)

    def _set_offline(self, keys: _Keys, reason: str) -> None:
        self._presence(keys, False, reason)

    def _presence(self, keys: _Keys, online: bool, reason: str) -> None:
        """Record a presence change; never fails the connection event that caused it.

        The change is queued in the registry and written once per event-loop iteration, so
        that the logins of one iteration share a transaction; any registry read (the Lab's
        presence table, a device record) writes the queue first, so nobody sees it late.
        """
        try:
            self.registry.queue_presence(*keys, online, reason)
        except Exception:  # e.g. the registry was closed before the hub stopped
            log.warning("presence of %s/%s (%s) not recorded", *keys, reason, exc_info=True)
            return
        if not self._presence_flush:
            self._presence_flush = True
            try:
                asyncio.get_running_loop().call_soon(self._flush_presence)
            except RuntimeError:  # no loop (not from a hub callback): write now
                self._flush_presence()

    def _flush_presence(self) -> None:
        self._presence_flush = False
        try:
            self.registry.flush_presence()
        except Exception:  # e.g. the registry was closed before the hub stopped
            log.warning("presence changes not recorded", exc_info=True)

    def is_online(self, product_key: str, device_key: str) -> bool:
        """Whether the device has a live connection or is logged in through an online gateway."""
        keys = (product_key, device_key)
        cid = self._owner.get(keys)
        if cid is not None:
            conn = self._conns.get(cid)
            return conn is not None and conn.online
        return keys in self._gateway_of

    def online_sub_devices(self, gateway: tuple[str, str]) -> list[tuple[str, str]]:
        """Sub-devices currently logged in through ``gateway``'s connection."""
        cid = self._owner.get(gateway)
        conn = self._conns.get(cid) if cid is not None else None
        return list(conn.subs) if conn is not None else []

    def firmware_version(self, product_key: str, device_key: str) -> str | None:
        """The firmware version the device last reported (default OTA handler only)."""
        if isinstance(self.ota, MemoryOta):
            return self.ota.versions.get((product_key, device_key))
        return None

    # -- authentication --------------------------------------------------------------------

    def authenticate(self, request: ConnectRequest) -> AuthResult | Awaitable[AuthResult]:
        """Decide one CONNECT (hub Authenticator protocol); see the module docstring.

        The result is immediate, except for logins shaped like the official Python SDK's
        (see :func:`python_sdk_login`): those resolve after ``config.python_sdk_connack_delay``
        so that their CONNACK cannot overtake the SDK's wait for it (protocol reference 4.9).
        Meanwhile the hub keeps the connection's later packets waiting.
        """
        source = login_source(request.peer)
        identity = request.username or request.client_id
        block = self._throttle.blocked(source, identity)
        if block is not None:
            self._refused_while_blocked(request, source, block)
            return AuthResult(False, 0x87)
        decision = authenticate(
            self.registry, request.client_id, request.username, request.password, tls=request.tls
        )
        result = self._decide(request, source, identity, decision)
        delay = self.config.python_sdk_connack_delay
        login = decision.login
        if delay > 0 and login is not None and python_sdk_login(login.timestamp):
            conn = result.attributes
            if isinstance(conn, _Conn):
                conn.checked = False  # re-read when the connection is accepted, after the delay
            return _after(delay, result)
        return result

    def _decide(
        self, request: ConnectRequest, source: str, identity: str, decision: AuthDecision
    ) -> AuthResult:
        if not decision.accepted:
            self._refused(request, source, identity, decision.reason)
            # 3.1.1 return code 4 <- 0x86, 5 <- 0x87
            return AuthResult(False, 0x86 if decision.return_code == 4 else 0x87)
        self._throttle.succeeded(source, identity)
        login = decision.login
        assert login is not None
        product = decision.product
        assert product is not None
        conn = _Conn(
            product,
            (product.product_key, login.device_key),  # the shared key string
            int(login.secure_mode),
            decision.integration,
            decision.activation,
            request.tls,
        )
        # the records just read are current when the hub accepts the connection in this very
        # callback (no CONNACK delay); otherwise ClientConnected reads them again
        hub = self._hub
        conn.checked = hub is None or hub.config.connack_delay <= 0
        # the session belongs to the device (product key + device key), not to the client id;
        # an accepted login's user name is exactly "{device_key}&{product_key}" (_identity)
        return AuthResult(True, attributes=conn, identity=identity)

    def _refused(self, request: ConnectRequest, source: str, identity: str, reason: str) -> None:
        """A refused login: count it, log it, and warn once when it starts a block."""
        product_key, device_key = username_keys(request.username)
        block = self._throttle.failed(source, identity)
        log.info("login of %r from %s refused: %s", identity, source, reason)
        until_ms = None
        if block is not None:
            until_ms = to_epoch_ms(block.until_time)
            who = (
                f"device {product_key}/{device_key}"
                if product_key is not None
                else f"identity {identity!r}"
            )
            lift = (
                f"lab.unblock_login({product_key!r}, {device_key!r}) (IotHub.unblock_login "
                "on the hub's loop)"
                if product_key is not None
                else f"IotHub.login_throttle.unblock({identity!r})"
            )
            log.warning(
                "logins of %s from %s blocked until %s after %d failed logins within %g s "
                "(last: %s); logins from other addresses still pass; see lab.refused_logins(); "
                "lift it with %s",
                who,
                source,
                block.until_time.isoformat(timespec="seconds"),
                block.failures,
                self.config.login_failure_window,
                reason,
                lift,
            )
        self._logins.record(
            source,
            request.client_id,
            product_key,
            device_key,
            reason=reason,
            blocked_until_ms=until_ms,
        )

    def _refused_while_blocked(
        self, request: ConnectRequest, source: str, block: LoginBlock
    ) -> None:
        reason = (
            f"blocked after {block.failures} failed logins until "
            f"{block.until_time.isoformat(timespec='seconds')}"
        )
        log.info("login of %r from %s refused: %s", block.identity, source, reason)
        product_key, device_key = username_keys(request.username)
        self._logins.record(
            source,
            request.client_id,
            product_key,
            device_key,
            reason=reason,
            blocked_until_ms=to_epoch_ms(block.until_time),
        )

    @property
    def login_throttle(self) -> LoginThrottle:
        """The login throttle (connect-flood protection; see ``IotHubConfig``). Use it on the
        hub's event loop."""
        return self._throttle

    def refused_logins(
        self, product_key: str | None = None, device_key: str | None = None
    ) -> pd.DataFrame:
        """The login log: the latest ``config.login_log_size`` refused login attempts, oldest
        first,
        of one product and/or device key if given; columns :data:`LOGIN_COLUMNS` (times
        tz-aware UTC). Call it on the hub's event loop."""
        return logins_frame(self._logins.rows(product_key, device_key))

    @property
    def login_log(self) -> LoginLog:
        """The login log behind :meth:`refused_logins` (read it on the hub's event loop)."""
        return self._logins

    def unblock_login(self, product_key: str, device_key: str, source: str | None = None) -> int:
        """Lift the login blocks of the device (user name ``deviceKey&productKey``) from
        ``source`` (an address such as ``"127.0.0.1"``; ``None``: every address) and forget
        its failed logins there; returns how many blocks were lifted. Call it on the hub's
        event loop."""
        lifted = self._throttle.unblock(f"{device_key}&{product_key}", source)
        if lifted:
            log.info(
                "login block of device %s/%s lifted (%d address(es))",
                product_key,
                device_key,
                lifted,
            )
        return lifted

    # -- lifecycle events ------------------------------------------------------------------

    def _on_event(self, event: HubEvent) -> None:
        if isinstance(event, ClientConnected):
            self._connected(event.client)
        elif isinstance(event, ClientDisconnected):
            self._disconnected(event.client, event.reason)

    def _connected(self, info: ClientInfo) -> None:
        attrs = info.attributes
        conn = attrs if type(attrs) is _Conn and attrs.info is None else None
        if conn is not None:  # our own login (the usual case)
            pk, dk = conn.ident
            integration = conn.integration
        else:
            pk_attr, dk_attr = attrs.get("product_key"), attrs.get("device_key")
            if not isinstance(pk_attr, str) or not isinstance(dk_attr, str):
                return  # not authenticated by us
            pk, dk = pk_attr, dk_attr
            integration = bool(attrs.get("integration"))
        try:
            if conn is not None and conn.checked:
                product = conn.product
            else:
                product = self.registry.get_product(pk)
                if not integration:
                    self.registry.get_device(pk, dk)  # still registered
        except NotFound:
            log.warning("client %r: %s/%s vanished during login", info.client_id, pk, dk)
            self._kick(info.session_key, "deleted")
            return
        product = self._share(product)
        if conn is None:  # attributes of another authenticator with an EnOS identity
            secure_mode = attrs.get("secure_mode")
            conn = _Conn(
                product,
                (pk, dk),
                secure_mode if isinstance(secure_mode, int) else 0,
                integration,
                bool(attrs.get("activation")),
                bool(attrs.get("tls")),
            )
        conn.product = product
        conn.model = self._model(product)
        conn.info = info
        self._conns[info.session_key] = conn
        if integration:
            return
        conn.custom = _custom_topics(product, dk)
        keys = conn.ident
        old_cid = self._owner.get(keys)
        self._owner[keys] = info.session_key
        if old_cid is not None and old_cid != info.session_key:
            old = self._conns.pop(old_cid, None)
            if old is not None:
                self._release(old, "taken over")
                self._kick(old_cid, "taken over")
        if conn.activation:
            conn.activation_done = asyncio.Event()
            self._spawn(self._activate(conn), f"iothub-activate-{pk}/{dk}")
            return
        conn.online = True
        self._set_online(keys)

    def _release(self, conn: _Conn, reason: str) -> None:
        """Forget ``conn``'s sub-devices and mark its device offline (if it was online)."""
        if self._unknown_topics:
            self._unknown_topics.pop(conn.key, None)
        sub_reason = "gateway offline"
        if conn.subs:
            self._permissions_changed()
        for keys in list(conn.subs):
            del conn.subs[keys]
            if self._gateway_of.get(keys) == conn.key:
                del self._gateway_of[keys]
            self._set_offline(keys, sub_reason)
        if conn.online and conn.own is not None:
            conn.online = False
            self._set_offline(conn.own.ident, reason)
        if conn.activation_done is not None:
            conn.activation_done.set()

    def _disconnected(self, info: ClientInfo, reason: DisconnectReason) -> None:
        cid = info.session_key
        why = self._kick_reasons.pop(cid, None) or _REASONS.get(reason, "disconnected")
        conn = self._conns.get(cid)
        if conn is None or conn.info is not info:
            return  # superseded (taken over) or not ours
        del self._conns[cid]
        keys = (conn.product_key, conn.device_key)
        if self._owner.get(keys) == cid:
            del self._owner[keys]
        self._release(conn, why)

    def _kick(self, key: SessionKey, reason: str) -> None:
        hub = self._hub
        if hub is None:
            return
        self._kick_reasons[key] = reason
        self._spawn(self._disconnect(hub, key), f"iothub-kick-{key}")

    async def _disconnect(self, hub: Hub, key: SessionKey) -> None:
        if not await hub.disconnect_client(key, 0x87):
            self._kick_reasons.pop(key, None)  # already gone

    # -- dynamic activation (section 3) ----------------------------------------------------

    async def _activate(self, conn: _Conn) -> None:
        hub = self._hub
        done = conn.activation_done
        assert hub is not None and done is not None
        cfg = self.config
        await asyncio.sleep(cfg.activation_delay)
        if self._conns.get(conn.key) is not conn:
            return
        try:
            device = self.registry.activate(conn.product_key, conn.device_key)
        except RegistryError as exc:
            log.warning("activation of %s/%s failed: %s", conn.product_key, conn.device_key, exc)
            self._kick(conn.key, "kicked")
            return
        topic = f"/ext/session/{conn.product_key}/{conn.device_key}/thing/activate/info"
        payload = encode_request(
            f"act-{next(self._ids)}",
            "thing.activate.info",
            {
                "assetId": device.asset_id,
                "productKey": device.product_key,
                "deviceKey": device.device_key,
                "deviceSecret": device.device_secret,
            },
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.activation_timeout
        while not done.is_set() and loop.time() < deadline:
            try:
                delivered = await hub.deliver(conn.key, Message(topic, payload, 1))
            except ClosedError:
                return  # the hub stopped
            if not delivered:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    done.wait(), min(cfg.activation_resend, max(0.0, deadline - loop.time()))
                )
        if not done.is_set():
            log.warning(
                "device %s/%s did not confirm activation within %.1f s",
                conn.product_key,
                conn.device_key,
                cfg.activation_timeout,
            )

    # -- access control --------------------------------------------------------------------

    def authorise_publish(self, client: ClientInfo, topic: str, qos: int, retain: bool) -> Decision:
        """May ``client`` publish on ``topic``? (hub Authoriser protocol).

        Retained messages are refused on every EnOS topic (requests, replies, commands): the
        SDKs never retain, and a retained request would be kept by the hub for nothing.
        """
        conn = self._conns.get(client.session_key)
        if conn is None:
            return Decision(False, 0x87, "not an EnOS session")
        route = self._route(topic)
        if route is not None:
            if retain:
                return Decision(False, 0x87, f"retained messages are refused on {topic!r}")
            action = route.action
            if action in (_REQUEST, _RAW_REQUEST):
                return _ALLOW  # checked by the request handler (EnOS 1009 with the request id)
            match = route.match
            if match.is_reply:
                # a device answers commands sent to itself or to its logged-in sub-devices
                if action == _DEVICE_REPLY and self._may_answer(conn, match):
                    return _ALLOW
                return Decision(False, 0x87, f"no permission to reply on {topic!r}")
            return Decision(False, 0x87, f"{topic!r} is a command topic")
        for custom, can_publish, _ in conn.custom:
            if can_publish and topic_matches(custom, topic):
                return _ALLOW
        for target in conn.subs.values():
            for custom, can_publish, _ in _custom_topics(target.product, target.ident[1]):
                if can_publish and topic_matches(custom, topic):
                    return _ALLOW
        if topic.startswith(("/sys/", "/ext/")):
            self._unknown_topic(conn, topic)
        return Decision(False, 0x87, f"no write permission on {topic!r}")

    def _unknown_topic(self, conn: _Conn, topic: str) -> None:
        """Log a publish to a topic outside the EnOS catalogue (dropped): the first
        ``config.logged_unknown_topics`` of a connection, then the count at 10, 100, ..."""
        # counted per connection in a dict of the few that do this (not a slot of every one)
        key = conn.key
        count = self._unknown_topics.get(key, 0) + 1
        self._unknown_topics[key] = count
        if count <= self.config.logged_unknown_topics:
            log.warning(
                "client %r: %s is not an EnOS topic; message dropped",
                conn.client_id,
                _shown(topic),
            )
        elif str(count).rstrip("0") == "1":
            log.warning(
                "client %r: %d messages to topics outside the EnOS catalogue dropped so far",
                conn.client_id,
                count,
            )

    def _may_answer(self, conn: _Conn, match: TopicMatch) -> bool:
        keys = (match.product_key, match.device_key)
        if conn.activation:
            return match.kind is TopicKind.ACTIVATE_INFO and keys == (
                conn.product_key,
                conn.device_key,
            )
        if conn.integration:
            return False
        return conn.target(keys) is not None

    def authorise_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> Decision:
        """May ``client`` subscribe to ``topic_filter``? (hub Authoriser protocol)."""
        conn = self._conns.get(client.session_key)
        if conn is None:
            return Decision(False, 0x87, "not an EnOS session")
        if self._may_subscribe(conn, topic_filter):
            _remember_filter(conn, topic_filter)
            return _ALLOW
        if topic_filter.endswith(REPLY_SUFFIX):
            # remembered although refused: SDKs subscribe to the reply topic of a request for
            # a foreign device without checking the SUBACK, and expect the 1009 answer there
            _remember_filter(conn, topic_filter)
        return Decision(False, 0x87, f"no read permission on {topic_filter!r}")

    def authorise_receive(self, client: ClientInfo, topic: str) -> Decision:
        """May ``client``'s session receive ``topic``? (hub Authoriser protocol).

        The same rule as for subscribing, with what the connection may read now: a gateway
        reads its sub-devices' topics only while they are logged in through it, and a session
        whose connection ended reads only its own device's topics (its sub-devices went offline
        with it). The hub asks when it works out a topic's receivers; the services tell it
        (:meth:`~enos_lab.hub.Hub.permissions_changed`) when a login, logout, move or
        disconnection changes the answers.
        """
        conn = client.attributes
        if type(conn) is not _Conn:
            found = self._conns.get(client.session_key)
            if found is None:
                return Decision(False, 0x87, "not an EnOS session")
            conn = found
        if self._may_subscribe(conn, topic):
            return _ALLOW
        return Decision(False, 0x87, f"no read permission on {topic!r}")

    def _may_subscribe(self, conn: _Conn, topic_filter: str) -> bool:
        wildcard = "+" in topic_filter or "#" in topic_filter
        if conn.integration:
            prefix = f"/sys/{conn.product_key}/integration/"
            if wildcard:
                return topic_filter.startswith(prefix) and not filter_matches_request(
                    topic_filter, conn.product_key, "x"
                )
            return topic_filter.startswith(prefix) and topic_filter.endswith(REPLY_SUFFIX)
        if conn.activation:
            prefix = f"/ext/session/{conn.product_key}/{conn.device_key}/thing/activate/"
            return topic_filter.startswith(prefix)
        if not wildcard:
            match = self._parse(topic_filter)
            if match is not None:
                keys = (match.product_key, match.device_key)
                if conn.target(keys) is None:
                    return False
                # replies to its requests, and commands (the C SDK subscribes to them)
                return match.is_reply or match.kind.direction is Direction.DOWN
        else:
            targets = [conn.own] if conn.own is not None else []
            targets.extend(conn.subs.values())
            for target in targets:
                pk, dk = target.ident
                if topic_filter.startswith(
                    (f"/sys/{pk}/{dk}/", f"/ext/session/{pk}/{dk}/")
                ) and not filter_matches_request(topic_filter, pk, dk):
                    # never a filter that matches request topics: a request refused with
                    # 1009 still passes the MQTT layer and must not reach such a subscriber
                    return True
        targets = [conn.own] if conn.own is not None else []
        targets.extend(conn.subs.values())
        for target in targets:
            custom = (
                conn.custom
                if target is conn.own
                else _custom_topics(target.product, target.ident[1])
            )
            for topic, _, can_subscribe in custom:
                if can_subscribe and topic_matches(topic, topic_filter):
                    return True
        return False

    @staticmethod
    def _subscribed(conn: _Conn, topic: str) -> bool:
        """Whether ``conn`` asked for ``topic`` (a reply topic) by one of its remembered
        subscriptions."""
        filters = conn.filters
        if topic in filters:
            return True
        return any(topic_matches(f, topic) for f in filters if "+" in f or "#" in f)

    # -- inbound messages ------------------------------------------------------------------

    def _on_message(self, client: ClientInfo | None, message: Message) -> Awaitable[None] | None:
        if client is None:
            return None
        conn = self._conns.get(client.session_key)
        if conn is None:
            return None
        route = self._route(message.topic)
        if route is None:
            return None
        action = route.action
        if action == _REQUEST:
            if route.fast:
                try:
                    done = self._fast_post(conn, route, message)
                except Exception:  # a bug; the general path answers the request
                    log.exception("client %r: measurepoint fast path failed", conn.client_id)
                    done = None
                if done is not None:
                    return done
            return self._request(conn, route, message)
        if action == _RAW_REQUEST:
            return self._raw_request(conn, route, message, 1 if message.qos else 0)
        if action == _DEVICE_REPLY:
            self._device_reply(conn, route.match, message.payload)
        return None

    def _fast_post(
        self, conn: _Conn, route: _Route, message: Message
    ) -> asyncio.Future[None] | None:
        """A well-formed, valid measurepoint post without a coroutine of its own.

        Decodes and validates the request, queues its rows in this iteration's batch and
        returns a future that resolves once the batch is committed and the reply published
        (:meth:`_answer_posts`), which is when the hub may acknowledge the PUBLISH. Anything
        else - malformed or invalid requests, permission errors, posts without points - returns
        None and takes the general path (:meth:`_request`), which produces the same replies as
        before, error codes included.
        """
        payload = message.payload
        if len(payload) > MAX_PAYLOAD_SIZE:
            return None
        try:
            document = decode_payload(payload)  # the general path's decoder: strict JSON
        except EnvelopeError:
            return None
        if type(document) is not dict:
            return None
        params = document.get("params")
        if type(params) is not dict:
            return None
        match = route.match
        if self.config.strict_methods and document.get("method") != match.kind.method:
            return None
        if conn.activation or conn.integration:
            return None
        target = conn.target((match.product_key, match.device_key))
        if target is None:
            return None
        at = params.get("time")
        if type(at) is not int or not MIN_EVENT_MS <= at <= MAX_EVENT_MS:
            at = self._time(params)  # the usual epoch milliseconds, else the general rules
        points = params.get("measurepoints")
        if at is None or type(points) is not dict:
            return None
        resume = match.kind is TopicKind.MEASUREPOINT_RESUME
        rows = _point_rows(target, points, at, resume, skip=False)
        if not rows or isinstance(rows, ValidationError):
            return None
        request_id = document.get("id")
        if type(request_id) is str:
            id_json = _encode_json_str(request_id)  # what json.dumps(.., ensure_ascii=False) gives
        else:
            id_json = json.dumps(request_id, ensure_ascii=False)
        reply = _OK_HEAD + id_json.encode() + _OK_TAIL
        return self._points.add_post((route.reply_topic, reply, request_id, message.qos, rows))

    def _answer_posts(
        self,
        posts: list[_Post],
        results: list[int | BaseException] | None,
        replied: asyncio.Future[None],
    ) -> None:
        """Reply to the fast-path posts of one batch: committed (``results`` None), or per post
        its row count or the store's error; then resolve ``replied``, on which the hub waits to
        acknowledge them.

        An error is answered like the general path (:meth:`_handle`) answers it (1200 with the
        store's message; "internal error" for anything unexpected) and logged at ERROR; only
        when the store or the hub is closing are the posts left unacknowledged.
        """
        if replied.done():
            return
        if results is not None:
            for result in results:
                if isinstance(result, (ClosedError, asyncio.CancelledError)):
                    replied.set_exception(result)  # stopping: the devices send them again
                    return
        hub = self._hub
        if hub is not None:
            publish = hub.publish_nowait
            try:
                if results is None:
                    for topic, ok, _, qos, _ in posts:
                        publish(_make_message(topic, ok, 1 if qos else 0, False, NO_PROPERTIES))
                else:
                    for (topic, ok, request_id, qos, _), result in zip(posts, results, strict=True):
                        reply = (
                            ok
                            if not isinstance(result, BaseException)
                            else _post_error(topic, request_id, result)
                        )
                        publish(_make_message(topic, reply, 1 if qos else 0, False, NO_PROPERTIES))
            except Exception as exc:  # the hub is stopping
                replied.set_exception(exc)
                return
        replied.set_result(None)

    def _device_reply(self, conn: _Conn, match: TopicMatch, payload: bytes) -> None:
        kind = match.kind
        if kind.is_raw:
            codec = self._codecs.get(match.product_key)
            if codec is None:
                return
            try:
                payload = codec.decode_upstream(payload)
            except Exception:
                log.exception("codec of %s failed on a down_raw reply", match.product_key)
                return
        try:
            reply = decode_reply(payload)
        except EnvelopeError as exc:
            log.info("client %r: unusable reply on %s: %s", conn.client_id, match.kind.name, exc)
            return
        if kind is TopicKind.ACTIVATE_INFO:
            if reply.ok and conn.activation_done is not None:
                conn.activation_done.set()
            return
        topic = match.request_topic
        future = self._pending.get((topic, str(reply.id)))
        if future is None and kind.is_raw:
            # raw replies carry no usable id (SDKs synthesise "unknown"): the oldest command
            future = next((f for (t, _), f in self._pending.items() if t == topic), None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def _request(self, conn: _Conn, route: _Route, message: Message) -> None:
        qos = 1 if message.qos else 0
        reply_topic = route.reply_topic
        try:
            request = decode_request(message.payload)
        except EnvelopeError as exc:
            await self._reply(reply_topic, None, exc.code, None, str(exc), qos)
            return
        result = await self._handle(conn, route, request)
        if result is None:
            await self._deny(conn, reply_topic, request.id, qos)
            return
        code, data, text = result
        hub = self._hub
        if hub is None:
            return
        if code == ReplyCode.SUCCESS and data is None and text is None:
            payload = _OK_HEAD + json.dumps(request.id, ensure_ascii=False).encode() + _OK_TAIL
        else:
            payload = encode_reply(request.id, code, data, text)
        await hub.publish(Message(reply_topic, payload, qos))

    async def _handle(self, conn: _Conn, route: _Route, request: Request) -> _Result | None:
        """The reply to one request; None when the connection may not send it (EnOS 1009)."""
        match = route.match
        if not self._may_request(conn, match, route.scope):
            return None
        kind = match.kind
        if self.config.strict_methods:
            expected = kind.method
            if expected is not None and "%s" in expected:
                expected = expected % match.item_id
            if request.method != expected:
                return (
                    ReplyCode.METHOD_NOT_CONSISTENT,
                    None,
                    f"method {request.method!r} does not fit topic (expected {expected!r})",
                )
        handler = route.handler
        if handler is None:
            return (ReplyCode.PARSE_ERROR, None, f"{kind.name} is not supported")
        try:
            return await handler(conn, match, request)
        except ClosedError:
            raise  # the store or hub is stopping: unacknowledged, the device sends it again
        except StoreError as exc:  # before RegistryError: a store error is never the registry's
            log.error("client %r: storing %s failed: %s", conn.client_id, kind.name, exc)
            return _error_result(exc)
        except (ValidationError, InvalidArgument, RegistryError) as exc:
            return _error_result(exc)  # the device's input, or the registry's state
        except Exception as exc:
            log.exception("client %r: handling %s failed", conn.client_id, kind.name)
            return _error_result(exc)

    @staticmethod
    def _may_request(conn: _Conn, match: TopicMatch, scope: int) -> bool:
        if conn.activation:
            return False  # only activate/info replies (section 3)
        if scope == _SCOPE_INTEGRATION:
            return conn.integration and match.product_key == conn.product_key
        if conn.integration:
            return False
        keys = (match.product_key, match.device_key)
        if scope == _SCOPE_GATEWAY:
            return keys == (conn.product_key, conn.device_key)
        return conn.target(keys) is not None

    async def _deny(self, conn: _Conn, reply_topic: str, request_id: Any, qos: int) -> None:
        # EnOS 1009 goes to the publisher only, and only if it asked for the reply (a refused
        # SUBSCRIBE to the reply topic counts: the request itself was the violation)
        log.info("client %r: no write permission for %s", conn.client_id, reply_topic)
        hub = self._hub
        if hub is None or not self._subscribed(conn, reply_topic):
            return
        payload = encode_reply(request_id, ReplyCode.NO_WRITE_PERMISSION)
        await hub.deliver(conn.key, Message(reply_topic, payload, qos))

    async def _reply(  # noqa: PLR0917
        self, topic: str, request_id: Any, code: int, data: Any, text: str | None, qos: int
    ) -> None:
        hub = self._hub
        if hub is None:
            return
        await hub.publish(Message(topic, encode_reply(request_id, code, data, text), qos))

    async def _raw_request(self, conn: _Conn, route: _Route, message: Message, qos: int) -> None:
        """``model/up_raw``: decode with the product's codec and handle like the JSON topic."""
        match = route.match
        reply_topic = route.reply_topic
        codec = self._codecs.get(match.product_key)
        allowed = self._may_request(conn, match, route.scope)
        target = conn.target((match.product_key, match.device_key))
        if not allowed:
            await self._deny(conn, reply_topic, "unknown", qos)
            return
        if codec is None or (
            target is not None and target.product.data_format is not DataFormat.CUSTOM
        ):
            reply = encode_reply(
                "unknown", ReplyCode.PARSE_ERROR, None, "product has no raw codec (custom format)"
            )
            await self._publish_raw(reply_topic, reply, qos)
            return
        try:
            envelope = codec.decode_upstream(message.payload)
            document = decode_payload(envelope, "decoded")
        except Exception as exc:
            log.info("codec of %s failed: %s", match.product_key, exc)
            reply = encode_reply("unknown", ReplyCode.PARSE_ERROR, None, f"codec failed: {exc}")
            await self._publish_raw(reply_topic, self._encode_raw_reply(codec, reply), qos)
            return
        if isinstance(document, dict) and "code" in document and "method" not in document:
            # a reply to a command sent as raw bytes
            self._device_reply(conn, _down_raw(match), envelope)
            return
        method = document.get("method") if isinstance(document, dict) else None
        kind, item_id = _kind_of_method(method) if isinstance(method, str) else (None, "")
        try:
            request = decode_request(envelope)
        except EnvelopeError as exc:
            reply = encode_reply(None, exc.code, None, str(exc))
            await self._publish_raw(reply_topic, self._encode_raw_reply(codec, reply), qos)
            return
        result: _Result | None
        if kind is None:
            result = (
                ReplyCode.PARSE_ERROR,
                None,
                f"decoded envelope has an unknown method {method!r}",
            )
        else:
            inner = TopicMatch(kind, match.product_key, match.device_key, item_id)
            result = await self._handle(conn, self._make_route(inner, reply_topic), request)
            if result is None:
                result = (ReplyCode.NO_WRITE_PERMISSION, None, None)
        code, data, text = result
        reply = encode_reply(request.id, code, data, text)
        await self._publish_raw(reply_topic, self._encode_raw_reply(codec, reply), qos)

    @staticmethod
    def _encode_raw_reply(codec: RawCodec, reply: bytes) -> bytes:
        try:
            return codec.encode_reply(reply)
        except Exception:
            log.exception("codec failed to encode a reply")
            return reply

    async def _publish_raw(self, topic: str, payload: bytes, qos: int) -> None:
        hub = self._hub
        if hub is not None:
            await hub.publish(Message(topic, payload, qos))

    # -- measurepoints (7.1, 7.2) ----------------------------------------------------------

    def _time(self, params: dict[str, Any]) -> int | None:
        """The ``time`` of an entry [ms]; receive time when absent; None when malformed or
        outside the event times the store keeps, :data:`~enos_lab.store.MIN_EVENT_MS` ..
        :data:`~enos_lab.store.MAX_EVENT_MS` (1677-09-21 .. 2262-04-11 UTC; EnOS 1206 for
        measurepoints, 1204 for events).

        Accepted: an integer, a float (JS/Java encoders may send 1.7e12 or a fraction of a ms;
        truncated) or a string of ASCII digits.
        """
        value = params.get("time")
        if value is None or value == "":
            return self._clock.time_ms()
        if isinstance(value, bool):
            return None
        if isinstance(value, float):
            if not math.isfinite(value):
                return None
            value = int(value)
        elif isinstance(value, str):
            text = value.strip()
            # str.isdigit() alone takes "²" and other digits int() refuses
            if not (len(text) <= _TIME_DIGITS and text.isascii() and text.isdigit()):
                return None
            value = int(text)
        elif not isinstance(value, int):
            return None
        return value if MIN_EVENT_MS <= value <= MAX_EVENT_MS else None

    async def _measurepoint_post(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        params = request.params
        if not isinstance(params, dict):
            return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, "params must be a JSON object")
        at = self._time(params)
        if at is None:
            return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, _bad_time(params))
        points = params.get("measurepoints")
        if not isinstance(points, dict):
            return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, "measurepoints must be an object")
        resume = match.kind is TopicKind.MEASUREPOINT_RESUME
        rows = _point_rows(target, points, at, resume, skip=False)
        if isinstance(rows, ValidationError):
            return (rows.code, None, str(rows))
        if rows:
            await self._points.add(rows)
        return _OK

    async def _measurepoint_batch(
        self, conn: _Conn, match: TopicMatch, request: Request
    ) -> _Result:
        params = request.params
        if not isinstance(params, list):
            return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, "params must be a JSON array")
        allow_offline = request.flag("allowOfflineSubDevice")
        skip = request.flag("skipInvalidMeasurepoints")
        resume = match.kind is TopicKind.MEASUREPOINT_RESUME_BATCH
        topic_keys = (match.product_key, match.device_key)
        rows: list[PointRow] = []
        for index, entry in enumerate(params):
            if not isinstance(entry, dict):
                if skip:
                    continue
                return (
                    ReplyCode.MEASUREPOINT_FORMAT_ERROR,
                    None,
                    f"entry {index} must be a JSON object",
                )
            pk = entry.get("productKey")
            dk = entry.get("deviceKey")
            keys = topic_keys if _blank(pk) and _blank(dk) else (str(pk or ""), str(dk or ""))
            target = conn.target(keys)
            if target is None and allow_offline:
                target = self._offline_sub_device(conn, keys)
            if target is None:
                return (
                    ReplyCode.NO_SUB_DEVICE_PERMISSION,
                    None,
                    f"entry {index}: {keys[0]}/{keys[1]} is not a logged-in sub-device "
                    "of this gateway",
                )
            at = self._time(entry)
            points = entry.get("measurepoints")
            if at is None or not isinstance(points, dict):
                if skip:
                    continue
                problem = _bad_time(entry) if at is None else "measurepoints must be an object"
                return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, f"entry {index}: {problem}")
            result = _point_rows(target, points, at, resume, skip=skip)
            if isinstance(result, ValidationError):
                return (result.code, None, f"entry {index}: {result}")
            rows.extend(result)
        if rows:
            await self._points.add(rows)
        return _OK

    def _offline_sub_device(self, conn: _Conn, keys: _Keys) -> _Target | None:
        """A topology child of the connection's device (for ``allowOfflineSubDevice``)."""
        if conn.own is None or keys[0] == "" or keys[1] == "":
            return None
        device = self.registry.find_device(*keys)
        if device is None or device.gateway != conn.own.ident or not device.enabled:
            return None
        return self._target_for(device)

    # -- events (7.3) ----------------------------------------------------------------------

    async def _event_post(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        params = request.params
        if not isinstance(params, dict):
            return (ReplyCode.MODEL_VALIDATION_FAILED, None, "params must be a JSON object")
        at = self._time(params)
        if at is None:
            return (ReplyCode.MODEL_VALIDATION_FAILED, None, _bad_time(params))
        if "events" in params:
            outputs = params["events"]
        else:
            outputs = {k: v for k, v in params.items() if k != "time"}
        severity: str | None = None
        model = target.model
        if model is not None:
            outputs = model.validate_event(match.item_id, outputs)
            event = model.events.get(match.item_id)
            if event is not None:
                severity = event.event_type.value
        elif not isinstance(outputs, dict):
            return (ReplyCode.MODEL_VALIDATION_FAILED, None, "events must be a JSON object")
        else:  # passthrough: EnOS identifiers all the same
            _check_ids((match.item_id,), "event")
            _check_ids(outputs, "event output")
        pk, dk = target.ident
        await self.store.append_events_async(
            [EventRow(pk, dk, match.item_id, at, outputs, severity)]
        )
        return _OK

    # -- attributes and tags (7.4) -----------------------------------------------------------

    async def _attribute_update(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        code = ReplyCode.ATTRIBUTE_UPDATE_FORMAT_ERROR
        params = request.params
        values = params.get("attributes") if isinstance(params, dict) else None
        if not isinstance(values, dict):
            return (code, None, "params.attributes must be a JSON object")
        if target.model is not None:
            values = target.model.validate_attributes(values)
        _check_ids(values, "attribute")  # passthrough ones too
        try:
            self.registry.update_attributes(*target.ident, values)
        except InvalidArgument as exc:
            return (code, None, str(exc))
        now = self._clock.time_ms()
        rows = [AttributeRow(*target.ident, key, now, value) for key, value in values.items()]
        if rows:
            await self.store.append_attributes_async(rows)
        return _OK

    async def _attribute_query(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        keys = (match.product_key, match.device_key)
        params = request.params
        ids = params.get("attributes") if isinstance(params, dict) else None
        if ids is None and (params is None or params == {}):
            ids = []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return (
                ReplyCode.ATTRIBUTE_QUERY_FORMAT_ERROR,
                None,
                "params.attributes must be a list of attribute ids",
            )
        attributes = self.registry.get_device(*keys).attributes
        if not ids:
            return (ReplyCode.SUCCESS, dict(attributes), None)
        return (ReplyCode.SUCCESS, {i: attributes[i] for i in ids if i in attributes}, None)

    async def _attribute_delete(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        keys = (match.product_key, match.device_key)
        params = request.params
        ids = params.get("attributes") if isinstance(params, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return (
                ReplyCode.ATTRIBUTE_DELETE_FORMAT_ERROR,
                None,
                "params.attributes must be a list of attribute ids",
            )
        existing = self.registry.get_device(*keys).attributes
        gone = [i for i in ids if i in existing]
        if gone:
            self.registry.delete_attributes(*keys, gone)
            now = self._clock.time_ms()
            await self.store.append_attributes_async(
                [AttributeRow(*keys, i, now, None) for i in gone]
            )
        return _OK

    async def _tag_update(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        tags = normalise_tags(request.params)
        self.registry.update_tags(match.product_key, match.device_key, tags)
        return _OK

    @staticmethod
    def _tag_keys(request: Request) -> list[str] | None:
        params = request.params
        keys = params.get("tags", []) if isinstance(params, dict) else params
        if params is None:
            keys = []
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            return None
        return keys

    async def _tag_query(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        keys = self._tag_keys(request)
        if keys is None:
            return (ReplyCode.PARSE_ERROR, None, "params.tags must be a list of tag keys")
        tags = self.registry.get_device(match.product_key, match.device_key).tags
        data = dict(tags) if not keys else {k: tags[k] for k in keys if k in tags}
        return (ReplyCode.SUCCESS, data, None)

    async def _tag_delete(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        keys = self._tag_keys(request)
        if keys is None:
            return (ReplyCode.PARSE_ERROR, None, "params.tags must be a list of tag keys")
        if keys:
            self.registry.delete_tags(match.product_key, match.device_key, keys)
        return _OK

    async def _tsl_template(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        if target.model is None:
            return (ReplyCode.PARSE_ERROR, None, f"product {match.product_key} has no thing model")
        return (ReplyCode.SUCCESS, render_tsltemplate(target.model), None)

    async def _accept(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        return _OK

    # -- OTA (10) --------------------------------------------------------------------------

    async def _ota_inform(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        params = request.params
        version = params.get("version") if isinstance(params, dict) else None
        if not isinstance(version, str):
            return (ReplyCode.PARSE_ERROR, None, "params.version must be a string")
        self.ota.inform(match.product_key, match.device_key, version)
        return _OK

    async def _ota_progress(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        params = request.params if isinstance(request.params, dict) else {}
        code = self.ota.progress(
            match.product_key,
            match.device_key,
            str(params.get("step", "")),
            str(params.get("desc", "")),
        )
        return (code, None, None)

    async def _ota_get_version(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        return (ReplyCode.SUCCESS, self.ota.get_versions(match.product_key, match.device_key), None)

    # -- gateways: register, topology (8.1, 8.2) -------------------------------------------

    def _is_gateway(self, conn: _Conn) -> bool:
        return conn.product.node_type is NodeType.GATEWAY

    async def _device_register(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        """``thing.device.register`` (8.1): a gateway registers devices of sub-device products.

        Refused, before anything is registered, with 1200 and details when the connection is
        not a gateway's or an entry's product is not a sub-device product: 1200 with details is
        what EnOS answers a gateway operation it cannot apply (section 5.1: ``topo.get`` from a
        non-gateway); the registration codes 702 / 714 / 739 are about keys and the product's
        quota, and 1009 about the topic, which is the device's own. (Activation sessions and
        integration channels get 1009: they may send no gateway request at all.)
        """
        if not self._is_gateway(conn) or conn.own is None:
            return (
                ReplyCode.PARSE_ERROR,
                None,
                f"device {conn.product_key}/{conn.device_key} is not a gateway; only gateways "
                "register (sub-)devices",
            )
        params = request.params
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            return (ReplyCode.PARSE_ERROR, None, "params must be a list of device objects")
        limit = self.config.max_register_entries
        if len(params) > limit:
            return (
                ReplyCode.PARSE_ERROR,
                None,
                f"{len(params)} devices in one request; at most {limit} may be registered at once",
            )
        # EnOS 702 and 739 before anything is registered
        adding: dict[str, int] = {}
        for entry in params:
            pk, dk = entry.get("productKey"), entry.get("deviceKey")
            product = self.registry.find_product(pk) if isinstance(pk, str) else None
            if product is None:
                return (ReplyCode.PARSE_ERROR, None, f"product {_shown(pk)} does not exist")
            if product.node_type is not NodeType.SUB_DEVICE:
                return (
                    ReplyCode.PARSE_ERROR,
                    None,
                    f"product {pk} is a {product.node_type.value} product; a gateway "
                    "registers devices of sub-device products only",
                )
            if isinstance(dk, str) and dk and self.registry.find_device(pk, dk) is not None:
                return (ReplyCode.DEVICE_KEY_EXISTS, None, f"device {pk}/{dk} already exists")
            adding[pk] = adding.get(pk, 0) + 1
        quota = self.config.product_device_quota
        for pk, count in adding.items():
            held = self.registry.device_count(pk)
            if held + count > quota:
                return (
                    ReplyCode.DEVICE_QUOTA_EXCEEDED,
                    None,
                    f"product {pk} holds {held} devices; {count} more would pass its quota of "
                    f"{quota} (IotHubConfig.product_device_quota)",
                )
        data = []
        for entry in params:
            name = entry.get("deviceName")
            i18n: dict[str, str] = {}
            if isinstance(name, dict):
                raw_i18n = name.get("i18nValue")
                if isinstance(raw_i18n, dict):
                    i18n = {str(k): str(v) for k, v in raw_i18n.items()}
                name = name.get("defaultValue")
            attributes = entry.get("deviceAttributes")
            try:
                device = self.registry.register_device(
                    entry["productKey"],
                    device_key=entry.get("deviceKey") or None,
                    name=name if isinstance(name, str) and name else None,
                    name_i18n=i18n,
                    description=str(entry.get("deviceDesc") or ""),
                    timezone=str(entry.get("timezone") or "+00:00"),
                    attributes=attributes if isinstance(attributes, dict) else None,
                )
            except AlreadyExists as exc:
                return (ReplyCode.DEVICE_KEY_EXISTS, None, str(exc))
            data.append(
                {
                    "assetId": device.asset_id,
                    "productKey": device.product_key,
                    "deviceKey": device.device_key,
                    "deviceSecret": device.device_secret,
                }
            )
        return (ReplyCode.SUCCESS, data, None)

    async def _topo_add(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        code = ReplyCode.TOPO_ADD_FAILED
        if not self._is_gateway(conn) or conn.own is None:
            return (code, None, "add topo failure, the device is not a gateway")
        params = request.params
        if not isinstance(params, list):
            return (code, None, "add topo failure, params must be a list")
        for entry in params:
            if not isinstance(entry, dict):
                return (code, None, "add topo failure, entries must be objects")
            pk, dk = str(entry.get("productKey", "")), str(entry.get("deviceKey", ""))
            sub = self.registry.find_device(pk, dk) if pk and dk else None
            if sub is None:
                return (code, None, f"add topo failure, sub-device {pk}/{dk} does not exist")
            proof = authenticate_sub_device(
                sub,
                self.registry.get_product(pk),
                client_id=entry.get("clientId"),
                timestamp=entry.get("timestamp"),
                sign_method=entry.get("signMethod", entry.get("signmethod")),
                sign=entry.get("sign"),
            )
            if not proof.accepted:
                return (code, None, f"add topo failure, sign check failed for {pk}/{dk}")
            try:
                self.registry.attach(conn.own.ident, (pk, dk))
            except RegistryError as exc:
                return (code, None, f"add topo failure, {exc}")
        return _OK

    async def _topo_delete(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        code = ReplyCode.TOPO_DELETE_FAILED
        if not self._is_gateway(conn) or conn.own is None:
            return (code, None, "remove topo failure, the device is not a gateway")
        params = request.params
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            return (code, None, "remove topo failure, params must be a list of objects")
        for entry in params:
            keys = (str(entry.get("productKey", "")), str(entry.get("deviceKey", "")))
            if keys in self._gateway_of:
                return (code, None, f"remove topo failure, {keys[0]}/{keys[1]} is online")
            try:
                self.registry.detach(conn.own.ident, keys)
            except RegistryError as exc:
                return (code, None, f"remove topo failure, {exc}")
        return _OK

    async def _topo_get(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        if not self._is_gateway(conn) or conn.own is None:
            return (ReplyCode.PARSE_ERROR, None, "the device is not a gateway")
        data = [
            {"productKey": d.product_key, "deviceKey": d.device_key}
            for d in self.registry.sub_devices(conn.own.ident)
        ]
        return (ReplyCode.SUCCESS, data, None)

    # -- sub-device login / logout (8.3) ---------------------------------------------------

    def _login_one(  # noqa: PLR0917
        self,
        conn: _Conn,
        pk: str,
        dk: str,
        client_id: object,
        timestamp: object,
        method_name: object,
        signature: object,
        secure_mode: object,
    ) -> tuple[int, dict[str, Any], str]:
        """Log one sub-device in through ``conn``: (code, data, message). The signature is the
        registry's decision (:func:`~enos_lab.registry.authenticate_sub_device`); ``client_id``
        and the fields after it are the request's values as decoded."""
        keys = (pk, dk)
        failed: dict[str, Any] = {"productKey": pk, "deviceKey": dk}
        if conn.own is None or not self._is_gateway(conn):
            return (ReplyCode.SUB_DEVICE_NOT_UNDER_GATEWAY, failed, "the device is not a gateway")
        device = self.registry.find_device(pk, dk) if pk and dk else None
        if device is None:
            return (ReplyCode.SUB_DEVICE_NOT_FOUND, failed, f"{pk}&{dk} does not exist")
        product = self.registry.get_product(pk)
        if product.certificate_required and not conn.tls:
            return (ReplyCode.SUB_DEVICE_MUST_USE_SSL, failed, ReplyCode(746).message)
        if not device.enabled:
            return (ReplyCode.SUB_DEVICE_DISABLED, failed, ReplyCode(723).message)
        if device.gateway != conn.own.ident:
            return (ReplyCode.SUB_DEVICE_NOT_UNDER_GATEWAY, failed, ReplyCode(740).message)
        decision = authenticate_sub_device(
            device,
            product,
            client_id=client_id,
            timestamp=timestamp,
            sign_method=method_name,
            sign=signature,
            secure_mode=secure_mode,
        )
        if not decision.accepted:
            return (decision.code, failed, decision.reason)
        if keys not in conn.subs and len(conn.subs) >= self.config.max_online_sub_devices:
            return (
                ReplyCode.PARSE_ERROR,
                failed,
                f"gateway has {len(conn.subs)} online sub-devices, the limit is "
                f"{self.config.max_online_sub_devices}",
            )
        data: dict[str, Any] = {"productKey": pk, "deviceKey": dk, "assetId": device.asset_id}
        if decision.activation:
            device = self.registry.activate(pk, dk)
            data["deviceSecret"] = device.device_secret
        other = self._gateway_of.get(keys)
        if other is not None and other != conn.key:
            old = self._conns.get(other)
            if old is not None:
                old.subs.pop(keys, None)
        if conn.subs is _NO_SUBS:
            conn.subs = {}
        conn.subs[keys] = self._target_for(device, product)
        self._gateway_of[keys] = conn.key
        self._set_online(keys)
        self._permissions_changed()
        return (ReplyCode.SUCCESS, data, "")

    async def _sub_login(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        p = request.params
        if not isinstance(p, dict):
            return (ReplyCode.INVALID_JSON, None, "params must be a JSON object")
        code, data, text = self._login_one(
            conn,
            str(p.get("productKey") or ""),
            str(p.get("deviceKey") or ""),
            p.get("clientId"),
            p.get("timestamp"),
            p.get("signMethod", p.get("signmethod")),
            p.get("sign"),
            p.get("secureMode", p.get("securemode")),
        )
        return (code, data, text or None)

    async def _sub_login_batch(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        p = request.params
        empty: dict[str, list[Any]] = {"loginedSubDevices": [], "failedSubDevices": []}
        subs = p.get("subDevices") if isinstance(p, dict) else None
        if not isinstance(p, dict) or not isinstance(subs, list):
            return (ReplyCode.INVALID_JSON, empty, "params.subDevices must be a list")
        client_id = p.get("clientId")
        timestamp = p.get("timestamp")
        method = p.get("signMethod", p.get("signmethod"))
        logined: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        first_code = 0
        messages = []
        for entry in subs:
            if not isinstance(entry, dict):
                return (ReplyCode.INVALID_JSON, empty, "subDevices entries must be objects")
            pk, dk = str(entry.get("productKey") or ""), str(entry.get("deviceKey") or "")
            code, data, text = self._login_one(
                conn,
                pk,
                dk,
                client_id,
                timestamp,
                entry.get("signMethod", entry.get("signmethod", method)),
                entry.get("sign"),
                entry.get("secureMode", entry.get("securemode")),
            )
            if code == ReplyCode.SUCCESS:
                logined.append(data)
            else:
                failed.append({"productKey": pk, "deviceKey": dk})
                first_code = first_code or code
                messages.append(f"{pk}&{dk} has error: {text};")
        result = {"loginedSubDevices": logined, "failedSubDevices": failed}
        if first_code:
            return (first_code, result, "".join(messages))
        return (ReplyCode.SUCCESS, result, None)

    async def _sub_logout(self, conn: _Conn, match: TopicMatch, request: Request) -> _Result:
        p = request.params
        if not isinstance(p, dict):
            return (ReplyCode.PARSE_ERROR, None, "params must be a JSON object")
        keys = (str(p.get("productKey") or ""), str(p.get("deviceKey") or ""))
        self._logout(conn, keys, "logged out")
        return (ReplyCode.SUCCESS, {"productKey": keys[0], "deviceKey": keys[1]}, None)

    def _logout(self, conn: _Conn, keys: _Keys, reason: str) -> bool:
        if conn.subs.pop(keys, None) is None:
            return False
        if self._gateway_of.get(keys) == conn.key:
            del self._gateway_of[keys]
        self._set_offline(keys, reason)
        self._permissions_changed()
        return True

    def _permissions_changed(self) -> None:
        """What a connection may read changed (a sub-device logged in, out or moved): the hub
        works out again who receives each topic (see :meth:`authorise_receive`)."""
        hub = self._hub
        if hub is not None:
            hub.permissions_changed()

    # -- message integration (11) ----------------------------------------------------------

    def _integration_entries(
        self, match: TopicMatch, request: Request
    ) -> list[tuple[_Target, dict[str, Any]]] | _Result:
        params = request.params
        if params is None:
            params = []
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            return (ReplyCode.PARSE_ERROR, None, "params must be a list of objects")
        product = self.registry.get_product(match.product_key)
        model = self._model(product)
        out = []
        for entry in params:
            dk = entry.get("deviceKey")
            device = (
                self.registry.find_device(match.product_key, dk) if isinstance(dk, str) else None
            )
            if device is None:
                return (
                    ReplyCode.DEVICE_NOT_FOUND,
                    None,
                    f"device {match.product_key}/{dk} not found",
                )
            out.append((_Target(product, (device.product_key, device.device_key), model), entry))
        return out

    async def _integration_measurepoints(
        self, conn: _Conn, match: TopicMatch, request: Request
    ) -> _Result:
        entries = self._integration_entries(match, request)
        if isinstance(entries, tuple):
            return entries
        rows: list[PointRow] = []
        for target, entry in entries:
            at = self._time(entry)
            points = entry.get("measurepoints")
            if at is None or not isinstance(points, dict):
                problem = _bad_time(entry) if at is None else "measurepoints must be an object"
                return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, problem)
            result = _point_rows(target, points, at, True, skip=False)
            if isinstance(result, ValidationError):
                return (result.code, None, str(result))
            rows.extend(result)
        if rows:
            await self._points.add(rows)
        return _OK

    async def _integration_events(
        self, conn: _Conn, match: TopicMatch, request: Request
    ) -> _Result:
        entries = self._integration_entries(match, request)
        if isinstance(entries, tuple):
            return entries
        rows: list[EventRow] = []
        for target, entry in entries:
            at = self._time(entry)
            events = entry.get("events")
            if at is None or not isinstance(events, dict):
                problem = _bad_time(entry) if at is None else "events must be an object"
                return (ReplyCode.MODEL_VALIDATION_FAILED, None, problem)
            for event_id, raw in events.items():
                outputs = raw
                if target.model is not None:
                    outputs = target.model.validate_event(event_id, raw)
                else:  # passthrough: EnOS identifiers all the same
                    _check_ids((event_id,), "event")
                    if isinstance(raw, dict):
                        _check_ids(raw, "event output")
                rows.append(EventRow(*target.ident, event_id, at, outputs))
        if rows:
            await self.store.append_events_async(rows)
        return _OK

    async def _integration_attributes(
        self, conn: _Conn, match: TopicMatch, request: Request
    ) -> _Result:
        entries = self._integration_entries(match, request)
        if isinstance(entries, tuple):
            return entries
        rows: list[AttributeRow] = []
        now = self._clock.time_ms()
        for target, entry in entries:
            values = entry.get("attributes")
            if not isinstance(values, dict):
                return (
                    ReplyCode.ATTRIBUTE_UPDATE_FORMAT_ERROR,
                    None,
                    "attributes must be an object",
                )
            if target.model is not None:
                values = target.model.validate_attributes(values)
            _check_ids(values, "attribute")  # passthrough ones too
            self.registry.update_attributes(*target.ident, values)
            rows.extend(AttributeRow(*target.ident, k, now, v) for k, v in values.items())
        if rows:
            await self.store.append_attributes_async(rows)
        return _OK

    # -- lifecycle operations --------------------------------------------------------------

    async def enable_device(self, product_key: str, device_key: str) -> Device:
        """Enable a device; its online gateway gets ``combine/enable``."""
        device = self.registry.enable_device(product_key, device_key)
        await self._notify_gateway(device, TopicKind.SUB_DEVICE_ENABLE)
        return device

    async def disable_device(self, product_key: str, device_key: str) -> Device:
        """Disable a device: close its connection (presence "disabled") or log it out of its
        gateway, which gets ``combine/disable``."""
        device = self.registry.disable_device(product_key, device_key)
        self._drop_device((product_key, device_key), "disabled")
        await self._notify_gateway(device, TopicKind.SUB_DEVICE_DISABLE)
        return device

    async def delete_device(self, product_key: str, device_key: str) -> Device:
        """Delete a device: like :meth:`disable_device` (presence "deleted", ``combine/delete``)."""
        keys = (product_key, device_key)
        before = self.registry.get_device(*keys)
        if self.is_online(*keys):
            self._set_offline(keys, "deleted")
        self._drop_device(keys, "deleted", record=False)
        device = self.registry.delete_device(*keys)
        await self._notify_gateway(before, TopicKind.SUB_DEVICE_DELETE)
        return device

    def _drop_device(self, keys: _Keys, reason: str, *, record: bool = True) -> None:
        """Close the device's connection and forget its sessions in the hub (a disabled or
        deleted device's persistent sessions must not keep collecting messages); log it out of
        its gateway, whose session stops receiving its topics."""
        cid = self._owner.get(keys)
        if cid is not None:
            conn = self._conns.get(cid)
            if conn is not None and not record:
                conn.online = False
            self._kick_reasons[cid] = reason
        hub = self._hub
        if hub is not None:
            hub.end_identity(_identity(keys))  # the disconnection is handled in this call
        if cid is not None:
            self._kick_reasons.pop(cid, None)
        gw_cid = self._gateway_of.get(keys)
        if gw_cid is not None:
            gateway = self._conns.get(gw_cid)
            if gateway is not None:
                if record:
                    self._logout(gateway, keys, reason)
                else:
                    gateway.subs.pop(keys, None)
                    del self._gateway_of[keys]
                    self._permissions_changed()

    async def _notify_gateway(self, device: Device, kind: TopicKind) -> None:
        if device.gateway is None or self._hub is None:
            return
        cid = self._owner.get(device.gateway)
        if cid is None:
            return
        topic = kind.format(*device.gateway)
        method = kind.method or ""
        params = [{"productKey": device.product_key, "deviceKey": device.device_key}]
        payload = encode_request(str(next(self._ids)), method, params)
        await self._hub.deliver(cid, Message(topic, payload, 1))

    # -- commands (9) ----------------------------------------------------------------------

    async def send_command(
        self,
        product_key: str,
        device_key: str,
        kind: TopicKind,
        params: object,
        *,
        item_id: str = "",
        wait: bool = True,
        timeout: float | None = None,
    ) -> Reply | None:
        """Send a command to a device without any subscription and (``wait``) await its reply.

        The command goes to the device's connection or, for a logged-in sub-device, its
        gateway's (the topic keeps the sub-device's keys), at QoS 1. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown device,
        :class:`~enos_lab.errors.DeviceOffline` when it has no connection, :class:`TimeoutError`
        when no reply arrives in ``timeout`` seconds (default ``config.command_timeout``).
        """
        if kind.direction is not Direction.DOWN:
            raise InvalidArgument(f"{kind.name} is not a command topic")
        keys = (product_key, device_key)
        self.registry.get_device(*keys)
        hub = self._hub
        cid = self._owner.get(keys) or self._gateway_of.get(keys)
        conn = self._conns.get(cid) if cid is not None else None
        if hub is None or conn is None or (conn.own is not None and conn.activation):
            raise DeviceOffline(f"device {product_key}/{device_key} is offline")
        topic = kind.format(product_key, device_key, item_id)
        request_id = str(next(self._ids))
        method = kind.method or ""
        if "%s" in method:
            method = method % item_id
        payload = encode_request(request_id, method, params)
        if kind.is_raw:
            codec = self._codecs.get(product_key)
            if codec is None:
                raise InvalidArgument(f"product {product_key} has no raw codec")
            payload = codec.encode_downstream(payload)
        key = (topic, request_id)
        future: asyncio.Future[Reply] | None = None
        if wait:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
        try:
            if not await hub.deliver(conn.key, Message(topic, payload, 1)):
                raise DeviceOffline(f"device {product_key}/{device_key} is offline")
            if future is None:
                return None
            limit = self.config.command_timeout if timeout is None else timeout
            return await asyncio.wait_for(future, limit)
        finally:
            if future is not None:
                self._pending.pop(key, None)


_ALLOW = Decision(True)


def _identity(keys: _Keys) -> str:
    """The hub identity of a device: its EnOS user name ``"{device_key}&{product_key}"`` (an
    integration channel: ``"%channel%&{product_key}"``), which names one device: keys never
    contain ``&``."""
    return f"{keys[1]}&{keys[0]}"


_MAX_FILTERS = 128  # subscriptions remembered per connection for the 1009 answer


def _remember_filter(conn: _Conn, topic_filter: str) -> None:
    """Remember a subscription for :meth:`IotHub._subscribed`; beyond :data:`_MAX_FILTERS` the
    oldest is forgotten: however many filters a client sends, what is kept and the cost of its
    next SUBSCRIBE stay bounded (they grew with every refused filter, quadratically)."""
    filters = conn.filters
    if topic_filter not in filters:
        conn.filters = (*filters[-(_MAX_FILTERS - 1) :], topic_filter)


def _down_raw(match: TopicMatch) -> TopicMatch:
    return TopicMatch(TopicKind.MODEL_DOWN_RAW, match.product_key, match.device_key, "", True)


def _kind_of_method(method: str) -> tuple[TopicKind | None, str]:
    kind = _UP_METHODS.get(method)
    if kind is not None:
        return kind, ""
    parts = method.split(".")
    if len(parts) == 4 and parts[:2] == ["thing", "event"] and parts[3] == "post" and parts[2]:
        return TopicKind.EVENT_POST, parts[2]
    return None, ""


def _shown(value: object) -> str:
    """``repr(value)`` for a message, clipped: a device may send megabytes."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_time(params: dict[str, Any]) -> str:
    """The reply message for a ``time`` that :meth:`IotHub._time` refused."""
    return f"{_TIME_RULE}, found {_shown(params.get('time'))}"


def _check_ids(identifiers: Iterable[str], what: str) -> None:
    """Raise the first :func:`_identifier_error` of ``identifiers`` (a request handler's 1204)."""
    for identifier in identifiers:
        error = _identifier_error(identifier, what)
        if error is not None:
            raise error


def _identifier_error(identifier: str, what: str) -> ValidationError | None:
    """EnOS's identifier rule (:func:`~enos_lab.model.check_identifier`) for an id that no
    thing model checked (passthrough data): 1204 naming the id, or None."""
    try:
        check_identifier(identifier, what)
    except ModelError as exc:
        return ValidationError(str(exc))
    return None


def _error_result(exc: BaseException) -> _Result:
    """The reply to a request whose handling raised ``exc`` (never a ClosedError: those leave the
    request unanswered and unacknowledged), on the general path (:meth:`IotHub._handle`) and
    the measurepoint fast path (:func:`_post_error`) alike. Each family its own reply:

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


def _post_error(reply_topic: str, request_id: Any, error: BaseException) -> bytes:
    """The error reply to a fast-path post whose rows the store refused (:func:`_error_result`,
    as on the general path); logged at ERROR: the edge checks should have refused them."""
    topic = reply_topic.removesuffix(REPLY_SUFFIX)
    if isinstance(error, StoreError):
        log.error("storing the post on %s failed: %s", topic, error)
    elif isinstance(error, (ValidationError, InvalidArgument, RegistryError)):
        log.error("the store refused the post on %s: %s", topic, error)
    else:
        log.error("storing the post on %s failed", topic, exc_info=error)
    code, data, text = _error_result(error)
    return encode_reply(request_id, code, data, text)


def _point_rows(
    target: _Target, points: dict[str, Any], at: int, resume: bool, *, skip: bool
) -> list[PointRow] | ValidationError:
    """Validated rows for one measurepoint map, or the first validation error.

    Points no thing model checks (a product without a model, or points a model lets pass)
    must have EnOS identifiers as ids, and a quality, if given, must be an int 0..9 (1204).
    """
    pk, dk = target.ident
    model = target.model
    if model is None:
        rows = []
        for point_id, raw in points.items():
            error = _identifier_error(point_id, "measurepoint")
            quality, value = None, raw
            if error is None and type(raw) is dict and "value" in raw:
                quality = raw.get("quality")
                value = raw["value"]
                if quality is not None and not valid_quality(quality):
                    error = ValidationError(
                        f"measurepoint {point_id!r}: expected a quality as an int "
                        f"0..{QUALITY_MAX}, found {_shown(quality)}"
                    )
            if error is not None:
                if skip:
                    continue
                return error
            rows.append(PointRow(pk, dk, point_id, at, value, quality, resume))
        return rows
    checked = model.check_measurepoints(points)
    if checked.problems and not skip:
        return checked.problems[0].error()
    quality_of = checked.quality
    values = checked.values
    if checked.passthrough:  # accepted unchecked by the model ("Support Passthrough")
        for point_id in checked.passthrough:
            error = _identifier_error(point_id, "measurepoint")
            if error is not None and not skip:
                return error
            if error is not None:
                values = {k: v for k, v in values.items() if k != point_id}
    # plain tuples in PointRow's field order (the store accepts them; half the cost)
    tuples: list[Any] = [
        (pk, dk, point_id, at, value, quality_of.get(point_id), resume)
        for point_id, value in values.items()
    ]
    return tuples
