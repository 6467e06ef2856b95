"""Credential rotation on the Lab facade, with real logins over TCP (the lab's device SDK and
raw MQTT connections): a new device secret, the old one refused, the live connection (or a
sub-device's login through its gateway) closed; a new product secret for dynamic activation
and integration channels."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from enos_sdk_helpers import running_lab

from enos_lab import Lab
from enos_lab.device import DeviceClient
from enos_lab.enos import ReplyCode, SecureMode, login_credentials
from enos_lab.errors import ClosedError, LoginRefused, NotFound, RequestFailed
from enos_lab.mqtt import ConnAck, Connect, Decoder, encode

WAIT = 5.0  # [s] bound of every wait for the hub
CONNACK_NOT_AUTHORISED = 5


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A started lab on 127.0.0.1 (free port) with seeded keys."""
    with running_lab(tmp_path / "lab", seed=15) as running:
        yield running


def _closed_event(client: DeviceClient) -> asyncio.Event:
    closed = asyncio.Event()
    client.on_disconnect = closed.set
    return closed


async def _refused(client: DeviceClient) -> LoginRefused:
    with pytest.raises(LoginRefused) as caught:
        await client.connect()
    assert caught.value.code == CONNACK_NOT_AUTHORISED
    return caught.value


async def test_a_rotated_device_secret_closes_the_connection_and_refuses_the_old_one(
    lab: Lab,
) -> None:
    pk = lab.create_product("Meters").product_key
    old = lab.register_device(pk, device_key="m1").device_secret
    client = DeviceClient(lab.host, lab.port, pk, "m1", old, reconnect=None, timeout=WAIT)
    closed = _closed_event(client)
    await client.connect()
    try:
        new = await lab.arotate_device_secret(pk, "m1")
        assert new != old and lab.device(pk, "m1").device_secret == new
        # the facade returns once the hub has closed the connection
        assert not lab.is_online(pk, "m1")
        assert lab.presence(pk, "m1")["reason"].tolist() == ["connected", "secret rotated"]
        await asyncio.wait_for(closed.wait(), WAIT)
    finally:
        await client.disconnect()

    await _refused(DeviceClient(lab.host, lab.port, pk, "m1", old, reconnect=None))
    refused = await lab.arefused_logins(pk, "m1")
    assert refused["reason"].tolist() == ["signature does not match the device secret"]
    async with DeviceClient(lab.host, lab.port, pk, "m1", new, reconnect=None) as again:
        assert again.connected and lab.is_online(pk, "m1")


async def test_without_disconnect_the_live_connection_stays(lab: Lab) -> None:
    pk = lab.create_product("Meters").product_key
    old = lab.register_device(pk, device_key="m2").device_secret
    async with DeviceClient(lab.host, lab.port, pk, "m2", old, reconnect=None) as client:
        new = lab.rotate_device_secret(pk, "m2", disconnect=False)
        assert client.connected and lab.is_online(pk, "m2")
        await _refused(DeviceClient(lab.host, lab.port, pk, "m2", old, reconnect=None))
        assert lab.device(pk, "m2").device_secret == new
    with pytest.raises(NotFound, match="nope"):
        lab.rotate_device_secret(pk, "nope")
    with pytest.raises(NotFound, match="nope"):
        lab.rotate_product_secret("nope")


async def test_a_sub_device_is_logged_out_of_its_gateway(lab: Lab) -> None:
    gw_pk = lab.create_product("Gateway", node_type="gateway").product_key
    sub_pk = lab.create_product("Sub meter", node_type="sub_device").product_key
    gw_secret = lab.register_device(gw_pk, device_key="gw").device_secret
    old = lab.register_device(sub_pk, device_key="s1").device_secret
    lab.registry.attach((gw_pk, "gw"), (sub_pk, "s1"))
    async with DeviceClient(lab.host, lab.port, gw_pk, "gw", gw_secret, timeout=WAIT) as gateway:
        await gateway.login_sub_device(sub_pk, "s1", old)
        assert lab.is_online(sub_pk, "s1")
        new = await lab.arotate_device_secret(sub_pk, "s1")
        assert not lab.is_online(sub_pk, "s1") and lab.is_online(gw_pk, "gw")
        assert lab.presence(sub_pk, "s1")["reason"].tolist() == ["connected", "secret rotated"]
        with pytest.raises(RequestFailed) as caught:
            await gateway.login_sub_device(sub_pk, "s1", old)
        assert caught.value.code == ReplyCode.SUB_DEVICE_SIGN_CHECK_FAILED
        await gateway.login_sub_device(sub_pk, "s1", new)
        assert lab.is_online(sub_pk, "s1") and gateway.connected


