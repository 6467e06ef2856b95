"""TLS for the hub: accept over TCP, then upgrade each connection with the context current then.

Theory of operation
-------------------
``loop.create_server(..., ssl=context)`` fixes one context for the server's life and hides
failed handshakes (asyncio logs them at DEBUG and the protocol never hears of them). A hub
serving devices needs both otherwise: revoking a device certificate reissues the CRL, which
every later handshake must check, and a refused handshake (a foreign, revoked or malformed
certificate) must reach the login log with its reason. :class:`TlsServer` therefore accepts
plain TCP with a small protocol, :class:`_Handshake`, that stops reading at once and upgrades
the connection with ``loop.start_tls(..., server_side=True)`` using the context a callable
returns for that connection (a fixed context works too). Until the handshake has completed
and this module's coroutine runs again, :class:`_Waiting` holds whatever the client sent right
after its handshake (a CONNECT usually follows in the same flight); then the hub's own
connection protocol replaces it, gets ``connection_made`` with the TLS transport and the held
bytes, and from then on runs exactly as over plain TCP; the transport's ``ssl_object`` gives
the peer certificate to authentication (see :mod:`enos_lab.hub._connect`).

A handshake that fails (a certificate the context does not verify, a client speaking plain
MQTT to the TLS port, a peer that stalls past the timeout or hangs up) closes the connection
and is reported through ``on_failure(peer, reason)``: the hub turns it into a
:class:`~enos_lab.hub.HandshakeFailed` event. At most ``max_handshakes`` handshakes run at once
per server: a connection beyond that is closed at once (a flood of idle TCP connections to the
TLS port cannot make the hub hold unbounded handshake state), and reported the same way. The
timeout is real time (the event loop's): it paces I/O, not protocol time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, TypeAlias

from enos_lab.hub._connection import peer_name

__all__ = ["ContextSource", "TlsServer", "handshake_failure"]

log = logging.getLogger("enos_lab.hub")

ContextSource: TypeAlias = ssl.SSLContext | Callable[[], ssl.SSLContext]
"""A server ``SSLContext``, or a callable that returns the one to use for each new connection."""


def handshake_failure(exc: BaseException) -> str:
    """Why a TLS handshake failed, in words for a log: the certificate verification message
    when there is one (``"certificate revoked"``), else OpenSSL's reason or the error."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"client certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS error: {exc.reason.lower().replace('_', ' ')}"
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    if isinstance(exc, ConnectionError | EOFError):
        return "connection closed during the TLS handshake"
    return f"TLS handshake failed: {exc}"


class TlsServer:
    """A TCP server whose connections are upgraded to TLS (see the module docstring).

    Build it with :meth:`start`. ``factory`` makes the hub's protocol object of a connection
    once its handshake completed; ``context`` is the server context or a callable returning
    the one for each connection; ``timeout`` bounds a handshake [s, real time];
    ``on_failure(peer, reason)`` hears of every failed or refused handshake.
    """

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        context: ContextSource,
        timeout: float,
        max_handshakes: int,
        on_failure: Callable[[str, str], None],
    ) -> None:
        self._factory = factory
        self._context = context
        self._timeout = timeout
        self._max_handshakes = max_handshakes
        self._on_failure = on_failure
        self._handshakes: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.sockets: tuple[Any, ...] = ()
        self.refused = 0
        """Connections closed unshaken because ``max_handshakes`` were running. [-]"""

    @classmethod
    async def start(  # noqa: PLR0917 - the server's settings, passed through
        cls,
        factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        context: ContextSource,
        timeout: float,
        max_handshakes: int,
        on_failure: Callable[[str, str], None],
    ) -> TlsServer:
        """Listen on ``host``:``port`` (every address ``host`` resolves to; 0 = a free port)."""
        self = cls(factory, context, timeout, max_handshakes, on_failure)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Handshake(self), host, port, reuse_address=True
        )
        self.sockets = tuple(self._server.sockets)
        return self

    def _context_now(self) -> ssl.SSLContext:
        context = self._context
        return context if isinstance(context, ssl.SSLContext) else context()

    def _accepted(self, transport: asyncio.Transport) -> None:
        transport.pause_reading()  # nothing is read before the handshake starts
        if len(self._handshakes) >= self._max_handshakes:
            self.refused += 1
            transport.abort()
            self._on_failure(
                peer_name(transport.get_extra_info("peername")),
                f"refused: {self._max_handshakes} TLS handshakes already in progress",
            )
            return
        task = asyncio.get_running_loop().create_task(self._upgrade(transport))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        peer = peer_name(transport.get_extra_info("peername"))
        loop = asyncio.get_running_loop()
        waiting = _Waiting()
        started = loop.time()
        try:
            context = self._context_now()
            tls = await loop.start_tls(
                transport,
                waiting,
                context,
                server_side=True,
                ssl_handshake_timeout=self._timeout,
            )
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception as exc:  # ssl.SSLError, OSError, TimeoutError, a failing context source
            transport.abort()
            # asyncio aborts a handshake past its timeout with a ConnectionAbortedError
            timed_out = loop.time() - started >= self._timeout and isinstance(exc, OSError)
            reason = handshake_failure(TimeoutError() if timed_out else exc)
            log.debug("TLS handshake with %s failed: %s", peer, reason)
            self._on_failure(peer, reason)
            return
        if tls is None:  # the peer went away as the handshake completed
            transport.abort()
            return
        protocol = self._factory()
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        waiting.hand_over(protocol)

    def is_serving(self) -> bool:
        """Whether the server still accepts connections."""
        return self._server is not None and self._server.is_serving()

    def close(self) -> None:
        """Stop accepting; handshakes in progress are abandoned (their connections closed)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handshakes):
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the server and the abandoned handshakes are gone."""
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class _Waiting(asyncio.Protocol):
    """The TLS transport's protocol between the end of the handshake and the hub's connection
    taking over: keeps what arrives (bounded by the TLS layer's reads of one loop iteration)
    and whether the connection ended, and hands both over."""

    __slots__ = ("_data", "_ended", "_lost")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._ended = False
        self._lost: Exception | None = None

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def eof_received(self) -> bool | None:
        return None  # close: the hub's connections end at EOF too

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._lost = exc

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        """Give ``protocol`` what arrived meanwhile, then the end of the connection if it came."""
        if self._data:
            protocol.data_received(b"".join(self._data))
            self._data.clear()
        if self._ended:
            protocol.connection_lost(self._lost)


class _Handshake(asyncio.Protocol):
    """A freshly accepted TCP connection of a :class:`TlsServer`, until ``start_tls`` takes it."""

    __slots__ = ("_server",)

    def __init__(self, server: TlsServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._server._accepted(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        """Unreachable: reading stays paused until ``start_tls`` replaces this protocol."""
