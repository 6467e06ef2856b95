"""Output: what the hub writes to its clients, written once per event-loop iteration.

Theory of operation
-------------------
A connection collects its output in a list (:meth:`Connection.write
<enos_lab.hub._connection.Connection.write>`; the router's fast paths append to the same list).
The first write of an iteration files the connection here (:meth:`Output.to_flush`), and every
filed connection is written with one ``transport.write`` of everything it got, once the
callbacks of the iteration have run: responses and messages to one client leave in one
``send``.

On a loop made by :func:`enos_lab.hub._tcp.new_event_loop` (the lab's), the output of the hub's
own socket transports is written at the selector's next flush point: right after the reads of
the current ``select()``, or before the loop polls again (:meth:`Output.flush_sockets`). A
message that arrives alone is then read, routed and written within one ``select()`` call.
Otherwise (TLS, the in-memory transport, other loops) one ``call_soon`` callback at the start
of the next iteration writes every filed connection (:meth:`Output.flush_all`), which costs a
pass of the loop more. A bug while writing one connection ends that connection only; the
others are written.

:class:`Output` also counts the bytes read and written (``HubStats.bytes_in`` /
``bytes_out``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enos_lab.hub._tcp import _SocketTransport, poll_hook_selector

if TYPE_CHECKING:
    import asyncio

    from enos_lab.hub._state import Link
    from enos_lab.hub._tcp import PollHookSelector

__all__ = ["Output"]


class Output:
    """The output of a hub's connections, written once per event-loop iteration, and the
    byte counters. [bytes]"""

    __slots__ = ("_loop", "_selector", "_unflushed", "_unflushed_socket", "bytes_in", "bytes_out")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._selector: PollHookSelector | None = None
        self._unflushed: list[Link] = []  # connections with output, see to_flush
        self._unflushed_socket: list[Link] = []  # the same, written before polling
        self.bytes_in = 0  # [bytes] read from clients
        self.bytes_out = 0  # [bytes] written to clients

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write on ``loop`` from now on (at its selector's flush points if it has them)."""
        self._loop = loop
        self._selector = poll_hook_selector(loop)

    def to_flush(self, conn: Link) -> None:
        """Write ``conn``'s output once this loop iteration's callbacks have run, together with
        that of every other connection that got output in this iteration."""
        selector = self._selector
        if selector is not None and type(conn.transport) is _SocketTransport:
            pending = self._unflushed_socket
            if not pending:
                selector.call_before_poll(self.flush_sockets)
            pending.append(conn)
            return
        unflushed = self._unflushed
        if not unflushed:
            self._loop.call_soon(self.flush_all)
        unflushed.append(conn)

    def flush(self, conn: Link) -> None:
        """Write ``conn``'s collected output now (nothing if it has none)."""
        out = conn.out
        if out is None:
            return
        conn.out = None
        conn.out_size = 0
        transport = conn.transport
        if transport is not None and not transport.is_closing():
            data = out[0] if len(out) == 1 else b"".join(out)
            self.bytes_out += len(data)
            transport.write(data)

    def flush_all(self) -> None:
        """Write every connection filed by :meth:`to_flush` (a loop callback)."""
        unflushed, self._unflushed = self._unflushed, []
        for conn in unflushed:
            try:
                self.flush(conn)  # nothing to do for one that ended meanwhile (it flushed then)
            except Exception as exc:  # a bug: that connection ends, the others are written
                conn.internal_error(exc)

    def flush_sockets(self) -> bool:
        """Write the socket connections' output (at the selector's flush point); true if a
        write ended a connection, whose loss is then a callback the poll must not wait behind.

        Inlines :meth:`flush`: this runs for every message that arrives alone.
        """
        pending, self._unflushed_socket = self._unflushed_socket, []
        ended = False
        for conn in pending:
            out = conn.out
            if out is None:
                continue  # ended meanwhile (it flushed then)
            conn.out = None
            conn.out_size = 0
            transport = conn.transport
            if transport is not None and not transport._closing:  # type: ignore[attr-defined]
                try:
                    data = out[0] if len(out) == 1 else b"".join(out)
                    self.bytes_out += len(data)
                    transport.write(data)
                except Exception as exc:  # a bug: that connection ends, the others are written
                    conn.internal_error(exc)
                if not transport._closing:  # type: ignore[attr-defined]
                    continue
            ended = True
        return ended
