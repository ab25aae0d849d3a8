"""``replicas.min`` holds whatever the throughput target says: a target of 0 and no target at all
both get ``replicas.min`` Loaded replicas on real tritonservers, Ready with reason Serving (not
Stalled with a misleading reason)."""

from __future__ import annotations

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    GROUP,
    VEHICLE_INT4,
    VEHICLE_MODEL,
    VERSION,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
)


def test_min_replicas_with_a_zero_or_absent_target(rig: Rig, operator: OperatorProcess) -> None:
    rig.start_tritons(3, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    cars = [rig.add_vehicle(f"car{i}", i, pool) for i in range(3)]
    rig.wait_runtime_pods()
    rig.create_job("zero", [VEHICLE_INT4], replicas=(2, 3), target_tps=0, targets=["Vehicle"])
    body = rig.job_body("absent", [VEHICLE_INT4], replicas=(1, 3), target_tps=0)
    body["spec"]["placement"]["targets"] = ["Vehicle"]
    del body["spec"]["throughput"]
    rig.custom.create_namespaced_custom_object(GROUP, VERSION, rig.namespace, "inferencejobs", body)
    for job, replicas in (("zero", 2), ("absent", 1)):
        status = rig.wait_ready(job, replicas)
        assert len({p["node"] for p in status["placements"]}) == replicas
        assert {p["node"] for p in status["placements"]} <= set(cars)
        ready = rig.condition(job, "Ready") or {}
        assert (ready.get("status"), ready.get("reason")) == ("True", "Serving"), status
        assert (rig.condition(job, "Stalled") or {}).get("status") != "True", status
        assert status.get("shortfallReason") is None, status
