"""Device SDK logins against a real lab over TCP: device secret, dynamic activation (the issued
secret kept and used for every later login), refusals, and connections that cannot be made
(protocol reference 2, 3)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from device_helpers import TIMEOUT, PresenceWatch, Products, kick, sessions, wait_until
from enos_sdk_helpers import running_lab

from enos_lab import Lab
from enos_lab.device import DeviceClient
from enos_lab.errors import (
    AuthenticationError,
    ClosedError,
    InvalidArgument,
    LoginRefused,
    NotConnected,
    RequestTimeout,
)
from enos_lab.iothub import IotHubConfig
from enos_lab.tap import DeviceLoggedIn

CONNACK_NOT_AUTHORISED = 5


async def test_login_with_the_device_secret(lab: Lab, products: Products) -> None:
    device = lab.register_device(products.meter, device_key="m1")
    watch = PresenceWatch(lab)
    client = DeviceClient(lab.host, lab.port, products.meter, "m1", device.device_secret)
    assert not client.connected and not client.active
    await client.connect()
    try:
        assert client.connected and client.active
        assert lab.is_online(products.meter, "m1")
        [(client_id, mode)] = await sessions(lab, products.meter, "m1")
        assert mode == 2
        assert client_id.startswith("m1|securemode=2,signmethod=hmacsha256,timestamp=")
        await client.connect()  # already connected: nothing
        assert len(await sessions(lab, products.meter, "m1")) == 1
    finally:
        await client.disconnect()
    assert not client.connected and not client.active
    assert await watch.reasons(products.meter, "m1", 2) == ["connected", "disconnected"]
    assert not lab.is_online(products.meter, "m1")
    watch.close()
    await client.disconnect()  # idempotent


async def test_a_chosen_client_id_and_the_async_context_manager(
    lab: Lab, products: Products
) -> None:
    device = lab.register_device(products.meter, device_key="m2")
    async with DeviceClient(
        lab.host, lab.port, products.meter, "m2", device.device_secret, client_id="m2.box"
    ) as client:
        assert client.connected
        [(client_id, _)] = await sessions(lab, products.meter, "m2")
        assert client_id.startswith("m2.box|securemode=2,")
    assert not client.connected


async def test_a_refused_login_raises_login_refused_with_the_return_code(
    lab: Lab, products: Products
) -> None:
    lab.register_device(products.meter, device_key="m3")
    client = DeviceClient(lab.host, lab.port, products.meter, "m3", "not-the-secret")
    with pytest.raises(LoginRefused) as caught:
        await client.connect()
    assert caught.value.code == CONNACK_NOT_AUTHORISED
    assert caught.value.reason == "not authorised"
    assert isinstance(caught.value, AuthenticationError)
    assert f"{products.meter}/m3" in str(caught.value)
    assert not client.active and not client.connected
    refused = lab.refused_logins(products.meter, "m3")
    assert len(refused) == 1
    with pytest.raises(ClosedError, match="connect"):
        await client.post_measurepoints({"temp": 1.0})


async def test_no_listener_raises_not_connected() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        client = DeviceClient("127.0.0.1", port, "pk", "dk", "secret")
        with pytest.raises(NotConnected, match=f"127.0.0.1:{port}"):
            await client.connect()
    assert not client.active


async def test_no_connack_raises_request_timeout() -> None:
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = DeviceClient("127.0.0.1", port, "pk", "dk", "secret", timeout=0.2)
        with pytest.raises(RequestTimeout, match="no CONNACK"):
            await client.connect()
        await wait_until(accepted, "the TCP connection")
        assert not client.active
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_closed_before_its_connack_raises_not_connected_at_once() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the CONNECT arrives; no CONNACK
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = DeviceClient("127.0.0.1", port, "pk", "dk", "secret", timeout=60.0)
        with pytest.raises(NotConnected, match="before its CONNACK"):
            await asyncio.wait_for(client.connect(), TIMEOUT)  # not after its 60 s timeout
        assert not client.active
    finally:
        server.close()
        await server.wait_closed()


async def test_dynamic_activation_keeps_the_issued_secret_for_every_later_login(
    lab: Lab, products: Products
) -> None:
    product = lab.create_product("Dynamic", dynamic_activation=True)
    lab.register_device(product.product_key, device_key="d1")
    issued: list[str] = []
    kept = asyncio.Event()

    async def keep(secret: str) -> None:
        issued.append(secret)
        kept.set()

    client = DeviceClient(
        lab.host,
        lab.port,
        product.product_key,
        "d1",
        product_secret=product.product_secret,
        timeout=TIMEOUT,
    )
    client.on_secret_issued = keep
    await client.connect()
    try:
        record = lab.device(product.product_key, "d1")
        assert client.device_secret == record.device_secret
        assert record.activated_at is not None and record.online
        # the activation session is closed; the device is logged in with its new secret
        [(_, mode)] = await sessions(lab, product.product_key, "d1")
        assert mode == 2
        reply = await client.post_measurepoints({"anything": 1.5}, 1_700_000_000_000)
        assert reply.ok
        await wait_until(kept, "on_secret_issued")  # an async callback: a task of the client
        assert issued == [record.device_secret]
        await client.disconnect()
        await client.connect()  # logs in with the kept secret: no second activation
        [(_, mode)] = await sessions(lab, product.product_key, "d1")
        assert mode == 2
        assert lab.device(product.product_key, "d1").device_secret == record.device_secret
        assert issued == [record.device_secret]
    finally:
        await client.disconnect()
    points = lab.store.query_points("d1", "anything", product_key=product.product_key)
    assert points["value"].tolist() == [1.5]


async def test_activation_of_an_activated_device_is_refused(lab: Lab, products: Products) -> None:
    product = lab.create_product("Dynamic", dynamic_activation=True)
    device = lab.register_device(product.product_key, device_key="d2")
    async with DeviceClient(lab.host, lab.port, product.product_key, "d2", device.device_secret):
        pass  # a static login activates the device
    client = DeviceClient(
        lab.host, lab.port, product.product_key, "d2", product_secret=product.product_secret
    )
    with pytest.raises(LoginRefused) as caught:
        await client.connect()
    assert caught.value.code == CONNACK_NOT_AUTHORISED
    assert client.device_secret is None


async def test_no_activate_info_in_time_raises_request_timeout(tmp_path: Path) -> None:
    config = IotHubConfig(activation_delay=30.0)  # the hub pushes the secret too late
    with running_lab(tmp_path / "lab", seed=3, iothub_config=config) as lab:
        product = lab.create_product("Dynamic", dynamic_activation=True)
        lab.register_device(product.product_key, device_key="d3")
        client = DeviceClient(
            lab.host,
            lab.port,
            product.product_key,
            "d3",
            product_secret=product.product_secret,
            timeout=0.3,
        )
        with pytest.raises(RequestTimeout, match="activate/info"):
            await client.connect()
        assert client.device_secret is None and not client.active


async def test_an_activation_connection_closed_by_the_hub_raises_not_connected(
    tmp_path: Path,
) -> None:
    config = IotHubConfig(activation_delay=30.0)
    with running_lab(tmp_path / "lab", seed=4, iothub_config=config) as lab:
        product = lab.create_product("Dynamic", dynamic_activation=True)
        lab.register_device(product.product_key, device_key="d4")
        client = DeviceClient(
            lab.host, lab.port, product.product_key, "d4", product_secret=product.product_secret
        )
        with lab.subscribe(DeviceLoggedIn, product_key=product.product_key) as logins:
            connecting = asyncio.create_task(client.connect())
            login = await asyncio.wait_for(logins.aget(), TIMEOUT)
            assert isinstance(login, DeviceLoggedIn) and login.secure_mode == 3
        await kick(lab, product.product_key, "d4")
        with pytest.raises(NotConnected, match="activation"):
            await asyncio.wait_for(connecting, TIMEOUT)
        assert client.device_secret is None and not client.active


def test_a_client_needs_a_secret_and_sane_settings() -> None:
    with pytest.raises(InvalidArgument, match="device_secret"):
        DeviceClient("127.0.0.1", 1, "pk", "dk")
    with pytest.raises(InvalidArgument, match="timeout"):
        DeviceClient("127.0.0.1", 1, "pk", "dk", "s", timeout=0)
    with pytest.raises(InvalidArgument, match="product key"):
        DeviceClient("127.0.0.1", 1, "", "dk", "s")
    with pytest.raises(InvalidArgument, match="in flight"):
        DeviceClient("127.0.0.1", 1, "pk", "dk", "s", max_in_flight=0)
