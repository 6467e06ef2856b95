"""TLS connections for the TLS listener benchmark: the MQTT of ``_loadgen.py`` over ``ssl``.

Theory of operation
-------------------
``run_tls_connect`` runs in a load-generator process of its own (``_loadgen.child_main``) and
opens ``count`` connections with at most ``concurrency`` of them between the TCP connect and
the CONNACK. Each connection is a non-blocking socket wrapped by a client ``ssl.SSLContext``
before it connects, driven by one selector through three phases:

1. TCP connect (wait until writable, then read ``SO_ERROR``);
2. TLS handshake: ``do_handshake()`` until it stops raising ``SSLWantReadError`` /
   ``SSLWantWriteError`` (the selector waits for what it asked for);
3. MQTT: CONNECT (hand-encoded by ``_loadgen.encode_connect``) sent once the handshake is done,
   then CONNACK read. A TLS 1.3 server sends its session tickets after the handshake; they
   arrive as records without application data (``SSLWantReadError`` from ``recv``), and the
   CONNACK may come in the same socket read, so the reader drains ``pending()`` bytes too.

The client verifies the server as the SDKs do (the lab's CA file, ``CERT_REQUIRED``, host
name 127.0.0.1 checked against the certificate's IP SAN) and pins one TLS version (minimum and
maximum), so both brokers negotiate the same version; with client certificates (mutual TLS)
connection ``i`` presents certificate ``i % len(certs)``. No session is resumed: every
connection is a full handshake. Without ``hold`` the process reports ``("ready", {})`` once its
contexts and packets are made and starts on ``"go"``; each connection sends DISCONNECT and is
closed as soon as its CONNACK arrived. With ``hold`` it starts at once and all stay open (idle,
keep-alive ``keepalive``) after ``("ready", info)`` until the parent sends ``"close"``, and one
of them then checks with a PINGREQ that the broker still serves them.

Every wait is bounded (``idle_timeout`` without progress, ``deadline_s`` in all).
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import _loadgen as lg

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
"""The versions a run may pin, by the name the command line uses."""

_CONNECTING, _HANDSHAKE, _CONNACK = range(3)


def client_context(
    cafile: str, version: str, cert: tuple[str, str] | None = None
) -> ssl.SSLContext:
    """A client context that verifies the server against ``cafile`` and speaks only TLS
    ``version`` ("1.2" or "1.3"); with ``cert`` (certificate chain file, key file) it presents
    that client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = TLS_VERSIONS[version]
    context.load_verify_locations(cafile)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


@dataclass(slots=True)
class _Pending:
    """One connection on its way to the CONNACK."""

    sock: ssl.SSLSocket
    index: int
    phase: int
    started_ns: int
    got: bytes = b""


