"""The living dev fleet in scaled real time (pure: no Kubernetes, no I/O, clock passed in).

The car, tank and site models are :mod:`tokenfleet.fleetsim`'s (the ones ``tokenfleet simulate``
runs in virtual time); this module runs them against the wall clock sped up by ``scale``
(virtual seconds per wall second) and turns their state into what the real world publishes:

* per car, the signal document its gateway would hand the node agent (contract names:
  ``soc-percent``, ``plugged-in``, ..., ``observed-at``), with every time mapped back to the
  wall clock, because the operator judges departures and staleness against its own clock;
* per tank, the Redfish readings of its coolant loop (heat = IT load, supply, return, flow);
* the site power cap, following a daily schedule with a demand-response drop.

**Time scaling.** A virtual hour lasts ``3600 / scale`` wall seconds. Departure times are
published in wall time, so the operator drains a car ``drainLeadSeconds`` (wall) before it leaves.
Charging is ``scale`` times faster in wall time than the charger's power says. The dev pool
therefore declares a smaller battery, ``battery.capacityKWh = E_pool`` =
``max(5, battery_kwh / scale)`` (5 kWh is the API's minimum; :func:`pool_battery_kwh`), and the
cars publish their charger power times ``f = E_pool * scale / battery_kwh`` (1 until the 5 kWh
floor binds: 5x at 60x for a 60 kWh car; :func:`charger_factor`). The operator's "energy to reach
the target SoC by departure" check ``(charger * f - draw) * h_wall >= dSoC * E_pool`` is then the
virtual-time truth ``(charger - draw) * h_virtual >= dSoC * battery_kwh`` up to the compute draw
(which the operator does not scale: 45 W against 55 kW, under 0.1 %).

**Stays.** Car ``i`` of ``n`` runs a shuttle cycle of ``period_hours``: parked and plugged in for
``period_hours - away_hours`` (charging toward its target SoC), then away (unplugged, a trip's
energy spent) for ``away_hours``. Phases are staggered by ``i / n`` of the period (plus seeded
jitter), so at any moment about ``away_hours / period_hours`` of the fleet is away and the rest
can serve: a dev fleet where something arrives or departs every few wall seconds, and a job of
``n - 2`` car replicas always has somewhere to move to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from tokenfleet.fleetsim.cars import CarFleet, CarSpec
from tokenfleet.fleetsim.schedule import HOUR, MIN_GAP_SECONDS, Stay
from tokenfleet.fleetsim.site import DAY, Ambient, DemandResponse, SiteCap
from tokenfleet.fleetsim.tanks import TankLoop, TankLoopSpec
from tokenfleet.telemetry.vehicle import format_time

__all__ = [
    "Change",
    "DevFleet",
    "DevFleetConfig",
    "ScaledClock",
    "TankReading",
    "charger_factor",
    "phases",
    "pool_battery_kwh",
    "shuttle_stays",
]

MAX_SUBSTEP_S = 60.0
"""Longest virtual step of the physics between two event checks, s."""


@dataclass(frozen=True, slots=True)
class ScaledClock:
    """Wall <-> virtual time: ``virtual = virtual_start + (wall - wall_start) * scale``."""

    wall_start: float
    virtual_start: float
    scale: float

    def virtual(self, wall: float) -> float:
        return self.virtual_start + (wall - self.wall_start) * self.scale

    def wall(self, virtual: float) -> float:
        return self.wall_start + (virtual - self.virtual_start) / self.scale


DEV_AMBIENT = Ambient(mean_c=18.0, amplitude_c=6.0, peak_hour=15.0)
DEV_TANK_LOOP = TankLoopSpec(design_flow_lpm=300.0, tau_s=900.0)


@dataclass(frozen=True, slots=True)
class DevFleetConfig:
    """The dev fleet's knobs (every one has a dev-friendly default)."""

    seed: int = 1
    scale: float = 60.0
    """Virtual seconds per wall second (60: a virtual hour per wall minute)."""
    battery_kwh: float = 60.0
    charger_kw: float = 11.0
    target_soc_percent: float = 80.0
    initial_soc_percent: tuple[float, float] = (45.0, 75.0)
    """Uniform range of the SoC of the cars parked at the start."""
    period_hours: float = 4.0
    away_hours: float = 0.5
    jitter_minutes: float = 4.0
    trip_kwh: tuple[float, float] = (6.0, 2.0)
    """Mean and standard deviation of the energy a trip takes, kWh."""
    bandwidth_mbps: float = 200.0
    ambient: Ambient = DEV_AMBIENT
    site_cap_kw: float = 100.0
    demand_response_hours: tuple[float, float] = (17.0, 19.0)
    """Daily window (virtual hours of day, UTC) of the demand-response cap drop."""
    demand_response_factor: float = 0.6
    """The cap during demand response over the normal cap."""
    tank_loop: TankLoopSpec = DEV_TANK_LOOP
    rack_baseline_kw: float = 2.0
    """Background IT load of each tank (fans, pumps, idle servers), kW."""
    horizon_days: int = 14

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError("scale must be > 0")
        if not 0 < self.away_hours < self.period_hours:
            raise ValueError("away_hours must be between 0 and period_hours")
        if not 0 < self.demand_response_factor <= 1:
            raise ValueError("demand_response_factor must be in (0, 1]")


