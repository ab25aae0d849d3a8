"""Priority preemption on a running fleet: a higher-priority job takes capacity from
lower-priority replicas when the gain outweighs the move costs, never the reverse, and an
unchanged world still moves nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.placement.fleet_factory import FP16, NOW, job, rack, tank, with_load_of

from tokenfleet.placement import Placement, Reason, Snapshot, check_plan, plan, solve_milp
from tokenfleet.placement.assemble import objective


def full_racks(high_priority: int, low_priority: int = 10, high_target: float = 900.0) -> Snapshot:
    """Three racks, each holding one FP16 replica of ``ns/low`` (memory for one replica only);
    ``ns/high`` arrives and wants three."""
    racks = tuple(rack(f"rack-{i}", memory_mib=20000) for i in range(3))
    low = job(
        "ns/low",
        targets=frozenset({"Rack"}),
        target_tokens_per_second=900.0,
        max_replicas=3,
        priority=low_priority,
    )
    high = job(
        "ns/high",
        targets=frozenset({"Rack"}),
        target_tokens_per_second=high_target,
        max_replicas=3,
        priority=high_priority,
    )
    return Snapshot(
        now=NOW,
        tanks=(tank(it_load_kw=10.0 + 1.5),),
        racks=racks,
        jobs=(low, high),
        placements=tuple(Placement("ns/low", r.name, FP16.name) for r in racks),
    )


def test_high_priority_job_preempts_lower_priority_replicas() -> None:
    s = full_racks(1000)
    p = plan(s)
    assert check_plan(s, p) == []
    high = [a for a in p.assignments if a.job == "ns/high"]
    assert sum(a.replicas for a in high) == 3
    assert {e.reason for e in p.evictions} == {Reason.PREEMPTED}
    assert sum(e.replicas for e in p.evictions) == 3
    assert all(e.job == "ns/low" for e in p.evictions)
    assert abs(p.objective - objective(s, p.assignments)) < 1e-6
    m = solve_milp(s, time_limit_s=20)
    assert m.bound is not None
    assert p.objective >= 0.97 * m.bound


def test_lower_priority_never_preempts_higher() -> None:
    s = full_racks(10, low_priority=1000)  # "ns/low" now holds the racks with priority 1000
    p = plan(s)
    assert p.evictions == ()
    assert not [a for a in p.assignments if a.job == "ns/high"]


def test_equal_priority_does_not_preempt() -> None:
    p = plan(full_racks(10, low_priority=10))
    assert p.evictions == ()


def test_preemption_only_when_gain_outweighs_move_cost() -> None:
    # priority 11 vs 10: 300 tokens/s x 0.01 = 3 per hour gained per replica < move cost 5
    # (the high job's replicas.min is 0 here: a floor is not weighed against move costs)
    floored = full_racks(11)
    s = replace(floored, jobs=(floored.jobs[0], replace(floored.jobs[1], min_replicas=0)))
    assert plan(s).evictions == ()
    # replicas.min of the higher-priority job holds: exactly one lower-priority replica makes room
    assert [(e.job, e.reason) for e in plan(floored).evictions] == [("ns/low", Reason.PREEMPTED)]
    # with a cheap move the same contention preempts
    cheap = replace(s, weights=replace(s.weights, move_cost=1.0))
    assert {e.reason for e in plan(cheap).evictions} == {Reason.PREEMPTED}


def test_preempted_replica_is_moved_where_capacity_allows() -> None:
    s = full_racks(1000, high_target=300.0)
    spare = rack("rack-spare", memory_mib=20000)
    s = replace(s, racks=(*s.racks, spare))
    p = plan(s)
    # rack-spare was free: the high job takes it without preempting anything
    assert p.evictions == ()
    s2 = replace(s, jobs=(s.jobs[0], replace(s.jobs[1], target_tokens_per_second=1200.0,
                                              max_replicas=4)))  # fmt: skip
    p2 = plan(s2)
    assert check_plan(s2, p2) == []
    assert {e.reason for e in p2.evictions} <= {Reason.PREEMPTED}


@pytest.mark.parametrize("high", [11, 200, 1000])
def test_replanning_after_preemption_moves_nothing(high: int) -> None:
    s = full_racks(high)
    first = plan(s)
    world = with_load_of(s, first)
    again = plan(world)
    assert again.evictions == ()
    assert again.added == ()
    assert check_plan(world, again) == []


def test_settled_phase_is_not_rerun_and_a_rerun_would_find_nothing() -> None:
    """A preemption run that ended because nothing more paid (budget left) marks the work
    settled; a second call on the same units returns at once - and running the phase anyway
    on them keeps nothing either (what the shortcut relies on)."""
    from tokenfleet.placement.assemble import job_order
    from tokenfleet.placement.greedy import plan_once
    from tokenfleet.placement.preempt import preempt
    from tokenfleet.placement.state import build_fleet

    s = full_racks(1000)
    fleet = build_fleet(s)
    order = job_order(s)
    _obj, work = plan_once(s, fleet, order, "share")
    assert preempt(work, order, s.weights.move_cost) > 0
    assert work.settled is not None
    assert work.settled[0] == work.version and work.settled[1] is fleet
    units = dict(work.units)
    assert preempt(work, order, s.weights.move_cost) == 0
    assert work.units == units
    work.settled = None  # force the phase to run again on the same units
    assert preempt(work, order, s.weights.move_cost) == 0
    assert work.units == units
