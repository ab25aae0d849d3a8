"""One test per hard rule: the plan respects it and reports the reason it names."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fleet_factory import NOW, car, job, pool, rack, rack_only, tank, vehicle_only, with_load_of

from tokenfleet.placement import Placement, Plan, Reason, Snapshot, Spread, plan, solve_milp
from tokenfleet.placement.checker import check_plan


def reason_for(p: Plan, node: str) -> Reason | None:
    return next((u.reason for u in p.unused_nodes if u.node == node), None)


def shortfall(p: Plan, name: str = "ns/job") -> Reason | None:
    return next((s.reason for s in p.job_shortfalls if s.job == name), None)


def assert_blocked(s: Snapshot, node: str, reason: Reason) -> Plan:
    """``node`` takes nothing, is reported unused with ``reason``, the job reports a shortfall."""
    p = plan(s)
    assert not [a for a in p.assignments if a.node == node]
    assert reason_for(p, node) == reason
    sf = next(x for x in p.job_shortfalls if x.job == "ns/job")
    assert sf.served_tokens_per_second == 0
    assert dict(sf.reasons).get(reason) == 1
    assert check_plan(s, p) == []
    m = solve_milp(s, time_limit_s=10)
    assert not [a for a in m.assignments if a.node == node]
    return p


def existing(s: Snapshot, node: str, variant: str) -> Snapshot:
    return replace(s, placements=(Placement("ns/job", node, variant),))


def assert_evicted(s: Snapshot, node: str, variant: str, reason: Reason) -> None:
    s = existing(s, node, variant)
    p = plan(s)
    assert [(e.node, e.reason) for e in p.evictions] == [(node, reason)]
    assert not [a for a in p.assignments if a.node == node]
    assert check_plan(s, p) == []


def assert_kept(s: Snapshot, node: str, variant: str) -> None:
    s = existing(s, node, variant)
    p = plan(s)
    assert p.evictions == ()
    assert Placement("ns/job", node, variant) in p.assignments
    assert check_plan(s, p) == []


# -- the happy path ------------------------------------------------------------------------------


def test_eligible_car_gets_the_int4_replica() -> None:
    s = vehicle_only()
    p = plan(s)
    assert p.assignments == (Placement("ns/job", "car-1", "int4"),)
    assert p.job_shortfalls == () and p.unused_nodes == ()
    assert check_plan(s, p) == []


def test_eligible_rack_gets_the_fp16_replica() -> None:
    s = rack_only()
    p = plan(s)
    assert p.assignments == (Placement("ns/job", "rack-1", "fp16"),)
    assert check_plan(s, p) == []


# -- vehicle rules ---------------------------------------------------------------------------------

VEHICLE_HARD: list[tuple[str, dict[str, Any], Reason]] = [
    ("unplugged", {"car": {"plugged_in": False}}, Reason.NOT_PLUGGED_IN),
    ("soc below reserve", {"car": {"soc_percent": 15.0}}, Reason.BELOW_RESERVE_SOC),
    (
        "departure within drain lead",
        {"car": {"departure_time": NOW + 600}},
        Reason.DEPARTURE_WITHIN_DRAIN_LEAD,
    ),
    ("battery too hot", {"car": {"battery_temp_c": 46.0}}, Reason.BATTERY_TOO_HOT),
    ("compute too hot", {"car": {"compute_temp_c": 90.0}}, Reason.COMPUTE_TOO_HOT),
    ("low bandwidth", {"car": {"bandwidth_mbps": 5.0}}, Reason.LOW_BANDWIDTH),
    ("unknown pool", {"car": {"pool": "nope"}}, Reason.UNKNOWN_POOL),
    (
        # 30% -> 90% of 60 kWh is 36 kWh in 8 h = 4.5 kW > 3.7 kW charger
        "energy to reach target SoC",
        {"car": {"soc_percent": 30.0, "target_soc_percent": 90.0, "charger_kw": 3.7}},
        Reason.INSUFFICIENT_ENERGY_FOR_TARGET,
    ),
]


@pytest.mark.parametrize(("case", "kw", "reason"), VEHICLE_HARD, ids=[c[0] for c in VEHICLE_HARD])
def test_vehicle_hard_rule(case: str, kw: dict[str, Any], reason: Reason) -> None:
    assert_blocked(vehicle_only(**kw), "car-1", reason)
    assert_evicted(vehicle_only(**kw), "car-1", "int4", reason)


def test_energy_rule_counts_the_jobs_draw() -> None:
    # need 6 kWh in 2 h = 3 kW; a 3.7 kW charger leaves 0.7 kW: one 80 W replica fits...
    base = {"car": {"soc_percent": 70.0, "charger_kw": 3.7, "departure_time": NOW + 2 * 3600}}
    assert plan(vehicle_only(**base)).assignments
    # ...but not a 750 W one: the car would miss its target SoC by departure
    heavy = replace(job(targets=frozenset({"Vehicle"})).variants[1], watts=750.0)
    s = vehicle_only(**base, job={"variants": (heavy,)})
    assert_blocked(s, "car-1", Reason.INSUFFICIENT_ENERGY_FOR_TARGET)


def test_plugged_in_not_required_by_pool() -> None:
    s = vehicle_only(
        car={"plugged_in": False, "soc_percent": 85.0}, pool={"require_plugged_in": False}
    )
    p = plan(s)
    assert p.assignments == (Placement("ns/job", "car-1", "int4"),)
    assert check_plan(s, p) == []


def test_stale_reading_blocks_new_work_but_does_not_evict() -> None:
    kw = {"car": {"observed_at": NOW - 1000}}
    assert_blocked(vehicle_only(**kw), "car-1", Reason.STALE_TELEMETRY)
    assert_kept(vehicle_only(**kw), "car-1", "int4")


UNKNOWN: list[tuple[str, dict[str, Any], Reason]] = [
    ("missing soc", {"soc_percent": None}, Reason.MISSING_TELEMETRY),
    ("missing departure", {"departure_time": None}, Reason.MISSING_TELEMETRY),
    ("unknown charger power", {"charger_kw": None}, Reason.MISSING_TELEMETRY),
    ("unknown plugged-in", {"plugged_in": None}, Reason.MISSING_TELEMETRY),
    ("stale", {"observed_at": NOW - 1000}, Reason.STALE_TELEMETRY),
    ("stamped a day ahead", {"observed_at": NOW + 86400}, Reason.STALE_TELEMETRY),
    ("stamped 31 s ahead", {"observed_at": NOW + 31}, Reason.STALE_TELEMETRY),
]


@pytest.mark.parametrize(("case", "car", "reason"), UNKNOWN, ids=[c[0] for c in UNKNOWN])
def test_unknown_telemetry_keeps_until_the_grace_then_drains(
    case: str, car: dict[str, Any], reason: Reason
) -> None:
    # unknown is not bad: no new work, the hosted replica stays...
    assert_blocked(vehicle_only(car=car), "car-1", reason)
    assert_kept(vehicle_only(car=car), "car-1", "int4")
    within = {**car, "unknown_since": NOW - 299.0}
    assert_kept(vehicle_only(car=within, pool={"unknown_grace_seconds": 300.0}), "car-1", "int4")
    # ...until it has been unknown for the pool's grace: then it drains
    expired = {**car, "unknown_since": NOW - 300.0}
    s = vehicle_only(car=expired, pool={"unknown_grace_seconds": 300.0})
    assert_evicted(s, "car-1", "int4", Reason.TELEMETRY_UNKNOWN)


def test_a_known_hard_fact_drains_even_while_other_values_are_unknown() -> None:
    kw = {"car": {"soc_percent": None, "compute_temp_c": 90.0}}
    assert_evicted(vehicle_only(**kw), "car-1", "int4", Reason.COMPUTE_TOO_HOT)


def test_a_small_clock_skew_is_fresh() -> None:
    assert plan(vehicle_only(car={"observed_at": NOW + 29})).assignments


def test_a_job_in_load_backoff_on_a_node_goes_elsewhere_and_others_still_use_it() -> None:
    s = vehicle_only(job={"avoid_nodes": frozenset({"car-1"})})
    assert_blocked(s, "car-1", Reason.LOAD_FAILED)
    other = replace(s.jobs[0], name="ns/other", avoid_nodes=frozenset())
    both = replace(s, jobs=(s.jobs[0], other))
    p = plan(both)
    assert [(a.job, a.node) for a in p.assignments] == [("ns/other", "car-1")]
    assert check_plan(both, p) == []


def test_cordoned_car_keeps_but_takes_nothing_new() -> None:
    kw = {"car": {"cordoned": True}}
    assert_blocked(vehicle_only(**kw), "car-1", Reason.NODE_CORDONED)
    assert_kept(vehicle_only(**kw), "car-1", "int4")


def test_pool_energy_budget() -> None:
    # 80 W for 8 h = 0.64 kWh; only 0.5 kWh left today
    kw = {"pool": {"daily_energy_budget_kwh": 10.0, "energy_used_today_kwh": 9.5}}
    assert_blocked(vehicle_only(**kw), "car-1", Reason.POOL_ENERGY_BUDGET)
    assert_evicted(vehicle_only(**kw), "car-1", "int4", Reason.POOL_ENERGY_BUDGET)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"job": {"regions": frozenset({"us-east"})}}, Reason.RESIDENCY),
        (
            {"car": {"region": None}, "job": {"regions": frozenset({"eu-central"})}},
            Reason.RESIDENCY,
        ),
        ({"job": {"ownership": frozenset({"employees"})}}, Reason.OWNERSHIP),
        ({"car": {"attested": False}, "job": {"require_attestation": True}}, Reason.NOT_ATTESTED),
        ({"car": {"memory_mib": 2048}}, Reason.INSUFFICIENT_MEMORY),
    ],
    ids=["residency", "no-region-label", "ownership", "attestation", "memory"],
)
def test_job_policy_rules(kw: dict[str, Any], reason: Reason) -> None:
    assert_blocked(vehicle_only(**kw), "car-1", reason)
    assert_evicted(vehicle_only(**kw), "car-1", "int4", reason)


def test_target_not_allowed() -> None:
    s = vehicle_only(job={"targets": frozenset({"Rack"})})
    p = plan(s)
    assert p.assignments == ()
    assert reason_for(p, "car-1") == Reason.TARGET_NOT_ALLOWED
    assert shortfall(p) == Reason.NO_ELIGIBLE_NODE


# -- hysteresis ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"car": {"soc_percent": 21.0}}, Reason.BELOW_RESERVE_SOC),  # floor 20, band 2 points
        ({"car": {"battery_temp_c": 44.5}}, Reason.BATTERY_TOO_HOT),  # 45 - 2% = 44.1
        ({"car": {"compute_temp_c": 84.0}}, Reason.COMPUTE_TOO_HOT),  # 85 - 2% = 83.3
        # (already at its target SoC, so the short stay is no energy problem)
        (
            {"car": {"departure_time": NOW + 910, "soc_percent": 85.0}},
            Reason.DEPARTURE_WITHIN_DRAIN_LEAD,
        ),
        ({"car": {"bandwidth_mbps": 10.1}}, Reason.LOW_BANDWIDTH),
    ],
    ids=["soc", "battery-temp", "compute-temp", "departure", "bandwidth"],
)
def test_value_inside_the_band_keeps_existing_but_blocks_new(
    kw: dict[str, Any], reason: Reason
) -> None:
    assert_blocked(vehicle_only(**kw), "car-1", reason)
    assert_kept(vehicle_only(**kw), "car-1", "int4")


def test_tank_power_band_keeps_existing_but_blocks_new() -> None:
    # budget 90 kW, band 5% -> 85.5 kW for new work; background 85 + 0.5 kW replica = 85.5 fits
    # hard, a new one at background 85.2 does not fit the band
    s = rack_only(tank={"it_load_kw": 85.2})
    assert_blocked(s, "rack-1", Reason.TANK_POWER_BUDGET)
    # measured load includes the existing replica (0.5 kW): background stays 85.2
    kept = existing(rack_only(tank={"it_load_kw": 85.7}), "rack-1", "fp16")
    p = plan(kept)
    assert p.evictions == () and p.assignments == (Placement("ns/job", "rack-1", "fp16"),)
    assert check_plan(kept, p) == []


# -- tank rules ------------------------------------------------------------------------------------


def test_leak_critical_drains() -> None:
    kw = {"tank": {"leak_state": "Critical"}}
    assert_blocked(rack_only(**kw), "rack-1", Reason.TANK_LEAK)
    assert_evicted(rack_only(**kw), "rack-1", "fp16", Reason.TANK_LEAK)


def test_leak_warning_and_cordon_policy_block_new_only() -> None:
    for kw in ({"leak_state": "Warning"}, {"leak_state": "Critical", "leak_action": "Cordon"}):
        assert_blocked(rack_only(tank=kw), "rack-1", Reason.TANK_LEAK)
        assert_kept(rack_only(tank=kw), "rack-1", "fp16")


def test_cordoned_tank_keeps_but_takes_nothing_new() -> None:
    assert_blocked(rack_only(tank={"cordoned": True}), "rack-1", Reason.TANK_CORDONED)
    assert_kept(rack_only(tank={"cordoned": True}), "rack-1", "fp16")


def test_cordoned_rack_node() -> None:
    assert_blocked(rack_only(rack={"cordoned": True}), "rack-1", Reason.NODE_CORDONED)


def test_stale_tank_telemetry_blocks_new_work() -> None:
    assert_blocked(rack_only(tank={"observed_at": NOW - 120}), "rack-1", Reason.STALE_TELEMETRY)
    assert_kept(rack_only(tank={"observed_at": None}), "rack-1", "fp16")


def test_tank_power_budget() -> None:
    # 10 kW * 0.9 = 9 kW budget, 8.8 kW background: no room for a 0.5 kW replica
    kw = {"tank": {"power_capacity_kw": 10.0, "it_load_kw": 8.8}}
    assert_blocked(rack_only(**kw), "rack-1", Reason.TANK_POWER_BUDGET)
    # measured 9.3 includes our 0.5 kW: background 8.8 + 0.5 > 9 -> evict
    kw = {"tank": {"power_capacity_kw": 10.0, "it_load_kw": 9.3}}
    assert_evicted(rack_only(**kw), "rack-1", "fp16", Reason.TANK_POWER_BUDGET)


def test_tank_thermal_headroom() -> None:
    # loop: 30 L/min * 0.8 kg/L / 60 * 2.1 kJ/kgK * (50 - 35) K = 12.6 kW < power budget 90 kW
    kw = {"tank": {"flow_lpm": 30.0, "supply_temp_c": 35.0, "it_load_kw": 12.4}}
    assert_blocked(rack_only(**kw), "rack-1", Reason.TANK_THERMAL_HEADROOM)
    kw = {"tank": {"flow_lpm": 30.0, "supply_temp_c": 35.0, "it_load_kw": 12.9}}
    assert_evicted(rack_only(**kw), "rack-1", "fp16", Reason.TANK_THERMAL_HEADROOM)


def test_coolant_return_at_limit_blocks_new_work() -> None:
    kw = {"tank": {"return_temp_c": 50.0}}
    assert_blocked(rack_only(**kw), "rack-1", Reason.TANK_THERMAL_HEADROOM)


def test_unknown_tank() -> None:
    assert_blocked(rack_only(rack={"tank": "ghost"}), "rack-1", Reason.UNKNOWN_TANK)


# -- job-level reasons -------------------------------------------------------------------------


def test_max_replicas_shortfall() -> None:
    s = vehicle_only(job={"target_tokens_per_second": 100.0, "max_replicas": 1})
    p = plan(s)
    assert len(p.assignments) == 1
    assert shortfall(p) == Reason.MAX_REPLICAS


def test_spread_per_tank() -> None:
    s = Snapshot(
        now=NOW,
        tanks=(tank(),),
        racks=(rack("rack-1"), rack("rack-2")),
        jobs=(
            job(
                targets=frozenset({"Rack"}),
                target_tokens_per_second=600.0,
                spread=Spread(max_replicas_per_tank=1),
            ),
        ),
    )
    p = plan(s)
    assert len(p.assignments) == 1
    assert shortfall(p) == Reason.SPREAD_LIMIT
    assert check_plan(s, p) == []


def test_no_eligible_node() -> None:
    s = vehicle_only(car={"plugged_in": False})
    sf = plan(s).job_shortfalls[0]
    assert sf.reason == Reason.NO_ELIGIBLE_NODE
    assert sf.reasons == ((Reason.NOT_PLUGGED_IN, 1),)


def test_capacity_reason_wins_over_ineligible_nodes() -> None:
    s = Snapshot(
        now=NOW,
        pools=(pool(),),
        vehicles=(car("car-1", memory_mib=2048), car("car-2", plugged_in=False)),
        jobs=(job(targets=frozenset({"Vehicle"})),),
    )
    sf = plan(s).job_shortfalls[0]
    assert sf.reason == Reason.INSUFFICIENT_MEMORY
    assert set(sf.reasons) == {(Reason.INSUFFICIENT_MEMORY, 1), (Reason.NOT_PLUGGED_IN, 1)}


def test_removed_job_is_evicted() -> None:
    s = replace(vehicle_only(), placements=(Placement("ns/gone", "car-1", "int4"),))
    p = plan(s)
    assert [(e.job, e.reason) for e in p.evictions] == [("ns/gone", Reason.JOB_REMOVED)]


def test_lower_target_scales_down() -> None:
    s = Snapshot(
        now=NOW,
        pools=(pool(),),
        vehicles=(car("car-1"), car("car-2")),
        jobs=(job(targets=frozenset({"Vehicle"}), target_tokens_per_second=25.0),),
        placements=(Placement("ns/job", "car-1", "int4"), Placement("ns/job", "car-2", "int4")),
    )
    p = plan(s)
    assert [e.reason for e in p.evictions] == [Reason.SCALED_DOWN]
    assert len(p.assignments) == 1


def test_departing_car_moves_its_replica() -> None:
    s = Snapshot(
        now=NOW,
        pools=(pool(),),
        vehicles=(car("car-1", departure_time=NOW + 300), car("car-2")),
        jobs=(job(targets=frozenset({"Vehicle"})),),
        placements=(Placement("ns/job", "car-1", "int4"),),
    )
    p = plan(s)
    assert [(e.node, e.reason, e.moved_to) for e in p.evictions] == [
        ("car-1", Reason.DEPARTURE_WITHIN_DRAIN_LEAD, "car-2")
    ]
    assert p.added == (Placement("ns/job", "car-2", "int4"),)


def test_variant_choice_follows_the_node() -> None:
    s = Snapshot(
        now=NOW,
        tanks=(tank(),),
        racks=(rack(),),
        pools=(pool(),),
        vehicles=(car(),),
        jobs=(job(target_tokens_per_second=325.0),),
    )
    p = plan(s)
    assert set(p.assignments) == {
        Placement("ns/job", "rack-1", "fp16"),
        Placement("ns/job", "car-1", "int4"),
    }
    assert check_plan(s, p) == []
    assert plan(with_load_of(s, p)).evictions == ()


# -- replicas.min holds whatever the throughput target says ------------------------------------


def _three_cars(**job_kw: Any) -> Snapshot:
    # energy costs money here: a replica of a tiny variant earns less than it costs
    s = vehicle_only(job=job_kw, pool={"energy_cost_per_kwh": 1.0})
    return replace(s, vehicles=(car("car-1"), car("car-2"), car("car-3")))


@pytest.mark.parametrize(
    ("case", "job_kw"),
    [
        ("target 0", {"target_tokens_per_second": 0.0, "min_replicas": 2}),
        ("target met by one", {"target_tokens_per_second": 1.0, "min_replicas": 3}),
        (
            "tiny tokens/s",
            {
                "target_tokens_per_second": 1000.0,
                "min_replicas": 2,
                "variants": (replace(job().variants[1], tokens_per_second=0.001),),
            },
        ),
    ],
)
def test_min_replicas_hold_whatever_the_target_says(case: str, job_kw: dict[str, Any]) -> None:
    s = _three_cars(**job_kw)
    p = plan(s)
    want = job_kw["min_replicas"]
    assert len(p.assignments) == want, p
    assert check_plan(s, p) == []
    # and the trim never takes a kept replica below the floor
    again = plan(replace(s, placements=p.assignments))
    assert len(again.assignments) == want and again.evictions == ()


def test_target_met_min_met_is_no_shortfall_and_a_worthless_replica_names_its_cause() -> None:
    p = plan(_three_cars(target_tokens_per_second=0.0, min_replicas=1))
    assert p.job_shortfalls == ()
    tiny = (replace(job().variants[1], tokens_per_second=0.001),)
    p = plan(_three_cars(target_tokens_per_second=1000.0, min_replicas=1, variants=tiny))
    assert len(p.assignments) == 1
    assert shortfall(p) == Reason.NOT_WORTH_A_REPLICA  # not a misleading SpreadLimit
