"""When the fleet planner plans and how (pure; the planner passes the clock's readings in).

Two decisions, kept apart from the planner's I/O so they can be tested on their own:

* **when** (:class:`Cadence`): a change after a quiet spell is planned at once (the leading
  edge: an unplug is not held back by the debounce); changes that arrive while a plan runs or
  within a gap after it are gathered and planned together, so a burst of Node changes costs
  one plan per gap, not one per Node. The gap is :data:`DUTY` times the last plan's duration,
  at most ``debounce``: cheap incremental plans follow each other closely (a car plugged back
  in just before another unplugs does not hold the unplug back by a whole debounce), and under
  a storm of changes planning takes at most about 1 / (1 + DUTY) of the time. A plan that
  must be full (a new or deleted Node, a job, tank, pool or runtime change, too many changed
  Nodes) waits, besides, until
  ``full_min_interval`` has passed since the last full plan: a storm of such changes runs at
  most one full plan per that interval, and the changes meanwhile are gathered into it.
* **how** (:func:`choose`): which Nodes changed is read from the snapshots themselves
  (:func:`changed_nodes`: the engine's node records, previous plan's snapshot against this
  one), not from the signals, so a Node that changed without being signalled (a runtime whose
  failure back-off ended, an endpoint that appeared) is re-checked too. With the same Node set,
  the same current placements and at most ``max_nodes`` changed Nodes, the plan is incremental:
  one ``replan_node`` step per changed Node (each step re-checks that Node in the new snapshot;
  the engine checks that tanks, pools, jobs and weights are unchanged, else it runs a full plan
  itself; at most one of them may hold replicas, see :func:`choose`), or ``replan_due`` when no
  Node changed (time alone: deadlines). The periodic resync
  is such a plan too; it is full only while a job is short of its target (a full plan may find
  it room an incremental step does not look for) or when ``full_resync`` passed since the last
  full plan.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from tokenfleet.placement import RackNode, Snapshot, VehicleNode

__all__ = ["DUTY", "Cadence", "Mode", "changed_nodes", "choose"]

DUTY: Final = 3.0
"""The gap after a plan is this many times its duration (at most the debounce)."""


class Mode(enum.Enum):
    FULL = "full"
    NODES = "nodes"
    """incremental, one ``replan_node`` step per changed Node"""
    DUE = "due"
    """incremental, ``replan_due`` (no Node changed; time moved)"""


def _records(snapshot: Snapshot) -> Iterable[RackNode | VehicleNode]:
    yield from snapshot.racks
    yield from snapshot.vehicles


def changed_nodes(previous: Snapshot | None, snapshot: Snapshot) -> frozenset[str] | None:
    """The Nodes whose engine record differs between two snapshots; ``None`` when the set of
    Nodes itself differs (one came, one went, one changed kind) or there is no previous one."""
    if previous is None:
        return None
    if len(previous.racks) != len(snapshot.racks) or len(previous.vehicles) != len(
        snapshot.vehicles
    ):
        return None
    changed: list[str] = []
    for old, new in zip(_records(previous), _records(snapshot), strict=True):
        if old.name != new.name:
            return None  # both are sorted by name: another Node here
        if old is not new and old != new:  # the same object: a record reused (RecordCache)
            changed.append(new.name)
    return frozenset(changed)


@dataclass(frozen=True)
class Choice:
    mode: Mode
    nodes: tuple[str, ...] = ()
    why: str = ""


def choose(
    *,
    has_previous: bool,
    full_signalled: bool,
    same_placements: bool,
    changed: frozenset[str] | None,
    max_nodes: int,
    full_due: bool,
    holding: frozenset[str] = frozenset(),
    deadline_passed: bool = False,
) -> Choice:
    """Full or incremental, and over which Nodes (module docstring).

    A step re-places the replicas its Node lost on the records it has, and only its own Node's
    record is renewed in that step: so the changed Nodes that hold no replica (``holding``: the
    Nodes the previous plan placed on) go first — a step there only renews the record — and at
    most one changed Node may hold replicas, last, when every other record is new. Two or more
    such Nodes, or several changed Nodes when a deadline passed (the first step re-checks the
    Nodes whose deadline passed, before the other records are renewed), take a full plan."""
    if not has_previous:
        return Choice(Mode.FULL, why="first plan")
    if full_signalled:
        return Choice(Mode.FULL, why="a change only a full plan takes")
    if full_due:
        return Choice(Mode.FULL, why="full plan due")
    if not same_placements:
        return Choice(Mode.FULL, why="current placements differ from the previous plan")
    if changed is None:
        return Choice(Mode.FULL, why="a Node came or went")
    if len(changed) > max_nodes:
        return Choice(Mode.FULL, why=f"{len(changed)} Nodes changed")
    if not changed:
        return Choice(Mode.DUE)
    busy = sorted(changed & holding)
    if len(busy) > 1:
        return Choice(Mode.FULL, why=f"{len(busy)} changed Nodes hold replicas")
    if len(changed) > 1 and deadline_passed:
        return Choice(Mode.FULL, why="several Nodes changed and a deadline passed")
    return Choice(Mode.NODES, (*sorted(changed - holding), *busy))


@dataclass
class Cadence:
    """When to plan next (module docstring). Times are the planner clock's monotonic seconds."""

    debounce: float
    full_min_interval: float
    full_resync: float
    last_plan_end: float | None = None
    last_full_end: float | None = None
    last_duration: float = 0.0

    def delay(self, now: float, *, needs_full: bool) -> float:
        """Seconds to wait before planning what was signalled (0: plan now)."""
        wait = 0.0
        if self.last_plan_end is not None:
            gap = min(self.debounce, DUTY * self.last_duration)
            wait = max(wait, self.last_plan_end + gap - now)
        if needs_full and self.last_full_end is not None:
            wait = max(wait, self.last_full_end + self.full_min_interval - now)
        return max(wait, 0.0)

    def full_due(self, now: float) -> bool:
        """A full plan is due by time alone (``full_resync`` since the last one)."""
        return self.last_full_end is not None and now - self.last_full_end >= self.full_resync

    def planned(self, now: float, *, full: bool, took: float | None = None) -> None:
        """A plan ended at ``now`` after ``took`` seconds (``None``: as long as the debounce)."""
        self.last_plan_end = now
        self.last_duration = self.debounce / DUTY if took is None else max(took, 0.0)
        if full:
            self.last_full_end = now
