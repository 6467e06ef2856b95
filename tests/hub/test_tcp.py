"""The hub's own TCP transport (:mod:`enos_lab.hub._tcp`) over real sockets on 127.0.0.1.

The server side is a recording ``asyncio.Protocol`` served by ``TcpServer.start``; the client
side is plain non-blocking sockets driven by the loop's ``sock_*`` coroutines. The tests check
asyncio's transport contract: addresses, ordered delivery both ways, write and read flow
control, ``connection_lost`` exactly once however the connection ends (clean close, reset,
``close()`` with pending output, ``abort()``), isolation of a failing protocol, closing the
server, binding every address a host name resolves to, and the pause after running out of file
descriptors (in a subprocess with a low ``RLIMIT_NOFILE``). Numbered by area.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enos_lab.hub._tcp import TcpServer

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
WAIT = 5.0  # [s] longest wait for something that must happen
QUIET = 0.1  # [s] how long "nothing happens" is observed
HIGH_WATER = 64 * 1024  # [B] the transport's default write buffer limits (asyncio's)
LOW_WATER = 16 * 1024  # [B]
BIG = 8 * 1024 * 1024  # [B] more than the kernel buffers for a client that does not read


class Recorder(asyncio.Protocol):
    """A server-side protocol that records every callback; optionally echoes what it gets."""

    def __init__(self, *, echo: bool = False, keep_open_on_eof: bool = False) -> None:
        self.echo = echo
        self.keep_open_on_eof = keep_open_on_eof
        self.transport: asyncio.Transport | None = None
        self.events: list[str] = []
        self.received = bytearray()
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append("data")
        self.received += data
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost.append(exc)

    @property
    def t(self) -> asyncio.Transport:
        """The transport (asserting ``connection_made`` happened)."""
        assert self.transport is not None
        return self.transport


class Served:
    """A started ``TcpServer`` and the protocols it created, in accept order."""

    def __init__(self, server: TcpServer, protocols: list[Recorder]) -> None:
        self.server = server
        self.protocols = protocols

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    async def accepted(self, n: int = 1) -> Recorder:
        """The ``n``-th accepted connection's protocol (waits for it)."""
        await eventually(lambda: len(self.protocols) >= n, f"{n} accepted connection(s)")
        return self.protocols[n - 1]


Serve = Callable[..., Awaitable[Served]]


async def eventually(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Wait until ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Factory: ``await serve(Recorder)`` -> a ``Served`` on 127.0.0.1, port 0 (or ``host``).

    Servers are closed afterwards and connections still open are aborted.
    """
    started: list[Served] = []

    async def start(factory: Callable[[], Recorder] = Recorder, host: str = "127.0.0.1") -> Served:
        protocols: list[Recorder] = []

        def make() -> Recorder:
            protocol = factory()
            protocols.append(protocol)
            return protocol

        served = Served(await TcpServer.start(make, host, 0), protocols)
        started.append(served)
        return served

    yield start
    for served in started:
        served.server.close()
        for protocol in served.protocols:
            if protocol.transport is not None:
                protocol.transport.abort()
    await asyncio.sleep(0)  # connection_lost runs from a loop callback (and closes the socket)


class Clients:
    """Non-blocking client sockets, all closed after the test."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    async def connect(
        self, address: tuple[Any, ...], *, family: int = socket.AF_INET, rcvbuf: int = 0
    ) -> socket.socket:
        """A connected socket; ``rcvbuf`` shrinks its receive buffer (for writers that block)."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.sockets.append(sock)
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), WAIT)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def clients() -> Iterator[Clients]:
    """Client sockets (``await clients.connect(address)``), closed after the test."""
    made = Clients()
    yield made
    made.close()


async def send(sock: socket.socket, data: bytes) -> None:
    await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(sock, data), WAIT)


async def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """The next ``n`` bytes (fails on EOF or timeout)."""
    loop = asyncio.get_running_loop()
    got = bytearray()

    async def run() -> None:
        while len(got) < n:
            chunk = await loop.sock_recv(sock, n - len(got))
            assert chunk, f"EOF after {len(got)} of {n} bytes"
            got.extend(chunk)

    await asyncio.wait_for(run(), WAIT)
    return bytes(got)


async def recv_to_eof(sock: socket.socket, *, reset_ok: bool = False) -> bytes:
    """Everything until EOF (and, with ``reset_ok``, until a reset)."""
    loop = asyncio.get_running_loop()
    got = bytearray()

    async def run() -> None:
        while chunk := await loop.sock_recv(sock, 1 << 20):
            got.extend(chunk)

    try:
        await asyncio.wait_for(run(), WAIT)
    except ConnectionResetError:
        if not reset_ok:
            raise
    return bytes(got)


async def assert_silent(sock: socket.socket) -> None:
    """Nothing arrives on ``sock`` for ``QUIET`` seconds (and it is not closed)."""
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), QUIET)
        pytest.fail(f"unexpected {chunk!r}")


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible random bytes (any loss, duplication or reordering shows)."""
    return random.Random(seed).randbytes(n)


