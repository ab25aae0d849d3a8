"""Priority preemption on the real control plane with real tritonservers.

A priority-10 job fills the three attested cars; an unattested car joins (the low job is at
target and stays put).  A priority-1000 job that requires attestation arrives: every car it may
use is full, so it takes one from the low job.  The low job's replica is preempted and moved to
the unattested car make-before-break - the low job never drops below its three ready replicas -
and an Event on the low job names the reason ``Preempted``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    HEALTHY_VEHICLE,
    VEHICLE_INT4,
    VEHICLE_MODEL,
    OperatorProcess,
    Rig,
    TargetWatch,
    operator_fixture,
    rfc3339,
    rig_fixture,
    wait_for,
)
from tokenfleet.api.models import GROUP, VERSION


def _add_car(rig: Rig, base: str, runtime: int, pool: str, *, attested: bool) -> str:
    """A car with room for one INT4 replica (8 GiB), attested or not."""
    name = rig.name(base)
    values = dict(HEALTHY_VEHICLE)
    values["departure-time"] = rfc3339(datetime.now(UTC) + timedelta(hours=8))
    values["observed-at"] = rfc3339(datetime.now(UTC))
    rig.fleet.add_vehicle(
        name,
        pool=pool,
        region=rig.region,
        memory="8Gi",
        attested=attested,
        telemetry=values,
        labels=rig._rig_labels(),
        annotations={"tokenfleet.io/runtime-endpoint": rig.endpoint(runtime)},
    )
    rig.nodes.append(name)
    rig.node_runtime[name] = runtime
    return name


def _create_job(rig: Rig, name: str, priority: int, replicas: int, attested: bool) -> None:
    body: dict[str, Any] = rig.job_body(
        name,
        [VEHICLE_INT4],
        replicas=(1, replicas),
        target_tps=20 * replicas,
        targets=["Vehicle"],
        preference="PreferVehicle",
    )
    body["spec"]["priority"] = priority
    body["spec"]["placement"]["requireAttestation"] = attested
    rig.custom.create_namespaced_custom_object(GROUP, VERSION, rig.namespace, "inferencejobs", body)


def _loaded(rig: Rig, job: str) -> set[str]:
    return {
        p["node"] for p in rig.status(job).get("placements") or () if p.get("state") == "Loaded"
    }


def test_high_priority_job_preempts_make_before_break(rig: Rig, operator: OperatorProcess) -> None:
    rig.start_tritons(4, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    attested = [_add_car(rig, f"car{i}", i, pool, attested=True) for i in range(3)]
    rig.wait_runtime_pods()
    _create_job(rig, "low", priority=10, replicas=3, attested=False)
    rig.wait_ready("low", 3)
    assert _loaded(rig, "low") == set(attested)

    spare = _add_car(rig, "spare", 3, pool, attested=False)
    rig.wait_runtime_pods()
    with TargetWatch(rig, "low") as watch:
        _create_job(rig, "high", priority=1000, replicas=1, attested=True)
        rig.wait_ready("high", 1)
        (taken,) = _loaded(rig, "high")
        assert taken in attested
        after = wait_for(
            lambda: (
                s
                if (s := _loaded(rig, "low")) == (set(attested) - {taken}) | {spare}
                and all(
                    p.get("state") == "Loaded" for p in rig.status("low").get("placements") or ()
                )
                else None
            ),
            90,
            f"the low job's replica on {taken} to move to {spare}",
            describe=lambda: rig.status("low").get("placements"),
        )
        wait_for(
            lambda: set(rig.slice_addresses("low")) == after,
            20,
            "the low job's EndpointSlice to follow",
            describe=lambda: rig.slice_addresses("low"),
        )
    # make-before-break: the low job kept its three ready replicas and endpoints throughout
    assert not watch.errors, watch.errors[:3]
    assert len(watch.samples) > 5
    assert watch.min_ready >= 3, f"low job's ready replicas fell to {watch.min_ready}"
    assert watch.min_endpoints >= 3, f"low job's endpoints fell to {watch.min_endpoints}"
    events = wait_for(
        lambda: [
            e for e in rig.events("low") if e["reason"] == "Preempted" and taken in e["message"]
        ],
        30,
        f"an Event with reason Preempted naming {taken}",
        describe=lambda: rig.events("low"),
    )
    assert spare in events[0]["message"], events
    # the high job serves from the car it took; the low job from its new car
    assert len(rig.generate(taken, VEHICLE_MODEL, "five six", 4)) == 4
    assert VEHICLE_MODEL in rig.loaded_models(spare)
    assert operator.metric("tokenfleet_moves_total", reason="Preempted") == 1
