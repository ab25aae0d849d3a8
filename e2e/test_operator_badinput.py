"""Bad telemetry (NaN, -5 %, 1e9 °C, garbage strings, a missing key) is ignored with an Event and a
metric and never crashes a handler; invalid specs are rejected by the API server with messages
naming the field."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    GROUP,
    VEHICLE_INT4,
    VEHICLE_MODEL,
    VERSION,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)


def _node_events(rig: Rig, node: str) -> list[dict[str, Any]]:
    items = rig.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={node}"
    ).items
    return [{"reason": e.reason, "message": e.message, "type": e.type} for e in items]


def _rejected(op: OperatorProcess, kind: str, field: str) -> float:
    return op.metric("tokenfleet_telemetry_rejected_total", kind=kind, field=field)


UNKNOWN_GRACE_SECONDS = 20


def _pool_ineligible(rig: Rig, pool: str) -> dict[str, int]:
    status = rig.custom.get_cluster_custom_object(GROUP, VERSION, "vehiclepools", pool).get(
        "status"
    )
    return {r["reason"]: r["count"] for r in (status or {}).get("ineligible") or ()}


BAD_VEHICLE = [
    ("soc-percent", "NaN"),
    ("soc-percent", "-5"),
    ("battery-temp-c", "1e9"),
    ("compute-temp-c", "garbage"),
    ("bandwidth-mbps", "fast"),
    ("soc-percent", "\uff15\uff10"),  # full-width "50": only ASCII decimals parse
]


def test_bad_telemetry_is_ignored_with_event_and_metric(
    rig: Rig, operator: OperatorProcess
) -> None:
    rig.start_tritons(3, [VEHICLE_MODEL])
    rig.start_sim([])
    tank = rig.create_tank("tank")
    pool = rig.create_pool("pool", unknownGraceSeconds=UNKNOWN_GRACE_SECONDS)
    cars = [rig.add_vehicle(f"car{i}", i, pool) for i in range(3)]
    rig.wait_runtime_pods()
    rig.create_job("robust", [VEHICLE_INT4], replicas=(1, 1), target_tps=20, targets=["Vehicle"])
    (serving,) = [p["node"] for p in rig.wait_ready("robust", 1)["placements"]]
    idle = next(c for c in cars if c != serving)

    # Vehicle telemetry: each bad value is counted, named in a Warning Event, and ignored.
    for key, value in BAD_VEHICLE:
        before = _rejected(operator, "vehicle", key)
        rig.set_telemetry(idle, **{key.replace("-", "_"): value})
        wait_for(
            lambda key=key, before=before: _rejected(operator, "vehicle", key) > before,
            20,
            f"tokenfleet_telemetry_rejected_total{{kind=vehicle,field={key}}} to grow ({value!r})",
        )
        wait_for(
            lambda key=key, value=value: [
                e
                for e in _node_events(rig, idle)
                if e["reason"] == "TelemetryRejected" and f"{key}={value!r}" in e["message"]
            ],
            20,
            f"a TelemetryRejected Event on {idle} naming {key}={value!r}",
            describe=lambda: _node_events(rig, idle),
        )
        assert operator.healthy()
    # a missing key
    before = _rejected(operator, "vehicle", "plugged-in")
    rig.fleet.patch_node(idle, annotations={"telemetry.tokenfleet.io/plugged-in": None})
    wait_for(
        lambda: _rejected(operator, "vehicle", "plugged-in") > before,
        20,
        "the missing plugged-in key to be counted",
    )
    wait_for(
        lambda: [e for e in _node_events(rig, idle) if "plugged-in: Missing" in e["message"]],
        20,
        "an Event naming the missing key",
        describe=lambda: _node_events(rig, idle),
    )

    # Unknown is not bad: garbage SoC on the serving car keeps its replica there (no eviction on
    # a guess) until the pool's unknownGraceSeconds ran out; then it drains with an Event.
    rig.set_telemetry(serving, soc_percent="garbage")
    marked = time.monotonic()
    wait_for(
        lambda: _pool_ineligible(rig, pool).get("MissingTelemetry", 0) >= 2,
        30,
        f"pool {pool} to count {serving} (and {idle}) as not eligible",
        describe=lambda: rig.custom.get_cluster_custom_object(
            GROUP, VERSION, "vehiclepools", pool
        ).get("status"),
    )
    while time.monotonic() - marked < UNKNOWN_GRACE_SECONDS * 0.6:
        placements = rig.placements("robust")
        assert [(p["node"], p["state"]) for p in placements] == [(serving, "Loaded")], placements
        time.sleep(1.0)
    wait_for(
        lambda: [p["node"] for p in rig.placements("robust")] not in ([], [serving]),
        UNKNOWN_GRACE_SECONDS + 60,
        f"the replica to leave {serving} once its SoC was unknown for the grace",
        describe=lambda: rig.status("robust"),
    )
    assert time.monotonic() - marked >= UNKNOWN_GRACE_SECONDS - 1
    (new,) = [p["node"] for p in rig.wait_ready("robust", 1)["placements"]]
    assert new not in (serving, idle)  # idle has no plugged-in reading either
    wait_for(
        lambda: [
            e
            for e in rig.events("robust")
            if e["reason"] == "TelemetryUnknown" and serving in e["message"]
        ],
        20,
        f"a TelemetryUnknown Event for the replica drained from {serving}",
        describe=lambda: rig.events("robust"),
    )

    # Tank telemetry: NaN, a negative flow, 1e9 °C, a garbage string, a missing property.
    assert rig.sim is not None
    rig.sim.set(
        tank,
        supply_c=float("nan"),
        flow_lpm=-5.0,
        return_c=1e9,
        specific_heat="garbage",
        missing=["HeatRemovedkW"],
    )
    wait_for(
        lambda: (
            _rejected(operator, "tank", "SupplyTemperatureCelsius") > 0
            and _rejected(operator, "tank", "ReturnTemperatureCelsius") > 0
        ),
        20,
        "tank rejections to be counted",
        describe=lambda: operator.metrics_text()[-3000:],
    )
    wait_for(
        lambda: [
            e
            for e in rig.core.list_namespaced_event(
                "default", field_selector=f"involvedObject.name={tank}"
            ).items
            if e.type == "Warning"
        ],
        20,
        f"a Warning Event on ImmersionPod {tank}",
    )
    status = rig.custom.get_cluster_custom_object(GROUP, VERSION, "immersionpods", tank)["status"]
    assert "supplyTempC" not in status and "returnTempC" not in status, status

    # Nothing crashed: the operator is alive and healthy, no handler failed, the job is Ready.
    assert operator.healthy()
    failures = [
        r
        for r in operator.log_records()
        if r.get("severity") == "error"
        and "failed" in str(r.get("message", ""))
        and "Request attempt" not in str(r.get("message", ""))
    ]
    assert not failures, json.dumps(failures[:3], indent=1)
    rig.wait_ready("robust", 1)


def test_future_stamped_car_gets_no_work(rig: Rig, operator: OperatorProcess) -> None:
    """A reading stamped a day ahead is unknown (not fresh): the car takes no work, a Warning
    Event names the skew and tokenfleet_telemetry_rejected_total{field=observed-at} counts it;
    so does a reading from 2001 (too old)."""
    rig.start_tritons(2, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    ahead = rig.add_vehicle("ahead", 0, pool)
    clean = rig.add_vehicle("clean", 1, pool)
    old = rig.add_vehicle("old", 1, pool)
    rig.wait_runtime_pods()
    before = operator.metric(
        "tokenfleet_telemetry_rejected_total", kind="vehicle", field="observed-at"
    )
    rig.fleet.set_telemetry(ahead, observed_at=datetime.now(UTC) + timedelta(days=1))
    rig.fleet.set_telemetry(old, observed_at=datetime(2001, 1, 1, tzinfo=UTC))
    # the operator judges both readings (metric, Events) before any job exists
    wait_for(
        lambda: (
            operator.metric(
                "tokenfleet_telemetry_rejected_total", kind="vehicle", field="observed-at"
            )
            >= before + 2
        ),
        30,
        "the future and the 2001 readings to be counted as rejected",
    )
    for node, words in ((ahead, "in the future"), (old, "old")):
        wait_for(
            lambda node=node, words=words: [
                e
                for e in _node_events(rig, node)
                if e["reason"] == "TelemetryRejected" and words in e["message"]
            ],
            30,
            f"a TelemetryRejected Event on {node} ({words})",
            describe=lambda node=node: _node_events(rig, node),
        )
    # a job that would take every car: 3 replicas at most one per car
    rig.create_job("spread", [VEHICLE_INT4], replicas=(1, 3), target_tps=1000, targets=["Vehicle"])
    wait_for(
        lambda: rig.placements("spread"),
        90,
        "a replica of the job loaded",
        describe=lambda: rig.status("spread"),
    )
    time.sleep(5)  # a few plans later: still only the clean car
    assert [p["node"] for p in rig.placements("spread")] == [clean], rig.status("spread")


def _create_job(rig: Rig, spec_patch: dict[str, Any]) -> ApiException:
    body = rig.job_body("bad", [VEHICLE_INT4], replicas=(1, 1), target_tps=20)
    body["spec"].update(spec_patch)
    with pytest.raises(ApiException) as info:
        rig.custom.create_namespaced_custom_object(
            GROUP, VERSION, rig.namespace, "inferencejobs", body
        )
    return info.value


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"replicas": {"min": 3, "max": 1}}, "spec.replicas"),
        ({"variants": []}, "spec.variants"),
        ({"variants": [{**VEHICLE_INT4, "precision": "FP3"}]}, "spec.variants[0].precision"),
        ({"variants": [{**VEHICLE_INT4, "memoryMiB": -1}]}, "spec.variants[0].memoryMiB"),
        ({"variants": [VEHICLE_INT4, VEHICLE_INT4]}, "spec.variants"),
        ({"priority": 5000}, "spec.priority"),
        ({"placement": {"targets": ["Rack"]}}, "spec.placement.targets"),
    ],
)
def test_invalid_job_specs_are_rejected_naming_the_field(
    rig: Rig, patch: dict[str, Any], field: str
) -> None:
    exc = _create_job(rig, patch)
    assert exc.status == 422, exc
    message = json.loads(exc.body)["message"]
    assert field in message, message


def test_invalid_tank_and_pool_specs_are_rejected_naming_the_field(rig: Rig) -> None:
    rig.start_sim([])
    with pytest.raises(ApiException) as info:
        rig.create_tank("badtank", coolant={"maxSupplyTempC": 50, "maxReturnTempC": 40})
    assert info.value.status == 422
    assert "spec.coolant.maxSupplyTempC" in json.loads(info.value.body)["message"]
    with pytest.raises(ApiException) as info:
        rig.create_pool("badpool", battery={"minStateOfChargePercent": 150})
    assert info.value.status == 422
    assert "spec.battery.minStateOfChargePercent" in json.loads(info.value.body)["message"]
