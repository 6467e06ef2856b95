"""Alerts: EnOS's alert definitions and the state machine that turns anomalies into alerts.

Definitions (EnOS Alert Service, protocol reference section 13): :class:`Severity` (EnOS's
defaults :data:`INFO` 398000001, :data:`WARNING` 398000002, :data:`FAULT` 398000003; org-defined
ones are made the same way), :class:`AlertType` (a type, or a subtype naming its parent),
:class:`AlertContent` and :class:`AlertRule`, checked when made (:class:`~enos_lab.errors.
InvalidArgument` names the rule and the field). Beyond EnOS a rule may carry a
``recover_condition`` (hysteresis), ``min_repeat``, a :class:`FlapPolicy` and
:class:`Escalation` steps. Conditions are text here; the state machine receives their values.

:class:`AlertState` is one rule on one device, pure and clock-free: the engine calls
``observe(time_ms, anomaly, recovered, value)`` for each trigger point in event-time order,
``due(now_ms)`` once ``next_due()`` has come, and acts on the returned transitions
(:class:`Fired`, :class:`Recovered`, :class:`Escalated`, :class:`Flapping`,
:class:`Suppressed`)::

    state = AlertState(rule)                       # rule: ${temp} > 50, delay=60
    state.observe(0, anomaly=True, value=51)       # () : the delay timer starts at 0
    state.due(60_001)                              # (Fired(occur_time_ms=60000, value=51 ...),)
    state.observe(61_000, anomaly=False, value=40) # (Recovered(recover_time_ms=61000 ...),)

Semantics. Times are event times (the devices' ``time``) in epoch milliseconds, so that live
evaluation and a backtest over stored points give the same alerts.

- *Anomaly* (EnOS): a point on which the condition holds. A *recovering* point is one on which
  it does not (EnOS), or with hysteresis (beyond EnOS) one on which ``recover_condition`` holds
  and ``condition`` does not; a point in between (the deadband) changes nothing.
- *Run*: the anomalous points from the first one (``t0``) until a recovering point.
- *No delay* (EnOS): the alert fires at the first anomalous point; its occur time and value are
  that point's.
- *Delay* ``D`` (EnOS ``triggeringDelayTimer``, 0 or 60..10800 s; any >= 0 with
  ``strict=False``): the timer starts at ``t0`` and the alert fires at ``t0 + D``, with occur
  time ``t0 + D`` and the value at ``t0`` (EnOS records the value when the timer started), if no
  recovering point with a time in ``(t0, t0 + D]`` came; a recovering point resets the timer
  and the next anomaly starts it again from 0 (EnOS).
- *Repeat* (beyond EnOS): with ``min_repeat`` n the alert fires only once the run has n
  anomalous points: at ``t0 + D`` if the n-th came by then, else at the n-th point's time.
  Without hysteresis the n points are consecutive; with it, deadband points neither count nor
  break the run.
- *Recovery* (EnOS): as soon as a recovering point arrives, at that point's time and value.
- *Escalation* (beyond EnOS): an alert still active ``after`` seconds past its occur time takes
  the step's severity (:class:`Escalated`); a recovery at or before that instant prevents it.
- *Flapping* (beyond EnOS): a fire or recovery that makes more than ``changes`` of them within
  ``window`` seconds (``(t - window, t]``) starts flapping (:class:`Flapping` ``STARTED``);
  from then on fires, recoveries and escalations come wrapped in :class:`Suppressed`, while the
  state keeps following the points. When a whole window has passed with no fire or recovery,
  flapping ends (``ENDED``) and what is held back and still true is reported once: the
  :class:`Fired` of the active alert (its own occur time, its current severity), or the
  :class:`Recovered` that ends the alert last notified (its ``occur_time_ms``); an alert
  notified as active that is active again stays that one alert (its flaps merge into it), with
  an :class:`Escalated` at the end of flapping if its severity climbed meanwhile.
- *Timers* (delay, escalation, end of flapping) are deadlines in event time: a deadline ``d``
  takes effect unless a point with time ``<= d`` changes the state first. ``due(now)`` applies
  the deadlines before ``now``, and ``observe`` those before the point's time, so calling
  ``due`` early and often, or only once at the end, gives the same transitions (the property
  tests prove it): timers change when an alert is seen, never what it is. ``next_due()`` is the
  first deadline + 1 ms.
- *Late points*: a point older than the newest point taken, or not newer than a deadline
  already applied, is ignored and counted (``late``); one at the newest point's time is
  ignored and counted as a duplicate (``duplicates``). So the engine must not call ``due`` with
  a time beyond points it will still receive in time. Resumed (historical) points, root
  masking, acknowledgement, shelving and records are the engine's business, not the state's.

Records. :class:`AlertRecords` keeps alerts in a SQLite file (0600, WAL) with the fields of an
EnOS alert record (:class:`AlertRecord`: event id, device and asset, model, measurepoint, hit
rule, value, occur/create/update/recover times, severity, content with type and subtype,
:class:`AlertEventType`, tags, rule description, ``masked_by``, device status) and the lab's own
(acknowledgement, shelving, flapping, :class:`EscalationStep` s, and the samples that started,
confirmed and ended the alert, for explain)::

    records = AlertRecords(path, clock=lab_clock)
    record = records.open_alert(rule, fired, product_key="pk", device_key="inv-1")
    records.recover(record.event_id, recovered.recover_time_ms, recovered.value)
    records.active("inv-1")                        # DataFrame of RECORD_COLUMNS, UTC times

A record is active until it recovers (by a point, or through the API), then history; history
older than ``keep`` (default :data:`KEEP`, 90 days: EnOS searches 3 months) on the lab clock,
or beyond ``max_history`` records, is pruned. A rule has at most one active alert per device;
third-party alerts (:meth:`AlertRecords.insert`, EnOS ``eventType`` 3) have no such limit.

Engine. :class:`AlertEngine` puts rules to work on the device-data tap (:mod:`enos_lab.tap`)
and the lab clock::

    engine = AlertEngine(records, lab.models, clock=lab.clock,
                         model_of=lambda pk: lab.product(pk).model_id,
                         attributes=lambda pk, dk: lab.registry.get_device(pk, dk).attributes)
    engine.add_rule(rule)                          # ExpressionError names a bad rule
    lab.tap.add_callback(engine.on_event)          # on the lab's loop

A stored trigger point (or a presence change, for ``device_status="offline"`` rules) of a
device whose product uses the rule's model is evaluated with the device's attributes and fed
to that device's :class:`AlertState`; the transitions become records. One clock timer runs the
states' deadlines. Resumed points are skipped unless the rule is added with
``include_resumed=True``; a missing or unusable value is a counted skip for that device; states
are bounded (``max_states``). See :mod:`enos_lab.alerts._engine`.

Backtest. :func:`backtest` runs one measurepoint rule over points already in the store, to
tune a threshold before the rule goes live::

    points = lab.store.query_points(None, "temp", start, end, product_key=pk)
    alerts = backtest(rule, points, model=lab.models.get(rule.model_id),
                      attributes={(pk, dk): {...}}, end=end)   # BACKTEST_COLUMNS, occur order

It evaluates the conditions over the whole frame at once and finds every device's runs with
numpy (rules with flapping go through :class:`AlertState` device by device). The alerts are
those live evaluation gives for the same points, with every deadline up to ``end`` applied
(default: the newest point's time); since the store keeps one row per device, point and time,
sorted by time, they are the alerts of points that arrived in time order. See
:mod:`enos_lab.alerts._backtest`.
"""

