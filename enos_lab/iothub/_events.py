"""Events (protocol reference 7.3): ``thing/event/{identifier}/post``.

An event's outputs are validated against the thing model (its event type is the stored
severity); a product without a model stores them as they came (passthrough), with EnOS
identifiers as the event and output ids all the same (1204). The event time must lie in the
store's range (1204). Stored before the reply; then the tap hears of it (``EventPosted``).
"""

from __future__ import annotations

from ..clock import Clock
from ..enos import ReplyCode, Request, TopicMatch
from ..model import ThingModel
from ..store import EventRow, TimeSeriesStore
from ._checks import bad_time, check_ids, event_time
from ._emit import Emitter
from ._routes import OK, Result
from ._sessions import Conn

__all__ = ["Events", "severity"]


def severity(model: ThingModel | None, event_id: str) -> str | None:
    """The stored severity of an event: its type in the thing model (``INFO``, ``WARN``,
    ``ERROR``), or ``None`` without a model or for an event the model does not define."""
    event = model.events.get(event_id) if model is not None else None
    return event.event_type.value if event is not None else None


class Events:
    """The event handler."""

    __slots__ = ("_clock", "_emit", "_store")

    def __init__(self, store: TimeSeriesStore, clock: Clock, emit: Emitter) -> None:
        self._store = store
        self._clock = clock
        self._emit = emit

    async def post(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.event.{identifier}.post``: one event of one device."""
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        params = request.params
        if not isinstance(params, dict):
            return (ReplyCode.MODEL_VALIDATION_FAILED, None, "params must be a JSON object")
        at = event_time(params, self._clock)
        if at is None:
            return (ReplyCode.MODEL_VALIDATION_FAILED, None, bad_time(params))
        if "events" in params:
            outputs = params["events"]
        else:
            outputs = {k: v for k, v in params.items() if k != "time"}
        model = target.model
        if model is not None:
            outputs = model.validate_event(match.item_id, outputs)
        elif not isinstance(outputs, dict):
            return (ReplyCode.MODEL_VALIDATION_FAILED, None, "events must be a JSON object")
        else:  # passthrough: EnOS identifiers all the same
            check_ids((match.item_id,), "event")
            check_ids(outputs, "event output")
        pk, dk = target.ident
        rows = [EventRow(pk, dk, match.item_id, at, outputs, severity(model, match.item_id))]
        await self._store.append_events_async(rows)
        self._emit.events(rows)
        return OK
