"""The dev fleet model: deterministic, staggered, time-scaled, publishing in wall time."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from tokenfleet.agent.signals import signals_from_mapping
from tokenfleet.agent.source import JsonFileSource
from tokenfleet.devfleet.driver import MemorySource, load_from_jobs, write_document
from tokenfleet.devfleet.model import DevFleet, DevFleetConfig, ScaledClock

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CARS = [f"car-{i}" for i in range(4)]


def run(fleet: DevFleet, seconds: int, step: float = 1.0) -> list[str]:
    out = []
    for k in range(1, int(seconds / step) + 1):
        out += [f"{c.kind} {c.subject}" for c in fleet.advance(T0 + k * step, {"car-1": 60.0})]
    return out


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    a = DevFleet(CARS, ["tank"], DevFleetConfig(seed=3), T0)
    b = DevFleet(CARS, ["tank"], DevFleetConfig(seed=3), T0)
    c = DevFleet(CARS, ["tank"], DevFleetConfig(seed=4), T0)
    assert run(a, 600) == run(b, 600)
    assert [a.car_document(n) for n in CARS] == [b.car_document(n) for n in CARS]
    run(c, 600)
    assert [a.car_document(n) for n in CARS] != [c.car_document(n) for n in CARS]


def test_cars_arrive_charge_and_depart_at_most_one_away() -> None:
    """Four simulated hours at 60x (4 wall minutes): every car leaves and comes back once, the
    staggered cycles keep at most one of four away, and a parked car charges."""
    fleet = DevFleet(CARS, [], DevFleetConfig(), T0)
    socs = {n: fleet.car_document(n)["soc-percent"] for n in CARS}
    events: list[str] = []
    for k in range(1, 241):
        events += [f"{c.kind} {c.subject}" for c in fleet.advance(T0 + k)]
        assert sum(not fleet.present(n) for n in CARS) <= 1
    for n in CARS:
        assert f"Departed {n}" in events and f"Arrived {n}" in events
    # charged toward (not past) the target while parked
    assert any(float(fleet.car_document(n)["soc-percent"]) > float(socs[n]) for n in CARS)  # type: ignore[arg-type]
    assert all(float(fleet.car_document(n)["soc-percent"]) <= 80.0 + 1e-6 for n in CARS)  # type: ignore[arg-type]


def test_each_pool_is_staggered_on_its_own() -> None:
    """Two pools of four: in each, at most one car is away at a time (a fleet-wide stagger
    would bunch a pool's cars together)."""
    cars = [f"a-{i}" for i in range(4)] + [f"b-{i}" for i in range(4)]
    groups = ["a"] * 4 + ["b"] * 4
    fleet = DevFleet(cars, [], DevFleetConfig(), T0, groups=groups)
    for k in range(0, 241, 2):
        fleet.advance(T0 + k)
        for g in "ab":
            assert sum(not fleet.present(f"{g}-{i}") for i in range(4)) <= 1


def test_departure_is_published_in_wall_time_and_never_early() -> None:
    cfg = DevFleetConfig(scale=60.0)
    fleet = DevFleet(CARS, [], cfg, T0)
    name = next(n for n in CARS if fleet.present(n))
    published = fleet.car_document(name)["departure-time"]
    assert isinstance(published, str)
    wall = datetime.fromisoformat(published.replace("Z", "+00:00")).timestamp()
    # a parked stay lasts (4 - 0.75) virtual hours = 195 wall seconds at 60x
    assert T0 < wall <= T0 + 200
    for k in range(1, 260):
        fleet.advance(T0 + k)
    (left, _soc), *_ = fleet.departures(name)
    assert left >= wall  # the car never leaves before the time it announced


def test_away_car_is_unplugged_and_announces_its_next_departure() -> None:
    fleet = DevFleet(CARS, [], DevFleetConfig(), T0)
    away = next(n for n in CARS if not fleet.present(n))
    doc = fleet.car_document(away)
    assert doc["plugged-in"] is False and doc["charger-power-kw"] == 0.0
    # the schedule's next departure (after the next arrival): never missing, never past
    assert isinstance(doc["departure-time"], str)
    assert datetime.fromisoformat(doc["departure-time"].replace("Z", "+00:00")).timestamp() > T0
    signals, problems = signals_from_mapping({k: v for k, v in doc.items() if v is not None})
    assert problems == () and signals.plugged_in is False


def test_compute_heats_the_car_and_load_heats_the_tank() -> None:
    fleet = DevFleet(CARS, ["tank"], DevFleetConfig(), T0)
    staying = [n for n in CARS if (fleet.departure_wall(n) or 0.0) > T0 + 60]
    busy, idle = staying[:2]
    before = fleet.tank_reading("tank")
    for k in range(1, 30):
        fleet.advance(T0 + k, {busy: 300.0}, {"tank": 40.0})
    hot, cold = fleet.car_document(busy), fleet.car_document(idle)
    assert float(hot["compute-temp-c"]) > float(cold["compute-temp-c"]) + 5  # type: ignore[arg-type]
    after = fleet.tank_reading("tank")
    assert after.heat_kw == pytest.approx(42.0)
    assert after.return_c > before.return_c + 1


def test_site_cap_drops_for_demand_response() -> None:
    # start at 16:00 virtual; the DR window is 17:00-19:00: one wall minute to the drop at 60x
    fleet = DevFleet(CARS, [], DevFleetConfig(), T0, virtual_start=T0 + 16 * 3600)
    assert fleet.site_cap_kw() == 100.0
    caps = []
    for k in range(1, 200):
        caps += [c.detail for c in fleet.advance(T0 + k) if c.kind == "SiteCap"]
    assert caps == ["100 -> 60 kW (demand response)", "60 -> 100 kW (end of demand response)"]


def test_scaled_clock_round_trips_and_pool_battery_is_scaled() -> None:
    clock = ScaledClock(T0, T0 + 50.0, 30.0)
    assert clock.virtual(T0 + 2) == T0 + 110.0
    assert clock.wall(clock.virtual(T0 + 7.5)) == pytest.approx(T0 + 7.5)
    # 60 kWh at 30x would be 2 kWh; the API's floor is 5, made up by the published charger power
    fleet = DevFleet(CARS, [], DevFleetConfig(scale=30.0), T0)
    assert fleet.pool_battery_kwh() == 5.0
    parked = next(n for n in CARS if fleet.present(n))
    assert fleet.car_document(parked)["charger-power-kw"] == pytest.approx(11.0 * 5 * 30 / 60)
    slow = DevFleet(CARS, [], DevFleetConfig(scale=6.0), T0)
    assert slow.pool_battery_kwh() == 10.0
    assert slow.car_document(parked)["charger-power-kw"] == pytest.approx(11.0)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="scale"):
        DevFleetConfig(scale=0)
    with pytest.raises(ValueError, match="away_hours"):
        DevFleetConfig(away_hours=5.0)


