"""``tokenfleet modelcache``: the node-side model cache as a process (next to the runtime).

Every ``--interval`` seconds it reads its own Node, the VehiclePools (cars) and the
InferenceJobs — from memory: each is listed once and then watched (:mod:`.mirror`), its Node with
a ``metadata.name`` field selector — works out which variants replicas on this node need
(:func:`tokenfleet.delivery.wants.wanted_on`) and which the operator asks it to prefetch
(``status.prefetch``: :func:`tokenfleet.delivery.wants.prefetch_on`; within
``--prefetch-percent`` of the budget, after every replica's need), brings them to Ready one at a
time in the background (:class:`tokenfleet.delivery.cache.ModelCache`) and publishes the
``tokenfleet.io/model-cache`` annotation on its Node when it changed (progress at most every
``--progress-seconds``). Store credentials: ``--store-secret NAMESPACE/NAME`` (read again every
minute, so a rotated Secret is used within a minute) or the environment
(``TOKENFLEET_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``).

``tokenfleet modelcache digest DIR [--exclude model.sig]`` prints the variant digest of a model
directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenfleet.agent.publisher import node_annotation_patcher
from tokenfleet.delivery.cache import CacheMetrics, ModelCache, WantedModel
from tokenfleet.delivery.digest import tree_digest
from tokenfleet.delivery.mirror import Mirror
from tokenfleet.delivery.report import MODEL_CACHE_ANNOTATION, CacheReport, encode_report
from tokenfleet.delivery.rules import FetchWindow
from tokenfleet.delivery.wants import fetch_window, prefetch_on, wanted_on
from tokenfleet.metrics import (
    MODELCACHE_BYTES_FETCHED,
    MODELCACHE_EVICTIONS,
    MODELCACHE_HITS,
    MODELCACHE_MISSES,
    MODELCACHE_REGISTRY,
    MODELCACHE_USED_BYTES,
    MODELCACHE_VERIFICATION_FAILURES,
)
from tokenfleet.store import ObjectStore, StoreConfig

__all__ = ["CacheRunner", "add_modelcache_arguments", "run_modelcache"]

log = logging.getLogger("tokenfleet.modelcache")

GROUP, VERSION = "tokenfleet.io", "v1alpha1"
SECRET_REFRESH_SECONDS = 60.0
"""The store Secret is read again this often (a rotation is used within a minute)."""


def add_modelcache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", default=os.environ.get("NODE_NAME"), help="this node's name")
    parser.add_argument(
        "--repository", help="the runtime's Triton model repository (verified models land here)"
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        help="staging and index (default: <repository>.tokenfleet-cache, same filesystem)",
    )
    parser.add_argument(
        "--budget-gib", type=float, default=None, help="disk budget for cached models, GiB"
    )
    parser.add_argument("--budget-bytes", type=int, default=None, help="disk budget, bytes")
    parser.add_argument(
        "--prefetch-percent",
        type=float,
        default=50.0,
        help="share of the budget models fetched ahead of a placement may fill, percent",
    )
    parser.add_argument("--store-secret", default=None, help="NAMESPACE/NAME of the store Secret")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    parser.add_argument("--progress-seconds", type=float, default=10.0)
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster)")
    parser.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: off)")
    parser.add_argument("--metrics-address", default="127.0.0.1")
    parser.add_argument("--once", action="store_true", help="one pass (waits for it), then exit")
    parser.add_argument(
        "digest", nargs="*", help="`digest DIR`: print the variant digest of DIR and exit"
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATH",
        help="`digest DIR`: leave out this path relative to DIR (a signature bundle, model.sig)",
    )


class CacheRunner:
    """The loop, with its Kubernetes reads/writes injected (tests drive it with real APIs)."""

    def __init__(
        self,
        node: str,
        cache: ModelCache,
        *,
        read_node: Callable[[], dict[str, Any]],
        list_jobs: Callable[[], list[dict[str, Any]]],
        list_pools: Callable[[], list[dict[str, Any]]],
        patch: Callable[[dict[str, str | None]], None],
        clock: Callable[[], float] = time.time,
        progress_seconds: float = 10.0,
    ) -> None:
        self.node = node
        self.cache = cache
        self.read_node, self.list_jobs, self.list_pools = read_node, list_jobs, list_pools
        self.patch = patch
        self.clock = clock
        self.progress_seconds = progress_seconds
        self.window: FetchWindow | None = None
        self.task: asyncio.Task[None] | None = None
        self.published: str | None = None
        self.published_shape: tuple[Any, ...] | None = None
        self.published_at = 0.0
        self._counted = CacheMetrics()

    async def _work(self, wants: list[WantedModel], prefetch: list[WantedModel]) -> None:
        for want in wants:
            await self.cache.ensure(want, lambda: self.window)
        for want in prefetch:  # after every replica's need, within the prefetch share
            await self.cache.ensure(want, lambda: self.window, prefetch=True)

    async def step(self) -> None:
        node = await asyncio.to_thread(self.read_node)
        jobs = await asyncio.to_thread(self.list_jobs)
        role = ((node.get("metadata") or {}).get("labels") or {}).get("tokenfleet.io/role")
        pools = await asyncio.to_thread(self.list_pools) if role == "vehicle" else []
        self.window = fetch_window(node, pools)
        wants = wanted_on(self.node, jobs)
        prefetch = prefetch_on(self.node, jobs, wants)
        self.cache.observe_wanted(wants, prefetch)
        if self.task is None or self.task.done():
            if self.task is not None and not self.task.cancelled() and self.task.exception():
                log.error("cache pass failed: %r", self.task.exception())
            self.task = asyncio.create_task(self._work(wants, prefetch))
        await asyncio.sleep(0)
        self.publish()

    def publish(self, force: bool = False) -> None:
        self._export_metrics()
        report = self.cache.report()
        text = encode_report(report)
        shape = _shape(report)
        now = time.monotonic()
        if text == self.published:
            return
        if (
            not force
            and shape == self.published_shape
            and now - self.published_at < self.progress_seconds
        ):
            return  # progress only: rate-limited
        try:
            self.patch({MODEL_CACHE_ANNOTATION: text})
        except Exception as error:  # API down or forbidden: next pass
            log.warning("publishing the cache report failed: %s", error)
            return
        self.published, self.published_shape, self.published_at = text, shape, now

    def _export_metrics(self) -> None:
        m, c = self.cache.metrics, self._counted
        MODELCACHE_BYTES_FETCHED.inc(m.bytes_fetched - c.bytes_fetched)
        MODELCACHE_HITS.inc(m.hits - c.hits)
        MODELCACHE_MISSES.inc(m.misses - c.misses)
        MODELCACHE_VERIFICATION_FAILURES.inc(m.verification_failures - c.verification_failures)
        MODELCACHE_EVICTIONS.inc(m.evictions - c.evictions)
        MODELCACHE_USED_BYTES.set(self.cache.used_bytes())
        self._counted = CacheMetrics(
            m.bytes_fetched, m.hits, m.misses, m.verification_failures, m.evictions
        )

    async def drain(self) -> None:
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.publish(force=True)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def _shape(report: CacheReport) -> tuple[Any, ...]:
    models = tuple((n, e.state, e.digest, e.reason) for n, e in sorted(report.models.items()))
    return (*models, report.used_bytes)


def _budget(args: argparse.Namespace) -> int:
    if args.budget_bytes is not None:
        return int(args.budget_bytes)
    if args.budget_gib is not None:
        return int(args.budget_gib * (1 << 30))
    raise SystemExit("modelcache: --budget-gib or --budget-bytes is required")


def run_modelcache(args: argparse.Namespace) -> int:
    """Entry point of ``tokenfleet modelcache``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.digest:
        if len(args.digest) != 2 or args.digest[0] != "digest":
            log.error("usage: tokenfleet modelcache digest DIR")
            return 2
        print(tree_digest(Path(args.digest[1]), exclude=args.exclude))
        return 0
    if not args.node or not args.repository:
        log.error("--node (or $NODE_NAME) and --repository are required")
        return 2
    return asyncio.run(_main(args))


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    repository = Path(args.repository).resolve()
    if args.state_dir:
        return repository, Path(args.state_dir)
    return repository, repository.parent / (repository.name + ".tokenfleet-cache")


