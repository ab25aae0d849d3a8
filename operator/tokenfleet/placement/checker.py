"""Independent hard-constraint checker.

Re-derives every hard rule from the snapshot alone, in plain scalar Python, following the
semantics written in :mod:`tokenfleet.placement.model`.  It deliberately imports nothing from
the solvers (no ``state``, ``heuristic`` or ``milp``) so a bug there cannot hide here.

Hysteresis bands are *not* hard limits and are not checked; "new" work means a replica that is
not among the snapshot's current placements (same job, node and variant).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tokenfleet.placement.model import Plan, Snapshot

TOL = 1e-6


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken hard constraint: ``rule`` names it, ``subject`` the node/tank/pool/job."""

    rule: str
    subject: str
    detail: str


def check_plan(snapshot: Snapshot, plan: Plan) -> list[Violation]:
    """All hard-constraint violations of ``plan.assignments`` against ``snapshot``."""
    out: list[Violation] = []
    now = snapshot.now
    jobs = {j.name: j for j in snapshot.jobs}
    tanks = {t.name: t for t in snapshot.tanks}
    pools = {p.name: p for p in snapshot.pools}
    racks = {r.name: r for r in snapshot.racks}
    cars = {v.name: v for v in snapshot.vehicles}

    def bad(rule: str, subject: str, detail: str = "") -> None:
        out.append(Violation(rule, subject, detail))

    current: dict[tuple[str, str, str], int] = defaultdict(int)
    for p in snapshot.placements:
        current[(p.job, p.node, p.variant)] += p.replicas

    mem_used: dict[str, float] = defaultdict(float)
    watts_on: dict[str, float] = defaultdict(float)
    per_job_node: dict[tuple[str, str], int] = defaultdict(int)
    per_job_tank: dict[tuple[str, str], int] = defaultdict(int)
    per_job_pool: dict[tuple[str, str], int] = defaultdict(int)
    per_job: dict[str, int] = defaultdict(int)
    planned: dict[tuple[str, str, str], int] = defaultdict(int)

    for a in plan.assignments:
        planned[(a.job, a.node, a.variant)] += a.replicas
        if a.replicas <= 0:
            bad("NonPositiveReplicas", a.node, f"{a.job} {a.replicas}")
        job = jobs.get(a.job)
        if job is None:
            bad("UnknownJob", a.job)
            continue
        var = next((v for v in job.variants if v.name == a.variant), None)
        if var is None:
            bad("UnknownVariant", a.job, a.variant)
            continue
        is_rack = a.node in racks
        is_car = a.node in cars
        if not (is_rack or is_car):
            bad("UnknownNode", a.node)
            continue
        kind = "Rack" if is_rack else "Vehicle"
        if a.node in job.avoid_nodes:
            bad("LoadBackoff", a.node, f"{a.job} failed to load there")
        if kind not in job.targets or kind not in var.targets:
            bad("Target", a.node, f"{a.job}/{a.variant} on {kind}")
        node_region = racks[a.node].region if is_rack else cars[a.node].region
        if job.regions and node_region not in job.regions:
            bad("Residency", a.node, f"{a.job} needs {sorted(job.regions)}, node {node_region}")
        owner = None
        if is_car:
            pool = pools.get(cars[a.node].pool)
            owner = pool.ownership if pool is not None else None
        if job.ownership and owner is not None and owner not in job.ownership:
            bad("Ownership", a.node, f"{a.job}: owner {owner}")
        attested = racks[a.node].attested if is_rack else cars[a.node].attested
        if job.require_attestation and not attested:
            bad("Attestation", a.node, a.job)
        mem_used[a.node] += var.memory_mib * a.replicas
        watts_on[a.node] += var.watts * a.replicas
        per_job_node[(a.job, a.node)] += a.replicas
        per_job[a.job] += a.replicas
        if is_rack:
            per_job_tank[(a.job, racks[a.node].tank)] += a.replicas
        else:
            per_job_pool[(a.job, cars[a.node].pool)] += a.replicas

    new_on: dict[str, int] = defaultdict(int)
    for key, n in planned.items():
        extra = n - current.get(key, 0)
        if extra > 0:
            new_on[key[1]] += extra

    # jobs: replicas and spread
    for name, n in per_job.items():
        job = jobs[name]
        if n > job.max_replicas:
            bad("MaxReplicas", name, f"{n} > {job.max_replicas}")
    for (name, node), n in per_job_node.items():
        if n > jobs[name].spread.max_replicas_per_node:
            bad("SpreadPerNode", node, f"{name}: {n}")
    for (name, tank_name), n in per_job_tank.items():
        lim = jobs[name].spread.max_replicas_per_tank
        if lim is not None and n > lim:
            bad("SpreadPerTank", tank_name, f"{name}: {n}")
    for (name, pool_name), n in per_job_pool.items():
        lim = jobs[name].spread.max_replicas_per_pool
        if lim is not None and n > lim:
            bad("SpreadPerPool", pool_name, f"{name}: {n}")

    # memory
    for node, used in mem_used.items():
        cap = racks[node].memory_mib if node in racks else cars[node].memory_mib
        if used > cap + TOL:
            bad("Memory", node, f"{used} MiB > {cap} MiB")

    # racks and tanks
    cur_watts: dict[str, float] = defaultdict(float)
    for cp in snapshot.placements:
        cjob = jobs.get(cp.job)
        cvar = next((v for v in cjob.variants if v.name == cp.variant), None) if cjob else None
        if cvar is not None:
            cur_watts[cp.node] += cvar.watts * cp.replicas
    for node, r in racks.items():
        used = watts_on.get(node, 0.0) > 0 or mem_used.get(node, 0.0) > 0
        tk = tanks.get(r.tank)
        if tk is None:
            if used:
                bad("UnknownTank", node, r.tank)
            continue
        if used and tk.leak_state == "Critical" and tk.leak_action == "Drain":
            bad("TankLeak", node, tk.name)
        if new_on.get(node, 0) > 0:
            stale = tk.observed_at is None or now - tk.observed_at > tk.stale_after_seconds
            if tk.leak_state != "OK":
                bad("TankLeakNew", node, tk.leak_state)
            if tk.cordoned:
                bad("TankCordoned", node, tk.name)
            if r.cordoned:
                bad("NodeCordoned", node)
            if stale:
                bad("StaleTankNew", node, tk.name)
    tank_nodes: dict[str, list[str]] = defaultdict(list)
    for node, r in racks.items():
        tank_nodes[r.tank].append(node)
    for tank in snapshot.tanks:
        nodes = tank_nodes.get(tank.name, [])
        baseline = sum(racks[n].baseline_watts for n in nodes) / 1000.0
        placed_now = sum(cur_watts.get(n, 0.0) for n in nodes) / 1000.0
        if tank.it_load_kw is None:
            background = baseline
        else:
            background = max(tank.it_load_kw - placed_now, baseline)
        load = background + sum(watts_on.get(n, 0.0) for n in nodes) / 1000.0
        planned_kw = sum(watts_on.get(n, 0.0) for n in nodes)
        if planned_kw <= 0:
            continue  # nothing of ours there: the background is not the plan's doing
        budget = tank.power_capacity_kw * (1.0 - tank.safety_margin_percent / 100.0)
        if load > budget + TOL:
            bad("TankPower", tank.name, f"{load:.3f} kW > {budget:.3f} kW")
        flow = tank.flow_lpm if tank.flow_lpm is not None else tank.design_flow_lpm
        supply = tank.supply_temp_c if tank.supply_temp_c is not None else tank.max_supply_temp_c
        kg_per_s = flow * tank.density_kg_per_l / 60.0
        loop_kw = (
            kg_per_s * tank.specific_heat_kj_per_kg_k * max(tank.max_return_temp_c - supply, 0.0)
        )
        heat_cap = min(tank.heat_rejection_kw, loop_kw)
        if load > heat_cap + TOL:
            bad("TankThermal", tank.name, f"{load:.3f} kW > {heat_cap:.3f} kW")

    # vehicles and pools
    pool_kwh: dict[str, float] = defaultdict(float)
    for node, v in cars.items():
        w = watts_on.get(node, 0.0)
        if w <= 0 and mem_used.get(node, 0.0) <= 0:
            continue
        pool = pools.get(v.pool)
        if pool is None:
            bad("UnknownPool", node, v.pool)
            continue
        # unknown telemetry: no new work; kept work only until the pool's grace expires
        observed = v.observed_at
        stale = (
            observed is None
            or now - observed > pool.stale_after_seconds
            or observed - now > pool.max_future_skew_seconds
        )
        needed = (
            v.soc_percent,
            v.battery_temp_c,
            v.compute_temp_c,
            v.departure_time,
        )
        unknown = (
            stale
            or any(x is None for x in needed)
            or (pool.require_plugged_in and v.plugged_in is None)
            or (pool.min_bandwidth_mbps > 0 and v.bandwidth_mbps is None)
            or (v.plugged_in is True and v.charger_kw is None)
        )
        if unknown:
            if new_on.get(node, 0) > 0:
                bad("UnknownVehicleNew", node)
            if v.unknown_since is not None and now - v.unknown_since >= pool.unknown_grace_seconds:
                bad("TelemetryUnknown", node)
            continue
        assert v.soc_percent is not None and v.departure_time is not None
        assert v.battery_temp_c is not None and v.compute_temp_c is not None
        if pool.require_plugged_in and v.plugged_in is not True:
            bad("NotPluggedIn", node)
        if v.soc_percent < pool.min_soc_percent:
            bad("ReserveSoC", node, f"{v.soc_percent} < {pool.min_soc_percent}")
        if v.battery_temp_c > pool.max_battery_temp_c:
            bad("BatteryTemp", node, f"{v.battery_temp_c}")
        if v.compute_temp_c > pool.max_compute_temp_c:
            bad("ComputeTemp", node, f"{v.compute_temp_c}")
        if pool.min_bandwidth_mbps > 0 and (
            v.bandwidth_mbps is None or v.bandwidth_mbps < pool.min_bandwidth_mbps
        ):
            bad("Bandwidth", node, f"{v.bandwidth_mbps}")
        seconds_left = v.departure_time - now
        if seconds_left <= pool.drain_lead_seconds:
            bad("DrainLead", node, f"{seconds_left:.0f} s left")
        if new_on.get(node, 0) > 0 and v.cordoned:
            bad("NodeCordoned", node)
        hours = max(seconds_left, 0.0) / 3600.0
        charger = (v.charger_kw or 0.0) if v.plugged_in else 0.0
        battery = (
            v.battery_capacity_kwh
            if v.battery_capacity_kwh is not None
            else pool.battery_capacity_kwh
        )
        target = (
            v.target_soc_percent if v.target_soc_percent is not None else (pool.target_soc_percent)
        )
        gain_kwh = (charger - w / 1000.0) * hours
        need_kwh = (target - v.soc_percent) / 100.0 * battery
        if gain_kwh + TOL < need_kwh:
            bad("EnergyForTarget", node, f"gain {gain_kwh:.3f} kWh < need {need_kwh:.3f} kWh")
        midnight = 86400.0 * (now // 86400.0 + 1.0)
        hours_today = max(min(v.departure_time, midnight) - now, 0.0) / 3600.0
        pool_kwh[pool.name] += w / 1000.0 * hours_today
    for pool in snapshot.pools:
        if pool.daily_energy_budget_kwh is None or pool.name not in pool_kwh:
            continue
        total = pool.energy_used_today_kwh + pool_kwh[pool.name]
        if total > pool.daily_energy_budget_kwh + TOL:
            bad("PoolEnergyBudget", pool.name, f"{total:.3f} > {pool.daily_energy_budget_kwh}")
    return out
