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

One connection's plumbing (its two flows, the queues, the resets) is in
:mod:`enos_lab.sim._relay`; the settings, scopes and counters are in
:mod:`enos_lab.sim._fault_settings`.

Thread safety: the fault calls and :meth:`LinkConnection.cut` may be made from any thread (a
notebook with the lab's loop in the background): they run on the link's loop and return once
applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Self, TypeVar

from ..clock import Clock, SystemClock
from ..enos import BadLogin, parse_login
from ..errors import ProtocolError
from ..mqtt import Connect, Decoder
from ._fault_settings import (
    DOWN,
    UP,
    Controls,
    Counts,
    Faults,
    LinkConfig,
    LinkScope,
    LinkStats,
)
from ._relay import LinkConnection, reset

__all__ = ["Link"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
            reset(writer)
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
