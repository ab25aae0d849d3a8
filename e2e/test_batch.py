"""InferenceBatch end to end: the real control plane, real tritonservers, the real object store
(SeaweedFS on loopback) and ``tokenfleet dispatcher`` as a process.

* A batch of a few hundred requests (plus malformed lines) completes with every ``custom_id``
  answered exactly once while one car's departure is moved close and it then unplugs, another
  car departs, and the dispatcher is killed with SIGKILL mid-batch and restarted; no unit was
  leased to a car that could not finish it before its departure less the drain lead (checked
  against the departure times the test wrote); malformed lines are in the error file with a
  reason.
* A missing input fails the batch with a condition naming the cause; wrong credentials too.
* An expired window gives ``Expired`` with the partial results and the rest in the error file.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
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
    RACK_FP16,
    VEHICLE_INT4,
    OperatorProcess,
    Rig,
    operator_fixture,
    rfc3339,
    rig_fixture,
    wait_for,
)

DRAIN_LEAD = 30
SAFETY = 1.5  # the dispatcher's factor on a unit's expected duration (DispatchSettings.safety)
PROPAGATION = 5.0  # seconds a telemetry write may take to reach the dispatcher's watch
#: tokens per request: the test runtimes generate 100 (int4) / 400 (fp16) tokens/s per stream,
#: 5x the variants' declared 20 / 40, so 200 tokens take 2 s on a car
TOKENS = 200


def _fleet(rig: Rig, cars: int) -> tuple[str, list[str]]:
    rig.start_tritons(cars + 1, ["tinyllama-fp16", "tinyllama-int4"])
    rig.start_sim([])
    tank = rig.create_tank("tank")
    pool = rig.create_pool("pool", drainLeadSeconds=DRAIN_LEAD)
    rack = rig.add_rack("rack0", 0, tank)
    names = [rig.add_vehicle(f"car{i}", 1 + i, pool) for i in range(cars)]
    rig.wait_runtime_pods()
    return rack, names


def _phase(rig: Rig, name: str) -> str | None:
    return batch_status(rig.custom, rig.namespace, name).get("phase")


def _answered(rig: Rig, name: str) -> int:
    counts = batch_status(rig.custom, rig.namespace, name).get("requestCounts") or {}
    return int(counts.get("completed") or 0) + int(counts.get("failed") or 0)


def _departure_in_effect(history: list[tuple[float, float]], issued: float) -> float:
    """The earliest departure the dispatcher may have seen when it issued a lease: the one in
    effect PROPAGATION seconds before, or any written since (a write may already be seen)."""
    before = [d for t, d in history if t <= issued - PROPAGATION]
    since = [d for t, d in history if issued - PROPAGATION < t <= issued]
    candidates = ([before[-1]] if before else []) + since
    return min(candidates) if candidates else history[0][1]


def test_batch_completes_exactly_once_through_departures_and_a_sigkill(
    rig: Rig, operator: OperatorProcess, fleet: Fleet, namespace: str, tmp_path: Path, objstore: Any
) -> None:
    _, cars = _fleet(rig, 3)
    rig.create_job(
        "factory",
        [RACK_FP16, VEHICLE_INT4],
        replicas=(4, 4),
        target_tps=1000,
        preference="PreferVehicle",
    )
    rig.wait_ready("factory", 4)

    bucket = Bucket(objstore.store_config(), f"b-{rig.id}").create()
    valid = [request_line(f"req-{i:04d}", TOKENS, chat=i % 3 != 0) for i in range(300)]
    malformed: list[dict[str, Any] | bytes] = [
        b'{"custom_id": "broken", "method": "POST", ',
        {**request_line("wrong-url", 4), "url": "/v1/embeddings"},
        {
            **request_line("too-big", 4),
            "body": {"prompt": "x" * (1 << 20), "max_tokens": 4, "model": "m"},
        },
    ]
    lines: list[dict[str, Any] | bytes] = [*valid[:100], *malformed, *valid[100:]]
    bucket.put("in/requests.jsonl", input_lines(lines))
    create_store_secret(rig.core, namespace, "store", objstore.secret_data())
    departures: dict[str, list[tuple[float, float]]] = {}
    now = time.time()
    for car in cars:  # what rig.add_vehicle wrote: 8 h away
        departures[car] = [(0.0, now + 8 * 3600 - 60)]

    dispatcher = DispatcherProcess(
        fleet.env(),
        tmp_path / "dispatcher.log",
        namespace=namespace,
        s3_endpoint=objstore.endpoint,
        extra=("--unit-size", "4", "--max-window", "1"),
    )
    dispatcher.start()
    try:
        create_batch(
            rig.custom,
            namespace,
            "nightly",
            job="factory",
            input_uri=f"s3://{bucket.name}/in/requests.jsonl",
            output_uri=f"s3://{bucket.name}/out/",
            secret="store",
        )
        wait_for(lambda: _answered(rig, "nightly") >= 40, 120, "40 answers")

        # car0: departure moved to just past its drain lead -> 20 s of parked time left (one
        # request fits: 200 tokens at the declared 20 tokens/s x 1.5), then it unplugs;
        # car1 departs (unplugged, departure now)
        leaving = datetime.now(UTC) + timedelta(seconds=DRAIN_LEAD + 20)
        departures[cars[0]].append((time.time(), leaving.timestamp()))
        rig.set_telemetry(cars[0], **{"departure-time": rfc3339(leaving)})
        wait_for(lambda: _answered(rig, "nightly") >= 100, 120, "100 answers")
        rig.set_telemetry(cars[0], **{"plugged-in": "false"})
        gone = datetime.now(UTC)
        departures[cars[1]].append((time.time(), gone.timestamp()))
        rig.set_telemetry(cars[1], **{"plugged-in": "false", "departure-time": rfc3339(gone)})

        wait_for(lambda: _answered(rig, "nightly") >= 160, 120, "160 answers")
        dispatcher.kill()
        killed_at = _answered(rig, "nightly")
        dispatcher.start()
        wait_for(
            lambda: _phase(rig, "nightly") in ("Completed", "Failed", "Expired"),
            300,
            "the batch to complete",
            describe=dispatcher.log_tail,
        )
    finally:
        dispatcher.stop()

    status = batch_status(rig.custom, namespace, "nightly")
    assert status["phase"] == "Completed", status
    assert status["requestCounts"] == {"total": 303, "completed": 300, "failed": 3}
    assert status["outputUri"] == f"s3://{bucket.name}/out/output.jsonl"
    assert status["errorUri"] == f"s3://{bucket.name}/out/errors.jsonl"
    assert status["tokens"]["output"] == 300 * TOKENS
    assert status["energy"]["rackKWh"] > 0 and status["energy"]["vehicleKWh"] > 0
    assert killed_at < 300

    output = bucket.jsonl("out/output.jsonl")
    errors = bucket.jsonl("out/errors.jsonl")
    ids = Counter(line["custom_id"] for line in output)
    assert set(ids) == {line["custom_id"] for line in valid}
    assert max(ids.values()) == 1, [k for k, v in ids.items() if v > 1]
    for line in output:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert body["usage"]["completion_tokens"] == TOKENS
        text = body["choices"][0].get("text") or body["choices"][0]["message"]["content"]
        assert len(text.split()) == TOKENS
    reasons = {line["custom_id"]: line["error"]["code"] for line in errors}
    assert reasons == {
        None: "invalid_json",
        "wrong-url": "invalid_url",
        "too-big": "body_too_large",
    }

    # the progress records: no line committed twice, no car leased work it could not finish
    parts = bucket.keys("out/.state/")
    records = [r for key in parts if "/parts/" in key for r in bucket.jsonl(key)]
    lines_committed = Counter(r["i"] for r in records)
    assert max(lines_committed.values()) == 1
    assert len(lines_committed) == 303
    on_cars = [r for r in records if r.get("target") == "Vehicle"]
    assert on_cars and any(r.get("target") == "Rack" for r in records)
    runs = {r["lease"]["run"] for r in records if "lease" in r}
    assert len(runs) == 2  # before and after the SIGKILL
    for r in on_cars:
        lease = r["lease"]
        truth = _departure_in_effect(departures[r["node"]], lease["issued"]) - DRAIN_LEAD
        assert lease["issued"] + SAFETY * lease["expected"] <= truth + 1.0, (r["node"], lease)
    # the leaving car got no unit after its departure was moved close, beyond what fits
    late = [
        r
        for r in on_cars
        if r["node"] == cars[0] and r["lease"]["issued"] > departures[cars[0]][1][0] + PROPAGATION
    ]
    for r in late:
        assert (
            r["lease"]["issued"] + SAFETY * r["lease"]["expected"]
            <= departures[cars[0]][1][1] - DRAIN_LEAD
        )


def test_batch_missing_input_unreadable_input_and_expired_window(
    rig: Rig, operator: OperatorProcess, fleet: Fleet, namespace: str, tmp_path: Path, objstore: Any
) -> None:
    _, (car,) = _fleet(rig, 1)
    rig.create_job("slow", [VEHICLE_INT4], replicas=(1, 1), target_tps=20, targets=["Vehicle"])
    rig.wait_ready("slow", 1)
    bucket = Bucket(objstore.store_config(), f"e-{rig.id}").create()
    create_store_secret(rig.core, namespace, "store", objstore.secret_data())
    create_store_secret(
        rig.core, namespace, "wrong", {**objstore.secret_data(), "secretAccessKey": "nope-nope"}
    )
    # 30 requests of 400 tokens at 100 tokens/s (the int4 runtime's real rate), one at a time:
    # 120 s of work in a 60 s window
    bucket.put("in/slow.jsonl", input_lines([request_line(f"s-{i:02d}", 400) for i in range(30)]))
    dispatcher = DispatcherProcess(
        fleet.env(),
        tmp_path / "dispatcher.log",
        namespace=namespace,
        s3_endpoint=objstore.endpoint,
        extra=("--unit-size", "1", "--max-window", "1"),
    )
    dispatcher.start()
    try:
        common = {"job": "slow", "output_uri": f"s3://{bucket.name}/out-x/", "secret": "store"}
        create_batch(
            rig.custom,
            namespace,
            "expiring",
            job="slow",
            input_uri=f"s3://{bucket.name}/in/slow.jsonl",
            output_uri=f"s3://{bucket.name}/out-exp/",
            secret="store",
            window=60,
        )
        create_batch(
            rig.custom,
            namespace,
            "missing",
            input_uri=f"s3://{bucket.name}/in/none.jsonl",
            **common,
        )
        create_batch(
            rig.custom,
            namespace,
            "unreadable",
            job="slow",
            input_uri=f"s3://{bucket.name}/in/slow.jsonl",
            output_uri=f"s3://{bucket.name}/out-u/",
            secret="wrong",
        )
        for name, reason in (("missing", "InputNotFound"), ("unreadable", "InputUnreadable")):
            wait_for(lambda n=name: _phase(rig, n) == "Failed", 60, f"{name} to fail")
            conditions = {
                c["type"]: c for c in batch_status(rig.custom, namespace, name)["conditions"]
            }
            assert conditions["Ready"]["status"] == "False"
            assert conditions["Ready"]["reason"] == reason
            assert conditions["Stalled"]["reason"] == reason
            assert "input.uri s3://" in conditions["Ready"]["message"]
        wait_for(
            lambda: _phase(rig, "expiring") in ("Expired", "Completed", "Failed"),
            150,
            "the window to expire",
            describe=dispatcher.log_tail,
        )
    finally:
        dispatcher.stop()
    status = batch_status(rig.custom, namespace, "expiring")
    assert status["phase"] == "Expired", status
    counts = status["requestCounts"]
    assert counts["total"] == 30 and 0 < counts["completed"] < 30
    assert counts["completed"] + counts["failed"] == 30
    output = bucket.jsonl("out-exp/output.jsonl")
    errors = bucket.jsonl("out-exp/errors.jsonl")
    assert len(output) == counts["completed"]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert sorted([o["custom_id"] for o in output] + [e["custom_id"] for e in errors]) == [
        f"s-{i:02d}" for i in range(30)
    ]
    assert car in rig.nodes


@pytest.fixture(autouse=True)
def _no_leftover_batches(rig: Rig, namespace: str) -> Any:
    yield
    with contextlib.suppress(Exception):
        remove_batches(rig.custom, namespace)


def test_api_server_enforces_the_batch_rules(rig: Rig, namespace: str) -> None:
    """The generated CRD's CEL rules, by the real API server: output must be a prefix, jobName
    and the URIs are immutable, cancel cannot be unset."""
    from kubernetes.client.exceptions import ApiException

    from e2e.operator_kit import GROUP, VERSION

    def make(name: str, output: str) -> None:
        create_batch(
            rig.custom,
            namespace,
            name,
            job="j",
            input_uri="s3://bucket/in.jsonl",
            output_uri=output,
            secret="s",
        )

    with pytest.raises(ApiException) as refused:
        make("bad-output", "s3://bucket/out.jsonl")
    assert refused.value.status == 422
    assert "output.uri must end with '/'" in str(refused.value.body)
    make("ok", "s3://bucket/out/")

    def patch(spec: dict[str, Any]) -> None:
        rig.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferencebatches", "ok", {"spec": spec}
        )

    patch({"cancel": True})
    for spec, message in (
        ({"cancel": False}, "cancel cannot be unset once true"),
        ({"jobName": "other"}, "jobName is immutable"),
        ({"input": {"uri": "s3://bucket/other.jsonl"}}, "input.uri and output.uri are immutable"),
    ):
        with pytest.raises(ApiException) as caught:
            patch(spec)
        assert caught.value.status == 422 and message in str(caught.value.body), spec
