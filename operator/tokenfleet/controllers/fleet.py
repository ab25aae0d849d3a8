"""The fleet view: the operator's picture of the fleet, read from memory (no LIST per reconcile).

Nodes come from the operator's own list-and-watch (:mod:`tokenfleet.controllers.nodewatch`, into
a :class:`~tokenfleet.controllers.nodestore.NodeStore`: thousands of Nodes in a kopf index make
kopf's start quadratic); the few-object kinds (tanks, pools, jobs, runtime pods, serving
replicas) from kopf's in-memory indexes, one per :class:`IndexId` (registered in
:mod:`tokenfleet.controllers.indexes`), which kopf passes to handlers as keyword arguments named
by their id. :class:`FleetView` is the one typed way to read both: the startup handler attaches
kopf's indexes once (:meth:`FleetView.attach`, which refuses a missing index by name), and every
reader — the planner, the job workers, the runtime prober, the tank and pool timers — asks the
view, never ``kwargs`` by a string. It also holds the dial policy: which runtime address the
operator may send control traffic to (:meth:`FleetView.runtime_endpoint`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from tokenfleet.controllers.nodes import RuntimePod, ServingReplica, index_values
from tokenfleet.controllers.nodestore import NodeStore
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.snapshot import JobView, PoolView, TankView
from tokenfleet.serving.endpoints import (
    dial_allowed,
    format_host_port,
    parse_host_port,
    parse_networks,
)
from tokenfleet.telemetry.node import NodeInfo

log = logging.getLogger(__name__)

_V = TypeVar("_V")

_DIAL_VERDICTS_MAX = 65536


class IndexId(enum.StrEnum):
    """The ids of the operator's kopf indexes (the keyword names kopf passes them by). Nodes
    are not among them: see :attr:`FleetView.node_store`."""

    RUNTIME_PODS_BY_NODE = "runtime_pods_by_node"
    """``spec.nodeName`` -> [RuntimePod]."""
    SERVING_BY_NODE = "serving_by_node"
    """node -> [ServingReplica] (Loaded replicas per job)."""
    TANKS = "planner_tanks"
    """ImmersionPod name -> [TankView]."""
    POOLS = "planner_pools"
    """VehiclePool name -> [PoolView]."""
    JOBS = "planner_jobs"
    """``namespace/name`` -> [JobView]."""


Index = Mapping[str, Iterable[_V]]


class FleetView:
    """Typed, read-only access to the Nodes and kopf's indexes, plus the dial policy (module
    docstring)."""

    def __init__(self, config: OperatorConfig, node_store: NodeStore | None = None) -> None:
        self.config = config
        self.node_store = node_store if node_store is not None else NodeStore()
        """The tokenfleet Nodes (filled by the node watch, or by a test)."""
        self._indexes: Mapping[str, Any] = {}
        # an invalid TOKENFLEET_RUNTIME_DIAL_NETWORKS stops the operator at start, naming it
        self._dial_networks = parse_networks(config.runtime_dial_networks)
        self._refused_dials: set[str] = set()
        self._dial_verdicts: dict[str, bool] = {}
        """endpoint -> may it be dialled (parsing thousands per plan is most of a plan's cost)"""

    def attach(self, indexes: Mapping[str, Any], *, partial: bool = False) -> None:
        """Read from ``indexes`` (kopf's, live) from now on. Every :class:`IndexId` must be
        there unless ``partial`` (tests): a renamed index is an error, not an empty fleet."""
        missing = [i.value for i in IndexId if i.value not in indexes]
        if missing and not partial:
            raise ValueError(f"kopf did not pass the indexes {missing}: are they registered?")
        self._indexes = {i.value: indexes[i.value] for i in IndexId if i.value in indexes}

    @property
    def indexes(self) -> Mapping[str, Any]:
        """The attached indexes by id."""
        return self._indexes

    @property
    def index_ids(self) -> list[str]:
        return sorted(self._indexes)

    def _index(self, index: IndexId) -> Mapping[str, Iterable[Any]]:
        found: Mapping[str, Iterable[Any]] | None = self._indexes.get(index.value)
        return found if found is not None else {}

    # ---- the indexes, typed ------------------------------------------------------------------

    @property
    def nodes_synced(self) -> bool:
        """The Nodes have been listed (until then an empty fleet means "not known yet")."""
        return self.node_store.synced

    @property
    def nodes_by_name(self) -> Index[NodeInfo]:
        """node name -> [NodeInfo] (every tokenfleet node)."""
        return self.node_store.by_name

    @property
    def nodes_by_pool(self) -> Index[NodeInfo]:
        """``tokenfleet.io/pool`` -> [NodeInfo] (vehicles)."""
        return self.node_store.by_pool

    @property
    def nodes_by_tank(self) -> Index[NodeInfo]:
        """``tokenfleet.io/tank`` -> [NodeInfo] (racks)."""
        return self.node_store.by_tank

    @property
    def serving_by_node(self) -> Index[ServingReplica]:
        return self._index(IndexId.SERVING_BY_NODE)

    def nodes(self) -> list[NodeInfo]:
        return self.node_store.infos()

    def node(self, name: str) -> NodeInfo | None:
        return self.node_store.get(name)

    def jobs(self) -> list[JobView]:
        return list(index_values(self._index(IndexId.JOBS)))

    def job_views(self) -> dict[str, JobView]:
        return {j.key: j for j in self.jobs()}

    def tanks(self) -> list[TankView]:
        return list(index_values(self._index(IndexId.TANKS)))

    def pools(self) -> list[PoolView]:
        return list(index_values(self._index(IndexId.POOLS)))

    def jobs_serving_on(self, node: str) -> set[str]:
        """Jobs (``namespace/name``) with a Loaded replica on ``node``: the ones whose
        EndpointSlice lists that node's runtime pod."""
        store = self.serving_by_node.get(node)
        return {r.job for r in store} if store is not None else set()

    def runtime_pods(self, node: str) -> list[RuntimePod]:
        store: Iterable[RuntimePod] | None = self._index(IndexId.RUNTIME_PODS_BY_NODE).get(node)
        return list(store) if store is not None else []

    def runtime_pod(self, node: str) -> RuntimePod | None:
        pods = [p for p in self.runtime_pods(node) if p.pod_ip and not p.deleting]
        if not pods:
            return None
        return max(pods, key=lambda p: (p.ready, p.name))

    # ---- the dial policy ---------------------------------------------------------------------

    def _dial_allowed(self, endpoint: str) -> bool:
        verdict = self._dial_verdicts.get(endpoint)
        if verdict is None:
            if len(self._dial_verdicts) >= _DIAL_VERDICTS_MAX:
                self._dial_verdicts.clear()
            verdict = dial_allowed(parse_host_port(endpoint)[0], self._dial_networks)
            self._dial_verdicts[endpoint] = verdict
        return verdict

    def runtime_endpoint(self, node: str) -> str | None:
        """HOST:PORT of the node's Triton HTTP port: the annotation wins, else the runtime pod.

        ``None`` (no runtime) also when the dial policy forbids the address.
        """
        return self.runtime_endpoint_of(node, self.node(node))

    def runtime_endpoint_of(self, node: str, info: NodeInfo | None) -> str | None:
        """:meth:`runtime_endpoint` with the Node's record at hand (``info``, or ``None``)."""
        if info is not None and info.runtime_endpoint:
            endpoint = info.runtime_endpoint
        else:
            pod = self.runtime_pod(node)
            if pod is None or not pod.pod_ip:
                return None
            endpoint = format_host_port(pod.pod_ip, self.config.runtime_http_port)
        if not self._dial_allowed(endpoint):
            if node not in self._refused_dials:
                self._refused_dials.add(node)
                log.warning(
                    "not dialling %s for node %s: outside the runtime dial networks %s",
                    endpoint,
                    node,
                    self.config.runtime_dial_networks,
                )
            return None
        return endpoint
