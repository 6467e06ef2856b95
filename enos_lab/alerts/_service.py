"""The alerts of a running lab: its records, its rules and the engine on its tap.

Theory of operation. :meth:`AlertService.start` (on the lab's loop, after the registry, the
store and the IoT hub services) opens the alert records (``alerts.sqlite3`` in the data
directory, in a worker thread), loads the rules kept in ``alert_rules.json``
(:class:`~enos_lab.alerts._serial.RuleFile`) and puts them to work in an
:class:`~enos_lab.alerts.AlertEngine` attached to the tap (stored points and presence
changes). The engine reads the registry through a :class:`~enos_lab.registry.DeviceLookup`
(product models, device attributes for per-device thresholds, gateways for root masking), so
a threshold changed in the registry applies from the next point. Every alert change the
engine records is told on the tap as :class:`~enos_lab.tap.AlertChanged`, unless the alert is
shelved or masked.

A rule kept in the file that no longer compiles (its model was deleted, a point renamed) is
not evaluated; it stays in the file and is listed with its error, so that nothing the user
defined disappears silently. :meth:`AlertService.stop` detaches the engine, cancels its timer
and closes the records (after the IoT hub services stopped, so that the last points are
evaluated).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ..clock import Clock, to_epoch_ms
from ..errors import EnosLabError
from ..model import ModelCatalog
from ..registry import DeviceLookup, Registry
from ..tap import AlertChanged, PresenceChanged, Tap, TapCallback
from ._engine import AlertChange, AlertEngine
from ._record import AlertRecord
from ._records import AlertRecords
from ._serial import RULES_FILE, RuleEntry, RuleFile

__all__ = ["ALERTS_FILE", "AlertService", "KeptRule"]

log = logging.getLogger(__name__)

ALERTS_FILE = "alerts.sqlite3"
"""Name of the alert records database in the lab's data directory."""


@dataclass(frozen=True, slots=True)
class KeptRule:
    """A rule the lab keeps, with its options and, if it cannot be evaluated, why."""

    entry: RuleEntry
    """The rule and its engine options."""
    error: str | None = None
    """Why the engine refused it when the lab started (None: it is evaluated)."""


class AlertService:
    """The alerts of a running lab (see the module docstring). Build it with :meth:`start`.

    ``engine`` must be used on the lab's loop; ``records`` from any thread.
    """

    def __init__(self, records: AlertRecords, rule_file: RuleFile, tap: Tap, clock: Clock) -> None:
        self.records = records
        self.rule_file = rule_file
        self._tap = tap
        self._clock = clock
        self.rules: dict[str, KeptRule] = {}
        """The rules kept, by id, in the order added (change them on the lab's loop)."""
        self.engine: AlertEngine | None = None
        self._points: TapCallback | None = None
        self._presence: TapCallback | None = None
        self.lock = threading.Lock()
        """Held by the facade while it changes the rules and writes the rule file."""

    @classmethod
    async def start(
        cls, data_dir: Path, registry: Registry, models: ModelCatalog, clock: Clock, tap: Tap
    ) -> AlertService:
        """Open the records, load the rules and attach the engine to ``tap`` (on the loop)."""
        records = await asyncio.to_thread(AlertRecords, data_dir / ALERTS_FILE, clock=clock)
        try:
            rule_file = RuleFile(data_dir / RULES_FILE)
            entries = await asyncio.to_thread(rule_file.load)
        except BaseException:
            await asyncio.to_thread(records.close)
            raise
        self = cls(records, rule_file, tap, clock)
        lookup = DeviceLookup(registry)

        def sub_devices(gateway: tuple[str, str]) -> list[tuple[str, str]]:
            return [(d.product_key, d.device_key) for d in registry.sub_devices(gateway)]

        engine = self.engine = AlertEngine(
            records,
            models,
            clock=clock,
            model_of=lookup.model_of,
            attributes=lookup.attributes,
            tags_of=lookup.tags,
            gateway_of=lookup.gateway,
            sub_devices=sub_devices,
            notify=self._notify,
        )
        for entry in entries:
            error = None
            try:
                engine.add_rule(entry.rule, include_resumed=entry.include_resumed)
            except EnosLabError as exc:
                error = str(exc)
                log.warning("alert rule %r is kept but not evaluated: %s", entry.rule.rule_id, exc)
            self.rules[entry.rule.rule_id] = KeptRule(entry, error)
        self.refresh()
        return self

    def refresh(self) -> None:
        """Attach the engine to the tap for what its rules need, and only that (on the loop;
        after the rules changed): the stored points as rows (:meth:`~enos_lab.tap.Tap.
        add_point_rows`) for measurepoint rules, presence changes for status rules. With no
        rule, the IoT hub builds nothing for it and ingest costs what it costs without
        alerts."""
        engine = self.engine
        if engine is None:
            return
        wants_points, wants_presence = engine.wants_points, engine.wants_presence
        if wants_points != (self._points is not None):
            if self._points is not None:
                self._points.cancel()
                self._points = None
            else:
                self._points = self._tap.add_point_rows(engine.on_rows)
        if wants_presence != (self._presence is not None):
            if self._presence is not None:
                self._presence.cancel()
                self._presence = None
            else:
                self._presence = self._tap.add_callback(
                    engine.on_events, kinds=PresenceChanged, batch=True
                )

    def _notify(self, record: AlertRecord, change: AlertChange) -> None:
        if record.masked_by is not None:
            return
        shelved = record.shelved_until
        if shelved is not None and to_epoch_ms(shelved) > self._clock.time_ms():
            return
        if change is AlertChange.RECOVERED and record.recover_time is not None:
            time, value = record.recover_time, record.ended.value if record.ended else None
        elif change is AlertChange.ESCALATED and record.escalations:
            time, value = record.escalations[-1].time, record.value
        else:
            time, value = record.occur_time, record.value
        self._tap.emit(
            AlertChanged(
                record.product_key,
                record.device_key,
                time,
                record.event_id,
                record.rule_id or "",
                change.value,
                record.severity.name,
                value,
            )
        )

    def save(self) -> None:
        """Write the kept rules to the rule file (any thread; the caller serialises)."""
        self.rule_file.save([kept.entry for kept in self.rules.values()])

    async def stop(self) -> None:
        """Detach the engine, cancel its timer and close the records; idempotent."""
        for handle in (self._points, self._presence):
            if handle is not None:
                handle.cancel()
        self._points = self._presence = None
        if self.engine is not None:
            self.engine.close()
        await asyncio.to_thread(self.records.close)
