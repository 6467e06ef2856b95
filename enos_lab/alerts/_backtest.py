"""Backtest: the alerts one alert rule would have raised over stored points, vectorised.

Theory of operation. :func:`backtest` takes the points of a store query
(:meth:`~enos_lab.store.TimeSeriesStore.query_points`), keeps the rows of the rule's trigger
point on the devices in its scope (resumed rows only with ``include_resumed``, as the engine),
evaluates the condition and the recover condition over all rows at once
(:meth:`~enos_lab.rules.Expression.evaluate_frame`), and finds the alerts with numpy on the
rows sorted by device and event time. The semantics are :class:`AlertState`'s (the package
docstring), with every deadline up to ``end`` applied (``due(end + 1)``):

- a point is *recovering* when the condition does not hold (with hysteresis: when the recover
  condition holds and the condition does not). Recovering points cut a device's rows into
  blocks; a block's *run* starts at its first anomalous point ``t0`` and ends at the recovering
  point that closes the block (``R``; none for a device's last block). What happens inside a
  run never changes where runs start and end, so all runs are found at once.
- with ``min_repeat`` n and delay D, let ``t_n`` be the run's n-th anomalous point and
  ``d = t0 + D``. If ``t_n >= d`` the alert fires at ``t_n`` (by that point; without delay
  always). If ``t_n < d`` it fires at ``d`` when ``d < R`` (a recovering point at ``d`` still
  resets it) and ``d <= end``; the point confirming it is the last anomalous one at or before
  ``d`` (by the timer, unless an anomalous point sits exactly at ``d``).
- it recovers at ``R``; it escalates to a step at ``occur + after`` when that is before ``R``
  and not after ``end``.

Rules with flapping detection run :class:`AlertState` per device instead (every point through
Python, about 450,000 points/s), with the engine's bookkeeping of records: correct, not fast.

Event time and the store. The store keeps one row per device, point and event time (a later
write replaces an earlier one, a resumed row never replaces a live one) and returns them sorted
by time, whatever order they arrived in. So the backtest sees every device's points in time
order, with nothing late: it gives the alerts live evaluation gives when each device's points
arrived in time order without re-sent times. Points that arrived late were ignored live (the
state counts them as ``late``) but are evaluated here in their place; a re-sent time was
evaluated live with its first value, here with the value the store kept. A frame not sorted
by device and time is sorted here (stably); of rows with the same device and time the first
is taken and the others counted as ``duplicates`` (as the state ignores them).

Bad rows. As in the engine, a device without an attribute the conditions reference, or a row
on which they cannot be evaluated, is skipped and counted for that device; the rest goes on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..clock import from_epoch_ms
from ..errors import EvaluationError, InvalidArgument
from ..model import ThingModel
from ..rules import Expression
from ..store import TimeLike, as_ms
from ._definitions import AlertRule
from ._engine import compile_rule
from ._replay import escalation_step, replay_states, spans

__all__ = ["BACKTEST_COLUMNS", "backtest"]

BACKTEST_COLUMNS = (
    "rule_id",
    "product_key",
    "device_key",
    "model_id",
    "point_id",
    "value",
    "occur_time",
    "recover_time",
    "severity_id",
    "severity",
    "severity_level",
    "event_type",
    "flapping",
    "escalations",
    "explain",
)
"""Columns of :func:`backtest`'s result: the names of :data:`RECORD_COLUMNS` that an alert has
without records, with the same meaning (times tz-aware UTC; ``severity*`` the severity at
``end``, escalated or not; ``event_type`` 1 while active at ``end``, 0 once recovered;
``flapping`` whether flapping at ``end``; ``escalations`` and ``explain`` as the records
decode them)."""

_REQUIRED = ("time", "product_key", "device_key", "point_id", "value")
_NEVER = np.iinfo(np.int64).max
_Ints = npt.NDArray[np.int64]
_Bools = npt.NDArray[np.bool_]


class _Counts:
    """What the backtest skipped, reported in the result's ``attrs``."""

    def __init__(self) -> None:
        self.resumed_skipped = 0
        self.duplicates = 0
        self.skipped = 0
        self.by_device: dict[tuple[str, str], int] = {}

    def skip(self, device: tuple[str, str], rows: int) -> None:
        if rows:
            self.skipped += rows
            self.by_device[device] = self.by_device.get(device, 0) + rows


