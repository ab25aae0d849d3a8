"""The mapping from the operator's indexes to the placement engine's plain data (pure)."""

from __future__ import annotations

from dataclasses import replace

from fixtures_controllers import (
    FP16,
    INT4,
    NOW,
    job_view,
    pool_view,
    rack,
    tank_view,
    vehicle,
)

from tokenfleet.controllers.snapshot import build_snapshot, recorded_placements
from tokenfleet.placement import Placement, plan


def _build(**kwargs: object) -> object:
    defaults: dict[str, object] = {
        "now": NOW.timestamp(),
        "nodes": [vehicle("car-1"), vehicle("car-2"), rack("rack-1")],
        "tanks": [tank_view()],
        "pools": [pool_view()],
        "jobs": [job_view()],
    }
    defaults.update(kwargs)
    return build_snapshot(**defaults)  # type: ignore[arg-type]


def test_tank_status_and_spec_map_to_engine_fields() -> None:
    parts = _build(tanks=[tank_view(status={"leakState": "Critical", "supplyTempC": "NaN"})])
    (tank,) = parts.snapshot.tanks  # type: ignore[attr-defined]
    assert tank.power_capacity_kw == 100 and tank.safety_margin_percent == 10
    assert tank.max_supply_temp_c == 40 and tank.max_return_temp_c == 50
    assert tank.it_load_kw == 5.0 and tank.return_temp_c == 38.0
    assert tank.supply_temp_c is None  # NaN in status is unknown, never a number
    assert tank.leak_state == "Critical" and tank.leak_action == "Drain"
    assert tank.observed_at == NOW.timestamp()
    assert tank.stale_after_seconds == 60


def test_unknown_leak_state_and_missing_reading_stay_unknown() -> None:
    parts = _build(tanks=[tank_view(status={"leakState": "Soggy", "lastReadingTime": None})])
    (tank,) = parts.snapshot.tanks  # type: ignore[attr-defined]
    assert tank.leak_state == "Unknown"
    assert tank.observed_at is None


def test_vehicle_reading_maps_with_times_as_epoch_seconds() -> None:
    parts = _build(nodes=[vehicle("car-1", soc_percent="55", plugged_in="false")])
    (car,) = parts.snapshot.vehicles  # type: ignore[attr-defined]
    assert car.pool == "pool-a" and car.memory_mib == 32 * 1024
    assert car.soc_percent == 55 and car.plugged_in is False
    assert car.departure_time == NOW.timestamp() + 8 * 3600
    assert car.observed_at == NOW.timestamp()
    assert car.region == "eu" and car.attested
    assert parts.sites["car-1"].target == "Vehicle"  # type: ignore[attr-defined]


def test_garbage_vehicle_values_are_unknown() -> None:
    parts = _build(nodes=[vehicle("car-1", soc_percent="garbage", battery_temp_c="1e9")])
    (car,) = parts.snapshot.vehicles  # type: ignore[attr-defined]
    assert car.soc_percent is None and car.battery_temp_c is None


def test_cordoned_unusable_and_deleting_nodes() -> None:
    gone = replace(rack("rack-gone"), deleting=True)
    parts = _build(
        nodes=[rack("rack-1", unschedulable=True), rack("rack-2"), gone, vehicle("car-1")],
        unusable_nodes={"rack-2": "RuntimeFailed"},
    )
    racks = {r.name: r for r in parts.snapshot.racks}  # type: ignore[attr-defined]
    assert racks["rack-1"].cordoned and racks["rack-2"].cordoned
    assert "rack-gone" not in racks  # its placements are evicted as NodeRemoved
    assert parts.sites["rack-1"].tank == "tank-a"  # type: ignore[attr-defined]


def test_invalid_job_is_left_out_and_named() -> None:
    parts = _build(jobs=[job_view("bad", spec_patch={"variants": []}), job_view("ok")])
    assert [j.name for j in parts.snapshot.jobs] == ["ns/ok"]  # type: ignore[attr-defined]
    assert "ns/bad" in parts.invalid_jobs  # type: ignore[attr-defined]


def test_current_placements_come_from_the_record_on_a_cold_start() -> None:
    record = (
        {"node": "car-1", "variant": "int4", "state": "Loaded", "target": "Vehicle"},
        {"node": "car-2", "variant": "int4", "state": "Loading", "target": "Vehicle"},
        {"node": "car-3", "variant": "int4", "state": "Unloading", "target": "Vehicle"},
        {"node": "car-4", "variant": "int4", "state": "Failed", "target": "Vehicle"},
    )
    job = job_view(placements=record)
    assert recorded_placements(job) == [
        Placement("ns/chat", "car-1", "int4"),
        Placement("ns/chat", "car-2", "int4"),
    ]
    parts = _build(jobs=[job])
    assert len(parts.snapshot.placements) == 2  # type: ignore[attr-defined]
    # the planner's own previous assignments win over the record once it has planned
    parts = _build(jobs=[job], current={"ns/chat": [Placement("ns/chat", "car-2", "int4")]})
    assert parts.snapshot.placements == (Placement("ns/chat", "car-2", "int4"),)  # type: ignore[attr-defined]


def test_snapshot_plans_racks_and_vehicles_per_variant() -> None:
    parts = _build(
        nodes=[rack("rack-1"), rack("rack-2"), vehicle("car-1"), vehicle("car-2")],
        jobs=[job_view(variants=[FP16, INT4], replicas=(4, 4), target=120)],
    )
    result = plan(parts.snapshot)  # type: ignore[attr-defined]
    by_node = {a.node: a.variant for a in result.assignments}
    assert by_node == {"rack-1": "fp16", "rack-2": "fp16", "car-1": "int4", "car-2": "int4"}


