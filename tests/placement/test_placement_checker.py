"""The independent checker catches each broken rule (so the property tests can fail)."""

from __future__ import annotations

from typing import Any

import pytest
from fleet_factory import NOW, rack_only, vehicle_only

from tokenfleet.placement import Placement, Plan, Snapshot
from tokenfleet.placement.checker import check_plan

CAR = (Placement("ns/job", "car-1", "int4"),)
RACK = (Placement("ns/job", "rack-1", "fp16"),)


def rules(s: Snapshot, assignments: tuple[Placement, ...]) -> set[str]:
    return {v.rule for v in check_plan(s, Plan(assignments=assignments))}


def test_clean_plans_pass() -> None:
    assert rules(vehicle_only(), CAR) == set()
    assert rules(rack_only(), RACK) == set()


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("vehicle", {"car": {"plugged_in": False}}, "NotPluggedIn"),
    ("vehicle", {"car": {"soc_percent": 19.9}}, "ReserveSoC"),
    ("vehicle", {"car": {"battery_temp_c": 45.1}}, "BatteryTemp"),
    ("vehicle", {"car": {"compute_temp_c": 85.1}}, "ComputeTemp"),
    ("vehicle", {"car": {"bandwidth_mbps": 9.0}}, "Bandwidth"),
    ("vehicle", {"car": {"departure_time": NOW + 900}}, "DrainLead"),
    ("vehicle", {"car": {"observed_at": NOW - 301}}, "UnknownVehicleNew"),
    ("vehicle", {"car": {"observed_at": NOW + 31}}, "UnknownVehicleNew"),
    ("vehicle", {"car": {"soc_percent": None}}, "UnknownVehicleNew"),
    ("vehicle", {"car": {"plugged_in": True, "charger_kw": None}}, "UnknownVehicleNew"),
    ("vehicle", {"car": {"cordoned": True}}, "NodeCordoned"),
    (
        "vehicle",
        {"car": {"soc_percent": 30.0, "target_soc_percent": 90.0, "charger_kw": 3.7}},
        "EnergyForTarget",
    ),
    (
        "vehicle",
        {"pool": {"daily_energy_budget_kwh": 1.0, "energy_used_today_kwh": 0.5}},
        "PoolEnergyBudget",
    ),
    ("vehicle", {"car": {"memory_mib": 1024}}, "Memory"),
    ("vehicle", {"job": {"regions": frozenset({"us-east"})}}, "Residency"),
    ("vehicle", {"job": {"ownership": frozenset({"x"})}}, "Ownership"),
    ("vehicle", {"car": {"attested": False}, "job": {"require_attestation": True}}, "Attestation"),
    ("vehicle", {"job": {"targets": frozenset({"Rack"})}}, "Target"),
    ("vehicle", {"job": {"max_replicas": 0}}, "MaxReplicas"),
    ("vehicle", {"job": {"avoid_nodes": frozenset({"car-1"})}}, "LoadBackoff"),
    ("rack", {"tank": {"leak_state": "Critical"}}, "TankLeak"),
    ("rack", {"tank": {"leak_state": "Warning"}}, "TankLeakNew"),
    ("rack", {"tank": {"cordoned": True}}, "TankCordoned"),
    ("rack", {"rack": {"cordoned": True}}, "NodeCordoned"),
    ("rack", {"tank": {"observed_at": NOW - 61}}, "StaleTankNew"),
    ("rack", {"tank": {"power_capacity_kw": 10.0, "it_load_kw": 8.8}}, "TankPower"),
    (
        "rack",
        {"tank": {"flow_lpm": 30.0, "supply_temp_c": 35.0, "it_load_kw": 12.4}},
        "TankThermal",
    ),
    ("rack", {"rack": {"tank": "ghost"}}, "UnknownTank"),
]


@pytest.mark.parametrize(("kind", "kw", "rule"), CASES, ids=[c[2] + "-" + c[0] for c in CASES])
def test_checker_flags(kind: str, kw: dict[str, Any], rule: str) -> None:
    if kind == "vehicle":
        assert rule in rules(vehicle_only(**kw), CAR)
    else:
        assert rule in rules(rack_only(**kw), RACK)


def test_new_only_rules_do_not_flag_existing_work() -> None:
    s = vehicle_only(car={"observed_at": NOW - 301, "cordoned": True})
    from dataclasses import replace

    assert rules(replace(s, placements=CAR), CAR) == set()


def test_unknown_telemetry_keeps_existing_work_until_the_grace_ran_out() -> None:
    from dataclasses import replace

    within = vehicle_only(car={"soc_percent": None, "unknown_since": NOW - 299})
    assert rules(replace(within, placements=CAR), CAR) == set()
    expired = vehicle_only(car={"observed_at": NOW - 400, "unknown_since": NOW - 300})
    assert rules(replace(expired, placements=CAR), CAR) == {"TelemetryUnknown"}


def test_spread_and_unknowns() -> None:
    s = vehicle_only()
    assert "SpreadPerNode" in rules(s, (Placement("ns/job", "car-1", "int4", 2),))
    assert "UnknownJob" in rules(s, (Placement("ns/nope", "car-1", "int4"),))
    assert "UnknownVariant" in rules(s, (Placement("ns/job", "car-1", "fp8"),))
    assert "UnknownNode" in rules(s, (Placement("ns/job", "car-9", "int4"),))
