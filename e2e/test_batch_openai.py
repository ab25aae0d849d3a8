"""The OpenAI way: ``openai.files.create`` + ``openai.batches.create/retrieve/list/cancel`` with
the official client against ``tokenfleet gateway`` (``--files-uri`` on the real object store),
served by ``tokenfleet dispatcher`` on real tritonservers; results read back with
``openai.files.content``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.batch_kit import (
    Bucket,
    DispatcherProcess,
    batch_status,
    create_store_secret,
    input_lines,
    remove_batches,
    request_line,
)
from e2e.cluster.fleet import Fleet
from e2e.gateway_kit import GatewayProcess, create_api_key
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    RACK_FP16,
    VEHICLE_INT4,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)

KEY = "sk-e2e-batch-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_leftover_batches(rig: Rig, namespace: str) -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        remove_batches(rig.custom, namespace)


def test_openai_files_and_batches(
    rig: Rig, operator: OperatorProcess, fleet: Fleet, namespace: str, tmp_path: Path, objstore: Any
) -> None:
    rig.start_tritons(2, ["tinyllama-fp16", "tinyllama-int4"])
    rig.start_sim([])
    tank = rig.create_tank("tank")
    pool = rig.create_pool("pool")
    rig.add_rack("rack0", 0, tank)
    rig.add_vehicle("car0", 1, pool)
    rig.wait_runtime_pods()
    rig.create_job("assist", [RACK_FP16, VEHICLE_INT4], replicas=(2, 2), target_tps=100)
    rig.wait_ready("assist", 2)
    create_api_key(rig.core, namespace, "team-key", KEY)
    create_store_secret(rig.core, namespace, "tokenfleet-batch-store", objstore.secret_data())
    bucket = Bucket(objstore.store_config(), f"f-{rig.id}").create()

    env = {**fleet.env(), **objstore.env(), "TOKENFLEET_FILES_URI": f"s3://{bucket.name}/api"}
    gateway = GatewayProcess(env, tmp_path / "gateway.log", namespaces=(namespace,))
    dispatcher = DispatcherProcess(
        fleet.env(),
        tmp_path / "dispatcher.log",
        namespace=namespace,
        s3_endpoint=objstore.endpoint,
        extra=("--unit-size", "4"),
    )
    gateway.start()
    dispatcher.start()
    try:
        client = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=60)
        lines = [
            {
                **request_line(f"q-{i}", 6, chat=True),
                "body": {
                    "model": "assist",
                    "messages": [{"role": "user", "content": f"question {i}"}],
                    "max_tokens": 6,
                },
            }
            for i in range(40)
        ]
        uploaded = client.files.create(
            file=("questions.jsonl", input_lines(lines)), purpose="batch"
        )
        assert uploaded.purpose == "batch" and uploaded.bytes > 0
        assert client.files.retrieve(uploaded.id).filename == "questions.jsonl"
        assert client.files.content(uploaded.id).content == input_lines(lines)

        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"team": "a"},
        )
        assert batch.status == "validating" and batch.metadata == {"team": "a"}
        # the same object, the Kubernetes way
        assert batch_status(rig.custom, namespace, batch.id) is not None

        def finished() -> openai.types.Batch | None:
            b = client.batches.retrieve(batch.id)
            return b if b.status in ("completed", "failed", "expired", "cancelled") else None

        done = wait_for(finished, 180, "the batch to finish", describe=dispatcher.log_tail)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
        assert done.output_file_id and done.error_file_id
        output = [
            json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()
        ]
        assert sorted(o["custom_id"] for o in output) == sorted(f"q-{i}" for i in range(40))
        for o in output:
            message = o["response"]["body"]["choices"][0]["message"]["content"]
            assert len(message.split()) == 6
        assert client.files.content(done.error_file_id).text == ""
        assert batch.id in [b.id for b in client.batches.list().data]

        # cancel: a long batch is stopped; what finished is kept, the rest is in the errors
        slow = [
            {
                **request_line(f"s-{i}", 200),
                "body": {
                    "model": "assist",
                    "messages": [{"role": "user", "content": "long"}],
                    "max_tokens": 200,
                },
            }
            for i in range(60)
        ]
        slow_file = client.files.create(file=("slow.jsonl", input_lines(slow)), purpose="batch")
        long = client.batches.create(
            input_file_id=slow_file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_for(
            lambda: client.batches.retrieve(long.id).status == "in_progress", 60, "in progress"
        )
        assert client.batches.cancel(long.id).status == "cancelling"
        cancelled = wait_for(finished_of(client, long.id), 120, "the cancel to finish")
        assert cancelled.status == "cancelled"
        assert cancelled.request_counts is not None and cancelled.request_counts.total == 60
        errors = client.files.content(cancelled.error_file_id or "").text.splitlines()
        assert errors and {json.loads(e)["error"]["code"] for e in errors} == {"batch_cancelled"}
        kept = client.files.content(cancelled.output_file_id or "").text.splitlines()
        assert len(kept) + len(errors) == 60

        # errors the OpenAI way
        try:
            client.batches.retrieve("batch-nope")
        except openai.NotFoundError as exc:
            assert exc.status_code == 404
        else:
            raise AssertionError("an unknown batch was found")
    finally:
        dispatcher.stop()
        gateway.stop()


def finished_of(client: openai.OpenAI, batch_id: str) -> Any:
    def check() -> openai.types.Batch | None:
        b = client.batches.retrieve(batch_id)
        return b if b.status in ("completed", "failed", "expired", "cancelled") else None

    return check
