"""One bad job harms no other: a job whose model is not in the repository (a "ghost" model) fails
its own load on real tritonservers and ends Stalled ``LoadFailed`` naming Triton's message, while
every replica of a healthy job on the same runtimes stays Loaded where it was (no RuntimeFailed,
no move), through the ghost job's retries."""

from __future__ import annotations

import time

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    VEHICLE_INT4,
    VEHICLE_MODEL,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)


def _stalled(rig: Rig, job: str) -> tuple[str, str] | None:
    condition = rig.condition(job, "Stalled")
    if condition is None or condition.get("status") != "True":
        return None
    return str(condition.get("reason")), str(condition.get("message"))


def test_ghost_model_job_leaves_other_jobs_untouched(rig: Rig, operator: OperatorProcess) -> None:
    rig.start_tritons(2, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    cars = [rig.add_vehicle(f"car{i}", i, pool) for i in range(2)]
    rig.wait_runtime_pods()
    rig.create_job("good", [VEHICLE_INT4], replicas=(2, 2), target_tps=40, targets=["Vehicle"])
    good = {(p["node"], p["since"]) for p in rig.wait_ready("good", 2)["placements"]}
    assert {node for node, _ in good} == set(cars)

    # the same runtimes, a model they do not have: every load of it fails
    rig.create_job(
        "ghost",
        [VEHICLE_INT4],
        replicas=(1, 1),
        target_tps=20,
        targets=["Vehicle"],
        model="ghost",
    )
    wait_for(
        lambda: (_stalled(rig, "ghost") or ("", ""))[0] == "LoadFailed",
        90,
        "the ghost job to be Stalled with reason LoadFailed",
        describe=lambda: rig.status("ghost"),
    )
    _, message = _stalled(rig, "ghost") or ("", "")
    assert "ghost-int4" in message, message  # Triton's own text names the model it cannot load
    load_failed = [e for e in rig.events("ghost") if e["reason"] == "LoadFailed"]
    assert load_failed, rig.events("ghost")

    # through the ghost job's failures and a retry after its back-off (30 s in e2e), the good
    # job's replicas stay exactly where they were, Loaded, with no RuntimeFailed anywhere
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        status = rig.status("good")
        now = {(p["node"], p["since"]) for p in status.get("placements") or ()}
        assert now == good, status
        assert all(p["state"] == "Loaded" for p in status["placements"]), status
        time.sleep(1.0)
    for car in cars:
        assert VEHICLE_MODEL in rig.loaded_models(car)
    for job in ("good", "ghost"):
        assert not [e for e in rig.events(job) if e["reason"] == "RuntimeFailed"], rig.events(job)
    assert not [e for e in rig.events("good") if e["type"] == "Warning"], rig.events("good")
    assert (rig.condition("good", "Ready") or {}).get("status") == "True"
    wait_for(
        lambda: (_stalled(rig, "ghost") or ("", ""))[0] == "LoadFailed",
        60,
        "the ghost job to stay Stalled LoadFailed after its retry",
        describe=lambda: rig.status("ghost"),
    )
    assert operator.healthy()