def fill_write_buffer(transport: asyncio.Transport, size: int = BIG) -> bytes:
    """Write ``size`` bytes to a client that does not read; the transport must buffer some."""
    data = payload(size, seed=size)
    transport.write(data)
    assert transport.get_write_buffer_size() > HIGH_WATER, "the kernel took everything"
    return data


# -- 01 round trip -----------------------------------------------------------------------------


async def test_01_1_addresses_and_data_both_ways(serve: Serve, clients: Clients) -> None:
    """``peername`` is the client's address, ``sockname`` the server's; data arrives in order
    both ways."""
    served = await serve()
    client = await clients.connect(served.address)
    proto = await served.accepted()
    transport = proto.t
    assert transport.get_extra_info("peername") == client.getsockname()
    assert transport.get_extra_info("sockname") == ("127.0.0.1", served.port)
    assert transport.get_extra_info("sockname") == client.getpeername()
    assert transport.get_extra_info("no-such-thing", "dflt") == "dflt"
    sock = transport.get_extra_info("socket")
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert proto.events == ["made"]
    assert transport.is_reading()
    assert not transport.is_closing()

    upstream = payload(1024 * 1024, seed=1)
    for i in range(0, len(upstream), 10_000):
        await send(client, upstream[i : i + 10_000])
    await eventually(lambda: len(proto.received) >= len(upstream), "the upstream bytes")
    assert bytes(proto.received) == upstream
    assert set(proto.events[1:]) == {"data"}

    transport.write(b"hello ")
    transport.write(bytearray(b"from "))
    transport.write(memoryview(b"xxthe server").cast("B")[2:])
    transport.writelines([b", ", b"in ", b"order"])
    transport.write(b"")  # nothing to send: no effect
    expected = b"hello from the server, in order"
    assert await recv_exactly(client, len(expected)) == expected
    assert transport.get_write_buffer_size() == 0
    assert proto.lost == []


async def test_01_2_each_connection_gets_its_own_protocol(serve: Serve, clients: Clients) -> None:
    """Three clients, three protocols, three transports; each echo goes to its own client."""
    served = await serve(lambda: Recorder(echo=True))
    socks = [await clients.connect(served.address) for _ in range(3)]
    protos = [await served.accepted(i + 1) for i in range(3)]
    assert len({id(p.t) for p in protos}) == 3
    assert {p.t.get_extra_info("peername") for p in protos} == {s.getsockname() for s in socks}
    for i, sock in enumerate(socks):
        await send(sock, f"client {i}".encode())
    for i, sock in enumerate(socks):
        assert await recv_exactly(sock, 8) == f"client {i}".encode()


# -- 02 write flow control ----------------------------------------------------------------------