class _Mirrors:
    """Its Node (a ``metadata.name`` field selector), the InferenceJobs and the VehiclePools,
    listed once and then watched: a pass reads memory, the API server sends only changes."""

    def __init__(self, core: Any, custom: Any, node: str) -> None:
        self.node = Mirror("node", core.list_node, field_selector=f"metadata.name={node}")
        kinds = {"group": GROUP, "version": VERSION}
        list_custom = custom.list_cluster_custom_object
        self.job_mirror = Mirror("inferencejobs", list_custom, plural="inferencejobs", **kinds)
        self.pool_mirror = Mirror("vehiclepools", list_custom, plural="vehiclepools", **kinds)
        self.all = (self.node, self.job_mirror, self.pool_mirror)
        for mirror in self.all:
            mirror.start()

    def wait_synced(self, timeout: float) -> None:
        """Until each kind was listed (a watch error retries meanwhile), at most ``timeout``."""
        for mirror in self.all:
            mirror.synced.wait(timeout)

    @staticmethod
    def _items(mirror: Mirror) -> list[dict[str, Any]]:
        if not mirror.synced.is_set():
            raise RuntimeError(f"{mirror.name} not listed yet")
        return mirror.items()

    def read_node(self) -> dict[str, Any]:
        items = self._items(self.node)
        if not items:
            raise RuntimeError("its Node is not there")
        return items[0]

    def jobs(self) -> list[dict[str, Any]]:
        return self._items(self.job_mirror)

    def pools(self) -> list[dict[str, Any]]:
        return self._items(self.pool_mirror)

    def stop(self) -> None:
        for mirror in self.all:
            mirror.stop()


