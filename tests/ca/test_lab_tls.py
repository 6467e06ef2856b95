"""The lab's TLS listener with the lab's own device SDK over real TCP: revocation closing a live
connection, renewal, TLS only (plain TCP off), certificate products on the plain listener,
restart with the same CA, and devices that attack each other over TLS."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enos_lab import Device, Lab, SimulatedClock
from enos_lab.ca import IssuedCertificate
from enos_lab.errors import DeviceError, InvalidArgument, LoginRefused, NotFound
from enos_lab.lab import DEFAULT_TLS_PORT

pytestmark = pytest.mark.timeout(90)

WAIT = 10.0  # [s]


def _lab(data_dir: Path | None = None, **kwargs: object) -> Lab:
    kwargs.setdefault("port", 0)
    kwargs.setdefault("tls_port", 0)
    return Lab(data_dir, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


def _device(
    lab: Lab,
    pk: str,
    dk: str,
    certificate: IssuedCertificate | tuple[Path, Path] | None = None,
    secret: str | None = None,
) -> Device:
    return Device(
        lab.host,
        lab.tls_port,
        pk,
        dk,
        secret or lab.device(pk, dk).device_secret,
        ssl=lab.tls_context(certificate),
        reconnect=None,
        timeout=WAIT,
    )


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _reasons(lab: Lab) -> list[str]:
    return [str(reason) for reason in lab.refused_logins()["reason"]]


def _secure_product(lab: Lab, *device_keys: str) -> str:
    pk = lab.create_product("Secure", certificate_required=True).product_key
    for dk in device_keys:
        lab.register_device(pk, device_key=dk)
    return pk


def test_revoking_a_certificate_closes_the_connection_that_logged_in_with_it() -> None:
    with _lab() as lab:
        pk = _secure_product(lab, "a", "b")
        cert_a = lab.apply_certificate(pk, "a", key_type="EC")
        cert_b = lab.apply_certificate(pk, "b", key_type="RSA")
        with _device(lab, pk, "a", cert_a) as a, _device(lab, pk, "b", cert_b) as b:
            assert a.connected
            revoked = lab.revoke_certificate(pk, "a", reason="key_compromise")
            assert revoked == [cert_a.serial_number]
            _until(lambda: not lab.device(pk, "a").online, "the revoked device to go offline")
            assert lab.presence(pk, "a")["reason"].iloc[-1] == "certificate revoked"
            assert b.connected and lab.device(pk, "b").online  # the other device is untouched
        # it cannot come back with that certificate: refused in the handshake
        with pytest.raises(DeviceError):
            _device(lab, pk, "a", cert_a).connect()
        assert "client certificate refused: certificate revoked" in _reasons(lab)
        frame = lab.certificates(pk, "a")
        assert frame["status"].tolist() == ["revoked"]
        assert frame["revocation_reason"].tolist() == ["key_compromise"]


def test_a_renewed_certificate_keeps_the_key_and_the_old_one_works_until_revoked(
    tmp_path: Path,
) -> None:
    with _lab() as lab:
        pk = _secure_product(lab, "a")
        old = lab.apply_certificate(pk, "a", key_type="EC")
        old_chain, key = old.save(tmp_path / "old")
        assert key is not None
        renewed = lab.renew_certificate(pk, "a", old.serial_number, valid_days=30)
        assert renewed.private_key is None  # the device keeps its key
        assert renewed.serial_number != old.serial_number
        new_chain, _ = renewed.save(tmp_path / "new")
        with _device(lab, pk, "a", (new_chain, key)):
            pass
        with _device(lab, pk, "a", (old_chain, key)):  # the old one is still valid
            pass
        again = lab.renew_certificate(pk, "a", renewed.serial_number, revoke_old=True)
        assert lab.certificates(pk, "a")["status"].tolist() == ["valid", "revoked", "valid"]
        with pytest.raises(InvalidArgument, match="revoked"):
            lab.renew_certificate(pk, "a", renewed.serial_number)
        with pytest.raises(NotFound):
            lab.renew_certificate(pk, "a", "abc123")
        third_chain, _ = again.save(tmp_path / "third")
        with _device(lab, pk, "a", (third_chain, key)) as device:
            assert device.connected


def test_tls_only_a_lab_without_plain_tcp() -> None:
    with pytest.raises(InvalidArgument, match="needs a listener"):
        Lab(port=None, tls_port=None)
    with _lab(port=None) as lab:
        assert lab.tls_url.startswith("mqtts://127.0.0.1:")
        with pytest.raises(InvalidArgument, match="no plain TCP listener"):
            _ = lab.port
        assert "mqtts://" in repr(lab) and "mqtt://" not in repr(lab).replace("mqtts://", "")
        pk = lab.create_product("Plain").product_key
        lab.register_device(pk, device_key="d1")
        with _device(lab, pk, "d1") as device:  # a secret login over TLS, no certificate
            assert device.connected
    assert DEFAULT_TLS_PORT == 18883
    with Lab(port=0) as lab, pytest.raises(InvalidArgument, match="no TLS listener"):
        _ = lab.tls_port


def test_a_certificate_product_is_refused_on_the_plain_listener() -> None:
    with _lab() as lab:
        pk = _secure_product(lab, "a")
        device = Device(
            lab.host, lab.port, pk, "a", lab.device(pk, "a").device_secret, reconnect=None
        )
        with pytest.raises(LoginRefused):
            device.connect()
        assert f"product {pk!r} requires TLS (EnOS 746)" in _reasons(lab)


def test_a_restarted_lab_keeps_its_ca_and_the_devices_certificates(tmp_path: Path) -> None:
    with _lab(tmp_path / "lab") as lab:
        pk = _secure_product(lab, "a")
        issued = lab.apply_certificate(pk, "a", key_type="EC")
        ca_pem = lab.ca_certificate()
    with _lab(tmp_path / "lab") as lab:
        assert lab.ca_certificate() == ca_pem
        with _device(lab, pk, "a", issued) as device:
            assert device.connected


def test_a_stolen_secret_with_another_devices_certificate_cannot_take_over_a_device() -> None:
    with _lab() as lab:
        pk = _secure_product(lab, "victim", "attacker")
        victim_cert = lab.apply_certificate(pk, "victim", key_type="EC")
        attacker_cert = lab.apply_certificate(pk, "attacker", key_type="EC")
        secret = lab.device(pk, "victim").device_secret
        with _device(lab, pk, "victim", victim_cert) as victim:
            # the attacker knows the victim's secret and holds a valid certificate of its own
            with pytest.raises(LoginRefused):
                _device(lab, pk, "victim", attacker_cert, secret=secret).connect()
            # garbage and plain MQTT on the TLS port
            for junk in (b"\x16\x03\x01\x00\x05hello", b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"):
                with socket.create_connection((lab.host, lab.tls_port), timeout=WAIT) as sock:
                    sock.sendall(junk)
                    assert sock.recv(1024) is not None  # the hub answers with an alert or EOF
            assert victim.connected and lab.device(pk, "victim").online
        reasons = _reasons(lab)
        assert any(
            f"belongs to device {pk}/attacker, not to device {pk}/victim" in r for r in reasons
        )
        assert lab.presence(pk, "victim")["reason"].tolist() == ["connected", "disconnected"]


def test_an_anonymous_broker_over_tls_only() -> None:
    with Lab(port=None, tls_port=0, anonymous=True) as lab:
        assert repr(lab) == f"<Lab anonymous url={lab.tls_url!r}>"
        with socket.create_connection((lab.host, lab.tls_port), timeout=WAIT) as raw:
            context = lab.tls_context()
            with context.wrap_socket(raw, server_hostname=lab.host) as tls:
                tls.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # CONNECT, id ""
                assert tls.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted


def test_a_connection_is_closed_when_its_certificate_expires_on_the_labs_clock() -> None:
    clock = SimulatedClock(datetime.now(UTC))
    with _lab(clock=clock) as lab:
        pk = _secure_product(lab, "short", "long")
        short = lab.apply_certificate(pk, "short", key_type="EC", valid_days=1)
        long = lab.apply_certificate(pk, "long", key_type="EC", valid_days=30)
        devices = [
            Device(
                lab.host,
                lab.tls_port,
                pk,
                dk,
                lab.device(pk, dk).device_secret,
                ssl=lab.tls_context(cert),
                reconnect=None,
                keepalive=0,  # the hub's keep alive runs on the simulated clock too
            )
            for dk, cert in (("short", short), ("long", long))
        ]
        for device in devices:
            device.connect()
        lab.run(clock.advance_async(timedelta(hours=23)))
        assert lab.device(pk, "short").online
        lab.run(clock.advance_async(timedelta(hours=2)))
        _until(lambda: not lab.device(pk, "short").online, "the expired device to go offline")
        assert lab.presence(pk, "short")["reason"].iloc[-1] == "certificate expired"
        assert lab.device(pk, "long").online
        for device in devices:
            device.disconnect()
