"""Bounded local improvement after the greedy: ejection chains that make room for short jobs.

Moves, each scored exactly on the running plan state and undone exactly when it does not pay:

* **Ejection chain** (:func:`_try_chain`): for a job short of its target, one more replica on a
  node it may use, after taking off up to :data:`MAX_VICTIMS` replicas that block it - on that
  node (memory, the car's energy headroom) and in its pool or tank (the shared daily energy
  budget, power/heat headroom) - and first moving up to :data:`MAX_RELOCATIONS` replicas to where
  they use less of that shared budget (a car that leaves sooner, another pool or tank).  Each
  victim's job is then re-inserted where it needs least of the shared budget (itself allowed
  one victim, :data:`REINSERT_DEPTH`), and the greedy fill tops up.  Kept only when the
  objective strictly improves.
* **Pool compaction** (:func:`_compact`): on a pool whose daily budget is spent, swap replicas
  between cars (the hungrier one to the car that leaves sooner) or move one to a shorter stay,
  while the pool's kW x hours strictly drops - neutral for the objective; a round's compaction
  is undone unless that round's chains then improve the objective.
* **Ruin and recreate** (:func:`_ruin`): when the chains are stuck, take all added replicas of
  one low-value job off and run the chains again; kept only on a strict improvement.

Stability: only replicas this plan *adds* are ever taken off or moved; current placements (the
snapshot's) never move here, so re-planning an unchanged world still moves nothing.

Determinism: the phase is budgeted in abstract work units (node-array passes and Python steps,
see :data:`LS_BUDGET`), never by wall clock, and every choice breaks ties by index, so a given
snapshot always gets the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tokenfleet.placement.greedy import fill_job
from tokenfleet.placement.model import Variant
from tokenfleet.placement.state import EPS, INF, BoolArr, FloatArr, IntArr, JobInfo
from tokenfleet.placement.work import Unit, Work, host_mask

LS_BUDGET = 6_000_000
"""Work units per plan on fleets up to :data:`LS_FULL_NODES` nodes (fewer above, see
:func:`budget_for`).  A trial costs :data:`TRIAL_COST` plus the node count for every greedy
fill or candidate pass it runs, a replica examined by a move :data:`STEP_COST` plus the nodes
scanned; rebuilding the victim index costs :data:`UNIT_COST` per placed unit.  Fleets of a few
hundred nodes run to a local optimum well inside this."""
LS_FULL_NODES = 2_000
"""Above this many nodes the budget shrinks with the square of the ratio (10,000 nodes get a
25th, a few dozen trials): the full plan there must stay well under a second, and the
greedy's relative loss is smallest on big fleets."""
UNIT_COST = 40
"""Work units per placed unit when the victim index is rebuilt (once per round)."""
TRIAL_COST = 400
"""Fixed work units per trial (the Python steps around the vectorised passes)."""
CANDIDATES = 4
"""Nodes tried per (job, variant) and round, best estimate first."""
MAX_VICTIMS = 3
"""Replicas taken off at most to make room for one replica (chain depth)."""
MAX_RELOCATIONS = 4
"""Replicas moved at most within / out of a pool or tank to make room for one replica."""
COMPACT_SLACK = 0.02
"""A pool is compacted when less than this fraction of its daily budget is left."""
COMPACT_SWEEPS = 3
"""Sweeps over a pool's replicas per compaction (each stops early when nothing moved)."""
STEP_COST = 1500
"""Fixed work units per replica examined by the compaction (a dozen small array passes)."""
REINSERT_DEPTH = 1
"""A victim's re-insertion may itself take one replica off, this many levels deep."""
RUIN_JOBS = 8
"""Jobs tried per ruin-and-recreate sweep (least value per replica first)."""
MAX_VARIANTS = 2
"""Variants tried per job and target kind (best first)."""
TOL = 1e-7
"""Smallest objective gain (currency/hour) that counts as an improvement."""


Op = tuple[int, JobInfo, int, Variant, int]
"""(+1 add / -1 remove, job, node index, variant, replicas): one journal entry."""


