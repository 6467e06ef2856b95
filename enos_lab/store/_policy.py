"""Storage policies: how long raw measurepoints are kept and what they are rolled into.

In the spirit of EnOS TSDB storage policies, each policy selects measurepoints by product and
point-id pattern, keeps their raw values ``raw_days`` days and, optionally, rolls them into a
downsampled series (count, sum, min, max, first, last per bucket of ``downsample``) before the raw
rows are deleted. The first policy in the list that matches a series governs it.
:func:`apply_policies` applies them inside the store writer's transaction.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import duckdb
import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgument
from ._time import parse_interval

__all__ = ["RetentionReport", "StoragePolicy", "apply_policies"]

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


_ROLLUP_SQL = """
INSERT INTO rollups
SELECT p.series_id, {width} AS interval_ms,
       p.event_ms - (((p.event_ms % {width}) + {width}) % {width}) AS bucket_ms,
       count(p.num), sum(p.num), min(p.num), max(p.num), min(p.event_ms),
       arg_min(p.num, p.event_ms), max(p.event_ms), arg_max(p.num, p.event_ms)
FROM points p JOIN f_cut c ON p.series_id = c.series_id
WHERE p.event_ms < c.cutoff AND p.num IS NOT NULL
GROUP BY ALL
ON CONFLICT (series_id, interval_ms, bucket_ms) DO UPDATE SET
    cnt = rollups.cnt + excluded.cnt,
    total = rollups.total + excluded.total,
    vmin = least(rollups.vmin, excluded.vmin),
    vmax = greatest(rollups.vmax, excluded.vmax),
    vfirst = CASE WHEN excluded.first_ms < rollups.first_ms
                  THEN excluded.vfirst ELSE rollups.vfirst END,
    first_ms = least(rollups.first_ms, excluded.first_ms),
    vlast = CASE WHEN excluded.last_ms > rollups.last_ms
                 THEN excluded.vlast ELSE rollups.vlast END,
    last_ms = greatest(rollups.last_ms, excluded.last_ms)
"""
_EXPIRED_SQL = """
SELECT count(*) FROM points p JOIN f_cut c ON p.series_id = c.series_id
WHERE p.event_ms < c.cutoff AND p.num IS NOT NULL
"""
_DELETE_SQL = """
DELETE FROM points USING f_cut c
WHERE points.series_id = c.series_id AND points.event_ms < c.cutoff
"""


def apply_policies(
    con: duckdb.DuckDBPyConnection,
    policies: Sequence[StoragePolicy],
    now_ms: int,
    latest: Callable[[npt.NDArray[np.int32]], tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]],
) -> RetentionReport:
    """Apply ``policies`` at ``now_ms`` inside the writer's transaction.

    ``latest`` gives each series' latest event time: that row is kept whatever its age, so that
    latest values stay available.
    """
    groups: dict[int, list[int]] = {}
    for sid, pk, pid in con.execute(
        "SELECT series_id, product_key, point_id FROM series"
    ).fetchall():
        for i, policy in enumerate(policies):
            if policy.matches(pk, pid):
                groups.setdefault(i, []).append(sid)
                break
    rolled = deleted = deleted_buckets = 0
    for i, sids in groups.items():
        policy = policies[i]
        width = policy.downsample_ms
        if policy.raw_days is not None:
            cutoff = now_ms - round(policy.raw_days * DAY_MS)
            found, times = latest(np.asarray(sids, dtype=np.int32))
            f_cut = {"series_id": found, "cutoff": np.minimum(times, cutoff)}  # noqa: F841
            if width is not None:
                (count,) = con.execute(_EXPIRED_SQL).fetchall()[0]
                if count:
                    con.execute(_ROLLUP_SQL.format(width=width))
                rolled += int(count)
            (count,) = con.execute(_DELETE_SQL).fetchall()[0]
            deleted += int(count)
        if width is not None and policy.downsample_days is not None:
            cutoff = now_ms - round(policy.downsample_days * DAY_MS)
            (count,) = con.execute(
                "DELETE FROM rollups WHERE series_id IN (SELECT unnest(?::INTEGER[]))"
                " AND bucket_ms + interval_ms <= ?",
                [sids, cutoff],
            ).fetchall()[0]
            deleted_buckets += int(count)
    return RetentionReport(rolled, deleted, deleted_buckets)
