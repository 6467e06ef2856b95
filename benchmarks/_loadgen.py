"""A small, broker-agnostic MQTT 3.1.1 load generator for the broker benchmark.

Theory of operation
-------------------
Everything here speaks MQTT 3.1.1 with hand-encoded bytes (no dependency on any MQTT library
or on the hub's codec), so the same load can be pointed at any broker:

* ``encode_*`` build packets; ``split_one`` finds the packet at an offset of a byte buffer
  or says it is still incomplete (it only looks at the fixed header; the hot loops inline it
  and read nothing of a PUBLISH but its topic length and packet id). ``self_check()``
  compares the encoders with byte strings written out by hand from the specification and
  runs them back through the splitter.
* The workloads (``run_subscriber``, ``run_publishers``, ``run_connect``, ``run_latency``)
  are plain functions meant to run in their own process (``multiprocessing``), so that the
  subscriber and the publishers do not share a GIL. They talk to the parent through a
  ``Connection`` (a pipe): they send ``("ready", info)`` when set up, wait for ``"go"``
  (or ``"close"``) and finish with ``("result", dict)`` or ``("error", text)``.
* Publishers send pre-encoded packets: all messages of a publisher are encoded into one
  buffer before the clock starts, and the buffer is written with large ``send()`` calls on
  non-blocking sockets. Every message of a publisher has the same size, so the QoS 1 window
  (unacknowledged PUBLISHes) is a byte offset. A shared counter of messages received by the
  subscriber caps how far the publishers may run ahead (the backlog), so a broker is never
  asked to queue more than that for one subscriber.
* Every wait has a timeout and every loop is bounded by a deadline; a stalled broker ends the
  run with an error that names what was missing.

Times are ``time.perf_counter_ns()`` of the process that takes them; a latency is only
ever computed from two stamps taken in the same process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import re
import resource
import select
import selectors
import socket
import statistics
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

# --- packet types (MQTT 3.1.1, section 2.2.1) -----------------------------------------------

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

DISCONNECT_PACKET = b"\xe0\x00"  # section 3.14
PINGREQ_PACKET = b"\xc0\x00"  # section 3.12
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"  # section 3.2: session present 0, return code 0


class LoadError(Exception):
    """A run could not complete: the broker refused, closed, stalled or sent bad bytes."""


# --- encoders -------------------------------------------------------------------------------


def encode_remaining_length(n: int) -> bytes:
    """Encode the Remaining Length variable byte integer (section 2.2.3)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"remaining length out of range: {n}")
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def _utf8(s: str | bytes) -> bytes:
    """Length-prefixed UTF-8 string (section 1.5.3)."""
    raw = s.encode() if isinstance(s, str) else s
    return len(raw).to_bytes(2, "big") + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_remaining_length(len(body)) + body


def encode_connect(client_id: str, keepalive: int = 60, clean_session: bool = True) -> bytes:
    """CONNECT, protocol level 4, no will, no username/password (section 3.1)."""
    flags = 0x02 if clean_session else 0x00
    var_header = _utf8("MQTT") + b"\x04" + bytes([flags]) + keepalive.to_bytes(2, "big")
    return _packet(0x10, var_header + _utf8(client_id))


def encode_subscribe(packet_id: int, topic_filter: str, qos: int) -> bytes:
    """SUBSCRIBE with one topic filter; the fixed header flags must be 0b0010 (section 3.8.1)."""
    return _packet(0x82, packet_id.to_bytes(2, "big") + _utf8(topic_filter) + bytes([qos]))


