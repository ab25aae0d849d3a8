"""Priority preemption: a higher-priority job takes capacity from lower-priority replicas.

After the greedy and the local search, a job still short of its target may take replicas of
*strictly lower-priority* jobs off a node (memory, the car's energy headroom) and out of the
node's tank or pool (power/heat headroom, the pool's daily energy budget) to place one more
replica of its own; the victims' jobs are then re-filled wherever they fit.  A trial is kept
only when the objective strictly improves, with every *current* replica taken off paying the
move cost (:attr:`~tokenfleet.placement.model.ObjectiveWeights.move_cost`): the gain in
``priority/100 x tokens/s`` of the preemptor must outweigh the victims' lost
``priority/100 x tokens/s``, the energy cost difference and the moves.  Lower-priority work
never preempts higher (equal priority never preempts either).  A current replica removed here is
an eviction with reason :attr:`~tokenfleet.placement.model.Reason.PREEMPTED`.

Stability ("unchanged input moves nothing"): victims are chosen in an order that does not depend
on whether a replica is current or newly added (priority, then value, then name), and the phase
runs until no trial pays.  A current replica costs the move cost on top of what an added one
costs, so on a plan's own output (its replicas now current) no trial pays either.

The gate (:func:`_blocked`) runs on every plan: in O(jobs) it finds no job short of its target
that outranks the lowest-priority job placed (the usual state) and the phase does nothing; only
otherwise does it index the placed replicas (per node, tank and pool, lowest priority first).
A sweep's reach is bounded by what its short jobs want (:data:`SWEEP_NODES_PER_REPLICA`), so a
few short replicas on a large fleet move a few dozen victims, not thousands.

Deterministic, budgeted in abstract work units like :mod:`tokenfleet.placement.improve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tokenfleet.placement.greedy import Overshoot, fill_job
from tokenfleet.placement.improve import TOL, _Budget, _reconcile, _value, budget_for, is_short
from tokenfleet.placement.model import Eviction, Reason, Variant
from tokenfleet.placement.state import EPS, INF, FloatArr, JobInfo
from tokenfleet.placement.work import Unit, Work, host_mask

CANDIDATES = 6
"""Nodes tried per (job, variant) and round, best estimate first."""
MAX_VICTIMS = 4
"""Replicas taken off at most to make room for one replica of the preemptor."""
MAX_VARIANTS = 2
"""Variants tried per job and target kind (best first)."""
TRIAL_COST = 400
UNIT_COST = 40
SWEEP_NODES_PER_REPLICA = 8
"""A sweep clears at most this many nodes per replica its short jobs still want (plus
:data:`SWEEP_NODES_MIN`), the cheapest victims first (see :func:`_sweep_victims`)."""
SWEEP_NODES_MIN = 128
OVERSHOOT_ROUNDS: tuple[Overshoot, ...] = ("none", "least", "any")
"""Fill rounds of a sweep's short jobs (see :func:`~tokenfleet.placement.greedy.fill_job`)."""
BUDGET_SHARE = 4
"""The phase gets 1/BUDGET_SHARE of :func:`~tokenfleet.placement.improve.budget_for`."""


@dataclass
class _Index:
    """Replicas per node, tank and pool, lowest priority first."""

    by_node: dict[int, list[Unit]] = field(default_factory=dict)
    by_tank: dict[int, list[Unit]] = field(default_factory=dict)
    by_pool: dict[int, list[Unit]] = field(default_factory=dict)
    node_min: FloatArr = field(default_factory=lambda: np.zeros(0))
    """Lowest priority of a replica on each node (inf: none)."""
    node_val: FloatArr = field(default_factory=lambda: np.zeros(0))
    """Value (weight x tokens/s) of the cheapest replica on each node."""
    tank_min: FloatArr = field(default_factory=lambda: np.zeros(0))
    pool_min: FloatArr = field(default_factory=lambda: np.zeros(0))
    lowest: float = INF


