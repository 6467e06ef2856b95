"""Measurepoints (protocol reference 7.1, 7.2): posts, resumes and batches, and their storage.

Theory of operation
-------------------
Two paths store a ``measurepoint/post`` (or ``resume``), side by side in :class:`Measurepoints`
and accepting the same inputs:

- the **general path** (:meth:`Measurepoints.post`), a request handler like every other: the
  request was decoded, permission-checked and dispatched by ``Requests``; it awaits the commit
  and returns the reply, error codes included;
- the **fast path** (:meth:`Measurepoints.fast_post`), without a coroutine per message: it
  inlines what the general path does for a well-formed, valid post (decode, permission, time,
  rows) and queues the rows; anything else - malformed or invalid requests, permission errors,
  posts without points - it declines, and the general path answers it.

Both decode payloads with :func:`~enos_lab.enos.decode_payload` (strict JSON, bounded nesting)
and build rows with :func:`point_rows`. The rows of every request handled in one event-loop
iteration go to the store as one append (:class:`PointBatcher`); after the commit one task
publishes the batch's fast-path replies (:meth:`~enos_lab.hub.Hub.publish_nowait`, no coroutine
per reply) and then resolves the one future of the batch, on which the hub waits before each
PUBACK. A bad request fails alone: what the store cannot keep never reaches it (event times
outside the store's range: 1206; ids of passthrough data that are not EnOS identifiers and
qualities outside 0..9: 1204), and if the combined append of a batch fails all the same, the
rows of each request are appended again on their own, so that only the culprit gets the error
reply.

The tap hears of the points once committed: the batch's commit task hands the committed rows
(of every request whose rows the store kept) to :meth:`~enos_lab.iothub._emit.Emitter.points`
after the replies, one check per batch when nobody listens.

One seam before the commit: an optional **point router** (``PointBatcher.router``, set by
:attr:`~enos_lab.iothub.IotHub.point_router`; the rule engine's) gets the validated rows of a
batch and returns the rows to store - some of them, and derived rows. Rows it leaves out are
neither stored nor reported on the tap, and the device is answered 200 all the same (EnOS
acknowledges data its storage policy drops). Without a router the rows go to the store as they
are (no cost); a router that raises is logged and the batch is stored unrouted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from json.encoder import encode_basestring as _encode_json_str
from typing import Any, TypeAlias

from ..clock import Clock
from ..enos import (
    MAX_PAYLOAD_SIZE,
    REPLY_SUFFIX,
    EnvelopeError,
    ReplyCode,
    Request,
    TopicKind,
    TopicMatch,
    decode_payload,
    encode_reply,
)
from ..errors import (
    ClosedError,
    InvalidArgument,
    RegistryError,
    StoreError,
    ValidationError,
)
from ..hub import Hub, Message
from ..hub._types import _make_message
from ..model import QUALITY_MAX, valid_quality
from ..mqtt import NO_PROPERTIES
from ..store import MAX_EVENT_MS, MIN_EVENT_MS, PointRow, TimeSeriesStore
from ._checks import bad_time, blank, event_time, identifier_error, shown
from ._config import IotHubConfig
from ._emit import Emitter
from ._routes import OK, OK_HEAD, OK_TAIL, Result, Route, error_result
from ._sessions import Conn, Sessions, Target

__all__ = ["Measurepoints", "PointBatcher", "PointRouter", "point_rows"]

log = logging.getLogger("enos_lab.iothub")

# One measurepoint request on the fast path, waiting for the commit of its batch:
# (reply topic, success reply, request id, request QoS, its rows)
_Post: TypeAlias = tuple[str, bytes, Any, int, list[Any]]
# One request of the general path in a batch: its rows and the future its handler awaits
_Add: TypeAlias = tuple[list[Any], asyncio.Future[int]]
# The rule engine's seam: validated rows in, rows to store out (see the module docstring)
PointRouter: TypeAlias = Callable[[list[Any]], list[Any]]
# Replies to the posts of a committed batch (Measurepoints.answer_posts)
_Answer: TypeAlias = Callable[
    [list[_Post], list[int | BaseException] | None, asyncio.Future[None]], None
]


class Measurepoints:
    """The measurepoint handlers: the general path, the fast path and their batcher.

    ``batcher`` stores the rows of every measurepoint request (the integration channel's too)
    and tells the tap (``emit``); ``hub`` is set by ``IotHub.attach``.
    """

    __slots__ = ("_clock", "_emit", "_sessions", "batcher", "config", "hub")

    def __init__(
        self,
        store: TimeSeriesStore,
        sessions: Sessions,
        config: IotHubConfig,
        clock: Clock,
        emit: Emitter | None = None,
    ) -> None:
        self.config = config
        self.hub: Hub | None = None
        self._emit = emit or Emitter.idle()
        self.batcher = PointBatcher(self.answer_posts, store, self._emit)
        self._sessions = sessions
        self._clock = clock

    # -- the general path ----------------------------------------------------------------

    async def post(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``measurepoint/post`` and ``resume``: one device's points at one time."""
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        params = request.params
        if not isinstance(params, dict):
            return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, "params must be a JSON object")
        at = event_time(params, self._clock)
        if at is None:
            return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, bad_time(params))
        points = params.get("measurepoints")
        if not isinstance(points, dict):
            return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, "measurepoints must be an object")
        resume = match.kind is TopicKind.MEASUREPOINT_RESUME
        rows = point_rows(target, points, at, resume, skip=False)
        if isinstance(rows, ValidationError):
            return (rows.code, None, str(rows))
        if rows:
            await self.batcher.add(rows)
        return OK

    # -- the fast path: inlines post() for well-formed, valid posts ----------------------

    def fast_post(self, conn: Conn, route: Route, message: Message) -> asyncio.Future[None] | None:
        """A well-formed, valid measurepoint post without a coroutine of its own.

        Decodes and validates the request, queues its rows in this iteration's batch and
        returns a future that resolves once the batch is committed and the reply published
        (:meth:`answer_posts`), which is when the hub may acknowledge the PUBLISH. Anything
        else - malformed or invalid requests, permission errors, posts without points - returns
        None and takes the general path (:meth:`post` through ``Requests``), which produces
        the replies, error codes included.
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
            at = event_time(params, self._clock)  # the usual epoch ms, else the general rules
        points = params.get("measurepoints")
        if at is None or type(points) is not dict:
            return None
        resume = match.kind is TopicKind.MEASUREPOINT_RESUME
        rows = point_rows(target, points, at, resume, skip=False)
        if not rows or isinstance(rows, ValidationError):
            return None
        request_id = document.get("id")
        if type(request_id) is str:
            id_json = _encode_json_str(request_id)  # what json.dumps(.., ensure_ascii=False) gives
        else:
            id_json = json.dumps(request_id, ensure_ascii=False)
        reply = OK_HEAD + id_json.encode() + OK_TAIL
        return self.batcher.add_post((route.reply_topic, reply, request_id, message.qos, rows))

    def answer_posts(
        self,
        posts: list[_Post],
        results: list[int | BaseException] | None,
        replied: asyncio.Future[None],
    ) -> None:
        """Reply to the fast-path posts of one batch: committed (``results`` None), or per post
        its row count or the store's error; then resolve ``replied``, on which the hub waits to
        acknowledge them.

        An error is answered like the general path answers it
        (:func:`~enos_lab.iothub._routes.error_result`) and logged at ERROR; only when the store
        or the hub is closing are the posts left unacknowledged.
        """
        if replied.done():
            return
        if results is not None:
            for result in results:
                if isinstance(result, (ClosedError, asyncio.CancelledError)):
                    replied.set_exception(result)  # stopping: the devices send them again
                    return
        hub = self.hub
        if hub is not None:
            publish = hub.publish_nowait
            try:
                if results is None:
                    for topic, ok, _, qos, _ in posts:
                        publish(_make_message(topic, ok, 1 if qos else 0, False, NO_PROPERTIES))
                else:
                    for post, result in zip(posts, results, strict=True):
                        topic, ok, request_id, qos, rows = post
                        if isinstance(result, BaseException):
                            reply = _post_error(topic, request_id, result)
                            self._refused(rows, result)
                        else:
                            reply = ok
                        publish(_make_message(topic, reply, 1 if qos else 0, False, NO_PROPERTIES))
            except Exception as exc:  # the hub is stopping
                replied.set_exception(exc)
                return
        replied.set_result(None)

    def _refused(self, rows: list[Any], error: BaseException) -> None:
        """Tell the emitter of a fast-path post the store refused (its device, its code)."""
        if rows:
            pk, dk, *_, resume = rows[0]
            kind = TopicKind.MEASUREPOINT_RESUME if resume else TopicKind.MEASUREPOINT_POST
            self._emit.refused((pk, dk), kind.name, error_result(error)[0])

    # -- batches (7.2) -------------------------------------------------------------------

    async def batch(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``measurepoint/post/batch`` and ``resume/batch``: entries of the gateway and its
        sub-devices (``allowOfflineSubDevice``: of sub-devices not logged in too;
        ``skipInvalidMeasurepoints``: invalid entries and points are left out)."""
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
            keys = topic_keys if blank(pk) and blank(dk) else (str(pk or ""), str(dk or ""))
            target = conn.target(keys)
            if target is None and allow_offline:
                target = self._sessions.offline_sub_device(conn, keys)
            if target is None:
                return (
                    ReplyCode.NO_SUB_DEVICE_PERMISSION,
                    None,
                    f"entry {index}: {keys[0]}/{keys[1]} is not a logged-in sub-device "
                    "of this gateway",
                )
            at = event_time(entry, self._clock)
            points = entry.get("measurepoints")
            if at is None or not isinstance(points, dict):
                if skip:
                    continue
                problem = bad_time(entry) if at is None else "measurepoints must be an object"
                return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, f"entry {index}: {problem}")
            result = point_rows(target, points, at, resume, skip=skip)
            if isinstance(result, ValidationError):
                return (result.code, None, f"entry {index}: {result}")
            rows.extend(result)
        if rows:
            await self.batcher.add(rows)
        return OK


