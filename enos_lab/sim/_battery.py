"""The battery storage profile (library model ``battery_storage``).

A daily dispatch schedule in local time (charge at night and around noon, discharge in the
evening peak by default) sets the power, varied by a seeded AR(1) process; the state of charge
integrates it with the charge and discharge efficiencies and stays between ``soc_min`` and
``soc_max``: a step that would cross a limit is cut to reach it exactly, and the battery then
idles until the schedule turns the other way. The power is held constant over each grid step
(a set point), so the state of charge is linear within a step and the energy counters are its
exact AC-side integrals.

Cells (``cells_in_series``, an LFP-like open-circuit voltage curve with knees at both ends)
give the DC voltage, less the drop over each cell's resistance while discharging (more while
charging); the spread between the highest and lowest cell grows towards the ends of the SOC
range. Four temperature sensors read the room plus the heat of the current. State of health
falls linearly with discharged energy, 20 % over ``cycle_life`` full cycles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidArgument
from ._profile import Counter, Grid, Profile, Sample
from ._site import Site

__all__ = ["BatteryStorageProfile"]

_IDLE, _CHARGING, _DISCHARGING = 0, 1, 2
_SENSORS = 4  # cell temperature sensors


def open_circuit_voltage(soc: np.ndarray) -> np.ndarray:
    """An LFP-like cell open-circuit voltage [V] at state of charge ``soc`` [0..1]: a flat
    plateau near 3.3 V with knees at both ends."""
    return np.asarray(
        3.05 + 0.25 * soc - 0.15 * np.exp(-20.0 * soc) + 0.15 * np.exp(-20.0 * (1.0 - soc))
    )


@dataclass(frozen=True, slots=True)
class BatteryStorageProfile(Profile):
    """A battery energy storage system on a daily schedule (model ``battery_storage``).

    ``rated_capacity`` [kWh]; ``rated_power`` [kW]; ``soc_min``, ``soc_max`` and
    ``initial_soc`` [%]; ``charge_efficiency`` and ``discharge_efficiency`` (AC to stored and
    back) [-]; ``schedule``: ``(start, end, power)`` in local hours [h] with power per unit of
    rated, positive discharging (an end before the start wraps past midnight);
    ``dispatch_variation`` relative spread of the set points [-]; ``cells_in_series`` [-];
    ``cell_resistance`` [ohm]; ``room_temperature`` [degC]; ``initial_soh`` [%];
    ``cycle_life`` full cycles to lose 20 % of health [-]; counters at the start
    ``charge_energy_total`` and ``discharge_energy_total`` [kWh]; ``site`` (its UTC offset
    places the schedule).
    """

    model_id: ClassVar[str] = "battery_storage"
    continuous: ClassVar[tuple[str, ...]] = (
        "soc",
        "soh",
        "voltage",
        "max_cell",
        "min_cell",
        *(f"cell_t{n}" for n in range(_SENSORS)),
    )
    discrete: ClassVar[tuple[str, ...]] = ("p", "p_charge", "p_discharge", "current")
    counters: ClassVar[tuple[Counter, ...]] = (
        Counter("charge_energy_total", "p_charge"),
        Counter("discharge_energy_total", "p_discharge"),
    )

    rated_capacity: float = 200.0
    rated_power: float = 100.0
    soc_min: float = 10.0
    soc_max: float = 95.0
    initial_soc: float = 50.0
    charge_efficiency: float = 0.96
    discharge_efficiency: float = 0.96
    schedule: tuple[tuple[float, float, float], ...] = (
        (0.0, 5.0, -0.3),
        (10.0, 14.0, -0.5),
        (17.0, 21.0, 0.7),
    )
    dispatch_variation: float = 0.05
    cells_in_series: int = 240
    cell_resistance: float = 0.0005
    room_temperature: float = 25.0
    initial_soh: float = 98.0
    cycle_life: float = 6000.0
    charge_energy_total: float = 0.0
    discharge_energy_total: float = 0.0
    site: Site = field(default_factory=Site)

    def __post_init__(self) -> None:
        if self.rated_capacity <= 0 or self.rated_power <= 0 or self.cells_in_series <= 0:
            raise InvalidArgument(
                f"BatteryStorageProfile: rated_capacity, rated_power and cells_in_series must "
                f"be > 0, got {self.rated_capacity!r}, {self.rated_power!r}, "
                f"{self.cells_in_series!r}"
            )
        if not 0 <= self.soc_min <= self.initial_soc <= self.soc_max <= 100:
            raise InvalidArgument(
                f"BatteryStorageProfile: need 0 <= soc_min <= initial_soc <= soc_max <= 100, "
                f"got {self.soc_min!r}, {self.initial_soc!r}, {self.soc_max!r}"
            )
        for efficiency in (self.charge_efficiency, self.discharge_efficiency):
            if not 0 < efficiency <= 1:
                raise InvalidArgument(f"efficiencies must be in (0, 1], got {efficiency!r}")
        for start, end, power in self.schedule:
            if not (0 <= start < 24 and 0 <= end <= 24 and -1 <= power <= 1):
                raise InvalidArgument(
                    f"schedule entry {(start, end, power)!r}: hours 0..24, power -1..1 per unit"
                )

    def _set_points(self, grid: Grid) -> np.ndarray:
        """Scheduled power at the grid points, discharge positive [kW]."""
        hour = np.mod((grid.t + self.site.utc_offset * 3600.0) / 3600.0, 24.0)
        per_unit = np.zeros(len(grid.t))
        for start, end, power in self.schedule:
            if start <= end:
                inside = (hour >= start) & (hour < end)
            else:  # past midnight
                inside = (hour >= start) | (hour < end)
            per_unit = np.where(inside, power, per_unit)
        wobble = 1.0 + self.dispatch_variation * grid.ar1("dispatch", 1_800.0)
        return np.asarray(self.rated_power * per_unit * wobble)

    def _block(self, grid: Grid) -> Mapping[str, np.ndarray | float]:
        hours = grid.step / 3600.0
        capacity = self.rated_capacity
        e_min = capacity * self.soc_min / 100.0
        e_max = capacity * self.soc_max / 100.0
        carry = grid.carry
        energy = float(carry.get("energy", capacity * self.initial_soc / 100.0))
        discharged = float(carry.get("discharged", 0.0))
        n = len(grid.t)
        stored = np.empty(n)
        power = np.empty(n)
        out_total = np.empty(n)
        for i, wanted in enumerate(self._set_points(grid).tolist()):
            if wanted > 0:  # discharge, at most down to e_min within the step
                p = min(wanted, max(energy - e_min, 0.0) * self.discharge_efficiency / hours)
            elif wanted < 0:  # charge, at most up to e_max
                p = -min(-wanted, max(e_max - energy, 0.0) / (self.charge_efficiency * hours))
            else:
                p = 0.0
            stored[i] = energy
            power[i] = p
            out_total[i] = discharged
            if i < n - 1:  # the last point's step belongs to the next block
                if p > 0:
                    energy = max(energy - p * hours / self.discharge_efficiency, e_min)
                    discharged += p * hours
                elif p < 0:
                    energy = min(energy - p * hours * self.charge_efficiency, e_max)
        carry["energy"] = energy
        carry["discharged"] = discharged
        soc = stored / capacity
        ocv = open_circuit_voltage(soc)
        cell_current = power * 1000.0 / (self.cells_in_series * ocv)  # discharge positive [A]
        cell = ocv - cell_current * self.cell_resistance
        voltage = self.cells_in_series * cell
        spread = 0.004 + 0.03 * np.abs(2.0 * soc - 1.0) ** 6
        load = np.abs(power) / self.rated_power
        offsets = 0.5 * grid.constants("sensor_offsets", _SENSORS)
        heat = self.room_temperature + 2.0 + 6.0 * load
        temps = {
            f"cell_t{k}": heat + offsets[k] + 0.3 * grid.ar1(f"cell_t{k}", 900.0)
            for k in range(_SENSORS)
        }
        cycles = (self.discharge_energy_total + out_total) / capacity
        return {
            "soc": 100.0 * soc,
            "soh": self.initial_soh - 20.0 * cycles / self.cycle_life,
            "voltage": voltage,
            "max_cell": cell + spread,
            "min_cell": cell - spread,
            **temps,
            "p": power,
            "p_charge": np.maximum(-power, 0.0),
            "p_discharge": np.maximum(power, 0.0),
            "current": power * 1000.0 / voltage,
        }

    def _noise(self) -> Mapping[str, tuple[float, float]]:
        return {
            "p": (0.0, 0.002),
            "current": (0.0, 0.002),
            "voltage": (0.05, 0.0),
            **{f"cell_t{k}": (0.05, 0.0) for k in range(_SENSORS)},
        }

    def _initial(self) -> Mapping[str, float]:
        return {
            "charge_energy_total": self.charge_energy_total,
            "discharge_energy_total": self.discharge_energy_total,
        }

    def _utc_offset_s(self) -> float:
        return self.site.utc_offset * 3600.0

    def _emit(self, q: dict[str, Any], at_ms: int) -> Sample:
        if q["p_discharge"] > 0:
            mode = _DISCHARGING
        elif q["p_charge"] > 0:
            mode = _CHARGING
        else:
            mode = _IDLE
        power = q["p"] if mode != _IDLE else 0.0
        return {
            "active_power": round(power, 3),
            "soc": round(q["soc"], 3),
            "soh": round(q["soh"], 4),
            "dc_voltage": round(q["voltage"], 2),
            "dc_current": round(q["current"], 2) if mode != _IDLE else 0.0,
            "cell_temperatures": [round(q[f"cell_t{k}"], 2) for k in range(_SENSORS)],
            "max_cell_voltage": round(q["max_cell"], 4),
            "min_cell_voltage": round(q["min_cell"], 4),
            "charge_energy_total": round(q["charge_energy_total"], 3),
            "discharge_energy_total": round(q["discharge_energy_total"], 3),
            "mode": mode,
            "contactor_closed": mode != _IDLE,
        }
