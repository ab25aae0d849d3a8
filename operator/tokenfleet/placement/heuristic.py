"""Fast greedy placement: keep what still fits, fill jobs by priority, trim what is redundant.

Cost: one pass over nodes to compile (:func:`~tokenfleet.placement.state.build_fleet`), then per
job a few vectorised passes over the node arrays (numpy) and a short Python walk over the best
candidates.  The incremental path (:func:`replan_node`) re-checks one node and re-places only the
replicas that had to leave it.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from tokenfleet.placement.model import (
    Eviction,
    JobShortfall,
    Placement,
    Plan,
    RackNode,
    Reason,
    Snapshot,
    UnusedNode,
    Variant,
    VehicleNode,
)
from tokenfleet.placement.state import (
    CODE,
    EPS,
    INF,
    BoolArr,
    Fleet,
    FloatArr,
    IntArr,
    JobInfo,
    _fill_state,
    build_fleet,
    compat_codes,
    compat_scalar,
    energy_deadline,
    node_popularity,
    pool_references,
    rack_state,
    reason_of,
    seconds_to_next_utc_midnight,
    time_arrays,
    vehicle_state,
)

POP_WEIGHT = 0.5
RANK_WEIGHT = 1.0
"""Score weight (currency per kW per hour squared) of the kW x stay rearrangement term on
budgeted pools (see ``Fleet.pool_kw_ref``)."""
"""Score penalty for a node every job could use (see ``Fleet.popularity``)."""
FIT_WEIGHT = 0.05
WARM_BONUS = 1.0
"""[model delivery] Score bonus of a node whose cache holds the variant (no download)."""
"""Score penalty per node-memory fraction a replica leaves unused (best fit packs tighter)."""

Unit = tuple[str, int, str]
"""(job name, node index, variant name): one replica."""


@dataclass
class Prices:
    """Shadow prices that steer the greedy away from scarce resources (currency per unit):
    per tank kW, per pool kWh, per MiB of each node's memory."""

    tank: FloatArr
    pool: FloatArr
    mem: FloatArr
    """Per node, per MiB of memory."""


@dataclass
class Work:
    """Mutable capacity state during one solve."""

    fleet: Fleet
    mem_free: FloatArr
    e_used: FloatArr
    tank_used: FloatArr
    pool_used: FloatArr
    units: dict[Unit, int] = field(default_factory=dict)
    """Units in the plan: count per (job, node, variant)."""
    current: dict[Unit, int] = field(default_factory=dict)
    """Units in the snapshot's current placements (after mapping names)."""
    served: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    job_units: dict[str, dict[Unit, int]] = field(default_factory=dict)
    job_node: dict[tuple[str, int], int] = field(default_factory=dict)
    job_tank: dict[tuple[str, int], int] = field(default_factory=dict)
    job_pool: dict[tuple[str, int], int] = field(default_factory=dict)
    node_units: dict[int, dict[Unit, int]] = field(default_factory=dict)
    evictions: list[Eviction] = field(default_factory=list)
    compat: dict[tuple[object, ...], IntArr] = field(default_factory=dict)
    ok: dict[tuple[object, ...], BoolArr] = field(default_factory=dict)
    cost_total: float = 0.0
    """Running Σ replica kW * cost - preference bonus (currency/hour)."""
    bonus: float = 1.0
    """Preference bonus per replica (``ObjectiveWeights.preference_bonus``)."""
    prices: Prices | None = None
    """Shadow prices used while filling (None = none)."""
    assign_list: list[Placement] = field(default_factory=list)
    assign_pos: dict[tuple[str, str, str], int] = field(default_factory=dict)
    unused_list: list[UnusedNode] = field(default_factory=list)
    unused_pos: dict[str, int] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    value_total: float = 0.0
    rank: dict[str, int] = field(default_factory=dict)
    """Incremental bookkeeping: the plan's assignments / unused nodes and where each sits."""
    consumed: bool = False
    """Set once an incremental re-plan has taken this state over (it mutates in place)."""
    rank_term: bool = False
    """Apply the kW x stay rearrangement term (:data:`RANK_WEIGHT`) while filling."""
    deadlines: list[tuple[float, int]] = field(default_factory=list)
    """Heap of (time, node): when a node's eligibility changes by time alone."""
    steps: int = 0
    """Incremental steps taken since the full plan."""
    windowed: bool = False
    """``energy_new`` already capped at its value at the chain's end."""

    # -- capacity checks -------------------------------------------------------------------
    def fits(self, info: JobInfo, k: int, var: Variant, new: bool) -> Reason | None:
        """Why one more unit of ``var`` for ``info`` on node ``k`` does not fit (None = fits).
        ``new``: use the hysteresis band (new placement) instead of the hard limit."""
        f = self.fleet
        job = info.job
        kw = var.watts / 1000.0
        if self.mem_free[k] + EPS < var.memory_mib:
            return Reason.INSUFFICIENT_MEMORY
        e_cap = f.energy_new[k] if new else f.energy_hard[k]
        if self.e_used[k] + kw > e_cap + EPS:
            return Reason.INSUFFICIENT_ENERGY_FOR_TARGET
        t = int(f.tank[k])
        t_cap = f.tank_free_new[t] if new else f.tank_free_hard[t]
        if self.tank_used[t] + kw > t_cap + EPS:
            return f.tank_new_reason[t] if new else f.tank_hard_reason[t]
        p = int(f.pool[k])
        p_cap = f.pool_free_new[p] if new else f.pool_free_hard[p]
        if self.pool_used[p] + kw * f.hours_today[k] > p_cap + EPS:
            return Reason.POOL_ENERGY_BUDGET
        sp = job.spread
        if self.job_node.get((job.name, k), 0) >= sp.max_replicas_per_node:
            return Reason.SPREAD_LIMIT
        if (
            sp.max_replicas_per_tank is not None
            and not f.is_vehicle[k]
            and self.job_tank.get((job.name, t), 0) >= sp.max_replicas_per_tank
        ):
            return Reason.SPREAD_LIMIT
        if (
            sp.max_replicas_per_pool is not None
            and f.is_vehicle[k]
            and self.job_pool.get((job.name, p), 0) >= sp.max_replicas_per_pool
        ):
            return Reason.SPREAD_LIMIT
        return None

    def _rate(self, info: JobInfo, k: int, var: Variant) -> float:
        f = self.fleet
        rate = var.watts / 1000.0 * float(f.cost[k])
        if info.preferred is not None and info.preferred == _target(f, k):
            rate -= self.bonus
        return rate

    def add(self, info: JobInfo, k: int, var: Variant, n: int = 1) -> None:
        f = self.fleet
        name = info.job.name
        kw = var.watts / 1000.0 * n
        self.mem_free[k] -= var.memory_mib * n
        self.e_used[k] += kw
        t, p = int(f.tank[k]), int(f.pool[k])
        self.tank_used[t] += kw
        self.pool_used[p] += kw * f.hours_today[k]
        u = (name, k, var.name)
        self.units[u] = self.units.get(u, 0) + n
        ju = self.job_units.setdefault(name, {})
        ju[u] = ju.get(u, 0) + n
        self.node_units.setdefault(k, {})[u] = self.node_units.get(k, {}).get(u, 0) + n
        self.served[name] = self.served.get(name, 0.0) + var.tokens_per_second * n
        self.cost_total += self._rate(info, k, var) * n
        self.count[name] = self.count.get(name, 0) + n
        self.job_node[(name, k)] = self.job_node.get((name, k), 0) + n
        if not f.is_vehicle[k]:
            self.job_tank[(name, t)] = self.job_tank.get((name, t), 0) + n
        else:
            self.job_pool[(name, p)] = self.job_pool.get((name, p), 0) + n

    def remove(self, info: JobInfo, k: int, var: Variant, n: int = 1) -> None:
        f = self.fleet
        name = info.job.name
        kw = var.watts / 1000.0 * n
        self.mem_free[k] += var.memory_mib * n
        self.e_used[k] -= kw
        t, p = int(f.tank[k]), int(f.pool[k])
        self.tank_used[t] -= kw
        self.pool_used[p] -= kw * f.hours_today[k]
        u = (name, k, var.name)
        self.units[u] -= n
        if self.units[u] <= 0:
            del self.units[u]
        ju = self.job_units[name]
        ju[u] -= n
        if ju[u] <= 0:
            del ju[u]
        nu = self.node_units[k]
        nu[u] -= n
        if nu[u] <= 0:
            del nu[u]
        self.served[name] -= var.tokens_per_second * n
        self.cost_total -= self._rate(info, k, var) * n
        self.count[name] -= n
        self.job_node[(name, k)] -= n
        if not f.is_vehicle[k]:
            self.job_tank[(name, t)] -= n
        else:
            self.job_pool[(name, p)] -= n

    def compat_of(self, info: JobInfo) -> IntArr:
        """Per node, the job-policy objection code (cached per policy class)."""
        key = info.policy_key
        c = self.compat.get(key)
        if c is None:
            c = compat_codes(self.fleet, info)
            self.compat[key] = c
        return c

    def ok_of(self, info: JobInfo) -> BoolArr:
        """Nodes the job may take new work on (policy and node eligibility), cached."""
        key = info.policy_key
        ok = self.ok.get(key)
        if ok is None:
            ok = (self.compat_of(info) == 0) & (self.fleet.new_code == 0)
            self.ok[key] = ok
        return ok


