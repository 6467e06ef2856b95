"""Keep alive and connect timeout, over the in-memory transport.

Timings use keep_alive = 1 s; the hub must close after one and a half periods of silence
(3.1.1 MQTT-3.1.2-24, 5.0 3.1.2.10) and not before. Most tests run the hub on a simulated clock
(the ``clock`` fixture) and step it; the first and the connect-timeout test keep the system
clock and real time.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from _wire import (
    PINGREQ,
    PINGRESP,
    HubFactory,
    check_reason_packet,
    connect,
    expect,
    expect_closed,
    open_client,
    publish,
    read_connack5,
    start_hub,
    sync,
)

from enos_lab.clock import SimulatedClock
from enos_lab.errors import ClosedError
from enos_lab.hub._deadlines import Deadlines, Timeouts
from enos_lab.hub._state import Link

pytestmark = pytest.mark.anyio


def watch_timeouts(monkeypatch: pytest.MonkeyPatch) -> list[Timeouts]:
    """The :class:`Timeouts` of every hub a connection opens on from now on (in order)."""
    seen: list[Timeouts] = []
    original = Timeouts.opened

    def opened(self: Timeouts, conn: Link) -> None:
        if self not in seen:
            seen.append(self)
        original(self, conn)

    monkeypatch.setattr(Timeouts, "opened", opened)
    return seen


async def test_silence_beyond_one_and_a_half_keep_alive_closes(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.1.2-24: no control packet within 1.5 x Keep Alive: the server closes the
    connection (in 3.1.1 without sending anything)."""
    hub = await start_hub(make_hub)
    conn = await hub.connect_memory()
    await conn.send(bytes.fromhex("10 0e 00 04 4d 51 54 54 04 02 00 01 00 02 6b 31"))  # ka 1 s
    await expect(conn, bytes.fromhex("20 02 00 00"))
    started = time.monotonic()
    await expect_closed(conn, 4.0)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= 3.0, f"closed after {elapsed:.2f} s, expected about 1.5 s"