def run_tls_connect(
    *,
    conn: Connection,
    host: str,
    port: int,
    count: int,
    concurrency: int,
    cafile: str,
    version: str,
    certs: list[tuple[str, str]],
    keepalive: int,
    prefix: str,
    hold: bool,
    start_timeout: float,
    idle_timeout: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Open ``count`` TLS connections (TCP connect, TLS handshake, CONNECT -> CONNACK), at most
    ``concurrency`` in progress; without ``hold`` each then sends DISCONNECT and is closed
    (and the process waits for ``"go"`` after ``("ready", {})``).

    ``certs`` lists ``(certificate chain file, key file)`` pairs for mutual TLS (empty: server
    authentication only). Returns ``accepted``, ``elapsed_ns`` (first connect to last CONNACK),
    ``cpu_ns`` (this process over the same interval), ``p50_ms`` (median connect-to-CONNACK
    time of one connection), the negotiated ``tls`` version and ``cipher``, and ``error``
    (empty, or why the run stopped early).
    """
    lg.raise_fd_limit(count + 256)
    contexts = [client_context(cafile, version, cert) for cert in certs] or [
        client_context(cafile, version)
    ]
    packets = [lg.encode_connect(f"{prefix}-{i}", keepalive) for i in range(count)]
    if not hold:
        conn.send(("ready", {}))
        lg._await_command(conn, start_timeout, "go")
    sel = selectors.DefaultSelector()
    held: list[ssl.SSLSocket] = []
    durations: list[int] = []
    negotiated = ("", "")
    next_i = accepted = in_flight = 0
    error = ""
    t0 = time.perf_counter_ns()
    cpu0 = time.process_time_ns()
    hard_deadline = time.monotonic() + deadline_s
    last_progress = time.monotonic()
    try:
        while accepted < count:
            while in_flight < concurrency and next_i < count:
                raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                raw.setblocking(False)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = contexts[next_i % len(contexts)].wrap_socket(
                    raw, server_hostname=host, do_handshake_on_connect=False
                )
                rc = sock.connect_ex((host, port))
                if rc not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise lg.LoadError(f"connect #{next_i} failed: {errno.errorcode.get(rc, rc)}")
                item = _Pending(sock, next_i, _CONNECTING, time.perf_counter_ns())
                sel.register(sock, selectors.EVENT_WRITE, item)
                next_i += 1
                in_flight += 1
            now = time.monotonic()
            if now > hard_deadline:
                error = f"deadline of {deadline_s} s reached after {accepted} of {count}"
                break
            if now - last_progress > idle_timeout:
                error = f"no CONNACK for {idle_timeout} s after {accepted} of {count}"
                break
            for key, _events in sel.select(0.5):
                item = key.data
                if not _step(sel, item, packets[item.index]):
                    continue
                # CONNACK accepted
                sel.unregister(item.sock)
                durations.append(time.perf_counter_ns() - item.started_ns)
                if not negotiated[0]:
                    cipher = item.sock.cipher()
                    negotiated = (item.sock.version() or "", cipher[0] if cipher else "")
                if hold:
                    held.append(item.sock)
                else:
                    with contextlib.suppress(OSError):
                        item.sock.send(lg.DISCONNECT_PACKET)
                    item.sock.close()
                last_progress = time.monotonic()
                accepted += 1
                in_flight -= 1
        elapsed_ns = time.perf_counter_ns() - t0
        cpu_ns = time.process_time_ns() - cpu0
        info = {
            "accepted": accepted,
            "elapsed_ns": elapsed_ns,
            "cpu_ns": cpu_ns,
            "p50_ms": statistics.median(durations) / 1e6 if durations else 0.0,
            "tls": negotiated[0],
            "cipher": negotiated[1],
            "error": error,
        }
        if hold:
            conn.send(("ready", info))
            lg._await_command(conn, deadline_s, "close")
            if held:
                probe = held[-1]
                probe.setblocking(True)
                probe.sendall(lg.PINGREQ_PACKET)
                lg._expect(probe, lg.PINGRESP, start_timeout, "PINGRESP on an idle connection")
    finally:
        for key in list(sel.get_map().values()):
            key.data.sock.close()
        sel.close()
        for sock in held:
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.settimeout(1.0)
                sock.sendall(lg.DISCONNECT_PACKET)
            sock.close()
    return info


def _step(sel: selectors.BaseSelector, item: _Pending, connect_packet: bytes) -> bool:
    """Advance one connection as far as it goes without blocking; True once its CONNACK
    (accepted) has arrived. Raises ``LoadError`` for a failed connect or handshake, a refusal
    or a closed connection."""
    sock = item.sock
    if item.phase == _CONNECTING:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise lg.LoadError(f"connect #{item.index} failed: {errno.errorcode.get(err, err)}")
        item.phase = _HANDSHAKE
    if item.phase == _HANDSHAKE:
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            sel.modify(sock, selectors.EVENT_READ, item)
            return False
        except ssl.SSLWantWriteError:
            sel.modify(sock, selectors.EVENT_WRITE, item)
            return False
        except (ssl.SSLError, OSError) as exc:
            raise lg.LoadError(f"TLS handshake of connection #{item.index} failed: {exc}") from exc
        # A CONNECT of a few dozen bytes into an empty send buffer: never a partial send.
        if sock.send(connect_packet) != len(connect_packet):
            raise lg.LoadError(f"partial CONNECT send on connection #{item.index}")
        item.phase = _CONNACK
        sel.modify(sock, selectors.EVENT_READ, item)
        return False
    while True:
        try:
            data = sock.recv(64)
        except ssl.SSLWantReadError:  # e.g. a TLS 1.3 session ticket, no application data
            return False
        except (ssl.SSLError, OSError) as exc:
            raise lg.LoadError(f"connection #{item.index} failed before CONNACK: {exc}") from exc
        if not data:
            raise lg.LoadError(f"broker closed connection #{item.index} before CONNACK")
        item.got += data
        if len(item.got) >= 4:
            if item.got != lg.CONNACK_ACCEPTED:
                got = item.got.hex()
                raise lg.LoadError(f"connection #{item.index}: CONNACK 20020000 expected, {got}")
            return True
        if not sock.pending():
            return False
