"""Parked EVs as a vectorised fleet: charge, serve, heat up, leave and come back.

Power flows of a present (parked, plugged-in) car over a step of ``dt`` seconds:

* the charger delivers ``charger_kw * factor`` from the grid (``factor`` < 1 while the site
  curtails chargers, e.g. a demand-response event); ``charge_efficiency`` of it reaches the car's
  DC bus: ``dc_kw = charger_kw * factor * efficiency``;
* the onboard computer draws ``compute_kw`` from the DC bus;
* the battery takes the rest, ``dc_kw - compute_kw``, while its SoC is below the charge limit
  (the driver's target); at the limit charging stops and the charger covers the compute draw
  alone (the battery holds); if compute draws more than the charger gives, the battery discharges.

So per car, exactly: ``grid_kwh * efficiency = Δbattery_kwh + compute_kwh`` (tested); a battery
that runs empty stops the computer (counted in ``empty_events``; the placement engine's reserve
SoC keeps this from happening to a car it uses).  The
charge curve is flat (AC charging at 3.7-22 kW is close to constant up to ~95 %; no CV taper).
Battery temperature relaxes (time constant ``battery_tau_s``) toward ambient plus a rise per kW
through the battery; compute temperature toward cabin (ambient + offset) plus a rise per W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
EPS = 1e-12


@dataclass(frozen=True, slots=True)
class CarSpec:
    """Physical parameters of one pool's cars."""

    battery_kwh: float
    """Usable battery capacity, kWh."""
    charger_kw: float
    """Grid power of the charger, kW."""
    charge_efficiency: float = 0.9
    """Fraction of the charger's grid power that reaches the DC bus."""
    target_soc_percent: float = 80.0
    """Charge limit and the SoC the driver needs at departure, percent."""
    battery_tau_s: float = 3 * 3600.0
    battery_rise_c_per_kw: float = 0.8
    """Steady battery temperature rise over ambient per kW through the battery, °C."""
    compute_tau_s: float = 600.0
    compute_rise_c_per_w: float = 0.08
    """Steady compute temperature rise over cabin per W of compute, °C."""
    cabin_offset_c: float = 5.0
    drive_rise_c: float = 8.0
    """Battery temperature over ambient when the car comes back from a trip, °C."""


@dataclass
class StepEnergy:
    """Per-car energy over one step, kWh (arrays over the fleet)."""

    grid_kwh: FloatArr
    compute_kwh: FloatArr
    battery_kwh: FloatArr
    """Change of stored energy (negative when discharging)."""


