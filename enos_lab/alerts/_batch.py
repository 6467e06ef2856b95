"""The points of one batch that one group of rules looks at, evaluated together.

The alert engine takes the tap's points in batches (the points of one store commit) and
groups them by (product, measurepoint). :class:`PointGroup` is one such group: it computes,
once for all the rules of the group, the values as numbers, the resumed flags, the devices'
attributes per point and the columns of the vectorised evaluation, and
:meth:`PointGroup.anomalies` says for one rule's condition on which points it holds:

- a threshold (:attr:`~enos_lab.rules.Expression.threshold`): one numpy comparison;
- any other condition, over at least :data:`FRAME_MIN` points: the vectorised evaluation on
  numpy columns (:meth:`~enos_lab.rules.Expression.evaluate_arrays`);
- otherwise (too few points, a value of the wrong kind somewhere, ...): ``None``, and the
  engine evaluates the points one by one.

Points whose device lacks an attribute the condition needs are *undecided*: the engine
evaluates those one by one, which counts the skip as it always does. The results are the
ones the row-by-row evaluation gives (the engine's property tests compare them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import EnosLabError
from ..rules import Expression, Threshold
from ..tap import PointRowLike

__all__ = ["FRAME_MIN", "VECTOR_MIN", "PointGroup"]

VECTOR_MIN = 8
"""Points of one (product, measurepoint) in a batch from which threshold conditions are
evaluated with numpy (fewer: one by one, which costs less for so few)."""
FRAME_MIN = 16
"""Points from which other conditions are evaluated over numpy columns (their setup costs
about as much as evaluating this many points one by one)."""

Bools = npt.NDArray[np.bool_]
_MISSING = object()


class PointGroup:
    """The points of one (product, measurepoint) in one batch, in order, as the tap's
    point rows (:data:`~enos_lab.tap.PointRowLike`)."""

    __slots__ = ("_attributes", "_columns", "_devices", "_resumed", "_values", "events")

    def __init__(
        self,
        events: list[PointRowLike],
        attributes: Callable[[str, str], Mapping[str, Any]] | None,
    ) -> None:
        self.events = events
        self._attributes = attributes
        self._values: npt.NDArray[np.float64] | bool | None = False  # False: not computed
        self._resumed: Bools | None = None
        self._devices: tuple[npt.NDArray[np.object_], npt.NDArray[np.intp]] | None = None
        self._columns: dict[str, tuple[npt.NDArray[np.object_], Bools]] = {}

    def _columns_of(self) -> None:
        """The values (as doubles where all are numbers), resumed flags and device codes of
        the points, in one pass over them."""
        values: list[Any] = []
        resumed: list[bool] = []
        keys: list[str] = []
        numbers = True  # every value an int or a float (not a bool, None, text ...)
        for _, device_key, _, _, value, _, resume in self.events:
            if numbers and type(value) is not float and type(value) is not int:
                numbers = False
            values.append(value)
            resumed.append(resume)
            keys.append(device_key)
        self._resumed = np.asarray(resumed, dtype=np.bool_)
        self._values = None
        if numbers:
            with contextlib.suppress(OverflowError):  # an int beyond a double: one by one
                self._values = np.asarray(values, dtype=np.float64)
        codes, uniques = pd.factorize(np.asarray(keys, dtype=object))
        self._devices = (np.asarray(uniques, dtype=object), codes.astype(np.intp))

    @property
    def resumed(self) -> Bools:
        """Which points are resumed (historical)."""
        if self._resumed is None:
            self._columns_of()
        assert self._resumed is not None
        return self._resumed

    def _numbers(self) -> npt.NDArray[np.float64] | None:
        """The values as doubles, or None if one is not a number."""
        if self._values is False:
            self._columns_of()
        return self._values  # type: ignore[return-value]

    def codes(self) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.intp]]:
        """The group's device keys (one product per group), and for each point the index of
        its device among them."""
        if self._devices is None:
            self._columns_of()
        assert self._devices is not None
        return self._devices

    def _column(self, name: str) -> tuple[npt.NDArray[np.object_], Bools]:
        """The attribute ``name`` per device of :meth:`codes` (objects), and which devices
        lack it (computed once per group and attribute)."""
        cached = self._columns.get(name)
        if cached is not None:
            return cached
        devices = self.codes()[0]
        product_key = self.events[0][0]
        values = np.empty(len(devices), dtype=object)
        missing = np.zeros(len(devices), dtype=np.bool_)
        for i, device_key in enumerate(devices.tolist()):
            try:
                found = (
                    self._attributes(product_key, device_key)
                    if self._attributes is not None
                    else {}
                )
            except Exception:  # the engine evaluates its points one by one: a counted skip
                found = None
            value = _MISSING if found is None else found.get(name, _MISSING)
            if value is _MISSING:
                missing[i] = True
                value = None
            values[i] = value
        self._columns[name] = (values, missing)
        return values, missing

    def constant_masks(
        self, thresholds: list[Threshold]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]] | None:
        """Where each of ``thresholds`` (a point compared with a number) holds, as one row
        of a matrix per threshold, and whether it holds anywhere; None if a value is not a
        number. The comparisons of one operator run as one numpy operation."""
        values = self._numbers()
        if values is None:
            return None
        masks = np.zeros((len(thresholds), len(values)), dtype=np.bool_)
        known = np.isfinite(values)
        by_op: dict[str, list[int]] = {}
        for i, threshold in enumerate(thresholds):
            by_op.setdefault(threshold.op, []).append(i)
        for op, indexes in by_op.items():
            limits = np.array([thresholds[i].value for i in indexes], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                held = Threshold.UFUNCS[op](values[None, :], limits[:, None])
            held &= known[None, :] & np.isfinite(limits)[:, None]
            masks[indexes] = held
        return masks, np.asarray(masks.any(axis=1), dtype=np.bool_)

    def anomalies(self, condition: Expression, point_id: str) -> tuple[Bools, Bools | None] | None:
        """Where ``condition`` holds on the points, and which points are undecided (None:
        none), or None when they must be evaluated one by one."""
        threshold = condition.threshold
        if threshold is not None:
            values = self._numbers()
            if values is None:
                return None
            if threshold.attribute is None:
                return threshold.mask(values), None
            per_device, missing = self._column(threshold.attribute)
            numbers = np.fromiter(
                (float(c) if type(c) in (int, float) else np.nan for c in per_device),
                np.float64,
                len(per_device),
            )
            codes = self.codes()[1]
            limits = numbers.take(codes)
            unknown = (missing | np.isnan(numbers)).take(codes)  # not a number: one by one
            return threshold.mask(values, limits) & ~unknown, unknown
        if len(self.events) < FRAME_MIN:
            return None
        size = len(self.events)
        values = self._numbers()
        columns: dict[str, npt.NDArray[Any]] = {
            f"point:{point_id}": values
            if values is not None
            else np.array([row[4] for row in self.events], dtype=object)
        }
        undecided: Bools | None = None
        rows = self.codes()[1] if condition.attributes else None
        for name in condition.attributes:
            per_device, lacking = self._column(name)
            assert rows is not None
            doubles = _doubles(per_device, lacking)
            columns[f"attr:{name}"] = (per_device if doubles is None else doubles).take(rows)
            missing = lacking.take(rows)
            undecided = missing if undecided is None else undecided | missing
        try:
            held = np.asarray(condition.evaluate_arrays(columns, size), dtype=np.bool_)
        except EnosLabError:  # a value of the wrong kind somewhere: one by one
            return None
        if undecided is not None:
            held = held & ~undecided
        return held, undecided


def _doubles(values: npt.NDArray[np.object_], lacking: Bools) -> npt.NDArray[np.float64] | None:
    """``values`` as doubles (NaN where ``lacking``) if every present one is an int or a float
    (not a bool) that a double holds; else None (they go as objects)."""
    present = values[~lacking].tolist()
    if not all(type(v) is float or type(v) is int for v in present):
        return None
    try:
        return np.array(
            [np.nan if gone else float(v) for v, gone in zip(values, lacking, strict=True)],
            dtype=np.float64,
        )
    except OverflowError:
        return None
