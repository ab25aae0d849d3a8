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
    """Incremental re-plan after ``node_name`` changed (a car unplugs, its SoC drops).

    ``snapshot`` is the new state; only ``node_name`` may differ from the snapshot ``previous``
    was computed from, and ``previous.assignments`` are taken as the current placements.
    Re-checks that node, evicts what no longer fits there and re-places only those replicas on
    other nodes; nothing else moves.  Job shortfalls are refreshed for the affected jobs only.
    Falls back to :func:`plan` (with ``previous.assignments`` as current placements) when
    ``previous`` carries no usable solver cache or the node left the snapshot.
    """
    out = replan_node_heuristic(snapshot, previous, node_name)
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
