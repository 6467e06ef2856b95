"""Storage policies: how long raw measurepoints are kept and what they are rolled into.

In the spirit of EnOS TSDB storage policies, each policy selects measurepoints by product and
point-id pattern, keeps their raw values ``raw_days`` days and, optionally, rolls them into a
downsampled series (count, sum, min, max, first, last per bucket of ``downsample``) before the raw
rows are deleted. The first policy in the list that matches a series governs it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import timedelta

from ..errors import InvalidArgument
from ._time import parse_interval

__all__ = ["RetentionReport", "StoragePolicy"]

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """Retention and downsampling for the measurepoints it matches."""

    points: str = "*"
    """Point-id pattern (shell style: ``*``, ``?``, ``[abc]``); ``"*"`` matches every point."""
    raw_days: float | None = None
    """Keep raw values this long after their event time; None keeps them forever. [d]"""
    downsample: str | timedelta | None = None
    """Bucket width of the downsampled series (``"1min"``, ``"1h"`` ...); None for none."""
    downsample_days: float | None = None
    """Keep downsampled buckets this long; None keeps them forever. [d]"""
    product_key: str | None = None
    """Restrict the policy to one product (the product's model); None for every product."""

    def __post_init__(self) -> None:
        for name in ("raw_days", "downsample_days"):
            days = getattr(self, name)
            if days is not None and not days > 0:
                raise InvalidArgument(f"expected {name} > 0 or None, got {days!r}")
        if self.downsample is not None:
            parse_interval(self.downsample)
            if self.raw_days is None:
                raise InvalidArgument(
                    "a downsampled series is filled when raw rows expire: set raw_days too"
                )
        if not self.points:
            raise InvalidArgument("expected a point-id pattern, got an empty string")

    @property
    def downsample_ms(self) -> int | None:
        """Bucket width of the downsampled series, or None. [ms]"""
        return None if self.downsample is None else parse_interval(self.downsample)

    def matches(self, product_key: str, point_id: str) -> bool:
        """True if this policy governs ``point_id`` of ``product_key``."""
        if self.product_key is not None and self.product_key != product_key:
            return False
        return fnmatch.fnmatchcase(point_id, self.points)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What :meth:`TimeSeriesStore.apply_retention` did."""

    rolled_rows: int
    """Raw rows folded into downsampled series."""
    deleted_rows: int
    """Raw rows deleted."""
    deleted_buckets: int
    """Downsampled buckets deleted."""