class CarFleet:
    """State of ``n`` cars (index order fixed).  Cars start away at 50 % SoC; call
    :meth:`arrive` to park one."""

    def __init__(self, specs: list[CarSpec], ambient_c: float) -> None:
        self.n = len(specs)
        self.battery_kwh = np.array([s.battery_kwh for s in specs], dtype=np.float64)
        self.charger_kw = np.array([s.charger_kw for s in specs], dtype=np.float64)
        self.efficiency = np.array([s.charge_efficiency for s in specs], dtype=np.float64)
        self.target = np.array([s.target_soc_percent for s in specs], dtype=np.float64)
        self.b_tau = np.array([s.battery_tau_s for s in specs], dtype=np.float64)
        self.b_rise = np.array([s.battery_rise_c_per_kw for s in specs], dtype=np.float64)
        self.c_tau = np.array([s.compute_tau_s for s in specs], dtype=np.float64)
        self.c_rise = np.array([s.compute_rise_c_per_w for s in specs], dtype=np.float64)
        self.cabin = np.array([s.cabin_offset_c for s in specs], dtype=np.float64)
        self.drive_rise = np.array([s.drive_rise_c for s in specs], dtype=np.float64)
        self.soc = np.full(self.n, 50.0)
        self.present = np.zeros(self.n, dtype=np.bool_)
        self.battery_temp = np.full(self.n, ambient_c)
        self.compute_temp = np.full(self.n, ambient_c)
        self.grid_kwh = np.zeros(self.n)
        self.compute_kwh = np.zeros(self.n)
        self.empty_events = 0
        """Times a car's battery ran empty (SoC clipped at 0)."""

    def dc_kw(self, factor: float) -> FloatArr:
        """DC power the charger gives a present car now, kW (0 when away)."""
        return np.where(self.present, self.charger_kw * factor * self.efficiency, 0.0)

    def advance(
        self, dt_s: float, compute_w: FloatArr, ambient_c: float, factor: float = 1.0
    ) -> StepEnergy:
        """Advance every car by ``dt_s`` seconds with ``compute_w`` W of onboard compute each
        (must be 0 for cars away).  Returns the step's per-car energy."""
        if dt_s < 0:
            raise ValueError("dt_s must be >= 0")
        h = dt_s / 3600.0
        comp = np.where(self.present, compute_w / 1000.0, 0.0)
        dc = self.dc_kw(factor)
        cap = self.battery_kwh
        stored = self.soc / 100.0 * cap
        limit = self.target / 100.0 * cap
        rate = dc - comp  # kW into the battery while charging
        charging = self.present & (stored < limit - EPS) & (rate > 0)
        # time (h) to reach the charge limit, for those charging
        t_full = np.where(charging, (limit - stored) / np.maximum(rate, EPS), 0.0)
        t_c = np.where(charging, np.minimum(t_full, h), 0.0)
        t_hold = h - t_c
        # charging phase: full charger power from the grid
        d_batt = rate * t_c
        grid = np.where(self.present, self.charger_kw * factor, 0.0) * t_c
        # hold phase: the charger covers compute up to its power, the battery the rest
        cover = np.minimum(comp, dc)
        grid = grid + np.where(self.present, cover / np.maximum(self.efficiency, EPS), 0.0) * t_hold
        d_batt = d_batt - (comp - cover) * t_hold
        compute = comp * h
        # an empty battery stops the computer: the energy it could not get is not drawn
        short = np.maximum(-(stored + d_batt), 0.0)
        if bool((short > 0).any()):
            self.empty_events += int((short > 0).sum())
            compute = compute - short
            d_batt = d_batt + short
        self.soc = np.clip((stored + d_batt) / cap * 100.0, 0.0, 100.0)
        self.grid_kwh += grid
        self.compute_kwh += compute
        # temperatures: relax toward the steady state of this step's load
        p_batt = np.abs(d_batt) / h if h > 0 else np.zeros(self.n)
        b_eq = ambient_c + np.where(self.present, self.b_rise * p_batt, 0.0)
        kb = np.exp(-dt_s / self.b_tau)
        self.battery_temp = b_eq + (self.battery_temp - b_eq) * kb
        c_eq = ambient_c + np.where(self.present, self.cabin + self.c_rise * comp * 1000.0, 0.0)
        kc = np.exp(-dt_s / self.c_tau)
        self.compute_temp = c_eq + (self.compute_temp - c_eq) * kc
        return StepEnergy(grid, compute, d_batt)

    def arrive(self, i: int, trip_kwh: float, ambient_c: float) -> None:
        """Car ``i`` parks and plugs in after a trip that took ``trip_kwh`` out of its battery."""
        stored = self.soc[i] / 100.0 * self.battery_kwh[i] - trip_kwh
        if stored < 0:
            self.empty_events += 1
            stored = 0.0
        self.soc[i] = stored / self.battery_kwh[i] * 100.0
        self.present[i] = True
        self.battery_temp[i] = ambient_c + self.drive_rise[i]
        self.compute_temp[i] = ambient_c + self.cabin[i]

    def depart(self, i: int) -> float:
        """Car ``i`` unplugs and leaves; returns its SoC at departure, percent."""
        self.present[i] = False
        return float(self.soc[i])
