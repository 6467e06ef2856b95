"""The asyncio MQTT 3.1.1 / 5.0 server core of enos_lab (the hub).

A :class:`Hub` serves MQTT over TCP (optionally TLS) and over an in-memory transport that runs
the same protocol code. Authentication, authorisation, in-process message handlers, direct
delivery to one client and lifecycle events are its extension points::

    async with Hub(HubConfig(anonymous=True)) as hub:
        listener = await hub.listen_tcp()          # 127.0.0.1, any free port
        hub.add_handler(lambda client, message: print(message.topic))
        await hub.publish(Message("greeting", b"hello"))
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
