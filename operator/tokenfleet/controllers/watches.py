"""Watch events that wake the planner, filtered so only what the planner reads does.

kopf calls one handler per watch event (an ImmersionPod, a VehiclePool, an InferenceJob, a
runtime pod). Each handler reduces the object to the facts the planner reads and asks the
operator's :class:`~tokenfleet.controllers.watchfilter.WatchFilter` (part of the operator
context) whether they changed since the last event of that object; only a change signals the
planner, so the operator's own status writes do not replan. Nodes are not watched by kopf: the
operator's node watch (:mod:`tokenfleet.controllers.nodewatch`) drops their unchanged events
itself and signals through :mod:`tokenfleet.controllers.nodesignals`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from tokenfleet import GROUP
from tokenfleet.batch.demand import batch_demand
from tokenfleet.controllers.context import context_of
from tokenfleet.controllers.watchfilter import (
    POOL_STATUS_KEYS,
    TANK_STATUS_KEYS,
    Seen,
)

log = logging.getLogger(__name__)


def _object_facts(deleted: bool, meta: kopf.Meta, status_facts: Iterable[Any]) -> tuple[Any, ...]:
    return (
        deleted,
        meta.get("generation"),
        meta.get("deletionTimestamp") is not None,
        *status_facts,
    )


def _signal_on_change(
    memo: kopf.Memo,
    trigger: str,
    seen_of: str,
    key: str,
    facts: tuple[Any, ...],
    deleted: bool,
) -> None:
    """Replan when what the planner reads of an object changed (not on its own writes)."""
    context = context_of(memo)
    context.planner.mark_ready()
    seen: Seen[tuple[Any, ...]] = getattr(context.watches, seen_of)
    if seen.observe(key, facts, deleted=deleted) is not None:
        # a pool's change need not be planned in full: the engine compares the pools with the
        # previous plan's and plans in full itself when they differ (today's energy without a
        # budget is not part of them: see snapshot.pool_of)
        context.planner.signal(trigger, full=trigger != "pool")


@kopf.on.event(GROUP, "immersionpods")
def tank_changed(
    name: str,
    type: str | None,  # noqa: A002
    body: kopf.Body,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    status = body.get("status") or {}
    deleted = type == "DELETED"
    facts = _object_facts(deleted, meta, (status.get(k) for k in TANK_STATUS_KEYS))
    _signal_on_change(memo, "tank", "tanks", name, facts, deleted)


@kopf.on.event(GROUP, "vehiclepools")
def pool_changed(
    name: str,
    type: str | None,  # noqa: A002
    body: kopf.Body,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    status = body.get("status") or {}
    deleted = type == "DELETED"
    facts = _object_facts(deleted, meta, (status.get(k) for k in POOL_STATUS_KEYS))
    _signal_on_change(memo, "pool", "pools", name, facts, deleted)


@kopf.on.event(GROUP, "inferencejobs")
def job_changed(
    name: str,
    namespace: str | None,
    type: str | None,  # noqa: A002
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    deleted = type == "DELETED"
    # a batch whose deadline is at risk raises the job's target through an annotation
    facts = _object_facts(deleted, meta, (batch_demand(meta.get("annotations")),))
    _signal_on_change(memo, "job", "jobs", f"{namespace}/{name}", facts, deleted)


def _pod_ready(status: kopf.Status | dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )


@kopf.on.event("pods")
def runtime_pod_changed(
    name: str,
    namespace: str | None,
    type: str | None,  # noqa: A002
    body: kopf.Body,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A runtime pod appeared, moved, became (un)ready or vanished: endpoints may change."""
    context = context_of(memo)
    if not context.config.is_runtime_pod(labels):
        return
    planner = context.planner
    planner.mark_ready()
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    deleted = type == "DELETED"
    facts = (
        deleted,
        spec.get("nodeName"),
        status.get("podIP"),
        _pod_ready(status),
        (body.get("metadata") or {}).get("deletionTimestamp") is not None,
    )
    change = context.watches.pods.observe(f"{namespace}/{name}", facts, deleted=deleted)
    if change is None:
        return
    # A node that just got its runtime can take work: replan. Otherwise only endpoints move,
    # and only in the slices of the jobs served on that node.
    if change.first or deleted:
        planner.signal("runtime", full=True)
    if spec.get("nodeName"):
        planner.kick_jobs(context.fleet.jobs_serving_on(str(spec["nodeName"])))