def new_work(fleet: Fleet) -> Work:
    return Work(
        fleet,
        fleet.mem_cap.copy(),
        np.zeros(len(fleet.names)),
        np.zeros(len(fleet.tank_free_hard)),
        np.zeros(len(fleet.pool_free_hard)),
    )


def _target(fleet: Fleet, k: int) -> str:
    return "Vehicle" if fleet.is_vehicle[k] else "Rack"


# -- phase 1: keep ------------------------------------------------------------------------------


def keep_phase(snapshot: Snapshot, work: Work, order: list[str]) -> None:
    """Keep every current placement that still meets the hard limits, by job priority."""
    f = work.fleet
    rank = {name: i for i, name in enumerate(order)}
    density = _binding_density(snapshot, work)
    ps = sorted(
        snapshot.placements,
        key=lambda p: (
            (p.job, p.node, p.variant) in density,
            -density.get((p.job, p.node, p.variant), 0.0),
            rank.get(p.job, -1),
            p.job,
            p.node,
            p.variant,
        ),
    )
    for p in ps:
        info = f.jobs.get(p.job)
        k = f.index.get(p.node)
        if k is not None:
            u = (p.job, k, p.variant)
            work.current[u] = work.current.get(u, 0) + p.replicas
        reason: Reason | None = None
        var: Variant | None = None
        if info is None:
            reason = Reason.JOB_REMOVED
        elif k is None:
            reason = Reason.NODE_REMOVED
        else:
            var = info.variants.get(p.variant)
            if var is None:
                reason = Reason.VARIANT_REMOVED
            elif _target(f, k) not in var.targets:
                reason = Reason.TARGET_NOT_ALLOWED
            elif f.hard_code[k]:
                reason = reason_of(int(f.hard_code[k]))
            else:
                reason = compat_scalar(f, info, k)
        if reason is not None or info is None or k is None or var is None:
            work.evictions.append(
                Eviction(p.job, p.node, p.variant, p.replicas, reason or Reason.NODE_REMOVED)
            )
            continue
        lost: Counter[Reason] = Counter()
        for _ in range(p.replicas):
            why: Reason | None
            if work.count.get(p.job, 0) >= info.job.max_replicas:
                why = Reason.SCALED_DOWN
            else:
                why = work.fits(info, k, var, new=False)
            if why is None:
                work.add(info, k, var)
            else:
                lost[why] += 1
        for why, n in sorted(lost.items()):
            work.evictions.append(Eviction(p.job, p.node, p.variant, n, why))


def _binding_density(snapshot: Snapshot, work: Work) -> dict[tuple[str, str, str], float]:
    """For current placements in a tank (pool) whose hard power (daily energy) limit no longer
    holds for all of them: value per kW (kWh today).  The keep phase keeps those densest first
    (the rest by priority), so a limit that starts to bind keeps the work that earns most from
    it instead of whatever comes first."""
    f = work.fleet
    load_t = np.zeros(len(f.tank_free_hard))
    load_p = np.zeros(len(f.pool_free_hard))
    found: list[tuple[tuple[str, str, str], int, float, float]] = []
    for p in snapshot.placements:
        info = f.jobs.get(p.job)
        k = f.index.get(p.node)
        var = info.variants.get(p.variant) if info is not None else None
        if info is None or k is None or var is None:
            continue
        kw = var.watts / 1000.0 * p.replicas
        use = kw * float(f.hours_today[k]) if f.is_vehicle[k] else kw
        if f.is_vehicle[k]:
            load_p[f.pool[k]] += use
        else:
            load_t[f.tank[k]] += use
        value = info.weight * var.tokens_per_second * p.replicas
        found.append(((p.job, p.node, p.variant), k, value, use))
    over_t = load_t > f.tank_free_hard + EPS
    over_p = load_p > f.pool_free_hard + EPS
    if not over_t.any() and not over_p.any():
        return {}
    out: dict[tuple[str, str, str], float] = {}
    for key, k, value, use in found:
        binding = over_p[f.pool[k]] if f.is_vehicle[k] else over_t[f.tank[k]]
        if binding:
            out[key] = value / max(use, EPS)
    return out


