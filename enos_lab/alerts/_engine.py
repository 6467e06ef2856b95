"""The alert engine: alert rules evaluated on the device-data tap, alerts kept in records.

Theory of operation. :class:`AlertEngine` is a tap callback (:meth:`AlertEngine.on_event`)
running on the lab's loop. Rules are indexed by (model id, trigger): a :class:`PointStored`
of a device whose product uses the rule's model (``model_of``) and whose point is the
rule's measurepoint evaluates the compiled condition (and recover condition) on that point's
value and the device's attributes (``attributes(product_key, device_key)``), then feeds the
rule's :class:`AlertState` for that device; a :class:`PresenceChanged` feeds the
``device_status="offline"`` rules (offline: anomaly, online: recovered). The transitions are
acted on through :class:`AlertRecords`: :class:`Fired` opens a record, :class:`Recovered`
recovers it, :class:`Escalated` escalates it, :class:`Flapping` marks it, :class:`Suppressed`
is only counted (the state reports what still holds when flapping ends).

Timers. One clock timer (``clock.call_at``) is armed at the earliest ``next_due()`` over the
states, kept in a heap with lazy deletion (an entry is stale when its time is no longer the
state's scheduled time). When it fires, ``due(clock.time_ms())`` runs on the due states and the
timer is re-armed. Times are event times: the devices' clocks must follow the lab clock, else
a point older than a deadline already applied is late (ignored and counted by the state).

Isolation. A value the condition cannot use (:class:`~enos_lab.errors.MissingValue`,
:class:`~enos_lab.errors.EvaluationError`), a failing ``attributes`` callable or a record that
cannot be written is a counted skip for that device (logged once per rule and device), never
an exception out of :meth:`AlertEngine.on_event`. States are bounded (``max_states``): when
full, the oldest inactive state (no run, no active alert, no timer) is evicted; if none is,
the point is dropped and counted.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ..clock import Clock, DeadlineTimer, to_epoch_ms
from ..errors import EnosLabError, ExpressionError, InvalidArgument, NotFound, RuleError
from ..model import ModelCatalog, ThingModel
from ..rules import Expression, Threshold, compile_expression
from ..tap import PointRowLike, PointStored, PresenceChanged
from ._batch import VECTOR_MIN, Bools, PointGroup
from ._definitions import AlertRule
from ._masking import RootMasking
from ._record import AlertEventType, AlertRecord
from ._records import AlertRecords
from ._state import AlertPhase, AlertState
from ._transitions import Escalated, Fired, FlapPhase, Flapping, Recovered, Suppressed, Transition

log = logging.getLogger(__name__)

MAX_STATES = 100_000
"""Default bound on (rule, device) states an engine keeps."""
_MAX_CACHE = 10_000
"""Bound on per-device skip counters and logged keys."""

_Key = tuple[str, str, str]  # (rule_id, product_key, device_key)
_TRIGGERED = AlertEventType.TRIGGERED


class AlertChange(Enum):
    """What happened to an alert record, as the engine's ``notify`` callback hears it."""

    OPENED = "opened"
    """The alert fired: its record was opened."""
    RECOVERED = "recovered"
    """The alert recovered."""
    ESCALATED = "escalated"
    """The alert took a higher severity."""


@dataclass(slots=True)
class AlertEngineStats:
    """Counters of an :class:`AlertEngine` (read them; the engine updates them)."""

    events: int = 0
    """Tap events seen."""
    evaluated: int = 0
    """Points and presence changes fed to a state."""
    resumed_skipped: int = 0
    """Resumed (historical) points skipped by rules without ``include_resumed``."""
    skipped: int = 0
    """Evaluations skipped: a missing or unusable value, a failing attributes callable."""
    fired: int = 0
    """Alerts opened."""
    recovered: int = 0
    """Alerts recovered."""
    escalated: int = 0
    """Escalations recorded."""
    suppressed: int = 0
    """Transitions held back while flapping."""
    record_errors: int = 0
    """Transitions the records refused (logged)."""
    evicted: int = 0
    """Inactive states evicted to make room."""
    dropped: int = 0
    """Points dropped because every state was busy and ``max_states`` was reached."""
    timer_runs: int = 0
    """Times the engine's clock timer fired."""
    masked: int = 0
    """Alerts masked by a root alert that fired after them (those opened under an active
    root alert are masked from the start and not counted here)."""
    skips_by_device: dict[tuple[str, str], int] = field(default_factory=dict)
    """Skipped evaluations per (product_key, device_key) (at most 10,000 devices)."""


