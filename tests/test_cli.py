"""``enos-lab serve``: prints its URL, serves MQTT, stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

CONNECT_311 = bytes.fromhex("101400044d5154540402003c00086c61622d74657374")


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "enos_lab", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"enos-lab hub listening on mqtt://127\.0\.0\.1:(\d+)\n", line)
    assert match, f"unexpected first line {line!r}"
    return proc, int(match.group(1))


def _connack(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(CONNECT_311)
        return sock.recv(4)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_anonymous_accepts_clients_and_stops_on_signal(stop_signal: int) -> None:
    proc, port = _start("--anonymous")
    try:
        assert _connack(port) == bytes.fromhex("20020000")
    finally:
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "enos-lab hub stopped" in out
    assert "WARNING" in err and "without authentication" in err


def test_serve_without_anonymous_refuses_unregistered_clients() -> None:
    proc, port = _start()
    try:
        assert proc.stdout is not None
        notice = proc.stdout.readline()
        assert "only registered devices can connect" in notice
        assert "register_device" in notice
        assert _connack(port) == bytes.fromhex("20020005")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_serving_process_freezes_startup_objects_and_collects_less_often() -> None:
    from enos_lab import cli

    before = gc.get_threshold()
    try:
        cli._tune_gc()
        assert gc.get_threshold() == cli.GC_THRESHOLDS
        assert cli.GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
