"""An edge's way to the hub: live batch posts, the local cache, and breakpoint resume.

Theory of operation
-------------------
Two tasks share the edge's gateway client, each one request at a time:

- **live** (:meth:`Uplink.push` queues samples, at most ``max_queue``; the oldest beyond go
  to the cache): while the client is connected, up to ``batch_size`` queued samples go out
  in one ``measurepoint/post/batch``; while it is not, or when a post gets no answer (no
  connection, a timeout), they go to the :class:`~enos_lab.edge.SampleCache` (EnOS protocol
  reference 14: local cache). A sample whose sub-device is not logged in is dropped and
  counted: the hub would refuse the whole batch for it (1212).
- **drain**: once the edge is online again (:meth:`Uplink.wake`, after each login and after
  each live post that went through while the cache holds samples), the backlog goes out
  oldest first, ``resume_batch`` samples per ``measurepoint/resume/batch`` (with
  ``allowOfflineSubDevice``: sub-devices attached to the edge but not logged in may have
  history), the next batch only after the hub's 200 for the one before, so the hub receives
  the backlog in chronological order. Rows are deleted from the cache only after that 200
  (:meth:`~enos_lab.edge.SampleCache.delete`); a batch without an answer is released and
  waits for the next wake. ``resume_pause`` on the clock between batches paces the drain.

Live data keeps flowing while the backlog drains (the two tasks run side by side), and latest
values never regress: the hub stores resumed rows as history, which never replaces a newer
live value (``enos_lab.store``), and every cached sample is older than the live ones sent
after it. A resent sample whose first post was stored but not answered is stored once (same
device, point and time).

One device's bad data never blocks the others': when the hub refuses a batch (any code but
200), its samples are sent again per device, and a device refused alone again per sample, so
only the samples the hub refuses are counted as rejected (live) or deleted as rejected (from
the cache), each with the hub's code on its device.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from ..clock import Clock, to_epoch_ms
from ..device import DeviceClient, PointsEntry
from ..errors import (
    ClosedError,
    InvalidArgument,
    NotConnected,
    RequestFailed,
    RequestTimeout,
    StoreError,
)
from ._cache import CachedSample, SampleCache
from ._edge_config import EdgeConfig
from ._edge_stats import EdgeErrorKind, SubDeviceStats
from ._poller import Sample

__all__ = ["Uplink"]

log = logging.getLogger("enos_lab.edge")

S = TypeVar("S", Sample, CachedSample)
Keys = tuple[str, str]
ErrorSink = Callable[[str, EdgeErrorKind, str, "int | None"], None]
"""``(device, kind, message, code)``: an error of one field device."""

_LINK_ERRORS = (NotConnected, RequestTimeout, ClosedError)
"""What a request raises when the hub cannot answer it (the sample may still be stored)."""


class Uplink:
    """The live and drain tasks of one edge (see the module docstring).

    ``keys`` maps a field device's name to its sub-device's keys (``None`` for a device no
    longer on the edge); ``stats`` gives the counters of a field device (``None``: none);
    ``on_error`` hears of each rejection and cache loss; ``on_change`` of every change of
    :meth:`quiet`.
    """

    def __init__(
        self,
        client: DeviceClient,
        cache: SampleCache,
        config: EdgeConfig,
        clock: Clock,
        *,
        keys: Callable[[str], Keys | None],
        stats: Callable[[str], SubDeviceStats | None],
        on_error: ErrorSink,
        on_change: Callable[[], None],
    ) -> None:
        self._client = client
        self._cache = cache
        self._config = config
        self._clock = clock
        self._keys = keys
        self._stats = stats
        self._on_error = on_error
        self._on_change = on_change
        self._queue: deque[Sample] = deque()
        self._queued = asyncio.Event()
        self._wanted = asyncio.Event()  # the drain should run
        self._dirty = True  # the cache may hold samples (a new cache file may have some)
        self._sending = False
        self._draining = False
        self._pausing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Event()  # set on every change of the tasks' state
        self._lost_seen: dict[str, int] = {}
        self.pause_due: float | None = None
        """When the drain's pause between two resume batches ends (clock monotonic), if it
        pauses now. [s]"""
        self.live_posts = 0
        """Live batch posts the hub confirmed. [-]"""
        self.resume_posts = 0
        """Resume batches the hub confirmed. [-]"""
        self.failed_posts = 0
        """Posts without the hub's 200. [-]"""

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self, name: str) -> None:
        """Start the two tasks on the running loop (``name`` names them)."""
        self._lost_seen = dict((await self._cache.stats()).lost_by_device)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._live(), name=f"edge live {name}"),
            loop.create_task(self._drain(), name=f"edge drain {name}"),
        ]

    async def stop(self, *, flush: bool) -> None:
        """End the tasks; with ``flush``, first send (or cache) every queued sample, waiting
        at most ``request_timeout`` seconds of real time for the hub (a clock that does not
        move would never time the posts out); what is left goes to the cache."""
        if flush and self._tasks:
            try:
                await asyncio.wait_for(self.settle(), self._config.request_timeout)
            except TimeoutError:
                log.warning("edge %s: the hub did not answer; caching the rest", self._who)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if flush and self._queue:  # the live task ended first: keep them
            await self._to_cache(list(self._queue))
            self._queue.clear()
        self._sending = self._draining = self._pausing = False
        self._changed()

    async def settle(self) -> None:
        """Wait until no live sample waits and no post is in progress."""
        while self._queue or self._sending or self._draining:
            self._progress.clear()
            await self._progress.wait()

    @property
    def queued(self) -> int:
        """Live samples waiting for their post. [-]"""
        return len(self._queue)

    def quiet(self) -> bool:
        """Whether neither task has work it can do before the clock moves."""
        if not self._tasks:
            return True
        if self._queue or self._sending or self._draining:
            return False
        return not (self._wanted.is_set() and self._client.connected and not self._pausing)

    def _changed(self) -> None:
        self._progress.set()
        self._on_change()

    # -- input ---------------------------------------------------------------------------------

    async def push(self, samples: Sequence[Sample]) -> None:
        """Queue live samples; beyond ``max_queue`` the oldest go to the cache."""
        queue = self._queue
        queue.extend(samples)
        excess = len(queue) - self._config.max_queue
        if excess > 0:
            await self._to_cache([queue.popleft() for _ in range(excess)])
        if queue:
            self._queued.set()
            self._changed()

    def wake(self) -> None:
        """The edge is online (again): drain the cache."""
        self._wanted.set()
        self._changed()

    # -- live ----------------------------------------------------------------------------------

    async def _live(self) -> None:
        queue = self._queue
        while True:
            await self._queued.wait()
            if not queue:
                self._queued.clear()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), self._config.batch_size))]
            self._sending = True
            try:
                await self._send_live(batch)
            except asyncio.CancelledError:
                queue.extendleft(reversed(batch))  # unconfirmed: stop() caches them
                raise
            finally:
                self._sending = False
                self._changed()

    async def _send_live(self, batch: list[Sample]) -> None:
        if not self._client.connected:
            await self._to_cache(batch)
            return
        sendable: list[tuple[Sample, Keys]] = []
        for sample in batch:
            keys = self._keys(sample.device)
            if keys is None or not self._client.sub_device(*keys).logged_in:
                self._count(sample.device, "dropped")
                continue
            sendable.append((sample, keys))
        if not sendable:
            return
        try:
            await self._post([(s, k) for s, k in sendable], resume=False)
        except _LINK_ERRORS:
            self.failed_posts += 1
            await self._to_cache([s for s, _ in sendable])
            return
        except (RequestFailed, InvalidArgument) as exc:
            self.failed_posts += 1
            await self._split_live(sendable, exc)
            return
        self.live_posts += 1
        for sample, _ in sendable:
            self._count(sample.device, "uploaded")
        if self._dirty:
            self.wake()

    async def _split_live(self, sendable: list[tuple[Sample, Keys]], first: Exception) -> None:
        """The hub refused a live batch: send it again per device, then per sample."""
        log.info("edge %s: a live batch was refused (%s); sending per device", self._who, first)
        groups = _by_device(sendable)
        for index, group in enumerate(groups):
            outcome = await self._try_group(group, resume=False)
            if outcome is None:  # the link failed: keep this group and the rest
                await self._to_cache([s for g in groups[index:] for s, _ in g])
                return
            for sample, error in outcome:
                if error is None:
                    self._count(sample.device, "uploaded")
                else:
                    self._reject(sample.device, error)

    # -- drain ---------------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            await self._wanted.wait()
            if not self._client.connected:
                self._wanted.clear()
                self._changed()
                continue
            self._draining = True
            try:
                more = await self._drain_once()
            finally:
                self._draining = False
                self._changed()
            if more and self._config.resume_pause > 0:
                self._pausing = True
                self.pause_due = self._clock.monotonic() + self._config.resume_pause
                self._changed()
                try:
                    await self._clock.sleep(self._config.resume_pause)
                finally:
                    self._pausing = False
                    self.pause_due = None
                    self._changed()

    async def _drain_once(self) -> bool:
        """Send the oldest cached samples once; False when there is nothing more to do now."""
        rows = await self._cache.oldest(self._config.resume_batch)
        if not rows:
            self._dirty = False
            self._wanted.clear()
            return False
        pairs = [(row, self._keys(row.device)) for row in rows]
        gone = [row for row, keys in pairs if keys is None]
        for row in gone:  # a device taken off the edge: its history has no sub-device here
            self._reject(row.device, InvalidArgument(f"{row.device} is no longer on this edge"))
        sendable = [(row, keys) for row, keys in pairs if keys is not None]
        try:
            if sendable:
                await self._post(sendable, resume=True)
        except _LINK_ERRORS:
            self.failed_posts += 1
            await self._cache.release(row.id for row in rows)
            self._wanted.clear()  # the next login, or a live post that goes through, wakes it
            return False
        except (RequestFailed, InvalidArgument) as exc:
            self.failed_posts += 1
            await self._cache.delete(row.id for row in gone)
            return await self._split_resume(sendable, exc)
        self.resume_posts += 1
        await self._cache.delete(row.id for row in rows)
        for row, _ in sendable:
            self._count(row.device, "resumed")
        return True

    async def _split_resume(
        self, sendable: list[tuple[CachedSample, Keys]], first: Exception
    ) -> bool:
        """The hub refused a resume batch: per device, then per sample; refused rows are
        deleted as rejected, rows left unsent when the link fails are released."""
        log.info("edge %s: a resume batch was refused (%s); sending per device", self._who, first)
        groups = _by_device(sendable)
        for index, group in enumerate(groups):
            outcome = await self._try_group(group, resume=True)
            if outcome is None:
                await self._cache.release(row.id for g in groups[index:] for row, _ in g)
                self._wanted.clear()
                return False
            await self._cache.delete(row.id for row, _ in outcome)
            for row, error in outcome:
                if error is None:
                    self._count(row.device, "resumed")
                else:
                    self._reject(row.device, error)
        return True

    # -- requests ------------------------------------------------------------------------------

    async def _post(
        self, items: Sequence[tuple[Sample | CachedSample, Keys]], *, resume: bool
    ) -> None:
        entries = [
            PointsEntry(item.values, to_epoch_ms(item.time), keys[0], keys[1])
            for item, keys in items
        ]
        await self._client.post_measurepoints_batch(
            entries,
            resume=resume,
            allow_offline_sub_devices=resume,
            timeout=self._config.request_timeout,
        )

    async def _try_group(
        self, group: list[tuple[S, Keys]], *, resume: bool
    ) -> list[tuple[S, Exception | None]] | None:
        """One device's samples, together, then (refused) one by one: each sample with the
        refusal or None; None when the link failed."""
        try:
            await self._post(group, resume=resume)
        except _LINK_ERRORS:
            self.failed_posts += 1
            return None
        except (RequestFailed, InvalidArgument) as exc:
            self.failed_posts += 1
            if len(group) == 1:
                return [(group[0][0], exc)]
        else:
            self._count_post(resume)
            return [(item, None) for item, _ in group]
        outcome: list[tuple[S, Exception | None]] = []
        for item, keys in group:
            try:
                await self._post([(item, keys)], resume=resume)
            except _LINK_ERRORS:
                self.failed_posts += 1
                return None
            except (RequestFailed, InvalidArgument) as exc:
                self.failed_posts += 1
                outcome.append((item, exc))
            else:
                self._count_post(resume)
                outcome.append((item, None))
        return outcome

    def _count_post(self, resume: bool) -> None:
        if resume:
            self.resume_posts += 1
        else:
            self.live_posts += 1

    # -- the cache and the counters ------------------------------------------------------------

    async def _to_cache(self, samples: list[Sample]) -> None:
        if not samples:
            return
        try:
            lost = await self._cache.add(samples)
            by_device = dict((await self._cache.stats()).lost_by_device) if lost else {}
        except (StoreError, ClosedError) as exc:  # the cache itself failed: they are gone
            log.error("edge %s: caching %d samples failed: %s", self._who, len(samples), exc)
            for sample in samples:
                self._count(sample.device, "lost")
                self._on_error(
                    sample.device, EdgeErrorKind.CACHE_LOSS, f"the cache failed: {exc}", None
                )
            return
        self._dirty = True
        for sample in samples:
            self._count(sample.device, "cached")
        for device, total in by_device.items():
            new = total - self._lost_seen.get(device, 0)
            if new <= 0:
                continue
            self._lost_seen[device] = total
            self._count(device, "lost", new)
            self._on_error(
                device,
                EdgeErrorKind.CACHE_LOSS,
                f"{device}: the full cache lost {new} sample(s) (oldest first; it holds at most "
                f"{self._cache.max_samples} samples and {self._cache.max_bytes} bytes)",
                None,
            )

    def _count(self, device: str, counter: str, n: int = 1) -> None:
        stats = self._stats(device)
        if stats is not None:
            setattr(stats, counter, getattr(stats, counter) + n)

    def _reject(self, device: str, error: Exception) -> None:
        self._count(device, "rejected")
        if isinstance(error, RequestFailed):
            why, code = f"the hub refused it ({error.code}: {error.message})", error.code
        else:
            why, code = str(error), None
        message = f"{device}: a sample was not sent: {why}"
        self._on_error(device, EdgeErrorKind.REJECTED, message, code)

    @property
    def _who(self) -> str:
        return self._client.device


def _by_device(items: Iterable[tuple[S, Keys]]) -> list[list[tuple[S, Keys]]]:
    """``items`` grouped by device, in the order each device first appears."""
    groups: dict[str, list[tuple[S, Keys]]] = {}
    for item, keys in items:
        groups.setdefault(item.device, []).append((item, keys))
    return list(groups.values())
