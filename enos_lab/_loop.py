"""The lab's event loop in a background thread, with a synchronous way in.

The hub and every service run on one asyncio loop in a thread of their own, so that callers in
other threads (notebook cells, scripts, the official SDK's blocking ``connect()``) can use them
without deadlocking: :meth:`LoopThread.call` runs a coroutine on the loop and waits for its
result. The loop is made by :func:`enos_lab.hub._tcp.new_event_loop` (asyncio's selector loop
with the hub's own epoll selector) unless another factory is given.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from .errors import ClosedError, InvalidArgument
from .hub._tcp import new_event_loop

__all__ = ["LoopThread"]

log = logging.getLogger("enos_lab")

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a daemon thread named ``name``.

    :meth:`start` starts it (``with LoopThread() as loop_thread:`` too), :meth:`call` runs a
    coroutine on it and returns the result, :meth:`submit` returns a
    :class:`concurrent.futures.Future` instead, :meth:`stop` stops the loop, joins the thread
    and closes the loop. ``factory`` makes the loop (default: the lab's). Calling :meth:`call`
    or :meth:`stop` from the loop's own thread would deadlock and raises
    :class:`~enos_lab.errors.InvalidArgument`; anything but :meth:`start` on a loop that is not
    running raises :class:`~enos_lab.errors.ClosedError`.
    """

    def __init__(
        self,
        name: str = "enos-lab-loop",
        *,
        factory: Callable[[], asyncio.AbstractEventLoop] = new_event_loop,
    ) -> None:
        self.name = name
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop."""
        if self._loop is None:
            raise ClosedError(f"the loop thread {self.name!r} is not running")
        return self._loop

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._loop is not None

    def on_loop_thread(self) -> bool:
        """Whether the caller runs in the loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self) -> Self:
        """Start the thread and its loop (nothing if already running); returns ``self``."""
        if self._loop is not None:
            return self
        loop = self._factory()
        ready = threading.Event()
        thread = threading.Thread(target=_run, args=(loop, ready), name=self.name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread
        return self

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop from any thread; its future gives the result."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise ClosedError(f"the loop thread {self.name!r} is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait (at most ``timeout`` seconds) for its result. [s]"""
        if self.on_loop_thread():
            coro.close()
            raise InvalidArgument(
                f"LoopThread.call() from the loop thread {self.name!r} itself would deadlock; "
                "await the coroutine there instead"
            )
        return self.submit(coro).result(timeout)

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the loop soon (thread-safe)."""
        self.loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        """Stop the loop, join its thread and close the loop (idempotent).

        Stop the services on the loop first: each ends its own tasks. Tasks still left are
        cancelled and awaited, as :func:`asyncio.run` does at its end; callbacks still
        scheduled do not run."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        if self.on_loop_thread():
            raise InvalidArgument(f"LoopThread.stop() from the loop thread {self.name!r} itself")
        self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LoopThread {self.name!r} {'running' if self.running else 'stopped'}>"


def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
        _finish(loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """End what is left on a stopped loop as :func:`asyncio.run` does: cancel the remaining
    tasks and wait for them, then close async generators and the default executor."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if tasks:
        log.debug("loop stopped with %d task(s) left; cancelling them", len(tasks))
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "task %s failed while the loop stopped",
                    task.get_name(),
                    exc_info=task.exception(),
                )
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
