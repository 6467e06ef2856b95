"""The official EnOS Python SDK connected to a lab through the fault-injecting link, posting
profile values of library models over real TCP: a dropped post times out, a duplicated one is
stored once, reordered posts keep their event times, a partition makes the hub see the device
go offline by keep alive (on a simulated clock), a cut is a power loss as the hub sees it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from enos.core.exception.EnvisionException import EnvisionException
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import (
    SDK_WARNINGS,
    WAIT,
    HubWatch,
    SdkDevice,
    running_lab,
    sdk_device,
    sdk_log,
)

from enos_lab.clock import SimulatedClock, to_epoch_ms
from enos_lab.hub import DisconnectReason
from enos_lab.lab import Lab
from enos_lab.sim import EnergyMeterProfile, Link, ProfileState, PvInverterProfile
from enos_lab.tap import PointStored

pytestmark = [SDK_WARNINGS]

START = datetime(2025, 6, 1, 4, tzinfo=UTC)  # noon near Shanghai: the PV inverter produces


@dataclass
class Rig:
    """A lab, a link in front of it, and one SDK device of a library model connected through
    the link."""

    lab: Lab
    link: Link
    product_key: str
    sdk: SdkDevice
    watch: HubWatch

    @property
    def device(self) -> Any:
        """The link's scope of the device."""
        return self.link.device(self.product_key, "dev")

    def wait(self, predicate: Any) -> Any:
        """Wait (on the lab's loop) until the link's stats satisfy ``predicate``."""
        return self.lab.run(self.link.wait(predicate, WAIT))


@contextlib.contextmanager
def rig(
    tmp_path: Path, seed: int, model_id: str, *, clock: SimulatedClock | None = None
) -> Iterator[Rig]:
    with running_lab(tmp_path / "lab", seed=seed, clock=clock) as lab:
        product = lab.create_product("Simulated", model_id=model_id)
        device = lab.register_device(product.product_key, device_key="dev")
        link = lab.run(Link("127.0.0.1", lab.port, seed=seed, clock=clock).start())
        watch = HubWatch(lab)
        try:
            with sdk_device(
                lab,
                product.product_key,
                "dev",
                device_secret=device.device_secret,
                port=link.port,
                operation_timeout=1.0,
            ) as sdk:
                sdk.connect()
                assert sdk.client.is_connected()
                yield Rig(lab, link, product.product_key, sdk, watch)
        finally:
            lab.run(link.close())


def _post(values: dict[str, Any], at: datetime) -> MeasurepointPostRequest:
    return (
        MeasurepointPostRequest.builder()
        .add_measurepoints(values)
        .set_timestamp(to_epoch_ms(at))
        .build()
    )


def _sample(profile: Any, state: ProfileState, at: datetime) -> dict[str, Any]:
    values: dict[str, Any] = profile.values(at, np.random.default_rng(1), state)
    return values


def test_a_dropped_post_times_out_and_nothing_is_stored(tmp_path: Path) -> None:
    profile = EnergyMeterProfile()
    state = profile.state(1, START)
    with rig(tmp_path, 31, "energy_meter") as r:
        r.device.drop(1.0, "up")
        with pytest.raises(EnvisionException, match="timeout"):
            r.sdk.publish(_post(_sample(profile, state, START), START))
        assert r.link.stats.up.dropped == 1
        assert r.lab.store.query_points("dev", product_key=r.product_key).empty
        r.device.clear()
        later = START + timedelta(minutes=1)
        assert r.sdk.publish(_post(_sample(profile, state, later), later)).get_code() == 200
        stored = r.lab.store.query_points("dev", "import_energy", product_key=r.product_key)
        assert list(stored["time"]) == [later]