# -- phase 2: fill ------------------------------------------------------------------------------


def _pass_candidates(
    work: Work,
    info: JobInfo,
    need: float,
    limit: int,
    only: str | None = None,
    keep_all: bool = False,
) -> tuple[IntArr, list[Variant], IntArr, int]:
    """Vectorised scoring of the nodes for one more replica of ``info``.

    Returns up to ``limit`` candidate node indices (best first), the variant list and per
    candidate the index into it, and how many nodes were feasible in all. ``keep_all``: also
    nodes where one more replica scores <= 0 (to reach ``min_replicas`` whatever it earns)."""
    f = work.fleet
    ok = work.ok_of(info)
    nr = f.n_racks
    idx_parts: list[IntArr] = []
    score_parts: list[FloatArr] = []
    choice_parts: list[IntArr] = []
    variants: list[Variant] = []
    memmax = f.mem_max
    for t, lo, hi in (("Rack", 0, nr), ("Vehicle", nr, len(f.names))):
        ranked = info.ranked.get(t)
        if not ranked or hi <= lo or (only is not None and t != only):
            continue
        remaining = ok[lo:hi]
        if not remaining.any():
            continue
        memf = work.mem_free[lo:hi]
        if t == "Rack":
            room = (f.tank_free_new - work.tank_used)[f.tank[lo:hi]]
        else:
            e_room = f.energy_new[lo:hi] - work.e_used[lo:hi]
            p_room = (f.pool_free_new - work.pool_used)[f.pool[lo:hi]]
            hrs = f.hours_today[lo:hi]
        pref = work.bonus if info.preferred == t else 0.0
        for var in ranked:
            kw = var.watts / 1000.0
            fit = remaining & (memf + EPS >= var.memory_mib)
            if t == "Rack":
                fit &= room + EPS >= kw
            else:
                fit &= (e_room + EPS >= kw) & (p_room + EPS >= kw * hrs)
            sel = np.flatnonzero(fit)
            if sel.size == 0:
                continue
            remaining = remaining & ~fit
            vi = len(variants)
            variants.append(var)
            nodes = sel + lo
            sc = (
                info.weight * min(var.tokens_per_second, need)
                - kw * f.cost[nodes]
                + pref
                - FIT_WEIGHT * (memf[sel] - var.memory_mib) / memmax
            )
            if t == "Vehicle":
                # pool energy is spent by the hour: prefer cars whose stay costs the pool least
                sc = sc - f.pool_price[f.pool[nodes]] * kw * hrs[sel]
                if work.rank_term and len(f.pool_kw_ref):
                    # rearrangement: on a budgeted pool, hungrier replicas take the cars that
                    # leave soonest and frugal ones the long stays (sum of kW x h is smallest)
                    pn = f.pool[nodes]
                    sc = sc - RANK_WEIGHT * (f.pool_price[pn] > 0) * (kw - f.pool_kw_ref[pn]) * (
                        hrs[sel] - f.pool_h_ref[pn]
                    )
            if info.job.warm:  # [model delivery] a node that holds the model: load, not fetch
                held = [(f.names[n], var.name) in info.job.warm for n in nodes]
                sc = sc + WARM_BONUS * np.asarray(held, dtype=float)
            if len(f.popularity):
                # leave nodes that many (restricted) jobs can use to those jobs
                sc = sc - POP_WEIGHT * f.popularity[nodes]
            pr = work.prices
            if pr is not None:
                if t == "Rack":
                    sc = sc - pr.tank[f.tank[nodes]] * kw - pr.mem[nodes] * var.memory_mib
                else:
                    sc = sc - pr.pool[f.pool[nodes]] * kw * hrs[sel]
                    sc = sc - pr.mem[nodes] * var.memory_mib
            idx_parts.append(nodes)
            score_parts.append(sc)
            choice_parts.append(np.full(sel.size, vi, dtype=np.int64))
            if not remaining.any():
                break
    if not idx_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, variants, empty, 0
    idx = np.concatenate(idx_parts)
    score = np.concatenate(score_parts)
    choice = np.concatenate(choice_parts)
    pos = np.arange(score.size) if keep_all else np.flatnonzero(score > 0)
    total = int(pos.size)
    if total > limit:
        part = np.argpartition(-score[pos], limit - 1)[:limit]
        pos = pos[part]
    order = np.lexsort((idx[pos], -score[pos]))
    pos = pos[order]
    return idx[pos], variants, choice[pos], total


def fill_job(work: Work, info: JobInfo, only: str | None = None) -> None:
    """Add replicas of one job toward its target, best marginal value first (on ``only``'s
    target kind when given)."""
    job = info.job
    name = job.name
    if job.spread.max_replicas_per_node <= 0:
        return
    limit = 0

    def below_min() -> bool:
        return work.count.get(name, 0) < job.min_replicas

    while True:
        need = job.target_tokens_per_second - work.served.get(name, 0.0)
        slots = job.max_replicas - work.count.get(name, 0)
        if (need <= EPS and not below_min()) or slots <= 0:
            return
        min_tps = min((v.tokens_per_second for vs in info.ranked.values() for v in vs), default=1.0)
        want = min(slots, max(int(max(need, 0.0) / max(min_tps, EPS)) + 1, job.min_replicas))
        limit = max(limit, 2 * want + 16)
        # replicas.min holds whatever the target says (0, absent, or met by fewer replicas)
        short = below_min()
        cand, variants, choice, total = _pass_candidates(
            work, info, max(need, 0.0), limit, only, keep_all=short
        )
        if len(cand) == 0:
            return
        placed = 0
        for i in range(len(cand)):
            k = int(cand[i])
            var = variants[int(choice[i])]
            need = job.target_tokens_per_second - work.served.get(name, 0.0)
            if (need <= EPS and not below_min()) or work.count.get(name, 0) >= job.max_replicas:
                return
            if short and not below_min():
                break  # the floor is reached: the rest must earn its place, rescore
            if var.tokens_per_second > need + EPS and placed > 0 and not below_min():
                break  # scores were computed for a larger need: rescore
            while (
                (need > EPS or below_min())
                and work.count.get(name, 0) < job.max_replicas
                and work.fits(info, k, var, new=True) is None
            ):
                work.add(info, k, var)
                placed += 1
                need = job.target_tokens_per_second - work.served.get(name, 0.0)
                if (short or var.tokens_per_second > need + EPS) and not below_min():
                    break
        if placed == 0:
            if total <= limit:
                return
            limit *= 4  # every candidate we looked at was blocked: look further


