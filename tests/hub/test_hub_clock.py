"""The hub on the lab's clock (``Hub(clock=...)``).

On a :class:`~enos_lab.clock.SimulatedClock` keep alive, the CONNECT timeout, delayed wills,
session expiry and message expiry happen when the simulated clock reaches their time, in order,
and not before, however much or little real time passes; a simulated day with nothing due costs
the hub's sweep no wake-up per sweep interval. Conversations over the in-memory transport (and
TCP) with the byte kit of ``_wire.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import pytest
from _wire import (
    PUBACK,
    HubFactory,
    ack,
    check_reason_packet,
    connect,
    drop,
    expect_ack5,
    expect_closed,
    expect_publish,
    expect_silence,
    leave,
    open_client,
    parse_publish,
    prop,
    publish,
    read_packet,
    read_packets,
    start_hub,
    suback,
    subscribe,
    subscribe_ok,
    sync,
    without_suback,
)

from enos_lab._loop import LoopThread
from enos_lab.clock import SimulatedClock, SystemClock, TimerHandle
from enos_lab.hub import (
    ClientDisconnected,
    ClientInfo,
    DisconnectReason,
    Hub,
    HubConfig,
    HubEvent,
    Message,
)
from enos_lab.mqtt import Properties

pytestmark = pytest.mark.anyio

SESSION_EXPIRY = 0x11
MESSAGE_EXPIRY = 0x02
WILL_DELAY = 0x18


class CountingClock(SimulatedClock):
    """A simulated clock that counts the timers that ran: the hub sets no timer on its clock
    but its sweep's, so this counts the sweep's wake-ups."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = 0

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        def counted() -> None:
            self.fired += 1
            callback()

        return super().call_at(when, counted)


def disconnections(hub: Hub, clock: SimulatedClock) -> list[tuple[float, ClientDisconnected]]:
    """Every ClientDisconnected of ``hub`` from now on, with the clock's time. [s]"""
    seen: list[tuple[float, ClientDisconnected]] = []

    def listener(event: HubEvent) -> None:
        if isinstance(event, ClientDisconnected):
            seen.append((clock.monotonic(), event))

    hub.add_listener(listener)
    return seen


# --- keep alive and the CONNECT timeout --------------------------------------------------------


