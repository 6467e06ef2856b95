"""EnOS login decisions (protocol reference 2-3) and connect-flood protection."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.enos import SecureMode, SignMethod, login_credentials, sign, sign_params
from enos_lab.errors import InvalidArgument
from enos_lab.registry import (
    LoginBlock,
    LoginThrottle,
    NodeType,
    Registry,
    SubDeviceDecision,
    authenticate,
    authenticate_sub_device,
)


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
    # over TLS it still needs its device certificate (tests/registry/test_auth_certificates.py)
    reason = authenticate(registry, client_id, username, password, tls=True).reason
    assert "requires a device certificate" in reason


def test_a_disabled_device_is_refused_with_the_reason_the_registry_keeps(
    registry: Registry, tmp_path: Path
) -> None:
    client_id, username, password = _login(registry, "dirP", "d1")
    # a tag of that name is the device's own data (it may set its tags): never the reason
    registry.update_tags("dirP", "d1", {"disabled_reason": "the operator says hello"})
    registry.disable_device("dirP", "d1", "edge revoked at 2024-06-21T00:00:00+00:00")
    reason = authenticate(registry, client_id, username, password).reason
    assert reason == "device dirP/d1 is disabled: edge revoked at 2024-06-21T00:00:00+00:00"
    # it survives a restart, and enabling the device forgets it
    registry.close()
    again = Registry(tmp_path / "r.sqlite3")
    assert again.disabled_reason("dirP", "d1") == "edge revoked at 2024-06-21T00:00:00+00:00"
    again.enable_device("dirP", "d1")
    assert again.disabled_reason("dirP", "d1") is None
    again.disable_device("dirP", "d1")  # no reason given: none shown, not the old one
    assert authenticate(again, client_id, username, password).reason == (
        "device dirP/d1 is disabled"
    )
    again.delete_device("dirP", "d1")
    assert again.disabled_reason("dirP", "d1") is None
    again.close()


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


SOURCE, OTHER_SOURCE = "10.0.0.1", "10.0.0.2"
IDENTITY = "d1&dirP"


def test_login_throttle_blocks_after_four_failures_in_two_minutes() -> None:
    clock = SimulatedClock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(3):
        assert throttle.failed(SOURCE, IDENTITY) is None
        clock.advance(30)
    assert throttle.blocked(SOURCE, IDENTITY) is None
    block = throttle.failed(SOURCE, IDENTITY)  # 4th failure within 120 s
    assert block == LoginBlock(
        SOURCE, IDENTITY, 4, until=390.0, until_time=datetime(2024, 1, 1, 0, 6, 30, tzinfo=UTC)
    )
    assert throttle.blocked(SOURCE, IDENTITY) == block
    assert throttle.failed(SOURCE, IDENTITY) is None  # refused anyway: no new block
    clock.advance(299)
    assert throttle.blocked(SOURCE, IDENTITY) == block
    clock.advance(1)
    assert throttle.blocked(SOURCE, IDENTITY) is None
    # failures spread over more than the window never block
    for _ in range(8):
        assert throttle.failed(SOURCE, IDENTITY) is None
        clock.advance(61)
    assert throttle.blocked(SOURCE, IDENTITY) is None


def test_login_throttle_counts_per_source_and_identity() -> None:
    """Failures from another address, or of another identity, never add up."""
    clock = SimulatedClock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(3):
        throttle.failed(SOURCE, IDENTITY)
        throttle.failed(OTHER_SOURCE, IDENTITY)
        throttle.failed(SOURCE, "d2&dirP")
    assert len(throttle) == 3
    assert throttle.failed(OTHER_SOURCE, IDENTITY) is not None
    assert throttle.blocked(OTHER_SOURCE, IDENTITY) is not None
    assert throttle.blocked(SOURCE, IDENTITY) is None
    assert throttle.blocked(SOURCE, "d2&dirP") is None
    # a login accepted from one source forgets that source's failures only
    throttle.succeeded(SOURCE, IDENTITY)
    for _ in range(3):
        assert throttle.failed(SOURCE, IDENTITY) is None
    assert throttle.failed(SOURCE, "d2&dirP") is not None


def test_login_throttle_forgets_keys_that_never_come_back() -> None:
    """Failures older than the window and ended blocks go when any new failure comes."""
    clock = SimulatedClock()
    throttle = LoginThrottle(clock=clock)
    for i in range(100):
        throttle.failed(SOURCE, f"d{i}&dirP")
        clock.advance(0.1)
    assert len(throttle) == 100
    clock.advance(119.85)  # the first 99 are older than the window now
    throttle.failed(SOURCE, "new&dirP")
    assert len(throttle) == 2
    for _ in range(4):
        throttle.failed(OTHER_SOURCE, IDENTITY)
    assert len(throttle) == 3  # d99, new, the block
    clock.advance(300)
    assert throttle.blocked(OTHER_SOURCE, IDENTITY) is None
    throttle.failed(SOURCE, "late&dirP")
    assert len(throttle) == 1


def test_login_throttle_evicts_the_oldest_beyond_its_bound() -> None:
    """At most ``max_keys`` keys: the oldest failure records go first, then the oldest blocks."""
    clock = SimulatedClock()
    throttle = LoginThrottle(max_keys=3, clock=clock)
    for _ in range(4):
        throttle.failed(SOURCE, "a")
    throttle.failed(SOURCE, "b")
    clock.advance(1)
    throttle.failed(SOURCE, "c")
    throttle.failed(SOURCE, "d")  # evicts b's failure record, not a's block
    assert len(throttle) == 3
    assert throttle.blocked(SOURCE, "a") is not None
    throttle.failed(SOURCE, "b")  # b starts again from one failure (evicts c)
    for _ in range(2):
        throttle.failed(SOURCE, "b")
    assert throttle.blocked(SOURCE, "b") is None
    # only blocks left: the oldest block goes
    for identity in ("x", "y", "z"):
        for _ in range(4):
            throttle.failed(SOURCE, identity)
    assert len(throttle) == 3
    assert [throttle.blocked(SOURCE, k) is not None for k in "axyz"] == [False, True, True, True]


def test_login_throttle_unblock() -> None:
    clock = SimulatedClock()
    throttle = LoginThrottle(clock=clock)
    for source, identity in ((SOURCE, IDENTITY), (OTHER_SOURCE, IDENTITY), (SOURCE, "d2&dirP")):
        for _ in range(4):
            throttle.failed(source, identity)
    assert throttle.unblock(IDENTITY, source=SOURCE) == 1
    assert throttle.blocked(SOURCE, IDENTITY) is None
    assert throttle.blocked(OTHER_SOURCE, IDENTITY) is not None
    assert throttle.unblock(IDENTITY) == 1  # every source
    assert throttle.unblock(IDENTITY) == 0
    assert throttle.blocked(OTHER_SOURCE, IDENTITY) is None
    assert throttle.blocked(SOURCE, "d2&dirP") is not None
    # failures before the block are forgotten too
    for _ in range(3):
        assert throttle.failed(SOURCE, IDENTITY) is None
    assert throttle.unblock(IDENTITY) == 0  # failures are not a block
    assert throttle.failed(SOURCE, IDENTITY) is None  # and they are forgotten
    clock.advance(300)  # an ended block is not lifted
    assert throttle.unblock("d2&dirP") == 0


def test_login_throttle_arguments() -> None:
    for kwargs, name in (
        ({"max_failures": 0}, "max_failures"),
        ({"window": 0}, "window"),
        ({"block": -1}, "block"),
        ({"max_keys": 0}, "max_keys"),
    ):
        with pytest.raises(InvalidArgument, match=name):
            LoginThrottle(**kwargs)  # type: ignore[arg-type]


def _sub_proof(secret: str, **fields: object) -> dict[str, object]:
    """The signature fields of a sub-device login of subP/s1, signed with ``secret``."""
    values = {"client_id": "c1", "timestamp": 1700000000000, "sign_method": "hmacsha256"}
    values.update(fields)
    params = sign_params(
        client_id=str(values["client_id"]),
        product_key="subP",
        device_key="s1",
        timestamp=str(values["timestamp"]),
    )
    values.setdefault("sign", sign(params, secret, SignMethod.parse(str(values["sign_method"]))))
    return values


def test_sub_device_signature_with_the_device_secret(registry: Registry) -> None:
    device = registry.get_device("subP", "s1")
    product = registry.get_product("subP")
    for mode in (None, "", 2, "2"):  # secure mode 2 is the default
        decision = authenticate_sub_device(
            device, product, **_sub_proof(device.device_secret), secure_mode=mode
        )
        assert decision == SubDeviceDecision(200) and decision.accepted
    # the timestamp signed as the text of the number sent (Node sends a number)
    signed = _sub_proof(device.device_secret, timestamp=1700000000000)
    assert authenticate_sub_device(device, product, **{**signed, "timestamp": 1.7e12}).accepted
    # no sign method: SHA-1
    proof = _sub_proof(device.device_secret, sign_method="sha1")
    assert authenticate_sub_device(device, product, **{**proof, "sign_method": None}).accepted


def test_sub_device_signature_refusals(registry: Registry) -> None:
    device = registry.get_device("subP", "s1")
    product = registry.get_product("subP")
    proof = _sub_proof(device.device_secret)
    cases = {
        "wrong secret": ({**proof, **_sub_proof("other")}, 742, "sign check failed"),
        "no sign": ({**proof, "sign": None}, 742, "sign check failed"),
        "sign method": ({**proof, "sign_method": "crc32"}, 742, "unknown sign method"),
        "mode 4": ({**proof, "secure_mode": 4}, 742, "secure mode 4"),
        "mode 9": ({**proof, "secure_mode": "9"}, 742, "SecureMode"),
        "mode text": ({**proof, "secure_mode": "two"}, 742, "invalid literal"),
        "no activation": ({**proof, "secure_mode": 3}, 770, "dynamic activate"),
    }
    for name, (fields, code, words) in cases.items():
        decision = authenticate_sub_device(device, product, **fields)  # type: ignore[arg-type]
        assert (name, decision.code) == (name, code)
        assert not decision.accepted
        assert words.lower() in decision.reason.lower()


def test_sub_device_dynamic_activation_uses_the_product_secret(registry: Registry) -> None:
    product = registry.create_product(
        "DynSub", product_key="dsP", node_type=NodeType.SUB_DEVICE, dynamic_activation=True
    )
    device = registry.register_device("dsP", device_key="s1")
    params = sign_params(client_id="c", product_key="dsP", device_key="s1", timestamp="1")
    fields = {"client_id": "c", "timestamp": "1", "sign_method": "sha256", "secure_mode": 3}
    decision = authenticate_sub_device(
        device, product, **fields, sign=sign(params, product.product_secret)
    )
    assert decision.accepted and decision.activation
    refused = authenticate_sub_device(
        device, product, **fields, sign=sign(params, device.device_secret)
    )
    assert refused.code == 742
    registry.activate("dsP", "s1")
    activated = registry.set_online("dsP", "s1")  # activated on its first login
    again = authenticate_sub_device(
        activated, product, **fields, sign=sign(params, product.product_secret)
    )
    assert again.code == 770
