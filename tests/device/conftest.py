"""Fixtures of the device SDK tests (helpers: ``device_helpers.py`` beside this file).

``lab``
    A started ``Lab(port=0)`` with seeded keys (``enos_sdk_helpers.running_lab``: it also
    checks that no thread started by the test outlives it).
``products``
    The test products of ``lab``: ``meter`` (direct, the SDK test model), ``gateway`` and
    ``sub`` (a sub-device product with the SDK test model).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from device_helpers import Products
from enos_sdk_helpers import running_lab, sdk_product

from enos_lab import Lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A started lab on 127.0.0.1 (free port) with seeded keys."""
    with running_lab(tmp_path / "lab", seed=12) as running:
        yield running


@pytest.fixture
def products(lab: Lab) -> Products:
    """The test products of ``lab``."""
    meter = sdk_product(lab, "Meter")
    gateway = lab.create_product("Gateway", node_type="gateway")
    sub = sdk_product(lab, "Sub meter", node_type="sub_device")
    return Products(meter.product_key, gateway.product_key, sub.product_key)


@pytest.fixture(autouse=True)
def _one_backend(anyio_backend: str) -> str:
    """Run each async test here once, on asyncio: a test that names ``anyio_backend`` is not
    copied for every installed backend (the copies would all run on asyncio anyway)."""
    return anyio_backend
