"""Solver entry points (signatures are the contract with the operator)."""

from __future__ import annotations

from tokenfleet.placement.model import Plan, Snapshot


def plan(snapshot: Snapshot) -> Plan:
    """Full plan with the fast heuristic.

    Keeps every current placement that still meets the hard limits (hysteresis: existing
    placements only need the hard limit, new ones need the band), evicts the rest with a reason,
    then fills jobs toward their targets by priority.  Deterministic for a given snapshot.
    Re-planning an unchanged input (its own assignments as ``snapshot.placements``) moves nothing.
    """
    raise NotImplementedError


def replan_node(snapshot: Snapshot, previous: Plan, node_name: str) -> Plan:
    """Incremental re-plan after ``node_name`` changed (only that node; ``snapshot`` is the new
    state, ``snapshot.placements`` should equal ``previous.assignments``).  Re-checks that node,
    evicts what no longer fits there and re-places only those replicas; nothing else moves.
    Falls back to :func:`plan` when ``previous`` carries no solver cache.
    """
    raise NotImplementedError


def solve_milp(snapshot: Snapshot, time_limit_s: float = 30.0, mip_rel_gap: float = 1e-4) -> Plan:
    """Exact MILP (``scipy.optimize.milp``, HiGHS) over the same objective and hard constraints.
    ``Plan.bound`` is the solver's best proven upper bound on the objective."""
    raise NotImplementedError
