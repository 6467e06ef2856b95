"""Helpers of the device SDK tests (the fixtures are in ``conftest.py`` beside this file):
the lab-side tools a test needs (kicking a device's connection), fast reconnect policies and
bounded waits.

Async tests run on the test's own event loop; the lab runs on its thread, so a test calls
the lab's blocking facade only for what does not need the device to answer, and the
``a``-prefixed coroutine forms (``await lab.asend_command(...)``) otherwise.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from enos_lab import Lab
from enos_lab.device import Backoff
from enos_lab.hub import Hub
from enos_lab.tap import PresenceChanged

WAIT = 5.0  # [s] upper bound of every wait for the lab or a device
TIMEOUT = 5.0  # [s] the devices' request timeout in these tests
FAST = Backoff(initial=0.02, maximum=0.1)
"""A reconnect policy for tests: attempts within a tenth of a second."""


@dataclass(frozen=True)
class Products:
    """The product keys of the test products."""

    meter: str
    gateway: str
    sub: str


async def _kick(hub: Hub, product_key: str, device_key: str) -> int:
    closed = 0
    for key, info in list(hub.clients.items()):
        attrs = info.attributes
        if (attrs.get("product_key"), attrs.get("device_key")) == (product_key, device_key):
            closed += await hub.disconnect_client(key)
    return closed


async def kick(lab: Lab, product_key: str, device_key: str) -> int:
    """Close the device's connection from the hub's side (the device sees a lost connection;
    presence reason ``kicked``); returns how many connections were closed."""
    return await lab.arun(_kick(lab.hub, product_key, device_key))


def seeded(seed: int = 7) -> random.Random:
    """A seeded random source for reconnect jitter."""
    return random.Random(seed)


async def wait_until(event: asyncio.Event, what: str) -> None:
    """Wait (bounded) for ``event``."""
    try:
        await asyncio.wait_for(event.wait(), WAIT)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {WAIT} s") from None


async def _sessions(hub: Hub, product_key: str, device_key: str) -> list[tuple[str, int]]:
    return [
        (info.client_id, int(str(info.attributes.get("secure_mode", 0))))
        for info in hub.clients.values()
        if (info.attributes.get("product_key"), info.attributes.get("device_key"))
        == (product_key, device_key)
    ]


async def sessions(lab: Lab, product_key: str, device_key: str) -> list[tuple[str, int]]:
    """``(client id, secure mode)`` of the device's connections to the hub now."""
    return await lab.arun(_sessions(lab.hub, product_key, device_key))


class PresenceWatch:
    """The presence changes of the lab's devices, from the device-data tap, as a test can
    wait for them (a device's disconnection reaches the hub a moment after the client
    closed its socket)."""

    def __init__(self, lab: Lab) -> None:
        self._sub = lab.subscribe(PresenceChanged)
        self.seen: list[PresenceChanged] = []

    async def reasons(self, product_key: str, device_key: str, count: int) -> list[str]:
        """The device's first ``count`` presence reasons (waits for them)."""

        def mine() -> list[str]:
            return [
                event.reason
                for event in self.seen
                if (event.product_key, event.device_key) == (product_key, device_key)
            ]

        while len(mine()) < count:
            try:
                event = await asyncio.wait_for(self._sub.aget(), WAIT)
            except TimeoutError:
                raise AssertionError(
                    f"{product_key}/{device_key}: {count} presence changes expected within "
                    f"{WAIT} s, got {mine()}"
                ) from None
            assert isinstance(event, PresenceChanged)
            self.seen.append(event)
        return mine()[:count]

    def close(self) -> None:
        """Unsubscribe."""
        self._sub.close()
