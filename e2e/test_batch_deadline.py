"""A batch's deadline at risk raises its job's throughput target, end to end: the dispatcher
sees the ETA pass the window's end, says so in the batch's status (``DeadlineAtRisk``,
``requestedTokensPerSecond``) and annotates the InferenceJob with
``tokenfleet.io/batch-tokens-per-second``; the operator adds that to the job's target and places
more replicas (cars here, up to ``replicas.max``); when the batch goes (deleted: cancelled and
cleaned up by the finalizer) the annotation goes too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.batch_kit import (
    Bucket,
    DispatcherProcess,
    batch_status,
    create_batch,
    create_store_secret,
    input_lines,
    remove_batches,
    request_line,
)
from e2e.cluster.fleet import Fleet
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    GROUP,
    VEHICLE_INT4,
    VERSION,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)
from tokenfleet.batch.demand import BATCH_TPS_ANNOTATION


@pytest.fixture(autouse=True)
def _no_leftover_batches(rig: Rig, namespace: str) -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        remove_batches(rig.custom, namespace)


def _annotation(rig: Rig, job: str) -> str | None:
    annotations = rig.job(job)["metadata"].get("annotations") or {}
    value = annotations.get(BATCH_TPS_ANNOTATION)
    return None if value is None else str(value)


def _condition(rig: Rig, name: str, kind: str) -> dict[str, Any]:
    for c in batch_status(rig.custom, rig.namespace, name).get("conditions") or ():
        if c["type"] == kind:
            return dict(c)
    return {}


def test_deadline_at_risk_raises_the_jobs_target_and_the_operator_places_more(
    rig: Rig, operator: OperatorProcess, fleet: Fleet, namespace: str, tmp_path: Path, objstore: Any
) -> None:
    rig.start_tritons(3, ["tinyllama-int4"])
    rig.start_sim([])
    pool = rig.create_pool("pool")
    for i in range(3):
        rig.add_vehicle(f"car{i}", i, pool)
    rig.wait_runtime_pods()
    # one car replica meets the job's own target (20 tokens/s declared)
    rig.create_job("grow", [VEHICLE_INT4], replicas=(1, 3), target_tps=20, targets=["Vehicle"])
    rig.wait_ready("grow", 1)
    assert int(rig.status("grow").get("desiredReplicas") or 0) == 1
    bucket = Bucket(objstore.store_config(), f"g-{rig.id}").create()
    create_store_secret(rig.core, namespace, "store", objstore.secret_data())
    # 60 requests of 400 tokens, one at a time on one replica (100 tokens/s, the int4
    # runtime's real rate): 240 s of work in a 120 s window
    bucket.put("in.jsonl", input_lines([request_line(f"g-{i:02d}", 400) for i in range(60)]))
    dispatcher = DispatcherProcess(
        fleet.env(),
        tmp_path / "dispatcher.log",
        namespace=namespace,
        s3_endpoint=objstore.endpoint,
        extra=("--unit-size", "1", "--max-window", "1"),
    )
    dispatcher.start()
    try:
        create_batch(
            rig.custom,
            namespace,
            "tight",
            job="grow",
            input_uri=f"s3://{bucket.name}/in.jsonl",
            output_uri=f"s3://{bucket.name}/out/",
            secret="store",
            window=120,
            priority="Standard",
        )
        wait_for(
            lambda: _condition(rig, "tight", "DeadlineAtRisk").get("status") == "True",
            60,
            "DeadlineAtRisk on the batch",
            describe=dispatcher.log_tail,
        )
        status = batch_status(rig.custom, namespace, "tight")
        assert status["deadlineAtRisk"] is True
        requested = float(status["requestedTokensPerSecond"])
        assert requested > 20, status  # more than the one replica's declared rate
        assert "batch-tokens-per-second" in _condition(rig, "tight", "DeadlineAtRisk")["message"]
        wait_for(lambda: _annotation(rig, "grow") is not None, 30, "the job's annotation")
        assert float(_annotation(rig, "grow") or 0) > 20
        # the operator adds it to the target: more replicas, up to replicas.max
        wait_for(
            lambda: int(rig.status("grow").get("desiredReplicas") or 0) == 3,
            60,
            "the job to want 3 replicas",
            describe=lambda: str(rig.status("grow")),
        )
        wait_for(
            lambda: int(rig.status("grow").get("readyReplicas") or 0) >= 2,
            120,
            "more ready replicas",
            describe=lambda: str(rig.status("grow")),
        )
        # the batch goes: no demand left, the annotation goes, the job wants 1 again
        rig.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferencebatches", "tight"
        )
        wait_for(lambda: _annotation(rig, "grow") is None, 60, "the annotation to go")
        wait_for(
            lambda: int(rig.status("grow").get("desiredReplicas") or 0) == 1,
            60,
            "the job to want 1 replica again",
        )
    finally:
        dispatcher.stop()
