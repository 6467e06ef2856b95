"""Stepping a simulated clock with edges: every step ends where an edge acts next."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..clock import SimulatedClock
from ..errors import InvalidArgument

if TYPE_CHECKING:
    from ._edge import Edge

__all__ = ["advance_edges", "first_poll_in"]


def first_poll_in(now_ms: int, interval: float, align: bool, first: bool) -> float:
    """Seconds until a new poller's first poll: the next slot (now, for an edge's first poller,
    if now is on a slot). [s]"""
    if not align:
        return 0.0 if first else interval
    step = round(interval * 1000)
    slot = now_ms // step * step
    if slot == now_ms and first:
        return 0.0
    return (slot + step - now_ms) / 1000


async def advance_edges(
    edges: Sequence[Edge],
    seconds: float,
    *,
    step: float | None = None,
    also: Sequence[Callable[[], Awaitable[object]]] = (),
) -> None:
    """Move the edges' :class:`~enos_lab.clock.SimulatedClock` forward by ``seconds``, waiting
    until every edge is idle (and every awaitable made by ``also``, e.g. other parts' idle
    waits) before each move and after it. Each move goes to the next time an edge acts by
    itself (:meth:`Edge.next_due`), never further than ``step`` (default: the smallest
    :attr:`Edge.step`), so that what an edge starts at one time (a poll, a reconnect attempt)
    is done before the clock moves on. Run it on the edges' event loop. [s]"""
    if not edges:
        raise InvalidArgument("advance_edges needs at least one edge")
    clock = edges[0].clock
    if not isinstance(clock, SimulatedClock):
        raise InvalidArgument(f"advance_edges needs a SimulatedClock, the edges run on {clock!r}")
    if any(edge.clock is not clock for edge in edges):
        raise InvalidArgument("advance_edges: the edges must share one clock")
    if not seconds >= 0:
        raise InvalidArgument(f"advance_edges: seconds must be >= 0, got {seconds!r}")
    longest = step if step is not None else min(edge.step for edge in edges)
    if not longest > 0:
        raise InvalidArgument(f"advance_edges: step must be > 0 s, got {longest!r}")

    async def settle() -> None:
        for edge in edges:
            await edge.idle()
        for wait in also:
            await wait()
        for edge in edges:  # what the others did may have given an edge work
            await edge.idle()

    await settle()
    target = clock.monotonic() + float(seconds)
    while (now := clock.monotonic()) < target - 1e-9:
        upcoming = [due for edge in edges if (due := edge.next_due()) is not None and due > now]
        await clock.advance_async(min([target, now + longest, *upcoming]) - now)
        await settle()
