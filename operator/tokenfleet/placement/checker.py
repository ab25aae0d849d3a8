"""Independent hard-constraint checker.

Re-derives every rule the solvers enforce from the snapshot alone, in plain scalar Python,
following the semantics written in :mod:`tokenfleet.placement.model`.  It deliberately imports
nothing from the solvers (no ``state``, ``work``, ``greedy``, ``solver`` or ``milp``) so a bug
there cannot hide here.  It is at least as strict as the engine:

* hard limits on everything the plan keeps or adds (a replica of 0 MiB and 0 W included);
* the hysteresis bands on *new* work: a node that takes a new replica must be beyond every band
  (SoC, temperatures, drain lead, bandwidth, the car's energy for its target) and fresh, uncordoned
  and (racks) in a tank with an OK leak state and coolant within limits; a tank or pool that takes
  a new replica must carry its whole load under the band of its limit;
* (:func:`check_consistency`) the plan's own bookkeeping: ``added``, ``evictions``,
  ``unused_nodes`` and ``objective`` agree with ``assignments``.

"New" work means planned replicas beyond the snapshot's current placements (same job, node and
variant).  One function per rule family; :func:`check_plan` runs the constraint families,
:func:`check_all` those and the bookkeeping.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from tokenfleet.placement.model import (
    Job,
    Plan,
    PoolPolicy,
    RackNode,
    Snapshot,
    Tank,
    Variant,
    VehicleNode,
)

TOL = 1e-6
Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``rule`` names it, ``subject`` the node/tank/pool/job."""

    rule: str
    subject: str
    detail: str


@dataclass
class _Ctx:
    """The snapshot indexed by name and the plan's per-node tallies."""

    snapshot: Snapshot
    plan: Plan
    jobs: dict[str, Job]
    tanks: dict[str, Tank]
    pools: dict[str, PoolPolicy]
    racks: dict[str, RackNode]
    cars: dict[str, VehicleNode]
    out: list[Violation] = field(default_factory=list)
    current: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    planned: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    replicas_on: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    new_on: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mem_used: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    watts_on: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    per_job: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_job_node: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    per_job_tank: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    per_job_pool: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    pool_kwh: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    pool_new: set[str] = field(default_factory=set)
    current_watts: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def now(self) -> float:
        return self.snapshot.now

    def bad(self, rule: str, subject: str, detail: str = "") -> None:
        self.out.append(Violation(rule, subject, detail))

    def variant(self, job: str, name: str) -> Variant | None:
        j = self.jobs.get(job)
        return next((v for v in j.variants if v.name == name), None) if j else None


def _context(snapshot: Snapshot, plan: Plan) -> _Ctx:
    ctx = _Ctx(
        snapshot,
        plan,
        {j.name: j for j in snapshot.jobs},
        {t.name: t for t in snapshot.tanks},
        {p.name: p for p in snapshot.pools},
        {r.name: r for r in snapshot.racks},
        {v.name: v for v in snapshot.vehicles},
    )
    for p in snapshot.placements:
        ctx.current[(p.job, p.node, p.variant)] += p.replicas
        var = ctx.variant(p.job, p.variant)
        if var is not None:
            ctx.current_watts[p.node] += var.watts * p.replicas
    for a in plan.assignments:
        ctx.planned[(a.job, a.node, a.variant)] += a.replicas
    for key, n in ctx.planned.items():
        extra = n - ctx.current.get(key, 0)
        if extra > 0:
            ctx.new_on[key[1]] += extra
    return ctx


# -- per assignment -----------------------------------------------------------------------------


