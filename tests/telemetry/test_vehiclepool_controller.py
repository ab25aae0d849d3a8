"""VehiclePool aggregation (pure): counts, reasons (the placement engine's), capacity, writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tokenfleet.controllers.nodes import ServingReplica, serving_from_job
from tokenfleet.controllers.snapshot import PoolView, pool_of
from tokenfleet.controllers.vehiclepool import pool_status, status_changed
from tokenfleet.telemetry.node import NodeInfo, parse_node
from tokenfleet.telemetry.vehicle import format_time

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)

POOL_SPEC: dict[str, Any] = {
    "nodeSelector": {"tokenfleet.io/pool": "depot"},
    "region": "eu-west",
    "ownership": "fleet-ops",
    "battery": {
        "minStateOfChargePercent": 30,
        "targetStateOfChargePercent": 80,
        "maxBatteryTempC": 45,
    },
    "drainLeadSeconds": 900,
    "maxComputeTempC": 85,
    "minBandwidthMbps": 10,
    "staleAfterSeconds": 300,
    "hysteresisPercent": 2,
}


def car(
    name: str, *, memory: str = "8Gi", unschedulable: bool = False, **values: str | None
) -> NodeInfo:
    telemetry: dict[str, str | None] = {
        "soc-percent": "70",
        "plugged-in": "true",
        "charger-power-kw": "11",
        "battery-temp-c": "25",
        "compute-temp-c": "50",
        "departure-time": format_time(NOW + timedelta(hours=8)),
        "target-soc-percent": "80",
        "bandwidth-mbps": "100",
        "observed-at": format_time(NOW - timedelta(seconds=10)),
    }
    telemetry.update(values)
    return parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "depot"},
                "annotations": {
                    f"telemetry.tokenfleet.io/{k}": v for k, v in telemetry.items() if v is not None
                },
            },
            "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"memory": memory}},
        }
    )


def policy(**spec_overrides: Any) -> Any:
    spec = POOL_SPEC | spec_overrides
    # pool_of caches the parsed spec by (uid, generation): a distinct uid per distinct spec
    view = PoolView(
        name="depot", uid=repr(sorted(spec.items())), generation=1, spec=spec, status={}
    )
    return pool_of(view)


def run(
    nodes: list[NodeInfo], serving: dict[str, list[ServingReplica]] | None = None, **spec: Any
) -> tuple[dict[str, Any], float | None]:
    pol, _, cordoned = policy(**spec)
    return pool_status(
        policy=pol,
        cordoned=cordoned,
        generation=1,
        conditions=None,
        nodes=nodes,
        serving=serving or {},
        now=NOW,
    )


def test_counts_reasons_capacity() -> None:
    nodes = [
        car("ok-1"),
        car("ok-2", memory="16Gi"),
        car("unplugged", **{"plugged-in": "false"}),
        car("low", **{"soc-percent": "20"}),
        car("leaving", **{"departure-time": format_time(NOW + timedelta(minutes=10))}),
        car("hot", **{"battery-temp-c": "50"}),
        car("cpu-hot", **{"compute-temp-c": "90"}),
        car("slow-link", **{"bandwidth-mbps": "5"}),
        car("stale", **{"observed-at": format_time(NOW - timedelta(minutes=6))}),
        car("garbage", **{"soc-percent": "NaN"}),
        car("cordoned", unschedulable=True),
        car("also-unplugged", **{"plugged-in": "false"}),
    ]
    serving = {
        "ok-1": [ServingReplica("ns/a", 1, 120.0), ServingReplica("ns/b", 1, 30.0)],
        "stale": [ServingReplica("ns/a", 1, 120.0)],
    }
    status, oldest = run(nodes, serving)
    assert status["vehicles"] == {"total": 12, "eligible": 2, "serving": 2}
    assert status["ineligible"] == [
        {"reason": "NotPluggedIn", "count": 2},
        {"reason": "BatteryTooHot", "count": 1},
        {"reason": "BelowReserveSoC", "count": 1},
        {"reason": "ComputeTooHot", "count": 1},
        {"reason": "DepartureWithinDrainLead", "count": 1},
        {"reason": "LowBandwidth", "count": 1},
        {"reason": "MissingTelemetry", "count": 1},
        {"reason": "NodeCordoned", "count": 1},
        {"reason": "StaleTelemetry", "count": 1},
    ]
    assert status["capacity"] == {"memoryMiB": 8192 + 16384, "tokensPerSecond": 270.0}
    assert oldest == 360.0
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "True",
        "VehiclesEligible",
    )
    assert ready["message"] == "2/12 vehicles eligible"


def test_hysteresis_band_counts_as_ineligible_for_new_work() -> None:
    # 31 % is above the 30 % floor but inside the 2-point band: no new work
    status, _ = run([car("edge", **{"soc-percent": "31"})])
    assert status["ineligible"] == [{"reason": "BelowReserveSoC", "count": 1}]


def test_no_vehicles_and_none_eligible_and_cordoned() -> None:
    status, oldest = run([])
    assert status["vehicles"] == {"total": 0, "eligible": 0, "serving": 0}
    assert status["conditions"][0]["reason"] == "NoVehicles" and oldest is None
    status, _ = run([car("a", **{"plugged-in": "false"})])
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][0]["reason"] == "NoEligibleVehicles"
    assert "NotPluggedIn=1" in status["conditions"][0]["message"]
    status, _ = run([car("a")], cordoned=True)
    assert status["conditions"][0]["reason"] == "Cordoned"


def test_status_changed_only_on_change() -> None:
    status, _ = run([car("a"), car("b")])
    again, _ = pool_status(
        policy=policy()[0],
        cordoned=False,
        generation=1,
        conditions=status["conditions"],
        nodes=[car("a"), car("b")],
        serving={},
        now=NOW + timedelta(seconds=10),
    )
    assert not status_changed(status | {"energyUsedTodayKWh": 3.0}, again)
    moved, _ = run([car("a"), car("b", **{"plugged-in": "false"})])
    assert status_changed(status, moved)


def test_serving_from_job() -> None:
    spec = {
        "variants": [
            {"name": "int4", "tokensPerSecond": 40},
            {"name": "fp16", "tokensPerSecond": "x"},
        ]
    }
    status = {
        "placements": [
            {"node": "car-1", "variant": "int4", "state": "Loaded"},
            {"node": "car-1", "variant": "int4", "state": "Loaded"},
            {"node": "car-2", "variant": "int4", "state": "Loading"},
            {"node": "car-3", "variant": "gone", "state": "Loaded"},
            {"variant": "int4", "state": "Loaded"},
            "garbage",
        ]
    }
    assert serving_from_job("ns", "job", spec, status) == {
        "car-1": ServingReplica("ns/job", 2, 80.0),
        "car-3": ServingReplica("ns/job", 1, 0.0),
    }


def test_serving_from_job_sums_variant_watts() -> None:
    spec = {
        "variants": [
            {"name": "int4", "tokensPerSecond": 20, "watts": 60},
            {"name": "fp16", "tokensPerSecond": 40, "watts": "x"},
        ]
    }
    status = {
        "placements": [
            {"node": "car-1", "variant": "int4", "state": "Loaded"},
            {"node": "car-1", "variant": "fp16", "state": "Loaded"},
            {"node": "car-2", "variant": "int4", "state": "Loaded"},
            {"node": "car-2", "variant": "int4", "state": "Unloading"},
        ]
    }
    assert serving_from_job("ns", "job", spec, status) == {
        "car-1": ServingReplica("ns/job", 2, 60.0, 60.0),
        "car-2": ServingReplica("ns/job", 1, 20.0, 60.0),
    }


def test_pool_status_and_planner_share_one_eligibility_rule() -> None:
    """Cars the planner refuses (unknown charger power, a reading stamped in the future, a
    full-width number) are not counted eligible in the pool status either."""
    from tokenfleet.controllers.snapshot import build_snapshot
    from tokenfleet.placement.state import vehicle_state

    nodes = [
        car("ok"),
        car("no-charger", **{"charger-power-kw": None}),
        car("ahead", **{"observed-at": format_time(NOW + timedelta(days=1))}),
        car("skewed", **{"observed-at": format_time(NOW + timedelta(seconds=20))}),
        car("full-width", **{"soc-percent": "\uff15\uff10"}),
    ]
    status, _ = run(nodes)
    assert status["vehicles"]["eligible"] == 2  # ok, and skewed within the 30 s allowance
    assert status["ineligible"] == [
        {"reason": "MissingTelemetry", "count": 2},
        {"reason": "StaleTelemetry", "count": 1},
    ]
    parts = build_snapshot(
        now=NOW.timestamp(),
        nodes=nodes,
        tanks=[],
        pools=[PoolView(name="depot", uid="u", generation=1, spec=POOL_SPEC, status={})],
        jobs=[],
    )
    (pol,) = parts.snapshot.pools
    eligible = {
        v.name
        for v in parts.snapshot.vehicles
        if vehicle_state(v, pol, NOW.timestamp()).new is None
    }
    assert eligible == {"ok", "skewed"}