@dataclass
class _Victims:
    """Replicas the phase may take off, indexed for the candidate estimate."""

    by_node: dict[int, list[tuple[float, Unit]]] = field(default_factory=dict)
    """Per node: (loss, unit), cheapest first."""
    by_pool: dict[int, list[tuple[float, float, Unit]]] = field(default_factory=dict)
    """Per pool: (loss per kWh freed, kWh, unit), cheapest first."""
    by_tank: dict[int, list[tuple[float, float, Unit]]] = field(default_factory=dict)
    """Per tank: (loss per kW freed, kW, unit), cheapest first."""
    node_min_loss: FloatArr = field(default_factory=lambda: np.zeros(0))
    node_free_mem: FloatArr = field(default_factory=lambda: np.zeros(0))
    """Memory the removable replicas on each node hold, MiB."""
    node_free_kw: FloatArr = field(default_factory=lambda: np.zeros(0))
    pool_price: FloatArr = field(default_factory=lambda: np.zeros(0))
    """Cheapest loss per kWh freed in each pool (inf: nothing removable)."""
    tank_price: FloatArr = field(default_factory=lambda: np.zeros(0))


class _Budget:
    def __init__(self, units: int) -> None:
        self.left = units

    def spend(self, units: int) -> bool:
        """Reserve ``units`` before doing the work; False (and the budget is used up) when
        they are not left - the caller then skips the work."""
        if units > self.left:
            self.left = 0
            return False
        self.left -= units
        return True


def budget_for(n_nodes: int) -> int:
    """The phase's work budget for a fleet of ``n_nodes`` nodes (deterministic)."""
    return int(LS_BUDGET * min(1.0, LS_FULL_NODES / max(n_nodes, 1)) ** 2)


def removable(work: Work, u: Unit) -> int:
    """Replicas of ``u`` this plan added (current placements are never taken off here)."""
    return work.units.get(u, 0) - work.current.get(u, 0)


def loss_of(work: Work, info: JobInfo, k: int, var: Variant, n: int = 1) -> float:
    """Objective lost by taking ``n`` replicas of ``var`` off node ``k`` (value minus the
    running cost saved)."""
    job = info.job
    s = work.served.get(job.name, 0.0)
    t = job.target_tokens_per_second
    dv = info.weight * (min(s, t) - min(s - var.tokens_per_second * n, t))
    return dv - work._rate(info, k, var) * n


def _victims(work: Work) -> _Victims:
    f = work.fleet
    n = len(f.names)
    out = _Victims(
        node_min_loss=np.full(n, INF),
        node_free_mem=np.zeros(n),
        node_free_kw=np.zeros(n),
        pool_price=np.full(len(f.pool_free_new), INF),
        tank_price=np.full(len(f.tank_free_new), INF),
    )
    for u, cnt in work.units.items():
        r = cnt - work.current.get(u, 0)
        if r <= 0:
            continue
        info = f.jobs[u[0]]
        k = u[1]
        var = info.variants[u[2]]
        loss = loss_of(work, info, k, var)
        kw = var.watts / 1000.0
        out.by_node.setdefault(k, []).append((loss, u))
        out.node_min_loss[k] = min(out.node_min_loss[k], loss)
        out.node_free_mem[k] += var.memory_mib * r
        out.node_free_kw[k] += kw * r
        if f.is_vehicle[k]:
            kwh = kw * float(f.hours_today[k])
            if kwh > EPS:
                out.by_pool.setdefault(int(f.pool[k]), []).append((loss / kwh, kwh, u))
        elif kw > EPS:
            out.by_tank.setdefault(int(f.tank[k]), []).append((loss / kw, kw, u))
    for lst in out.by_node.values():
        lst.sort()
    for p, lst2 in out.by_pool.items():
        lst2.sort()
        out.pool_price[p] = max(lst2[0][0], 0.0)
    for t, lst3 in out.by_tank.items():
        lst3.sort()
        out.tank_price[t] = max(lst3[0][0], 0.0)
    return out


