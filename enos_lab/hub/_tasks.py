"""The work a hub waits for: its own tasks and the awaitables that message handlers return.

Theory of operation
-------------------
Every task of a hub belongs to it (:meth:`Tasks.spawn`) and is cancelled and awaited by
:meth:`Tasks.cancel` when the hub stops; there are no fire-and-forget tasks. A message
handler may return an awaitable (a store's commit future, so that the acknowledgement means
"stored"): :meth:`Tasks.as_future` turns it into a future (a task owned here if it is not one
already). Many messages may wait for the same future (a store commits a whole batch with one):
:attr:`Tasks.waiters` keeps, per future, the response slots that wait for it, and one done
callback per future (:meth:`Tasks.settle`) tells each slot, however many there are.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

__all__ = ["Tasks", "Waiter"]

log = logging.getLogger("enos_lab.hub")


class Waiter(Protocol):
    """Something waiting for a future (a response slot of a connection)."""

    def done(self, future: asyncio.Future[Any]) -> None:
        """``future`` is done (successfully, failed or cancelled)."""
        ...


class Tasks:
    """The tasks a hub owns and the waiters of its handlers' futures.

    :attr:`loop` is the hub's event loop, set by :meth:`start`.
    """

    __slots__ = ("_tasks", "loop", "waiters")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._tasks: set[asyncio.Task[Any]] = set()
        # response slots waiting for one future (a handler may return one for many messages)
        self.waiters: dict[asyncio.Future[Any], list[Waiter]] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` from now on."""
        self.loop = loop

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a task owned by the hub (cancelled and awaited in :meth:`cancel`);
        a failure is logged."""
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def as_future(self, aw: Awaitable[None]) -> asyncio.Future[Any]:
        """``aw`` as a future: futures as they are, anything else in a task owned by the hub."""
        if asyncio.isfuture(aw):
            return aw
        coro = aw if inspect.iscoroutine(aw) else _await_one(aw)
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def settle(self, future: asyncio.Future[Any]) -> None:
        """Done callback of a future in :attr:`waiters`: tell every slot waiting for it."""
        for slot in self.waiters.pop(future, ()):
            slot.done(future)

    async def cancel(self, *others: asyncio.Task[Any]) -> None:
        """Cancel every task of the hub (and ``others``) and wait until they have ended."""
        tasks = [*self._tasks, *others]
        for task in tasks:
            task.cancel()
        # handler tasks may end with their own exception (already logged by their slot)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task %s failed", task.get_name(), exc_info=task.exception())


async def _await_one(aw: Awaitable[None]) -> None:
    await aw
