"""Fixtures for the integration tests: the hub on real TCP sockets (127.0.0.1, port 0).

Two ways to run it:

``serve``
    ``serve(body, config)`` runs ``await body(hub, port)`` inside ``asyncio.run`` with a started
    hub listening on a free port, for clients that live on the same event loop (gmqtt, raw
    asyncio streams). The hub is stopped afterwards and the whole run is bounded by a timeout.
``threaded_hub``
    A hub on its own event loop in a background thread, for thread-based clients (paho-mqtt with
    ``loop_start``). ``threaded_hub.port`` is the TCP port; ``threaded_hub.call(coro)`` runs a
    coroutine on the hub's loop and returns its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from enos_lab._loop import LoopThread
from enos_lab.hub import Hub, HubConfig

T = TypeVar("T")
Body = Callable[[Hub, int], Awaitable[None]]
Serve = Callable[..., None]

RUN_TIMEOUT = 30.0  # [s] upper bound for one served test body


def _serve(body: Body, config: HubConfig | None = None) -> None:
    """Run ``body(hub, port)`` against a started hub listening on 127.0.0.1, port 0."""

    async def main() -> None:
        hub = Hub(config or HubConfig(anonymous=True))
        await hub.start()
        try:
            listener = await hub.listen_tcp("127.0.0.1", 0)
            await asyncio.wait_for(body(hub, listener.port), RUN_TIMEOUT)
        finally:
            await hub.stop()

    asyncio.run(main())


@pytest.fixture
def serve() -> Serve:
    """``serve(body, config=None)``: run ``await body(hub, port)`` on a fresh event loop."""
    return _serve


class ThreadedHub:
    """A started hub with a TCP listener, on the lab's kind of loop thread
    (:class:`~enos_lab._loop.LoopThread`)."""

    def __init__(self, config: HubConfig) -> None:
        self.loop_thread = LoopThread("test-hub-loop").start()
        self.hub, self.port = self.call(self._start(config))

    @staticmethod
    async def _start(config: HubConfig) -> tuple[Hub, int]:
        hub = Hub(config)
        await hub.start()
        listener = await hub.listen_tcp("127.0.0.1", 0)
        return hub, listener.port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the hub's loop and wait for its result."""
        return self.loop_thread.call(coro, timeout)

    def close(self) -> None:
        """Stop the hub, then the loop and its thread."""
        try:
            self.call(self.hub.stop())
        finally:
            self.loop_thread.stop()


@pytest.fixture
def threaded_hub() -> Iterator[ThreadedHub]:
    """An anonymous hub on a background thread, listening on 127.0.0.1 (free port)."""
    running = ThreadedHub(HubConfig(anonymous=True))
    try:
        yield running
    finally:
        running.close()
