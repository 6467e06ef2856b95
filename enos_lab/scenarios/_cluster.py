"""Connection scenario 4: a cloud edge cluster sharing a pool of PV devices, with failover.

Theory of operation
-------------------
Several edge instances (:class:`~enos_lab.edge.Edge`, each a gateway with its own serial
number) run at the cloud side and share a pool of PV inverters known by unique id (their
device keys), as EnOS Cloud Edge clusters do for PV (protocol reference 14). The cluster's
coordinator, cloud side, decides who polls what:

- **ownership by rendezvous hashing** (highest random weight, :func:`rendezvous_owner`): a
  device belongs to the live instance with the highest hash of (device id, instance). When an
  instance leaves or joins, only the devices it owned, or that it now wins, move; the others
  stay where they are.
- **live** is what the hub sees: the coordinator listens to the lab's tap for the presence of
  the instances' gateways. An instance whose connection drops (killed abruptly: its
  connection reset under it, no DISCONNECT) is dead at once; one that logs in again is live.
- **handover**: a device leaving a live instance is taken off it (no longer polled from the
  next slot, its queued samples sent, logged out and detached:
  :meth:`~enos_lab.edge.Edge.remove_devices`); a device leaving a dead instance is detached
  cloud-side (the registry's topology: the dead gateway cannot do it). The new owner then
  attaches it, logs it in and polls it from the next slot
  (:meth:`~enos_lab.edge.Edge.add_devices`).

Every instance polls on the same epoch-aligned slots and a new owner starts at the slot after
the handover, so every slot of every device is polled by exactly one instance: no sample is
lost and none is doubled, as long as the handover is done within the slot in which the
instance died (with a :class:`~enos_lab.clock.SimulatedClock`, :meth:`ClusterScenario.kill`
returns once it is). What a dying instance had collected but not yet sent dies with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..clock import SimulatedClock
from ..edge import (
    STATUS_COLUMNS,
    Edge,
    EdgeConfig,
    EdgeDevice,
    FieldDevice,
    FieldServer,
    advance_edges,
)
from ..errors import InvalidArgument, RegistryError
from ..sim import Link, PartitionMode, profile_for
from ..tap import PresenceChanged, TapCallback, TapEvent
from ._base import FieldSimulator, Scenario, SimulatedUnit, inverter_table

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["ClusterScenario", "edge_cluster", "rendezvous_owner"]

log = logging.getLogger("enos_lab.scenarios")

_WAIT = 10.0  # [s, real time] longest wait for the hub to see an instance come or go


def _weight(device_id: str, instance: str) -> int:
    digest = hashlib.blake2b(f"{device_id}\x00{instance}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(device_id: str, instances: Iterable[str]) -> str | None:
    """The instance that owns ``device_id`` among ``instances`` by rendezvous (highest random
    weight) hashing; ``None`` without instances. Deterministic: the same for everyone."""
    return max(instances, key=lambda i: (_weight(device_id, i), i), default=None)


@dataclass(slots=True)
class _Instance:
    serial: str
    secret: str
    cache_dir: Path
    edge: Edge | None = None
    alive: bool = False


class ClusterScenario(Scenario):
    """Scenario 4, running (made by :func:`edge_cluster`): see the module docstring.

    :meth:`kill` an instance (abruptly), :meth:`revive` it; :meth:`assignments` says who owns
    which device, :meth:`status` how each instance's devices fare.
    """

    def __init__(
        self,
        lab: Lab,
        *,
        product_key: str,
        instances: dict[str, _Instance],
        pool: dict[str, EdgeDevice],
        field: FieldServer,
        simulator: FieldSimulator,
        link: Link,
        config: EdgeConfig,
        seed: int,
    ) -> None:
        super().__init__(lab)
        self.product_key = product_key
        """The edge product of the instances."""
        self.pool = pool
        """The PV devices by unique id (device key)."""
        self.field = field
        """The PV devices' Modbus TCP endpoint (one unit each)."""
        self.simulator = simulator
        """What drives the PV devices' registers."""
        self.link = link
        """The instances' link to the hub (kill cuts an instance's connection here)."""
        self.config = config
        """The instances' settings."""
        self._seed = seed
        self._instances = instances
        self._owner: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._busy = False
        self._coordinating = False
        self._task: asyncio.Task[None] | None = None
        self._callback: TapCallback | None = None
        self.moves = 0
        """Devices handed from one instance to another so far. [-]"""

    # -- what it shows ----------------------------------------------------------------------------

    @property
    def instances(self) -> dict[str, Edge | None]:
        """Each instance's edge by serial number (``None`` while dead)."""
        return {serial: inst.edge for serial, inst in self._instances.items()}

    @property
    def live(self) -> list[str]:
        """The serial numbers of the live instances."""
        return [serial for serial, inst in self._instances.items() if inst.alive]

    def assignments(self) -> pd.DataFrame:
        """One row per device: ``device_key``, the ``instance`` polling it and whether that
        instance is ``alive``."""
        rows = [
            {
                "device_key": name,
                "instance": self._owner.get(name),
                "alive": self._owner.get(name) in self.live,
            }
            for name in self.pool
        ]
        return pd.DataFrame(rows, columns=["device_key", "instance", "alive"])

    def status(self) -> pd.DataFrame:
        """The live instances' edge status rows (:data:`~enos_lab.edge.STATUS_COLUMNS`), with
        the ``instance`` first."""
        return self._call(self._status())

    async def _status(self) -> pd.DataFrame:
        frames = []
        for serial, inst in self._instances.items():
            if inst.edge is None:
                continue
            frame = await inst.edge.status()
            frame.insert(0, "instance", serial)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["instance", *STATUS_COLUMNS])
        return pd.concat(frames, ignore_index=True)

    # -- faults -----------------------------------------------------------------------------------

    def kill(self, serial_number: str) -> None:
        """Kill an instance abruptly: its connection to the hub is reset under it (no
        DISCONNECT) and it stops at once, dropping what it had not sent. Returns once the hub
        has seen it go and its devices are handed to the live instances."""
        self._call(self._kill(serial_number))

    async def akill(self, serial_number: str) -> None:
        """Coroutine form of :meth:`kill`."""
        await self._acall(self._kill(serial_number))

    def revive(self, serial_number: str) -> None:
        """Start a killed instance again: it logs in, and the devices it wins by rendezvous
        hashing are handed back to it (taken off their current owners first)."""
        self._call(self._revive(serial_number))

    async def arevive(self, serial_number: str) -> None:
        """Coroutine form of :meth:`revive`."""
        await self._acall(self._revive(serial_number))

    def _instance(self, serial_number: str) -> _Instance:
        try:
            return self._instances[serial_number]
        except KeyError:
            raise InvalidArgument(
                f"no instance {serial_number!r} in the cluster (instances: "
                f"{', '.join(self._instances)})"
            ) from None

    async def _kill(self, serial_number: str) -> None:
        inst = self._instance(serial_number)
        edge = inst.edge
        if edge is None:
            raise InvalidArgument(f"instance {serial_number!r} is dead already")
        self.link.device(self.product_key, serial_number).partition(PartitionMode.CUT)
        inst.edge = None
        await edge.abort()
        await self._until(lambda: not inst.alive, f"the hub to see {serial_number} gone")
        await self._idle()

    async def _revive(self, serial_number: str) -> None:
        inst = self._instance(serial_number)
        if inst.edge is not None:
            raise InvalidArgument(f"instance {serial_number!r} is running")
        self.link.device(self.product_key, serial_number).heal()
        inst.edge = self._make_edge(inst, [])
        await inst.edge.start()
        await self._until(lambda: inst.alive, f"the hub to see {serial_number} back")
        await self._idle()

    # -- coordination -----------------------------------------------------------------------------

    def _make_edge(self, inst: _Instance, devices: list[EdgeDevice]) -> Edge:
        index = list(self._instances).index(inst.serial)
        return Edge(
            self.link.host,
            self.link.port,
            self.product_key,
            inst.serial,
            inst.secret,
            devices,
            cache_dir=inst.cache_dir,
            config=self.config,
            clock=self.clock,
            rng=random.Random(self._seed * 100 + index),
        )

    async def _start(self) -> None:
        serials = list(self._instances)
        owner = {name: rendezvous_owner(name, serials) for name in self.pool}
        for serial, inst in self._instances.items():
            mine = [self.pool[name] for name, o in owner.items() if o == serial]
            inst.edge = self._make_edge(inst, mine)
        self._callback = self.lab.tap.add_callback(
            self._presence, kinds=PresenceChanged, product_key=self.product_key
        )
        for inst in self._instances.values():
            assert inst.edge is not None
            await inst.edge.start()
            inst.alive = True
        self._owner = {name: serial for name, serial in owner.items() if serial is not None}
        self._task = asyncio.get_running_loop().create_task(
            self._coordinate(), name="edge cluster coordinator"
        )
        self._coordinating = True

    def _presence(self, event: TapEvent) -> None:
        """The hub saw an instance come or go (on the lab's loop)."""
        assert isinstance(event, PresenceChanged)
        inst = self._instances.get(event.device_key)
        if inst is None:
            return
        alive = event.online and inst.edge is not None
        if alive != inst.alive:
            inst.alive = alive
            log.info(
                "edge cluster: instance %s %s (%s)",
                inst.serial,
                "joined" if alive else "left",
                event.reason,
            )
            if self._coordinating:
                self._busy = True
                self._wake.set()
        self._progress.set()

    async def _coordinate(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                await self._rebalance()
            except Exception:
                log.exception("edge cluster: rebalancing failed")
            finally:
                self._busy = self._wake.is_set()
                self._progress.set()

    async def _rebalance(self) -> None:
        live = self.live
        if not live:
            log.warning("edge cluster: no live instance; %d devices unpolled", len(self.pool))
            return
        moves: list[tuple[str, str | None, str]] = []
        for name in self.pool:
            new = rendezvous_owner(name, live)
            assert new is not None
            old = self._owner.get(name)
            if old != new:
                moves.append((name, old, new))
        if not moves:
            return
        leaving: dict[str, list[str]] = {}
        for name, old, _ in moves:
            if old is not None:
                leaving.setdefault(old, []).append(name)
        for old, names in leaving.items():
            inst = self._instances[old]
            if inst.alive and inst.edge is not None:
                await inst.edge.remove_devices(names)
            else:
                self._detach(old, names)
        arriving: dict[str, list[str]] = {}
        for name, _, new in moves:
            arriving.setdefault(new, []).append(name)
        for new, names in arriving.items():
            edge = self._instances[new].edge
            assert edge is not None
            await edge.add_devices([self.pool[name] for name in names])
            for name in names:
                self._owner[name] = new
        self.moves += len(moves)
        log.info(
            "edge cluster: %d device(s) moved among %d live instance(s)", len(moves), len(live)
        )

    def _detach(self, serial: str, names: list[str]) -> None:
        """Detach a dead instance's devices in the registry (cloud side)."""
        registry = self.lab.registry
        for name in names:
            device = self.pool[name]
            with contextlib.suppress(RegistryError):  # not attached (any more)
                registry.detach((self.product_key, serial), device.keys)

    async def _until(self, condition: object, what: str) -> None:
        assert callable(condition)

        async def reached() -> None:
            while not condition():
                self._progress.clear()
                await self._progress.wait()

        try:
            await asyncio.wait_for(reached(), _WAIT)
        except TimeoutError:
            raise TimeoutError(f"waited {_WAIT} s for {what}") from None

    async def _idle(self) -> None:
        while self._busy or self._wake.is_set():
            self._progress.clear()
            await self._progress.wait()

    # -- lifetime ---------------------------------------------------------------------------------

    async def _advance(self, seconds: float) -> None:
        edges = [inst.edge for inst in self._instances.values() if inst.edge is not None]
        if edges:
            await advance_edges(edges, seconds, also=[self._idle])
        else:
            clock = self.clock
            assert isinstance(clock, SimulatedClock)
            await clock.advance_async(seconds)

    async def _stop(self) -> None:
        self._coordinating = False
        if self._callback is not None:
            self._callback.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for inst in self._instances.values():
            edge, inst.edge = inst.edge, None
            if edge is not None:
                await edge.stop()
        await self.simulator.stop()
        await self.link.close()
        await self.field.stop()


def edge_cluster(
    lab: Lab,
    *,
    instances: int = 3,
    pv_devices: int = 6,
    interval: float = 60.0,
    config: EdgeConfig | None = None,
    seed: int = 0,
    prefix: str = "CLUSTER",
) -> ClusterScenario:
    """Start connection scenario 4 in ``lab`` with one call: ``instances`` cloud edge instances
    (serial numbers ``{prefix}-1`` ...) sharing a pool of ``pv_devices`` PV inverters (unique
    ids ``{prefix}-PV-0001`` ...) by rendezvous hashing, each polling its share every
    ``interval`` seconds; :meth:`ClusterScenario.kill` one and its devices fail over to the
    others. ``config`` overrides the instances' settings; ``seed`` makes the profiles and the
    jitter repeatable. [s]"""
    if instances < 1 or not 1 <= pv_devices <= 247:
        raise InvalidArgument(
            f"a cluster needs >= 1 instance and 1..247 PV devices, got {instances} and {pv_devices}"
        )
    config = config or EdgeConfig(interval=interval)
    product = lab.create_product(
        f"PV inverter (edge cluster {prefix})", model_id="pv_inverter", node_type="sub_device"
    )
    members: dict[str, _Instance] = {}
    edge_product = None
    for i in range(1, instances + 1):
        serial = f"{prefix}-{i}"
        record = lab.register_edge(serial, name=f"cloud edge instance {serial}")
        edge_product = record.product_key
        members[serial] = _Instance(serial, record.device_secret, lab.edge_cache_dir(serial))
    assert edge_product is not None
    tables = {u: inverter_table(u) for u in range(1, pv_devices + 1)}
    secrets: dict[str, str] = {}
    for u in tables:
        key = f"{prefix}-PV-{u:04d}"
        secrets[key] = lab.register_device(product.product_key, device_key=key).device_secret

    async def start() -> ClusterScenario:
        async with contextlib.AsyncExitStack() as stack:
            field = await FieldServer(list(tables.values()), name=f"PV pool {prefix}").start()
            stack.push_async_callback(field.stop)
            link = await Link(lab.host, lab.port, seed=seed, clock=lab.clock).start()
            stack.push_async_callback(link.close)
            pool: dict[str, EdgeDevice] = {}
            units = []
            for u, table in tables.items():
                key = f"{prefix}-PV-{u:04d}"
                field_device = FieldDevice(key, field.host, field.port, u, table)
                pool[key] = EdgeDevice(field_device, product.product_key, key, secrets[key])
                profile = profile_for("pv_inverter")
                state = profile.state(seed * 1000 + u, lab.clock.now())
                units.append(SimulatedUnit(field, u, profile, state, seed * 1000 + u))
            simulator = await FieldSimulator(lab.clock, config.interval, units).start()
            stack.push_async_callback(simulator.stop)
            scenario = ClusterScenario(
                lab,
                product_key=edge_product,
                instances=members,
                pool=pool,
                field=field,
                simulator=simulator,
                link=link,
                config=config,
                seed=seed,
            )
            stack.push_async_callback(scenario._stop)
            await scenario._start()
            stack.pop_all()
        return scenario

    return lab.run(start())
