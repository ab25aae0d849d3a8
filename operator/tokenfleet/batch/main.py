"""``tokenfleet dispatcher``: serve InferenceBatches (a process of its own, beside the operator).

Watches InferenceBatches, their InferenceJobs, the operator's EndpointSlices, Nodes and
VehiclePools; runs one :class:`~tokenfleet.batch.runner.BatchRunner` per batch that is not
finished. Scale out with ``--shards N --shard I``: each process takes the batches whose UID
hashes to its shard (every batch has exactly one owner; progress is in the store, so a batch
moves to another process by restarting with another shard count).

Every batch served carries the finalizer ``batch.tokenfleet.io/state-cleanup``: a deleted batch
is cancelled, its progress (``.state/<uid>/``) removed from the store — never its output and
error files — and the finalizer removed, at the latest ``--cleanup-seconds`` after the deletion
(then with a Warning Event ``StateNotRemoved`` when the store could not be reached); see
:mod:`tokenfleet.batch.cleanup`.

When a batch's deadline is at risk, the dispatcher writes the tokens/s its jobs' batches need
as the annotation ``tokenfleet.io/batch-tokens-per-second`` on the InferenceJob (removed when no
batch needs it); the operator adds it to the job's throughput target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pydantic

from tokenfleet import GROUP, VERSION
from tokenfleet.api.batch import TERMINAL_PHASES, BatchPhase, InferenceBatchSpec
from tokenfleet.batch.cleanup import (
    deletion_age,
    has_finalizer,
    remove_prefix,
    with_finalizer,
    without_finalizer,
)
from tokenfleet.batch.demand import BATCH_TPS_ANNOTATION
from tokenfleet.batch.fleet import FleetView
from tokenfleet.batch.layout import Layout
from tokenfleet.batch.runner import BatchRef, BatchRunner, RunnerSettings
from tokenfleet.batch.watch import Watcher, standard_kinds
from tokenfleet.serving.endpoints import parse_networks

__all__ = ["BATCH_TPS_ANNOTATION", "add_dispatcher_arguments", "run_dispatcher"]

log = logging.getLogger("tokenfleet.dispatcher")

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "tokenfleet-dispatcher"
RESTART_SECONDS = 5.0


def add_dispatcher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n", "--namespace", default=None, help="serve batches of this namespace (default: all)"
    )
    parser.add_argument(
        "--s3-endpoint",
        default=os.environ.get("TOKENFLEET_S3_ENDPOINT"),
        help="object store URL when a batch's Secret names none (default: $TOKENFLEET_S3_ENDPOINT)",
    )
    parser.add_argument(
        "--dial-networks",
        default=os.environ.get("TOKENFLEET_RUNTIME_DIAL_NETWORKS", ""),
        help="CIDRs runtimes may be dialled in (the operator's dial policy; default: any, or "
        "$TOKENFLEET_RUNTIME_DIAL_NETWORKS)",
    )
    parser.add_argument("--shards", type=int, default=1, help="dispatcher processes in all")
    parser.add_argument("--shard", type=int, default=0, help="this process's shard, 0-based")
    parser.add_argument("--unit-size", type=int, default=8, help="requests per work unit")
    parser.add_argument(
        "--max-window", type=int, default=4, help="work units in flight per replica at most"
    )
    parser.add_argument(
        "--cleanup-seconds",
        type=float,
        default=120.0,
        help="a deleted batch's progress is removed from the store within this many seconds "
        "of the deletion, or left there with a Warning Event (default: %(default)s)",
    )


def owns(uid: str, shard: int, shards: int) -> bool:
    """Whether shard ``shard`` of ``shards`` serves the batch with ``uid``."""
    digest = hashlib.sha256(uid.encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(shards, 1) == shard


def parse_batch(obj: Mapping[str, Any]) -> tuple[BatchRef | None, str | None]:
    """A BatchRef of an InferenceBatch body, or (None, why) when its spec is invalid."""
    meta = obj.get("metadata") or {}
    try:
        spec = InferenceBatchSpec.model_validate(dict(obj.get("spec") or {}))
    except pydantic.ValidationError as exc:
        return None, str(exc)[:1024]
    created = str(meta.get("creationTimestamp") or "")
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.now(UTC)
    return (
        BatchRef(
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            generation=int(meta.get("generation") or 1),
            created=when,
            spec=spec,
            deleting=meta.get("deletionTimestamp") is not None,
        ),
        None,
    )


@dataclass
class Dispatcher:
    args: argparse.Namespace
    api_client: Any
    fleet: FleetView
    batches: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    runners: dict[tuple[str, str], tuple[str, asyncio.Task[Any], BatchRunner | None]] = field(
        default_factory=dict
    )
    annotated: dict[tuple[str, str], float] = field(default_factory=dict)
    failed_at: dict[tuple[str, str], float] = field(default_factory=dict)
    """When a batch's runner last failed: it is started again (resuming from the store) after
    RESTART_SECONDS."""
    ran: set[str] = field(default_factory=set)
    """UIDs whose runner ended in this process (a deleted one is then cleaned up, not rerun)."""
    meta_tasks: dict[tuple[str, str], asyncio.Task[Any]] = field(default_factory=dict)
    """Per batch: the finalizer being added, or the deletion being cleaned up."""
    wall: Callable[[], datetime] = field(default_factory=lambda: _utcnow)
    """The wall clock (deletion ages, Event times)."""

    # ---- watch handlers -------------------------------------------------------------------------

    def set_batch(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if deleted:
            self.batches.pop(key, None)
            self.ran.discard(str(meta.get("uid")))
        else:
            self.batches[key] = obj

    def current(self, key: tuple[str, str], uid: str) -> BatchRef | None:
        obj = self.batches.get(key)
        if obj is None or (obj.get("metadata") or {}).get("uid") != uid:
            return None
        ref, _ = parse_batch(obj)
        return ref

    # ---- Kubernetes writes (official client, in a thread) ---------------------------------------

    async def patch_status(self, key: tuple[str, str], status: dict[str, Any]) -> None:
        from kubernetes import client as k8s

        def call() -> None:
            api: Any = k8s.CustomObjectsApi(self.api_client)
            api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                key[0],
                "inferencebatches",
                key[1],
                {"status": status},
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
            )

        await asyncio.to_thread(call)

    async def set_finalizers(self, meta: Mapping[str, Any], finalizers: list[str]) -> None:
        """Replace the batch's finalizers with ``finalizers``, only if they are still the ones in
        ``meta`` (a JSON patch ``test``, so a status write in between does not conflict; with
        none yet, at ``meta``'s resourceVersion). A conflict is retried by the next reconcile,
        from the newer object."""
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        current = [str(f) for f in meta.get("finalizers") or ()]
        patch: Any
        if current:
            content_type = "application/json-patch+json"
            patch = [
                {"op": "test", "path": "/metadata/uid", "value": meta.get("uid")},
                {"op": "test", "path": "/metadata/finalizers", "value": current},
                {"op": "replace", "path": "/metadata/finalizers", "value": finalizers},
            ]
        else:  # none yet: only at the version read (no list to test against)
            content_type = MERGE_PATCH
            patch = {
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": meta.get("resourceVersion"),
                    "uid": meta.get("uid"),
                }
            }

        def call() -> None:
            api: Any = k8s.CustomObjectsApi(self.api_client)
            try:
                api.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    str(meta.get("namespace")),
                    "inferencebatches",
                    str(meta.get("name")),
                    patch,
                    field_manager=FIELD_MANAGER,
                    _content_type=content_type,
                )
            except ApiException as exc:
                # gone, or the test failed (422: the finalizers changed meanwhile)
                if exc.status not in (404, 409, 422):
                    raise

        await asyncio.to_thread(call)

    async def warn(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """A Warning Event on the batch."""
        from kubernetes import client as k8s

        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        now = self.wall().strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "InferenceBatch",
                "namespace": ns,
                "name": name,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": FIELD_MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

        def call() -> None:
            api: Any = k8s.CoreV1Api(self.api_client)
            api.create_namespaced_event(ns, body)

        await asyncio.to_thread(call)

    async def annotate_job(self, key: tuple[str, str], tps: float) -> None:
        from kubernetes import client as k8s

        value = None if tps <= 0 else f"{tps:.3f}"

        def call() -> None:
            api: Any = k8s.CustomObjectsApi(self.api_client)
            api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                key[0],
                "inferencejobs",
                key[1],
                {"metadata": {"annotations": {BATCH_TPS_ANNOTATION: value}}},
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
            )

        await asyncio.to_thread(call)

    async def store_config(self, ref: BatchRef) -> Any:
        from kubernetes import client as k8s

        from tokenfleet.store import StoreConfig

        def read() -> dict[str, str]:
            api: Any = k8s.CoreV1Api(self.api_client)
            secret = api.read_namespaced_secret(ref.spec.credentials_secret_name, ref.namespace)
            return dict(secret.data or {})

        data = await asyncio.to_thread(read)
        name = f"Secret {ref.namespace}/{ref.spec.credentials_secret_name}"
        config = StoreConfig.from_secret_data(data, name=name)
        if config.endpoint_url is None and self.args.s3_endpoint:
            config = StoreConfig(self.args.s3_endpoint, config.credentials, config.region)
        return config

    # ---- running batches ------------------------------------------------------------------------

    async def run_one(self, ref: BatchRef, session: aiohttp.ClientSession) -> None:
        from tokenfleet.store import ObjectStore, parse_s3_uri

        key = ref.key
        try:
            config = await self.store_config(ref)
        except Exception as exc:
            await self.patch_status(
                key,
                {
                    "phase": BatchPhase.FAILED.value,
                    "conditions": _failed_conditions(
                        "CredentialsUnreadable",
                        f"credentialsSecretName {ref.spec.credentials_secret_name}: {exc}"[:1024],
                        ref.generation,
                    ),
                },
            )
            return
        bucket, prefix = parse_s3_uri(ref.spec.output.uri)
        async with ObjectStore(config) as store:
            runner = BatchRunner(
                ref=ref,
                store=store,
                layout=Layout(bucket, prefix, ref.uid),
                slots=lambda now: self.fleet.slots(ref.namespace, ref.spec.job_name, now),
                current=lambda: self.current(key, ref.uid),
                patch_status=lambda status: self.patch_status(key, status),
                session=session,
                settings=RunnerSettings(
                    unit_size=self.args.unit_size, max_window=self.args.max_window
                ),
            )
            entry = self.runners.get(key)
            if entry is not None:
                self.runners[key] = (entry[0], entry[1], runner)
            phase = await runner.run()
            log.info("%s/%s: %s", *key, phase.value)

    async def finalize(self, obj: Mapping[str, Any]) -> None:
        """Remove a deleted batch's progress from the store, then its finalizer (at the latest
        --cleanup-seconds after the deletion: then with a Warning Event)."""
        from tokenfleet.store import ObjectStore, parse_s3_uri

        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        ref, problem = parse_batch(obj)
        error: str | None = problem
        where = "?"
        while ref is not None:
            bucket, prefix = parse_s3_uri(ref.spec.output.uri)
            layout = Layout(bucket, prefix, ref.uid)
            where = layout.uri(layout.state_prefix)
            try:
                config = await self.store_config(ref)
                async with ObjectStore(config, connect_timeout_s=5, read_timeout_s=20) as store:
                    removed = await remove_prefix(store, bucket, layout.state_prefix)
                log.info("%s/%s deleted: %d objects of %s removed", *key, removed, where)
                error = None
                break
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            left = self.args.cleanup_seconds - deletion_age(meta, self.wall())
            if left <= 0:
                break
            log.warning("%s/%s: removing %s failed (%s); retrying", *key, where, error)
            await asyncio.sleep(min(5.0, left))
        if error is not None:
            log.warning("%s/%s: deleted; %s left in the store (%s)", *key, where, error)
            with contextlib.suppress(Exception):
                await self.warn(
                    obj,
                    "StateNotRemoved",
                    f"the batch's progress {where} was left in the store (removed by hand or "
                    f"kept): {error}",
                )
        latest = self.batches.get(key)
        if latest is not None and (latest.get("metadata") or {}).get("uid") == meta.get("uid"):
            meta = latest.get("metadata") or {}
        await self.set_finalizers(meta, without_finalizer(meta))

    def on_deleting(
        self, key: tuple[str, str], obj: Mapping[str, Any], session: aiohttp.ClientSession
    ) -> None:
        """A deleted batch: cancel it (its runner writes what finished), then clean up."""
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not has_finalizer(meta) or key in self.meta_tasks:
            return
        late = deletion_age(meta, self.wall()) >= self.args.cleanup_seconds
        entry = self.runners.get(key)
        if entry is not None:
            if late:  # e.g. the store is down and the runner keeps retrying a write
                entry[1].cancel()
            return
        phase = (obj.get("status") or {}).get("phase")
        ref, _ = parse_batch(obj)
        unfinished = phase not in {p.value for p in TERMINAL_PHASES}
        if ref is not None and uid not in self.ran and unfinished and not late:
            # served by nobody here yet: cancel it properly first (partial results written)
            self.runners[key] = (uid, asyncio.create_task(self.run_one(ref, session)), None)
            return
        self.meta_tasks[key] = asyncio.create_task(self.finalize(obj))

    async def reconcile(self, session: aiohttp.ClientSession) -> None:
        for key, (_uid, task, _) in list(self.runners.items()):
            if task.done():
                del self.runners[key]
                self.ran.add(_uid)
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s/%s: runner failed: %r", *key, task.exception())
                    self.failed_at[key] = time.monotonic()
        for key, task in list(self.meta_tasks.items()):
            if task.done():
                del self.meta_tasks[key]
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s/%s: finalizer: %r", *key, task.exception())
        for key, obj in list(self.batches.items()):
            meta = obj.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            if not owns(uid, self.args.shard, self.args.shards):
                continue
            if meta.get("deletionTimestamp") is not None:
                self.on_deleting(key, obj, session)
                continue
            if not has_finalizer(meta) and key not in self.meta_tasks:
                self.meta_tasks[key] = asyncio.create_task(
                    self.set_finalizers(meta, with_finalizer(meta))
                )
            if key in self.runners:
                continue
            if time.monotonic() - self.failed_at.get(key, -math.inf) < RESTART_SECONDS:
                continue
            phase = (obj.get("status") or {}).get("phase")
            if phase in {p.value for p in TERMINAL_PHASES}:
                continue
            ref, _problem = parse_batch(obj)
            if ref is None:
                continue  # the API server's schema refuses such specs; nothing to serve
            task = asyncio.create_task(self.run_one(ref, session))
            self.runners[key] = (uid, task, None)
        await self.publish_demand()

    async def publish_demand(self) -> None:
        demand: dict[tuple[str, str], float] = {}
        for key, (_, _, runner) in self.runners.items():
            if runner is not None and runner.requested_tps > 0:
                job = (key[0], runner.ref.spec.job_name)
                demand[job] = demand.get(job, 0.0) + runner.requested_tps
        for job in set(demand) | set(self.annotated):
            want = round(demand.get(job, 0.0), 1)
            if self.annotated.get(job, 0.0) == want:
                continue
            try:
                await self.annotate_job(job, want)
            except Exception as exc:
                log.warning("%s/%s: annotating the job failed: %s", *job, exc)
                continue
            if want > 0:
                self.annotated[job] = want
            else:
                self.annotated.pop(job, None)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _failed_conditions(reason: str, message: str, generation: int) -> list[dict[str, Any]]:
    from tokenfleet.api.conditions import set_kstatus

    return set_kstatus(
        None,
        ready=False,
        reason=reason,
        message=message,
        stalled=True,
        observed_generation=generation,
    )


async def _serve(args: argparse.Namespace) -> None:
    from tokenfleet.controllers.kube import api_client

    client = api_client()
    fleet = FleetView()
    fleet.table.dial_networks = parse_networks(args.dial_networks)
    dispatcher = Dispatcher(args=args, api_client=client, fleet=fleet)
    namespaces = (args.namespace,) if args.namespace else ()

    def clear_jobs() -> None:
        fleet.table.jobs.clear()
        fleet.watts.clear()

    def clear_nodes() -> None:
        fleet.table.node_endpoints.clear()
        fleet.nodes.clear()

    watcher = Watcher(
        standard_kinds(
            client,
            namespaces,
            batches=(dispatcher.set_batch, dispatcher.batches.clear),
            jobs=(fleet.set_job, clear_jobs),
            slices=(fleet.table.set_slice, fleet.table.slices.clear),
            nodes=(fleet.set_node, clear_nodes),
            pools=(fleet.set_pool, fleet.pools.clear),
        )
    )
    loop = asyncio.get_running_loop()
    watcher.start(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"dispatcher started (shard {args.shard} of {args.shards})", flush=True)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        try:
            while not stop.is_set():
                if watcher.synced():
                    await dispatcher.reconcile(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            watcher.stop()
            tasks = [t for _, t, _ in dispatcher.runners.values()]
            tasks += dispatcher.meta_tasks.values()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def run_dispatcher(args: argparse.Namespace) -> int:
    if not 0 <= args.shard < args.shards:
        raise SystemExit(f"--shard must be in 0..{args.shards - 1}, got {args.shard}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.Formatter.converter = time.gmtime
    asyncio.run(_serve(args))
    return 0
