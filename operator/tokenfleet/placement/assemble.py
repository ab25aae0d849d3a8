"""A plan out of a solve's working state: assignments, added replicas, evictions paired with the
moves they make, the objective, and the reasons (job shortfalls, unused nodes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from tokenfleet.placement.model import (
    Eviction,
    JobShortfall,
    Placement,
    Plan,
    Reason,
    Snapshot,
    UnusedNode,
)
from tokenfleet.placement.state import (
    CODE,
    EPS,
    BoolArr,
    FloatArr,
    IntArr,
    JobInfo,
    reason_of,
)
from tokenfleet.placement.work import Work, reconcile_evictions, work_objective


@dataclass
class _Rooms:
    """What :func:`job_reason_codes` reads for every job of one explanation, computed once:
    per node the room left (car energy band, its tank's kW, its pool's kWh), the tank's
    reason code, and per policy class the objection codes before capacity."""

    e_room: FloatArr
    tank_room: FloatArr
    pool_room: FloatArr
    tank_code: IntArr
    base: dict[tuple[object, ...], IntArr] = field(default_factory=dict)


def _rooms(work: Work) -> _Rooms:
    f = work.fleet
    tank_reason = np.array(
        [CODE[r] for r in f.tank_new_reason] + [CODE[Reason.TANK_POWER_BUDGET]], dtype=np.int64
    )
    return _Rooms(
        f.energy_new - work.e_used,
        (f.tank_free_new - work.tank_used)[f.tank],
        (f.pool_free_new - work.pool_used)[f.pool],
        tank_reason[f.tank],
    )


def job_reason_codes(work: Work, info: JobInfo, rooms: _Rooms | None = None) -> IntArr:
    """Per node, why one more replica of the job cannot go there now (0 = it could).
    ``rooms``: shared figures of the current state (computed here when not given)."""
    f = work.fleet
    job = info.job
    rm = rooms if rooms is not None else _rooms(work)
    base = rm.base.get(info.policy_key)
    if base is None:
        base = work.compat_of(info).copy()
        free = base == 0
        base[free & (f.new_code != 0)] = f.new_code[free & (f.new_code != 0)]
        rm.base[info.policy_key] = base
    code = base.copy()
    free = code == 0
    if not free.any():
        return code
    # smallest variant per target decides memory/energy/tank/pool reasons
    for t, is_v in (("Rack", False), ("Vehicle", True)):
        ranked = info.ranked.get(t)
        if not ranked:
            continue
        lo, hi = (f.n_racks, len(f.names)) if is_v else (0, f.n_racks)
        g = np.flatnonzero(free[lo:hi]) + lo
        if g.size == 0:
            continue
        mem = min(v.memory_mib for v in ranked)
        kw = min(v.watts for v in ranked) / 1000.0
        checks: list[tuple[BoolArr, IntArr | int]] = [
            (work.mem_free[g] + EPS < mem, CODE[Reason.INSUFFICIENT_MEMORY]),
            (rm.e_room[g] + EPS < kw, CODE[Reason.INSUFFICIENT_ENERGY_FOR_TARGET]),
            (rm.tank_room[g] + EPS < kw, rm.tank_code[g]),
            (rm.pool_room[g] + EPS < kw * f.hours_today[g], CODE[Reason.POOL_ENERGY_BUDGET]),
        ]
        left = np.ones(g.size, dtype=np.bool_)
        for bad, c in checks:
            sel = left & bad
            if isinstance(c, int):
                code[g[sel]] = c
            else:
                code[g[sel]] = c[sel]
            left &= ~bad
    # spread: nodes where the job is at its per-node limit
    for _jn, k, _v in work.job_units.get(job.name, {}):
        n = work.job_node.get((job.name, k), 0)
        if n >= job.spread.max_replicas_per_node and code[k] == 0:
            code[k] = CODE[Reason.SPREAD_LIMIT]
    return code


CAPACITY_REASONS = frozenset(
    {
        Reason.INSUFFICIENT_MEMORY,
        Reason.INSUFFICIENT_ENERGY_FOR_TARGET,
        Reason.TANK_POWER_BUDGET,
        Reason.TANK_THERMAL_HEADROOM,
        Reason.POOL_ENERGY_BUDGET,
        Reason.SPREAD_LIMIT,
    }
)
"""Reasons that mean "eligible, but full"; the others mean "not eligible"."""


def _free_node_reason(work: Work, info: JobInfo, codes: IntArr) -> Reason:
    """Why a job short of target got no replica on nodes without an objection (``codes == 0``):
    ``SpreadLimit`` when its per-tank/pool spread forbids one there, else ``NotWorthAReplica``."""
    f = work.fleet
    for kk in np.flatnonzero(codes == 0)[:64]:
        k = int(kk)
        ranked = info.ranked.get("Vehicle" if f.is_vehicle[k] else "Rack") or []
        for var in ranked:
            if work.fits(info, k, var, new=True) is Reason.SPREAD_LIMIT:
                return Reason.SPREAD_LIMIT
    return Reason.NOT_WORTH_A_REPLICA


def explain(
    work: Work, order: list[str], nodes: bool = True
) -> tuple[list[JobShortfall], list[UnusedNode]]:
    """Shortfall reasons for ``order``'s jobs short of target; with ``nodes``, also a reason for
    every node left without replicas."""
    f = work.fleet
    shortfalls: list[JobShortfall] = []
    first_codes: IntArr | None = None
    rooms: _Rooms | None = None
    for name in order:
        info = f.jobs[name]
        job = info.job
        served = work.served.get(name, 0.0)
        count = work.count.get(name, 0)
        if served + EPS >= job.target_tokens_per_second and count >= job.min_replicas:
            continue
        if count >= job.max_replicas:
            shortfalls.append(
                JobShortfall(
                    name,
                    Reason.MAX_REPLICAS,
                    served,
                    job.target_tokens_per_second,
                    count,
                    ((Reason.MAX_REPLICAS, count),),
                )
            )
            continue
        if rooms is None:
            rooms = _rooms(work)
        codes = job_reason_codes(work, info, rooms)
        if first_codes is None:
            first_codes = codes
        counts = np.bincount(codes, minlength=len(CODE) + 1)
        pairs = sorted(
            ((reason_of(c), int(counts[c])) for c in range(1, len(counts)) if counts[c] > 0),
            key=lambda x: (-x[1], x[0].value),
        )
        capacity_pairs = [(r, n) for r, n in pairs if r in CAPACITY_REASONS]
        if int(counts[0]) > 0:
            # room left: the per-tank/pool spread forbids it, or a replica is not worth its cost
            # (what fills the other nodes does not hold the job back)
            primary = _free_node_reason(work, info, codes)
        elif capacity_pairs:
            primary = capacity_pairs[0][0]
        else:
            primary = Reason.NO_ELIGIBLE_NODE
        shortfalls.append(
            JobShortfall(name, primary, served, job.target_tokens_per_second, count, tuple(pairs))
        )
    unused: list[UnusedNode] = []
    if not nodes:
        return shortfalls, unused
    used = np.zeros(len(f.names), dtype=np.bool_)
    for k, us in work.node_units.items():
        if us:
            used[k] = True
    hard_or_new = np.where(f.hard_code != 0, f.hard_code, f.new_code)
    for kk in np.flatnonzero(~used):
        k = int(kk)
        c = int(hard_or_new[k])
        if c == 0 and first_codes is not None:
            c = int(first_codes[k])
        unused.append(UnusedNode(f.names[k], reason_of(c) if c else Reason.NO_DEMAND))
    return shortfalls, unused


def job_order(snapshot: Snapshot) -> list[str]:
    """Jobs by priority (highest first), then name."""
    return [j.name for j in sorted(snapshot.jobs, key=lambda j: (-j.priority, j.name))]


def objective(snapshot: Snapshot, assignments: tuple[Placement, ...] | list[Placement]) -> float:
    """Objective of a set of assignments against the snapshot (see ``ObjectiveWeights``)."""
    w = snapshot.weights
    jobs = {j.name: j for j in snapshot.jobs}
    pools = {p.name: p for p in snapshot.pools}
    tanks = {t.name: t for t in snapshot.tanks}
    cost_of: dict[str, float] = {}
    target_of: dict[str, str] = {}
    for r in snapshot.racks:
        t = tanks.get(r.tank)
        cost_of[r.name] = t.energy_cost_per_kwh if t else 0.0
        target_of[r.name] = "Rack"
    for v in snapshot.vehicles:
        p = pools.get(v.pool)
        cost_of[v.name] = (p.energy_cost_per_kwh + p.wear_cost_per_kwh) if p else 0.0
        target_of[v.name] = "Vehicle"
    served: dict[str, float] = {}
    total = 0.0
    planned: Counter[tuple[str, str, str]] = Counter()
    for a in assignments:
        job = jobs[a.job]
        var = next(v for v in job.variants if v.name == a.variant)
        served[a.job] = served.get(a.job, 0.0) + var.tokens_per_second * a.replicas
        total -= var.watts / 1000.0 * cost_of.get(a.node, 0.0) * a.replicas
        pref = (
            "Rack"
            if job.preference == "PreferRack"
            else "Vehicle"
            if job.preference == "PreferVehicle"
            else None
        )
        if pref is not None and target_of.get(a.node) == pref:
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
    cur: Counter[tuple[str, str, str]] = Counter()
    for cp in snapshot.placements:
        cur[(cp.job, cp.node, cp.variant)] += cp.replicas
    removed = sum(max(n - planned.get(key, 0), 0) for key, n in cur.items())
    total -= w.move_cost * removed
    return total


def assemble(
    snapshot: Snapshot, work: Work, order: list[str], solver: str, explain_all: bool = True
) -> Plan:
    f = work.fleet
    reconcile_evictions(work)
    names = f.names
    current = work.current
    out: list[Placement] = []
    added: list[Placement] = []
    for (j, k, v), n in sorted(work.units.items()):  # (job, node index, variant) order
        if n <= 0:
            continue
        a = Placement(j, names[k], v, n)
        out.append(a)
        extra = n - current.get((j, k, v), 0) if current else n
        if extra == n:
            added.append(a)  # all of it is new: the same record
        elif extra > 0:
            added.append(Placement(j, names[k], v, extra))
    assignments = tuple(out)
    evictions = pair_moves(work.evictions, added)
    shortfalls, unused = explain(work, order) if explain_all else ([], [])
    removed = sum(e.replicas for e in evictions)
    work.assign_list = list(assignments)
    work.assign_pos = {(a.job, a.node, a.variant): i for i, a in enumerate(assignments)}
    work.unused_list = list(unused)
    work.unused_pos = {u.node: i for i, u in enumerate(unused)}
    work.rank = {name: i for i, name in enumerate(order)}
    return Plan(
        assignments=assignments,
        added=tuple(added),
        evictions=tuple(evictions),
        job_shortfalls=tuple(shortfalls),
        unused_nodes=tuple(unused),
        objective=work_objective(work, removed, snapshot.weights.move_cost),
        solver=solver,
        cache=(work, order),
    )


def pair_moves(evictions: list[Eviction], added: list[Placement]) -> list[Eviction]:
    """Mark an eviction as a move when the same job got a new replica elsewhere."""
    free: dict[str, list[str]] = {}
    movers = {e.job for e in evictions}
    for a in added:
        if a.job in movers:
            free.setdefault(a.job, []).extend([a.node] * a.replicas)
    out: list[Eviction] = []
    for e in sorted(evictions, key=lambda e: (e.job, e.node, e.variant, e.reason.value)):
        spots = free.get(e.job)
        if spots and e.reason not in (Reason.JOB_REMOVED, Reason.SCALED_DOWN):
            out.append(replace(e, moved_to=spots.pop(0)))
        else:
            out.append(e)
    return out