from __future__ import annotations

from ._backtest import BACKTEST_COLUMNS, backtest
from ._definitions import (
    DEFAULT_SEVERITIES,
    DELAY_MAX,
    DELAY_MIN,
    DEVICE_STATUSES,
    FAULT,
    INFO,
    MAX_CONDITION_LENGTH,
    WARNING,
    AlertContent,
    AlertRule,
    AlertType,
    Escalation,
    FlapPolicy,
    Severity,
)
from ._engine import MAX_STATES, AlertChange, AlertEngine, AlertEngineStats
from ._explain import EXPLAIN_COLUMNS, AlertExplanation, explain
from ._record import RECORD_COLUMNS, AlertEventType, AlertRecord, EscalationStep
from ._records import KEEP, MAX_HISTORY, PRUNE_EVERY, AlertRecords
from ._serial import RULES_FILE, RuleEntry, RuleFile, rule_document, rule_from_document
from ._service import ALERTS_FILE, AlertService, KeptRule
from ._state import AlertPhase, AlertState
from ._transitions import (
    Escalated,
    Fired,
    FlapPhase,
    Flapping,
    Recovered,
    Sample,
    Suppressed,
    Transition,
)

__all__ = [
    "ALERTS_FILE",
    "BACKTEST_COLUMNS",
    "DEFAULT_SEVERITIES",
    "DELAY_MAX",
    "DELAY_MIN",
    "DEVICE_STATUSES",
    "EXPLAIN_COLUMNS",
    "FAULT",
    "INFO",
    "KEEP",
    "MAX_CONDITION_LENGTH",
    "MAX_HISTORY",
    "MAX_STATES",
    "PRUNE_EVERY",
    "RECORD_COLUMNS",
    "RULES_FILE",
    "WARNING",
    "AlertChange",
    "AlertContent",
    "AlertEngine",
    "AlertEngineStats",
    "AlertEventType",
    "AlertExplanation",
    "AlertPhase",
    "AlertRecord",
    "AlertRecords",
    "AlertRule",
    "AlertService",
    "AlertState",
    "AlertType",
    "Escalated",
    "Escalation",
    "EscalationStep",
    "Fired",
    "FlapPhase",
    "FlapPolicy",
    "Flapping",
    "KeptRule",
    "Recovered",
    "RuleEntry",
    "RuleFile",
    "Sample",
    "Severity",
    "Suppressed",
    "Transition",
    "backtest",
    "explain",
    "rule_document",
    "rule_from_document",
]
