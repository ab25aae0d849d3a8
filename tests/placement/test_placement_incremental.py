"""The incremental path: one node changed, only its replicas move."""

from __future__ import annotations

from dataclasses import replace

from fleet_factory import NOW, car, job, pool, with_load_of

from tokenfleet.placement import Reason, Snapshot, plan, replan_node
from tokenfleet.placement.checker import check_plan


def fleet() -> Snapshot:
    return Snapshot(
        now=NOW,
        pools=(pool(),),
        vehicles=tuple(car(f"car-{i}") for i in range(4)),
        jobs=(
            job("ns/a", targets=frozenset({"Vehicle"}), target_tokens_per_second=50.0),
            job("ns/b", targets=frozenset({"Vehicle"}), target_tokens_per_second=25.0),
        ),
    )


def steady() -> tuple[Snapshot, object]:
    s = fleet()
    world = with_load_of(s, plan(s))
    return world, plan(world)


def change(s: Snapshot, name: str, **kw: object) -> Snapshot:
    return replace(s, vehicles=tuple(replace(v, **kw) if v.name == name else v for v in s.vehicles))


def test_departing_car_moves_only_its_replicas() -> None:
    world, prev = steady()
    assert isinstance(prev, type(plan(world)))
    busy = prev.assignments[0].node
    s = replace(change(world, busy, plugged_in=False), placements=prev.assignments)
    nxt = replan_node(s, prev, busy)
    assert nxt.solver == "heuristic-incremental"
    assert {e.node for e in nxt.evictions} == {busy}
    assert all(e.reason == Reason.NOT_PLUGGED_IN for e in nxt.evictions)
    assert all(e.moved_to is not None and e.moved_to != busy for e in nxt.evictions)
    assert not [a for a in nxt.assignments if a.node == busy]
    assert {a for a in prev.assignments if a.node != busy} <= set(nxt.assignments)
    assert check_plan(s, nxt) == []
    assert any(u.node == busy and u.reason == Reason.NOT_PLUGGED_IN for u in nxt.unused_nodes)
    # the same answer as a full plan would give for the evicted work (served unchanged)
    served = {j.name: nxt.served_tokens_per_second(j.name, s) for j in s.jobs}
    assert served == {j.name: prev.served_tokens_per_second(j.name, s) for j in s.jobs}


def test_unchanged_node_moves_nothing() -> None:
    world, prev = steady()
    node = prev.assignments[0].node
    nxt = replan_node(replace(world, placements=prev.assignments), prev, node)
    assert nxt.evictions == () and nxt.added == ()
    assert set(nxt.assignments) == set(prev.assignments)


def test_a_plan_cache_serves_one_step_then_falls_back() -> None:
    world, prev = steady()
    busy = prev.assignments[0].node
    s = replace(change(world, busy, plugged_in=False), placements=prev.assignments)
    first = replan_node(s, prev, busy)
    second = replan_node(s, prev, busy)  # prev's state was taken over: full plan instead
    assert second.solver == "heuristic"
    assert check_plan(s, first) == [] and check_plan(s, second) == []
    assert {(e.node, e.reason) for e in second.evictions} == {(busy, Reason.NOT_PLUGGED_IN)}


def test_identity_change_falls_back_to_full_plan() -> None:
    world, prev = steady()
    busy = prev.assignments[0].node
    s = replace(change(world, busy, region="us-east"), placements=prev.assignments)
    nxt = replan_node(s, prev, busy)
    assert nxt.solver == "heuristic"
    assert check_plan(s, nxt) == []


def test_deleted_node_falls_back_to_full_plan() -> None:
    world, prev = steady()
    busy = prev.assignments[0].node
    s = replace(
        world,
        vehicles=tuple(v for v in world.vehicles if v.name != busy),
        placements=prev.assignments,
    )
    nxt = replan_node(s, prev, busy)
    assert nxt.solver == "heuristic"
    assert {(e.node, e.reason) for e in nxt.evictions} == {(busy, Reason.NODE_REMOVED)}
    assert all(e.moved_to is not None for e in nxt.evictions)
    assert check_plan(s, nxt) == []