class _Trial:
    """Journal of one chain: every add/remove, and each touched job's value before its first
    change, so the chain can be scored and undone exactly."""

    def __init__(self, work: Work) -> None:
        self.work = work
        self.ops: list[Op] = []
        self.values0: dict[str, float] = {}
        self.cost0 = work.cost_total
        self.taken: list[Unit] = []

    def _touch(self, info: JobInfo) -> None:
        if info.job.name not in self.values0:
            self.values0[info.job.name] = _value(self.work, info)

    def add(self, info: JobInfo, k: int, var: Variant) -> None:
        self._touch(info)
        self.work.add(info, k, var)
        self.ops.append((1, info, k, var, 1))

    def take(self, u: Unit) -> bool:
        """Take one removable replica of ``u`` off."""
        if removable(self.work, u) <= 0:
            return False
        info = self.work.fleet.jobs[u[0]]
        self._touch(info)
        self.work.remove(info, u[1], info.variants[u[2]])
        self.ops.append((-1, info, u[1], info.variants[u[2]], 1))
        self.taken.append(u)
        return True

    def fill(self, info: JobInfo) -> None:
        """Greedy fill of one job (the fill only adds)."""
        self._touch(info)
        name = info.job.name
        before = dict(self.work.job_units.get(name, {}))
        fill_job(self.work, info)
        for u, n in self.work.job_units.get(name, {}).items():
            extra = n - before.get(u, 0)
            if extra > 0:
                self.ops.append((1, info, u[1], info.variants[u[2]], extra))

    def gain(self) -> float:
        w = self.work
        dv = sum(_value(w, w.fleet.jobs[n]) - v0 for n, v0 in self.values0.items())
        return dv - (w.cost_total - self.cost0)

    def undo(self) -> None:
        for sign, info, k, var, n in reversed(self.ops):
            if sign > 0:
                self.work.remove(info, k, var, n)
            else:
                self.work.add(info, k, var, n)
        self.ops.clear()


MIN_REPLICA_VALUE = 1e6
"""Value of each replica up to ``min_replicas`` in the local search's bookkeeping: no chain or
ruin that takes a job below its floor can pay (the floor holds whatever the target says)."""


def _value(work: Work, info: JobInfo) -> float:
    s = work.served.get(info.job.name, 0.0)
    floor = min(work.count.get(info.job.name, 0), info.job.min_replicas)
    return info.weight * min(s, info.job.target_tokens_per_second) + MIN_REPLICA_VALUE * floor


def is_short(work: Work, info: JobInfo) -> bool:
    job = info.job
    return (
        job.spread.max_replicas_per_node > 0
        and work.served.get(job.name, 0.0) + EPS < job.target_tokens_per_second
        and work.count.get(job.name, 0) < job.max_replicas
    )


def _candidates(
    work: Work,
    vic: _Victims,
    info: JobInfo,
    t: str,
    var: Variant,
    need: float,
    local: bool = True,
) -> list[int]:
    """Up to :data:`CANDIDATES` nodes for one more replica of ``var``, best estimated net gain
    first (the gain minus the cheapest victims' loss); with ``local`` False only nodes where it
    fits without taking anything off the node itself."""
    f = work.fleet
    mask = host_mask(work, info, t, var)
    if mask is None:
        return []
    lo, ok = mask
    kw = var.watts / 1000.0
    sel = np.flatnonzero(ok)
    if sel.size == 0:
        return []
    nodes = sel + lo
    mem_def = var.memory_mib - work.mem_free[nodes]
    local_need = mem_def > EPS
    short_mem = local_need & (vic.node_free_mem[nodes] + EPS < mem_def)
    if t == "Vehicle":
        e_def = kw - (f.energy_new[nodes] - work.e_used[nodes])
        local_need |= e_def > EPS
        short_mem |= (e_def > EPS) & (vic.node_free_kw[nodes] + EPS < e_def)
        p = f.pool[nodes]
        shared = kw * f.hours_today[nodes] - (f.pool_free_new - work.pool_used)[p]
        price = vic.pool_price[p]
    else:
        tk = f.tank[nodes]
        shared = kw - (f.tank_free_new - work.tank_used)[tk]
        price = vic.tank_price[tk]
    local_cost = np.where(local_need, vic.node_min_loss[nodes], 0.0)
    local_cost = np.where(short_mem, INF, local_cost)
    if not local:
        local_cost = np.where(local_need, INF, 0.0)
    with np.errstate(invalid="ignore"):
        shared_cost = np.where(shared > EPS, np.maximum(shared, 0.0) * price, 0.0)
    rate = kw * f.cost[nodes]
    if info.preferred == t:
        rate = rate - work.bonus
    est = info.weight * min(var.tokens_per_second, need) - rate - local_cost - shared_cost
    fin = np.flatnonzero(np.isfinite(est))
    if fin.size == 0:
        return []
    order = np.lexsort((nodes[fin], -est[fin]))[:CANDIDATES]
    return [int(x) for x in nodes[fin][order]]


