"""The rule engine: rules applied to what the devices send.

Theory of operation
-------------------
Two places, one set of rules.

- **Before storage** (measurepoints only): :meth:`RuleEngine.route` is the IoT hub services'
  point router (:attr:`~enos_lab.iothub.IotHub.point_router`). It gets the validated rows of a
  batch and returns the rows to store: those a rule with a :class:`Store` action matched, plus
  the derived points of those rules' transforms. A row no rule stores is neither stored nor
  reported on the tap (the device is still answered 200). When some enabled rule stores every
  measurepoint and no storing rule derives points (the default rule set), no router is needed:
  :attr:`RuleEngine.router` is None and ingest pays nothing.
- **From the tap** (every other action): :meth:`RuleEngine.on_rows` takes the stored points
  as rows, one committed batch at a time (``tap.add_point_rows``; while a measurepoint rule
  acts on the tap: :attr:`RuleEngine.wants_points`), and :meth:`RuleEngine.on_event` is a tap
  callback on ``EventPosted``, ``AttributesChanged``, ``TagsChanged`` and ``PresenceChanged``
  - on those its rules need (:attr:`RuleEngine.tap_kinds`; none for the default rule set, so
  that the tap builds no event for it). It sees what was kept: the alert engine and stream
  computing read the stored data too (tap consumers), so a point no rule stores is not
  alerted on either. Stored points are grouped by message (device and time), so that a
  condition sees every stored point of the post (derived points included).

**Batches.** Before storage and on the tap, a product's messages of one batch that meet rules
with a condition or a transform are evaluated together from :attr:`RuleEngine.vector_min`
of them (:data:`~enos_lab.rules._batch.BATCH_MIN`): each rule once over all of them, a
threshold as one numpy comparison, other expressions over one frame
(:mod:`enos_lab.rules._batch`). A message the batch cannot decide (a point or attribute it
lacks, a value of the wrong kind) is evaluated alone, as are the messages of smaller
batches; the results are those of message-by-message evaluation (property-tested).

A message meets only its candidates: rules are indexed per (product key, point) for routing
and per (kind, product key, id) on the tap, each list built on first use from the product's
model (``model_of``, cached per product) and kept in a bounded cache cleared when the rules
change. A row whose candidates all store it unconditionally costs one dict lookup; a message
with rules to evaluate costs each of its rules once (not once per point). Before storage a
message is the rows of one device at one time in the batch.

Cost (measured; see ``benchmarks/README.md``): evaluating a condition message by message is
~1.5-2 us, so a rule that meets every post costs ingest a few microseconds per post; over a
batch each expression costs ~10-50 us however many messages it holds, and the bookkeeping
per row stays (``rules_100.yaml`` on 100 posts of 3 points: route 6.1 -> 2.9 us per post,
the tap's rules ~13 -> 0.7 us per post). Rules of other products and points cost nothing.
Registry reads (a product's model, a device's attributes and tags) happen on the loop once
per product and device, then come from the caches.

Conditions and transforms see the message's values (the points of one post, an event's
outputs, the changed attributes, ``online``/``reason``) and the device's attributes (for
``${attr:..}`` and names the message lacks), read through ``device_info`` once per device and
cached (bounded), the entry dropped on ``AttributesChanged``/``TagsChanged`` and all of them
when the registry's revision moves (a change made on the registry directly). A value the
expression cannot use (:class:`~enos_lab.errors.MissingValue`,
:class:`~enos_lab.errors.EvaluationError`) is a skip counted for that rule and device and
logged once; a failing :class:`Call` is counted and logged once per rule. Nothing leaves the
engine as an exception, and one device's data never stops another's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from types import MappingProxyType
from typing import Any, TypeAlias

from ..clock import from_epoch_ms, to_epoch_ms
from ..errors import InvalidArgument
from ..model import ModelCatalog
from ..tap import (
    AttributesChanged,
    EventPosted,
    PointRowLike,
    PointStored,
    PresenceChanged,
    TagsChanged,
)
from ._batch import BATCH_MIN, BatchDecider, Decided, Outcome, none_can_hold
from ._route import Candidates, route_whole
from ._rule import DEFAULT_RULES, Call, MessageKind, Republish, Rule, RuleMatch
from ._ruleset import RuleStats, check_rules, derive, evaluate_rule

__all__ = ["RULE_EVENT_KINDS", "DeviceInfo", "RuleEngine", "RuleStats"]

log = logging.getLogger(__name__)

MAX_CACHE = 10_000
"""Bound on each cache of the engine (candidates, products, devices, logged keys). [-]"""

RULE_EVENT_KINDS = (PointStored, EventPosted, AttributesChanged, TagsChanged, PresenceChanged)
"""The tap events :meth:`RuleEngine.on_event` takes."""

DeviceInfo: TypeAlias = tuple[Mapping[str, Any], Mapping[str, str]]
"""A device's (attributes, tags), as ``device_info`` gives them."""
_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})
_NO_INFO: DeviceInfo = (_NO_ATTRIBUTES, MappingProxyType({}))


