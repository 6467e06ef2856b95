"""Fixtures for the hub tests: a started hub and byte-level helpers built on the real codec.

Async tests run on asyncio through the anyio pytest plugin (see ``tests/conftest.py``: every
``async def`` test is marked automatically).

Fixtures
--------
``hub``
    A started ``Hub(HubConfig(anonymous=True, connect_timeout=1.0))``; stopped after the test.
``make_hub``
    Async factory for hubs with other settings; every hub it makes is stopped after the test::

        hub = await make_hub(HubConfig(anonymous=False), authenticator=..., authoriser=...,
                             clock=...)

``clock``
    A fresh ``SimulatedClock`` (pass it to ``make_hub``; move it with
    ``await clock.advance_async(seconds)``).

``connect``
    Async factory that opens an in-memory connection, sends CONNECT and reads the CONNACK::

        conn, connack = await connect(hub, "c1", level=4, clean_start=True, keep_alive=60,
                                      will=None, properties=NO_PROPERTIES,
                                      username=None, password=None)

    ``connect(hub, "c1")`` uses MQTT 3.1.1; pass ``level=5`` for MQTT 5.0. The CONNACK is a
    decoded ``ConnAck``; the test asserts on it.

``packet_bytes``
    ``packet_bytes(packet, level)`` -> the exact bytes the codec writes for ``packet`` at
    ``level`` (3/4/5); send them with ``await conn.send(...)``.
``read_all``
    ``await read_all(conn, level, n)`` -> the next ``n`` decoded packets.

``MemoryConnection.read_packet(level)`` (hub API) decodes one packet and ``receive_exactly(n)``
gives raw bytes for byte-exact assertions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from enos_lab.clock import Clock, SimulatedClock
from enos_lab.hub import Authenticator, Authoriser, Hub, HubConfig, MemoryConnection
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import (
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Packet,
    Properties,
    Will,
)

TEST_CONFIG = HubConfig(anonymous=True, connect_timeout=1.0)
"""Configuration of the ``hub`` fixture."""


MakeHub = Callable[..., Awaitable[Hub]]
Connector = Callable[..., Awaitable[tuple[MemoryConnection, ConnAck]]]


@pytest.fixture
async def make_hub() -> AsyncIterator[MakeHub]:
    """Factory: ``await make_hub(config, authenticator=..., authoriser=..., clock=...)`` ->
    started hub."""
    hubs: list[Hub] = []

    async def factory(
        config: HubConfig = TEST_CONFIG,
        *,
        authenticator: Authenticator | None = None,
        authoriser: Authoriser | None = None,
        clock: Clock | None = None,
    ) -> Hub:
        made = Hub(config, authenticator=authenticator, authoriser=authoriser, clock=clock)
        await made.start()
        hubs.append(made)
        return made

    yield factory
    for made in hubs:
        await made.stop()


@pytest.fixture
def clock() -> SimulatedClock:
    """A simulated clock for a hub (``make_hub(..., clock=clock)``), at 0 s."""
    return SimulatedClock()


@pytest.fixture
async def hub(make_hub: MakeHub) -> Hub:
    """A started anonymous hub (``TEST_CONFIG``), stopped after the test."""
    return await make_hub()


def packet_bytes(packet: Packet, level: int) -> bytes:
    """The exact bytes the codec writes for ``packet`` at protocol ``level``."""
    return encode(packet, level)


@pytest.fixture(name="packet_bytes")
def packet_bytes_fixture() -> Callable[[Packet, int], bytes]:
    """``packet_bytes(packet, level)`` as a fixture."""
    return packet_bytes


async def open_client(
    hub: Hub,
    client_id: str,
    *,
    level: int = 4,
    clean_start: bool = True,
    keep_alive: int = 60,
    will: Will | None = None,
    properties: Properties = NO_PROPERTIES,
    username: str | None = None,
    password: bytes | None = None,
) -> tuple[MemoryConnection, ConnAck]:
    """Open an in-memory connection, send CONNECT, return it with the decoded CONNACK."""
    conn = await hub.connect_memory()
    name = "MQIsdp" if level == 3 else "MQTT"
    connect = Connect(
        client_id, level, name, clean_start, keep_alive, username, password, will, properties
    )
    await conn.send(encode(connect, level))
    connack = await conn.read_packet(level)
    assert isinstance(connack, ConnAck), connack
    return conn, connack


@pytest.fixture
def connect() -> Connector:
    """Factory: ``conn, connack = await connect(hub, "c1", level=4, ...)`` (see module doc)."""
    return open_client


async def read_all(conn: MemoryConnection, level: int, n: int) -> list[Packet]:
    """The next ``n`` packets the hub sent on ``conn``."""
    return [await conn.read_packet(level) for _ in range(n)]


@pytest.fixture(name="read_all")
def read_all_fixture() -> Callable[[MemoryConnection, int, int], Awaitable[list[Packet]]]:
    """``await read_all(conn, level, n)`` as a fixture."""
    return read_all
