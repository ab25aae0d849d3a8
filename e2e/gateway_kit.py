"""Test kit for the gateway e2e (e2e/test_gateway.py) and bench/gateway.py.

* :class:`GatewayProcess` — ``.venv/bin/tokenfleet gateway`` as a subprocess on 127.0.0.1
  against the fleet's kubeconfig, dialling runtimes on loopback only;
* :func:`create_api_key` — an API key Secret as a platform team would write it;
* :class:`Load` — constant load through the gateway with the official ``openai`` client, in
  threads; every response is checked complete (all tokens, a finish reason, usage).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from e2e.cluster.fleet import REPO
from e2e.operator_kit import TOKENFLEET, free_port, log_tail, sum_metric, wait_for
from tokenfleet.gateway.keys import API_KEY_LABEL, RATE_ANNOTATION


class GatewayProcess:
    """``tokenfleet gateway`` as a child process in its own session."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        namespaces: tuple[str, ...] = (),
        requests_per_second: float = 1000.0,
        extra_args: Sequence[str] = (),
        executable: Path = TOKENFLEET,
    ) -> None:
        self.executable = executable  # another checkout's to compare (bench/gateway.py)
        self.extra_args = list(extra_args)
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.port = free_port()
        self.namespaces = namespaces
        self.requests_per_second = requests_per_second
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60) -> GatewayProcess:
        argv = [
            str(self.executable),
            "gateway",
            "--address",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dial-networks",
            "127.0.0.0/8",
            "--requests-per-second",
            str(self.requests_per_second),
        ]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        argv += self.extra_args
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(REPO),
                start_new_session=True,
            )
        wait_for(self.ready, timeout, "the gateway's /readyz", interval=0.3, describe=self.log_tail)
        return self

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"gateway exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        return sum_metric(self.metrics_text(), name, **labels)

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


def create_api_key(
    core: Any, namespace: str, name: str, key: str, *, requests_per_second: float | None = None
) -> None:
    """A labelled Secret holding ``key``: it grants ``namespace``'s jobs."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {API_KEY_LABEL: "true"}}
    if requests_per_second is not None:
        meta["annotations"] = {RATE_ANNOTATION: str(requests_per_second)}
    core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "Opaque",
            "data": {"key": base64.b64encode(key.encode()).decode()},
        },
    )


@dataclass
class Load:
    """``workers`` threads sending requests through the gateway until stopped.

    Requests alternate over the ``models`` and between streaming chat and non-streaming
    completions, ``max_tokens`` each. A failure is any exception or an incomplete response.
    """

    base_url: str
    api_key: str
    models: tuple[str, ...]
    workers: int = 4
    max_tokens: int = 8
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _one(self, client: openai.OpenAI, model: str, stream: bool) -> str | None:
        """None when the response was complete, else what was wrong."""
        n = self.max_tokens
        if stream:
            chunks = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "keep going"}],
                max_tokens=n,
                stream=True,
                stream_options={"include_usage": True},
            )
            text, finish, usage = "", None, None
            for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
            if finish != "length" or len(text.split()) != n:
                return f"incomplete stream: finish={finish} tokens={len(text.split())}"
            if usage is None or usage.completion_tokens != n:
                return f"stream usage {usage}"
            return None
        comp = client.completions.create(model=model, prompt="keep going", max_tokens=n)
        text = comp.choices[0].text
        if comp.choices[0].finish_reason != "length" or len(text.split()) != n:
            return f"incomplete completion: {comp.choices[0]}"
        if comp.usage is None or comp.usage.completion_tokens != n:
            return f"completion usage {comp.usage}"
        return None

    def _run(self, worker: int) -> None:
        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0)
        i = worker
        while not self._stop.is_set():
            model = self.models[i % len(self.models)]
            stream = (i // len(self.models)) % 2 == 0
            i += 1
            t0 = time.monotonic()
            try:
                problem = self._one(client, model, stream)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            elapsed = time.monotonic() - t0
            with self._lock:
                if problem is None:
                    self.ok += 1
                    self.latencies.append(elapsed)
                else:
                    stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")
                    self.failures.append(f"{stamp} {model} stream={stream}: {problem}")
        client.close()
