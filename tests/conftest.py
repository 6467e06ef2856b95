"""Fixtures and hooks shared by every test directory (each directory's ``conftest.py`` adds
its own: ``tests/hub`` the in-memory hub, ``tests/iothub`` the IoT hub environment, ...).

Async tests
    Every ``async def`` test runs on asyncio through the anyio pytest plugin; no marker is
    needed, except for parametrized ones: their module sets ``pytestmark = pytest.mark.anyio``
    (the plugin parametrizes the backend while it collects). ``anyio_backend`` is
    ``"asyncio"``: the hub is asyncio-only.

``make_lab``
    ``make_lab(**kwargs)`` starts a ``Lab(tmp_path / "labN", port=0, rng=random.Random(N + 1),
    **kwargs)`` (N = 0, 1, ... per test; pass ``rng=`` to choose the seed) on 127.0.0.1 and
    stops it after the test.

Helper modules beside this file are importable from every test module (pytest puts this
directory on ``sys.path``): ``enos_sdk_helpers`` wraps the official EnOS device SDK for tests
(a lab whose threads are checked on exit, SDK clients that always stop their network thread,
the SDK's log and the hub's connection events as things a test can wait for).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enos_lab import Lab


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every ``async def`` test on asyncio (anyio plugin)."""
    for item in items:
        func = getattr(item, "function", None)
        if func is not None and inspect.iscoroutinefunction(func):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture
def anyio_backend() -> str:
    """The hub is asyncio-only."""
    return "asyncio"


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """``make_lab(**kwargs)``: a started ``Lab(tmp_path / "labN", port=0, ...)``, seeded keys."""
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        kwargs.setdefault("rng", random.Random(len(labs) + 1))
        lab = Lab(tmp_path / f"lab{len(labs)}", port=0, **kwargs)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.stop()