# -- phase 3: trim ------------------------------------------------------------------------------


def trim_job(work: Work, info: JobInfo) -> None:
    """Remove replicas the job does not need (its target is met without them): new ones first,
    then the costliest.  An existing replica removed here is a ``ScaledDown`` eviction."""
    job = info.job
    name = job.name
    f = work.fleet
    while True:
        served = work.served.get(name, 0.0)
        if served <= job.target_tokens_per_second + EPS:
            return
        if work.count.get(name, 0) <= job.min_replicas:
            return  # replicas.min holds whatever the target says
        # a current replica goes only when the job's current replicas alone exceed the target
        # without it (a scale-down); a replica this plan added is never a reason to evict one
        kept = sum(
            min(n, work.current.get(u, 0)) * info.variants[u[2]].tokens_per_second
            for u, n in work.job_units.get(name, {}).items()
        )
        best: tuple[tuple[int, float, float, int, str], Unit] | None = None
        for u, n in work.job_units.get(name, {}).items():
            if n <= 0:
                continue
            var = info.variants[u[2]]
            if served - var.tokens_per_second < job.target_tokens_per_second - EPS:
                continue
            existing = work.current.get(u, 0) >= n
            if existing and kept - var.tokens_per_second < job.target_tokens_per_second - EPS:
                continue
            key = (
                1 if existing else 0,
                -var.watts * float(f.cost[u[1]]),
                -var.watts,
                -u[1],
                u[2],
            )
            if best is None or key < best[0]:
                best = (key, u)
        if best is None:
            return
        u = best[1]
        var = info.variants[u[2]]
        if work.current.get(u, 0) >= work.units[u]:
            work.evictions.append(Eviction(name, f.names[u[1]], u[2], 1, Reason.SCALED_DOWN))
        work.remove(info, u[1], var)


def final_trim(work: Work, order: list[str]) -> None:
    """Trim every job once more after the local search and preemption (their fills may
    overshoot a target)."""
    for name in order:
        trim_job(work, work.fleet.jobs[name])


def reconcile_evictions(work: Work) -> None:
    """Make the eviction records agree with the assignments: per (job, node, variant), exactly
    ``max(current - planned, 0)`` replicas evicted (a greedy re-fill may have put back a current
    replica that an earlier phase had evicted; a phase may have removed one without a record)."""
    f = work.fleet
    want: dict[tuple[str, str, str], int] = {}
    for u, cur in work.current.items():
        gone = cur - work.units.get(u, 0)
        if gone > 0:
            want[(u[0], f.names[u[1]], u[2])] = gone
    out: list[Eviction] = []
    have: dict[tuple[str, str, str], int] = {}
    for e in work.evictions:
        key = (e.job, e.node, e.variant)
        if key[1] not in f.index:  # node or job gone: not in ``current``, kept as recorded
            out.append(e)
            continue
        left = want.get(key, 0) - have.get(key, 0)
        if left <= 0:
            continue
        n = min(left, e.replicas)
        have[key] = have.get(key, 0) + n
        out.append(e if n == e.replicas else replace(e, replicas=n))
    for key, n in sorted(want.items()):
        missing = n - have.get(key, 0)
        if missing > 0:
            out.append(Eviction(key[0], key[1], key[2], missing, Reason.SCALED_DOWN))
    work.evictions = out


# -- explanations -------------------------------------------------------------------------------


def job_reason_codes(work: Work, info: JobInfo) -> IntArr:
    """Per node, why one more replica of the job cannot go there now (0 = it could)."""
    f = work.fleet
    job = info.job
    code = work.compat_of(info).copy()
    free = code == 0
    code[free & (f.new_code != 0)] = f.new_code[free & (f.new_code != 0)]
    free = code == 0
    if not free.any():
        return code
    # smallest variant per target decides memory/energy/tank/pool reasons
    e_room = f.energy_new - work.e_used
    tank_room = (f.tank_free_new - work.tank_used)[f.tank]
    pool_room = (f.pool_free_new - work.pool_used)[f.pool]
    tank_reason = np.array(
        [CODE[r] for r in f.tank_new_reason] + [CODE[Reason.TANK_POWER_BUDGET]], dtype=np.int64
    )
    for t, is_v in (("Rack", False), ("Vehicle", True)):
        ranked = info.ranked.get(t)
        if not ranked:
            continue
        g = free & (f.is_vehicle == is_v)
        mem = min(v.memory_mib for v in ranked)
        kw = min(v.watts for v in ranked) / 1000.0
        checks: list[tuple[BoolArr, IntArr | int]] = [
            (work.mem_free + EPS < mem, CODE[Reason.INSUFFICIENT_MEMORY]),
            (e_room + EPS < kw, CODE[Reason.INSUFFICIENT_ENERGY_FOR_TARGET]),
            (tank_room + EPS < kw, tank_reason[f.tank]),
            (pool_room + EPS < kw * f.hours_today, CODE[Reason.POOL_ENERGY_BUDGET]),
        ]
        for bad, c in checks:
            sel = g & bad
            if isinstance(c, int):
                code[sel] = c
            else:
                code[sel] = c[sel]
            g = g & ~bad
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
        codes = job_reason_codes(work, info)
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


# -- assemble -----------------------------------------------------------------------------------


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


def _job_value(work: Work, name: str) -> float:
    info = work.fleet.jobs[name]
    return info.weight * min(work.served.get(name, 0.0), info.job.target_tokens_per_second)


def work_objective(
    work: Work, removed: int, move_cost: float, changed: list[str] | None = None
) -> float:
    """Objective from the running totals (equals :func:`objective` on the assignments).
    With ``changed``, only those jobs' values are recomputed (the rest are cached)."""
    if changed is None or not work.values:
        work.values = {name: _job_value(work, name) for name in work.served}
        work.value_total = sum(work.values.values())
    else:
        for name in changed:
            new = _job_value(work, name)
            work.value_total += new - work.values.get(name, 0.0)
            work.values[name] = new
    return work.value_total - work.cost_total - move_cost * removed


