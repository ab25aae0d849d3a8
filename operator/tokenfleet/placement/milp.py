"""Exact placement as a MILP (``scipy.optimize.milp`` / HiGHS): the yardstick for the heuristic.

Variables: ``x[u]`` integer replicas per unit ``u = (job, node, variant)`` the hard rules allow;
``s[j]`` served tokens/s counted toward the target (``0 ≤ s ≤ target``, ``s ≤ Σ tps·x``);
``r[u]`` replicas removed from a current placement (``r ≥ current - x``); ``z`` binaries where a
resource (tank, vehicle energy, pool) has current replicas and a hysteresis band: new replicas
there are allowed only when the whole load fits under the band.

Objective (maximised): ``Σ weight_j s_j - Σ rate_u x_u - move_cost Σ r_u`` with the same terms
as :func:`tokenfleet.placement.assemble.objective`.

:func:`build_model` is shared with the LP relaxation that guides the heuristic on small fleets
(:mod:`tokenfleet.placement.relax`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, csr_matrix

from tokenfleet.placement.assemble import assemble, job_order
from tokenfleet.placement.model import Eviction, Plan, Reason, Snapshot, Variant
from tokenfleet.placement.state import EPS, Fleet, FloatArr, build_fleet, compat_codes, reason_of
from tokenfleet.placement.work import Unit, Work, new_work

Resource = tuple[str, int]
"""("t", tank) / ("p", pool) / ("e", vehicle node): a shared capacity with a hysteresis band."""


def _clamp(x: float) -> float:
    return max(float(x), 0.0)


@dataclass
class Model:
    """The MILP in matrix form (minimise ``c @ v``; rows ``lb ≤ a @ v ≤ ub``) and what its
    columns and rows stand for."""

    fleet: Fleet
    order: list[str]
    current: dict[Unit, int]
    units: list[Unit]
    unit_var: list[Variant]
    c: FloatArr
    lo: FloatArr
    hi: FloatArr
    integrality: FloatArr
    a: csr_matrix
    lb: FloatArr
    ub: FloatArr
    forced_removed: int
    """Current replicas no unit can keep (their node, job or variant is gone)."""
    mem_rows: dict[int, int] = field(default_factory=dict)
    """Node index -> its memory row (nodes with more than one unit)."""
    res_rows: dict[Resource, int] = field(default_factory=dict)
    """Shared resource -> its capacity row."""

    @property
    def nx(self) -> int:
        return len(self.units)


def _unit_columns(
    fleet: Fleet, order: list[str], current: dict[Unit, int]
) -> tuple[list[Unit], list[Variant], list[float]]:
    """Every (job, node, variant) the hard rules allow, with its replica upper bound."""
    units: list[Unit] = []
    unit_var: list[Variant] = []
    ub: list[float] = []
    for name in order:
        info = fleet.jobs[name]
        job = info.job
        codes = compat_codes(fleet, info)
        for t, is_v in (("Rack", False), ("Vehicle", True)):
            for var in info.ranked.get(t, []):
                kw = var.watts / 1000.0
                nodes = np.flatnonzero(
                    (codes == 0)
                    & (fleet.hard_code == 0)
                    & (fleet.is_vehicle == is_v)
                    & (fleet.mem_cap + EPS >= var.memory_mib)
                    & (fleet.energy_hard + EPS >= kw)
                )
                for k in nodes.tolist():
                    cap = min(
                        job.spread.max_replicas_per_node,
                        job.max_replicas,
                        int((fleet.mem_cap[k] + EPS) // max(var.memory_mib, 1)),
                    )
                    if fleet.new_code[k] != 0:
                        cap = min(cap, current.get((name, k, var.name), 0))
                    if cap <= 0:
                        continue
                    units.append((name, k, var.name))
                    unit_var.append(var)
                    ub.append(float(cap))
    return units, unit_var, ub


def build_model(snapshot: Snapshot, fleet: Fleet | None = None) -> Model:
    """The MILP of ``snapshot`` (``fleet``: its compiled form, built when not given)."""
    fleet = fleet if fleet is not None else build_fleet(snapshot)
    order = job_order(snapshot)
    weights = snapshot.weights
    current: dict[Unit, int] = defaultdict(int)
    for p in snapshot.placements:
        k = fleet.index.get(p.node)
        if k is not None:
            current[(p.job, k, p.variant)] += p.replicas

    # ---- variables ------------------------------------------------------------------------
    units, unit_var, ub = _unit_columns(fleet, order, current)
    nx = len(units)
    uidx = {u: i for i, u in enumerate(units)}
    job_names = order
    jidx = {n: i for i, n in enumerate(job_names)}
    nj = len(job_names)
    cur_units = [u for u in sorted(current) if current[u] > 0]
    forced_removed = sum(current[u] for u in cur_units if u not in uidx) + sum(
        p.replicas for p in snapshot.placements if p.node not in fleet.index
    )
    cur_in = [u for u in cur_units if u in uidx]
    nr = len(cur_in)

    # resources with a band: tanks (index), vehicle energy (node), pools (index)
    def resource_keys(i: int) -> list[Resource]:
        k = units[i][1]
        if fleet.is_vehicle[k]:
            return [("e", k), ("p", int(fleet.pool[k]))]
        return [("t", int(fleet.tank[k]))]

    has_current: set[Resource] = set()
    for u in cur_in:
        has_current.update(resource_keys(uidx[u]))
    z_keys = sorted(has_current)
    zidx = {key: i for i, key in enumerate(z_keys)}
    nz = len(z_keys)
    n_all = nx + nj + nr + nz
    ox, os_, or_, oz = 0, nx, nx + nj, nx + nj + nr

    c = np.zeros(n_all)
    lo = np.zeros(n_all)
    hi = np.zeros(n_all)
    integrality = np.zeros(n_all)
    for i, u in enumerate(units):
        k = u[1]
        info = fleet.jobs[u[0]]
        var = unit_var[i]
        rate = var.watts / 1000.0 * float(fleet.cost[k])
        tgt = "Vehicle" if fleet.is_vehicle[k] else "Rack"
        if info.preferred == tgt:
            rate -= weights.preference_bonus
        c[ox + i] = rate
        hi[ox + i] = ub[i]
        integrality[ox + i] = 1
    for j, name in enumerate(job_names):
        info = fleet.jobs[name]
        c[os_ + j] = -info.weight
        hi[os_ + j] = max(info.job.target_tokens_per_second, 0.0)
    for i, u in enumerate(cur_in):
        c[or_ + i] = weights.move_cost
        hi[or_ + i] = current[u]
    for i in range(nz):
        hi[oz + i] = 1
        integrality[oz + i] = 1

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lb_r: list[float] = []
    ub_r: list[float] = []

    def row(entries: list[tuple[int, float]], lo_v: float, hi_v: float) -> int:
        r = len(lb_r)
        for col, val in entries:
            rows.append(r)
            cols.append(col)
            vals.append(val)
        lb_r.append(lo_v)
        ub_r.append(hi_v)
        return r

    # served: s_j - Σ tps x <= 0 ; replicas per job <= max
    by_job: dict[str, list[int]] = defaultdict(list)
    by_node: dict[int, list[int]] = defaultdict(list)
    by_job_node: dict[tuple[str, int], list[int]] = defaultdict(list)
    by_job_tank: dict[tuple[str, int], list[int]] = defaultdict(list)
    by_job_pool: dict[tuple[str, int], list[int]] = defaultdict(list)
    by_res: dict[Resource, list[int]] = defaultdict(list)
    for i, u in enumerate(units):
        k = u[1]
        by_job[u[0]].append(i)
        by_node[k].append(i)
        by_job_node[(u[0], k)].append(i)
        if fleet.is_vehicle[k]:
            by_job_pool[(u[0], int(fleet.pool[k]))].append(i)
        else:
            by_job_tank[(u[0], int(fleet.tank[k]))].append(i)
        for key in resource_keys(i):
            by_res[key].append(i)
    for name, idxs in by_job.items():
        j = jidx[name]
        row(
            [(os_ + j, 1.0)] + [(ox + i, -unit_var[i].tokens_per_second) for i in idxs],
            -np.inf,
            0.0,
        )
        row([(ox + i, 1.0) for i in idxs], -np.inf, float(fleet.jobs[name].job.max_replicas))
    for j, name in enumerate(job_names):
        if name not in by_job:
            hi[os_ + j] = 0.0
    mem_rows: dict[int, int] = {}
    for k, idxs in by_node.items():
        if len(idxs) > 1:
            mem_rows[k] = row(
                [(ox + i, float(unit_var[i].memory_mib)) for i in idxs], -np.inf, fleet.mem_cap[k]
            )
    for (name, _k), idxs in by_job_node.items():
        if len(idxs) > 1:
            lim = fleet.jobs[name].job.spread.max_replicas_per_node
            row([(ox + i, 1.0) for i in idxs], -np.inf, float(lim))
    for (name, _t), idxs in by_job_tank.items():
        lim_t = fleet.jobs[name].job.spread.max_replicas_per_tank
        if lim_t is not None:
            row([(ox + i, 1.0) for i in idxs], -np.inf, float(lim_t))
    for (name, _p), idxs in by_job_pool.items():
        lim_p = fleet.jobs[name].job.spread.max_replicas_per_pool
        if lim_p is not None:
            row([(ox + i, 1.0) for i in idxs], -np.inf, float(lim_p))

    def load_coef(i: int, kind: str) -> float:
        kw = unit_var[i].watts / 1000.0
        if kind == "p":
            return kw * float(fleet.hours_today[units[i][1]])
        return kw

    res_rows: dict[Resource, int] = {}
    for key, idxs in by_res.items():
        kind, ref = key
        hard, band = _caps(fleet, kind, ref)
        hard, band = _clamp(hard), _clamp(min(band, hard))
        if hard == np.inf:
            continue
        entries = [(ox + i, load_coef(i, kind)) for i in idxs]
        if key not in zidx:
            res_rows[key] = row(entries, -np.inf, band)
            continue
        zi = oz + zidx[key]
        # Σ load x + (hard - band) z <= hard ; new units only when z = 1
        res_rows[key] = row([*entries, (zi, hard - band)], -np.inf, hard)
        for i in idxs:
            cur = current.get(units[i], 0)
            row([(ox + i, 1.0), (zi, -ub[i])], -np.inf, float(cur))
    # removals: r_u + x_u >= current_u
    for ri, u in enumerate(cur_in):
        row([(or_ + ri, 1.0), (ox + uidx[u], 1.0)], float(current[u]), np.inf)

    a = coo_matrix((vals, (rows, cols)), shape=(len(lb_r), n_all)).tocsr()
    return Model(
        fleet,
        order,
        dict(current),
        units,
        unit_var,
        c,
        lo,
        hi,
        integrality,
        a,
        np.array(lb_r),
        np.array(ub_r),
        forced_removed,
        mem_rows,
        res_rows,
    )


def solve(snapshot: Snapshot, time_limit_s: float = 30.0, mip_rel_gap: float = 1e-4) -> Plan:
    m = build_model(snapshot)
    fleet = m.fleet
    constraints = [LinearConstraint(m.a, m.lb, m.ub)] if len(m.lb) else []
    res = milp(
        m.c,
        integrality=m.integrality,
        bounds=Bounds(m.lo, m.hi),
        constraints=constraints,
        options={"time_limit": float(time_limit_s), "mip_rel_gap": float(mip_rel_gap)},
    )
    dual = getattr(res, "mip_dual_bound", None)
    constant = snapshot.weights.move_cost * m.forced_removed
    bound = -float(dual) - constant if dual is not None and np.isfinite(dual) else None

    # ---- plan -----------------------------------------------------------------------------
    work = new_work(fleet)
    work.bonus = snapshot.weights.preference_bonus
    for u, n in m.current.items():
        work.current[u] = n
    if res.x is not None:
        xs = np.rint(res.x[: m.nx]).astype(np.int64)
        for i, u in enumerate(m.units):
            if xs[i] > 0:
                work.add(fleet.jobs[u[0]], u[1], m.unit_var[i], int(xs[i]))
    _evictions(snapshot, fleet, work, m.current)
    plan = assemble(snapshot, work, m.order, "milp")
    if bound is None and res.x is not None and res.status == 0:
        bound = plan.objective
    return replace(plan, bound=bound, cache=None)


def _caps(fleet: Fleet, kind: str, ref: int) -> tuple[float, float]:
    if kind == "t":
        return float(fleet.tank_free_hard[ref]), float(fleet.tank_free_new[ref])
    if kind == "p":
        return float(fleet.pool_free_hard[ref]), float(fleet.pool_free_new[ref])
    return float(fleet.energy_hard[ref]), float(fleet.energy_new[ref])


def _evictions(snapshot: Snapshot, fleet: Fleet, work: Work, current: dict[Unit, int]) -> None:
    for p in snapshot.placements:
        if p.node not in fleet.index:
            work.evictions.append(
                Eviction(p.job, p.node, p.variant, p.replicas, Reason.NODE_REMOVED)
            )
    for u, n in sorted(current.items()):
        kept = work.units.get(u, 0)
        if kept >= n:
            continue
        name, k, vname = u
        info = fleet.jobs.get(name)
        reason: Reason
        if info is None:
            reason = Reason.JOB_REMOVED
        elif vname not in info.variants:
            reason = Reason.VARIANT_REMOVED
        elif fleet.hard_code[k]:
            reason = reason_of(int(fleet.hard_code[k]))
        elif work.served.get(name, 0.0) + EPS >= info.job.target_tokens_per_second:
            reason = Reason.SCALED_DOWN
        else:
            reason = Reason.PREEMPTED
        work.evictions.append(Eviction(name, fleet.names[k], vname, n - kept, reason))
