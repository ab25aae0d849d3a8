"""Property-based tests: no plan from either solver breaks a hard rule (per the independent
checker), re-planning an unchanged world moves nothing, the incremental path moves only what was
on the changed node, and the heuristic never beats the MILP's proven bound."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import hypothesis.strategies as st
from fleet_factory import NOW, with_load_of
from hypothesis import HealthCheck, given, settings

from tokenfleet.placement import (
    Job,
    Placement,
    PoolPolicy,
    RackNode,
    Snapshot,
    Spread,
    Tank,
    Variant,
    VehicleNode,
    plan,
    replan_node,
    solve_milp,
)
from tokenfleet.placement.assemble import objective
from tokenfleet.placement.checker import check_all
from tokenfleet.placement.model import Target

REGIONS = ["eu", "us"]
RACK: frozenset[Target] = frozenset({"Rack"})
VEHICLE: frozenset[Target] = frozenset({"Vehicle"})
BOTH: frozenset[Target] = frozenset({"Rack", "Vehicle"})
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def maybe(draw: st.DrawFn, strat: st.SearchStrategy[Any], p_none: float = 0.1) -> Any:
    return None if draw(st.integers(0, 99)) < p_none * 100 else draw(strat)


def near(limit: float, spread: float) -> st.SearchStrategy[float]:
    """Values around a limit (both sides, including the limit itself)."""
    return st.one_of(
        st.just(limit),
        st.floats(limit - spread, limit + spread, allow_nan=False),
        st.floats(limit - spread * 0.05, limit + spread * 0.05, allow_nan=False),
    )


def ok_or_near(draw: st.DrawFn, good: float, limit: float, spread: float) -> float:
    """Mostly a comfortable value, sometimes one around the limit."""
    if draw(st.integers(0, 3)) > 0:
        return good
    return draw(near(limit, spread))


def mostly(draw: st.DrawFn, good: Any, others: list[Any], p_good: float = 0.85) -> Any:
    n = round(p_good / (1 - p_good))
    return draw(st.sampled_from([good] * n + others))


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    n_tanks = draw(st.integers(1, 2))
    tanks = []
    for t in range(n_tanks):
        cap = draw(st.floats(1.0, 20.0))
        tanks.append(
            Tank(
                name=f"t{t}",
                region=draw(st.sampled_from(REGIONS)),
                power_capacity_kw=cap,
                safety_margin_percent=draw(st.sampled_from([0.0, 10.0])),
                it_load_kw=maybe(draw, st.floats(0.0, cap * 1.1)),
                max_supply_temp_c=40.0,
                max_return_temp_c=50.0,
                supply_temp_c=maybe(draw, st.just(ok_or_near(draw, 32.0, 40.0, 10.0))),
                return_temp_c=maybe(draw, st.just(ok_or_near(draw, 42.0, 50.0, 10.0))),
                design_flow_lpm=draw(st.floats(1.0, 60.0)),
                flow_lpm=maybe(draw, st.floats(0.0, 60.0)),
                heat_rejection_kw=draw(st.floats(0.5, 25.0)),
                leak_state=mostly(draw, "OK", ["Warning", "Critical", "Unknown"]),
                leak_action=draw(st.sampled_from(["Drain", "Cordon"])),
                cordoned=mostly(draw, False, [True], 0.9),
                observed_at=maybe(draw, st.just(ok_or_near(draw, NOW - 5, NOW - 60, 60)), 0.05),
                hysteresis_percent=draw(st.sampled_from([0.0, 5.0])),
                energy_cost_per_kwh=draw(st.floats(0, 0.5)),
            )
        )
    racks = [
        RackNode(
            name=f"r{i}",
            tank=mostly(draw, draw(st.sampled_from([t.name for t in tanks])), ["ghost"])
            if tanks
            else "ghost",
            memory_mib=draw(st.sampled_from([4096, 16384, 40960])),
            baseline_watts=draw(st.floats(0, 500)),
            region=maybe(draw, st.sampled_from(REGIONS)),
            attested=mostly(draw, True, [False]),
            cordoned=mostly(draw, False, [True], 0.9),
        )
        for i in range(draw(st.integers(0, 4)))
    ]
    pools = []
    for p in range(draw(st.integers(1, 2))):
        budget = maybe(draw, st.floats(0.0, 5.0), 0.5)
        pools.append(
            PoolPolicy(
                name=f"p{p}",
                region=draw(st.sampled_from(REGIONS)),
                ownership=maybe(draw, st.sampled_from(["ops", "staff"])),
                min_soc_percent=20.0,
                target_soc_percent=draw(st.floats(20.0, 90.0)),
                require_plugged_in=draw(st.booleans()),
                max_battery_temp_c=45.0,
                max_compute_temp_c=85.0,
                min_bandwidth_mbps=draw(st.sampled_from([0.0, 10.0])),
                drain_lead_seconds=900.0,
                daily_energy_budget_kwh=budget,
                energy_used_today_kwh=draw(st.floats(0.0, 5.0)),
                energy_cost_per_kwh=draw(st.floats(0, 0.5)),
                wear_cost_per_kwh=draw(st.floats(0, 0.2)),
                hysteresis_percent=draw(st.sampled_from([0.0, 2.0])),
                battery_capacity_kwh=draw(st.floats(10.0, 100.0)),
            )
        )
    vehicles = [
        VehicleNode(
            name=f"v{i}",
            pool=mostly(draw, draw(st.sampled_from([p.name for p in pools])), ["ghost"])
            if pools
            else "ghost",
            memory_mib=draw(st.sampled_from([2048, 8192, 16384])),
            region=maybe(draw, st.sampled_from(REGIONS), 0.05),
            attested=mostly(draw, True, [False]),
            soc_percent=maybe(draw, st.just(ok_or_near(draw, 70.0, 20.0, 10.0)), 0.03),
            plugged_in=maybe(draw, st.just(mostly(draw, True, [False])), 0.03),
            charger_kw=maybe(draw, st.floats(0.0, 11.0), 0.05),
            battery_temp_c=maybe(draw, st.just(ok_or_near(draw, 30.0, 45.0, 5.0)), 0.03),
            compute_temp_c=maybe(draw, st.just(ok_or_near(draw, 60.0, 85.0, 5.0)), 0.03),
            departure_time=maybe(
                draw, st.just(ok_or_near(draw, NOW + 6 * 3600, NOW + 900, 600.0)), 0.03
            ),
            target_soc_percent=maybe(draw, st.floats(0.0, 100.0), 0.5),
            bandwidth_mbps=maybe(draw, st.just(ok_or_near(draw, 100.0, 10.0, 3.0)), 0.03),
            observed_at=maybe(draw, st.just(ok_or_near(draw, NOW - 10, NOW - 300, 60)), 0.03),
            battery_capacity_kwh=maybe(draw, st.floats(10.0, 100.0), 0.5),
            cordoned=mostly(draw, False, [True], 0.9),
        )
        for i in range(draw(st.integers(0, 6)))
    ]
    jobs = []
    for j in range(draw(st.integers(1, 4))):
        variants = (
            Variant(
                "fp16",
                memory_mib=draw(st.sampled_from([4096, 16384])),
                tokens_per_second=draw(st.floats(50, 400)),
                watts=draw(st.floats(100, 3000)),
                targets=frozenset({"Rack"}),
            ),
            Variant(
                "int4",
                memory_mib=draw(st.sampled_from([2048, 4096, 8192])),
                tokens_per_second=draw(st.floats(5, 50)),
                watts=draw(st.floats(20, 500)),
                targets=draw(
                    st.sampled_from([frozenset({"Vehicle"}), frozenset({"Rack", "Vehicle"})])
                ),
            ),
        )
        jobs.append(
            Job(
                name=f"ns/j{j}",
                target_tokens_per_second=draw(st.floats(0.0, 1200.0)),
                variants=variants,
                min_replicas=draw(st.integers(0, 2)),
                max_replicas=draw(st.integers(0, 6)),
                priority=draw(st.sampled_from([0, 50, 100, 500, 1000])),
                targets=draw(
                    st.sampled_from(
                        [
                            frozenset({"Rack"}),
                            frozenset({"Vehicle"}),
                            frozenset({"Rack", "Vehicle"}),
                        ]
                    )
                ),
                preference=draw(st.sampled_from(["PreferRack", "PreferVehicle", "LowestCost"])),
                regions=mostly(draw, frozenset(), [frozenset({"eu"})], 0.7),
                ownership=mostly(draw, frozenset(), [frozenset({"ops"})], 0.7),
                require_attestation=mostly(draw, False, [True], 0.7),
                spread=Spread(
                    max_replicas_per_node=draw(st.integers(1, 2)),
                    max_replicas_per_tank=maybe(draw, st.integers(0, 3), 0.7),
                    max_replicas_per_pool=maybe(draw, st.integers(0, 3), 0.7),
                ),
            )
        )
    nodes = [r.name for r in racks] + [v.name for v in vehicles]
    placements: list[Placement] = []
    if nodes:
        for _ in range(draw(st.integers(0, 6))):
            placements.append(
                Placement(
                    job=mostly(draw, draw(st.sampled_from([j.name for j in jobs])), ["ns/gone"]),
                    node=mostly(draw, draw(st.sampled_from(nodes)), ["ghost-node"]),
                    variant=mostly(draw, draw(st.sampled_from(["fp16", "int4"])), ["fp8"]),
                    replicas=draw(st.integers(1, 2)),
                )
            )
    return Snapshot(
        now=NOW,
        tanks=tuple(tanks),
        racks=tuple(racks),
        pools=tuple(pools),
        vehicles=tuple(vehicles),
        jobs=tuple(jobs),
        placements=tuple(placements),
    )


def describe(vs: list[Any]) -> str:
    return "\n".join(f"{v.rule} {v.subject}: {v.detail}" for v in vs)


@SETTINGS
@given(snapshots())
def test_heuristic_plans_never_break_a_hard_rule(s: Snapshot) -> None:
    p = plan(s)
    vs = check_all(s, p)
    assert vs == [], describe(vs)
    assert abs(p.objective - objective(s, p.assignments)) < 1e-6 * max(1.0, abs(p.objective))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_milp_plans_never_break_a_hard_rule_and_bound_the_heuristic(s: Snapshot) -> None:
    m = solve_milp(s, time_limit_s=20)
    vs = check_all(s, m)
    assert vs == [], describe(vs)
    assert abs(m.objective - objective(s, m.assignments)) < 1e-6 * max(1.0, abs(m.objective))
    h = plan(s)
    assert m.bound is not None
    assert h.objective <= m.bound + 1e-6 * max(1.0, abs(m.bound))


@SETTINGS
@given(snapshots())
def test_replanning_an_unchanged_world_moves_nothing(s: Snapshot) -> None:
    first = plan(s)
    world = with_load_of(s, first)
    again = plan(world)
    assert again.evictions == ()
    assert set(first.assignments) <= set(again.assignments)
    assert check_all(world, again) == []
    # and once more: a fixed point
    third = plan(with_load_of(world, again))
    assert third.evictions == () and third.added == ()


@st.composite
def node_changes(draw: st.DrawFn) -> tuple[Snapshot, str, dict[str, Any]]:
    s = draw(snapshots())
    nodes = [v.name for v in s.vehicles] + [r.name for r in s.racks]
    if not nodes:
        s = replace(s, vehicles=(VehicleNode("v-extra", "ghost", 8192),))
        nodes = ["v-extra"]
    node = draw(st.sampled_from(nodes))
    if node.startswith("v"):
        change = draw(
            st.sampled_from(
                [
                    {"plugged_in": False},
                    {"soc_percent": 5.0},
                    {"departure_time": NOW + 60},
                    {"battery_temp_c": 60.0},
                    {"observed_at": NOW - 10_000},
                    {"memory_mib": 1024},
                    {"plugged_in": True, "soc_percent": 90.0, "charger_kw": 11.0},
                ]
            )
        )
    else:
        change = draw(st.sampled_from([{"cordoned": True}, {"memory_mib": 1024}, {}]))
    return s, node, change


@SETTINGS
@given(node_changes())
def test_incremental_moves_only_what_must_move(case: tuple[Snapshot, str, dict[str, Any]]) -> None:
    s, node, change = case
    steady = with_load_of(s, plan(s))
    prev = plan(steady)
    if node.startswith("v"):
        changed = replace(
            steady,
            vehicles=tuple(replace(v, **change) if v.name == node else v for v in steady.vehicles),
            placements=prev.assignments,
        )
    else:
        changed = replace(
            steady,
            racks=tuple(replace(r, **change) if r.name == node else r for r in steady.racks),
            placements=prev.assignments,
        )
    nxt = replan_node(changed, prev, node)
    vs = check_all(changed, nxt)
    assert vs == [], describe(vs)
    assert abs(nxt.objective - objective(changed, nxt.assignments)) < 1e-6 * max(
        1.0, abs(nxt.objective)
    )
    assert len(set(nxt.assignments)) == len(nxt.assignments)
    assert {u.node for u in nxt.unused_nodes}.isdisjoint({a.node for a in nxt.assignments})
    # only replicas on the changed node were removed; everything elsewhere stays
    assert {e.node for e in nxt.evictions} <= {node}
    elsewhere = {a for a in prev.assignments if a.node != node}
    assert elsewhere <= set(nxt.assignments)
    # and a second step from the incremental plan's cache is still sound
    again = replan_node(replace(changed, placements=nxt.assignments), nxt, node)
    assert again.evictions == ()
    assert check_all(replace(changed, placements=nxt.assignments), again) == []
