"""The shared working state of one solve: capacity used per node, tank and pool, the units placed,
the plan's bookkeeping (evictions, the incremental cache), and the capacity test every phase uses.

The bottom of the solver's layers: it imports only :mod:`~tokenfleet.placement.model` and
:mod:`~tokenfleet.placement.state`; the greedy, the local search, preemption, the incremental path
and the MILP's plan assembly all work on a :class:`Work`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tokenfleet.placement.model import (
    Eviction,
    Placement,
    Reason,
    UnusedNode,
    Variant,
)
from tokenfleet.placement.state import (
    EPS,
    BoolArr,
    Fleet,
    FloatArr,
    IntArr,
    JobInfo,
    compat_of,
)

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
    version: int = 0
    """Bumped by every :meth:`add` and :meth:`remove` (a trial undone counts too)."""
    settled: tuple[int, Fleet] | None = None
    """(``version``, fleet) at which the preemption phase last ended with no trial paying
    and budget left: re-run on the same units and fleet it would find the same."""

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
        if info.preferred is not None and info.preferred == target_of(f, k):
            rate -= self.bonus
        return rate

    def add(self, info: JobInfo, k: int, var: Variant, n: int = 1) -> None:
        f = self.fleet
        name = info.job.name
        kw = var.watts / 1000.0 * n
        self.version += 1
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
        self.version += 1
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
            c = compat_of(self.fleet, info)
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


def host_mask(work: Work, info: JobInfo, t: str, var: Variant) -> tuple[int, BoolArr] | None:
    """Where one more replica of ``var`` could go on nodes of kind ``t`` once room is made
    there: ``(lo, mask)`` over the nodes ``[lo, hi)`` of that kind that the job's policy and
    the node's eligibility allow, whose memory and (cars) energy band could hold it, and where
    the job's spread limits (node, tank, pool) leave room; ``None`` when there is no such node
    kind.  Shared by the local search and preemption (their candidates)."""
    f = work.fleet
    job = info.job
    nr = f.n_racks
    lo, hi = (0, nr) if t == "Rack" else (nr, len(f.names))
    if hi <= lo:
        return None
    ok = work.ok_of(info)[lo:hi] & (f.mem_cap[lo:hi] + EPS >= var.memory_mib)
    if t == "Vehicle":
        ok &= f.energy_new[lo:hi] + EPS >= var.watts / 1000.0
    sp = job.spread
    for (_j, k, _v), _n in work.job_units.get(job.name, {}).items():
        if lo <= k < hi and work.job_node.get((job.name, k), 0) >= sp.max_replicas_per_node:
            ok[k - lo] = False
    if t == "Rack" and sp.max_replicas_per_tank is not None:
        cap = sp.max_replicas_per_tank
        full = [tt for (jn, tt), c in work.job_tank.items() if jn == job.name and c >= cap]
        if full:
            ok &= ~np.isin(f.tank[lo:hi], full)
    if t == "Vehicle" and sp.max_replicas_per_pool is not None:
        cap = sp.max_replicas_per_pool
        full = [pp for (jn, pp), c in work.job_pool.items() if jn == job.name and c >= cap]
        if full:
            ok &= ~np.isin(f.pool[lo:hi], full)
    return lo, ok


def target_of(fleet: Fleet, k: int) -> str:
    return "Vehicle" if fleet.is_vehicle[k] else "Rack"


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


def min_floor(work: Work) -> int:
    """Replicas placed toward the jobs' ``min_replicas`` (a plan holding more floors wins)."""
    return sum(
        min(work.count.get(name, 0), info.job.min_replicas)
        for name, info in work.fleet.jobs.items()
    )
