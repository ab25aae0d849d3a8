"""Time moves between incremental re-plans: every time-dependent rule still holds at every plan,
the chain is bounded, and the incremental contract refuses what it cannot do."""

from __future__ import annotations

from dataclasses import replace

import pytest
from bench.placementkit.synthetic import make_snapshot, run_chain
from fleet_factory import NOW, car, job, pool, rack, tank, with_load_of

from tokenfleet.placement import Reason, Snapshot, check_plan, plan, replan_node
from tokenfleet.placement.checker import check_all
from tokenfleet.placement.incremental import CHAIN_SECONDS, CHAIN_STEPS


def two_cars(departure: float) -> Snapshot:
    """car-0 leaves at ``departure``; car-1 stays all day; one replica wanted."""
    return Snapshot(
        now=NOW,
        pools=(pool(),),
        vehicles=(
            car("car-0", departure_time=departure, memory_mib=8192, soc_percent=85.0),
            car("car-1", departure_time=NOW + 10 * 3600, memory_mib=8192, observed_at=NOW - 5),
        ),
        jobs=(job("ns/a", targets=frozenset({"Vehicle"}), target_tokens_per_second=25.0),),
    )


def test_a_drain_lead_crossed_by_time_alone_is_rechecked() -> None:
    # both cars hold a replica; car-0's drain lead (900 s) starts 100 s after the plan
    s = replace(two_cars(NOW + 1000.0), jobs=(replace(two_cars(0).jobs[0],
                target_tokens_per_second=50.0),))  # fmt: skip
    prev = plan(s)
    assert {a.node for a in prev.assignments} == {"car-0", "car-1"}
    assert prev.next_deadline is not None and prev.next_deadline <= NOW + 100.0
    # an event on the *other* car, 120 s later
    later = replace(s, now=NOW + 120.0, placements=prev.assignments)
    later = replace(
        later, vehicles=(later.vehicles[0], replace(later.vehicles[1], soc_percent=71.0))
    )
    nxt = replan_node(later, prev, "car-1")
    assert nxt.solver == "heuristic-incremental"
    assert check_plan(later, nxt) == []
    assert [(e.node, e.reason) for e in nxt.evictions] == [
        ("car-0", Reason.DEPARTURE_WITHIN_DRAIN_LEAD)
    ]


def test_stale_telemetry_crossed_by_time_blocks_new_work_in_a_chain() -> None:
    # car-1's reading turns stale 295 s after the plan; car-0 then leaves: no new work on car-1
    s = two_cars(NOW + 8 * 3600)
    prev = plan(s)
    assert [a.node for a in prev.assignments] == ["car-0"]
    gone = replace(s, now=NOW + 298.0, placements=prev.assignments)
    # car-0's own event is a fresh reading (a stale one's values would not be used at all)
    unplugged = replace(gone.vehicles[0], plugged_in=False, observed_at=NOW + 298.0)
    gone = replace(gone, vehicles=(unplugged, gone.vehicles[1]))
    nxt = replan_node(gone, prev, "car-0")
    assert check_plan(gone, nxt) == []
    assert nxt.assignments == ()
    assert nxt.job_shortfalls and nxt.job_shortfalls[0].job == "ns/a"


def test_chained_events_over_simulated_hours_break_no_rule() -> None:
    s = make_snapshot(11, 150, 20, 12)
    r = run_chain(s, 2 * 3600.0, 45.0, 11, check_all)
    assert r.steps == 160
    assert r.violations == 0, r.by_rule
    assert r.incremental > r.steps // 2  # the chain is mostly incremental


def test_the_chain_is_bounded_in_time_and_steps() -> None:
    s = two_cars(NOW + 8 * 3600)
    prev = plan(s)
    late = replace(s, now=NOW + CHAIN_SECONDS + 1.0, placements=prev.assignments)
    assert replan_node(late, prev, "car-1").solver == "heuristic"
    p = prev
    for i in range(CHAIN_STEPS):
        p = replan_node(replace(s, now=NOW + i * 0.01, placements=p.assignments), p, "car-1")
        assert p.solver == "heuristic-incremental"
    last = replan_node(replace(s, placements=p.assignments, now=NOW + 3.0), p, "car-1")
    assert last.solver == "heuristic"


def test_the_chain_ends_at_utc_midnight() -> None:
    midnight = 86400.0 * (NOW // 86400.0 + 1)
    s = replace(two_cars(midnight + 8 * 3600), now=midnight - 10.0)
    prev = plan(s)
    assert prev.next_deadline is not None and prev.next_deadline <= midnight
    after = replace(s, now=midnight + 1.0, placements=prev.assignments)
    assert replan_node(after, prev, "car-1").solver == "heuristic"


def racks_in_a_tank() -> Snapshot:
    return Snapshot(
        now=NOW,
        tanks=(tank(power_capacity_kw=2.5, it_load_kw=0.6, heat_rejection_kw=10.0),),
        racks=(rack("rack-1"), rack("rack-2")),
        jobs=(
            job(
                "ns/r",
                targets=frozenset({"Rack"}),
                target_tokens_per_second=600.0,
                max_replicas=2,
            ),
        ),
    )


def test_a_tank_name_is_refused_naming_the_full_plan() -> None:
    s = racks_in_a_tank()
    prev = plan(s)
    with pytest.raises(ValueError, match=r"node_name.*tank.*full plan"):
        replan_node(s, prev, "tank-a")


def test_a_changed_tank_under_a_node_event_takes_a_full_plan() -> None:
    s = racks_in_a_tank()
    prev = plan(s)
    assert len(prev.assignments) == 2
    world = with_load_of(s, prev)
    # the tank's measured load jumps (another tenant): the hard power limit now binds
    hot = replace(world, tanks=(replace(world.tanks[0], it_load_kw=1.6 + 1.0),))
    nxt = replan_node(hot, plan(world), "rack-1")
    assert nxt.solver == "heuristic"
    assert check_plan(hot, nxt) == []
    assert any(e.reason == Reason.TANK_POWER_BUDGET for e in nxt.evictions)
