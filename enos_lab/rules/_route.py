"""Routing before storage for the messages of a product that a batch decided as a whole.

When every storing rule of a product has decided every message of the batch
(:attr:`~enos_lab.rules._batch.Decided.all_decided`), the rule engine keeps rows and derives
points per rule and per point over all the messages at once instead of message by message:
the same rows and counters, in the same order per device and point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from ._batch import Decided
from ._rule import Rule
from ._ruleset import RuleStats

__all__ = ["Candidates", "route_whole"]


@dataclass(slots=True)
class Candidates:
    """The rules a (product, point) row meets before storage."""

    store_all: str | None  # the first rule that stores every such row unconditionally
    rules: tuple[Rule, ...] = ()  # storing rules to evaluate per message
    count: int = 0  # rows stored by ``store_all`` not yet added to its counters
    evaluated: bool = False  # the product has rules evaluated per message (any point)


def route_whole(  # noqa: PLR0917 - the engine's parts it works on
    pk: str,
    rules: tuple[Rule, ...],
    found: Decided,
    messages: list[tuple[dict[str, Any], list[Any], Any]],
    kept: list[Any],
    derived: list[Any],
    *,
    stats: Mapping[str, RuleStats],
    candidates: Callable[[tuple[str, str]], Candidates],
    selected: Callable[[Rule, str, str], bool],
) -> None:
    """Route the ``messages`` of product ``pk`` (values, the rows waiting for a rule, the
    first row), decided as a whole for its storing ``rules`` (``found``): append the kept rows
    to ``kept`` and the derived rows to ``derived``, and count them in ``stats``;
    ``candidates((pk, point_id))`` gives a point's candidates, ``selected(rule, pk, dk)``
    whether a rule's device and tag selectors take a device."""
    frame = found.frame
    assert frame is not None
    stores: dict[str, npt.NDArray[np.bool_]] = {}
    for rule in rules:
        outcome = found.rules[rule.name]
        matched = outcome.held
        if rule.points:
            matched = matched & frame.any_present(rule.points)
        if rule.devices or rule.tags:
            matched = matched & frame.device_mask(partial(selected, rule, pk))
        hits = np.flatnonzero(matched).tolist()
        if not hits:
            continue
        counters = stats[rule.name]
        counters.matched += len(hits)
        before = len(derived)
        for derived_id, cells in outcome.derived:
            for i in hits:
                value = cells[i]
                if value is not None:
                    _, dk, _, at, _, _, resume = messages[i][2]
                    derived.append((pk, dk, derived_id, at, value, None, resume))
        counters.derived += len(derived) - before
        counters.stored += len(derived) - before
        if rule.keeps_points:
            stores[rule.name] = matched
    by_point: dict[str, tuple[list[int], list[Any]]] = {}
    for i, (_, waiting, _) in enumerate(messages):
        for row in waiting:
            entry = by_point.get(row[2])
            if entry is None:
                entry = by_point[row[2]] = ([], [])
            entry[0].append(i)
            entry[1].append(row)
    for point_id, (index, rows) in by_point.items():
        at = np.asarray(index, dtype=np.intp)
        done = np.zeros(len(rows), dtype=np.bool_)
        for rule in candidates((pk, point_id)).rules:
            chosen = stores.get(rule.name)
            if chosen is not None:
                hit = chosen[at] & ~done
                stats[rule.name].stored += int(hit.sum())
                done |= hit
        kept.extend(rows[j] for j in np.flatnonzero(done).tolist())
