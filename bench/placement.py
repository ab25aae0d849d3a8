#!/usr/bin/env python3
"""Placement benchmark: heuristic speed, incremental re-plan latency, quality against the MILP
bound, and hard-constraint violations counted by the independent checker; the same figures for a
kube-scheduler-like baseline.

    bench/placement.py --json            full run (10,000 nodes x 1,000 jobs; minutes)
    bench/placement.py --json --smoke    small and fast (< 60 s); exit 1 on any violation

Progress goes to stderr; with --json, stdout is one JSON object.  ``milp_ratios`` is the full
heuristic (greedy passes and, on small fleets, the LP-relaxation-guided start, each + local
improvement); ``milp_ratios_single_pass`` one greedy pass + local improvement;
``milp_ratios_greedy_only`` the greedy passes without either.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

import numpy as np
import scipy

from tokenfleet.placement import plan, replan_node, solve_milp
from tokenfleet.placement.baseline import plan_baseline, replan_node_baseline
from tokenfleet.placement.checker import check_plan
from tokenfleet.placement.heuristic import plan_heuristic
from tokenfleet.placement.model import Plan, Snapshot, Tank
from tokenfleet.placement.synthetic import make_snapshot


@dataclass(frozen=True)
class Sizes:
    vehicles: int
    racks: int
    tanks: int
    pools: int
    jobs: int
    full_runs: int
    departures: int
    milp: tuple[tuple[int, int, int], ...]
    """(vehicles, racks, jobs) per MILP instance."""
    milp_time_limit_s: float


FULL = Sizes(
    8000,
    2000,
    20,
    8,
    1000,
    5,
    100,
    ((160, 40, 30), (320, 80, 50), (480, 120, 60), (640, 160, 80), (800, 200, 100)),
    60.0,
)
SMOKE = Sizes(800, 200, 4, 4, 100, 5, 20, ((48, 12, 8), (120, 30, 15)), 10.0)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """HiGHS prints debug lines on the C-level stdout; keep stdout for the JSON alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def with_load_of(snapshot: Snapshot, p: Plan) -> Snapshot:
    """The world after ``p`` took effect: its assignments are the current placements and each
    tank's measured IT load includes their watts."""
    variants = {(j.name, v.name): v for j in snapshot.jobs for v in j.variants}
    tank_of = {r.name: r.tank for r in snapshot.racks}
    old: dict[str, float] = {}
    for a in snapshot.placements:
        t = tank_of.get(a.node)
        if t is not None:
            old[t] = old.get(t, 0.0) + variants[(a.job, a.variant)].watts * a.replicas / 1000
    new: dict[str, float] = {}
    for a in p.assignments:
        t = tank_of.get(a.node)
        if t is not None:
            new[t] = new.get(t, 0.0) + variants[(a.job, a.variant)].watts * a.replicas / 1000

    def bump(t: Tank) -> Tank:
        if t.it_load_kw is None:
            return t
        return replace(t, it_load_kw=t.it_load_kw - old.get(t.name, 0.0) + new.get(t.name, 0.0))

    return replace(snapshot, placements=p.assignments, tanks=tuple(bump(t) for t in snapshot.tanks))


