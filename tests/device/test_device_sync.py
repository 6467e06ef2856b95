"""The synchronous device (``Device``) for scripts and notebooks, over real TCP: blocking
methods with the coroutines' signatures, handlers on the device's own loop thread, gateways
and sub-devices, SHORT mode sessions."""

from __future__ import annotations

import inspect
import threading

import pytest
from device_helpers import TIMEOUT, Products

from enos_lab import Lab, TopicKind
from enos_lab.device import (
    ConnectionMode,
    Device,
    DeviceClient,
    Endpoint,
    SubDevice,
    SyncSubDevice,
)
from enos_lab.device._gateway import Gateway
from enos_lab.device._requests import Requests
from enos_lab.errors import ClosedError, RequestFailed

T0 = 1_700_000_000_000  # [ms]


def test_a_device_posts_and_answers_commands_from_plain_code(lab: Lab, products: Products) -> None:
    record = lab.register_device(products.meter, device_key="m1")
    device = Device(lab.host, lab.port, products.meter, "m1", record.device_secret)
    with pytest.raises(ClosedError, match="connect"):
        device.post_measurepoints({"temp": 1.0})
    loop_thread = f"enos-device-{products.meter}/m1"  # the device's own event loop
    with device:
        assert device.connected and device.active
        assert device.post_measurepoints({"temp": 21.5}, T0).ok
        device.post_event("overheat", {"temp": 80.0}, T0)
        device.update_attributes({"site": "north"})
        assert device.query_attributes(["site"]) == {"site": "north"}
        with pytest.raises(RequestFailed) as caught:
            device.post_measurepoints({"nope": 1.0}, T0)
        assert caught.value.code == 1204
        # handlers run on the device's thread: the lab's blocking facade can wait for them
        device.on_measurepoint_get(lambda ids: {point: 3.5 for point in ids})
        reply = lab.send_command(products.meter, "m1", TopicKind.MEASUREPOINT_GET, ["temp"])
        assert reply is not None and reply.data == {"temp": 3.5}
        # a handler that calls back into the blocking device would wait for its own thread
        device.on_service("again", lambda params: device.post_measurepoints({"temp": 1.0}))
        reply = lab.send_command(
            products.meter, "m1", TopicKind.SERVICE_INVOKE, {}, item_id="again"
        )
        assert reply is not None and reply.code == 500 and "deadlock" in reply.message
        assert device.stats.sent == 5 and device.stats.commands == 2
        assert loop_thread in {thread.name for thread in threading.enumerate()}
    assert not device.connected and not device.active
    assert loop_thread not in {thread.name for thread in threading.enumerate()}  # it ended
    device.disconnect()  # idempotent
    points = lab.store.query_points("m1", "temp", product_key=products.meter)
    assert points["value"].tolist() == [21.5]


def test_blocking_methods_have_the_signatures_and_docs_of_the_coroutines() -> None:
    coroutines = {
        name: member
        for cls in (Endpoint, Gateway, Requests, DeviceClient)
        for name, member in vars(cls).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }
    for name, coroutine in coroutines.items():
        if name in {"connect", "disconnect", "login_sub_device"}:
            continue  # written out (they start the thread, or return a SyncSubDevice)
        blocking = getattr(Device, name)
        assert not inspect.iscoroutinefunction(blocking), name
        assert inspect.signature(blocking) == inspect.signature(coroutine), name
        assert (coroutine.__doc__ or "") in (blocking.__doc__ or ""), name
    assert set(inspect.signature(Device).parameters) == set(
        inspect.signature(DeviceClient).parameters
    )
    assert inspect.signature(Device.login_sub_device).parameters.keys() == (
        inspect.signature(DeviceClient.login_sub_device).parameters.keys()
    )
    for name in ("post_measurepoints", "on_service", "logout"):
        assert inspect.signature(getattr(SyncSubDevice, name)) == inspect.signature(
            getattr(SubDevice, name)
        )


def test_a_gateway_and_its_sub_devices_from_plain_code(lab: Lab, products: Products) -> None:
    gateway = lab.register_device(products.gateway, device_key="gw")
    secret = lab.register_device(products.sub, device_key="s1").device_secret
    lab.registry.attach((products.gateway, "gw"), (products.sub, "s1"))
    with Device(
        lab.host, lab.port, products.gateway, "gw", gateway.device_secret, timeout=TIMEOUT
    ) as device:
        assert device.get_topology() == [(products.sub, "s1")]
        sub = device.login_sub_device(products.sub, "s1", secret)
        assert isinstance(sub, SyncSubDevice) and sub is device.sub_device(products.sub, "s1")
        assert sub.logged_in and sub.device_secret == secret and sub.gateway is device
        assert sub.sub_device is device.client.sub_device(products.sub, "s1")
        sub.post_measurepoints({"temp": 7.0}, T0)
        sub.on_measurepoint_set(lambda values: None)
        reply = lab.send_command(products.sub, "s1", TopicKind.MEASUREPOINT_SET, {"temp": 1})
        assert reply is not None and reply.code == 200
        assert device.logged_in_sub_devices == [(products.sub, "s1")]
        sub.logout()
        assert not sub.logged_in
    points = lab.store.query_points("s1", "temp", product_key=products.sub)
    assert points["value"].tolist() == [7.0]


def test_dynamic_activation_and_short_sessions_from_plain_code(lab: Lab) -> None:
    product = lab.create_product("Dynamic", dynamic_activation=True)
    lab.register_device(product.product_key, device_key="d1")
    issued: list[str] = []
    device = Device(
        lab.host,
        lab.port,
        product.product_key,
        "d1",
        product_secret=product.product_secret,
        mode=ConnectionMode.SHORT,
        timeout=TIMEOUT,
    )
    device.on_secret_issued = issued.append
    assert device.on_secret_issued == issued.append
    with device:
        assert device.device_secret == lab.device(product.product_key, "d1").device_secret
        assert issued == [device.device_secret]
        assert not device.connected  # SHORT: connected only during operations
        with device.session():
            assert device.connected
            device.post_measurepoints({"x": 1.0}, T0)
            device.post_measurepoints({"x": 2.0}, T0 + 1)
        assert not device.connected
    points = lab.store.query_points("d1", "x", product_key=product.product_key)
    assert points["value"].tolist() == [1.0, 2.0]
