"""e2e helpers for model delivery: per-node runtimes with their own (initially empty) model
repositories, ``tokenfleet modelcache`` processes next to them, and variants uploaded to the
real object store (``objstore`` fixture) with their digests.

Every model file goes through the store and the cache: the runtimes start with nothing, so a
replica is Ready only if the cache fetched, verified and installed its model.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from e2e.objstore import ObjectStoreServer
from e2e.operator_kit import REPO, TOKENFLEET, Rig, free_port, sum_metric, wait_for
from e2e.runtime import TritonServer
from e2e.runtime.repository import write_token_model
from tokenfleet.delivery.digest import tree_digest
from tokenfleet.delivery.report import MODEL_CACHE_ANNOTATION, CacheReport, decode_report
from tokenfleet.store import ObjectStore

T = TypeVar("T")

__all__ = [
    "CachedRuntimes",
    "ModelCacheProcess",
    "create_store_secret",
    "get_object",
    "model_caches",
    "put_objects",
    "settle",
    "upload_variant",
]


def put_objects(store: ObjectStoreServer, bucket: str, objects: Mapping[str, bytes]) -> None:
    """Write ``objects`` (key -> bytes) into ``bucket`` (created if needed) through the
    product's client."""

    async def put() -> None:
        async with ObjectStore(store.store_config()) as s3:
            await s3.create_bucket(bucket)
            for key, data in objects.items():
                await s3.put(bucket, key, data)

    _run(put())


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop in a worker thread (usable from sync code and
    from inside a running loop, e.g. an async test)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def get_object(store: ObjectStoreServer, bucket: str, key: str) -> bytes:
    async def get() -> bytes:
        async with ObjectStore(store.store_config()) as s3:
            return await s3.get(bucket, key)

    return _run(get())


def upload_variant(
    store: ObjectStoreServer,
    bucket: str,
    prefix: str,
    model: str,
    *,
    ballast_bytes: int = 0,
    sign: Callable[[Path, Path], object] | None = None,
    signature_path: str = "model.sig",
) -> str:
    """Write the token model ``model`` (Triton layout), upload it to
    ``s3://bucket/prefix/model/...`` and return its variant digest. ``ballast_bytes`` adds a
    weights file of that size (a model the budget and the bandwidth rules can feel). ``sign``
    (``e2e.signing_kit.sign_with_key`` with a key bound, say) writes a ``model-signing`` bundle
    of the directory to the path it is given; it is uploaded as ``<model>/<signature_path>``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_token_model(Path(tmp), model)
        if ballast_bytes:
            (root / "1" / "weights.bin").write_bytes(bytes(range(256)) * (ballast_bytes // 256))
        digest = tree_digest(root)
        objects = {
            f"{prefix}/{model}/{path.relative_to(root).as_posix()}": path.read_bytes()
            for path in sorted(p for p in root.rglob("*") if p.is_file())
        }
        if sign is not None:
            bundle = Path(tmp) / "bundle.sig"  # outside the model directory
            sign(root, bundle)
            objects[f"{prefix}/{model}/{signature_path}"] = bundle.read_bytes()
    put_objects(store, bucket, objects)
    return digest


def create_store_secret(rig: Rig, store: ObjectStoreServer, name: str = "model-store") -> str:
    """A Secret in the rig's namespace with the store's endpoint and keys; returns ns/name."""
    rig.core.create_namespaced_secret(
        rig.namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=store.secret_data()),
    )
    return f"{rig.namespace}/{name}"


class CachedRuntimes:
    """``count`` tritonservers, each with its own empty model repository (what its node's
    cache fills). Stands in for ``rig.tritons`` (``rig.endpoint(i)`` works)."""

    def __init__(self, tmp: Path, count: int) -> None:
        self.repos = [tmp / f"repo{i}" for i in range(count)]
        for repo in self.repos:
            repo.mkdir(parents=True)
        self.servers = [TritonServer(repo, name=f"cached{i}") for i, repo in enumerate(self.repos)]

    def start(self) -> CachedRuntimes:
        for server in self.servers:
            server.start(timeout=90)
        return self

    def __getitem__(self, i: int) -> TritonServer:
        return self.servers[i]

    def __len__(self) -> int:
        return len(self.servers)

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()


class ModelCacheProcess:
    """``tokenfleet modelcache`` for one node, as a child process in its own session."""

    def __init__(
        self,
        rig: Rig,
        node: str,
        repository: Path,
        *,
        store_secret: str,
        budget_bytes: int = 1 << 30,
    ) -> None:
        self.rig, self.node, self.repository = rig, node, repository
        self.metrics_port = free_port()
        self.log_path = rig.tmp / f"modelcache-{node}.log"
        self.argv = [
            str(TOKENFLEET),
            "modelcache",
            "--node",
            node,
            "--repository",
            str(repository),
            "--budget-bytes",
            str(budget_bytes),
            "--store-secret",
            store_secret,
            "--kubeconfig",
            str(rig.fleet.kubeconfig),
            "--interval",
            "1",
            "--progress-seconds",
            "2",
            "--metrics-port",
            str(self.metrics_port),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ModelCacheProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.rig.fleet.env(),
            cwd=str(REPO),
            start_new_session=True,
        )
        log.close()
        wait_for(
            lambda: self.report() is not None,
            60,
            f"the model cache of {self.node} to publish its report",
            describe=lambda: self.log_tail(),
        )
        return self

    def report(self) -> CacheReport | None:
        node = self.rig.core.read_node(self.node)
        return decode_report((node.metadata.annotations or {}).get(MODEL_CACHE_ANNOTATION))

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return sum_metric(text, name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def model_caches(
    rig: Rig,
    runtimes: CachedRuntimes,
    nodes: Mapping[str, int],
    *,
    store_secret: str,
    budget_bytes: int = 1 << 30,
) -> Iterator[dict[str, ModelCacheProcess]]:
    """One running cache per node (node -> runtime index), stopped afterwards."""
    caches: dict[str, ModelCacheProcess] = {}
    try:
        for node, i in nodes.items():
            caches[node] = ModelCacheProcess(
                rig, node, runtimes.repos[i], store_secret=store_secret, budget_bytes=budget_bytes
            ).start()
        yield caches
    finally:
        for cache in caches.values():
            cache.stop()


def settle(seconds: float) -> None:
    """Let a few operator and cache passes happen (for "nothing happens" checks)."""
    time.sleep(seconds)
