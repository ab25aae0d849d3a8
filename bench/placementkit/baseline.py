"""A baseline that acts like kube-scheduler's default profile, for comparison only.

Filters on memory alone (NodeResourcesFit; the variant's targets stand in for node affinity),
scores by least allocated memory (NodeResourcesLeastAllocated), one replica at a time.  It knows
nothing of power, heat, batteries, residency, ownership or attestation, and never evicts on its
own: it re-places replicas only when their node is gone or no longer Ready (here: a vehicle that
is unplugged or has left), as the node lifecycle controller would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from tokenfleet.placement.assemble import objective
from tokenfleet.placement.model import (
    Eviction,
    Job,
    Placement,
    Plan,
    Reason,
    Snapshot,
    Variant,
    VehicleNode,
)


@dataclass
class _State:
    names: list[str]
    index: dict[str, int]
    is_vehicle: npt.NDArray[np.bool_]
    cap: npt.NDArray[np.float64]
    free: npt.NDArray[np.float64]
    ready: npt.NDArray[np.bool_]
    units: dict[tuple[str, int, str], int]
    per_job: dict[str, dict[int, int]]


def _ready(v: VehicleNode) -> bool:
    return v.plugged_in is not False


def _build(snapshot: Snapshot) -> _State:
    names = [r.name for r in snapshot.racks] + [v.name for v in snapshot.vehicles]
    cap = np.array(
        [float(r.memory_mib) for r in snapshot.racks]
        + [float(v.memory_mib) for v in snapshot.vehicles]
    )
    is_vehicle = np.array([False] * len(snapshot.racks) + [True] * len(snapshot.vehicles))
    ready = np.array([True] * len(snapshot.racks) + [_ready(v) for v in snapshot.vehicles])
    return _State(
        names, {n: i for i, n in enumerate(names)}, is_vehicle, cap, cap.copy(), ready, {}, {}
    )


def _variant_for(job: Job) -> Variant | None:
    vs = [v for v in job.variants if v.targets & job.targets]
    return max(vs, key=lambda v: (v.tokens_per_second, v.name)) if vs else None


def _place_one(st: _State, job: Job, var: Variant) -> int | None:
    allowed = np.zeros(len(st.names), dtype=np.bool_)
    if "Rack" in var.targets and "Rack" in job.targets:
        allowed |= ~st.is_vehicle
    if "Vehicle" in var.targets and "Vehicle" in job.targets:
        allowed |= st.is_vehicle
    fit = allowed & st.ready & (st.free >= var.memory_mib)
    for k, n in st.per_job.get(job.name, {}).items():
        if n >= job.spread.max_replicas_per_node:
            fit[k] = False
    if not fit.any():
        return None
    score = np.where(fit, st.free / np.maximum(st.cap, 1.0), -1.0)
    k = int(np.argmax(score))
    st.free[k] -= var.memory_mib
    _count(st, job.name, k, var.name, 1)
    return k


def _count(st: _State, job: str, k: int, variant: str, n: int) -> None:
    key = (job, k, variant)
    st.units[key] = st.units.get(key, 0) + n
    if st.units[key] <= 0:
        del st.units[key]
    per = st.per_job.setdefault(job, {})
    per[k] = per.get(k, 0) + n
    if per[k] <= 0:
        del per[k]


def _to_plan(snapshot: Snapshot, st: _State, evictions: list[Eviction], solver: str) -> Plan:
    assignments = tuple(
        Placement(j, st.names[k], v, n) for (j, k, v), n in sorted(st.units.items()) if n > 0
    )
    current = {(p.job, p.node, p.variant): p.replicas for p in snapshot.placements}
    added = tuple(
        Placement(a.job, a.node, a.variant, a.replicas - current.get((a.job, a.node, a.variant), 0))
        for a in assignments
        if a.replicas > current.get((a.job, a.node, a.variant), 0)
    )
    return Plan(
        assignments=assignments,
        added=added,
        evictions=tuple(evictions),
        objective=objective(snapshot, assignments),
        solver=solver,
        cache=st,
    )


def plan_baseline(snapshot: Snapshot) -> Plan:
    st = _build(snapshot)
    jobs = {j.name: j for j in snapshot.jobs}
    evictions: list[Eviction] = []
    for p in snapshot.placements:
        k = st.index.get(p.node)
        if k is None or p.job not in jobs or not st.ready[k]:
            evictions.append(Eviction(p.job, p.node, p.variant, p.replicas, Reason.NODE_REMOVED))
            continue
        var = next((v for v in jobs[p.job].variants if v.name == p.variant), None)
        if var is None:
            continue
        st.free[k] -= var.memory_mib * p.replicas
        _count(st, p.job, k, p.variant, p.replicas)
    for job in sorted(snapshot.jobs, key=lambda j: (-j.priority, j.name)):
        var = _variant_for(job)
        if var is None:
            continue
        want = min(
            job.max_replicas, math.ceil(job.target_tokens_per_second / var.tokens_per_second)
        )
        have = sum(st.per_job.get(job.name, {}).values())
        for _ in range(max(want - have, 0)):
            if _place_one(st, job, var) is None:
                break
    return _to_plan(snapshot, st, evictions, "baseline")


def replan_node_baseline(snapshot: Snapshot, previous: Plan, node_name: str) -> Plan:
    """The node went NotReady (or left): its replicas are re-placed by least allocated."""
    st = previous.cache
    if not isinstance(st, _State):
        return plan_baseline(replace(snapshot, placements=previous.assignments))
    k = st.index[node_name]
    node = next((v for v in snapshot.vehicles if v.name == node_name), None)
    st.ready[k] = node is not None and _ready(node)
    evictions: list[Eviction] = []
    added: list[Placement] = []
    touched: set[tuple[str, str, str]] = set()
    if not st.ready[k]:
        jobs = {j.name: j for j in snapshot.jobs}
        for (j, kk, v), n in list(st.units.items()):
            if kk != k:
                continue
            job = jobs[j]
            var = next(x for x in job.variants if x.name == v)
            _count(st, j, kk, v, -n)
            st.free[k] += var.memory_mib * n
            evictions.append(Eviction(j, node_name, v, n, Reason.NODE_REMOVED))
            touched.add((j, node_name, v))
            for _ in range(n):
                got = _place_one(st, job, var)
                if got is not None:
                    added.append(Placement(j, st.names[got], v, 1))
                    touched.add((j, st.names[got], v))
    kept = [a for a in previous.assignments if (a.job, a.node, a.variant) not in touched]
    for j, node_n, v in sorted(touched):
        n = st.units.get((j, st.index[node_n], v), 0)
        if n > 0:
            kept.append(Placement(j, node_n, v, n))
    return Plan(
        assignments=tuple(kept),
        added=tuple(added),
        evictions=tuple(evictions),
        solver="baseline",
        cache=st,
    )