def _check_assignment(ctx: _Ctx, job_name: str, node: str, variant: str, n: int) -> None:
    """Existence, target, residency, ownership and attestation of one assignment; tallies."""
    if n <= 0:
        ctx.bad("NonPositiveReplicas", node, f"{job_name} {n}")
    job = ctx.jobs.get(job_name)
    if job is None:
        ctx.bad("UnknownJob", job_name)
        return
    var = ctx.variant(job_name, variant)
    if var is None:
        ctx.bad("UnknownVariant", job_name, variant)
        return
    rack, car = ctx.racks.get(node), ctx.cars.get(node)
    if rack is None and car is None:
        ctx.bad("UnknownNode", node)
        return
    kind = "Rack" if rack is not None else "Vehicle"
    if node in job.avoid_nodes:
        ctx.bad("LoadBackoff", node, f"{job_name} failed to load there")
    if node in job.fetch_blocked:
        ctx.bad("ModelNotDeliverable", node, f"{job_name} cannot be downloaded there now")
    if kind not in job.targets or kind not in var.targets:
        ctx.bad("Target", node, f"{job_name}/{variant} on {kind}")
    _check_policy(ctx, job, node, rack, car)
    ctx.replicas_on[node] += n
    ctx.mem_used[node] += var.memory_mib * n
    ctx.watts_on[node] += var.watts * n
    ctx.per_job_node[(job_name, node)] += n
    ctx.per_job[job_name] += n
    if rack is not None:
        ctx.per_job_tank[(job_name, rack.tank)] += n
    elif car is not None:
        ctx.per_job_pool[(job_name, car.pool)] += n


def _check_policy(
    ctx: _Ctx, job: Job, node: str, rack: RackNode | None, car: VehicleNode | None
) -> None:
    """Residency, ownership (a car's pool must name an allowed owner; unknown fails), and
    attestation."""
    region = rack.region if rack is not None else car.region if car is not None else None
    if job.regions and region not in job.regions:
        ctx.bad("Residency", node, f"{job.name} needs {sorted(job.regions)}, node {region}")
    if job.ownership and car is not None:
        pool = ctx.pools.get(car.pool)
        owner = pool.ownership if pool is not None else None
        if owner is None or owner not in job.ownership:
            ctx.bad("Ownership", node, f"{job.name}: owner {owner}")
    attested = rack.attested if rack is not None else car.attested if car is not None else False
    if job.require_attestation and not attested:
        ctx.bad("Attestation", node, job.name)


# -- jobs: replicas and spread --------------------------------------------------------------------


def _check_replica_limits(ctx: _Ctx) -> None:
    for name, n in ctx.per_job.items():
        if n > ctx.jobs[name].max_replicas:
            ctx.bad("MaxReplicas", name, f"{n} > {ctx.jobs[name].max_replicas}")
    for (name, node), n in ctx.per_job_node.items():
        if n > ctx.jobs[name].spread.max_replicas_per_node:
            ctx.bad("SpreadPerNode", node, f"{name}: {n}")
    for (name, tank_name), n in ctx.per_job_tank.items():
        lim = ctx.jobs[name].spread.max_replicas_per_tank
        if lim is not None and n > lim:
            ctx.bad("SpreadPerTank", tank_name, f"{name}: {n}")
    for (name, pool_name), n in ctx.per_job_pool.items():
        lim = ctx.jobs[name].spread.max_replicas_per_pool
        if lim is not None and n > lim:
            ctx.bad("SpreadPerPool", pool_name, f"{name}: {n}")


def _check_memory(ctx: _Ctx) -> None:
    for node, used in ctx.mem_used.items():
        r, c = ctx.racks.get(node), ctx.cars.get(node)
        cap = r.memory_mib if r is not None else c.memory_mib if c is not None else 0
        if used > cap + TOL:
            ctx.bad("Memory", node, f"{used} MiB > {cap} MiB")


# -- racks and tanks ------------------------------------------------------------------------------


