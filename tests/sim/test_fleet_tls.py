"""Simulated fleets over the lab's TLS listener: server authentication for a plain product,
mutual TLS with a certificate per device for a product that requires certificates."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from enos_lab import Lab, SimulatedClock
from enos_lab.errors import InvalidArgument

T0 = datetime(2024, 6, 1, tzinfo=UTC)


def test_fleets_over_tls_and_mutual_tls(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(clock=SimulatedClock(T0), rng=random.Random(5), tls_port=0)
    plain = lab.create_product("PV", model_id="pv_inverter")
    secure = lab.create_product("Secure PV", model_id="pv_inverter", certificate_required=True)
    server_auth = lab.simulate(plain.product_key, count=2, seed=1, tls=True)
    mutual = lab.simulate(secure.product_key, count=3, seed=2, tls=True)
    server_auth.run(duration=timedelta(minutes=3))  # one clock for both fleets
    assert server_auth.totals()["replied"] == 6 and mutual.totals()["replied"] == 9
    assert lab.refused_logins().empty
    # every device of the secure product has a certificate of its own, bound to it
    certificates = lab.certificates(secure.product_key)
    assert sorted(certificates["device_key"]) == mutual.device_keys
    assert (certificates["status"] == "valid").all()
    for device_key in mutual.device_keys:
        frame = lab.store.query_points(device_key, product_key=secure.product_key)
        assert len(frame) > 0
    # TLS hides the MQTT packets a Link reads: the two do not mix
    with pytest.raises(InvalidArgument, match="not both"):
        lab.simulate(secure.product_key, count=1, tls=True, link=True)
