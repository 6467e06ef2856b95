"""Devices over the lab's TLS listener with real clients: the official EnOS SDK (server
authentication and mutual TLS, refused with a revoked, expired, foreign or missing
certificate), gmqtt and paho (protocol reference 2.6)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import gmqtt
import paho.mqtt.client as paho_mqtt
import pytest
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, HubWatch, running_lab, sdk_device, sdk_log, sdk_product

from enos_lab import Lab
from enos_lab.ca import CertificateAuthority
from enos_lab.clock import SimulatedClock
from enos_lab.enos import TopicKind, login_credentials

pytestmark = [
    SDK_WARNINGS,
    # the SDK builds its context with ssl.PROTOCOL_TLS (Profile.create_ssl_context)
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning"),
    pytest.mark.timeout(90),
]

WAIT = 10.0  # [s]


def _files(lab: Lab, folder: Path, product_key: str, device_key: str) -> tuple[Path, Path, Path]:
    """The CA file and the device's certificate chain and key files, for the SDK."""
    issued = lab.apply_certificate(product_key, device_key, key_type="EC")
    chain, key = issued.save(folder)
    assert key is not None
    return lab.ca.ca_certificate_path, chain, key


def _post(sdk: object, value: float) -> int:
    request = MeasurepointPostRequest.builder().add_measurepoint("temp", value).build()
    response = sdk.publish(request)  # type: ignore[attr-defined]
    return int(response.get_code())


def test_the_official_sdk_over_tls_with_the_labs_ca(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=1, tls_port=0) as lab:
        product = sdk_product(lab)
        device = lab.register_device(product.product_key, device_key="m1")
        tls = (lab.ca.ca_certificate_path, None, None)  # server authentication only
        with sdk_device(
            lab, product.product_key, "m1", device_secret=device.device_secret, tls=tls
        ) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            assert _post(sdk, 21.5) == 200
        frame = lab.store.query_points("m1", "temp", product_key=product.product_key)
        assert frame["value"].tolist() == [21.5]


