"""What one device does on the wire: its upstream requests and its command handlers.

:class:`Endpoint` is shared by a :class:`~enos_lab.device.DeviceClient` (a device with its own
connection) and a :class:`~enos_lab.device.SubDevice` (a device behind a gateway, whose
requests travel on the gateway's connection with the sub-device's keys in the topic,
protocol reference 6). Each method builds the request of one topic of the catalogue
(:class:`~enos_lab.enos.TopicKind`) and returns the hub's reply, or raises
:class:`~enos_lab.errors.RequestFailed` (a code other than 200),
:class:`~enos_lab.errors.RequestTimeout` or :class:`~enos_lab.errors.NotConnected`.

Times (``time=``) are epoch milliseconds, tz-aware datetimes, or ``None`` for the client
clock's now (as the official SDKs stamp a post with the current time).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable, Mapping
from datetime import datetime
from typing import Any

from ..clock import Clock, to_epoch_ms
from ..enos import Reply, ReplyCode, TopicKind
from ..errors import CommandError, InvalidArgument
from ._handlers import Handlers
from ._types import Handler

__all__ = ["Endpoint", "event_time", "point_values"]


def event_time(time: int | datetime | None, clock: Clock) -> int:
    """``time`` as epoch milliseconds (``None``: the clock's now). [ms]"""
    if time is None:
        return clock.time_ms()
    if isinstance(time, datetime):
        return to_epoch_ms(time)
    if isinstance(time, bool) or not isinstance(time, int):
        raise InvalidArgument(
            f"time must be epoch milliseconds (int), a tz-aware datetime or None, got {time!r}"
        )
    return time


def point_values(
    values: Mapping[str, Any], quality: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The ``measurepoints`` map of a post: ``values``, with ``{"value": v, "quality": q}`` for
    the points that have a quality (protocol reference 7.1)."""
    points = dict(values)
    if quality:
        for point_id, code in quality.items():
            if point_id not in points:
                raise InvalidArgument(f"quality given for point {point_id!r}, which has no value")
            points[point_id] = {"value": points[point_id], "quality": code}
    return points


class Endpoint:
    """A device's upstream requests and command handlers (see the module docstring).

    ``product_key`` and ``device_key`` are the device's keys; subclasses send the requests
    (:meth:`_send`, :meth:`_send_raw`) and say which clock stamps them.
    """

    product_key: str
    device_key: str

    def __init__(self, product_key: str, device_key: str) -> None:
        if not product_key or not device_key:
            raise InvalidArgument(
                f"a device needs a product key and a device key, got {product_key!r} and "
                f"{device_key!r}"
            )
        self.product_key = product_key
        self.device_key = device_key
        self._handlers = Handlers()
        self._handlers.attribute_set = self._apply_cloud_change
        self._on_attribute_set: Handler | None = None
        self.cloud_attributes: dict[str, Any] = {}
        """The attributes the cloud set on this device while it was online
        (``thing.attribute.set``, a topic of the lab's own), as applied: set ones added,
        deleted ones removed. Starts empty: :meth:`query_attributes` reads them all."""
        self.cloud_tags: dict[str, str] = {}
        """The tags the cloud set on this device while it was online, as
        :attr:`cloud_attributes`."""

    @property
    def keys(self) -> tuple[str, str]:
        """``(product_key, device_key)``."""
        return (self.product_key, self.device_key)

    # -- to be provided by the subclass ---------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock that stamps requests and runs their timeouts."""
        raise NotImplementedError

    async def _send(
        self,
        kind: TopicKind,
        params: Any,
        *,
        item_id: str = "",
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        raise NotImplementedError

    async def _send_raw(self, payload: bytes, timeout: float | None) -> bytes:
        raise NotImplementedError

    # -- measurepoints and events (7.1, 7.3) ----------------------------------------------------

    async def post_measurepoints(
        self,
        values: Mapping[str, Any],
        time: int | datetime | None = None,
        *,
        resume: bool = False,
        quality: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Post measurepoint values (``thing.measurepoint.post``; with ``resume=True``
        ``thing.measurepoint.resume``: data collected while offline, which fills history
        without replacing newer latest values). ``quality`` maps point ids to quality codes.
        A 200 reply means the points are stored. [time: ms since the epoch]"""
        kind = TopicKind.MEASUREPOINT_RESUME if resume else TopicKind.MEASUREPOINT_POST
        params = {
            "measurepoints": point_values(values, quality),
            "time": event_time(time, self.clock),
        }
        return await self._send(kind, params, timeout=timeout)

    async def post_event(
        self,
        event_id: str,
        values: Mapping[str, Any],
        time: int | datetime | None = None,
        *,
        timeout: float | None = None,
    ) -> Reply:
        """Post event ``event_id`` of the thing model with its output values
        (``thing.event.{event_id}.post``). [time: ms since the epoch]"""
        params = {"events": dict(values), "time": event_time(time, self.clock)}
        return await self._send(TopicKind.EVENT_POST, params, item_id=event_id, timeout=timeout)

    async def post_raw(self, payload: bytes, *, timeout: float | None = None) -> bytes:
        """Send raw bytes on ``model/up_raw`` (a product of the custom data format, whose codec
        turns them into a request); returns the raw reply bytes (protocol reference 7.5)."""
        return await self._send_raw(bytes(payload), timeout)

    # -- attributes and tags (7.4) --------------------------------------------------------------

    async def update_attributes(
        self, values: Mapping[str, Any], *, timeout: float | None = None
    ) -> Reply:
        """Set attribute values (``thing.attribute.update``)."""
        params = {"attributes": dict(values)}
        return await self._send(TopicKind.ATTRIBUTE_UPDATE, params, timeout=timeout)

    async def query_attributes(
        self, ids: Iterable[str] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The device's attributes ``ids`` (``None``: all) as the hub keeps them."""
        params = {"attributes": list(ids or [])}
        reply = await self._send(TopicKind.ATTRIBUTE_QUERY, params, timeout=timeout)
        return dict(reply.data or {})

    async def delete_attributes(self, ids: Iterable[str], *, timeout: float | None = None) -> Reply:
        """Delete attributes ``ids`` (an empty list deletes nothing)."""
        params = {"attributes": list(ids)}
        return await self._send(TopicKind.ATTRIBUTE_DELETE, params, timeout=timeout)

    async def update_tags(self, tags: Mapping[str, str], *, timeout: float | None = None) -> Reply:
        """Set tags (``thing.tag.update``; values are sent as text)."""
        params = [{"tagKey": key, "tagValue": str(value)} for key, value in tags.items()]
        return await self._send(TopicKind.TAG_UPDATE, params, timeout=timeout)

    async def query_tags(
        self, ids: Iterable[str] | None = None, *, timeout: float | None = None
    ) -> dict[str, str]:
        """The device's tags ``ids`` (``None``: all)."""
        reply = await self._send(TopicKind.TAG_QUERY, {"tags": list(ids or [])}, timeout=timeout)
        return {str(key): str(value) for key, value in dict(reply.data or {}).items()}

    async def delete_tags(self, ids: Iterable[str], *, timeout: float | None = None) -> Reply:
        """Delete tags ``ids``."""
        return await self._send(TopicKind.TAG_DELETE, {"tags": list(ids)}, timeout=timeout)

    async def get_tsl_template(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The device's thing model as the hub renders it (``thing.tsltemplate.get``, protocol
        reference 12.2 b)."""
        reply = await self._send(TopicKind.TSL_TEMPLATE_GET, {}, timeout=timeout)
        return dict(reply.data or {})

    # -- firmware (10) ---------------------------------------------------------------------------

    async def report_version(self, version: str, *, timeout: float | None = None) -> Reply:
        """Report the firmware version (``ota.device.inform``; after each connect, and after an
        upgrade to say it succeeded)."""
        return await self._send(TopicKind.OTA_INFORM, {"version": version}, timeout=timeout)

    async def report_progress(
        self, step: int | str, desc: str = "", *, timeout: float | None = None
    ) -> Reply:
        """Report upgrade progress: ``step`` 0..100, or a failure -1 (undefined), -2 (download),
        -3 (verification), -4 (write), -5 (ignored); sent as text (``ota.device.progress``)."""
        params = {"step": str(step), "desc": desc}
        return await self._send(TopicKind.OTA_PROGRESS, params, timeout=timeout)

    async def query_firmware(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """The firmware the hub offers this device (``ota.device.getversion``): a list of
        ``{version, signMethod, sign, fileUrl, fileSize}`` objects."""
        reply = await self._send(TopicKind.OTA_GET_VERSION, {}, timeout=timeout)
        data = reply.data
        return [dict(item) for item in data] if isinstance(data, list) else []

    # -- command handlers (4.3, 9) ----------------------------------------------------------------

    def on_service(self, service_id: str, handler: Handler | None) -> None:
        """Answer service ``service_id`` with ``handler(params)`` (its result, or what its
        awaitable gives, is the reply's data); ``None`` removes it. A handler raises
        :class:`~enos_lab.errors.CommandError` to reply with its code. Legacy RRPC requests
        (``rrpc/request``) for the service reach the same handler."""
        if not service_id or service_id == "measurepoint":  # 6.2: never a service id
            raise InvalidArgument(f"invalid service id {service_id!r}")
        if handler is None:
            self._handlers.services.pop(service_id, None)
        else:
            self._handlers.services[service_id] = handler

    def on_measurepoint_set(self, handler: Handler | None) -> None:
        """Handle ``measurepoint/set``: ``handler({point_id: value})``; its result is
        ignored."""
        self._handlers.measurepoint_set = handler

    def on_measurepoint_get(self, handler: Handler | None) -> None:
        """Handle ``measurepoint/get``: ``handler([point_id, ...])`` returns
        ``{point_id: value}``."""
        self._handlers.measurepoint_get = handler

    def on_ota_upgrade(self, handler: Handler | None) -> None:
        """Handle ``ota/device/upgrade``: ``handler(firmware)`` with the firmware object
        ``{version, signMethod, sign, fileUrl, fileSize}``; report progress with
        :meth:`report_progress` and success with :meth:`report_version`."""
        self._handlers.ota_upgrade = handler

    def on_raw_down(self, handler: Handler | None) -> None:
        """Handle ``model/down_raw``: ``handler(payload: bytes)`` returns the raw reply
        bytes."""
        self._handlers.raw_down = handler

    def on_attribute_set(self, handler: Handler | None) -> None:
        """Be told of attribute and tag changes the cloud pushes (``thing.attribute.set``, the
        lab's own topic: EnOS documents none): ``handler(params)`` with
        ``{"attributes": {id: value}}``, ``{"deletedAttributes": [ids]}``, ``{"tags": {key:
        value}}`` or ``{"deletedTags": [keys]}``, after the change is applied to
        :attr:`cloud_attributes` / :attr:`cloud_tags` (which happens, and is answered 200,
        with no handler too); its result is ignored. ``None`` removes it."""
        self._on_attribute_set = handler

    def _apply_cloud_change(self, params: Any) -> Any:
        """``thing.attribute.set``: apply it, then call the user's handler."""
        if not isinstance(params, dict):
            raise CommandError(ReplyCode.PARSE_ERROR, f"params must be an object, got {params!r}")
        for name, target in (("attributes", self.cloud_attributes), ("tags", self.cloud_tags)):
            values = params.get(name)
            if isinstance(values, dict):
                target.update(values)
            deleted = params.get("deleted" + name.capitalize())
            if isinstance(deleted, list):
                for key in deleted:
                    if isinstance(key, str):
                        target.pop(key, None)
        handler = self._on_attribute_set
        if handler is None:
            return None
        result = handler(params)
        if inspect.isawaitable(result):
            return _ignored(result)
        return None

    def on_notification(self, handler: Handler | None) -> None:
        """Handle lifecycle notifications: ``handler(notification)`` with a
        :class:`~enos_lab.device.Notification` (a gateway hears of its sub-devices being
        enabled, disabled or deleted; ``combine.*``)."""
        self._handlers.notification = handler


async def _ignored(result: Awaitable[Any]) -> None:
    """Await a handler's awaitable result and drop it (the reply carries no data)."""
    await result
