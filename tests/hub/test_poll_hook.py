"""The lab's selector (direct I/O, flush points) and how the hub writes its output.

:func:`enos_lab.hub._tcp.new_event_loop` gives a loop whose selector handles the hub's own
sockets itself and runs callbacks at flush points (after its direct I/O, before it polls); the
hub writes its socket connections' output from there, so that a message arriving alone is
forwarded within one ``select()``. On other loops, and for transports that are not the hub's
own socket transport, one ``call_soon`` callback per iteration writes it.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from enos_lab.hub import Hub, HubConfig
from enos_lab.hub._connection import Connection
from enos_lab.hub._output import Output
from enos_lab.hub._state import Link
from enos_lab.hub._tcp import (
    PollHookSelector,
    _SocketTransport,
    new_event_loop,
    poll_hook_selector,
)
from enos_lab.mqtt._codec import Decoder, encode
from enos_lab.mqtt._packets import Connect, Publish, Subscribe, Subscription

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def selector() -> Iterator[tuple[PollHookSelector, socket.socket]]:
    """A selector watching one end of a socket pair that never becomes readable."""
    sel = PollHookSelector()
    quiet, other = socket.socketpair()
    sel.register(quiet, 1)  # EVENT_READ
    yield sel, quiet
    sel.close()
    quiet.close()
    other.close()


def test_callbacks_run_once_before_the_next_poll(
    selector: tuple[PollHookSelector, socket.socket],
) -> None:
    sel, _ = selector
    calls: list[str] = []
    sel.call_before_poll(lambda: calls.append("a") is None and False)
    sel.call_before_poll(lambda: calls.append("b") is None and False)
    assert sel.select(0) == []
    assert calls == ["a", "b"]
    sel.select(0)
    assert calls == ["a", "b"]  # once each


def test_a_true_result_makes_the_poll_non_blocking(
    selector: tuple[PollHookSelector, socket.socket],
) -> None:
    sel, _ = selector
    started = time.monotonic()
    sel.select(0.2)  # nothing to run: blocks for the timeout
    assert time.monotonic() - started >= 0.15
    sel.call_before_poll(lambda: True)
    started = time.monotonic()
    sel.select(5.0)
    assert time.monotonic() - started < 1.0


def test_a_failing_callback_is_logged_and_the_others_still_run(
    selector: tuple[PollHookSelector, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    sel, _ = selector
    ran: list[bool] = []

    def broken() -> bool:
        raise RuntimeError("boom")

    sel.call_before_poll(broken)
    sel.call_before_poll(lambda: ran.append(True) is None and False)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="enos_lab.hub"):
        sel.select(5.0)  # does not block: what the failed callback meant to schedule may be due
    assert time.monotonic() - started < 1.0
    assert ran == [True]
    assert any("before polling failed" in r.getMessage() for r in caplog.records)


class _Recorder:
    """A direct I/O handler that records its calls (and runs an optional action on read)."""

    def __init__(self, name: str, calls: list[str], on_read: Callable[[], None] | None = None):
        self.name = name
        self.calls = calls
        self.on_read = on_read

    def _read_ready(self) -> None:
        self.calls.append(f"{self.name}:read")
        if self.on_read is not None:
            self.on_read()

    def _write_ready(self) -> None:
        self.calls.append(f"{self.name}:write")


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Three connected socket pairs, closed afterwards."""
    made = [socket.socketpair() for _ in range(3)]
    yield made
    for a, b in made:
        a.close()
        b.close()


@pytest.fixture
def sel() -> Iterator[PollHookSelector]:
    """A new selector, closed afterwards."""
    selector = PollHookSelector()
    yield selector
    selector.close()


