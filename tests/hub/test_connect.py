"""CONNECT conversations with the hub: return codes, client ids, takeover, timeouts, auth.

Byte-exact where the bytes are short and fixed (CONNACK), decoded otherwise. Numbered by area.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.errors import ClosedError
from enos_lab.hub import (
    AuthResult,
    ClientConnected,
    ClientDisconnected,
    ClientInfo,
    ConnectRequest,
    Decision,
    DisconnectReason,
    Hub,
    HubConfig,
    HubEvent,
    Message,
)
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import (
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)

if TYPE_CHECKING:
    from tests.hub.conftest import Connector, MakeHub

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


def raw_connect(level: int, name: str, client_id: str = "c1", flags: int = 0x02) -> bytes:
    """A CONNECT built by hand (for levels/names the codec refuses to encode)."""
    body = (
        len(name).to_bytes(2, "big")
        + name.encode()
        + bytes([level, flags])
        + (60).to_bytes(2, "big")
        + (b"\x00" if level == 5 else b"")
        + len(client_id).to_bytes(2, "big")
        + client_id.encode()
    )
    return bytes([0x10, len(body)]) + body


# -- 01 protocol name and level ---------------------------------------------------------------


async def test_01_1_connect_311_accepted_bytes(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(4, "MQTT"))
    assert await conn.receive_exactly(4) == CONNACK_ACCEPTED
    assert "c1" in hub.clients
    info = hub.clients["c1"]
    assert (info.protocol_level, info.peer, info.keep_alive) == (4, "memory", 60)


async def test_01_2_connect_31_mqisdp_accepted(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(3, "MQIsdp"))
    assert await conn.receive_exactly(4) == CONNACK_ACCEPTED
    assert hub.clients["c1"].protocol_level == 3


async def test_01_3_connect_50_accepted_with_server_properties(
    hub: Hub, connect: Connector
) -> None:
    _conn, connack = await connect(hub, "c5", level=5)
    assert connack.reason_code == 0
    assert connack.session_present is False
    assert connack.properties.maximum_packet_size == hub.config.max_packet_size
    assert connack.properties.topic_alias_maximum == hub.config.topic_alias_maximum
    assert connack.properties.assigned_client_identifier is None


async def test_01_4_unsupported_level_gets_311_return_code_1(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(6, "MQTT"))
    assert await conn.receive_exactly(4) == b"\x20\x02\x00\x01"
    await conn.wait_closed()
    assert hub.clients == {}


async def test_01_5_wrong_protocol_name_311(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(4, "MQIsdp"))
    assert await conn.receive_exactly(4) == b"\x20\x02\x00\x01"
    await conn.wait_closed()


async def test_01_6_wrong_protocol_name_50_gets_0x84(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(5, "MQIsdp"))
    connack = await conn.read_packet(5)
    assert connack == ConnAck(False, 0x84)
    await conn.wait_closed()


# -- 02 client identifiers --------------------------------------------------------------------


async def test_02_1_empty_client_id_311_clean_session_accepted(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(4, "MQTT", client_id="", flags=0x02))
    assert await conn.receive_exactly(4) == CONNACK_ACCEPTED
    assert len(hub.clients) == 1
    assert next(iter(hub.clients))  # the hub assigned a non-empty id


async def test_02_2_empty_client_id_311_persistent_refused_rc2(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(4, "MQTT", client_id="", flags=0x00))
    assert await conn.receive_exactly(4) == b"\x20\x02\x00\x02"  # MQTT-3.1.3-8
    await conn.wait_closed()
    assert hub.clients == {}


async def test_02_3_empty_client_id_50_assigned(hub: Hub, connect: Connector) -> None:
    _conn, connack = await connect(hub, "", level=5)
    assert connack.reason_code == 0
    assigned = connack.properties.assigned_client_identifier
    assert assigned
    assert set(hub.clients) == {assigned}


async def test_02_4_wildcard_in_client_id_refused(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(4, "MQTT", client_id="a+b"))
    assert await conn.receive_exactly(4) == b"\x20\x02\x00\x02"
    await conn.wait_closed()


async def test_02_5_mqtt31_client_id_longer_than_23_refused(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(raw_connect(3, "MQIsdp", client_id="x" * 24))
    assert await conn.receive_exactly(4) == b"\x20\x02\x00\x02"
    await conn.wait_closed()


# -- 03 takeover and session present ----------------------------------------------------------


async def test_03_1_takeover_311_closes_old_connection(hub: Hub, connect: Connector) -> None:
    events: list[HubEvent] = []
    hub.add_listener(events.append)
    old, _ = await connect(hub, "dup")
    new, connack = await connect(hub, "dup")
    assert connack.reason_code == 0
    await old.wait_closed()
    assert await old.receive_exactly(0) == b""
    assert not new.closed
    disconnected = [e for e in events if isinstance(e, ClientDisconnected)]
    assert [e.reason for e in disconnected] == [DisconnectReason.TAKEN_OVER]
    await new.send(encode(PingReq(), 4))
    assert await new.receive_exactly(2) == b"\xd0\x00"


async def test_03_2_takeover_50_old_gets_disconnect_0x8e(hub: Hub, connect: Connector) -> None:
    old, _ = await connect(hub, "dup", level=5)
    _new, _ = await connect(hub, "dup", level=5)
    assert await old.read_packet(5) == Disconnect(0x8E)
    await old.wait_closed()


async def test_03_3_session_present(hub: Hub, connect: Connector) -> None:
    first, connack = await connect(hub, "p", clean_start=False)
    assert connack.session_present is False
    await first.send(encode(Disconnect(), 4))
    await first.wait_closed()
    second, connack = await connect(hub, "p", clean_start=False)
    assert connack.session_present is True
    assert await second.receive_exactly(0) == b""
    await second.send(encode(Disconnect(), 4))
    await second.wait_closed()
    _third, connack = await connect(hub, "p", clean_start=True)
    assert connack.session_present is False  # MQTT-3.2.2-1


async def test_03_4_session_present_50_needs_expiry(hub: Hub, connect: Connector) -> None:
    props = Properties(session_expiry_interval=60)
    first, _ = await connect(hub, "s5", level=5, clean_start=False, properties=props)
    await first.send(encode(Disconnect(), 5))
    await first.wait_closed()
    _second, connack = await connect(hub, "s5", level=5, clean_start=False, properties=props)
    assert connack.session_present is True
    # expiry 0 (the default): the session ends with the connection
    third, _ = await connect(hub, "z5", level=5, clean_start=False)
    await third.send(encode(Disconnect(), 5))
    await third.wait_closed()
    _fourth, connack = await connect(hub, "z5", level=5, clean_start=False)
    assert connack.session_present is False


# -- 04 packets before / instead of CONNECT, timeouts -----------------------------------------


async def test_04_1_first_packet_not_connect_closes(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(encode(PingReq(), 4))
    await conn.wait_closed()
    with pytest.raises(ClosedError):
        await conn.receive()


async def test_04_2_connect_timeout(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(anonymous=True, connect_timeout=0.2))
    conn = await hub.connect_memory()
    await conn.send(b"\x10")  # an incomplete CONNECT
    await conn.wait_closed(timeout=3.0)
    assert hub.stats.connections == 0


async def test_04_3_second_connect_closes(hub: Hub, connect: Connector) -> None:
    conn, _ = await connect(hub, "twice")
    await conn.send(raw_connect(4, "MQTT", client_id="twice"))
    await conn.wait_closed()
    assert "twice" not in hub.clients


async def test_04_4_ping(hub: Hub, connect: Connector) -> None:
    conn, _ = await connect(hub, "pinger")
    await conn.send(b"\xc0\x00")
    assert await conn.receive_exactly(2) == b"\xd0\x00"
    await conn.send(encode(PingReq(), 4))
    assert await conn.read_packet(4) == PingResp()


async def test_04_5_keep_alive_timeout(
    make_hub: MakeHub, connect: Connector, clock: SimulatedClock
) -> None:
    hub = await make_hub(HubConfig(anonymous=True, connect_timeout=1.0), clock=clock)
    events: list[HubEvent] = []
    hub.add_listener(events.append)
    conn, _ = await connect(hub, "sleepy", level=5, keep_alive=1)
    await clock.advance_async(1.5)
    assert not conn.closed
    await clock.advance_async(0.5)
    assert await conn.read_packet(5) == Disconnect(0x8D)
    await conn.wait_closed()
    assert [e.reason for e in events if isinstance(e, ClientDisconnected)] == [
        DisconnectReason.KEEP_ALIVE_TIMEOUT
    ]


# -- 05 authentication ------------------------------------------------------------------------


async def test_05_1_not_anonymous_without_authenticator_refuses(
    make_hub: MakeHub, connect: Connector
) -> None:
    hub = await make_hub(HubConfig(anonymous=False))
    conn = await hub.connect_memory()
    await conn.send(raw_connect(4, "MQTT"))
    assert await conn.receive_exactly(4) == b"\x20\x02\x00\x05"
    await conn.wait_closed()
    conn5, connack = await connect(hub, "c", level=5)
    assert connack.reason_code == 0x87
    await conn5.wait_closed()
    assert hub.clients == {}


class _Auth:
    """Accepts user ``good`` with password ``secret``; refuses others with 0x86."""

    def __init__(self) -> None:
        self.requests: list[ConnectRequest] = []

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        self.requests.append(request)
        if request.username == "good" and request.password == b"secret":
            return AuthResult(True, attributes={"device": "dev-1"})
        return AuthResult(False, 0x86)


async def test_05_2_authenticator_accepts_and_attaches_attributes(
    make_hub: MakeHub, connect: Connector
) -> None:
    auth = _Auth()
    hub = await make_hub(HubConfig(), authenticator=auth)
    events: list[HubEvent] = []
    hub.add_listener(events.append)
    _conn, connack = await connect(hub, "dev", username="good", password=b"secret")
    assert connack == ConnAck(False, 0)
    assert auth.requests == [
        ConnectRequest("dev", "good", b"secret", 4, "memory", False, NO_PROPERTIES)
    ]
    info = hub.clients["dev"]
    assert info.attributes == {"device": "dev-1"}
    assert info.username == "good"
    assert events == [ClientConnected(info, False)]


async def test_05_3_authenticator_refuses_both_versions(
    make_hub: MakeHub, connect: Connector
) -> None:
    hub = await make_hub(HubConfig(), authenticator=_Auth())
    conn, connack = await connect(hub, "dev", username="bad", password=b"x")
    assert connack == ConnAck(False, 4)  # 0x86 maps to 3.1.1 return code 4
    await conn.wait_closed()
    conn5, connack5 = await connect(hub, "dev", level=5, username="bad", password=b"x")
    assert connack5.reason_code == 0x86
    await conn5.wait_closed()
    assert hub.clients == {}


async def test_05_4_async_authenticator_and_client_id_override(
    make_hub: MakeHub, connect: Connector
) -> None:
    gate = asyncio.Event()

    class SlowAuth:
        async def authenticate(self, request: ConnectRequest) -> AuthResult:
            await gate.wait()
            return AuthResult(True, client_id="renamed")

    hub = await make_hub(HubConfig(), authenticator=SlowAuth())
    conn = await hub.connect_memory()
    await conn.send(raw_connect(5, "MQTT", client_id="orig"))
    # packets sent while authentication is pending are processed after it, in order
    await conn.send(encode(PingReq(), 5))
    with pytest.raises(TimeoutError):
        await conn.receive(timeout=0.05)
    gate.set()
    connack = await conn.read_packet(5)
    assert isinstance(connack, ConnAck)
    assert connack.properties.assigned_client_identifier == "renamed"
    assert await conn.read_packet(5) == PingResp()
    assert set(hub.clients) == {"renamed"}


async def test_05_5_enhanced_authentication_not_supported(hub: Hub, connect: Connector) -> None:
    conn, connack = await connect(
        hub, "e", level=5, properties=Properties(authentication_method="SCRAM-SHA-1")
    )
    assert connack.reason_code == 0x8C
    await conn.wait_closed()


# -- 06 authorisation -------------------------------------------------------------------------


class _DenyTopicB:
    """Denies publishing to and subscribing under ``b/``."""

    def authorise_publish(self, client: ClientInfo, topic: str, qos: int, retain: bool) -> Decision:
        if topic.startswith("b/"):
            return Decision(False, 0x87, "b is read-only")
        return Decision(True)

    def authorise_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> Decision:
        if topic_filter.startswith("b/"):
            return Decision(False, 0x87, "b is secret")
        return Decision(True)


async def test_06_1_authoriser_denies_publish(make_hub: MakeHub, connect: Connector) -> None:
    hub = await make_hub(HubConfig(anonymous=True), authoriser=_DenyTopicB())
    seen: list[Message] = []
    hub.add_handler(lambda client, message: seen.append(message))
    sub, _ = await connect(hub, "sub", level=5)
    await sub.send(encode(Subscribe(1, (Subscription("#", 1),)), 5))
    assert await sub.read_packet(5) == SubAck(1, (1,))
    pub5, _ = await connect(hub, "pub5", level=5)
    await pub5.send(encode(Publish("b/x", b"1", 1, packet_id=3), 5))
    assert await pub5.read_packet(5) == PubAck(3, 0x87)
    pub4, _ = await connect(hub, "pub4")
    await pub4.send(encode(Publish("b/x", b"1", 1, packet_id=4), 4))
    assert await pub4.receive_exactly(4) == b"\x40\x02\x00\x04"  # acked, then dropped
    await pub4.send(encode(Publish("a/x", b"ok", 0), 4))
    delivered = await sub.read_packet(5)
    assert isinstance(delivered, Publish)
    assert (delivered.topic, delivered.payload) == ("a/x", b"ok")  # nothing from b/x came first
    assert [m.topic for m in seen] == ["a/x"]


async def test_06_2_authoriser_denies_subscribe(make_hub: MakeHub, connect: Connector) -> None:
    hub = await make_hub(HubConfig(anonymous=True), authoriser=_DenyTopicB())
    c4, _ = await connect(hub, "c4")
    await c4.send(encode(Subscribe(7, (Subscription("a/+", 1), Subscription("b/#", 0))), 4))
    assert await c4.receive_exactly(6) == b"\x90\x04\x00\x07\x01\x80"
    c5, _ = await connect(hub, "c5", level=5)
    await c5.send(encode(Subscribe(8, (Subscription("b/#", 0),)), 5))
    assert await c5.read_packet(5) == SubAck(8, (0x87,))
    assert await hub.publish(Message("b/1", b"x")) == 0


# -- 07 lifecycle events and TCP --------------------------------------------------------------


async def test_07_1_events_on_disconnect(hub: Hub, connect: Connector) -> None:
    events: list[HubEvent] = []
    hub.add_listener(events.append)
    conn, _ = await connect(hub, "ev")
    info = hub.clients["ev"]
    await conn.send(encode(Disconnect(), 4))
    await conn.wait_closed()
    assert events == [
        ClientConnected(info, False),
        ClientDisconnected(info, DisconnectReason.CLIENT_DISCONNECT, False),
    ]
    assert hub.clients == {}


async def test_07_2_abrupt_close_is_connection_lost(hub: Hub, connect: Connector) -> None:
    events: list[HubEvent] = []
    hub.add_listener(events.append)
    conn, _ = await connect(hub, "gone")
    gone = asyncio.Event()
    hub.add_listener(lambda e: gone.set() if isinstance(e, ClientDisconnected) else None)
    conn.close()
    await asyncio.wait_for(gone.wait(), 5.0)
    assert isinstance(events[-1], ClientDisconnected)
    assert events[-1].reason is DisconnectReason.CONNECTION_LOST


async def test_07_3_tcp_listener_port_0(hub: Hub) -> None:
    listener = await hub.listen_tcp("127.0.0.1", 0)
    assert listener.port > 0
    assert listener.url == f"mqtt://127.0.0.1:{listener.port}"
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(raw_connect(4, "MQTT", client_id="tcp"))
        assert await asyncio.wait_for(reader.readexactly(4), 5.0) == CONNACK_ACCEPTED
        peer: Mapping[str, ClientInfo] = hub.clients
        assert peer["tcp"].peer.startswith("127.0.0.1:")
        writer.write(encode(Subscribe(1, (Subscription("t", 0),)), 4))
        assert await asyncio.wait_for(reader.readexactly(5), 5.0) == b"\x90\x03\x00\x01\x00"
        writer.write(encode(Publish("t", b"hi"), 4))
        assert await asyncio.wait_for(reader.readexactly(7), 5.0) == b"\x30\x05\x00\x01thi"
        writer.write(b"\xe0\x00")  # DISCONNECT
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    await listener.close()


async def test_07_4_stop_disconnects_50_with_0x8b(make_hub: MakeHub, connect: Connector) -> None:
    hub = await make_hub()
    conn, _ = await connect(hub, "s", level=5)
    await hub.stop()
    assert await conn.read_packet(5) == Disconnect(0x8B)
    await conn.wait_closed()
    with pytest.raises(ClosedError):
        await hub.connect_memory()


async def test_07_5_disconnect_client_kicks(hub: Hub, connect: Connector) -> None:
    conn, _ = await connect(hub, "k", level=5)
    assert await hub.disconnect_client("k", 0x98) is True
    assert await conn.read_packet(5) == Disconnect(0x98)
    await conn.wait_closed()
    assert await hub.disconnect_client("k") is False


async def test_07_6_protocol_violation_affects_only_that_client(
    hub: Hub, connect: Connector
) -> None:
    good, _ = await connect(hub, "good")
    await good.send(encode(Subscribe(1, (Subscription("x", 0),)), 4))
    assert await good.receive_exactly(5) == b"\x90\x03\x00\x01\x00"
    bad, _ = await connect(hub, "bad", level=5)
    await bad.send(b"\x30\x03\x00\x01+")  # wildcard in a topic name
    packet = await bad.read_packet(5)
    assert isinstance(packet, Disconnect)
    assert packet.reason_code >= 0x80
    await bad.wait_closed()
    await hub.publish(Message("x", b"still here"))
    assert await good.receive_exactly(15) == b"\x30\x0d\x00\x01xstill here"


async def test_07_7_connect_packet_is_the_codecs(hub: Hub) -> None:
    conn = await hub.connect_memory()
    await conn.send(encode(Connect("via-codec", 4), 4))
    assert await conn.receive_exactly(4) == CONNACK_ACCEPTED


# -- 08 configuration -------------------------------------------------------------------------


def test_08_1_config_rejects_nonsense() -> None:
    from enos_lab.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="max_inflight"):
        HubConfig(max_inflight=0)
    with pytest.raises(InvalidArgument, match="receive_maximum"):
        HubConfig(receive_maximum=70000)
    with pytest.raises(InvalidArgument, match="connack_delay"):
        HubConfig(connack_delay=-1.0)


async def test_08_2_connack_delay_and_server_keep_alive(
    make_hub: MakeHub, connect: Connector
) -> None:
    hub = await make_hub(HubConfig(anonymous=True, connack_delay=0.05, server_keep_alive=30))
    loop = asyncio.get_running_loop()
    started = loop.time()
    _conn, connack = await connect(hub, "delayed", level=5, keep_alive=600)
    assert loop.time() - started >= 0.05
    assert connack.properties.server_keep_alive == 30
    assert hub.clients["delayed"].keep_alive == 30