async def test_02_1_pause_and_resume_writing(serve: Serve, clients: Clients) -> None:
    """A client that does not read: ``pause_writing`` once above the high-water mark, buffered
    bytes kept; once the client reads everything: ``resume_writing``, empty buffer, every byte
    delivered in order."""
    served = await serve()
    client = await clients.connect(served.address, rcvbuf=4096)
    proto = await served.accepted()
    transport = proto.t
    assert transport.get_write_buffer_limits() == (LOW_WATER, HIGH_WATER)

    written = bytearray()
    chunk_size = 256 * 1024
    seed = 0
    while "pause_writing" not in proto.events:
        assert len(written) < 64 * 1024 * 1024, "pause_writing never came"
        assert transport.get_write_buffer_size() <= HIGH_WATER
        chunk = payload(chunk_size, seed=seed)
        seed += 1
        transport.write(chunk)
        written += chunk
    assert transport.get_write_buffer_size() > HIGH_WATER
    # more writes while paused are buffered, and do not pause again
    for _ in range(3):
        chunk = payload(chunk_size, seed=seed)
        seed += 1
        transport.write(chunk)
        written += chunk
    await asyncio.sleep(QUIET)  # the loop runs: the client does not read, nothing resumes
    assert transport.get_write_buffer_size() > HIGH_WATER
    assert proto.events.count("pause_writing") == 1
    assert "resume_writing" not in proto.events

    got = await recv_exactly(client, len(written))
    assert got == bytes(written)
    await eventually(lambda: transport.get_write_buffer_size() == 0, "an empty write buffer")
    await eventually(lambda: "resume_writing" in proto.events, "resume_writing")
    assert [e for e in proto.events if e.endswith("_writing")] == [
        "pause_writing",
        "resume_writing",
    ]
    await assert_silent(client)  # nothing more than what was written
    assert proto.lost == []


async def test_02_2_write_buffer_limits(serve: Serve, clients: Clients) -> None:
    """``set_write_buffer_limits`` validates and derives missing limits like asyncio; lowering
    the high-water mark below the buffered amount pauses the protocol at once."""
    served = await serve()
    await clients.connect(served.address, rcvbuf=4096)
    proto = await served.accepted()
    transport = proto.t
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=10, low=-1)
    assert transport.get_write_buffer_limits() == (LOW_WATER, HIGH_WATER)  # unchanged
    transport.set_write_buffer_limits(high=1000)
    assert transport.get_write_buffer_limits() == (250, 1000)
    transport.set_write_buffer_limits(low=100)
    assert transport.get_write_buffer_limits() == (100, 400)
    transport.set_write_buffer_limits()
    assert transport.get_write_buffer_limits() == (LOW_WATER, HIGH_WATER)

    transport.set_write_buffer_limits(high=BIG)  # fill without pausing
    fill_write_buffer(transport)
    assert "pause_writing" not in proto.events
    transport.set_write_buffer_limits(high=HIGH_WATER)
    assert proto.events.count("pause_writing") == 1


# -- 03 read flow control -----------------------------------------------------------------------


async def test_03_1_pause_and_resume_reading(serve: Serve, clients: Clients) -> None:
    """While reading is paused nothing is delivered; ``resume_reading`` delivers it all."""
    served = await serve()
    client = await clients.connect(served.address)
    proto = await served.accepted()
    transport = proto.t
    transport.pause_reading()
    assert not transport.is_reading()
    await send(client, b"held back")
    await asyncio.sleep(QUIET)
    assert proto.received == b""
    assert proto.events == ["made"]
    assert not transport.is_reading()

    transport.resume_reading()
    assert transport.is_reading()
    await eventually(lambda: proto.received == b"held back", "the held-back data")
    transport.pause_reading()
    transport.pause_reading()  # idempotent
    transport.resume_reading()
    transport.resume_reading()
    await send(client, b" and more")
    await eventually(lambda: proto.received == b"held back and more", "more data")
    assert proto.lost == []


async def test_03_2_paused_reading_still_sees_eof_after_resume(
    serve: Serve, clients: Clients
) -> None:
    """A client closing while reading is paused: nothing happens until ``resume_reading``."""
    served = await serve()
    client = await clients.connect(served.address)
    proto = await served.accepted()
    proto.t.pause_reading()
    await send(client, b"last words")
    client.close()
    await asyncio.sleep(QUIET)
    assert proto.events == ["made"]
    proto.t.resume_reading()
    await eventually(lambda: proto.lost, "connection_lost")
    assert proto.received == b"last words"
    assert proto.events[-2:] == ["eof", "lost"]
    assert proto.lost == [None]


# -- 04 the client ends the connection ----------------------------------------------------------


