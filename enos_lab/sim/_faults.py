"""Fault injection between MQTT clients and the hub: :class:`Link`, a loopback TCP proxy.

Theory of operation
-------------------
A :class:`Link` listens on 127.0.0.1 (port 0 by default) and relays every accepted connection
to the hub (``upstream``). It reads each direction as MQTT packets, cut whole from the byte
stream by :func:`~enos_lab.mqtt.split_packets` (the codec's reading of the fixed header, nothing
decoded but the first packet, the CONNECT, for the client's identity), so faults act on packets,
never on parts of them, and whatever the client and the hub send each other is otherwise
forwarded byte for byte. The hub is connected once the client's CONNECT has arrived.

Faults, one call each, on every connection through the link (``link.drop(...)``), on the
connections of one device (``link.device(pk, dk).drop(...)``, matched by the EnOS username of the
CONNECT, also after a reconnect) or of one client id (``link.client(id)``), or on one connection
(``link.connections[0].drop(...)``). A connection takes each setting from the most specific of
those that has it; ``clear()`` removes them, :meth:`Link.clear` and :meth:`Link.heal` everywhere.

- ``drop(rate)``: each PUBLISH is lost with probability ``rate`` (seeded);
- ``duplicate(rate)``: each PUBLISH is sent twice (the same bytes) with probability ``rate``;
- ``reorder(window)``: PUBLISH packets are held until ``window`` of them are there (or ``hold``
  seconds passed since the last) and released in a shuffled order; any other packet first
  releases those held, so control packets keep their place behind earlier data;
- ``delay(seconds)``: every packet waits ``seconds`` on the link's clock (order is kept);
- ``partition()``: in ``BLACKHOLE`` mode existing connections stay open but every packet is
  lost both ways, and when one side gives up (the hub's keep alive, the client's) the other side
  is not told until the partition heals, when its connection is reset (what TCP peers see after
  a real partition); in ``CUT`` mode existing connections are reset at once. In both modes new
  connections are refused: closed at once (link-wide) or right after their CONNECT (a device or
  client), without reaching the hub. (A real partition drops the SYN and the client's connect
  hangs until its own timeout; clients treat both as a failed attempt.) ``heal()`` ends it.
- ``cut()``: every connection is reset now, both sides, no DISCONNECT: a power loss as the hub
  sees it. The link stays up: clients may reconnect.

``direction`` is ``UP`` (client to hub), ``DOWN`` (hub to client) or ``BOTH``. Random choices
come from one generator per connection and direction seeded by the link's seed and the client's
identity, so a scenario replays the same way.

Bounds: a connection's queued packets (delayed or held) are capped at
``LinkConfig.max_queued_bytes`` per direction; a full queue stops reading from the sender (TCP
back-pressure), counted in ``stalls``. Lost packets (dropped, blackholed) are counted, never
kept. Connections beyond ``max_connections`` are refused, counted. Every task belongs to the
link and ends with :meth:`Link.close`.

Thread safety: the fault calls and :meth:`LinkConnection.cut` may be made from any thread (a
notebook with the lab's loop in the background): they run on the link's loop and return once
applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import Self, TypeVar

from ..clock import Clock, SystemClock, TimerHandle
from ..enos import BadLogin, parse_login
from ..errors import ProtocolError
from ..mqtt import Connect, Decoder, split_packets
from ._fault_settings import (
    DOWN,
    UP,
    Controls,
    Counts,
    Effective,
    Faults,
    FlowStats,
    LinkConfig,
    LinkScope,
    LinkStats,
    PartitionMode,
)

__all__ = ["Link", "LinkConnection"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
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
        _reset(self._client[1])
        if self._hub is not None:
            _reset(self._hub[1])

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
                _reset(self._hub[1])
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


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset (no FIN, nothing more sent)."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()


class Link(Controls):
    """A loopback TCP proxy to the hub at ``upstream_host:upstream_port`` that injects faults
    (see the module docstring).

    ``host``/``port``: where it listens (127.0.0.1, port 0: a free port, see :attr:`port`);
    ``seed`` of its random choices; ``clock`` for delays and reorder holds (the lab's clock:
    on a :class:`~enos_lab.clock.SimulatedClock` a delayed packet waits for the clock to be
    advanced); ``config``: its bounds. Start it on the event loop that will run it
    (``await link.start()`` or ``async with``), e.g. the lab's (``lab.run(link.start())``).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        clock: Clock | None = None,
        config: LinkConfig | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        """Where the hub listens: ``(host, port)``."""
        self.seed = seed
        """Seed of the link's random choices."""
        self.clock: Clock = clock or SystemClock()
        """The clock of delays and reorder holds."""
        self.config = config or LinkConfig()
        """The link's bounds."""
        self._host = host
        self._port = port
        self._link = self
        self._faults = Faults()
        self._scopes: dict[tuple[str | None, str | None, str | None], LinkScope] = {}
        self._connections: list[LinkConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._version = 0
        self._next_id = 0
        self._reconnects: dict[str, int] = {}
        self._accepted = 0
        self._refused = 0
        self._cut = 0
        self._counts = (Counts(), Counts())
        self._waiters = 0
        self._ticked: asyncio.Event | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Self:
        """Listen; returns the link. Raises ClosedError if it was closed before."""
        if self._server is not None:
            return self
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("link %s:%s -> %s:%s", self._host, self._port, *self.upstream)
        return self

    async def close(self) -> None:
        """Stop listening, reset every connection and end every task of the link."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection._abort(count=False)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def host(self) -> str:
        """The address the link listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the link listens on (the real one once started)."""
        return self._port

    @property
    def url(self) -> str:
        """``tcp://host:port``, for clients that take a URL (the EnOS SDKs)."""
        return f"tcp://{self._host}:{self._port}"

    @property
    def connections(self) -> list[LinkConnection]:
        """The connections open now, oldest first."""
        return list(self._connections)

    @property
    def stats(self) -> LinkStats:
        """What the link did so far (:class:`LinkStats`)."""
        up, down = self._counts
        return LinkStats(
            self._accepted,
            self._refused,
            self._cut,
            len(self._connections),
            up.snapshot(sum(c._queued(UP) for c in self._connections)),
            down.snapshot(sum(c._queued(DOWN) for c in self._connections)),
        )

    async def wait(
        self, predicate: Callable[[LinkStats], bool], timeout: float = 10.0
    ) -> LinkStats:
        """Wait until ``predicate(link.stats)`` holds, checked whenever the counters change;
        returns those stats. Raises TimeoutError after ``timeout`` seconds of real time (not
        the link's clock, which may be a simulated one). [s]"""
        if self._ticked is None:
            self._ticked = asyncio.Event()
        ticked = self._ticked

        async def until() -> LinkStats:
            while not predicate(stats := self.stats):
                ticked.clear()
                await ticked.wait()
            return stats

        self._waiters += 1
        try:
            return await asyncio.wait_for(until(), timeout)
        finally:
            self._waiters -= 1

    def _tick(self) -> None:
        """The counters changed: wake :meth:`wait`."""
        if self._waiters and self._ticked is not None:
            self._ticked.set()

    # -- scopes -----------------------------------------------------------------------------

    def device(self, product_key: str, device_key: str) -> LinkScope:
        """The scope of the connections of one EnOS device (a gateway takes its sub-devices
        along), now and after reconnects."""
        return self._scope(product_key, device_key, None)

    def client(self, client_id: str) -> LinkScope:
        """The scope of the connections with MQTT client id ``client_id``."""
        return self._scope(None, None, client_id)

    def _scope(self, pk: str | None, dk: str | None, client_id: str | None) -> LinkScope:
        key = (pk, dk, client_id)
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = LinkScope(self, pk, dk, client_id)
        return scope

    def _in_scope(self) -> list[LinkConnection]:
        return list(self._connections)

    def _healed(self) -> list[Faults]:
        # the link heals / clears everything: its own settings, every scope's and connection's
        return [self._faults, *(s._faults for s in self._scopes.values())] + [
            c._faults for c in self._connections
        ]

    def _layers(self, connection: LinkConnection) -> list[Faults]:
        scopes = [s._faults for s in self._scopes.values() if s.matches(connection)]
        return [connection._faults, *scopes, self._faults]

    def _changed(self) -> None:
        self._version += 1
        for connection in self._connections:
            connection._changed()

    def _on_loop(self, func: Callable[[], T]) -> T:
        """Run ``func`` on the link's loop (at once when called there, or when no loop runs
        it: before start, after the loop stopped)."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._thread or not loop.is_running():
            return func()

        async def call() -> T:
            return func()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30.0)

    # -- connections ------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A client connected: refuse it or start relaying it (a task the link owns)."""
        if (
            self._server is None
            or len(self._connections) >= self.config.max_connections
            or self._faults.partition is not None
        ):
            self._refuse()
            _reset(writer)
            return
        self._next_id += 1
        connection = LinkConnection(self, self._next_id, reader, writer)
        self._connections.append(connection)
        task = asyncio.create_task(self._relay(connection), name=f"link-{connection.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, connection: LinkConnection) -> None:
        try:
            await connection._serve()
        finally:
            self._connections.remove(connection)
            self._tick()

    def _identify(self, connection: LinkConnection, packet: bytes) -> bool:
        """Read the client's identity from its CONNECT; False when it is not one."""
        try:
            decoded = Decoder(max_packet_size=self.config.max_packet_size).feed(packet)
        except ProtocolError:
            return False
        if not decoded or not isinstance(decoded[0], Connect):
            return False
        connect = decoded[0]
        connection.client_id = connect.client_id
        connection.username = connect.username
        with contextlib.suppress(BadLogin):
            login = parse_login(connect.client_id, connect.username)
            connection.product_key = login.product_key
            connection.device_key = login.device_key
        identity = (
            f"{connection.product_key}&{connection.device_key}"
            if connection.device_key is not None
            else connect.client_id
        )
        count = self._reconnects.get(identity, 0)
        if len(self._reconnects) >= 100_000:
            self._reconnects.clear()
        self._reconnects[identity] = count + 1
        connection._seed_rngs(f"{self.seed}:{identity}:{count}")
        return True

    def _refuse(self) -> None:
        self._refused += 1
        self._tick()

    def _count_cut(self) -> None:
        self._cut += 1
        self._tick()

    def __repr__(self) -> str:
        return (
            f"Link({self._host}:{self._port} -> {self.upstream[0]}:{self.upstream[1]}, "
            f"{len(self._connections)} connections)"
        )
