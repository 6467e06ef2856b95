"""The stream engine: stream definitions run on the device-data tap, results stored as points.

Theory of operation. :class:`StreamEngine` is a tap callback (:meth:`StreamEngine.on_event`,
attached for :class:`~enos_lab.tap.PointStored`) on the lab's loop. Streams are indexed by their
input (model id, point id): a stored point of a device whose product uses that model (cached
``model_of``) feeds the :class:`Windower` of every stream selecting the device. The engine
attaches itself to the tap while it runs a stream (with none, the tap builds no event for it). A
window's :class:`Derived` result becomes a :class:`~enos_lab.store.PointRow` of the output point
(the device itself, or the group's output device); rows are queued and one writer task appends
them to the store (``append_points_async``: the loop never blocks) in one batch per loop
iteration, then emits each as a ``PointStored`` on the tap, so that alert rules, subscriptions
and further streams see derived points exactly like posted ones (a derived point is told apart
only by its point id; the store's duplicate policy applies to it).

Closing on the clock. A window closes when its key's watermark passes its end (a newer point
arrived: :mod:`enos_lab.streams`), and also when the lab clock passes its end plus the
lateness: the engine keeps one clock timer (``clock.call_at``) at the earliest such deadline
over the streams; when it fires, each due stream is flushed to ``now - lateness``
(:meth:`Windower.flush`), so a device that stopped posting still gets its last window. After
that, a point older than ``now - lateness`` is late for its key: devices' clocks must follow
the lab clock (as for the alert engine).

Policies. Resumed (historical, ``measurepoint/resume``) points feed no stream: they arrive
after their windows closed (they are counted, ``resumed_skipped``; compute over them with
:func:`window_frame` on the stored points). A value that is not a finite real number is a
counted skip for that device (``skips_by_device``, logged once per stream and device), and so
is a point whose event time is more than ``max_ahead`` (default 5 minutes) ahead of the lab
clock: a device with a clock far ahead would otherwise move its group's watermark and make
every other device's points late. Late,
duplicate and bounded-out points are counted by the stream's windower (:meth:`windower_stats`).
Open windows are not kept across a restart (their raw points are in the store).

Bounds. Keys and points per stream as :class:`Windower` (``max_keys``, ``max_points``); at
most ``max_streams`` streams; at most ``max_pending`` derived rows waiting for the store (more
are dropped and counted, ``write_dropped``); cached product models and per-device skip
counters at most 10,000 entries. A store failure is logged and counted (``write_errors``);
the rows are lost, ingest goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..clock import Clock, DeadlineTimer, to_epoch_ms
from ..errors import EnosLabError, InvalidArgument, NotFound
from ..model import DataType, ModelCatalog, ThingModel
from ..store import PointRow, TimeSeriesStore
from ..tap import PointStored, Tap, TapCallback, TapEvent
from ._definition import StreamDefinition
from ._window import Aggregate, Derived
from ._windower import DEFAULT_MAX_KEYS, DEFAULT_MAX_POINTS, StreamStats, Windower

__all__ = ["MAX_AHEAD", "MAX_PENDING", "MAX_STREAMS", "StreamEngine", "StreamEngineStats"]

log = logging.getLogger(__name__)

MAX_STREAMS = 1_000
"""Default bound on the streams an engine runs."""
MAX_PENDING = 100_000
"""Default bound on derived rows waiting for the store."""
MAX_AHEAD = 300.0
"""Default of how far ahead of the lab clock a point's event time may be. [s]"""
_MAX_CACHE = 10_000
"""Bound on per-device skip counters and logged keys."""

_NUMERIC = frozenset({DataType.INT, DataType.FLOAT, DataType.DOUBLE})
_REAL = frozenset({DataType.FLOAT, DataType.DOUBLE})
_INTEGRAL = frozenset(
    {Aggregate.MIN, Aggregate.MAX, Aggregate.SUM, Aggregate.FIRST, Aggregate.LAST, Aggregate.DELTA}
)  # aggregates that keep an INT input integral

Node = tuple[str, str]  # (model_id, point_id)