def test_the_loops_own_registrations_work_as_with_any_selector(
    pairs: list[tuple[socket.socket, socket.socket]],
    sel: PollHookSelector,
) -> None:
    (a, b), (c, _d), _ = pairs
    key = sel.register(a, selectors.EVENT_READ, "data-a")  # a file object
    assert (key.fileobj, key.fd, key.events, key.data) == (a, a.fileno(), 1, "data-a")
    assert sel.get_key(a.fileno()) == key == sel.get_map()[a.fileno()]
    with pytest.raises(KeyError, match="already registered"):
        sel.register(a.fileno(), selectors.EVENT_WRITE)
    with pytest.raises(ValueError, match="Invalid events"):
        sel.register(c, 4)
    with pytest.raises(KeyError, match="not registered"):
        sel.get_key(c)
    assert sel.select(0) == []
    b.send(b"x")
    assert sel.select(1.0) == [(key, selectors.EVENT_READ)]
    key = sel.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "data-rw")
    assert sel.select(1.0) == [(key, selectors.EVENT_READ | selectors.EVENT_WRITE)]
    a.recv(1)
    assert sel.select(1.0) == [(key, selectors.EVENT_WRITE)]
    assert sel.unregister(a) == key
    assert sel.select(0) == []
    with pytest.raises(KeyError, match="not registered"):
        sel.unregister(a)


def test_watched_descriptors_are_handled_inside_select(
    pairs: list[tuple[socket.socket, socket.socket]],
    sel: PollHookSelector,
) -> None:
    (a, b), (c, _d), _ = pairs
    calls: list[str] = []
    own = sel.register(c, selectors.EVENT_WRITE)  # always writable
    sel.watch(a.fileno(), _Recorder("a", calls), selectors.EVENT_READ)
    assert a.fileno() not in sel.get_map()  # not one of the loop's
    assert sel.select(0) == [(own, selectors.EVENT_WRITE)]
    assert calls == []
    b.send(b"x")
    assert sel.select(1.0) == [(own, selectors.EVENT_WRITE)]  # only the loop's event
    assert calls == ["a:read"]
    sel.watch(a.fileno(), _Recorder("a", calls), selectors.EVENT_READ | selectors.EVENT_WRITE)
    sel.select(1.0)
    assert calls[1:] == ["a:read", "a:write"]
    a.recv(1)
    sel.watch(a.fileno(), _Recorder("a", calls), 0)
    b.send(b"y")
    sel.select(0.05)
    assert calls[3:] == []  # no longer watched
    with pytest.raises(KeyError, match="registered by the loop"):
        sel.watch(c.fileno(), _Recorder("c", calls), selectors.EVENT_READ)
    sel.watch(a.fileno(), _Recorder("a", calls), selectors.EVENT_READ)
    with pytest.raises(KeyError, match="already registered"):
        sel.register(a, selectors.EVENT_READ)


def test_a_descriptor_unwatched_by_an_earlier_handler_of_the_batch_is_skipped(
    pairs: list[tuple[socket.socket, socket.socket]],
    sel: PollHookSelector,
) -> None:
    """Three descriptors ready at once; whichever handler runs first stops watching the
    other two (as closing their connections does): their events of the batch are dropped."""
    calls: list[str] = []
    fds = [a.fileno() for a, _ in pairs]

    def unwatching_the_others(own: int) -> Callable[[], None]:
        def on_read() -> None:
            for fd in fds:
                if fd != own:
                    sel.watch(fd, None, 0)

        return on_read

    for i, fd in enumerate(fds):
        handler = _Recorder(str(i), calls, unwatching_the_others(fd))
        sel.watch(fd, handler, selectors.EVENT_READ)
    for _, b in pairs:
        b.send(b"x")
    assert sel.select(1.0) == []
    assert len(calls) == 1, calls


