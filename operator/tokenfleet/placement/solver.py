"""Solver entry points (signatures are the contract with the operator) and the orchestration of
the heuristic: greedy passes (:mod:`~tokenfleet.placement.greedy`), the LP-guided start
(:mod:`~tokenfleet.placement.relax`), local search (:mod:`~tokenfleet.placement.improve`),
preemption (:mod:`~tokenfleet.placement.preempt`), plan assembly
(:mod:`~tokenfleet.placement.assemble`) and the incremental path
(:mod:`~tokenfleet.placement.incremental`).  The top of the package's layers: nothing in
``placement`` imports it but ``__init__``."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from tokenfleet.placement.assemble import assemble, job_order
from tokenfleet.placement.greedy import (
    MODES,
    PRICE_ROUNDS,
    WORK_BUDGET,
    final_trim,
    initial_prices,
    plan_once,
    update_prices,
)
from tokenfleet.placement.improve import improve
from tokenfleet.placement.incremental import arm_deadlines, next_deadline, replan_node_heuristic
from tokenfleet.placement.milp import solve
from tokenfleet.placement.model import Plan, Snapshot
from tokenfleet.placement.preempt import preempt
from tokenfleet.placement.relax import GUIDE_MAX_WORK, lp_guide, plan_guided
from tokenfleet.placement.state import build_fleet, node_popularity, pool_references
from tokenfleet.placement.work import Work, min_floor, work_objective


def plan(snapshot: Snapshot) -> Plan:
    """Full plan with the fast heuristic.

    Keeps every current placement that still meets the hard limits (hysteresis: existing
    placements only need the hard limit, new ones need the band), evicts the rest with a reason,
    then fills jobs toward their targets by priority and trims replicas a job does not need.
    Deterministic for a given snapshot.  Re-planning an unchanged input (its own assignments as
    ``snapshot.placements``, tank loads updated to include them) evicts nothing.
    """
    return plan_heuristic(snapshot)


def replan_node(snapshot: Snapshot, previous: Plan, node_name: str) -> Plan:
    """Incremental re-plan after one *node* changed (a car unplugs, its SoC drops).

    Contract:

    * ``node_name`` names a rack node or a vehicle.  A tank is not a node: a tank's telemetry,
      cordon or leak changes the budget of every node in it, so tank events take a full
      :func:`plan`; a tank's name raises :class:`ValueError` saying so.
    * ``snapshot`` is the new state: only ``node_name``'s fields and ``now`` may differ from the
      snapshot ``previous`` came from; ``previous.assignments`` are taken as the current
      placements.  Tanks, pools, jobs and weights must be equal (else a full plan is run).
    * Time moves: besides ``node_name``, every node whose time threshold (drain lead and its
      band, charge by departure at its draw, stale telemetry) ``snapshot.now`` crossed is
      re-checked, from a heap of those moments; new work placed in a chain meets the energy
      band until the chain's end.  A chain is bounded: after ``CHAIN_SECONDS`` of time,
      ``CHAIN_STEPS`` steps, the next UTC midnight or a tank's telemetry turning stale, the
      result is a full plan.  ``Plan.next_deadline`` says when the next re-plan is due.

    Evicts what no longer fits on the re-checked nodes and re-places only those replicas;
    nothing else moves.  Job shortfalls are refreshed for the affected jobs only.  Falls back
    to :func:`plan` (with ``previous.assignments`` as current placements) whenever the cache
    cannot serve the step (none, used, chain ended, identity or inputs changed, node gone).
    """
    if any(t.name == node_name for t in snapshot.tanks) and not (
        any(r.name == node_name for r in snapshot.racks)
        or any(v.name == node_name for v in snapshot.vehicles)
    ):
        raise ValueError(
            f"node_name: {node_name!r} is a tank, not a node; a tank change needs a full plan "
            "(call plan(snapshot))"
        )
    out = replan_node_heuristic(snapshot, previous, node_name)
    if out is not None:
        return out
    return plan_heuristic(replace(snapshot, placements=previous.assignments))


def replan_due(snapshot: Snapshot, previous: Plan) -> Plan:
    """Re-plan because time reached ``previous.next_deadline`` and no node changed: the
    incremental path re-checks the nodes whose time threshold passed (same contract as
    :func:`replan_node` without a changed node), else a full :func:`plan`."""
    out = replan_node_heuristic(snapshot, previous, None)
    if out is not None:
        return out
    return plan_heuristic(replace(snapshot, placements=previous.assignments))


def solve_milp(snapshot: Snapshot, time_limit_s: float = 30.0, mip_rel_gap: float = 1e-4) -> Plan:
    """Exact MILP (``scipy.optimize.milp``, HiGHS) over the same objective and hard constraints
    (hysteresis included).  ``Plan.bound`` is the solver's best proven upper bound on the
    objective; ``Plan.objective`` the value of the plan it returns."""
    return solve(snapshot, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap)


def plan_heuristic(
    snapshot: Snapshot,
    starts: int | None = None,
    improve_budget: int | None = None,
    guided: bool | None = None,
) -> Plan:
    """Greedy plan.  ``starts`` greedy passes (default from
    :data:`~tokenfleet.placement.greedy.WORK_BUDGET`): first the fill orders in
    :data:`~tokenfleet.placement.greedy.MODES`, then price-directed re-runs; the best objective is
    kept and then improved by the bounded local search (:mod:`tokenfleet.placement.improve`) with
    ``improve_budget`` work units (default: scaled to the fleet's size; 0 = greedy only).
    ``guided`` (default: fleets of at most :data:`~tokenfleet.placement.relax.GUIDE_MAX_WORK`
    nodes x jobs) adds the LP-relaxation-guided start (:mod:`tokenfleet.placement.relax`),
    improved the same way; the better of the two plans is returned.

    The cyclic garbage collector is paused while it runs (:func:`collector_paused`)."""
    with collector_paused():
        return _plan_heuristic(snapshot, starts, improve_budget, guided)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block (and restore it after).

    A plan allocates some 10^5 short-lived containers (dict keys, arrays' wrappers), enough to
    trigger a full collection each time; a full collection walks every object of the process,
    so without the pause the plan's time grows with the caller's heap (an operator's caches, a
    benchmark's instances) rather than with the fleet.  The solver builds no reference cycles
    that outlive the call; whatever garbage there is is collected after the block."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _plan_heuristic(
    snapshot: Snapshot, starts: int | None, improve_budget: int | None, guided: bool | None
) -> Plan:
    fleet = build_fleet(snapshot)
    fleet.popularity = node_popularity(fleet)
    pool_references(fleet)
    order = job_order(snapshot)
    if starts is None:
        starts = WORK_BUDGET // max(1, len(fleet.names) * len(order))
    starts = max(1, min(starts, len(MODES) + PRICE_ROUNDS))
    best: tuple[float, Work] | None = None
    for mode in MODES[:starts]:
        scored = plan_once(snapshot, fleet, order, mode)
        if best is None or scored[0] > best[0] + 1e-9:
            best = scored
    if starts > len(MODES):
        prices = initial_prices(fleet)
        for _ in range(starts - len(MODES)):
            scored = plan_once(snapshot, fleet, order, "priced", prices)
            if best is None or scored[0] > best[0] + 1e-9:
                best = scored
            prices = update_prices(fleet, scored[1], prices)
    assert best is not None
    work = best[1]
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