@dataclass(slots=True)
class StreamEngineStats:
    """Counters of a :class:`StreamEngine` (read them; the engine updates them)."""

    events: int = 0
    """Stored points seen that some stream reads (model and point)."""
    fed: int = 0
    """Points fed to a stream's windower (one point feeding two streams counts twice)."""
    resumed_skipped: int = 0
    """Resumed (historical) points not fed (see the module docstring)."""
    skipped: int = 0
    """Points skipped: their value is not a finite real number, or their time is more than
    ``max_ahead`` ahead of the lab clock."""
    derived: int = 0
    """Derived points computed (closed windows)."""
    written: int = 0
    """Derived points appended to the store and emitted on the tap."""
    write_errors: int = 0
    """Derived points the store refused or failed to keep (logged)."""
    write_dropped: int = 0
    """Derived points dropped because ``max_pending`` rows were already waiting."""
    deleted_dropped: int = 0
    """Derived points dropped because their device was deleted (its last windows closed
    after the deletion)."""
    timer_runs: int = 0
    """Times the engine's clock timer fired."""
    skips_by_device: dict[tuple[str, str], int] = field(default_factory=dict)
    """Skipped points per (product_key, device_key) (at most 10,000 devices)."""


@dataclass(slots=True)
class _Stream:
    """A definition put to work."""

    definition: StreamDefinition
    windower: Windower
    input: Node
    output: Node
    cast: Callable[[Any], Any]  # to the output point's type: float, or int for INT
    newest: int | None = None  # newest event time taken [ms]
    due: int | None = None  # clock time at which some window may need closing [ms]


def _whole_group(source: Hashable) -> Hashable:
    """The key of every device of a group stream."""
    return "group"


def _valid(value: object) -> bool:
    kind = type(value)
    if kind is float:  # fast path for the usual values (an ABC check costs more than the rest)
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is int:  # and within float's range, as the ABC path's isfinite needs
        return -(2**1023) < value < 2**1023  # type: ignore[operator]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