def _shared_deficit(work: Work, k: int, var: Variant) -> float:
    """How much of node ``k``'s pool budget (kWh) or tank headroom (kW) one more replica of
    ``var`` lacks (<= 0: it fits)."""
    f = work.fleet
    kw = var.watts / 1000.0
    if f.is_vehicle[k]:
        p = int(f.pool[k])
        return float(kw * f.hours_today[k] - (f.pool_free_new[p] - work.pool_used[p]))
    t = int(f.tank[k])
    return float(kw - (f.tank_free_new[t] - work.tank_used[t]))


def _relocate_for(work: Work, vic: _Victims, tr: _Trial, k: int, var: Variant, b: _Budget) -> None:
    """Move up to :data:`MAX_RELOCATIONS` added replicas sharing ``k``'s pool (tank) to nodes
    where they use less of that budget - a shorter-staying car, another pool or tank - until
    one more replica of ``var`` fits on ``k``'s share of it."""
    f = work.fleet
    veh = bool(f.is_vehicle[k])
    if _shared_deficit(work, k, var) <= EPS:
        return
    src = int(f.pool[k]) if veh else int(f.tank[k])
    pool_list = vic.by_pool.get(src, []) if veh else vic.by_tank.get(src, [])
    # biggest users of the shared budget first
    cands = sorted(pool_list, key=lambda x: (-x[1], x[2]))[: 2 * MAX_RELOCATIONS]
    nr = f.n_racks
    lo, hi = (nr, len(f.names)) if veh else (0, nr)
    moved = 0
    for _ratio, use, u in cands:
        if moved >= MAX_RELOCATIONS or _shared_deficit(work, k, var) <= EPS:
            return
        if not b.spend(STEP_COST + hi - lo):
            return
        if removable(work, u) <= 0:
            continue
        a = f.jobs[u[0]]
        va = a.variants[u[2]]
        k1 = u[1]
        kw = va.watts / 1000.0
        ok = work.ok_of(a)[lo:hi] & (work.mem_free[lo:hi] + EPS >= va.memory_mib)
        if veh:
            ok &= work.e_used[lo:hi] + kw <= f.energy_new[lo:hi] + EPS
            pidx = f.pool[lo:hi]
            h = f.hours_today[lo:hi]
            room = (f.pool_free_new - work.pool_used)[pidx]
            same = pidx == src
            ok &= np.where(same, h < f.hours_today[k1] - EPS, room + EPS >= kw * h)
            saving = np.where(same, kw * (f.hours_today[k1] - h), use)
        else:
            tidx = f.tank[lo:hi]
            room = (f.tank_free_new - work.tank_used)[tidx]
            ok &= (tidx != src) & (room + EPS >= kw)
            saving = np.full(hi - lo, use)
        ok[k - lo] = False
        ok[k1 - lo] = False
        sel = np.flatnonzero(ok)
        if sel.size == 0:
            continue
        best = sel[np.lexsort((sel, -saving[sel]))]
        for j in best[:3].tolist():
            k2 = j + lo
            u2 = (u[0], k2, u[2])
            if work.current.get(u2, 0) > work.units.get(u2, 0):
                continue
            if work.fits(a, k2, va, new=True) is not None:
                continue
            tr.take(u)
            tr.taken.pop()  # a move, not a victim
            tr.add(a, k2, va)
            moved += 1
            break


def _compact(work: Work, b: _Budget) -> _Trial:
    """Pool compaction: in every pool whose daily energy budget is (nearly) spent, swap added
    replicas between cars - the hungrier replica to the car that leaves sooner - or move one to a
    shorter-staying car with room, while that strictly lowers the pool's kW x hours.  Neutral for
    the objective (one pool, one price); it frees budget the next chains can use."""
    f = work.fleet
    tr = _Trial(work)
    for p in range(len(f.pool_free_new) - 1):
        cap = float(f.pool_free_new[p])
        if not np.isfinite(cap) or cap - float(work.pool_used[p]) > COMPACT_SLACK * max(cap, EPS):
            continue
        for _sweep in range(COMPACT_SWEEPS):
            if not _compact_pool(work, tr, p, b):
                break
    return tr


