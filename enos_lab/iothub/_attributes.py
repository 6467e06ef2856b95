"""Attributes and tags (protocol reference 7.4), and the thing model template a device asks for.

Attributes are validated against the thing model (passthrough ones need EnOS identifiers,
1204), kept in the registry (the device record) and, with the time of the change, in the store;
a deletion stores a ``None`` value. Tags live in the registry only. Once kept, a change is told
to the tap (``AttributesChanged``, ``TagsChanged``; a deletion names only what existed).
``tsltemplate/get`` answers the device's thing model as EnOS renders it.
"""

from __future__ import annotations

from ..clock import Clock
from ..enos import ReplyCode, Request, TopicMatch
from ..errors import InvalidArgument
from ..model import normalise_tags, render_tsltemplate
from ..registry import Registry
from ..store import AttributeRow, TimeSeriesStore
from ._checks import check_ids
from ._emit import Emitter
from ._routes import OK, Result
from ._sessions import Conn

__all__ = ["Attributes"]


class Attributes:
    """The attribute, tag and thing model template handlers."""

    __slots__ = ("_clock", "_emit", "_registry", "_store")

    def __init__(
        self, registry: Registry, store: TimeSeriesStore, clock: Clock, emit: Emitter
    ) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self._emit = emit

    async def update(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.attribute.update``."""
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        code = ReplyCode.ATTRIBUTE_UPDATE_FORMAT_ERROR
        params = request.params
        values = params.get("attributes") if isinstance(params, dict) else None
        if not isinstance(values, dict):
            return (code, None, "params.attributes must be a JSON object")
        if target.model is not None:
            values = target.model.validate_attributes(values)
        check_ids(values, "attribute")  # passthrough ones too
        before = self._registry.get_device(*target.ident).attributes
        try:
            self._registry.update_attributes(*target.ident, values)
        except InvalidArgument as exc:
            return (code, None, str(exc))
        now = self._clock.time_ms()
        rows = [AttributeRow(*target.ident, key, now, value) for key, value in values.items()]
        if rows:
            await self._store.append_attributes_async(rows)
            previous = {key: before[key] for key in values if key in before}
            self._emit.attributes(target.ident, now, values, previous=previous)
        return OK

    async def query(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.attribute.query``: the named attributes (none named: all)."""
        keys = (match.product_key, match.device_key)
        params = request.params
        ids = params.get("attributes") if isinstance(params, dict) else None
        if ids is None and (params is None or params == {}):
            ids = []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return (
                ReplyCode.ATTRIBUTE_QUERY_FORMAT_ERROR,
                None,
                "params.attributes must be a list of attribute ids",
            )
        attributes = self._registry.get_device(*keys).attributes
        if not ids:
            return (ReplyCode.SUCCESS, dict(attributes), None)
        return (ReplyCode.SUCCESS, {i: attributes[i] for i in ids if i in attributes}, None)

    async def delete(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.attribute.delete``."""
        keys = (match.product_key, match.device_key)
        params = request.params
        ids = params.get("attributes") if isinstance(params, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return (
                ReplyCode.ATTRIBUTE_DELETE_FORMAT_ERROR,
                None,
                "params.attributes must be a list of attribute ids",
            )
        existing = self._registry.get_device(*keys).attributes
        gone = [i for i in ids if i in existing]
        if gone:
            self._registry.delete_attributes(*keys, gone)
            now = self._clock.time_ms()
            await self._store.append_attributes_async(
                [AttributeRow(*keys, i, now, None) for i in gone]
            )
            self._emit.attributes(keys, now, deleted=gone, previous={i: existing[i] for i in gone})
        return OK

    async def tag_update(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.tag.update``."""
        tags = normalise_tags(request.params)
        keys = (match.product_key, match.device_key)
        before = self._registry.get_device(*keys).tags
        self._registry.update_tags(*keys, tags)
        self._emit.tags(keys, tags, previous={k: before[k] for k in tags if k in before})
        return OK

    async def tag_query(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.tag.query``: the named tags (none named: all)."""
        keys = _tag_keys(request)
        if keys is None:
            return (ReplyCode.PARSE_ERROR, None, "params.tags must be a list of tag keys")
        tags = self._registry.get_device(match.product_key, match.device_key).tags
        data = dict(tags) if not keys else {k: tags[k] for k in keys if k in tags}
        return (ReplyCode.SUCCESS, data, None)

    async def tag_delete(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.tag.delete``."""
        keys = _tag_keys(request)
        if keys is None:
            return (ReplyCode.PARSE_ERROR, None, "params.tags must be a list of tag keys")
        if keys:
            device = (match.product_key, match.device_key)
            existing = self._registry.get_device(*device).tags
            self._registry.delete_tags(*device, keys)
            gone = [k for k in keys if k in existing]
            self._emit.tags(device, deleted=gone, previous={k: existing[k] for k in gone})
        return OK

    async def tsl_template(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``thing.tsltemplate.get``: the device's thing model."""
        target = conn.target((match.product_key, match.device_key))
        assert target is not None
        if target.model is None:
            return (ReplyCode.PARSE_ERROR, None, f"product {match.product_key} has no thing model")
        return (ReplyCode.SUCCESS, render_tsltemplate(target.model), None)


def _tag_keys(request: Request) -> list[str] | None:
    params = request.params
    keys = params.get("tags", []) if isinstance(params, dict) else params
    if params is None:
        keys = []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return None
    return keys
