"""Solver entry points (signatures are the contract with the operator)."""

from __future__ import annotations

from tokenfleet.placement.heuristic import plan_heuristic, replan_node_heuristic
from tokenfleet.placement.model import Plan, Snapshot


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
    from dataclasses import replace

    return plan_heuristic(replace(snapshot, placements=previous.assignments))


def replan_due(snapshot: Snapshot, previous: Plan) -> Plan:
    """Re-plan because time reached ``previous.next_deadline`` and no node changed: the
    incremental path re-checks the nodes whose time threshold passed (same contract as
    :func:`replan_node` without a changed node), else a full :func:`plan`."""
    out = replan_node_heuristic(snapshot, previous, None)
    if out is not None:
        return out
    from dataclasses import replace

    return plan_heuristic(replace(snapshot, placements=previous.assignments))


def solve_milp(snapshot: Snapshot, time_limit_s: float = 30.0, mip_rel_gap: float = 1e-4) -> Plan:
    """Exact MILP (``scipy.optimize.milp``, HiGHS) over the same objective and hard constraints
    (hysteresis included).  ``Plan.bound`` is the solver's best proven upper bound on the
    objective; ``Plan.objective`` the value of the plan it returns."""
    from tokenfleet.placement.milp import solve

    return solve(snapshot, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap)
