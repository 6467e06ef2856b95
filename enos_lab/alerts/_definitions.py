"""Alert definitions: severities, types, contents and alert rules, validated when they are made.

The field rules are EnOS's Alert Service (protocol reference section 13): a rule id of at most
50 letters, digits, ``.``, ``_`` and ``-``; a measurepoint trigger or a device-status trigger
(``"offline"``); a triggering delay of 0 or 60..10800 seconds. What goes beyond EnOS
(``recover_condition``, ``min_repeat``, ``flapping``, ``escalation``, and any delay with
``strict=False``) is checked with the same care. A bad value raises
:class:`~enos_lab.errors.InvalidArgument` naming the rule and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import InvalidArgument

__all__ = [
    "DEFAULT_SEVERITIES",
    "DELAY_MAX",
    "DELAY_MIN",
    "DEVICE_STATUSES",
    "FAULT",
    "INFO",
    "MAX_CONDITION_LENGTH",
    "WARNING",
    "AlertContent",
    "AlertRule",
    "AlertType",
    "Escalation",
    "FlapPolicy",
    "Severity",
]

# EnOS 13: ruleId <= 50 chars of letters, digits, '.', '_', '-'
_RULE_ID = re.compile(r"[A-Za-z0-9._-]{1,50}")
_MAX_ID = 100
"""Longest severity, type, content, model or point id the lab accepts. [characters]"""

DELAY_MIN = 60
"""Shortest non-zero triggering delay EnOS accepts (``triggeringDelayTimer``). [s]"""
DELAY_MAX = 10800
"""Longest triggering delay EnOS accepts (3 hours). [s]"""
DEVICE_STATUSES = ("offline",)
"""The device statuses a device-status trigger may name (EnOS: ``deviceStatus``)."""
MAX_CONDITION_LENGTH = 4096
"""Longest condition or recover condition text. [characters]"""


def _text(value: object, what: str, *, limit: int = _MAX_ID, empty: bool = False) -> str:
    """Return ``value`` if it is a string of at most ``limit`` characters (non-empty unless
    ``empty``), else raise InvalidArgument naming ``what``."""
    if not isinstance(value, str) or (not value and not empty) or len(value) > limit:
        found = repr(value)
        if len(found) > 60:
            found = found[:57] + "..."
        need = "a string" if empty else "a non-empty string"
        raise InvalidArgument(f"{what}: expected {need} of at most {limit} characters, got {found}")
    return value


@dataclass(frozen=True, slots=True)
class Severity:
    """An alert severity (EnOS: ``severityId`` with its description), org-defined.

    ``level`` orders severities (a higher level is more severe); escalation steps must climb.
    EnOS's defaults are :data:`INFO`, :data:`WARNING` and :data:`FAULT`; make your own for others.
    """

    severity_id: str
    """The id alert records carry (EnOS ``severityId``, e.g. ``"398000002"``)."""
    name: str
    """What the severity is called (EnOS ``severityDesc``, e.g. ``"Warning"``)."""
    level: int
    """Rank among severities; higher is more severe."""

    def __post_init__(self) -> None:
        _text(self.severity_id, "Severity.severity_id")
        _text(self.name, f"Severity {self.severity_id!r}: name")
        if not isinstance(self.level, int) or isinstance(self.level, bool):
            raise InvalidArgument(
                f"Severity {self.severity_id!r}: level must be an int, got {self.level!r}"
            )


INFO = Severity("398000001", "Info", 1)
"""EnOS's default severity Info (398000001)."""
WARNING = Severity("398000002", "Warning", 2)
"""EnOS's default severity Warning (398000002)."""
FAULT = Severity("398000003", "Fault", 3)
"""EnOS's default severity Fault (398000003)."""
DEFAULT_SEVERITIES = (INFO, WARNING, FAULT)
"""EnOS's default severities, least severe first."""


