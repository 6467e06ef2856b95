"""One client connection through a :class:`~enos_lab.sim.Link`: its two flows of packets.

Theory of operation
-------------------
A :class:`LinkConnection` reads the client's CONNECT (for its identity and scope), then
connects to the hub and runs two flows, client to hub and hub to client. A flow is a pump and a
sender joined by a bounded FIFO queue: the pump reads bytes, cuts them into whole packets
(:func:`~enos_lab.mqtt.split_packets`), applies the connection's current fault settings
(blackhole, drop, duplicate, reorder window, delay) and queues what survives with the time it is
due; the sender writes each packet when due on the link's clock. A full queue stops the pump
(back-pressure on the sender's TCP connection). The connection ends when one side ends its
stream and everything it sent before was passed on (the other side is then closed too), on any
error, or when it is cut (both sides reset). While blackholed, the end of one side is kept from
the other until the partition heals. The faults are described in :mod:`enos_lab.sim._faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING

from ..clock import TimerHandle
from ..errors import ProtocolError
from ..mqtt import split_packets
from ._fault_settings import (
    DOWN,
    UP,
    Controls,
    Counts,
    Effective,
    Faults,
    FlowStats,
    PartitionMode,
)

if TYPE_CHECKING:
    from ._faults import Link

__all__ = ["LinkConnection", "reset"]

logger = logging.getLogger(__name__)

_PUBLISH = 3  # packet type
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP reset


class _Ended(Exception):
    """A flow ends its connection with a reset (partition healed after a side gave up)."""


class _Pipe:
    """A direction's queue of packets waiting to be sent: ``(due, bytes)``, FIFO, with a
    byte count that stops the reader at the limit."""

    __slots__ = ("_bytes", "_closed", "_items", "_limit", "_ready", "_space")

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[float, bytes]] = deque()
        self._bytes = 0
        self._limit = limit
        self._closed = False
        self._ready = asyncio.Event()
        self._space = asyncio.Event()

    @property
    def empty(self) -> bool:
        return not self._items

    @property
    def size(self) -> int:
        """Bytes waiting. [bytes]"""
        return self._bytes

    def put(self, due: float, data: bytes) -> None:
        self._items.append((due, data))
        self._bytes += len(data)
        self._ready.set()

    def close(self) -> None:
        """No more packets: :meth:`get` returns None once the queue is empty."""
        self._closed = True
        self._ready.set()

    async def get(self) -> tuple[float, bytes] | None:
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        due, data = self._items.popleft()
        self._bytes -= len(data)
        if self._bytes < self._limit:
            self._space.set()
        return due, data

    @property
    def full(self) -> bool:
        """Whether the queue has reached its limit."""
        return self._bytes >= self._limit

    async def wait_space(self) -> None:
        """Wait until the queue is below its limit."""
        while self._bytes >= self._limit:
            self._space.clear()
            await self._space.wait()


class _Flow:
    """One direction of a connection: a reader that applies the faults to each packet and a
    sender that writes them when due."""

    __slots__ = (
        "_held",
        "_timer",
        "connection",
        "counts",
        "first",
        "pending",
        "pipe",
        "reader",
        "way",
        "writer",
    )

    def __init__(
        self,
        connection: LinkConnection,
        way: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        first: list[bytes] | None = None,
        pending: bytearray | None = None,
    ) -> None:
        self.connection = connection
        self.way = way
        self.reader = reader
        self.writer = writer
        self.first = first or []
        self.pending = pending or bytearray()
        self.pipe = _Pipe(connection._link.config.max_queued_bytes)
        self.counts = (connection._counts[way], connection._link._counts[way])
        self._held: list[bytes] = []
        self._timer: TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Bytes waiting in this direction: queued and held for reordering. [bytes]"""
        return self.pipe.size + sum(map(len, self._held))

    def _count(self, name: str, n: int = 1) -> None:
        for counts in self.counts:
            counts.add(name, n)
        self.connection._link._tick()

    def finish(self) -> None:
        """The sending side ended its stream: pass on what is held, then let :meth:`send`
        end once the queue is empty."""
        self._release()
        self.pipe.close()

    def stop(self) -> None:
        """The connection ends: no more reorder timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def pump(self) -> None:
        """Read packets and apply the faults until the sender's end of stream (an error
        raises; a blackholed end waits for the partition to heal, then raises)."""
        connection = self.connection
        config = connection._link.config
        buffer = self.pending
        if self.first:
            self._process(self.first)
        while True:
            if self.pipe.full:
                self._count("stalls")
                await self.pipe.wait_space()
            chunk = await self.reader.read(config.read_size)
            if not chunk:
                break
            buffer += chunk
            packets, used = split_packets(buffer, config.max_packet_size)
            if used:
                del buffer[:used]
                self._process(packets)
        if not connection._aborted and connection._settings().partition is PartitionMode.BLACKHOLE:
            await connection._until_healed()  # the other side must not learn of it before
            raise _Ended

    def _process(self, packets: list[bytes]) -> None:
        connection = self.connection
        settings = connection._settings()
        way = self.way
        self._count("packets", len(packets))
        self._count("bytes", sum(map(len, packets)))
        if settings.partition is PartitionMode.BLACKHOLE:
            self._count("blackholed", len(packets))
            return
        drop = settings.drop[way]
        duplicate = settings.duplicate[way]
        window = settings.reorder[way]
        rng = connection._rngs[way]
        publishes = dropped = duplicated = 0
        for packet in packets:
            if packet[0] >> 4 != _PUBLISH:
                self._release()
                self._enqueue(packet, settings)
                continue
            publishes += 1
            if drop and rng.random() < drop:
                dropped += 1
                continue
            copies = 1
            if duplicate and rng.random() < duplicate:
                duplicated += 1
                copies = 2
            if window > 1:
                self._held.extend([packet] * copies)
                if len(self._held) >= window:
                    self._release()
                else:
                    self._arm(settings.hold[way])
                continue
            for _ in range(copies):
                self._enqueue(packet, settings)
        for name, n in (("publishes", publishes), ("dropped", dropped), ("duplicated", duplicated)):
            if n:
                self._count(name, n)

    def _arm(self, hold: float) -> None:
        """(Re)start the timer that releases an incomplete reorder window."""
        if self._timer is not None:
            self._timer.cancel()
        clock = self.connection._link.clock
        self._timer = clock.call_at(clock.monotonic() + hold, self._release)

    def _release(self) -> None:
        """Send the held PUBLISH packets on, shuffled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held = self._held
        if not held:
            return
        order = list(range(len(held)))
        self.connection._rngs[self.way].shuffle(order)
        self._count("reordered", sum(1 for i, j in enumerate(order) if i != j))
        settings = self.connection._settings()
        for index in order:
            self._enqueue(held[index], settings)
        held.clear()

    def _enqueue(self, packet: bytes, settings: Effective) -> None:
        delay = settings.delay[self.way]
        if delay:
            self._count("delayed")
            self.pipe.put(self.connection._link.clock.monotonic() + delay, packet)
        else:
            self.pipe.put(0.0, packet)

    async def send(self) -> None:
        """Write the queued packets when due; returns once :meth:`finish` was called and the
        queue is empty."""
        connection = self.connection
        clock = connection._link.clock
        writer = self.writer
        while (item := await self.pipe.get()) is not None:
            due, packet = item
            if due:
                wait = due - clock.monotonic()
                if wait > 0:
                    await clock.sleep(wait)
            if connection._settings().partition is PartitionMode.BLACKHOLE:
                self._count("blackholed")  # it was in flight when the partition began
                continue
            writer.write(packet)
            if self.pipe.empty:
                await writer.drain()


