"""The clocks: readings, and timers that fire in simulated order when a SimulatedClock moves."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from enos_lab._loop import LoopThread
from enos_lab.clock import (
    Clock,
    DeadlineTimer,
    SimulatedClock,
    SystemClock,
    from_epoch_ms,
    to_epoch_ms,
)
from enos_lab.errors import InvalidArgument


def test_both_clocks_are_clocks() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(SimulatedClock(), Clock)


def test_system_clock_monotonic_is_the_c_function() -> None:
    # read for every message by the hub: no Python frame in between
    assert SystemClock().monotonic is time.monotonic


def test_simulated_clock_readings_move_only_when_advanced() -> None:
    clock = SimulatedClock(datetime(2025, 6, 1, tzinfo=UTC))
    assert clock.now() == datetime(2025, 6, 1, tzinfo=UTC)
    assert clock.monotonic() == 0.0
    clock.advance(90)
    clock.advance(timedelta(minutes=1))
    assert clock.monotonic() == 150.0
    assert clock.time_ms() == to_epoch_ms(datetime(2025, 6, 1, 0, 2, 30, tzinfo=UTC))
    assert from_epoch_ms(clock.time_ms()) == clock.now()
    with pytest.raises(InvalidArgument, match="backwards"):
        clock.advance(-1)
    with pytest.raises(InvalidArgument, match="naive"):
        SimulatedClock(datetime(2025, 1, 1))


def test_timers_fire_in_order_each_at_its_time_on_the_loop() -> None:
    clock = SimulatedClock()

    async def main() -> list[tuple[str, float]]:
        seen: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            seen.append((name, clock.monotonic()))  # runs before the clock moves on

        tasks = [
            asyncio.create_task(sleeper(name, s))
            for name, s in (("keep-alive", 90), ("command", 120), ("activation", 92))
        ]
        clock.call_at(100, lambda: seen.append(("callback", clock.monotonic())))
        await asyncio.sleep(0)
        assert clock.pending == 4
        await clock.advance_async(3600)
        await asyncio.gather(*tasks)
        return seen

    seen = asyncio.run(main())
    assert seen == [("keep-alive", 90), ("activation", 92), ("callback", 100), ("command", 120)]
    assert clock.monotonic() == 3600


def test_cancelled_timers_and_sleeps_do_not_fire() -> None:
    clock = SimulatedClock()

    async def main() -> list[str]:
        seen: list[str] = []
        handle = clock.call_at(10, lambda: seen.append("cancelled"))
        handle.cancel()
        task = asyncio.create_task(clock.sleep(20))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        clock.call_at(30, lambda: seen.append("kept"))
        assert clock.pending == 1
        await clock.advance_async(60)
        return seen

    assert asyncio.run(main()) == ["kept"]


def test_next_due_is_the_earliest_pending_timer() -> None:
    clock = SimulatedClock()

    async def main() -> list[float | None]:
        seen = [clock.next_due]
        first = clock.call_at(10, lambda: None)
        clock.call_at(25, lambda: None)
        seen.append(clock.next_due)
        first.cancel()
        seen.append(clock.next_due)  # a cancelled timer is not due
        await clock.advance_async(25)
        seen.append(clock.next_due)
        return seen

    assert asyncio.run(main()) == [None, 10, 25, None]


def test_wait_for_times_out_in_simulated_time() -> None:
    clock = SimulatedClock()

    async def main() -> None:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(clock.wait_for(never, 30))
        await asyncio.sleep(0)
        await clock.advance_async(29)
        assert not waiting.done()
        await clock.advance_async(1)
        with pytest.raises(TimeoutError):
            await waiting
        assert never.cancelled()

        soon: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        answered = asyncio.create_task(clock.wait_for(soon, 30))
        await asyncio.sleep(0)
        soon.set_result(7)
        assert await answered == 7
        assert clock.pending == 0  # its timer is gone

    asyncio.run(main())


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a background thread, as the lab's does."""
    with LoopThread("test-clock-loop") as running:
        yield running.loop


def test_advance_from_another_thread_runs_each_timer_on_its_loop_in_order(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    clock = SimulatedClock()
    seen: list[tuple[str, float, bool]] = []

    async def schedule() -> None:
        for name, when in (("b", 20.0), ("a", 10.0)):
            clock.call_at(
                when,
                lambda name=name: seen.append(  # type: ignore[misc]
                    (name, clock.monotonic(), threading.current_thread() is not main)
                ),
            )

    main = threading.current_thread()
    asyncio.run_coroutine_threadsafe(schedule(), loop_thread).result(5)
    clock.advance(15)
    assert seen == [("a", 10.0, True)]
    clock.advance(15)
    assert seen == [("a", 10.0, True), ("b", 20.0, True)]
    assert clock.monotonic() == 30.0


def test_advance_on_the_timers_loop_asks_for_advance_async() -> None:
    clock = SimulatedClock()

    async def main() -> None:
        clock.call_at(5, lambda: None)
        with pytest.raises(InvalidArgument, match="advance_async"):
            clock.advance(10)

    asyncio.run(main())


def test_timers_of_a_stopped_loop_are_dropped() -> None:
    clock = SimulatedClock()

    async def main() -> None:
        clock.call_at(5, lambda: pytest.fail("ran on a stopped loop"))

    asyncio.run(main())
    clock.advance(10)  # the loop of that timer is gone: nothing to run it on
    assert clock.pending == 0


def test_system_clock_schedules_on_the_running_loop() -> None:
    clock = SystemClock()

    async def main() -> None:
        fired = asyncio.Event()
        clock.call_at(clock.monotonic() + 0.01, fired.set)
        await clock.wait_for(fired.wait(), 5)
        with pytest.raises(TimeoutError):
            await clock.wait_for(asyncio.sleep(5), 0.01)
        await clock.sleep(0)

    asyncio.run(main())


def test_a_deadline_timer_fires_once_at_its_latest_deadline() -> None:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    clock = SimulatedClock(start)
    t0 = to_epoch_ms(start)

    async def main() -> list[int]:
        fired: list[int] = []
        timer = DeadlineTimer(clock, lambda: fired.append(clock.time_ms()))
        timer.arm(t0 + 5_000)
        timer.arm(t0 + 5_000)  # the same deadline: one timer
        assert clock.pending == 1 and timer.due_ms == t0 + 5_000
        timer.arm(t0 + 2_000)  # moved earlier
        await clock.advance_async(3)
        assert fired == [t0 + 2_000] and timer.due_ms is None
        timer.arm(t0 + 1_000)  # already passed: at once
        await asyncio.sleep(0)  # the loop runs it
        timer.arm(t0 + 10_000)
        timer.cancel()
        timer.arm(None)
        await clock.advance_async(60)
        assert clock.pending == 0
        return fired

    assert asyncio.run(main()) == [t0 + 2_000, t0 + 3_000]
