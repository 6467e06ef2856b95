"""Upload modes: which samples an edge sends to the hub.

EnOS Edge has three upload modes (EnOS protocol reference 14): REALTIME, TIMER (interval) and
CHANGE (on value change). Here each is a pure function over samples, and
:class:`UploadFilter` applies the same rules to a stream, one sample at a time:

``REALTIME``
    Every sample.
``INTERVAL``
    Per device, the latest sample of each period; periods are aligned to the epoch
    (``[k * period, (k + 1) * period)``, so 60 s periods start on the minute). In a stream a
    period's latest sample is known when the device's first sample of a later period arrives
    (or at :meth:`UploadFilter.flush`); a late sample of an earlier period is passed on at
    once rather than dropped.
``ON_CHANGE``
    Per device and point, a value is sent when it differs from the last value *sent* by more
    than the point's deadband (absolute, in the point's unit; 0: any change). An array
    changes when an item does; values that are not numbers change when they are not equal.
    The first value of a point is always sent; a sample is cut down to its changed points,
    and dropped when none changed. Comparing with the last value sent, not the last sampled,
    sends a slow drift once it has added up to the deadband.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from enum import Enum
from typing import Any

from ..errors import InvalidArgument
from ._poller import Sample

__all__ = [
    "UploadFilter",
    "UploadMode",
    "changed_points",
    "latest_per_period",
    "period_index",
]


class UploadMode(Enum):
    """Which samples an edge uploads (see the module docstring)."""

    REALTIME = "realtime"
    """Every sample."""
    INTERVAL = "interval"
    """The latest sample of each period, per device."""
    ON_CHANGE = "on_change"
    """The points that changed beyond their deadband."""


def period_index(time_ms: int, period: float) -> int:
    """The number of the epoch-aligned period of ``period`` seconds holding ``time_ms``. [-]"""
    return int(time_ms // round(period * 1000))


def latest_per_period(samples: Iterable[Sample], period: float) -> list[Sample]:
    """Per device, the latest sample of each ``period`` [s]; ordered by time, then device
    (equal times: the later in ``samples`` wins)."""
    _check_period(period)
    latest: dict[tuple[str, int], Sample] = {}
    for sample in samples:
        key = (sample.device, period_index(sample.time_ms, period))
        kept = latest.get(key)
        if kept is None or sample.time >= kept.time:
            latest[key] = sample
    return sorted(latest.values(), key=lambda s: (s.time, s.device))


def changed_points(
    values: Mapping[str, Any],
    last_sent: Mapping[str, Any],
    deadbands: Mapping[str, float] | None = None,
    default_deadband: float = 0.0,
) -> dict[str, Any]:
    """The points of ``values`` to send: new ones, and those that differ from ``last_sent``
    by more than their deadband (``deadbands[point]``, else ``default_deadband``)."""
    bands = deadbands or {}
    return {
        point: value
        for point, value in values.items()
        if point not in last_sent
        or _differs(value, last_sent[point], bands.get(point, default_deadband))
    }


def _differs(value: Any, before: Any, band: float) -> bool:
    if _number(value) and _number(before):
        return bool(abs(value - before) > band)
    if isinstance(value, list) and isinstance(before, list):
        return len(value) != len(before) or any(
            _differs(a, b, band) for a, b in zip(value, before, strict=True)
        )
    return bool(value != before)


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _check_period(period: float | None) -> float:
    if period is None or not period > 0:
        raise InvalidArgument(f"an interval upload needs a period > 0 s, got {period!r}")
    return float(period)


class UploadFilter:
    """The upload mode of a stream of samples: :meth:`push` each sample, send what it returns.

    ``period`` [s] is the INTERVAL mode's; ``deadbands`` (point -> band, in the point's unit)
    and ``default_deadband`` the ON_CHANGE mode's. State is kept per device and bounded by the
    number of devices and points.
    """

    def __init__(
        self,
        mode: UploadMode | str = UploadMode.REALTIME,
        *,
        period: float | None = None,
        deadbands: Mapping[str, float] | None = None,
        default_deadband: float = 0.0,
    ) -> None:
        self._mode = UploadMode(mode)
        self._period = _check_period(period) if self._mode is UploadMode.INTERVAL else 0.0
        for point, band in (deadbands or {}).items():
            if not band >= 0:
                raise InvalidArgument(f"deadband of {point!r} must be >= 0, got {band!r}")
        if not default_deadband >= 0:
            raise InvalidArgument(f"default_deadband must be >= 0, got {default_deadband!r}")
        self._deadbands = dict(deadbands or {})
        self._default = float(default_deadband)
        self._pending: dict[str, Sample] = {}
        self._sent: dict[str, dict[str, Any]] = {}

    @property
    def mode(self) -> UploadMode:
        """The upload mode."""
        return self._mode

    def last_sent(self, device: str) -> dict[str, Any]:
        """ON_CHANGE: the last value sent of each point of ``device``."""
        return dict(self._sent.get(device, {}))

    def push(self, sample: Sample) -> list[Sample]:
        """The samples to send now that ``sample`` arrived (none, one, or two: a period's
        latest sample and a late one)."""
        if self._mode is UploadMode.REALTIME:
            return [sample]
        if self._mode is UploadMode.ON_CHANGE:
            sent = self._sent.setdefault(sample.device, {})
            changed = changed_points(sample.values, sent, self._deadbands, self._default)
            if not changed:
                return []
            sent.update(changed)
            return [
                sample if len(changed) == len(sample.values) else replace(sample, values=changed)
            ]
        pending = self._pending.get(sample.device)
        if pending is None:
            self._pending[sample.device] = sample
            return []
        held = period_index(pending.time_ms, self._period)
        now = period_index(sample.time_ms, self._period)
        if now == held:
            if sample.time >= pending.time:
                self._pending[sample.device] = sample
            return []
        if now < held:
            return [sample]  # late: its period's sample is gone already
        self._pending[sample.device] = sample
        return [pending]

    def flush(self) -> list[Sample]:
        """INTERVAL: the held latest sample of each device's current period, by time."""
        held = sorted(self._pending.values(), key=lambda s: (s.time, s.device))
        self._pending.clear()
        return held
