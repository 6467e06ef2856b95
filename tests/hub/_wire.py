"""A byte kit for conversation tests: MQTT packets built and parsed from the specification text.

It is independent of :mod:`enos_lab.mqtt`, so that a bug shared by the codec's encoder and
decoder cannot hide behind a round trip. Used by the hub conversation tests in this folder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from enos_lab.clock import Clock
from enos_lab.errors import ClosedError
from enos_lab.hub import Hub, HubConfig, MemoryConnection

HubFactory = Callable[..., Awaitable[Hub]]
READ_TIMEOUT = 3.0  # [s] longest wait for a packet the hub must send
QUIET = 0.3  # [s] how long "the hub sends nothing" is observed

PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"
PUBACK, PUBREC, PUBREL, PUBCOMP = 0x40, 0x50, 0x62, 0x70

Will = tuple[str, bytes, int, bool]  # topic, payload, qos, retain

# Property identifiers and their value types (MQTT 5.0 2.2.2.2).
_PROPERTY_KINDS: dict[int, str] = {
    **dict.fromkeys((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), "byte"),
    **dict.fromkeys((0x13, 0x21, 0x22, 0x23), "u16"),
    **dict.fromkeys((0x02, 0x11, 0x18, 0x27), "u32"),
    0x0B: "vbi",
    **dict.fromkeys((0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F), "str"),
    **dict.fromkeys((0x09, 0x16), "bin"),
    0x26: "pair",
}


async def start_hub(make_hub: HubFactory, *, clock: Clock | None = None, **config: Any) -> Hub:
    """A started anonymous hub (a plain MQTT broker) with ``config`` overrides, on ``clock``
    (default: the system clock)."""
    return await make_hub(HubConfig(anonymous=True, **config), clock=clock)


def vbi(value: int) -> bytes:
    """Variable Byte Integer (3.1.1 2.2.3, 5.0 1.5.5)."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_vbi(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a Variable Byte Integer at ``pos``: (value, number of bytes)."""
    value = 0
    for i in range(4):
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise AssertionError(f"malformed variable byte integer in {data.hex(' ')}")


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def utf8(text: str) -> bytes:
    raw = text.encode()
    return u16(len(raw)) + raw


def blob(data: bytes) -> bytes:
    return u16(len(data)) + data


def frame(first: int, body: bytes) -> bytes:
    """Fixed header (first byte + remaining length) followed by ``body``."""
    return bytes([first]) + vbi(len(body)) + body


def props(*items: bytes) -> bytes:
    """A 5.0 property block: length followed by the encoded properties."""
    raw = b"".join(items)
    return vbi(len(raw)) + raw


def prop(identifier: int, value: int | str | bytes | tuple[str, str]) -> bytes:
    """One encoded property; the value type follows the identifier (5.0 2.2.2.2)."""
    kind = _PROPERTY_KINDS[identifier]
    head = bytes([identifier])
    if kind == "pair":
        assert isinstance(value, tuple)
        return head + utf8(value[0]) + utf8(value[1])
    if kind == "str":
        assert isinstance(value, str)
        return head + utf8(value)
    if kind == "bin":
        assert isinstance(value, bytes)
        return head + blob(value)
    assert isinstance(value, int)
    if kind == "vbi":
        return head + vbi(value)
    size = {"byte": 1, "u16": 2, "u32": 4}[kind]
    return head + value.to_bytes(size, "big")


