"""The device-data tap: typed events fired once the data they describe is kept.

Theory of operation
-------------------
Producers (the IoT hub services) call :meth:`Tap.emit` on the lab's event loop after the store
committed the points, events or attribute changes an event describes (the registry, for
presence, tags and logins). They ask :meth:`Tap.wants` first, a set lookup, so that no event is
built while nobody listens for its kind: with no consumer, ingest pays one attribute read per
batch.

Two kinds of consumer, each with a :class:`TapFilter` (event kinds, product, device, point):

- **Callbacks** (:meth:`Tap.add_callback`) run inside ``emit``, on the lab's loop, in the order
  events are emitted. They must be quick (they run on the loop every device shares); one that
  raises is logged and counted (:attr:`TapStats.callback_errors`) and stays subscribed. Rules
  and alerts attach here.
- **Subscriptions** (:meth:`Tap.subscribe`) buffer the events for a reader in any thread
  (:meth:`TapSubscription.get`, iteration, :meth:`~TapSubscription.drain`) or on any event loop
  (``async for``). The buffer is bounded (``maxsize``): when a reader falls behind, the oldest
  buffered event is dropped to make room, and counted (:attr:`TapSubscription.dropped`), so a
  slow reader never stalls ingest and always sees the newest data.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from ..clock import from_epoch_ms
from ..errors import ClosedError, InvalidArgument
from ._events import (
    AlertChanged,
    AttributesChanged,
    CommandReplied,
    CommandSent,
    DeviceActivated,
    DeviceLoggedIn,
    EventPosted,
    OtaReported,
    OtaStateChanged,
    PointStored,
    PresenceChanged,
    RequestRefused,
    TagsChanged,
    TapEvent,
)

__all__ = [
    "DEFAULT_MAXSIZE",
    "EVENT_KINDS",
    "KINDS",
    "KIND_OF",
    "Keys",
    "Kinds",
    "PointRowLike",
    "Tap",
    "TapCallback",
    "TapFilter",
    "TapStats",
    "TapSubscription",
]

log = logging.getLogger(__name__)

PointRowLike = tuple[str, str, str, int, Any, int | None, bool]
"""A stored point as :meth:`Tap.emit_points` takes it: (product_key, device_key, point_id,
time_ms, value, quality, resume)."""

EVENT_KINDS: tuple[type, ...] = (
    PointStored,
    EventPosted,
    AttributesChanged,
    TagsChanged,
    PresenceChanged,
    RequestRefused,
    CommandSent,
    CommandReplied,
    OtaReported,
    OtaStateChanged,
    DeviceLoggedIn,
    DeviceActivated,
    AlertChanged,
)
"""Every event class of the tap."""

KINDS: dict[str, tuple[type, ...]] = {
    "measurepoint": (PointStored,),
    "event": (EventPosted,),
    "attribute": (AttributesChanged,),
    "tag": (TagsChanged,),
    "presence": (PresenceChanged,),
    "login": (DeviceLoggedIn,),
    "activation": (DeviceActivated,),
    "refused": (RequestRefused,),
    "command": (CommandSent, CommandReplied),
    "ota": (OtaReported, OtaStateChanged),
    "alert": (AlertChanged,),
}
"""The kinds of event by the names users know, and the event classes of each: the one place
that maps them (a filter's ``kinds`` takes these names as well as the classes)."""

KIND_OF: dict[type, str] = {cls: name for name, classes in KINDS.items() for cls in classes}
"""The kind name of each event class (the inverse of :data:`KINDS`)."""

Kinds = type | str | Iterable[type | str] | None
"""What a filter's ``kinds`` takes: an event class or a kind name of :data:`KINDS`, several of
them, or ``None`` (all)."""

Keys = str | Iterable[str] | None
"""What a filter's ``product_key``, ``device_key`` and ``point_id`` take: one key, several
(any of them), or ``None`` (any)."""

DEFAULT_MAXSIZE = 10_000
"""Events a subscription buffers before it drops the oldest."""


@dataclass(frozen=True, slots=True)
class TapFilter:
    """Which events a consumer gets: of ``kinds`` (event classes; ``None``: all), of one
    product or several, of one device key or several, and of one point or several (a
    ``point_id`` filter passes only :class:`PointStored` events of those points). Each key
    field is ``None`` (any), one ``str`` or a ``frozenset`` of them."""

    kinds: frozenset[type] | None = None
    product_key: str | frozenset[str] | None = None
    device_key: str | frozenset[str] | None = None
    point_id: str | frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        kinds: Kinds = None,
        product_key: Keys = None,
        device_key: Keys = None,
        point_id: Keys = None,
    ) -> TapFilter:
        """A filter from user arguments, checked: ``kinds`` an event class or a kind name of
        :data:`KINDS` (``"measurepoint"``, ``"presence"``, ``"command"``, ...) or several;
        ``product_key``, ``device_key`` and ``point_id`` one key or several."""
        chosen = _kinds_of(kinds)
        point_ids = _keys_of("point_id", point_id)
        if point_ids is not None:
            if chosen is not None and PointStored not in chosen:
                raise InvalidArgument(
                    f"point_id={point_id!r} filters PointStored events, not {kinds!r}"
                )
            chosen = frozenset({PointStored})
        return cls(
            chosen,
            _keys_of("product_key", product_key),
            _keys_of("device_key", device_key),
            point_ids,
        )

    def matches(self, event: TapEvent) -> bool:
        """Whether ``event`` passes the filter."""
        kinds = self.kinds
        if kinds is not None and type(event) not in kinds:
            return False
        pk = self.product_key
        if pk is not None and (
            event.product_key != pk if type(pk) is str else event.product_key not in pk
        ):
            return False
        dk = self.device_key
        if dk is not None and (
            event.device_key != dk if type(dk) is str else event.device_key not in dk
        ):
            return False
        point = self.point_id
        if point is not None:
            if not isinstance(event, PointStored):
                return False
            return event.point_id == point if type(point) is str else event.point_id in point
        return True


