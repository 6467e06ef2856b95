"""Fixtures of the edge gateway tests (helpers: ``_gateway_kit.py`` beside this file).

``clock``
    The lab's :class:`~enos_lab.clock.SimulatedClock`, at ``_gateway_kit.START``.
``lab``
    A started lab on that clock (free port, seeded keys; ``enos_sdk_helpers.running_lab``
    checks that no thread outlives it).
``site``
    Field devices and their sub-device products: a Modbus gateway serving a Vendor A
    inverter (unit 1) and an energy meter (unit 2), running on the test's loop, and an edge
    registered in the lab (``_gateway_kit.Site``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _edge_kit import INVERTER_VALUES, METER_VALUES, inverter_table, meter_table
from _gateway_kit import START, Site
from enos_sdk_helpers import running_lab

from enos_lab import Lab, SimulatedClock
from enos_lab.edge import FieldServer


@pytest.fixture
def clock() -> SimulatedClock:
    """The lab's simulated clock."""
    return SimulatedClock(START)


@pytest.fixture
def lab(tmp_path: Path, clock: SimulatedClock) -> Iterator[Lab]:
    """A started lab on the simulated clock."""
    with running_lab(tmp_path / "lab", seed=5, clock=clock) as running:
        yield running


@pytest.fixture
async def site(lab: Lab, tmp_path: Path) -> AsyncIterator[Site]:
    """An inverter (unit 1) and a meter (unit 2) behind one Modbus gateway, their products,
    and a registered edge."""
    inverter = await lab.acreate_product("Inverter", model_id="pv_inverter", node_type="sub_device")
    meter = await lab.acreate_product("Meter", model_id="energy_meter", node_type="sub_device")
    edge = await lab.aregister_edge("SN-0001")
    inverter_map, meter_map = inverter_table(), meter_table()
    async with FieldServer([inverter_map, meter_map], name="site") as field:
        field.set_model_values(1, INVERTER_VALUES)
        field.set_model_values(2, METER_VALUES)
        yield Site(
            lab,
            field,
            inverter_map,
            meter_map,
            inverter.product_key,
            meter.product_key,
            edge,
            tmp_path / "edge-cache",
        )
