"""`make dev`'s batch side (hooked into :mod:`e2e.dev`): the object store, the dispatcher and a
sample batch, so a newcomer sees ``kubectl get infbatch`` move.

1. SeaweedFS's S3 gateway on 127.0.0.1 (:class:`e2e.objstore.ObjectStoreServer`, ``weed`` from
   ``make objstore-build``) with one bucket, ``tokenfleet-dev``; random keys per start, held in
   the Secret ``tokenfleet-batch-store`` (the name the gateway's ``/v1/batches`` uses);
2. the gateway gets ``--files-uri s3://tokenfleet-dev/files`` (``/v1/files``, ``/v1/batches``);
3. ``tokenfleet dispatcher`` on the dev namespace (or all of them), dialling loopback only;
4. once the dev job is Ready: a sample input (``SAMPLE_REQUESTS`` chat requests) uploaded to
   ``s3://tokenfleet-dev/sample/input.jsonl`` and the InferenceBatch ``sample-batch`` for it.

Stopping removes the dev batches (those of the dev job whose output is in the dev bucket), the
Secret, the dispatcher and the store (its data directory too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["BUCKET", "SAMPLE_BATCH", "SECRET", "DevBatch", "remove_dev_batches"]

BUCKET = "tokenfleet-dev"
SECRET = "tokenfleet-batch-store"
SAMPLE_BATCH = "sample-batch"
SAMPLE_INPUT = f"s3://{BUCKET}/sample/input.jsonl"
SAMPLE_OUTPUT = f"s3://{BUCKET}/sample/{SAMPLE_BATCH}/"
SAMPLE_REQUESTS = 24
FILES_URI = f"s3://{BUCKET}/files"


def sample_input(job: str, requests: int = SAMPLE_REQUESTS) -> bytes:
    """An OpenAI batch input file: ``requests`` chat requests of 16 tokens for ``job``."""
    topics = ["battery ageing", "immersion cooling", "demand response", "depot charging"]
    lines = [
        {
            "custom_id": f"sample-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": job,
                "messages": [
                    {"role": "user", "content": f"one line on {topics[i % len(topics)]} ({i})"}
                ],
                "max_tokens": 16,
            },
        }
        for i in range(requests)
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def batch_body(
    name: str, namespace: str, job: str, input_uri: str, output_uri: str
) -> dict[str, Any]:
    from e2e.operator_kit import GROUP, VERSION

    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceBatch",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "jobName": job,
            "input": {"uri": input_uri},
            "output": {"uri": output_uri},
            "credentialsSecretName": SECRET,
            "completionWindowSeconds": 3600,
        },
    }


class DevBatch:
    """The store, the dispatcher and the sample batch of one ``make dev`` run."""

    def __init__(
        self, namespace: str, tmp: Path, *, all_namespaces: bool, log: Callable[[str], None]
    ) -> None:
        self.namespace = namespace
        self.tmp = tmp
        self.all_namespaces = all_namespaces
        self.log = log
        self.store: Any = None
        self.dispatcher: Any = None

    # ---- start ---------------------------------------------------------------------------------

    def start_store(self) -> None:
        from e2e.objstore import ObjectStoreServer

        self.log(f"starting the object store (SeaweedFS S3 on 127.0.0.1, bucket {BUCKET})")
        self.store = ObjectStoreServer(self.tmp / "objstore", buckets=[BUCKET]).start()

    def gateway_env(self) -> dict[str, str]:
        """What the gateway needs for ``/v1/files`` and ``/v1/batches``."""
        assert self.store is not None
        return {**self.store.env({}), "TOKENFLEET_FILES_URI": FILES_URI}

    def start_dispatcher(self, core: Any, env: Mapping[str, str]) -> None:
        from e2e.batch_kit import DispatcherProcess, create_store_secret

        assert self.store is not None
        with contextlib.suppress(Exception):
            core.delete_namespaced_secret(SECRET, self.namespace)
        create_store_secret(core, self.namespace, SECRET, self.store.secret_data())
        self.dispatcher = DispatcherProcess(
            env,
            self.tmp / "dispatcher.log",
            namespace="" if self.all_namespaces else self.namespace,
            s3_endpoint=self.store.endpoint,
        )
        # held before it is waited for: a start that times out is still stopped by stop()
        self.dispatcher.start(timeout=180)

    def pids(self) -> list[int]:
        """The processes to record for the next run's reaper (a SIGKILLed make dev)."""
        out = []
        for proc in (
            self.store.proc if self.store else None,
            self.dispatcher.process if self.dispatcher else None,
        ):
            if proc is not None:
                out.append(int(proc.pid))
        return out

    def dead(self) -> str | None:
        """What of ours exited (make dev stops then), or None."""
        if self.store is not None and (
            self.store.proc is None or self.store.proc.poll() is not None
        ):
            return "the object store (weed)"
        if self.dispatcher is not None and not self.dispatcher.alive():
            return "tokenfleet dispatcher"
        return None

    def submit_sample(self, custom: Any, job: str) -> None:
        """Upload the sample input and create the InferenceBatch ``sample-batch`` for ``job``."""
        from tokenfleet.store import ObjectStore, parse_s3_uri

        assert self.store is not None
        bucket, key = parse_s3_uri(SAMPLE_INPUT)

        async def upload() -> None:
            async with ObjectStore(self.store.store_config()) as s:
                await s.put(bucket, key, sample_input(job))

        asyncio.run(upload())
        custom.create_namespaced_custom_object(
            *_coords(self.namespace),
            batch_body(SAMPLE_BATCH, self.namespace, job, SAMPLE_INPUT, SAMPLE_OUTPUT),
        )
        self.log(
            f"InferenceBatch {self.namespace}/{SAMPLE_BATCH}: {SAMPLE_REQUESTS} requests"
            f" from {SAMPLE_INPUT}"
        )

    # ---- the banner ----------------------------------------------------------------------------

    def banner_lines(self, gateway_url: str, api_key: str, job: str) -> list[str]:
        assert self.store is not None
        return [
            f"batch        InferenceBatch {self.namespace}/{SAMPLE_BATCH} ({SAMPLE_REQUESTS}"
            f" requests; results under {SAMPLE_OUTPUT})",
            "  kubectl get infbatch -w                     # Validating, InProgress, Completed",
            f"  kubectl describe infbatch {SAMPLE_BATCH}",
            f"object store {self.store.endpoint} (bucket {BUCKET}; keys in Secret {SECRET})",
            "openai batch (Python)",
            f'  c = OpenAI(base_url="{gateway_url}", api_key="{api_key}")',
            '  f = c.files.create(file=open("in.jsonl", "rb"), purpose="batch")',
            '  c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",'
            ' completion_window="24h")',
        ]

    # ---- stop ----------------------------------------------------------------------------------

    def stop(self, custom: Any, core: Any, job: str) -> None:
        """Remove the dev batches while the dispatcher still runs (it cleans their progress
        up), then stop the dispatcher and the store; never raises."""
        with contextlib.suppress(Exception):
            remove_dev_batches(custom, self.namespace, job)
        with contextlib.suppress(Exception):
            core.delete_namespaced_secret(SECRET, self.namespace)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.store is not None:
            self.store.stop()
            shutil.rmtree(self.store.dir / "data", ignore_errors=True)