def backtest(
    rule: AlertRule,
    points: pd.DataFrame,
    *,
    model: ThingModel,
    attributes: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    tags: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    end: TimeLike | None = None,
    include_resumed: bool = False,
) -> pd.DataFrame:
    """The alerts ``rule`` would have raised on ``points``, one row per alert in occur order.

    ``points`` has the columns of :meth:`~enos_lab.store.TimeSeriesStore.query_points` (time
    tz-aware, product_key, device_key, point_id, value; resume optional); rows of other points
    and of devices outside the rule's scope are ignored, resumed rows too unless
    ``include_resumed`` (as :meth:`AlertEngine.add_rule`). The caller selects the devices
    whose products use ``model`` (the rule's thing model). ``attributes`` gives each
    (product_key, device_key) its attribute values, for conditions that reference them; a
    device without one is skipped and counted. ``tags`` gives the devices' tags, needed for a
    rule with ``scope_tags``. ``enabled`` is not looked at: backtesting a rule
    before enabling it is the point.

    ``end`` closes the series: the points are complete up to it, so a delay or escalation
    deadline at or before ``end`` takes effect (live, the lab clock passing it does); later
    rows are ignored. Default: the newest point's time.

    Returns a DataFrame of :data:`BACKTEST_COLUMNS`, with ``attrs``: ``end`` (a UTC
    Timestamp or None), ``points`` (rows evaluated), ``resumed_skipped``, ``duplicates``,
    ``skipped`` and ``skips_by_device`` ({(product_key, device_key): rows}). The module
    docstring (:mod:`enos_lab.alerts._backtest`) states the semantics and how stored points
    relate to the order they arrived in. Raises :class:`~enos_lab.errors.InvalidArgument` for
    a device-status rule, a model that is not the rule's, a frame without the columns, naive
    times, or attribute references without ``attributes``;
    :class:`~enos_lab.errors.ExpressionError` for a bad condition.
    """
    condition, recover = _check(rule, points, model, attributes)
    assert condition is not None and rule.measurepoint is not None
    counts = _Counts()
    if rule.scope_tags and tags is None:
        raise InvalidArgument(
            f"backtest: alert rule {rule.rule_id!r} is scoped by device tags: pass tags= "
            "(each (product_key, device_key)'s tags)"
        )
    pk, dk, times, values = _select(rule, points, include_resumed, counts, tags or {})
    end_ms = as_ms(end, "end") if end is not None else (int(times.max()) if len(times) else None)
    if end_ms is not None and len(times) and int(times.max()) > end_ms:
        keep = times <= end_ms
        pk, dk, times, values = pk[keep], dk[keep], times[keep], values[keep]
    pk, dk, times, values, starts = _in_order(pk, dk, times, values, counts)
    keep = np.ones(len(times), dtype=bool)
    columns: dict[str, Any] = {rule.measurepoint: values}
    names = sorted(condition.attributes | (recover.attributes if recover else frozenset()))
    if names:
        assert attributes is not None
        columns.update(
            _attribute_columns(
                names, pk=pk, dk=dk, starts=starts, attributes=attributes, keep=keep,
                counts=counts,
            )
        )  # fmt: skip
    anomaly, recovering = _evaluate(
        condition, recover, pd.DataFrame(columns, copy=False), pk=pk, dk=dk, starts=starts,
        keep=keep,
        counts=counts,
    )  # fmt: skip
    if not keep.all():
        pk, dk, times, values = pk[keep], dk[keep], times[keep], values[keep]
        anomaly, recovering = anomaly[keep], recovering[keep]
        starts = _kept_starts(starts, keep)
    vals = values.to_numpy()
    run = replay_states if rule.flapping is not None else _runs  # flapping: state by state
    alerts = run(
        rule, pk=pk, dk=dk, t=times, vals=vals, anomaly=anomaly, recovering=recovering,
        starts=starts, end_ms=end_ms,
    )  # fmt: skip
    result = _frame(rule, alerts)
    result.attrs.update(
        end=None if end_ms is None else pd.Timestamp(from_epoch_ms(end_ms)),
        points=len(times),
        resumed_skipped=counts.resumed_skipped,
        duplicates=counts.duplicates,
        skipped=counts.skipped,
        skips_by_device=dict(counts.by_device),
    )
    return result


