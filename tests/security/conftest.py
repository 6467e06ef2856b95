"""Fixtures of the security battery: a started lab on a real TCP port (127.0.0.1, port 0).

``lab`` is a lab with EnOS authentication and seeded keys; ``make_lab(**kwargs)`` (from
``tests/conftest.py``) starts one with other settings (``hub_config``, ``iothub_config`` ...).
Both are stopped after the test.
"""

from __future__ import annotations

import pytest
from _attack_kit import MakeLab

from enos_lab import Lab


@pytest.fixture
def lab(make_lab: MakeLab) -> Lab:
    """A started lab with EnOS authentication."""
    return make_lab()