async def test_v5_silence_beyond_keep_alive_closes(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 3.1.2.10 (MQTT-3.1.2-22): the server closes a silent connection after 1.5 x Keep
    Alive (within a sweep interval, 0.5 s); it may first send DISCONNECT 0x8D (Keep Alive
    timeout)."""
    hub = await start_hub(make_hub, clock=clock)
    conn = await open_client(hub, "k5", level=5, keep_alive=1)
    await clock.advance_async(1.5)
    assert not conn.closed
    await clock.advance_async(0.5)
    try:
        data = await conn.receive(4.0)
    except ClosedError:
        data = b""
    if data:
        assert data[0] == 0xE0, f"expected DISCONNECT or a close, got {data.hex(' ')}"
        check_reason_packet(data, 0xE0, 0x8D, None)
        await expect_closed(conn)


async def test_pingreq_answered_with_pingresp(make_hub: HubFactory) -> None:
    """3.1.1 MQTT-3.12.4-1: the server answers PINGREQ with PINGRESP; literal bytes."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "ping")
    await conn.send(b"\xc0\x00")
    await expect(conn, b"\xd0\x00")


async def test_v5_pingreq_answered_with_pingresp(make_hub: HubFactory) -> None:
    """5.0 MQTT-3.12.4-1: PINGREQ is answered with PINGRESP."""
    hub = await start_hub(make_hub)
    conn = await open_client(hub, "ping5", level=5)
    await conn.send(b"\xc0\x00")
    await expect(conn, b"\xd0\x00")


async def test_pingreq_keeps_connection_alive(make_hub: HubFactory, clock: SimulatedClock) -> None:
    """3.1.1 MQTT-3.1.2-23 / MQTT-3.1.2-24: a PINGREQ every period keeps the connection open
    well past 1.5 x Keep Alive."""
    hub = await start_hub(make_hub, clock=clock)
    conn = await open_client(hub, "alive", keep_alive=1)
    for _ in range(10):  # 10 s in total
        await clock.advance_async(1.0)
        await conn.send(PINGREQ)
        await expect(conn, PINGRESP)
    assert not conn.closed


async def test_any_control_packet_resets_keep_alive(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """3.1.1 MQTT-3.1.2-24: the timer counts time since the last control packet of any type,
    here QoS 0 PUBLISH packets."""
    hub = await start_hub(make_hub, clock=clock)
    conn = await open_client(hub, "busy", keep_alive=1)
    for i in range(8):  # 11.2 s in total
        await clock.advance_async(1.4)
        await conn.send(publish("k/busy", bytes([i])))
    await sync(conn)


async def test_keep_alive_zero_disables_timeout(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """3.1.1 3.1.2.10: Keep Alive 0 turns the mechanism off; the server does not close a silent
    connection (here for a simulated day)."""
    hub = await start_hub(make_hub, clock=clock)
    conn = await open_client(hub, "zero", keep_alive=0)
    await clock.advance_async(86400)
    await sync(conn)


async def test_v5_server_keep_alive_overrides_client_value(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """5.0 MQTT-3.2.2-21/22: a Server Keep Alive in CONNACK replaces the client's Keep Alive, and
    the server enforces it."""
    hub = await start_hub(make_hub, clock=clock, server_keep_alive=1)
    conn = await hub.connect_memory()
    await conn.send(connect("ska", level=5, keep_alive=60))
    properties = await read_connack5(conn)
    assert properties.get(0x13) == 1
    await clock.advance_async(1.5)
    assert not conn.closed
    await clock.advance_async(0.5)
    try:
        data = await conn.receive(4.0)
    except ClosedError:
        data = b""
    if data:
        check_reason_packet(data, 0xE0, 0x8D, None)
        await expect_closed(conn)


async def test_connect_timeout_closes_silent_socket(make_hub: HubFactory) -> None:
    """HubConfig.connect_timeout (3.1.1 3.1.4: a server should close a connection that sends no
    CONNECT within a reasonable time): a connection sending nothing is closed silently."""
    hub = await start_hub(make_hub, connect_timeout=0.5)
    conn = await hub.connect_memory()
    started = time.monotonic()
    await expect_closed(conn, 3.0)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed <= 2.0, f"closed after {elapsed:.2f} s, expected about 0.5 s"


async def test_connect_timeout_closes_incomplete_connect(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """HubConfig.connect_timeout: half a CONNECT does not stop the timer (closed within a
    sweep interval of 0.125 s after the 0.5 s)."""
    hub = await start_hub(make_hub, clock=clock, connect_timeout=0.5)
    conn = await hub.connect_memory()
    await conn.send(connect("half")[:7])
    await clock.advance_async(0.5)
    assert not conn.closed
    await clock.advance_async(0.125)
    await expect_closed(conn)


async def test_connect_in_time_cancels_connect_timeout(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """HubConfig.connect_timeout only applies until CONNECT: a connected client stays."""
    hub = await start_hub(make_hub, clock=clock, connect_timeout=0.5)
    conn = await open_client(hub, "intime", keep_alive=0)
    await clock.advance_async(3600)
    await sync(conn)


async def test_silence_after_activity_closes_one_and_a_half_periods_after_the_last_packet(
    make_hub: HubFactory, clock: SimulatedClock
) -> None:
    """The deadline moves with every packet: a client active for 2 s (keep alive 1 s) and then
    silent is closed 1.5 s after its last packet (within a sweep interval, 0.5 s), not
    earlier."""
    hub = await start_hub(make_hub, clock=clock)
    conn = await open_client(hub, "active", keep_alive=1)
    for i in range(4):
        await clock.advance_async(0.5)
        await conn.send(publish("k/active", bytes([i])))
    await sync(conn)  # the last packet: at 2 s
    await clock.advance_async(1.5)
    assert not conn.closed
    await clock.advance_async(0.5)
    await expect_closed(conn)


async def test_the_sweep_looks_only_at_connections_whose_deadline_has_come(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch, clock: SimulatedClock
) -> None:
    """An idle fleet costs the sweep nothing until its keep-alive deadlines: 200 clients with
    keep alive 60 s are not looked at during the first 89 s, and each is filed once, under its
    deadline; the CONNECT deadline goes with the CONNECT. At 90 s each is looked at once."""
    hub = await start_hub(make_hub, clock=clock, connect_timeout=0.2)  # buckets of 0.05 s
    seen = watch_timeouts(monkeypatch)
    looked_at: list[int] = []
    original = Deadlines.pop_due

    def counting(self: Deadlines, now: float) -> list[Link]:
        due = original(self, now)
        looked_at.append(len(due))
        return due

    monkeypatch.setattr(Deadlines, "pop_due", counting)
    clients = [await open_client(hub, f"idle-{i}", keep_alive=60) for i in range(200)]
    (timeouts,) = seen
    assert len(timeouts.connect_due) == 0
    assert len(timeouts.keep_alive_due) == 200
    await clock.advance_async(89)
    assert looked_at  # the sweep ran (at the CONNECT deadlines)
    assert sum(looked_at) == 0
    assert len(timeouts.keep_alive_due) == 200
    assert not any(conn.closed for conn in clients)
    await clock.advance_async(2)
    assert sum(looked_at) == 200
    assert len(timeouts.keep_alive_due) == 0
    for conn in clients:
        await expect_closed(conn)


async def test_connections_that_ended_are_not_kept_for_their_deadlines(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that ends leaves the keep-alive (or CONNECT) deadlines at once, however far
    away its deadline was: nothing of it is kept for the sweep."""
    hub = await start_hub(make_hub)
    seen = watch_timeouts(monkeypatch)
    connected = [await open_client(hub, f"gone-{i}", keep_alive=3600) for i in range(20)]
    silent = [await hub.connect_memory() for _ in range(5)]  # no CONNECT yet
    await asyncio.sleep(0.05)
    (timeouts,) = seen
    assert len(timeouts.keep_alive_due) == 20
    assert len(timeouts.connect_due) == 5
    for conn in connected[:10]:
        await conn.send(bytes.fromhex("e0 00"))  # DISCONNECT
        await expect_closed(conn)
    for conn in silent:
        conn.close()
    await asyncio.sleep(0.05)
    assert len(timeouts.keep_alive_due) == 10
    assert len(timeouts.connect_due) == 0
    for conn in connected[10:]:
        await sync(conn)


def test_deadlines_hand_out_each_connection_once_after_its_time() -> None:
    class Conn:  # what Deadlines uses of a connection
        due = 0

    deadlines = Deadlines(0.5)
    now = time.monotonic()
    a, b, c, gone = Conn(), Conn(), Conn(), Conn()
    deadlines.add(a, now + 1.0)  # type: ignore[arg-type]
    deadlines.add(gone, now + 1.0)  # type: ignore[arg-type]
    deadlines.add(b, now + 2.0)  # type: ignore[arg-type]
    deadlines.add(c, now - 5.0)  # type: ignore[arg-type]  # already due
    deadlines.discard(gone)  # type: ignore[arg-type]
    assert len(deadlines) == 3
    assert deadlines.pop_due(now) == [c]
    assert deadlines.pop_due(now + 0.9) == []  # not before its time
    assert deadlines.pop_due(now + 1.6) == [a]
    assert deadlines.pop_due(now + 1.6) == []  # once
    assert deadlines.pop_due(now + 60.0) == [b]
    assert len(deadlines) == 0
