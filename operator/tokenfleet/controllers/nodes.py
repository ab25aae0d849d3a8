"""What the node and runtime-pod indexes hold, and the pure functions that fill and read them.

The kopf index registrations are in :mod:`tokenfleet.controllers.indexes`, the node watch in
:mod:`tokenfleet.controllers.nodewatch` and the typed reads in :mod:`tokenfleet.controllers.fleet`;
this module has the values (:class:`RuntimePod`, :class:`ServingReplica`), their parsers and the
node-selector helper. A NodeInfo's vehicle
reading is parsed but not judged for staleness: use ``info.vehicle.at(now, stale_after_seconds)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from tokenfleet.controllers.jobspec import variant_figures
from tokenfleet.controllers.replicas import SERVING
from tokenfleet.metrics import TELEMETRY_REJECTED
from tokenfleet.telemetry.node import NodeInfo, NodeRole, parse_node, selector_matches
from tokenfleet.telemetry.vehicle import POOL_LABEL, TANK_LABEL

__all__ = [
    "RuntimePod",
    "ServingReplica",
    "first",
    "index_values",
    "parse_node_counted",
    "parse_runtime_pod",
    "select_nodes",
    "serving_from_job",
]

_V = TypeVar("_V")

SERVING_STATES: Final = SERVING


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


def parse_node_counted(body: Mapping[str, Any]) -> NodeInfo:
    """:func:`parse_node`, counting the vehicle telemetry it rejects in
    ``tokenfleet_telemetry_rejected_total`` (the node watch parses each received version of a
    Node once, so each is counted once)."""
    info = parse_node(body)
    if info.vehicle is not None:
        for problem in info.vehicle.problems:
            TELEMETRY_REJECTED.labels("vehicle", problem.field, problem.kind.value).inc()
    return info


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


def serving_from_job(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, ServingReplica]:
    """node -> the job's Loaded replicas there (pure; tolerant of malformed entries)."""
    figures: dict[str, tuple[float, float]] = {}
    for variant in spec.get("variants") or ():
        if isinstance(variant, Mapping):
            figures[str(variant.get("name"))] = variant_figures(variant)
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
