"""Upload modes: the pure selections and the stream filter that applies them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.edge import (
    Sample,
    UploadFilter,
    UploadMode,
    changed_points,
    latest_per_period,
    period_index,
)
from enos_lab.errors import InvalidArgument

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def at(seconds: float, device: str = "inv1", **values: object) -> Sample:
    return Sample(device, T0 + timedelta(seconds=seconds), values or {"p": seconds})


def test_realtime_sends_every_sample() -> None:
    upload = UploadFilter()
    samples = [at(0), at(0), at(1, "meter2")]
    assert [upload.push(s) for s in samples] == [[s] for s in samples]
    assert upload.mode is UploadMode.REALTIME and upload.flush() == []


def test_interval_keeps_the_latest_sample_of_each_epoch_aligned_period() -> None:
    samples = [at(0), at(20), at(59.999), at(60), at(61, "meter2"), at(130), at(179)]
    assert period_index(samples[2].time_ms, 60) == period_index(samples[0].time_ms, 60)
    assert latest_per_period(samples, 60) == [at(59.999), at(60), at(61, "meter2"), at(179)]
    upload = UploadFilter("interval", period=60)
    sent = [out for s in samples for out in upload.push(s)]
    assert sent == [at(59.999), at(60)]  # a period is known complete when the next begins
    assert upload.flush() == [at(61, "meter2"), at(179)]
    assert upload.push(at(200)) == [] and upload.push(at(100)) == [at(100)]  # late: at once


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=600_000), max_size=40),
    devices=st.lists(st.sampled_from(["a", "b", "c"]), min_size=40, max_size=40),
    period=st.sampled_from([1, 10, 60, 0.5]),
)
def test_the_interval_stream_agrees_with_the_batch_selection(
    offsets: list[int], devices: list[str], period: float
) -> None:
    samples = [
        Sample(device, T0 + timedelta(milliseconds=ms), {"n": i})
        for i, (ms, device) in enumerate(zip(sorted(offsets), devices, strict=False))
    ]
    upload = UploadFilter(UploadMode.INTERVAL, period=period)
    streamed = [out for s in samples for out in upload.push(s)] + upload.flush()
    expected = latest_per_period(samples, period)
    assert sorted(streamed, key=lambda s: (s.time, s.device)) == expected


def test_on_change_sends_points_beyond_their_deadband_against_the_last_value_sent() -> None:
    upload = UploadFilter(
        "on_change", deadbands={"power": 0.5, "voltage": 1.0}, default_deadband=0.0
    )
    first = at(0, power=10.0, voltage=[230.0, 231.0], state=1, label="run")
    assert upload.push(first) == [first]  # first values are always sent
    assert upload.push(at(1, power=10.4, voltage=[230.9, 231.0], state=1, label="run")) == []
    # a slow drift is sent once it adds up to more than the deadband
    assert upload.push(at(2, power=10.6, voltage=[230.0, 230.1], state=1, label="run")) == [
        at(2, power=10.6)
    ]
    assert upload.push(at(3, power=10.6, voltage=[228.9, 231.0], state=2, label="stop")) == [
        at(3, voltage=[228.9, 231.0], state=2, label="stop")
    ]
    assert upload.last_sent("inv1") == {
        "power": 10.6,
        "voltage": [228.9, 231.0],
        "state": 2,
        "label": "stop",
    }
    assert upload.push(at(4, "meter2", power=10.6)) == [at(4, "meter2", power=10.6)]  # per device
    assert upload.push(at(5, voltage=[228.9, 231.0, 230.0])) == [
        at(5, voltage=[228.9, 231.0, 230.0])
    ]


def test_changed_points_is_a_pure_function_of_its_inputs() -> None:
    last = {"a": 1, "b": 2.0, "c": True}
    assert changed_points({"a": 1, "b": 2.05, "c": True}, last, {"b": 0.1}) == {}
    assert changed_points({"a": 2, "b": 2.2, "c": False, "d": 0}, last, {"b": 0.1}) == {
        "a": 2,
        "b": 2.2,
        "c": False,
        "d": 0,
    }
    assert last == {"a": 1, "b": 2.0, "c": True}
    assert changed_points({"b": 2.05}, last, default_deadband=0.1) == {}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="period > 0 s"):
        UploadFilter(UploadMode.INTERVAL)
    with pytest.raises(InvalidArgument, match="period > 0 s"):
        latest_per_period([], 0)
    with pytest.raises(InvalidArgument, match="deadband of 'p' must be >= 0"):
        UploadFilter(UploadMode.ON_CHANGE, deadbands={"p": -1})
    with pytest.raises(ValueError, match="'sometimes' is not a valid UploadMode"):
        UploadFilter("sometimes")
