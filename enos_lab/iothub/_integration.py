"""The message integration channel (protocol reference 11): a product's data sent by a
system on behalf of its devices.

A channel logs in with secure mode 4 (user name ``%channel%&{productKey}``, signed with the
product secret) and posts measurepoints, events and attributes of any device of its product,
each entry naming its device (1257 for an unknown one). Measurepoints are stored as resumed
data (``resume``: they fill history without overwriting newer latest values), through the same
batcher and row checks as the devices' own posts; events (with the severity of their type in the
thing model) and attributes as their topics store them. The tap hears of each as of the devices'
own posts.
"""

from __future__ import annotations

from typing import Any

from ..clock import Clock
from ..enos import ReplyCode, Request, TopicMatch
from ..errors import ValidationError
from ..registry import Registry
from ..store import AttributeRow, EventRow, PointRow, TimeSeriesStore
from ._checks import bad_time, check_ids, event_time
from ._emit import Emitter
from ._events import severity
from ._measurepoints import PointBatcher, point_rows
from ._routes import OK, Result
from ._sessions import Conn, Sessions, Target

__all__ = ["Integration"]


class Integration:
    """The integration channel's request handlers."""

    __slots__ = ("_batcher", "_clock", "_emit", "_registry", "_sessions", "_store")

    def __init__(  # noqa: PLR0917
        self,
        registry: Registry,
        store: TimeSeriesStore,
        sessions: Sessions,
        batcher: PointBatcher,
        clock: Clock,
        emit: Emitter,
    ) -> None:
        self._registry = registry
        self._store = store
        self._sessions = sessions
        self._batcher = batcher
        self._clock = clock
        self._emit = emit

    def _entries(
        self, match: TopicMatch, request: Request
    ) -> list[tuple[Target, dict[str, Any]]] | Result:
        params = request.params
        if params is None:
            params = []
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            return (ReplyCode.PARSE_ERROR, None, "params must be a list of objects")
        product = self._registry.get_product(match.product_key)
        model = self._sessions.model(product)
        out = []
        for entry in params:
            dk = entry.get("deviceKey")
            device = (
                self._registry.find_device(match.product_key, dk) if isinstance(dk, str) else None
            )
            if device is None:
                return (
                    ReplyCode.DEVICE_NOT_FOUND,
                    None,
                    f"device {match.product_key}/{dk} not found",
                )
            out.append((Target(product, (device.product_key, device.device_key), model), entry))
        return out

    async def measurepoints(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``integration.measurepoint.post``: stored as resumed data."""
        entries = self._entries(match, request)
        if isinstance(entries, tuple):
            return entries
        rows: list[PointRow] = []
        for target, entry in entries:
            at = event_time(entry, self._clock)
            points = entry.get("measurepoints")
            if at is None or not isinstance(points, dict):
                problem = bad_time(entry) if at is None else "measurepoints must be an object"
                return (ReplyCode.MEASUREPOINT_FORMAT_ERROR, None, problem)
            result = point_rows(target, points, at, True, skip=False)
            if isinstance(result, ValidationError):
                return (result.code, None, str(result))
            rows.extend(result)
        if rows:
            await self._batcher.add(rows)
        return OK

    async def events(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``integration.event.post``."""
        entries = self._entries(match, request)
        if isinstance(entries, tuple):
            return entries
        rows: list[EventRow] = []
        for target, entry in entries:
            at = event_time(entry, self._clock)
            events = entry.get("events")
            if at is None or not isinstance(events, dict):
                problem = bad_time(entry) if at is None else "events must be an object"
                return (ReplyCode.MODEL_VALIDATION_FAILED, None, problem)
            for event_id, raw in events.items():
                outputs = raw
                if target.model is not None:
                    outputs = target.model.validate_event(event_id, raw)
                else:  # passthrough: EnOS identifiers all the same
                    check_ids((event_id,), "event")
                    if isinstance(raw, dict):
                        check_ids(raw, "event output")
                rows.append(
                    EventRow(*target.ident, event_id, at, outputs, severity(target.model, event_id))
                )
        if rows:
            await self._store.append_events_async(rows)
            self._emit.events(rows)
        return OK

    async def attributes(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``integration.attribute.post``."""
        entries = self._entries(match, request)
        if isinstance(entries, tuple):
            return entries
        rows: list[AttributeRow] = []
        changed: list[tuple[tuple[str, str], dict[str, Any], dict[str, Any]]] = []
        now = self._clock.time_ms()
        for target, entry in entries:
            values = entry.get("attributes")
            if not isinstance(values, dict):
                return (
                    ReplyCode.ATTRIBUTE_UPDATE_FORMAT_ERROR,
                    None,
                    "attributes must be an object",
                )
            if target.model is not None:
                values = target.model.validate_attributes(values)
            check_ids(values, "attribute")  # passthrough ones too
            before = self._registry.get_device(*target.ident).attributes
            self._registry.update_attributes(*target.ident, values)
            rows.extend(AttributeRow(*target.ident, k, now, v) for k, v in values.items())
            changed.append((target.ident, values, {k: before[k] for k in values if k in before}))
        if rows:
            await self._store.append_attributes_async(rows)
            for keys, values, previous in changed:
                self._emit.attributes(keys, now, values, previous=previous)
        return OK