def assemble(
    snapshot: Snapshot, work: Work, order: list[str], solver: str, explain_all: bool = True
) -> Plan:
    f = work.fleet
    reconcile_evictions(work)
    keys = sorted(work.units.items(), key=lambda x: (x[0][0], x[0][1], x[0][2]))
    assignments = tuple(Placement(j, f.names[k], v, n) for (j, k, v), n in keys if n > 0)
    added: list[Placement] = []
    for (j, k, v), n in keys:
        extra = n - work.current.get((j, k, v), 0)
        if extra > 0:
            added.append(Placement(j, f.names[k], v, extra))
    evictions = _pair_moves(work.evictions, added)
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


def _pair_moves(evictions: list[Eviction], added: list[Placement]) -> list[Eviction]:
    """Mark an eviction as a move when the same job got a new replica elsewhere."""
    free: dict[str, list[str]] = {}
    for a in added:
        free.setdefault(a.job, []).extend([a.node] * a.replicas)
    out: list[Eviction] = []
    for e in sorted(evictions, key=lambda e: (e.job, e.node, e.variant, e.reason.value)):
        spots = free.get(e.job)
        if spots and e.reason not in (Reason.JOB_REMOVED, Reason.SCALED_DOWN):
            out.append(replace(e, moved_to=spots.pop(0)))
        else:
            out.append(e)
    return out


def streams(work: Work, order: list[str], mode: str = "share") -> list[tuple[str, str]]:
    """(job, target kind) pairs, densest first: value per replica divided by the share of the
    fleet's free resources one replica uses (tank kW and memory on racks; memory and pool energy
    on vehicles) - a multi-dimensional knapsack ordering, so scarce room goes to the jobs that
    earn most from it."""
    f = work.fleet
    nr = f.n_racks
    rack_ok = f.new_code[:nr] == 0
    veh_ok = f.new_code[nr:] == 0
    tank_free = float(np.clip(f.tank_free_new[:-1], 0, None).sum())
    rack_mem = float(f.mem_cap[:nr][rack_ok].sum())
    veh_mem = float(f.mem_cap[nr:][veh_ok].sum())
    pool_free = f.pool_free_new[:-1]
    finite = np.isfinite(pool_free)
    pool_kwh = float(np.clip(pool_free[finite], 0, None).sum()) if finite.any() else 0.0
    hours = float(f.hours_today[nr:][veh_ok].mean()) if veh_ok.any() else 0.0
    supply = np.array([tank_free, rack_mem, veh_mem, pool_kwh if finite.any() else INF])
    rows: list[tuple[float, int, str, str, npt.NDArray[np.float64]]] = []
    demand = np.zeros(4)
    for rank, name in enumerate(order):
        info = f.jobs[name]
        for t, vs in info.ranked.items():
            if not vs:
                continue
            v = vs[0]
            kw = v.watts / 1000.0
            usage = np.zeros(4)
            if t == "Rack":
                usage[0], usage[1] = kw, v.memory_mib
            else:
                usage[2], usage[3] = v.memory_mib, kw * hours
            want = min(
                info.job.max_replicas,
                info.job.target_tokens_per_second / max(v.tokens_per_second, EPS),
            )
            demand += usage * want
            value = info.weight * min(v.tokens_per_second, info.job.target_tokens_per_second)
            rows.append((value, rank, name, t, usage))
    pressure = np.where(np.isfinite(supply), demand / np.maximum(supply, EPS), 0.0)
    weight = np.maximum(pressure, 0.05) if mode == "pressure" else np.ones(4)
    price = np.where(np.isfinite(supply), weight / np.maximum(supply, EPS), 0.0)
    pr = work.prices
    tank_p = float(pr.tank[:-1].mean()) if pr is not None and len(pr.tank) > 1 else 0.0
    pool_p = float(pr.pool[:-1].mean()) if pr is not None and len(pr.pool) > 1 else 0.0
    out: list[tuple[float, int, str, str]] = []
    for value, rank, name, t, usage in rows:
        use = float(usage @ price)
        reduced = value
        if pr is not None:
            # memory priced over the nodes this stream may use
            lo, hi = (0, nr) if t == "Rack" else (nr, len(f.names))
            ok = work.ok_of(f.jobs[name])[lo:hi]
            mem_p = float(pr.mem[lo:hi][ok].mean()) if ok.any() else 0.0
            if t == "Rack":
                reduced -= usage[0] * tank_p + usage[1] * mem_p
            else:
                reduced -= usage[2] * mem_p + usage[3] * pool_p
        out.append((-reduced / max(use, EPS), rank, name, t))
    out.sort()
    return [(name, t) for _d, _r, name, t in out]


MODES = ("share", "pressure", "priority", "share+rank", "pressure+rank")
"""Fill orders tried: resource-share density, pressure-weighted density, plain priority; then
the two densities again with the kW x stay rearrangement term on budgeted pools (it pays where
a pool's daily budget binds and costs where it does not, so it is a start of its own)."""
WORK_BUDGET = 3_000_000
"""Greedy passes per plan = WORK_BUDGET // (nodes x jobs), at least one: small fleets try every
fill order and the price-directed re-runs and keep the best plan; 10,000 x 1,000 gets one pass."""


def plan_heuristic(
    snapshot: Snapshot,
    starts: int | None = None,
    improve_budget: int | None = None,
    guided: bool | None = None,
) -> Plan:
    """Greedy plan.  ``starts`` greedy passes (default from :data:`WORK_BUDGET`): first the fill
    orders in :data:`MODES`, then price-directed re-runs; the best objective is kept and then
    improved by the bounded local search (:mod:`tokenfleet.placement.improve`) with
    ``improve_budget`` work units (default: scaled to the fleet's size; 0 = greedy only).
    ``guided`` (default: fleets of at most :data:`~tokenfleet.placement.relax.GUIDE_MAX_WORK`
    nodes x jobs) adds the LP-relaxation-guided start (:mod:`tokenfleet.placement.relax`),
    improved the same way; the better of the two plans is returned."""
    from tokenfleet.placement.improve import improve
    from tokenfleet.placement.preempt import preempt
    from tokenfleet.placement.relax import GUIDE_MAX_WORK, lp_guide, plan_guided

    fleet = build_fleet(snapshot)
    fleet.popularity = node_popularity(fleet)
    pool_references(fleet)
    order = job_order(snapshot)
    if starts is None:
        starts = WORK_BUDGET // max(1, len(fleet.names) * len(order))
    starts = max(1, min(starts, len(MODES) + PRICE_ROUNDS))
    best: Plan | None = None
    for mode in MODES[:starts]:
        p = _plan_once(snapshot, fleet, order, mode)
        if best is None or p.objective > best.objective + 1e-9:
            best = p
    if starts > len(MODES):
        prices = _initial_prices(fleet)
        for _ in range(starts - len(MODES)):
            p = _plan_once(snapshot, fleet, order, "priced", prices)
            if best is None or p.objective > best.objective + 1e-9:
                best = p
            work = p.cache[0] if isinstance(p.cache, tuple) else None
            if not isinstance(work, Work):
                break
            prices = _update_prices(fleet, work, prices)
    assert best is not None
    work = best.cache[0] if isinstance(best.cache, tuple) else None
    assert isinstance(work, Work)
    if guided is None:
        guided = len(fleet.names) * len(order) <= GUIDE_MAX_WORK
    guide = lp_guide(snapshot, fleet) if guided else None
    candidates = [work] if guide is None else [work, plan_guided(snapshot, fleet, order, guide)]
    move_cost = snapshot.weights.move_cost
    if improve_budget is None or improve_budget > 0:
        for w in candidates:
            improve(w, order, improve_budget)
    for w in candidates:
        if preempt(w, order, move_cost) and (improve_budget is None or improve_budget > 0):
            # the victims' re-fills and the preemptors' replicas are new: polish them, then
            # preempt again until nothing pays (the last word, for a stable re-plan)
            improve(w, order, improve_budget)
            preempt(w, order, move_cost)
        final_trim(w, order)
    work = max(
        candidates,
        key=lambda w: (
            min_floor(w),
            work_objective(w, sum(e.replicas for e in w.evictions), move_cost),
        ),
    )
    # the passes skipped the explanations; only the plan returned needs them
    arm_deadlines(work)
    out = assemble(snapshot, work, order, "heuristic")
    return replace(out, next_deadline=next_deadline(work))


