"""Acknowledgements from a client of the hub's own PUBLISHes: PUBACK (QoS 1), PUBREC and
PUBCOMP (QoS 2).

Theory of operation
-------------------
An acknowledgement frees the in-flight slot of its packet id in the session
(:attr:`Session.inflight <enos_lab.hub._state.Session.inflight>`); the connection then moves
queued messages into the freed slots (:meth:`Router.pump <enos_lab.hub._router.Router.pump>`),
once per read. An acknowledgement of the wrong kind for its packet id, or of an unknown one, is
ignored (PUBACK, PUBCOMP) or answered as the protocol says (PUBREC: PUBREL, 5.0 with 0x92).
QoS 2 goes PUBLISH -> PUBREC -> PUBREL -> PUBCOMP: PUBREC moves the message to ``RELEASED``
and sends PUBREL, PUBCOMP ends it; a 5.0 PUBREC with a failure code ends it at once.

A QoS 1 subscriber answers every message with a 4-byte PUBACK, and a fast one sends them in
runs: a read made of nothing but such PUBACKs is checked and unpacked by
:func:`enos_lab.mqtt._wire.puback_ids` and applied in one loop by :func:`on_pubacks` (which
inlines :func:`on_puback`), without packet objects; any other read goes through the decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enos_lab.hub._state import RELEASED
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import MQTT_5, PubRel
from enos_lab.mqtt._wire import puback_ids

if TYPE_CHECKING:
    from enos_lab.hub._connection import Connection
    from enos_lab.mqtt._packets import PubAck, PubComp, PubRec

__all__ = ["on_puback", "on_pubacks", "on_pubcomp", "on_pubrec"]


def on_puback(conn: Connection, p: PubAck) -> None:
    """PUBACK: a QoS 1 message was received; free its in-flight slot."""
    session = conn.session
    assert session is not None
    inflight = session.inflight
    if inflight is not None:
        out = inflight.get(p.packet_id)
        if out is not None and out.qos == 1:
            del inflight[p.packet_id]


def on_pubacks(conn: Connection, data: bytes) -> bool:
    """A read of nothing but complete plain PUBACKs, taken in bulk (inlines :func:`on_puback`
    for each, then pumps the queue); False (nothing done) for anything else, which the decoder
    then handles."""
    if conn.decoder.buffered:
        return False
    pids = puback_ids(data)
    if pids is None:
        return False
    session = conn.session
    assert session is not None
    inflight = session.inflight
    if inflight:
        get = inflight.get
        for pid in pids:
            out = get(pid)
            if out is not None and out.qos == 1:
                del inflight[pid]
    if session.queue:
        conn.router.pump(session, conn)
    return True


def on_pubrec(conn: Connection, p: PubRec) -> None:
    """PUBREC: a QoS 2 message was received; release it (PUBREL)."""
    session = conn.session
    assert session is not None
    inflight = session.inflight
    out = inflight.get(p.packet_id) if inflight is not None else None
    if out is None or out.qos != 2:
        if conn.level == MQTT_5:
            conn.write(encode(PubRel(p.packet_id, 0x92), MQTT_5))
        else:
            conn.write(encode(PubRel(p.packet_id), conn.level))
        return
    assert inflight is not None
    if p.reason_code >= 0x80:
        del inflight[p.packet_id]  # 5.0 4.3.3: the exchange ends here
        return
    out.state = RELEASED
    conn.write(encode(PubRel(p.packet_id), conn.level))


def on_pubcomp(conn: Connection, p: PubComp) -> None:
    """PUBCOMP: a QoS 2 exchange is complete; free its in-flight slot."""
    session = conn.session
    assert session is not None
    inflight = session.inflight
    if inflight is not None:
        out = inflight.get(p.packet_id)
        if out is not None and out.state == RELEASED:
            del inflight[p.packet_id]