class StreamEngine:
    """Stream definitions run on tap events; derived points written to ``store``.

    ``models`` gives the thing models; ``model_of(product_key)`` a product's model id (None:
    unknown product); ``device_exists(product_key, device_key)`` whether a device is
    registered (for a group's output device); ``tap`` is where derived points are emitted;
    ``clock`` the lab clock (windows closed on time). Use it on the lab's loop: it attaches
    :meth:`on_event` to ``tap`` (``kinds=PointStored``) while it runs a stream; :meth:`aclose`
    it before the store closes.
    """

    def __init__(
        self,
        store: TimeSeriesStore,
        models: ModelCatalog,
        *,
        tap: Tap,
        clock: Clock,
        model_of: Callable[[str], str | None],
        device_exists: Callable[[str, str], bool],
        max_streams: int = MAX_STREAMS,
        max_pending: int = MAX_PENDING,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_points: int = DEFAULT_MAX_POINTS,
        max_ahead: float = MAX_AHEAD,
    ) -> None:
        for name, bound in (
            ("max_streams", max_streams),
            ("max_pending", max_pending),
            ("max_keys", max_keys),
            ("max_points", max_points),
        ):
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
                raise InvalidArgument(f"StreamEngine: {name} must be an int >= 1, not {bound!r}")
        if (
            isinstance(max_ahead, bool)
            or not isinstance(max_ahead, int | float)
            or not 0 <= max_ahead < float("inf")
        ):
            raise InvalidArgument(f"StreamEngine: max_ahead must be seconds >= 0: {max_ahead!r}")
        self._max_ahead_ms = round(max_ahead * 1000)
        self._ahead_limit = -(2**63)  # event times up to this are not ahead [ms]
        self._store = store
        self._models = models
        self._tap = tap
        self._clock = clock
        self._model_of = model_of
        self._device_exists = device_exists
        self._max_streams = max_streams
        self._max_pending = max_pending
        self._max_keys = max_keys
        self._max_points = max_points
        self._streams: dict[str, _Stream] = {}
        self._by_input: dict[Node, list[_Stream]] = {}
        self._logged: set[tuple[str, str, str]] = set()
        self._pending: list[PointRow] = []
        self._writer: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(clock, self._on_timer)
        self._callback: TapCallback | None = None
        self._closed = False
        self.stats = StreamEngineStats()
        """The engine's counters."""

    def __repr__(self) -> str:
        return f"StreamEngine(streams={len(self._streams)}, pending={len(self._pending)})"

    # ---------------------------------------------------------------- definitions

    @property
    def definitions(self) -> tuple[StreamDefinition, ...]:
        """The streams in force, in the order added."""
        return tuple(stream.definition for stream in self._streams.values())

    def check(self, definition: StreamDefinition) -> None:
        """Check ``definition`` against the models, the registry and the other streams (as
        if it replaced a stream of the same name). Raises
        :class:`~enos_lab.errors.InvalidArgument` (or :class:`~enos_lab.errors.NotFound` for an
        unknown model, product or device) naming the stream and the field."""
        self._check(definition)

    def _check(self, definition: StreamDefinition) -> tuple[Node, Node, Callable[[Any], Any]]:
        """:meth:`check`; the input and output (model id, point id) and the output's type."""
        if not isinstance(definition, StreamDefinition):
            raise InvalidArgument(f"expected a StreamDefinition, not {type(definition).__name__}")
        d = definition
        model_id = self._input_model(d)
        model = self._model(d, model_id, "model_id")
        source = model.measurepoints.get(d.point_id)
        if source is None:
            raise InvalidArgument(
                f"stream {d.name!r}: point_id {d.point_id!r} is not a measurepoint of model "
                f"{model_id!r}"
            )
        in_type = source.spec.data_type
        if in_type not in _NUMERIC:
            raise InvalidArgument(
                f"stream {d.name!r}: point_id {d.point_id!r} is {in_type.value}; a window "
                f"aggregates numbers (INT, FLOAT, DOUBLE)"
            )
        if d.group:
            assert d.output_device is not None  # checked by the definition
            pk, dk = d.output_device
            if not self._device_exists(pk, dk):
                raise NotFound(f"stream {d.name!r}: output_device {pk}/{dk} is not registered")
            out_model_id = self._model_of(pk)
            if out_model_id is None:
                raise InvalidArgument(
                    f"stream {d.name!r}: output_device {pk}/{dk} has a product without a model"
                )
            out_model = self._model(d, out_model_id, "output_device's model")
        else:
            out_model_id, out_model = model_id, model
        target = out_model.measurepoints.get(d.output_point)
        if target is None:
            raise InvalidArgument(
                f"stream {d.name!r}: output_point {d.output_point!r} is not a measurepoint of "
                f"model {out_model_id!r} (derived points must be in the model so that they can "
                "be validated, queried and alerted on like any other point: add it there)"
            )
        out_type = target.spec.data_type
        _check_output_type(d, in_type, out_type)
        node_in, node_out = (model_id, d.point_id), (out_model_id, d.output_point)
        self._check_cycle(d.name, node_in, node_out)
        return node_in, node_out, int if out_type is DataType.INT else float

    def _input_model(self, d: StreamDefinition) -> str:
        if d.product_key is None:
            assert d.model_id is not None  # checked by the definition
            return d.model_id
        product_model = self._model_of(d.product_key)
        if product_model is None:
            raise NotFound(
                f"stream {d.name!r}: product_key {d.product_key!r} is unknown or has no model"
            )
        if d.model_id is not None and d.model_id != product_model:
            raise InvalidArgument(
                f"stream {d.name!r}: product_key {d.product_key!r} uses model "
                f"{product_model!r}, not model_id {d.model_id!r}"
            )
        return product_model

    def _model(self, d: StreamDefinition, model_id: str, what: str) -> ThingModel:
        try:
            return self._models.get(model_id)
        except NotFound:
            raise NotFound(f"stream {d.name!r}: {what} {model_id!r} is not a known model") from None

    def _check_cycle(self, name: str, node_in: Node, node_out: Node) -> None:
        """Refuse a stream whose output feeds (through other streams) its own input."""
        edges: dict[Node, set[Node]] = {}
        for stream in self._streams.values():
            if stream.definition.name != name:
                edges.setdefault(stream.input, set()).add(stream.output)
        edges.setdefault(node_in, set()).add(node_out)
        seen: set[Node] = set()
        todo = [node_out]
        while todo:
            node = todo.pop()
            if node == node_in:
                raise InvalidArgument(
                    f"stream {name!r}: its output {node_out[1]!r} of model {node_out[0]!r} "
                    f"feeds back into its input {node_in[1]!r} of model {node_in[0]!r} (a cycle "
                    "of streams)"
                )
            if node not in seen:
                seen.add(node)
                todo.extend(edges.get(node, ()))

    def add(self, definition: StreamDefinition) -> None:
        """Run ``definition`` (checked as :meth:`check`), replacing a stream of the same
        name (whose open windows are dropped)."""
        node_in, node_out, cast = self._check(definition)
        if definition.name not in self._streams and len(self._streams) >= self._max_streams:
            raise InvalidArgument(
                f"stream {definition.name!r}: the engine already runs {self._max_streams} "
                "streams (max_streams)"
            )
        d = definition
        windower = Windower(
            d.window,
            d.aggregate,
            point_id=d.output_point,
            key=_whole_group if d.group else None,
            across=d.across,
            lateness=d.lateness,
            max_keys=self._max_keys,
            max_points=self._max_points,
        )
        self.remove(d.name)
        stream = _Stream(d, windower, node_in, node_out, cast)
        self._streams[d.name] = stream
        self._by_input.setdefault(node_in, []).append(stream)
        if self._callback is None and not self._closed:
            self._callback = self._tap.add_callback(self.on_event, kinds=PointStored)

    def remove(self, name: str) -> bool:
        """Stop the stream ``name`` (its open windows are dropped; its derived points stay
        in the store); False if there was none."""
        stream = self._streams.pop(name, None)
        if stream is None:
            return False
        bucket = self._by_input.get(stream.input, [])
        bucket[:] = [s for s in bucket if s is not stream]
        if not bucket:
            self._by_input.pop(stream.input, None)
        if not self._streams and self._callback is not None:
            self._callback.cancel()  # with no stream, the tap builds no event for it
            self._callback = None
        self._arm()
        return True

    def windower_stats(self, name: str) -> StreamStats:
        """The counters of the stream ``name``'s windower (points taken, late, duplicates,
        invalid, dropped, emitted)."""
        return self._stream(name).windower.stats

    def key_stats(self, name: str) -> dict[Hashable, StreamStats]:
        """The windower's counters of each key of the stream ``name``: per device
        ``(product_key, device_key)``, or ``"group"``."""
        windower = self._stream(name).windower
        keys = windower.keys()
        return {key: windower.key_stats(key) for key in keys}

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            raise NotFound(f"no stream named {name!r}")
        return stream

    def skips(self, product_key: str, device_key: str) -> int:
        """Points of one device skipped for a bad value."""
        return self.stats.skips_by_device.get((product_key, device_key), 0)

    # ---------------------------------------------------------------- points

    def on_event(self, event: TapEvent) -> None:
        """The tap callback: feed a stored point to the streams reading it (on the lab's
        loop)."""
        if self._closed or not isinstance(event, PointStored):
            return
        streams = self._streams_for(event.product_key, event.point_id)
        if not streams:
            return
        self.stats.events += 1
        pk, dk = event.product_key, event.device_key
        time_ms = to_epoch_ms(event.time)
        if time_ms > self._ahead_limit:  # the clock only moves on: read it only then
            self._ahead_limit = self._clock.time_ms() + self._max_ahead_ms
        ahead = time_ms > self._ahead_limit
        earliest: int | None = None
        for stream in streams:
            if not stream.definition.selects(pk, dk):
                continue
            if event.resume:
                self.stats.resumed_skipped += 1
                continue
            if ahead or not _valid(event.value):
                self._skip(stream, pk, dk, event, ahead)
                continue
            self.stats.fed += 1
            self._emit(stream, stream.windower.add((pk, dk), time_ms, event.value))
            if stream.newest is None or time_ms > stream.newest:
                stream.newest = time_ms
            window = stream.windower.window
            deadline = window.pane(time_ms) + window.step_ms + stream.definition.lateness_ms
            if stream.due is None or deadline < stream.due:
                stream.due = deadline
                if earliest is None or deadline < earliest:
                    earliest = deadline
        armed = self._timer.due_ms
        if earliest is not None and (armed is None or earliest < armed):
            self._arm_at(earliest)

    def _streams_for(self, product_key: str, point_id: str) -> list[_Stream]:
        try:
            model_id = self._model_of(product_key)  # often: keep it cheap (DeviceLookup)
        except EnosLabError:
            model_id = None
        if model_id is None:
            return []
        return self._by_input.get((model_id, point_id), [])

    def _skip(self, stream: _Stream, pk: str, dk: str, event: PointStored, ahead: bool) -> None:
        self.stats.skipped += 1
        per = self.stats.skips_by_device
        if (pk, dk) in per or len(per) < _MAX_CACHE:
            per[(pk, dk)] = per.get((pk, dk), 0) + 1
        key = (stream.definition.name, pk, dk)
        if key not in self._logged and len(self._logged) < _MAX_CACHE:
            self._logged.add(key)
            why = (
                f"time {event.time.isoformat()} is ahead of the lab clock"
                if ahead
                else f"value {event.value!r} is not a finite number"
            )
            log.warning(
                "stream %r on %s/%s: point skipped (%s); further skips are only counted",
                stream.definition.name, pk, dk, why,
            )  # fmt: skip

    def _emit(self, stream: _Stream, derived: list[Derived]) -> None:
        """Queue the derived points' rows for the store (and then the tap)."""
        if not derived:
            return
        d = stream.definition
        self.stats.derived += len(derived)
        rows = []
        for result in derived:
            pk, dk = d.output_device if d.output_device is not None else result.key
            if not self._device_exists(pk, dk):  # deleted since: nothing new is stored for it
                self.stats.deleted_dropped += 1
                continue
            value = stream.cast(result.value)
            rows.append(PointRow(pk, dk, d.output_point, result.time_ms, value))
        room = max(0, self._max_pending - len(self._pending))
        if len(rows) > room:
            self.stats.write_dropped += len(rows) - room
            log.warning("streams: %d derived points dropped (max_pending)", len(rows) - room)
            rows = rows[:room]
        self._pending.extend(rows)
        if self._writer is None and self._pending:
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="enos-lab-streams-writer"
            )

    async def _write(self) -> None:
        """Append the queued rows, one batch per loop iteration, then tell the tap."""
        try:
            while self._pending:
                rows, self._pending = self._pending, []
                try:
                    await self._store.append_points_async(rows)
                except Exception as exc:  # the store's failure loses these rows, nothing else
                    self.stats.write_errors += len(rows)
                    log.warning("streams: %d derived points not stored: %s", len(rows), exc)
                    continue
                self.stats.written += len(rows)
                if self._tap.wants(PointStored):  # this engine's own streams read them too
                    self._tap.emit_points(rows)
        finally:
            self._writer = None

    # ---------------------------------------------------------------- the clock

    def _arm(self) -> None:
        """(Re-)arm the one clock timer at the earliest stream deadline."""
        dues = [s.due for s in self._streams.values() if s.due is not None]
        self._arm_at(min(dues) if dues else None)

    def _arm_at(self, due: int | None) -> None:
        """Arm the one clock timer at ``due`` (clock time [ms]; ``None``: none)."""
        if not self._closed:
            self._timer.arm(due)

    def _on_timer(self) -> None:
        if self._closed:
            return
        self.stats.timer_runs += 1
        now = self._clock.time_ms()
        for stream in list(self._streams.values()):
            if stream.due is None or stream.due > now:
                continue
            until = now - stream.definition.lateness_ms
            self._emit(stream, stream.windower.flush(until))
            # the next window end after `until` may still hold points
            window = stream.windower.window
            end = until - until % window.step_ms + window.step_ms
            if stream.newest is not None and stream.newest >= end - window.size_ms:
                stream.due = end + stream.definition.lateness_ms
            else:
                stream.due = None
        self._arm()

    async def drained(self) -> None:
        """Wait (on the lab's loop) until the derived points queued so far, and those that
        further streams derived from them, are stored and emitted."""
        while (writer := self._writer) is not None:
            await asyncio.shield(writer)

    async def aclose(self) -> None:
        """Stop taking points, cancel the timer and store what is queued (on the lab's loop,
        before the store closes). Open windows are dropped."""
        self._closed = True
        if self._callback is not None:
            self._callback.cancel()
            self._callback = None
        self._timer.cancel()
        await self.drained()


def _check_output_type(d: StreamDefinition, in_type: DataType, out_type: DataType) -> None:
    """The output point must hold the result: FLOAT/DOUBLE always, INT for integral ones."""
    if out_type in _REAL:
        return
    integral = d.aggregate is Aggregate.COUNT or (
        in_type is DataType.INT and d.aggregate in _INTEGRAL
    )
    if out_type is DataType.INT and integral and d.across is not Aggregate.AVG:
        return
    raise InvalidArgument(
        f"stream {d.name!r}: output_point {d.output_point!r} is {out_type.value}, which cannot "
        f"hold the {d.aggregate.value} of {in_type.value} values (use a FLOAT or DOUBLE point)"
    )
