"""What an alert state reports: its transitions, each a small frozen value with event times.

Every transition has ``time_ms``, the event time at which it took effect (epoch milliseconds),
and carries the points that explain it (:class:`Sample`: the point that started the anomaly,
the one that confirmed it, the one that ended it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

from ._definitions import Severity

__all__ = [
    "Escalated",
    "Fired",
    "FlapPhase",
    "Flapping",
    "Recovered",
    "Sample",
    "Suppressed",
    "Transition",
]


@dataclass(frozen=True, slots=True)
class Sample:
    """One observed point: its event time and value."""

    time_ms: int
    """Event time. [ms since the epoch]"""
    value: Any
    """The point's value (what the condition was evaluated on)."""


@dataclass(frozen=True, slots=True)
class Fired:
    """The alert fired (EnOS ``eventType`` 1): it becomes active.

    ``value`` is the value EnOS records: the value when the delay timer started (``started``)
    with a delay, else the value of the point that fired it (``confirmed``).
    """

    occur_time_ms: int
    """When the alert occurred (EnOS ``occurTime``). [ms since the epoch]"""
    value: Any
    """The alert record's value (see the class docstring)."""
    severity: Severity
    """The severity it fires with (escalated, when it fires after a suppressed escalation)."""
    started: Sample
    """The first anomalous point of the run (where the delay timer started)."""
    confirmed: Sample
    """The last anomalous point seen before it fired (the one that fired it, without delay)."""
    anomalies: int
    """Anomalous points in the run up to firing."""
    by_timer: bool
    """Whether the delay timer fired it (else a point did)."""

    @property
    def time_ms(self) -> int:
        """Event time of the transition: the occur time. [ms since the epoch]"""
        return self.occur_time_ms


@dataclass(frozen=True, slots=True)
class Recovered:
    """The alert recovered (EnOS ``eventType`` 0): a recovering point arrived."""

    recover_time_ms: int
    """When it recovered: the recovering point's time (EnOS ``recoverTime``). [ms]"""
    value: Any
    """The recovering point's value."""
    occur_time_ms: int
    """When the alert it ends occurred. [ms since the epoch]"""

    @property
    def time_ms(self) -> int:
        """Event time of the transition: the recover time. [ms since the epoch]"""
        return self.recover_time_ms


@dataclass(frozen=True, slots=True)
class Escalated:
    """The alert stayed active long enough for the next escalation step."""

    time_ms: int
    """When it escalated: occur time + the step's ``after``. [ms since the epoch]"""
    severity: Severity
    """The new severity."""
    previous: Severity
    """The severity before."""
    occur_time_ms: int
    """When the escalated alert occurred. [ms since the epoch]"""


class FlapPhase(Enum):
    """Whether flapping started or ended."""

    STARTED = "started"
    """Too many transitions within the window: notifications are suppressed from now on."""
    ENDED = "ended"
    """No transition for a whole window: notifications resume."""


@dataclass(frozen=True, slots=True)
class Flapping:
    """The alert started or stopped flapping (beyond EnOS)."""

    time_ms: int
    """When: the transition that made it flap, or the end of a quiet window. [ms]"""
    phase: FlapPhase
    """Started or ended."""
    changes: int
    """Transitions within the window counted when flapping started (0 when it ended)."""


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A transition that happened while the alert was flapping: counted, not notified."""

    transition: Fired | Recovered | Escalated
    """The transition that was held back."""

    @property
    def time_ms(self) -> int:
        """Event time of the held-back transition. [ms since the epoch]"""
        return self.transition.time_ms


Transition: TypeAlias = Fired | Recovered | Escalated | Flapping | Suppressed
"""Anything :meth:`AlertState.observe` and :meth:`AlertState.due` return."""
