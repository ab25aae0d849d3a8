"""The preemption gate runs on every plan and costs O(jobs) when no short job outranks the work
placed; a sweep's reach is bounded by what its short jobs want, not by the fleet's size."""

from __future__ import annotations

from tests.placement.fleet_factory import FP16, NOW, job, rack, tank

from tokenfleet.placement import Placement, Reason, Snapshot, check_plan, plan
from tokenfleet.placement.assemble import job_order
from tokenfleet.placement.greedy import plan_once
from tokenfleet.placement.preempt import (
    SWEEP_NODES_MIN,
    SWEEP_NODES_PER_REPLICA,
    _blocked,
    _index,
    _sweep_victims,
    _want,
)
from tokenfleet.placement.state import build_fleet
from tokenfleet.placement.work import Work


def racks_held(n: int, low_priority: int, high_priority: int, high_target: float) -> Snapshot:
    """``n`` racks, each holding one FP16 replica of ``ns/low`` (room for one replica only);
    ``ns/high`` arrives wanting ``high_target`` tokens/s."""
    racks = tuple(rack(f"rack-{i:04d}", memory_mib=20000) for i in range(n))
    low = job(
        "ns/low",
        targets=frozenset({"Rack"}),
        target_tokens_per_second=300.0 * n,
        max_replicas=n,
        priority=low_priority,
    )
    high = job(
        "ns/high",
        targets=frozenset({"Rack"}),
        target_tokens_per_second=high_target,
        max_replicas=n,
        priority=high_priority,
    )
    return Snapshot(
        now=NOW,
        tanks=(
            tank(
                power_capacity_kw=1000.0,
                heat_rejection_kw=2000.0,
                it_load_kw=0.8 * n,
                flow_lpm=3000.0,
                design_flow_lpm=3000.0,
            ),
        ),
        racks=racks,
        jobs=(low, high),
        placements=tuple(Placement("ns/low", r.name, FP16.name) for r in racks),
    )


def greedy_state(s: Snapshot) -> tuple[Work, list[str]]:
    """The state preemption starts from: the greedy's pass (current placements kept)."""
    fleet = build_fleet(s)
    order = job_order(s)
    return plan_once(s, fleet, order, "priority")[1], order


def test_gate_is_empty_when_no_short_job_outranks_the_placed_work() -> None:
    # ns/high (priority 10) is short, but everything placed has priority 1000
    work, order = greedy_state(racks_held(3, low_priority=1000, high_priority=10, high_target=300))
    assert work.served.get("ns/high", 0.0) == 0.0
    assert _blocked(work, order) == []


def test_gate_names_a_short_job_blocked_by_lower_priority_work() -> None:
    work, order = greedy_state(racks_held(3, low_priority=10, high_priority=1000, high_target=300))
    assert _blocked(work, order) == ["ns/high"]


def test_sweep_reach_is_bounded_by_what_the_short_jobs_want() -> None:
    n = 400
    s = racks_held(n, low_priority=10, high_priority=1000, high_target=300.0)
    work, _order = greedy_state(s)
    victims = _sweep_victims(work, _index(work), ["ns/high"], 1000)
    nodes = {u[1] for u, _n in victims}
    # ns/high wants 300 tokens/s of FP16 replicas (300 tokens/s each; its remainder over
    # that, rounded up past it): 2, so at most 8 x 2 + 128 nodes are cleared, not all 400
    want = _want(work, work.fleet.jobs["ns/high"])
    assert want == 2
    assert 0 < len(nodes) <= SWEEP_NODES_PER_REPLICA * want + SWEEP_NODES_MIN < n
    p = plan(s)
    assert check_plan(s, p) == []
    assert sum(a.replicas for a in p.assignments if a.job == "ns/high") == 1
    assert [(e.job, e.replicas, e.reason) for e in p.evictions] == [("ns/low", 1, Reason.PREEMPTED)]
