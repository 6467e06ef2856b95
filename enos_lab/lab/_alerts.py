"""Alerts from the facade, in the shape of EnOS's Alert Service.

EnOS's Alert Service creates alert rules on a model's measurepoint or on the device status
(``createAlertRule``), searches active and history alerts (``searchActiveAlerts``,
``searchHistoryAlerts``), creates third-party alerts (``createActiveAlerts``, event type 3) and
recovers them (``recoverActiveAlerts``, event type 2). :class:`Alerts` gives the same on the
lab, with what users of every platform ask for besides: acknowledge, shelve, ``explain`` and a
count of what the engine did.

The rules are kept in the data directory (``alert_rules.json``) and evaluated by the lab's
alert engine (:class:`~enos_lab.alerts.AlertService`) on the points the IoT hub stores and on
presence changes; alert records are kept in ``alerts.sqlite3``. Both survive a restart. Every
alert change is also told on the tap (:class:`~enos_lab.tap.AlertChanged`: read it with
``lab.subscribe(kinds=AlertChanged)``), unless the alert is shelved or masked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import pandas as pd

from ..alerts import (
    WARNING,
    AlertContent,
    AlertEngineStats,
    AlertExplanation,
    AlertRecord,
    AlertRule,
    AlertService,
    KeptRule,
    RuleEntry,
    Severity,
    backtest,
    explain,
    rule_from_document,
)
from ..clock import to_epoch_ms
from ..errors import InvalidArgument, NotFound
from ..store import Ids, TimeLike, as_ms, id_list
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["ALERT_RULE_COLUMNS", "Alerts"]

ALERT_RULE_COLUMNS = (
    "rule_id",
    "model_id",
    "measurepoint",
    "device_status",
    "condition",
    "recover_condition",
    "severity",
    "delay",
    "min_repeat",
    "scope",
    "scope_tags",
    "is_root",
    "enabled",
    "include_resumed",
    "description",
    "error",
)
"""Columns of :meth:`Alerts.alert_rules`: the rule's fields (``severity`` by name, ``delay``
in seconds, ``scope`` a tuple of device keys, empty for all, ``scope_tags`` a dict of the
tags a device must have), whether resumed points feed it,
and ``error``: why the engine does not evaluate it (None when it does)."""

_EXPLAIN_POINTS = 10_000  # most trigger points an explanation reads around the alert


class Alerts(LabCore):
    """Alert rules and alerts (mixed into :class:`~enos_lab.lab.Lab`)."""

    def _alert_service(self, what: str) -> AlertService:
        service = self._running().alerts
        if service is None:
            raise InvalidArgument(
                f"{what} needs the alert engine, but this lab is anonymous (a plain MQTT "
                "broker); create it with anonymous=False"
            )
        return service

    # -- rules ---------------------------------------------------------------------------------

    def add_alert_rule(
        self, rule: AlertRule | Mapping[str, Any], *, include_resumed: bool = False
    ) -> AlertRule:
        """Put an alert rule to work and keep it with the lab (EnOS ``createAlertRule``).

        ``rule`` (:class:`~enos_lab.alerts.AlertRule`, or its document as
        :func:`~enos_lab.alerts.rule_document` gives it, e.g. read from JSON or YAML) watches
        a measurepoint of a model's devices, or their status (``device_status="offline"``); a
        rule with the id of one already kept replaces it (its active alerts stay).
        ``include_resumed``: resumed (historical) points feed it too. Raises
        :class:`~enos_lab.errors.ExpressionError` naming the rule and the column for a bad
        condition, :class:`~enos_lab.errors.InvalidArgument` for a point the model lacks or a
        malformed document and :class:`~enos_lab.errors.NotFound` for an unknown model.
        Returns the rule.
        """
        if isinstance(rule, Mapping):
            rule = rule_from_document(rule)
        if not isinstance(rule, AlertRule):
            raise InvalidArgument(
                f"add_alert_rule: expected an AlertRule or its document, got {type(rule).__name__}"
            )
        service = self._alert_service("add_alert_rule")
        entry = RuleEntry(rule, bool(include_resumed))
        with service.lock:
            previous = self.run(plain_call(_put, service, entry))
            try:
                service.save()
            except BaseException:
                self.run(plain_call(_restore, service, rule.rule_id, previous))
                raise
        return rule

    def remove_alert_rule(self, rule_id: str) -> None:
        """Stop evaluating the rule ``rule_id`` and forget it (its alerts stay in the
        records). Raises :class:`~enos_lab.errors.NotFound` for an unknown rule."""
        service = self._alert_service("remove_alert_rule")
        with service.lock:
            previous = self.run(plain_call(_drop, service, rule_id))
            try:
                service.save()
            except BaseException:
                self.run(plain_call(_restore, service, rule_id, previous))
                raise

    def alert_rule(self, rule_id: str) -> AlertRule:
        """The rule ``rule_id`` (:class:`~enos_lab.errors.NotFound` if the lab keeps none)."""
        kept = self._alert_service("alert_rule").rules.get(rule_id)
        if kept is None:
            raise NotFound(f"alert rule {rule_id!r} does not exist")
        return kept.entry.rule

    def alert_rules(self) -> pd.DataFrame:
        """The rules the lab keeps, in the order added (columns: :data:`ALERT_RULE_COLUMNS`)."""
        kept = list(self._alert_service("alert_rules").rules.values())
        rows = [
            {
                "rule_id": k.entry.rule.rule_id,
                "model_id": k.entry.rule.model_id,
                "measurepoint": k.entry.rule.measurepoint,
                "device_status": k.entry.rule.device_status,
                "condition": k.entry.rule.condition,
                "recover_condition": k.entry.rule.recover_condition,
                "severity": k.entry.rule.severity.name,
                "delay": float(k.entry.rule.delay),
                "min_repeat": k.entry.rule.min_repeat,
                "scope": k.entry.rule.scope,
                "scope_tags": dict(k.entry.rule.scope_tags),
                "is_root": k.entry.rule.is_root,
                "enabled": k.entry.rule.enabled,
                "include_resumed": k.entry.include_resumed,
                "description": k.entry.rule.description,
                "error": k.error,
            }
            for k in kept
        ]
        return pd.DataFrame(rows, columns=list(ALERT_RULE_COLUMNS))

    # -- alerts --------------------------------------------------------------------------------

    def alerts(
        self,
        device_keys: Ids | None = None,
        rule_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
        severities: Iterable[Severity | str] | Severity | str | None = None,
        shelved: bool | None = None,
        masked: bool | None = False,
    ) -> pd.DataFrame:
        """The active alerts (EnOS ``searchActiveAlerts``) of the devices and rules (``None``:
        all) whose occur time is in ``[start, end)``, optionally of some severities (a
        :class:`~enos_lab.alerts.Severity` or its id). ``shelved`` True or False keeps only
        the alerts shelved now or only those not; ``masked`` False (the default) leaves out
        the alerts masked by a root alert, True keeps only those, None keeps both. Columns:
        :data:`~enos_lab.alerts.RECORD_COLUMNS` (times tz-aware UTC), by occur time."""
        frame = self._alert_service("alerts").records.active(
            device_keys,
            rule_ids,
            start,
            end,
            product_key=product_key,
            severities=severities,
            shelved=shelved,
        )
        if masked is None:
            return frame
        keep = frame["masked_by"].notna() if masked else frame["masked_by"].isna()
        return frame[keep].reset_index(drop=True)

    def alert_history(
        self,
        device_keys: Ids | None = None,
        rule_ids: Ids | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        product_key: str | None = None,
        severities: Iterable[Severity | str] | Severity | str | None = None,
        include_active: bool = False,
    ) -> pd.DataFrame:
        """The recovered alerts (EnOS ``searchHistoryAlerts``; with ``include_active`` every
        alert) of the devices and rules (``None``: all) whose occur time is in
        ``[start, end)``. Columns: :data:`~enos_lab.alerts.RECORD_COLUMNS`, by occur time.
        Recovered alerts are kept 90 days (lab clock), as EnOS searches three months."""
        return self._alert_service("alert_history").records.history(
            device_keys,
            rule_ids,
            start,
            end,
            product_key=product_key,
            severities=severities,
            include_active=include_active,
        )

    def alert(self, event_id: str) -> AlertRecord:
        """The alert record ``event_id`` (:class:`~enos_lab.errors.NotFound` if unknown)."""
        return self._alert_service("alert").records.get(event_id)

    def acknowledge_alert(self, event_id: str, by: str | None = None) -> AlertRecord:
        """Acknowledge the alert ``event_id`` now (lab clock), by ``by`` if given."""
        return self._alert_service("acknowledge_alert").records.acknowledge(event_id, by)

    def shelve_alert(self, event_id: str, until: TimeLike | timedelta | None) -> AlertRecord:
        """Shelve the alert ``event_id`` until ``until`` (a time, or a duration from now on
        the lab clock); ``None`` unshelves it. A shelved alert stays active and its record
        keeps changing, but its changes are not told on the tap until the shelf ends."""
        return self._alert_service("shelve_alert").records.shelve(event_id, until)

    def close_alert(self, event_id: str, time: TimeLike | None = None) -> AlertRecord:
        """Recover the active alert ``event_id`` through the API (EnOS
        ``recoverActiveAlerts``, event type 2) at ``time`` (default: now, lab clock). If the
        anomaly goes on, its rule raises a new alert from the next anomalous point (after
        its delay). Raises :class:`~enos_lab.errors.InvalidArgument` for an alert already
        recovered."""
        service = self._alert_service("close_alert")
        at_ms = self.clock.time_ms() if time is None else as_ms(time, "time")
        record = service.records.get(event_id)
        if time is None and record.active:  # a device clock ahead of the lab's: not before
            at_ms = max(at_ms, to_epoch_ms(record.occur_time))
        record = service.records.recover(event_id, at_ms, via_api=True)
        if record.rule_id is not None:
            self.run(
                plain_call(_forget, service, record.rule_id, record.product_key, record.device_key)
            )
        return record

    def create_alert(
        self,
        product_key: str,
        device_key: str,
        *,
        severity: Severity = WARNING,
        occur_time: TimeLike | None = None,
        content: AlertContent | None = None,
        point_id: str | None = None,
        value: Any = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> AlertRecord:
        """Create a third-party alert on a registered device (EnOS ``createActiveAlerts``,
        event type 3), occurring at ``occur_time`` (default: now, lab clock); it stays active
        until :meth:`close_alert`. Raises :class:`~enos_lab.errors.NotFound` for an unknown
        device."""
        service = self._alert_service("create_alert")
        device = self.registry.get_device(product_key, device_key)
        model_id = self.registry.get_product(product_key).model_id
        return service.records.insert(
            product_key=product_key,
            device_key=device_key,
            occur_time=self.clock.time_ms() if occur_time is None else occur_time,
            severity=severity,
            content=content,
            point_id=point_id,
            value=value,
            asset_id=device.asset_id,
            model_id=model_id,
            description=description,
            tags=tags,
        )

    def explain_alert(self, event_id: str) -> AlertExplanation:
        """Why the alert ``event_id`` fired and recovered: the rule's steps as text
        (``print(lab.explain_alert(id))``) and the trigger point's stored values around it,
        each with what the rule's conditions made of it (``.points``: time, value, anomaly,
        recovering, role)."""
        service = self._alert_service("explain_alert")
        record = service.records.get(event_id)
        kept = service.rules.get(record.rule_id or "")
        rule = None if kept is None else kept.entry.rule
        points = model = None
        attributes: Mapping[str, Any] = {}
        if rule is not None and rule.measurepoint is not None and record.started is not None:
            context = max(rule.delay_ms, 60_000)
            lo = record.started.time_ms - context
            end_ms = record.ended.time_ms if record.ended is not None else self.clock.time_ms()
            points = self.store.query_points(
                record.device_key,
                rule.measurepoint,
                lo,
                max(end_ms, lo) + context,
                product_key=record.product_key,
            ).head(_EXPLAIN_POINTS)
            model = self.models.get(rule.model_id)
            device = self.registry.find_device(record.product_key, record.device_key)
            attributes = {} if device is None else device.attributes
        return explain(record, rule, points, model=model, attributes=attributes)

    def backtest_alert_rule(
        self,
        rule: AlertRule | str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        device_keys: Ids | None = None,
        include_resumed: bool | None = None,
    ) -> pd.DataFrame:
        """The alerts ``rule`` would have raised over the points already stored: how a
        threshold is tuned before a rule goes live.

        ``rule`` is an :class:`~enos_lab.alerts.AlertRule` (kept or not: a variant to try) or
        the id of a kept rule. Its trigger point is read from the store for the devices of
        every product of its model (or ``device_keys`` of them) with event times in
        ``[start, end)``, with each device's attributes for per-device thresholds, and run
        through :func:`~enos_lab.alerts.backtest`: vectorised, with the alerts live evaluation
        gives for the same points (delay, repeat, hysteresis, escalation, flapping). ``end``
        (default: now, on the lab clock) closes the series, so a delay that ran out before
        it fires, as the lab clock makes it fire live. ``include_resumed`` (default: the kept
        rule's, else False) takes resumed points too. Returns a DataFrame of
        :data:`~enos_lab.alerts.BACKTEST_COLUMNS`, one row per alert in occur order (with
        counts of skipped points in ``attrs``). Device-status (offline) rules are refused.
        """
        service = self._alert_service("backtest_alert_rule")
        kept = service.rules.get(rule) if isinstance(rule, str) else None
        if isinstance(rule, str):
            if kept is None:
                raise NotFound(f"alert rule {rule!r} does not exist")
            rule = kept.entry.rule
        if not isinstance(rule, AlertRule):
            raise InvalidArgument(
                f"backtest_alert_rule: expected an AlertRule or a rule id, got {rule!r}"
            )
        if rule.measurepoint is None:
            raise InvalidArgument(
                f"alert rule {rule.rule_id!r}: a device-status rule cannot be backtested over "
                "stored points"
            )
        if include_resumed is None:
            include_resumed = kept.entry.include_resumed if kept is not None else False
        model = self.models.get(rule.model_id)
        wanted = None if device_keys is None else set(id_list(device_keys, "device_keys") or ())
        end_ms = self.clock.time_ms() if end is None else as_ms(end, "end")
        frames, attributes, tags = [], {}, {}
        for product in self.registry.products():
            if product.model_id != rule.model_id:
                continue
            devices = self.registry.devices(product.product_key)
            chosen = [d for d in devices if wanted is None or d.device_key in wanted]
            if not chosen:
                continue
            for device in chosen:
                attributes[(device.product_key, device.device_key)] = device.attributes
                tags[(device.product_key, device.device_key)] = device.tags
            frames.append(
                self.store.query_points(
                    None if wanted is None else [d.device_key for d in chosen],
                    rule.measurepoint,
                    start,
                    end_ms,
                    product_key=product.product_key,
                )
            )
        points = (
            pd.concat(frames, ignore_index=True)
            if frames
            else self.store.query_points(None, rule.measurepoint, 0, 1)  # no rows, the columns
        )
        # live, a deadline d takes effect once the clock is past it (d < now): end is inclusive
        return backtest(
            rule,
            points,
            model=model,
            attributes=attributes,
            tags=tags,
            end=max(end_ms - 1, 0),
            include_resumed=include_resumed,
        )

    def alert_stats(self) -> AlertEngineStats:
        """A copy of the alert engine's counters (points evaluated, alerts fired, recovered,
        escalated, masked, evaluations skipped per device, ...)."""
        service = self._alert_service("alert_stats")
        return self.run(plain_call(_stats, service))

    aadd_alert_rule = coroutine_form_of(add_alert_rule)
    aremove_alert_rule = coroutine_form_of(remove_alert_rule)
    aalert_rules = coroutine_form_of(alert_rules)
    aalerts = coroutine_form_of(alerts)
    aalert_history = coroutine_form_of(alert_history)
    aacknowledge_alert = coroutine_form_of(acknowledge_alert)
    ashelve_alert = coroutine_form_of(shelve_alert)
    aclose_alert = coroutine_form_of(close_alert)
    acreate_alert = coroutine_form_of(create_alert)
    aexplain_alert = coroutine_form_of(explain_alert)
    abacktest_alert_rule = coroutine_form_of(backtest_alert_rule)
    aalert = coroutine_form_of(alert)
    aalert_rule = coroutine_form_of(alert_rule)
    aalert_stats = coroutine_form_of(alert_stats)


# -- on the lab's loop ---------------------------------------------------------------------------


def _put(service: AlertService, entry: RuleEntry) -> KeptRule | None:
    assert service.engine is not None
    service.engine.add_rule(entry.rule, include_resumed=entry.include_resumed)
    previous = service.rules.get(entry.rule.rule_id)
    service.rules[entry.rule.rule_id] = KeptRule(entry)
    service.refresh()
    return previous


def _drop(service: AlertService, rule_id: str) -> KeptRule:
    previous = service.rules.pop(rule_id, None)
    if previous is None:
        raise NotFound(f"alert rule {rule_id!r} does not exist")
    assert service.engine is not None
    service.engine.remove_rule(rule_id)
    service.refresh()
    return previous


def _restore(service: AlertService, rule_id: str, previous: KeptRule | None) -> None:
    """Undo :func:`_put` or :func:`_drop` (the rule file could not be written)."""
    assert service.engine is not None
    service.engine.remove_rule(rule_id)
    service.rules.pop(rule_id, None)
    if previous is not None:
        service.rules[rule_id] = previous
        if previous.error is None:
            entry = previous.entry
            service.engine.add_rule(entry.rule, include_resumed=entry.include_resumed)
    service.refresh()


def _forget(service: AlertService, rule_id: str, product_key: str, device_key: str) -> None:
    if service.engine is not None:
        service.engine.forget(rule_id, product_key, device_key)


def _stats(service: AlertService) -> AlertEngineStats:
    assert service.engine is not None
    stats = service.engine.stats
    return dataclasses.replace(stats, skips_by_device=dict(stats.skips_by_device))