class LinkConnection(Controls):
    """One client connection through a :class:`Link`, with the fault calls of the
    :mod:`module docstring <enos_lab.sim._faults>` for this connection alone.

    ``id`` counts the link's connections from 1; ``peer`` is the client's address; the
    identity comes from its CONNECT: ``client_id`` and ``username`` (``None`` before), and for
    an EnOS login ``product_key`` and ``device_key``.
    """

    __slots__ = (
        "_aborted",
        "_client",
        "_counts",
        "_effective",
        "_ended",
        "_faults",
        "_flows",
        "_hub",
        "_link",
        "_rngs",
        "_version",
        "_wake",
        "client_id",
        "device_key",
        "id",
        "peer",
        "product_key",
        "username",
    )

    def __init__(
        self,
        link: Link,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._link = link
        self._faults = Faults()
        self.id = number
        """Number of the connection on its link (1, 2, ...)."""
        self.peer: tuple[str, int] | None = writer.get_extra_info("peername")
        """The client's address."""
        self.client_id: str | None = None
        """MQTT client id of the CONNECT."""
        self.username: str | None = None
        """User name of the CONNECT."""
        self.product_key: str | None = None
        """EnOS product key of the CONNECT's username (None for other logins)."""
        self.device_key: str | None = None
        """EnOS device key of the CONNECT's username (None for other logins)."""
        self._client = (reader, writer)
        self._hub: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._counts = (Counts(), Counts())
        self._rngs = (random.Random(), random.Random())
        self._effective: Effective | None = None
        self._version = -1
        self._wake = asyncio.Event()
        self._aborted = False
        self._ended = 0
        self._flows: tuple[_Flow, _Flow] | None = None

    @property
    def up(self) -> FlowStats:
        """What the link did to this connection's packets from the client
        (:class:`~enos_lab.sim.FlowStats`)."""
        return self._counts[UP].snapshot(self._queued(UP))

    @property
    def down(self) -> FlowStats:
        """What the link did to this connection's packets from the hub."""
        return self._counts[DOWN].snapshot(self._queued(DOWN))

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (or is ending)."""
        return self not in self._link._connections or self._aborted

    def _queued(self, way: int) -> int:
        return 0 if self._flows is None else self._flows[way].queued

    def _seed_rngs(self, key: str) -> None:
        self._rngs = (random.Random(key + ":up"), random.Random(key + ":down"))

    def _settings(self) -> Effective:
        link = self._link
        if self._effective is None or self._version != link._version:
            self._effective = Effective(link._layers(self))
            self._version = link._version
        return self._effective

    def _changed(self) -> None:
        self._wake.set()

    def _in_scope(self) -> list[LinkConnection]:
        return [] if self.closed else [self]

    async def _until_healed(self) -> None:
        """Wait while the connection is blackholed and its other side still there."""
        self._ended += 1
        self._wake.set()
        while (
            not self._aborted
            and self._ended < 2
            and self._settings().partition is PartitionMode.BLACKHOLE
        ):
            self._wake.clear()
            await self._wake.wait()

    def _abort(self, *, count: bool) -> None:
        """Reset both sides now."""
        if self._aborted:
            return
        self._aborted = True
        if count:
            self._link._count_cut()
        self._wake.set()
        reset(self._client[1])
        if self._hub is not None:
            reset(self._hub[1])

    async def _serve(self) -> None:
        link = self._link
        config = link.config
        reader, writer = self._client
        buffer = bytearray()
        packets: list[bytes] = []
        try:
            async with asyncio.timeout(config.connect_timeout):
                while not packets:  # the CONNECT
                    chunk = await reader.read(config.read_size)
                    if not chunk:
                        raise ConnectionResetError("closed before its CONNECT")
                    buffer += chunk
                    packets, used = split_packets(buffer, config.max_packet_size)
                    del buffer[:used]
            if not link._identify(self, packets[0]) or self._settings().partition is not None:
                link._refuse()
                self._abort(count=False)
                return
            try:
                self._hub = await asyncio.wait_for(
                    asyncio.open_connection(*link.upstream), config.connect_timeout
                )
            except (OSError, TimeoutError) as exc:
                logger.warning("link: cannot reach the hub at %s:%s: %s", *link.upstream, exc)
                link._refuse()
                self._abort(count=False)
                return
            if self._aborted:  # cut while the hub was being reached
                reset(self._hub[1])
                return
            link._accepted += 1
            link._tick()
            hub_reader, hub_writer = self._hub
            self._flows = (
                _Flow(self, UP, reader, hub_writer, first=packets, pending=buffer),
                _Flow(self, DOWN, hub_reader, writer),
            )
            if await self._relay() and not self._aborted:
                for side in (writer, hub_writer):
                    side.close()
            else:
                self._abort(count=False)
        except (OSError, ProtocolError) as exc:  # also a timeout, a malformed first packet
            logger.debug("link connection %s ended: %s", self.id, exc)
            if self._flows is None:
                link._refuse()  # never relayed
            self._abort(count=False)
        finally:
            sides = [writer] if self._hub is None else [writer, self._hub[1]]
            for side in sides:
                if not self._aborted:
                    side.close()
                with contextlib.suppress(OSError):
                    await side.wait_closed()

    async def _relay(self) -> bool:
        """Run both flows until one side ends; True when it ended cleanly (its end of stream
        and everything queued before it were passed on), False after an error or a reset."""
        assert self._flows is not None
        pumps = {asyncio.create_task(flow.pump()): flow for flow in self._flows}
        senders = {asyncio.create_task(flow.send()): flow for flow in self._flows}
        pending: set[asyncio.Task[None]] = {*pumps, *senders}
        try:
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        return False
                    if task in senders:
                        return True  # a finished side, flushed
                    pumps[task].finish()
        finally:
            for flow in self._flows:
                flow.stop()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def __repr__(self) -> str:
        return f"LinkConnection({self.id}, client_id={self.client_id!r})"


def reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset (no FIN, nothing more sent)."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()
