"""Streams: windowed aggregates of device points on event time, turned into derived points.

The shipped example, the 5-minute average power of each inverter and the fleet's total::

    per_inverter = Windower(Window.tumbling(300), "avg", point_id="power_avg_5min")
    fleet = Windower(Window.tumbling(300), "avg", across="sum", point_id="fleet_power_5min",
                     key=lambda device: "fleet", lateness=60)
    for derived in per_inverter.add(("inv_pk", "inv001"), time_ms, 41.5): ...

Theory of operation. Everything is on *event time* (the devices' ``time``, epoch milliseconds),
never on a clock, so a live stream, a replay and a backtest over stored points agree; the
windowers are pure (no I/O, no clock, no threads).

- *Windows* (:class:`Window`) are half-open ``[start, end)``, aligned to the epoch (UTC):
  ``tumbling(size)`` back to back, ``sliding(size, step)`` one every ``step`` (which must divide
  ``size``), so a point is in ``size / step`` windows. A window's result is a :class:`Derived`
  point whose time is the window's *end*: the 5-minute average of 12:00..12:05 is stamped
  12:05, when it is known. An empty window has no result (no point, not a zero).
- *Aggregates* (:class:`Aggregate`): avg, min, max, sum, count, first, last and delta (last
  minus first) of the values in the window in event-time order. Values must be finite real
  numbers (not bools); any other value is counted (``invalid``) and dropped.
- *Keys*: state and results are per key: the device by default, or its group (a ``key``
  function of the device). In a group, ``across`` combines the devices' own aggregates (the sum
  of the inverters' averages is the fleet's power) and without it the group's points are pooled;
  points of a group at the same time are ordered by the device's text form.
- *Watermark*: per key, the newest event time it has taken minus the allowed ``lateness``. A
  window closes, and its result is emitted, as soon as the watermark reaches its end; with no
  lateness a window ends with the first point at or after its end. Points may arrive out of
  order within the lateness and still count.
- *Late points* (before the watermark) are counted (``late``) and dropped: their windows may
  be closed and emitted already, and a result is never revised. The watermark is per key so that
  a device with a clock far ahead makes only its own points (and its group's) late.
- *Duplicates* (a device's second point at the same time) replace the first while the window is
  open (last wins, as in the store) and are counted (``duplicates``).
- *Bounds*: a key holds at most ``max_points`` points (the points of ``size + lateness`` of
  event time); a key has at most ``(size + lateness) / step + 1`` open windows, and a shape and
  lateness over ``max_windows`` are refused when the windower is made; at most ``max_keys``
  keys. Points over a bound are counted (``dropped``), and every counter is also kept per key
  (``key_stats``): one device's bad data never stops the others.
- ``flush(until_ms)`` closes what a replay's or backtest's end leaves open, as if every
  watermark had reached ``until_ms`` (or every window's end).

:func:`window_frame` computes the same over a whole DataFrame with pandas (the backtest's
way): for points in event-time order it gives exactly the derived points of feeding them one by
one and flushing (nothing is late then); :func:`to_frame` puts derived points in the same shape.
"""

from __future__ import annotations

from ._definition import STREAMS_FILE, StreamDefinition, load_definitions, save_definitions
from ._engine import MAX_AHEAD, MAX_PENDING, MAX_STREAMS, StreamEngine, StreamEngineStats
from ._vector import COLUMNS, to_frame, window_frame
from ._window import ACROSS, Aggregate, Derived, Window
from ._windower import (
    DEFAULT_MAX_KEYS,
    DEFAULT_MAX_POINTS,
    DEFAULT_MAX_WINDOWS,
    StreamStats,
    Windower,
)

__all__ = [
    "ACROSS",
    "COLUMNS",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_POINTS",
    "DEFAULT_MAX_WINDOWS",
    "MAX_AHEAD",
    "MAX_PENDING",
    "MAX_STREAMS",
    "STREAMS_FILE",
    "Aggregate",
    "Derived",
    "StreamDefinition",
    "StreamEngine",
    "StreamEngineStats",
    "StreamStats",
    "Window",
    "Windower",
    "load_definitions",
    "save_definitions",
    "to_frame",
    "window_frame",
]
