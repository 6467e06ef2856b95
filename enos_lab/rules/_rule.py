"""Rules: what a message must be to match, the condition it must meet, what it becomes, and
where it goes.

A :class:`Rule` is frozen and checked when it is built: its selectors, its condition and its
transforms are compiled at once (:func:`~enos_lab.rules.compile_expression`, without types:
the syntax and the shape of every expression), so that a bad rule fails when it is defined
with an :class:`~enos_lab.errors.ExpressionError` naming the rule and the column. The rule
engine compiles them again against the thing models the rule names (types).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

from ..clock import to_epoch_ms
from ..errors import InvalidArgument
from ._expression import Expression, compile_expression

__all__ = [
    "DEFAULT_RULES",
    "REPUBLISH_PREFIX",
    "Action",
    "Call",
    "MessageKind",
    "Republish",
    "Rule",
    "RuleMatch",
    "Store",
    "default_rules",
]

REPUBLISH_PREFIX = "/lab/rules/"
"""Every :class:`Republish` topic starts with it: a namespace outside EnOS's ``/sys/`` and
``/ext/`` topics, which devices cannot publish on (unless a product grants it as a custom
topic: don't)."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class MessageKind(StrEnum):
    """What a rule selects: stored measurepoints, posted events, attribute changes or presence
    changes (the tap's ``PointStored``, ``EventPosted``, ``AttributesChanged``,
    ``PresenceChanged``)."""

    MEASUREPOINT = "measurepoint"
    EVENT = "event"
    ATTRIBUTE = "attribute"
    PRESENCE = "presence"


@dataclass(frozen=True, slots=True)
class Store:
    """Store the matched measurepoints (with the store's storage policies) and the rule's
    derived points; ``derived_only``: the derived points only. Measurepoint rules only."""

    derived_only: bool = False


@dataclass(frozen=True, slots=True)
class Republish:
    """Publish each match as JSON (:meth:`RuleMatch.to_json`) on ``topic`` through the hub.

    ``topic`` starts with :data:`REPUBLISH_PREFIX` and may hold ``{productKey}``,
    ``{deviceKey}``, ``{kind}`` and ``{id}`` (the point, event or ``presence``), filled in per
    match; ``qos`` 0 or 1. Devices read it by subscribing to it as a custom topic of their
    product with permission ``subscribe``.
    """

    topic: str
    qos: int = 0

    def __post_init__(self) -> None:
        topic = self.topic
        if not isinstance(topic, str) or not topic.startswith(REPUBLISH_PREFIX):
            raise InvalidArgument(
                f"Republish: the topic must start with {REPUBLISH_PREFIX!r}, got {topic!r}"
            )
        if "+" in topic or "#" in topic or "\0" in topic or len(topic) > 512:
            raise InvalidArgument(
                f"Republish: {topic!r} is not a topic name (no wildcards, at most 512 chars)"
            )
        if self.qos not in (0, 1) or isinstance(self.qos, bool):
            raise InvalidArgument(f"Republish: qos must be 0 or 1, got {self.qos!r}")


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``function(match)`` (a :class:`RuleMatch`) on the lab's event loop for each match.

    Keep it quick. Its exceptions are counted and logged once per rule, never raised. A
    function cannot be written to a file: saved rules keep its name only, and loading them
    drops it (add the rule again with the function).
    """

    function: Callable[[RuleMatch], object]

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise InvalidArgument(f"Call: expected a callable, got {self.function!r}")

    @property
    def name(self) -> str:
        """The function's module and qualified name (what files keep)."""
        fn = self.function
        module = getattr(fn, "__module__", None) or "?"
        return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


Action: TypeAlias = Store | Republish | Call
"""What a rule does with a match."""


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One message a rule matched: the rule's ``name``, the ``kind``, the device's keys,
    ``time`` (tz-aware UTC), the message's ``values`` (points of one post, an event's outputs,
    the changed attributes, ``{"online", "reason"}``), ``ids`` (the matched points, the event,
    the attributes, ``("presence",)``) and ``derived`` (the transform's values)."""

    rule: str
    kind: MessageKind
    product_key: str
    device_key: str
    time: datetime
    ids: tuple[str, ...]
    values: Mapping[str, Any]
    derived: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def to_json(self) -> dict[str, Any]:
        """The match as a JSON object (times as epoch milliseconds, EnOS's ``time``). [ms]"""
        return {
            "rule": self.rule,
            "kind": self.kind.value,
            "productKey": self.product_key,
            "deviceKey": self.device_key,
            "time": to_epoch_ms(self.time),
            "ids": list(self.ids),
            "values": {k: _jsonable(v) for k, v in self.values.items()},
            "derived": {k: _jsonable(v) for k, v in self.derived.items()},
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)


def _ids(value: Any, what: str, rule: str, pattern: re.Pattern[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise InvalidArgument(f"rule {rule!r}: {what} must be a list of strings, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item or (pattern and not pattern.match(item)):
            raise InvalidArgument(f"rule {rule!r}: {what}: {item!r} is not a valid id")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule of the rule engine (see :mod:`enos_lab.rules`).

    ``name``: 1..64 letters, digits, ``_ . -``; unique in a rule set. ``kind``: a
    :class:`MessageKind` (or its value). Selectors (empty: any): ``products`` (product keys),
    ``models`` (thing model ids), ``devices`` (device keys), ``tags`` (every tag must have
    this value on the device), ``points`` (point ids; for events the event ids, for attribute
    changes the attribute ids). ``condition``: a boolean expression over the message's values
    and the device's attributes (``None``: always). ``transform``: derived values, id ->
    expression (``{"power_kw": "${power} / 1000"}``): for measurepoint rules, derived points
    at the message's time. ``actions``: :class:`Store`, :class:`Republish`, :class:`Call`.
    ``enabled``: a disabled rule matches nothing. Raises
    :class:`~enos_lab.errors.ExpressionError` (rule name and column) or
    :class:`~enos_lab.errors.InvalidArgument`.
    """

    name: str
    kind: MessageKind = MessageKind.MEASUREPOINT
    products: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    points: tuple[str, ...] = ()
    condition: str | None = None
    transform: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    actions: tuple[Action, ...] = (Store(),)
    enabled: bool = True
    description: str = ""
    compiled_condition: Expression | None = field(default=None, compare=False, repr=False)
    compiled_transform: tuple[tuple[str, Expression], ...] = field(
        default=(), compare=False, repr=False
    )
    device_set: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)
    """``devices`` as a set (what the engine looks devices up in)."""
    point_set: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)
    """``points`` as a set."""
    keeps_points: bool = field(default=False, init=False, compare=False, repr=False)
    """Whether a match stores the matched points themselves (a :class:`Store` without
    ``derived_only``); set from ``actions``."""

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgument(
                f"rule name {name!r}: expected 1..64 letters, digits, '_', '.' or '-'"
            )
        try:
            kind = MessageKind(self.kind)
        except ValueError:
            kinds = ", ".join(k.value for k in MessageKind)
            raise InvalidArgument(
                f"rule {name!r}: unknown kind {self.kind!r} (one of {kinds})"
            ) from None
        set_ = object.__setattr__
        set_(self, "kind", kind)
        set_(self, "products", _ids(self.products, "products", name, None))
        set_(self, "models", _ids(self.models, "models", name, None))
        set_(self, "devices", _ids(self.devices, "devices", name, None))
        set_(self, "device_set", frozenset(self.devices))
        set_(self, "points", _ids(self.points, "points", name, None))
        set_(self, "point_set", frozenset(self.points))
        if not isinstance(self.tags, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()
        ):
            raise InvalidArgument(f"rule {name!r}: tags must map strings to strings")
        set_(self, "tags", MappingProxyType(dict(self.tags)))
        if not isinstance(self.enabled, bool) or not isinstance(self.description, str):
            raise InvalidArgument(f"rule {name!r}: enabled is a bool and description a string")
        actions = self.actions
        if not isinstance(actions, Iterable) or isinstance(actions, (str, Mapping)):
            raise InvalidArgument(f"rule {name!r}: actions must be a list, got {actions!r}")
        actions = tuple(actions)
        for action in actions:
            if not isinstance(action, (Store, Republish, Call)):
                raise InvalidArgument(
                    f"rule {name!r}: {action!r} is not an action (Store, Republish or Call)"
                )
            if isinstance(action, Store) and kind is not MessageKind.MEASUREPOINT:
                raise InvalidArgument(
                    f"rule {name!r}: Store() applies to measurepoint rules only ({kind.value}s "
                    "are always stored)"
                )
        set_(self, "actions", actions)
        keeps = any(isinstance(a, Store) and not a.derived_only for a in actions)
        set_(self, "keeps_points", keeps)
        condition = None
        if self.condition is not None:
            if not isinstance(self.condition, str):
                raise InvalidArgument(f"rule {name!r}: condition must be a string or None")
            condition = compile_expression(self.condition, name=name)
        set_(self, "compiled_condition", condition)
        transform = self.transform
        if not isinstance(transform, Mapping):
            raise InvalidArgument(f"rule {name!r}: transform must map ids to expressions")
        if transform and kind is not MessageKind.MEASUREPOINT:
            raise InvalidArgument(f"rule {name!r}: transforms apply to measurepoint rules only")
        compiled = []
        for derived_id, text in transform.items():
            if not isinstance(derived_id, str) or not _ID.match(derived_id):
                raise InvalidArgument(
                    f"rule {name!r}: derived point id {derived_id!r} is not an EnOS identifier"
                )
            if not isinstance(text, str):
                raise InvalidArgument(
                    f"rule {name!r}: transform {derived_id!r} must be an expression string"
                )
            compiled.append((derived_id, compile_expression(text, name=name, boolean=False)))
        set_(self, "transform", MappingProxyType(dict(transform)))
        set_(self, "compiled_transform", tuple(compiled))

    @property
    def stores(self) -> bool:
        """Whether the rule has a :class:`Store` action."""
        return any(isinstance(a, Store) for a in self.actions)

    @property
    def stores_everything(self) -> bool:
        """Whether the rule stores every measurepoint, unchanged (the default rule's shape)."""
        return (
            self.enabled
            and self.kind is MessageKind.MEASUREPOINT
            and not (self.products or self.models or self.devices or self.tags or self.points)
            and self.condition is None
            and self.keeps_points
        )

    @property
    def acts_on_tap(self) -> bool:
        """Whether the rule has an action other than :class:`Store` (run from the tap)."""
        return self.enabled and any(not isinstance(a, Store) for a in self.actions)


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        "store-all",
        description="Store every measurepoint that validates (the default rule set).",
    ),
)
"""The default rule set: one rule, ``store-all``, that stores every valid measurepoint."""


def default_rules() -> list[Rule]:
    """A copy of :data:`DEFAULT_RULES` as a list."""
    return list(DEFAULT_RULES)
