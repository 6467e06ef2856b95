"""Stream computing from the facade: define, list and remove streams, read their counters.

The streams run in the lab's :class:`~enos_lab.streams.StreamEngine` (started with the IoT hub
services, on the tap); their definitions are kept in the data directory's ``streams.json`` and
come back when the lab starts again.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pandas as pd

from ..errors import InvalidArgument, NotFound
from ..streams import (
    STREAMS_FILE,
    Aggregate,
    StreamDefinition,
    StreamEngine,
    Window,
    save_definitions,
)
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["STREAM_COLUMNS", "STREAM_STATS_COLUMNS", "Streams"]

STREAM_COLUMNS = (
    "name", "model_id", "product_key", "device_keys", "point_id", "window_size", "window_step",
    "aggregate", "group", "across", "output_product_key", "output_device_key", "output_point",
    "lateness", "description",
)  # fmt: skip
"""Columns of :meth:`Streams.streams`: sizes, steps and lateness as pandas Timedeltas;
``output_product_key``/``output_device_key`` are a group's output device (None per device)."""

STREAM_STATS_COLUMNS = ("name", "points", "late", "duplicates", "invalid", "dropped", "emitted")
"""Columns of :meth:`Streams.stream_stats` (``by_key=True`` adds ``product_key``,
``device_key`` and ``skipped`` after ``name``)."""

_SAVE_LOCK = threading.Lock()  # defining streams is rare: one lock for every lab