def _pool_arrays(
    work: Work, units: list[Unit]
) -> tuple[IntArr, FloatArr, FloatArr, IntArr, BoolArr, IntArr]:
    """Per replica in ``units``: node, kW, MiB, policy class, and per policy class the nodes it
    may use (rows), and the job index."""
    f = work.fleet
    infos = [f.jobs[u[0]] for u in units]
    vars_ = [i.variants[u[2]] for i, u in zip(infos, units, strict=True)]
    node = np.array([u[1] for u in units], dtype=np.int64)
    kw = np.array([v.watts / 1000.0 for v in vars_])
    mem = np.array([float(v.memory_mib) for v in vars_])
    keys: dict[tuple[object, ...], int] = {}
    pol = np.array([keys.setdefault(i.policy_key, len(keys)) for i in infos], dtype=np.int64)
    key_info: dict[int, JobInfo] = {}
    for ji in infos:
        key_info.setdefault(keys[ji.policy_key], ji)
    polmat = np.stack([work.ok_of(key_info[x]) for x in range(len(keys))])
    jid = np.array([i.index for i in infos], dtype=np.int64)
    return node, kw, mem, pol, polmat, jid


def _compact_pool(work: Work, tr: _Trial, p: int, b: _Budget) -> bool:
    """One sweep over the pool's added replicas, biggest kWh first; True if anything moved."""
    f = work.fleet
    units: list[Unit] = []
    if not b.spend(len(work.units)):
        return False
    for u in work.units:
        k = u[1]
        if f.is_vehicle[k] and int(f.pool[k]) == p and removable(work, u) > 0:
            units.extend([u] * removable(work, u))
    if len(units) < 1:
        return False
    node, kw, mem, pol, polmat, jid = _pool_arrays(work, units)
    nr = f.n_racks
    cars = np.flatnonzero(f.pool[nr:] == p) + nr
    order = sorted(range(len(units)), key=lambda i: (-kw[i] * f.hours_today[node[i]], units[i]))
    moved = False
    for i in order:
        if not b.spend(STEP_COST + len(units) + len(cars)):
            return moved
        ki = int(node[i])
        hi = float(f.hours_today[ki])
        ui = (units[i][0], ki, units[i][2])
        if removable(work, ui) <= 0:
            continue
        h = f.hours_today[node]
        # swaps: i -> node j, j -> node i
        sw = (
            (h < hi - EPS)
            & (kw < kw[i] - EPS)
            & (jid != jid[i])
            & polmat[pol[i]][node]
            & polmat[pol, ki]
            & (work.mem_free[node] + mem + EPS >= mem[i])
            & (work.mem_free[ki] + mem[i] + EPS >= mem)
            & (work.e_used[node] - kw + kw[i] <= f.energy_new[node] + EPS)
        )
        save_sw = np.where(sw, (kw[i] - kw) * (hi - h), -INF)
        # relocation of i to a shorter-staying car with room
        hc = f.hours_today[cars]
        mv = (
            (hc < hi - EPS)
            & polmat[pol[i]][cars]
            & (work.mem_free[cars] + EPS >= mem[i])
            & (work.e_used[cars] + kw[i] <= f.energy_new[cars] + EPS)
        )
        save_mv = np.where(mv, kw[i] * (hi - hc), -INF)
        tries: list[tuple[float, int, int]] = []  # (-saving, kind, index)
        for j in np.flatnonzero(sw)[np.argsort(-save_sw[sw], kind="stable")][:3].tolist():
            tries.append((-float(save_sw[j]), 0, j))
        for c in np.flatnonzero(mv)[np.argsort(-save_mv[mv], kind="stable")][:3].tolist():
            tries.append((-float(save_mv[c]), 1, c))
        tries.sort()
        for _neg, kind, j in tries:
            mark = len(tr.ops)
            if kind == 1:
                k2 = int(cars[j])
                if _move(work, tr, ui, k2):
                    node[i] = k2
                    moved = True
                    break
            else:
                kj = int(node[j])
                uj = (units[j][0], kj, units[j][2])
                if removable(work, uj) <= 0:
                    continue
                if _swap(work, tr, ui, uj):
                    node[i], node[j] = kj, ki
                    moved = True
                    break
            del tr.ops[mark:]  # nothing applied
    return moved