@dataclass(frozen=True, slots=True)
class AlertType:
    """An alert type or subtype (EnOS ``typeId`` / ``subTypeId``, e.g. ``"over-limit"``).

    A subtype names its type in ``parent_id``; a type has ``parent_id=None``.
    """

    type_id: str
    """The type's id."""
    description: str = ""
    """What the type means (EnOS ``typeDesc``)."""
    parent_id: str | None = None
    """The id of the type this one is a subtype of; ``None`` for a type."""

    def __post_init__(self) -> None:
        _text(self.type_id, "AlertType.type_id")
        _text(self.description, f"AlertType {self.type_id!r}: description", limit=1000, empty=True)
        if self.parent_id is not None:
            _text(self.parent_id, f"AlertType {self.type_id!r}: parent_id")
            if self.parent_id == self.type_id:
                raise InvalidArgument(f"AlertType {self.type_id!r}: a type is not its own parent")


@dataclass(frozen=True, slots=True)
class AlertContent:
    """What an alert says (EnOS ``contentId`` / ``contentDesc``), with its type and subtype.

    ``subtype``, when given, must name ``type`` as its parent.
    """

    content_id: str
    """The content's id."""
    description: str = ""
    """The alert text (EnOS ``contentDesc``)."""
    type: AlertType | None = None
    """The alert type."""
    subtype: AlertType | None = None
    """The alert subtype (its ``parent_id`` is ``type.type_id``)."""

    def __post_init__(self) -> None:
        _text(self.content_id, "AlertContent.content_id")
        what = f"AlertContent {self.content_id!r}"
        _text(self.description, f"{what}: description", limit=1000, empty=True)
        if self.subtype is not None:
            if self.type is None:
                raise InvalidArgument(f"{what}: a subtype {self.subtype.type_id!r} needs a type")
            if self.subtype.parent_id != self.type.type_id:
                raise InvalidArgument(
                    f"{what}: subtype {self.subtype.type_id!r} has parent "
                    f"{self.subtype.parent_id!r}, not the type {self.type.type_id!r}"
                )


@dataclass(frozen=True, slots=True)
class FlapPolicy:
    """Flapping detection: more than ``changes`` fire/recover transitions within ``window``
    seconds mark an alert as flapping; its notifications are suppressed until it has been
    stable (no transition) for a whole ``window``."""

    changes: int
    """Most transitions within a window that are not flapping yet (>= 1)."""
    window: float
    """Length of the window. [s]"""

    def __post_init__(self) -> None:
        if not isinstance(self.changes, int) or isinstance(self.changes, bool) or self.changes < 1:
            raise InvalidArgument(f"FlapPolicy.changes must be an int >= 1, got {self.changes!r}")
        if not _seconds(self.window) or self.window <= 0:
            raise InvalidArgument(f"FlapPolicy.window must be a duration > 0, got {self.window!r}")

    @property
    def window_ms(self) -> int:
        """The window. [ms]"""
        return _ms(self.window)


@dataclass(frozen=True, slots=True)
class Escalation:
    """One escalation step: once an alert has been active for ``after`` seconds since it
    fired, its severity becomes ``severity``."""

    after: float
    """Time since the alert fired (its occur time). [s]"""
    severity: Severity
    """The severity from then on."""

    def __post_init__(self) -> None:
        if not _seconds(self.after) or self.after <= 0:
            raise InvalidArgument(f"Escalation.after must be a duration > 0, got {self.after!r}")
        if not isinstance(self.severity, Severity):
            raise InvalidArgument(
                f"Escalation.severity must be a Severity, got {type(self.severity).__name__}"
            )

    @property
    def after_ms(self) -> int:
        """Time since the alert fired. [ms]"""
        return _ms(self.after)


def _seconds(value: object) -> bool:
    """Whether ``value`` is a finite number of seconds (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds. [ms]"""
    return round(seconds * 1000)