def _kinds_of(kinds: Kinds) -> frozenset[type] | None:
    """The event classes ``kinds`` names (see :meth:`TapFilter.of`); checked."""
    if kinds is None:
        return None
    given = [kinds] if isinstance(kinds, (type, str)) else list(kinds)
    chosen: set[type] = set()
    for kind in given:
        if isinstance(kind, str) and kind in KINDS:
            chosen.update(KINDS[kind])
        elif isinstance(kind, type) and kind in EVENT_KINDS:
            chosen.add(kind)
        else:
            chosen.clear()
            break
    if not chosen:
        names = ", ".join(k.__name__ for k in EVENT_KINDS)
        raise InvalidArgument(
            f"expected tap event classes ({names}) or kind names ({', '.join(KINDS)}), "
            f"got {kinds!r}"
        )
    return frozenset(chosen)


def _keys_of(what: str, keys: Keys) -> str | frozenset[str] | None:
    """One key as it is, several as a frozenset; checked (non-empty strings)."""
    if keys is None or (isinstance(keys, str) and keys):
        return keys
    chosen = None if isinstance(keys, str) else frozenset(keys)
    if not chosen or not all(isinstance(k, str) and k for k in chosen):
        raise InvalidArgument(
            f"{what} must be a non-empty string or a collection of them, got {keys!r}"
        )
    return next(iter(chosen)) if len(chosen) == 1 else chosen


@dataclass(frozen=True, slots=True)
class TapStats:
    """Counters of a tap: events ``emitted``; events ``dropped`` by subscriptions whose reader
    fell behind (in total); exceptions of callbacks (``callback_errors``); consumers now."""

    emitted: int
    dropped: int
    callback_errors: int
    callbacks: int
    subscriptions: int


class TapCallback:
    """A callback added with :meth:`Tap.add_callback`; :meth:`cancel` removes it."""

    __slots__ = ("_tap", "batch", "callback", "errors", "filter")

    def __init__(
        self,
        tap: Tap,
        callback: Callable[[Any], object],
        filt: TapFilter,
        *,
        batch: bool = False,
    ) -> None:
        self._tap = tap
        self.callback = callback
        self.filter = filt
        self.batch = batch
        """Whether the callback takes a list of events (see :meth:`Tap.add_callback`)."""
        self.errors = 0
        """Exceptions the callback raised (each logged)."""

    def _deliver(self, event: TapEvent) -> None:
        try:
            self.callback([event] if self.batch else event)
        except Exception:
            self.errors += 1
            self._tap._callback_errors += 1
            log.exception("tap callback %r failed on %r", self.callback, event)

    def _deliver_many(self, events: list[TapEvent]) -> None:
        if not self.batch:
            for event in events:
                self._deliver(event)
            return
        try:
            self.callback(events)
        except Exception:
            self.errors += 1
            self._tap._callback_errors += 1
            log.exception("tap callback %r failed on %d events", self.callback, len(events))

    def _deliver_rows(self, rows: Sequence[PointRowLike]) -> None:
        try:
            self.callback(rows)
        except Exception:
            self.errors += 1
            self._tap._callback_errors += 1
            log.exception("tap callback %r failed on %d point rows", self.callback, len(rows))

    def cancel(self) -> None:
        """Stop calling the callback (idempotent)."""
        self._tap._remove(self)