def _check_rack(ctx: _Ctx, node: str, r: RackNode) -> None:
    """Leak drain (hard); for new work: leak state, cordons, fresh tank reading, coolant."""
    tk = ctx.tanks.get(r.tank)
    if tk is None:
        ctx.bad("UnknownTank", node, r.tank)
        return
    if tk.leak_state == "Critical" and tk.leak_action == "Drain":
        ctx.bad("TankLeak", node, tk.name)
    if ctx.new_on.get(node, 0) <= 0:
        return
    if tk.leak_state != "OK":
        ctx.bad("TankLeakNew", node, tk.leak_state)
    if tk.cordoned:
        ctx.bad("TankCordoned", node, tk.name)
    if r.cordoned:
        ctx.bad("NodeCordoned", node)
    if tk.observed_at is None or ctx.now - tk.observed_at > tk.stale_after_seconds:
        ctx.bad("StaleTankNew", node, tk.name)
    supply_hot = tk.supply_temp_c is not None and tk.supply_temp_c > tk.max_supply_temp_c
    return_hot = tk.return_temp_c is not None and tk.return_temp_c >= tk.max_return_temp_c
    if supply_hot or return_hot:
        ctx.bad("CoolantNew", node, f"supply {tk.supply_temp_c}, return {tk.return_temp_c}")


def _heat_capacity_kw(tank: Tank) -> float:
    flow = tank.flow_lpm if tank.flow_lpm is not None else tank.design_flow_lpm
    supply = tank.supply_temp_c if tank.supply_temp_c is not None else tank.max_supply_temp_c
    kg_per_s = flow * tank.density_kg_per_l / 60.0
    loop_kw = kg_per_s * tank.specific_heat_kj_per_kg_k * max(tank.max_return_temp_c - supply, 0.0)
    return min(tank.heat_rejection_kw, loop_kw)


def _check_tank(ctx: _Ctx, tank: Tank, nodes: list[str]) -> None:
    """Power and heat after the plan under the hard limits; with new work there, under the
    band of the tighter one."""
    if not any(ctx.replicas_on.get(n, 0) > 0 for n in nodes):
        return  # nothing of ours there: the background is not the plan's doing
    baseline = sum(ctx.racks[n].baseline_watts for n in nodes) / 1000.0
    placed_now = sum(ctx.current_watts.get(n, 0.0) for n in nodes) / 1000.0
    background = (
        baseline if tank.it_load_kw is None else max(tank.it_load_kw - placed_now, baseline)
    )
    load = background + sum(ctx.watts_on.get(n, 0.0) for n in nodes) / 1000.0
    power = tank.power_capacity_kw * (1.0 - tank.safety_margin_percent / 100.0)
    heat = _heat_capacity_kw(tank)
    if load > power + TOL:
        ctx.bad("TankPower", tank.name, f"{load:.3f} kW > {power:.3f} kW")
    if load > heat + TOL:
        ctx.bad("TankThermal", tank.name, f"{load:.3f} kW > {heat:.3f} kW")
    if any(ctx.new_on.get(n, 0) > 0 for n in nodes):
        band = min(power, heat) * (1.0 - tank.hysteresis_percent / 100.0)
        if load > band + TOL:
            ctx.bad("TankHeadroomNew", tank.name, f"{load:.3f} kW > band {band:.3f} kW")


def _check_racks_and_tanks(ctx: _Ctx) -> None:
    tank_nodes: dict[str, list[str]] = defaultdict(list)
    for node, r in ctx.racks.items():
        tank_nodes[r.tank].append(node)
        if ctx.replicas_on.get(node, 0) > 0:
            _check_rack(ctx, node, r)
    for tank in ctx.snapshot.tanks:
        _check_tank(ctx, tank, tank_nodes.get(tank.name, []))


# -- vehicles and pools ---------------------------------------------------------------------------


def _unknown(v: VehicleNode, pool: PoolPolicy, now: float) -> bool:
    """Unknown telemetry, re-derived: no time, too old or too far ahead, or a value a rule needs
    missing (charger power when plugged in)."""
    observed = v.observed_at
    return (
        observed is None
        or now - observed > pool.stale_after_seconds
        or observed - now > pool.max_future_skew_seconds
        or v.soc_percent is None
        or v.battery_temp_c is None
        or v.compute_temp_c is None
        or v.departure_time is None
        or (pool.require_plugged_in and v.plugged_in is None)
        or (pool.min_bandwidth_mbps > 0 and v.bandwidth_mbps is None)
        or (v.plugged_in is True and v.charger_kw is None)
    )


