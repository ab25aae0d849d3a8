"""The gateway's routing table (pure: plain Kubernetes dicts in, routing decisions out).

Built from what the operator publishes, the Kubernetes way:

* **EndpointSlices** of each job's Service (label ``kubernetes.io/service-name``): one endpoint
  per replica with the standard conditions. Only ``ready`` endpoints take new requests; a
  replica the operator is draining stays listed as ``serving``/``terminating`` until it unloads.
* **InferenceJobs**: ``status.placements`` says which variant (and target, Rack/Vehicle) each
  node holds; ``spec.variants`` gives that variant's Triton model name and declared tokens/s;
  ``status.serviceName`` ties the job to its Service.
* **Nodes**: where to dial a node's runtime follows the operator's dial policy — the
  ``tokenfleet.io/runtime-endpoint`` annotation when present, else the endpoint's address on
  Triton's HTTP port — and is refused outside the configured dial networks.

:meth:`RoutingTable.pick` chooses among a job's ready replicas by least outstanding work
weighted by speed: ``(outstanding tokens + this request's tokens) / tokens per second``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenfleet.serving.endpoints import (
    RUNTIME_ENDPOINT_ANNOTATION,
    TRITON_HTTP_PORT,
    dial_allowed,
    format_host_port,
    parse_host_port,
)
from tokenfleet.serving.errors import EndpointError
from tokenfleet.serving.routing import service_name

__all__ = ["JobInfo", "Replica", "RoutingTable", "SliceEndpoint"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice: its node, first address and conditions."""

    node: str
    address: str
    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What the gateway needs of one InferenceJob."""

    namespace: str
    name: str
    service: str
    created: int
    models: Mapping[str, str]  # variant -> Triton model name
    rates: Mapping[str, float]  # variant -> declared tokens/s of one replica
    placements: Mapping[str, tuple[str, str]]  # node -> (variant, target)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Replica:
    """A routable replica: where to send a job's requests and what it runs there."""

    namespace: str
    job: str
    node: str
    endpoint: str  # HOST:PORT of the runtime's HTTP port
    model: str  # Triton model name
    target: str  # Rack / Vehicle
    tokens_per_second: float

    @property
    def key(self) -> tuple[str, str]:
        """Outstanding work is per runtime and model."""
        return (self.endpoint, self.model)