PRICE_START = 0.25
"""First price of a saturated resource, as a fraction of the typical value per unit of it."""
PRICE_UP = 1.7
PRICE_DOWN = 0.5
PRICE_ROUNDS = 8
"""Price-directed re-runs on small fleets (deterministic; each is one greedy pass)."""


def _initial_prices(fleet: Fleet) -> Prices:
    return Prices(
        np.zeros(len(fleet.tank_free_new)),
        np.zeros(len(fleet.pool_free_new)),
        np.zeros(len(fleet.names)),
    )


def _scale(fleet: Fleet) -> tuple[float, float, float, float]:
    """Typical value per kW (racks), per kWh (pools), per MiB (rack, vehicle memory)."""
    per_kw: list[float] = []
    per_kwh: list[float] = []
    per_mib_r: list[float] = []
    per_mib_v: list[float] = []
    nr = fleet.n_racks
    hours = float(fleet.hours_today[nr:].mean()) if len(fleet.names) > nr else 1.0
    for info in fleet.jobs.values():
        for t, vs in info.ranked.items():
            if not vs:
                continue
            v = vs[0]
            value = info.weight * v.tokens_per_second
            if t == "Rack":
                per_kw.append(value / max(v.watts / 1000.0, EPS))
                per_mib_r.append(value / max(v.memory_mib, 1))
            else:
                per_kwh.append(value / max(v.watts / 1000.0 * max(hours, EPS), EPS))
                per_mib_v.append(value / max(v.memory_mib, 1))

    def med(xs: list[float]) -> float:
        return float(np.median(xs)) if xs else 0.0

    return med(per_kw), med(per_kwh), med(per_mib_r), med(per_mib_v)


def _update_prices(fleet: Fleet, work: Work, prices: Prices) -> Prices:
    """Raise the price of saturated resources, lower it on slack ones."""
    kw0, kwh0, mr0, mv0 = _scale(fleet)

    def step(price: float, util: float, base: float) -> float:
        if util >= 0.97:
            return price * PRICE_UP if price > 0 else base * PRICE_START
        if util < 0.85:
            return price * PRICE_DOWN
        return price

    tank = prices.tank.copy()
    for t in range(len(tank) - 1):
        cap = float(fleet.tank_free_new[t])
        util = float(work.tank_used[t]) / cap if cap > EPS else 1.0
        tank[t] = step(float(tank[t]), util, kw0)
    pool = prices.pool.copy()
    for p in range(len(pool) - 1):
        cap = float(fleet.pool_free_new[p])
        if not np.isfinite(cap):
            continue
        util = float(work.pool_used[p]) / cap if cap > EPS else 1.0
        pool[p] = step(float(pool[p]), util, kwh0)
    # per node memory: "full" = no room for the smallest replica that could go there
    smallest = {"Rack": INF, "Vehicle": INF}
    for info in fleet.jobs.values():
        for kind, vs in info.ranked.items():
            for v in vs:
                smallest[kind] = min(smallest[kind], float(v.memory_mib))
    need = np.where(fleet.is_vehicle, smallest["Vehicle"], smallest["Rack"])
    used = fleet.mem_cap - work.mem_free
    mem_util = np.where(fleet.mem_cap > 0, used / np.maximum(fleet.mem_cap, 1.0), 1.0)
    full = (work.mem_free < need) & (used > 0)
    base = np.where(fleet.is_vehicle, mv0, mr0) * PRICE_START
    mem = np.where(
        full,
        np.where(prices.mem > 0, prices.mem * PRICE_UP, base),
        np.where(mem_util < 0.85, prices.mem * PRICE_DOWN, prices.mem),
    )
    mem[fleet.new_code != 0] = 0.0
    return Prices(tank, pool, mem)


def _plan_once(
    snapshot: Snapshot, fleet: Fleet, order: list[str], mode: str, prices: Prices | None = None
) -> Plan:
    work = new_work(fleet)
    work.bonus = snapshot.weights.preference_bonus
    mode, _, extra = mode.partition("+")
    work.rank_term = extra == "rank"
    keep_phase(snapshot, work, order)
    if mode != "priority":
        work.prices = prices
        for name, t in streams(work, order, mode):
            info = fleet.jobs[name]
            fill_job(work, info, only=t)
            trim_job(work, info)
        work.prices = None
    fill_rounds(work, order)
    return assemble(snapshot, work, order, "heuristic", explain_all=False)


def min_floor(work: Work) -> int:
    """Replicas placed toward the jobs' ``min_replicas`` (a plan holding more floors wins)."""
    return sum(
        min(work.count.get(name, 0), info.job.min_replicas)
        for name, info in work.fleet.jobs.items()
    )