def _key(work: Work, u: Unit) -> tuple[int, float, str, int, str]:
    info = work.fleet.jobs[u[0]]
    var = info.variants[u[2]]
    return (info.job.priority, info.weight * var.tokens_per_second, u[0], u[1], u[2])


def _index(work: Work) -> _Index:
    """Index the placed units (a function of ``work.units`` alone: the same units give the same
    index whatever the dict's order)."""
    f = work.fleet
    n = len(f.names)
    idx = _Index(
        node_min=np.full(n, INF),
        node_val=np.full(n, INF),
        tank_min=np.full(len(f.tank_free_new), INF),
        pool_min=np.full(len(f.pool_free_new), INF),
    )
    # one sort of every unit by :func:`_key` (priority and value looked up once per variant);
    # each node's, tank's and pool's list is then filled in that order (the dicts' own order
    # is the units' order, as the sweeps walk them)
    head: dict[tuple[str, str], tuple[int, float]] = {}
    rows: list[tuple[int, float, str, int, str]] = []
    is_vehicle = f.is_vehicle.tolist()
    tank = f.tank.tolist()
    pool = f.pool.tolist()
    for u, cnt in work.units.items():
        if cnt <= 0:
            continue
        h = head.get((u[0], u[2]))
        if h is None:
            info = f.jobs[u[0]]
            h = (info.job.priority, info.weight * info.variants[u[2]].tokens_per_second)
            head[(u[0], u[2])] = h
        k = u[1]
        rows.append((h[0], h[1], u[0], k, u[2]))
        idx.by_node.setdefault(k, [])
        if is_vehicle[k]:
            idx.by_pool.setdefault(pool[k], [])
        else:
            idx.by_tank.setdefault(tank[k], [])
    if not rows:
        return idx
    rows.sort()
    for _pr, _val, j, k, v in rows:
        u = (j, k, v)
        idx.by_node[k].append(u)
        if is_vehicle[k]:
            idx.by_pool[pool[k]].append(u)
        else:
            idx.by_tank[tank[k]].append(u)
    ks = np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows))
    prs = np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))
    vals = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    np.minimum.at(idx.node_min, ks, prs)
    np.minimum.at(idx.node_val, ks, vals)
    veh = f.is_vehicle[ks]
    np.minimum.at(idx.pool_min, f.pool[ks[veh]], prs[veh])
    np.minimum.at(idx.tank_min, f.tank[ks[~veh]], prs[~veh])
    idx.lowest = float(prs.min())
    return idx