def _limits(v: VehicleNode, pool: PoolPolicy, now: float) -> list[tuple[str, bool, bool, str]]:
    """(rule, hard limit broken, band broken) for each per-car limit; values known."""
    assert v.soc_percent is not None and v.departure_time is not None
    assert v.battery_temp_c is not None and v.compute_temp_c is not None
    h = pool.hysteresis_percent
    lead = v.departure_time - now
    bt, ct = v.battery_temp_c, v.compute_temp_c
    out = [
        ("ReserveSoC", v.soc_percent < pool.min_soc_percent,
         v.soc_percent < pool.min_soc_percent + h, f"{v.soc_percent}"),
        ("DrainLead", lead <= pool.drain_lead_seconds,
         lead <= pool.drain_lead_seconds * (1 + h / 100), f"{lead:.0f} s left"),
        ("BatteryTemp", bt > pool.max_battery_temp_c,
         bt > pool.max_battery_temp_c - abs(pool.max_battery_temp_c) * h / 100, f"{bt}"),
        ("ComputeTemp", ct > pool.max_compute_temp_c,
         ct > pool.max_compute_temp_c - abs(pool.max_compute_temp_c) * h / 100, f"{ct}"),
    ]  # fmt: skip
    if pool.min_bandwidth_mbps > 0:
        bw = v.bandwidth_mbps if v.bandwidth_mbps is not None else 0.0
        out.append(
            ("Bandwidth", bw < pool.min_bandwidth_mbps,
             bw < pool.min_bandwidth_mbps * (1 + h / 100), f"{bw}")
        )  # fmt: skip
    return out


def _check_car_limits(ctx: _Ctx, node: str, v: VehicleNode, pool: PoolPolicy) -> None:
    """Plugged in, SoC, lead, temperatures, bandwidth (hard); bands and cordon for new work
    (freshness is :func:`_unknown`'s)."""
    new = ctx.new_on.get(node, 0) > 0
    if pool.require_plugged_in and v.plugged_in is not True:
        ctx.bad("NotPluggedIn", node)
    for rule, hard, band, detail in _limits(v, pool, ctx.now):
        if hard:
            ctx.bad(rule, node, detail)
        elif new and band:
            ctx.bad(rule + "BandNew", node, detail)
    if new and v.cordoned:
        ctx.bad("NodeCordoned", node)


