"""The configuration history and the checks of a cloud change, without a lab: filters, times,
values kept as they were, retention, a closed history; attribute and tag checks naming the
value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enos_lab.clock import SimulatedClock
from enos_lab.control import (
    ConfigChange,
    ConfigHistory,
    ConfigKind,
    ConfigSource,
    check_change,
)
from enos_lab.errors import ClosedError, InvalidArgument, ValidationError
from enos_lab.model import load_library

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _change(key: str, new: object, source: ConfigSource = ConfigSource.CLOUD) -> ConfigChange:
    return ConfigChange("pk", "dk", ConfigKind.ATTRIBUTE, key, None, new, source)


def test_the_history_filters_and_keeps_values_as_they_were(tmp_path: Path) -> None:
    clock = SimulatedClock(T0)
    history = ConfigHistory(tmp_path / "config.sqlite3", clock=clock)
    try:
        history.record([_change("a", {"x": [1, 2]}), _change("b", None)])
        clock.advance(60)
        history.record([_change("a", 3, ConfigSource.DEVICE)])
        history.record(
            [
                ConfigChange(
                    "pk", "other", ConfigKind.TAG, "t", "1", "2", ConfigSource.CLOUD, "me", True
                )
            ]
        )
        frame = history.frame("pk", "dk")
        assert frame["new_value"].tolist() == [{"x": [1, 2]}, None, 3]
        assert frame["time"].tolist() == [T0, T0, T0 + timedelta(seconds=60)]
        assert len(history.frame(key="a")) == 2
        assert len(history.frame(source="device")) == 1
        assert len(history.frame(start=T0 + timedelta(seconds=1))) == 2
        assert len(history.frame(end=T0 + timedelta(seconds=1))) == 2
        tag = history.frame(device_key="other").iloc[0]
        assert (tag["kind"], tag["old_value"], tag["actor"], tag["pushed"]) == (
            "tag",
            "1",
            "me",
            True,
        )
        with pytest.raises(InvalidArgument, match="product_key"):
            history.frame(product_key="")
        assert history.record([]) == 0
        clock.advance(31 * 24 * 3600)  # past the default 30 days
        assert history.prune() == 4
    finally:
        history.close()
    with pytest.raises(ClosedError):
        history.frame()


def test_checks_of_a_cloud_change_name_the_value() -> None:
    model = load_library().get("pv_inverter")
    attribute = next(iter(model.attributes))
    with pytest.raises(ValidationError, match="nonsense"):
        check_change(model, ConfigKind.ATTRIBUTE, {"nonsense": 1}, delete=False, device="p/d")
    with pytest.raises(ValidationError, match="nonsense"):
        check_change(model, ConfigKind.ATTRIBUTE, ["nonsense"], delete=True, device="p/d")
    assert check_change(model, ConfigKind.ATTRIBUTE, [attribute], delete=True, device="p/d") == [
        attribute
    ]
    with pytest.raises(InvalidArgument, match="expected a list of tag keys"):
        check_change(None, ConfigKind.TAG, {"a": "b"}, delete=True, device="p/d")
    with pytest.raises(InvalidArgument, match="expected tag keys"):
        check_change(None, ConfigKind.TAG, [""], delete=True, device="p/d")
    with pytest.raises(InvalidArgument, match="'flag'"):
        check_change(None, ConfigKind.TAG, {"flag": True}, delete=False, device="p/d")
    assert check_change(None, ConfigKind.TAG, {"n": 2}, delete=False, device="p/d") == {"n": "2"}
    with pytest.raises(ValidationError, match="a-b"):
        check_change(None, ConfigKind.ATTRIBUTE, {"a-b": 1}, delete=False, device="p/d")
    with pytest.raises(InvalidArgument, match="expected attribute values"):
        check_change(None, ConfigKind.ATTRIBUTE, [], delete=False, device="p/d")  # type: ignore[arg-type]


def test_a_flood_of_changes_is_pruned_without_waiting_for_the_hour(tmp_path: Path) -> None:
    clock = SimulatedClock(T0)  # the clock stands still: only the count can trigger a prune
    history = ConfigHistory(tmp_path / "config.sqlite3", clock=clock, keep=None, max_history=100)
    try:
        for i in range(1_000):
            history.record([_change("a", i)])
        frame = history.frame()
        assert 100 <= len(frame) <= 110
        assert frame["new_value"].iloc[-1] == 999  # the newest are kept
    finally:
        history.close()
