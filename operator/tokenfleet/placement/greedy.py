"""Fast greedy placement: keep what still fits, fill jobs by priority, trim what is redundant.

Cost: one pass over nodes to compile (:func:`~tokenfleet.placement.state.build_fleet`), then per
job a few vectorised passes over the node arrays (numpy) and a short Python walk over the best
candidates.  :func:`plan_once` is one greedy pass in one fill order; the orchestration of passes,
local search and preemption is :func:`tokenfleet.placement.solver.plan_heuristic`.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
import numpy.typing as npt

from tokenfleet.placement.model import (
    Eviction,
    Reason,
    Snapshot,
    Variant,
)
from tokenfleet.placement.state import (
    EPS,
    INF,
    Fleet,
    FloatArr,
    IntArr,
    JobInfo,
    compat_scalar,
    reason_of,
)
from tokenfleet.placement.work import (
    Prices,
    Unit,
    Work,
    new_work,
    reconcile_evictions,
    target_of,
    work_objective,
)

POP_WEIGHT = 0.5
"""Score penalty for a node every job could use (see ``Fleet.popularity``)."""

RANK_WEIGHT = 1.0
"""Score weight (currency per kW per hour squared) of the kW x stay rearrangement term on
budgeted pools (see ``Fleet.pool_kw_ref``)."""

FIT_WEIGHT = 0.05
"""Score penalty per node-memory fraction a replica leaves unused (best fit packs tighter)."""

WARM_BONUS = 1.0
"""Score bonus of a node whose model cache holds the variant (a load, not a download)."""


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
            elif target_of(f, k) not in var.targets:
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


def _score(
    work: Work,
    info: JobInfo,
    var: Variant,
    nodes: IntArr,
    memf: FloatArr,
    hrs: FloatArr | None,
    need: float,
    pref: float,
) -> FloatArr:
    """Score of one more replica of ``var`` on each of ``nodes`` (racks when ``hrs`` is None,
    else cars staying ``hrs`` hours today; ``memf``: their free memory)."""
    f = work.fleet
    kw = var.watts / 1000.0
    sc: FloatArr = (
        info.weight * min(var.tokens_per_second, need)
        - kw * f.cost[nodes]
        + pref
        - FIT_WEIGHT * (memf - var.memory_mib) / f.mem_max
    )
    if hrs is not None:
        # pool energy is spent by the hour: prefer cars whose stay costs the pool least
        sc = sc - f.pool_price[f.pool[nodes]] * kw * hrs
        if work.rank_term and len(f.pool_kw_ref):
            # rearrangement: on a budgeted pool, hungrier replicas take the cars that
            # leave soonest and frugal ones the long stays (sum of kW x h is smallest)
            pn = f.pool[nodes]
            sc = sc - RANK_WEIGHT * (f.pool_price[pn] > 0) * (kw - f.pool_kw_ref[pn]) * (
                hrs - f.pool_h_ref[pn]
            )
    if info.job.warm:  # a node that holds the model: load, not fetch (model delivery)
        sc = sc + WARM_BONUS * warm_mask(f, info, var)[nodes]
    if len(f.popularity):
        # leave nodes that many (restricted) jobs can use to those jobs
        sc = sc - POP_WEIGHT * f.popularity[nodes]
    pr = work.prices
    if pr is not None:
        if hrs is None:
            sc = sc - pr.tank[f.tank[nodes]] * kw - pr.mem[nodes] * var.memory_mib
        else:
            sc = sc - pr.pool[f.pool[nodes]] * kw * hrs
            sc = sc - pr.mem[nodes] * var.memory_mib
    return sc


def warm_mask(f: Fleet, info: JobInfo, var: Variant) -> FloatArr:
    """Per node, 1.0 where the node's model cache holds ``var`` of the job (``Job.warm``), else
    0.0; built from the job's warm entries (not a walk over the nodes) once per fleet."""
    key = (info.job.name, var.name)
    mask = f.warm.get(key)
    if mask is None:
        mask = np.zeros(len(f.names))
        held = [f.index[n] for n, v in info.job.warm if v == var.name and n in f.index]
        mask[held] = 1.0
        f.warm[key] = mask
    return mask


def _pass_candidates(
    work: Work,
    info: JobInfo,
    need: float,
    limit: int,
    only: str | None = None,
    keep_all: bool = False,
    cap_tps: float = INF,
) -> tuple[IntArr, list[Variant], IntArr, int]:
    """Vectorised scoring of the nodes for one more replica of ``info``.

    Returns up to ``limit`` candidate node indices (best first), the variant list and per
    candidate the index into it, and how many nodes were feasible in all. ``keep_all``: also
    nodes where one more replica scores <= 0 (to reach ``min_replicas`` whatever it earns).
    ``cap_tps``: only variants serving at most this many tokens/s."""
    f = work.fleet
    ok = work.ok_of(info)
    nr = f.n_racks
    idx_parts: list[IntArr] = []
    score_parts: list[FloatArr] = []
    variants: list[Variant] = []
    # the most kW any tank has left for new work (an eligible rack is never in the sentinel
    # slot: its tank is unknown): a rack variant drawing more fits nowhere, skip its arrays
    tank_room = f.tank_free_new[:-1] - work.tank_used[:-1]
    tank_most = float(tank_room.max()) if tank_room.size else -INF
    for t, lo, hi in (("Rack", 0, nr), ("Vehicle", nr, len(f.names))):
        ranked = info.ranked.get(t)
        if not ranked or hi <= lo or (only is not None and t != only):
            continue
        if t == "Rack":
            ranked = [v for v in ranked if tank_most + EPS >= v.watts / 1000.0]
            if not ranked:
                continue
        remaining = ok[lo:hi]
        if not remaining.any():
            continue
        memf = work.mem_free[lo:hi]
        hrs = f.hours_today[lo:hi]
        if t == "Rack":
            room = (f.tank_free_new - work.tank_used)[f.tank[lo:hi]]
        else:
            e_room = f.energy_new[lo:hi] - work.e_used[lo:hi]
            p_room = (f.pool_free_new - work.pool_used)[f.pool[lo:hi]]
        pref = work.bonus if info.preferred == t else 0.0
        last = len(ranked) - 1
        for i, var in enumerate(ranked):
            if var.tokens_per_second > cap_tps + EPS:
                continue
            kw = var.watts / 1000.0
            fit = remaining & (memf + EPS >= var.memory_mib)
            if t == "Rack":
                fit &= room + EPS >= kw
            else:
                fit &= (e_room + EPS >= kw) & (p_room + EPS >= kw * hrs)
            sel = np.flatnonzero(fit)
            if sel.size == 0:
                continue
            variants.append(var)
            nodes = sel + lo if lo else sel
            sc = _score(
                work, info, var, nodes, memf[sel], hrs[sel] if t == "Vehicle" else None, need, pref
            )
            idx_parts.append(nodes)
            score_parts.append(sc)
            if i == last:
                break
            remaining = remaining & ~fit
            if not remaining.any():
                break
    nodes, choice, total = _best(idx_parts, score_parts, limit, keep_all)
    return nodes, variants, choice, total