def encode_publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    """PUBLISH (section 3.3); the packet id is present only for QoS > 0."""
    first = 0x30 | (qos << 1)
    body = _utf8(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return _packet(first, body)


def encode_puback(packet_id: int) -> bytes:
    """PUBACK (section 3.4)."""
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


# --- incremental scanner --------------------------------------------------------------------


def split_one(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Return ``(body_start, body_end)`` of the packet at ``pos``, or ``(-1, -1)`` if partial."""
    if end - pos < 2:
        return -1, -1
    length = 0
    shift = 0
    i = pos + 1
    while True:
        if i >= end:
            return -1, -1
        byte = buf[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise LoadError(f"malformed remaining length at offset {pos}")
    if i + length > end:
        return -1, -1
    return i, i + length


def iter_packets(data: bytes) -> list[tuple[int, bytes]]:
    """Split a complete byte string into ``(first_byte, body)`` pairs (for checks and setup)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        start, end = split_one(data, pos, len(data))
        if start < 0:
            raise LoadError(f"incomplete packet at offset {pos} of {len(data)}")
        out.append((data[pos], data[start:end]))
        pos = end
    return out


def self_check() -> None:
    """Check the encoders against bytes written out from the MQTT 3.1.1 specification."""
    # Remaining length examples from section 2.2.3 (table 2.4 boundaries).
    cases = {
        0: b"\x00",
        64: b"\x40",
        127: b"\x7f",
        128: b"\x80\x01",
        321: b"\xc1\x02",
        16_383: b"\xff\x7f",
        16_384: b"\x80\x80\x01",
        268_435_455: b"\xff\xff\xff\x7f",
    }
    for value, wire in cases.items():
        assert encode_remaining_length(value) == wire, value
    # CONNECT for client id "a", clean session, keep-alive 60.
    assert encode_connect("a", 60) == (
        b"\x10\x0d" + b"\x00\x04MQTT" + b"\x04" + b"\x02" + b"\x00\x3c" + b"\x00\x01a"
    )
    assert encode_subscribe(1, "a/#", 1) == b"\x82\x08\x00\x01\x00\x03a/#\x01"
    assert encode_publish("a/b", b"x") == b"\x30\x06\x00\x03a/bx"
    assert encode_publish("a/b", b"x", qos=1, packet_id=10) == b"\x32\x08\x00\x03a/b\x00\x0ax"
    assert encode_puback(258) == b"\x40\x02\x01\x02"
    # The scanner must find the same packets whole, byte by byte and across a 2-byte length.
    big = encode_publish("t", b"y" * 300, qos=1, packet_id=7)
    stream = CONNACK_ACCEPTED + big + encode_puback(7) + b"\x90\x03\x00\x01\x01"
    assert [p[0] >> 4 for p in iter_packets(stream)] == [CONNACK, PUBLISH, PUBACK, SUBACK]
    pending = b""
    seen: list[int] = []
    for i in range(len(stream)):
        pending += stream[i : i + 1]
        start, end = split_one(pending, 0, len(pending))
        if start >= 0:
            seen.append(pending[0] >> 4)
            pending = pending[end:]
    assert seen == [CONNACK, PUBLISH, PUBACK, SUBACK] and not pending
    payload = make_payload(3, 120, 1_234_567_890_123)
    assert len(payload) == 120 and payload_stamp(payload) == 1_234_567_890_123
    first, body = iter_packets(big)[0]
    assert (first >> 1) & 3 == 1 and body[0:2] == b"\x00\x01" and body[3:5] == b"\x00\x07"


# --- helpers shared by the workloads --------------------------------------------------------


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (inherited by child processes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_payload(seq: int, size: int, stamp_ns: int = 0) -> bytes:
    """A JSON telemetry payload of exactly ``size`` bytes with a fixed-width sequence and stamp.

    The stamp is ``"ts":`` followed by 20 digits at bytes 6..26 (see ``payload_stamp``).
    """
    head = f'{{"ts":{stamp_ns:020d},"seq":{seq:09d},"dev":"bench","points":{{'
    body = '"temp":21.5,"hum":40.25,"power":3.125'
    tail = "}}"
    pad = size - len(head) - len(body) - len(tail) - len(',"pad":""')
    if pad < 0:
        raise ValueError(f"payload size {size} is below the minimum {size - pad}")
    text = head + body + tail[0] + ',"pad":"' + "x" * pad + '"' + tail[1]
    raw = text.encode()
    assert len(raw) == size
    return raw


def payload_stamp(payload: bytes | memoryview) -> int:
    """The send stamp written by ``make_payload``. [ns]"""
    return int(bytes(payload[6:26]))


def _connect_blocking(host: str, port: int, client_id: str, timeout: float) -> socket.socket:
    """Open a TCP connection and complete CONNECT -> CONNACK; returns a blocking socket."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_connect(client_id, keepalive=300))
    _expect(sock, CONNACK, timeout, f"CONNACK for {client_id}")
    return sock


def _expect(sock: socket.socket, packet_type: int, timeout: float, what: str) -> bytes:
    """Read one packet of ``packet_type`` (after a fresh connect nothing else is expected)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        start, end = split_one(data, 0, len(data))
        if start >= 0:
            if data[0] >> 4 != packet_type:
                raise LoadError(f"expected {what}, got packet type {data[0] >> 4}")
            body = data[start:end]
            if packet_type == CONNACK and body != b"\x00\x00":
                raise LoadError(f"{what}: connection refused, CONNACK body {body.hex()}")
            if packet_type == SUBACK and body[-1] == 0x80:
                raise LoadError(f"{what}: subscription refused")
            if end != len(data):
                raise LoadError(f"{what}: unexpected bytes after the packet")
            return body
        left = deadline - time.monotonic()
        if left <= 0:
            raise LoadError(f"timed out after {timeout} s waiting for {what}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            raise LoadError(f"broker closed the connection while waiting for {what}")
        data += chunk


def _send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Send everything on a non-blocking socket, blocking (bounded) only if it fills up."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        sock.settimeout(timeout)
        try:
            sock.sendall(data[sent:])
        except TimeoutError as exc:
            raise LoadError(f"broker did not read for {timeout} s") from exc
        finally:
            sock.setblocking(False)


def _await_command(conn: Connection, timeout: float, expected: str) -> None:
    if not conn.poll(timeout):
        raise LoadError(f"no '{expected}' from the parent within {timeout} s")
    msg = conn.recv()
    if msg != expected:
        raise LoadError(f"expected '{expected}' from the parent, got {msg!r}")


def child_main(
    conn: Connection, func: Callable[..., dict[str, Any]], kwargs: dict[str, Any]
) -> None:
    """Process entry point: run a workload and always report back through ``conn``."""
    try:
        result = func(conn=conn, **kwargs)
    except LoadError as exc:
        conn.send(("error", str(exc)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
    else:
        conn.send(("result", result))
    finally:
        conn.close()


# --- workload: subscriber -------------------------------------------------------------------


def run_subscriber(
    *,
    conn: Connection,
    host: str,
    port: int,
    topic_filter: str,
    qos: int,
    expected: int,
    delivered: Any,
    nap: float,
    start_timeout: float,
    idle_timeout: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Subscribe, report ready, then count PUBLISHes until ``expected`` arrived.

    With QoS 1 every PUBLISH is acknowledged; the PUBACKs of one ``recv()`` go out in one
    ``send()``. The running count is published in the shared ``delivered`` value for the
    publishers' backlog cap. Returns the count and the first/last arrival times.
    """
    hard_deadline = time.monotonic() + deadline_s
    sock = _connect_blocking(host, port, "bench-sub", start_timeout)
    sock.sendall(encode_subscribe(1, topic_filter, qos))
    _expect(sock, SUBACK, start_timeout, "SUBACK")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    conn.send(("ready", {}))

    received = 0
    first_ns = last_ns = first_cpu = 0
    stalled = ""
    buf = b""
    # Non-blocking: recv() first and poll only when nothing is waiting, which saves a
    # syscall per read while messages stream in.
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    recv = sock.recv
    perf = time.perf_counter_ns
    sleep = time.sleep
    nap_below = 32 * 1024
    waiting_since = time.monotonic()
    limit = start_timeout
    while received < expected:
        try:
            data = recv(1 << 20)
        except BlockingIOError:
            now = time.monotonic()
            if now - waiting_since > limit:
                stalled = f"no data for {limit} s after {received} of {expected} messages"
                break
            if now > hard_deadline:
                stalled = f"deadline of {deadline_s} s reached after {received} messages"
                break
            poller.poll(200)
            continue
        if not data:
            stalled = f"broker closed the connection after {received} messages"
            break
        now_ns = perf()
        if not first_ns:
            first_ns = now_ns
            first_cpu = time.process_time_ns()
            limit = idle_timeout
        last_ns = now_ns
        waiting_since = time.monotonic()
        if buf:
            buf += data
        else:
            buf = data
        pos = 0
        end = len(buf)
        acks: list[bytes] = []
        while end - pos >= 2:
            # Inline split_one(): fixed header plus Remaining Length (section 2.2.3).
            length = buf[pos + 1]
            i = pos + 2
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if i >= end:
                        length = -1
                        break
                    byte = buf[i]
                    length |= (byte & 0x7F) << shift
                    i += 1
                    if not byte & 0x80:
                        break
                    shift += 7
                if length < 0:
                    break
            nxt = i + length
            if nxt > end:
                break
            first = buf[pos]
            if first >> 4 == PUBLISH:
                received += 1
                if first & 0x06:
                    id_at = i + 2 + (buf[i] << 8 | buf[i + 1])
                    acks.append(buf[id_at : id_at + 2])
            pos = nxt
        buf = buf[pos:] if pos < end else b""
        delivered.value = received
        if acks:
            _send_all(sock, b"\x40\x02" + b"\x40\x02".join(acks), idle_timeout)
        elif nap and len(data) < nap_below:
            # QoS 0 only: after a small read, let the kernel gather more before the next
            # one. A broker that writes packet by packet otherwise wakes this process for a
            # handful of messages at a time, and on two shared cores that CPU is taken from
            # the broker. Nothing waits for this process under QoS 0 (the receive buffer is
            # several MB), so the nap cannot slow a broker down.
            sleep(nap)
    cpu_ns = time.process_time_ns() - first_cpu
    with contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.sendall(DISCONNECT_PACKET)
    sock.close()
    return {
        "received": received,
        "expected": expected,
        "first_ns": first_ns,
        "last_ns": last_ns,
        "cpu_ns": cpu_ns,
        "stalled": stalled,
    }


# --- workload: publishers -------------------------------------------------------------------


def run_publishers(
    *,
    conn: Connection,
    host: str,
    port: int,
    first_index: int,
    publishers: int,
    messages: int,
    qos: int,
    payload_size: int,
    window: int,
    chunk: int,
    backlog: int,
    delivered: Any,
    sent_slots: Any,
    slot: int,
    start_timeout: float,
    idle_timeout: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Publish ``messages`` per publisher on ``publishers`` sockets from one process.

    Publisher ``k`` (global index ``first_index + k``) sends to ``bench/<k>/data``. With
    QoS 1 at most ``window`` PUBLISHes per socket are unacknowledged at any time; the window
    is refilled in batches of a quarter window.

    With ``backlog > 0`` the messages sent by all publisher processes (``sent_slots``, one
    shared counter per process, ours is ``slot``) may exceed the messages the subscriber has
    received (``delivered``, shared) by at most ``backlog``, so that no broker has to queue
    more than that for the subscriber: the run measures sustainable throughput, not the size
    of a broker's queue.
    """
    blobs: list[bytes] = []
    sizes: list[int] = []
    for k in range(publishers):
        idx = first_index + k
        topic = f"bench/{idx}/data"
        packets = [
            encode_publish(topic, make_payload(seq, payload_size), qos, (seq % 65535) + 1)
            for seq in range(messages)
        ]
        size = len(packets[0])
        if any(len(p) != size for p in packets):
            raise LoadError("publish packets differ in size; the QoS 1 window needs equal sizes")
        blobs.append(b"".join(packets))
        sizes.append(size)
    socks = [
        _connect_blocking(host, port, f"bench-pub-{first_index + k}", start_timeout)
        for k in range(publishers)
    ]
    for s in socks:
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    conn.send(("ready", {}))
    _await_command(conn, start_timeout, "go")

    sel = selectors.DefaultSelector()
    views = [memoryview(b) for b in blobs]
    sent = [0] * publishers  # bytes sent
    acked = [0] * publishers  # PUBACKs received
    total = [len(b) for b in blobs]
    tails = [b""] * publishers
    refill = [max(1, window // 4) * size for size in sizes]
    unlimited = 1 << 62
    for k, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, k)
    done = 0
    mine = 0  # complete messages sent by this process
    t0 = time.perf_counter_ns()
    cpu0 = time.process_time_ns()
    hard_deadline = time.monotonic() + deadline_s
    last_progress = time.monotonic()
    error = ""
    capped = False
    while done < publishers:
        now = time.monotonic()
        if now > hard_deadline:
            error = f"deadline of {deadline_s} s reached"
            break
        if now - last_progress > idle_timeout:
            error = f"no progress for {idle_timeout} s"
            break
        # Capped by the backlog, nothing on our sockets will wake us: poll the subscriber's
        # counter every millisecond instead.
        events_list = sel.select(0.001 if capped else 0.2)
        capped = False
        room = delivered.value + backlog - sum(sent_slots[:]) if backlog else unlimited
        if not events_list and room > 0:
            # Woken by the poll timeout: act as if every unfinished socket were writable.
            events_list = [(key, selectors.EVENT_WRITE) for key in sel.get_map().values()]
        for key, events in events_list:
            k = key.data
            s = socks[k]
            if events & selectors.EVENT_READ:
                try:
                    data = s.recv(1 << 16)
                except BlockingIOError:
                    data = None
                if data is not None:
                    if not data:
                        raise LoadError(f"broker closed publisher {first_index + k}")
                    buf = tails[k] + data if tails[k] else data
                    pos, end = 0, len(buf)
                    n = 0
                    while end - pos >= 2:
                        if buf[pos] == 0x40 and buf[pos + 1] == 2:  # PUBACK, 4 bytes
                            if end - pos < 4:
                                break
                            n += 1
                            pos += 4
                            continue
                        start, body_end = split_one(buf, pos, end)
                        if start < 0:
                            break
                        pos = body_end
                    tails[k] = buf[pos:]
                    if n:
                        acked[k] += n
                        last_progress = time.monotonic()
            want = selectors.EVENT_READ
            if sent[k] < total[k]:
                size = sizes[k]
                limit = total[k]
                if qos:
                    # QoS 1: refill the window in batches of at least a quarter window
                    # rather than one message per PUBACK (a send() per message would make
                    # this process, not the broker, the bottleneck).
                    limit = min(limit, (acked[k] + window) * size)
                    if limit - sent[k] < refill[k] and limit < total[k]:
                        limit = sent[k]
                whole = sent[k] // size
                if room < unlimited:
                    by_room = (whole + max(0, room)) * size
                    if by_room < limit:
                        limit = by_room
                        capped = capped or limit <= sent[k]
                if limit > sent[k]:
                    want_bytes = min(limit - sent[k], chunk)
                    try:
                        n = s.send(views[k][sent[k] : sent[k] + want_bytes])
                    except BlockingIOError:
                        n = 0
                    if n:
                        sent[k] += n
                        done_msgs = sent[k] // size - whole
                        mine += done_msgs
                        room -= done_msgs
                        last_progress = time.monotonic()
                    if n < want_bytes or sent[k] < limit:
                        want |= selectors.EVENT_WRITE  # send buffer full, or more allowed
            if sent[k] >= total[k] and (not qos or acked[k] >= messages):
                sel.unregister(s)
                done += 1
            elif want != key.events:
                sel.modify(s, want, k)
        if backlog:
            sent_slots[slot] = mine
            capped = capped or room <= 0
    elapsed_ns = time.perf_counter_ns() - t0
    cpu_ns = time.process_time_ns() - cpu0
    sel.close()
    for s in socks:
        with contextlib.suppress(OSError):
            s.setblocking(True)
            s.settimeout(1.0)
            s.sendall(DISCONNECT_PACKET)
        s.close()
    return {
        "sent_messages": sum(sent[k] // sizes[k] for k in range(publishers)),
        "acked": sum(acked),
        "elapsed_ns": elapsed_ns,
        "cpu_ns": cpu_ns,
        "error": error,
    }


# --- workload: connection storm / idle connections ------------------------------------------


def run_connect(
    *,
    conn: Connection,
    host: str,
    port: int,
    count: int,
    concurrency: int,
    keepalive: int,
    prefix: str,
    hold: bool,
    start_timeout: float,
    idle_timeout: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Open ``count`` connections (CONNECT -> CONNACK), at most ``concurrency`` in handshake.

    Reports the rate. With ``hold`` the connections stay open after ``("ready", ...)`` until
    the parent sends ``"close"``; the client then sends DISCONNECT and closes every socket.
    """
    return run_connect_packets(
        conn=conn,
        host=host,
        port=port,
        packets=[encode_connect(f"{prefix}-{i}", keepalive) for i in range(count)],
        concurrency=concurrency,
        hold=hold,
        start_timeout=start_timeout,
        idle_timeout=idle_timeout,
        deadline_s=deadline_s,
    )


# --- workload: latency ----------------------------------------------------------------------


def run_latency(
    *,
    conn: Connection,
    host: str,
    port: int,
    rate: int,
    duration_s: float,
    warmup_s: float,
    payload_size: int,
    start_timeout: float,
    drain_s: float,
) -> dict[str, Any]:
    """One paced QoS 0 publisher and one subscriber in this process; end-to-end latency.

    Each payload carries ``perf_counter_ns()`` taken just before its ``send()``; the
    subscriber takes the stamp after ``recv()``. Messages sent during the warm-up are not
    counted. Returns p50/p99/max latency [ms] and the message counts.
    """
    topic = "bench/latency/data"
    sub = _connect_blocking(host, port, "bench-lat-sub", start_timeout)
    sub.sendall(encode_subscribe(1, "bench/latency/#", 0))
    _expect(sub, SUBACK, start_timeout, "SUBACK")
    pub = _connect_blocking(host, port, "bench-lat-pub", start_timeout)
    conn.send(("ready", {}))
    _await_command(conn, start_timeout, "go")
    sub.setblocking(False)
    pub.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sub, selectors.EVENT_READ)
    total = round(rate * duration_s)
    warmup = round(rate * warmup_s)
    period_ns = round(1e9 / rate)
    # Template: only the 20 stamp digits change; seq is fixed so the header is constant.
    template = encode_publish(topic, make_payload(0, payload_size), 0)
    stamp_at = template.index(b'"ts":') + 5
    head, tail = template[:stamp_at], template[stamp_at + 20 :]
    latencies: list[int] = []
    received = 0
    sent = 0
    buf = b""
    perf = time.perf_counter_ns
    start = perf()
    next_ns = start
    end_ns = start + round((duration_s + drain_s) * 1e9)
    while True:
        now = perf()
        if sent < total and now >= next_ns:
            pkt = head + b"%020d" % now + tail
            # 140 bytes per millisecond never fills a socket buffer; a short write is a stall.
            if pub.send(pkt) != len(pkt):
                raise LoadError("publisher send buffer full at 1 message per period")
            sent += 1
            next_ns += period_ns
            continue
        if received >= total or now > end_ns:
            break
        wait = (next_ns - now) / 1e9 if sent < total else 0.05
        for _key, _events in sel.select(max(0.0, min(wait, 0.05))):
            data = sub.recv(1 << 16)
            t_recv = perf()
            if not data:
                raise LoadError("broker closed the latency subscriber")
            buf = buf + data if buf else data
            pos, stop = 0, len(buf)
            while True:
                body, nxt = split_one(buf, pos, stop)
                if body < 0:
                    break
                if buf[pos] >> 4 == PUBLISH:
                    payload_at = body + 2 + (buf[body] << 8 | buf[body + 1])
                    stamp = int(buf[payload_at + 6 : payload_at + 26])
                    received += 1
                    if received > warmup:
                        latencies.append(t_recv - stamp)
                pos = nxt
            buf = buf[pos:]
    sel.close()
    for s in (pub, sub):
        with contextlib.suppress(OSError):
            s.send(DISCONNECT_PACKET)
        s.close()
    if len(latencies) < max(1, (total - warmup) // 2):
        raise LoadError(f"only {received} of {total} latency messages arrived")
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "sent": sent,
        "received": received,
        "counted": len(latencies),
        "p50_ms": qs[49] / 1e6,
        "p99_ms": qs[98] / 1e6,
        "max_ms": max(latencies) / 1e6,
        "elapsed_s": (perf() - start) / 1e9,
    }


# --- EnOS device login (enos-protocol.md section 2) ------------------------------------------
#
# Written out here from the protocol reference, independently of the hub's own signing code,
# so that the load generator checks the hub rather than agreeing with it by construction.


def enos_sign(
    client_id: str, device_key: str, product_key: str, timestamp: str, secret: str
) -> str:
    """EnOS CONNECT signature: sha256 over the sorted ``key + value`` pairs plus the secret."""
    content = (
        f"clientId{client_id}deviceKey{device_key}productKey{product_key}"
        f"timestamp{timestamp}{secret}"
    )
    return hashlib.sha256(content.encode()).hexdigest()


def encode_connect_auth(
    client_id: str, username: str, password: str, keepalive: int = 60, clean_session: bool = True
) -> bytes:
    """CONNECT, protocol level 4, with user name and password flags (section 3.1.2.8-9)."""
    flags = 0xC0 | (0x02 if clean_session else 0x00)
    var_header = _utf8("MQTT") + b"\x04" + bytes([flags]) + keepalive.to_bytes(2, "big")
    return _packet(0x10, var_header + _utf8(client_id) + _utf8(username) + _utf8(password))


def enos_login(
    product_key: str, device_key: str, device_secret: str, timestamp: str = "1700000000000"
) -> tuple[str, str, str]:
    """``(client_id, username, password)`` of a secure-mode-2 login, as the Python SDK builds it."""
    client_id = f"{device_key}|securemode=2,signmethod=hmacsha256,timestamp={timestamp}|"
    password = enos_sign(device_key, device_key, product_key, timestamp, device_secret)
    return client_id, f"{device_key}&{product_key}", password


def enos_connect(
    product_key: str, device_key: str, device_secret: str, keepalive: int = 60
) -> bytes:
    """The CONNECT packet of a device logging in with its device secret (secure mode 2)."""
    return encode_connect_auth(*enos_login(product_key, device_key, device_secret), keepalive)


def measurepoint_payload(seq: int, time_ms: int) -> bytes:
    """A ``thing.measurepoint.post`` request of fixed size (three points of energy_meter)."""
    return (
        b'{"id":"%09d","version":"1.0","method":"thing.measurepoint.post","params":'
        b'{"measurepoints":{"active_power":%.2f,"reactive_power":%.2f,"frequency":50.01},'
        b'"time":%d}}' % (seq, 1000 + (seq % 9000) / 10, 100 + (seq % 900) / 10, time_ms)
    )


REPLY_OK = re.compile(rb'"code"\s*:\s*200\b')
"""A reply payload that carries the integer code 200 (section 4.5)."""


def enos_self_check() -> None:
    """Check the EnOS encoders against the protocol reference's worked example."""
    # enos-protocol.md section 2.2: productKey prodA, deviceKey dev01, clientId dev01,
    # timestamp 1700000000000, deviceSecret s3cret.
    assert enos_sign("dev01", "dev01", "prodA", "1700000000000", "s3cret") == (
        "166c12821726f7c4c2afb38e28505ccdee4bc508ba7f93916c2e14cd1537ee2e"
    )
    assert encode_connect_auth("c", "u", "p", 60) == (
        b"\x10\x13" + b"\x00\x04MQTT" + b"\x04" + b"\xc2" + b"\x00\x3c"
        b"\x00\x01c" + b"\x00\x01u" + b"\x00\x01p"
    )
    client_id, username, _ = enos_login("prodA", "dev01", "s3cret")
    assert client_id.startswith("dev01|securemode=2,") and username == "dev01&prodA"
    sizes = {len(measurepoint_payload(seq, 1_700_000_000_000 + seq)) for seq in range(20_000)}
    assert len(sizes) == 1, sizes
    assert (
        json.loads(measurepoint_payload(7, 1_700_000_000_007))["params"]["measurepoints"][
            "frequency"
        ]
        == 50.01
    )
    assert REPLY_OK.search(b'{"id":"1","code":200,"data":{}}')
    assert REPLY_OK.search(b'{"id": "1", "code": 200, "data": {}}')
    assert not REPLY_OK.search(b'{"id":"1","code":2000}')
    assert not REPLY_OK.search(b'{"id":"1","code":1204}')


# --- workload: authenticated connections ----------------------------------------------------


def run_connect_packets(
    *,
    conn: Connection,
    host: str,
    port: int,
    packets: list[bytes],
    concurrency: int,
    hold: bool,
    start_timeout: float,
    idle_timeout: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Like ``run_connect`` but with given CONNECT packets (for example with credentials).

    Opens one connection per packet, at most ``concurrency`` in handshake; a refused CONNACK
    ends the run with an error naming the return code. With ``hold`` the connections stay
    open after ``("ready", ...)`` until the parent sends ``"close"``.
    """
    count = len(packets)
    raise_fd_limit(count + 256)
    sel = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    socks_by_fd: dict[int, socket.socket] = {}
    pending: dict[int, bytes] = {}
    next_i = 0
    accepted = 0
    in_flight = 0
    t0 = time.perf_counter_ns()
    hard_deadline = time.monotonic() + deadline_s
    last_progress = time.monotonic()
    error = ""
    try:
        while accepted < count:
            while in_flight < concurrency and next_i < count:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rc = s.connect_ex((host, port))
                if rc not in (0, errno.EINPROGRESS):
                    s.close()
                    raise LoadError(f"connect #{next_i} failed: {errno.errorcode.get(rc, rc)}")
                opened.append(s)
                socks_by_fd[s.fileno()] = s
                sel.register(s, selectors.EVENT_WRITE, next_i)
                next_i += 1
                in_flight += 1
            now = time.monotonic()
            if now > hard_deadline:
                error = f"deadline of {deadline_s} s reached after {accepted} of {count}"
                break
            if now - last_progress > idle_timeout:
                error = f"no CONNACK for {idle_timeout} s after {accepted} of {count}"
                break
            for key, events in sel.select(0.5):
                s = socks_by_fd[key.fd]
                i = key.data
                if events & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise LoadError(f"connect #{i} failed: {errno.errorcode.get(err, err)}")
                    # A CONNECT of ~150 bytes into an empty send buffer: never a partial send.
                    if s.send(packets[i]) != len(packets[i]):
                        raise LoadError(f"partial CONNECT send on connection #{i}")
                    sel.modify(s, selectors.EVENT_READ, i)
                    pending[s.fileno()] = b""
                    continue
                data = s.recv(64)
                if not data:
                    raise LoadError(f"broker closed connection #{i} before CONNACK")
                got = pending[s.fileno()] + data
                if len(got) < 4:
                    pending[s.fileno()] = got
                    continue
                if got != CONNACK_ACCEPTED:
                    raise LoadError(f"connection #{i}: expected CONNACK 20020000, got {got.hex()}")
                del pending[s.fileno()]
                sel.unregister(s)
                last_progress = time.monotonic()
                accepted += 1
                in_flight -= 1
        elapsed_ns = time.perf_counter_ns() - t0
        sel.close()
        info = {"accepted": accepted, "elapsed_ns": elapsed_ns, "error": error}
        if hold:
            conn.send(("ready", info))
            _await_command(conn, deadline_s, "close")
            if opened:
                probe = opened[-1]
                probe.setblocking(True)
                probe.sendall(PINGREQ_PACKET)
                _expect(probe, PINGRESP, start_timeout, "PINGRESP on an idle connection")
    finally:
        for s in opened:
            with contextlib.suppress(OSError):
                s.send(DISCONNECT_PACKET)
            s.close()
    return info


# --- workload: devices posting measurepoints ------------------------------------------------


def _handshake_all(
    socks: list[socket.socket], packets: list[bytes], expected: int, timeout: float, what: str
) -> None:
    """Send one packet on every socket, then read exactly one ``expected`` packet from each."""
    for s, packet in zip(socks, packets, strict=True):
        s.sendall(packet)
    for i, s in enumerate(socks):
        _expect(s, expected, timeout, f"{what} of device #{i}")


def run_device_posts(
    *,
    conn: Connection,
    host: str,
    port: int,
    devices: list[tuple[bytes, str]],
    messages: int,
    window: int,
    reply_qos: int,
    time_base_ms: int,
    start_timeout: float,
    idle_timeout: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Authenticated devices, one connection each, post measurepoints at QoS 1 and read replies.

    ``devices`` holds ``(CONNECT packet, product_key/device_key)`` pairs. Every device
    subscribes to its ``/sys/{pk}/{dk}/thing/measurepoint/post_reply`` (QoS ``reply_qos``, as
    the SDK does before its first request), then posts ``messages`` requests with event times
    ``time_base_ms + seq`` and at most ``window`` unacknowledged PUBLISHes (refilled a quarter
    window at a time). A message is done when its reply arrived; a reply without the integer
    code 200 is counted as an error. All packets are encoded before ``("ready", ...)``.

    Returns counts, the start (``"go"``) and last-reply times (``time.monotonic_ns()``, a
    clock shared by all processes of the machine) and the CPU used.
    """
    n = len(devices)
    raise_fd_limit(n + 256)
    blobs: list[bytes] = []
    sizes: list[int] = []
    for k, (_, keys) in enumerate(devices):
        topic = f"/sys/{keys}/thing/measurepoint/post"
        packets = [
            encode_publish(
                topic,
                measurepoint_payload(k * messages + seq, time_base_ms + seq),
                1,
                (seq % 65535) + 1,
            )
            for seq in range(messages)
        ]
        size = len(packets[0])
        if any(len(p) != size for p in packets):
            raise LoadError("measurepoint posts differ in size")
        blobs.append(b"".join(packets))
        sizes.append(size)
    socks = []
    for _ in devices:
        s = socket.create_connection((host, port), timeout=start_timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    try:
        _handshake_all(socks, [d[0] for d in devices], CONNACK, start_timeout, "CONNACK")
        subscribes = [
            encode_subscribe(1, f"/sys/{keys}/thing/measurepoint/post_reply", reply_qos)
            for _, keys in devices
        ]
        _handshake_all(socks, subscribes, SUBACK, start_timeout, "SUBACK")
        for s in socks:
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        conn.send(("ready", {"devices": n}))
        _await_command(conn, start_timeout, "go")
        return _post_loop(
            socks=socks,
            blobs=blobs,
            sizes=sizes,
            messages=messages,
            window=window,
            idle_timeout=idle_timeout,
            deadline_s=deadline_s,
        )
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.setblocking(True)
                s.settimeout(1.0)
                s.sendall(DISCONNECT_PACKET)
            s.close()


def _post_loop(
    *,
    socks: list[socket.socket],
    blobs: list[bytes],
    sizes: list[int],
    messages: int,
    window: int,
    idle_timeout: float,
    deadline_s: float,
) -> dict[str, Any]:
    n = len(socks)
    sel = selectors.DefaultSelector()
    views = [memoryview(b) for b in blobs]
    total = [len(b) for b in blobs]
    sent = [0] * n  # bytes
    acked = [0] * n  # PUBACKs received
    replies = [0] * n  # replies received
    tails = [b""] * n
    refill = [max(1, window // 4) * size for size in sizes]
    bad = 0
    bad_sample = b""
    for k, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, k)
    done = 0
    start_ns = time.monotonic_ns()
    cpu0 = time.process_time_ns()
    last_reply_ns = start_ns
    hard_deadline = time.monotonic() + deadline_s
    last_progress = time.monotonic()
    error = ""
    reply_ok = REPLY_OK.search
    while done < n:
        now = time.monotonic()
        if now > hard_deadline:
            error = f"deadline of {deadline_s} s reached"
            break
        if now - last_progress > idle_timeout:
            error = f"no progress for {idle_timeout} s"
            break
        for key, events in sel.select(0.2):
            k = key.data
            s = socks[k]
            if events & selectors.EVENT_READ:
                try:
                    data = s.recv(1 << 18)
                except BlockingIOError:
                    data = None
                if data is not None:
                    if not data:
                        raise LoadError(f"hub closed device connection #{k}")
                    buf = tails[k] + data if tails[k] else data
                    pos, end = 0, len(buf)
                    acks: list[bytes] = []
                    n_acked = 0
                    n_replies = 0
                    while end - pos >= 2:
                        first = buf[pos]
                        if first == 0x40 and buf[pos + 1] == 2:  # PUBACK
                            if end - pos < 4:
                                break
                            n_acked += 1
                            pos += 4
                            continue
                        start, body_end = split_one(buf, pos, end)
                        if start < 0:
                            break
                        if first >> 4 == PUBLISH:
                            at = start + 2 + (buf[start] << 8 | buf[start + 1])
                            if first & 0x06:
                                acks.append(buf[at : at + 2])
                                at += 2
                            n_replies += 1
                            if not reply_ok(buf, at, body_end):
                                bad += 1
                                bad_sample = bad_sample or bytes(buf[at:body_end])
                        pos = body_end
                    tails[k] = buf[pos:]
                    if acks:
                        _send_all(s, b"\x40\x02" + b"\x40\x02".join(acks), idle_timeout)
                    if n_acked or n_replies:
                        acked[k] += n_acked
                        replies[k] += n_replies
                        last_progress = time.monotonic()
                        if n_replies:
                            last_reply_ns = time.monotonic_ns()
            want = selectors.EVENT_READ
            if sent[k] < total[k]:
                size = sizes[k]
                limit = min(total[k], (acked[k] + window) * size)
                if limit - sent[k] < refill[k] and limit < total[k]:
                    limit = sent[k]
                if limit > sent[k]:
                    chunk = min(limit - sent[k], 1 << 16)
                    try:
                        wrote = s.send(views[k][sent[k] : sent[k] + chunk])
                    except BlockingIOError:
                        wrote = 0
                    sent[k] += wrote
                    if wrote < chunk or sent[k] < limit:
                        want |= selectors.EVENT_WRITE
            if acked[k] >= messages and replies[k] >= messages:
                sel.unregister(s)
                done += 1
            elif want != key.events:
                sel.modify(s, want, k)
    cpu_ns = time.process_time_ns() - cpu0
    sel.close()
    return {
        "sent": sum(sent[k] // sizes[k] for k in range(n)),
        "acked": sum(acked),
        "replies": sum(replies),
        "bad_replies": bad,
        "bad_sample": bad_sample[:200].decode(errors="replace"),
        "start_ns": start_ns,
        "last_reply_ns": last_reply_ns,
        "cpu_ns": cpu_ns,
        "error": error,
    }