def parse_props(data: bytes) -> list[tuple[int, object]]:
    """Decode a 5.0 property list (without its length) into (identifier, value) pairs."""
    out: list[tuple[int, object]] = []
    pos = 0
    while pos < len(data):
        identifier = data[pos]
        pos += 1
        kind = _PROPERTY_KINDS.get(identifier)
        assert kind is not None, f"unknown property 0x{identifier:02x} in {data.hex(' ')}"
        value: object
        if kind in ("byte", "u16", "u32"):
            size = {"byte": 1, "u16": 2, "u32": 4}[kind]
            value = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        elif kind == "vbi":
            value, size = read_vbi(data, pos)
            pos += size
        elif kind == "pair":
            key_len = int.from_bytes(data[pos : pos + 2], "big")
            key = data[pos + 2 : pos + 2 + key_len].decode()
            pos += 2 + key_len
            val_len = int.from_bytes(data[pos : pos + 2], "big")
            value = (key, data[pos + 2 : pos + 2 + val_len].decode())
            pos += 2 + val_len
        else:
            size = int.from_bytes(data[pos : pos + 2], "big")
            raw = data[pos + 2 : pos + 2 + size]
            value = raw.decode() if kind == "str" else raw
            pos += 2 + size
        out.append((identifier, value))
    assert pos == len(data), f"property list overruns its length: {data.hex(' ')}"
    return out


def connect(
    client_id: str,
    *,
    level: int = 4,
    clean: bool = True,
    keep_alive: int = 60,
    will: Will | None = None,
    will_properties: bytes = b"",
    properties: bytes = b"",
    username: str | None = None,
    password: bytes | None = None,
) -> bytes:
    """CONNECT (3.1.1 3.1, 5.0 3.1); ``properties`` are raw encoded properties (5.0 only)."""
    flags = 0x02 if clean else 0x00
    payload = utf8(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if level == 5:
            payload += props(will_properties)
        payload += utf8(topic) + blob(message)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += blob(password)
    header = utf8("MQTT") + bytes([level, flags]) + u16(keep_alive)
    if level == 5:
        header += props(properties)
    return frame(0x10, header + payload)


def publish(
    topic: str,
    payload: bytes = b"",
    *,
    qos: int = 0,
    pid: int = 0,
    retain: bool = False,
    dup: bool = False,
    level: int = 4,
    properties: bytes = b"",
) -> bytes:
    """PUBLISH (3.3); the packet identifier is only written for QoS > 0."""
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic) + (u16(pid) if qos else b"")
    if level == 5:
        body += props(properties)
    return frame(first, body + payload)


def subscribe(pid: int, *subs: tuple[str, int], level: int = 4, properties: bytes = b"") -> bytes:
    """SUBSCRIBE (3.8); each subscription is (filter, options byte)."""
    body = u16(pid) + (props(properties) if level == 5 else b"")
    for topic_filter, options in subs:
        body += utf8(topic_filter) + bytes([options])
    return frame(0x82, body)


def suback(pid: int, *codes: int, level: int = 4) -> bytes:
    """SUBACK (3.9) without properties."""
    return frame(0x90, u16(pid) + (b"\x00" if level == 5 else b"") + bytes(codes))


def unsubscribe(pid: int, *filters: str, level: int = 4) -> bytes:
    """UNSUBSCRIBE (3.10)."""
    body = u16(pid) + (b"\x00" if level == 5 else b"")
    return frame(0xA2, body + b"".join(utf8(f) for f in filters))


def ack(kind: int, pid: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP with reason Success (short 5.0 form)."""
    return frame(kind, u16(pid))


async def read_packet(conn: MemoryConnection, timeout: float = READ_TIMEOUT) -> bytes:
    """The next whole packet the hub sends, framed by its remaining length."""
    header = bytearray(await conn.receive_exactly(1, timeout))
    length = 0
    for i in range(4):
        byte = (await conn.receive_exactly(1, timeout))[0]
        header.append(byte)
        length |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    else:
        pytest.fail(f"the hub sent a malformed remaining length: {bytes(header).hex(' ')}")
    body = await conn.receive_exactly(length, timeout) if length else b""
    return bytes(header) + body


def body_of(raw: bytes) -> bytes:
    """The bytes after the fixed header."""
    _, size = read_vbi(raw, 1)
    return raw[1 + size :]


async def expect(conn: MemoryConnection, expected: bytes) -> None:
    """The next packet from the hub is exactly ``expected``."""
    got = await read_packet(conn)
    assert got.hex(" ") == expected.hex(" ")


@dataclass(frozen=True)
class Pub:
    """A PUBLISH as seen on the wire."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    pid: int
    properties: list[tuple[int, object]]


def parse_publish(raw: bytes, level: int = 4) -> Pub:
    """Decode a PUBLISH the hub sent."""
    assert raw[0] >> 4 == 3, f"expected a PUBLISH, got {raw.hex(' ')}"
    body = body_of(raw)
    qos = (raw[0] >> 1) & 0x03
    size = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + size].decode()
    pos = 2 + size
    pid = 0
    if qos:
        pid = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
    properties: list[tuple[int, object]] = []
    if level == 5:
        plen, n = read_vbi(body, pos)
        properties = parse_props(body[pos + n : pos + n + plen])
        pos += n + plen
    return Pub(topic, body[pos:], qos, bool(raw[0] & 1), bool(raw[0] & 8), pid, properties)