async def _raw_login(
    lab: Lab, product_key: str, device_key: str, secret: str, mode: SecureMode
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A CONNECT signed with ``secret`` in ``mode``; returns the stream and the return code."""
    client_id, username, password = login_credentials(
        product_key, device_key, secret, secure_mode=mode, timestamp="1700000000000"
    )
    reader, writer = await asyncio.open_connection(lab.host, lab.port)
    writer.write(encode(Connect(client_id, 4, "MQTT", True, 60, username, password.encode()), 4))
    decoder = Decoder(role="client", protocol_level=4)
    async with asyncio.timeout(WAIT):
        packets: list[object] = []
        while not packets:
            data = await reader.read(65536)
            assert data, "the hub closed the connection before CONNACK"
            packets.extend(decoder.feed(data))
    connack = packets[0]
    assert isinstance(connack, ConnAck)
    return reader, writer, connack.reason_code


async def test_a_rotated_product_secret_serves_dynamic_activation_and_closes_channels(
    lab: Lab,
) -> None:
    product = lab.create_product("Dynamic", dynamic_activation=True)
    pk, old = product.product_key, product.product_secret
    lab.register_device(pk, device_key="d1")
    lab.register_device(pk, device_key="d2")
    static = lab.register_device(pk, device_key="d3").device_secret
    # an integration channel (secure mode 4) and a device with its own secret, both live
    reader, writer, code = await _raw_login(lab, pk, "%channel%", old, SecureMode.INTEGRATION)
    assert code == 0
    async with DeviceClient(lab.host, lab.port, pk, "d3", static, reconnect=None) as device:
        new = await lab.arotate_product_secret(pk)
        assert new != old and lab.product(pk).product_secret == new
        async with asyncio.timeout(WAIT):
            assert await reader.read(65536) == b""  # the channel was closed
        assert device.connected and lab.is_online(pk, "d3")  # its own secret: it stays
    writer.close()
    await writer.wait_closed()

    # dynamic activation with the old product secret is refused, with the new one it works
    activating = DeviceClient(lab.host, lab.port, pk, "d1", product_secret=old, reconnect=None)
    await _refused(activating)
    refused = await lab.arefused_logins(pk, "d1")
    assert refused["reason"].tolist() == ["signature does not match the product secret"]
    client = DeviceClient(lab.host, lab.port, pk, "d1", product_secret=new, timeout=WAIT)
    await client.connect()
    try:
        assert client.device_secret == lab.device(pk, "d1").device_secret
    finally:
        await client.disconnect()
    _, writer, code = await _raw_login(lab, pk, "%channel%", old, SecureMode.INTEGRATION)
    assert code == CONNACK_NOT_AUTHORISED
    writer.close()
    await writer.wait_closed()
    _, writer, code = await _raw_login(lab, pk, "%channel%", new, SecureMode.INTEGRATION)
    assert code == 0
    writer.close()
    await writer.wait_closed()


def test_rotation_works_on_an_anonymous_lab_and_shows_its_signature(tmp_path: Path) -> None:
    with running_lab(tmp_path / "anon", seed=16, anonymous=True) as lab:
        product = lab.create_product("Meters", dynamic_activation=True)
        old = lab.register_device(product.product_key, device_key="m1").device_secret
        new = lab.rotate_device_secret(product.product_key, "m1")
        assert new != old and lab.device(product.product_key, "m1").device_secret == new
        fresh = lab.rotate_product_secret(product.product_key)
        assert fresh != product.product_secret
        assert lab.export_credentials()["product_secret"].tolist() == [fresh]
    with pytest.raises(ClosedError):  # like the rest of provisioning: a running lab
        lab.rotate_device_secret(product.product_key, "m1")
    for name in ("rotate_device_secret", "rotate_product_secret"):
        sync, coro = getattr(Lab, name), getattr(Lab, "a" + name)
        assert inspect.signature(coro) == inspect.signature(sync)
        assert inspect.iscoroutinefunction(coro)
    assert "disconnect" in inspect.signature(Lab.arotate_device_secret).parameters
