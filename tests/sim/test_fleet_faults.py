"""The fault calls of a simulated fleet, each asserted through the lab (presence, refused logins,
stored points) and the fleet's counters, on a simulated clock over real TCP."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from enos_lab import Backoff, Lab, SimulatedClock
from enos_lab.device import DeviceClient, SubDeviceCredentials
from enos_lab.lab import LabFleet
from enos_lab.sim import profile_for

T0 = datetime(2024, 6, 1, tzinfo=UTC)
POINTS = len(profile_for("energy_meter").point_ids())
MINUTE = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def _quiet_resets() -> Iterator[None]:
    """Faults reset connections on purpose: keep gmqtt's reports of them out of the output."""
    loggers = [logging.getLogger(name) for name in ("gmqtt", "enos_lab.device.mqtt")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def meters(make_lab: Callable[..., Lab], count: int = 3, **options: object) -> tuple[Lab, LabFleet]:
    """A lab on a simulated clock at ``T0`` and a running fleet of ``count`` meters."""
    lab = make_lab(clock=SimulatedClock(T0), rng=random.Random(9))
    lab.create_product("Meter", model_id="energy_meter", product_key="meter")
    options.setdefault("seed", 3)
    return lab, lab.simulate("meter", count=count, interval=60, **options)  # type: ignore[arg-type]


def stored(lab: Lab, device_key: str | None = None) -> pd.DataFrame:
    """The stored ``voltage`` points (one per post) of the fleet, or of one device."""
    return lab.store.query_points(device_key, ["voltage"], product_key="meter")


def test_clock_skew_shows_in_the_stored_event_times(make_lab: Callable[..., Lab]) -> None:
    lab, fleet = meters(make_lab)
    fleet.skew(90, "sim-0001")
    fleet.skew(timedelta(seconds=-30), "sim-0002")
    fleet.run(duration=5 * MINUTE)
    offsets = {
        key: (rows["time"] - rows["receive_time"]).dt.total_seconds().unique().tolist()
        for key, rows in stored(lab).groupby("device_key")
    }
    assert offsets == {"sim-0000": [0.0], "sim-0001": [90.0], "sim-0002": [-30.0]}
    assert fleet.stats().set_index("device_key")["skew"].tolist() == [0.0, 90.0, -30.0]


def test_a_device_whose_secret_stopped_working_alone_is_refused(
    make_lab: Callable[..., Lab],
) -> None:
    lab, fleet = meters(make_lab)
    fleet.run(duration=2 * MINUTE)
    fleet.wrong_credentials("sim-0001")
    fleet.run(duration=10 * MINUTE)
    stats = fleet.stats().set_index("device_key")
    assert stats.loc["sim-0001", "login_refusals"] > 0
    assert not stats.loc["sim-0001", "online"]
    assert stats.loc["sim-0001", "offline"] == 10  # every sample while logged out
    assert stats.loc[["sim-0000", "sim-0002"], "login_refusals"].tolist() == [0, 0]
    assert stats.loc[["sim-0000", "sim-0002"], "replied"].tolist() == [12, 12]
    refused = lab.refused_logins()
    assert set(refused["device_key"]) == {"sim-0001"}
    assert len(refused) == stats.loc["sim-0001", "login_refusals"]
    assert len(stored(lab, "sim-0001")) == 2
    assert presence(lab, "sim-0001")[-1] == (T0 + 2 * MINUTE, False, "disconnected")

    fleet.wrong_credentials("sim-0001", wrong=False)
    fleet.run(duration=10 * MINUTE)  # the hub's login block (5 min) ends meanwhile
    back = fleet.stats().set_index("device_key").loc["sim-0001"]
    assert back["online"] and back["reconnects"] == 1
    assert presence(lab, "sim-0001")[-1][1:] == (True, "connected")
    assert len(stored(lab, "sim-0001")) > 2


def presence(lab: Lab, device_key: str) -> list[tuple[datetime, bool, str]]:
    """The device's presence changes: ``(time, online, reason)``."""
    frame = lab.presence("meter", device_key)
    return [(row.time.to_pydatetime(), bool(row.online), row.reason) for row in frame.itertuples()]


def test_a_power_loss_loses_pending_work_and_the_device_boots_again(
    make_lab: Callable[..., Lab],
) -> None:
    lab, fleet = meters(make_lab, link=True)
    fleet.delay(20, "up", devices="sim-0001")  # its posts spend 20 s on the way
    fleet.run(duration=MINUTE)  # the post of 00:01 is on its way now
    fleet.power_loss("sim-0001", off=timedelta(minutes=5))
    fleet.clear("sim-0001")
    fleet.run(duration=10 * MINUTE)
    stats = fleet.stats().set_index("device_key")
    dead = stats.loc["sim-0001"]
    assert (dead["power_losses"], dead["lost"], dead["reconnects"]) == (1, 1, 1)
    assert dead["posted"] == 1 + 5  # nothing while off: back at 00:06, posting from 00:07
    assert stats.loc[["sim-0000", "sim-0002"], "replied"].tolist() == [11, 11]
    times = stored(lab, "sim-0001")["time"].tolist()
    assert times == [T0 + k * MINUTE for k in range(7, 12)]  # the post in flight was lost
    assert presence(lab, "sim-0001") == [
        (T0, True, "connected"),
        (T0 + MINUTE, False, "disconnected"),  # a reset: no DISCONNECT reached the hub
        (T0 + 6 * MINUTE, True, "connected"),
    ]
    reconnection = fleet.reconnections().iloc[0]
    assert (reconnection.device_key, reconnection.downtime) == ("sim-0001", 300.0)


def test_a_reconnect_storm_comes_back_in_lock_step_without_jitter(
    make_lab: Callable[..., Lab],
) -> None:
    backoff = Backoff(initial=20.0, maximum=60.0, jitter=False)
    lab, fleet = meters(make_lab, count=8, link=True, backoff=backoff)
    fleet.run(duration=MINUTE)
    assert fleet.reconnect_storm() == 8
    fleet.run(duration=MINUTE)
    storm = fleet.reconnections()
    assert len(storm) == 8
    assert storm["lost"].nunique() == 1 and storm["back"].nunique() == 1
    assert storm["downtime"].tolist() == [20.0] * 8
    back = lab.presence("meter")
    back = back[back["online"] & (back["time"] > T0)]
    assert back["time"].tolist() == [T0 + MINUTE + timedelta(seconds=20)] * 8

    assert fleet.reconnect_storm(jitter=True) == 8
    fleet.run(duration=MINUTE)
    spread = fleet.reconnections().iloc[8:]
    assert len(spread) == 8
    assert spread["back"].nunique() == 8
    assert spread["downtime"].between(0.0, 20.0).all()
    assert spread["downtime"].max() - spread["downtime"].min() > 5.0
    assert fleet.totals()["reconnects"] == 16


def test_dropped_posts_time_out_and_are_not_stored(make_lab: Callable[..., Lab]) -> None:
    lab, fleet = meters(make_lab, link=True, settle=0.3)
    fleet.drop(0.5, "up")
    fleet.run(duration=5 * MINUTE)
    fleet.clear()
    fleet.run(duration=MINUTE)  # the last lost posts time out (30 s)
    totals = fleet.totals()
    dropped = fleet.link.stats.up.dropped if fleet.link else 0
    assert dropped > 0
    assert totals["timeouts"] == dropped
    assert totals["replied"] + totals["timeouts"] == totals["posted"] == 18
    assert len(stored(lab)) == totals["replied"]


def test_duplicated_posts_are_stored_once(make_lab: Callable[..., Lab]) -> None:
    lab, fleet = meters(make_lab, link=True)
    fleet.duplicate(1.0, "up")
    fleet.run(duration=5 * MINUTE)
    totals = fleet.totals()
    assert fleet.link is not None and fleet.link.stats.up.duplicated == totals["posted"] == 15
    assert totals["replied"] == 15
    points = lab.store.query_points(product_key="meter")
    assert len(points) == 15 * POINTS
    assert not points.duplicated(["device_key", "point_id", "time"]).any()


def test_delayed_posts_arrive_later_on_the_clock(make_lab: Callable[..., Lab]) -> None:
    lab, fleet = meters(make_lab, link=True)
    fleet.delay(5, "up")
    fleet.run(duration=3 * MINUTE + timedelta(seconds=5))
    assert fleet.totals()["replied"] == 9
    late = (stored(lab)["receive_time"] - stored(lab)["time"]).dt.total_seconds()
    assert late.tolist() == [5.0] * 9


def test_reordered_posts_keep_the_latest_value_by_event_time(
    make_lab: Callable[..., Lab],
) -> None:
    lab, fleet = meters(make_lab, count=1, link=True, timeout=3600)
    fleet.reorder(4, "up", hold=300)  # four posts are held, then sent shuffled
    fleet.run(duration=4 * MINUTE)
    assert fleet.link is not None and fleet.link.stats.up.reordered > 0
    assert fleet.totals()["replied"] == 4
    rows = stored(lab)
    assert rows["time"].tolist() == [T0 + k * MINUTE for k in range(1, 5)]
    assert rows["receive_time"].unique().tolist() == [T0 + 4 * MINUTE]  # they came together
    latest = lab.store.latest("sim-0000", ["voltage"], product_key="meter")
    assert latest["time"].tolist() == [T0 + 4 * MINUTE]


def test_a_partitioned_device_times_out_at_the_hub_and_comes_back_when_healed(
    make_lab: Callable[..., Lab],
) -> None:
    lab, fleet = meters(make_lab, link=True)
    fleet.run(duration=MINUTE)
    fleet.partition("sim-0001")
    fleet.run(duration=6 * MINUTE)
    changes = presence(lab, "sim-0001")
    assert changes[-1][1:] == (False, "keep-alive timeout")
    assert changes[-1][0] - (T0 + MINUTE) <= timedelta(seconds=1.5 * 180 + 1)
    stats = fleet.stats().set_index("device_key")
    assert stats.loc["sim-0001", "timeouts"] > 0
    assert stats.loc[["sim-0000", "sim-0002"], "replied"].tolist() == [7, 7]
    assert len(stored(lab, "sim-0001")) == 1
    fleet.heal("sim-0001")
    fleet.run(duration=2 * MINUTE)
    assert presence(lab, "sim-0001")[-1][1:] == (True, "connected")
    healed = fleet.stats().set_index("device_key").loc["sim-0001"]
    assert healed["online"] and healed["reconnects"] == 1
    assert stored(lab, "sim-0001")["time"].max() == T0 + 9 * MINUTE


def test_a_gateway_through_the_fleet_s_link_is_partitioned_with_its_sub_devices(
    make_lab: Callable[..., Lab],
) -> None:
    lab, fleet = meters(make_lab, count=1, link=True)
    gateway_product = lab.create_product("Gateway", node_type="gateway", product_key="gwp")
    lab.create_product("Sub", model_id="energy_meter", node_type="sub_device", product_key="sub")
    secret = lab.register_device("gwp", device_key="gw").device_secret
    sub = lab.register_device("sub", device_key="s1")
    assert fleet.link is not None
    link = fleet.link
    gateway = DeviceClient(
        link.host,
        link.port,
        gateway_product.product_key,
        "gw",
        secret,
        clock=lab.clock,
        keepalive=60,
        reconnect=None,
    )

    async def attach() -> None:
        await gateway.connect()
        await gateway.add_topology([SubDeviceCredentials("sub", "s1", sub.device_secret)])
        await gateway.login_sub_device("sub", "s1", sub.device_secret)

    lab.run(attach())
    assert lab.is_online("sub", "s1")
    link.device("gwp", "gw").partition()  # the gateway and, with it, its sub-device
    fleet.run(duration=3 * MINUTE)  # the hub gives up on the gateway after 1.5 x 60 s
    assert lab.presence("gwp", "gw")["reason"].tolist()[-1] == "keep-alive timeout"
    assert lab.presence("sub", "s1")["reason"].tolist()[-1] == "gateway offline"
    assert fleet.totals()["replied"] == 3  # the fleet's own device kept posting
    link.device("gwp", "gw").heal()
    lab.run(gateway.disconnect())