def check_publish(
    raw: bytes,
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    level: int = 4,
    properties: bytes = b"",
    pid: int | None = None,
) -> int:
    """``raw`` is exactly this PUBLISH; any non-zero packet id is accepted unless ``pid`` is
    given (MQTT-2.3.1-1). Returns the packet id."""
    got_pid = 0
    if qos:
        got_pid = int.from_bytes(body_of(raw)[2 + len(topic.encode()) :][:2], "big")
        assert got_pid != 0, f"QoS {qos} PUBLISH with packet id 0: {raw.hex(' ')}"  # MQTT-2.3.1-1
        if pid is not None:
            got_pid = pid
    expected = publish(
        topic,
        payload,
        qos=qos,
        pid=got_pid,
        retain=retain,
        dup=dup,
        level=level,
        properties=properties,
    )
    assert raw.hex(" ") == expected.hex(" ")
    return got_pid


async def expect_publish(
    conn: MemoryConnection,
    topic: str,
    payload: bytes,
    **kwargs: Any,
) -> int:
    """The next packet is exactly this PUBLISH (see :func:`check_publish`); returns its id."""
    return check_publish(await read_packet(conn), topic, payload, **kwargs)


async def expect_closed(conn: MemoryConnection, timeout: float = READ_TIMEOUT) -> None:
    """The hub closes the connection without sending anything (more)."""
    try:
        data = await conn.receive(timeout)
    except ClosedError:
        return
    except TimeoutError:
        pytest.fail(f"the hub kept the connection open for {timeout} s")
    pytest.fail(f"expected the hub to close the connection silently, got {data.hex(' ')}")


async def expect_silence(conn: MemoryConnection, seconds: float = QUIET) -> None:
    """The hub sends nothing for ``seconds`` and keeps the connection open."""
    try:
        data = await conn.receive(seconds)
    except TimeoutError:
        return
    except ClosedError:
        pytest.fail("the hub closed the connection")
    pytest.fail(f"expected no packet, got {data.hex(' ')}")


def check_reason_packet(raw: bytes, first: int, reason: int | set[int], pid: int | None) -> None:
    """A 5.0 acknowledgement or DISCONNECT with ``reason``; besides the short forms it may carry
    only a Reason String, User Properties or (DISCONNECT) a Server Reference."""
    reasons = {reason} if isinstance(reason, int) else reason
    assert raw[0] == first, f"expected packet type 0x{first:02x}, got {raw.hex(' ')}"
    body = body_of(raw)
    if pid is not None:
        assert body[:2] == u16(pid), f"expected packet id {pid}: {raw.hex(' ')}"
        body = body[2:]
    got = body[0] if body else 0x00
    assert got in reasons, f"expected reason {sorted(reasons)}, got 0x{got:02x}: {raw.hex(' ')}"
    if len(body) > 1:
        plen, n = read_vbi(body, 1)
        assert 1 + n + plen == len(body), raw.hex(" ")
        extra = {identifier for identifier, _ in parse_props(body[1 + n :])}
        assert extra <= {0x1F, 0x26, 0x1C}, raw.hex(" ")


