"""Incremental re-plans (:func:`replan_node_heuristic`): re-check the node that changed and every
node whose time threshold passed (a heap of deadlines), re-place only what had to leave, within a
bounded chain after a full plan."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import replace
from typing import TypeVar

import numpy as np

from tokenfleet.placement.assemble import explain, pair_moves
from tokenfleet.placement.greedy import fill_job
from tokenfleet.placement.model import (
    Eviction,
    Placement,
    Plan,
    RackNode,
    Reason,
    Snapshot,
    UnusedNode,
    VehicleNode,
)
from tokenfleet.placement.state import (
    EPS,
    INF,
    Fleet,
    IntArr,
    NodeState,
    _fill_state,
    energy_deadline,
    rack_state,
    reason_of,
    seconds_to_next_utc_midnight,
    time_arrays,
    vehicle_state,
)
from tokenfleet.placement.work import Unit, Work, work_objective

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


def _cached_work(snapshot: Snapshot, previous: Plan) -> tuple[Work, list[str]] | None:
    """The previous plan's solver state when this step may take it over (else ``None``)."""
    cache = previous.cache
    if not isinstance(cache, tuple) or len(cache) != 2:
        return None
    work, order = cache
    if not isinstance(work, Work) or work.consumed:
        return None
    f0 = work.fleet
    if len(snapshot.jobs) != len(f0.jobs):
        return None
    if snapshot.now < f0.now or snapshot.now >= chain_end(work) or work.steps >= CHAIN_STEPS:
        return None
    if f0.inputs != (snapshot.tanks, snapshot.pools, snapshot.jobs, snapshot.weights):
        return None  # a tank, pool, job or weight changed: only a full plan re-derives those
    return work, order


def _recheck_nodes(
    snapshot: Snapshot, work: Work, node_name: str | None
) -> tuple[dict[int, VehicleNode | RackNode], set[int]] | None:
    """The nodes to re-check - ``node_name`` and those whose deadline ``snapshot.now`` passed
    (popped off the heap) - with their new records, and the set of them; ``None`` when one left
    or changed identity.  Takes the state over (``work.consumed``) once ``node_name`` passed."""
    f0 = work.fleet
    nodes: dict[int, VehicleNode | RackNode] = {}
    if node_name is not None:
        k0 = f0.index[node_name]
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
    return nodes, crossed


def _take_off(
    work: Work, nodes: dict[int, VehicleNode | RackNode], rank: dict[str, int]
) -> dict[int, list[tuple[Unit, int]]]:
    """Take every replica off the re-checked nodes under the old figures; what was there."""
    f0 = work.fleet
    here: dict[int, list[tuple[Unit, int]]] = {}
    for k in nodes:
        here[k] = sorted(work.node_units.get(k, {}).items(), key=lambda x: (rank[x[0][0]], x[0][2]))
        for u, n in here[k]:
            info = f0.jobs[u[0]]
            work.remove(info, k, info.variants[u[2]], n)
    return here


def _node_state(snapshot: Snapshot, nd: VehicleNode | RackNode) -> NodeState:
    if isinstance(nd, VehicleNode):
        pool = next((p for p in snapshot.pools if p.name == nd.pool), None)
        return vehicle_state(nd, pool, snapshot.now)
    tank = next((t for t in snapshot.tanks if t.name == nd.tank), None)
    return rack_state(nd, tank, snapshot.now)


def _refresh_fleet(
    snapshot: Snapshot, work: Work, nodes: dict[int, VehicleNode | RackNode]
) -> Fleet:
    """A copy of the fleet with the re-checked nodes' figures at ``snapshot.now`` (energy bands
    windowed to the chain's end); installs it in ``work`` with the policy masks updated."""
    f0 = work.fleet
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
        st = _node_state(snapshot, nd)
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
    return f


def _put_back(
    work: Work, here: dict[int, list[tuple[Unit, int]]], touched: set[tuple[str, str, str]]
) -> list[str]:
    """Put back what still fits under the hard limits (the rest is evicted, with its reason);
    returns the jobs that lost a replica, in node order."""
    f = work.fleet
    affected: list[str] = []
    for k in sorted(here):
        kname = f.names[k]
        why: Reason | None = reason_of(int(f.hard_code[k])) if f.hard_code[k] else None
        for u, n in here[k]:
            info = f.jobs[u[0]]
            var = info.variants[u[2]]
            work.current[u] = n
            touched.add((u[0], kname, u[2]))
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
    return affected


def _refill(
    work: Work,
    affected: list[str],
    rank: dict[str, int],
    nodes: dict[int, VehicleNode | RackNode],
    touched: set[tuple[str, str, str]],
) -> list[Placement]:
    """Re-fill the jobs that lost replicas; the replicas added (their nodes join ``nodes``: a
    new draw, a new deadline)."""
    f = work.fleet
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
    return added


def _update_records(
    work: Work,
    touched: set[tuple[str, str, str]],
    nodes: dict[int, VehicleNode | RackNode],
    crossed: set[int],
    added: list[Placement],
) -> None:
    """The plan's assignments, the deadline heap and the unused nodes after the step."""
    f = work.fleet
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
    for a in added:
        _set_item(work.unused_list, work.unused_pos, a.node, None)
    for k in sorted(crossed):
        if not work.node_units.get(k):
            c = int(f.hard_code[k]) or int(f.new_code[k])
            u_new = UnusedNode(f.names[k], reason_of(c) if c else Reason.NO_DEMAND)
            _set_item(work.unused_list, work.unused_pos, f.names[k], u_new)


def replan_node_heuristic(snapshot: Snapshot, previous: Plan, node_name: str | None) -> Plan | None:
    """Incremental path; ``None`` when the cache cannot be used (caller falls back).

    Re-checks ``node_name`` and every node whose time threshold (drain lead, charge by
    departure at its draw, stale telemetry) ``snapshot.now`` has crossed, evicts what no longer
    fits there and re-places it.  Takes over (mutates) the previous plan's solver state, so each
    plan's cache serves one incremental step; a second use, a chain past :data:`CHAIN_STEPS` or
    past :func:`chain_end` returns ``None``."""
    cached = _cached_work(snapshot, previous)
    if cached is None:
        return None
    work, order = cached
    if node_name is not None and node_name not in work.fleet.index:
        return None
    rechecked = _recheck_nodes(snapshot, work, node_name)
    if rechecked is None:
        return None
    nodes, crossed = rechecked
    rank = work.rank or {name: i for i, name in enumerate(order)}
    here = _take_off(work, nodes, rank)
    _refresh_fleet(snapshot, work, nodes)
    work.current = {}
    work.evictions = []
    touched: set[tuple[str, str, str]] = set()
    affected = _put_back(work, here, touched)
    added = _refill(work, affected, rank, nodes, touched)
    evictions = pair_moves(work.evictions, added)
    # explanations: reuse the previous ones, refresh affected jobs and the touched nodes
    _update_records(work, touched, nodes, crossed, added)
    shortfalls = [s for s in previous.job_shortfalls if s.job not in affected]
    if affected:
        sub, _ = explain(work, [n for n in order if n in affected], nodes=False)
        shortfalls.extend(sub)
        shortfalls.sort(key=lambda s: rank[s.job])
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
