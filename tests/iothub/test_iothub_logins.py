"""The login log, the login source and the throttle as the IoT hub uses them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from _iothub_kit import TIMESTAMP, Env

from enos_lab.clock import SimulatedClock
from enos_lab.enos import login_credentials
from enos_lab.errors import InvalidArgument
from enos_lab.hub import AuthResult, ConnectRequest
from enos_lab.iothub import LOGIN_COLUMNS, IotHubConfig, LoginLog, login_source, logins_frame


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("127.0.0.1:50123", "127.0.0.1"),
        ("::1:50123", "::1"),
        ("[::1]:50123", "::1"),
        ("fe80::1%eth0:8", "fe80::1%eth0"),
        ("::ffff:10.0.0.1:1", "::ffff:10.0.0.1"),
        ("memory", "memory"),
        ("unknown", "unknown"),
    ],
)
def test_login_source_is_the_address_without_the_port(peer: str, source: str) -> None:
    assert login_source(peer) == source


def test_login_log_keeps_the_newest_rows_and_filters() -> None:
    clock = SimulatedClock()
    log = LoginLog(3, clock)
    assert log.size == 3 and len(log) == 0
    for i, (pk, dk) in enumerate([("p", "a"), ("p", "b"), ("q", "a"), ("p", "a")]):
        log.record("10.0.0.1", f"c{i}", pk, dk, reason=f"r{i}")
        clock.advance(1)
    assert len(log) == 3
    assert [row[2] for row in log.rows()] == ["c1", "c2", "c3"]
    assert [row[2] for row in log.rows("p")] == ["c1", "c3"]
    assert [row[2] for row in log.rows(device_key="a")] == ["c2", "c3"]
    assert [row[2] for row in log.rows("p", "a")] == ["c3"]
    frame = logins_frame(log.rows())
    assert list(frame.columns) == list(LOGIN_COLUMNS)
    assert list(frame["time"]) == [
        pd.Timestamp(datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC)) for s in (1, 2, 3)
    ]
    assert list(frame["reason"]) == ["r1", "r2", "r3"]
    assert frame["blocked_until"].isna().all()
    empty = logins_frame([])
    assert list(empty.columns) == list(LOGIN_COLUMNS)
    assert str(empty["time"].dt.tz) == "UTC" and str(empty["blocked_until"].dt.tz) == "UTC"
    off = LoginLog(0, clock)
    off.record("s", "c", None, None, reason="r")
    assert off.rows() == []
    with pytest.raises(InvalidArgument, match="-1"):
        LoginLog(-1, clock)


def test_config_bounds_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="max_login_tracked"):
        IotHubConfig(max_login_tracked=0)
    with pytest.raises(InvalidArgument, match="login_log_size"):
        IotHubConfig(login_log_size=-1)


async def test_logins_over_the_memory_transport(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """The in-memory transport's peer is ``memory``: its logins share that one source."""
    caplog.set_level(logging.INFO, logger="enos_lab.iothub")
    device = env.registry.register_device("dirP", device_key="d1")
    await env.device("dirP", "d0")
    for _ in range(4):
        _, connack = await env.login("dirP", "d1", "bad")
        assert connack.reason_code == 5
    _, connack = await env.login("dirP", "d1", device.device_secret)
    assert connack.reason_code == 5
    _, connack = await env.connect("no-block", None, None)
    assert connack.reason_code == 5
    frame = env.iothub.refused_logins()
    assert list(frame["source"].unique()) == ["memory"]
    assert list(frame["device_key"][:5]) == ["d1"] * 5  # d0's accepted login is not kept
    assert frame["reason"].iloc[4].startswith("blocked after 4 failed logins until ")
    assert frame["product_key"].iloc[5] is None or pd.isna(frame["product_key"].iloc[5])
    assert len(env.iothub.refused_logins("dirP", "d1")) == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dirP/d1 from memory" in warnings[0]
    assert env.iothub.unblock_login("dirP", "d1", source="elsewhere") == 0
    assert env.iothub.unblock_login("dirP", "d1", source="memory") == 1
    _, connack = await env.login("dirP", "d1", device.device_secret)
    assert connack.reason_code == 0
    assert len(env.iothub.login_throttle) == 1  # the client without a user name


def test_login_log_size_comes_from_the_config(tmp_path: Path) -> None:
    env = Env(tmp_path, IotHubConfig(login_log_size=2))
    try:
        for i in range(3):
            client_id, username, password = login_credentials(
                "dirP", f"missing{i}", "x", timestamp=TIMESTAMP
            )
            request = ConnectRequest(client_id, username, password.encode(), 4, "10.0.0.1:1", False)
            result = env.iothub.authenticate(request)
            assert isinstance(result, AuthResult) and not result.accepted
        assert list(env.iothub.refused_logins()["device_key"]) == ["missing1", "missing2"]
    finally:
        env.store.close()
        env.registry.close()