async def expect_ack5(
    conn: MemoryConnection, first: int, pid: int, reason: int | set[int] = 0
) -> None:
    """The next packet is a 5.0 PUBACK/PUBREC/PUBREL/PUBCOMP for ``pid`` with ``reason``."""
    check_reason_packet(await read_packet(conn), first, reason, pid)


async def expect_disconnect5(conn: MemoryConnection, reason: int) -> None:
    """The hub sends a 5.0 DISCONNECT with ``reason`` and then closes the connection."""
    check_reason_packet(await read_packet(conn), 0xE0, reason, None)
    await expect_closed(conn)


async def read_connack5(
    conn: MemoryConnection, *, session_present: bool = False, reason: int = 0
) -> dict[int, object]:
    """Read a 5.0 CONNACK, check flags and reason, return its properties by identifier."""
    raw = await read_packet(conn)
    assert raw[0] == 0x20, f"expected CONNACK, got {raw.hex(' ')}"
    body = body_of(raw)
    assert body[0] == int(session_present), f"session present flag: {raw.hex(' ')}"
    assert body[1] == reason, f"expected reason 0x{reason:02x}: {raw.hex(' ')}"
    plen, n = read_vbi(body, 2)
    assert 2 + n + plen == len(body), raw.hex(" ")
    return dict(parse_props(body[2 + n :]))


async def open_client(
    hub: Hub,
    client_id: str,
    *,
    level: int = 4,
    session_present: bool = False,
    **kwargs: Any,
) -> MemoryConnection:
    """Connect over the in-memory transport and check the CONNACK (accepted)."""
    conn = await hub.connect_memory()
    await conn.send(connect(client_id, level=level, **kwargs))
    if level == 5:
        await read_connack5(conn, session_present=session_present)
    else:
        await expect(conn, bytes([0x20, 0x02, int(session_present), 0x00]))  # MQTT-3.2.2-1..3
    return conn


async def sync(conn: MemoryConnection) -> None:
    """Round trip a PINGREQ: the hub has processed everything sent before it."""
    await conn.send(PINGREQ)
    await expect(conn, PINGRESP)


async def subscribe_ok(
    conn: MemoryConnection,
    pid: int,
    *subs: tuple[str, int],
    level: int = 4,
    properties: bytes = b"",
) -> None:
    """Subscribe and expect a SUBACK granting each requested QoS (nothing retained matches)."""
    await conn.send(subscribe(pid, *subs, level=level, properties=properties))
    await expect(conn, suback(pid, *(options & 0x03 for _, options in subs), level=level))


async def read_packets(conn: MemoryConnection, count: int) -> list[bytes]:
    return [await read_packet(conn) for _ in range(count)]


def without_suback(packets: list[bytes], expected_suback: bytes) -> list[bytes]:
    """Check that exactly one of ``packets`` is ``expected_suback`` and return the others.

    The server may send matching PUBLISH packets before the SUBACK (3.1.1 3.8.4)."""
    subacks = [p for p in packets if p[0] == 0x90]
    assert [p.hex(" ") for p in subacks] == [expected_suback.hex(" ")]
    return [p for p in packets if p[0] != 0x90]


async def leave(conn: MemoryConnection, packet: bytes = DISCONNECT) -> None:
    """Send DISCONNECT; the hub then closes the connection (3.1.1 3.14.4, 5.0 3.14.4)."""
    await conn.send(packet)
    await expect_closed(conn)


async def drop(conn: MemoryConnection) -> None:
    """Close ``conn`` abruptly from the client side and let the hub see the lost connection
    (it does on the next loop iteration): before the clock moves on, for timed cases."""
    conn.close()
    await asyncio.sleep(0)


async def watcher(hub: Hub, topic: str, qos: int = 0, level: int = 4) -> MemoryConnection:
    """A client subscribed to ``topic``."""
    conn = await open_client(hub, f"watch-{topic}", level=level)
    await subscribe_ok(conn, 1, (topic, qos), level=level)
    return conn
