"""Connection scenario 4: a cloud edge cluster sharing a pool of PV devices by rendezvous
hashing, with failover when an instance dies abruptly and a handback when it returns. The
posts are counted per device and time slot through the lab's tap (the store keeps one row per
time whatever is posted twice): every slot once, none lost, none doubled."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from _scenario_kit import MINUTE, START

from enos_lab import Lab, PointStored, PresenceChanged
from enos_lab.errors import InvalidArgument
from enos_lab.scenarios import edge_cluster, rendezvous_owner


def test_rendezvous_hashing_moves_only_the_devices_of_the_instance_that_left() -> None:
    devices = [f"PV-{i:04d}" for i in range(200)]
    three = {d: rendezvous_owner(d, ["a", "b", "c"]) for d in devices}
    two = {d: rendezvous_owner(d, ["a", "c"]) for d in devices}
    assert set(Counter(three.values())) == {"a", "b", "c"}
    assert min(Counter(three.values()).values()) > 40  # spread over the three
    assert all(two[d] == three[d] for d in devices if three[d] != "b")
    assert rendezvous_owner("PV-0001", []) is None
    assert rendezvous_owner("PV-0001", ["c", "a", "b"]) == three["PV-0001"]  # any order


def test_a_killed_instance_s_devices_fail_over_with_no_sample_lost_or_doubled(lab: Lab) -> None:
    posts = lab.subscribe(PointStored, point_id="active_power", maxsize=100_000)
    presence = lab.subscribe(PresenceChanged)
    cluster = edge_cluster(lab, instances=3, pv_devices=8, interval=MINUTE, seed=2)
    try:
        assert cluster.live == ["CLUSTER-1", "CLUSTER-2", "CLUSTER-3"]
        before = cluster.assignments().set_index("device_key")["instance"]
        assert set(before) == {"CLUSTER-1", "CLUSTER-2", "CLUSTER-3"}
        victim = before.value_counts().index[0]  # the instance with the most devices
        cluster.advance(10 * MINUTE)

        cluster.kill(victim)  # its connection reset under it, no DISCONNECT
        after = cluster.assignments().set_index("device_key")["instance"]
        assert victim not in set(after) and cluster.live == sorted(set(before) - {victim})
        moved = before[before == victim].index
        assert (after.drop(moved) == before.drop(moved)).all()  # the others stayed
        assert cluster.moves == len(moved)
        with pytest.raises(InvalidArgument, match="dead already"):
            cluster.kill(victim)
        cluster.advance(10 * MINUTE)

        cluster.revive(victim)  # it takes its devices back, handed over by the others
        assert (cluster.assignments().set_index("device_key")["instance"] == before).all()
        cluster.advance(10 * MINUTE)
        status = cluster.status()
    finally:
        cluster.stop()
    assert (status.loc[status["state"] == "online", "rejected"] == 0).all()
    assert (status["lost"] + status["dropped"] == 0).all()

    slots = Counter(
        (e.device_key, round((e.time - START) / timedelta(minutes=1))) for e in posts.drain()
    )
    for device_key in before.index:
        per_slot = {slot: n for (key, slot), n in slots.items() if key == device_key}
        assert per_slot == dict.fromkeys(range(31), 1), device_key  # 30 minutes: each once
    # the hub saw the victim drop without a DISCONNECT, and come back
    reasons = [e.reason for e in presence.drain() if e.device_key == victim]
    assert reasons == ["connected", "disconnected", "connected", "disconnected"]