def _coords(namespace: str) -> tuple[str, str, str, str]:
    from e2e.operator_kit import GROUP, VERSION

    return GROUP, VERSION, namespace, "inferencebatches"


def remove_dev_batches(custom: Any, namespace: str, job: str, timeout: float = 15.0) -> int:
    """Delete the InferenceBatches of the dev job whose output is in the dev bucket (the sample,
    those made through /v1/batches and by hand against the dev store); a finalizer still there
    after ``timeout`` (no dispatcher left to remove it) is removed. Returns how many."""
    import time

    from kubernetes.client.exceptions import ApiException

    items = custom.list_namespaced_custom_object(*_coords(namespace))["items"]
    ours = [
        o["metadata"]["name"]
        for o in items
        if (o.get("spec") or {}).get("jobName") == job
        and str(((o.get("spec") or {}).get("output") or {}).get("uri", "")).startswith(
            f"s3://{BUCKET}/"
        )
    ]
    for name in ours:
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(*_coords(namespace), name)

    def still_there(names: list[str]) -> list[str]:
        out = []
        for name in names:
            try:
                custom.get_namespaced_custom_object(*_coords(namespace), name)
                out.append(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return out

    def wait(names: list[str], seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        while (names := still_there(names)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return names

    for name in wait(ours, timeout):  # no dispatcher removed the finalizer: we do
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object(
                *_coords(namespace),
                name,
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )
    wait(ours, 10)
    return len(ours)
