"""The hub's TLS listener (:mod:`enos_lab.hub._tls`) over real sockets on 127.0.0.1.

Clients are asyncio streams with ``ssl`` contexts that send real MQTT packets (the codec's
bytes); the server contexts come from the lab's CA (:class:`enos_lab.ca.ServerContexts`). The
tests check that the client certificate reaches the authenticator, that failed handshakes are
reported with their reason while the hub keeps serving, the bounds (handshake timeout and
handshakes at once), the context looked up per connection (a revocation applies to the next
handshake), the protocol versions and cipher suites offered, and a stop during a handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable
from pathlib import Path

import pytest

from enos_lab.ca import CertificateAuthority, IssuedCertificate, ServerContexts, client_context
from enos_lab.hub import (
    AuthResult,
    ConnectRequest,
    HandshakeFailed,
    Hub,
    HubConfig,
    HubEvent,
)
from enos_lab.mqtt._codec import encode
from enos_lab.mqtt._packets import ConnAck, Connect

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # [s] longest wait for something that must happen
CONNECT = encode(Connect(client_id="c1", clean_start=True, keep_alive=60), 4)
CONNACK_OK = encode(ConnAck(False, 0), 4)


class Recording:
    """An authenticator that accepts everybody and keeps every request it saw."""

    def __init__(self) -> None:
        self.requests: list[ConnectRequest] = []

    def authenticate(self, request: ConnectRequest) -> AuthResult | Awaitable[AuthResult]:
        self.requests.append(request)
        return AuthResult(True)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def contexts(ca: CertificateAuthority) -> ServerContexts:
    return ServerContexts(ca)


async def _tls_hub(
    contexts: ServerContexts, config: HubConfig | None = None
) -> tuple[Hub, Recording, list[HubEvent], int]:
    recording = Recording()
    hub = Hub(config or HubConfig(connect_timeout=5.0), authenticator=recording)
    await hub.start()
    events: list[HubEvent] = []
    hub.add_listener(events.append)
    listener = await hub.listen_tcp("127.0.0.1", 0, ssl=contexts.current)
    assert listener.url.startswith("mqtts://")
    return hub, recording, events, listener.port


async def _mqtt_connect(port: int, context: ssl.SSLContext) -> bytes:
    """CONNECT over TLS; the CONNACK's bytes, or b"" when the hub closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(CONNECT)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(4), WAIT)
        except (ConnectionError, ssl.SSLError):
            return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def _until(condition: object, what: str) -> None:
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _failures(events: list[HubEvent]) -> list[HandshakeFailed]:
    return [event for event in events if isinstance(event, HandshakeFailed)]


# -- 1. the certificate reaches authentication ------------------------------------------------


async def test_1_the_client_certificate_reaches_the_authenticator(
    ca: CertificateAuthority, contexts: ServerContexts
) -> None:
    hub, recording, _events, port = await _tls_hub(contexts)
    try:
        issued = ca.issue("pk1", "dev1", key_type="EC")
        assert await _mqtt_connect(port, client_context(ca.ca_certificate_path)) == CONNACK_OK
        assert await _mqtt_connect(port, client_context(ca.ca_certificate_path, issued)) == (
            CONNACK_OK
        )
        without, with_cert = recording.requests
        assert without.tls and without.certificate is None
        assert with_cert.tls and with_cert.certificate is not None
        check = ca.check(with_cert.certificate, product_key="pk1", device_key="dev1")
        assert check.serial_number == issued.serial_number
    finally:
        await hub.stop()