class _Trial:
    """Journal of one preemption: adds/removes, each touched job's value and each touched
    unit's count before the first change, so it can be scored (moves included) and undone."""

    def __init__(self, work: Work, move_cost: float) -> None:
        self.work = work
        self.move_cost = move_cost
        self.ops: list[tuple[int, JobInfo, int, Variant, int]] = []
        self.values0: dict[str, float] = {}
        self.units0: dict[Unit, int] = {}
        self.cost0 = work.cost_total
        self.victims: list[str] = []

    def _touch(self, info: JobInfo, u: Unit) -> None:
        if info.job.name not in self.values0:
            self.values0[info.job.name] = _value(self.work, info)
        if u not in self.units0:
            self.units0[u] = self.work.units.get(u, 0)

    def add(self, info: JobInfo, k: int, var: Variant) -> None:
        self._touch(info, (info.job.name, k, var.name))
        self.work.add(info, k, var)
        self.ops.append((1, info, k, var, 1))

    def take(self, u: Unit) -> bool:
        if self.work.units.get(u, 0) <= 0:
            return False
        info = self.work.fleet.jobs[u[0]]
        var = info.variants[u[2]]
        self._touch(info, u)
        self.work.remove(info, u[1], var)
        self.ops.append((-1, info, u[1], var, 1))
        if u[0] not in self.victims:
            self.victims.append(u[0])
        return True

    def fill(self, info: JobInfo, overshoot: Overshoot = "any") -> None:
        name = info.job.name
        before = dict(self.work.job_units.get(name, {}))
        if name not in self.values0:
            self.values0[name] = _value(self.work, info)
        fill_job(self.work, info, overshoot=overshoot)
        for u, n in self.work.job_units.get(name, {}).items():
            extra = n - before.get(u, 0)
            if extra > 0:
                self.units0.setdefault(u, before.get(u, 0))
                self.ops.append((1, info, u[1], info.variants[u[2]], extra))

    def lost_current(self) -> dict[Unit, int]:
        """Per touched unit, current replicas this trial removes (negative: puts back)."""
        w = self.work
        out: dict[Unit, int] = {}
        for u, before in self.units0.items():
            cur = w.current.get(u, 0)
            d = max(cur - w.units.get(u, 0), 0) - max(cur - before, 0)
            if d:
                out[u] = d
        return out

    def gain(self) -> float:
        w = self.work
        dv = sum(_value(w, w.fleet.jobs[n]) - v0 for n, v0 in self.values0.items())
        moves = sum(self.lost_current().values())
        return dv - (w.cost_total - self.cost0) - self.move_cost * moves

    def undo(self) -> None:
        for sign, info, k, var, n in reversed(self.ops):
            if sign > 0:
                self.work.remove(info, k, var, n)
            else:
                self.work.add(info, k, var, n)
        self.ops.clear()

    def commit(self) -> None:
        w = self.work
        f = w.fleet
        for u, d in sorted(self.lost_current().items()):
            if d > 0:
                w.evictions.append(Eviction(u[0], f.names[u[1]], u[2], d, Reason.PREEMPTED))
        _reconcile(w, set(self.units0))


def _candidates(
    work: Work, idx: _Index, info: JobInfo, t: str, var: Variant, need: float
) -> list[int]:
    """Up to :data:`CANDIDATES` nodes where one more replica of ``var`` could go after taking
    lower-priority replicas off, best estimate first."""
    f = work.fleet
    pr = float(info.job.priority)
    mask = host_mask(work, info, t, var)
    if mask is None:
        return []
    lo, ok = mask
    kw = var.watts / 1000.0
    nodes_all = slice(lo, lo + len(ok))
    if t == "Vehicle":
        shared_min = idx.pool_min[f.pool[nodes_all]]
    else:
        shared_min = idx.tank_min[f.tank[nodes_all]]
    ok &= (idx.node_min[nodes_all] < pr) | (shared_min < pr)
    sel = np.flatnonzero(ok)
    if sel.size == 0:
        return []
    nodes = sel + lo
    local = work.mem_free[nodes] + EPS < var.memory_mib
    if t == "Vehicle":
        local |= work.e_used[nodes] + kw > f.energy_new[nodes] + EPS
    est = info.weight * min(var.tokens_per_second, need) - kw * f.cost[nodes]
    est = est - np.where(local, idx.node_val[nodes], 0.0)
    order = np.lexsort((nodes, -est))[:CANDIDATES]
    return [int(x) for x in nodes[order]]


def _make_room(work: Work, idx: _Index, tr: _Trial, info: JobInfo, k: int, var: Variant) -> bool:
    """Take lower-priority replicas off ``k`` and then its tank/pool until one more replica of
    ``var`` fits as new work on ``k``; False (caller undoes) when it cannot within
    :data:`MAX_VICTIMS`."""
    f = work.fleet
    pr = info.job.priority
    kw = var.watts / 1000.0
    taken = 0

    def local_ok() -> bool:
        return bool(
            work.mem_free[k] + EPS >= var.memory_mib
            and work.e_used[k] + kw <= f.energy_new[k] + EPS
        )

    def lower(u: Unit) -> bool:
        return f.jobs[u[0]].job.priority < pr

    for u in idx.by_node.get(k, []):
        if local_ok() or taken >= MAX_VICTIMS or not lower(u):
            break
        while taken < MAX_VICTIMS and not local_ok() and tr.take(u):
            taken += 1
    if not local_ok():
        return False
    if f.is_vehicle[k]:
        p = int(f.pool[k])
        hours = float(f.hours_today[k])

        def shared_ok() -> bool:
            return bool(f.pool_free_new[p] - work.pool_used[p] + EPS >= kw * hours)

        shared = idx.by_pool.get(p, [])
    else:
        t = int(f.tank[k])

        def shared_ok() -> bool:
            return bool(f.tank_free_new[t] - work.tank_used[t] + EPS >= kw)

        shared = idx.by_tank.get(t, [])
    for u in shared:
        if shared_ok() or taken >= MAX_VICTIMS or not lower(u):
            break
        if tr.take(u):
            taken += 1
    return work.fits(info, k, var, new=True) is None


