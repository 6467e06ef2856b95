"""Sans-IO MQTT 3.1.1 / 5.0: packets, codec and topics (no sockets, no timers, no auth).

:class:`Decoder` turns received bytes into packets, :func:`encode` packets into bytes;
:class:`TopicTree` is the one topic matcher, used for routing and for access control alike.
The wire-format shortcuts of the hub's hot paths (pre-encoded PUBACKs and CONNACKs, a PUBLISH
encoded once and patched per receiver) live beside the codec in :mod:`enos_lab.mqtt._wire`,
where the tests check them against :func:`encode` and the :class:`Decoder`; so does
:func:`split_packets`, which cuts a byte stream into whole packets for relays.
"""

from __future__ import annotations

from enos_lab.mqtt._codec import DEFAULT_MAX_PACKET_SIZE, Decoder, encode
from enos_lab.mqtt._packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PropertyId,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    RetainHandling,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from enos_lab.mqtt._topics import (
    TopicTree,
    parse_shared,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)
from enos_lab.mqtt._wire import split_packets

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MQTT_3_1",
    "MQTT_3_1_1",
    "MQTT_5",
    "NO_PROPERTIES",
    "Auth",
    "ConnAck",
    "Connect",
    "ConnectReturnCode",
    "Decoder",
    "Disconnect",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "PropertyId",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "ReasonCode",
    "RetainHandling",
    "SubAck",
    "Subscribe",
    "Subscription",
    "TopicTree",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "encode",
    "parse_shared",
    "split_packets",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]
