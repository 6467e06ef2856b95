"""Fixtures of the security battery: a started lab on a real TCP port (127.0.0.1, port 0).

``lab`` is a lab with EnOS authentication and seeded keys; ``make_lab(**kwargs)`` starts one
with other settings (``hub_config``, ``iothub_config`` ...). Both are stopped after the test.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _attack_kit import MakeLab

from enos_lab import Lab


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[MakeLab]:
    """``make_lab(**kwargs)``: a started ``Lab(tmp_path / "labN", port=0, ...)``."""
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        kwargs.setdefault("rng", random.Random(len(labs) + 1))
        lab = Lab(tmp_path / f"lab{len(labs)}", port=0, **kwargs)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.stop()


@pytest.fixture
def lab(make_lab: MakeLab) -> Lab:
    """A started lab with EnOS authentication."""
    return make_lab()