def compile_rule(rule: AlertRule, model: ThingModel) -> tuple[Expression | None, Expression | None]:
    """The compiled condition and recover condition of ``rule`` against its thing ``model``
    (both None for a device-status trigger; the recover condition None without hysteresis).

    A measurepoint rule's conditions may reference its trigger point and the model's
    attributes only. Raises :class:`~enos_lab.errors.InvalidArgument` when the model lacks the
    trigger point, :class:`~enos_lab.errors.ExpressionError` naming the rule for a bad condition.
    """
    if rule.measurepoint is None:
        return None, None
    if rule.measurepoint not in model.measurepoints:
        raise InvalidArgument(
            f"alert rule {rule.rule_id!r}: model {model.model_id!r} has no measurepoint "
            f"{rule.measurepoint!r}"
        )
    condition = _compile(rule, rule.condition, model)
    recover = None
    if rule.recover_condition is not None:
        recover = _compile(rule, rule.recover_condition, model)
    return condition, recover


def _compile(rule: AlertRule, text: str, model: ThingModel) -> Expression:
    """Compile one condition of ``rule``; only its trigger point may be referenced."""
    expression = compile_expression(text, model=model, name=rule.rule_id)
    others = sorted(expression.points - {rule.measurepoint})
    if others:
        raise ExpressionError(
            f"references measurepoint {others[0]!r}; an alert condition may reference only "
            f"its trigger point {rule.measurepoint!r} and attributes",
            expression=text,
            position=max(0, text.find(others[0]) - 2),
            rule=rule.rule_id,
        )
    return expression


@dataclass(slots=True)
class _Rule:
    """A rule put to work: its compiled conditions and engine options."""

    rule: AlertRule
    condition: Expression | None
    recover: Expression | None
    include_resumed: bool
    states: int = 0
    """(Device) states the engine keeps for this rule."""
    constant: Threshold | None = None
    """The condition, when it compares the point with a number (evaluated with the rule's
    group of such rules at once)."""


@dataclass(slots=True)
class _Entry:
    """One (rule, device) state with the engine's bookkeeping."""

    state: AlertState
    event_id: str | None = None
    scheduled_ms: int | None = None


