"""Commands (protocol reference 9): what the cloud sends to devices, and their replies.

:meth:`Commands.send` delivers a command (service invocation, measurepoint set/get, raw
``down_raw`` bytes through the product's codec or, given as bytes, as they are, ...) to the
device's connection or, for a logged-in sub-device, to its gateway's, at QoS 1 and without any
subscription (:meth:`~enos_lab.hub.Hub.deliver`), and waits for the reply: pending commands are
kept by (topic, request id) until the reply arrives or ``command_timeout`` passes. A legacy
RRPC request (protocol reference 9.4) goes to ``rrpc/request/{rrpcId}`` (a fresh id unless one
is given) with the method ``thing.service.{serviceId}`` and is answered on
``rrpc/response/{rrpcId}``. Raw replies carry no usable id (the SDKs synthesise ``"unknown"``):
they answer the oldest pending command of their topic (a raw command sent as bytes gets the
reply's bytes as they are, as its ``data``); ``command_timeout`` runs on the lab's clock.
:meth:`Commands.close` fails the commands still waiting (the IoT hub stopped). A gateway hears
of its sub-devices being enabled, disabled or deleted (``combine/enable``, ``disable``,
``delete``: :meth:`Commands.notify_gateway`).

:meth:`Commands.device_reply` receives every reply a device publishes (a ``_reply`` topic of a
command, ``rrpc/response/{rrpcId}``, or of ``activate/info``, which confirms a dynamic
activation); a reply that answers nothing pending is dropped. Request ids come from one counter
shared with the activation pushes. The tap hears of every command handed to a connection
(``CommandSent``), of every decodable reply to a command (``CommandReplied``, those to commands
sent without waiting included) and of a dynamic activation the device confirmed
(``DeviceActivated``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from ..clock import Clock
from ..enos import (
    Direction,
    EnvelopeError,
    Reply,
    TopicKind,
    TopicMatch,
    decode_reply,
    encode_request,
)
from ..errors import ClosedError, DeviceOffline, InvalidArgument
from ..hub import Hub, Message
from ..registry import Device, Registry
from ._config import IotHubConfig, RawCodec
from ._emit import Emitter
from ._sessions import Conn, Sessions

__all__ = ["Commands"]

log = logging.getLogger("enos_lab.iothub")


class Commands:
    """Commands to devices and their replies (see the module docstring); ``hub`` is set by
    ``IotHub.attach``."""

    __slots__ = (
        "_bytes",
        "_clock",
        "_codecs",
        "_emit",
        "_ids",
        "_pending",
        "_registry",
        "_sessions",
        "config",
        "hub",
    )

    def __init__(
        self,
        registry: Registry,
        sessions: Sessions,
        codecs: dict[str, RawCodec],
        ids: Iterator[int],
        config: IotHubConfig,
        *,
        clock: Clock,
        emit: Emitter,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._emit = emit
        self._sessions = sessions
        self._codecs = codecs
        self._ids = ids
        self.config = config
        self.hub: Hub | None = None
        self._pending: dict[tuple[str, str], asyncio.Future[Reply]] = {}
        self._bytes: set[tuple[str, str]] = set()  # pending raw commands sent as bytes

    async def send(  # noqa: PLR0917
        self,
        product_key: str,
        device_key: str,
        kind: TopicKind,
        params: object,
        item_id: str,
        wait: bool,
        timeout: float | None,
        service_id: str | None = None,
    ) -> Reply | None:
        """``IotHub.send_command``: deliver the command and (``wait``) await its reply."""
        if kind.direction is not Direction.DOWN:
            raise InvalidArgument(f"{kind.name} is not a command topic")
        if service_id is not None and (not isinstance(service_id, str) or not service_id):
            raise InvalidArgument(f"service_id must be a non-empty string, got {service_id!r}")
        named = item_id if service_id is None else service_id  # fills the method
        if kind is TopicKind.RRPC_REQUEST and not named:
            raise InvalidArgument("an RRPC request needs the service_id it invokes")
        keys = (product_key, device_key)
        self._registry.get_device(*keys)
        hub = self.hub
        sessions = self._sessions
        cid = sessions.owner.get(keys) or sessions.gateway_of.get(keys)
        conn = sessions.conns.get(cid) if cid is not None else None
        if hub is None or conn is None or (conn.own is not None and conn.activation):
            raise DeviceOffline(f"device {product_key}/{device_key} is offline")
        request_id = str(next(self._ids))
        if kind is TopicKind.RRPC_REQUEST and not item_id:
            item_id = request_id  # a fresh rrpc id: the request ids are never reused
        topic = kind.format(product_key, device_key, item_id)
        method = kind.method_for(named)
        as_bytes = kind.is_raw and isinstance(params, bytes | bytearray)
        if isinstance(params, bytes | bytearray) and as_bytes:  # as they are; bytes answer
            payload = bytes(params)
        else:
            payload = encode_request(request_id, method, params)
        if kind.is_raw and not as_bytes:
            codec = self._codecs.get(product_key)
            if codec is None:
                raise InvalidArgument(f"product {product_key} has no raw codec")
            payload = codec.encode_downstream(payload)
        key = (topic, request_id)
        future: asyncio.Future[Reply] | None = None
        if wait:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if as_bytes:
                self._bytes.add(key)
        try:
            if not await hub.deliver(conn.key, Message(topic, payload, 1)):
                raise DeviceOffline(f"device {product_key}/{device_key} is offline")
            self._emit.command_sent(keys, kind.name, item_id, request_id)
            if future is None:
                return None
            limit = self.config.command_timeout if timeout is None else timeout
            return await self._clock.wait_for(future, limit)
        finally:
            if future is not None:
                self._pending.pop(key, None)
                self._bytes.discard(key)

    def close(self) -> None:
        """Fail every command still waiting for its reply with
        :class:`~enos_lab.errors.ClosedError` (the services stopped)."""
        pending, self._pending = self._pending, {}
        for (topic, request_id), future in pending.items():
            if not future.done():
                future.set_exception(
                    ClosedError(
                        f"the IoT hub stopped before command {request_id} on {topic!r} was answered"
                    )
                )

    def device_reply(self, conn: Conn, match: TopicMatch, payload: bytes) -> None:
        """A device's reply on the reply topic ``match`` (of a command or of
        ``activate/info``)."""
        kind = match.kind
        if kind.is_raw:
            topic = match.request_topic
            oldest = next((k for k in self._pending if k[0] == topic), None)
            if oldest is not None and oldest in self._bytes:  # sent as bytes: bytes back
                waiting = self._pending[oldest]
                answer = Reply("unknown", 200, bytes(payload), "")
                if not waiting.done():
                    waiting.set_result(answer)
                self._emit.command_replied(match, answer)
                return
            codec = self._codecs.get(match.product_key)
            if codec is None:
                return
            try:
                payload = codec.decode_upstream(payload)
            except Exception:
                log.exception("codec of %s failed on a down_raw reply", match.product_key)
                return
        try:
            reply = decode_reply(payload)
        except EnvelopeError as exc:
            log.info("client %r: unusable reply on %s: %s", conn.client_id, match.kind.name, exc)
            return
        if kind is TopicKind.ACTIVATE_INFO:
            done = conn.activation_done
            if reply.ok and done is not None:
                if not done.is_set():
                    self._emit.activated(conn.ident)
                done.set()
            return
        topic = match.request_topic
        future = self._pending.get((topic, str(reply.id)))
        if future is None and kind.is_raw:
            # raw replies carry no usable id (SDKs synthesise "unknown"): the oldest command
            future = next((f for (t, _), f in self._pending.items() if t == topic), None)
        if future is not None and not future.done():
            future.set_result(reply)
        self._emit.command_replied(match, reply)

    async def notify_gateway(self, device: Device, kind: TopicKind) -> None:
        """Tell the online gateway of ``device`` (a sub-device) about it with ``kind``
        (``combine/enable``, ``disable`` or ``delete``); nothing when it has none online."""
        hub = self.hub
        if device.gateway is None or hub is None:
            return
        cid = self._sessions.owner.get(device.gateway)
        if cid is None:
            return
        topic = kind.format(*device.gateway)
        method = kind.method or ""
        params = [{"productKey": device.product_key, "deviceKey": device.device_key}]
        payload = encode_request(str(next(self._ids)), method, params)
        await hub.deliver(cid, Message(topic, payload, 1))