MIN_POOL_BATTERY_KWH = 5.0
"""The API's minimum of ``spec.battery.capacityKWh``."""


def pool_battery_kwh(cfg: DevFleetConfig) -> float:
    """``battery.capacityKWh`` for the dev pool (see the module docstring)."""
    return max(MIN_POOL_BATTERY_KWH, cfg.battery_kwh / cfg.scale)


def charger_factor(cfg: DevFleetConfig) -> float:
    """What the published charger power is multiplied by (see the module docstring)."""
    return pool_battery_kwh(cfg) * cfg.scale / cfg.battery_kwh


@dataclass(frozen=True, slots=True)
class Change:
    """Something that happened, for the log: ``kind`` is Arrived, Departed or SiteCap."""

    kind: str
    subject: str
    virtual_time: float
    detail: str


@dataclass(frozen=True, slots=True)
class TankReading:
    heat_kw: float
    supply_c: float
    return_c: float
    flow_lpm: float


def phases(groups: Sequence[str]) -> list[float]:
    """Each car's phase, a fraction of the cycle: its rank within its group (a pool) over the
    group's size, so every pool is staggered on its own."""
    size: dict[str, int] = {}
    for g in groups:
        size[g] = size.get(g, 0) + 1
    seen: dict[str, int] = {}
    out: list[float] = []
    for g in groups:
        out.append(seen.get(g, 0) / size[g])
        seen[g] = seen.get(g, 0) + 1
    return out


def shuttle_stays(
    rng: np.random.Generator,
    n_cars: int,
    start: float,
    cfg: DevFleetConfig,
    phase: Sequence[float] | None = None,
) -> list[list[Stay]]:
    """Per car, its stays over ``[start - period, start + horizon)``: staggered shuttle cycles
    (see the module docstring); ``phase`` is each car's fraction of the cycle (default:
    ``i / n_cars``). Deterministic for ``rng``'s seed."""
    period = cfg.period_hours * HOUR
    parked = period - cfg.away_hours * HOUR
    jitter = cfg.jitter_minutes * 60.0
    cycles = math.ceil(cfg.horizon_days * DAY / period) + 1
    out: list[list[Stay]] = []
    for i in range(n_cars):
        offset = period * (phase[i] if phase is not None else i / max(n_cars, 1))
        a_j = rng.normal(0.0, jitter, size=cycles) if jitter > 0 else np.zeros(cycles)
        d_j = rng.normal(0.0, jitter, size=cycles) if jitter > 0 else np.zeros(cycles)
        trips = np.maximum(rng.normal(cfg.trip_kwh[0], cfg.trip_kwh[1], size=cycles), 0.5)
        stays: list[Stay] = []
        for k in range(cycles):
            arrive = start - period + offset + k * period + float(a_j[k])
            depart = arrive + parked + float(d_j[k])
            if stays and arrive < stays[-1].depart + MIN_GAP_SECONDS:
                arrive = stays[-1].depart + MIN_GAP_SECONDS
            if depart <= arrive + MIN_GAP_SECONDS:
                continue
            stays.append(Stay(arrive, depart, float(trips[k])))
        out.append(stays)
    return out


