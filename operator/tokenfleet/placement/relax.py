"""LP-relaxation-guided start for small fleets: solve the MILP's LP relaxation, re-pack each node
with a knapsack over memory, then let the greedy fill and the local search finish.

The LP (HiGHS dual simplex via ``scipy.optimize.linprog``) prices every shared resource at once -
a pool's daily energy budget, a tank's power, each job's remaining value - which the one-job-at-a-
time greedy cannot see; but it packs memory fractionally.  So each node is re-packed on its own:
a 0/1 knapsack over its free memory whose item values are the LP's reduced values (the value of
one replica less the dual price of the shared budgets it uses; the node's own memory price is
left out, the knapsack prices memory exactly) plus a small pull toward the LP's own solution
(:data:`PRIMAL_PULL`, which breaks the many ties of a degenerate optimum the LP's way).  The
chosen replicas are added best value first, each only while its job is still short and it fits
as new work, then :func:`~tokenfleet.placement.greedy.fill_rounds` tops up.  It is one more
start of :func:`~tokenfleet.placement.solver.plan_heuristic`: the best plan wins.

Deterministic (the LP is solved by a deterministic simplex; ties break by index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import vstack

from tokenfleet.placement.greedy import fill_rounds, keep_phase
from tokenfleet.placement.milp import Model, build_model
from tokenfleet.placement.model import Snapshot, Variant
from tokenfleet.placement.state import EPS, BoolArr, Fleet, FloatArr, JobInfo
from tokenfleet.placement.work import Unit, Work, new_work

GUIDE_MAX_WORK = 100_000
"""The guided start runs when nodes x jobs is at most this: the largest size measured (1,000 x
100: about 0.7 s for the LP, 1.5 s for the whole plan). Larger fleets, up to the 10,000 x 1,000
of the bench, are left to the greedy starts."""
PRIMAL_PULL = 0.1
"""Value (currency/hour) added per replica the LP solution itself places on a unit."""
MAX_STATES = 512
"""Memory states per node knapsack at most (coarser MiB steps above; sizes round up)."""


@dataclass(frozen=True)
class Guide:
    """Per LP unit, the value of one replica to a node's knapsack."""

    units: list[Unit]
    unit_var: list[Variant]
    value: FloatArr
    cap: FloatArr
    """Replica upper bound of each unit (the MILP's)."""


def lp_guide(snapshot: Snapshot, fleet: Fleet) -> Guide | None:
    """Solve the LP relaxation; ``None`` when there is nothing to place or HiGHS fails."""
    m = build_model(snapshot, fleet)
    if m.nx == 0:
        return None
    has_ub = np.isfinite(m.ub)
    has_lb = np.isfinite(m.lb)
    a_ub = vstack([m.a[has_ub], -m.a[has_lb]]).tocsr()
    b_ub = np.concatenate([m.ub[has_ub], -m.lb[has_lb]])
    res = linprog(m.c, A_ub=a_ub, b_ub=b_ub, bounds=np.stack([m.lo, m.hi], 1), method="highs")
    if res.status != 0 or res.x is None:
        return None
    return Guide(m.units, m.unit_var, _values(m, res.x, -res.ineqlin.marginals, has_ub), m.hi)


def _values(m: Model, x: FloatArr, prices: FloatArr, has_ub: BoolArr) -> FloatArr:
    """Reduced value of one replica per unit (``-c - Aᵀy`` without the node memory rows)."""
    n_ub = int(np.count_nonzero(has_ub))
    y = np.zeros(len(m.ub))
    y[np.flatnonzero(has_ub)] += prices[:n_ub]
    y[np.flatnonzero(np.isfinite(m.lb))] -= prices[n_ub:]
    y[list(m.mem_rows.values())] = 0.0
    reduced: FloatArr = -m.c[: m.nx] - m.a[:, : m.nx].T @ y
    return reduced + PRIMAL_PULL * x[: m.nx]


def plan_guided(snapshot: Snapshot, fleet: Fleet, order: list[str], guide: Guide) -> Work:
    """Keep what still fits, re-pack every node by knapsack on the LP's values, then fill."""
    work = new_work(fleet)
    work.bonus = snapshot.weights.preference_bonus
    keep_phase(snapshot, work, order)
    by_node: dict[int, list[int]] = {}
    for i, u in enumerate(guide.units):
        if guide.value[i] > EPS and fleet.new_code[u[1]] == 0:
            by_node.setdefault(u[1], []).append(i)
    step = _step(fleet, guide)
    chosen: list[tuple[float, int, int]] = []
    for k in sorted(by_node):
        chosen.extend(
            (-float(guide.value[i]), i, k) for i in _knapsack(work, guide, k, by_node[k], step)
        )
    for _neg, i, k in sorted(chosen):
        info = fleet.jobs[guide.units[i][0]]
        var = guide.unit_var[i]
        if _short(work, info) and work.fits(info, k, var, new=True) is None:
            work.add(info, k, var)
    fill_rounds(work, order)
    return work


def _short(work: Work, info: JobInfo) -> bool:
    job = info.job
    return (
        work.served.get(job.name, 0.0) + EPS < job.target_tokens_per_second
        and work.count.get(job.name, 0) < job.max_replicas
    )


def _step(fleet: Fleet, guide: Guide) -> int:
    """MiB per knapsack state: the gcd of the variants' memory, coarser on huge nodes."""
    g = 0
    for var in guide.unit_var:
        g = math.gcd(g, int(var.memory_mib))
    g = max(g, 1)
    top = float(fleet.mem_cap.max()) if len(fleet.mem_cap) else 0.0
    return max(g, math.ceil(top / MAX_STATES))


def _knapsack(work: Work, guide: Guide, k: int, items: list[int], step: int) -> list[int]:
    """Units (one entry per replica) filling node ``k``'s free memory for the most value."""
    cap = int((work.mem_free[k] + EPS) // step)
    if cap <= 0:
        return []
    copies: list[tuple[int, int]] = []  # (unit index, size in steps)
    for i in items:
        var = guide.unit_var[i]
        spread = guide.cap[i]
        size = math.ceil(var.memory_mib / step)
        if size <= cap:
            copies.extend([(i, size)] * int(min(spread, cap // max(size, 1))))
    if not copies:
        return []
    best = np.zeros(cap + 1)
    take = np.zeros((len(copies), cap + 1), dtype=np.bool_)
    for c, (i, size) in enumerate(copies):
        cand = np.full(cap + 1, -np.inf)
        cand[size:] = best[: cap + 1 - size] + guide.value[i]
        better = cand > best + EPS
        take[c] = better
        best = np.where(better, cand, best)
    state = int(np.argmax(best))
    out: list[int] = []
    for c in range(len(copies) - 1, -1, -1):
        if take[c, state]:
            i, size = copies[c]
            out.append(i)
            state -= size
    return out