class TapSubscription:
    """A bounded buffer of the events that pass a filter, for a reader in any thread or loop.

    Read with :meth:`get` (blocking), :meth:`drain` (what is there now), ``for event in sub``
    (until :meth:`close`), or ``async for event in sub`` on any event loop. When ``maxsize``
    events wait, the oldest is dropped for each new one (:attr:`dropped`). Use it as a context
    manager, or :meth:`close` it, so that the tap stops filling it.
    """

    def __init__(self, tap: Tap, filt: TapFilter, maxsize: int = DEFAULT_MAXSIZE) -> None:
        if maxsize < 1:
            raise InvalidArgument(f"a tap subscription needs maxsize >= 1, got {maxsize!r}")
        self._tap = tap
        self.filter = filt
        self.maxsize = maxsize
        self._buffer: deque[TapEvent] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closed = False
        self.received = 0
        """Events that passed the filter (including those dropped later)."""
        self.dropped = 0
        """Events dropped because the reader fell behind."""

    # -- producer side (the tap, on the lab's loop) ---------------------------------------

    def _deliver(self, event: TapEvent) -> None:
        with self._lock:
            if self._closed:
                return
            buffer = self._buffer
            if len(buffer) >= self.maxsize:
                buffer.popleft()
                self.dropped += 1
                self._tap._dropped += 1
            buffer.append(event)
            self.received += 1
            self._ready.notify()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            _wake(loop, future)

    def _deliver_many(self, events: list[TapEvent]) -> None:
        """:meth:`_deliver` each of ``events`` (in order) under one lock, with one wake-up."""
        with self._lock:
            if self._closed:
                return
            buffer = self._buffer
            buffer.extend(events)
            self.received += len(events)
            excess = len(buffer) - self.maxsize
            if excess > 0:
                for _ in range(excess):
                    buffer.popleft()
                self.dropped += excess
                self._tap._dropped += excess
            self._ready.notify(len(events))
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            _wake(loop, future)

    # -- reader side ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        """Events waiting to be read."""
        return len(self._buffer)

    def get(self, timeout: float | None = None) -> TapEvent:
        """The next event, waiting at most ``timeout`` seconds (``None``: until one comes).

        Raises :class:`TimeoutError` after the timeout and :class:`~enos_lab.errors.ClosedError`
        once the subscription is closed and nothing is left. [s]
        """
        with self._ready:
            if not self._ready.wait_for(lambda: self._buffer or self._closed, timeout):
                raise TimeoutError(f"no tap event within {timeout} s")
            if self._buffer:
                return self._buffer.popleft()
            raise ClosedError("the tap subscription is closed")

    def drain(self) -> list[TapEvent]:
        """Every event waiting now, oldest first (possibly none), without waiting."""
        with self._lock:
            events = list(self._buffer)
            self._buffer.clear()
        return events

    def __iter__(self) -> Iterator[TapEvent]:
        """Events as they come, until the subscription is closed."""
        while True:
            try:
                yield self.get()
            except ClosedError:
                return

    async def aget(self) -> TapEvent:
        """The next event, awaited on the caller's event loop (any loop, not only the lab's).

        Raises :class:`~enos_lab.errors.ClosedError` once closed and empty.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._buffer:
                    return self._buffer.popleft()
                if self._closed:
                    raise ClosedError("the tap subscription is closed")
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            await future

    def __aiter__(self) -> AsyncIterator[TapEvent]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[TapEvent]:
        while True:
            try:
                yield await self.aget()
            except ClosedError:
                return

    def close(self) -> None:
        """Stop receiving events; readers get what is buffered, then the end (idempotent)."""
        self._tap._remove(self)
        with self._lock:
            self._closed = True
            self._ready.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            _wake(loop, future)

    def __enter__(self) -> TapSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._buffer)} waiting"
        return f"<TapSubscription {state}, received={self.received} dropped={self.dropped}>"


class Tap:
    """The device-data tap (see the module docstring). Thread-safe to (un)subscribe; events are
    emitted on one event loop (the lab's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumers: tuple[TapCallback | TapSubscription, ...] = ()
        self._row_consumers: tuple[TapCallback, ...] = ()
        self._events_of_points = False  # an event consumer listens for PointStored
        self._wanted: frozenset[type] = frozenset()
        self._emitted = 0
        self._dropped = 0
        self._callback_errors = 0

    # -- producers ---------------------------------------------------------------------------

    def wants(self, kind: type) -> bool:
        """Whether any consumer listens for events of class ``kind`` (ask before building)."""
        return kind in self._wanted

    @property
    def active(self) -> bool:
        """Whether any consumer listens at all."""
        return bool(self._wanted)

    def emit(self, event: TapEvent) -> None:
        """Hand ``event`` to every consumer whose filter it passes (on the lab's loop)."""
        self._emitted += 1
        for consumer in self._consumers:
            if consumer.filter.matches(event):
                consumer._deliver(event)

    def emit_many(self, events: Iterable[TapEvent]) -> None:
        """:meth:`emit` each of ``events``: every consumer gets those that pass its filter, in
        order, at once (a subscription under one lock, with one wake-up of its readers)."""
        batch = events if isinstance(events, list) else list(events)
        self._emitted += len(batch)
        for consumer in self._consumers:
            matches = consumer.filter.matches
            chosen = [event for event in batch if matches(event)]
            if chosen:
                consumer._deliver_many(chosen)

    def emit_points(self, rows: Sequence[PointRowLike]) -> None:
        """Report stored points, one committed batch at a time: the way producers report
        them (ask :meth:`wants` ``(PointStored)`` first). ``rows`` are ``(product_key,
        device_key, point_id, time_ms, value, quality, resume)`` tuples (a
        :class:`~enos_lab.store.PointRow` is one). Callbacks added with
        :meth:`add_point_rows` get the rows as they are; a :class:`PointStored` event is built
        for each only if another consumer listens for those."""
        for consumer in self._row_consumers:
            consumer._deliver_rows(rows)
        if not self._events_of_points:
            return
        events: list[TapEvent] = []
        add = events.append
        last_ms: int | None = None
        at = datetime.min
        for pk, dk, point_id, at_ms, value, quality, resume in rows:
            if at_ms != last_ms:  # the points of one post share their time
                last_ms, at = at_ms, from_epoch_ms(at_ms)
            add(PointStored(pk, dk, point_id, at, value, quality, bool(resume)))
        self.emit_many(events)

    # -- consumers ---------------------------------------------------------------------------

    def add_point_rows(self, callback: Callable[[Sequence[PointRowLike]], object]) -> TapCallback:
        """Call ``callback(rows)`` on the lab's loop with each committed batch of stored
        points, as ``(product_key, device_key, point_id, time_ms, value, quality, resume)``
        tuples in the order they were stored: what :class:`PointStored` events say, without
        building an object per point, for consumers that must look at every point (the alert
        engine). Keep it quick; never change the rows. Returns a handle whose
        :meth:`~TapCallback.cancel` removes it."""
        handle = TapCallback(self, callback, TapFilter.of(PointStored, None, None, None))
        with self._lock:
            self._row_consumers = (*self._row_consumers, handle)
            self._update_wanted()
        return handle

    def add_callback(
        self,
        callback: Callable[[Any], object],
        *,
        kinds: Kinds = None,
        product_key: Keys = None,
        device_key: Keys = None,
        point_id: Keys = None,
        batch: bool = False,
    ) -> TapCallback:
        """Call ``callback(event)`` on the lab's loop for every event that passes the filter.

        With ``batch=True`` it is called as ``callback(events)`` with a list instead: the
        events of one emission that pass the filter, in order (the points of one committed
        batch come together), for consumers that work faster on many at once. Keep it quick:
        it runs on the loop all devices share. Returns a handle whose
        :meth:`~TapCallback.cancel` removes it.
        """
        handle = TapCallback(
            self, callback, TapFilter.of(kinds, product_key, device_key, point_id), batch=batch
        )
        self._add(handle)
        return handle

    def subscribe(
        self,
        *,
        kinds: Kinds = None,
        product_key: Keys = None,
        device_key: Keys = None,
        point_id: Keys = None,
        maxsize: int = DEFAULT_MAXSIZE,
    ) -> TapSubscription:
        """A :class:`TapSubscription` of the events that pass the filter, buffering at most
        ``maxsize`` (the oldest dropped beyond)."""
        subscription = TapSubscription(
            self, TapFilter.of(kinds, product_key, device_key, point_id), maxsize
        )
        self._add(subscription)
        return subscription

    @property
    def stats(self) -> TapStats:
        """Counters since the tap was made."""
        consumers = self._consumers
        callbacks = sum(1 for c in consumers if isinstance(c, TapCallback))
        return TapStats(
            self._emitted,
            self._dropped,
            self._callback_errors,
            callbacks,
            len(consumers) - callbacks,
        )

    def _add(self, consumer: TapCallback | TapSubscription) -> None:
        with self._lock:
            self._consumers = (*self._consumers, consumer)
            self._update_wanted()

    def _remove(self, consumer: TapCallback | TapSubscription) -> None:
        with self._lock:
            self._consumers = tuple(c for c in self._consumers if c is not consumer)
            self._row_consumers = tuple(c for c in self._row_consumers if c is not consumer)
            self._update_wanted()

    def _update_wanted(self) -> None:
        wanted: set[type] = set()
        for consumer in self._consumers:
            kinds = consumer.filter.kinds
            wanted.update(EVENT_KINDS if kinds is None else kinds)
        self._events_of_points = PointStored in wanted
        if self._row_consumers:
            wanted.add(PointStored)
        self._wanted = frozenset(wanted)


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
    """Resolve an async reader's future on its own loop (from whichever thread delivers)."""

    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        resolve()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(resolve)