def test_a_failing_handler_is_logged_and_the_rest_of_the_batch_is_handled(
    pairs: list[tuple[socket.socket, socket.socket]],
    sel: PollHookSelector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("handler bug")

    for i, (a, b) in enumerate(pairs):
        sel.watch(a.fileno(), _Recorder(str(i), calls, boom), selectors.EVENT_READ)
        b.send(b"x")
    with caplog.at_level(logging.ERROR, logger="enos_lab.hub"):
        assert sel.select(1.0) == []
    assert sorted(calls) == ["0:read", "1:read", "2:read"]
    assert sum("I/O handler" in r.getMessage() for r in caplog.records) == 3


def test_flush_callbacks_run_right_after_the_direct_io_of_the_same_select(
    pairs: list[tuple[socket.socket, socket.socket]],
    sel: PollHookSelector,
) -> None:
    """Output produced by a read is written before select() returns to the loop."""
    (a, b), _, _ = pairs
    calls: list[str] = []

    def produce() -> None:
        sel.call_before_poll(lambda: calls.append("flush") is None and False)

    sel.watch(a.fileno(), _Recorder("a", calls, produce), selectors.EVENT_READ)
    b.send(b"x")
    sel.select(1.0)
    assert calls == ["a:read", "flush"]


def watch_output(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Output, Link]]:
    """Every connection that hands output to a hub's :class:`Output` from now on, with it."""
    seen: list[tuple[Output, Link]] = []
    original = Output.to_flush

    def to_flush(self: Output, conn: Link) -> None:
        if (self, conn) not in seen:
            seen.append((self, conn))
        original(self, conn)

    monkeypatch.setattr(Output, "to_flush", to_flush)
    return seen


def test_the_lab_loop_handles_the_hubs_sockets_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The listening socket and the connections are not registered with the loop: their
    events are handled inside select(), and a message is still forwarded."""
    seen = watch_output(monkeypatch)
    loop = new_event_loop()
    selector = poll_hook_selector(loop)
    assert selector is not None

    async def body() -> None:
        async with Hub(HubConfig(anonymous=True)) as hub:
            listener = await hub.listen_tcp("127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(encode(Connect(client_id="c"), 4))
            writer.write(encode(Subscribe(1, (Subscription("t", 0),)), 4))
            writer.write(encode(Publish("t", b"hi"), 4))
            decoder = Decoder(role="client", protocol_level=4)
            packets: list[object] = []
            while len(packets) < 3:
                packets += decoder.feed(await asyncio.wait_for(reader.read(1024), 5.0))
            assert isinstance(packets[2], Publish) and packets[2].payload == b"hi"
            ((_, conn),) = seen
            assert conn.transport is not None
            hub_fds = {conn.transport.get_extra_info("socket").fileno()}
            hub_fds |= {s.fileno() for s in listener._server.sockets}
            assert not hub_fds & set(selector.get_map())
            writer.close()

    try:
        loop.run_until_complete(body())
    finally:
        loop.close()


def _forward_one_message(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> dict[str, int]:
    """Run a hub on ``loop``, forward one QoS 0 message between two TCP clients; returns how
    often each of the hub's two ways of writing output ran."""
    calls = {"flush_all": 0, "flush_sockets": 0}
    for name in calls:
        original = getattr(Output, name)

        def counting(
            self: Output, _original: Callable[[Output], object] = original, _name: str = name
        ) -> object:
            calls[_name] += 1
            return _original(self)

        monkeypatch.setattr(Output, name, counting)

    async def body() -> None:
        async with Hub(HubConfig(anonymous=True)) as hub:
            listener = await hub.listen_tcp("127.0.0.1", 0)
            reader, sub = await asyncio.open_connection("127.0.0.1", listener.port)
            sub.write(encode(Connect(client_id="sub"), 4))
            sub.write(encode(Subscribe(1, (Subscription("t/#", 0),)), 4))
            decoder = Decoder(role="client", protocol_level=4)
            packets: list[object] = []
            while len(packets) < 2:  # CONNACK, SUBACK
                packets += decoder.feed(await asyncio.wait_for(reader.read(1024), 5.0))
            _, pub = await asyncio.open_connection("127.0.0.1", listener.port)
            pub.write(encode(Connect(client_id="pub"), 4) + encode(Publish("t/1", b"hi"), 4))
            while not any(isinstance(p, Publish) for p in packets):
                packets += decoder.feed(await asyncio.wait_for(reader.read(1024), 5.0))
            assert [p.payload for p in packets if isinstance(p, Publish)] == [b"hi"]
            for writer in (sub, pub):
                writer.close()
                await writer.wait_closed()

    loop.run_until_complete(body())
    return calls