def _preempt_one(
    work: Work, idx: _Index, info: JobInfo, move_cost: float, rank: dict[str, int], b: _Budget
) -> bool:
    """Try preemptions for one more replica of ``info``; keep the first that pays."""
    job = info.job
    n = len(work.fleet.names)
    for t in ("Rack", "Vehicle"):
        for var in info.ranked.get(t, [])[:MAX_VARIANTS]:
            need = job.target_tokens_per_second - work.served.get(job.name, 0.0)
            if need <= EPS or not b.spend(n):
                return False
            for k in _candidates(work, idx, info, t, var, need):
                if not b.spend(TRIAL_COST + 2 * n):
                    return False
                tr = _Trial(work, move_cost)
                if not _make_room(work, idx, tr, info, k, var):
                    tr.undo()
                    continue
                tr.add(info, k, var)
                for vname in sorted(tr.victims, key=lambda x: (rank.get(x, 0), x)):
                    tr.fill(work.fleet.jobs[vname])
                tr.fill(info)
                if tr.gain() > TOL:
                    tr.commit()
                    return True
                tr.undo()
    return False


def _want(work: Work, info: JobInfo) -> int:
    """Replicas ``info`` still wants: its remainder over its smallest variant (at least its
    floor), within its ``max_replicas`` (as :func:`~tokenfleet.placement.greedy.fill_job`)."""
    job = info.job
    need = max(job.target_tokens_per_second - work.served.get(job.name, 0.0), 0.0)
    tps = min((v.tokens_per_second for vs in info.ranked.values() for v in vs), default=1.0)
    count = work.count.get(job.name, 0)
    return max(min(job.max_replicas - count, int(need / max(tps, EPS)) + 1), 0)


def _sweep_victims(work: Work, idx: _Index, short: list[str], level: int) -> list[tuple[Unit, int]]:
    """Every placed unit of a job below ``level`` on a node one of the ``short`` jobs may use
    or in the tank or pool of one, with its replica count.

    The reach is bounded by what the short jobs want: when more nodes than
    :data:`SWEEP_NODES_PER_REPLICA` x the replicas they want (+ :data:`SWEEP_NODES_MIN`) hold
    such units, only that many nodes are cleared - those whose lower-priority replicas are worth
    least, among the nodes with the memory for the short jobs' smallest replica - and only
    the replicas on them are taken (so a sweep for two replicas on a 10,000-node fleet moves a
    few dozen replicas, not thousands)."""
    f = work.fleet
    usable = np.zeros(len(f.names), dtype=np.bool_)
    for name in short:
        usable |= work.ok_of(f.jobs[name])
    tanks = set(np.unique(f.tank[usable]).tolist())
    pools = set(np.unique(f.pool[usable]).tolist())
    victims: list[tuple[Unit, int]] = []
    lower = np.zeros(len(f.names))  # per usable node, the value of its replicas below level
    for k_list in idx.by_node.values():
        for u in k_list:
            info = f.jobs[u[0]]
            if info.job.priority >= level:
                break
            k = u[1]
            if usable[k]:
                n = work.units.get(u, 0)
                lower[k] += info.weight * info.variants[u[2]].tokens_per_second * n + EPS
                victims.append((u, n))
            elif (f.is_vehicle[k] and int(f.pool[k]) in pools) or (
                not f.is_vehicle[k] and int(f.tank[k]) in tanks
            ):
                victims.append((u, work.units.get(u, 0)))
    limit = SWEEP_NODES_PER_REPLICA * sum(_want(work, f.jobs[n]) for n in short) + SWEEP_NODES_MIN
    if len({u[1] for u, _n in victims}) <= limit:
        return victims
    smallest = min(
        (v.memory_mib for n in short for vs in f.jobs[n].ranked.values() for v in vs),
        default=0.0,
    )
    cand = np.flatnonzero((lower > 0) & (f.mem_cap + EPS >= smallest))
    cand = cand[np.lexsort((cand, lower[cand]))][:limit]
    reach = np.zeros(len(f.names), dtype=np.bool_)
    reach[cand] = True
    return [(u, n) for u, n in victims if reach[u[1]]]


