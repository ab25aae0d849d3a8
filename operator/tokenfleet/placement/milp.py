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
from tokenfleet.placement.model import Eviction, ObjectiveWeights, Plan, Reason, Snapshot, Variant
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


def _resource_keys(fleet: Fleet, k: int) -> list[Resource]:
    """The banded shared capacities a unit on node ``k`` draws on: tank (racks), the car's
    energy and its pool (vehicles)."""
    if fleet.is_vehicle[k]:
        return [("e", k), ("p", int(fleet.pool[k]))]
    return [("t", int(fleet.tank[k]))]


@dataclass
class _Columns:
    """The model's columns: x (replicas per unit), s (served per job), r (removed current
    replicas per unit), z (a banded resource takes new units), at offsets ox, os, or, oz."""

    units: list[Unit]
    unit_var: list[Variant]
    ub: list[float]
    uidx: dict[Unit, int]
    jidx: dict[str, int]
    cur_in: list[Unit]
    zidx: dict[Resource, int]

    @property
    def ox(self) -> int:
        return 0

    @property
    def os(self) -> int:
        return len(self.units)

    @property
    def or_(self) -> int:
        return self.os + len(self.jidx)

    @property
    def oz(self) -> int:
        return self.or_ + len(self.cur_in)

    @property
    def n_all(self) -> int:
        return self.oz + len(self.zidx)


def _columns(fleet: Fleet, order: list[str], current: dict[Unit, int]) -> _Columns:
    units, unit_var, ub = _unit_columns(fleet, order, current)
    uidx = {u: i for i, u in enumerate(units)}
    cur_in = [u for u in sorted(current) if current[u] > 0 and u in uidx]
    has_current: set[Resource] = set()
    for u in cur_in:
        has_current.update(_resource_keys(fleet, u[1]))
    zidx = {key: i for i, key in enumerate(sorted(has_current))}
    return _Columns(units, unit_var, ub, uidx, {n: i for i, n in enumerate(order)}, cur_in, zidx)


def _bounds(
    fleet: Fleet,
    cols: _Columns,
    order: list[str],
    current: dict[Unit, int],
    weights: ObjectiveWeights,
) -> tuple[FloatArr, FloatArr, FloatArr, FloatArr]:
    """Objective coefficients, bounds and integrality of every column."""
    c = np.zeros(cols.n_all)
    lo = np.zeros(cols.n_all)
    hi = np.zeros(cols.n_all)
    integrality = np.zeros(cols.n_all)
    for i, u in enumerate(cols.units):
        k = u[1]
        info = fleet.jobs[u[0]]
        var = cols.unit_var[i]
        rate = var.watts / 1000.0 * float(fleet.cost[k])
        tgt = "Vehicle" if fleet.is_vehicle[k] else "Rack"
        if info.preferred == tgt:
            rate -= weights.preference_bonus
        c[cols.ox + i] = rate
        hi[cols.ox + i] = cols.ub[i]
        integrality[cols.ox + i] = 1
    for j, name in enumerate(order):
        info = fleet.jobs[name]
        c[cols.os + j] = -info.weight
        hi[cols.os + j] = max(info.job.target_tokens_per_second, 0.0)
    for i, u in enumerate(cols.cur_in):
        c[cols.or_ + i] = weights.move_cost
        hi[cols.or_ + i] = current[u]
    for i in range(len(cols.zidx)):
        hi[cols.oz + i] = 1
        integrality[cols.oz + i] = 1
    return c, lo, hi, integrality


@dataclass
class _Rows:
    """Sparse constraint rows ``lb <= a @ v <= ub`` being built."""

    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)

    def add(self, entries: list[tuple[int, float]], lo_v: float, hi_v: float) -> int:
        r = len(self.lb)
        for col, val in entries:
            self.rows.append(r)
            self.cols.append(col)
            self.vals.append(val)
        self.lb.append(lo_v)
        self.ub.append(hi_v)
        return r


@dataclass
class _Groups:
    """Unit (column) indices grouped by job, node, job x node/tank/pool and banded resource."""

    by_job: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_node: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_job_node: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    by_job_tank: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    by_job_pool: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    by_res: dict[Resource, list[int]] = field(default_factory=lambda: defaultdict(list))


def _groups(fleet: Fleet, cols: _Columns) -> _Groups:
    g = _Groups()
    for i, u in enumerate(cols.units):
        k = u[1]
        g.by_job[u[0]].append(i)
        g.by_node[k].append(i)
        g.by_job_node[(u[0], k)].append(i)
        if fleet.is_vehicle[k]:
            g.by_job_pool[(u[0], int(fleet.pool[k]))].append(i)
        else:
            g.by_job_tank[(u[0], int(fleet.tank[k]))].append(i)
        for key in _resource_keys(fleet, k):
            g.by_res[key].append(i)
    return g


