"""Fixtures for the IoT Hub tests (helpers in ``tests/iothub/_iothub_kit.py``).

Async tests run on asyncio through the anyio pytest plugin (see ``tests/conftest.py``: every
``async def`` test is marked automatically). ``env`` is a started :class:`Env`; override the
``iothub_config`` and ``store_config`` fixtures to change the IoT Hub and store settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _iothub_kit import Env

from enos_lab.iothub import IotHubConfig
from enos_lab.store import StoreConfig


@pytest.fixture
def iothub_config() -> IotHubConfig:
    """The IotHubConfig of ``env`` (override in a test module)."""
    return IotHubConfig(activation_delay=0.05, activation_resend=0.2, activation_timeout=5.0)


@pytest.fixture
def store_config() -> StoreConfig | None:
    """The StoreConfig of ``env`` (None: the defaults; override or parametrize in a test)."""
    return None


@pytest.fixture
async def env(
    tmp_path: Path, iothub_config: IotHubConfig, store_config: StoreConfig | None
) -> AsyncIterator[Env]:
    """A started hub with an IoT Hub over a real registry and store."""
    made = Env(tmp_path, iothub_config, store_config)
    await made.hub.start()
    try:
        yield made
    finally:
        await made.hub.stop()
        await made.iothub.stop()
        made.store.close()
        made.registry.close()
