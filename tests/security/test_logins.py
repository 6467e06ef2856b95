"""Attacks on the login throttle, over real TCP from distinct loopback sources.

EnOS blocks logins after 4 failures within 2 minutes for 5 minutes. Keyed by the user name
alone, that rule let anyone who knows a device's public ``deviceKey&productKey`` lock it out
with four bad CONNECTs, and kept every user name ever tried. The throttle is keyed by source
address and identity together, forgets, and the lab shows each login attempt
(:meth:`Lab.logins`) and lifts a block on request (:meth:`Lab.unblock_login`).

On Linux every 127.0.0.0/8 address is loopback, so a socket bound to 127.0.0.2 is a second
client machine as far as the hub can tell.
"""

from __future__ import annotations

import logging
import socket
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
from _attack_kit import MakeLab

from enos_lab import Lab
from enos_lab.clock import SimulatedClock
from enos_lab.enos import login_credentials
from enos_lab.hub import ConnectRequest
from enos_lab.iothub import IotHub, IotHubConfig
from enos_lab.model import ModelCatalog
from enos_lab.mqtt import Connect, encode
from enos_lab.registry import Device, Registry
from enos_lab.store import TimeSeriesStore

VICTIM_SOURCE = "127.0.0.1"
ATTACKER_SOURCE = "127.0.0.2"
TIMESTAMP = "1700000000000"  # an integer timestamp: the CONNACK is not delayed
DISCONNECT = b"\xe0\x00"
LOGIN_COLUMNS = [
    "time",
    "source",
    "client_id",
    "product_key",
    "device_key",
    "reason",
    "blocked_until",
]


@pytest.fixture
def lab(make_lab: MakeLab) -> Lab:
    """A started lab on 127.0.0.1 (free port) with product ``pk1``."""
    running = make_lab()
    running.create_product("Meter", product_key="pk1")
    return running


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def enos_connect(
    lab: Lab,
    device: Device | tuple[str, str],
    secret: str | None = None,
    *,
    source: str = VICTIM_SOURCE,
) -> int:
    """One EnOS CONNECT (secure mode 2) of ``device`` (a record, or the keys of a device the
    registry may not know) from ``source`` over TCP, with ``secret`` (default: the device's);
    returns the CONNACK return code (0 accepted, 5 not authorised). An accepted client
    disconnects at once."""
    if isinstance(device, Device):
        product_key, device_key = device.product_key, device.device_key
        secret = device.device_secret if secret is None else secret
    else:
        product_key, device_key = device
    assert secret is not None
    client_id, username, password = login_credentials(
        product_key, device_key, secret, timestamp=TIMESTAMP
    )
    family = socket.AF_INET6 if ":" in lab.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.bind((source, 0))
        sock.connect((lab.host, lab.port))
        packet = Connect(client_id, 4, "MQTT", True, 60, username, password.encode())
        sock.sendall(encode(packet, 4))
        connack = _recv_exactly(sock, 4)
        assert connack[:3] == b"\x20\x02\x00", connack
        if connack[3] == 0:
            sock.sendall(DISCONNECT)
        assert sock.recv(1) == b""  # the hub closes a refused (or disconnected) connection
        return connack[3]


def test_failed_logins_from_another_address_do_not_lock_the_device_out(lab: Lab) -> None:
    """The lockout attack: an attacker on 127.0.0.2 who knows only the device's user name
    sends bad CONNECTs; the device on 127.0.0.1 still logs in with its secret."""
    device = lab.register_device("pk1", device_key="victim")
    for _ in range(8):
        assert enos_connect(lab, device, "guess", source=ATTACKER_SOURCE) == 5
    assert enos_connect(lab, device, source=VICTIM_SOURCE) == 0
    # the attacker's own source is blocked, even with the right secret
    assert enos_connect(lab, device, source=ATTACKER_SOURCE) == 5
    log = lab.refused_logins("pk1", "victim")
    assert set(log["source"]) == {ATTACKER_SOURCE}  # the victim's login was not refused
    assert len(log) == 9
    assert log["reason"].iloc[-1].startswith("blocked after 4 failed logins until ")
    assert lab.presence("pk1", "victim")["reason"].iloc[0] == "connected"


