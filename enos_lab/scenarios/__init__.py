"""EnOS's four connection scenarios, each started in a lab with one call.

EnOS names four ways a device reaches the IoT hub (protocol reference 14; EnOS "message flow"):

1. :func:`direct_device`: the device speaks MQTT to the hub itself (written with the SDK,
   following a simulated profile);
2. :func:`onsite_edge`: an edge beside its Modbus field devices, reaching the hub over a link
   that may fail (it caches locally and resumes the backlog in order);
3. :func:`remote_edge`: an edge at the cloud side polling field devices over a network that may
   fail (counted Modbus errors, gaps; nothing to cache);
4. :func:`edge_cluster`: cloud edge instances sharing a pool of PV devices by unique id, with
   failover when an instance dies (no sample lost, none doubled).

Each returns a handle (:class:`DirectDeviceScenario`, :class:`EdgeScenario`,
:class:`ClusterScenario`) with ``status()`` frames, the faults a tutorial needs
(``cut_hub_link(minutes)``, ``cut_field_link(minutes)``, ``kill(instance)``), ``advance(seconds)``
for a lab on a :class:`~enos_lab.clock.SimulatedClock` and ``stop()``; everything runs on the
lab's loop, so the handles' plain methods work from a notebook cell (``a``-prefixed coroutine
forms for asyncio users). The parts are public too: :class:`FieldSimulator` (field registers
driven by profiles), :class:`FieldLink` (a TCP relay that fails), :func:`rendezvous_owner`.

Example::

    with Lab(clock=SimulatedClock()) as lab:
        site = onsite_edge(lab, interval=60)
        site.advance(3600)                 # an hour of data
        site.cut_hub_link(minutes=30)      # the on-site edge caches...
        site.advance(3600)                 # ...and resumes once the link is back
        print(site.status())
        site.stop()
"""

from ._base import FieldSimulator, Scenario, SimulatedUnit, energy_meter_table, inverter_table
from ._cluster import ClusterScenario, edge_cluster, rendezvous_owner
from ._direct import DirectDeviceScenario, DirectDeviceStats, direct_device
from ._edge_site import EdgeScenario, onsite_edge, remote_edge
from ._field_link import FieldLink, FieldLinkStats

__all__ = [
    "ClusterScenario",
    "DirectDeviceScenario",
    "DirectDeviceStats",
    "EdgeScenario",
    "FieldLink",
    "FieldLinkStats",
    "FieldSimulator",
    "Scenario",
    "SimulatedUnit",
    "direct_device",
    "edge_cluster",
    "energy_meter_table",
    "inverter_table",
    "onsite_edge",
    "remote_edge",
    "rendezvous_owner",
]