def fill_rounds(work: Work, order: list[str]) -> None:
    """Fill and trim every job by priority, then (up to two more rounds) the jobs still short,
    which may use capacity freed by trims."""
    fleet = work.fleet
    todo = order
    for _round in range(3):
        changed = False
        for name in todo:
            info = fleet.jobs[name]
            before = work.count.get(name, 0)
            fill_job(work, info)
            trim_job(work, info)
            changed = changed or work.count.get(name, 0) != before
        if not changed:
            break
        todo = [
            n
            for n in order
            if (
                work.served.get(n, 0.0) + EPS < fleet.jobs[n].job.target_tokens_per_second
                or work.count.get(n, 0) < fleet.jobs[n].job.min_replicas
            )
            and work.count.get(n, 0) < fleet.jobs[n].job.max_replicas
        ]


# -- incremental --------------------------------------------------------------------------------


CHAIN_SECONDS = 300.0
"""An incremental chain covers at most this much time after its full plan; later, or past the
next UTC midnight (the energy day), or past a tank's telemetry turning stale, ``replan_node``
refuses and the caller runs a full plan."""
CHAIN_STEPS = 256
"""Incremental steps at most in one chain (then a full plan)."""


def node_deadline(work: Work, k: int) -> float:
    """When node ``k``'s eligibility changes by time alone at its current draw (inf: never)."""
    f = work.fleet
    st = f.node_states[k] if k < len(f.node_states) else None
    if st is None:
        return INF
    d = st.next_change
    if f.is_vehicle[k]:
        d = min(d, energy_deadline(st.need_kwh, st.charger_kw, st.departure, float(work.e_used[k])))
    return d


def arm_deadlines(work: Work) -> None:
    """Index every node's next time threshold (a heap) for the incremental chain."""
    f = work.fleet
    nxt, need, _band, charger, dep = time_arrays(f)
    draw = work.e_used
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e_dead = np.where(
            (need > 0) & (draw > EPS),
            np.where(charger - draw > 0, dep - 3600.0 * need / (charger - draw), -INF),
            INF,
        )
    d = np.minimum(nxt, e_dead)
    d[: f.n_racks] = INF
    ks = np.flatnonzero(d < INF)
    heap = list(zip(d[ks].tolist(), ks.tolist(), strict=True))
    heapq.heapify(heap)
    work.deadlines = heap
    work.steps = 0
    work.windowed = False


def chain_end(work: Work) -> float:
    """Until when the cached state may be re-planned incrementally (epoch s)."""
    f = work.fleet
    midnight = f.now + seconds_to_next_utc_midnight(f.now)
    return min(f.now + CHAIN_SECONDS, midnight, f.tank_next_change)


def next_deadline(work: Work) -> float | None:
    """The earliest moment a re-plan is due: a node's threshold or the chain's end."""
    d = chain_end(work)
    if work.deadlines:
        d = min(d, work.deadlines[0][0])
    return d if d < INF else None


def _window_energy(f: Fleet, ks: IntArr, t_end: float) -> None:
    """Cap ``energy_new`` of vehicles ``ks`` at its value at ``t_end`` (the chain's end), so
    new work placed anywhere in the chain still meets the band until then."""
    if ks.size == 0:
        return
    _nxt, need_a, band_a, charger_a, dep_a = time_arrays(f)
    need = need_a[ks] + band_a[ks]
    hours = (dep_a[ks] - t_end) / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        e_end = np.where(hours > 0, charger_a[ks] - need / np.where(hours > 0, hours, 1.0), -INF)
    f.energy_new[ks] = np.minimum(f.energy_new[ks], e_end)


