"""Fixtures of the connection scenario tests.

``lab``
    A started lab on a :class:`~enos_lab.clock.SimulatedClock` at 2025-06-01T06:00Z (free
    port, seeded keys; ``enos_sdk_helpers.running_lab`` checks that no thread outlives it).
    The scenarios run on its loop; the tests drive them with plain calls, as a notebook does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _scenario_kit import START
from enos_sdk_helpers import running_lab

from enos_lab import Lab, SimulatedClock


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A started lab on a simulated clock."""
    with running_lab(tmp_path / "lab", seed=9, clock=SimulatedClock(START)) as running:
        yield running
