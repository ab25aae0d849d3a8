"""The checker is at least as strict as the engine: bands on new work, zero-resource replicas,
unknown ownership, and the plan's bookkeeping.  Valid plans pass; each corruption of a valid
plan is caught under the rule it breaks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from bench.placementkit.synthetic import make_snapshot
from fleet_factory import NOW, rack_only, vehicle_only

from tokenfleet.placement import Eviction, Placement, Plan, Reason, Snapshot, UnusedNode, plan
from tokenfleet.placement.checker import check_all, check_consistency, check_plan
from tokenfleet.placement.model import Variant

CAR = (Placement("ns/job", "car-1", "int4"),)
RACK = (Placement("ns/job", "rack-1", "fp16"),)

# values inside the hysteresis band (pool: min SoC 20, +2 points; temps 45/85 -2 %; bandwidth
# 10 +2 %; drain lead 900 s +2 %; battery 60 kWh, band 1.2 kWh; tank band 5 %)
BANDS: list[tuple[str, dict[str, Any], str]] = [
    ("vehicle", {"car": {"soc_percent": 21.0, "target_soc_percent": 20.0}}, "ReserveSoCBandNew"),
    ("vehicle", {"car": {"battery_temp_c": 44.5}}, "BatteryTempBandNew"),
    ("vehicle", {"car": {"compute_temp_c": 84.0}}, "ComputeTempBandNew"),
    ("vehicle", {"car": {"bandwidth_mbps": 10.1}}, "BandwidthBandNew"),
    ("vehicle", {"car": {"departure_time": NOW + 910, "soc_percent": 85.0}}, "DrainLeadBandNew"),
    (
        "vehicle",
        # need 6 kWh in 1 h at 6.6 kW: 6.6 - 0.08 = 6.52 kWh >= 6 but < 6 + 1.2
        {"car": {"departure_time": NOW + 3600, "charger_kw": 6.6, "soc_percent": 70.0}},
        "EnergyForTargetBandNew",
    ),
    (
        "vehicle",
        {"pool": {"daily_energy_budget_kwh": 10.0, "energy_used_today_kwh": 9.3}},
        "PoolEnergyBandNew",
    ),
    ("rack", {"tank": {"power_capacity_kw": 10.0, "it_load_kw": 8.2}}, "TankHeadroomNew"),
    ("rack", {"tank": {"supply_temp_c": 41.0}}, "CoolantNew"),
    ("rack", {"tank": {"return_temp_c": 50.0}}, "CoolantNew"),
]


def _snap(kind: str, kw: dict[str, Any]) -> tuple[Snapshot, tuple[Placement, ...]]:
    kw = {k: v for k, v in kw.items() if v}
    return (vehicle_only(**kw), CAR) if kind == "vehicle" else (rack_only(**kw), RACK)


@pytest.mark.parametrize(("kind", "kw", "rule"), BANDS, ids=[c[2] + "-" + c[0] for c in BANDS])
def test_bands_bind_new_work_only(kind: str, kw: dict[str, Any], rule: str) -> None:
    s, a = _snap(kind, kw)
    new = {v.rule for v in check_plan(s, Plan(assignments=a))}
    assert rule in new
    # the engine agrees: it places nothing new there
    assert not plan(s).assignments
    # the same replica already running is within the hard limits: it stays
    kept = replace(s, placements=a)
    if kind == "rack":  # the measured load includes the running replica
        load = s.tanks[0].it_load_kw
        assert load is not None
        kept = replace(kept, tanks=(replace(s.tanks[0], it_load_kw=load + 0.5),))
    assert {v.rule for v in check_plan(kept, Plan(assignments=a))} == set()


ZERO = Variant("zero", memory_mib=0, tokens_per_second=1.0, watts=0.0,
               targets=frozenset({"Vehicle", "Rack"}))  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "kw", "rule"),
    [
        ("vehicle", {"car": {"plugged_in": False}}, "NotPluggedIn"),
        ("vehicle", {"car": {"departure_time": NOW + 600}}, "DrainLead"),
        ("vehicle", {"car": {"soc_percent": None}}, "UnknownVehicleNew"),
        ("vehicle", {"car": {"observed_at": NOW - 301}}, "UnknownVehicleNew"),
        ("rack", {"tank": {"leak_state": "Critical"}}, "TankLeak"),
        ("rack", {"tank": {"cordoned": True}}, "TankCordoned"),
    ],
)
def test_zero_resource_replicas_meet_every_rule(kind: str, kw: dict[str, Any], rule: str) -> None:
    s, _ = _snap(kind, kw)
    s = replace(s, jobs=(replace(s.jobs[0], variants=(ZERO,)),))
    node = "car-1" if kind == "vehicle" else "rack-1"
    assert rule in {v.rule for v in check_plan(s, Plan((Placement("ns/job", node, "zero"),)))}
    assert check_plan(s, plan(s)) == []


def test_a_pool_without_owner_fails_an_ownership_rule() -> None:
    s = vehicle_only(pool={"ownership": None}, job={"ownership": frozenset({"fleet-ops"})})
    assert "Ownership" in {v.rule for v in check_plan(s, Plan(CAR))}
    p = plan(s)
    assert p.assignments == ()
    assert p.job_shortfalls[0].reason in (Reason.OWNERSHIP, Reason.NO_ELIGIBLE_NODE)


# -- corrupting valid plans -------------------------------------------------------------------

Corrupt = Callable[[Snapshot, Plan], tuple[Snapshot, Plan]]


def _first_car(p: Plan) -> Placement:
    return next(a for a in p.assignments if a.node.startswith("car-"))


def _extra(p: Plan, a: Placement) -> Plan:
    return replace(p, assignments=(*p.assignments, a), added=(*p.added, a))


def _on_empty_node(s: Snapshot, p: Plan, **car_kw: Any) -> tuple[Snapshot, Plan]:
    used = {a.node for a in p.assignments}
    v = next(v for v in s.vehicles if v.name not in used and v.pool == s.pools[0].name)
    job = next(j for j in s.jobs if "Vehicle" in j.targets)
    var = next(x for x in job.variants if "Vehicle" in x.targets)
    s2 = replace(s, vehicles=tuple(replace(x, **car_kw) if x is v else x for x in s.vehicles))
    return s2, _extra(p, Placement(job.name, v.name, var.name))


CORRUPTIONS: dict[str, tuple[Corrupt, str]] = {
    "over-memory": (
        lambda s, p: (
            s,
            replace(
                p,
                assignments=tuple(
                    replace(a, replicas=a.replicas + 50) if a == _first_car(p) else a
                    for a in p.assignments
                ),
            ),
        ),
        "Memory",
    ),
    "unplugged": (lambda s, p: _on_empty_node(s, p, plugged_in=False), "NotPluggedIn"),
    "drain-lead": (
        lambda s, p: _on_empty_node(s, p, departure_time=s.now + 600, soc_percent=95.0),
        "DrainLead",
    ),
    "soc-band": (
        lambda s, p: _on_empty_node(
            s,
            p,
            soc_percent=s.pools[0].min_soc_percent + 1.0,
            target_soc_percent=0.0,
            plugged_in=True,
            battery_temp_c=20.0,
            compute_temp_c=40.0,
            bandwidth_mbps=100.0,
            observed_at=s.now,
            departure_time=s.now + 8 * 3600,
            attested=True,
            region=s.pools[0].region,
        ),
        "ReserveSoCBandNew",
    ),
    "phantom-eviction": (
        lambda s, p: (
            s,
            replace(
                p,
                evictions=(
                    *p.evictions,
                    Eviction(
                        _first_car(p).job,
                        _first_car(p).node,
                        _first_car(p).variant,
                        1,
                        Reason.INSUFFICIENT_MEMORY,
                    ),
                ),
            ),
        ),
        "PlanEvictions",
    ),
    "missing-added": (lambda s, p: (s, replace(p, added=p.added[1:])), "PlanAdded"),
    "objective": (lambda s, p: (s, replace(p, objective=p.objective + 5.0)), "PlanObjective"),
    "busy-node-unused": (
        lambda s, p: (
            s,
            replace(
                p, unused_nodes=(*p.unused_nodes, UnusedNode(_first_car(p).node, Reason.NO_DEMAND))
            ),
        ),
        "PlanUnused",
    ),
}


@pytest.fixture(scope="module")
def valid() -> tuple[Snapshot, Plan]:
    s = make_snapshot(5, 120, 20, 10)
    return s, plan(s)


def test_valid_plans_pass(valid: tuple[Snapshot, Plan]) -> None:
    s, p = valid
    assert check_all(s, p) == []


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_is_caught(valid: tuple[Snapshot, Plan], kind: str) -> None:
    corrupt, rule = CORRUPTIONS[kind]
    s, p = corrupt(*valid)
    found = {v.rule for v in check_all(s, p)}
    assert rule in found, found


def test_dropping_an_eviction_is_caught() -> None:
    s = vehicle_only()
    world = replace(s, placements=CAR)
    gone = replace(world, vehicles=(replace(world.vehicles[0], plugged_in=False),))
    p = plan(gone)
    assert p.evictions and check_consistency(gone, p) == []
    assert "PlanEvictions" in {v.rule for v in check_consistency(gone, replace(p, evictions=()))}
