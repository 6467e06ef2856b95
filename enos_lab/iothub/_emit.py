"""What the IoT hub services tell the device-data tap, each event once what it describes is kept.

Theory of operation
-------------------
Every part of the services that keeps device data calls one method of :class:`Emitter` right
after the keeping is done, and that method alone decides whether an event is built at all: one
:meth:`~enos_lab.tap.Tap.wants` check (a set lookup) per call, so with no consumer a committed
batch of points costs one check. Who calls what, and when:

======================  ================================================================
``PointStored``         the batcher's commit task, after the store committed the batch
                        (device posts, resumes, batches, the integration channel); rows the
                        store refused are not reported
``EventPosted``         events and integration events, after the store committed them
``AttributesChanged``   attribute update/delete and integration attributes, after the
                        registry and the store have them; a sub-device registered by its
                        gateway with ``deviceAttributes``, after the registry has it
``TagsChanged``         tag update/delete, after the registry has them
``CommandSent``         a command handed to the device's (or its gateway's) connection
``CommandReplied``      every decodable reply of a device to a command, as it arrives
``OtaReported``         OTA inform, and progress the OTA handler accepted (200)
``DeviceActivated``     a direct device confirmed its dynamic activation; a sub-device's
                        login issued its secret
``PresenceChanged``     held until the presence log is written (below)
``DeviceLoggedIn``      held likewise: a login is recorded by its presence row
======================  ================================================================

Requests the services refuse (an error reply: malformed JSON, a post failing the model, no write
permission, ...) keep nothing; :meth:`Emitter.refused` tells them as ``RequestRefused`` (built
only while someone wants it, as every event).

Presence changes are queued in the registry and written once per event-loop iteration
(:class:`~enos_lab.iothub._sessions.Sessions`). Their events, and the logins they record, are
*held* here when they happen (:meth:`Emitter.presence`, :meth:`Emitter.logged_in`) and handed
to the tap in order by :meth:`Emitter.release` once the sessions wrote the queue, so that a
consumer reading the presence log or the device record sees the change.

Times: a point's or an event's own event time; for everything else the clock's time when the
services recorded it. Mappings in events are read-only views.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ..clock import Clock, SystemClock, from_epoch_ms
from ..enos import Reply, TopicMatch
from ..registry import Registry
from ..tap import (
    AttributesChanged,
    CommandReplied,
    CommandSent,
    DeviceActivated,
    DeviceLoggedIn,
    EventPosted,
    OtaReported,
    PointStored,
    PresenceChanged,
    RequestRefused,
    TagsChanged,
    Tap,
    TapEvent,
)

__all__ = ["Emitter"]

log = logging.getLogger(__name__)

Keys = tuple[str, str]  # (product_key, device_key)


class Emitter:
    """The services' way into the tap (see the module docstring); ``tap`` is the tap itself.

    Use it on the services' event loop only.
    """

    __slots__ = ("_clock", "_held", "tap")

    def __init__(self, tap: Tap, clock: Clock) -> None:
        self.tap = tap
        self._clock = clock
        self._held: list[TapEvent] = []

    @classmethod
    def idle(cls) -> Emitter:
        """An emitter to a tap of its own, which nobody consumes (for parts built alone)."""
        return cls(Tap(), SystemClock())

    def _now(self) -> datetime:
        return from_epoch_ms(self._clock.time_ms())

    # -- kept by the store ---------------------------------------------------------------

    def points(self, rows: Iterable[Sequence[Any]]) -> None:
        """The committed rows (:class:`~enos_lab.store.PointRow` s or their plain 7-tuples),
        reported with :meth:`~enos_lab.tap.Tap.emit_points`: as they are to the consumers of
        rows, as ``PointStored`` events to the others."""
        tap = self.tap
        if not tap.wants(PointStored):
            return
        tap.emit_points(rows if isinstance(rows, list) else list(rows))  # type: ignore[arg-type]

    def events(self, rows: Iterable[Sequence[Any]]) -> None:
        """``EventPosted`` for each committed :class:`~enos_lab.store.EventRow`."""
        tap = self.tap
        if not tap.wants(EventPosted):
            return
        for pk, dk, event_id, at_ms, outputs, severity in rows:
            tap.emit(EventPosted(pk, dk, event_id, from_epoch_ms(at_ms), _view(outputs), severity))

    def attributes(
        self,
        keys: Keys,
        at_ms: int,
        values: Mapping[str, Any] | None = None,
        deleted: Sequence[str] = (),
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """``AttributesChanged`` reported by the device (or its integration channel): the
        registry and the store have the change (at ``at_ms``), ``previous`` the values it
        replaced; nothing for no change. [ms since the epoch]"""
        tap = self.tap
        if not tap.wants(AttributesChanged) or not (values or deleted):
            return
        tap.emit(
            AttributesChanged(
                *keys,
                from_epoch_ms(at_ms),
                _view(values or {}),
                tuple(deleted),
                "device",
                _view(previous or {}),
            )
        )

    # -- kept by the registry, the OTA handler, or nowhere (replies) -------------------------

    def tags(
        self,
        keys: Keys,
        values: Mapping[str, str] | None = None,
        deleted: Sequence[str] = (),
        previous: Mapping[str, str] | None = None,
    ) -> None:
        """``TagsChanged`` reported by the device: the registry has the change, ``previous``
        the values it replaced; nothing for no change."""
        tap = self.tap
        if not tap.wants(TagsChanged) or not (values or deleted):
            return
        tap.emit(
            TagsChanged(
                *keys,
                self._now(),
                _view(values or {}),
                tuple(deleted),
                "device",
                _view(previous or {}),
            )
        )

    def command_sent(self, keys: Keys, command: str, item_id: str, request_id: str) -> None:
        """``CommandSent``: the command ``request_id`` is with the device's connection."""
        tap = self.tap
        if not tap.wants(CommandSent):
            return
        tap.emit(CommandSent(*keys, self._now(), command, item_id, request_id))

    def command_replied(self, match: TopicMatch, reply: Reply) -> None:
        """``CommandReplied``: a device's reply on the reply topic of the command ``match``."""
        tap = self.tap
        if not tap.wants(CommandReplied):
            return
        tap.emit(
            CommandReplied(
                match.product_key,
                match.device_key,
                self._now(),
                match.kind.name,
                match.item_id,
                reply.id,
                reply.code,
                reply.data,
                reply.message,
            )
        )

    def ota(
        self,
        keys: Keys,
        report: str,
        *,
        version: str | None = None,
        step: str | None = None,
        desc: str | None = None,
    ) -> None:
        """``OtaReported``: ``report`` is ``"inform"`` or ``"progress"``, accepted by the OTA
        handler."""
        tap = self.tap
        if not tap.wants(OtaReported):
            return
        tap.emit(OtaReported(*keys, self._now(), report, version, step, desc))

    def activated(self, keys: Keys) -> None:
        """``DeviceActivated``: the device has the secret the registry issued."""
        tap = self.tap
        if not tap.wants(DeviceActivated):
            return
        tap.emit(DeviceActivated(*keys, self._now()))

    def refused(self, keys: Keys, kind: str, code: int) -> None:
        """A request of the device ``keys`` (the topic's device, or the connection's when the
        request was not readable or not allowed) on a topic of ``kind`` (a
        :class:`~enos_lab.enos.TopicKind` name) was answered with the error ``code``:
        ``RequestRefused``."""
        tap = self.tap
        if tap.wants(RequestRefused):
            tap.emit(RequestRefused(*keys, self._now(), kind, int(code)))

    # -- held until the presence log is written ----------------------------------------------

    def presence(self, keys: Keys, online: bool, reason: str) -> None:
        """Hold a ``PresenceChanged`` for the change just queued in the registry."""
        if self.tap.wants(PresenceChanged):
            self._held.append(PresenceChanged(*keys, self._now(), online, reason))

    def logged_in(
        self, keys: Keys, client_id: str, secure_mode: int, gateway: Keys | None = None
    ) -> None:
        """Hold a ``DeviceLoggedIn`` (``gateway``: of a sub-device login) until the presence
        change that records it is written."""
        if self.tap.wants(DeviceLoggedIn):
            self._held.append(DeviceLoggedIn(*keys, self._now(), client_id, secure_mode, gateway))

    def release(self, kept: bool = True) -> None:
        """Hand the held events to the tap, in order, once the registry wrote the presence
        changes (``kept``); forget them when it could not."""
        held = self._held
        if not held:
            return
        self._held = []
        if kept:
            self.tap.emit_many(held)

    def presence_closed(self, registry: Registry, reason: str) -> None:
        """Record an offline row with ``reason`` for every device the registry marks online
        (:meth:`~enos_lab.registry.Registry.close_open_presence`) and a ``PresenceChanged`` for
        each, once written."""
        online = (
            [(d.product_key, d.device_key) for d in registry.devices() if d.online]
            if self.tap.wants(PresenceChanged)
            else []
        )
        registry.close_open_presence(reason)
        if online:
            at = self._now()
            self.tap.emit_many(PresenceChanged(*keys, at, False, reason) for keys in online)


def _view(mapping: Any) -> Any:
    """A read-only view of a dict (what the store kept), anything else as it is."""
    return MappingProxyType(mapping) if isinstance(mapping, dict) else mapping
