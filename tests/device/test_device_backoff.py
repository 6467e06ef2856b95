"""The reconnect policy: exponential backoff with full jitter, its bounds and its checks."""

from __future__ import annotations

import random

import pytest

from enos_lab.device import Backoff, ConnectionMode
from enos_lab.errors import InvalidArgument


def test_caps_grow_exponentially_up_to_the_maximum() -> None:
    policy = Backoff(initial=0.5, maximum=4.0, multiplier=2.0, jitter=False)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert [Backoff(initial=1.0, maximum=100.0, multiplier=3.0).cap(n) for n in range(5)] == [
        1.0,
        3.0,
        9.0,
        27.0,
        81.0,
    ]


def test_full_jitter_draws_uniformly_below_each_cap_from_the_seeded_rng() -> None:
    policy = Backoff(initial=0.5, maximum=4.0)
    rng = random.Random(2024)
    delays = [policy.delay(n, rng) for n in range(6)]
    # each delay is u * min(4, 0.5 * 2**n) with u the seeded source's next uniform draw
    assert delays == [
        0.23504535921553532,
        0.7282642914232076,
        0.607502716782715,
        3.5491930760000603,
        1.640354357874903,
        2.866457574326571,
    ]
    again = random.Random(2024)
    assert [policy.delay(n, again) for n in range(6)] == delays  # repeatable for a seed
    rng = random.Random(5)
    for attempt in range(50):
        assert 0.0 <= policy.delay(attempt, rng) <= policy.cap(attempt)


def test_a_huge_attempt_number_stays_at_the_maximum() -> None:
    policy = Backoff(initial=1.0, maximum=60.0, jitter=False)
    assert policy.cap(5000) == 60.0  # 2.0**5000 overflows a float
    assert policy.delay(5000, random.Random(0)) == 60.0


def test_retries_bound_the_attempts() -> None:
    assert not Backoff().gives_up(10**6)  # None: forever
    policy = Backoff(retries=2)
    assert [policy.gives_up(n) for n in range(4)] == [False, False, True, True]
    assert Backoff(retries=0).gives_up(0)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"initial": -1.0}, "initial"),
        ({"initial": float("inf")}, "initial"),
        ({"initial": 5.0, "maximum": 1.0}, "maximum"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"retries": -1}, "retries"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        Backoff(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="attempt"):
        Backoff().cap(-1)


def test_connection_modes() -> None:
    assert {mode.value for mode in ConnectionMode} == {"long", "short"}