# -------------------------------------------------------------------- input


def _check(
    rule: AlertRule,
    points: pd.DataFrame,
    model: ThingModel,
    attributes: Mapping[tuple[str, str], Mapping[str, Any]] | None,
) -> tuple[Expression | None, Expression | None]:
    if not isinstance(rule, AlertRule):
        raise InvalidArgument(f"backtest: expected an AlertRule, got {type(rule).__name__}")
    what = f"backtest of alert rule {rule.rule_id!r}"
    if rule.measurepoint is None:
        raise InvalidArgument(
            f"{what}: a device-status trigger ({rule.device_status!r}) has no stored points "
            "to backtest; give a measurepoint rule"
        )
    if not isinstance(model, ThingModel) or model.model_id != rule.model_id:
        found = model.model_id if isinstance(model, ThingModel) else type(model).__name__
        raise InvalidArgument(f"{what}: expected its thing model {rule.model_id!r}, got {found!r}")
    if not isinstance(points, pd.DataFrame):
        raise InvalidArgument(f"{what}: points must be a DataFrame, got {type(points).__name__}")
    missing = [c for c in _REQUIRED if c not in points.columns]
    if missing:
        raise InvalidArgument(
            f"{what}: points lack the column(s) {missing} (expected those of query_points)"
        )
    condition, recover = compile_rule(rule, model)
    assert condition is not None
    referenced = condition.attributes | (recover.attributes if recover else frozenset())
    if referenced and attributes is None:
        raise InvalidArgument(
            f"{what}: its conditions reference the attribute(s) {sorted(referenced)}; "
            "give attributes={(product_key, device_key): {...}}"
        )
    if attributes is not None and not isinstance(attributes, Mapping):
        raise InvalidArgument(
            f"{what}: attributes must be a mapping of (product_key, device_key) to "
            f"attribute values, got {type(attributes).__name__}"
        )
    return condition, recover


def _select(
    rule: AlertRule,
    points: pd.DataFrame,
    include_resumed: bool,
    counts: _Counts,
    tags: Mapping[tuple[str, str], Mapping[str, str]],
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], _Ints, pd.Series[Any]]:
    """Product keys, device keys, times [ms] and values (on a fresh RangeIndex) of the rows
    of the trigger point in scope, resumed ones only if asked."""
    mask = np.asarray(points["point_id"].to_numpy(dtype=object) == rule.measurepoint, dtype=bool)
    if rule.scope:
        mask &= np.asarray(points["device_key"].isin(rule.scope), dtype=bool)
    if rule.scope_tags:
        keys = list(zip(points["product_key"], points["device_key"], strict=True))
        chosen = {key for key in set(keys) if rule.applies_to(key[1], tags.get(key))}
        mask &= np.fromiter((key in chosen for key in keys), dtype=bool, count=len(keys))
    if "resume" in points.columns and not include_resumed:
        resumed = points["resume"].fillna(False).to_numpy(dtype=bool) & mask
        counts.resumed_skipped = int(resumed.sum())
        mask &= ~resumed
    pk = points["product_key"].to_numpy(dtype=object)
    dk = points["device_key"].to_numpy(dtype=object)
    times = _times_ms(points["time"])
    values = points["value"].reset_index(drop=True)
    if not mask.all():
        pk, dk, times, values = pk[mask], dk[mask], times[mask], values[mask]
    return pk, dk, times, values.reset_index(drop=True)


def _times_ms(column: pd.Series[Any]) -> _Ints:
    """Event times [ms since the epoch] of a tz-aware time column."""
    if len(column) == 0:
        return np.empty(0, dtype=np.int64)
    if not isinstance(column.dtype, pd.DatetimeTZDtype):
        raise InvalidArgument(
            f"backtest: the time column must hold tz-aware times, got dtype {column.dtype}"
        )
    index = pd.DatetimeIndex(column)
    per_ms = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[index.unit]
    if per_ms is None:
        return np.asarray(index.asi8, dtype=np.int64) * 1000
    return np.asarray(index.asi8, dtype=np.int64) // per_ms  # floor, as the store's times