def _move(work: Work, tr: _Trial, u: Unit, k2: int) -> bool:
    """Move one added replica of ``u`` to node ``k2`` if it fits there as new work."""
    f = work.fleet
    info = f.jobs[u[0]]
    var = info.variants[u[2]]
    u2 = (u[0], k2, u[2])
    if work.current.get(u2, 0) > work.units.get(u2, 0):
        return False
    mark = len(tr.ops)
    tr.take(u)
    tr.taken.pop()
    if work.fits(info, k2, var, new=True) is not None:
        _undo_to(tr, mark)
        return False
    tr.add(info, k2, var)
    return True


def _swap(work: Work, tr: _Trial, ui: Unit, uj: Unit) -> bool:
    """Exchange the nodes of one added replica each of ``ui`` and ``uj``."""
    f = work.fleet
    ai, aj = f.jobs[ui[0]], f.jobs[uj[0]]
    vi, vj = ai.variants[ui[2]], aj.variants[uj[2]]
    ki, kj = ui[1], uj[1]
    for u2 in ((ui[0], kj, ui[2]), (uj[0], ki, uj[2])):
        if work.current.get(u2, 0) > work.units.get(u2, 0):
            return False
    mark = len(tr.ops)
    tr.take(ui)
    tr.take(uj)
    del tr.taken[-2:]
    if work.fits(ai, kj, vi, new=True) is not None:
        _undo_to(tr, mark)
        return False
    tr.add(ai, kj, vi)
    if work.fits(aj, ki, vj, new=True) is not None:
        _undo_to(tr, mark)
        return False
    tr.add(aj, ki, vj)
    return True


def _undo_to(tr: _Trial, mark: int) -> None:
    tail = tr.ops[mark:]
    del tr.ops[mark:]
    for sign, info, k, var, n in reversed(tail):
        if sign > 0:
            tr.work.remove(info, k, var, n)
        else:
            tr.work.add(info, k, var, n)


def _take_shared(
    work: Work, vic: _Victims, tr: _Trial, name: str, k: int, var: Variant, limit: int
) -> None:
    """Take the cheapest removable replicas (not ``name``'s, not on ``k``) out of ``k``'s pool
    or tank until one more replica of ``var`` fits its share or ``tr`` holds ``limit`` victims."""
    f = work.fleet
    kw = var.watts / 1000.0
    if f.is_vehicle[k]:
        p = int(f.pool[k])
        for _ratio, _kwh, u in vic.by_pool.get(p, []):
            room = f.pool_free_new[p] - work.pool_used[p]
            if room + EPS >= kw * f.hours_today[k] or len(tr.taken) >= limit:
                break
            if u[0] != name and u[1] != k:
                tr.take(u)
    else:
        t = int(f.tank[k])
        for _ratio, _kw, u in vic.by_tank.get(t, []):
            room = f.tank_free_new[t] - work.tank_used[t]
            if room + EPS >= kw or len(tr.taken) >= limit:
                break
            if u[0] != name and u[1] != k:
                tr.take(u)


def _place(
    work: Work,
    vic: _Victims,
    tr: _Trial,
    info: JobInfo,
    k: int,
    var: Variant,
    max_victims: int,
    b: _Budget,
) -> bool:
    """Within ``tr``: make room for one replica of ``var`` on node ``k`` (taking off at most
    ``max_victims`` replicas, moving others out of the way of the shared budget) and place it.
    On failure everything this call did is undone and False is returned."""
    f = work.fleet
    name = info.job.name
    u_new = (name, k, var.name)
    if work.current.get(u_new, 0) > work.units.get(u_new, 0):
        return False  # a current replica there was just evicted: do not re-add it
    kw = var.watts / 1000.0
    mark = len(tr.ops)
    n_taken = len(tr.taken)
    limit = n_taken + max_victims

    def local_ok() -> bool:
        return bool(
            work.mem_free[k] + EPS >= var.memory_mib
            and work.e_used[k] + kw <= f.energy_new[k] + EPS
        )

    # node-local room: memory, the car's energy headroom
    for _loss, u in vic.by_node.get(k, []):
        if local_ok() or len(tr.taken) >= limit:
            break
        if u[0] == name:
            continue
        while len(tr.taken) < limit and not local_ok() and tr.take(u):
            pass
    if not local_ok():
        _undo_to(tr, mark)
        del tr.taken[n_taken:]
        return False
    # shared room: first move replicas within / out of the pool or tank to where they use less
    # of it (neutral for the objective), then take the cheapest ones off
    _relocate_for(work, vic, tr, k, var, b)
    _take_shared(work, vic, tr, name, k, var, limit)
    if work.fits(info, k, var, new=True) is not None:
        _undo_to(tr, mark)
        del tr.taken[n_taken:]
        return False
    tr.add(info, k, var)
    return True


