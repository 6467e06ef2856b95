"""Listeners and the in-memory transport.

The in-memory transport is a pair of objects: :class:`_MemoryTransport` is what the hub's
protocol object writes to (it mimics ``asyncio.Transport``), :class:`MemoryConnection` is the
client end that tests and simulations use. Bytes written by the hub are appended to the
client's buffer synchronously; bytes sent by the client are handed to the hub's
``data_received`` immediately, so the hub runs exactly the code it runs for TCP.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from enos_lab.errors import ClosedError, InvalidArgument
from enos_lab.mqtt._codec import Decoder
from enos_lab.mqtt._packets import Packet

if TYPE_CHECKING:
    from collections.abc import Callable

    from enos_lab.hub._tcp import TcpServer
    from enos_lab.hub._tls import TlsServer

__all__ = ["Listener", "MemoryConnection"]


class Listener:
    """A TCP (or TLS) listener of a hub. ``port`` is the real port even when 0 was asked."""

    __slots__ = ("_on_close", "_server", "host", "port", "url")

    def __init__(
        self,
        server: asyncio.Server | TcpServer | TlsServer,
        host: str,
        port: int,
        tls: bool,
        on_close: Callable[[Listener], None],
    ) -> None:
        self._server = server
        self._on_close = on_close
        self.host = host
        self.port = port
        self.url = f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"

    async def close(self) -> None:
        """Stop accepting connections (open connections stay until the hub stops)."""
        self._on_close(self)
        self._server.close()
        await self._server.wait_closed()

    def __repr__(self) -> str:
        return f"Listener({self.url!r})"


class _MemoryTransport(asyncio.Transport):
    """Hub side of an in-memory connection (the subset of ``asyncio.Transport`` the hub uses)."""

    def __init__(self, peer: MemoryConnection) -> None:
        super().__init__()
        self._peer = peer
        self._closing = False
        self._paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._peer._feed(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._peer._hub_closed()

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._peer._resume()

    def is_reading(self) -> bool:
        return not self._paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return "memory"
        return default

    def can_write_eof(self) -> bool:
        return False


class MemoryConnection:
    """Client end of an in-memory connection into a hub.

    ``send`` hands bytes to the hub; ``receive`` returns the next chunk the hub wrote;
    ``read_packet`` decodes one packet; ``close`` is an abrupt close from the client side (the
    hub treats it as a lost connection, so a will is published).
    """

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        self._transport = _MemoryTransport(self)
        self._buffer = bytearray()
        self._data = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._pending: list[bytes] = []
        self._decoder: Decoder | None = None
        self._packets: list[Packet] = []
        self.closed = False
        protocol.connection_made(self._transport)

    # -- called by the transport ------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._buffer += data
        self._data.set()

    def _hub_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._data.set()
        self._closed_event.set()
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def _resume(self) -> None:
        while self._pending and not self._transport._paused and not self.closed:
            self._protocol.data_received(self._pending.pop(0))

    # -- client API -------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Send ``data`` to the hub. Raises :class:`ClosedError` if the connection is closed."""
        if self.closed:
            raise ClosedError("the in-memory connection is closed")
        if self._transport._paused or self._pending:
            self._pending.append(bytes(data))
            return
        self._protocol.data_received(bytes(data))

    async def receive(self, timeout: float = 5.0) -> bytes:
        """Next bytes the hub wrote (everything buffered so far). [s] for ``timeout``.

        Raises :class:`ClosedError` when the hub closed the connection and nothing is left, and
        ``TimeoutError`` when nothing arrives in time.
        """
        async with asyncio.timeout(timeout):
            while not self._buffer:
                if self.closed:
                    raise ClosedError("the hub closed the in-memory connection")
                self._data.clear()
                await self._data.wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def receive_exactly(self, n: int, timeout: float = 5.0) -> bytes:
        """The next ``n`` bytes the hub wrote. [s] for ``timeout``."""
        if n < 0:
            raise InvalidArgument(f"n must be >= 0, got {n}")
        async with asyncio.timeout(timeout):
            while len(self._buffer) < n:
                if self.closed:
                    raise ClosedError(
                        f"the hub closed the connection after {len(self._buffer)} of {n} bytes"
                    )
                self._data.clear()
                await self._data.wait()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read_packet(self, protocol_level: int, timeout: float = 5.0) -> Packet:
        """Decode and return the next packet the hub sent (client-side codec at that level)."""
        if self._decoder is None or self._decoder.protocol_level != protocol_level:
            self._decoder = Decoder(
                role="client", max_packet_size=1 << 28, protocol_level=protocol_level
            )
        async with asyncio.timeout(timeout):
            while not self._packets:
                if self._buffer:
                    data = bytes(self._buffer)
                    self._buffer.clear()
                    self._packets.extend(self._decoder.feed(data))
                    continue
                if self.closed:
                    raise ClosedError("the hub closed the in-memory connection")
                self._data.clear()
                await self._data.wait()
        return self._packets.pop(0)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the hub has closed the connection. [s] for ``timeout``."""
        async with asyncio.timeout(timeout):
            await self._closed_event.wait()

    def close(self) -> None:
        """Close abruptly from the client side (the hub sees a lost connection)."""
        if self.closed:
            return
        self.closed = True
        self._transport._closing = True
        self._data.set()
        self._closed_event.set()
        asyncio.get_running_loop().call_soon(
            self._protocol.connection_lost, ConnectionResetError("client closed")
        )