def _created(meta: Mapping[str, Any]) -> int:
    raw = meta.get("creationTimestamp")
    if not raw:
        return 0
    try:
        return int(datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def parse_job(obj: Mapping[str, Any]) -> JobInfo | None:
    """The routing facts of an InferenceJob body (``None`` without name/namespace)."""
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not name or not namespace:
        return None
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    model_name = str((spec.get("model") or {}).get("name") or name)
    models: dict[str, str] = {}
    rates: dict[str, float] = {}
    for v in spec.get("variants") or ():
        vname = v.get("name")
        if not vname:
            continue
        models[str(vname)] = str(v.get("tritonModelName") or f"{model_name}-{vname}")
        try:
            rates[str(vname)] = max(float(v.get("tokensPerSecond") or 0.0), 0.0)
        except (TypeError, ValueError):
            rates[str(vname)] = 0.0
    placements: dict[str, tuple[str, str]] = {}
    for p in status.get("placements") or ():
        node, variant = p.get("node"), p.get("variant")
        if node and variant and p.get("state") in ("Loading", "Loaded", "Unloading"):
            placements[str(node)] = (str(variant), str(p.get("target") or "Rack"))
    return JobInfo(
        namespace=str(namespace),
        name=str(name),
        service=str(status.get("serviceName") or service_name(str(name))),
        created=_created(meta),
        models=models,
        rates=rates,
        placements=placements,
    )


def parse_slice(obj: Mapping[str, Any]) -> tuple[str, str, str, list[SliceEndpoint]] | None:
    """``(namespace, slice name, service, endpoints)`` of an EndpointSlice body."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    service, namespace, name = (
        labels.get(SERVICE_NAME_LABEL),
        meta.get("namespace"),
        meta.get("name"),
    )
    if not service or not namespace or not name:
        return None
    out: list[SliceEndpoint] = []
    for ep in obj.get("endpoints") or ():
        addresses = ep.get("addresses") or ()
        node = ep.get("nodeName")
        if not addresses or not node:
            continue
        cond = ep.get("conditions") or {}
        # Kubernetes semantics: a nil ready means ready, nil serving follows ready
        ready = cond.get("ready") is not False
        terminating = cond.get("terminating") is True
        serving = cond.get("serving") if cond.get("serving") is not None else ready
        out.append(
            SliceEndpoint(
                node=str(node),
                address=str(addresses[0]),
                ready=ready and not terminating,
                serving=bool(serving),
                terminating=terminating,
            )
        )
    return str(namespace), str(name), str(service), out


@dataclass
class RoutingTable:
    """Jobs, slices and node endpoints as last seen, plus the gateway's outstanding work.

    Mutated only from one event loop (watch events and requests), never across threads.
    """

    dial_networks: tuple[Network, ...] = ()
    runtime_http_port: int = TRITON_HTTP_PORT
    jobs: dict[tuple[str, str], JobInfo] = field(default_factory=dict)
    slices: dict[tuple[str, str], tuple[str, list[SliceEndpoint]]] = field(default_factory=dict)
    node_endpoints: dict[str, str] = field(default_factory=dict)
    outstanding: dict[tuple[str, str], float] = field(default_factory=dict)
    in_flight: dict[tuple[str, str], int] = field(default_factory=dict)
    #: per job: the JobInfo they were resolved for and its ready replicas (dial addresses parsed,
    #: dial policy applied). A request's pick reads this; any watch event clears it, so the
    #: work of resolving is done once per change, not once per request.
    _ready: dict[tuple[str, str], tuple[JobInfo, list[Replica]]] = field(
        default_factory=dict, repr=False
    )
    _by_service: dict[tuple[str, str], list[SliceEndpoint]] | None = field(default=None, repr=False)

    def changed(self) -> None:
        """Forget what was resolved from the tables (called on every update; call it after
        editing ``jobs``/``slices``/``node_endpoints`` directly)."""
        self._ready.clear()
        self._by_service = None

    # ---- updates from watch events -----------------------------------------------------------

    def set_job(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        info = parse_job(obj)
        if info is None:
            return
        self.changed()
        if deleted:
            self.jobs.pop(info.key, None)
        else:
            self.jobs[info.key] = info

    def set_slice(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        parsed = parse_slice(obj)
        if parsed is None:
            return
        self.changed()
        namespace, name, service, endpoints = parsed
        if deleted:
            self.slices.pop((namespace, name), None)
        else:
            self.slices[(namespace, name)] = (service, endpoints)

    def set_node(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        self.changed()
        value = (meta.get("annotations") or {}).get(RUNTIME_ENDPOINT_ANNOTATION)
        if deleted or not value:
            self.node_endpoints.pop(str(name), None)
        else:
            self.node_endpoints[str(name)] = str(value)

    def replace(self, kind: str, objs: Iterable[Mapping[str, Any]]) -> None:
        """A fresh LIST of one kind replaces what was known of it."""
        self.changed()
        if kind == "jobs":
            self.jobs.clear()
            for o in objs:
                self.set_job(o)
        elif kind == "slices":
            self.slices.clear()
            for o in objs:
                self.set_slice(o)
        elif kind == "nodes":
            self.node_endpoints.clear()
            for o in objs:
                self.set_node(o)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    # ---- queries --------------------------------------------------------------------------------

    def job(self, namespace: str, name: str) -> JobInfo | None:
        return self.jobs.get((namespace, name))

    def jobs_in(self, namespace: str) -> list[JobInfo]:
        return sorted((j for j in self.jobs.values() if j.namespace == namespace), key=str)

    def dial_endpoint(self, node: str, address: str) -> str | None:
        """Where to dial a node's runtime (annotation, else address:8000) under the dial policy."""
        endpoint = self.node_endpoints.get(node) or format_host_port(
            address, self.runtime_http_port
        )
        try:
            host, _ = parse_host_port(endpoint)
        except EndpointError:
            return None
        return endpoint if dial_allowed(host, self.dial_networks) else None

    def endpoints(self, job: JobInfo) -> list[SliceEndpoint]:
        if self._by_service is None:
            index: dict[tuple[str, str], list[SliceEndpoint]] = {}
            for (namespace, _), (service, eps) in sorted(self.slices.items()):
                index.setdefault((namespace, service), []).extend(eps)
            self._by_service = index
        return list(self._by_service.get((job.namespace, job.service), ()))

    def ready_replicas(self, job: JobInfo) -> list[Replica]:
        """The job's ready endpoints that resolve to a runtime and a known variant (resolved
        once per change of the table, see ``_ready``)."""
        cached = self._ready.get(job.key)
        if cached is not None and cached[0] is job:
            return cached[1]
        replicas = self._resolve(job)
        self._ready[job.key] = (job, replicas)
        return replicas

    def _resolve(self, job: JobInfo) -> list[Replica]:
        replicas: list[Replica] = []
        for ep in self.endpoints(job):
            if not ep.ready:
                continue
            placed = job.placements.get(ep.node)
            if placed is None:
                continue
            variant, target = placed
            model = job.models.get(variant)
            endpoint = self.dial_endpoint(ep.node, ep.address)
            if model is None or endpoint is None:
                continue
            rate = job.rates.get(variant) or 1.0
            replicas.append(
                Replica(job.namespace, job.name, ep.node, endpoint, model, target, rate)
            )
        return replicas

    def pick(
        self, job: JobInfo, tokens: float, exclude: Iterable[tuple[str, str]] = ()
    ) -> Replica | None:
        """Least outstanding work weighted by tokens/s among ready replicas not excluded."""
        skip = set(exclude)
        best: tuple[float, int, str] | None = None
        chosen: Replica | None = None
        for r in self.ready_replicas(job):
            if r.key in skip:
                continue
            score = (self.outstanding.get(r.key, 0.0) + max(tokens, 1.0)) / r.tokens_per_second
            rank = (score, self.in_flight.get(r.key, 0), r.node)
            if best is None or rank < best:
                best, chosen = rank, r
        return chosen

    # ---- outstanding work -----------------------------------------------------------------------

    def begin(self, replica: Replica, tokens: float) -> None:
        key = replica.key
        self.outstanding[key] = self.outstanding.get(key, 0.0) + tokens
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def progress(self, replica: Replica, tokens: float) -> None:
        key = replica.key
        self.outstanding[key] = max(self.outstanding.get(key, 0.0) - tokens, 0.0)

    def end(self, replica: Replica, remaining: float) -> None:
        key = replica.key
        left = self.in_flight.get(key, 0) - 1
        if left <= 0:
            self.in_flight.pop(key, None)
            self.outstanding.pop(key, None)
        else:
            self.in_flight[key] = left
            self.outstanding[key] = max(self.outstanding.get(key, 0.0) - remaining, 0.0)
