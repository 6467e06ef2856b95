"""The Lab facade: background loop thread, sync and async forms, data directory handling."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from enos_lab import IotHubConfig, Lab, SimulatedClock, TopicKind
from enos_lab.enos import SecureMode, login_credentials
from enos_lab.errors import ClosedError, InvalidArgument
from enos_lab.lab import plain_tcp_warning
from enos_lab.mqtt import Connect, encode

# MQTT 3.1.1 CONNECT, client id "lab-test", clean session, keep-alive 60 s.
CONNECT_311 = bytes.fromhex("101400044d5154540402003c00086c61622d74657374")
CONNACK_ACCEPTED = bytes.fromhex("20020000")
CONNACK_NOT_AUTHORIZED = bytes.fromhex("20020005")
# SUBSCRIBE packet id 1, filter "demo/#" at QoS 0.
SUBSCRIBE = bytes.fromhex("820b00010006") + b"demo/#" + b"\x00"
SUBACK = bytes.fromhex("9003000100")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _connect(lab: Lab) -> socket.socket:
    sock = socket.create_connection((lab.host, lab.port), timeout=5)
    sock.sendall(CONNECT_311)
    return sock


def test_anonymous_lab_accepts_clients_and_publishes_from_the_hub_side() -> None:
    with Lab(port=0, anonymous=True) as lab:
        assert lab.port > 0
        assert lab.url == f"mqtt://127.0.0.1:{lab.port}"
        with _connect(lab) as sock:
            assert _recv_exactly(sock, 4) == CONNACK_ACCEPTED
            sock.sendall(SUBSCRIBE)
            assert _recv_exactly(sock, 5) == SUBACK
            assert lab.publish("demo/hello", "world") == 1
            expected = b"\x30\x11\x00\x0a" + b"demo/hello" + b"world"
            assert _recv_exactly(sock, len(expected)) == expected


def test_lab_without_anonymous_refuses_unknown_clients() -> None:
    with Lab(port=0) as lab, _connect(lab) as sock:
        assert _recv_exactly(sock, 4) == CONNACK_NOT_AUTHORIZED
        assert sock.recv(1) == b""  # the hub closes the connection after refusing


def test_temporary_data_dir_is_removed_on_stop() -> None:
    lab = Lab(port=0, anonymous=True).start()
    data_dir = lab.data_dir
    assert data_dir.is_dir()
    lab.stop()
    assert not data_dir.exists()
    lab.stop()  # idempotent
    with pytest.raises(ClosedError):
        _ = lab.port


def test_given_data_dir_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "lab"
    with Lab(target, port=0, anonymous=True) as lab:
        assert lab.data_dir == target
        (target / "marker").write_text("kept")
    assert (target / "marker").read_text() == "kept"


def test_lab_can_restart_after_stop() -> None:
    lab = Lab(port=0, anonymous=True)
    for _ in range(2):
        with lab, _connect(lab) as sock:
            assert _recv_exactly(sock, 4) == CONNACK_ACCEPTED


def test_async_forms_do_not_block_the_callers_loop() -> None:
    async def scenario() -> int:
        async with Lab(port=0, anonymous=True) as lab:
            reader, writer = await asyncio.open_connection(lab.host, lab.port)
            writer.write(CONNECT_311 + SUBSCRIBE)
            assert await reader.readexactly(4) == CONNACK_ACCEPTED
            assert await reader.readexactly(5) == SUBACK
            reached = await lab.apublish("demo/x", b"1", qos=0)
            assert await reader.readexactly(11) == b"\x30\x09\x00\x06demo/x1"
            writer.close()
            await writer.wait_closed()
            return reached

    assert asyncio.run(scenario()) == 1


def test_login_log_and_unblock_in_both_forms_and_not_when_anonymous() -> None:
    async def scenario() -> None:
        async with Lab(port=0) as lab:
            reader, writer = await asyncio.open_connection(lab.host, lab.port)
            writer.write(CONNECT_311)
            assert await reader.readexactly(4) == CONNACK_NOT_AUTHORIZED
            writer.close()
            await writer.wait_closed()
            frame = await lab.arefused_logins()
            assert list(frame["client_id"]) == ["lab-test"]
            assert list(frame["source"]) == ["127.0.0.1"]
            assert await lab.aunblock_login("pk", "dk") == 0

    asyncio.run(scenario())
    with Lab(port=0, anonymous=True) as lab:
        with pytest.raises(InvalidArgument, match="anonymous"):
            lab.refused_logins()
        with pytest.raises(InvalidArgument, match="anonymous"):
            lab.unblock_login("pk", "dk")


def test_sync_facade_from_the_labs_own_loop_is_refused() -> None:
    with Lab(port=0, anonymous=True) as lab:

        async def misuse() -> None:
            lab.publish("demo/x", b"1")

        with pytest.raises(InvalidArgument, match="own event loop"):
            lab.run(misuse())


def test_bad_arguments_raise_typed_errors() -> None:
    with pytest.raises(InvalidArgument, match="70000"):
        Lab(port=70000)
    with Lab(port=0, anonymous=True) as lab:
        with pytest.raises(InvalidArgument, match="qos"):
            lab.publish("demo/x", b"1", qos=3)
        with pytest.raises(InvalidArgument, match="demo/#"):
            lab.publish("demo/#", b"1")
    with pytest.raises(ClosedError):
        lab.publish("demo/x", b"1")


def test_store_lives_in_the_data_dir_and_survives_a_restart(tmp_path: Path) -> None:
    from enos_lab.store import PointRow

    with Lab(tmp_path, port=0, anonymous=True) as lab:
        assert lab.store.path.parent == tmp_path
        lab.store.append_points([PointRow("pk", "dev1", "temp", 1_700_000_000_000, 21.5)])
    with Lab(tmp_path, port=0, anonymous=True) as lab:
        frame = lab.store.query_points("dev1", ["temp"], product_key="pk")
        assert frame["value"].tolist() == [21.5]
        assert str(frame["time"].dt.tz) == "UTC"


def test_store_queries_know_the_registrys_devices(tmp_path: Path) -> None:
    from enos_lab.errors import NotFound
    from enos_lab.store import PointRow

    with Lab(tmp_path / "enos", port=0) as lab:
        pk = lab.create_product("Meters").product_key
        lab.register_device(pk, device_key="m1")
        assert lab.store.query_points("m1", "power", product_key=pk).empty  # nothing posted yet
        assert lab.store.query_events("m1").empty
        with pytest.raises(NotFound, match="typo"):
            lab.store.query_points("typo", product_key=pk)
        with pytest.raises(NotFound, match="nope"):
            lab.store.latest(product_key="nope")
        lab.store.append_points([PointRow(pk, "m1", "power", 1_700_000_000_000, 1.5)])
        lab.delete_device(pk, "m1")
        assert lab.store.latest("m1")["value"].tolist() == [1.5]  # history outlives the device
    with Lab(tmp_path / "anonymous", port=0, anonymous=True) as lab:
        # devices of an anonymous hub need no registration: every name is accepted
        assert lab.store.query_points("anyone", product_key="any").empty


def test_a_failed_start_releases_everything(tmp_path: Path) -> None:
    with Lab(tmp_path, port=0, anonymous=True) as first:
        clash = Lab(tmp_path / "other", port=first.port, anonymous=True)
        with pytest.raises(OSError):
            clash.start()
        assert not clash.running
    # the first lab's store was closed cleanly: a new lab can open the same directory
    with Lab(tmp_path, port=0, anonymous=True) as again:
        assert again.store.path.parent == tmp_path


def test_a_task_left_on_the_labs_loop_is_cancelled_as_asyncio_run_would() -> None:
    async def spawn() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(asyncio.sleep(3600))

    with Lab(port=0, anonymous=True) as lab:
        task = lab.run(spawn())
        assert not task.done()
    assert task.cancelled()


def _enos_connect(
    lab: Lab, product_key: str, device_key: str, secret: str, mode: SecureMode
) -> socket.socket:
    client_id, username, password = login_credentials(
        product_key, device_key, secret, secure_mode=mode, timestamp="1700000000000"
    )
    packet = Connect(client_id, 4, "MQTT", True, 60, username, password.encode())
    sock = socket.create_connection((lab.host, lab.port), timeout=5)
    sock.sendall(encode(packet, 4))
    assert _recv_exactly(sock, 4) == CONNACK_ACCEPTED
    return sock


def test_stop_ends_each_part_in_order_and_leaves_no_task_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="enos_lab")
    lab = Lab(port=0, iothub_config=IotHubConfig(activation_delay=3600.0)).start()
    dynamic = lab.create_product("Dyn", dynamic_activation=True)
    lab.register_device(dynamic.product_key, device_key="v1")
    direct = lab.create_product("Direct")
    device = lab.register_device(direct.product_key, device_key="d1")
    activating = _enos_connect(
        lab, dynamic.product_key, "v1", dynamic.product_secret, SecureMode.DYNAMIC_ACTIVATION
    )
    sock = _enos_connect(
        lab, direct.product_key, "d1", device.device_secret, SecureMode.SECRET_PER_DEVICE
    )
    with activating, sock, ThreadPoolExecutor(1) as pool:
        # a command waits for a reply that will not come; the activation push waits an hour
        waiting = pool.submit(
            lab.send_command, direct.product_key, "d1", TopicKind.SERVICE_INVOKE, {}, item_id="x"
        )
        sock.recv(1)  # the command is on its way to the device
        lab.stop()
        with pytest.raises(ClosedError, match="stopped"):
            waiting.result(5)
    # every part ended its own tasks: the loop thread found none left to cancel
    assert not [r for r in caplog.records if "task(s) left" in r.getMessage()]


def test_repr_and_mode() -> None:
    lab = Lab(port=0, anonymous=True)
    assert repr(lab) == "<Lab anonymous stopped>"
    with lab:
        assert lab.anonymous and repr(lab) == f"<Lab anonymous url={lab.url!r}>"
    with Lab(port=0) as authenticating:
        assert not authenticating.anonymous
        assert repr(authenticating) == f"<Lab url={authenticating.url!r}>"


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.5", "lab.example.org"])
def test_a_listener_off_loopback_is_warned_about(host: str) -> None:
    warning = plain_tcp_warning(host)
    assert warning is not None
    assert "plain TCP" in warning and "replayed" in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_a_loopback_listener_is_not_warned_about(host: str) -> None:
    assert plain_tcp_warning(host) is None


def test_a_loopback_lab_starts_without_the_plain_tcp_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="enos_lab"), Lab(tmp_path, port=0):
        pass
    assert not [r for r in caplog.records if "plain TCP" in r.getMessage()]


def test_every_facade_method_shows_its_real_signature() -> None:
    import inspect

    methods = {
        name: member
        for name, member in inspect.getmembers(Lab, callable)
        if not name.startswith("_") and inspect.isfunction(member)
    }
    assert "arefused_logins" in methods and "acreate_product" in methods
    for name, method in methods.items():
        kinds = {p.kind for p in inspect.signature(method).parameters.values()}
        assert inspect.Parameter.VAR_POSITIONAL not in kinds, name
        assert inspect.Parameter.VAR_KEYWORD not in kinds, name
        if name.startswith("a") and name[1:] in methods:
            assert inspect.signature(method) == inspect.signature(methods[name[1:]]), name


def test_a_lab_on_a_simulated_clock_times_out_devices_in_simulated_time() -> None:
    clock = SimulatedClock(datetime(2025, 6, 1, tzinfo=UTC))
    with Lab(port=0, clock=clock) as lab:
        product = lab.create_product("Meter")
        device = lab.register_device(product.product_key, device_key="m1")
        # keep alive 60 s: closed after 90 s of simulated silence, whatever real time passes
        with _enos_connect(
            lab, product.product_key, "m1", device.device_secret, SecureMode.SECRET_PER_DEVICE
        ) as sock:
            time.sleep(0.3)
            clock.advance(89)
            assert lab.is_online(product.product_key, "m1")
            clock.advance(2)
            sock.settimeout(5)
            assert sock.recv(1) == b""  # the hub closed it
        presence = lab.presence(product.product_key, "m1")
        assert list(presence["reason"]) == ["connected", "keep-alive timeout"]
        # recorded at the simulated times, 90.x s apart
        gap = (presence["time"].iloc[1] - presence["time"].iloc[0]).total_seconds()
        assert 90 <= gap <= 91
        assert presence["time"].iloc[0] == pd.Timestamp("2025-06-01", tz="UTC")