class Streams(LabCore):
    """Stream computing (mixed into :class:`~enos_lab.lab.Lab`): windowed aggregates of device
    points on event time, written back as derived measurepoints (see :mod:`enos_lab.streams`)."""

    def define_stream(
        self,
        definition: StreamDefinition | None = None,
        /,
        *,
        name: str | None = None,
        point_id: str | None = None,
        output_point: str | None = None,
        size: float | timedelta | None = None,
        step: float | timedelta | None = None,
        aggregate: Aggregate | str = "avg",
        model_id: str | None = None,
        product_key: str | None = None,
        device_keys: tuple[str, ...] | list[str] = (),
        group: bool = False,
        across: Aggregate | str | None = None,
        output_device: tuple[str, str] | None = None,
        lateness: float | timedelta = 0.0,
        description: str = "",
    ) -> StreamDefinition:
        """Start a stream (replacing one of the same name) and keep it with the lab.

        Pass a :class:`~enos_lab.streams.StreamDefinition`, or its fields as keywords: the
        input ``point_id`` of the devices of ``model_id`` and/or ``product_key`` (narrowed to
        ``device_keys``), windows of ``size`` [s] every ``step`` [s] (default: ``size``,
        tumbling), the ``aggregate`` (avg, min, max, sum, count, first, last, delta), and the
        derived point ``output_point``: per device on each device (its model must have the
        point), or with ``group=True`` one result per window on ``output_device``
        ``(product_key, device_key)`` (a registered device whose model has the point), its
        devices' aggregates combined by ``across`` (e.g. ``"sum"``) or pooled without it.
        ``lateness`` [s]: how long after a window's end (in event time, and on the lab clock)
        points still count. Example, the 5-minute average power of each inverter and the
        fleet total on a site device::

            lab.define_stream(name="inverter_power_5min", model_id="pv_inverter_5min",
                              point_id="active_power", size=300, aggregate="avg",
                              output_point="active_power_avg_5min")
            lab.define_stream(name="fleet_power_5min", model_id="pv_inverter_5min",
                              point_id="active_power", size=300, aggregate="avg",
                              group=True, across="sum", output_device=(site_pk, "site"),
                              output_point="fleet_power_5min")

        Returns the definition. Raises :class:`~enos_lab.errors.InvalidArgument` (or
        :class:`~enos_lab.errors.NotFound`) naming the stream and the field: unknown model,
        point, product or output device; a non-numeric input; an output point the output
        device's model lacks or whose type cannot hold the result; a cycle of streams.
        """
        if definition is None:
            if size is None:
                raise InvalidArgument(f"stream {name!r}: size (seconds) is required")
            window = Window.tumbling(size) if step is None else Window.sliding(size, step)
            definition = StreamDefinition(
                name=name,  # type: ignore[arg-type]  # checked by the definition
                point_id=point_id,  # type: ignore[arg-type]
                window=window,
                aggregate=aggregate,  # type: ignore[arg-type]
                output_point=output_point,  # type: ignore[arg-type]
                model_id=model_id,
                product_key=product_key,
                device_keys=tuple(device_keys),
                group=group,
                across=across,  # type: ignore[arg-type]
                output_device=output_device,
                lateness=lateness,  # type: ignore[arg-type]
                description=description,
            )
        elif not isinstance(definition, StreamDefinition):
            raise InvalidArgument(
                f"define_stream: expected a StreamDefinition, not {type(definition).__name__}"
            )
        engine = self._stream_engine()
        with _SAVE_LOCK:
            self.run(plain_call(engine.add, definition))
            self._save_streams(engine)
        return definition

    adefine_stream = coroutine_form_of(define_stream)

    def remove_stream(self, name: str) -> None:
        """Stop the stream ``name`` and forget it (its derived points stay in the store; its
        open windows are dropped). Raises :class:`~enos_lab.errors.NotFound` when there is
        no such stream."""
        engine = self._stream_engine()
        with _SAVE_LOCK:
            if not self.run(plain_call(engine.remove, name)):
                raise NotFound(f"no stream named {name!r}")
            self._save_streams(engine)

    aremove_stream = coroutine_form_of(remove_stream)

    def streams(self) -> pd.DataFrame:
        """The streams in force, in the order defined: one row each, :data:`STREAM_COLUMNS`."""
        engine = self._stream_engine()
        definitions = self.run(plain_call(lambda: engine.definitions))
        rows = [_row(d) for d in definitions]
        return pd.DataFrame(rows, columns=list(STREAM_COLUMNS))

    astreams = coroutine_form_of(streams)

    def stream_stats(self, name: str | None = None, *, by_key: bool = False) -> pd.DataFrame:
        """What the streams did with the points they were given: one row per stream (or only
        ``name``), or with ``by_key=True`` one row per device of a per-device stream (a group
        stream has one row, its devices ``None``). Columns :data:`STREAM_STATS_COLUMNS`:
        points taken, late (dropped), duplicates (the later value replaced the earlier),
        invalid, dropped by a bound, emitted (derived points); ``skipped`` is the device's
        points skipped for a bad value (over all streams)."""
        engine = self._stream_engine()
        rows = self.run(plain_call(_stats_rows, engine, name, by_key))
        columns = list(STREAM_STATS_COLUMNS)
        if by_key:
            columns[1:1] = ["product_key", "device_key", "skipped"]
        return pd.DataFrame(rows, columns=columns)

    astream_stats = coroutine_form_of(stream_stats)

    # -- internals ---------------------------------------------------------------------------

    def _stream_engine(self) -> StreamEngine:
        engine = self._running().streams
        if engine is None:
            raise InvalidArgument(
                "streams need the IoT hub services, but this lab is anonymous (a plain MQTT "
                "broker); create it with anonymous=False"
            )
        return engine

    def _save_streams(self, engine: StreamEngine) -> None:
        definitions = self.run(plain_call(lambda: engine.definitions))
        save_definitions(self.data_dir / STREAMS_FILE, definitions)


def _row(d: StreamDefinition) -> tuple[Any, ...]:
    out = d.output_device or (None, None)
    return (
        d.name, d.model_id, d.product_key, list(d.device_keys), d.point_id,
        pd.Timedelta(milliseconds=d.window.size_ms), pd.Timedelta(milliseconds=d.window.step_ms),
        d.aggregate.value, d.group, None if d.across is None else d.across.value, out[0], out[1],
        d.output_point, pd.Timedelta(seconds=d.lateness), d.description,
    )  # fmt: skip


def _stats_rows(engine: StreamEngine, name: str | None, by_key: bool) -> list[tuple[Any, ...]]:
    """On the lab's loop: the counters as rows (see :meth:`Streams.stream_stats`)."""
    names = [d.name for d in engine.definitions] if name is None else [name]
    rows: list[tuple[Any, ...]] = []
    for stream in names:
        if not by_key:
            s = engine.windower_stats(stream)
            rows.append((stream, s.points, s.late, s.duplicates, s.invalid, s.dropped, s.emitted))
            continue
        for key, s in engine.key_stats(stream).items():
            pk, dk = key if isinstance(key, tuple) else (None, None)
            skipped = 0 if pk is None else engine.skips(pk, dk)
            rows.append(
                (stream, pk, dk, skipped, s.points, s.late, s.duplicates, s.invalid, s.dropped,
                 s.emitted)
            )  # fmt: skip
    return rows
