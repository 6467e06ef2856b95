"""Connection scenarios 2 and 3: an edge on site, or at the cloud side, with its field devices.

Both build the same site (protocol reference 14): PV inverters and energy meters, real
pymodbus servers behind one Modbus TCP gateway (:class:`~enos_lab.edge.FieldServer`, one unit
each) whose registers follow simulated profiles (:class:`FieldSimulator`), and an
:class:`~enos_lab.edge.Edge` registered by serial number that registers, attaches and logs in
their sub-devices itself, as EnOS Edge does. They differ in which network may fail:

- **on-site edge** (:func:`onsite_edge`): the edge stands beside its field devices and talks to
  the hub over a wide-area link, a :class:`~enos_lab.sim.Link`. When that link fails
  (:meth:`EdgeScenario.cut_hub_link`) the edge keeps collecting into its local cache and, once
  the link is back, resumes the backlog in chronological order while live data flows.
- **remote edge** (:func:`remote_edge`): the edge runs at the cloud side, beside the hub, and
  polls the field devices over the wide-area network, a :class:`FieldLink`. When that link
  fails (:meth:`EdgeScenario.cut_field_link`) polls fail with counted connection errors and the
  stored series has a gap; nothing is cached, since there is nothing to collect.
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING

import pandas as pd

from ..edge import (
    CacheStats,
    Edge,
    EdgeConfig,
    EdgeDevice,
    EdgeStats,
    FieldDevice,
    FieldServer,
    PointTable,
    advance_edges,
)
from ..errors import InvalidArgument
from ..sim import Link, PartitionMode, profile_for
from ._base import FieldSimulator, Scenario, SimulatedUnit, energy_meter_table, inverter_table
from ._field_link import FieldLink

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["EdgeScenario", "onsite_edge", "remote_edge"]


class EdgeScenario(Scenario):
    """Scenario 2 or 3, running (made by :func:`onsite_edge` or :func:`remote_edge`).

    ``edge`` is the edge (on the lab's loop), ``field`` its Modbus gateway, ``hub_link`` the
    on-site edge's link to the hub (``None`` for the remote edge), ``field_link`` the remote
    edge's link to the field (``None`` on site). :meth:`status` has one row per field device.
    """

    def __init__(
        self,
        lab: Lab,
        *,
        edge: Edge,
        field: FieldServer,
        simulator: FieldSimulator,
        hub_link: Link | None,
        field_link: FieldLink | None,
    ) -> None:
        super().__init__(lab)
        self.edge = edge
        """The edge."""
        self.field = field
        """The field devices' Modbus TCP gateway (one unit per device)."""
        self.simulator = simulator
        """What drives the field devices' registers."""
        self.hub_link = hub_link
        """The on-site edge's link to the hub, or ``None``."""
        self.field_link = field_link
        """The remote edge's link to its field devices, or ``None``."""

    # -- what it shows --------------------------------------------------------------------------

    def status(self) -> pd.DataFrame:
        """The edge's status: one row per field device (:data:`~enos_lab.edge.STATUS_COLUMNS`)."""
        return self._call(self.edge.status())

    @property
    def stats(self) -> EdgeStats:
        """The edge's counters (a snapshot)."""
        return self.edge.stats

    def cache_stats(self) -> CacheStats:
        """What the edge's local cache holds and lost."""
        return self._call(self.edge.cache.stats())

    # -- faults ---------------------------------------------------------------------------------

    def cut_hub_link(self, minutes: float | None = None) -> None:
        """Cut the on-site edge's link to the hub (its connection is reset and reconnects are
        refused) for ``minutes`` of the lab's clock (``None``: until
        :meth:`restore_hub_link`)."""
        link = self._hub_link()
        self._call(self._cut_hub(link, minutes))

    def restore_hub_link(self) -> None:
        """End a cut of the hub link now."""
        link = self._hub_link()
        self._call(self._heal_hub(link))

    def cut_field_link(self, minutes: float | None = None) -> None:
        """Cut the remote edge's link to its field devices (connections reset, new ones
        refused) for ``minutes`` of the lab's clock (``None``: until
        :meth:`restore_field_link`)."""
        link = self._field_link()
        self._call(self._cut_field(link, minutes))

    def restore_field_link(self) -> None:
        """End a cut of the field link now."""
        link = self._field_link()
        self._call(self._heal_field(link))

    def _hub_link(self) -> Link:
        if self.hub_link is None:
            raise InvalidArgument(
                "this edge runs at the cloud side, beside the hub: it has no hub link to cut "
                "(cut_field_link() cuts the network to its field devices)"
            )
        return self.hub_link

    def _field_link(self) -> FieldLink:
        if self.field_link is None:
            raise InvalidArgument(
                "this edge stands beside its field devices: it has no field link to cut "
                "(cut_hub_link() cuts its link to the hub)"
            )
        return self.field_link

    async def _cut_hub(self, link: Link, minutes: float | None) -> None:
        link.device(*self.edge.keys).partition(PartitionMode.CUT)
        self._later(minutes, lambda: link.device(*self.edge.keys).heal())

    async def _heal_hub(self, link: Link) -> None:
        link.device(*self.edge.keys).heal()

    async def _cut_field(self, link: FieldLink, minutes: float | None) -> None:
        await link.partition()
        self._later(minutes, link.heal)

    async def _heal_field(self, link: FieldLink) -> None:
        link.heal()

    # -- lifetime ---------------------------------------------------------------------------------

    async def _advance(self, seconds: float) -> None:
        await advance_edges([self.edge], seconds)

    async def _stop(self) -> None:
        await self.edge.stop()
        await self.simulator.stop()
        if self.hub_link is not None:
            await self.hub_link.close()
        if self.field_link is not None:
            await self.field_link.close()
        await self.field.stop()


def onsite_edge(
    lab: Lab,
    *,
    serial_number: str = "EDGE-ONSITE-1",
    inverters: int = 2,
    meters: int = 1,
    interval: float = 60.0,
    config: EdgeConfig | None = None,
    seed: int = 0,
) -> EdgeScenario:
    """Start connection scenario 2 in ``lab`` with one call: an edge on site, beside
    ``inverters`` PV inverters and ``meters`` energy meters, polling them every ``interval``
    seconds and reaching the hub over a link that may fail (:meth:`EdgeScenario.cut_hub_link`:
    the edge caches, then resumes). ``config`` overrides the edge's settings (its
    ``interval`` included); ``seed`` makes the profiles and the reconnect jitter repeatable.
    [s]"""
    return _site(lab, serial_number, inverters, meters, interval, config, seed, remote=False)


def remote_edge(
    lab: Lab,
    *,
    serial_number: str = "EDGE-REMOTE-1",
    inverters: int = 2,
    meters: int = 1,
    interval: float = 60.0,
    config: EdgeConfig | None = None,
    seed: int = 0,
) -> EdgeScenario:
    """Start connection scenario 3 in ``lab`` with one call: an edge at the cloud side,
    beside the hub, polling ``inverters`` PV inverters and ``meters`` energy meters on a
    remote site every ``interval`` seconds over a network link that may fail
    (:meth:`EdgeScenario.cut_field_link`: counted connection errors, a gap in the data).
    ``config`` and ``seed`` as for :func:`onsite_edge`. [s]"""
    return _site(lab, serial_number, inverters, meters, interval, config, seed, remote=True)


def _site(  # noqa: PLR0917
    lab: Lab,
    serial_number: str,
    inverters: int,
    meters: int,
    interval: float,
    config: EdgeConfig | None,
    seed: int,
    *,
    remote: bool,
) -> EdgeScenario:
    if inverters < 0 or meters < 0 or inverters + meters < 1 or inverters + meters > 247:
        raise InvalidArgument(
            f"a site needs 1..247 field devices, got {inverters} inverter(s) and {meters} meter(s)"
        )
    config = config or EdgeConfig(interval=interval)
    where = "cloud-side edge" if remote else "on-site edge"
    inverter_product = lab.create_product(
        f"PV inverter ({where} {serial_number})", model_id="pv_inverter", node_type="sub_device"
    )
    meter_product = lab.create_product(
        f"Energy meter ({where} {serial_number})", model_id="energy_meter", node_type="sub_device"
    )
    edge_device = lab.register_edge(serial_number, name=f"{where} {serial_number}")
    units: list[tuple[str, str, PointTable, int]] = []  # name, product key, table, unit
    for i in range(1, inverters + 1):
        units.append((f"inverter-{i}", inverter_product.product_key, inverter_table(i), i))
    for i in range(1, meters + 1):
        unit = inverters + i
        units.append((f"meter-{i}", meter_product.product_key, energy_meter_table(unit), unit))
    cache_dir = lab.edge_cache_dir(serial_number)

    async def start() -> EdgeScenario:
        async with contextlib.AsyncExitStack() as stack:
            field = await FieldServer(
                [table for _, _, table, _ in units], name=f"site of {serial_number}"
            ).start()
            stack.push_async_callback(field.stop)
            field_link = hub_link = None
            poll_host, poll_port = field.host, field.port
            host, port = lab.host, lab.port
            if remote:
                field_link = await FieldLink(field.host, field.port).start()
                stack.push_async_callback(field_link.close)
                poll_host, poll_port = field_link.host, field_link.port
            else:
                hub_link = await Link(host, port, seed=seed, clock=lab.clock).start()
                stack.push_async_callback(hub_link.close)
                host, port = hub_link.host, hub_link.port
            simulated, devices = [], []
            for index, (name, product_key, table, unit) in enumerate(units):
                profile = profile_for(table.model.model_id)
                unit_seed = seed * 1000 + index
                state = profile.state(unit_seed, lab.clock.now())
                simulated.append(SimulatedUnit(field, unit, profile, state, unit_seed))
                devices.append(
                    EdgeDevice(
                        FieldDevice(name, poll_host, poll_port, unit, table),
                        product_key,
                        f"{serial_number}-{name}",
                        display_name=f"{name} of {serial_number}",
                    )
                )
            simulator = await FieldSimulator(lab.clock, config.interval, simulated).start()
            stack.push_async_callback(simulator.stop)
            edge = Edge(
                host,
                port,
                edge_device.product_key,
                serial_number,
                edge_device.device_secret,
                devices,
                cache_dir=cache_dir,
                config=config,
                clock=lab.clock,
                rng=random.Random(seed),
            )
            await edge.start()
            stack.pop_all()  # started: the scenario owns them now
        return EdgeScenario(
            lab,
            edge=edge,
            field=field,
            simulator=simulator,
            hub_link=hub_link,
            field_link=field_link,
        )

    return lab.run(start())