def point_rows(
    target: Target, points: dict[str, Any], at: int, resume: bool, *, skip: bool
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
            error = identifier_error(point_id, "measurepoint")
            quality, value = None, raw
            if error is None and type(raw) is dict and "value" in raw:
                quality = raw.get("quality")
                value = raw["value"]
                if quality is not None and not valid_quality(quality):
                    error = ValidationError(
                        f"measurepoint {point_id!r}: expected a quality as an int "
                        f"0..{QUALITY_MAX}, found {shown(quality)}"
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
            error = identifier_error(point_id, "measurepoint")
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


def _post_error(reply_topic: str, request_id: Any, error: BaseException) -> bytes:
    """The error reply to a fast-path post whose rows the store refused (the general path's
    :func:`~enos_lab.iothub._routes.error_result`); logged at ERROR: the edge checks should
    have refused them."""
    topic = reply_topic.removesuffix(REPLY_SUFFIX)
    if isinstance(error, StoreError):
        log.error("storing the post on %s failed: %s", topic, error)
    elif isinstance(error, (ValidationError, InvalidArgument, RegistryError)):
        log.error("the store refused the post on %s: %s", topic, error)
    else:
        log.error("storing the post on %s failed", topic, exc_info=error)
    code, data, text = error_result(error)
    return encode_reply(request_id, code, data, text)


class PointBatcher:
    """Collects the measurepoint rows of every request handled in one event-loop iteration and
    hands them to the store as one append.

    The store groups concurrent appends too, but each append has a fixed cost on the event loop
    (encoding, futures, a task); one append per iteration keeps that cost per batch, not per
    message. Two kinds of callers: :meth:`add` (the general request path awaits the commit) and
    :meth:`add_post` (the measurepoint fast path): the batch's commit task publishes the replies
    of its posts (``answer``, :meth:`Measurepoints.answer_posts`) - success after the commit,
    the storage error otherwise - and then resolves the batch's one future, on which the hub
    waits before it acknowledges each PUBLISH. Every post of every connection handled in one
    iteration (with a pipelining hub, many of one connection) is committed by one append.

    A bad request fails alone: when the combined append fails, the rows of each request of the
    batch are appended again on their own, concurrently (the store's writer commits them as a
    group and, when that fails, batch by batch), so that only the requests whose rows the store
    refuses get its error; the others are stored and answered 200. The common case costs
    nothing extra (a post's rows travel in its reply tuple).

    After the replies, the rows the store kept go to the tap (``emit``, default: a tap of its
    own without consumers). ``router`` (default None) chooses the rows to store, before the
    commit (see the module docstring).
    """

    __slots__ = (
        "_adds",
        "_answer",
        "_emit",
        "_posts",
        "_replied",
        "_rows",
        "_scheduled",
        "_store",
        "_tasks",
        "router",
    )

    def __init__(
        self, answer: _Answer, store: TimeSeriesStore, emit: Emitter | None = None
    ) -> None:
        self._answer = answer
        self._emit = emit or Emitter.idle()
        self._store = store
        self._tasks: set[asyncio.Task[None]] = set()  # commits under way
        self._rows: list[Any] = []
        self._posts: list[_Post] = []
        self._adds: list[_Add] = []
        self._scheduled = False  # a flush of this batch is scheduled
        self._replied: asyncio.Future[None] | None = None  # the posts of this batch answered
        self.router: PointRouter | None = None

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

    async def drain(self) -> None:
        """Wait until every queued batch is committed and answered (for a clean stop: the
        hub sends no more messages, and what was received is kept before the store closes)."""
        while self._scheduled or self._tasks:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                await asyncio.sleep(0)  # the flush of the batch being filled runs first

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
        router = self.router
        if router is not None:
            rows = _route(router, rows)
        try:
            if rows:
                await self._store.append_points_async(rows)
        except Exception as exc:
            parts = [post[4] for post in posts] + [add[0] for add in adds]  # each request's rows
            if router is not None:
                parts = [_route(router, part) for part in parts]
            results: list[int | BaseException] = [exc] * len(parts)
            if len(parts) > 1 and not isinstance(exc, ClosedError):
                log.warning(
                    "storing a batch of %d measurepoint requests failed (%s); storing each alone",
                    len(parts),
                    exc,
                )
                results = await asyncio.gather(
                    *(self._append(part) for part in parts),
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
                self._answer(posts, results[:count], replied)
            # the rows of the requests the store kept when appended alone
            self._emit.points(
                row
                for part, result in zip(parts, results, strict=True)
                if not isinstance(result, BaseException)
                for row in part
            )
            return
        for part, future in adds:
            if not future.done():
                future.set_result(len(part))  # what the request posted, stored or routed away
        if replied is not None:
            self._answer(posts, None, replied)
        self._emit.points(rows)

    async def _append(self, rows: list[Any]) -> int:
        if not rows:
            return 0
        return await self._store.append_points_async(rows)


def _route(router: PointRouter, rows: list[Any]) -> list[Any]:
    """The rows ``router`` keeps; all of them when it fails (logged: ingest never stops)."""
    try:
        return router(rows)
    except Exception:
        log.exception("the point router failed on a batch of %d rows; storing them all", len(rows))
        return rows