class AlertEngine:
    """Alert rules evaluated on tap events; alerts written to ``records``.

    ``models`` gives the rules' thing models; ``model_of(product_key)`` the model id of a
    product (None: unknown, its events are ignored); ``attributes(product_key, device_key)``
    the device's attribute values for conditions that reference attributes; ``tags_of`` its
    tags, for rules scoped by ``scope_tags``; ``gateway_of`` and ``sub_devices`` the topology
    root rules mask along; ``notify(record, change)`` hears every change recorded; ``clock``
    the lab clock (timers, the ``now`` of ``due``). Attach it on the lab's loop with
    ``lab.tap.add_point_rows(engine.on_rows)`` and ``lab.tap.add_callback(engine.on_events,
    kinds=PresenceChanged, batch=True)`` (or ``add_callback(engine.on_event)`` for every
    event, one at a time); :meth:`close` it there (or after the loop stopped).
    """

    def __init__(
        self,
        records: AlertRecords,
        models: ModelCatalog,
        *,
        clock: Clock,
        model_of: Callable[[str], str | None],
        attributes: Callable[[str, str], Mapping[str, Any]] | None = None,
        tags_of: Callable[[str, str], Mapping[str, str]] | None = None,
        gateway_of: Callable[[str, str], tuple[str, str] | None] | None = None,
        sub_devices: Callable[[tuple[str, str]], Iterable[tuple[str, str]]] | None = None,
        notify: Callable[[AlertRecord, AlertChange], None] | None = None,
        max_states: int = MAX_STATES,
    ) -> None:
        if not isinstance(max_states, int) or isinstance(max_states, bool) or max_states < 1:
            raise InvalidArgument(
                f"AlertEngine: max_states must be an int >= 1, got {max_states!r}"
            )
        self._records = records
        self._models = models
        self._clock = clock
        self._model_of = model_of
        self._attributes = attributes
        self._tags_of = tags_of
        self._masking = RootMasking(records, gateway_of, sub_devices)
        self._notify = notify
        self._max_states = max_states
        self._rules: dict[str, _Rule] = {}
        self._by_trigger: dict[tuple[str, str], list[_Rule]] = {}
        self._states: dict[_Key, _Entry] = {}
        self._heap: list[tuple[int, _Key]] = []
        self._timer = DeadlineTimer(clock, self._on_timer)
        self._logged: set[tuple[str, str, str]] = set()
        self._closed = False
        self.stats = AlertEngineStats()
        """The engine's counters."""

    def __repr__(self) -> str:
        return f"AlertEngine(rules={len(self._rules)}, states={len(self._states)})"

    # ---------------------------------------------------------------- rules

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules in force, in the order added."""
        return tuple(entry.rule for entry in self._rules.values())

    def add_rule(self, rule: AlertRule, *, include_resumed: bool = False) -> None:
        """Put ``rule`` to work (replacing a rule of the same id and its states).

        Its conditions are compiled against its model; they may reference the trigger point and
        the model's attributes only. ``include_resumed``: resumed (historical) points feed it
        too. Raises :class:`~enos_lab.errors.ExpressionError` naming the rule,
        :class:`~enos_lab.errors.NotFound` for an unknown model.
        """
        if not isinstance(rule, AlertRule):
            raise InvalidArgument(f"add_rule: expected an AlertRule, got {type(rule).__name__}")
        condition, recover = compile_rule(rule, self._models.get(rule.model_id))
        trigger = rule.measurepoint if rule.measurepoint is not None else "\0status"
        self.remove_rule(rule.rule_id)
        threshold = None if condition is None else condition.threshold
        constant = threshold if threshold is not None and threshold.attribute is None else None
        compiled = _Rule(rule, condition, recover, bool(include_resumed), constant=constant)
        self._rules[rule.rule_id] = compiled
        self._by_trigger.setdefault((rule.model_id, trigger), []).append(compiled)
        self._restore(rule)
        self._arm()

    def _restore(self, rule: AlertRule) -> None:
        """Pick up the rule's active alerts from the records (kept across a restart, or
        raised before the rule was replaced): each gets an active state, so that its next
        recovering point recovers it and its escalation goes on."""
        for record in self._records.active_of(rule.rule_id):
            started, confirmed = record.started, record.confirmed
            if started is None or confirmed is None or record.event_type is not _TRIGGERED:
                continue
            if len(self._states) >= self._max_states:
                self.stats.dropped += 1
                continue
            occur_ms = to_epoch_ms(record.occur_time)
            fired = Fired(
                occur_ms,
                record.value,
                record.severity,
                started,
                confirmed,
                record.anomalies or 1,
                bool(record.by_timer),
            )
            state = AlertState.restore(
                rule,
                fired,
                severity=record.severity,
                steps=len(record.escalations),
                last_time_ms=max(occur_ms, confirmed.time_ms),
            )
            key = (rule.rule_id, record.product_key, record.device_key)
            entry = self._states[key] = _Entry(state, record.event_id)
            self._rules[rule.rule_id].states += 1
            self._schedule(key, entry)

    def remove_rule(self, rule_id: str) -> bool:
        """Stop evaluating the rule ``rule_id`` and drop its states (its active alerts stay
        in the records); False if there was no such rule."""
        compiled = self._rules.pop(rule_id, None)
        if compiled is None:
            return False
        rule = compiled.rule
        trigger = rule.measurepoint if rule.measurepoint is not None else "\0status"
        bucket = self._by_trigger.get((rule.model_id, trigger), [])
        bucket[:] = [r for r in bucket if r.rule.rule_id != rule_id]
        for key in [k for k in self._states if k[0] == rule_id]:
            del self._states[key]
        return True

    # ---------------------------------------------------------------- events

    @property
    def wants_points(self) -> bool:
        """Whether any rule is triggered by a measurepoint (the engine needs ``PointStored``)."""
        return any(c.rule.measurepoint is not None for c in self._rules.values())

    @property
    def wants_presence(self) -> bool:
        """Whether any rule is triggered by the device status (``PresenceChanged``)."""
        return any(c.rule.measurepoint is None for c in self._rules.values())

    def on_event(self, event: object) -> None:
        """The tap callback: evaluate the rules an event triggers (on the lab's loop)."""
        self.on_events((event,))

    def on_events(self, events: Sequence[object]) -> None:
        """The tap's batch callback (``tap.add_callback(engine.on_events, batch=True)``): the
        same as :meth:`on_event` for each event, in order (the points among them as
        :meth:`on_rows` takes them)."""
        if self._closed:
            return
        rows: list[PointRowLike] = []
        presence: list[PresenceChanged] = []
        for event in events:
            if type(event) is PointStored:
                rows.append(
                    (
                        event.product_key,
                        event.device_key,
                        event.point_id,
                        to_epoch_ms(event.time),
                        event.value,
                        event.quality,
                        event.resume,
                    )
                )
            elif isinstance(event, PresenceChanged):
                presence.append(event)
        if presence:
            self.stats.events += len(presence)
            with self._records.batch():  # a gateway and its sub-devices: one commit
                for change in presence:
                    self._on_presence(change)
        if rows:
            self.on_rows(rows)
        else:
            self._arm()

    def on_rows(self, rows: Sequence[PointRowLike]) -> None:
        """The points of one committed batch (``tap.add_point_rows(engine.on_rows)``), in
        order: the points of one (product, measurepoint) are evaluated together
        (:class:`~enos_lab.alerts._batch.PointGroup`: a threshold condition as one numpy
        comparison, others over a frame), and only the anomalous points and those of devices
        with a state go on to the states."""
        if self._closed:
            return
        self.stats.events += len(rows)
        groups: dict[tuple[str, str], list[PointRowLike]] = {}
        idle: set[tuple[str, str]] = set()
        for row in rows:
            key = (row[0], row[2])
            group = groups.get(key)
            if group is None:
                if key in idle:
                    continue
                if not self._rules_for(*key):
                    idle.add(key)
                    continue
                group = groups[key] = []
            group.append(row)
        if groups:
            with self._records.batch():  # the alerts of a batch: one commit
                for (product_key, point_id), group in groups.items():
                    self._on_points(self._rules_for(product_key, point_id), group)
        self._arm()

    def _on_presence(self, event: PresenceChanged) -> None:
        rules = self._rules_for(event.product_key, "\0status")
        time_ms = to_epoch_ms(event.time)
        value = "online" if event.online else "offline"
        for compiled in rules:
            if self._in_scope(compiled.rule, event.product_key, event.device_key):
                self._feed(
                    compiled,
                    event.product_key,
                    event.device_key,
                    time_ms=time_ms,
                    anomaly=not event.online,
                    recovered=None,
                    value=value,
                )

    def _on_points(self, rules: list[_Rule], events: list[PointRowLike]) -> None:
        """The points of one (product, measurepoint), in order, for each of its rules."""
        group = PointGroup(events, self._attributes) if len(events) >= VECTOR_MIN else None
        if group is not None:
            constant = [c for c in rules if c.constant is not None]
            thresholds = [c.constant for c in constant if c.constant is not None]
            together = group.constant_masks(thresholds) if thresholds else None
            if together is not None:  # every value a number: all of them at once
                masks, held = together
                for compiled, mask, any_held in zip(constant, masks, held, strict=True):
                    if any_held or compiled.states:  # else nothing to do for this rule
                        self._pick(compiled, group, mask, None)
                rules = [c for c in rules if c.constant is None]
        for compiled in rules:
            condition = compiled.condition
            assert condition is not None
            found = None if group is None else group.anomalies(condition, events[0][2])
            if found is None:
                for event in events:
                    self._on_point(compiled, event)
                continue
            assert group is not None
            self._pick(compiled, group, *found)

    def _pick(
        self, compiled: _Rule, group: PointGroup, anomaly: Bools, undecided: Bools | None
    ) -> None:
        """Feed a rule's states the points that matter, in order: the anomalous ones, those
        of devices with a state, and those the batch could not decide (evaluated alone)."""
        events = group.events
        if not compiled.include_resumed:
            resumed = group.resumed
            if resumed.any():
                self.stats.resumed_skipped += int(resumed.sum())
                anomaly = anomaly & ~resumed
                if undecided is not None:
                    undecided = undecided & ~resumed
        chosen = anomaly if undecided is None else anomaly | undecided
        # a device's other points matter once it has a state: one from before this batch, or
        # one its first anomaly here makes (a state is only ever made by an anomaly)
        if compiled.states or chosen.any():
            keys, codes = group.codes()
            stateful = np.zeros(len(keys), dtype=np.bool_)
            stateful[codes[chosen]] = True
            if compiled.states:
                rule_id, states, pk = compiled.rule.rule_id, self._states, events[0][0]
                for i, dk in enumerate(keys.tolist()):
                    if (rule_id, pk, dk) in states:
                        stateful[i] = True
            follow = stateful.take(codes)
            if not compiled.include_resumed:
                follow &= ~group.resumed
            chosen = chosen | follow
        picked = np.flatnonzero(chosen).tolist()
        if compiled.states and compiled.recover is None:
            picked = self._still_active(compiled, events, picked, anomaly, undecided)
        for i in picked:
            decided = undecided is None or not undecided[i]
            self._on_point(compiled, events[i], bool(anomaly[i]) if decided else None)

    def _still_active(
        self,
        compiled: _Rule,
        events: list[PointRowLike],
        picked: list[int],
        anomaly: Bools,
        undecided: Bools | None,
    ) -> list[int]:
        """``picked`` without the points that only say an active alert is still active.

        A device whose alert is active when the batch comes and whose next points are all
        anomalous, in increasing time, needs only the last of them: the state takes the
        deadlines before its time and its time, as it would from each in turn, and nothing
        else of it changes (a recovering point, or one it cannot decide, ends the run, and
        from there on every point goes on)."""
        rule_id, states = compiled.rule.rule_id, self._states
        out: list[int] = []
        runs: dict[str, int] = {}  # device -> position in ``out`` of its run's last point
        ended: set[str] = set()
        for i in picked:
            event = events[i]
            dk = event[1]
            if dk not in ended:
                position = runs.get(dk)
                if position is None:
                    entry = states.get((rule_id, event[0], dk))
                    if entry is None or entry.state.phase is not AlertPhase.ACTIVE:
                        ended.add(dk)
                decided = undecided is None or not undecided[i]
                if dk not in ended and decided and anomaly[i]:
                    if position is None:
                        runs[dk] = len(out)
                        out.append(i)
                        continue
                    if event[3] > events[out[position]][3]:
                        out[position] = i
                        continue
                ended.add(dk)
            out.append(i)
        return out

    def _on_point(self, compiled: _Rule, row: PointRowLike, anomaly: bool | None = None) -> None:
        """Evaluate one rule on one point (unless ``anomaly`` is known) and feed the state."""
        rule = compiled.rule
        pk, dk, point_id, time_ms, value, _, resume = row
        if not self._in_scope(rule, pk, dk):
            return
        if resume and not compiled.include_resumed:
            if anomaly is None:
                self.stats.resumed_skipped += 1
            return
        recover = compiled.recover
        recovered = None
        if anomaly is None or recover is not None:  # else nothing is left to evaluate
            condition = compiled.condition
            assert condition is not None
            points = {point_id: value}
            try:
                attributes: Mapping[str, Any] = {}
                if self._attributes is not None and (
                    condition.attributes or (recover is not None and recover.attributes)
                ):
                    attributes = self._attributes(pk, dk)
                if anomaly is None:
                    anomaly = condition.evaluate(points, attributes) is True
                if recover is not None:
                    recovered = recover.evaluate(points, attributes) is True
            except Exception as exc:  # one device's bad value (or attributes) harms nobody else
                self._skip(rule.rule_id, pk, dk, exc)
                return
        self._feed(
            compiled, pk, dk, time_ms=time_ms, anomaly=anomaly, recovered=recovered, value=value
        )

    def _rules_for(self, product_key: str, trigger: str) -> list[_Rule]:
        try:
            model_id = self._model_of(product_key)  # often: keep it cheap (DeviceLookup)
        except EnosLabError:
            model_id = None
        if model_id is None:
            return []
        return self._by_trigger.get((model_id, trigger), [])

    def _in_scope(self, rule: AlertRule, product_key: str, device_key: str) -> bool:
        if not rule.enabled:
            return False
        if not rule.scope_tags:
            return not rule.scope or device_key in rule.scope
        try:
            tags = self._tags_of(product_key, device_key) if self._tags_of else None
        except EnosLabError:
            tags = None
        return rule.applies_to(device_key, tags)

    def _skip(self, rule_id: str, product_key: str, device_key: str, exc: Exception) -> None:
        self.stats.skipped += 1
        per = self.stats.skips_by_device
        device = (product_key, device_key)
        if device in per or len(per) < _MAX_CACHE:
            per[device] = per.get(device, 0) + 1
        key = (rule_id, product_key, device_key)
        if key not in self._logged and len(self._logged) < _MAX_CACHE:
            self._logged.add(key)
            log.warning(
                "alert rule %r on %s/%s: skipped (%s: %s); further skips are only counted",
                rule_id, product_key, device_key, type(exc).__name__, exc,
            )  # fmt: skip

    def skips(self, product_key: str, device_key: str) -> int:
        """Evaluations skipped on one device (a missing or unusable value)."""
        return self.stats.skips_by_device.get((product_key, device_key), 0)

    @property
    def state_count(self) -> int:
        """(Rule, device) states kept (at most ``max_states``)."""
        return len(self._states)

    def state(self, rule_id: str, product_key: str, device_key: str) -> AlertState | None:
        """The state of a rule on a device, or None if the engine keeps none."""
        entry = self._states.get((rule_id, product_key, device_key))
        return None if entry is None else entry.state

    # ---------------------------------------------------------------- states

    def _feed(
        self,
        compiled: _Rule,
        product_key: str,
        device_key: str,
        *,
        time_ms: int,
        anomaly: bool,
        recovered: bool | None,
        value: Any,
    ) -> None:
        key = (compiled.rule.rule_id, product_key, device_key)
        entry = self._states.get(key)
        if entry is None:
            if not anomaly:
                return  # a normal point on a device with no state changes nothing
            if len(self._states) >= self._max_states and not self._evict():
                self.stats.dropped += 1
                return
            entry = self._states[key] = _Entry(AlertState(compiled.rule))
            compiled.states += 1
        self.stats.evaluated += 1
        transitions = entry.state.observe(time_ms, anomaly, recovered, value)
        self._act(compiled.rule, key, entry, transitions)
        self._schedule(key, entry)

    def _evict(self) -> bool:
        """Drop the oldest inactive state; False if every state is busy."""
        for key, entry in self._states.items():
            state = entry.state
            if state.phase is AlertPhase.NORMAL and state.next_due() is None:
                del self._states[key]
                self._lost_state(key[0])
                self.stats.evicted += 1
                return True
        return False

    def _act(
        self, rule: AlertRule, key: _Key, entry: _Entry, transitions: tuple[Transition, ...]
    ) -> None:
        _, pk, dk = key
        for transition in transitions:
            try:
                if isinstance(transition, Fired):
                    self._open(rule, pk, dk, entry, transition)
                elif isinstance(transition, Recovered):
                    event_id = entry.event_id or self._active_id(rule, pk, dk)
                    entry.event_id = None
                    if event_id is not None:
                        record = self._records.recover(
                            event_id, transition.recover_time_ms, transition.value
                        )
                        self.stats.recovered += 1
                        self._tell(record, AlertChange.RECOVERED)
                        if rule.is_root:
                            self._masking.lift(record)
                elif isinstance(transition, Escalated):
                    event_id = entry.event_id or self._active_id(rule, pk, dk)
                    if event_id is not None:
                        record = self._records.escalate(
                            event_id, transition.severity, transition.time_ms
                        )
                        self.stats.escalated += 1
                        self._tell(record, AlertChange.ESCALATED)
                elif isinstance(transition, Flapping):
                    event_id = entry.event_id or self._active_id(rule, pk, dk)
                    if event_id is not None:
                        started = transition.phase is FlapPhase.STARTED
                        self._records.set_flapping(event_id, started)
                elif isinstance(transition, Suppressed):
                    self.stats.suppressed += 1
            except (RuleError, NotFound) as exc:
                self.stats.record_errors += 1
                log.warning(
                    "alert rule %r on %s/%s: cannot record %s: %s",
                    rule.rule_id, pk, dk, type(transition).__name__, exc,
                )  # fmt: skip

    def _open(self, rule: AlertRule, pk: str, dk: str, entry: _Entry, fired: Fired) -> None:
        active = self._records.find_active(rule.rule_id, pk, dk)
        if active is not None:  # notified as active before (flapping ended, or a restart)
            entry.event_id = active.event_id
            if active.flapping:
                self._records.set_flapping(active.event_id, False)
            return
        record = self._records.open_alert(
            rule,
            fired,
            product_key=pk,
            device_key=dk,
            flapping=entry.state.flapping,
            masked_by=self._masking.over(pk, dk, self._root_ids()),
        )
        entry.event_id = record.event_id
        self.stats.fired += 1
        self._tell(record, AlertChange.OPENED)
        if rule.is_root:
            self.stats.masked += self._masking.below(record)

    def _root_ids(self) -> list[str]:
        return [rule_id for rule_id, compiled in self._rules.items() if compiled.rule.is_root]

    def _tell(self, record: AlertRecord, change: AlertChange) -> None:
        if self._notify is None:
            return
        try:
            self._notify(record, change)
        except Exception:  # a consumer's failure never stops the engine
            log.exception("alert notification for %s failed", record.event_id)

    def forget(self, rule_id: str, product_key: str, device_key: str) -> None:
        """Drop the rule's state on the device (after its alert was closed through the API):
        an anomaly that goes on starts a new alert, with its delay, at its next point."""
        entry = self._states.pop((rule_id, product_key, device_key), None)
        if entry is not None:
            entry.scheduled_ms = None
            self._lost_state(rule_id)

    def forget_device(self, product_key: str, device_key: str) -> int:
        """Drop every rule's state on the device (it was deleted with its history, alert
        records included): its next points, if the key is registered again, start from
        nothing. Returns how many states were dropped."""
        keys = [k for k in self._states if k[1] == product_key and k[2] == device_key]
        for rule_id, pk, dk in keys:
            self.forget(rule_id, pk, dk)
        return len(keys)

    def _lost_state(self, rule_id: str) -> None:
        compiled = self._rules.get(rule_id)
        if compiled is not None:
            compiled.states -= 1

    def _active_id(self, rule: AlertRule, pk: str, dk: str) -> str | None:
        record = self._records.find_active(rule.rule_id, pk, dk)
        return None if record is None else record.event_id

    # ---------------------------------------------------------------- timers

    def _schedule(self, key: _Key, entry: _Entry) -> None:
        due = entry.state.next_due()
        if due != entry.scheduled_ms:
            entry.scheduled_ms = due
            if due is not None:
                heapq.heappush(self._heap, (due, key))
                if len(self._heap) > 2 * len(self._states) + 64:
                    self._compact()

    def _compact(self) -> None:
        """Rebuild the heap from the states' scheduled times (drop the stale entries)."""
        self._heap = [
            (entry.scheduled_ms, key)
            for key, entry in self._states.items()
            if entry.scheduled_ms is not None
        ]
        heapq.heapify(self._heap)

    def _live_top(self) -> int | None:
        """The earliest live scheduled time, popping stale entries."""
        heap = self._heap
        while heap:
            due, key = heap[0]
            entry = self._states.get(key)
            if entry is not None and entry.scheduled_ms == due:
                return due
            heapq.heappop(heap)
        return None

    def _arm(self) -> None:
        """(Re-)arm the one clock timer at the earliest scheduled time."""
        if not self._closed:
            self._timer.arm(self._live_top())

    def _on_timer(self) -> None:
        if self._closed:
            return
        self.stats.timer_runs += 1
        with self._records.batch():  # the alerts due at once: one commit
            self._run_due(self._clock.time_ms())
        self._arm()

    def _run_due(self, now: int) -> None:
        """Apply the deadlines of the states due at ``now`` and act on their transitions."""
        done: set[_Key] = set()
        while (due := self._live_top()) is not None and due <= now:
            _, key = heapq.heappop(self._heap)
            if key in done:  # a state still due after due(now): never spin on it
                log.error("alert state %s still due at %d after due(); dropped its timer", key, now)
                self._states[key].scheduled_ms = None
                continue
            done.add(key)
            entry = self._states[key]
            entry.scheduled_ms = None
            compiled = self._rules.get(key[0])
            transitions = entry.state.due(now)
            if compiled is not None:
                self._act(compiled.rule, key, entry, transitions)
            self._schedule(key, entry)

    def close(self) -> None:
        """Cancel the timer and stop taking events (on the lab's loop, or after it stopped)."""
        self._closed = True
        self._timer.cancel()