async def test_keep_alive_closes_after_fifteen_simulated_seconds_of_silence(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """3.1.1 MQTT-3.1.2-24 on the simulated clock: keep alive 10 s, closed once the clock has
    passed 15 s of silence (within one sweep interval, 0.5 s), not at 14 s nor at 15 s."""
    hub = await start_hub(make_hub, clock=clock)
    events = disconnections(hub, clock)
    conn = await open_client(hub, "ka10", keep_alive=10)
    await clock.advance_async(14)
    assert not conn.closed and "ka10" in hub.clients
    await clock.advance_async(1)  # 15 s: not more than 1.5 periods yet
    assert not conn.closed
    await clock.advance_async(1)
    await expect_closed(conn)  # 3.1.1: closed without a word
    [(at, event)] = events
    assert 15 < at <= 15.5
    assert event.reason == DisconnectReason.KEEP_ALIVE_TIMEOUT


async def test_real_time_does_not_close_a_connection_on_a_simulated_clock(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """Keep alive 1 s and more than 1.5 s of real silence: the simulated clock has not moved,
    so the connection stays; one simulated step later it is closed (5.0: DISCONNECT 0x8D)."""
    hub = await start_hub(make_hub, clock=clock)
    conn = await open_client(hub, "k5", level=5, keep_alive=1)
    await expect_silence(conn, 1.7)
    await clock.advance_async(2)
    check_reason_packet(await read_packet(conn), 0xE0, 0x8D, None)
    await expect_closed(conn)


async def test_keep_alive_over_tcp_follows_the_simulated_clock(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """The hub's own TCP transport reads the same clock: keep alive 10 s, open at 14 s of
    simulated silence, closed (end of stream) at 16 s."""
    hub = await start_hub(make_hub, clock=clock)
    listener = await hub.listen_tcp()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(connect("tcp-ka", keep_alive=10))
        assert await asyncio.wait_for(reader.readexactly(4), 5) == bytes.fromhex("20 02 00 00")
        await clock.advance_async(14)
        assert "tcp-ka" in hub.clients
        await clock.advance_async(2)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert "tcp-ka" not in hub.clients
    finally:
        writer.close()
        await writer.wait_closed()


async def test_connect_timeout_on_the_simulated_clock(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """HubConfig.connect_timeout (10 s) on the simulated clock: a silent connection and one that
    sent half a CONNECT are open at 10 s and closed within the next sweep interval."""
    hub = await start_hub(make_hub, clock=clock)
    events = disconnections(hub, clock)
    silent = await hub.connect_memory()
    half = await hub.connect_memory()
    await half.send(connect("half")[:7])
    await clock.advance_async(10)
    assert not silent.closed and not half.closed
    await clock.advance_async(0.5)
    await expect_closed(silent)
    await expect_closed(half)
    assert hub.stats.connections == 0
    assert events == []  # never connected: no lifecycle event


async def test_an_earlier_deadline_wakes_the_sweep_earlier(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """The sweep waits for the next thing due (here a keep-alive deadline at 90.5 s) and is
    woken earlier when something earlier is filed: a client with keep alive 2 s that connects
    at 11 s is closed at 14.5 s, not at 90.5 s."""
    hub = await start_hub(make_hub, clock=clock)
    events = disconnections(hub, clock)
    slow = await open_client(hub, "slow", keep_alive=60)
    await clock.advance_async(11)  # the CONNECT deadlines have passed: next due at 90.5 s
    quick = await open_client(hub, "quick", keep_alive=2)
    await clock.advance_async(4)
    await expect_closed(quick)
    assert [(at, event.client.client_id) for at, event in events] == [(14.5, "quick")]
    await clock.advance_async(100)
    await expect_closed(slow)
    assert [(at, event.client.client_id) for at, event in events] == [
        (14.5, "quick"),
        (90.5, "slow"),
    ]


# --- wills and sessions ------------------------------------------------------------------------


async def owners_gone(hub: Hub) -> None:
    """Three 5.0 clients that go away abruptly at 0 s: ``a`` (session 60 s, will ``will/a``
    after 30 s), ``b`` (session 50 s, will ``will/b`` after 100 s: at the session's end, 50 s),
    ``c`` (session 20 s, no will)."""
    a = await open_client(
        hub,
        "a",
        level=5,
        clean=False,
        keep_alive=0,
        properties=prop(SESSION_EXPIRY, 60),
        will=("will/a", b"a", 0, False),
        will_properties=prop(WILL_DELAY, 30),
    )
    b = await open_client(
        hub,
        "b",
        level=5,
        clean=False,
        keep_alive=0,
        properties=prop(SESSION_EXPIRY, 50),
        will=("will/b", b"b", 0, False),
        will_properties=prop(WILL_DELAY, 100),
    )
    c = await open_client(
        hub, "c", level=5, clean=False, keep_alive=0, properties=prop(SESSION_EXPIRY, 20)
    )
    for conn in (a, b, c):
        await drop(conn)


async def test_will_delays_and_session_expiry_at_their_simulated_times(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 3.1.3.2.2 and 3.1.2.11.2 on the simulated clock: each will is published and each
    session ends when the clock reaches its time, not half a second before."""
    hub = await start_hub(make_hub, clock=clock)
    wills: list[tuple[float, str]] = []
    hub.add_handler(lambda client, message: wills.append((clock.monotonic(), message.topic)))
    watch = await open_client(hub, "watch", keep_alive=0)
    await subscribe_ok(watch, 1, ("will/#", 0))
    await owners_gone(hub)
    assert hub.stats.sessions == 4
    await clock.advance_async(19.5)
    assert hub.stats.sessions == 4
    await clock.advance_async(0.5)  # 20 s: c's session ends
    assert hub.stats.sessions == 3
    await clock.advance_async(9.5)
    assert wills == []
    await clock.advance_async(0.5)  # 30 s: a's will
    assert wills == [(30.0, "will/a")]
    await expect_publish(watch, "will/a", b"a")
    await clock.advance_async(19.5)
    assert hub.stats.sessions == 3
    await clock.advance_async(0.5)  # 50 s: b's session ends, and with it the delay of its will
    assert wills == [(30.0, "will/a"), (50.0, "will/b")]
    await expect_publish(watch, "will/b", b"b")
    assert hub.stats.sessions == 2
    await clock.advance_async(9.5)
    assert hub.stats.sessions == 2
    await clock.advance_async(0.5)  # 60 s: a's session ends
    assert hub.stats.sessions == 1
    await sync(watch)


async def test_one_long_step_runs_wills_and_expiry_in_simulated_order(
    make_hub: HubFactory, clock: SimulatedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """One advance of an hour: the delayed wills and the session ends happen in the order of
    their times, each seeing the clock at its own time."""
    caplog.set_level(logging.INFO, logger="enos_lab.hub")
    hub = await start_hub(make_hub, clock=clock)
    timeline: list[tuple[float, str]] = []
    hub.add_handler(lambda client, message: timeline.append((clock.monotonic(), message.topic)))

    class Expiries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if text.endswith("expired"):
                timeline.append((clock.monotonic(), text))

    handler = Expiries()
    logging.getLogger("enos_lab.hub").addHandler(handler)
    try:
        await owners_gone(hub)
        await clock.advance_async(3600)
    finally:
        logging.getLogger("enos_lab.hub").removeHandler(handler)
    assert timeline == [
        (20.0, "session 'c' expired"),
        (30.0, "will/a"),
        (50.0, "will/b"),
        (50.0, "session 'b' expired"),
        (60.0, "session 'a' expired"),
    ]
    assert hub.stats.sessions == 0


async def test_3_1_1_session_expiry_on_the_simulated_clock(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """HubConfig.session_expiry_v311 on the simulated clock: a clean-session-0 session is kept
    for the hour and resumed within it; gone after it."""
    hub = await start_hub(make_hub, clock=clock, session_expiry_v311=3600)
    conn = await open_client(hub, "p", clean=False, keep_alive=0)
    await leave(conn)
    await clock.advance_async(3599)
    conn = await open_client(hub, "p", clean=False, keep_alive=0, session_present=True)
    await leave(conn)
    await clock.advance_async(3599.5)
    assert hub.stats.sessions == 1
    await clock.advance_async(0.5)
    assert hub.stats.sessions == 0


# --- message expiry ----------------------------------------------------------------------------


async def test_message_expiry_in_simulated_time(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.3.2-5/6 on the simulated clock: after 20 s offline, the message with a 10 s
    expiry interval is dropped and the one with 100 s arrives with exactly 80 s left."""
    hub = await start_hub(make_hub, clock=clock)
    session = prop(SESSION_EXPIRY, 3600)
    sub = await open_client(hub, "exp", level=5, clean=False, keep_alive=0, properties=session)
    await subscribe_ok(sub, 1, ("me/t", 1), level=5)
    await leave(sub)
    pub = await open_client(hub, "p", level=5, keep_alive=0)
    for pid, payload, expiry in ((1, b"short", 10), (2, b"long", 100)):
        await pub.send(
            publish(
                "me/t", payload, qos=1, pid=pid, level=5, properties=prop(MESSAGE_EXPIRY, expiry)
            )
        )
        await expect_ack5(pub, PUBACK, pid, {0x00, 0x10})
    await clock.advance_async(20)
    sub = await open_client(
        hub, "exp", level=5, clean=False, keep_alive=0, session_present=True, properties=session
    )
    got = parse_publish(await read_packet(sub), level=5)
    assert (got.payload, got.properties) == (b"long", [(MESSAGE_EXPIRY, 80)])
    await sub.send(ack(PUBACK, got.pid))
    await sync(sub)
    assert hub.stats.dropped == 1


async def test_retained_message_expiry_in_simulated_time(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.3.2-5/6 for retained messages: 10.5 simulated seconds after they were
    retained, the one with a 10 s interval is gone and the one with 100 s has 90 s left."""
    hub = await start_hub(make_hub, clock=clock)
    pub = await open_client(hub, "p", level=5, keep_alive=0)
    for topic, expiry in (("r/short", 10), ("r/long", 100)):
        await pub.send(publish(topic, b"v", retain=True, level=5, properties=prop(0x02, expiry)))
    await sync(pub)
    await clock.advance_async(10.5)
    sub = await open_client(hub, "s", level=5, keep_alive=0)
    await sub.send(subscribe(1, ("r/+", 0), level=5))
    [raw] = without_suback(await read_packets(sub, 2), suback(1, 0, level=5))
    got = parse_publish(raw, level=5)
    assert (got.topic, got.retain, got.properties) == ("r/long", True, [(MESSAGE_EXPIRY, 90)])
    assert hub.stats.retained == 1


async def test_deliver_counts_message_expiry_on_the_hub_clock(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """Hub.deliver with a message expiry interval to a client whose window is full: what is
    left of the interval when the message is sent is measured on the hub's clock."""
    hub = await start_hub(make_hub, clock=clock)
    sub = await open_client(
        hub, "d", level=5, keep_alive=0, properties=prop(0x21, 1)
    )  # receive maximum 1
    first = Message("cmd", b"1", 1)
    second = Message("cmd", b"2", 1, properties=Properties(message_expiry_interval=60))
    assert await hub.deliver("d", first)
    assert await hub.deliver("d", second)
    one = parse_publish(await read_packet(sub), level=5)
    assert one.payload == b"1"
    await expect_silence(sub)  # the window is full
    await clock.advance_async(25)
    await sub.send(ack(PUBACK, one.pid))
    two = parse_publish(await read_packet(sub), level=5)
    assert (two.payload, two.properties) == (b"2", [(MESSAGE_EXPIRY, 35)])
    await sub.send(ack(PUBACK, two.pid))
    await sync(sub)


# --- the sweep's wake-ups ----------------------------------------------------------------------


async def test_a_simulated_day_with_nothing_due_costs_no_wake_up_per_interval(
    make_hub: HubFactory,
) -> None:
    """Twenty connected clients without keep alive and an offline session that ends in 2 days:
    advancing a simulated day wakes the sweep once (the CONNECT deadlines at 10.5 s), not
    172,800 times (every 0.5 s); it then waits, armed for the session's end."""
    clock = CountingClock()
    hub = await start_hub(make_hub, clock=clock)
    clients = [await open_client(hub, f"idle-{i}", keep_alive=0) for i in range(20)]
    offline = await open_client(
        hub, "offline", level=5, clean=False, keep_alive=0, properties=prop(SESSION_EXPIRY, 1 << 20)
    )  # capped at HubConfig.max_session_expiry: 2 days
    await leave(offline)
    before = clock.fired
    await clock.advance_async(86400)
    assert clock.fired - before <= 2
    assert clock.pending == 1  # the sweep, armed for 172,800 s
    for conn in clients:
        await sync(conn)
    assert hub.stats.sessions == 21
    await clock.advance_async(86400)
    assert hub.stats.sessions == 20


async def test_an_idle_fleet_is_looked_at_only_at_its_deadlines(make_hub: HubFactory) -> None:
    """Two hundred clients with keep alive 60 s, silent: the sweep wakes for their CONNECT
    deadline and for their keep-alive deadline (90.5 s), where each is closed, and not between."""
    clock = CountingClock()
    hub = await start_hub(make_hub, clock=clock)
    events = disconnections(hub, clock)
    clients = [await open_client(hub, f"idle-{i}", keep_alive=60) for i in range(200)]
    before = clock.fired
    await clock.advance_async(90)
    assert clock.fired - before == 1  # 10.5 s
    assert events == []
    await clock.advance_async(3600)
    assert clock.fired - before == 2  # 90.5 s
    assert {at for at, _ in events} == {90.5}
    assert len(events) == 200
    assert clock.pending == 0  # nothing left to do: the sweep is not armed
    for conn in clients:
        await expect_closed(conn)


def test_a_simulated_day_advanced_from_another_thread() -> None:
    """The way a notebook drives the lab: the hub runs on its loop in a background thread and
    ``clock.advance(86400)`` is called from the caller's thread; a TCP client with keep alive
    60 s is closed at 90.5 s, two without keep alive stay, and the sweep woke twice."""
    clock = CountingClock()
    with LoopThread("hub-clock-test") as loop_thread:
        hub = Hub(HubConfig(anonymous=True), clock=clock)
        loop_thread.call(hub.start(), timeout=5)
        try:
            listener = loop_thread.call(hub.listen_tcp(), timeout=5)
            socks = []
            for client_id, keep_alive in (("a", 0), ("b", 0), ("ka", 60)):
                sock = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
                sock.sendall(connect(client_id, keep_alive=keep_alive))
                assert _recv_exactly(sock, 4) == bytes.fromhex("20 02 00 00")
                socks.append(sock)
            clock.advance(86400)
            assert clock.fired <= 4  # at start, 10.5 s, 90.5 s
            assert socks[2].recv(16) == b""  # closed by the hub
            for sock in socks[:2]:
                sock.sendall(b"\xc0\x00")  # PINGREQ
                assert _recv_exactly(sock, 2) == b"\xd0\x00"
            assert sorted(_client_ids(loop_thread.call(_clients(hub), timeout=5))) == ["a", "b"]
            for sock in socks:
                sock.close()
        finally:
            loop_thread.call(hub.stop(), timeout=5)


async def _clients(hub: Hub) -> list[ClientInfo]:
    return list(hub.clients.values())


def _client_ids(infos: list[ClientInfo]) -> list[str]:
    return [info.client_id for info in infos]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"closed after {data.hex(' ')}"
        data += chunk
    return data


async def test_the_system_clock_is_the_default(make_hub: HubFactory) -> None:
    """Without a clock the hub runs on the system clock, whose ``monotonic`` is
    ``time.monotonic`` itself."""
    hub = await start_hub(make_hub)
    assert isinstance(hub.clock, SystemClock)
    assert hub.clock.monotonic is time.monotonic
    await sync(await open_client(hub, "sys", keep_alive=0))


async def test_a_hub_started_again_sweeps_again(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """stop() cancels the sweep's timer and start() arms it again: after a restart a silent
    client with keep alive 10 s is closed at 15.5 s of simulated silence as before."""
    hub = await start_hub(make_hub, clock=clock)
    await hub.stop()
    assert clock.pending == 0
    await hub.start()
    events = disconnections(hub, clock)
    conn = await open_client(hub, "again", keep_alive=10)
    await clock.advance_async(15)
    assert not conn.closed
    await clock.advance_async(1)
    await expect_closed(conn)
    assert [at for at, _ in events] == [15.5]
