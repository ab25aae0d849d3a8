"""The operator's kopf indexes: the picture of the fleet kept in memory, no LIST per reconcile.

One registration per :class:`~tokenfleet.controllers.fleet.IndexId`; read them through
:class:`~tokenfleet.controllers.fleet.FleetView`, never from a handler's ``kwargs``. Pods are
indexed only when they carry the runtime pod label of the operator's config
(``TOKENFLEET_RUNTIME_POD_LABEL``, which also filters the pod watch server-side). Nodes are not
in a kopf index: they come in thousands, and kopf's start is quadratic in an indexed kind's
objects; :mod:`tokenfleet.controllers.nodewatch` watches them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import kopf

from tokenfleet.api.models import GROUP
from tokenfleet.batch.demand import batch_demand
from tokenfleet.controllers.context import context_of
from tokenfleet.controllers.fleet import IndexId
from tokenfleet.controllers.nodes import (
    RuntimePod,
    ServingReplica,
    parse_runtime_pod,
    serving_from_job,
)
from tokenfleet.controllers.snapshot import JobView, PoolView, TankView


@kopf.index("pods", id=IndexId.RUNTIME_PODS_BY_NODE.value)
def runtime_pods_by_node(
    body: kopf.Body, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> dict[str, RuntimePod] | None:
    """Runtime pods by ``spec.nodeName``."""
    if not context_of(memo).config.is_runtime_pod(labels):
        return None
    pod = parse_runtime_pod(body)
    return {pod.node: pod} if pod is not None else None


@kopf.index(GROUP, "inferencejobs", id=IndexId.SERVING_BY_NODE.value)
def serving_by_node(
    name: str, namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, ServingReplica] | None:
    """node name -> [ServingReplica per job]."""
    return serving_from_job(str(namespace or ""), name, spec, status) or None


def _status(body: kopf.Body) -> dict[str, Any]:
    return dict(body.get("status") or {})


_View = TypeVar("_View", TankView, PoolView)


def _cluster_view(cls: type[_View], body: kopf.Body, name: str, meta: kopf.Meta) -> _View:
    return cls(
        name=name,
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=dict(body.get("spec") or {}),
        status=_status(body),
        deleting=meta.get("deletionTimestamp") is not None,
    )


@kopf.index(GROUP, "immersionpods", id=IndexId.TANKS.value)
def planner_tanks(body: kopf.Body, name: str, meta: kopf.Meta, **_: Any) -> dict[str, TankView]:
    return {name: _cluster_view(TankView, body, name, meta)}


@kopf.index(GROUP, "vehiclepools", id=IndexId.POOLS.value)
def planner_pools(body: kopf.Body, name: str, meta: kopf.Meta, **_: Any) -> dict[str, PoolView]:
    return {name: _cluster_view(PoolView, body, name, meta)}


@kopf.index(GROUP, "inferencejobs", id=IndexId.JOBS.value)
def planner_jobs(
    body: kopf.Body, name: str, namespace: str | None, meta: kopf.Meta, **_: Any
) -> dict[str, JobView]:
    placements = tuple(dict(p) for p in (_status(body).get("placements") or ()))
    view = JobView(
        namespace=str(namespace or ""),
        name=name,
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=dict(body.get("spec") or {}),
        placements=placements,
        deleting=meta.get("deletionTimestamp") is not None,
        batch_tokens_per_second=batch_demand(meta.get("annotations")),
    )
    return {view.key: view}
