"""The dispatcher's finalizer on the real control plane, real tritonservers and the real object
store: ``kubectl delete`` of a finished batch removes its progress (``.state/<uid>/``) and keeps
the user's output and error files; a running batch deleted is cancelled first (what finished is
in the output, the rest in the error file); a batch whose store cannot be reached is still
deleted, after ``--cleanup-seconds``, with a Warning Event naming the prefix left behind."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

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
    RACK_FP16,
    VERSION,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)
from tokenfleet.batch.cleanup import FINALIZER

CLEANUP_SECONDS = 8


@pytest.fixture(autouse=True)
def _no_leftover_batches(rig: Rig, namespace: str) -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        remove_batches(rig.custom, namespace)


def _get(rig: Rig, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = rig.custom.get_namespaced_custom_object(
            GROUP, VERSION, rig.namespace, "inferencebatches", name
        )
        return obj
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _delete(rig: Rig, name: str) -> None:
    rig.custom.delete_namespaced_custom_object(
        GROUP, VERSION, rig.namespace, "inferencebatches", name
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_delete_cancels_then_removes_the_state_and_keeps_the_results(
    rig: Rig, operator: OperatorProcess, fleet: Fleet, namespace: str, tmp_path: Path, objstore: Any
) -> None:
    rig.start_tritons(1, ["tinyllama-fp16"])
    rig.start_sim([])
    tank = rig.create_tank("tank")
    rig.add_rack("rack0", 0, tank)
    rig.wait_runtime_pods()
    rig.create_job("assist", [RACK_FP16], replicas=(1, 1), target_tps=100, targets=["Rack"])
    rig.wait_ready("assist", 1)
    bucket = Bucket(objstore.store_config(), f"d-{rig.id}").create()
    create_store_secret(rig.core, namespace, "store", objstore.secret_data())
    create_store_secret(
        rig.core,
        namespace,
        "gone",
        {**objstore.secret_data(), "endpoint": f"http://127.0.0.1:{_closed_port()}"},
    )
    bucket.put("in/short.jsonl", input_lines([request_line(f"a-{i}", 8) for i in range(12)]))
    # 40 requests of 400 tokens, one at a time: far longer than the test waits
    bucket.put("in/long.jsonl", input_lines([request_line(f"l-{i:02d}", 400) for i in range(40)]))
    dispatcher = DispatcherProcess(
        fleet.env(),
        tmp_path / "dispatcher.log",
        namespace=namespace,
        s3_endpoint=objstore.endpoint,
        extra=(
            "--unit-size", "1", "--max-window", "1",
            "--cleanup-seconds", str(CLEANUP_SECONDS),
        ),
    )  # fmt: skip
    dispatcher.start()
    try:
        # 1. a finished batch: .state/ goes, output.jsonl and errors.jsonl stay
        create_batch(
            rig.custom,
            namespace,
            "short",
            job="assist",
            input_uri=f"s3://{bucket.name}/in/short.jsonl",
            output_uri=f"s3://{bucket.name}/short/",
            secret="store",
        )
        wait_for(
            lambda: batch_status(rig.custom, namespace, "short").get("phase") == "Completed",
            120,
            "the short batch to complete",
            describe=dispatcher.log_tail,
        )
        obj = _get(rig, "short")
        assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]
        uid = obj["metadata"]["uid"]
        assert bucket.keys(f"short/.state/{uid}/"), "progress is in the store while it exists"
        _delete(rig, "short")
        wait_for(lambda: _get(rig, "short") is None, 60, "the short batch to be gone")
        assert bucket.keys("short/.state/") == []
        assert sorted(bucket.keys("short/")) == ["short/errors.jsonl", "short/output.jsonl"]
        assert len(bucket.jsonl("short/output.jsonl")) == 12

        # 2. a running batch: cancelled first (partial results written), then cleaned up
        create_batch(
            rig.custom,
            namespace,
            "long",
            job="assist",
            input_uri=f"s3://{bucket.name}/in/long.jsonl",
            output_uri=f"s3://{bucket.name}/long/",
            secret="store",
        )
        wait_for(
            lambda: (
                (batch_status(rig.custom, namespace, "long").get("requestCounts") or {}).get(
                    "completed", 0
                )
                >= 1
            ),
            120,
            "the long batch to answer a request",
            describe=dispatcher.log_tail,
        )
        long_uid = (_get(rig, "long") or {})["metadata"]["uid"]
        _delete(rig, "long")
        wait_for(lambda: _get(rig, "long") is None, 60, "the long batch to be gone")
        assert bucket.keys(f"long/.state/{long_uid}/") == []
        output = bucket.jsonl("long/output.jsonl")
        errors = bucket.jsonl("long/errors.jsonl")
        assert output and errors
        assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
        assert sorted(o["custom_id"] for o in output + errors) == [f"l-{i:02d}" for i in range(40)]

        # 3. the store cannot be reached: deleted anyway after --cleanup-seconds, with an Event
        create_batch(
            rig.custom,
            namespace,
            "cutoff",
            job="assist",
            input_uri=f"s3://{bucket.name}/in/short.jsonl",
            output_uri=f"s3://{bucket.name}/cutoff/",
            secret="gone",
        )
        wait_for(
            lambda: (
                FINALIZER
                in ((_get(rig, "cutoff") or {}).get("metadata") or {}).get("finalizers", ())
            ),
            60,
            "the finalizer on the cutoff batch",
        )
        t0 = time.monotonic()
        _delete(rig, "cutoff")
        wait_for(lambda: _get(rig, "cutoff") is None, 90, "the cutoff batch to be gone")
        took = time.monotonic() - t0
        assert took >= CLEANUP_SECONDS - 2, took  # it tried for the bound, not less
        events = [
            e
            for e in rig.core.list_namespaced_event(namespace).items
            if e.involved_object.name == "cutoff" and e.reason == "StateNotRemoved"
        ]
        assert events, "no StateNotRemoved Event"
        assert events[0].type == "Warning"
        assert f"s3://{bucket.name}/cutoff/.state/" in events[0].message
    finally:
        dispatcher.stop()