def replan_node_heuristic(snapshot: Snapshot, previous: Plan, node_name: str | None) -> Plan | None:
    """Incremental path; ``None`` when the cache cannot be used (caller falls back).

    Re-checks ``node_name`` and every node whose time threshold (drain lead, charge by
    departure at its draw, stale telemetry) ``snapshot.now`` has crossed, evicts what no longer
    fits there and re-places it.  Takes over (mutates) the previous plan's solver state, so each
    plan's cache serves one incremental step; a second use, a chain past :data:`CHAIN_STEPS` or
    past :func:`chain_end` returns ``None``."""
    cache = previous.cache
    if not isinstance(cache, tuple) or len(cache) != 2:
        return None
    work, order = cache
    if not isinstance(work, Work) or work.consumed:
        return None
    f0 = work.fleet
    k0 = f0.index.get(node_name) if node_name is not None else None
    if (node_name is not None and k0 is None) or len(snapshot.jobs) != len(f0.jobs):
        return None
    if snapshot.now < f0.now or snapshot.now >= chain_end(work) or work.steps >= CHAIN_STEPS:
        return None
    if f0.inputs != (snapshot.tanks, snapshot.pools, snapshot.jobs, snapshot.weights):
        return None  # a tank, pool, job or weight changed: only a full plan re-derives those
    nodes: dict[int, VehicleNode | RackNode] = {}
    if node_name is not None and k0 is not None:
        node = _find_node(snapshot, node_name, k0, f0)
        if node is None or not _same_identity(f0, k0, node):
            return None  # the node left, or its pool/tank/region/attestation changed
        nodes[k0] = node
    work.consumed = True
    crossed = set(nodes)
    while work.deadlines and work.deadlines[0][0] <= snapshot.now:
        crossed.add(heapq.heappop(work.deadlines)[1])
    for k in sorted(crossed - set(nodes)):
        other = _find_node(snapshot, f0.names[k], k, f0)
        if other is None or not _same_identity(f0, k, other):
            return None
        nodes[k] = other
    rank = work.rank or {name: i for i, name in enumerate(order)}
    here: dict[int, list[tuple[Unit, int]]] = {}
    for k in nodes:
        here[k] = sorted(work.node_units.get(k, {}).items(), key=lambda x: (rank[x[0][0]], x[0][2]))
        # take everything off the node under the old figures, then switch the node's figures
        for u, n in here[k]:
            info = f0.jobs[u[0]]
            work.remove(info, k, info.variants[u[2]], n)
    f = replace(
        f0,
        hard_code=f0.hard_code.copy(),
        new_code=f0.new_code.copy(),
        energy_hard=f0.energy_hard.copy(),
        energy_new=f0.energy_new.copy(),
        hours_today=f0.hours_today.copy(),
        cost=f0.cost.copy(),
        mem_cap=f0.mem_cap.copy(),
        node_states=list(f0.node_states),
        time_arrays=tuple(a.copy() for a in time_arrays(f0)),  # type: ignore[arg-type]
    )
    t_end = chain_end(work)
    if not work.windowed:
        _window_energy(f, np.arange(f.n_racks, len(f.names), dtype=np.int64), t_end)
        work.windowed = True
    for k, nd in nodes.items():
        if isinstance(nd, VehicleNode):
            pool = next((p for p in snapshot.pools if p.name == nd.pool), None)
            st = vehicle_state(nd, pool, snapshot.now)
        else:
            tank = next((t for t in snapshot.tanks if t.name == nd.tank), None)
            st = rack_state(nd, tank, snapshot.now)
        _fill_state(
            k, st, f.hard_code, f.new_code, f.energy_hard, f.energy_new, f.hours_today, f.cost
        )
        f.node_states[k] = st
        ta = time_arrays(f)
        for arr, val in zip(
            ta, (st.next_change, st.need_kwh, st.band_kwh, st.charger_kw, st.departure), strict=True
        ):
            arr[k] = val
        if isinstance(nd, VehicleNode):
            _window_energy(f, np.array([k], dtype=np.int64), t_end)
        f.mem_cap[k] = nd.memory_mib
        work.mem_free[k] += f.mem_cap[k] - f0.mem_cap[k]
    work.fleet = f
    ks = np.array(sorted(nodes), dtype=np.int64)
    for key, ok in work.ok.items():
        ok = ok.copy()
        ok[ks] = (work.compat[key][ks] == 0) & (f.new_code[ks] == 0)
        work.ok[key] = ok
    work.current = {}
    work.evictions = []
    touched: set[tuple[str, str, str]] = set()
    affected: list[str] = []
    for k in sorted(nodes):
        kname = f.names[k]
        for u, n in here[k]:
            info = f.jobs[u[0]]
            var = info.variants[u[2]]
            work.current[u] = n
            touched.add((u[0], kname, u[2]))
            why: Reason | None = reason_of(int(f.hard_code[k])) if f.hard_code[k] else None
            lost: Counter[Reason] = Counter()
            for _ in range(n):
                r = why or work.fits(info, k, var, new=False)
                if r is None:
                    work.add(info, k, var)
                else:
                    lost[r] += 1
            for r, m in sorted(lost.items()):
                work.evictions.append(Eviction(u[0], kname, u[2], m, r))
            if lost and u[0] not in affected:
                affected.append(u[0])
    before = {name: dict(work.job_units.get(name, {})) for name in affected}
    for name in sorted(affected, key=rank.__getitem__):
        fill_job(work, f.jobs[name])
    added: list[Placement] = []
    for name in affected:
        for u, n in work.job_units.get(name, {}).items():
            extra = n - before[name].get(u, 0)
            if extra > 0:
                kk = u[1]
                added.append(Placement(name, f.names[kk], u[2], extra))
                work.current.setdefault(u, before[name].get(u, 0))
                touched.add((name, f.names[kk], u[2]))
                nodes.setdefault(kk, nodes[next(iter(nodes))])  # new draw: new deadline
    evictions = _pair_moves(work.evictions, added)
    for j, node_n, v in sorted(touched):
        n = work.units.get((j, f.index[node_n], v), 0)
        _set_item(
            work.assign_list,
            work.assign_pos,
            (j, node_n, v),
            Placement(j, node_n, v, n) if n else None,
        )
    for k in nodes:
        d = node_deadline(work, k)
        if d < INF:
            heapq.heappush(work.deadlines, (d, k))
    work.steps += 1
    # explanations: reuse the previous ones, refresh affected jobs and the touched nodes
    shortfalls = [s for s in previous.job_shortfalls if s.job not in affected]
    if affected:
        sub, _ = explain(work, [n for n in order if n in affected], nodes=False)
        shortfalls.extend(sub)
        shortfalls.sort(key=lambda s: rank[s.job])
    for a in added:
        _set_item(work.unused_list, work.unused_pos, a.node, None)
    for k in sorted(crossed):
        if not work.node_units.get(k):
            c = int(f.hard_code[k]) or int(f.new_code[k])
            u_new = UnusedNode(f.names[k], reason_of(c) if c else Reason.NO_DEMAND)
            _set_item(work.unused_list, work.unused_pos, f.names[k], u_new)
    removed = sum(e.replicas for e in evictions)
    return Plan(
        assignments=tuple(work.assign_list),
        added=tuple(added),
        evictions=tuple(evictions),
        job_shortfalls=tuple(shortfalls),
        unused_nodes=tuple(work.unused_list),
        objective=work_objective(work, removed, snapshot.weights.move_cost, affected),
        solver="heuristic-incremental",
        next_deadline=next_deadline(work),
        cache=(replace_work(work), order),
    )


K = TypeVar("K")
T = TypeVar("T")


def _set_item(items: list[T], pos: dict[K, int], key: K, item: T | None) -> None:
    """Set, add or (swap-)remove ``key``'s entry in ``items`` in O(1), keeping ``pos`` right."""
    i = pos.get(key)
    if item is not None:
        if i is None:
            pos[key] = len(items)
            items.append(item)
        else:
            items[i] = item
        return
    if i is None:
        return
    last = items.pop()
    del pos[key]
    if i < len(items):
        items[i] = last
        pos[_key_of(last)] = i  # type: ignore[index]


def _key_of(item: object) -> object:
    if isinstance(item, Placement):
        return (item.job, item.node, item.variant)
    if isinstance(item, UnusedNode):
        return item.node
    raise TypeError(item)


def _same_identity(f: Fleet, k: int, node: VehicleNode | RackNode) -> bool:
    """True when only telemetry-like fields changed (what the incremental path re-derives)."""
    region = f.region_ids.get(node.region, -2) if node.region is not None else -1
    if int(f.region[k]) != region or bool(f.attested[k]) != node.attested:
        return False
    if isinstance(node, VehicleNode):
        p = int(f.pool[k])
        pool = f.pool_names[p] if p < len(f.pool_names) else None
        return bool(f.is_vehicle[k]) and pool == node.pool
    t = int(f.tank[k])
    tank = f.tank_names[t] if t < len(f.tank_names) else None
    return (not f.is_vehicle[k]) and tank == node.tank


def replace_work(work: Work) -> Work:
    """A fresh handle on the same (mutated) state for the next incremental step."""
    nxt = replace(work)
    nxt.consumed = False
    return nxt


def _find_node(snapshot: Snapshot, name: str, k: int, f: Fleet) -> VehicleNode | RackNode | None:
    """The snapshot's node ``name`` (index ``k`` in the previous fleet is tried first)."""
    if f.is_vehicle[k]:
        j = k - f.n_racks
        if j < len(snapshot.vehicles) and snapshot.vehicles[j].name == name:
            return snapshot.vehicles[j]
        return next((v for v in snapshot.vehicles if v.name == name), None)
    if k < len(snapshot.racks) and snapshot.racks[k].name == name:
        return snapshot.racks[k]
    return next((r for r in snapshot.racks if r.name == name), None)