def test_pool_battery_capacity_and_energy_used_reach_the_engine() -> None:
    view = pool_view()
    default = _build(pools=[view])
    (pool,) = default.snapshot.pools  # type: ignore[attr-defined]
    assert pool.battery_capacity_kwh == 60.0 and pool.energy_used_today_kwh == 0.0
    battery = {**view.spec["battery"], "capacityKWh": 75, "dailyEnergyBudgetKWh": 40}
    vans = replace(
        view,
        uid="vans",
        spec={**view.spec, "battery": battery},
        status={"energyUsedTodayKWh": 12.5},
    )
    (pool,) = _build(pools=[vans]).snapshot.pools  # type: ignore[attr-defined]
    assert pool.battery_capacity_kwh == 75.0 and pool.energy_used_today_kwh == 12.5
    # without a budget today's energy is read by nothing: it is left out, so its writes (every
    # minute while cars serve) are no change of the pool for the planner
    del battery["dailyEnergyBudgetKWh"]
    unbounded = replace(vans, uid="unbounded", spec={**view.spec, "battery": battery})
    (pool,) = _build(pools=[unbounded]).snapshot.pools  # type: ignore[attr-defined]
    assert pool.energy_used_today_kwh == 0.0


def test_energy_of_another_day_counts_as_zero() -> None:
    today = NOW.date().isoformat()
    for day, expected in ((today, 3.5), ("2000-01-01", 0.0)):
        budget = {**pool_view().spec["battery"], "dailyEnergyBudgetKWh": 40}
        view = replace(
            pool_view(),
            uid=f"budget-{day}",
            spec={**pool_view().spec, "battery": budget},
            status={"energyUsedTodayKWh": 3.5, "energyDay": day},
        )
        (pool,) = _build(pools=[view]).snapshot.pools  # type: ignore[attr-defined]
        assert pool.energy_used_today_kwh == expected, day


def test_tank_freshness_comes_from_the_pollers_reading_when_later_than_status() -> None:
    from tokenfleet.controllers.snapshot import tank_of

    old = tank_view(status={"lastReadingTime": "2026-11-25T11:00:00Z"})
    assert tank_of(old).observed_at == _epoch_of("2026-11-25T11:00:00Z")
    later = _epoch_of("2026-11-25T11:59:00Z")
    assert tank_of(old, later).observed_at == later
    assert tank_of(old, later - 7200).observed_at == _epoch_of("2026-11-25T11:00:00Z")


def _epoch_of(text: str) -> float:
    from tokenfleet.telemetry.vehicle import parse_time

    parsed = parse_time(text)
    assert parsed is not None
    return parsed.timestamp()


def test_record_cache_reuses_records_of_unchanged_nodes_only() -> None:
    from tokenfleet.controllers.snapshot import RecordCache

    cars = [vehicle("car-1"), vehicle("car-2")]
    shelf = rack("rack-1")
    cache = RecordCache()
    tanks, pools = [tank_view()], [pool_view()]
    first = _build(nodes=[*cars, shelf], tanks=tanks, pools=pools, cache=cache)
    again = _build(nodes=[*cars, shelf], tanks=tanks, pools=pools, cache=cache)
    # the same parsed records: the same engine records (objects), the same sites
    for old, new in zip(first.snapshot.vehicles, again.snapshot.vehicles, strict=True):  # type: ignore[attr-defined]
        assert old is new
    assert first.snapshot.racks[0] is again.snapshot.racks[0]  # type: ignore[attr-defined]
    assert again.sites == first.sites  # type: ignore[attr-defined]
    # car-2 changed (a new parsed record): only its engine record is new
    changed = vehicle("car-2", plugged_in="false")
    third = _build(nodes=[cars[0], changed, shelf], tanks=tanks, pools=pools, cache=cache)
    v1, v2 = third.snapshot.vehicles  # type: ignore[attr-defined]
    assert v1 is again.snapshot.vehicles[0] and v2.plugged_in is False  # type: ignore[attr-defined]
    # its own terms: unusable now (no runtime) -> rebuilt, cordoned
    fourth = _build(
        nodes=[cars[0], changed, shelf],
        tanks=tanks,
        pools=pools,
        cache=cache,
        unusable_nodes={"car-1": "NoRuntime"},
    )
    assert fourth.snapshot.vehicles[0].cordoned  # type: ignore[attr-defined]
    assert fourth.snapshot.vehicles[1] is v2  # type: ignore[attr-defined]
    # a pool spec change (cordoned) rebuilds every record under the new terms
    cordoned = replace(pool_view(), spec={**pool_view().spec, "cordoned": True})
    fifth = _build(nodes=[cars[0], changed, shelf], tanks=tanks, pools=[cordoned], cache=cache)
    assert all(v.cordoned for v in fifth.snapshot.vehicles)  # type: ignore[attr-defined]
    # the result equals a build without the cache
    plain = _build(nodes=[cars[0], changed, shelf], tanks=tanks, pools=[cordoned])
    assert fifth.snapshot == plain.snapshot  # type: ignore[attr-defined]
    # a Node gone is forgotten: it comes back as a fresh build
    sixth = _build(nodes=[cars[0], shelf], tanks=tanks, pools=[cordoned], cache=cache)
    assert [v.name for v in sixth.snapshot.vehicles] == ["car-1"]  # type: ignore[attr-defined]