def test_a_duplicated_post_reaches_the_hub_twice_and_is_stored_once(tmp_path: Path) -> None:
    profile = EnergyMeterProfile(pv_peak=10.0)
    state = profile.state(2, START)
    values = _sample(profile, state, START)
    with rig(tmp_path, 32, "energy_meter") as r:
        before = r.lab.hub.stats.messages_in
        r.device.duplicate(1.0, "up")
        assert r.sdk.publish(_post(values, START)).get_code() == 200
        r.wait(lambda s: s.down.publishes >= 2)  # both replies came back
        assert r.lab.hub.stats.messages_in - before == 2
        assert r.link.stats.up.duplicated == 1
        frame = r.lab.store.query_points("dev", product_key=r.product_key)
        assert len(frame) == len(values) and frame["point_id"].is_unique
        assert (frame["time"] == START).all()
        energy = frame.set_index("point_id")["value"]["import_energy"]
        assert energy == values["import_energy"]


def test_reordered_posts_arrive_out_of_order_with_their_event_times(tmp_path: Path) -> None:
    profile = PvInverterProfile()
    state = profile.state(3, START)
    times = [START + timedelta(minutes=m) for m in range(6)]
    with rig(tmp_path, 33, "pv_inverter") as r:
        r.device.reorder(6, "up")
        with r.lab.subscribe(PointStored, point_id="active_power") as stored:
            for at in times:  # without waiting for replies, as a device sending a backlog
                r.sdk.client.fast_publish(_post(_sample(profile, state, at), at))
            arrived = [stored.get(timeout=WAIT).time for _ in times]
        assert sorted(arrived) == times  # every post, with its own event time
        assert arrived != times  # in another order
        assert r.link.stats.up.reordered > 0
        latest = r.lab.store.latest("dev", "active_power", product_key=r.product_key)
        assert list(latest["time"]) == [times[-1]]  # latest by event time, not by arrival


def test_a_partition_takes_the_device_offline_by_keep_alive_until_it_heals(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(START)
    with sdk_log() as log, rig(tmp_path, 34, "pv_inverter", clock=clock) as r:
        r.watch.wait_connected(r.product_key, "dev")
        r.device.partition()  # from this thread: applied on the lab's loop before it returns
        clock.advance(91)  # the SDK's keep alive is 60 s: the hub closes after 1.5 times that
        gone = r.watch.wait_disconnected(r.product_key, "dev")
        assert gone.reason is DisconnectReason.KEEP_ALIVE_TIMEOUT
        assert not r.lab.is_online(r.product_key, "dev")
        assert r.sdk.client.is_connected()  # the partition hid it from the device
        assert r.link.stats.active == 1
        r.link.heal()  # the device's connection is reset; paho reconnects
        r.watch.wait_connected(r.product_key, "dev", count=2)
        log.wait_connects(2)
        assert r.link.stats.accepted == 2
        profile = PvInverterProfile()
        at = clock.now()
        values = _sample(profile, profile.state(4, START), at)
        assert r.sdk.publish(_post(values, at)).get_code() == 200
        presence = r.lab.presence(r.product_key, "dev")
        assert list(presence["reason"]) == ["connected", "keep-alive timeout", "connected"]
        gap = presence["time"].iloc[1] - presence["time"].iloc[0]
        assert timedelta(seconds=90) <= gap <= timedelta(seconds=91)


def test_a_cut_is_a_power_loss_for_the_hub_and_the_device_comes_back(tmp_path: Path) -> None:
    with sdk_log() as log, rig(tmp_path, 35, "energy_meter") as r:
        assert r.device.cut() == 1
        gone = r.watch.wait_disconnected(r.product_key, "dev")
        assert gone.reason is DisconnectReason.CONNECTION_LOST  # no DISCONNECT came
        r.watch.wait_connected(r.product_key, "dev", count=2)  # paho reconnects by itself
        log.wait_connects(2)
        assert r.link.stats.cut == 1
        presence = r.lab.presence(r.product_key, "dev")
        assert list(presence["reason"]) == ["connected", "disconnected", "connected"]