def test_the_official_sdk_with_mutual_tls_and_the_certificates_it_is_refused_with(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(datetime.now(UTC))
    with running_lab(tmp_path / "lab", seed=2, tls_port=0, clock=clock) as lab:
        product = sdk_product(lab, "Secure meter", certificate_required=True)
        pk = product.product_key
        secrets = {dk: lab.register_device(pk, device_key=dk).device_secret for dk in "abcde"}
        watch = HubWatch(lab)
        ca_file, chain, key = _files(lab, tmp_path / "a", pk, "a")
        with sdk_device(lab, pk, "a", device_secret=secrets["a"], tls=(ca_file, chain, key)) as sdk:
            sdk.connect()
            assert sdk.client.is_connected()
            assert watch.wait_connected(pk, "a").client.attributes["certificate"] is not None
            assert _post(sdk, 20.0) == 200

        # refused: no certificate, another device's, revoked, expired on the lab's clock, foreign
        _, chain_b, key_b = _files(lab, tmp_path / "b", pk, "b")
        _, chain_c, key_c = _files(lab, tmp_path / "c", pk, "c")
        lab.revoke_certificate(pk, "c", reason="key_compromise")
        short = lab.apply_certificate(pk, "d", key_type="EC", valid_days=1)
        chain_d, key_d = short.save(tmp_path / "d")
        clock.advance(2 * 86400.0)
        foreign = CertificateAuthority(tmp_path / "other").issue(pk, "e", key_type="EC")
        chain_e, key_e = foreign.save(tmp_path / "e")
        cases = {
            "no certificate": ("a", (ca_file, None, None)),
            "another device's": ("a", (ca_file, chain_b, key_b)),
            "revoked": ("c", (ca_file, chain_c, key_c)),
            "expired": ("d", (ca_file, chain_d, key_d)),
            "foreign": ("e", (ca_file, chain_e, key_e)),
        }
        for name, (dk, tls) in cases.items():
            with (
                sdk_log() as log,
                sdk_device(lab, pk, dk, device_secret=secrets[dk], tls=tls) as sdk,
            ):
                sdk.connect_async()
                if name in {"no certificate", "another device's", "expired"}:
                    assert log.wait_refusals(1) == [5], name  # CONNACK 5 after the handshake
                else:  # the handshake itself fails: the SDK loses the connection
                    log.wait_drops(1)
                assert not sdk.client.is_connected(), name
        assert len(watch.of(pk, "a")) == 2  # the one accepted connection, connected and gone
        for dk in "bcde":
            assert watch.of(pk, dk) == []
        reasons = lab.refused_logins()["reason"].tolist()
        assert any("requires a device certificate" in r for r in reasons)
        assert any(f"belongs to device {pk}/b, not to device {pk}/a" in r for r in reasons)
        assert any(r == "client certificate refused: certificate revoked" for r in reasons)
        assert any(f"of device {pk}/d is valid from" in r for r in reasons)
        assert any(
            r.startswith("client certificate refused: ") and "revoked" not in r for r in reasons
        )


async def _gmqtt_post(lab: Lab, pk: str, dk: str, secret: str, context: object) -> None:
    client_id, username, password = login_credentials(pk, dk, secret, timestamp="1700000000000")
    client = gmqtt.Client(client_id)
    client.set_auth_credentials(username, password)
    replied = asyncio.get_running_loop().create_future()
    client.on_message = lambda *args: replied.done() or replied.set_result(args[2])
    await client.connect(lab.host, lab.tls_port, ssl=context, version=4)
    topic = TopicKind.MEASUREPOINT_POST.format(pk, dk)
    client.subscribe(topic + "_reply", qos=1)
    payload = (
        b'{"id":"1","version":"1.0","method":"thing.measurepoint.post",'
        b'"params":{"measurepoints":{"temp":30.5},"time":1700000000000}}'
    )
    # QoS 0: nothing follows the reply, so disconnecting at once cannot cross a PUBACK (a
    # record arriving after the client's close_notify fails asyncio's TLS shutdown)
    client.publish(topic, payload, qos=0)
    reply = await asyncio.wait_for(replied, WAIT)
    assert b'"code":200' in reply
    await client.disconnect()


def test_gmqtt_and_paho_over_mutual_tls(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=3, tls_port=0) as lab:
        product = sdk_product(lab, "Secure meter", certificate_required=True)
        pk = product.product_key
        g = lab.register_device(pk, device_key="g1")
        p = lab.register_device(pk, device_key="p1")
        context = lab.tls_context(lab.apply_certificate(pk, "g1", key_type="RSA"))
        asyncio.run(_gmqtt_post(lab, pk, "g1", g.device_secret, context))

        client_id, username, password = login_credentials(
            pk, "p1", p.device_secret, timestamp="1700000000000"
        )
        client = paho_mqtt.Client(paho_mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        client.username_pw_set(username, password)
        client.tls_set_context(lab.tls_context(lab.apply_certificate(pk, "p1", key_type="EC")))
        connected = threading.Event()
        codes: list[int] = []
        client.on_connect = lambda c, u, f, rc, props: (codes.append(rc.value), connected.set())
        client.connect("127.0.0.1", lab.tls_port)
        client.loop_start()
        try:
            assert connected.wait(WAIT) and codes == [0]
            info = client.publish(
                TopicKind.MEASUREPOINT_POST.format(pk, "p1"),
                '{"id":"1","version":"1.0","params":{"measurepoints":{"temp":31.5},'
                '"time":1700000001000}}',
                qos=1,
            )
            info.wait_for_publish(WAIT)
        finally:
            client.disconnect()
            client.loop_stop()
        for dk, value in (("g1", 30.5), ("p1", 31.5)):
            frame = lab.store.query_points(dk, "temp", product_key=pk)
            assert frame["value"].tolist() == [value]