async def test_04_1_client_closes_cleanly(serve: Serve, clients: Clients) -> None:
    """EOF from the client: ``eof_received``, then ``connection_lost(None)`` exactly once."""
    served = await serve()
    client = await clients.connect(served.address)
    proto = await served.accepted()
    client.close()
    await eventually(lambda: proto.lost, "connection_lost")
    await asyncio.sleep(QUIET)
    assert proto.events == ["made", "eof", "lost"]
    assert proto.lost == [None]
    transport = proto.t
    assert transport.is_closing()
    assert transport.get_extra_info("socket") is None  # closed and released
    transport.close()  # no effect once lost
    transport.abort()
    await asyncio.sleep(QUIET)
    assert proto.lost == [None]


async def test_04_2_eof_received_true_keeps_the_connection_half_open(
    serve: Serve, clients: Clients
) -> None:
    """``eof_received`` returning True: reading stops, writing still works, ``close()`` ends
    the connection."""
    served = await serve(lambda: Recorder(keep_open_on_eof=True))
    client = await clients.connect(served.address)
    proto = await served.accepted()
    client.shutdown(socket.SHUT_WR)
    await eventually(lambda: "eof" in proto.events, "eof_received")
    await asyncio.sleep(QUIET)
    transport = proto.t
    assert proto.lost == []
    assert not transport.is_closing()
    assert not transport.is_reading()
    transport.write(b"still here")
    assert await recv_exactly(client, 10) == b"still here"
    transport.close()
    assert await recv_to_eof(client) == b""
    await eventually(lambda: proto.lost, "connection_lost")
    assert proto.events == ["made", "eof", "lost"]
    assert proto.lost == [None]


async def test_04_3_client_resets(serve: Serve, clients: Clients) -> None:
    """A reset (SO_LINGER 0 s, then close): ``connection_lost`` exactly once, the transport is
    closing and released its socket."""
    served = await serve()
    client = await clients.connect(served.address)
    proto = await served.accepted()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    await eventually(lambda: proto.lost, "connection_lost")
    await asyncio.sleep(QUIET)
    assert proto.events.count("lost") == 1
    assert proto.events[-1] == "lost"
    (exc,) = proto.lost
    assert exc is None or isinstance(exc, OSError), exc
    assert proto.t.is_closing()
    assert proto.t.get_extra_info("socket") is None


# -- 05 close() with pending output -------------------------------------------------------------


async def test_05_1_close_flushes_the_buffer_then_loses_the_connection(
    serve: Serve, clients: Clients
) -> None:
    """``close()`` with megabytes buffered: the client gets every byte then EOF; writes after
    ``close()`` are dropped; ``connection_lost(None)`` once, only after the flush."""
    served = await serve()
    client = await clients.connect(served.address, rcvbuf=4096)
    proto = await served.accepted()
    transport = proto.t
    data = fill_write_buffer(transport)
    buffered = transport.get_write_buffer_size()
    transport.close()
    assert transport.is_closing()
    assert not transport.is_reading()
    transport.write(b"written after close")
    transport.writelines([b"this", b"too"])
    assert transport.get_write_buffer_size() == buffered
    transport.close()  # idempotent
    await asyncio.sleep(QUIET)
    assert proto.lost == []  # the client does not read: the buffer cannot drain

    assert await recv_to_eof(client) == data
    await eventually(lambda: proto.lost, "connection_lost")
    await asyncio.sleep(QUIET)
    assert proto.lost == [None]
    assert proto.events.count("lost") == 1
    assert transport.get_write_buffer_size() == 0


async def test_05_2_close_without_pending_output(serve: Serve, clients: Clients) -> None:
    """``close()`` with nothing buffered: the client sees EOF, ``connection_lost(None)`` comes
    from a loop callback (not from inside ``close()``)."""
    served = await serve()
    client = await clients.connect(served.address)
    proto = await served.accepted()
    proto.t.write(b"bye")
    proto.t.close()
    assert proto.lost == []  # not synchronously
    await eventually(lambda: proto.lost, "connection_lost")
    assert proto.lost == [None]
    assert await recv_to_eof(client) == b"bye"


# -- 06 abort() -------------------------------------------------------------------------------


