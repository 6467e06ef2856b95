"""The lab's loop thread: a loop in a background thread with a synchronous way in."""

from __future__ import annotations

import asyncio
import threading

import pytest

from enos_lab._loop import LoopThread
from enos_lab.errors import ClosedError, InvalidArgument


def test_call_runs_on_the_loop_thread_and_returns_the_result() -> None:
    with LoopThread("test-loop") as lt:
        assert lt.running and "running" in repr(lt)

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert lt.call(where()) == "test-loop"
        assert lt.submit(where()).result(5) == "test-loop"
        done = threading.Event()
        lt.call_soon(done.set)
        assert done.wait(5)
    assert not lt.running
    assert not any(t.name == "test-loop" for t in threading.enumerate())


def test_misuse_is_refused_with_a_clear_error() -> None:
    lt = LoopThread("test-misuse")

    async def nothing() -> None:
        return None

    with pytest.raises(ClosedError, match="not running"):
        lt.call(nothing())
    with pytest.raises(ClosedError):
        _ = lt.loop
    lt.start()
    try:

        async def nested() -> None:
            coro = nothing()
            with pytest.raises(InvalidArgument, match="deadlock"):
                lt.call(coro)
            with pytest.raises(InvalidArgument, match="stop"):
                lt.stop()

        lt.call(nested())
        assert lt.start() is lt  # already running: nothing happens
    finally:
        lt.stop()
    lt.stop()  # idempotent


def test_errors_come_back_to_the_caller() -> None:
    with LoopThread("test-errors") as lt:

        async def fail() -> None:
            raise ValueError("from the loop")

        with pytest.raises(ValueError, match="from the loop"):
            lt.call(fail())


def test_stop_cancels_what_is_left_as_asyncio_run_does() -> None:
    cleaned = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()  # a cancelled task runs its clean-up before the loop closes

    async def spawn() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(forever())

    lt = LoopThread("test-leftover").start()
    task = lt.call(spawn())
    lt.stop()
    assert task.cancelled() and cleaned.is_set()
