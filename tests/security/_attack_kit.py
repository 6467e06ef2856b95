"""Test kit of the security battery: a raw MQTT 3.1.1 client over real TCP, and EnOS logins.

The attacks are sent the way an attacker would: over a TCP socket to the lab's listener, with
hand-made CONNECT fields, through the project's codec (these are not codec tests). Every wait
is bounded; a test that expects silence observes it for ``QUIET`` seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from enos_lab import Lab
from enos_lab.enos import SecureMode, SignMethod, login_credentials, sign, sign_params
from enos_lab.mqtt import (
    ConnAck,
    Connect,
    Decoder,
    Packet,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)

LEVEL = 4
READ_TIMEOUT = 5.0  # [s] longest wait for a packet the hub must send
QUIET = 0.3  # [s] how long "the hub sends nothing" is observed
TIMESTAMP = "1700000000000"

MakeLab = Callable[..., Lab]
"""The ``make_lab`` fixture (``tests/conftest.py``): ``make_lab(**kwargs)`` starts a
``Lab(..., port=0, **kwargs)``."""


def credentials(
    product_key: str,
    device_key: str,
    secret: str,
    *,
    sign_client_id: str | None = None,
    timestamp: str = TIMESTAMP,
    mode: SecureMode = SecureMode.SECRET_PER_DEVICE,
) -> tuple[str, str, str]:
    """``(client_id, username, password)`` of a correctly signed EnOS login."""
    return login_credentials(
        product_key,
        device_key,
        secret,
        secure_mode=mode,
        timestamp=timestamp,
        sign_client_id=sign_client_id,
    )


class RawDevice:
    """An MQTT 3.1.1 client on a real TCP connection; QoS 1 PUBLISHes it receives are
    acknowledged when read, other packets wait in ``inbox``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder(role="client", protocol_level=LEVEL)
        self.packets: list[Packet] = []
        self.inbox: list[Packet] = []
        self._pid = 0

    @classmethod
    async def connect(
        cls,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        *,
        clean: bool = True,
        keep_alive: int = 60,
        source: str = "127.0.0.1",
    ) -> tuple[RawDevice, ConnAck]:
        """Connect from ``source`` (any 127.x.y.z address) and send CONNECT; returns the client
        and the CONNACK."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        device = cls(reader, writer)
        packet = Connect(
            client_id,
            LEVEL,
            "MQTT",
            clean,
            keep_alive,
            username,
            password.encode() if password is not None else None,
        )
        writer.write(encode(packet, LEVEL))
        connack = await device.read_packet()
        assert isinstance(connack, ConnAck), connack
        return device, connack

    async def read_packet(self, timeout: float = READ_TIMEOUT) -> Packet:
        """The next packet from the hub (``EOFError`` when it closed the connection)."""
        async with asyncio.timeout(timeout):
            while not self.packets:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("the hub closed the connection")
                self.packets.extend(self.decoder.feed(data))
        return self.packets.pop(0)

    async def _take(self, packet: Packet) -> None:
        if isinstance(packet, Publish) and packet.qos == 1:
            self.writer.write(encode(PubAck(packet.packet_id), LEVEL))
        self.inbox.append(packet)

    async def read_publish(
        self, topic: str | None = None, timeout: float = READ_TIMEOUT
    ) -> Publish:
        """The next PUBLISH (on ``topic`` if given)."""
        for index, packet in enumerate(self.inbox):
            if isinstance(packet, Publish) and topic in (None, packet.topic):
                del self.inbox[index]
                return packet
        while True:
            packet = await self.read_packet(timeout)
            if isinstance(packet, Publish) and topic in (None, packet.topic):
                if packet.qos == 1:
                    self.writer.write(encode(PubAck(packet.packet_id), LEVEL))
                return packet
            await self._take(packet)

    async def quiet(self, seconds: float = QUIET, topic: str | None = None) -> bool:
        """True if no PUBLISH (on ``topic`` if given) arrives within ``seconds``."""
        try:
            await self.read_publish(topic, seconds)
        except TimeoutError:
            return True
        return False

    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def subscribe(self, *filters: str, qos: int = 1) -> tuple[int, ...]:
        """Subscribe; returns the SUBACK codes."""
        pid = self._next_pid()
        subscriptions = tuple(Subscription(f, qos) for f in filters)
        self.writer.write(encode(Subscribe(pid, subscriptions), LEVEL))
        while True:
            packet = await self.read_packet()
            if isinstance(packet, SubAck) and packet.packet_id == pid:
                return packet.reason_codes
            await self._take(packet)

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, *, retain: bool = False
    ) -> None:
        """Publish; for QoS 1 waits for the PUBACK."""
        pid = self._next_pid() if qos else 0
        self.writer.write(encode(Publish(topic, payload, qos, retain, packet_id=pid), LEVEL))
        if not qos:
            await self.writer.drain()
            return
        while True:
            packet = await self.read_packet()
            if isinstance(packet, PubAck) and packet.packet_id == pid:
                return
            await self._take(packet)

    async def request(
        self, topic: str, params: Any = None, *, request_id: str = "1", method: str = "any"
    ) -> dict[str, Any]:
        """Subscribe to ``topic_reply``, publish a request, return the decoded reply."""
        await self.subscribe(topic + "_reply")
        body = {"id": request_id, "version": "1.0", "method": method, "params": params}
        await self.publish(topic, json.dumps(body).encode())
        reply = await self.read_publish(topic + "_reply")
        document: dict[str, Any] = json.loads(reply.payload)
        return document

    async def disconnect(self) -> None:
        """Send DISCONNECT and wait until the hub closed the connection."""
        self.writer.write(b"\xe0\x00")
        await self.closed()

    async def closed(self, timeout: float = READ_TIMEOUT) -> None:
        """Wait until the hub closed the connection."""
        async with asyncio.timeout(timeout):
            while await self.reader.read(65536):
                pass
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the will, if any, is published)."""
        self.writer.transport.abort()


def sub_device_login(product_key: str, device_key: str, secret: str) -> dict[str, Any]:
    """``combine.login`` params of a sub-device, signed with its device secret (section 8.3)."""
    timestamp = TIMESTAMP
    client_id = f"{product_key}{device_key}{timestamp}"
    params = sign_params(
        client_id=client_id, product_key=product_key, device_key=device_key, timestamp=timestamp
    )
    return {**params, "signMethod": "sha256", "sign": sign(params, secret, SignMethod.SHA256)}
