"""SUBSCRIBE and UNSUBSCRIBE.

Theory of operation
-------------------
:func:`on_subscribe` answers every topic filter of a SUBSCRIBE in one SUBACK, in order: an
invalid filter (MQTT 4.7) gets a failure code (5.0: 0x8F, 3.1.1: 0x80), no local on a shared
subscription is a protocol error (MQTT-3.8.3-4), a session beyond ``HubConfig.max_subscriptions``
gets 0x97 (3.1.1: 0x80), the authoriser may deny (its reason code); an accepted filter is
granted at most QoS 2 and added (or replaced) in the router. After the SUBACK the retained
messages the new filters match are sent (MQTT-3.3.1-6; 5.0 retain handling 0 always, 1 for a
new subscription only, 2 never; never for shared subscriptions). :func:`on_unsubscribe` removes
the filters; 5.0 gets a reason code per filter (0x11: there was no such subscription).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from enos_lab.errors import TopicError
from enos_lab.hub._state import Sub
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import MQTT_5, SubAck, UnsubAck
from enos_lab.mqtt._topics import parse_shared, validate_topic_filter

if TYPE_CHECKING:
    from enos_lab.hub._connection import Connection
    from enos_lab.mqtt._packets import Subscribe, Unsubscribe

__all__ = ["on_subscribe", "on_unsubscribe"]

log = logging.getLogger("enos_lab.hub")


def on_subscribe(conn: Connection, p: Subscribe) -> None:
    """SUBSCRIBE: check and add each filter, answer with SUBACK, send the retained messages."""
    router = conn.router
    session = conn.session
    info = conn.info
    assert session is not None and info is not None
    level = conn.level
    sub_id: int | None = None
    if level == MQTT_5 and p.properties.subscription_identifiers:
        sub_id = p.properties.subscription_identifiers[0]
    codes: list[int] = []
    retained: list[tuple[str, Sub]] = []
    max_subscriptions = router.config.max_subscriptions
    for s in p.subscriptions:
        topic_filter = s.topic_filter
        try:
            validate_topic_filter(topic_filter)
            group, inner = parse_shared(topic_filter)
        except TopicError as exc:
            log.info("client %r: bad topic filter %r: %s", conn.client_id, topic_filter, exc)
            codes.append(0x8F if level == MQTT_5 else 0x80)
            continue
        if group is not None and s.no_local:
            conn.violation(0x82, "no local on a shared subscription")  # MQTT-3.8.3-4
            return
        subs = session.subs
        if subs and topic_filter not in subs and len(subs) >= max_subscriptions:
            log.info(
                "client %r: subscribe to %r refused: %d subscriptions is the limit",
                conn.client_id,
                topic_filter,
                max_subscriptions,
            )
            codes.append(0x97 if level == MQTT_5 else 0x80)  # Quota exceeded
            continue
        authoriser = router.authoriser
        if authoriser is not None:
            decision = authoriser.authorise_subscribe(info, topic_filter, s.qos)
            if not decision.allowed:
                log.info(
                    "client %r: subscribe to %r denied: %s",
                    conn.client_id,
                    topic_filter,
                    decision.reason,
                )
                codes.append(decision.reason_code if level == MQTT_5 else 0x80)
                continue
        qos = min(s.qos, 2)
        rap = s.retain_as_published if level == MQTT_5 else False
        rh = int(s.retain_handling) if level == MQTT_5 else 0
        sub = Sub(session, qos, s.no_local and level == MQTT_5, rap, rh, sub_id)
        existed = router.subscribe(session, topic_filter, group, inner, sub)
        codes.append(qos)
        # MQTT-3.3.1-6 / 5.0 3.3.1.3: retained messages on subscribe, never for shared ones
        if group is None and (rh == 0 or (rh == 1 and not existed)):
            retained.append((inner, sub))
    conn.reply(encode(SubAck(p.packet_id, tuple(codes)), level))
    for inner, sub in retained:
        router.send_retained(session, inner, sub)


def on_unsubscribe(conn: Connection, p: Unsubscribe) -> None:
    """UNSUBSCRIBE: remove each filter, answer with UNSUBACK."""
    session = conn.session
    assert session is not None
    codes: list[int] = []
    unsubscribe = conn.router.unsubscribe
    for topic_filter in p.topic_filters:
        removed = unsubscribe(session, topic_filter)
        codes.append(0 if removed else 0x11)
    if conn.level != MQTT_5:
        codes = []
    conn.reply(encode(UnsubAck(p.packet_id, tuple(codes)), conn.level))