async def test_06_1_abort_drops_pending_output(serve: Serve, clients: Clients) -> None:
    """``abort()`` with megabytes buffered: the buffer is dropped, ``connection_lost(None)``
    once, the client sees the end of the connection without the full data."""
    served = await serve()
    client = await clients.connect(served.address, rcvbuf=4096)
    proto = await served.accepted()
    transport = proto.t
    data = fill_write_buffer(transport)
    transport.abort()
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    assert proto.lost == []  # from a loop callback
    await eventually(lambda: proto.lost, "connection_lost")
    got = await recv_to_eof(client, reset_ok=True)
    assert len(got) < len(data)
    assert data.startswith(got)
    await asyncio.sleep(QUIET)
    assert proto.lost == [None]
    assert proto.events.count("lost") == 1


async def test_06_2_close_then_abort_loses_once(serve: Serve, clients: Clients) -> None:
    """``close()`` followed by ``abort()`` (with and without pending output): one
    ``connection_lost``."""
    served = await serve()
    await clients.connect(served.address, rcvbuf=4096)
    await clients.connect(served.address)
    pending, idle = await served.accepted(1), await served.accepted(2)
    fill_write_buffer(pending.t)
    for proto in (pending, idle):
        proto.t.close()
        proto.t.abort()
        proto.t.abort()
    await eventually(lambda: pending.lost and idle.lost, "connection_lost")
    await asyncio.sleep(QUIET)
    assert pending.lost == [None]
    assert idle.lost == [None]


# -- 07 a failing protocol ----------------------------------------------------------------------


class Exploding(Recorder):
    """Echoes, except that ``b"boom"`` makes ``data_received`` raise."""

    def __init__(self) -> None:
        super().__init__(echo=True)

    def data_received(self, data: bytes) -> None:
        if b"boom" in data:
            raise RuntimeError("protocol exploded")
        super().data_received(data)


