"""PUBLISH from a client, and PUBREL (the release of a QoS 2 message).

Theory of operation
-------------------
:func:`on_publish` resolves a 5.0 topic alias (bounded by ``HubConfig.topic_alias_maximum``),
drops the duplicate of a QoS 2 message not yet released (MQTT-4.3.3-9), enforces the 5.0
receive maximum (MQTT-3.3.4-9), and decides: clients may not publish to ``$``-topics, the
authoriser may deny (5.0: the reason code in the acknowledgement) or keep an allowed message
from the subscribers (``Decision.forward``: handlers only), and a retained message beyond
the client's or the hub's retained quota is neither retained nor delivered (0x97). An accepted
message goes to the in-process handlers and is routed
(:class:`~enos_lab.hub._router.Router`); without handlers and aliases the received packet
itself is routed (it has the fields of a :class:`~enos_lab.hub.Message`). Then the
acknowledgement: none for QoS 0, PUBACK for QoS 1 (the common one pre-encoded,
:data:`enos_lab.mqtt._wire.PUBACK_HEAD`), PUBREC for QoS 2, which records the packet id until
the PUBREL. When handlers returned awaitables the acknowledgement waits for them in the
connection's ordered response queue (:meth:`Connection.track
<enos_lab.hub._connection.Connection.track>`).

:func:`on_pubrel` completes a QoS 2 exchange with PUBCOMP (5.0: 0x92 for an unknown packet id).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from enos_lab.hub._types import _make_message
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import MQTT_5, NO_PROPERTIES, PubAck, PubComp, PubRec
from enos_lab.mqtt._wire import PUBACK_HEAD

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from enos_lab.hub._connection import Connection, Step
    from enos_lab.hub._state import MessageLike
    from enos_lab.mqtt._packets import Publish, PubRel

__all__ = ["on_publish", "on_pubrel"]

log = logging.getLogger("enos_lab.hub")


def on_publish(conn: Connection, p: Publish) -> Step:
    """PUBLISH from the client: decide, hand to the handlers and the router, acknowledge."""
    router = conn.router
    router.messages_in += 1
    topic = p.topic
    props = p.properties
    if props is not NO_PROPERTIES and conn.level == MQTT_5:
        alias = props.topic_alias
        if alias is not None:
            if alias == 0 or alias > router.config.topic_alias_maximum:
                conn.violation(0x94, f"topic alias {alias} out of range")
                return None
            aliases = conn.topic_aliases
            if aliases is None:
                aliases = conn.topic_aliases = {}
            if topic:
                aliases[alias] = topic
            else:
                known = aliases.get(alias)
                if known is None:
                    conn.violation(0x82, f"unknown topic alias {alias}")
                    return None
                topic = known
            props = replace(props, topic_alias=None)
    if not topic:
        conn.violation(0x82, "PUBLISH without topic")
        return None
    qos = p.qos
    session = conn.session
    assert session is not None
    pid = p.packet_id
    if qos == 2:
        qos2 = session.qos2_in
        if qos2 is not None and pid in qos2:
            # MQTT-4.3.3-9: duplicate of a message not yet released; do not deliver again
            conn.reply(encode(PubRec(pid), conn.level))
            return None
    if qos and conn.level == MQTT_5:
        unacked = conn.inflight_in + (len(session.qos2_in) if session.qos2_in else 0)
        if unacked >= router.config.receive_maximum:
            conn.violation(0x93, "receive maximum exceeded")  # MQTT-3.3.4-9
            return None
    reason = 0
    forward = True
    info = conn.info
    assert info is not None
    if topic[0] == "$":
        reason = 0x87  # clients may not publish to $-topics
        log.info("client %r: publish to %r denied", conn.client_id, topic)
    else:
        authoriser = router.authoriser
        if authoriser is not None:
            decision = authoriser.authorise_publish(info, topic, qos, p.retain)
            forward = decision.forward
            if not decision.allowed:
                reason = decision.reason_code
                log.info(
                    "client %r: publish to %r denied: %s",
                    conn.client_id,
                    topic,
                    decision.reason,
                )
    pending: list[Awaitable[None]] | None = None
    if (
        reason == 0
        and p.retain
        and not router.retain(_make_message(topic, p.payload, qos, True, props), info)
    ):
        reason = 0x97  # Quota exceeded: neither retained nor delivered
        config = router.config
        log.info(
            "client %r: retained message on %r refused: the client keeps %d messages / "
            "%d bytes at most, the hub %d / %d",
            conn.client_id,
            topic,
            config.max_retained_per_client,
            config.max_retained_bytes_per_client,
            config.max_retained_messages,
            config.max_retained_bytes,
        )
    if reason == 0:
        if router.handlers:
            msg: MessageLike = _make_message(topic, p.payload, qos, p.retain, props)
            pending = router.call_handlers(info, msg)  # type: ignore[arg-type]
        elif topic is p.topic and props is p.properties:
            msg = p  # route the packet itself: it has the fields of a Message
        else:
            msg = _make_message(topic, p.payload, qos, p.retain, props)
        if forward:
            router.route(msg, session)
    if qos == 0:
        if pending is not None:
            return conn.track(pending, None)
        return None
    level = conn.level
    rc = reason if level == MQTT_5 else 0
    if qos == 1 and rc == 0 and pending is None:
        # inlines conn.reply(encode(PubAck(pid), level)) for the common case, pre-encoded
        data = PUBACK_HEAD + pid.to_bytes(2, "big")
        if conn.acks:
            conn.acks.append(data)  # behind pending acknowledgements (MQTT-4.6.0-2)
        else:
            conn.write(data)
        return None
    if qos == 1:
        ack: PubAck | PubRec = PubAck(pid, rc)
    else:
        ack = PubRec(pid, rc)
        if rc < 0x80:
            if session.qos2_in is None:
                session.qos2_in = set()
            session.qos2_in.add(pid)
    if pending is not None:
        return conn.track(pending, ack)
    conn.reply(encode(ack, level))
    return None


def on_pubrel(conn: Connection, p: PubRel) -> None:
    """PUBREL: the client releases a QoS 2 message; complete it (PUBCOMP)."""
    session = conn.session
    assert session is not None
    qos2 = session.qos2_in
    if qos2 is not None and p.packet_id in qos2:
        qos2.discard(p.packet_id)
        conn.reply(encode(PubComp(p.packet_id), conn.level))
    else:
        # 5.0: Packet Identifier not found; 3.1.1: complete anyway (MQTT-4.3.3-?)
        rc = 0x92 if conn.level == MQTT_5 else 0
        conn.reply(encode(PubComp(p.packet_id, rc), conn.level))