def _best(
    idx_parts: list[IntArr], score_parts: list[FloatArr], limit: int, keep_all: bool
) -> tuple[IntArr, IntArr, int]:
    """Of the scored nodes (one part per variant), up to ``limit`` best first (score, then
    node index), each with its part's index, and how many scored > 0 (all with ``keep_all``)."""
    if not idx_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, 0
    idx = np.concatenate(idx_parts) if len(idx_parts) > 1 else idx_parts[0]
    score = np.concatenate(score_parts) if len(score_parts) > 1 else score_parts[0]
    pos = np.arange(score.size) if keep_all else np.flatnonzero(score > 0)
    total = int(pos.size)
    neg = -score[pos]
    if total > limit:
        part = np.argpartition(neg, limit - 1)[:limit]
        pos = pos[part]
        neg = neg[part]
    nodes = idx[pos]
    order = np.lexsort((nodes, neg))
    pos = pos[order]
    if len(idx_parts) == 1:
        choice = np.zeros(pos.size, dtype=np.int64)
    else:  # the variant of each position: the part it falls in
        choice = np.searchsorted(np.cumsum([p.size for p in idx_parts]), pos, side="right")
    return nodes[order], choice, total


def fill_job(
    work: Work, info: JobInfo, only: str | None = None, overshoot: Overshoot = "any"
) -> None:
    """Add replicas of one job toward its target, best marginal value first (on ``only``'s
    target kind when given).  ``overshoot`` limits the variants by what the job still needs
    (the floor aside): ``"none"`` only those serving no more than that, ``"least"`` also the
    smallest that covers it, ``"any"`` every variant."""
    job = info.job
    name = job.name
    if job.spread.max_replicas_per_node <= 0:
        return
    limit = 0
    per_node = job.spread.max_replicas_per_node
    min_tps = min((v.tokens_per_second for vs in info.ranked.values() for v in vs), default=1.0)

    def below_min() -> bool:
        return work.count.get(name, 0) < job.min_replicas

    while True:
        need = job.target_tokens_per_second - work.served.get(name, 0.0)
        slots = job.max_replicas - work.count.get(name, 0)
        if (need <= EPS and not below_min()) or slots <= 0:
            return
        want = min(slots, max(int(max(need, 0.0) / max(min_tps, EPS)) + 1, job.min_replicas))
        limit = max(limit, 2 * want + 16)
        # replicas.min holds whatever the target says (0, absent, or met by fewer replicas)
        short = below_min()
        cap = INF if short else _tps_cap(info, max(need, 0.0), overshoot)
        cand, variants, choice, total = _pass_candidates(
            work, info, max(need, 0.0), limit, only, keep_all=short, cap_tps=cap
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
                # the node's spread limit first (a dict look-up; fits() would refuse it too)
                and work.job_node.get((name, k), 0) < per_node
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


Overshoot = Literal["any", "least", "none"]


def _tps_cap(info: JobInfo, need: float, overshoot: Overshoot) -> float:
    """Most tokens/s one more replica may serve under ``overshoot`` (see :func:`fill_job`)."""
    if overshoot == "any":
        return INF
    if overshoot == "none":
        return need
    covering = [v.tokens_per_second for vs in info.ranked.values() for v in vs]
    return min((x for x in covering if x + EPS >= need), default=INF)


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


PRICE_START = 0.25
"""First price of a saturated resource, as a fraction of the typical value per unit of it."""


PRICE_UP = 1.7


PRICE_DOWN = 0.5


PRICE_ROUNDS = 8
"""Price-directed re-runs on small fleets (deterministic; each is one greedy pass)."""


def initial_prices(fleet: Fleet) -> Prices:
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


def update_prices(fleet: Fleet, work: Work, prices: Prices) -> Prices:
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


def plan_once(
    snapshot: Snapshot, fleet: Fleet, order: list[str], mode: str, prices: Prices | None = None
) -> tuple[float, Work]:
    """One greedy pass in fill order ``mode``: (its objective, its state)."""
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
    # the plan's objective as :func:`assemble` would report it (evictions reconciled first)
    reconcile_evictions(work)
    removed = sum(e.replicas for e in work.evictions)
    return work_objective(work, removed, snapshot.weights.move_cost), work