def test_load_from_jobs_sums_live_replicas_per_node_and_tank() -> None:
    job = {
        "spec": {"variants": [{"name": "fp16", "watts": 300}, {"name": "int4", "watts": 45}]},
        "status": {
            "placements": [
                {"node": "rack-0", "variant": "fp16", "state": "Loaded", "tank": "t"},
                {"node": "rack-1", "variant": "fp16", "state": "Loading", "tank": "t"},
                {"node": "car-0", "variant": "int4", "state": "Loaded", "pool": "p"},
                {"node": "car-1", "variant": "int4", "state": "Failed", "pool": "p"},
            ]
        },
    }
    nodes, tanks = load_from_jobs([job, {"spec": {}, "status": {}}])
    assert nodes == {"rack-0": 300.0, "rack-1": 300.0, "car-0": 45.0}
    assert tanks == {"t": pytest.approx(0.6)}


def test_documents_reach_the_agent_sources(tmp_path: Path) -> None:
    """The file a real agent reads and the in-memory source of the bulk give the same sample."""
    fleet = DevFleet(CARS, [], DevFleetConfig(), T0)
    doc = fleet.car_document("car-1")
    path = tmp_path / "car-1.json"
    write_document(path, doc)
    assert "departure-time" not in json.loads(path.read_text()) or doc["departure-time"]
    memory = MemorySource()
    memory.doc = doc
    from_file, from_memory = JsonFileSource(path).read(), memory.read()
    assert from_file.signals == from_memory.signals
    assert from_file.observed_at == from_memory.observed_at
    assert from_file.problems == ()
