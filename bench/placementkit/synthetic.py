"""Seeded synthetic fleets for benchmarks and tests (deterministic for a given seed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tokenfleet.placement.model import (
    Job,
    Plan,
    PoolPolicy,
    RackNode,
    Snapshot,
    Spread,
    Tank,
    Target,
    Variant,
    VehicleNode,
)
from tokenfleet.placement.solver import plan, replan_node

NOW = 1_795_000_000.0  # a fixed epoch (2026-11-18 ~ 11:06 UTC); only differences matter
REGIONS = ("eu-central", "eu-west", "us-east")
OWNERS = ("fleet-ops", "employees")
RACK_ONLY: frozenset[Target] = frozenset({"Rack"})
VEHICLE_ONLY: frozenset[Target] = frozenset({"Vehicle"})
VEHICLE_OR_RACK: frozenset[Target] = frozenset({"Rack", "Vehicle"})


def make_snapshot(
    seed: int,
    n_vehicles: int,
    n_racks: int,
    n_jobs: int,
    n_tanks: int | None = None,
    n_pools: int | None = None,
    now: float = NOW,
    load: float = 1.0,
) -> Snapshot:
    """A fleet of ``n_racks`` rack nodes in ``n_tanks`` tanks and ``n_vehicles`` cars in
    ``n_pools`` pools, with ``n_jobs`` jobs whose total target is about ``load`` * the fleet's
    rough capacity.  Telemetry is spread so that every eligibility rule bites somewhere."""
    rng = np.random.default_rng(seed)
    n_tanks = n_tanks if n_tanks is not None else max(1, n_racks // 100)
    n_pools = n_pools if n_pools is not None else max(1, min(8, n_vehicles // 500 or 1))
    tanks: list[Tank] = []
    per_tank = max(1, n_racks // max(n_tanks, 1))
    for t in range(n_tanks):
        nodes_here = per_tank
        baseline_kw = nodes_here * 0.3
        cap = nodes_here * float(rng.uniform(0.9, 1.4))
        leak = "OK"
        roll = rng.random()
        if roll < 0.05:
            leak = "Critical"
        elif roll < 0.08:
            leak = "Warning"
        supply = float(rng.uniform(30, 36))
        tanks.append(
            Tank(
                name=f"tank-{t:03d}",
                region=REGIONS[t % len(REGIONS)],
                power_capacity_kw=cap,
                safety_margin_percent=10.0,
                it_load_kw=baseline_kw * float(rng.uniform(1.0, 1.2)),
                max_supply_temp_c=40.0,
                max_return_temp_c=50.0,
                supply_temp_c=supply,
                return_temp_c=supply + float(rng.uniform(5, 12)),
                design_flow_lpm=nodes_here * 3.0,
                flow_lpm=nodes_here * 3.0 * float(rng.uniform(0.7, 1.1)),
                heat_rejection_kw=cap * float(rng.uniform(0.8, 1.1)),
                leak_state=leak,  # type: ignore[arg-type]
                cordoned=bool(rng.random() < 0.05),
                observed_at=now - float(rng.uniform(0, 70)),
                energy_cost_per_kwh=float(rng.uniform(0.05, 0.2)),
            )
        )
    racks = [
        RackNode(
            name=f"rack-{i:05d}",
            tank=tanks[min(i // per_tank, n_tanks - 1)].name if tanks else "none",
            memory_mib=int(rng.choice([49152, 81920, 98304])),
            accelerator=str(rng.choice(["h100", "l40s"])),
            baseline_watts=300.0,
            region=tanks[min(i // per_tank, n_tanks - 1)].region if tanks else None,
            attested=bool(rng.random() < 0.9),
            cordoned=bool(rng.random() < 0.01),
        )
        for i in range(n_racks)
    ]
    pools = [
        PoolPolicy(
            name=f"pool-{p}",
            region=REGIONS[p % len(REGIONS)],
            ownership=OWNERS[p % len(OWNERS)],
            min_soc_percent=20.0 + 5 * (p % 3),
            target_soc_percent=80.0,
            require_plugged_in=p % 4 != 3,
            max_battery_temp_c=45.0,
            max_compute_temp_c=85.0,
            min_bandwidth_mbps=10.0,
            drain_lead_seconds=900.0,
            daily_energy_budget_kwh=float(n_vehicles / max(n_pools, 1) * rng.uniform(0.3, 1.0)),
            energy_used_today_kwh=float(n_vehicles / max(n_pools, 1) * rng.uniform(0.0, 0.2)),
            energy_cost_per_kwh=float(rng.uniform(0.1, 0.3)),
            wear_cost_per_kwh=float(rng.uniform(0.02, 0.1)),
            stale_after_seconds=300.0,
            hysteresis_percent=2.0,
            battery_capacity_kwh=60.0,
        )
        for p in range(n_pools)
    ]
    vehicles: list[VehicleNode] = []
    for i in range(n_vehicles):
        p = i % max(n_pools, 1)
        missing = rng.random() < 0.01
        vehicles.append(
            VehicleNode(
                name=f"car-{i:05d}",
                pool=pools[p].name if pools else "none",
                memory_mib=int(rng.choice([8192, 16384, 32768])),
                accelerator="orin",
                region=pools[p].region if pools and rng.random() < 0.97 else None,
                attested=bool(rng.random() < 0.8),
                soc_percent=None if missing else float(rng.uniform(5, 98)),
                plugged_in=bool(rng.random() < 0.8),
                charger_kw=float(rng.choice([3.7, 7.4, 11.0, 22.0])),
                battery_temp_c=float(rng.uniform(10, 48)),
                compute_temp_c=float(rng.uniform(35, 88)),
                departure_time=now + float(rng.uniform(300, 16 * 3600)),
                target_soc_percent=float(rng.uniform(60, 90)),
                bandwidth_mbps=float(rng.uniform(2, 300)),
                observed_at=now - float(rng.exponential(90)),
                battery_capacity_kwh=float(rng.choice([50.0, 60.0, 75.0, 100.0])),
            )
        )
    # rough capacity in tokens/s: rack replicas limited by tank power, car replicas by count
    rack_tps = sum(t.power_capacity_kw * 0.9 - per_tank * 0.3 for t in tanks) / 0.5 * 250
    car_tps = n_vehicles * 0.35 * 25
    total_target = max(load * (max(rack_tps, 0) + car_tps), 100.0)
    shares = rng.gamma(1.0, 1.0, size=max(n_jobs, 1))
    shares = shares / shares.sum()
    jobs: list[Job] = []
    for j in range(n_jobs):
        fp16 = Variant(
            name="fp16",
            precision="FP16",
            memory_mib=int(rng.choice([12288, 20480, 40960])),
            tokens_per_second=float(rng.uniform(150, 400)),
            watts=float(rng.uniform(300, 700)),
            targets=frozenset({"Rack"}),
        )
        int4 = Variant(
            name="int4",
            precision="INT4",
            memory_mib=int(rng.choice([4096, 6144, 10240])),
            tokens_per_second=float(rng.uniform(15, 40)),
            watts=float(rng.uniform(40, 120)),
            targets=frozenset({"Vehicle", "Rack"})
            if rng.random() < 0.3
            else frozenset({"Vehicle"}),
        )
        target = float(total_target * shares[j])
        roll = rng.random()
        targets = RACK_ONLY if roll < 0.15 else VEHICLE_ONLY if roll < 0.3 else VEHICLE_OR_RACK
        jobs.append(
            Job(
                name=f"ns-{j % 7}/job-{j:04d}",
                target_tokens_per_second=target,
                variants=(fp16, int4),
                min_replicas=1,
                max_replicas=int(max(1, min(400, target / 20 + 2))),
                priority=int(rng.choice([50, 100, 100, 200, 500])),
                targets=targets,
                preference=str(rng.choice(["PreferRack", "PreferVehicle", "LowestCost"])),  # type: ignore[arg-type]
                regions=frozenset({REGIONS[j % 3], REGIONS[(j + 1) % 3]})
                if rng.random() < 0.3
                else frozenset(),
                ownership=frozenset({"fleet-ops"}) if rng.random() < 0.2 else frozenset(),
                require_attestation=bool(rng.random() < 0.3),
                spread=Spread(
                    max_replicas_per_node=1 if rng.random() < 0.8 else 2,
                    max_replicas_per_tank=int(rng.integers(5, 60)) if rng.random() < 0.2 else None,
                    max_replicas_per_pool=int(rng.integers(5, 60)) if rng.random() < 0.2 else None,
                ),
            )
        )
    return Snapshot(
        now=now,
        tanks=tuple(tanks),
        racks=tuple(racks),
        pools=tuple(pools),
        vehicles=tuple(vehicles),
        jobs=tuple(jobs),
    )


@dataclass
class ChainResult:
    """Outcome of :func:`run_chain`."""

    steps: int = 0
    incremental: int = 0
    """Steps the incremental path served (the rest were full plans)."""
    violations: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


def run_chain(
    snapshot: Snapshot,
    seconds: float,
    step_seconds: float,
    seed: int,
    check: Callable[[Snapshot, Plan], list[Any]],
) -> ChainResult:
    """A running fleet under a stream of single-node events over simulated time.

    Starts from ``plan(snapshot)``; every ``step_seconds`` one car reports (fresh
    ``observed_at``, its state of charge moved by its charger, now and then an unplug or a new
    departure), time advances, and the operator's rule applies: a single-node event is
    re-planned with :func:`~tokenfleet.placement.replan_node` (which itself falls back to a full
    plan when its chain ends).  Each plan acted on is checked with ``check`` against the
    snapshot it was made for."""
    rng = np.random.default_rng(seed)
    out = ChainResult()
    prev = plan(snapshot)
    world = replace(snapshot, placements=prev.assignments)
    vehicles = list(snapshot.vehicles)
    now = snapshot.now
    end = snapshot.now + seconds
    while now + step_seconds <= end and vehicles:
        now += step_seconds
        i = int(rng.integers(len(vehicles)))
        v = vehicles[i]
        soc = v.soc_percent
        if soc is not None and v.plugged_in and v.charger_kw:
            cap = v.battery_capacity_kwh or 60.0
            soc = min(100.0, soc + v.charger_kw * step_seconds / 3600.0 / cap * 100.0)
        roll = rng.random()
        plugged = v.plugged_in
        departure = v.departure_time
        if roll < 0.1:
            plugged = False
        elif roll < 0.2:
            departure = now + float(rng.uniform(600, 8 * 3600))
        vehicles[i] = replace(
            v, soc_percent=soc, observed_at=now, plugged_in=plugged, departure_time=departure
        )
        snap = replace(world, now=now, vehicles=tuple(vehicles), placements=prev.assignments)
        nxt = replan_node(snap, prev, v.name)
        out.steps += 1
        out.incremental += nxt.solver == "heuristic-incremental"
        for viol in check(snap, nxt):
            out.violations += 1
            rule = str(getattr(viol, "rule", viol))
            out.by_rule[rule] = out.by_rule.get(rule, 0) + 1
        prev = nxt
    return out
