"""The request path of a device client: one upstream request, its reply, its errors.

:class:`Requests` is the part of :class:`~enos_lab.device.DeviceClient` that sends requests
(protocol reference 4): the payload is an envelope with the next id of the client's counter as
a string (4.4) and the topic's canonical method; it goes out at QoS 1 on the open connection
after a SUBSCRIBE to its reply topic (once per connection, 4.2), and waits for its reply in
:class:`~enos_lab.device._pending.Pending` (which bounds the requests in flight) until the
timer on the client's clock fires. In SHORT mode each request is an operation of its own
(connect, request, disconnect) unless a session holds the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..enos import MAX_PAYLOAD_SIZE, REPLY_SUFFIX, Direction, Reply, TopicKind, encode_request
from ..errors import (
    ClosedError,
    EnosLabError,
    InvalidArgument,
    NotConnected,
    RequestFailed,
    RequestTimeout,
)
from ._connection import Connection
from ._pending import Pending, expire
from ._policy import ConnectionMode

if TYPE_CHECKING:
    import itertools

    from ..clock import Clock

__all__ = ["Requests"]

R = TypeVar("R")
_UP_RAW: TopicKind = TopicKind.MODEL_UP_RAW


class Requests:
    """The request path of a :class:`~enos_lab.device.DeviceClient` (see the module
    docstring)."""

    if TYPE_CHECKING:  # provided by DeviceClient
        product_key: str
        device_key: str
        host: str
        port: int
        timeout: float
        mode: ConnectionMode
        _clock: Clock
        _pending: Pending
        _counts: dict[str, int]
        _conn: Connection | None
        _active: bool
        _ids: itertools.count[int]
        _lock: asyncio.Lock

        @property
        def device(self) -> str: ...

        async def wait_connected(self, timeout: float | None = None) -> bool: ...

        async def _use(self) -> None: ...

        async def _unuse(self) -> None: ...

    async def request(
        self,
        kind: TopicKind,
        params: Any,
        *,
        product_key: str | None = None,
        device_key: str | None = None,
        item_id: str = "",
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send one upstream request on the topic ``kind`` (of this device, or of the keys
        given: a sub-device behind this gateway) and return the hub's 200 reply.

        ``item_id`` fills the topic's ``{id}`` (an event id), ``extra`` adds top-level members
        (the batch flags). Raises :class:`~enos_lab.errors.RequestFailed` for another code,
        :class:`~enos_lab.errors.RequestTimeout` after ``timeout`` (default: the client's) on
        the client's clock, :class:`~enos_lab.errors.NotConnected` when the connection is
        down or drops first, :class:`~enos_lab.errors.ClosedError` before :meth:`connect`.
        """
        return await self._ask(
            kind,
            params,
            product_key or self.product_key,
            device_key or self.device_key,
            item_id,
            extra,
            timeout,
        )

    async def _send(
        self,
        kind: TopicKind,
        params: Any,
        *,
        item_id: str = "",
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        return await self.request(kind, params, item_id=item_id, extra=extra, timeout=timeout)

    async def _send_raw(self, payload: bytes, timeout: float | None) -> bytes:
        return await self._raw_request(self.product_key, self.device_key, payload, timeout)

    async def _ask(  # noqa: PLR0917
        self,
        kind: TopicKind,
        params: Any,
        product_key: str,
        device_key: str,
        item_id: str,
        extra: Mapping[str, Any] | None,
        timeout: float | None,
        check: bool = True,
    ) -> Reply:
        """One request and its reply; with ``check``, :class:`RequestFailed` for a code
        other than 200."""
        if kind.direction is not Direction.UP or kind.is_raw:
            raise InvalidArgument(
                f"{kind.name} is not an upstream JSON request topic (raw: use post_raw)"
            )
        topic = kind.format(product_key, device_key, item_id)
        request_id = self._next_id()
        payload = encode_request(request_id, kind.method_for(item_id), params, **(extra or {}))
        if self.mode is ConnectionMode.LONG:
            reply = await self._exchange(topic, request_id, payload, timeout)
        else:
            await self._use()
            try:
                reply = await self._exchange(topic, request_id, payload, timeout)
            finally:
                await self._unuse()
        if check and not reply.ok:
            raise RequestFailed(
                reply.code, reply.message, reply.data, topic=topic, request_id=request_id
            )
        return reply

    async def _raw_request(
        self, product_key: str, device_key: str, payload: bytes, timeout: float | None
    ) -> bytes:
        topic = _UP_RAW.format(product_key, device_key)
        if self.mode is ConnectionMode.LONG:
            return await self._exchange_raw(topic, payload, timeout)
        await self._use()
        try:
            return await self._exchange_raw(topic, payload, timeout)
        finally:
            await self._unuse()

    async def _slot(self, topic: str, limit: float) -> Connection:
        """Take a request slot (waiting at most ``limit``); the open connection."""
        pending = self._pending
        if pending.full:
            try:
                await self._clock.wait_for(pending.acquire(), limit)
            except TimeoutError:
                self._counts["timeouts"] += 1
                raise RequestTimeout(
                    f"request on {topic}: all {pending.limit} request slots of device "
                    f"{self.device} stayed busy for {limit} s"
                ) from None
        else:
            await pending.acquire()  # free: returns without suspending
        conn = self._conn
        if (conn is None or not conn.is_open) and self._active and self._lock.locked():
            # a login is under way: a request made meanwhile (by a command handler answering a
            # command that came right behind the CONNACK) waits for it, at most ``limit``
            await self.wait_connected(limit)
            conn = self._conn
        if conn is None or not conn.is_open:
            pending.release()
            raise self._not_connected(topic)
        return conn

    async def _exchange(
        self, topic: str, request_id: str, payload: bytes, timeout: float | None
    ) -> Reply:
        """Publish a request and wait for its reply (see :class:`Pending`)."""
        pending = self._pending
        reply = await self._roundtrip(
            topic,
            payload,
            timeout,
            partial(pending.expect, topic, request_id),
            lambda _: pending.forget(topic, request_id),
            f"request {request_id} of device {self.device} on {topic}",
        )
        if not reply.ok:
            self._counts["failures"] += 1
        return reply

    async def _exchange_raw(self, topic: str, payload: bytes, timeout: float | None) -> bytes:
        """Publish raw bytes and wait for the next raw reply on the topic."""
        pending = self._pending
        return await self._roundtrip(
            topic,
            payload,
            timeout,
            partial(pending.expect_raw, topic),
            partial(pending.forget_raw, topic),
            f"raw request of device {self.device} on {topic}",
        )

    async def _roundtrip(  # noqa: PLR0917
        self,
        topic: str,
        payload: bytes,
        timeout: float | None,
        expect: Callable[[], asyncio.Future[R | None]],
        forget: Callable[[asyncio.Future[R | None]], None],
        what: str,
    ) -> R:
        """Take a slot, file the reply's future (``expect``), subscribe to the reply topic once,
        publish, wait on the clock's timer; ``forget`` the future and free the slot at the
        end."""
        self._check_size(topic, payload)
        limit = self.timeout if timeout is None else timeout
        clock = self._clock
        deadline = clock.monotonic() + limit
        conn = await self._slot(topic, limit)
        try:
            future = expect()
            timer = clock.call_at(deadline, partial(expire, future))
            try:
                conn.subscribe_once(topic + REPLY_SUFFIX)
                conn.publish(topic, payload)
                self._counts["sent"] += 1
                result = await future
            except NotConnected:
                self._counts["lost"] += 1
                raise
            finally:
                timer.cancel()
                forget(future)
        finally:
            self._pending.release()
        if result is None:
            self._counts["timeouts"] += 1
            raise RequestTimeout(f"no reply to the {what} within {limit} s")
        self._counts["replies"] += 1
        return result

    def _next_id(self) -> str:
        """The next request id: the client's counter, as a string (protocol reference 4.4)."""
        return str(next(self._ids))

    def _check_size(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD_SIZE:  # the SDKs refuse these; EnOS answers 1008
            raise InvalidArgument(
                f"request on {topic} is {len(payload)} bytes, above EnOS's limit of "
                f"{MAX_PAYLOAD_SIZE} bytes"
            )

    def _not_connected(self, topic: str) -> EnosLabError:
        if not self._active:
            return ClosedError(
                f"device client {self.device} is not connected (request on {topic}): call connect()"
            )
        return NotConnected(
            f"device {self.device} has no connection to {self.host}:{self.port} "
            f"(request on {topic}); it is reconnecting"
        )