class RuleEngine:
    """Rules applied before storage (:meth:`route`) and on the tap (:meth:`on_event`).

    ``rules``: the rule set (default :data:`DEFAULT_RULES`); ``models`` checks rules naming
    thing models; ``model_of(product_key)`` gives a product's model id (None: none);
    ``device_info(product_key, device_key)`` its attributes and tags; ``publish(topic, payload,
    qos)`` sends a :class:`Republish`; ``revision()`` (e.g. the registry's
    :attr:`~enos_lab.registry.Registry.revision`) moves when what ``model_of`` and
    ``device_info`` give may have changed: the cached products and devices are then read again,
    checked once per batch and per event. Use it on the lab's loop; :meth:`set_rules` from
    there too (the lab's facade does).
    """

    def __init__(
        self,
        rules: Iterable[Rule] = DEFAULT_RULES,
        *,
        models: ModelCatalog | None = None,
        model_of: Callable[[str], str | None] | None = None,
        device_info: Callable[[str, str], DeviceInfo] | None = None,
        publish: Callable[[str, bytes, int], object] | None = None,
        revision: Callable[[], int] | None = None,
    ) -> None:
        self._models = models
        self._revision_of = revision
        self._revision = revision() if revision is not None else 0
        self._model_of = model_of
        self._device_info = device_info
        self._publish = publish
        self._rules: tuple[Rule, ...] = ()
        self._stats: dict[str, RuleStats] = {}
        self._route_cache: dict[tuple[str, str], Candidates] = {}
        self._product_rules: dict[str, tuple[Rule, ...]] = {}
        self._tap_cache: dict[tuple[MessageKind, str, str], tuple[Rule, ...]] = {}
        self._products: dict[str, str | None] = {}
        self._devices: dict[tuple[str, str], DeviceInfo] = {}
        self._logged: set[tuple[str, str, str]] = set()
        self._decider = BatchDecider(
            models, self._model, lambda pk, dk: self._info(pk, dk)[0], MAX_CACHE
        )
        self.vector_min: int | None = BATCH_MIN
        """Messages of one product in a batch from which :meth:`route` evaluates each rule
        over all of them at once (:mod:`enos_lab.rules._batch`; the same results); None:
        message by message always. [messages]"""
        self._pending: list[PointRowLike] = []
        self._flush_scheduled = False
        self._closed = False
        self.router: Callable[[list[Any]], list[Any]] | None = None
        """:meth:`route` when the rules need it before storage, else None (store all)."""
        self.set_rules(rules)

    def __repr__(self) -> str:
        return f"RuleEngine(rules={len(self._rules)}, routing={self.router is not None})"

    # ---------------------------------------------------------------- rules

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rule set, in order."""
        return self._rules

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rule set (checked first: :func:`check_rules`; on error nothing changes).
        Counters of rules kept by name carry over."""
        checked = tuple(check_rules(rules, self._models))
        self._rules = checked
        self._stats = {rule.name: self._stats.get(rule.name) or RuleStats() for rule in checked}
        self._fold_counts()
        self._route_cache.clear()
        self._product_rules.clear()
        self._tap_cache.clear()
        self._products.clear()
        self._decider.clear()
        measure = [r for r in checked if r.enabled and r.kind is MessageKind.MEASUREPOINT]
        store_all = any(r.stores_everything for r in measure)
        derives = any(r.stores and r.transform for r in measure)
        self.router = None if store_all and not derives else self.route

    @property
    def tap_kinds(self) -> tuple[type, ...]:
        """The tap events :meth:`on_event` needs for the rules in force, so that no event is
        built for nothing: attribute and tag changes while a rule may read device data (they
        refresh the cache), posted events and presence changes while an enabled rule of their
        kind acts on the tap. Empty for the default rule set. Stored points come as rows
        (:attr:`wants_points`, :meth:`on_rows`)."""
        kinds: list[type] = []
        enabled = [rule for rule in self._rules if rule.enabled]
        if any(rule.tags or rule.condition or rule.transform for rule in enabled) or any(
            rule.kind is MessageKind.ATTRIBUTE and rule.acts_on_tap for rule in enabled
        ):
            kinds += [AttributesChanged, TagsChanged]
        acting = {rule.kind for rule in enabled if rule.acts_on_tap}
        for kind, event in (
            (MessageKind.EVENT, EventPosted),
            (MessageKind.PRESENCE, PresenceChanged),
        ):
            if kind in acting:
                kinds.append(event)
        return tuple(kinds)

    @property
    def wants_points(self) -> bool:
        """Whether an enabled measurepoint rule acts on the tap: then :meth:`on_rows` takes
        the stored points (``tap.add_point_rows(engine.on_rows)``)."""
        return any(
            rule.kind is MessageKind.MEASUREPOINT and rule.acts_on_tap for rule in self._rules
        )

    def stats(self) -> dict[str, RuleStats]:
        """Each rule's counters by name (a copy)."""
        self._fold_counts()
        return {name: RuleStats(**_fields(s)) for name, s in self._stats.items()}

    def _fold_counts(self) -> None:
        """Add the rows counted in the routing cache to their rules' counters."""
        for candidates in self._route_cache.values():
            if candidates.count and candidates.store_all in self._stats:
                self._stats[candidates.store_all].stored += candidates.count
            candidates.count = 0

    # ---------------------------------------------------------------- lookups

    def _model(self, product_key: str) -> str | None:
        products = self._products
        if product_key in products:
            return products[product_key]
        model_id = None
        if self._model_of is not None:
            try:
                model_id = self._model_of(product_key)
            except Exception:  # an unknown product (or a failing lookup): no model
                model_id = None
        if len(products) >= MAX_CACHE:
            products.clear()
        products[product_key] = model_id
        return model_id

    def _info(self, product_key: str, device_key: str) -> DeviceInfo:
        key = (product_key, device_key)
        info = self._devices.get(key)
        if info is None:
            info = _NO_INFO
            if self._device_info is not None:
                try:
                    info = self._device_info(product_key, device_key)
                except Exception:  # an unknown device (or a failing lookup): none
                    info = _NO_INFO
            if len(self._devices) >= MAX_CACHE:
                self._devices.pop(next(iter(self._devices)))
            self._devices[key] = info
        return info

    def _check_revision(self) -> None:
        """Drop the cached products and devices if the registry moved since they were read."""
        if self._revision_of is not None:
            revision = self._revision_of()
            if revision != self._revision:
                self._revision = revision
                self._products.clear()
                self._devices.clear()

    def forget_device(self, product_key: str, device_key: str) -> None:
        """Drop the cached attributes and tags of a device (read again when next needed)."""
        self._devices.pop((product_key, device_key), None)

    def _selects(self, rule: Rule, product_key: str, model_id: str | None) -> bool:
        if not rule.enabled:
            return False
        if rule.products and product_key not in rule.products:
            return False
        return not rule.models or model_id in rule.models

    def selects(self, rule: Rule, product_key: str, device_key: str) -> bool:
        """Whether ``rule``'s product, model, device and tag selectors take this device (its
        kind and points aside)."""
        return self._selects(rule, product_key, self._model(product_key)) and (
            self._device_selected(rule, product_key, device_key)
        )

    def attributes_of(self, product_key: str, device_key: str) -> Mapping[str, Any]:
        """The device's attributes, as conditions see them (cached)."""
        return self._info(product_key, device_key)[0]

    def _device_selected(self, rule: Rule, product_key: str, device_key: str) -> bool:
        if rule.devices and device_key not in rule.device_set:
            return False
        if rule.tags:
            tags = self._info(product_key, device_key)[1]
            return all(tags.get(k) == v for k, v in rule.tags.items())
        return True

    # ---------------------------------------------------------------- before storage

    def _route_candidates(self, key: tuple[str, str]) -> Candidates:
        product_key, point_id = key
        model_id = self._model(product_key)
        store_all: str | None = None
        rules: list[Rule] = []
        for rule in self._rules:
            if rule.kind is not MessageKind.MEASUREPOINT or not rule.stores:
                continue
            if not self._selects(rule, product_key, model_id):
                continue
            if rule.points and point_id not in rule.point_set:
                continue
            plain = not (rule.devices or rule.tags or rule.condition or rule.transform)
            if plain and rule.keeps_points:
                store_all = store_all or rule.name
            else:
                rules.append(rule)
        candidates = Candidates(
            store_all, tuple(rules), evaluated=bool(self._storing_rules(product_key))
        )
        if len(self._route_cache) >= MAX_CACHE:
            self._fold_counts()
            self._route_cache.clear()
        self._route_cache[key] = candidates
        return candidates

    def route(self, rows: list[Any]) -> list[Any]:
        """The rows to store out of a batch's validated rows (``PointRow`` or its 7-tuple):
        those a storing rule matched, then the derived points (see the module docstring);
        in the order of the batch per device and point."""
        self._check_revision()
        cache = self._route_cache
        kept: list[Any] = []
        keep = kept.append
        # the messages of products with rules evaluated per message: [values, rows that wait
        # for a rule, whether a row of it has a rule to evaluate, its first row]
        messages: dict[tuple[str, str, int], list[Any]] = {}
        for row in rows:
            key = (row[0], row[2])
            candidates = cache.get(key) or self._route_candidates(key)
            if candidates.evaluated:
                msg = (row[0], row[1], row[3])
                message = messages.get(msg)
                if message is None:
                    message = messages[msg] = [{}, [], False, row]
                message[0][row[2]] = row[4]
                if candidates.rules:
                    message[2] = True
                    if candidates.store_all is None:
                        message[1].append(row)
                        continue
            if candidates.store_all:
                candidates.count += 1
                keep(row)
        if messages:
            self._route_slow(messages, kept)
        return kept

    def _route_slow(self, batch: dict[tuple[str, str, int], list[Any]], kept: list[Any]) -> None:
        """Evaluate the rules of the messages that need it: keep the rows a rule stores (those
        that wait for a rule; the others are kept already) and the derived rows."""
        messages = {msg: (m[0], m[1], m[3]) for msg, m in batch.items() if m[2]}
        if not messages:
            return
        outcomes = self._decide(
            len(messages),
            ((pk, dk, m[0]) for (pk, dk, _), m in messages.items()),
            self._storing_rules,
        )
        cache = self._route_cache
        stats = self._stats
        derived: list[Any] = []
        whole: dict[str, list[tuple[dict[str, Any], list[Any], Any]]] = {
            pk: [] for pk, found in outcomes.items() if found.all_decided
        }
        for (pk, _, _), message in messages.items():
            values, waiting, first = message
            group = whole.get(pk) if whole else None
            if group is not None:  # decided as a whole, below
                group.append(message)
                continue
            stores: set[str] = set()
            found = outcomes.get(pk)
            for rule in self._storing_rules(pk):
                if rule.points and rule.point_set.isdisjoint(values):
                    continue
                outcome = None if found is None else found.rules.get(rule.name)
                if outcome is None or not outcome.decided[found.index]:  # type: ignore[union-attr]
                    matched = self._route_message(rule, first, values, derived)
                else:
                    matched = self._route_decided(rule, first, outcome, found.index, derived)  # type: ignore[union-attr]
                if matched and rule.keeps_points:
                    stores.add(rule.name)
            if found is not None:
                found.index += 1
            for row in waiting:
                candidates = cache.get((pk, row[2])) or self._route_candidates((pk, row[2]))
                for rule in candidates.rules:
                    if rule.name in stores:
                        stats[rule.name].stored += 1
                        kept.append(row)
                        break
        for pk, group in whole.items():
            route_whole(
                pk, self._storing_rules(pk), outcomes[pk], group, kept, derived,
                stats=self._stats,
                candidates=lambda key: cache.get(key) or self._route_candidates(key),
                selected=self._device_selected,
            )  # fmt: skip
        kept.extend(derived)

    def _route_decided(
        self, rule: Rule, row: Any, outcome: Outcome, i: int, out: list[Any]
    ) -> bool:
        """:meth:`_route_message` for a message the batch decided (its index ``i``)."""
        pk, dk, _, at, _, _, resume = row
        if (rule.devices or rule.tags) and not self._device_selected(rule, pk, dk):
            return False
        if not outcome.held[i]:
            return False
        stats = self._stats[rule.name]
        stats.matched += 1
        for derived_id, cells in outcome.derived:
            value = cells[i]
            if value is not None:
                stats.derived += 1
                stats.stored += 1
                out.append((pk, dk, derived_id, at, value, None, resume))
        return True

    def _decide(
        self,
        count: int,
        messages: Iterable[tuple[str, str, dict[str, Any]]],
        rules_of: Callable[[str], tuple[Rule, ...]],
    ) -> dict[str, Decided]:
        """The outcomes of a batch's ``count`` messages per product (none when it is small)."""
        least = self.vector_min
        if not least or count < least:
            return {}
        return self._decider.decide(messages, least, rules_of)

    def _storing_rules(self, product_key: str) -> tuple[Rule, ...]:
        return self._product_rules.get(product_key) or self._product_candidates(product_key)

    def _product_candidates(self, product_key: str) -> tuple[Rule, ...]:
        """The storing rules of a product that are evaluated per message, any point."""
        model_id = self._model(product_key)
        rules = tuple(
            rule
            for rule in self._rules
            if rule.kind is MessageKind.MEASUREPOINT
            and rule.stores
            and (rule.devices or rule.tags or rule.condition or rule.transform)
            and self._selects(rule, product_key, model_id)
        )
        if len(self._product_rules) >= MAX_CACHE:
            self._product_rules.clear()
        self._product_rules[product_key] = rules
        return rules

    def _route_message(self, rule: Rule, row: Any, values: dict[str, Any], out: list[Any]) -> bool:
        """Whether ``rule`` matches the message of ``row`` (its ``values``); appends the rule's
        derived rows to ``out``."""
        pk, dk, _, at, _, _, resume = row
        if (rule.devices or rule.tags) and not self._device_selected(rule, pk, dk):
            return False
        condition = rule.compiled_condition
        try:
            if condition is not None:
                if condition.attributes or not condition.points.issubset(values):
                    attrs = self._info(pk, dk)[0]
                else:
                    attrs = _NO_ATTRIBUTES
                if condition.evaluate(values, attrs) is not True:
                    return False
            derived = (
                derive(rule, values, lambda: self._info(pk, dk)[0])
                if rule.compiled_transform
                else None
            )
        except Exception as exc:  # one device's values harm no other device
            self._skip(rule, pk, dk, exc)
            return False
        stats = self._stats[rule.name]
        stats.matched += 1
        if derived:
            stats.derived += len(derived)
            stats.stored += len(derived)
            for derived_id, value in derived.items():
                out.append((pk, dk, derived_id, at, value, None, resume))
        return True

    def _skip(self, rule: Rule, pk: str, dk: str, exc: Exception) -> None:
        self._stats[rule.name].skipped += 1
        key = (rule.name, pk, dk)
        if key not in self._logged and len(self._logged) < MAX_CACHE:
            self._logged.add(key)
            log.warning(
                "rule %r on %s/%s: skipped (%s: %s); further skips are only counted",
                rule.name, pk, dk, type(exc).__name__, exc,
            )  # fmt: skip

    # ---------------------------------------------------------------- on the tap

    def on_event(self, event: object) -> None:
        """The tap callback (on the lab's loop): run the rules' non-store actions."""
        if self._closed:
            return
        self._check_revision()
        if type(event) is PointStored:  # points reported one by one: gathered as rows
            self._pending.append((event.product_key, event.device_key, event.point_id,
                                  to_epoch_ms(event.time), event.value, event.quality,
                                  event.resume))  # fmt: skip
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_points)
        elif isinstance(event, EventPosted):
            rules = self._tap_rules(MessageKind.EVENT, event.product_key, event.event_id)
            self._run(rules, MessageKind.EVENT, event.product_key, event.device_key, event.time,
                      dict(event.outputs), (event.event_id,))  # fmt: skip
        elif isinstance(event, (AttributesChanged, TagsChanged)):
            self.forget_device(event.product_key, event.device_key)
            if isinstance(event, AttributesChanged) and event.values:
                rules = self._tap_rules(MessageKind.ATTRIBUTE, event.product_key, "")
                self._run(rules, MessageKind.ATTRIBUTE, event.product_key, event.device_key,
                          event.time, dict(event.values), tuple(event.values))  # fmt: skip
        elif isinstance(event, PresenceChanged):
            rules = self._tap_rules(MessageKind.PRESENCE, event.product_key, "")
            values = {"online": event.online, "reason": event.reason}
            self._run(rules, MessageKind.PRESENCE, event.product_key, event.device_key,
                      event.time, values, ("presence",))  # fmt: skip

    def _tap_rules(self, kind: MessageKind, product_key: str, item: str) -> tuple[Rule, ...]:
        key = (kind, product_key, item)
        rules = self._tap_cache.get(key)
        if rules is None:
            model_id = self._model(product_key)
            rules = tuple(
                rule
                for rule in self._rules
                if rule.kind is kind
                and rule.acts_on_tap
                and self._selects(rule, product_key, model_id)
                and (not item or not rule.points or item in rule.points)
            )
            if len(self._tap_cache) >= MAX_CACHE:
                self._tap_cache.clear()
            self._tap_cache[key] = rules
        return rules

    def _flush_points(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        self.on_rows(pending)

    def on_rows(self, rows: Sequence[PointRowLike]) -> None:
        """The stored points of one committed batch (``tap.add_point_rows(engine.on_rows)``,
        on the lab's loop): run the non-store actions of the measurepoint rules. The points
        are grouped by message (device and time), so that a condition sees every stored point
        of the post (derived points included); a product's messages are evaluated together
        from :attr:`vector_min` of them (:mod:`enos_lab.rules._batch`)."""
        if self._closed:
            return
        self._check_revision()
        least = self.vector_min
        if least and len(rows) >= least:  # products whose rules cannot match: passed over
            rows = self._can_match(rows, least)
        messages: dict[tuple[str, str, int], dict[str, Any]] = {}
        idle: set[str] = set()
        for pk, dk, point_id, at_ms, value, _, _ in rows:
            key = (pk, dk, at_ms)
            values = messages.get(key)
            if values is None:
                if pk in idle:
                    continue
                if not self._tap_rules(MessageKind.MEASUREPOINT, pk, ""):
                    idle.add(pk)
                    continue
                values = messages[key] = {}
            values[point_id] = value
        if not messages:
            return
        outcomes = self._decide(
            len(messages),
            ((pk, dk, v) for (pk, dk, _), v in messages.items()),
            self._tap_point_rules,
        )
        for (pk, dk, at_ms), values in messages.items():
            found = outcomes.get(pk)
            if found is not None and found.none_held:
                continue  # every rule of the product decided, none held: nothing to do
            rules = self._message_rules(pk, values)
            self._run(rules, MessageKind.MEASUREPOINT, pk, dk, at_ms, values, None, found)
            if found is not None:
                found.index += 1

    def _can_match(self, rows: Sequence[PointRowLike], least: int) -> Sequence[PointRowLike]:
        """``rows`` without those of products with at least ``least`` rows whose tap rules
        cannot match any of them (:func:`~enos_lab.rules._batch.none_can_hold`)."""
        products: dict[str, list[PointRowLike]] = {}
        for row in rows:
            group = products.get(row[0])
            if group is None:
                group = products[row[0]] = []
            group.append(row)
        quiet = {
            pk
            for pk, group in products.items()
            if len(group) >= least
            and none_can_hold(
                self._tap_point_rules(pk), partial(self._decider.typed_rule, product_key=pk), group
            )
        }
        return [row for row in rows if row[0] not in quiet] if quiet else rows

    def _message_rules(self, product_key: str, values: dict[str, Any]) -> tuple[Rule, ...]:
        """The tap's measurepoint rules a message with these points meets (cached per product
        and point ids)."""
        key = (MessageKind.MEASUREPOINT, product_key, "\0" + "\0".join(values))
        rules = self._tap_cache.get(key)
        if rules is None:
            chosen: dict[str, Rule] = {}
            for point_id in values:
                for rule in self._tap_rules(MessageKind.MEASUREPOINT, product_key, point_id):
                    chosen[rule.name] = rule
            rules = tuple(chosen.values())
            if len(self._tap_cache) >= MAX_CACHE:
                self._tap_cache.clear()
            self._tap_cache[key] = rules
        return rules

    def _tap_point_rules(self, product_key: str) -> tuple[Rule, ...]:
        return self._tap_rules(MessageKind.MEASUREPOINT, product_key, "")

    def _run(  # noqa: PLR0917 - one message's parts
        self,
        rules: tuple[Rule, ...],
        kind: MessageKind,
        pk: str,
        dk: str,
        time: datetime | int,
        values: dict[str, Any],
        ids: tuple[str, ...] | None,
        decided: Decided | None = None,
    ) -> None:
        """Run ``rules`` on one message (``time``: a datetime or epoch ms; ``decided``: the
        outcomes of the batch of the message, if it was evaluated in one)."""
        for rule in rules:
            if not self._device_selected(rule, pk, dk):
                continue
            chosen = ids
            if chosen is None:  # measurepoints: the rule's points of the message
                chosen = tuple(p for p in values if not rule.points or p in rule.points)
            elif rule.points and kind is MessageKind.ATTRIBUTE:
                chosen = tuple(i for i in chosen if i in rule.points)
            if not chosen:
                continue
            outcome = None if decided is None else decided.rules.get(rule.name)
            if outcome is not None and outcome.decided[decided.index]:  # type: ignore[union-attr]
                i = decided.index  # type: ignore[union-attr]
                if not outcome.held[i]:
                    continue
                derived = {d: cells[i] for d, cells in outcome.derived if cells[i] is not None}
            else:
                try:
                    matched, derived = evaluate_rule(rule, values, lambda: self._info(pk, dk)[0])
                except Exception as exc:  # one device's values harm no other device
                    self._skip(rule, pk, dk, exc)
                    continue
                if not matched:
                    continue
            stats = self._stats[rule.name]
            stats.matched += 1
            at = from_epoch_ms(time) if isinstance(time, int) else time
            match = RuleMatch(rule.name, kind, pk, dk, at, chosen, values, derived)
            for action in rule.actions:
                if isinstance(action, Republish):
                    self._republish(rule, action, match, stats)
                elif isinstance(action, Call):
                    self._call(rule, action, match, stats)

    def _republish(self, rule: Rule, action: Republish, match: RuleMatch, stats: RuleStats) -> None:
        topic = (
            action.topic.replace("{productKey}", match.product_key)
            .replace("{deviceKey}", match.device_key)
            .replace("{kind}", match.kind.value)
            .replace("{id}", match.ids[0])
        )
        try:
            if self._publish is None:
                raise InvalidArgument("no hub to publish on")
            payload = json.dumps(match.to_json(), ensure_ascii=False, allow_nan=False)
            self._publish(topic, payload.encode(), action.qos)
            stats.republished += 1
        except Exception as exc:
            self._failed(rule, stats, f"publishing on {topic!r}", exc)

    def _call(self, rule: Rule, action: Call, match: RuleMatch, stats: RuleStats) -> None:
        stats.called += 1
        try:
            action.function(match)
        except Exception as exc:
            self._failed(rule, stats, f"calling {action.name}", exc)

    def _failed(self, rule: Rule, stats: RuleStats, what: str, exc: Exception) -> None:
        stats.errors += 1
        key = (rule.name, "\0action", what)
        if key not in self._logged and len(self._logged) < MAX_CACHE:
            self._logged.add(key)
            log.error(
                "rule %r: %s failed; further failures are only counted",
                rule.name, what, exc_info=exc,
            )  # fmt: skip

    def close(self) -> None:
        """Stop taking events (on the lab's loop, or after it stopped)."""
        self._closed = True
        self._pending.clear()


def _fields(stats: RuleStats) -> dict[str, int]:
    return {name: getattr(stats, name) for name in RuleStats.__dataclass_fields__}
