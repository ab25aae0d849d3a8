"""Pure placement engine (no kopf, no Kubernetes imports).

Entry points:

* :func:`plan` — fast heuristic full plan, ``plan(snapshot) -> Plan``.
* :func:`replan_node` — incremental re-plan after one node changed (a car unplugs, its SoC
  dropped) and time moved on: ``replan_node(snapshot, previous_plan, node_name) -> Plan``; moves
  only what must move.  Tank events need :func:`plan` (see the contract on
  :func:`replan_node`).
* :func:`replan_due` — the same when only time moved (``Plan.next_deadline`` passed).
* :func:`solve_milp` — exact MILP (scipy HiGHS) for small fleets and as the yardstick.
* :func:`check_plan` — independent hard-constraint checker (re-derives every rule).

Inputs and outputs are the frozen dataclasses in :mod:`tokenfleet.placement.model`.
"""

from tokenfleet.placement.checker import Violation, check_plan
from tokenfleet.placement.model import (
    Eviction,
    Job,
    JobShortfall,
    ObjectiveWeights,
    Placement,
    Plan,
    PoolPolicy,
    RackNode,
    Reason,
    Snapshot,
    Spread,
    Tank,
    UnusedNode,
    Variant,
    VehicleNode,
)
from tokenfleet.placement.solver import plan, replan_due, replan_node, solve_milp

__all__ = [
    "Eviction",
    "Job",
    "JobShortfall",
    "ObjectiveWeights",
    "Placement",
    "Plan",
    "PoolPolicy",
    "RackNode",
    "Reason",
    "Snapshot",
    "Spread",
    "Tank",
    "UnusedNode",
    "Variant",
    "VehicleNode",
    "Violation",
    "check_plan",
    "plan",
    "replan_due",
    "replan_node",
    "solve_milp",
]
