"""The lab's recent event view (``lab.events()``) and Python subscriptions by kind with a
callback (``lab.on``), in a real lab with official-SDK devices over TCP."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest
from enos_sdk_helpers import SDK_WARNINGS, WAIT, SdkDevice, running_lab, sdk_device, sdk_product

from enos_lab import Lab
from enos_lab.alerts import AlertRule
from enos_lab.errors import InvalidArgument
from enos_lab.lab import EVENT_COLUMNS
from enos_lab.monitor import EventLog
from enos_lab.tap import (
    KINDS,
    AlertChanged,
    CommandReplied,
    CommandSent,
    PointStored,
    PresenceChanged,
    Tap,
    TapEvent,
    TapFilter,
)

pytestmark = [SDK_WARNINGS]

T0 = 1_700_000_000_000  # [ms]
HOT = AlertRule(rule_id="hot", model_id="sdk_meter", measurepoint="temp", condition="${temp} > 60")


def _post(sdk: SdkDevice, at: int, **points: Any) -> None:
    request = MeasurepointPostRequest.builder().add_measurepoints(points).set_timestamp(at)
    response = sdk.publish(request.build())
    assert response.get_code() == 200, response.get_message()


def _on_set(_command: Any, _args: list[str]) -> Any:
    return MeasurepointSetReply.builder().set_code(200).set_message("done").build()


def test_kind_names_and_several_keys_filter_like_the_classes() -> None:
    assert set(KINDS) >= {"measurepoint", "event", "attribute", "presence", "command", "ota"}
    assert TapFilter.of("command").kinds == frozenset({CommandSent, CommandReplied})
    assert TapFilter.of(["presence", PointStored]).kinds == frozenset(
        {PresenceChanged, PointStored}
    )
    at = pd.Timestamp(T0, unit="ms", tz="UTC").to_pydatetime()
    several = TapFilter.of("measurepoint", product_key=["a", "b"], point_id=["p", "q"])
    assert several.matches(PointStored("a", "d", "p", at, 1.0))
    assert several.matches(PointStored("b", "d", "q", at, 1.0))
    assert not several.matches(PointStored("c", "d", "p", at, 1.0))
    assert not several.matches(PointStored("a", "d", "r", at, 1.0))
    assert TapFilter.of(device_key=["d"]).device_key == "d"  # one key: compared as a string
    for bad in ("points", ["presence", "nope"], []):
        with pytest.raises(InvalidArgument, match="kind names"):
            TapFilter.of(bad)
    for keys in ("", [], ["a", ""], [3]):
        with pytest.raises(InvalidArgument, match="product_key"):
            TapFilter.of(product_key=keys)  # type: ignore[arg-type]


def test_the_event_log_is_bounded_and_takes_points_only_when_asked() -> None:
    tap = Tap()
    log = EventLog(capacity=3)
    log.attach(tap)
    assert not tap.wants(PointStored) and tap.wants(PresenceChanged)
    at = pd.Timestamp(T0, unit="ms", tz="UTC").to_pydatetime()
    for i in range(5):
        tap.emit(PresenceChanged("pk", f"d{i}", at, True, "connected"))
    assert [e.device_key for e in log.events()] == ["d2", "d3", "d4"]  # type: ignore[union-attr]
    assert (len(log), log.seen) == (3, 5)
    log.attach(tap, points=True)
    assert tap.wants(PointStored)
    tap.emit_points([("pk", "d1", "p", T0, 1.5, None, False)])
    assert log.events()[-1] == ("pk", "d1", "p", T0, 1.5, None, False)
    log.capacity = 1
    assert len(log) == 1
    log.detach()
    assert not tap.active
    with pytest.raises(InvalidArgument, match="capacity"):
        log.capacity = 0


def test_on_calls_back_by_kind_off_the_loop_and_survives_a_failing_callback(
    tmp_path: Path,
) -> None:
    with running_lab(tmp_path / "lab", seed=11) as lab:
        pk = sdk_product(lab).product_key
        other = sdk_product(lab, "Other").product_key
        m1 = lab.register_device(pk, device_key="m1").device_secret
        o1 = lab.register_device(other, device_key="o1").device_secret
        presence: queue.Queue[tuple[TapEvent, str]] = queue.Queue()
        points: queue.Queue[TapEvent] = queue.Queue()

        def on_presence(event: TapEvent) -> None:
            presence.put((event, threading.current_thread().name))
            raise RuntimeError("a bug in the callback")  # logged, counted, goes on

        with (
            lab.on("presence", on_presence, device_key=["m1", "o1"]) as watcher,
            lab.on(["measurepoint"], points.put, product_key=[pk, other], point_id="temp"),
        ):
            for key, dk, secret in ((pk, "m1", m1), (other, "o1", o1)):
                with sdk_device(lab, key, dk, device_secret=secret) as sdk:
                    sdk.connect()
                    _post(sdk, T0, temp=20.0, power=1.0)
            got = [presence.get(timeout=WAIT) for _ in range(4)]
            assert [(e.device_key, e.online, e.reason) for e, _ in got] == [  # type: ignore[attr-defined]
                ("m1", True, "connected"),
                ("m1", False, "disconnected"),
                ("o1", True, "connected"),
                ("o1", False, "disconnected"),
            ]
            assert {name for _, name in got} == {"enos-lab-on-on_presence"}
            stored = [points.get(timeout=WAIT) for _ in range(2)]
            assert {(e.product_key, e.point_id) for e in stored} == {(pk, "temp"), (other, "temp")}
        assert watcher.errors == 4 and watcher.calls == 4 and not watcher.active
        assert lab.tap.stats.subscriptions == 0
        with pytest.raises(InvalidArgument, match="callable"):
            lab.on("presence", None)  # type: ignore[arg-type]


def test_events_shows_connects_disconnects_with_reason_commands_and_alerts(
    tmp_path: Path,
) -> None:
    with running_lab(tmp_path / "lab", seed=12) as lab:
        pk = sdk_product(lab).product_key
        secret = lab.register_device(pk, device_key="m1").device_secret
        lab.add_alert_rule(HOT)
        with sdk_device(lab, pk, "m1", device_secret=secret) as sdk:
            sdk.client.register_arrived_message_handler(MeasurepointSetCommand.get_class(), _on_set)
            with lab.subscribe("alert") as alerts:
                sdk.connect()
                lab.set_measurepoints(pk, "m1", {"temp": 25.0})
                _post(sdk, T0, temp=75.0)
                assert isinstance(alerts.get(timeout=WAIT), AlertChanged)
                with lab.subscribe("presence") as presence:
                    lab.disable_device(pk, "m1")
                    offline = presence.get(timeout=WAIT)
                    assert isinstance(offline, PresenceChanged) and not offline.online

        frame = lab.events()
        assert list(frame.columns) == list(EVENT_COLUMNS)
        assert str(frame["time"].dt.tz) == "UTC" and str(frame["code"].dtype) == "Int64"
        seen = list(zip(frame["kind"], frame["what"], strict=True))
        for expected in (
            ("presence", "online"),
            ("login", "login"),
            ("command", "sent"),
            ("command", "replied"),
            ("alert", "opened"),
            ("presence", "offline"),
        ):
            assert expected in seen, (expected, seen)
        assert "measurepoint" not in set(frame["kind"])  # points are in the store, not here
        offline_row = frame[frame["what"] == "offline"].iloc[-1]
        assert (offline_row["product_key"], offline_row["device_key"]) == (pk, "m1")
        assert offline_row["detail"] == "disabled"
        replied = frame[frame["what"] == "replied"].iloc[0]
        assert replied["code"] == 200 and "MEASUREPOINT_SET" in replied["detail"]
        sent = frame[frame["what"] == "sent"].iloc[0]
        assert sent["time"] <= replied["time"]
        alert = frame[frame["kind"] == "alert"].iloc[0]
        assert alert["time"] == pd.Timestamp(T0, unit="ms", tz="UTC")
        assert "hot" in alert["detail"]

        commands = lab.events(kinds="command", device_key="m1")
        assert commands["what"].tolist() == ["sent", "replied"]
        assert len(lab.events(limit=2)) == 2
        assert lab.events(limit=2)["what"].tolist() == frame["what"].tolist()[-2:]
        assert lab.events(kinds="alert", start=T0 + 1).empty
        assert len(lab.events(kinds="alert", start=T0, end=T0 + 1)) == 1
        assert lab.events(product_key="nobody").empty
        with pytest.raises(InvalidArgument, match="limit"):
            lab.events(limit=-1)

        settings = lab.configure_events(points=True, capacity=500)
        assert settings["points"] and settings["capacity"] == 500
        lab.enable_device(pk, "m1")
        with sdk_device(lab, pk, "m1", device_secret=secret) as sdk:
            sdk.connect()
            _post(sdk, T0 + 60_000, temp=30.0)
        points = lab.events(kinds="measurepoint")
        assert points["detail"].tolist() == ["temp=30.0"]
        assert points["time"].tolist() == [pd.Timestamp(T0 + 60_000, unit="ms", tz="UTC")]
        settings = lab.configure_events(points=False)
        assert settings["points"] is False and settings["kept"] <= 500


async def test_coroutine_forms_run_off_the_callers_loop(tmp_path: Path) -> None:
    async with Lab(tmp_path / "lab", port=0) as lab:
        pk = (await lab.acreate_product("Plain")).product_key
        app = await lab.aregister_application("async", grants=pk)
        assert (await lab.aapplications())["name"].tolist() == ["async"]
        assert (await lab.arevoke_application(app.access_key)).revoked
        assert (await lab.aconfigure_events(capacity=50))["capacity"] == 50
        assert (await lab.aevents(kinds="presence")).empty
        handle = await lab.aon("alert", lambda event: None)
        handle.cancel()
        assert not handle.active