def _in_order(
    pk: npt.NDArray[Any],
    dk: npt.NDArray[Any],
    times: _Ints,
    values: pd.Series[Any],
    counts: _Counts,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], _Ints, pd.Series[Any], _Bools]:
    """The rows by device and time (stable), the first of a device's rows at one time only;
    with the flags of each device's first row."""
    values = values.reset_index(drop=True)
    starts = _device_starts(pk, dk)
    if len(times) < 2:
        return pk, dk, times, values, starts
    step = np.diff(times)
    sorted_ = len(_unique_devices(pk[starts], dk[starts])) == int(starts.sum()) and bool(
        np.all((step >= 0) | starts[1:])
    )
    if not sorted_:
        codes = pd.MultiIndex.from_arrays([pk, dk]).codes
        order = np.lexsort((times, codes[1], codes[0]))
        pk, dk, times = pk[order], dk[order], times[order]
        values = values.iloc[order].reset_index(drop=True)
        starts = _device_starts(pk, dk)
        step = np.diff(times)
    again = np.concatenate(([False], (step == 0) & ~starts[1:]))
    if again.any():  # never a device's first row: the flags stay right
        counts.duplicates = int(again.sum())
        keep = ~again
        pk, dk, times, starts = pk[keep], dk[keep], times[keep], starts[keep]
        values = values[keep].reset_index(drop=True)
    return pk, dk, times, values, starts


def _kept_starts(starts: _Bools, keep: _Bools) -> _Bools:
    """The device-start flags of the rows ``keep`` leaves."""
    device = np.cumsum(starts)[keep]
    out = np.ones(len(device), dtype=bool)
    out[1:] = device[1:] != device[:-1]
    return out


def _unique_devices(pk: npt.NDArray[Any], dk: npt.NDArray[Any]) -> set[tuple[str, str]]:
    return set(zip(pk.tolist(), dk.tolist(), strict=True))


def _device_starts(pk: npt.NDArray[Any], dk: npt.NDArray[Any]) -> _Bools:
    """True on each row whose device differs from the previous row's."""
    starts = np.ones(len(dk), dtype=bool)
    if len(dk) > 1:
        starts[1:] = (dk[1:] != dk[:-1]) | (pk[1:] != pk[:-1])
    return starts


def _attribute_columns(
    names: list[str],
    *,
    pk: npt.NDArray[Any],
    dk: npt.NDArray[Any],
    starts: _Bools,
    attributes: Mapping[tuple[str, str], Mapping[str, Any]],
    keep: _Bools,
    counts: _Counts,
) -> dict[str, Any]:
    """One column per referenced attribute (each device's value repeated over its rows); a
    device missing one has its rows dropped from ``keep`` and counted."""
    first = np.flatnonzero(starts)
    lengths = np.diff(np.append(first, len(dk)))
    per_device: dict[str, list[Any]] = {name: [] for name in names}
    for row, length in zip(first.tolist(), lengths.tolist(), strict=True):
        device = (pk[row], dk[row])
        known = attributes.get(device)
        if known is None or any(name not in known for name in names):
            keep[row : row + length] = False
            counts.skip(device, length)
        for name in names:
            per_device[name].append(None if known is None else known.get(name))
    columns: dict[str, Any] = {}
    for name, cells in per_device.items():
        numeric = all(
            c is None or (isinstance(c, int | float) and not isinstance(c, bool)) for c in cells
        )
        array = np.array(
            [np.nan if c is None else c for c in cells] if numeric else cells,
            dtype=np.float64 if numeric else object,
        )
        columns[f"attr:{name}"] = np.repeat(array, lengths)
    return columns


def _evaluate(
    condition: Expression,
    recover: Expression | None,
    frame: pd.DataFrame,
    *,
    pk: npt.NDArray[Any],
    dk: npt.NDArray[Any],
    starts: _Bools,
    keep: _Bools,
    counts: _Counts,
) -> tuple[_Bools, _Bools]:
    """Anomaly and recovering flags of every row; the whole frame at once, or device by
    device (then row by row) when a value cannot be used, those rows dropped from ``keep``."""
    try:
        return _flags(condition, recover, frame)
    except EvaluationError:
        pass
    anomaly = np.zeros(len(frame), dtype=bool)
    recovering = np.zeros(len(frame), dtype=bool)
    for lo, hi in spans(starts):
        part = frame.iloc[lo:hi]
        try:
            anomaly[lo:hi], recovering[lo:hi] = _flags(condition, recover, part)
            continue
        except EvaluationError:
            pass
        for i in range(lo, hi):  # the engine's way: each point on its own
            if not keep[i]:
                continue
            try:
                one = _flags(condition, recover, part.iloc[i - lo : i - lo + 1])
            except EvaluationError:
                keep[i] = False
                counts.skip((pk[i], dk[i]), 1)
                continue
            anomaly[i], recovering[i] = one[0][0], one[1][0]
    return anomaly, recovering