def _reinsert(work: Work, vic: _Victims, tr: _Trial, info: JobInfo, b: _Budget, depth: int) -> bool:
    """Within ``tr``: one more replica of a victim's job where it needs the least of a shared
    budget, moving other replicas out of the way; with ``depth`` > 0 it may take one more
    replica off (whose job is then re-inserted one level deeper)."""
    job = info.job
    f = work.fleet
    n = len(f.names)
    for t in ("Rack", "Vehicle"):
        for var in info.ranked.get(t, [])[:MAX_VARIANTS]:
            need = job.target_tokens_per_second - work.served.get(job.name, 0.0)
            if need <= EPS or not b.spend(n):
                return False
            for k in _candidates(work, vic, info, t, var, need, local=depth > 0):
                if not b.spend(TRIAL_COST):
                    return False
                first = len(tr.taken)
                if _place(work, vic, tr, info, k, var, 1 if depth > 0 else 0, b):
                    for u in tr.taken[first:]:
                        vinfo = f.jobs[u[0]]
                        if is_short(work, vinfo):
                            _reinsert(work, vic, tr, vinfo, b, depth - 1)
                    return True
    return False


def _try_chain(
    work: Work,
    vic: _Victims,
    info: JobInfo,
    k: int,
    var: Variant,
    rank: dict[str, int],
    b: _Budget,
) -> _Trial | None:
    """Make room for one replica of ``var`` on node ``k``, place it, re-place the victims.
    Returns the applied trial, or ``None`` (nothing changed) when no room could be made."""
    f = work.fleet
    tr = _Trial(work)
    if not _place(work, vic, tr, info, k, var, MAX_VICTIMS, b):
        return None
    victims = sorted(tr.taken, key=lambda x: (rank.get(x[0], 0), x))
    for u in victims:
        vinfo = f.jobs[u[0]]
        if is_short(work, vinfo):
            _reinsert(work, vic, tr, vinfo, b, REINSERT_DEPTH)
    for vname in sorted({u[0] for u in victims}, key=lambda x: (rank.get(x, 0), x)):
        tr.fill(f.jobs[vname])
    tr.fill(info)
    return tr


def improve(work: Work, order: list[str], budget: int | None = None) -> int:
    """Run the phase on a filled plan (mutates ``work``); returns the number of chains kept.
    ``budget``: work units (default :func:`budget_for` the fleet's size)."""
    f = work.fleet
    n = max(1, len(f.names))
    b = _Budget(budget_for(n) if budget is None else budget)
    rank = {name: i for i, name in enumerate(order)}
    saved_prices = work.prices
    work.prices = None
    kept = 0
    touched_units: set[Unit] = set()
    while b.left > 0:
        # the victim index is rebuilt once per round; within a round it goes stale (units
        # moved or gone are skipped, new ones wait for the next round) - it only orders the
        # tries, every chain is scored exactly
        if not b.spend(UNIT_COST * len(work.units) + n):
            break
        share = b.left // 3
        cb = _Budget(share)
        comp = _compact(work, cb)
        b.spend(share - cb.left)
        vic = _victims(work)
        progress = False
        for name in order:
            info = f.jobs[name]
            while b.left > 0 and is_short(work, info):
                if _improve_job(work, vic, info, rank, b, n, touched_units) is None:
                    break
                kept += 1
                progress = True
            if b.left <= 0:
                break
        if not progress:
            comp.undo()  # the compaction bought nothing: leave the plan as it was
            if _ruin(work, order, b, touched_units):
                kept += 1
                continue
            break
        for _s, ji, kk, vv, _c in comp.ops:
            touched_units.add((ji.job.name, kk, vv.name))
    work.prices = saved_prices
    _reconcile(work, touched_units)
    return kept