async def test_07_1_protocol_error_is_logged_and_closes_that_connection(
    serve: Serve, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    """``data_received`` raising: logged with its traceback, that connection is lost with the
    exception, the others and the server keep working."""
    served = await serve(Exploding)
    bystander = await clients.connect(served.address)
    bystander_proto = await served.accepted(1)
    victim = await clients.connect(served.address)
    victim_proto = await served.accepted(2)
    with caplog.at_level(logging.ERROR, logger="enos_lab.hub"):
        await send(victim, b"boom")
        await eventually(lambda: victim_proto.lost, "connection_lost")
    (exc,) = victim_proto.lost
    assert isinstance(exc, RuntimeError)
    assert victim_proto.t.is_closing()
    assert await recv_to_eof(victim, reset_ok=True) == b""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "enos_lab.hub"
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[1] is exc

    await send(bystander, b"still fine")
    assert await recv_exactly(bystander, 10) == b"still fine"
    assert bystander_proto.lost == []
    newcomer = await clients.connect(served.address)
    await send(newcomer, b"hello")
    assert await recv_exactly(newcomer, 5) == b"hello"
    assert served.server.is_serving()


class FailingSetup(Recorder):
    """Echoes, except that the first connection's ``connection_made`` raises (after writing
    ``prefill`` bytes, if any)."""

    made = 0

    def __init__(self, prefill: int = 0) -> None:
        super().__init__(echo=True)
        self.prefill = prefill

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        FailingSetup.made += 1
        if FailingSetup.made == 1:
            if self.prefill:
                self.t.write(payload(self.prefill))
            raise RuntimeError("connection_made failed")


async def check_setup_failure_is_isolated(
    serve: Serve, clients: Clients, caplog: pytest.LogCaptureFixture, prefill: int
) -> None:
    """The first connection's ``connection_made`` raises: logged, that client's connection
    ends; the next connections (which reuse its descriptor number) work."""
    FailingSetup.made = 0
    served = await serve(lambda: FailingSetup(prefill))
    with caplog.at_level(logging.ERROR, logger="enos_lab.hub"):
        failed = await clients.connect(served.address, rcvbuf=4096)
        await served.accepted()
        got = await recv_to_eof(failed, reset_ok=True)
    assert len(got) < max(prefill, 1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    failed.close()
    for i in range(3):  # one at a time: descriptor numbers are reused
        client = await clients.connect(served.address)
        proto = await served.accepted(2 + i)
        await send(client, b"works")
        assert await recv_exactly(client, 5) == b"works"
        client.close()
        await eventually(lambda: proto.lost, "connection_lost")  # noqa: B023
        assert proto.lost == [None]
    assert len(caplog.records) == 1


async def test_07_2_connection_made_error_is_isolated(
    serve: Serve, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    """``connection_made`` raising: logged, that connection is dropped, the server goes on."""
    await check_setup_failure_is_isolated(serve, clients, caplog, prefill=0)


async def test_07_3_connection_made_error_after_buffered_write_is_isolated(
    serve: Serve, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    """As 07_2, with output buffered by ``connection_made`` before it raises."""
    await check_setup_failure_is_isolated(serve, clients, caplog, prefill=BIG)


# -- 08 closing the server ----------------------------------------------------------------------


async def test_08_1_close_stops_accepting_keeps_connections(serve: Serve, clients: Clients) -> None:
    """``TcpServer.close()``: new connections are refused, accepted ones keep working."""
    served = await serve(lambda: Recorder(echo=True))
    address = served.address
    client = await clients.connect(address)
    proto = await served.accepted()
    assert served.server.is_serving()
    served.server.close()
    served.server.close()  # idempotent
    await served.server.wait_closed()
    assert not served.server.is_serving()
    assert all(sock.fileno() == -1 for sock in served.server.sockets)
    with pytest.raises(ConnectionRefusedError):
        await clients.connect(address)
    assert len(served.protocols) == 1

    await send(client, b"ping")
    assert await recv_exactly(client, 4) == b"ping"
    assert proto.lost == []
    assert not proto.t.is_closing()


# -- 09 binding -------------------------------------------------------------------------------


async def test_09_1_every_resolved_address_on_one_port(
    serve: Serve, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host name resolving to several addresses, port 0: one listening socket per address,
    all on the same free port, each accepting connections. (The resolver answers 127.0.0.1 and
    127.0.0.2, both loopback on Linux, so that the test does not depend on how this machine
    resolves ``localhost``.)"""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def two_loopbacks(host: Any, port: Any, **kwargs: Any) -> list[Any]:
        assert host == "two-loopbacks"
        return [
            info
            for address in ("127.0.0.1", "127.0.0.2")
            for info in await real(address, port, **kwargs)
        ]

    monkeypatch.setattr(loop, "getaddrinfo", two_loopbacks)
    served = await serve(lambda: Recorder(echo=True), host="two-loopbacks")
    monkeypatch.undo()
    sockets = served.server.sockets
    assert sorted(s.getsockname()[0] for s in sockets) == ["127.0.0.1", "127.0.0.2"]
    ports = {s.getsockname()[1] for s in sockets}
    assert len(ports) == 1
    assert ports.pop() != 0
    for listening in sockets:
        client = await clients.connect(listening.getsockname(), family=listening.family)
        await send(client, b"hi")
        assert await recv_exactly(client, 2) == b"hi"


async def test_09_2_duplicate_resolver_answers_bind_once(
    serve: Serve, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver answering the same address twice (different protocols): one socket."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def doubled(*args: Any, **kwargs: Any) -> list[Any]:
        infos = await real(*args, **kwargs)
        return [*infos, *infos]

    monkeypatch.setattr(loop, "getaddrinfo", doubled)
    served = await serve(lambda: Recorder(echo=True))
    monkeypatch.undo()
    assert len(served.server.sockets) == 1
    client = await clients.connect(served.address)
    await send(client, b"hi")
    assert await recv_exactly(client, 2) == b"hi"


async def test_09_3_bind_failure_raises_and_releases(serve: Serve) -> None:
    """Binding a port that is already listening: ``OSError`` (EADDRINUSE) naming the address."""
    served = await serve()
    with pytest.raises(OSError) as raised:
        await TcpServer.start(Recorder, "127.0.0.1", served.port)
    assert raised.value.errno == errno.EADDRINUSE
    assert str(served.port) in str(raised.value)


# -- 10 out of file descriptors -----------------------------------------------------------------

EMFILE_SCRIPT = r"""
import asyncio, errno, json, logging, os, resource, socket, time

import enos_lab.hub._tcp as tcp

tcp._ACCEPT_RETRY_DELAY = 0.2
WAIT = 5.0
errors = []  # (time, message) of every ERROR the server logs
accepted = []  # time of every accept
transports = []


class Capture(logging.Handler):
    def emit(self, record):
        errors.append((time.monotonic(), record.getMessage()))


log = logging.getLogger("enos_lab.hub")
log.addHandler(Capture(logging.ERROR))
log.setLevel(logging.ERROR)
log.propagate = False


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        transports.append(transport)
        accepted.append(time.monotonic())

    def data_received(self, data):
        self.transport.write(data)


async def eventually(condition):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timeout"
        await asyncio.sleep(0.002)


async def echo(loop, sock, data):
    await asyncio.wait_for(loop.sock_sendall(sock, data), WAIT)
    got = b""
    while len(got) < len(data):
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 100), WAIT)
        if not chunk:
            break
        got += chunk
    return got.decode()


async def main():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    loop = asyncio.get_running_loop()
    server = await tcp.TcpServer.start(Echo, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()
    spare = os.open(os.devnull, os.O_RDONLY)  # kept back so that the last client gets one
    clients = []
    for _ in range(200):  # one client (one descriptor), then its accept (another), ...
        try:
            sock = socket.socket()
        except OSError as exc:
            assert exc.errno == errno.EMFILE and spare is not None, exc
            os.close(spare)
            spare = None
            continue
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, address), WAIT)
        clients.append(sock)
        await eventually(lambda: errors or len(accepted) == len(clients))
        if errors:
            break
    result = {
        "error": errors[0][1] if errors else None,
        "accepting_fds_after_error": len(server._accepting),
    }
    failed_at = errors[0][0]
    if len(accepted) == len(clients):
        # accept() checks for a free descriptor before looking at the backlog: the accept
        # after the last client's failed although nothing was waiting. Connect one more
        # client (with the spare descriptor): it waits in the backlog while accepting pauses.
        assert spare is not None
        os.close(spare)
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, address), WAIT)
        clients.append(sock)
    result["clients"] = len(clients)
    result["accepted_before"] = len(accepted)
    await asyncio.sleep(0.1)  # within the pause: no retry (no new error), no accept
    pending = clients.pop()  # connected, waiting in the listening socket's backlog
    for sock in clients[:4]:
        sock.close()  # frees 4 descriptors here, 4 more when the server sees the EOFs
    del clients[:4]
    newcomer = socket.socket()
    newcomer.setblocking(False)
    await asyncio.wait_for(loop.sock_connect(newcomer, address), WAIT)
    result["echo_newcomer"] = await echo(loop, newcomer, b"newcomer")
    result["echo_pending"] = await echo(loop, pending, b"pending")
    # times relative to the first failure (a slow machine may see a retry fail again)
    result["error_times"] = [t - failed_at for t, _ in errors]
    result["error_messages"] = [message for _, message in errors]
    result["accept_times"] = [t - failed_at for t in accepted[result["accepted_before"] :]]
    result["accepting_fds_at_end"] = len(server._accepting)
    server.close()
    for sock in [*clients, pending, newcomer]:
        sock.close()
    for transport in transports:
        transport.abort()
    await asyncio.sleep(0.01)
    print(json.dumps(result))


