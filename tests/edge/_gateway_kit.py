"""Helpers of the edge gateway tests (the fixtures are in ``conftest.py`` beside this file):
the site a test builds its edge from, a quick edge configuration, stepping the clock slot by
slot with values that change, and what the lab's tap saw stored."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _edge_kit import INVERTER_VALUES, METER_VALUES

from enos_lab import Lab, PointStored
from enos_lab.edge import (
    Edge,
    EdgeConfig,
    EdgeDevice,
    FieldDevice,
    FieldServer,
    PointTable,
    advance_edges,
)
from enos_lab.registry import Device
from enos_lab.tap import TapSubscription

START = datetime(2025, 6, 1, tzinfo=UTC)
"""The simulated clock's start: on a slot of every interval used here."""
INTERVAL = 10.0
"""Poll interval of the test edges. [s]"""
WAIT = 10.0
"""Longest real-time wait for a connection. [s]"""


def quick(**settings: Any) -> EdgeConfig:
    """An edge configuration for tests: polls every 10 s of the lab's clock, Modbus timeouts of
    1 s (real time: a reply from a loopback server on a busy machine can take longer than a
    tenth of a second, and a healthy device that times out would miss a slot)."""
    settings.setdefault("interval", INTERVAL)
    settings.setdefault("timeout", 1.0)
    return EdgeConfig(**settings)


@dataclass
class Site:
    """A Modbus gateway with an inverter (unit 1) and a meter (unit 2), their sub-device
    products, and an edge registered in the lab (``edge``: its record)."""

    lab: Lab
    field: FieldServer
    inverter_map: PointTable
    meter_map: PointTable
    inverter_product: str
    meter_product: str
    edge: Device
    cache_dir: Path

    @property
    def edge_keys(self) -> tuple[str, str]:
        """The edge's ``(product_key, serial_number)``."""
        return (self.edge.product_key, self.edge.device_key)

    def inverter(self, device_key: str = "inv1", secret: str | None = None) -> EdgeDevice:
        """The inverter as a sub-device (registered by the edge unless ``secret``)."""
        field = FieldDevice("inverter", "127.0.0.1", self.field.port, 1, self.inverter_map)
        return EdgeDevice(field, self.inverter_product, device_key, secret)

    def meter(self, device_key: str = "meter1", secret: str | None = None) -> EdgeDevice:
        """The meter as a sub-device (registered by the edge unless ``secret``)."""
        field = FieldDevice("meter", "127.0.0.1", self.field.port, 2, self.meter_map)
        return EdgeDevice(field, self.meter_product, device_key, secret)

    def make_edge(
        self,
        devices: Iterable[EdgeDevice],
        *,
        port: int | None = None,
        config: EdgeConfig | None = None,
        serial_number: str | None = None,
        secret: str | None = None,
    ) -> Edge:
        """An edge (not started) with ``devices``, to the hub (or to ``port`` on 127.0.0.1: a
        link in front of it), on the lab's clock, seeded jitter."""
        return Edge(
            "127.0.0.1",
            port or self.lab.port,
            self.edge.product_key,
            serial_number or self.edge.device_key,
            secret or self.edge.device_secret,
            devices,
            cache_dir=self.cache_dir,
            config=config or quick(),
            clock=self.lab.clock,
            rng=random.Random(3),
        )

    def set_slot(self, k: int) -> None:
        """Field values that tell slot ``k`` apart: active power ``k`` kW (inverter) and
        ``k + 0.5`` kW (meter)."""
        self.field.set_model_values(1, INVERTER_VALUES | {"active_power": float(k)})
        self.field.set_model_values(2, METER_VALUES | {"active_power": k + 0.5})


def slot_of(moment: datetime) -> int:
    """The slot number of a time: 0 at START, one per INTERVAL. [-]"""
    return round((moment - START) / timedelta(seconds=INTERVAL))


async def run_slots(site: Site, edges: list[Edge], first: int, count: int) -> None:
    """Step the clock ``count`` slots from slot ``first - 1``: before each slot the field holds
    that slot's values (:meth:`Site.set_slot`); waits for the edges before and after each."""
    for edge in edges:
        await edge.idle()  # a poll due now (the first, at start) reads the values it had
    for k in range(first, first + count):
        site.set_slot(k)
        await advance_edges(edges, INTERVAL)


class Stored:
    """The active power values the lab's tap reports stored, in the order they were stored."""

    def __init__(self, lab: Lab) -> None:
        self._sub: TapSubscription = lab.subscribe(
            PointStored, point_id="active_power", maxsize=100_000
        )
        self.events: list[PointStored] = []

    def take(self) -> list[PointStored]:
        """Everything stored so far: the hub reports a commit to the tap before it replies, so
        once an edge is idle (its posts answered) their events are here."""
        for event in self._sub.drain():
            assert isinstance(event, PointStored)
            self.events.append(event)
        return self.events

    def of(self, device_key: str) -> list[PointStored]:
        """The events of one device."""
        return [e for e in self.events if e.device_key == device_key]

    def counts(self, device_key: str) -> Counter[int]:
        """How many times each slot of one device was stored."""
        return Counter(slot_of(e.time) for e in self.of(device_key))

    def close(self) -> None:
        """Unsubscribe."""
        self._sub.close()
