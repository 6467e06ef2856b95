"""Requests waiting for their reply: correlation by topic and id, and the bound on them.

Theory of operation
-------------------
A request on topic ``T`` with id ``i`` (a string from the client's counter) waits on a future
filed under ``(T, i)``; the hub's reply on ``T_reply`` echoes ``i`` and resolves it (protocol
reference 4.1, 4.4). Raw requests (``model/up_raw``) carry no usable id (the SDKs synthesise
``"unknown"``), so their replies resolve the oldest raw request of their topic (7.5).

At most ``limit`` requests are in flight: a request takes a slot before it is published and
gives it back when it ends (reply, timeout, lost connection or cancellation); callers beyond
the limit wait for a slot instead of growing the table. A request's timeout is one timer on
the client's clock that resolves its future with ``None`` (no task per request). When the
connection drops, every waiting future fails at once (:meth:`Pending.fail_all`): the
connection was clean-session, so no reply can come on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from ..enos import Reply
from ..errors import InvalidArgument

__all__ = ["Pending"]


class Pending:
    """The requests of one client that wait for their reply (see the module docstring)."""

    __slots__ = ("_raw", "_slots", "_waiting", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise InvalidArgument(f"the limit of requests in flight must be >= 1, got {limit}")
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._waiting: dict[tuple[str, str], asyncio.Future[Reply | None]] = {}
        self._raw: dict[str, deque[asyncio.Future[bytes | None]]] = {}

    def __len__(self) -> int:
        """Requests waiting for a reply now."""
        return len(self._waiting) + sum(len(queue) for queue in self._raw.values())

    @property
    def full(self) -> bool:
        """Whether a new request has to wait for a slot."""
        return self._slots.locked()

    async def acquire(self) -> None:
        """Take a slot, waiting for one while ``limit`` requests are in flight."""
        await self._slots.acquire()

    def release(self) -> None:
        """Give a slot back."""
        self._slots.release()

    def expect(self, topic: str, request_id: str) -> asyncio.Future[Reply | None]:
        """A future for the reply to request ``request_id`` on ``topic``."""
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self._waiting[(topic, request_id)] = future
        return future

    def expect_raw(self, topic: str) -> asyncio.Future[bytes | None]:
        """A future for the next raw reply on ``topic`` (after those expected before)."""
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._raw.setdefault(topic, deque()).append(future)
        return future

    def forget(self, topic: str, request_id: str) -> None:
        """Stop waiting for the reply to ``request_id`` on ``topic``."""
        self._waiting.pop((topic, request_id), None)

    def forget_raw(self, topic: str, future: asyncio.Future[Any]) -> None:
        """Stop waiting for the raw reply ``future`` on ``topic``."""
        queue = self._raw.get(topic)
        if queue is None:
            return
        with contextlib.suppress(ValueError):  # resolved already
            queue.remove(future)
        if not queue:
            del self._raw[topic]

    def resolve(self, topic: str, reply: Reply) -> bool:
        """The reply ``reply`` to a request on ``topic`` arrived; False if nobody waits for it
        (a late reply after a timeout, or an unknown id)."""
        future = self._waiting.pop((topic, str(reply.id)), None)
        if future is None or future.done():
            return False
        future.set_result(reply)
        return True

    def is_raw(self, topic: str) -> bool:
        """Whether raw requests on ``topic`` wait for a reply."""
        return topic in self._raw

    def resolve_raw(self, topic: str, payload: bytes) -> bool:
        """A raw reply on ``topic`` arrived: it answers the oldest raw request there."""
        queue = self._raw.get(topic)
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(payload)
                if not queue:
                    del self._raw[topic]
                return True
        self._raw.pop(topic, None)
        return False

    def fail_all(self, error: Callable[[], BaseException]) -> int:
        """Fail every waiting request with a new ``error()`` (the connection dropped or the
        client closed); returns how many there were."""
        futures: list[asyncio.Future[Any]] = list(self._waiting.values())
        for queue in self._raw.values():
            futures.extend(queue)
        self._waiting.clear()
        self._raw.clear()
        failed = 0
        for future in futures:
            if not future.done():
                future.set_exception(error())
                failed += 1
        return failed


def expire(future: asyncio.Future[Any]) -> None:
    """A request's timer fired: resolve its future with ``None`` (no reply in time)."""
    if not future.done():
        future.set_result(None)
