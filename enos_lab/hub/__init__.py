"""The asyncio MQTT 3.1.1 / 5.0 server core of enos_lab (the hub).

A :class:`Hub` serves MQTT over TCP (optionally TLS) and over an in-memory transport that runs
the same protocol code. Authentication, authorisation, in-process message handlers, direct
delivery to one client and lifecycle events are its extension points::

    async with Hub(HubConfig(anonymous=True)) as hub:
        listener = await hub.listen_tcp()          # 127.0.0.1, any free port
        hub.add_handler(lambda client, message: print(message.topic))
        await hub.publish(Message("greeting", b"hello"))

Where things are (one module per concern, in the manner of mosquitto's ``handle_*.c``):

=================  =============================================================================
``_hub.py``        :class:`Hub`: composes the parts, lifecycle, listeners, public operations, the
                   hub's clock
``_connection.py`` one client connection: reading, decoding, dispatch, ordered responses (pipelined
                   acknowledgements), writing, ending; PINGREQ and DISCONNECT
``_connect.py``    CONNECT: checks, authentication, CONNACK, the session
``_publish.py``    PUBLISH from a client (aliases, authorisation, retained quota, handlers,
                   acknowledgement) and PUBREL
``_subscribe.py``  SUBSCRIBE and UNSUBSCRIBE
``_acks.py``       PUBACK, PUBREC, PUBCOMP of the hub's own PUBLISHes (runs of PUBACKs in bulk)
``_router.py``     in-process handlers, subscriptions, routes, delivery to sessions (in-flight
                   window, queue)
``_retained.py``   the retained messages, indexed by topic level and bounded per client
``_sessions.py``   open connections, the session table, takeover, offline sessions and expiry,
                   wills, lifecycle events
``_state.py``      the state objects the parts share (sessions, subscriptions, queued messages)
``_deadlines.py``  CONNECT timeouts and keep alive, per deadline; the sweep, one timer on the
                   hub's clock for everything timed
``_output.py``     output written once per event-loop iteration; byte counters
``_tasks.py``      the hub's tasks and the futures of message handlers
``_tcp.py``        the hub's own TCP listener and socket transport; the lab's event loop
``_tls.py``        the TLS listener: a handshake per connection with the context current then,
                   failed handshakes reported
``_transport.py``  listeners and the in-memory transport
``_config.py``     :class:`HubConfig`, :class:`HubStats`
``_types.py``      value objects and extension-point protocols
=================  =============================================================================

The wire-format shortcuts of the hot paths live beside the codec, in :mod:`enos_lab.mqtt._wire`.
The protocol's times (CONNECT timeout, keep alive, will delay, session and message expiry) are
on the hub's clock, ``Hub(clock=...)``: simulated time on a :class:`~enos_lab.clock.SimulatedClock`
(see :mod:`enos_lab.hub._hub`).
"""

from __future__ import annotations

from enos_lab.hub._config import HubConfig, HubStats
from enos_lab.hub._hub import Hub
from enos_lab.hub._transport import Listener, MemoryConnection
from enos_lab.hub._types import (
    Authenticator,
    Authoriser,
    AuthResult,
    ClientConnected,
    ClientDisconnected,
    ClientInfo,
    ConnectRequest,
    Decision,
    DisconnectReason,
    HandshakeFailed,
    HubEvent,
    Message,
    MessageHandler,
    SessionKey,
)

__all__ = [
    "AuthResult",
    "Authenticator",
    "Authoriser",
    "ClientConnected",
    "ClientDisconnected",
    "ClientInfo",
    "ConnectRequest",
    "Decision",
    "DisconnectReason",
    "HandshakeFailed",
    "Hub",
    "HubConfig",
    "HubEvent",
    "HubStats",
    "Listener",
    "MemoryConnection",
    "Message",
    "MessageHandler",
    "SessionKey",
]