def _put_back(work: Work, tr: _Trial, victims: list[tuple[Unit, int]]) -> None:
    """Put the victims back where they still fit as new work (the same test whether or not they
    were current), most valuable first."""
    f = work.fleet
    for u, n in sorted(victims, key=lambda x: _key(work, x[0]), reverse=True):
        info = f.jobs[u[0]]
        var = info.variants[u[2]]
        for _ in range(n):
            if work.count.get(u[0], 0) >= info.job.max_replicas:
                break
            if work.fits(info, u[1], var, new=True) is not None:
                break
            tr.add(info, u[1], var)


def _sweep_level(
    work: Work, idx: _Index, order: list[str], level: int, move_cost: float, b: _Budget
) -> bool:
    """One priority sweep at ``level``: take every replica of a job below ``level`` off the nodes
    (and their tanks and pools) that the short jobs at or above ``level`` may use, fill those
    short jobs, put the victims back where they still fit as new work, re-fill the victims'
    jobs; keep it when the objective (moves included) strictly improves."""
    f = work.fleet
    short = [n for n in order if f.jobs[n].job.priority >= level and is_short(work, f.jobs[n])]
    if not short or not b.spend(UNIT_COST * len(work.units) + len(f.names) * (len(short) + 4)):
        return False
    victims = _sweep_victims(work, idx, short, level)
    if not victims:
        return False
    tr = _Trial(work, move_cost)
    for u, n in victims:
        for _ in range(n):
            tr.take(u)
    # every short job first without overshooting its target (a big replica spent on a small
    # remainder takes room another job could use in full), then with the smallest replica that
    # covers its remainder, then with any
    for overshoot in OVERSHOOT_ROUNDS:
        for name in short:
            tr.fill(f.jobs[name], overshoot)
    _put_back(work, tr, victims)
    rank = {name: i for i, name in enumerate(order)}
    for vname in sorted({u[0] for u, _n in victims}, key=lambda x: (rank.get(x, 0), x)):
        tr.fill(f.jobs[vname])
    if tr.gain() > TOL:
        tr.commit()
        return True
    tr.undo()
    return False


def _in_the_way(work: Work) -> FloatArr:
    """Per node, the lowest priority of a replica on it or sharing its tank (racks) or pool
    (cars) (inf: none)."""
    f = work.fleet
    node = np.full(len(f.names), INF)
    placed = [(u[1], f.jobs[u[0]].job.priority) for u, n in work.units.items() if n > 0]
    if placed:
        ks, prs = zip(*placed, strict=True)
        np.minimum.at(node, np.asarray(ks, dtype=np.int64), np.asarray(prs, dtype=np.float64))
    tank = np.full(len(f.tank_free_new), INF)
    pool = np.full(len(f.pool_free_new), INF)
    rack = ~f.is_vehicle
    np.minimum.at(tank, f.tank[rack], node[rack])
    np.minimum.at(pool, f.pool[f.is_vehicle], node[f.is_vehicle])
    way: FloatArr = np.minimum(node, np.where(f.is_vehicle, pool[f.pool], tank[f.tank]))
    return way


