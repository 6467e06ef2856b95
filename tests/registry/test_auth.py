"""EnOS login decisions (protocol reference 2-3) and connect-flood protection."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.enos import SecureMode, SignMethod, login_credentials
from enos_lab.errors import InvalidArgument
from enos_lab.registry import LoginThrottle, NodeType, Registry, authenticate


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "r.sqlite3", rng=random.Random(1))
    reg.create_product("Direct", product_key="dirP", dynamic_activation=True)
    reg.create_product("Sub", product_key="subP", node_type=NodeType.SUB_DEVICE)
    reg.create_product("Cert", product_key="certP", certificate_required=True)
    reg.register_device("dirP", device_key="d1")
    reg.register_device("subP", device_key="s1")
    reg.register_device("certP", device_key="c1")
    return reg


def _login(registry: Registry, pk: str, dk: str, *, secret: str | None = None, **kwargs: object):
    secret = secret or registry.get_device(pk, dk).device_secret
    client_id, username, password = login_credentials(
        pk, dk, secret, timestamp="1700000000000.5", **kwargs
    )  # type: ignore[arg-type]
    return client_id, username, password


@pytest.mark.parametrize("method", list(SignMethod))
def test_secret_per_device_login_accepted(registry: Registry, method: SignMethod) -> None:
    client_id, username, password = _login(registry, "dirP", "d1", sign_method=method)
    decision = authenticate(registry, client_id, username, password.upper())
    assert decision.accepted and decision.return_code == 0
    assert decision.device is not None and decision.device.device_key == "d1"
    assert not decision.activation


def test_refusals_are_connack_5_with_a_reason(registry: Registry) -> None:
    client_id, username, password = _login(registry, "dirP", "d1")
    cases = {
        "wrong secret": authenticate(registry, client_id, username, "0" * 64),
        "unknown product": authenticate(registry, client_id, "d1&noP", password),
        "unknown device": authenticate(registry, client_id, "zz&dirP", password),
        "no password": authenticate(registry, client_id, username, None),
        "bad client id": authenticate(registry, "d1", username, password),
    }
    for name, decision in cases.items():
        assert (name, decision.return_code) == (name, 5)
        assert not decision.accepted and decision.reason
    assert authenticate(registry, client_id, "nonsense", password).return_code == 4


def test_disabled_sub_device_and_certificate_products_are_refused(registry: Registry) -> None:
    client_id, username, password = _login(registry, "dirP", "d1")
    registry.disable_device("dirP", "d1")
    assert "disabled" in authenticate(registry, client_id, username, password).reason
    client_id, username, password = _login(registry, "subP", "s1")
    assert "771" in authenticate(registry, client_id, username, password).reason
    client_id, username, password = _login(registry, "certP", "c1")
    assert "746" in authenticate(registry, client_id, username, password, tls=False).reason
    assert authenticate(registry, client_id, username, password, tls=True).accepted


def test_dynamic_activation_only_for_inactive_devices(registry: Registry) -> None:
    product_secret = registry.get_product("dirP").product_secret
    creds = login_credentials(
        "dirP", "d1", product_secret, secure_mode=SecureMode.DYNAMIC_ACTIVATION, timestamp="1"
    )
    decision = authenticate(registry, *creds)
    assert decision.accepted and decision.activation
    wrong = login_credentials(
        "dirP", "d1", "not-the-secret", secure_mode=SecureMode.DYNAMIC_ACTIVATION, timestamp="1"
    )
    assert not authenticate(registry, *wrong).accepted
    registry.set_online("dirP", "d1")
    refused = authenticate(registry, *creds)
    assert not refused.accepted and "already activated" in refused.reason


def test_integration_channel(registry: Registry) -> None:
    product_secret = registry.get_product("dirP").product_secret
    creds = login_credentials(
        "dirP", "%channel%", product_secret, secure_mode=SecureMode.INTEGRATION, timestamp="9"
    )
    decision = authenticate(registry, *creds)
    assert decision.accepted and decision.integration and decision.device is None


def test_login_throttle_blocks_after_four_failures_in_two_minutes() -> None:
    clock = SimulatedClock()
    throttle = LoginThrottle(clock=clock)
    key = ("p", "d")
    for _ in range(3):
        throttle.failed(key)
        clock.advance(30)
    assert not throttle.blocked(key)
    throttle.failed(key)  # 4th failure within 120 s
    assert throttle.blocked(key)
    clock.advance(299)
    assert throttle.blocked(key)
    clock.advance(1)
    assert not throttle.blocked(key)
    # failures spread over more than the window never block
    for _ in range(8):
        throttle.failed(key)
        clock.advance(61)
    assert not throttle.blocked(key)
    throttle.failed(("q", "e"))
    throttle.succeeded(("q", "e"))
    with pytest.raises(InvalidArgument, match="max_failures"):
        LoginThrottle(max_failures=0)