def _flags(
    condition: Expression, recover: Expression | None, frame: pd.DataFrame
) -> tuple[_Bools, _Bools]:
    anomaly = condition.evaluate_frame(frame).to_numpy(dtype=bool)
    if recover is None:
        return anomaly, ~anomaly
    return anomaly, recover.evaluate_frame(frame).to_numpy(dtype=bool) & ~anomaly


# -------------------------------------------------------------------- alerts


def _runs(
    rule: AlertRule,
    *,
    pk: npt.NDArray[Any],
    dk: npt.NDArray[Any],
    t: _Ints,
    vals: npt.NDArray[Any],
    anomaly: _Bools,
    recovering: _Bools,
    starts: _Bools,
    end_ms: int | None,
) -> list[dict[str, Any]]:
    """The alerts of every run at once (see the module docstring)."""
    anomalous = np.flatnonzero(anomaly)
    if not len(anomalous) or end_ms is None:
        return []
    n = len(t)
    block_start = starts.copy()
    block_start[1:] |= recovering[:-1]
    block = np.cumsum(block_start) - 1
    block_last = np.append(np.flatnonzero(block_start)[1:] - 1, n - 1)
    closes = recovering[block_last]
    closing_ms = np.where(closes, t[block_last], _NEVER)
    # the runs: the anomalous rows grouped by block
    run_block = block[anomalous]
    first = np.flatnonzero(np.concatenate(([True], run_block[1:] != run_block[:-1])))
    run_block = run_block[first]
    size = np.diff(np.append(first, len(anomalous)))
    t_a = t[anomalous]
    t0 = t_a[first]
    deadline = t0 + rule.delay_ms
    repeat = rule.min_repeat
    enough = size >= repeat
    nth = first + np.minimum(size, repeat) - 1
    t_n = t_a[nth]
    by_point = enough & (t_n >= deadline)
    by_deadline = (
        enough & (t_n < deadline) & (deadline < closing_ms[run_block]) & (deadline <= end_ms)
    )
    fired = by_point | by_deadline
    if not fired.any():
        return []
    # anomalous points of the run at or before the deadline: the timer's confirming point
    upto = np.add.reduceat((t_a <= np.repeat(deadline, size)).astype(np.int64), first)
    confirm = np.where(by_point, nth, first + upto - 1)
    occur = np.where(by_point, t_n, deadline)
    idx = np.flatnonzero(fired)
    start_rows, confirm_rows = anomalous[first[idx]], anomalous[confirm[idx]]
    occur, closes_f = occur[idx], closes[run_block[idx]]
    end_rows = block_last[run_block[idx]]
    recover_ms = np.where(closes_f, t[end_rows], _NEVER)
    anomalies = np.where(by_point[idx], repeat, upto[idx])
    value_rows = start_rows if rule.delay_ms > 0 else confirm_rows
    steps = _escalations(rule, occur, recover_ms, end_ms)
    keys = zip(pk[start_rows].tolist(), dk[start_rows].tolist(), strict=True)
    value = vals[value_rows].tolist()
    started = zip(t[start_rows].tolist(), vals[start_rows].tolist(), strict=True)
    confirmed = zip(t[confirm_rows].tolist(), vals[confirm_rows].tolist(), strict=True)
    ended = zip(closes_f.tolist(), t[end_rows].tolist(), vals[end_rows].tolist(), strict=True)
    alerts = []
    for k, (device, start, confirm_, end, occur_ms, count) in enumerate(
        zip(keys, started, confirmed, ended, occur.tolist(), anomalies.tolist(), strict=True)
    ):
        closed, end_time, end_value = end
        alerts.append(
            {
                "product_key": device[0],
                "device_key": device[1],
                "value": value[k],
                "occur_ms": occur_ms,
                "recover_ms": end_time if closed else None,
                "escalations": steps[k],
                "flapping": False,
                "explain": {
                    "started": {"time_ms": start[0], "value": start[1]},
                    "confirmed": {"time_ms": confirm_[0], "value": confirm_[1]},
                    "ended": {"time_ms": end_time, "value": end_value} if closed else None,
                    "anomalies": count,
                    "by_timer": confirm_[0] != occur_ms,
                },
            }
        )
    return alerts


