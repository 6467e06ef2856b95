"""Output written right before the loop polls (the lab's loop) or from a callback (any loop).

:func:`enos_lab.hub._tcp.new_event_loop` gives a loop whose selector runs callbacks before it
polls; the hub writes its socket connections' output from there, so that a message arriving
alone is forwarded without a second pass of the loop. On other loops, and for transports that
are not the hub's own socket transport, one ``call_soon`` callback per iteration writes it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from enos_lab.hub import Hub, HubConfig
from enos_lab.hub._server import _Connection
from enos_lab.hub._tcp import PollHookSelector, new_event_loop
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


def _forward_one_message(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> dict[str, int]:
    """Run a hub on ``loop``, forward one QoS 0 message between two TCP clients; returns how
    often each of the hub's two ways of writing output ran."""
    calls = {"_flush_all": 0, "_flush_sockets": 0}
    for name in calls:
        original = getattr(Hub, name)

        def counting(
            self: Hub, _original: Callable[[Hub], object] = original, _name: str = name
        ) -> object:
            calls[_name] += 1
            return _original(self)

        monkeypatch.setattr(Hub, name, counting)

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
    assert calls["_flush_sockets"] >= 2  # CONNACK/SUBACK, the message
    assert calls["_flush_all"] == 0


def test_any_other_loop_writes_from_a_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.new_event_loop()
    try:
        calls = _forward_one_message(loop, monkeypatch)
    finally:
        loop.close()
    assert calls["_flush_all"] >= 2
    assert calls["_flush_sockets"] == 0


def test_a_write_that_ended_a_connection_makes_the_poll_non_blocking() -> None:
    """The loss of a connection whose write failed is a loop callback; the poll after the
    writes must not wait behind it."""
    loop = new_event_loop()

    async def body() -> None:
        async with Hub(HubConfig(anonymous=True)) as hub:
            listener = await hub.listen_tcp("127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(encode(Connect(client_id="c"), 4))
            assert await asyncio.wait_for(reader.readexactly(4), 5.0) == bytes.fromhex("20020000")
            (conn,) = hub._conns
            assert hub._flush_sockets() is False  # nothing pending, nothing ended
            conn.transport.abort()  # as a failed send does
            conn.out = [b"late"]
            hub._unflushed_socket.append(conn)
            assert hub._flush_sockets() is True
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
    original = _Connection._flush

    def flaky(self: _Connection) -> None:
        if self.client_id == "bad" and self.out and b"t/1" in b"".join(self.out):
            self.out = None  # as _flush does before it writes
            raise RuntimeError("injected write failure")
        original(self)

    monkeypatch.setattr(_Connection, "_flush", flaky)

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
