"""The edge emulator's field side: Modbus field devices, point tables, polling, local cache.

An EnOS Edge collects data from devices that do not speak MQTT (EnOS protocol reference 14):
here, over Modbus TCP. The pieces, each usable alone:

- :class:`PointTable` (:func:`load_point_table`): the point-mapping table, CSV rows mapping
  registers of a unit to measurepoints of a thing model (through a vendor mapping when the
  table uses vendor point names), checked against the model; the register codec
  (:func:`encode_words`, :func:`decode_words`) and read planning (:class:`ReadGroup`).
- :class:`FieldServer`: field devices, real pymodbus TCP servers with several unit ids whose
  registers are laid out by point tables, set from Python, with injectable faults.
- :class:`Poller`: polls :class:`FieldDevice` s with pymodbus clients on the lab's clock and
  produces :class:`Sample` s; a timeout, an exception response or a value that does not
  decode is a counted :class:`PollError` of that device only. :class:`UploadFilter` and the
  pure functions :func:`latest_per_period` and :func:`changed_points` select what to upload
  (real time, interval, on change with deadbands).
- :class:`SampleCache`: the durable local cache for breakpoint resume, a bounded SQLite file
  with oldest-first eviction counted as loss per device, chronological reads and deletes of
  confirmed rows only.
- :class:`Edge`: the edge gateway itself, a gateway device whose device key is its serial
  number, its field devices (:class:`EdgeDevice`) its sub-devices: set up in the cloud, polled
  on the lab's clock, uploaded per the upload mode in batch posts, cached while the hub is away
  and resumed in chronological order once it is back (:class:`EdgeConfig`; counters in
  :meth:`Edge.status`, :class:`EdgeStats`; errors :class:`EdgeError`). :func:`advance_edges`
  steps a simulated clock for several edges.
"""

from __future__ import annotations

from ._cache import CACHE_FILE, CachedSample, CacheStats, SampleCache
from ._edge import Edge
from ._edge_clock import advance_edges
from ._edge_config import EdgeConfig, EdgeDevice
from ._edge_setup import STATUS_COLUMNS
from ._edge_stats import (
    EdgeError,
    EdgeErrorKind,
    EdgeState,
    EdgeStats,
    SubDeviceState,
    SubDeviceStats,
)
from ._field import ExceptionCode, FieldServer, UnitStats
from ._points import PointTable, load_point_table
from ._poller import DeviceStats, FieldDevice, Poller, PollError, PollErrorKind, Sample
from ._registers import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    PointRow,
    ReadGroup,
    RegisterTable,
    RegisterType,
    WordOrder,
    decode_words,
    encode_words,
)
from ._upload import UploadFilter, UploadMode, changed_points, latest_per_period, period_index

__all__ = [
    "CACHE_FILE",
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "STATUS_COLUMNS",
    "CacheStats",
    "CachedSample",
    "DeviceStats",
    "Edge",
    "EdgeConfig",
    "EdgeDevice",
    "EdgeError",
    "EdgeErrorKind",
    "EdgeState",
    "EdgeStats",
    "ExceptionCode",
    "FieldDevice",
    "FieldServer",
    "PointRow",
    "PointTable",
    "PollError",
    "PollErrorKind",
    "Poller",
    "ReadGroup",
    "RegisterTable",
    "RegisterType",
    "Sample",
    "SampleCache",
    "SubDeviceState",
    "SubDeviceStats",
    "UnitStats",
    "UploadFilter",
    "UploadMode",
    "WordOrder",
    "advance_edges",
    "changed_points",
    "decode_words",
    "encode_words",
    "latest_per_period",
    "load_point_table",
    "period_index",
]
