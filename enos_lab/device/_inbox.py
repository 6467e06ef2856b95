"""What the hub sends a device client: replies, ``activate/info`` and commands.

:class:`Inbox` is the part of :class:`~enos_lab.device.DeviceClient` that handles every
PUBLISH of its connection (:meth:`Inbox._on_message`, called by gmqtt for each message):

- a reply (``..._reply``) resolves the request waiting for it
  (:class:`~enos_lab.device._pending.Pending`); one that answers nothing is dropped;
- ``activate/info`` (protocol reference 3) hands over the issued device secret, answered 200
  "device activate success" as the Python SDK does;
- a command (4.3, 9) goes to the handlers of the device it addresses: the client itself, or
  one of its sub-devices (the topic carries the sub-device's keys); ``combine.*`` and
  ``thing.enable/disable/delete`` are notifications. Sync handlers run inline; an awaitable
  result runs in a task the client owns (at most ``max_commands``; beyond, the command is
  answered 429 "too many requests", the Python SDK's code). The reply goes out on the command's
  reply topic (:func:`~enos_lab.enos.command_reply_topic`) at QoS 1, on the connection the
  command came on, with the code of :mod:`~enos_lab.device._handlers`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..enos import (
    REPLY_SUFFIX,
    Direction,
    EnvelopeError,
    ReplyCode,
    TopicKind,
    TopicMatch,
    command_reply_topic,
    decode_reply,
    decode_request,
    encode_reply,
    parse_topic,
)
from ._connection import Connection
from ._handlers import HANDLER_NOT_FOUND, NOTIFICATIONS, Handlers, failure
from ._types import Notification

if TYPE_CHECKING:
    from ._gateway import SubDevice
    from ._pending import Pending

__all__ = ["TOO_MANY_REQUESTS", "Inbox"]

log = logging.getLogger("enos_lab.device")

TOO_MANY_REQUESTS = 429
"""Code of the reply to a command beyond ``max_commands`` (the Python SDK's
``ResponseCode.TOO_MANY_REQUESTS``)."""
ACTIVATED_MESSAGE = "device activate success"
RAW_SUFFIX = "/thing/model/up_raw"
"""Raw request topics end so; their replies carry raw bytes, not an envelope."""
"""The text of the reply to ``activate/info`` (the Python SDK's)."""


class Inbox:
    """Incoming messages of a :class:`~enos_lab.device.DeviceClient` (see the module
    docstring)."""

    if TYPE_CHECKING:  # provided by DeviceClient
        max_commands: int
        _handlers: Handlers
        _pending: Pending
        _tasks: set[asyncio.Task[Any]]
        _counts: dict[str, int]
        _activation: asyncio.Future[str] | None
        _sub_devices: dict[tuple[str, str], SubDevice]
        _logged_in: dict[tuple[str, str], str]

        @property
        def device(self) -> str: ...

        @property
        def keys(self) -> tuple[str, str]: ...

        def _spawn(self, coro: Awaitable[Any], what: str) -> None: ...

    def _on_message(self, conn: Connection, topic: str, payload: bytes) -> None:
        """Every PUBLISH the hub sends: a reply, ``activate/info`` or a command."""
        if topic.endswith(REPLY_SUFFIX):
            base = topic[: -len(REPLY_SUFFIX)]
            pending = self._pending
            if pending.is_raw(base) or base.endswith(RAW_SUFFIX):
                if not pending.resolve_raw(base, payload):
                    log.debug("device %s: raw reply on %s answers nothing", self.device, topic)
                return
            try:
                reply = decode_reply(payload)
            except EnvelopeError as exc:
                log.warning("device %s: unusable reply on %s: %s", self.device, topic, exc)
                return
            if not pending.resolve(base, reply):
                log.debug("device %s: reply %r on %s answers nothing", self.device, reply.id, topic)
            return
        match = parse_topic(topic)
        if match is None or match.is_reply or match.kind.direction is not Direction.DOWN:
            log.debug("device %s: ignored a message on %s", self.device, topic)
            return
        if match.kind is TopicKind.ACTIVATE_INFO:
            self._activated(conn, match, payload)
            return
        self._command(conn, match, payload)

    def _activated(self, conn: Connection, match: TopicMatch, payload: bytes) -> None:
        """``activate/info`` (protocol reference 3): take the secret, answer 200."""
        if (match.product_key, match.device_key) != self.keys or not conn.usable:
            log.warning("device %s: ignored activate/info for %s", self.device, match.request_topic)
            return
        try:
            request = decode_request(payload)
        except EnvelopeError as exc:
            log.warning("device %s: unusable activate/info: %s", self.device, exc)
            return
        params = request.params if isinstance(request.params, dict) else {}
        secret = params.get("deviceSecret")
        if not isinstance(secret, str) or not secret:
            log.warning("device %s: activate/info without a deviceSecret", self.device)
            return
        conn.publish(
            command_reply_topic(match), encode_reply(request.id, 200, None, ACTIVATED_MESSAGE)
        )
        waiting = self._activation
        if waiting is not None and not waiting.done():
            waiting.set_result(secret)

    def _command(self, conn: Connection, match: TopicMatch, payload: bytes) -> None:
        """A downstream command: find the handler, run it, answer (see :mod:`._handlers`)."""
        self._counts["commands"] += 1
        kind = match.kind
        keys = (match.product_key, match.device_key)
        what = f"device {self.device}: {kind.name} on {match.request_topic}"
        request_id: Any = "unknown"  # raw commands carry no id (protocol reference 7.5)
        method: str | None = None
        arg: Any = payload
        if not kind.is_raw:
            try:
                request = decode_request(payload)
            except EnvelopeError as exc:
                log.warning("%s: unusable command: %s", what, exc)
                return
            request_id, method, arg = request.id, request.method, request.params
        if kind in NOTIFICATIONS:
            arg = self._notification(match, arg)
        handlers = self._handlers_of(keys)
        handler = handlers.lookup(kind, match.item_id, method) if handlers else None
        if handler is None:
            log.info("%s: no handler, answered %d", what, HANDLER_NOT_FOUND[0])
            self._answer(conn, match, request_id, HANDLER_NOT_FOUND)
            return
        try:
            result = handler(arg)
        except Exception as exc:
            self._handler_failed(conn, match, request_id, exc, what)
            return
        if not inspect.isawaitable(result):
            self._answer(conn, match, request_id, (200, result, ""))
            return
        if len(self._tasks) >= self.max_commands:
            if inspect.iscoroutine(result):
                result.close()
            log.warning("%s: %d commands in progress, answered 429", what, len(self._tasks))
            self._answer(conn, match, request_id, (TOO_MANY_REQUESTS, None, "too many commands"))
            return
        self._spawn(self._finish(conn, match, request_id, result, what), "command")

    async def _finish(
        self,
        conn: Connection,
        match: TopicMatch,
        request_id: Any,
        result: Awaitable[Any],
        what: str,
    ) -> None:
        try:
            data = await result
        except Exception as exc:
            self._handler_failed(conn, match, request_id, exc, what)
            return
        self._answer(conn, match, request_id, (200, data, ""))

    def _handler_failed(
        self, conn: Connection, match: TopicMatch, request_id: Any, exc: Exception, what: str
    ) -> None:
        outcome = failure(exc, what)
        if outcome[0] == ReplyCode.DEVICE_HANDLER_ERROR:
            self._counts["command_errors"] += 1
        self._answer(conn, match, request_id, outcome)

    def _answer(
        self, conn: Connection, match: TopicMatch, request_id: Any, outcome: tuple[int, Any, str]
    ) -> None:
        """Publish the reply to a command on its reply topic (QoS 1, as the Python SDK)."""
        if not conn.usable:
            return  # the connection it came on is gone; the hub times the command out
        code, data, message = outcome
        if match.kind.is_raw and code == 200 and isinstance(data, bytes | bytearray):
            payload = bytes(data)
        else:
            try:
                payload = encode_reply(request_id, code, data, message)
            except (TypeError, ValueError) as exc:  # data that JSON cannot carry
                self._counts["command_errors"] += 1
                log.error(
                    "device %s: the reply to %s is not JSON: %s",
                    self.device,
                    match.request_topic,
                    exc,
                )
                text = f"command handler execution failed: reply data is not JSON: {exc}"
                payload = encode_reply(request_id, ReplyCode.DEVICE_HANDLER_ERROR, None, text)
        conn.publish(command_reply_topic(match), payload)

    def _handlers_of(self, keys: tuple[str, str]) -> Handlers | None:
        if keys == self.keys:
            return self._handlers
        sub = self._sub_devices.get(keys)
        return sub._handlers if sub is not None else None

    def _notification(self, match: TopicMatch, params: Any) -> Notification:
        """The :class:`Notification` of a lifecycle command; a gateway forgets the disabled or
        deleted sub-devices it would log in again."""
        devices: list[tuple[str, str]] = []
        if isinstance(params, list):
            for entry in params:
                if isinstance(entry, dict):
                    pk, dk = entry.get("productKey"), entry.get("deviceKey")
                    if isinstance(pk, str) and isinstance(dk, str):
                        devices.append((pk, dk))
        if match.kind in (TopicKind.SUB_DEVICE_DISABLE, TopicKind.SUB_DEVICE_DELETE):
            for keys in devices:
                self._logged_in.pop(keys, None)
        return Notification(match.kind, match.product_key, match.device_key, tuple(devices), params)