def _escalations(
    rule: AlertRule, occur: _Ints, recover_ms: _Ints, end_ms: int
) -> list[list[dict[str, Any]]]:
    """Each alert's escalation steps: a step at ``occur + after`` before the recovery and not
    after ``end`` (a recovering point at that instant comes first)."""
    if not rule.escalation:
        return [[] for _ in range(len(occur))]
    after = np.array([step.after_ms for step in rule.escalation], dtype=np.int64)
    at = occur[:, None] + after[None, :]
    taken = ((at < recover_ms[:, None]) & (at <= end_ms)).sum(axis=1)
    out = []
    for k, count in enumerate(taken.tolist()):
        steps, previous = [], rule.severity
        for j in range(count):
            severity = rule.escalation[j].severity
            steps.append(escalation_step(int(at[k, j]), severity, previous))
            previous = severity
        out.append(steps)
    return out


# -------------------------------------------------------------------- output


def _frame(rule: AlertRule, alerts: list[dict[str, Any]]) -> pd.DataFrame:
    """The result frame of :data:`BACKTEST_COLUMNS`, in occur order."""
    severities = [
        a.get("severity")
        or (rule.escalation[len(a["escalations"]) - 1].severity if a["escalations"] else None)
        or rule.severity
        for a in alerts
    ]
    frame = pd.DataFrame(
        {
            "rule_id": pd.Series([rule.rule_id] * len(alerts), dtype=object),
            "product_key": pd.Series([a["product_key"] for a in alerts], dtype=object),
            "device_key": pd.Series([a["device_key"] for a in alerts], dtype=object),
            "model_id": pd.Series([rule.model_id] * len(alerts), dtype=object),
            "point_id": pd.Series([rule.measurepoint] * len(alerts), dtype=object),
            "value": pd.Series([_plain(a["value"]) for a in alerts], dtype=object),
            "occur_time": _utc([a["occur_ms"] for a in alerts]),
            "recover_time": _utc([a["recover_ms"] for a in alerts]),
            "severity_id": pd.Series([s.severity_id for s in severities], dtype=object),
            "severity": pd.Series([s.name for s in severities], dtype=object),
            "severity_level": pd.Series([s.level for s in severities], dtype="int64"),
            "event_type": pd.Series(
                [1 if a["recover_ms"] is None else 0 for a in alerts], dtype="int64"
            ),
            "flapping": pd.Series([bool(a["flapping"]) for a in alerts], dtype=bool),
            "escalations": pd.Series([a["escalations"] for a in alerts], dtype=object),
            "explain": pd.Series([_plain_explain(a["explain"]) for a in alerts], dtype=object),
        },
        columns=list(BACKTEST_COLUMNS),
    )
    order = np.lexsort(
        (
            frame["device_key"].to_numpy(dtype=str),
            frame["product_key"].to_numpy(dtype=str),
            frame["occur_time"].to_numpy(),
        )
    )
    return frame.iloc[order].reset_index(drop=True)


def _utc(ms: list[int | None]) -> pd.Series[Any]:
    times = pd.to_datetime(pd.array(ms, dtype="Int64"), unit="ms", utc=True)
    return pd.Series(times, dtype="datetime64[ms, UTC]")


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, a null (NaN, ``pd.NA``) as None: what
    the records give back for the point's value."""
    if type(value) is float:  # the common case first
        return None if math.isnan(value) else value
    if value is None or value is pd.NA:
        return None
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | dict | list):
        return _plain(item())
    return value


def _plain_explain(explain: dict[str, Any]) -> dict[str, Any]:
    for key in ("started", "confirmed", "ended"):
        sample = explain[key]
        if sample is not None:
            sample["value"] = _plain(sample["value"])
    return explain