def _check_car_energy(ctx: _Ctx, node: str, v: VehicleNode, pool: PoolPolicy) -> None:
    """Charge by departure at the planned draw (hard; with the band for new work), and the
    car's share of its pool's energy today."""
    assert v.soc_percent is not None and v.departure_time is not None
    w = ctx.watts_on.get(node, 0.0)
    hours = max(v.departure_time - ctx.now, 0.0) / 3600.0
    charger = (v.charger_kw or 0.0) if v.plugged_in else 0.0
    battery = (
        v.battery_capacity_kwh if v.battery_capacity_kwh is not None else pool.battery_capacity_kwh
    )
    target = v.target_soc_percent if v.target_soc_percent is not None else pool.target_soc_percent
    gain_kwh = (charger - w / 1000.0) * hours
    need_kwh = (target - v.soc_percent) / 100.0 * battery
    if gain_kwh + TOL < need_kwh:
        ctx.bad("EnergyForTarget", node, f"gain {gain_kwh:.3f} kWh < need {need_kwh:.3f} kWh")
    elif ctx.new_on.get(node, 0) > 0:
        band = pool.hysteresis_percent / 100.0 * battery
        if gain_kwh + TOL < need_kwh + band:
            ctx.bad("EnergyForTargetBandNew", node, f"gain {gain_kwh:.3f} < {need_kwh + band:.3f}")
    midnight = 86400.0 * (ctx.now // 86400.0 + 1.0)
    hours_today = max(min(v.departure_time, midnight) - ctx.now, 0.0) / 3600.0
    ctx.pool_kwh[pool.name] += w / 1000.0 * hours_today
    if ctx.new_on.get(node, 0) > 0:
        ctx.pool_new.add(pool.name)


def _check_cars(ctx: _Ctx) -> None:
    for node, v in ctx.cars.items():
        if ctx.replicas_on.get(node, 0) <= 0:
            continue
        pool = ctx.pools.get(v.pool)
        if pool is None:
            ctx.bad("UnknownPool", node, v.pool)
            continue
        if _unknown(v, pool, ctx.now):
            # unknown telemetry: no new work; kept work only until the pool's grace expires
            if ctx.new_on.get(node, 0) > 0:
                ctx.bad("UnknownVehicleNew", node)
            since = v.unknown_since
            if since is not None and ctx.now - since >= pool.unknown_grace_seconds:
                ctx.bad("TelemetryUnknown", node)
            continue
        _check_car_limits(ctx, node, v, pool)
        _check_car_energy(ctx, node, v, pool)


def _check_pools(ctx: _Ctx) -> None:
    """Today's energy within the daily budget; with new work in the pool, within the band."""
    for pool in ctx.snapshot.pools:
        budget = pool.daily_energy_budget_kwh
        if budget is None or pool.name not in ctx.pool_kwh:
            continue
        total = pool.energy_used_today_kwh + ctx.pool_kwh[pool.name]
        if total > budget + TOL:
            ctx.bad("PoolEnergyBudget", pool.name, f"{total:.3f} > {budget}")
        elif pool.name in ctx.pool_new:
            band = budget * (1.0 - pool.hysteresis_percent / 100.0)
            if total > band + TOL:
                ctx.bad("PoolEnergyBandNew", pool.name, f"{total:.3f} > band {band:.3f}")


# -- the plan's own bookkeeping -------------------------------------------------------------------


def _check_added(ctx: _Ctx) -> None:
    """``added`` = planned beyond current, exactly."""
    added: dict[Key, int] = defaultdict(int)
    for a in ctx.plan.added:
        added[(a.job, a.node, a.variant)] += a.replicas
    want = {k: n - ctx.current.get(k, 0) for k, n in ctx.planned.items()}
    want = {k: n for k, n in want.items() if n > 0}
    if dict(added) != want:
        diff = sorted(set(added.items()) ^ set(want.items()))[:3]
        ctx.bad("PlanAdded", "plan", f"added disagrees with assignments: {diff}")


def _check_evictions(ctx: _Ctx) -> None:
    """``evictions`` = current beyond planned, exactly; a move names a node the job got a new
    replica on."""
    evicted: dict[Key, int] = defaultdict(int)
    for e in ctx.plan.evictions:
        evicted[(e.job, e.node, e.variant)] += e.replicas
        if e.moved_to is not None and not any(
            a.job == e.job and a.node == e.moved_to for a in ctx.plan.added
        ):
            ctx.bad("PlanEvictions", e.node, f"{e.job} moved to {e.moved_to}, nothing added there")
    want = {k: n - ctx.planned.get(k, 0) for k, n in ctx.current.items()}
    want = {k: n for k, n in want.items() if n > 0}
    if dict(evicted) != want:
        diff = sorted(set(evicted.items()) ^ set(want.items()))[:3]
        ctx.bad("PlanEvictions", "plan", f"evictions disagree with assignments: {diff}")


def _check_unused(ctx: _Ctx) -> None:
    """``unused_nodes`` lists exactly the nodes without replicas (when the plan lists any)."""
    listed = [u.node for u in ctx.plan.unused_nodes]
    if not listed:
        return
    empty = {n for n in (*ctx.racks, *ctx.cars) if ctx.replicas_on.get(n, 0) <= 0}
    if len(listed) != len(set(listed)) or set(listed) != empty:
        diff = sorted(set(listed) ^ empty)[:3]
        ctx.bad("PlanUnused", "plan", f"unused nodes disagree with assignments: {diff}")


def plan_objective(snapshot: Snapshot, plan: Plan) -> float:
    """The objective of ``plan.assignments`` (see ``ObjectiveWeights``), re-derived."""
    w = snapshot.weights
    jobs = {j.name: j for j in snapshot.jobs}
    pools = {p.name: p for p in snapshot.pools}
    tanks = {t.name: t for t in snapshot.tanks}
    where: dict[str, tuple[str, float]] = {}
    for r in snapshot.racks:
        tk = tanks.get(r.tank)
        where[r.name] = ("Rack", tk.energy_cost_per_kwh if tk else 0.0)
    for v in snapshot.vehicles:
        p = pools.get(v.pool)
        where[v.name] = ("Vehicle", (p.energy_cost_per_kwh + p.wear_cost_per_kwh) if p else 0.0)
    preferred = {"PreferRack": "Rack", "PreferVehicle": "Vehicle"}
    served: dict[str, float] = defaultdict(float)
    total = 0.0
    planned: dict[Key, int] = defaultdict(int)
    for a in plan.assignments:
        job = jobs[a.job]
        var = next(v for v in job.variants if v.name == a.variant)
        kind, cost = where.get(a.node, ("", 0.0))
        served[a.job] += var.tokens_per_second * a.replicas
        total -= var.watts / 1000.0 * cost * a.replicas
        if preferred.get(job.preference) == kind:
            total += w.preference_bonus * a.replicas
        planned[(a.job, a.node, a.variant)] += a.replicas
    for name, s in served.items():
        job = jobs[name]
        total += (
            w.value_per_token_per_second
            * job.priority
            / 100.0
            * min(s, job.target_tokens_per_second)
        )
    current: dict[Key, int] = defaultdict(int)
    for cp in snapshot.placements:
        current[(cp.job, cp.node, cp.variant)] += cp.replicas
    removed = sum(max(n - planned.get(k, 0), 0) for k, n in current.items())
    return total - w.move_cost * removed


def _check_objective(ctx: _Ctx) -> None:
    if any(v.rule in ("UnknownJob", "UnknownVariant") for v in ctx.out):
        return
    want = plan_objective(ctx.snapshot, ctx.plan)
    if abs(ctx.plan.objective - want) > 1e-6 * max(1.0, abs(want)):
        ctx.bad("PlanObjective", "plan", f"{ctx.plan.objective:.6f} != {want:.6f}")


RULES: tuple[Callable[[_Ctx], None], ...] = (
    _check_replica_limits,
    _check_memory,
    _check_racks_and_tanks,
    _check_cars,
    _check_pools,
)
"""Constraint families run after the per-assignment checks, in order."""
BOOKKEEPING: tuple[Callable[[_Ctx], None], ...] = (
    _check_added,
    _check_evictions,
    _check_unused,
    _check_objective,
)
"""The plan's own bookkeeping against its assignments."""


def check_plan(snapshot: Snapshot, plan: Plan) -> list[Violation]:
    """All violations of ``plan.assignments`` against ``snapshot``: hard limits and the bands
    on new work."""
    ctx = _context(snapshot, plan)
    for a in plan.assignments:
        _check_assignment(ctx, a.job, a.node, a.variant, a.replicas)
    for rule in RULES:
        rule(ctx)
    return ctx.out


def check_consistency(snapshot: Snapshot, plan: Plan) -> list[Violation]:
    """Where ``plan.added``, ``evictions``, ``unused_nodes`` or ``objective`` disagree with its
    assignments (rules ``PlanAdded``, ``PlanEvictions``, ``PlanUnused``, ``PlanObjective``)."""
    ctx = _context(snapshot, plan)
    for a in plan.assignments:
        _check_assignment(ctx, a.job, a.node, a.variant, a.replicas)
    ctx.out = [v for v in ctx.out if v.rule in ("UnknownJob", "UnknownVariant")]
    for rule in BOOKKEEPING:
        rule(ctx)
    return [v for v in ctx.out if v.rule.startswith("Plan")]


def check_all(snapshot: Snapshot, plan: Plan) -> list[Violation]:
    """:func:`check_plan` and :func:`check_consistency` together."""
    return check_plan(snapshot, plan) + check_consistency(snapshot, plan)