def run_solver(
    label: str,
    full: Callable[[Snapshot], Plan],
    incremental: Callable[[Snapshot, Plan, str], Plan],
    sizes: Sizes,
    snapshot: Snapshot,
    milp_cases: list[tuple[Snapshot, Plan]],
    seed: int,
    single: Callable[[Snapshot], Plan] | None = None,
    greedy: Callable[[Snapshot], Plan] | None = None,
) -> dict[str, Any]:
    violations = 0
    by_rule: dict[str, int] = {}

    def count(s: Snapshot, p: Plan) -> None:
        nonlocal violations
        vs = check_plan(s, p)
        violations += len(vs)
        for v in vs:
            by_rule[v.rule] = by_rule.get(v.rule, 0) + 1

    # full plan timing
    times = []
    p0 = full(snapshot)
    for i in range(sizes.full_runs):
        t = time.perf_counter()
        p0 = full(snapshot)
        times.append(time.perf_counter() - t)
        log(f"{label}: full plan run {i + 1}/{sizes.full_runs}: {times[-1]:.3f} s")
    count(snapshot, p0)
    jobs = {j.name: j for j in snapshot.jobs}
    served: dict[str, float] = {}
    for a in p0.assignments:
        var = next(v for v in jobs[a.job].variants if v.name == a.variant)
        served[a.job] = served.get(a.job, 0.0) + var.tokens_per_second * a.replicas
    target_total = sum(j.target_tokens_per_second for j in snapshot.jobs)
    met = sum(min(served.get(j.name, 0.0), j.target_tokens_per_second) for j in snapshot.jobs)

    # steady state, then departures one at a time
    steady = with_load_of(snapshot, p0)
    prev = full(steady)
    count(steady, prev)
    rng = np.random.default_rng(seed)
    serving = sorted({a.node for a in prev.assignments if a.node.startswith("car-")})
    picks = rng.choice(len(serving), size=min(sizes.departures, len(serving)), replace=False)
    vindex = {v.name: i for i, v in enumerate(steady.vehicles)}
    vehicles = list(steady.vehicles)
    lat_ms: list[float] = []
    moved = 0
    for n, pi in enumerate(picks.tolist()):
        name = serving[pi]
        i = vindex[name]
        vehicles[i] = replace(
            vehicles[i], plugged_in=False, departure_time=steady.now + 60.0, charger_kw=0.0
        )
        snap = replace(steady, vehicles=tuple(vehicles), placements=prev.assignments)
        t = time.perf_counter()
        nxt = incremental(snap, prev, name)
        lat_ms.append((time.perf_counter() - t) * 1000)
        moved += sum(e.replicas for e in nxt.evictions)
        count(snap, nxt)
        prev = nxt
        if (n + 1) % 20 == 0:
            log(f"{label}: departure {n + 1}/{len(picks)}: {lat_ms[-1]:.2f} ms")

    # quality against the MILP bound
    ratios = []
    single_ratios = []
    greedy_ratios = []
    small_times = []
    for s, m in milp_cases:
        t = time.perf_counter()
        p = full(s)
        small_times.append(round(time.perf_counter() - t, 4))
        count(s, p)
        ratios.append(round(p.objective / m.bound, 5) if m.bound else None)
        if single is not None:
            q = single(s)
            count(s, q)
            single_ratios.append(round(q.objective / m.bound, 5) if m.bound else None)
        if greedy is not None:
            g = greedy(s)
            count(s, g)
            greedy_ratios.append(round(g.objective / m.bound, 5) if m.bound else None)
    valid = [r for r in ratios if r is not None]
    return {
        "full_plan_seconds": round(statistics.median(times), 4),
        "full_plan_runs_seconds": [round(t, 4) for t in times],
        "incremental_p50_ms": round(float(np.percentile(lat_ms, 50)), 3) if lat_ms else None,
        "incremental_p99_ms": round(float(np.percentile(lat_ms, 99)), 3) if lat_ms else None,
        "incremental_max_ms": round(max(lat_ms), 3) if lat_ms else None,
        "departures": len(lat_ms),
        "replicas_evicted_by_departures": moved,
        "milp_ratio_min": min(valid) if valid else None,
        "milp_ratios": ratios,
        "milp_instance_plan_seconds": small_times,
        **({"milp_ratios_single_pass": single_ratios} if single is not None else {}),
        **({"milp_ratios_greedy_only": greedy_ratios} if greedy is not None else {}),
        "violations": violations,
        "violations_by_rule": dict(sorted(by_rule.items())),
        "full_plan_replicas": sum(a.replicas for a in p0.assignments),
        "full_plan_target_met_fraction": round(met / target_total, 4) if target_total else None,
        "full_plan_objective": round(p0.objective, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--smoke", action="store_true", help="small, fast run (< 60 s)")
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args()
    sizes = SMOKE if args.smoke else FULL
    t_start = time.perf_counter()
    log(
        f"fleet: {sizes.vehicles} vehicles in {sizes.pools} pools, {sizes.racks} rack nodes in "
        f"{sizes.tanks} tanks, {sizes.jobs} jobs"
    )
    snapshot = make_snapshot(
        args.seed, sizes.vehicles, sizes.racks, sizes.jobs, n_tanks=sizes.tanks, n_pools=sizes.pools
    )

    milp_cases: list[tuple[Snapshot, Plan]] = []
    milp_info = []
    milp_violations = 0
    for i, (nv, nr, nj) in enumerate(sizes.milp):
        s = make_snapshot(args.seed + 1 + i, nv, nr, nj)
        t = time.perf_counter()
        with stdout_to_stderr():
            m = solve_milp(s, time_limit_s=sizes.milp_time_limit_s)
        dt = time.perf_counter() - t
        milp_violations += len(check_plan(s, m))
        milp_cases.append((s, m))
        milp_info.append(
            {
                "nodes": nv + nr,
                "jobs": nj,
                "seconds": round(dt, 2),
                "objective": round(m.objective, 3),
                "bound": round(m.bound, 3) if m.bound is not None else None,
            }
        )
        log(f"milp {nv + nr} nodes x {nj} jobs: {dt:.1f} s, obj {m.objective:.1f} bound {m.bound}")

    heur = run_solver(
        "heuristic",
        plan,
        replan_node,
        sizes,
        snapshot,
        milp_cases,
        args.seed,
        single=lambda s: plan_heuristic(s, starts=1, guided=False),
        greedy=lambda s: plan_heuristic(s, improve_budget=0, guided=False),
    )
    base = run_solver(
        "baseline", plan_baseline, replan_node_baseline, sizes, snapshot, milp_cases, args.seed
    )
    out: dict[str, Any] = {
        **heur,
        "baseline": base,
        "milp": {
            "instances": milp_info,
            "time_limit_s": sizes.milp_time_limit_s,
            "violations": milp_violations,
        },
        "fleet": {
            "vehicles": sizes.vehicles,
            "pools": sizes.pools,
            "racks": sizes.racks,
            "tanks": sizes.tanks,
            "jobs": sizes.jobs,
            "seed": args.seed,
        },
        "smoke": bool(args.smoke),
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    bad = heur["violations"] + milp_violations
    if bad:
        log(f"FAIL: {bad} hard-constraint violations (heuristic + MILP)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
