"""``dry_run``: what each rule would do with each message, without doing it.

Messages are tap events (``PointStored``, ``EventPosted``, ``AttributesChanged``,
``PresenceChanged``), dicts, or a DataFrame in the shape of ``store.query_points`` (its rows
grouped into one message per device and time, as a post). A dict has ``product_key``,
``device_key``, optionally ``time`` (anything ``pd.Timestamp`` reads; naive is UTC) and
``kind`` (default ``"measurepoint"``), and either ``values`` (a mapping) or ``point_id`` and
``value``; for an event, ``event_id``. Points given one per event or per dict are not grouped:
give the whole post as ``values`` when a condition names several points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from ..errors import EnosLabError, InvalidArgument
from ..tap import AttributesChanged, EventPosted, PointStored, PresenceChanged
from ._engine import DeviceInfo, RuleEngine
from ._rule import Call, MessageKind, Republish, Rule, Store
from ._ruleset import evaluate_rule

__all__ = ["DRY_RUN_COLUMNS", "dry_run"]

DRY_RUN_COLUMNS = (
    "message",
    "rule",
    "kind",
    "product_key",
    "device_key",
    "time",
    "ids",
    "condition",
    "skipped",
    "actions",
    "stored",
    "derived",
)
"""Columns of :func:`dry_run`: the message's position, the rule, the message's kind, keys and
time (tz-aware UTC), ``ids`` (the points, event or attributes the rule selected), ``condition``
(True, False, or None when skipped), ``skipped`` (why, or ""), ``actions`` (what would run:
``store``, ``republish <topic>``, ``call <function>``; empty unless the condition holds),
``stored`` (whether the points would be stored by this rule) and ``derived`` (the transform's
values)."""

_Message = tuple[MessageKind, str, str, pd.Timestamp, dict[str, Any], tuple[str, ...]]
_NAT = pd.Timestamp("NaT")


def _timestamp(value: Any) -> pd.Timestamp:
    if value is None:
        return _NAT
    stamp: Any = pd.Timestamp(value)
    if pd.isna(stamp):
        return _NAT
    result: pd.Timestamp = (
        stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    )
    return result


def _from_frame(frame: pd.DataFrame) -> list[_Message]:
    missing = {"product_key", "device_key", "point_id", "value"} - set(frame.columns)
    if missing:
        raise InvalidArgument(
            f"dry_run: the DataFrame lacks column {sorted(missing)[0]!r} (use the shape of "
            "store.query_points: time, product_key, device_key, point_id, value)"
        )
    times = frame["time"] if "time" in frame.columns else pd.Series([None] * len(frame))
    messages: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for pk, dk, at, point_id, value in zip(
        frame["product_key"].tolist(),
        frame["device_key"].tolist(),
        times.tolist(),
        frame["point_id"].tolist(),
        frame["value"].tolist(),
        strict=True,
    ):
        null = isinstance(value, float) and math.isnan(value)
        messages.setdefault((str(pk), str(dk), at), {})[str(point_id)] = None if null else value
    return [
        (MessageKind.MEASUREPOINT, pk, dk, _timestamp(at), values, tuple(values))
        for (pk, dk, at), values in messages.items()
    ]


def _from_item(item: Any, index: int) -> _Message:
    if isinstance(item, PointStored):
        return (MessageKind.MEASUREPOINT, item.product_key, item.device_key,
                _timestamp(item.time), {item.point_id: item.value}, (item.point_id,))  # fmt: skip
    if isinstance(item, EventPosted):
        return (MessageKind.EVENT, item.product_key, item.device_key, _timestamp(item.time),
                dict(item.outputs), (item.event_id,))  # fmt: skip
    if isinstance(item, AttributesChanged):
        return (MessageKind.ATTRIBUTE, item.product_key, item.device_key, _timestamp(item.time),
                dict(item.values), tuple(item.values))  # fmt: skip
    if isinstance(item, PresenceChanged):
        values = {"online": item.online, "reason": item.reason}
        return (MessageKind.PRESENCE, item.product_key, item.device_key, _timestamp(item.time),
                values, ("presence",))  # fmt: skip
    if not isinstance(item, Mapping):
        raise InvalidArgument(
            f"dry_run: message {index} is a {type(item).__name__}; expected a tap event or a dict"
        )
    try:
        kind = MessageKind(item.get("kind", MessageKind.MEASUREPOINT))
        pk, dk = item["product_key"], item["device_key"]
    except (KeyError, ValueError) as exc:
        raise InvalidArgument(f"dry_run: message {index}: {exc} ({dict(item)!r})") from None
    given: Any = item.get("values")
    if given is None and "point_id" in item:
        given = {item["point_id"]: item.get("value")}
    if not isinstance(given, Mapping):
        raise InvalidArgument(f"dry_run: message {index} has no values mapping: {dict(item)!r}")
    values = dict(given)
    ids: tuple[str, ...] = tuple(values)
    if kind is MessageKind.EVENT:
        ids = (str(item.get("event_id", "")),)
    elif kind is MessageKind.PRESENCE:
        ids = ("presence",)
    return (kind, str(pk), str(dk), _timestamp(item.get("time")), values, ids)


def _describe(action: Any) -> str:
    if isinstance(action, Store):
        return "store derived" if action.derived_only else "store"
    if isinstance(action, Republish):
        return f"republish {action.topic}"
    assert isinstance(action, Call)
    return f"call {action.name}"


def dry_run(
    rules: Iterable[Rule],
    messages: pd.DataFrame | Iterable[Any],
    *,
    model_of: Callable[[str], str | None] | None = None,
    device_info: Callable[[str, str], DeviceInfo] | None = None,
) -> pd.DataFrame:
    """What each rule would do with each message (see the module docstring); nothing runs.

    Returns a DataFrame with :data:`DRY_RUN_COLUMNS`, one row per (message, rule) whose
    selectors take the message. ``model_of`` and ``device_info`` (attributes, tags) are the
    lookups model and tag selectors and attribute conditions need (the lab passes its
    registry's).
    """
    engine = RuleEngine(rules, model_of=model_of, device_info=device_info)
    if isinstance(messages, pd.DataFrame):
        parsed = _from_frame(messages)
    elif isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise InvalidArgument(
            f"dry_run: messages must be a DataFrame or a list of events or dicts, got "
            f"{type(messages).__name__}"
        )
    else:
        parsed = [_from_item(item, i) for i, item in enumerate(messages)]
    rows: list[tuple[Any, ...]] = []
    for index, (kind, pk, dk, at, values, ids) in enumerate(parsed):
        for rule in engine.rules:
            if rule.kind is not kind or not engine.selects(rule, pk, dk):
                continue
            chosen = ids
            if rule.points and kind is not MessageKind.PRESENCE:
                chosen = tuple(i for i in ids if i in rule.points)
            if not chosen:
                continue
            skipped = ""
            condition: bool | None
            try:
                holds, derived = evaluate_rule(rule, values, engine.attributes_of(pk, dk))
                condition = holds
            except EnosLabError as exc:
                condition, derived, skipped = None, {}, f"{type(exc).__name__}: {exc}"
            actions = [_describe(a) for a in rule.actions] if condition else []
            stored = bool(condition) and any(
                isinstance(a, Store) and not a.derived_only for a in rule.actions
            )
            row = (index, rule.name, kind.value, pk, dk, at, list(chosen), condition, skipped,
                   actions, stored, derived)  # fmt: skip
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(DRY_RUN_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["condition"] = frame["condition"].astype(object)
    return frame
