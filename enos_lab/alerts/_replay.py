"""The backtest's way for rules with flapping detection: :class:`AlertState` device by device.

Flapping makes what is notified depend on the history of fires and recoveries, so these rules
are not vectorised: every device's rows go through an :class:`AlertState` (with ``due`` once at
``end + 1``) and the transitions are kept as :class:`~enos_lab.alerts.AlertEngine` keeps them
in the records (a fire while an alert is notified as active is that alert; suppressed
transitions are only counted; a recovery closes the alert). Plain dicts stand in for records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ._definitions import AlertRule, Severity
from ._record import severity_json
from ._state import AlertState
from ._transitions import Escalated, Fired, FlapPhase, Flapping, Recovered, Transition

__all__ = ["escalation_step", "replay_states", "spans"]

_Ints = npt.NDArray[np.int64]
_Bools = npt.NDArray[np.bool_]


def spans(starts: _Bools) -> list[tuple[int, int]]:
    """Each device's rows as (first, past the last)."""
    first = np.flatnonzero(starts).tolist()
    return list(zip(first, [*first[1:], len(starts)][: len(first)], strict=True))


def escalation_step(time_ms: int, severity: Severity, previous: Severity) -> dict[str, Any]:
    """An escalation as the records keep it."""
    return {"time_ms": time_ms, "to": severity_json(severity), "from": severity_json(previous)}


def replay_states(
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
    """Flapping: every device's rows through an :class:`AlertState`, transitions turned into
    alerts as the engine turns them into records."""
    if end_ms is None:
        return []
    alerts: list[dict[str, Any]] = []
    times, anomalies = t.tolist(), anomaly.tolist()
    recovered = recovering.tolist() if rule.hysteresis else [None] * len(t)
    for lo, hi in spans(starts):
        state = AlertState(rule)
        book = _Book(rule, pk[lo], dk[lo], alerts)
        for i in range(lo, hi):
            book.act(state.observe(times[i], anomalies[i], recovered[i], vals[i]), state)
        book.act(state.due(end_ms + 1), state)
    return alerts


class _Book:
    """The engine's record keeping for one device, on plain dicts (see ``AlertEngine._act``)."""

    def __init__(self, rule: AlertRule, pk: str, dk: str, alerts: list[dict[str, Any]]) -> None:
        self._rule, self._pk, self._dk, self._alerts = rule, pk, dk, alerts
        self._active: dict[str, Any] | None = None
        self._severity = rule.severity

    def act(self, transitions: tuple[Transition, ...], state: AlertState) -> None:
        for tr in transitions:
            active = self._active
            if isinstance(tr, Fired):
                if active is not None:  # notified as active before: the same alert
                    active["flapping"] = False
                    continue
                self._severity = tr.severity
                self._active = {
                    "product_key": self._pk,
                    "device_key": self._dk,
                    "value": tr.value,
                    "occur_ms": tr.occur_time_ms,
                    "recover_ms": None,
                    "escalations": [],
                    "flapping": state.flapping,
                    "severity": tr.severity,
                    "explain": {
                        "started": {"time_ms": tr.started.time_ms, "value": tr.started.value},
                        "confirmed": {
                            "time_ms": tr.confirmed.time_ms,
                            "value": tr.confirmed.value,
                        },
                        "ended": None,
                        "anomalies": tr.anomalies,
                        "by_timer": tr.by_timer,
                    },
                }
                self._alerts.append(self._active)
            elif active is None:
                continue
            elif isinstance(tr, Recovered):
                active["recover_ms"] = tr.recover_time_ms
                active["flapping"] = False
                active["explain"]["ended"] = {"time_ms": tr.recover_time_ms, "value": tr.value}
                self._active = None
            elif isinstance(tr, Escalated):
                active["escalations"].append(
                    escalation_step(tr.time_ms, tr.severity, active["severity"])
                )
                active["severity"] = tr.severity
            elif isinstance(tr, Flapping):
                active["flapping"] = tr.phase is FlapPhase.STARTED