asyncio.run(main())
"""


def test_10_1_out_of_descriptors_pauses_accepting_then_resumes() -> None:
    """With ``RLIMIT_NOFILE`` = 64 (in a subprocess), accept() failing with EMFILE is logged
    and pauses accepting for ``_ACCEPT_RETRY_DELAY`` instead of spinning; after descriptors
    are freed the waiting connection and a new one are accepted and echo."""
    done = subprocess.run(
        [sys.executable, "-c", EMFILE_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # every client but the last was accepted; the last one waits while accepting is paused
    assert result["accepted_before"] == result["clients"] - 1, result
    assert result["error"] is not None, result
    assert "Too many open files" in result["error"], result
    assert result["accepting_fds_after_error"] == 0, result  # the listening socket is paused
    assert all("Too many open files" in m for m in result["error_messages"]), result
    # no busy retrying: failures (if a retry fails again) are a retry delay (0.2 s) apart
    times = result["error_times"]
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(times)), result
    assert result["echo_newcomer"] == "newcomer", result
    assert result["echo_pending"] == "pending", result
    # the waiting and the new connection: accepted, once the retry delay had passed
    assert len(result["accept_times"]) == 2, result
    assert min(result["accept_times"]) >= 0.15, result
    assert result["accepting_fds_at_end"] == 1, result  # accepting again
