"""Attacks on what the lab keeps on disk and in its store.

- Another user of the machine reading the lab's secrets: the data directory and everything in
  it must be private to the lab's user (directories 0700, files 0600), whatever the umask, and
  a pre-existing directory that others can read is reported, not silently changed.
- A crash leaving devices "online" for ever: after a SIGKILL of ``enos-lab serve`` with a device
  connected, the restarted lab closes the open presence with reason "hub restarted".

Everything runs for real: the lab's TCP listener, raw MQTT 3.1.1 clients with the EnOS login,
the ``enos-lab serve`` process, SQLite and DuckDB files on disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enos_lab import Lab
from enos_lab.enos import login_credentials
from enos_lab.mqtt import Connect, Publish, encode
from enos_lab.registry import Registry
from enos_lab.store import PointRow, TimeSeriesStore

WAIT = 10.0  # [s] upper bound of every socket read and process wait
T0 = 1_700_000_000_000  # [ms] event times of the posts below
MODEL = "energy_meter"  # a model of the shipped library


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run the test under the common umask 0022 (files 0644 and directories 0755 by default)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _tree_modes(root: Path) -> dict[str, str]:
    """``{relative path: octal mode}`` of ``root`` and everything under it."""
    modes = {".": oct(_mode(root))}
    for path in sorted(root.rglob("*")):
        modes[str(path.relative_to(root))] = oct(_mode(path))
    return modes


def _assert_private(root: Path, *, root_mode: int = 0o700) -> dict[str, str]:
    """Every directory under ``root`` is 0700, every file 0600; ``root`` itself ``root_mode``."""
    modes = _tree_modes(root)
    wrong = {
        name: mode
        for name, mode in modes.items()
        if mode != oct(root_mode if name == "." else 0o700 if (root / name).is_dir() else 0o600)
    }
    assert not wrong, f"not private (want dirs 0o700, files 0o600): {wrong}; all: {modes}"
    return modes


# --- a raw MQTT 3.1.1 device with the EnOS login --------------------------------------------


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, body)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"connection closed after {data!r}")
            data += chunk
        return data

    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, exactly(length)


def _device(port: int, product_key: str, device_key: str, secret: str) -> socket.socket:
    """A connected device (CONNACK accepted), EnOS secret-per-device login."""
    client_id, username, password = login_credentials(
        product_key, device_key, secret, timestamp=str(T0)
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    connect = Connect(client_id, username=username, password=password.encode(), keep_alive=300)
    sock.sendall(encode(connect, 4))
    first, body = _read_packet(sock)
    assert (first, body) == (0x20, b"\x00\x00"), f"login refused: {first:#x} {body!r}"
    return sock


def _post(sock: socket.socket, product_key: str, device_key: str, seq: int) -> None:
    """A QoS 1 ``thing.measurepoint.post``; returns once the PUBACK (sent after the commit)
    arrived."""
    payload = {
        "id": str(seq),
        "version": "1.0",
        "method": "thing.measurepoint.post",
        "params": {"measurepoints": {"active_power": 1.5 + seq}, "time": T0 + seq},
    }
    topic = f"/sys/{product_key}/{device_key}/thing/measurepoint/post"
    sock.sendall(encode(Publish(topic, json.dumps(payload).encode(), 1, packet_id=seq), 4))
    while True:
        first, body = _read_packet(sock)
        if first >> 4 == 4 and body == seq.to_bytes(2, "big"):
            return


def _provision(lab: Lab) -> tuple[str, str, str]:
    product = lab.create_product("meters", model_id=MODEL)
    device = lab.register_device(product.product_key, device_key="m1")
    return product.product_key, device.device_key, device.device_secret


# --- item: files and directories private to the lab's user ----------------------------------


def test_lab_creates_a_private_data_dir_and_private_files(tmp_path: Path, umask_022: None) -> None:
    data_dir = tmp_path / "new" / "lab"  # the lab creates both levels
    with Lab(data_dir, port=0, rng=random.Random(7)) as lab:
        pk, dk, secret = _provision(lab)
        with _device(lab.port, pk, dk, secret) as sock:
            for seq in range(1, 6):
                _post(sock, pk, dk, seq)
            running = _assert_private(data_dir)
            # the write-ahead logs exist while the lab runs: both databases have written
            assert "registry.sqlite3-wal" in running
            assert "timeseries.duckdb.wal" in running
    _assert_private(data_dir)
    assert _mode(tmp_path / "new") == 0o700
    assert len(lab_points(data_dir, pk, dk)) == 5


def lab_points(data_dir: Path, product_key: str, device_key: str) -> list[object]:
    """The stored measurepoints of one device (the lab is stopped)."""
    with TimeSeriesStore(data_dir) as store:
        return list(store.query_points(device_key, product_key=product_key)["value"])


def test_temporary_data_dir_is_private(umask_022: None) -> None:
    with Lab(port=0, rng=random.Random(8)) as lab:
        _provision(lab)
        lab.store.append_points([PointRow("p", "d", "x", T0, 1.0)])
        _assert_private(lab.data_dir)


def test_store_wal_made_anew_after_a_checkpoint_is_private(tmp_path: Path, umask_022: None) -> None:
    """DuckDB deletes its write-ahead log at every checkpoint (automatic once the log holds
    16 MiB) and creates it anew, with the umask's mode, at the next commit: private too."""
    root = tmp_path / "store"
    wal = root / "timeseries.duckdb.wal"
    batch = [PointRow("p", f"d{i % 10}", "x", T0 + i, float(i)) for i in range(100_000)]
    with TimeSeriesStore(root) as store:
        store.append_points(batch[:1])
        _assert_private(root)
        for step in range(1, 20):  # ~3.8 MB of log per batch
            store.append_points(
                [row._replace(event_time_ms=T0 + step * 10**6 + row[3] - T0) for row in batch]
            )
            if not wal.exists():
                break
        assert not wal.exists(), "no automatic checkpoint happened"
        store.append_points([PointRow("p", "d", "x", T0 - 1, 2.0)])
        assert wal.exists()
        _assert_private(root)
    _assert_private(root)