def test_the_lab_loop_writes_socket_output_before_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = new_event_loop()
    try:
        calls = _forward_one_message(loop, monkeypatch)
    finally:
        loop.close()
    assert calls["flush_sockets"] >= 2  # CONNACK/SUBACK, the message
    assert calls["flush_all"] == 0


def test_any_other_loop_writes_from_a_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.new_event_loop()
    try:
        calls = _forward_one_message(loop, monkeypatch)
    finally:
        loop.close()
    assert calls["flush_all"] >= 2
    assert calls["flush_sockets"] == 0


def test_a_write_that_ended_a_connection_makes_the_poll_non_blocking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loss of a connection whose write failed is a loop callback; the poll after the
    writes must not wait behind it."""
    seen = watch_output(monkeypatch)
    loop = new_event_loop()

    async def body() -> None:
        async with Hub(HubConfig(anonymous=True)) as hub:
            listener = await hub.listen_tcp("127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(encode(Connect(client_id="c"), 4))
            assert await asyncio.wait_for(reader.readexactly(4), 5.0) == bytes.fromhex("20020000")
            ((output, conn),) = seen  # the CONNACK's
            assert output.flush_sockets() is False  # nothing pending, nothing ended
            assert conn.transport is not None
            conn.transport.abort()  # as a failed send does
            conn.out = [b"late"]
            output.to_flush(conn)
            assert output.flush_sockets() is True
            writer.close()

    try:
        loop.run_until_complete(body())
    finally:
        loop.close()


@pytest.mark.parametrize(
    "make_loop", [new_event_loop, asyncio.new_event_loop], ids=["lab-loop", "asyncio-loop"]
)
def test_a_failing_write_ends_only_its_connection(
    make_loop: Callable[[], asyncio.AbstractEventLoop],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug while writing one connection's output (here: injected) ends that connection;
    the other connections written in the same iteration still get theirs."""
    original = _SocketTransport.write

    def flaky(self: _SocketTransport, data: bytes | bytearray | memoryview) -> None:
        protocol = self.get_protocol()
        if isinstance(protocol, Connection) and protocol.client_id == "bad" and b"t/1" in data:
            raise RuntimeError("injected write failure")
        original(self, data)

    monkeypatch.setattr(_SocketTransport, "write", flaky)

    writers: list[asyncio.StreamWriter] = []

    async def subscriber(port: int, client_id: str) -> tuple[asyncio.StreamReader, Decoder]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(encode(Connect(client_id=client_id), 4))
        writer.write(encode(Subscribe(1, (Subscription("t/#", 0),)), 4))
        decoder = Decoder(role="client", protocol_level=4)
        packets: list[object] = []
        while len(packets) < 2:  # CONNACK, SUBACK
            packets += decoder.feed(await asyncio.wait_for(reader.read(1024), 5.0))
        return reader, decoder

    async def body() -> None:
        async with Hub(HubConfig(anonymous=True)) as hub:
            listener = await hub.listen_tcp("127.0.0.1", 0)
            bad_reader, _ = await subscriber(listener.port, "bad")
            good_reader, good_decoder = await subscriber(listener.port, "good")
            _, pub = await asyncio.open_connection("127.0.0.1", listener.port)
            writers.append(pub)
            pub.write(encode(Connect(client_id="pub"), 4) + encode(Publish("t/1", b"hi"), 4))
            got: list[object] = []
            while not got:
                data = await asyncio.wait_for(good_reader.read(1024), 5.0)
                got = [p for p in good_decoder.feed(data) if isinstance(p, Publish)]
            assert [p.payload for p in got] == [b"hi"]  # type: ignore[attr-defined]
            assert await asyncio.wait_for(bad_reader.read(1024), 5.0) == b""  # closed
            assert "bad" not in hub.clients
            for writer in writers:
                writer.close()
                await writer.wait_closed()

    loop = make_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="enos_lab.hub"):
            loop.run_until_complete(body())
    finally:
        loop.close()
    assert any("internal error" in r.getMessage() for r in caplog.records)