async def _main(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    if args.kubeconfig:
        config.load_kube_config(config_file=args.kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    api_client = client.ApiClient()
    core: Any = client.CoreV1Api(api_client)
    custom: Any = client.CustomObjectsApi(api_client)

    mirrors = _Mirrors(core, custom, args.node)
    read_node, list_jobs, list_pools = mirrors.read_node, mirrors.jobs, mirrors.pools

    def store_config() -> StoreConfig:
        if args.store_secret:
            ns, _, name = str(args.store_secret).partition("/")
            secret = core.read_namespaced_secret(name, ns, _request_timeout=10)
            return StoreConfig.from_secret_data(secret.data or {}, name=f"Secret {ns}/{name}")
        return StoreConfig.from_env()

    repository, state_dir = _dirs(args)
    holder: dict[str, StoreConfig] = {"config": await asyncio.to_thread(store_config)}
    cache = ModelCache(
        repository=repository,
        state_dir=state_dir,
        budget_bytes=_budget(args),
        prefetch_percent=float(args.prefetch_percent),
        store_factory=lambda: ObjectStore(holder["config"]),
        clock=time.time,
    )
    runner = CacheRunner(
        args.node,
        cache,
        read_node=read_node,
        list_jobs=list_jobs,
        list_pools=list_pools,
        patch=node_annotation_patcher(core, args.node),
        progress_seconds=args.progress_seconds,
    )
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(
            args.metrics_port, addr=args.metrics_address, registry=MODELCACHE_REGISTRY
        )
    await asyncio.to_thread(mirrors.wait_synced, 60.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "model cache for %s: repository %s, budget %d B", args.node, repository, cache.budget_bytes
    )
    read_at = time.monotonic()
    try:
        while not stop.is_set():
            try:
                if time.monotonic() - read_at >= SECRET_REFRESH_SECONDS:
                    holder["config"] = await asyncio.to_thread(store_config)
                    read_at = time.monotonic()
                await runner.step()
            except Exception as error:  # API or Secret unavailable: retry next pass
                log.warning("model cache pass failed: %s", error)
            if args.once:
                await runner.drain()
                return 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.interval)
    finally:
        await runner.stop()
        mirrors.stop()
    return 0
