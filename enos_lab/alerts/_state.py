"""The alert state machine of one (rule, device): anomalies in, transitions out, on event time.

Theory of operation. The state is pure: no clock, no I/O. Time comes in as event time in epoch
milliseconds, with each point (:meth:`AlertState.observe`) and with each timer call
(:meth:`AlertState.due`). Three phases: ``NORMAL``, ``PENDING`` (an anomaly run has started
and the alert may fire: it waits for the delay or for more anomalous points) and ``ACTIVE``.

Timers (the delay's expiry, an escalation step, the end of flapping) are deadlines ``d`` in
event time. A deadline takes effect unless a point with time ``<= d`` changed the state first:
it is applied by ``due(now)`` for ``d < now`` and, before a point at ``t`` is handled, by
``observe`` for ``d < t``. Both paths apply the same deadlines in the same order, so feeding a
series with ``due`` calls in between gives the same transitions as feeding it whole and calling
``due`` once at the end (the backtest's way), as long as no ``due(now)`` runs ahead of a point
still to come (``now`` at most that point's time); :meth:`AlertState.next_due` is ``d + 1``,
the first ``now`` at which ``due`` has something to do.

A point older than the newest one (or than the newest deadline already applied) is late, one
at the newest point's time a duplicate: both are ignored and counted (``late``,
``duplicates``), since the state has already decided up to there.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from enum import Enum
from typing import Any

from ._definitions import AlertRule, Severity
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

__all__ = ["AlertPhase", "AlertState"]


class AlertPhase(Enum):
    """Where an alert state is."""

    NORMAL = "normal"
    """No anomaly run and no active alert."""
    PENDING = "pending"
    """An anomaly run has started; the alert fires once the delay and ``min_repeat`` are met."""
    ACTIVE = "active"
    """The alert has fired and not recovered."""


class AlertState:
    """The alert state of one rule on one device (see the module and package docstrings).

    Feed it the points of the rule's trigger in event-time order with :meth:`observe` (the
    booleans are the rule's conditions evaluated on the point), call :meth:`due` when the
    time of :meth:`next_due` has come, and act on the transitions both return.
    """

    __slots__ = (
        "_anomalies",
        "_changes",
        "_confirmed",
        "_decided_ms",
        "_delay_ms",
        "_duplicates",
        "_fired",
        "_flapping",
        "_last_change_ms",
        "_last_recovered",
        "_last_time_ms",
        "_late",
        "_notified_active",
        "_notified_occur_ms",
        "_notified_severity",
        "_phase",
        "_points",
        "_repeat",
        "_resets",
        "_rule",
        "_severity",
        "_started",
        "_step",
        "_suppressed",
    )

    def __init__(self, rule: AlertRule) -> None:
        self._rule = rule
        self._delay_ms = rule.delay_ms
        self._repeat = rule.min_repeat
        self._phase = AlertPhase.NORMAL
        self._last_time_ms: int | None = None
        self._decided_ms: int | None = None
        self._late = 0
        self._duplicates = 0
        self._points = 0
        self._resets = 0
        self._suppressed = 0
        self._started: Sample | None = None
        self._confirmed: Sample | None = None
        self._anomalies = 0
        self._fired: Fired | None = None
        self._severity: Severity | None = None
        self._step = 0
        flap = rule.flapping
        self._changes: deque[int] = deque(maxlen=flap.changes + 1 if flap else 1)
        self._flapping = False
        self._last_change_ms = 0
        self._notified_active = False
        self._notified_severity: Severity | None = None
        self._notified_occur_ms = 0
        self._last_recovered: Recovered | None = None

    @classmethod
    def restore(
        cls, rule: AlertRule, fired: Fired, *, severity: Severity, steps: int, last_time_ms: int
    ) -> AlertState:
        """The state of an alert that is active (and was notified) as ``fired`` says, at
        ``severity`` after ``steps`` escalation steps, having seen points up to
        ``last_time_ms``: how an engine picks up the alerts its records kept across a
        restart. Its next recovering point recovers it; escalation goes on from ``steps``.
        """
        state = cls(rule)
        state._phase = AlertPhase.ACTIVE
        state._fired = fired
        state._started, state._confirmed = fired.started, fired.confirmed
        state._anomalies = fired.anomalies
        state._severity = severity
        state._step = min(max(steps, 0), len(rule.escalation))
        state._last_time_ms = max(last_time_ms, fired.occur_time_ms)
        state._decided_ms = fired.occur_time_ms
        state._notified_active = True
        state._notified_severity = severity
        state._notified_occur_ms = fired.occur_time_ms
        return state

    def __repr__(self) -> str:
        return (
            f"AlertState(rule={self._rule.rule_id!r}, phase={self._phase.value}, "
            f"flapping={self._flapping}, last_time_ms={self._last_time_ms})"
        )

    # ---------------------------------------------------------------- what it knows

    @property
    def rule(self) -> AlertRule:
        """The rule this state follows."""
        return self._rule

    @property
    def phase(self) -> AlertPhase:
        """Normal, pending or active."""
        return self._phase

    @property
    def active(self) -> bool:
        """Whether the alert is active (fired and not recovered), notified or not."""
        return self._phase is AlertPhase.ACTIVE

    @property
    def flapping(self) -> bool:
        """Whether the alert is flapping (its notifications are suppressed)."""
        return self._flapping

    @property
    def severity(self) -> Severity | None:
        """The active alert's severity (escalated or not); ``None`` when not active."""
        return self._severity

    @property
    def current(self) -> Fired | None:
        """The active alert's :class:`Fired` (with the severity it fired with); or None."""
        return self._fired

    @property
    def pending_since(self) -> Sample | None:
        """The first anomalous point of the current run (pending or active); or None."""
        return self._started

    @property
    def last_time_ms(self) -> int | None:
        """Event time of the newest point taken. [ms since the epoch]"""
        return self._last_time_ms

    @property
    def points(self) -> int:
        """Points taken (neither late nor duplicate)."""
        return self._points

    @property
    def late(self) -> int:
        """Points ignored because they were older than what the state had decided."""
        return self._late

    @property
    def duplicates(self) -> int:
        """Points ignored because they had the newest point's time."""
        return self._duplicates

    @property
    def resets(self) -> int:
        """Pending runs ended by a recovering point before the alert could fire."""
        return self._resets

    @property
    def suppressed(self) -> int:
        """Transitions held back while flapping."""
        return self._suppressed

    # ---------------------------------------------------------------- input

    def observe(
        self, time_ms: int, anomaly: bool, recovered: bool | None = None, value: Any = None
    ) -> tuple[Transition, ...]:
        """Take one point at event time ``time_ms`` [ms since the epoch].

        ``anomaly``: the rule's condition holds on it; ``recovered``: its recover condition
        holds (``None``: ``not anomaly``, i.e. no hysteresis); a point that is an anomaly never
        recovers. ``value`` is kept for the transitions (the alert record's value, explain).
        Returns the transitions, deadlines before ``time_ms`` first.
        """
        last = self._last_time_ms
        if last is not None and time_ms == last:
            self._duplicates += 1
            return ()
        if (last is not None and time_ms < last) or (
            self._decided_ms is not None and time_ms <= self._decided_ms
        ):
            self._late += 1
            return ()
        out: list[Transition] = []
        self._run_timers(time_ms, out)
        self._last_time_ms = time_ms
        self._points += 1
        recovering = (not anomaly) if recovered is None else (recovered and not anomaly)
        sample = Sample(time_ms, value)
        if self._phase is AlertPhase.ACTIVE:
            if recovering:
                self._recover(sample, out)
        elif anomaly:
            if self._phase is AlertPhase.NORMAL:
                self._phase = AlertPhase.PENDING
                self._started = sample
                self._anomalies = 0
            self._anomalies += 1
            self._confirmed = sample
            started = self._started
            assert started is not None
            # EnOS 13: fires once the anomaly has lasted the whole delay (none: at once)
            if self._anomalies >= self._repeat and time_ms >= started.time_ms + self._delay_ms:
                self._fire(time_ms, by_timer=False, out=out)
        elif recovering and self._phase is AlertPhase.PENDING:
            # EnOS 13: recovery before the delay's end resets the timer
            self._resets += 1
            self._end_run()
        return tuple(out)

    def due(self, now_ms: int) -> tuple[Transition, ...]:
        """Apply the deadlines before ``now_ms`` [ms since the epoch] and return their
        transitions (none if nothing is due). Call it at :meth:`next_due` or later, but never
        beyond the time of a point still to come (that point would then be late)."""
        out: list[Transition] = []
        self._run_timers(now_ms, out)
        return tuple(out)

    def next_due(self) -> int | None:
        """The first ``now`` [ms since the epoch] at which :meth:`due` has something to do
        (a deadline + 1 ms: a point at the deadline may still prevent it); ``None``: no timer."""
        deadline = self._next_deadline()
        return None if deadline is None else deadline + 1

    # ---------------------------------------------------------------- timers

    def _fire_deadline(self) -> int | None:
        if (
            self._phase is AlertPhase.PENDING
            and self._delay_ms > 0
            and self._anomalies >= self._repeat
            and self._started is not None
        ):
            return self._started.time_ms + self._delay_ms
        return None

    def _escalation_deadline(self) -> int | None:
        steps = self._rule.escalation
        if steps and self._fired is not None and self._step < len(steps):
            return self._fired.occur_time_ms + steps[self._step].after_ms
        return None

    def _flap_end_deadline(self) -> int | None:
        flap = self._rule.flapping
        if self._flapping and flap is not None:
            return self._last_change_ms + flap.window_ms
        return None

    def _next_deadline(self) -> int | None:
        if self._phase is not AlertPhase.PENDING and not self._flapping:
            # no delay to run out: only an escalation step can be due (a common fast path)
            return self._escalation_deadline()
        deadlines = [
            d
            for d in (self._fire_deadline(), self._escalation_deadline(), self._flap_end_deadline())
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def _run_timers(self, until_ms: int, out: list[Transition]) -> None:
        """Apply every deadline ``d < until_ms``, earliest first; one at a time, since each
        may move the others (firing starts escalation and counts towards flapping)."""
        while True:
            deadline = self._next_deadline()
            if deadline is None or deadline >= until_ms:
                return
            self._decided_ms = deadline
            if deadline == self._fire_deadline():
                self._fire(deadline, by_timer=True, out=out)
            elif deadline == self._escalation_deadline():
                self._escalate(deadline, out)
            else:
                self._end_flapping(deadline, out)

    # ---------------------------------------------------------------- transitions

    def _fire(self, time_ms: int, *, by_timer: bool, out: list[Transition]) -> None:
        started, confirmed = self._started, self._confirmed
        assert started is not None and confirmed is not None
        severity = self._rule.severity
        # EnOS 13: the record's value is the value when the delay timer started
        value = started.value if self._delay_ms > 0 else confirmed.value
        fired = Fired(time_ms, value, severity, started, confirmed, self._anomalies, by_timer)
        self._phase = AlertPhase.ACTIVE
        self._fired = fired
        self._severity = severity
        self._step = 0
        self._notify(time_ms, fired, out)

    def _recover(self, sample: Sample, out: list[Transition]) -> None:
        fired = self._fired
        assert fired is not None
        recovered = Recovered(sample.time_ms, sample.value, fired.occur_time_ms)
        self._end_run()
        self._fired = None
        self._severity = None
        self._last_recovered = recovered
        self._notify(sample.time_ms, recovered, out)

    def _escalate(self, time_ms: int, out: list[Transition]) -> None:
        fired, previous = self._fired, self._severity
        assert fired is not None and previous is not None
        step = self._rule.escalation[self._step]
        self._step += 1
        self._severity = step.severity
        occur_ms = self._notified_occur_ms if self._notified_active else fired.occur_time_ms
        escalated = Escalated(time_ms, step.severity, previous, occur_ms)
        if self._flapping:
            self._suppressed += 1
            out.append(Suppressed(escalated))
        else:
            self._notified_severity = step.severity
            out.append(escalated)

    def _end_run(self) -> None:
        self._phase = AlertPhase.NORMAL
        self._started = None
        self._confirmed = None
        self._anomalies = 0

    def _notify(self, time_ms: int, transition: Fired | Recovered, out: list[Transition]) -> None:
        """Report a fire or a recovery, counting it towards flapping (beyond EnOS)."""
        flap = self._rule.flapping
        if flap is not None:
            changes = self._changes
            changes.append(time_ms)
            while changes[0] <= time_ms - flap.window_ms:
                changes.popleft()
            self._last_change_ms = time_ms
            if not self._flapping and len(changes) > flap.changes:
                self._flapping = True
                out.append(Flapping(time_ms, FlapPhase.STARTED, len(changes)))
            if self._flapping:
                self._suppressed += 1
                out.append(Suppressed(transition))
                return
        if isinstance(transition, Fired):
            self._notified_severity = transition.severity
            self._notified_occur_ms = transition.occur_time_ms
        else:
            if self._notified_active:  # it ends the alert notified, into which flaps merged
                transition = replace(transition, occur_time_ms=self._notified_occur_ms)
            self._notified_severity = None
        self._notified_active = isinstance(transition, Fired)
        out.append(transition)

    def _end_flapping(self, time_ms: int, out: list[Transition]) -> None:
        """Quiet for a whole window: notifications resume, and what was held back and still
        holds is reported (the active alert, the recovery of the one last notified, or the
        severity the notified alert has climbed to)."""
        self._flapping = False
        self._changes.clear()
        out.append(Flapping(time_ms, FlapPhase.ENDED, 0))
        fired, severity = self._fired, self._severity
        if fired is not None:
            assert severity is not None
            if not self._notified_active:
                self._notified_active = True
                self._notified_occur_ms = fired.occur_time_ms
                out.append(replace(fired, severity=severity))
            elif severity != self._notified_severity:
                assert self._notified_severity is not None
                out.append(
                    Escalated(time_ms, severity, self._notified_severity, self._notified_occur_ms)
                )
            self._notified_severity = severity
        elif self._notified_active:
            assert self._last_recovered is not None
            self._notified_active = False
            self._notified_severity = None
            # the recovery ends the alert that was notified, whichever run it came from
            out.append(replace(self._last_recovered, occur_time_ms=self._notified_occur_ms))