def test_registry_files_are_private(tmp_path: Path, umask_022: None) -> None:
    root = tmp_path / "reg"
    root.mkdir(mode=0o700)
    registry = Registry(root / "registry.sqlite3", rng=random.Random(9))
    try:
        product = registry.create_product("p")
        device = registry.register_device(product.product_key, device_key="d")
        # presence changes go through the second connection of the presence writer
        registry.queue_presence(product.product_key, device.device_key, True, "connected")
        registry.flush_presence()
        registry.presence_log()
        modes = _assert_private(root)
        assert {"registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm"} <= set(modes)
    finally:
        registry.close()
    _assert_private(root)


def test_registry_tightens_a_database_file_left_open_by_an_older_version(
    tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "reg"
    root.mkdir(mode=0o700)
    path = root / "registry.sqlite3"
    Registry(path).close()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        registry = Registry(path)
    try:
        registry.create_product("p")
        _assert_private(root)
    finally:
        registry.close()
    assert any(str(path) in r.getMessage() and "0o644" in r.getMessage() for r in caplog.records)


def test_existing_open_data_dir_is_reported_not_changed(
    tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir(mode=0o755)
    assert _mode(data_dir) == 0o755
    with caplog.at_level(logging.WARNING, logger="enos_lab"), Lab(data_dir, port=0) as lab:
        lab.store.append_points([PointRow("p", "d", "x", T0, 1.0)])
        assert len(_assert_private(data_dir, root_mode=0o755)) > 1
    assert _mode(data_dir) == 0o755  # the user's directory is left as it is
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    messages = [r.getMessage() for r in warnings if str(data_dir) in r.getMessage()]
    assert len(messages) == 1, [r.getMessage() for r in warnings]
    assert "0o755" in messages[0]
    assert f"chmod 700 {data_dir}" in messages[0]


def test_existing_private_data_dir_is_not_reported(
    tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "mine"
    data_dir.mkdir(mode=0o700)
    with caplog.at_level(logging.WARNING, logger="enos_lab"), Lab(data_dir, port=0):
        pass
    assert not [r for r in caplog.records if str(data_dir) in r.getMessage()]


# --- item: presence left "online" by a crash ------------------------------------------------


def _serve(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    """``enos-lab serve`` on ``data_dir`` and a free port; returns the process and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "enos_lab", "serve", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"enos-lab hub listening on mqtt://127\.0\.0\.1:(\d+)\n", line)
    if not match:
        proc.kill()
        _, err = proc.communicate(timeout=WAIT)
        raise AssertionError(f"unexpected first line {line!r}; stderr: {err}")
    return proc, int(match.group(1))


def _wait_marked_online(path: Path, product_key: str, device_key: str) -> None:
    """Wait (bounded) until the serving process has written the login's presence change (its
    presence writer thread does that shortly after the CONNACK), reading the registry file."""
    deadline = time.monotonic() + WAIT
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT online FROM devices WHERE product_key = ? AND device_key = ?",
                (product_key, device_key),
            ).fetchone()
            if row == (1,):
                return
            time.sleep(0.02)
    raise AssertionError(f"{product_key}/{device_key} not marked online within {WAIT} s")


def test_restart_after_a_crash_closes_presence_left_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "lab"
    with Lab(data_dir, port=0, rng=random.Random(11)) as lab:
        pk, dk, secret = _provision(lab)
        other = lab.register_device(pk, device_key="never-connected")

    proc, port = _serve(data_dir)
    try:
        with _device(port, pk, dk, secret) as sock:
            _post(sock, pk, dk, 1)
            _wait_marked_online(data_dir / "registry.sqlite3", pk, dk)
            proc.send_signal(signal.SIGKILL)  # only the process started above
            proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL

    with Lab(data_dir, port=0) as lab:
        devices = lab.devices(pk).set_index("device_key")
        assert not devices.loc[dk, "online"]
        assert not devices.loc[other.device_key, "online"]
        assert lab.is_online(pk, dk) is False
        log = lab.presence(pk, dk)
        assert list(zip(log["online"], log["reason"], strict=True)) == [
            (True, "connected"),
            (False, "hub restarted"),
        ]
        assert log["time"].iloc[-1] >= log["time"].iloc[0]
        assert lab.presence(pk, other.device_key).empty