async def test_1_plain_connections_carry_no_certificate(contexts: ServerContexts) -> None:
    recording = Recording()
    hub = Hub(HubConfig(), authenticator=recording)
    await hub.start()
    try:
        listener = await hub.listen_tcp("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(CONNECT)
        assert await asyncio.wait_for(reader.read(4), WAIT) == CONNACK_OK
        writer.close()
        (request,) = recording.requests
        assert not request.tls and request.certificate is None
    finally:
        await hub.stop()


# -- 2. failed handshakes are reported; the hub keeps serving ----------------------------------


async def test_2_refused_handshakes_are_reported_and_others_still_connect(
    tmp_path: Path, ca: CertificateAuthority, contexts: ServerContexts
) -> None:
    hub, recording, events, port = await _tls_hub(contexts)
    try:
        foreign = CertificateAuthority(tmp_path / "other").issue("pk1", "dev1", key_type="EC")
        assert await _mqtt_connect(port, client_context(ca.ca_certificate_path, foreign)) == b""
        # a client speaking plain MQTT to the TLS port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(CONNECT)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        await _until(lambda: len(_failures(events)) == 2, "two failed handshakes")
        refused_cert, plain = _failures(events)
        assert refused_cert.peer.startswith("127.0.0.1:")
        assert refused_cert.reason.startswith("client certificate refused: ")
        assert "TLS error" in plain.reason
        assert recording.requests == []  # neither reached CONNECT
        # the listener still serves
        assert await _mqtt_connect(port, client_context(ca.ca_certificate_path)) == CONNACK_OK
    finally:
        await hub.stop()


# -- 3. bounds ---------------------------------------------------------------------------------


async def test_3_a_stalled_handshake_times_out_and_excess_handshakes_are_refused(
    ca: CertificateAuthority, contexts: ServerContexts
) -> None:
    config = HubConfig(connect_timeout=0.5, max_tls_handshakes=2)
    hub, _recording, events, port = await _tls_hub(contexts, config)
    try:
        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)  # both accepted, their handshakes waiting for a ClientHello
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed at once
        writer.close()
        await _until(lambda: len(_failures(events)) >= 3, "the refusal and two timeouts")
        reasons = [failure.reason for failure in _failures(events)]
        assert reasons[0] == "refused: 2 TLS handshakes already in progress"
        assert reasons[1:] == ["TLS handshake timed out"] * 2
        for stalled_reader, stalled_writer in stalled:
            assert await asyncio.wait_for(stalled_reader.read(), WAIT) == b""
            stalled_writer.close()
        assert await _mqtt_connect(port, client_context(ca.ca_certificate_path)) == CONNACK_OK
    finally:
        await hub.stop()


# -- 4. the context of each connection ---------------------------------------------------------


async def test_4_a_revocation_applies_from_the_next_handshake(
    ca: CertificateAuthority, contexts: ServerContexts
) -> None:
    hub, _recording, events, port = await _tls_hub(contexts)
    try:
        issued: IssuedCertificate = ca.issue("pk1", "dev1", key_type="RSA")
        device = client_context(ca.ca_certificate_path, issued)
        assert await _mqtt_connect(port, device) == CONNACK_OK
        ca.revoke(issued.serial_number, "key_compromise")
        assert await _mqtt_connect(port, device) == b""
        await _until(lambda: _failures(events), "the refused handshake")
        assert _failures(events)[0].reason == "client certificate refused: certificate revoked"
        # a fresh certificate of the same device passes
        again = ca.issue("pk1", "dev1", key_type="EC")
        assert await _mqtt_connect(port, client_context(ca.ca_certificate_path, again)) == (
            CONNACK_OK
        )
    finally:
        await hub.stop()


# -- 5. protocol versions and cipher suites ----------------------------------------------------


async def test_5_tls_1_2_and_1_3_are_served(
    ca: CertificateAuthority, contexts: ServerContexts
) -> None:
    hub, _recording, _events, port = await _tls_hub(contexts)
    try:
        for version, name in (
            (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
            (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
        ):
            context = client_context(ca.ca_certificate_path)
            context.minimum_version = context.maximum_version = version
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            assert writer.get_extra_info("ssl_object").version() == name
            writer.write(CONNECT)
            assert await asyncio.wait_for(reader.read(4), WAIT) == CONNACK_OK
            writer.close()
    finally:
        await hub.stop()


async def test_5_tls_1_2_without_forward_secrecy_is_refused(
    ca: CertificateAuthority, contexts: ServerContexts
) -> None:
    hub, _recording, events, port = await _tls_hub(contexts)
    try:
        context = client_context(ca.ca_certificate_path)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("AES128-GCM-SHA256:AES256-SHA")  # RSA key exchange only
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection("127.0.0.1", port, ssl=context)
        await _until(lambda: _failures(events), "the refused handshake")
        assert "no shared cipher" in _failures(events)[0].reason
    finally:
        await hub.stop()


# -- 6. stopping -------------------------------------------------------------------------------


async def test_6_stopping_the_hub_during_a_handshake_closes_it(
    contexts: ServerContexts,
) -> None:
    hub, _recording, _events, port = await _tls_hub(contexts)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(hub.stop(), WAIT)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()