def _blocked(work: Work, order: list[str]) -> list[str]:
    """The gate: the short jobs that a replica of strictly lower priority stands in the way of
    - on a node the job may use, or in the tank or pool of one - by priority (empty: nothing to
    preempt).

    In O(jobs) when no job short of its target outranks the lowest-priority job placed (the
    usual state: every job met, or only the lowest tier short); otherwise O(placed units +
    policy classes x nodes)."""
    f = work.fleet
    short = [n for n in order if is_short(work, f.jobs[n])]
    if not short:
        return []
    placed = [f.jobs[n].job.priority for n, c in work.count.items() if c > 0]
    lowest = float(min(placed, default=INF))
    short = [n for n in short if f.jobs[n].job.priority > lowest]
    if not short:
        return []
    way = _in_the_way(work)
    floor: dict[tuple[object, ...], float] = {}
    out: list[str] = []
    for n in short:
        info = f.jobs[n]
        key = info.policy_key
        if key not in floor:
            usable = work.ok_of(info)
            floor[key] = float(way[usable].min()) if usable.any() else INF
        if info.job.priority > floor[key]:
            out.append(n)
    return out


def _contended(work: Work, order: list[str]) -> list[int]:
    """Priorities of the :func:`_blocked` jobs, highest first."""
    f = work.fleet
    return sorted({f.jobs[n].job.priority for n in _blocked(work, order)}, reverse=True)


def _sweep(
    work: Work, order: list[str], move_cost: float, b: _Budget
) -> tuple[bool, _Index | None]:
    """Priority sweeps, highest level first; True once one is kept.  Also the index it built
    (None: none); when no sweep was kept every trial was undone, so it still holds."""
    levels = _contended(work, order)
    if not levels or not b.spend(UNIT_COST * len(work.units) + len(work.fleet.names)):
        return False, None
    idx = _index(work)
    kept = any(_sweep_level(work, idx, order, level, move_cost, b) for level in levels)
    return kept, idx


def preempt(work: Work, order: list[str], move_cost: float, budget: int | None = None) -> int:
    """Run the phase on a filled plan (mutates ``work``); returns the preemptions kept.
    ``order``: jobs by priority, highest first."""
    f = work.fleet
    n = max(1, len(f.names))
    if budget is None:
        # at least two victim-index builds and a sweep's fills, so a contended large fleet
        # still gets its preemption
        budget = max(budget_for(n) // BUDGET_SHARE, 3 * UNIT_COST * len(work.units) + 8 * n)
    b = _Budget(budget)
    if work.settled is not None and work.settled[0] == work.version and work.settled[1] is f:
        return 0  # nothing moved since a run that found nothing more to pay (budget left)
    if not _contended(work, order):
        work.settled = (work.version, f)
        return 0
    rank = {name: i for i, name in enumerate(order)}
    saved_prices = work.prices
    work.prices = None
    kept = 0
    # an index still valid (built on the units as they are now), reused instead of rebuilt
    valid: _Index | None = None
    try:
        while b.left > 0:
            swept, valid = _sweep(work, order, move_cost, b)
            if not swept:
                break
            kept += 1
            valid = None
        while b.left > 0:
            if not b.spend(UNIT_COST * len(work.units) + n):
                break
            blocked = _blocked(work, order)
            if not blocked:
                break
            idx = valid if valid is not None else _index(work)
            valid = None
            progress = False
            for name in blocked:
                info = f.jobs[name]
                while b.left > 0 and is_short(work, info):
                    if not _preempt_one(work, idx, info, move_cost, rank, b):
                        break
                    kept += 1
                    progress = True
                if b.left <= 0:
                    break
            if not progress:
                break
    finally:
        work.prices = saved_prices
    if b.left > 0:  # it ended because nothing more paid, not for want of budget
        work.settled = (work.version, f)
    return kept
