"""Test kit for the batch e2e (e2e/test_batch.py).

* :class:`DispatcherProcess` — ``.venv/bin/tokenfleet dispatcher`` as a subprocess against the
  fleet's kubeconfig, dialling runtimes on loopback only; ``kill()`` sends SIGKILL;
* :class:`Bucket` — blocking helpers over the product's own store client
  (:class:`tokenfleet.store.ObjectStore`) against the real object store;
* :func:`input_lines` — an OpenAI batch input file; :func:`create_batch` — an InferenceBatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e2e.cluster.fleet import REPO
from e2e.operator_kit import GROUP, TOKENFLEET, VERSION, log_tail, wait_for


class DispatcherProcess:
    """``tokenfleet dispatcher`` as a child process in its own session."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        namespace: str,
        s3_endpoint: str,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.namespace = namespace
        self.s3_endpoint = s3_endpoint
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def _starts(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count("dispatcher started")

    def start(self, timeout: float = 60) -> DispatcherProcess:
        before = self._starts()
        argv = [
            str(TOKENFLEET),
            "dispatcher",
            *(["--namespace", self.namespace] if self.namespace else []),  # "": all
            "--s3-endpoint",
            self.s3_endpoint,
            "--dial-networks",
            "127.0.0.0/8",
            *self.extra,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(REPO),
                start_new_session=True,
            )

        def started() -> bool:
            if self._starts() > before:
                return True
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the dispatcher exited:\n{self.log_tail()}")
            return False

        wait_for(started, timeout, "the dispatcher to start", describe=self.log_tail)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


class Bucket:
    """Blocking access to one bucket of the real store, through the product's client."""

    def __init__(self, config: Any, name: str) -> None:
        self.config = config
        self.name = name

    def _run(self, op: str, *args: Any) -> Any:
        from tokenfleet.store import ObjectStore

        async def go() -> Any:
            async with ObjectStore(self.config) as store:
                return await getattr(store, op)(*args)

        return asyncio.run(go())

    def create(self) -> Bucket:
        self._run("create_bucket", self.name)
        return self

    def put(self, key: str, data: bytes) -> None:
        self._run("put", self.name, key, data)

    def get(self, key: str) -> bytes:
        data: bytes = self._run("get", self.name, key)
        return data

    def keys(self, prefix: str) -> list[str]:
        return [o.key for o in self._run("list", self.name, prefix)]

    def jsonl(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.get(key).splitlines() if line.strip()]


def request_line(custom_id: str, max_tokens: int, *, chat: bool = True) -> dict[str, Any]:
    if chat:
        return {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "ignored",
                "messages": [{"role": "user", "content": f"summarise report {custom_id}"}],
                "max_tokens": max_tokens,
            },
        }
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "ignored", "prompt": f"report {custom_id}", "max_tokens": max_tokens},
    }


def input_lines(lines: list[dict[str, Any] | bytes]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


def create_store_secret(core: Any, namespace: str, name: str, data: Mapping[str, str]) -> None:
    core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": dict(data),
        },
    )


def create_batch(
    custom: Any,
    namespace: str,
    name: str,
    *,
    job: str,
    input_uri: str,
    output_uri: str,
    secret: str,
    window: int = 3600,
    priority: str = "Background",
) -> None:
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "inferencebatches",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceBatch",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "jobName": job,
                "input": {"uri": input_uri},
                "output": {"uri": output_uri},
                "credentialsSecretName": secret,
                "completionWindowSeconds": window,
                "priority": priority,
            },
        },
    )


def batch_status(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferencebatches", name)
    status: dict[str, Any] = obj.get("status") or {}
    return status


def remove_batches(custom: Any, namespace: str) -> None:
    """Delete every InferenceBatch of ``namespace``, the dispatcher's finalizer first (a test's
    dispatcher is gone by then: nothing else would remove it and the namespace would hang)."""
    from kubernetes.client.exceptions import ApiException

    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "inferencebatches")
    for item in items["items"]:
        name = item["metadata"]["name"]
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "inferencebatches",
                name,
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferencebatches", name
            )
