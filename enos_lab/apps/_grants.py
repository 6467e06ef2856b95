"""What an application may read: grants over device topics, as MQTT topic patterns.

Theory of operation
-------------------
A :class:`Grant` names a product, optionally some of its devices (``None``: all of them, those
registered later included) and kinds of uplink data (:data:`APP_KINDS`). It stands for a
finite set of topic patterns, one per device (``+`` for all) and topic
(:func:`grant_patterns`), for instance ``/sys/{pk}/+/thing/measurepoint/post`` and
``/sys/{pk}/+/thing/event/+/post``; the patterns only have ``+`` (never ``#``) at the device
and event id levels.

A topic filter is *within* the grants (:func:`filter_within`) when every topic it matches is
matched by a pattern. For patterns of fixed length with ``+`` at some levels this holds exactly
when the filter has no ``#`` (which matches topics of any depth, beyond every pattern) and one
pattern covers it level by level: its literal levels equal the filter's and the filter has
``+`` only where that pattern has ``+`` (a union of such patterns covers a filter only if one
of them does: a topic with fresh names at the filter's ``+`` levels matches no literal). A topic
is readable (:func:`topic_granted`) when a pattern matches it (the one topic matcher,
:func:`enos_lab.mqtt.topic_matches`).

Only uplink topics are granted: what devices publish (measurepoints posted and resumed, events,
attribute and tag reports, OTA reports). Batch posts (``post/batch``, ``resume/batch``) are
not: a gateway's batch carries its sub-devices' data, of other products, on the gateway's own
topic. Commands and their replies are not either: commands go from the lab to one device's
connection, never through subscriptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..enos import TopicKind
from ..errors import InvalidArgument
from ..mqtt import topic_matches

__all__ = [
    "APP_KINDS",
    "DEFAULT_APP_KINDS",
    "Grant",
    "filter_within",
    "grant_patterns",
    "topic_granted",
]

APP_KINDS: dict[str, tuple[TopicKind, ...]] = {
    "measurepoint": (TopicKind.MEASUREPOINT_POST, TopicKind.MEASUREPOINT_RESUME),
    "event": (TopicKind.EVENT_POST,),
    "attribute": (TopicKind.ATTRIBUTE_UPDATE, TopicKind.ATTRIBUTE_DELETE),
    "tag": (TopicKind.TAG_UPDATE, TopicKind.TAG_DELETE),
    "ota": (TopicKind.OTA_INFORM, TopicKind.OTA_PROGRESS),
}
"""The kinds of device data a grant may name, and the uplink topics of each."""

DEFAULT_APP_KINDS = ("measurepoint", "event", "attribute")
"""The kinds a grant names when it names none."""

_FORBIDDEN = frozenset("+#/&%")  # in a key, a pattern would mean another topic


@dataclass(frozen=True, slots=True)
class Grant:
    """Read access to the uplink topics of ``kinds`` (:data:`APP_KINDS`) of the devices
    ``device_keys`` of the product ``product_key`` (``None``: every device of it)."""

    product_key: str
    device_keys: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = DEFAULT_APP_KINDS

    def __post_init__(self) -> None:
        _check_key("product_key", self.product_key)
        devices: object = self.device_keys
        if devices is not None:
            if isinstance(devices, str) or not isinstance(devices, Iterable) or not devices:
                raise InvalidArgument(
                    f"device_keys must be a non-empty list of device keys or None (every "
                    f"device), got {self.device_keys!r}"
                )
            keys = tuple(dict.fromkeys(devices))
            for key in keys:
                _check_key("device key", key)
            object.__setattr__(self, "device_keys", keys)
        given: object = self.kinds
        kinds = (given,) if isinstance(given, str) else given
        if not isinstance(kinds, Iterable):
            raise InvalidArgument(f"grant kinds must be a list of kind names, got {given!r}")
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in APP_KINDS]
        if unknown or not kinds:
            raise InvalidArgument(
                f"grant kinds must be some of {', '.join(APP_KINDS)}, got {self.kinds!r}"
            )
        object.__setattr__(self, "kinds", tuple(dict.fromkeys(kinds)))

    @classmethod
    def of(cls, grant: Grant | str | Mapping[str, Any]) -> Grant:
        """A grant from what users write: a :class:`Grant`, a product key (every device,
        :data:`DEFAULT_APP_KINDS`), or a mapping with ``product_key`` and optional
        ``device_keys`` and ``kinds``."""
        if isinstance(grant, Grant):
            return grant
        if isinstance(grant, str):
            return cls(grant)
        if isinstance(grant, Mapping):
            extra = set(grant) - {"product_key", "device_keys", "kinds"}
            if extra or "product_key" not in grant:
                raise InvalidArgument(
                    "a grant mapping takes product_key and optional device_keys and kinds, "
                    f"got {dict(grant)!r}"
                )
            devices = grant.get("device_keys")
            kinds = grant.get("kinds", DEFAULT_APP_KINDS)
            return cls(
                grant["product_key"],
                None if devices is None else _tuple(devices),
                _tuple(kinds),
            )
        raise InvalidArgument(f"expected a Grant, a product key or a mapping, got {grant!r}")

    def to_json(self) -> dict[str, Any]:
        """The grant as JSON data (:meth:`of` reads it back)."""
        return {
            "product_key": self.product_key,
            "device_keys": None if self.device_keys is None else list(self.device_keys),
            "kinds": list(self.kinds),
        }


def _tuple(value: object) -> tuple[Any, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    raise InvalidArgument(f"expected a list of strings, got {value!r}")


def _check_key(what: str, key: object) -> None:
    if not isinstance(key, str) or not key or _FORBIDDEN.intersection(key):
        raise InvalidArgument(f"{what} must be a non-empty key without + # / & %, got {key!r}")


def grant_patterns(grants: Iterable[Grant]) -> tuple[str, ...]:
    """The topic patterns the ``grants`` allow to read (see the module docstring)."""
    out: dict[str, None] = {}
    for grant in grants:
        for device_key in grant.device_keys or ("+",):
            for kind in grant.kinds:
                for topic_kind in APP_KINDS[kind]:
                    out[topic_kind.format(grant.product_key, device_key, "+")] = None
    return tuple(out)


def filter_within(topic_filter: str, patterns: Iterable[str]) -> bool:
    """Whether every topic ``topic_filter`` matches is matched by one of ``patterns`` (see the
    module docstring; a filter with ``#``, or a shared subscription's, never is)."""
    if "#" in topic_filter or topic_filter.startswith("$"):
        return False
    levels = topic_filter.split("/")
    for pattern in patterns:
        plevels = pattern.split("/")
        if len(plevels) == len(levels) and all(
            p in ("+", f) for f, p in zip(levels, plevels, strict=True)
        ):
            return True
    return False


def topic_granted(topic: str, patterns: Iterable[str]) -> bool:
    """Whether one of ``patterns`` matches ``topic``."""
    return any(topic_matches(pattern, topic) for pattern in patterns)