def test_a_typo_blocks_shows_why_and_unblock_lets_the_device_in(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """A new user's typo: the device retries a wrong secret four times from its own address
    and is blocked; the login log says why and until when, the hub warns once with how to
    lift it, and :meth:`Lab.unblock_login` lets the corrected device in at once."""
    device = lab.register_device("pk1", device_key="typo")
    caplog.set_level(logging.INFO, logger="enos_lab.iothub")
    for _ in range(4):
        assert enos_connect(lab, device, device.device_secret[:-1] + "x") == 5
    assert enos_connect(lab, device) == 5  # the right secret, but blocked
    assert enos_connect(lab, device) == 5

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    for part in ("pk1/typo", VICTIM_SOURCE, "4 failed logins", "unblock_login"):
        assert part in text, text

    log = lab.refused_logins("pk1", "typo")
    assert list(log.columns) == LOGIN_COLUMNS
    assert str(log["time"].dt.tz) == "UTC" and str(log["blocked_until"].dt.tz) == "UTC"
    assert log["time"].is_monotonic_increasing
    assert len(log) == 6
    assert set(log["source"]) == {VICTIM_SOURCE}
    assert list(log["reason"][:4]) == ["signature does not match the device secret"] * 4
    until = log["blocked_until"].iloc[3]
    assert log["blocked_until"][:3].isna().all() and until is not pd.NaT
    assert pd.Timedelta(seconds=299) < until - log["time"].iloc[3] <= pd.Timedelta(seconds=301)
    stamp = until.isoformat(timespec="seconds")
    assert list(log["reason"][4:]) == [f"blocked after 4 failed logins until {stamp}"] * 2

    assert lab.unblock_login("pk1", "typo") == 1
    assert enos_connect(lab, device) == 0
    assert lab.unblock_login("pk1", "typo") == 0  # nothing left to lift
    assert len(lab.refused_logins("pk1", "typo")) == 6  # the accepted login is not a refusal
    assert lab.is_online("pk1", "typo") is False  # it connected and disconnected
    assert list(lab.presence("pk1", "typo")["reason"]) == ["connected", "disconnected"]


def test_unblock_one_source_keeps_the_others_blocked(lab: Lab) -> None:
    device = lab.register_device("pk1", device_key="two")
    for source in (VICTIM_SOURCE, ATTACKER_SOURCE):
        for _ in range(4):
            assert enos_connect(lab, device, "bad", source=source) == 5
    assert lab.unblock_login("pk1", "two", source=VICTIM_SOURCE) == 1
    assert enos_connect(lab, device, source=VICTIM_SOURCE) == 0
    assert enos_connect(lab, device, source=ATTACKER_SOURCE) == 5
    assert lab.unblock_login("pk1", "two") == 1
    assert enos_connect(lab, device, source=ATTACKER_SOURCE) == 0


def test_login_log_shows_refused_attempts_and_why(lab: Lab) -> None:
    good = lab.register_device("pk1", device_key="good")
    other = lab.register_device("pk1", device_key="other")
    assert enos_connect(lab, good) == 0
    assert enos_connect(lab, other, "wrong", source=ATTACKER_SOURCE) == 5
    assert enos_connect(lab, ("pk1", "ghost"), "s3cret") == 5  # not registered

    log = lab.refused_logins()
    assert list(log.columns) == LOGIN_COLUMNS
    rows = log[["source", "product_key", "device_key", "reason"]]
    assert rows.values.tolist() == [
        [ATTACKER_SOURCE, "pk1", "other", "signature does not match the device secret"],
        [VICTIM_SOURCE, "pk1", "ghost", "device pk1/ghost does not exist"],
    ]
    assert list(log["client_id"]) == [
        f"{dk}|securemode=2,signmethod=hmacsha256,timestamp={TIMESTAMP}|"
        for dk in ("other", "ghost")
    ]
    assert log["blocked_until"].isna().all()
    assert list(lab.refused_logins(device_key="other")["device_key"]) == ["other"]
    assert list(lab.refused_logins("nope")["device_key"]) == []


def test_ipv6_source_is_the_address_without_the_port() -> None:
    """``ConnectRequest.peer`` is ``"::1:<port>"`` over IPv6: the source is ``::1``."""
    with Lab(host="::1", port=0) as lab:
        lab.create_product("Meter", product_key="pk1")
        device = lab.register_device("pk1", device_key="six")
        for _ in range(4):
            assert enos_connect(lab, device, "bad", source="::1") == 5
        assert enos_connect(lab, device, source="::1") == 5
        assert set(lab.refused_logins()["source"]) == {"::1"}
        assert lab.unblock_login("pk1", "six", source="::1") == 1
        assert enos_connect(lab, device, source="::1") == 0


@pytest.mark.slow
def test_a_flood_of_distinct_user_names_leaves_bounded_state(tmp_path: Path) -> None:
    """20,000 bad logins with distinct user names from one address, then 20,000 more: the
    second flood leaves the hub's memory where the first left it, the throttle holds at most
    its bound, and once the window has passed the entries are gone."""
    clock = SimulatedClock()
    registry = Registry(tmp_path / "registry.sqlite3", clock=clock)
    store = TimeSeriesStore(tmp_path / "store", clock=clock)
    registry.create_product("Meter", product_key="pk1")
    config = IotHubConfig()
    iothub = IotHub(registry, ModelCatalog(), store, clock=clock, config=config)
    count = 0

    def flood(n: int) -> None:
        nonlocal count
        for _ in range(n):
            count += 1
            client_id, username, password = login_credentials(
                "pk1", f"d{count:06d}", "x", timestamp=TIMESTAMP
            )
            request = ConnectRequest(
                client_id, username, password.encode(), 4, f"{ATTACKER_SOURCE}:40000", False
            )
            result = iothub.authenticate(request)
            assert not getattr(result, "accepted", True)
            clock.advance(0.001)

    try:
        tracemalloc.start()
        try:
            flood(20_000)
            before = tracemalloc.get_traced_memory()[0]
            flood(20_000)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 256 * 1024, f"{grown / 1e6:.1f} MB kept by 20,000 more user names"
        assert len(iothub.login_throttle) <= config.max_login_tracked
        assert len(iothub.refused_logins()) == config.login_log_size
        clock.advance(config.login_failure_window + 1)
        flood(1)  # expired failures go when the next one comes, whoever sends it
        assert len(iothub.login_throttle) == 1
    finally:
        store.close()
        registry.close()
