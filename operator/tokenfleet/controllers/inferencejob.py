"""InferenceJob handlers: one kopf daemon per job drives its :class:`JobWorker`; deletion
unloads its replicas.

The worker (``jobworker.py``) keeps the order of a pass's I/O steps; what a replica's state
becomes is ``replicas.py``, what the status says is ``jobstatus.py``, the Service and
EndpointSlice are ``jobrouting.py``. This module only wires them to kopf and to the operator
context (the runtime pool, the Kubernetes writer, the eviction ledger and the clock).
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from tokenfleet import GROUP, metrics
from tokenfleet.controllers import replicas
from tokenfleet.controllers.context import OperatorContext, context_of
from tokenfleet.controllers.jobworker import JobWorker
from tokenfleet.controllers.planner import Planner

KIND = "InferenceJob"


# ---- kopf wiring ------------------------------------------------------------------------------


def _worker(
    context: OperatorContext, body: kopf.Body, namespace: str, name: str, logger: Any
) -> JobWorker:
    """The job's worker (a new one when kopf hands a new body: a restarted daemon)."""
    key = f"{namespace}/{name}"
    worker = context.workers.get(key)
    if worker is None or worker.body is not body:
        worker = _new_worker(context, body, namespace, name, logger)
        context.workers[key] = worker
    return worker


def _new_worker(
    context: OperatorContext, body: kopf.Body, namespace: str, name: str, logger: Any
) -> JobWorker:
    worker = JobWorker(
        planner=context.planner,
        config=context.config,
        body=body,
        namespace=namespace,
        name=name,
        logger=logger,
        runtimes=context.runtimes,
        kube=context.kube,
        evictions=context.evictions,
        clock=context.clock,
        measured=context.throughput.measured,
    )
    worker.load_record()
    return worker


@kopf.daemon(GROUP, "inferencejobs", id="placements", cancellation_timeout=5.0)
async def job_daemon(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Keep one job's replicas where the fleet plan wants them (see the module docstring)."""
    context = context_of(memo)
    planner = context.planner
    planner.mark_ready()
    await planner.wait_nodes_synced()  # a Node not listed yet is not a Node gone
    ns = str(namespace or "")
    worker = _worker(context, body, ns, name, logger)
    planner.daemon_running(worker.key, True)
    try:
        await _daemon_loop(worker, planner, body, stopped, logger)
    finally:
        planner.daemon_running(worker.key, False)


async def _daemon_loop(
    worker: JobWorker,
    planner: Planner,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
) -> None:
    wake = planner.job_event(worker.key)
    backoff = 1.0
    while not stopped:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        wake.clear()
        try:
            with metrics.reconcile_timer(KIND) as outcome:
                outcome["result"] = await worker.reconcile()
            backoff = 1.0
            timeout = worker.config.job_resync_seconds
            if replicas.in_flight(worker.record):
                timeout = min(timeout, 1.0)  # in flight, or a runtime just missed a check
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("reconcile of %s failed: %s", worker.key, exc)
            timeout = backoff
            backoff = min(backoff * 2, 30.0)
        waiters = [
            asyncio.ensure_future(wake.wait()),
            asyncio.ensure_future(stopped.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


@kopf.on.delete(GROUP, "inferencejobs", id="unload")
async def job_deleted(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Unload the job's replicas from their runtimes; Service/EndpointSlice go by ownerRef GC."""
    context = context_of(memo)
    planner = context.planner
    ns = str(namespace or "")
    key = f"{ns}/{name}"
    await planner.wait_nodes_synced()  # the runtimes' addresses come from the Nodes
    worker = context.workers.pop(key, None)
    if worker is None:
        worker = _new_worker(context, body, ns, name, logger)
    await worker.unload_all()
    planner.forget_job(key)
    planner.signal("job", full=True)
    metrics.forget_job(ns, name)
    logger.info("unloaded the replicas of %s", key)


__all__ = ["JobWorker", "job_daemon", "job_deleted"]
