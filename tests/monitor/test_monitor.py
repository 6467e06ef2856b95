"""Monitoring in a real lab on a simulated clock: devices of the lab's SDK post over TCP
(port 0), and the fleet views show their state, traffic, rates on the lab clock, errors and
latest values; the counters are bounded and start only when monitoring is asked for."""

from __future__ import annotations

import inspect
from pathlib import Path

import pandas as pd
import pytest
from enos_sdk_helpers import WAIT, running_lab

from enos_lab import Lab, TopicKind
from enos_lab.clock import SimulatedClock, from_epoch_ms
from enos_lab.device import Device
from enos_lab.errors import InvalidArgument, NotFound, RequestFailed
from enos_lab.lab import FLEET_COLUMNS, FLEET_SUMMARY_COLUMNS
from enos_lab.monitor import Monitor
from enos_lab.tap import DeviceLoggedIn, PointStored, PresenceChanged, RequestRefused, Tap

T0 = 1_700_000_100_000  # [ms] 2023-11-14 22:15:00 UTC, a whole minute
MIN = 60_000  # [ms]


def meters(lab: Lab, count: int) -> tuple[str, list[str]]:
    """An energy-meter product with ``count`` devices m0.. (secrets in the registry)."""
    pk = lab.create_product("Meters", model_id="energy_meter").product_key
    for i in range(count):
        lab.register_device(pk, device_key=f"m{i}")
    return pk, [f"m{i}" for i in range(count)]


def device(lab: Lab, pk: str, dk: str) -> Device:
    secret = lab.registry.get_device(pk, dk).device_secret
    # keep-alive beyond the simulated minutes (the hub checks it on the lab clock)
    return Device(lab.host, lab.port, pk, dk, secret, timeout=WAIT, reconnect=None, keepalive=3600)


def wait_presence(lab: Lab, sub: object, count: int) -> None:
    got = [sub.get(timeout=WAIT) for _ in range(count)]  # type: ignore[attr-defined]
    assert all(isinstance(e, PresenceChanged) for e in got)


