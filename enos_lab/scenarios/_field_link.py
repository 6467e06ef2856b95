"""The network between a remote edge and its field devices: a TCP relay that can fail.

A :class:`FieldLink` listens on 127.0.0.1 (port 0: a free port) and relays every connection
to one field endpoint (a :class:`~enos_lab.edge.FieldServer`) byte for byte, both ways. It
knows nothing of Modbus. :meth:`FieldLink.partition` resets every connection and stops
listening until :meth:`FieldLink.heal` (so that connects are refused at once, as when a route
is gone), as a failed WAN link between a cloud-side edge and a site does: the edge's poller
sees connection errors for every device behind it, counted per device, and the store sees a
gap. Meanwhile the link keeps its port bound without listening, so that :meth:`~FieldLink.heal`
takes effect at once: it listens again before it returns (connections are accepted a moment
later, when the relay starts serving). Every task belongs to the link and ends with
:meth:`FieldLink.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

__all__ = ["FieldLink", "FieldLinkStats"]

log = logging.getLogger("enos_lab.scenarios")

_CHUNK = 65_536  # [bytes] read at once


@dataclass(frozen=True, slots=True)
class FieldLinkStats:
    """What a :class:`FieldLink` did so far."""

    accepted: int
    """Connections relayed. [-]"""
    refused: int
    """Connections refused while partitioned (or the endpoint unreachable). [-]"""
    cut: int
    """Connections reset by a partition. [-]"""
    open: int
    """Connections open now. [-]"""


class FieldLink:
    """A relay from ``host``:``port`` to the field endpoint ``target_host``:``target_port``
    (see the module docstring). Start it on the loop that runs it (``await link.start()``)."""

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        """The field endpoint: ``(host, port)``."""
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._partitioned = False
        self._closed = False
        self._held: socket.socket | None = None  # the port, bound, while partitioned
        self._accepted = self._refused = self._cut = 0

    async def start(self) -> FieldLink:
        """Listen; returns the link."""
        if self._server is None and not self._partitioned:
            self._server = await asyncio.start_server(self._accept, self._host, self._port)
            self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening, reset every connection, end every task."""
        self._closed = True
        held, self._held = self._held, None
        if held is not None:
            held.close()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._reset_all(count=False)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FieldLink:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
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
    def partitioned(self) -> bool:
        """Whether the link is down (:meth:`partition`) now."""
        return self._partitioned

    @property
    def stats(self) -> FieldLinkStats:
        """Its counters (a snapshot)."""
        return FieldLinkStats(self._accepted, self._refused, self._cut, len(self._pairs))

    async def partition(self) -> None:
        """Reset every connection now and stop listening until :meth:`heal` (connects are
        refused)."""
        if self._partitioned or self._closed:
            return
        self._partitioned = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self._reset_all(count=True)
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind((self._host, self._port))  # not listening: connects are refused
        self._held = held
        log.info("field link to %s:%d down", *self.target)

    def heal(self) -> None:
        """Listen again on the same port, now, and relay new connections. Call on the link's
        loop."""
        held, self._held = self._held, None
        if not self._partitioned or held is None:
            return
        self._partitioned = False
        held.listen(100)
        task = asyncio.get_running_loop().create_task(
            self._serve(held), name=f"field link {self._host}:{self._port}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("field link to %s:%d up", *self.target)

    async def _serve(self, sock: socket.socket) -> None:
        server = await asyncio.start_server(self._accept, sock=sock)
        if self._closed or self._partitioned:  # closed or down again meanwhile
            server.close()
            return
        self._server = server

    # -- relaying -----------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None or self._partitioned:
            self._refused += 1
            _reset(writer)
            return
        task = asyncio.get_running_loop().create_task(
            self._relay(reader, writer), name=f"field link {self._host}:{self._port}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._refused += 1
            _reset(writer)
            return
        if self._partitioned:  # went down while connecting
            self._refused += 1
            _reset(writer)
            _reset(up_writer)
            return
        self._accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for side in pair:
                side.close()

    def _reset_all(self, *, count: bool) -> None:
        for pair in list(self._pairs):
            if count:
                self._cut += 1
            for side in pair:
                _reset(side)
        self._pairs.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream or a reset; then half-close the other side."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close at once, without a clean shutdown (an RST when the platform gives one)."""
    transport = writer.transport
    transport.abort()