def _improve_job(
    work: Work,
    vic: _Victims,
    info: JobInfo,
    rank: dict[str, int],
    b: _Budget,
    n: int,
    touched_units: set[Unit],
) -> _Trial | None:
    """Try chains for one more replica of ``info``; keep (and return) the first that
    improves."""
    job = info.job
    for t in ("Rack", "Vehicle"):
        for var in info.ranked.get(t, [])[:MAX_VARIANTS]:
            need = job.target_tokens_per_second - work.served.get(job.name, 0.0)
            if not b.spend(n):
                return None
            for k in _candidates(work, vic, info, t, var, need):
                if not b.spend(TRIAL_COST + n * (2 + MAX_VICTIMS)):
                    return None
                tr = _try_chain(work, vic, info, k, var, rank, b)
                if tr is None:
                    continue
                if tr.gain() > TOL:
                    for _s, ji, kk, vv, _c in tr.ops:
                        touched_units.add((ji.job.name, kk, vv.name))
                    return tr
                tr.undo()
    return None


def _best_tps(info: JobInfo) -> float:
    return max((vs[0].tokens_per_second for vs in info.ranked.values() if vs), default=0.0)


def _objective(work: Work) -> float:
    f = work.fleet
    return sum(_value(work, f.jobs[nm]) for nm in work.served) - work.cost_total


def _recreate(
    work: Work, order: list[str], ruined: str, rank: dict[str, int], b: _Budget, n: int
) -> list[_Trial]:
    """Chains for the short jobs in priority order, the ``ruined`` job last; the trials kept."""
    f = work.fleet
    vic = _victims(work)
    subs: list[_Trial] = []
    for nm in [*(o for o in order if o != ruined), ruined]:
        info = f.jobs[nm]
        while b.left > 0 and is_short(work, info):
            sub = _improve_job(work, vic, info, rank, b, n, set())
            if sub is None:
                break
            subs.append(sub)
    return subs


def _touch_all(trials: list[_Trial], touched_units: set[Unit]) -> None:
    for t in trials:
        for _s, ji, kk, vv, _c in t.ops:
            touched_units.add((ji.job.name, kk, vv.name))


def _ruin(work: Work, order: list[str], b: _Budget, touched_units: set[Unit]) -> int:
    """Ruin and recreate: for each job holding added replicas, least value per replica first,
    take all of them off and run the chains again for the short jobs in priority order (the
    ruined job last); keep it only if the objective strictly improves."""
    f = work.fleet
    n = max(1, len(f.names))
    rank = {name: i for i, name in enumerate(order)}
    holders: dict[str, int] = {}
    for u in work.units:
        r = removable(work, u)
        if r > 0:
            holders[u[0]] = holders.get(u[0], 0) + r
    if not holders:
        return 0

    def density(name: str) -> tuple[float, str]:
        info = f.jobs[name]
        return (info.weight * _best_tps(info), name)

    kept = 0
    for x in sorted(holders, key=density)[:RUIN_JOBS]:
        if not b.spend(UNIT_COST * len(work.units) + n):
            break
        obj0 = _objective(work)
        tr = _Trial(work)
        for u in [u for u in work.units if u[0] == x]:
            while tr.take(u):
                pass
        subs = _recreate(work, order, x, rank, b, n)
        if _objective(work) > obj0 + TOL:
            kept += 1
            _touch_all([tr, *subs], touched_units)
        else:
            for t in reversed(subs):
                t.undo()
            tr.undo()
    return kept


def _reconcile(work: Work, units: set[Unit]) -> None:
    """A greedy re-fill may have put back a current replica that keep/trim had evicted: shrink
    those eviction records so the plan's evictions match its assignments."""
    f = work.fleet
    for u in sorted(units):
        cur = work.current.get(u, 0)
        if cur <= 0:
            continue
        node = f.names[u[1]]
        have = [
            i
            for i, e in enumerate(work.evictions)
            if e.job == u[0] and e.node == node and e.variant == u[2]
        ]
        extra = sum(work.evictions[i].replicas for i in have) - max(cur - work.units.get(u, 0), 0)
        for i in reversed(have):
            if extra <= 0:
                break
            e = work.evictions[i]
            cut = min(extra, e.replicas)
            extra -= cut
            if cut == e.replicas:
                work.evictions.pop(i)
            else:
                work.evictions[i] = replace(e, replicas=e.replicas - cut)
