"""CONNECT: protocol and client id checks, authentication, the CONNACK, and the session.

Theory of operation
-------------------
:func:`on_connect` checks what the codec leaves to the server (the protocol name and level,
MQTT-3.1.2-1/2; the client id, MQTT-3.1.3-6/8: an empty one is assigned when allowed, one with
``+`` or ``#`` is refused; enhanced authentication is not supported), then asks the
authenticator (:attr:`Sessions.authenticator <enos_lab.hub._sessions.Sessions>`; without one
``HubConfig.anonymous`` decides) with a :class:`~enos_lab.hub.ConnectRequest` that carries, on a
TLS listener, the certificate the client presented in the handshake. An authenticator may answer
at once or with an awaitable; an awaitable answer (or ``HubConfig.connack_delay``) makes the
connection wait for :func:`connect_async` (its next packets wait in its backlog).
:func:`finish_connect` then
refuses (CONNACK with the reason code; 3.1.1 gets the mapped return code) or accepts: it works
out what the client gets (5.0: session expiry capped by ``max_session_expiry``, receive maximum,
maximum packet size, server keep alive, an assigned client id; 3.1.1: ``session_expiry_v311``
for clean session 0), builds the :class:`~enos_lab.hub.ClientInfo` whose session key names the
session (``(identity, client_id)`` when the authenticator gave an identity), attaches the
session (:meth:`Sessions.attach <enos_lab.hub._sessions.Sessions.attach>`: takeover, clean start,
keep alive), writes the CONNACK (3.1.1: pre-encoded, :data:`enos_lab.mqtt._wire.CONNACK_311`),
resends what the resumed session had in flight and tells the listeners
(:class:`~enos_lab.hub.ClientConnected`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from enos_lab.hub._state import CONNECTED, CONNECTING, NEW
from enos_lab.hub._types import (
    AuthResult,
    ClientConnected,
    ClientInfo,
    ConnectRequest,
    DisconnectReason,
)
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import MQTT_5, NO_PROPERTIES, ConnAck, Properties
from enos_lab.mqtt._wire import CONNACK_311, connack_return_code

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from enos_lab.hub._connection import Connection
    from enos_lab.mqtt._packets import Connect

__all__ = ["connect_async", "finish_connect", "on_connect"]

log = logging.getLogger("enos_lab.hub")

_PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}  # protocol level -> name in CONNECT


def _refuse(conn: Connection, level: int, reason_code: int, text: str) -> None:
    """Refuse the CONNECT with ``reason_code`` (3.1.1: the mapped return code) and close."""
    log.info("client %r (%s): CONNECT refused: %s", conn.client_id, conn.peer, text)
    if level == MQTT_5:
        conn.write(encode(ConnAck(False, reason_code), MQTT_5))
    else:
        conn.write(encode(ConnAck(False, connack_return_code(reason_code)), level))
    conn.end(DisconnectReason.PROTOCOL_ERROR, publish_will=False)


def on_connect(conn: Connection, p: Connect) -> Awaitable[None] | None:
    """CONNECT: check it and authenticate; an awaitable when the answer has to be waited for."""
    if conn.state != NEW:
        conn.violation(0x82, "second CONNECT")  # MQTT-3.1.0-2
        return None
    conn.state = CONNECTING
    level = p.protocol_level
    conn.client_id = p.client_id
    sessions = conn.sessions
    config = sessions.config
    expected = _PROTOCOL_NAMES.get(level)
    if expected is None or p.protocol_name != expected:
        # MQTT-3.1.2-2 / 5.0 3.1.2.2
        _refuse(conn, level if level == MQTT_5 else 4, 0x84, f"protocol level {level}")
        return None
    conn.level = level
    client_id = p.client_id
    assigned: str | None = None
    if not client_id:
        if level == MQTT_5 or (level == 4 and p.clean_start):
            client_id = sessions.assign_client_id()  # MQTT-3.1.3-6, 5.0 3.1.3.1
            assigned = client_id if level == MQTT_5 else None
        else:
            _refuse(conn, level, 0x85, "empty client id without clean session")  # 3.1.3-8
            return None
    if "+" in client_id or "#" in client_id or (level == 3 and len(client_id) > 23):
        _refuse(conn, level, 0x85, f"client id {client_id!r} not allowed")
        return None
    props = p.properties
    if level == MQTT_5 and props.authentication_method is not None:
        _refuse(conn, level, 0x8C, "enhanced authentication is not supported")
        return None
    transport = conn.transport
    tls_object = None if transport is None else transport.get_extra_info("ssl_object")
    authenticator = sessions.authenticator
    result: AuthResult | Awaitable[AuthResult]
    if authenticator is not None:
        request = ConnectRequest(
            client_id,
            p.username,
            p.password,
            level,
            conn.peer,
            tls_object is not None,
            props,
            None if tls_object is None else tls_object.getpeercert(binary_form=True),
        )
        try:
            result = authenticator.authenticate(request)
        except Exception:
            log.exception("client %r: authenticator failed", client_id)
            result = AuthResult(False, 0x80)
    elif config.anonymous:
        result = AuthResult(True)
    else:
        result = AuthResult(False, 0x87)
    if (type(result) is not AuthResult and inspect.isawaitable(result)) or (
        config.connack_delay > 0
    ):
        return connect_async(conn, p, client_id, assigned, result)
    assert isinstance(result, AuthResult)
    finish_connect(conn, p, client_id, assigned, result)
    return None


async def connect_async(
    conn: Connection,
    p: Connect,
    client_id: str,
    assigned: str | None,
    result: AuthResult | Awaitable[AuthResult],
) -> None:
    """Wait for the authenticator's answer (and the CONNACK delay), then finish the CONNECT
    unless the connection ended meanwhile."""
    if not isinstance(result, AuthResult):
        try:
            result = await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client %r: authenticator failed", client_id)
            result = AuthResult(False, 0x80)
    delay = conn.sessions.config.connack_delay
    if delay > 0:
        # real time (the event loop's), not the hub's clock: the delay paces the answer to a
        # client's I/O (an SDK that must be waiting for the CONNACK before it arrives)
        await asyncio.sleep(delay)
    if conn.state == CONNECTING:
        finish_connect(conn, p, client_id, assigned, result)


def finish_connect(
    conn: Connection, p: Connect, client_id: str, assigned: str | None, result: AuthResult
) -> None:
    """Refuse, or accept: the session, the CONNACK, the resent messages, the event."""
    level = conn.level
    if not result.accepted:
        code = result.reason_code if result.reason_code >= 0x80 else 0x87
        _refuse(conn, level, code, f"authentication refused (0x{code:02X})")
        return
    if result.client_id is not None and result.client_id != client_id:
        client_id = result.client_id
        if level == MQTT_5:
            assigned = client_id
    sessions = conn.sessions
    cfg = sessions.config
    conn.client_id = client_id
    props = p.properties
    keep_alive = p.keep_alive
    connack_props: dict[str, Any] = {}
    if level == MQTT_5:
        if assigned is not None:
            connack_props["assigned_client_identifier"] = assigned
        if cfg.server_keep_alive is not None:
            keep_alive = cfg.server_keep_alive
            connack_props["server_keep_alive"] = keep_alive
        requested = props.session_expiry_interval or 0
        expiry = min(requested, cfg.max_session_expiry)
        if expiry != requested:
            connack_props["session_expiry_interval"] = expiry
        conn.session_expiry = None if expiry == 0xFFFFFFFF else expiry
        if props.receive_maximum is not None:
            conn.window = min(cfg.max_inflight, props.receive_maximum)
        if props.maximum_packet_size is not None:
            conn.max_out = props.maximum_packet_size
        if cfg.receive_maximum != 65535:
            connack_props["receive_maximum"] = cfg.receive_maximum
        if cfg.topic_alias_maximum:
            connack_props["topic_alias_maximum"] = cfg.topic_alias_maximum
        connack_props["maximum_packet_size"] = cfg.max_packet_size
    else:
        conn.session_expiry = 0 if p.clean_start else cfg.session_expiry_v311
    conn.ka_limit = keep_alive * cfg.keep_alive_factor
    info = ClientInfo(
        client_id,
        level,
        p.username,
        conn.peer,
        p.clean_start,
        keep_alive,
        result.attributes,
        client_id if result.identity is None else (result.identity, client_id),
    )
    conn.info = info
    if p.will is not None:
        conn.will = p.will
    session_present = sessions.attach(conn, p.clean_start)
    conn.state = CONNECTED
    if level == MQTT_5:
        properties = Properties(**connack_props) if connack_props else NO_PROPERTIES
        conn.write(encode(ConnAck(session_present, 0, properties), level))
    else:
        conn.write(CONNACK_311[session_present])  # the codec's accepting CONNACK, pre-encoded
    log.info(
        "client %r connected from %s (MQTT level %d, session present %s)",
        client_id,
        conn.peer,
        level,
        session_present,
    )
    session = conn.session
    assert session is not None
    conn.router.resume(session, conn)
    sessions.emit(ClientConnected(info, session_present))
