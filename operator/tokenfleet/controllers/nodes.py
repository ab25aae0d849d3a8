"""kopf indexes over tokenfleet Nodes (and runtime pods): the operator's picture, no LIST calls.

Indexes (kopf passes each to handlers as a keyword argument of the same name)::

    nodes_by_name:        kopf.Index[str, NodeInfo]    node name -> [NodeInfo]      (all roles)
    nodes_by_pool:        kopf.Index[str, NodeInfo]    tokenfleet.io/pool -> [NodeInfo] (vehicles)
    nodes_by_tank:        kopf.Index[str, NodeInfo]    tokenfleet.io/tank -> [NodeInfo] (racks)
    runtime_pods_by_node: kopf.Index[str, RuntimePod]  spec.nodeName -> [RuntimePod]
    serving_by_node:      kopf.Index[str, ServingReplica]  node -> [Loaded replicas per job]

Only Nodes with the ``tokenfleet.io/role`` label are indexed; pods only with
``app.kubernetes.io/name: tokenfleet-runtime``. A NodeInfo's vehicle reading is parsed but not
judged for staleness: use ``info.vehicle.at(now, stale_after_seconds)``.

Import this module from the operator's main module so kopf registers the indexes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import kopf

from tokenfleet.api.models import GROUP
from tokenfleet.telemetry.metrics import TELEMETRY_REJECTED
from tokenfleet.telemetry.node import NodeInfo, NodeRole, parse_node, selector_matches
from tokenfleet.telemetry.vehicle import POOL_LABEL, ROLE_LABEL, TANK_LABEL

__all__ = [
    "RUNTIME_POD_LABELS",
    "NodeIndex",
    "RuntimePod",
    "RuntimePodIndex",
    "ServingReplica",
    "first",
    "index_values",
    "node_info",
    "nodes_by_name",
    "nodes_by_pool",
    "nodes_by_tank",
    "parse_runtime_pod",
    "runtime_pods_by_node",
    "select_nodes",
    "serving_by_node",
    "serving_from_job",
]

_V = TypeVar("_V")

NodeIndex = kopf.Index[str, NodeInfo]
RUNTIME_POD_LABELS: Final[Mapping[str, str]] = {"app.kubernetes.io/name": "tokenfleet-runtime"}
SERVING_STATES: Final = frozenset({"Loaded"})


@dataclass(frozen=True, slots=True)
class RuntimePod:
    """A Triton runtime pod (the chart's DaemonSet) on a node."""

    namespace: str
    name: str
    node: str
    pod_ip: str | None
    ready: bool
    """PodReady condition is True."""
    deleting: bool


RuntimePodIndex = kopf.Index[str, RuntimePod]

# Each node event calls three index functions; parse once per (uid, resourceVersion).
_CACHE_SIZE: Final = 8192
_cache: OrderedDict[tuple[str, str], NodeInfo] = OrderedDict()


def node_info(body: Mapping[str, Any]) -> NodeInfo:
    """:func:`parse_node` with a small LRU cache keyed by (uid, resourceVersion)."""
    metadata = body.get("metadata") or {}
    uid, version = metadata.get("uid"), metadata.get("resourceVersion")
    if not uid or not version:
        return parse_node(body)
    key = (str(uid), str(version))
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached
    info = parse_node(body)
    if info.vehicle is not None:  # counted once per received version of the node
        for problem in info.vehicle.problems:
            TELEMETRY_REJECTED.labels("vehicle", problem.field, problem.kind.value).inc()
    _cache[key] = info
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return info


_ROLE_PRESENT: Final = {ROLE_LABEL: kopf.PRESENT}


@kopf.index("nodes", labels=_ROLE_PRESENT, id="nodes_by_name")
def nodes_by_name(body: kopf.Body, name: str, **_: Any) -> dict[str, NodeInfo]:
    """Every tokenfleet node by name."""
    return {name: node_info(body)}


@kopf.index("nodes", labels={ROLE_LABEL: NodeRole.VEHICLE.value}, id="nodes_by_pool")
def nodes_by_pool(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, NodeInfo] | None:
    """Vehicle nodes by their ``tokenfleet.io/pool`` label."""
    pool = labels.get(POOL_LABEL, "").strip()
    return {pool: node_info(body)} if pool else None


@kopf.index("nodes", labels={ROLE_LABEL: NodeRole.RACK.value}, id="nodes_by_tank")
def nodes_by_tank(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, NodeInfo] | None:
    """Rack nodes by their ``tokenfleet.io/tank`` label."""
    tank = labels.get(TANK_LABEL, "").strip()
    return {tank: node_info(body)} if tank else None


def parse_runtime_pod(body: Mapping[str, Any]) -> RuntimePod | None:
    """A runtime pod's placement facts; ``None`` until it is scheduled to a node."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    node = spec.get("nodeName")
    if not node:
        return None
    ready = any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return RuntimePod(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        node=str(node),
        pod_ip=status.get("podIP") or None,
        ready=ready,
        deleting=metadata.get("deletionTimestamp") is not None,
    )


@kopf.index("pods", labels=dict(RUNTIME_POD_LABELS), id="runtime_pods_by_node")
def runtime_pods_by_node(body: kopf.Body, **_: Any) -> dict[str, RuntimePod] | None:
    """Runtime pods by ``spec.nodeName``."""
    pod = parse_runtime_pod(body)
    return {pod.node: pod} if pod is not None else None


@dataclass(frozen=True, slots=True)
class ServingReplica:
    """Replicas of one job loaded on one node (from the job's ``status.placements``)."""

    job: str
    """``namespace/name``."""
    replicas: int
    tokens_per_second: float
    """Sum over those replicas of their variant's ``tokensPerSecond``."""
    watts: float = 0.0
    """Sum over those replicas of their variant's ``watts`` (declared draw while serving)."""


def _variant_figures(variant: Mapping[str, Any]) -> tuple[float, float]:
    try:
        tps = float(variant.get("tokensPerSecond") or 0.0)
    except (TypeError, ValueError):
        tps = 0.0
    try:
        watts = float(variant.get("watts") or 0.0)
    except (TypeError, ValueError):
        watts = 0.0
    return (
        tps if math.isfinite(tps) and tps > 0 else 0.0,
        watts if math.isfinite(watts) and watts > 0 else 0.0,
    )


def serving_from_job(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, ServingReplica]:
    """node -> the job's Loaded replicas there (pure; tolerant of malformed entries)."""
    figures: dict[str, tuple[float, float]] = {}
    for variant in spec.get("variants") or ():
        if isinstance(variant, Mapping):
            figures[str(variant.get("name"))] = _variant_figures(variant)
    counts: dict[str, list[tuple[float, float]]] = {}
    for entry in status.get("placements") or ():
        if not isinstance(entry, Mapping) or entry.get("state") not in SERVING_STATES:
            continue
        node = entry.get("node")
        if not node:
            continue
        counts.setdefault(str(node), []).append(figures.get(str(entry.get("variant")), (0.0, 0.0)))
    job = f"{namespace}/{name}"
    return {
        node: ServingReplica(job, len(v), sum(t for t, _ in v), sum(w for _, w in v))
        for node, v in counts.items()
    }


@kopf.index(GROUP, "inferencejobs", id="serving_by_node")
def serving_by_node(
    name: str, namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, ServingReplica] | None:
    """node name -> [ServingReplica per job]."""
    return serving_from_job(str(namespace or ""), name, spec, status) or None


def index_values(index: Mapping[str, Iterable[_V]]) -> Iterator[_V]:
    """Every value of a kopf index (or any ``key -> values`` mapping), key by key."""
    for store in index.values():
        yield from store


def first(index: Mapping[str, Iterable[_V]], key: str) -> _V | None:
    """The first value under ``key`` (e.g. ``first(nodes_by_name, "car-1")``), else ``None``."""
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def select_nodes(
    selector: Mapping[str, str] | None,
    *,
    by_name: Mapping[str, Iterable[NodeInfo]],
    by_pool: Mapping[str, Iterable[NodeInfo]] | None = None,
    by_tank: Mapping[str, Iterable[NodeInfo]] | None = None,
    role: NodeRole | None = None,
) -> list[NodeInfo]:
    """Nodes matching an equality ``nodeSelector`` (and ``role`` if given), sorted by name.

    Uses ``by_pool``/``by_tank`` when the selector pins ``tokenfleet.io/pool``/``tank``,
    otherwise scans ``by_name`` (in memory). An empty selector selects every node of the role.
    """
    selector = selector or {}
    candidates: Iterable[NodeInfo]
    if by_pool is not None and POOL_LABEL in selector:
        candidates = by_pool.get(selector[POOL_LABEL], ())
    elif by_tank is not None and TANK_LABEL in selector:
        candidates = by_tank.get(selector[TANK_LABEL], ())
    else:
        candidates = index_values(by_name)
    chosen = {
        info.name: info
        for info in candidates
        if (role is None or info.role is role) and selector_matches(selector, info.labels)
    }
    return [chosen[name] for name in sorted(chosen)]
