"""Event-driven virtual time through the real placement engine.

The planner here calls :func:`tokenfleet.placement.plan` and
:func:`tokenfleet.placement.replan_node` exactly as the operator's planner does (the previous
plan's assignments as the current placements; ``replan_node`` when one node changed, ``plan``
otherwise), on snapshots built from the physical models of :mod:`tokenfleet.fleetsim`:

* a full ``plan`` every ``planner.full_plan_interval_s`` and whenever demand, prices or the site
  cap change (hour boundaries, batch windows, ToU periods, demand-response events);
* an incremental ``replan_node`` for each car event: plug-in, its drain lead reached, departure.

Cars report telemetry at their own events and at every full plan (what the planner last saw
is what the snapshot holds).  Physics and accounting advance between events; nothing here
decides placement.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from tokenfleet.fleetsim.cars import CarFleet, CarSpec
from tokenfleet.fleetsim.schedule import Normal, Stay, StayPattern, make_stays
from tokenfleet.fleetsim.site import Ambient, DemandResponse, SiteCap, TimeOfUse
from tokenfleet.fleetsim.tanks import TankLoop, TankLoopSpec
from tokenfleet.placement import (
    Job,
    Plan,
    PoolPolicy,
    RackNode,
    Snapshot,
    Spread,
    Tank,
    Variant,
    VehicleNode,
    check_plan,
    plan,
    replan_node,
)
from tokenfleet.simulate.scenario import WEEKDAYS, Dist, ModelDef, Scenario

DAY = 86400.0
HOUR = 3600.0
# event kinds, in the order they are handled at the same instant
ARRIVE, LEAD, DEPART, FULL, STEP = 0, 1, 2, 3, 4


class PlanViolation(AssertionError):
    """The independent checker found a broken hard constraint in a plan (``check=True``)."""


def _normal(d: Dist) -> Normal:
    return Normal(
        d.mean,
        d.std,
        d.min if d.min is not None else -math.inf,
        d.max if d.max is not None else math.inf,
    )


@dataclass
class JobSpec:
    name: str
    kind: str  # "online" | "batch"
    job: Job
    hours: list[float] = field(default_factory=list)
    tokens_per_window: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)


@dataclass
class Trace:
    """Per step series (one entry per STEP event)."""

    t: list[float] = field(default_factory=list)
    car_tps: list[float] = field(default_factory=list)
    rack_tps: list[float] = field(default_factory=list)
    cars_present: list[int] = field(default_factory=list)
    cars_hosting: list[int] = field(default_factory=list)
    site_kw: list[float] = field(default_factory=list)
    rack_it_kw: list[float] = field(default_factory=list)
    """IT load of all tanks (baseline + replicas), kW."""
    site_cap_kw: list[float] = field(default_factory=list)


@dataclass
class CarTrace:
    """SoC and battery temperature of one sampled car, with and without compute."""

    car: str
    pool: str
    t: list[float] = field(default_factory=list)
    soc: list[float] = field(default_factory=list)
    temp: list[float] = field(default_factory=list)
    soc_base: list[float] = field(default_factory=list)
    temp_base: list[float] = field(default_factory=list)
    departures: list[float] = field(default_factory=list)
    target: float = 0.0


@dataclass
class Totals:
    tokens_car: float = 0.0
    tokens_rack: float = 0.0
    online_demand: float = 0.0
    online_served: float = 0.0
    car_compute_kwh: float = 0.0
    car_compute_grid_kwh: float = 0.0
    car_compute_cost: float = 0.0
    car_grid_kwh: float = 0.0
    car_grid_kwh_base: float = 0.0
    rack_grid_kwh: float = 0.0
    rack_energy_cost: float = 0.0
    peak_kw: float = 0.0
    peak_kw_no_compute: float = 0.0
    peak_car_compute_kw: float = 0.0
    peak_rack_kw: float = 0.0
    site_over_cap_s: float = 0.0
    departures: int = 0
    drained_late: int = 0
    below_target: int = 0
    below_target_base: int = 0
    below_target_due_to_compute: int = 0
    hosted_past_lead_s: float = 0.0
    car_evictions: int = 0
    car_moves: int = 0
    full_plans: int = 0
    incremental_plans: int = 0
    checked_plans: int = 0
    car_present_s: float = 0.0
    car_hosting_s: float = 0.0
    empty_battery_events: int = 0


@dataclass
class Result:
    scenario: Scenario
    seed: int
    car_names: list[str]
    car_pool: list[str]
    totals: Totals
    trace: Trace
    car_traces: list[CarTrace]
    pool_cars: dict[str, int]
    tanks: int
    batch_tokens: dict[str, float]
    batch_done: dict[str, float]


class Simulation:
    """One run of a scenario.  ``check``: run the independent checker on every plan and raise
    :class:`PlanViolation` on the first broken rule."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        *,
        check: bool = False,
        trace_cars_per_pool: int = 3,
    ) -> None:
        self.sc = scenario
        self.seed = scenario.seed if seed is None else seed
        self.check = check
        self.t0 = scenario.start.timestamp()
        self.end = self.t0 + scenario.days * DAY
        self.ambient = Ambient(
            scenario.ambient.mean_c, scenario.ambient.amplitude_c, scenario.ambient.peak_hour
        )
        el = scenario.electricity
        self.tou = TimeOfUse(tuple((p.from_hour, p.price_per_kwh) for p in el.tou))
        self.site = SiteCap(
            el.site_cap_kw,
            tuple(
                DemandResponse(
                    self.t0 + ev.day * DAY + ev.start_hour * HOUR,
                    self.t0 + ev.day * DAY + (ev.start_hour + ev.hours) * HOUR,
                    ev.cap_kw,
                )
                for ev in el.dr_events
            ),
        )
        rng = np.random.default_rng(self.seed)
        # cars
        self.car_names: list[str] = []
        self.car_pool: list[str] = []
        self.car_pool_idx: list[int] = []
        specs: list[CarSpec] = []
        self.stays: list[list[Stay]] = []
        init_soc: list[float] = []
        self.trace_idx: list[int] = []
        self.pool_cars: dict[str, int] = {}
        for p_i, p in enumerate(scenario.pools):
            patterns = [
                StayPattern(
                    _normal(s.arrive_hour),
                    _normal(s.depart_hour),
                    _normal(s.trip_kwh),
                    frozenset(WEEKDAYS.index(d) for d in s.weekdays),
                )
                for s in p.stays
            ]
            stays = make_stays(rng, patterns, p.cars, self.t0, scenario.days)
            socs = _normal(p.initial_soc_percent).sample(rng, (p.cars,))
            spec = CarSpec(
                battery_kwh=p.battery_kwh,
                charger_kw=p.charger_kw,
                charge_efficiency=p.charge_efficiency,
                target_soc_percent=p.target_soc_percent,
                battery_tau_s=p.battery_tau_s,
                battery_rise_c_per_kw=p.battery_rise_c_per_kw,
                compute_tau_s=p.compute.tau_s,
                compute_rise_c_per_w=p.compute.rise_c_per_w,
            )
            n_trace = max(trace_cars_per_pool, p.ageing.sample_cars)
            for c in range(p.cars):
                if c < n_trace:
                    self.trace_idx.append(len(self.car_names))
                self.car_names.append(f"{p.name}-{c:05d}")
                self.car_pool.append(p.name)
                self.car_pool_idx.append(p_i)
                specs.append(spec)
                self.stays.append(stays[c])
                init_soc.append(float(socs[c]))
            self.pool_cars[p.name] = p.cars
        amb0 = self.ambient.at(self.t0)
        self.cars = CarFleet(specs, amb0)
        self.twin = CarFleet(specs, amb0)
        self.cars.soc[:] = init_soc
        self.twin.soc[:] = init_soc
        self.n_cars = len(specs)
        self.stay_pos = [0] * self.n_cars
        self.car_index = {n: i for i, n in enumerate(self.car_names)}
        self.drain_lead = np.array(
            [scenario.pools[p].drain_lead_seconds for p in self.car_pool_idx], dtype=np.float64
        )
        self.car_memory = [scenario.pools[p].compute.memory_mib for p in self.car_pool_idx]
        self.lead_at = np.full(self.n_cars, -np.inf)
        """Per car: when its drain lead begins (its stay's departure - lead); -inf while away."""
        # tanks and racks
        self.racks: list[RackNode] = []
        self.rack_tank: list[int] = []
        self.loops: list[TankLoop] = []
        for t_i, t in enumerate(scenario.tanks):
            spec_l = TankLoopSpec(
                t.coolant.design_flow_lpm, t.coolant.setpoint_c, t.coolant.approach_c
            )
            base_kw = t.racks * t.rack_baseline_watts / 1000.0
            self.loops.append(TankLoop.at_rest(spec_l, amb0, base_kw))
            for r in range(t.racks):
                self.racks.append(
                    RackNode(
                        name=f"{t.name}-r{r:03d}",
                        tank=t.name,
                        memory_mib=t.rack_memory_mib,
                        baseline_watts=t.rack_baseline_watts,
                    )
                )
                self.rack_tank.append(t_i)
        self.rack_index = {r.name: i for i, r in enumerate(self.racks)}
        # jobs
        models = {m.name: m for m in scenario.models}
        self.jobs: list[JobSpec] = []
        for o in scenario.demand.online:
            m = models[o.model]
            targets = frozenset({"Rack"}) if o.latency_class == "Interactive" else None
            self.jobs.append(
                JobSpec(
                    o.name,
                    "online",
                    self._job(o.name, m, 500 if targets else 300, "PreferRack", targets),
                    hours=list(o.tokens_per_second_by_hour),
                )
            )
        for b in scenario.demand.batch:
            m = models[b.model]
            self.jobs.append(
                JobSpec(
                    b.name,
                    "batch",
                    self._job(b.name, m, 100, b.preference, None),
                    tokens_per_window=b.tokens_per_window,
                    window=(b.window.start_hour, b.window.end_hour),
                )
            )
        self.batch_left: dict[str, float] = {}
        self.batch_window_end: dict[str, float] = {}
        self.batch_tokens: dict[str, float] = {j.name: 0.0 for j in self.jobs if j.kind == "batch"}
        self.batch_done: dict[str, float] = {j.name: 0.0 for j in self.jobs if j.kind == "batch"}
        self.totals = Totals()
        self.trace = Trace()
        self.car_traces = [
            CarTrace(
                self.car_names[i],
                self.car_pool[i],
                target=scenario.pools[self.car_pool_idx[i]].target_soc_percent,
            )
            for i in self.trace_idx
        ]
        self.readings: list[VehicleNode] = []
        self.plan: Plan | None = None
        self.compute_w = np.zeros(self.n_cars)
        self.rack_w = np.zeros(len(scenario.tanks))
        self.cap_car: dict[str, float] = {}
        self.cap_rack: dict[str, float] = {}
        self.now = self.t0
        self.last_site_kw = 0.0

    def _job(
        self,
        name: str,
        m: ModelDef,
        priority: int,
        preference: str,
        only: frozenset[str] | None,
    ) -> Job:
        variants = tuple(
            Variant(
                name=v.name,
                memory_mib=v.memory_mib,
                tokens_per_second=v.tokens_per_second,
                watts=v.watts,
                targets=frozenset(v.targets),
                precision=v.precision,
            )
            for v in m.variants
        )
        targets = only or frozenset(t for v in m.variants for t in v.targets)
        return Job(
            name=f"sim/{name}",
            target_tokens_per_second=0.0,
            variants=variants,
            min_replicas=0,
            max_replicas=1,
            priority=priority,
            targets=targets,  # type: ignore[arg-type]
            preference=preference,  # type: ignore[arg-type]
            spread=Spread(max_replicas_per_node=m.max_replicas_per_rack),
        )

    # ---- demand -----------------------------------------------------------------------------

    def _window(self, j: JobSpec, t: float) -> tuple[float, float] | None:
        """The batch window containing ``t`` (epoch s), if any."""
        s_h, e_h = j.window
        day = math.floor(t / DAY) * DAY
        for d in (day - DAY, day):
            start = d + s_h * HOUR
            end = d + e_h * HOUR + (DAY if e_h <= s_h else 0.0)
            if start <= t < end:
                return start, end
        return None

    def _demand_rate(self, j: JobSpec, t: float) -> float:
        if j.kind == "online":
            return j.hours[int((t % DAY) // HOUR)]
        win = self._window(j, t)
        if win is None:
            return 0.0
        left = self.batch_left.get(j.name, 0.0)
        return left / max(win[1] - t, 1.0) if left > 0 else 0.0

    def _open_windows(self, t: float) -> None:
        for j in self.jobs:
            if j.kind != "batch":
                continue
            win = self._window(j, t)
            if win is None or self.batch_window_end.get(j.name) == win[1]:
                continue
            self.batch_window_end[j.name] = win[1]
            # only windows wholly inside the simulated time carry work
            whole = win[0] >= self.t0 and win[1] <= self.end
            self.batch_left[j.name] = j.tokens_per_window if whole else 0.0
            if whole:
                self.batch_tokens[j.name] += j.tokens_per_window

    def _jobs_now(self, t: float) -> tuple[Job, ...]:
        out = []
        for j in self.jobs:
            rate = self._demand_rate(j, t)
            tps = min(v.tokens_per_second for v in j.job.variants)
            out.append(
                replace(
                    j.job,
                    target_tokens_per_second=rate,
                    max_replicas=max(1, min(100000, math.ceil(rate / tps) + 1)),
                )
            )
        return tuple(out)

    # ---- snapshots ----------------------------------------------------------------------------

    def _stay_now(self, i: int) -> Stay | None:
        """The car's current stay if present, else its next one."""
        st = self.stays[i]
        k = self.stay_pos[i]
        return st[k] if k < len(st) else None

    def _reading(self, i: int, t: float) -> VehicleNode:
        p = self.sc.pools[self.car_pool_idx[i]]
        present = bool(self.cars.present[i])
        stay = self._stay_now(i)
        departure = stay.depart if stay is not None else self.end + DAY
        factor = self.site.factor_at(t)
        return VehicleNode(
            name=self.car_names[i],
            pool=p.name,
            memory_mib=self.car_memory[i],
            soc_percent=float(self.cars.soc[i]),
            plugged_in=present,
            charger_kw=float(p.charger_kw * factor * p.charge_efficiency) if present else 0.0,
            battery_temp_c=float(self.cars.battery_temp[i]),
            compute_temp_c=float(self.cars.compute_temp[i]),
            departure_time=departure,
            target_soc_percent=p.target_soc_percent,
            observed_at=t,
            battery_capacity_kwh=p.battery_kwh,
        )

    def _snapshot(self, t: float) -> Snapshot:
        price = self.tou.price(t)
        factor = self.site.factor_at(t)
        pools = tuple(
            PoolPolicy(
                name=p.name,
                min_soc_percent=p.reserve_soc_percent,
                target_soc_percent=p.target_soc_percent,
                max_battery_temp_c=p.max_battery_temp_c,
                max_compute_temp_c=p.max_compute_temp_c,
                drain_lead_seconds=p.drain_lead_seconds,
                energy_cost_per_kwh=price / p.charge_efficiency,
                wear_cost_per_kwh=p.wear_cost_per_kwh,
                stale_after_seconds=self.sc.planner.stale_after_s,
                battery_capacity_kwh=p.battery_kwh,
            )
            for p in self.sc.pools
        )
        tanks = []
        for t_i, td in enumerate(self.sc.tanks):
            loop = self.loops[t_i]
            base = td.racks * td.rack_baseline_watts / 1000.0
            tanks.append(
                Tank(
                    name=td.name,
                    power_capacity_kw=td.capacity_kw * factor,
                    max_supply_temp_c=td.coolant.max_supply_c,
                    max_return_temp_c=td.coolant.max_return_c,
                    design_flow_lpm=td.coolant.design_flow_lpm,
                    heat_rejection_kw=td.coolant.heat_rejection_kw,
                    it_load_kw=base + float(self.rack_w[t_i]) / 1000.0,
                    supply_temp_c=loop.supply_c,
                    return_temp_c=loop.return_c,
                    observed_at=t,
                    energy_cost_per_kwh=price * td.pue,
                )
            )
        return Snapshot(
            now=t,
            tanks=tuple(tanks),
            racks=tuple(self.racks),
            pools=pools,
            vehicles=tuple(self.readings),
            jobs=self._jobs_now(t),
            placements=self.plan.assignments if self.plan is not None else (),
        )

    # ---- planning -----------------------------------------------------------------------------

    def _apply(self, snap: Snapshot, new: Plan) -> None:
        if self.check:
            self.totals.checked_plans += 1
            bad = check_plan(snap, new)
            if bad:
                raise PlanViolation(f"t={snap.now - self.t0:.0f}s: {bad[:5]}")
        for ev in new.evictions:
            if ev.node in self.car_index:
                self.totals.car_evictions += ev.replicas
                if ev.moved_to is not None:
                    self.totals.car_moves += ev.replicas
        self.plan = new
        variants = {(j.name, v.name): v for j in snap.jobs for v in j.variants}
        self.compute_w = np.zeros(self.n_cars)
        self.rack_w = np.zeros(len(self.sc.tanks))
        self.cap_car = {}
        self.cap_rack = {}
        for a in new.assignments:
            v = variants[(a.job, a.variant)]
            i = self.car_index.get(a.node)
            if i is not None:
                self.compute_w[i] += v.watts * a.replicas
                self.cap_car[a.job] = (
                    self.cap_car.get(a.job, 0.0) + v.tokens_per_second * a.replicas
                )
            else:
                r = self.rack_index[a.node]
                self.rack_w[self.rack_tank[r]] += v.watts * a.replicas
                self.cap_rack[a.job] = (
                    self.cap_rack.get(a.job, 0.0) + v.tokens_per_second * a.replicas
                )

    def _full_plan(self, t: float) -> None:
        self.readings = [self._reading(i, t) for i in range(self.n_cars)]
        snap = self._snapshot(t)
        self.totals.full_plans += 1
        self._apply(snap, plan(snap))

    def _node_event(self, i: int, t: float) -> None:
        self.readings[i] = self._reading(i, t)
        snap = self._snapshot(t)
        if self.plan is None:
            self.totals.full_plans += 1
            self._apply(snap, plan(snap))
            return
        self.totals.incremental_plans += 1
        self._apply(snap, replan_node(snap, self.plan, self.car_names[i]))

    # ---- physics and accounting ---------------------------------------------------------------

    def _advance(self, t: float) -> None:
        dt = t - self.now
        if dt <= 0:
            return
        mid = self.now + dt / 2
        amb = self.ambient.at(mid)
        factor = self.site.factor_at(self.now)
        price = self.tou.price(self.now)
        h = dt / 3600.0
        tot = self.totals
        # departure lead: no car may host a replica closer to its departure than the lead
        hosting = self.compute_w > 0
        if bool(hosting.any()):
            # seconds of this step a car hosted a replica after its drain lead began (a car
            # away has lead_at = -inf: every second counts)
            past = t - self.lead_at[hosting]
            past = np.where(past > 1e-6, np.minimum(past, dt), 0.0)
            tot.hosted_past_lead_s += float(past.sum())
        e = self.cars.advance(dt, self.compute_w, amb, factor)
        eb = self.twin.advance(dt, np.zeros(self.n_cars), amb, factor)
        comp_grid = e.compute_kwh / self.cars.efficiency
        tot.car_compute_kwh += float(e.compute_kwh.sum())
        tot.car_compute_grid_kwh += float(comp_grid.sum())
        tot.car_compute_cost += float(comp_grid.sum()) * price
        car_grid = float(e.grid_kwh.sum())
        tot.car_grid_kwh += car_grid
        tot.car_grid_kwh_base += float(eb.grid_kwh.sum())
        present = int(self.cars.present.sum())
        tot.car_present_s += present * dt
        tot.car_hosting_s += int(hosting.sum()) * dt
        # racks
        rack_kw = 0.0
        idle_kw = 0.0
        for t_i, td in enumerate(self.sc.tanks):
            it = td.racks * td.rack_baseline_watts / 1000.0 + float(self.rack_w[t_i]) / 1000.0
            self.loops[t_i].advance(dt, amb, it)
            rack_kw += it * td.pue
            idle_kw += td.racks * td.rack_baseline_watts / 1000.0 * td.pue
        tot.rack_grid_kwh += rack_kw * h
        tot.rack_energy_cost += rack_kw * h * price
        site_kw = rack_kw + car_grid / h
        self.last_site_kw = site_kw
        base_kw = idle_kw + float(eb.grid_kwh.sum()) / h
        if site_kw > tot.peak_kw:
            tot.peak_kw = site_kw
            tot.peak_car_compute_kw = float(comp_grid.sum()) / h
            tot.peak_rack_kw = rack_kw - idle_kw
        tot.peak_kw_no_compute = max(tot.peak_kw_no_compute, base_kw)
        if site_kw > self.site.cap_at(self.now) + 1e-6:
            tot.site_over_cap_s += dt
        # tokens
        for j in self.jobs:
            rate = self._demand_rate(j, self.now)
            cc = self.cap_car.get(j.job.name, 0.0)
            cr = self.cap_rack.get(j.job.name, 0.0)
            cap = cc + cr
            if j.kind == "batch":
                left = self.batch_left.get(j.name, 0.0)
                demand = min(rate * dt, left)
            else:
                demand = rate * dt
            served = min(demand, cap * dt)
            if cap > 0:
                tot.tokens_car += served * cc / cap
                tot.tokens_rack += served * cr / cap
            if j.kind == "batch":
                self.batch_left[j.name] = max(self.batch_left.get(j.name, 0.0) - served, 0.0)
                self.batch_done[j.name] += served
            else:
                tot.online_demand += demand
                tot.online_served += served
        self.now = t

    def _sample(self, t: float, only: int | None = None) -> None:
        """Append the sampled cars' SoC and battery temperature (the parked ones, or car
        ``only``).  A car away has no samples: the trace runs straight from its SoC at departure
        to its SoC on return (the trip drains it over the trip, not in an instant)."""
        for ct, k in zip(self.car_traces, self.trace_idx, strict=True):
            if only is not None and k != only:
                continue
            if only is None and not self.cars.present[k]:
                continue
            if ct.t and t < ct.t[-1]:
                continue
            if ct.t and ct.t[-1] == t:
                ct.t.pop()
                ct.soc.pop()
                ct.temp.pop()
                ct.soc_base.pop()
                ct.temp_base.pop()
            ct.t.append(t)
            ct.soc.append(float(self.cars.soc[k]))
            ct.temp.append(float(self.cars.battery_temp[k]))
            ct.soc_base.append(float(self.twin.soc[k]))
            ct.temp_base.append(float(self.twin.battery_temp[k]))

    def _record_step(self, t: float) -> None:
        tr = self.trace
        car = sum(self.cap_car.values())
        rack = sum(self.cap_rack.values())
        demand = sum(self._demand_rate(j, t) for j in self.jobs)
        served = min(demand, car + rack)
        share = car / (car + rack) if car + rack > 0 else 0.0
        tr.t.append(t)
        tr.car_tps.append(served * share)
        tr.rack_tps.append(served * (1 - share))
        tr.cars_present.append(int(self.cars.present.sum()))
        tr.cars_hosting.append(int((self.compute_w > 0).sum()))
        tr.site_kw.append(self.last_site_kw)
        tr.rack_it_kw.append(
            sum(
                td.racks * td.rack_baseline_watts / 1000.0 + float(self.rack_w[k]) / 1000.0
                for k, td in enumerate(self.sc.tanks)
            )
        )
        tr.site_cap_kw.append(self.site.cap_at(t))

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> Result:
        heap: list[tuple[float, int, int]] = []
        t0, end = self.t0, self.end
        self._seed_stays(heap)
        for x in self._full_plan_times():
            heapq.heappush(heap, (x, FULL, -1))
        step = self.sc.planner.step_s
        n_steps = math.ceil((end - t0) / step)
        for s_i in range(n_steps + 1):
            heapq.heappush(heap, (min(t0 + s_i * step, end), STEP, -1))
        last_progress = -1.0
        while heap:
            t, kind, i = heapq.heappop(heap)
            if t > end:
                break
            self._advance(t)
            if kind == STEP:
                self._step(t)
                frac = (t - t0) / (end - t0)
                if progress is not None and frac - last_progress >= 0.01:
                    progress(frac)
                    last_progress = frac
            else:
                self._event(heap, t, kind, i)
        self.totals.empty_battery_events = self.cars.empty_events
        return Result(
            self.sc,
            self.seed,
            self.car_names,
            self.car_pool,
            self.totals,
            self.trace,
            self.car_traces,
            self.pool_cars,
            len(self.sc.tanks),
            self.batch_tokens,
            self.batch_done,
        )

    def _seed_stays(self, heap: list[tuple[float, int, int]]) -> None:
        """Cars parked at the start arrive at t0 without a trip; the others are scheduled."""
        t0 = self.t0
        for i in range(self.n_cars):
            st = self.stays[i]
            k = 0
            while k < len(st) and st[k].depart <= t0:
                k += 1
            self.stay_pos[i] = k
            if k < len(st):
                s = st[k]
                if s.arrive <= t0:
                    self.cars.arrive(i, 0.0, self.ambient.at(t0))
                    self.twin.arrive(i, 0.0, self.ambient.at(t0))
                    self._push_leave(heap, i, s)
                else:
                    heapq.heappush(heap, (s.arrive, ARRIVE, i))

    def _full_plan_times(self) -> set[float]:
        """When a full plan runs: the planner's interval, every hour, tariff boundaries, site
        events and the batch jobs' windows."""
        t0, end = self.t0, self.end
        fulls = {t0}
        k = 1
        while t0 + k * self.sc.planner.full_plan_interval_s < end:
            fulls.add(t0 + k * self.sc.planner.full_plan_interval_s)
            k += 1
        for h in range(self.sc.days * 24):
            fulls.add(t0 + h * HOUR)
        fulls.update(self.tou.boundaries(t0, end))
        for ev in self.site.events:
            fulls.update(x for x in (ev.start, ev.end) if t0 <= x < end)
        for j in self.jobs:
            if j.kind == "batch":
                fulls.update(self._window_times(j.window))
        return fulls

    def _window_times(self, window: Iterable[float]) -> list[float]:
        t0, end = self.t0, self.end
        times = (t0 + d * DAY + hh * HOUR for d in range(-1, self.sc.days + 1) for hh in window)
        return [x for x in times if t0 <= x < end]

    def _step(self, t: float) -> None:
        if self.plan is None:
            self._open_windows(t)
            self._full_plan(t)
        self._record_step(t)
        self._sample(t)

    def _event(self, heap: list[tuple[float, int, int]], t: float, kind: int, i: int) -> None:
        if kind == FULL:
            self._open_windows(t)
            self._full_plan(t)
        elif kind == ARRIVE:
            stay = self.stays[i][self.stay_pos[i]]
            amb = self.ambient.at(t)
            self.cars.arrive(i, stay.trip_kwh, amb)
            self.twin.arrive(i, stay.trip_kwh, amb)
            self._sample(t, i)
            self._push_leave(heap, i, stay)
            if self.plan is not None:
                self._node_event(i, t)
        elif kind == LEAD:
            if self.plan is not None:
                self._node_event(i, t)
        elif kind == DEPART:
            self._depart(heap, i, t)

    def _push_leave(self, heap: list[tuple[float, int, int]], i: int, s: Stay) -> None:
        self.lead_at[i] = s.depart - float(self.drain_lead[i])
        lead_t = max(s.depart - float(self.drain_lead[i]), self.now)
        heapq.heappush(heap, (lead_t, LEAD, i))
        heapq.heappush(heap, (s.depart, DEPART, i))

    def _depart(self, heap: list[tuple[float, int, int]], i: int, t: float) -> None:
        tot = self.totals
        if self.compute_w[i] > 0:
            tot.drained_late += 1
        target = float(self.cars.target[i])
        self._sample(t, i)
        self.lead_at[i] = -np.inf
        soc = self.cars.depart(i)
        soc_b = self.twin.depart(i)
        if t < self.end:
            tot.departures += 1
            below = soc < target - 0.01
            below_b = soc_b < target - 0.01
            tot.below_target += int(below)
            tot.below_target_base += int(below_b)
            tot.below_target_due_to_compute += int(below and not below_b)
        for ct, k in zip(self.car_traces, self.trace_idx, strict=True):
            if k == i:
                ct.departures.append(t)
        self.stay_pos[i] += 1
        nxt = self._stay_now(i)
        if nxt is not None:
            heapq.heappush(heap, (nxt.arrive, ARRIVE, i))
        if self.plan is not None:
            self._node_event(i, t)
