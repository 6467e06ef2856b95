"""The profile engine: what a simulated device reports at any time, deterministic for a seed.

Theory of operation
-------------------
A profile (a small frozen dataclass of parameters, one subclass of :class:`Profile` per thing
model) says how one kind of device behaves; a :class:`ProfileState` is one device following it
from a ``start`` time with a ``seed``. The behaviour is computed on a **grid**: points ``step``
seconds apart from ``start``, in blocks of :data:`BLOCK` steps that the profile computes at once
with numpy (:meth:`Profile._block`). On the grid points a profile computes its physical
quantities from deterministic functions of time (solar geometry, daily cycles, schedules), from
seeded stochastic processes (:meth:`Grid.ar1`: clouds, wind, load noise) and from state carried
from one block to the next (:attr:`Grid.carry`: state of charge, hysteresis, yaw).

A sample at a time ``t`` is read off the grid by one rule, the same for every profile:

- *continuous* quantities are interpolated linearly between the grid points around ``t``;
- *discrete* quantities (states, flags, set points) hold the value of the grid point at or
  before ``t``;
- a *counter* (energy, irradiation) is its initial value plus the exact integral, from
  ``start`` to ``t``, of its power quantity as read by the two rules above (a trapezoid per grid
  step for a continuous power, a rectangle for a discrete one), in units of the power times
  hours; its *daily* form is the counter minus its value at the last local midnight (or at
  ``start`` on the first day);
- measurement noise is added last, per sample, from the caller's ``rng`` (absolute and relative
  standard deviations per quantity, :meth:`Profile._noise`); it never enters the grid or the
  counters.

So what a device reports at ``t`` depends on the profile, the seed and the start only, not on
how often or at which other times it was sampled (the noise aside); a counter is exactly the
integral of its power, hence never decreases when its power is not negative; and
:meth:`Profile.frame` (a table over a DatetimeIndex) gives exactly what successive
:meth:`Profile.values` calls give.

Random numbers: each stochastic process is a named stream; the normal variates of block ``b`` of
stream ``s`` come from ``numpy.random.default_rng([seed, crc32(s), b + 1])`` (key 0 draws the
process's start), so they are the same however the device is sampled. Samples in time order
cost one interpolation each (a block is computed once); a sample before the current block
recomputes the grid from ``start``.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import InvalidArgument
from ..model import library_model

__all__ = ["BLOCK", "Counter", "Grid", "Profile", "ProfileState", "Sample"]

BLOCK = 1024
"""Grid steps a profile computes at once (a block has ``BLOCK + 1`` points, shared at its
ends with the blocks before and after)."""

_DAY = 86_400.0  # [s]

Sample = dict[str, Any]
"""Measurepoint values of one sample: point id -> value, as a device posts them."""


@dataclass(frozen=True, slots=True)
class Counter:
    """A counter quantity: the integral of a power quantity over time.

    ``power`` is in units per hour (kW for a kWh counter); ``daily`` names the quantity that
    restarts from zero at each local midnight (``None``: no daily form).
    """

    name: str
    power: str
    daily: str | None = None


class Grid:
    """One block of grid points, handed to :meth:`Profile._block` to fill.

    ``t`` are the times of the points [s since the Unix epoch]; ``step`` the spacing [s];
    ``carry`` the state a profile keeps between blocks (empty in the first block);
    ``first`` tells whether this is the first block (``t[0]`` is the state's start).
    """

    __slots__ = ("_block", "_seed", "carry", "first", "step", "t")

    def __init__(
        self, seed: int, block: int, t: np.ndarray, step: float, carry: dict[str, Any]
    ) -> None:
        self._seed = seed
        self._block = block
        self.t = t
        self.step = step
        self.carry = carry
        self.first = block == 0

    def normals(self, stream: str, key: int, size: int) -> np.ndarray:
        """``size`` standard normal variates of ``stream`` for ``key`` (the same every time)."""
        rng = np.random.default_rng([self._seed, zlib.crc32(stream.encode()), key])
        return rng.standard_normal(size)

    def ar1(self, stream: str, tau: float) -> np.ndarray:
        """A stationary standard normal AR(1) process on the grid points, continuing across
        blocks: ``z[i+1] = phi * z[i] + sqrt(1 - phi**2) * e[i]`` with ``phi =
        exp(-step / tau)``, the exact discretisation of an Ornstein-Uhlenbeck process with
        correlation time ``tau`` [s]."""
        key = "ar1:" + stream
        z0 = float(self.normals(stream, 0, 1)[0]) if self.first else self.carry[key]
        phi = math.exp(-self.step / tau)
        shocks = self.normals(stream, self._block + 1, len(self.t) - 1) * math.sqrt(1 - phi * phi)
        path = np.fromiter(
            accumulate(shocks.tolist(), lambda z, e: phi * z + e, initial=z0),
            dtype=float,
            count=len(self.t),
        )
        self.carry[key] = float(path[-1])
        return path

    def constants(self, stream: str, size: int) -> np.ndarray:
        """``size`` standard normal variates fixed for the whole state (per-device offsets)."""
        return self.normals(stream, 0, size)


class ProfileState:
    """One simulated device following a :class:`Profile` from ``start`` with ``seed``.

    Made by :meth:`Profile.state`; hand it to :meth:`Profile.values` for every sample. It keeps
    the current block of the grid, what carries over between blocks and the counters' values
    at the local midnights since the block before (bounded by the span of a block).

    Within a grid step every quantity is a polynomial in the fraction ``w`` of the step:
    ``c0 + w * (c1 + w * c2)`` (``c1 = c2 = 0`` for a held value, ``c2 = 0`` for a linear one,
    all three for a counter of a linearly varying power). A block keeps the three coefficient
    tables, so one sample is one evaluation for all quantities.
    """

    __slots__ = (
        "_base",
        "_block_no",
        "_carry",
        "_coef",
        "_counter_rows",
        "_daily",
        "_midnights",
        "_names",
        "_noise",
        "_powers",
        "_start_values",
        "_t0",
        "profile",
        "seed",
        "start",
        "step",
    )

    def __init__(self, profile: Profile, seed: int, start: datetime, step: float) -> None:
        if type(seed) is not int or seed < 0:
            raise InvalidArgument(f"seed must be an int >= 0, got {seed!r}")
        if start.tzinfo is None:
            raise InvalidArgument(f"start must be a tz-aware datetime, got naive {start!r}")
        if not (isinstance(step, int | float) and 0.1 <= step <= 3600):
            raise InvalidArgument(f"step must be between 0.1 and 3600 s, got {step!r}")
        self.profile = profile
        """The profile this device follows."""
        self.seed = seed
        """Seed of every stochastic process of this device."""
        self.start = start
        """When the device starts (counters hold their initial values then)."""
        self.step = float(step)
        """Spacing of the grid points. [s]"""
        self._t0 = start.timestamp()
        cls = type(profile)
        counters = cls.counters
        daily = [c for c in counters if c.daily]
        # rows: continuous, discrete, counters, daily counters
        self._names: tuple[str, ...] = (
            *cls.continuous,
            *cls.discrete,
            *(c.name for c in counters),
            *(c.daily for c in daily if c.daily),
        )
        row = {name: i for i, name in enumerate(self._names)}
        for counter in counters:
            if counter.power not in cls.continuous and counter.power not in cls.discrete:
                raise InvalidArgument(f"counter {counter.name!r}: no quantity {counter.power!r}")
        self._powers = np.array([row[c.power] for c in counters], dtype=np.intp)
        first = len(cls.continuous) + len(cls.discrete)
        self._counter_rows = slice(first, first + len(counters))
        self._daily = np.array([row[c.name] for c in daily], dtype=np.intp)  # their counters
        initial = profile._initial()
        self._start_values = np.array([initial.get(c.name, 0.0) for c in counters], float)
        noise = profile._noise()
        unknown = set(noise) - set(cls.continuous) - set(cls.discrete)
        if unknown:
            raise InvalidArgument(f"noise on quantities that are not measured: {sorted(unknown)}")
        self._noise = (
            np.array([row[name] for name in noise], dtype=np.intp),
            np.array([abs_sd for abs_sd, _ in noise.values()], dtype=float),
            np.array([rel_sd for _, rel_sd in noise.values()], dtype=float),
        )
        self._reset()

    def _reset(self) -> None:
        self._block_no = -1
        self._coef: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._carry: dict[str, Any] = {}
        self._midnights: dict[int, np.ndarray] = {}
        self._base: tuple[int, np.ndarray] | None = None

    def _ensure(self, number: int) -> None:
        """Make block ``number`` the current one, computing the blocks up to it (from the
        start if it is before the current one)."""
        if number < self._block_no:
            self._reset()
        while self._block_no < number:
            self._compute(self._block_no + 1)

    def _compute(self, number: int) -> None:
        profile = self.profile
        cls = type(profile)
        t = self._t0 + (number * BLOCK + np.arange(BLOCK + 1, dtype=float)) * self.step
        arrays = profile._block(Grid(self.seed, number, t, self.step, self._carry))
        missing = (set(cls.continuous) | set(cls.discrete)) - set(arrays)
        if missing:
            raise InvalidArgument(f"{cls.__name__}._block did not compute {sorted(missing)}")
        n_cont = len(cls.continuous)
        c0 = np.zeros((BLOCK + 1, len(self._names)))
        c1 = np.zeros_like(c0)
        c2 = np.zeros_like(c0)
        for i, name in enumerate(cls.continuous + cls.discrete):
            c0[:, i] = arrays[name]
        c1[:-1, :n_cont] = np.diff(c0[:, :n_cont], axis=0)
        if cls.counters:
            hours = self.step / 3600.0
            power = c0[:, self._powers]
            slope = c1[:, self._powers]  # 0 for a held (discrete) power
            begin = self._start_values if number == 0 else self._carry["counters:end"]
            rows = self._counter_rows
            c0[0, rows] = begin
            c0[1:, rows] = begin + np.cumsum((power[:-1] + slope[:-1] / 2) * hours, axis=0)
            c1[:, rows] = power * hours
            c2[:, rows] = slope / 2 * hours
            self._carry["counters:end"] = c0[-1, rows].copy()
        n_daily = len(self._daily)
        if n_daily:
            for c in (c0, c1, c2):
                c[:, -n_daily:] = c[:, self._daily]
        self._coef = (float(t[0]), c0, c1, c2)
        self._block_no = number
        self._base = None
        # the counters at each local midnight in this block, and at the last one before it
        self._midnights = dict(sorted(self._midnights.items())[-1:])
        if n_daily:
            offset = profile._utc_offset_s()
            first_day = math.floor((t[0] + offset) / _DAY) + 1
            last_day = math.floor((t[-1] + offset) / _DAY)
            for day in range(first_day, last_day + 1):
                self._midnights[day] = self._evaluate(day * _DAY - offset)[self._daily]

    def _evaluate(self, t: float) -> np.ndarray:
        """Every row at ``t`` (in the current block), without noise or daily offsets."""
        assert self._coef is not None
        t0, c0, c1, c2 = self._coef
        x = (t - t0) / self.step
        i = min(int(x), BLOCK - 1)
        w = x - i
        values: np.ndarray = c0[i] + w * (c1[i] + w * c2[i])
        return values

    def _daily_base(self, t: float) -> np.ndarray:
        """What the rows subtract at ``t``: for the daily rows, their counters at the last
        local midnight (at the start on the first day); 0 for the others."""
        offset = self.profile._utc_offset_s()
        day = math.floor((t + offset) / _DAY)
        if self._base is None or self._base[0] != day:
            base = np.zeros(len(self._names))
            initial = self._start_values[self._daily - self._counter_rows.start]
            base[-len(self._daily) :] = self._midnights.get(day, initial)
            self._base = (day, base)
        return self._base[1]

    def quantities(self, t: float, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Every quantity of the profile at ``t`` [s since the Unix epoch], by the rules of
        the module docstring; measurement noise from ``rng`` (``None``: none).

        Raises :class:`~enos_lab.errors.InvalidArgument` for a time before :attr:`start`.
        """
        if t < self._t0:
            raise InvalidArgument(
                f"sample time {t} s is before the start of the state ({self._t0} s)"
            )
        self._ensure(int((t - self._t0) / self.step) // BLOCK)
        values = self._evaluate(t)
        if len(self._daily):
            values -= self._daily_base(t)
        if rng is not None:
            rows, abs_sd, rel_sd = self._noise
            picked = values[rows]
            values[rows] = picked + rng.standard_normal(len(rows)) * (abs_sd + rel_sd * abs(picked))
        return dict(zip(self._names, values.tolist(), strict=True))


def epoch_seconds(at: datetime | int | float) -> float:
    """``at`` as seconds since the Unix epoch: a tz-aware datetime, or epoch milliseconds (the
    EnOS wire format) as an int. [s]"""
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise InvalidArgument(f"expected a tz-aware datetime, got naive {at!r}")
        return at.timestamp()
    if isinstance(at, int | float) and not isinstance(at, bool):
        return at / 1000.0
    raise InvalidArgument(f"expected a tz-aware datetime or epoch ms, got {at!r}")


class Profile(ABC):
    """Base of the profiles: parameters (a frozen dataclass in each subclass) and the rules
    that turn them into measurepoint values over time (see the module docstring).

    Subclasses declare the thing model they produce (``model_id``), their grid quantities
    (``continuous``, ``discrete``), their ``counters``, and implement :meth:`_block` (the
    physics on the grid) and :meth:`_emit` (a sample's quantities as the model's points).
    """

    __slots__ = ()

    model_id: ClassVar[str]
    """The library thing model whose measurepoints the profile produces."""
    continuous: ClassVar[tuple[str, ...]] = ()
    """Quantities interpolated linearly between grid points."""
    discrete: ClassVar[tuple[str, ...]] = ()
    """Quantities held from the grid point at or before the sample."""
    counters: ClassVar[tuple[Counter, ...]] = ()
    """Counters: integrals of a power quantity."""

    def state(self, seed: int, start: datetime, *, step: float = 60.0) -> ProfileState:
        """A device following this profile from ``start`` (tz-aware) with ``seed`` (an int >=
        0) on a grid of ``step`` seconds (0.1 to 3600). [s]"""
        return ProfileState(self, seed, start, step)

    def values(
        self,
        at: datetime | int,
        rng: np.random.Generator | None,
        state: ProfileState,
    ) -> Sample:
        """The measurepoint values the device reports at ``at`` (tz-aware datetime or epoch
        ms): every measurepoint of the model, each valid for it. Measurement noise comes from
        ``rng`` (``None``: none). ``state`` must have been made by this profile."""
        if state.profile is not self and state.profile != self:
            raise InvalidArgument(
                f"the state follows {state.profile!r}, not {self!r}: make it with .state()"
            )
        t = epoch_seconds(at)
        return self._emit(state.quantities(t, rng), round(t * 1000))

    def frame(
        self,
        index: pd.DatetimeIndex,
        seed: int,
        *,
        step: float = 60.0,
        rng: np.random.Generator | None = None,
    ) -> pd.DataFrame:
        """The values at every time of ``index`` (tz-aware, increasing) of a device starting at
        ``index[0]``: one column per measurepoint (arrays as lists), exactly what successive
        :meth:`values` calls with the same ``rng`` give. For backtests and plots."""
        if index.tz is None:
            raise InvalidArgument("frame() needs a tz-aware DatetimeIndex (e.g. tz='UTC')")
        if not len(index):
            return pd.DataFrame(index=index, columns=list(self.point_ids()))
        if not index.is_monotonic_increasing:
            raise InvalidArgument("frame() needs an increasing DatetimeIndex")
        state = self.state(seed, index[0].to_pydatetime(), step=step)
        times = index.as_unit("ms").asi8  # epoch ms (the index is tz-aware, UTC-based)
        rows = [self._emit(state.quantities(ms / 1000.0, rng), ms) for ms in times.tolist()]
        return pd.DataFrame(rows, index=index, columns=list(self.point_ids()))

    def point_ids(self) -> tuple[str, ...]:
        """The measurepoint ids every sample has (the model's, in the model's order)."""
        return tuple(library_model(self.model_id).measurepoints)

    # -- what subclasses implement ------------------------------------------------------------

    @abstractmethod
    def _block(self, grid: Grid) -> Mapping[str, np.ndarray | float]:
        """Every continuous and discrete quantity at the points of ``grid`` (arrays, or a
        scalar for a constant)."""

    @abstractmethod
    def _emit(self, q: dict[str, Any], at_ms: int) -> Sample:
        """A sample's quantities as the model's measurepoints (rounded, typed for the model)."""

    def _noise(self) -> Mapping[str, tuple[float, float]]:
        """Measurement noise: continuous or discrete quantity -> (absolute, relative) standard
        deviation (never a counter)."""
        return {}

    def _initial(self) -> Mapping[str, float]:
        """Counter values at the start (counter name -> value; missing ones start at 0)."""
        return {}

    def _utc_offset_s(self) -> float:
        """Offset of local time from UTC, for daily counters. [s]"""
        return 0.0
