"""Settings of the time-series store: the writer's grouping, DuckDB's memory and threads, and
what one device's data may make the store keep."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final

from ..errors import InvalidArgument

__all__ = ["MIN_MEMORY_LIMIT", "StoreConfig"]

MIN_MEMORY_LIMIT: Final = 32 * 2**20
"""Smallest ``StoreConfig.memory_limit`` accepted: with 8 MiB DuckDB failed a checkpoint (a
fatal error that invalidates the database until it is opened again). [bytes]"""

_MAX_DEFAULT_THREADS: Final = 4
_UNITS: Final = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Tuning of the time-series store.

    Memory: DuckDB keeps in its buffer pool every block of the database it has written or read
    until it reaches its memory limit, 80 % of the machine's RAM by default; so a store's
    resident memory grew with the data stored (about 5 MB per million points, measured with
    ``benchmarks/store_memory.py``). ``memory_limit`` bounds it; past the limit DuckDB evicts
    cached blocks (they are on disk) and spills query intermediates to a directory beside the
    database (``timeseries.duckdb.tmp``).
    """

    queue_size: int = 1024
    """Append calls that may wait for the writer before callers block (back-pressure)."""
    max_rows: int = 100_000
    """A group commit stops collecting batches at this many rows."""
    max_delay: float = 0.0
    """Extra wait for more batches once callers proved concurrent (the previous group held
    several). 0 groups just what queued up during the previous commit, which already batches
    concurrent callers; a positive value trades latency for larger groups. [s]"""
    memory_limit: int | str | None = "256MiB"
    """Most memory DuckDB may use: its cache of database blocks and the working memory of
    queries (sorts, hash tables, results being built). A number of bytes, or text with a unit
    (``"256MiB"``, ``"1 GiB"``; KB/MB/GB/TB count powers of 1000, KiB/MiB/GiB/TiB powers of
    1024); at least ``MIN_MEMORY_LIMIT`` (32 MiB). The default keeps a lab beside notebooks and
    a browser on a laptop; a query that needs more than the limit even with spilling fails
    with :class:`~enos_lab.errors.StoreError`. ``None`` leaves DuckDB's default (80 % of
    RAM). [bytes]"""
    threads: int | None = None
    """DuckDB worker threads. Each thread of a query holds buffers of its own within
    ``memory_limit`` (measured: a 12-million-row query fitted in 128 MiB with 1 or 2 threads
    and failed with 8), so ``None`` means the machine's cores, at most 4. [-]"""
    max_series_per_device: int = 10_000
    """Most series (point ids) one device may have in the store: the store keeps each series'
    key and latest time in memory (about 0.6 KiB per series), so a device posting ever new point
    ids (a product without a thing model, or a model allowing additional measurepoints) would
    otherwise grow it without end. Rows that would pass it are refused with
    :class:`~enos_lab.errors.InvalidArgument`; checked when rows are submitted, so appends
    running at the same time may together pass it by what they add. [-]"""

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.max_rows < 1 or self.max_delay < 0:
            raise InvalidArgument(
                f"expected positive queue_size/max_rows and max_delay >= 0: {self}"
            )
        if self.memory_limit is not None:
            size = _parse_size(self.memory_limit)
            if size < MIN_MEMORY_LIMIT:
                raise InvalidArgument(
                    f"expected memory_limit of at least {MIN_MEMORY_LIMIT} bytes (32 MiB), got "
                    f"{self.memory_limit!r}"
                )
        if self.threads is not None and (
            not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1
        ):
            raise InvalidArgument(f"expected threads >= 1 or None, got {self.threads!r}")
        if (
            not isinstance(self.max_series_per_device, int)
            or isinstance(self.max_series_per_device, bool)
            or self.max_series_per_device < 1
        ):
            raise InvalidArgument(
                f"expected max_series_per_device >= 1, got {self.max_series_per_device!r}"
            )

    @property
    def memory_limit_bytes(self) -> int | None:
        """``memory_limit`` in bytes (None: DuckDB's default). [bytes]"""
        return None if self.memory_limit is None else _parse_size(self.memory_limit)

    @property
    def thread_count(self) -> int:
        """``threads``, or the machine's cores (at most 4) when it is None. [-]"""
        if self.threads is not None:
            return self.threads
        return max(1, min(_MAX_DEFAULT_THREADS, os.cpu_count() or 1))

    def duckdb_settings(self) -> dict[str, str | int]:
        """The DuckDB configuration these settings make (for ``duckdb.connect``)."""
        settings: dict[str, str | int] = {"threads": self.thread_count}
        size = self.memory_limit_bytes
        if size is not None:
            settings["memory_limit"] = f"{size}B"
        return settings


def _parse_size(value: object) -> int:
    """Bytes of ``value``: an int, or text with a unit of :data:`_UNITS`."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        factor = _UNITS.get(match[2].lower())
        if factor is None:
            raise InvalidArgument(
                f"expected memory_limit with a unit among {', '.join(_UNITS)}, got {value!r}"
            )
        size = int(float(match[1]) * factor)
    else:
        raise InvalidArgument(
            f"expected memory_limit as bytes (int) or text such as '256MiB', got {value!r}"
        )
    if size <= 0:
        raise InvalidArgument(f"expected a positive memory_limit, got {value!r}")
    return size
