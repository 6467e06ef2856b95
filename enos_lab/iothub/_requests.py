"""Requests and replies: every PUBLISH the hub accepts from an EnOS connection comes here.

Theory of operation
-------------------
:meth:`Requests.on_message` is the hub's message handler: one call per accepted PUBLISH,
dispatched by the topic's cached route (:mod:`~enos_lab.iothub._routes`). It returns an
awaitable so that the PUBACK goes out only after the store committed and the reply was
published:

- a measurepoint post first tries the fast path (``Measurepoints.fast_post``, no coroutine per
  message); whatever that path declines takes the general path, which gives the error replies;
- every other request is decoded (:func:`~enos_lab.enos.decode_request`: strict JSON, bounded
  nesting; 1220 otherwise), checked against the connection's write permission
  (:func:`~enos_lab.iothub._acl.may_request`; EnOS 1009 to the publisher only, and only if it
  asked for the reply) and, with ``strict_methods``, against the topic's method (1260), then
  handed to the route's handler (:meth:`Requests.handle`);
- ``model/up_raw`` payloads of a CUSTOM-format product are decoded by the product's
  :class:`~enos_lab.iothub.RawCodec` and handled like the JSON topic named by their method;
- a device's reply to a command or to ``activate/info`` goes to the commands part.

Replies are ``{"id": <echo>, "code": <int>, "data": .., "message": ..}`` on ``T + "_reply"``,
published through the hub (so only subscribers get them) at QoS min(request QoS, 1). A bad
message fails alone, with its own reply code, and the connection stays: what a handler raises is
answered by :func:`~enos_lab.iothub._routes.error_result` (an unexpected exception is logged
with its traceback and answered 1200 "internal error"), never with a dropped connection; only
when the store or the hub is closing is a request left unanswered and unacknowledged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..enos import (
    Direction,
    EnvelopeError,
    ReplyCode,
    Request,
    TopicKind,
    TopicMatch,
    decode_payload,
    decode_request,
    encode_reply,
)
from ..errors import ClosedError, InvalidArgument, RegistryError, StoreError, ValidationError
from ..hub import ClientInfo, Hub, Message
from ..registry import DataFormat
from ._acl import may_request, subscribed
from ._config import IotHubConfig, RawCodec
from ._emit import Emitter
from ._routes import (
    DEVICE_REPLY,
    OK_HEAD,
    OK_TAIL,
    RAW_REQUEST,
    REQUEST,
    Result,
    Route,
    Routes,
    error_result,
)
from ._sessions import Conn, Sessions

__all__ = ["Requests"]

log = logging.getLogger("enos_lab.iothub")

# canonical method -> kind, for envelopes decoded from raw (custom format) payloads
_UP_METHODS: dict[str, TopicKind] = {
    kind.method: kind
    for kind in TopicKind
    if kind.direction is Direction.UP and kind.method is not None and "%s" not in kind.method
}

FastPost = Callable[[Conn, Route, Message], "Awaitable[None] | None"]
DeviceReply = Callable[[Conn, TopicMatch, bytes], None]


class Requests:
    """The hub's message handler for EnOS connections (see the module docstring).

    ``fast_post`` is the measurepoint fast path, ``device_reply`` the receiver of devices'
    replies, ``codecs`` the raw codecs by product key (shared with the commands part); ``hub``
    is set by ``IotHub.attach``.
    """

    __slots__ = (
        "_codecs",
        "_conns",
        "_device_reply",
        "_emit",
        "_fast_post",
        "_make_route",
        "_route",
        "config",
        "hub",
    )

    def __init__(  # noqa: PLR0917
        self,
        sessions: Sessions,
        routes: Routes,
        fast_post: FastPost,
        device_reply: DeviceReply,
        codecs: dict[str, RawCodec],
        config: IotHubConfig,
        emit: Emitter | None = None,
    ) -> None:
        self.config = config
        self._emit = emit or Emitter.idle()
        self.hub: Hub | None = None
        # the collaborators' tables and entry points, held here: one attribute per message
        self._conns = sessions.conns
        self._route = routes.route
        self._make_route = routes.make_route
        self._fast_post = fast_post
        self._device_reply = device_reply
        self._codecs = codecs

    def on_message(self, client: ClientInfo | None, message: Message) -> Awaitable[None] | None:
        """Handle one accepted PUBLISH (hub MessageHandler); see the module docstring."""
        if client is None:
            return None
        conn = self._conns.get(client.session_key)
        if conn is None:
            return None
        route = self._route(message.topic)
        if route is None:
            return None
        action = route.action
        if action == REQUEST:
            if route.fast:
                try:
                    done = self._fast_post(conn, route, message)
                except Exception:  # a bug; the general path answers the request
                    log.exception("client %r: measurepoint fast path failed", conn.client_id)
                    done = None
                if done is not None:
                    return done
            return self._request(conn, route, message)
        if action == RAW_REQUEST:
            return self._raw_request(conn, route, message, 1 if message.qos else 0)
        if action == DEVICE_REPLY:
            self._device_reply(conn, route.match, message.payload)
        return None

    async def _request(self, conn: Conn, route: Route, message: Message) -> None:
        qos = 1 if message.qos else 0
        reply_topic = route.reply_topic
        try:
            request = decode_request(message.payload)
        except EnvelopeError as exc:
            self._emit.refused(conn.ident, route.match.kind.name, exc.code)
            await self._reply(reply_topic, None, exc.code, None, str(exc), qos)
            return
        result = await self.handle(conn, route, request)
        if result is None:
            self._emit.refused(conn.ident, route.match.kind.name, ReplyCode.NO_WRITE_PERMISSION)
            await self._deny(conn, reply_topic, request.id, qos)
            return
        code, data, text = result
        if code != ReplyCode.SUCCESS:
            match = route.match
            self._emit.refused((match.product_key, match.device_key), match.kind.name, code)
        hub = self.hub
        if hub is None:
            return
        if code == ReplyCode.SUCCESS and data is None and text is None:
            payload = OK_HEAD + json.dumps(request.id, ensure_ascii=False).encode() + OK_TAIL
        else:
            payload = encode_reply(request.id, code, data, text)
        await hub.publish(Message(reply_topic, payload, qos))

    async def handle(self, conn: Conn, route: Route, request: Request) -> Result | None:
        """The reply to one request; None when the connection may not send it (EnOS 1009).

        Raises :class:`~enos_lab.errors.ClosedError` when the store or the hub is stopping
        (the request stays unacknowledged and the device sends it again).
        """
        match = route.match
        if not may_request(conn, match, route.scope):
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
            return error_result(exc)
        except (ValidationError, InvalidArgument, RegistryError) as exc:
            return error_result(exc)  # the device's input, or the registry's state
        except Exception as exc:
            log.exception("client %r: handling %s failed", conn.client_id, kind.name)
            return error_result(exc)

    async def _deny(self, conn: Conn, reply_topic: str, request_id: Any, qos: int) -> None:
        # EnOS 1009 goes to the publisher only, and only if it asked for the reply (a refused
        # SUBSCRIBE to the reply topic counts: the request itself was the violation)
        log.info("client %r: no write permission for %s", conn.client_id, reply_topic)
        hub = self.hub
        if hub is None or not subscribed(conn, reply_topic):
            return
        payload = encode_reply(request_id, ReplyCode.NO_WRITE_PERMISSION)
        await hub.deliver(conn.key, Message(reply_topic, payload, qos))

    async def _reply(  # noqa: PLR0917
        self, topic: str, request_id: Any, code: int, data: Any, text: str | None, qos: int
    ) -> None:
        hub = self.hub
        if hub is None:
            return
        await hub.publish(Message(topic, encode_reply(request_id, code, data, text), qos))

    # -- raw (custom format) payloads (7.5) ----------------------------------------------

    async def _raw_request(self, conn: Conn, route: Route, message: Message, qos: int) -> None:
        """``model/up_raw``: decode with the product's codec and handle like the JSON topic."""
        match = route.match
        reply_topic = route.reply_topic
        codec = self._codecs.get(match.product_key)
        allowed = may_request(conn, match, route.scope)
        target = conn.target((match.product_key, match.device_key))
        keys = (match.product_key, match.device_key)
        if not allowed:
            self._emit.refused(conn.ident, match.kind.name, ReplyCode.NO_WRITE_PERMISSION)
            await self._deny(conn, reply_topic, "unknown", qos)
            return
        if codec is None or (
            target is not None and target.product.data_format is not DataFormat.CUSTOM
        ):
            self._emit.refused(keys, match.kind.name, ReplyCode.PARSE_ERROR)
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
            self._emit.refused(keys, match.kind.name, ReplyCode.PARSE_ERROR)
            reply = encode_reply("unknown", ReplyCode.PARSE_ERROR, None, f"codec failed: {exc}")
            await self._publish_raw(reply_topic, _encode_raw_reply(codec, reply), qos)
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
            self._emit.refused(keys, match.kind.name, exc.code)
            reply = encode_reply(None, exc.code, None, str(exc))
            await self._publish_raw(reply_topic, _encode_raw_reply(codec, reply), qos)
            return
        result: Result | None
        if kind is None:
            result = (
                ReplyCode.PARSE_ERROR,
                None,
                f"decoded envelope has an unknown method {method!r}",
            )
        else:
            inner = TopicMatch(kind, match.product_key, match.device_key, item_id)
            result = await self.handle(conn, self._make_route(inner, reply_topic), request)
            if result is None:
                result = (ReplyCode.NO_WRITE_PERMISSION, None, None)
        code, data, text = result
        if code != ReplyCode.SUCCESS:
            self._emit.refused(keys, (kind or match.kind).name, code)
        reply = encode_reply(request.id, code, data, text)
        await self._publish_raw(reply_topic, _encode_raw_reply(codec, reply), qos)

    async def _publish_raw(self, topic: str, payload: bytes, qos: int) -> None:
        hub = self.hub
        if hub is not None:
            await hub.publish(Message(topic, payload, qos))


def _encode_raw_reply(codec: RawCodec, reply: bytes) -> bytes:
    try:
        return codec.encode_reply(reply)
    except Exception:
        log.exception("codec failed to encode a reply")
        return reply


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