def test_fleet_shows_state_traffic_rates_errors_and_latest_values(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    with running_lab(tmp_path / "lab", seed=1, clock=clock) as lab:
        pk, keys = meters(lab, 4)  # m0, m1 post; m2 never connects; m3 is disabled
        stats = lab.monitor()
        assert stats.devices == 0 and stats.attached_ms == T0
        lab.disable_device(pk, "m3")
        with lab.subscribe(kinds=PresenceChanged) as presence:
            with device(lab, pk, "m0") as m0, device(lab, pk, "m1") as m1:
                wait_presence(lab, presence, 2)
                for minute in range(10):
                    for k in range(3):  # m0: 3 posts of 2 points a minute
                        reply = m0.post_measurepoints(
                            {"active_power": 10.0 + minute, "reactive_power": 230.0 + k},
                            clock.time_ms() + k * 1000,
                        )
                        assert reply.ok, reply
                    if minute >= 5:  # m1: 1 post of 1 point a minute, from minute 5
                        assert m1.post_measurepoints({"frequency": 50.0}, clock.time_ms()).ok
                    clock.advance(60)
                # a post failing the model is refused (not stored, not on the tap): an error
                with pytest.raises(RequestFailed):
                    m1.post_measurepoints({"no_such_point": 1.0}, clock.time_ms())
                # a command m0 has no handler for: answered with an error code, an error too
                reply = lab.send_command(pk, "m0", TopicKind.SERVICE_INVOKE, {}, item_id="nope")
                assert reply is not None and reply.code != 200
                fleet = lab.fleet(pk)
            wait_presence(lab, presence, 2)  # both disconnected
        after = lab.fleet(pk, minutes=10)

    assert list(fleet.columns) == list(FLEET_COLUMNS)
    assert list(fleet["device_key"]) == keys
    by = fleet.set_index("device_key")
    assert list(by["state"]) == ["online", "online", "inactive", "disabled"]
    assert list(by["points"]) == [60, 5, 0, 0]
    # now is minute 10 (22:25): the last 5 minutes are 21..25, minute 10 has nothing yet
    assert by.loc["m0", "points_per_minute"] == pytest.approx(4 * 6 / 5)
    assert by.loc["m1", "points_per_minute"] == pytest.approx(4 / 5)
    assert list(by["refused"]) == [0, 1, 0, 0]
    assert list(by["command_errors"]) == [1, 0, 0, 0]
    assert list(by["errors"]) == [1, 1, 0, 0]
    assert list(by["errors_per_minute"]) == pytest.approx([1 / 5, 1 / 5, 0, 0])  # minute 10
    assert by.loc["m0", "connected_since"] == pd.Timestamp(T0, unit="ms", tz="UTC")
    assert by.loc["m1", "last_seen"] == pd.Timestamp(T0 + 10 * MIN, unit="ms", tz="UTC")
    # m0's last word is its answer to the command, in minute 10
    assert by.loc["m0", "last_seen"] == pd.Timestamp(T0 + 10 * MIN, unit="ms", tz="UTC")
    assert pd.isna(by.loc["m2", "last_seen"]) and pd.isna(by.loc["m2", "connected_since"])
    assert by.loc["m0", "latest"] == {"active_power": 19.0, "reactive_power": 232.0}
    assert by.loc["m1", "latest"] == {"frequency": 50.0}
    assert by.loc["m0", "latest_time"] == pd.Timestamp(T0 + 9 * MIN + 2000, unit="ms", tz="UTC")
    assert by.loc["m2", "latest"] == {}
    for column in ("last_seen", "connected_since", "latest_time"):
        assert str(fleet[column].dt.tz) == "UTC"

    a = after.set_index("device_key")
    assert list(a["state"]) == ["offline", "offline", "inactive", "disabled"]
    assert a["connected_since"].isna().all()
    assert list(a["disconnects"]) == [1, 1, 0, 0]
    # minutes 1..10 of the lab clock: minute 0 has left the window, minute 10 had nothing
    assert a.loc["m0", "points_per_minute"] == pytest.approx(9 * 6 / 10)


def test_fleet_summary_counts_states_per_product(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    with running_lab(tmp_path / "lab", seed=2, clock=clock) as lab:
        pk, _ = meters(lab, 3)
        other = lab.create_product("Other", model_id="energy_meter").product_key
        lab.register_device(other, device_key="o0")
        lab.disable_device(pk, "m2")
        assert lab.fleet_summary().empty is False  # starts monitoring
        with lab.subscribe(kinds=PresenceChanged) as presence, device(lab, pk, "m0") as m0:
            wait_presence(lab, presence, 1)
            for _ in range(3):
                assert m0.post_measurepoints({"active_power": 1.0, "reactive_power": 2.0}).ok
            summary = lab.fleet_summary(minutes=1)
    assert list(summary.columns) == list(FLEET_SUMMARY_COLUMNS)
    rows = summary.set_index("product_key")
    assert rows.loc[pk, ["devices", "online", "offline", "inactive", "disabled"]].tolist() == [
        3, 1, 0, 1, 1,
    ]  # fmt: skip
    assert rows.loc[pk, "points"] == 6
    assert rows.loc[pk, "points_per_minute"] == pytest.approx(6.0)
    assert rows.loc[other, ["devices", "inactive", "points"]].tolist() == [1, 1, 0]


def test_ingest_pays_nothing_until_monitoring_is_asked_for(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    with running_lab(tmp_path / "lab", seed=3, clock=clock) as lab:
        pk, _ = meters(lab, 1)
        assert not lab.tap.wants(PointStored)
        with device(lab, pk, "m0") as m0:
            assert m0.post_measurepoints({"active_power": 1.0}).ok  # before: not counted
            lab.monitor()
            assert lab.tap.wants(PointStored)
            assert m0.post_measurepoints({"active_power": 2.0}).ok
            fleet = lab.fleet(pk)
        assert fleet.loc[0, "points"] == 1
        assert fleet.loc[0, "latest"] == {"active_power": 2.0}
        with pytest.raises(InvalidArgument, match="max_devices"):
            lab.monitor(max_devices=5)
        with pytest.raises(InvalidArgument, match="minutes"):
            lab.fleet(pk, minutes=61)
        with pytest.raises(NotFound):
            lab.fleet("no-such-product")


def test_counters_are_bounded(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    monitor = Monitor(clock, max_devices=2, minutes=3)
    tap = Tap()
    monitor.attach(tap)
    monitor.attach(tap)  # idempotent
    rows = [("p", f"d{i}", "x", T0, 1.0, None, False) for i in range(5) for _ in range(2)]
    for _ in range(10):  # ten minutes of rows
        tap.emit_points(rows)
        clock.advance(60)
    tap.emit(DeviceLoggedIn("p", "d4", from_epoch_ms(T0), "c", 2))
    tap.emit(RequestRefused("p", "d9", from_epoch_ms(T0), "MEASUREPOINT_POST", 1210))
    stats = monitor.stats
    assert (stats.devices, stats.max_devices) == (2, 2)
    assert stats.untracked == 3 * 2 * 10 + 2
    counts = monitor.counts("p", "d0")
    assert counts is not None and counts.points == 20
    assert len(counts.point_minutes._counts) == 3  # only the last 3 minutes are kept
    now = clock.time_ms()  # minute 10: nothing yet; minutes 8, 9 had 2 each
    assert counts.per_minute(now, 3) == pytest.approx(4 / 3)
    monitor.detach()
    tap.emit_points(rows)
    assert monitor.counts("p", "d0").points == 20  # type: ignore[union-attr]
    assert not tap.wants(PointStored)
    with pytest.raises(InvalidArgument):
        Monitor(clock, max_devices=0)


def test_facade_signatures_and_coroutine_forms() -> None:
    assert "product_key" in inspect.signature(Lab.fleet).parameters
    assert "minutes" in inspect.signature(Lab.fleet_summary).parameters
    for name in ("monitor", "fleet", "fleet_summary"):
        assert inspect.iscoroutinefunction(getattr(Lab, "a" + name))


def test_sub_devices_behind_a_gateway(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    with running_lab(tmp_path / "lab", seed=4, clock=clock) as lab:
        lab.monitor()
        gw_pk = lab.create_product("Gateway", node_type="gateway").product_key
        sub_pk = lab.create_product(
            "Sub meters", model_id="energy_meter", node_type="sub_device"
        ).product_key
        lab.register_device(gw_pk, device_key="gw")
        secret = lab.register_device(sub_pk, device_key="s1").device_secret
        lab.registry.attach((gw_pk, "gw"), (sub_pk, "s1"))
        with lab.subscribe(kinds=PresenceChanged) as presence, device(lab, gw_pk, "gw") as gw:
            sub = gw.login_sub_device(sub_pk, "s1", secret)
            wait_presence(lab, presence, 2)  # the gateway, then its sub-device
            assert sub.post_measurepoints({"active_power": 3.0}).ok
            online = lab.fleet(sub_pk)
            sub.logout()
            wait_presence(lab, presence, 1)
            offline = lab.fleet(sub_pk)
    row = online.iloc[0]
    assert (row["state"], row["gateway"], row["points"]) == ("online", (gw_pk, "gw"), 1)
    assert row["connected_since"] == pd.Timestamp(T0, unit="ms", tz="UTC")
    assert row["latest"] == {"active_power": 3.0}
    assert offline.loc[0, "state"] == "offline" and offline.loc[0, "disconnects"] == 1


def test_refusals_are_counted_across_a_restart(tmp_path: Path) -> None:
    clock = SimulatedClock(from_epoch_ms(T0))
    with running_lab(tmp_path / "lab", seed=4, clock=clock) as lab:
        pk, _ = meters(lab, 1)
        lab.monitor()
        lab.stop()
        lab.start()  # new IoT hub services, the same tap and monitor: no call needed
        with device(lab, pk, "m0") as m0, pytest.raises(RequestFailed):
            m0.post_measurepoints({"no_such_point": 1.0})
        row = lab.fleet(pk).iloc[0]
        assert (row["refused"], row["errors"]) == (1, 1)
        events = lab.events(kinds="refused")
        assert list(events["detail"]) == ["MEASUREPOINT_POST: code 1204"]
        assert list(events["code"]) == [1204]