_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRule:
    """An alert rule (EnOS ``createAlertRule``), checked when it is made.

    A rule watches one measurepoint (``measurepoint``) or a device status (``device_status``,
    ``"offline"``) of the devices of ``model_id`` in ``scope``; a point for which ``condition``
    holds is an *anomaly*. The state machine (:class:`~enos_lab.alerts.AlertState`) turns
    anomalies into alerts; the package docstring states the semantics. Conditions stay text
    here; they are compiled when the rule is put to work.

    ``strict`` (default) holds the rule to EnOS's bounds (a delay of 0 or
    :data:`DELAY_MIN`..:data:`DELAY_MAX` seconds); ``strict=False`` allows any delay >= 0.
    """

    rule_id: str
    """The rule's id (EnOS ``ruleId``: <= 50 letters, digits, ``.``, ``_``, ``-``)."""
    model_id: str
    """The thing model of the devices the rule applies to (EnOS ``modelId``)."""
    measurepoint: str | None = None
    """The measurepoint that triggers evaluation (EnOS ``measurepointId``); or None."""
    device_status: str | None = None
    """The device status that is the anomaly (EnOS ``deviceStatus``: ``"offline"``); or None."""
    condition: str = ""
    """The anomaly condition, e.g. ``"${temp} > 50"``; may be empty for a status trigger."""
    description: str = ""
    """What the rule watches (EnOS ``ruleDesc``)."""
    severity: Severity = WARNING
    """The severity of the alerts it raises (EnOS ``severityId``)."""
    content: AlertContent | None = None
    """The content of the alerts it raises (EnOS ``contentId``)."""
    delay: float = 0
    """Triggering delay: how long an anomaly must last before the alert fires. [s]"""
    is_root: bool = False
    """A root alert masks the derivative alerts of the devices below it (EnOS ``isRoot``)."""
    scope: tuple[str, ...] = ()
    """The devices (device keys or asset ids) the rule applies to; empty: all (EnOS "all")."""
    scope_tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TAGS)
    """Only the devices whose tags include every one of these (EnOS scopes rules by tag too);
    with ``scope``, both must hold. Empty: no tag condition."""
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TAGS)
    """Tags copied to the alert records (EnOS ``tags``)."""
    enabled: bool = True
    """Whether the rule is evaluated (EnOS ``isEnabled``)."""
    recover_condition: str | None = None
    """Beyond EnOS: hysteresis; an active alert recovers only when this holds (and
    ``condition`` does not). ``None``: it recovers as soon as ``condition`` stops holding."""
    min_repeat: int = 1
    """Beyond EnOS: anomalous points of one run needed before the alert may fire (>= 1)."""
    flapping: FlapPolicy | None = None
    """Beyond EnOS: flapping detection and suppression; ``None``: off."""
    escalation: tuple[Escalation, ...] = ()
    """Beyond EnOS: severity steps while the alert stays active, ``after`` increasing and
    each severity's level above the previous one (the first above ``severity``)."""
    strict: bool = True
    """Hold the rule to EnOS's bounds (the triggering delay)."""

    def __post_init__(self) -> None:
        rid = self.rule_id
        if not isinstance(rid, str) or not _RULE_ID.fullmatch(rid):
            found = repr(rid) if len(repr(rid)) <= 60 else repr(rid)[:57] + "..."
            raise InvalidArgument(
                "AlertRule.rule_id: expected 1..50 letters, digits, '.', '_' or '-' (EnOS), "
                f"got {found}"
            )
        what = f"alert rule {rid!r}"
        _text(self.model_id, f"{what}: model_id")
        self._check_trigger(what)
        _text(self.description, f"{what}: description", limit=1000, empty=True)
        if not isinstance(self.severity, Severity):
            raise InvalidArgument(f"{what}: severity must be a Severity, got {self.severity!r}")
        if self.content is not None and not isinstance(self.content, AlertContent):
            raise InvalidArgument(f"{what}: content must be an AlertContent, got {self.content!r}")
        self._check_delay(what)
        given: object = self.scope
        if isinstance(given, str) or not isinstance(given, Iterable):
            raise InvalidArgument(f"{what}: scope must be a sequence of device keys, got {given!r}")
        scope = tuple(_text(key, f"{what}: scope entry") for key in given)
        object.__setattr__(self, "scope", scope)
        for name in ("tags", "scope_tags"):
            given_tags = getattr(self, name)
            if not isinstance(given_tags, Mapping):
                raise InvalidArgument(f"{what}: {name} must be a mapping, got {given_tags!r}")
            tags = dict(given_tags)
            label = "tag" if name == "tags" else "scope tag"
            for key, value in tags.items():
                _text(key, f"{what}: {label} key")
                _text(value, f"{what}: {label} {key!r}", limit=1000, empty=True)
            object.__setattr__(self, name, MappingProxyType(tags))
        for name in ("is_root", "enabled", "strict"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(f"{what}: {name} must be a bool, got {getattr(self, name)!r}")
        self._check_policies(what)

    def _check_trigger(self, what: str) -> None:
        """One trigger, a measurepoint id or a known device status; conditions are text."""
        if (self.measurepoint is None) == (self.device_status is None):
            raise InvalidArgument(
                f"{what}: give exactly one trigger, measurepoint or device_status "
                f"(got measurepoint={self.measurepoint!r}, device_status={self.device_status!r})"
            )
        if self.measurepoint is not None:
            _text(self.measurepoint, f"{what}: measurepoint")
            if not self.condition:
                raise InvalidArgument(f"{what}: a measurepoint trigger needs a condition")
        elif self.device_status not in DEVICE_STATUSES:
            raise InvalidArgument(
                f"{what}: device_status must be one of {DEVICE_STATUSES}, "
                f"got {self.device_status!r}"
            )
        _text(self.condition, f"{what}: condition", limit=MAX_CONDITION_LENGTH, empty=True)
        if self.recover_condition is not None:
            _text(self.recover_condition, f"{what}: recover_condition", limit=MAX_CONDITION_LENGTH)

    def _check_delay(self, what: str) -> None:
        """EnOS 13: ``triggeringDelayTimer`` is 0 or 60..10800 s; any >= 0 when not strict."""
        delay = self.delay
        if not _seconds(delay) or delay < 0:
            raise InvalidArgument(f"{what}: delay must be a duration >= 0 [s], got {delay!r}")
        if self.strict and delay != 0 and not DELAY_MIN <= delay <= DELAY_MAX:
            raise InvalidArgument(
                f"{what}: delay must be 0 or {DELAY_MIN}..{DELAY_MAX} s (EnOS), got {delay!r}; "
                "strict=False allows any delay >= 0"
            )

    def _check_policies(self, what: str) -> None:
        """The beyond-EnOS policies: repeat count, flapping, escalation steps."""
        repeat = self.min_repeat
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise InvalidArgument(f"{what}: min_repeat must be an int >= 1, got {repeat!r}")
        if self.flapping is not None and not isinstance(self.flapping, FlapPolicy):
            raise InvalidArgument(f"{what}: flapping must be a FlapPolicy, got {self.flapping!r}")
        steps: list[Escalation] = []
        given: Iterable[object] = self.escalation
        for item in given:
            step = Escalation(*item) if isinstance(item, tuple) and len(item) == 2 else item
            if not isinstance(step, Escalation):
                raise InvalidArgument(
                    f"{what}: escalation steps are Escalation(after, severity) or "
                    f"(after, severity) pairs, got {item!r}"
                )
            previous = steps[-1] if steps else None
            if previous is not None and step.after_ms <= previous.after_ms:
                raise InvalidArgument(
                    f"{what}: escalation steps must come later and later, got after={step.after} "
                    f"s after {previous.after} s"
                )
            below = previous.severity if previous is not None else self.severity
            if step.severity.level <= below.level:
                raise InvalidArgument(
                    f"{what}: escalation to {step.severity.name!r} (level {step.severity.level}) "
                    f"does not climb above {below.name!r} (level {below.level})"
                )
            steps.append(step)
        object.__setattr__(self, "escalation", tuple(steps))

    @property
    def delay_ms(self) -> int:
        """The triggering delay. [ms]"""
        return _ms(self.delay)

    @property
    def hysteresis(self) -> bool:
        """Whether recovery has a condition of its own (``recover_condition``)."""
        return self.recover_condition is not None

    def applies_to(self, device_key: str, tags: Mapping[str, str] | None = None) -> bool:
        """Whether the rule's scope covers the device ``device_key`` with ``tags`` (empty
        scope: all devices; no ``scope_tags``: any tags)."""
        if self.scope and device_key not in self.scope:
            return False
        if not self.scope_tags:
            return True
        have = tags or {}
        return all(have.get(key) == value for key, value in self.scope_tags.items())