@dataclass
class _Car:
    name: str
    stays: list[Stay]
    index: int = 0
    """Index of the current stay (present) or the next one (away)."""
    departures: list[tuple[float, float]] = field(default_factory=list)
    """(virtual departure time, SoC) of every departure so far."""


class DevFleet:
    """Cars and tanks of the dev fleet. Call :meth:`advance` with the wall time; read
    :meth:`car_document`, :meth:`tank_reading` and :meth:`site_cap_kw` afterwards."""

    def __init__(
        self,
        cars: Sequence[str],
        tanks: Sequence[str],
        cfg: DevFleetConfig,
        wall_start: float,
        virtual_start: float | None = None,
        groups: Sequence[str] | None = None,
    ) -> None:
        """``groups``: each car's group (its pool), staggered on its own (default: one group)."""
        self.cfg = cfg
        v0 = wall_start if virtual_start is None else virtual_start
        self.clock = ScaledClock(wall_start, v0, cfg.scale)
        self.now = v0
        rng = np.random.default_rng(cfg.seed)
        stays = shuttle_stays(rng, len(cars), v0, cfg, phases(groups or [""] * len(cars)))
        self.cars = [_Car(name, s) for name, s in zip(cars, stays, strict=True)]
        self.by_name = {c.name: i for i, c in enumerate(self.cars)}
        spec = CarSpec(
            battery_kwh=cfg.battery_kwh,
            charger_kw=cfg.charger_kw,
            target_soc_percent=cfg.target_soc_percent,
        )
        ambient = cfg.ambient.at(v0)
        self.fleet = CarFleet([spec] * len(cars), ambient)
        lo, hi = cfg.initial_soc_percent
        self.fleet.soc = rng.uniform(lo, hi, size=len(cars))
        for i, car in enumerate(self.cars):
            while car.index < len(car.stays) and car.stays[car.index].depart <= v0:
                car.index += 1
            stay = self._stay(i)
            if stay is not None and stay.arrive <= v0:
                self.fleet.arrive(i, 0.0, ambient)
        self.site = SiteCap(cfg.site_cap_kw, tuple(self._demand_response(v0)))
        self.tanks = {
            name: TankLoop.at_rest(cfg.tank_loop, ambient, cfg.rack_baseline_kw) for name in tanks
        }
        self.it_kw = dict.fromkeys(tanks, cfg.rack_baseline_kw)
        self._cap = self.site.cap_at(v0)

    # ---- schedule ----------------------------------------------------------------------------

    def _demand_response(self, v0: float) -> list[DemandResponse]:
        lo, hi = self.cfg.demand_response_hours
        day0 = math.floor(v0 / DAY) * DAY
        cap = self.cfg.site_cap_kw * self.cfg.demand_response_factor
        return [
            DemandResponse(day0 + d * DAY + lo * HOUR, day0 + d * DAY + hi * HOUR, cap)
            for d in range(self.cfg.horizon_days + 1)
        ]

    def _stay(self, i: int) -> Stay | None:
        car = self.cars[i]
        return car.stays[car.index] if car.index < len(car.stays) else None

    def _next_event(self, i: int) -> float:
        stay = self._stay(i)
        if stay is None:
            return math.inf
        return stay.depart if self.fleet.present[i] else stay.arrive

    # ---- stepping ----------------------------------------------------------------------------

    def advance(
        self,
        wall: float,
        compute_w: Mapping[str, float] | None = None,
        it_kw: Mapping[str, float] | None = None,
    ) -> list[Change]:
        """Run the fleet to wall time ``wall`` with ``compute_w`` watts of replicas per car
        (by name; ignored for cars away) and ``it_kw`` of replica load per tank (added to the
        baseline). Arrivals and departures happen at the first step boundary at or after their
        time, never before. Returns what changed, in time order."""
        target = self.clock.virtual(wall)
        draw = np.zeros(len(self.cars))
        for name, watts in (compute_w or {}).items():
            i = self.by_name.get(name)
            if i is not None:
                draw[i] = max(0.0, float(watts))
        for name in self.tanks:
            self.it_kw[name] = self.cfg.rack_baseline_kw + max(0.0, (it_kw or {}).get(name, 0.0))
        changes: list[Change] = []
        while self.now < target:
            dt = min(MAX_SUBSTEP_S, target - self.now)
            ambient = self.cfg.ambient.at(self.now)
            factor = self.site.factor_at(self.now)
            self.fleet.advance(dt, np.where(self.fleet.present, draw, 0.0), ambient, factor)
            for name, loop in self.tanks.items():
                loop.advance(dt, ambient, self.it_kw[name])
            self.now += dt
            changes.extend(self._events(ambient))
        return changes

    def _events(self, ambient: float) -> list[Change]:
        out: list[Change] = []
        for i, car in enumerate(self.cars):
            while self._next_event(i) <= self.now:
                stay = self._stay(i)
                assert stay is not None
                if self.fleet.present[i]:
                    soc = self.fleet.depart(i)
                    car.departures.append((stay.depart, soc))
                    car.index += 1
                    out.append(Change("Departed", car.name, stay.depart, f"SoC {soc:.0f} %"))
                else:
                    self.fleet.arrive(i, stay.trip_kwh, ambient)
                    leaves = format_time(datetime.fromtimestamp(self.clock.wall(stay.depart), UTC))
                    out.append(
                        Change(
                            "Arrived",
                            car.name,
                            stay.arrive,
                            f"SoC {self.fleet.soc[i]:.0f} %, plugged in, leaves {leaves}",
                        )
                    )
        cap = self.site.cap_at(self.now)
        if cap != self._cap:
            why = "demand response" if cap < self.cfg.site_cap_kw else "end of demand response"
            out.append(Change("SiteCap", "site", self.now, f"{self._cap:g} -> {cap:g} kW ({why})"))
            self._cap = cap
        return out

    # ---- what the world publishes ------------------------------------------------------------

    def pool_battery_kwh(self) -> float:
        """``battery.capacityKWh`` for the dev pool (see the module docstring)."""
        return pool_battery_kwh(self.cfg)

    def wall_time(self) -> float:
        return self.clock.wall(self.now)

    def present(self, name: str) -> bool:
        return bool(self.fleet.present[self.by_name[name]])

    def departure_wall(self, name: str) -> float | None:
        """Wall time of the car's next departure: this stay's, or while away the next stay's
        (the fleet schedule knows it); ``None`` past the horizon."""
        stay = self._stay(self.by_name[name])
        return None if stay is None else self.clock.wall(stay.depart)

    def car_document(self, name: str) -> dict[str, object]:
        """The car gateway's signal document (what ``tokenfleet agent --source json:`` reads)."""
        i = self.by_name[name]
        present = bool(self.fleet.present[i])
        factor = self.site.factor_at(self.now)
        depart = self.departure_wall(name)
        observed = datetime.fromtimestamp(self.wall_time(), UTC)
        return {
            "soc-percent": round(float(self.fleet.soc[i]), 2),
            "plugged-in": present,
            "charger-power-kw": round(self.cfg.charger_kw * factor * charger_factor(self.cfg), 3)
            if present
            else 0.0,
            "battery-temp-c": round(float(self.fleet.battery_temp[i]), 2),
            "compute-temp-c": round(float(self.fleet.compute_temp[i]), 2),
            "departure-time": None
            if depart is None
            else format_time(datetime.fromtimestamp(depart, UTC)),
            "target-soc-percent": self.cfg.target_soc_percent,
            "bandwidth-mbps": self.cfg.bandwidth_mbps if present else 5.0,
            "observed-at": format_time(observed),
        }

    def tank_reading(self, name: str) -> TankReading:
        loop = self.tanks[name]
        return TankReading(
            heat_kw=round(self.it_kw[name], 3),
            supply_c=round(loop.supply_c, 2),
            return_c=round(loop.return_c, 2),
            flow_lpm=self.cfg.tank_loop.design_flow_lpm,
        )

    def site_cap_kw(self) -> float:
        return self._cap

    def departures(self, name: str) -> list[tuple[float, float]]:
        """(wall departure time, SoC) of the car's departures so far."""
        return [(self.clock.wall(t), soc) for t, soc in self.cars[self.by_name[name]].departures]
