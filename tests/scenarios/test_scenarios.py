"""Connection scenarios 1 to 3, each started with one call in a lab on a simulated clock,
over real TCP with real pymodbus field devices: a direct MQTT device, an on-site edge whose hub
link fails (cache and resume), a remote edge whose field link fails (counted errors, a gap)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from _scenario_kit import MINUTE
from enos_sdk_helpers import running_lab

from enos_lab import Lab, PointStored
from enos_lab.edge import STATUS_COLUMNS, EdgeState
from enos_lab.errors import ClosedError, InvalidArgument
from enos_lab.scenarios import direct_device, onsite_edge, remote_edge


def stored_slots(lab: Lab, product_key: str, device_key: str) -> list[int]:
    """The minutes (since the first stored one) of a device's stored active power, in order."""
    frame = lab.store.query_points([device_key], ["active_power"], product_key=product_key)
    times = frame["time"]
    return [int((t - times.iloc[0]) / timedelta(minutes=1)) for t in times]


def test_a_direct_device_posts_its_profile_every_interval(lab: Lab) -> None:
    with direct_device(lab, model_id="pv_inverter", interval=MINUTE, seed=1) as scenario:
        scenario.advance(10 * MINUTE)
        status = scenario.status().iloc[0]
        assert (status["posts"], status["failures"], status["connected"]) == (11, 0, True)
        product_key = scenario.device.product_key
    assert stored_slots(lab, product_key, "direct-1") == list(range(11))
    latest = lab.store.latest(["direct-1"], None, product_key=product_key)
    assert set(latest["point_id"]) >= {"active_power", "total_energy", "state"}
    assert not lab.is_online(product_key, "direct-1")  # stopped: disconnected
    with pytest.raises(ClosedError):
        scenario.advance(MINUTE)


def test_an_onsite_edge_caches_while_its_hub_link_is_cut_and_resumes(lab: Lab) -> None:
    sub = lab.subscribe(PointStored, point_id="active_power", maxsize=10_000)
    site = onsite_edge(lab, inverters=2, meters=1, interval=MINUTE, seed=3)
    try:
        site.advance(10 * MINUTE)
        site.cut_hub_link(minutes=30)
        site.advance(30 * MINUTE)
        assert site.edge.state is not EdgeState.ONLINE
        assert site.cache_stats().samples == 3 * 30
        site.advance(20 * MINUTE)  # back after 30 minutes: reconnected, drained
        assert site.edge.state is EdgeState.ONLINE and site.cache_stats().samples == 0
        status = site.status()
        with pytest.raises(InvalidArgument, match="field link"):
            site.cut_field_link(5)
    finally:
        site.stop()
    assert list(status.columns) == list(STATUS_COLUMNS)
    assert status["device"].tolist() == ["inverter-1", "inverter-2", "meter-1"]
    assert (status["cached"] == status["resumed"]).all() and (status["cached"] >= 30).all()
    assert (status["lost"] + status["rejected"] + status["dropped"] == 0).all()
    events = sub.drain()
    for _, row in status.iterrows():
        times = [e.time for e in events if e.device_key == row["device_key"]]
        assert len(times) == len(set(times)) == 61  # every minute of the hour, once
        assert stored_slots(lab, row["product_key"], row["device_key"]) == list(range(61))
    resumed = [e.time for e in events if e.resume]
    assert resumed == sorted(resumed) and len(resumed) == status["resumed"].sum()


def test_a_remote_edge_counts_field_link_errors_and_leaves_a_gap(lab: Lab) -> None:
    site = remote_edge(lab, inverters=1, meters=1, interval=MINUTE, seed=4)
    try:
        assert site.hub_link is None and site.field_link is not None
        site.advance(5 * MINUTE)
        site.cut_field_link(minutes=10)
        site.advance(15 * MINUTE)
        status = site.status().set_index("device")
        with pytest.raises(InvalidArgument, match="hub link"):
            site.cut_hub_link(5)
        assert site.field_link.stats.cut >= 1
    finally:
        site.stop()
    for device in ("inverter-1", "meter-1"):
        row = status.loc[device]
        # the polls of the 10 minutes without a route (minutes 6..14; the link is back for
        # the poll of minute 15): counted, per device; nothing cached
        assert row["connection_errors"] == 9 and row["samples"] == 21 - 9
        assert row["cached"] == 0 and row["uploaded"] == row["samples"]
        assert "cannot connect" in row["last_error"]
        minutes = stored_slots(lab, row["product_key"], row["device_key"])
        assert minutes == [m for m in range(21) if not 6 <= m <= 14]  # the gap


def test_an_onsite_edge_runs_in_real_time_on_the_system_clock(tmp_path: Path) -> None:
    with running_lab(tmp_path / "lab", seed=10) as lab:
        sub = lab.subscribe(PointStored, point_id="active_power")
        site = onsite_edge(lab, inverters=1, meters=0, interval=0.5, seed=5)
        try:
            times = [sub.get(timeout=10.0).time for _ in range(3)]  # polls 0.5 s apart
            with pytest.raises(InvalidArgument, match="real time"):
                site.advance(1.0)
        finally:
            site.stop()
    assert times == sorted(times) and len(set(times)) == 3
    # on aligned slots (a poll begins a moment after its slot: real timers fire late)
    assert all(t.microsecond % 500_000 < 250_000 for t in times), times