def _job_rows(
    fleet: Fleet, cols: _Columns, g: _Groups, rows: _Rows, order: list[str], hi: FloatArr
) -> None:
    """served: s_j - Σ tps x <= 0; replicas per job <= max (a job without units serves 0)."""
    for name, idxs in g.by_job.items():
        j = cols.jidx[name]
        rows.add(
            [(cols.os + j, 1.0)]
            + [(cols.ox + i, -cols.unit_var[i].tokens_per_second) for i in idxs],
            -np.inf,
            0.0,
        )
        rows.add(
            [(cols.ox + i, 1.0) for i in idxs], -np.inf, float(fleet.jobs[name].job.max_replicas)
        )
    for j, name in enumerate(order):
        if name not in g.by_job:
            hi[cols.os + j] = 0.0


def _node_rows(fleet: Fleet, cols: _Columns, g: _Groups, rows: _Rows) -> dict[int, int]:
    """Memory per node and the spread limits per node, tank and pool; the memory rows."""
    ox = cols.ox
    mem_rows: dict[int, int] = {}
    for k, idxs in g.by_node.items():
        if len(idxs) > 1:
            mem = [(ox + i, float(cols.unit_var[i].memory_mib)) for i in idxs]
            mem_rows[k] = rows.add(mem, -np.inf, fleet.mem_cap[k])
    for (name, _k), idxs in g.by_job_node.items():
        if len(idxs) > 1:
            lim = fleet.jobs[name].job.spread.max_replicas_per_node
            rows.add([(ox + i, 1.0) for i in idxs], -np.inf, float(lim))
    for (name, _t), idxs in g.by_job_tank.items():
        lim_t = fleet.jobs[name].job.spread.max_replicas_per_tank
        if lim_t is not None:
            rows.add([(ox + i, 1.0) for i in idxs], -np.inf, float(lim_t))
    for (name, _p), idxs in g.by_job_pool.items():
        lim_p = fleet.jobs[name].job.spread.max_replicas_per_pool
        if lim_p is not None:
            rows.add([(ox + i, 1.0) for i in idxs], -np.inf, float(lim_p))
    return mem_rows


def _resource_rows(
    fleet: Fleet, cols: _Columns, g: _Groups, rows: _Rows, current: dict[Unit, int]
) -> dict[Resource, int]:
    """Banded shared capacities (tank kW, car energy, pool kWh): the band for new units, the
    hard limit while only current ones are kept (z = 0); the capacity rows."""

    def load_coef(i: int, kind: str) -> float:
        kw = cols.unit_var[i].watts / 1000.0
        if kind == "p":
            return kw * float(fleet.hours_today[cols.units[i][1]])
        return kw

    res_rows: dict[Resource, int] = {}
    for key, idxs in g.by_res.items():
        kind, ref = key
        hard, band = _caps(fleet, kind, ref)
        hard, band = _clamp(hard), _clamp(min(band, hard))
        if hard == np.inf:
            continue
        entries = [(cols.ox + i, load_coef(i, kind)) for i in idxs]
        if key not in cols.zidx:
            res_rows[key] = rows.add(entries, -np.inf, band)
            continue
        zi = cols.oz + cols.zidx[key]
        # Σ load x + (hard - band) z <= hard ; new units only when z = 1
        res_rows[key] = rows.add([*entries, (zi, hard - band)], -np.inf, hard)
        for i in idxs:
            cur = current.get(cols.units[i], 0)
            rows.add([(cols.ox + i, 1.0), (zi, -cols.ub[i])], -np.inf, float(cur))
    return res_rows


def build_model(snapshot: Snapshot, fleet: Fleet | None = None) -> Model:
    """The MILP of ``snapshot`` (``fleet``: its compiled form, built when not given)."""
    fleet = fleet if fleet is not None else build_fleet(snapshot)
    order = job_order(snapshot)
    current: dict[Unit, int] = defaultdict(int)
    for p in snapshot.placements:
        k = fleet.index.get(p.node)
        if k is not None:
            current[(p.job, k, p.variant)] += p.replicas
    cols = _columns(fleet, order, current)
    forced_removed = sum(
        current[u] for u in sorted(current) if current[u] > 0 and u not in cols.uidx
    ) + sum(p.replicas for p in snapshot.placements if p.node not in fleet.index)
    c, lo, hi, integrality = _bounds(fleet, cols, order, current, snapshot.weights)
    rows = _Rows()
    g = _groups(fleet, cols)
    _job_rows(fleet, cols, g, rows, order, hi)
    mem_rows = _node_rows(fleet, cols, g, rows)
    res_rows = _resource_rows(fleet, cols, g, rows, current)
    # removals: r_u + x_u >= current_u
    for ri, u in enumerate(cols.cur_in):
        rows.add([(cols.or_ + ri, 1.0), (cols.ox + cols.uidx[u], 1.0)], float(current[u]), np.inf)
    shape = (len(rows.lb), cols.n_all)
    a = coo_matrix((rows.vals, (rows.rows, rows.cols)), shape=shape).tocsr()
    return Model(
        fleet,
        order,
        dict(current),
        cols.units,
        cols.unit_var,
        c,
        lo,
        hi,
        integrality,
        a,
        np.array(rows.lb),
        np.array(rows.ub),
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
