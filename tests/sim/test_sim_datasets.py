"""The datasets the profiles use: the turbine power curve is the documented physical model, the
load shapes are per unit of their peak."""

from __future__ import annotations

import math

import numpy as np
import pytest

from enos_lab import datasets


def test_the_power_curve_is_the_documented_model() -> None:
    frame, meta = datasets.load("turbine_power_curve")
    assert meta["licence"] == "CC0-1.0"
    speeds = frame["wind_speed"].to_numpy()
    power = frame["power"].to_numpy()
    assert np.allclose(np.diff(speeds), 0.5) and speeds[0] == 0.0 and speeds[-1] == 30.0
    area = math.pi * 100.0**2 / 4
    for v, p, cp in zip(speeds, power, frame["cp"], strict=True):
        if v < 3.0 or v > 25.0:
            assert p == 0.0 and cp == 0.0
            continue
        a = 0.5 * 1.225 * area * 0.40 * v**3 / 2_000_000.0
        assert p == pytest.approx(a / (1 + a**8) ** (1 / 8), abs=6e-5)
        assert cp == pytest.approx(p * 2_000_000.0 / (0.5 * 1.225 * area * v**3), abs=2e-4)
    running = power[(speeds >= 3.0) & (speeds <= 25.0)]
    assert (np.diff(running) >= 0).all() and running.max() == 1.0
    assert frame["cp"].max() < 16 / 27  # below the Betz limit


def test_the_load_shapes_are_per_unit_of_their_peak_every_half_hour() -> None:
    frame, _ = datasets.load("daily_load_shapes")
    assert list(frame["hour"]) == [h / 2 for h in range(48)]
    for kind in ("residential", "commercial", "industrial"):
        assert frame[kind].max() == 1.0 and frame[kind].min() > 0.2
    assert frame["hour"][frame["residential"].idxmax()] == 19.5  # the evening peak
    assert frame["commercial"][frame["hour"] == 3.0].item() < 0.3  # an empty office at night
