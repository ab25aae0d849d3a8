"""Per-job Service + EndpointSlice builders (pure; plain dicts in, plain dicts out).

Each InferenceJob gets a selector-less ``Service`` (ports ``http`` 8000 and ``grpc`` 8001)
and one ``EndpointSlice`` that the operator owns, listing one endpoint per ready replica:
the runtime pod's IP on that node (never the ``tokenfleet.io/runtime-endpoint`` annotation —
the API server rejects loopback addresses in EndpointSlices). Both carry an owner reference
to the InferenceJob (controller) so deleting the job garbage-collects them.

Output is deterministic (endpoints sorted, dicts built in a fixed order), so the operator can
compare with :func:`needs_update` and skip no-op writes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenfleet.serving.endpoints import TRITON_GRPC_PORT, TRITON_HTTP_PORT
from tokenfleet.serving.errors import RoutingError

__all__ = [
    "ENDPOINTSLICE_MANAGED_BY",
    "JOB_API_VERSION",
    "JOB_KIND",
    "JOB_LABEL",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "MAX_ENDPOINTS_PER_SLICE",
    "ReadyReplica",
    "build_endpoint_slice",
    "build_service",
    "endpoint_slice_name",
    "job_owner_reference",
    "needs_update",
    "routing_labels",
    "service_name",
]

JOB_API_VERSION = "tokenfleet.io/v1alpha1"
JOB_KIND = "InferenceJob"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "tokenfleet"
JOB_LABEL = "tokenfleet.io/job"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ENDPOINTSLICE_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
ENDPOINTSLICE_MANAGED_BY = "operator.tokenfleet.io"  # a label value: no "/"
MAX_ENDPOINTS_PER_SLICE = 1000

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ReadyReplica:
    """One ready replica of a job: the runtime pod serving it and its node."""

    node_name: str
    pod_name: str
    pod_namespace: str
    pod_ip: str
    pod_uid: str | None = None
    #: leaving: listed as serving/terminating, not ready, so clients finish but start nothing
    draining: bool = False


def service_name(job_name: str) -> str:
    """The Service name for a job: the job name when it is a DNS-1035 label (≤ 63 chars),
    else a sanitised prefix plus an 8-hex hash of the job name (stable, ≤ 63 chars)."""
    if len(job_name) <= 63 and _DNS1035.match(job_name):
        return job_name
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-")
    cleaned = re.sub(r"^[^a-z]+", "", cleaned)[:50].rstrip("-")
    return f"{cleaned or 'job'}-{digest}"


def endpoint_slice_name(job_name: str) -> str:
    """Name of the operator-managed EndpointSlice of a job: ``<service>-tokenfleet``."""
    return f"{service_name(job_name)}-tokenfleet"


def routing_labels(job_name: str) -> dict[str, str]:
    """Labels on both objects: managed-by tokenfleet and ``tokenfleet.io/job: <job>``.

    Job names longer than 63 chars (not valid label values) are hashed as in
    :func:`service_name`.
    """
    value = job_name if len(job_name) <= 63 else service_name(job_name)
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, JOB_LABEL: value}


def _job_identity(job: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = job.get("metadata") or {}
    name, namespace, uid = meta.get("name"), meta.get("namespace"), meta.get("uid")
    if not name or not namespace or not uid:
        raise RoutingError("job needs metadata.name, metadata.namespace and metadata.uid")
    return str(name), str(namespace), str(uid)


def job_owner_reference(job: Mapping[str, Any]) -> dict[str, Any]:
    """Controller owner reference to the InferenceJob (``blockOwnerDeletion: true``)."""
    name, _, uid = _job_identity(job)
    return {
        "apiVersion": str(job.get("apiVersion") or JOB_API_VERSION),
        "kind": str(job.get("kind") or JOB_KIND),
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _ports(http_port: int, grpc_port: int) -> list[dict[str, Any]]:
    return [
        {"name": "http", "port": http_port, "protocol": "TCP"},
        {"name": "grpc", "port": grpc_port, "protocol": "TCP"},
    ]


def build_service(
    job: Mapping[str, Any],
    *,
    http_port: int = TRITON_HTTP_PORT,
    grpc_port: int = TRITON_GRPC_PORT,
) -> dict[str, Any]:
    """The job's selector-less ClusterIP Service (``job`` is the InferenceJob body).

    Ports ``http`` and ``grpc`` (the runtimes' ports, default 8000 and 8001; TCP, target = port);
    no selector, so Kubernetes leaves its endpoints to the operator's EndpointSlice.
    """
    name, namespace, _ = _job_identity(job)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name),
            "namespace": namespace,
            "labels": routing_labels(name),
            "ownerReferences": [job_owner_reference(job)],
        },
        "spec": {
            "type": "ClusterIP",
            "ports": [{**p, "targetPort": p["port"]} for p in _ports(http_port, grpc_port)],
        },
    }


def _check_ip(replica: ReadyReplica) -> str:
    try:
        ip = ipaddress.ip_address(replica.pod_ip)
    except ValueError as exc:
        raise RoutingError(
            f"replica on {replica.node_name!r}: bad pod IP {replica.pod_ip!r}"
        ) from exc
    if not isinstance(ip, ipaddress.IPv4Address):
        raise RoutingError(f"replica on {replica.node_name!r}: {ip} is not IPv4 (addressType IPv4)")
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        raise RoutingError(
            f"replica on {replica.node_name!r}: {ip} is loopback/link-local/multicast/unspecified;"
            " EndpointSlices take runtime pod IPs only"
        )
    return str(ip)


def build_endpoint_slice(
    job: Mapping[str, Any],
    replicas: Iterable[ReadyReplica],
    *,
    http_port: int = TRITON_HTTP_PORT,
    grpc_port: int = TRITON_GRPC_PORT,
) -> dict[str, Any]:
    """The job's EndpointSlice: one endpoint per replica, sorted by (node, IP, pod).

    A replica is ``ready`` (and ``serving``); a ``draining`` one is ``serving`` and
    ``terminating`` but not ready, the standard way to say "finish, start nothing new".
    Replicas with the same pod IP collapse into one endpoint (one runtime pod serves the node;
    a ready replica wins over a draining one).
    Raises :class:`RoutingError` for a non-IPv4, loopback, link-local, multicast or unspecified
    pod IP, or more than 1000 endpoints. An empty replica list gives ``endpoints: []``.
    """
    name, namespace, _ = _job_identity(job)
    by_ip: dict[str, ReadyReplica] = {}
    for replica in replicas:
        ip = _check_ip(replica)
        current = by_ip.get(ip)
        if current is None or (replica.draining, replica.node_name, replica.pod_name) < (
            current.draining,
            current.node_name,
            current.pod_name,
        ):
            by_ip[ip] = replica
    ordered = sorted(
        by_ip.items(),
        key=lambda kv: (kv[1].node_name, ipaddress.IPv4Address(kv[0]), kv[1].pod_name),
    )
    if len(ordered) > MAX_ENDPOINTS_PER_SLICE:
        raise RoutingError(
            f"job {name!r}: {len(ordered)} endpoints exceed {MAX_ENDPOINTS_PER_SLICE} per slice"
        )
    endpoints: list[dict[str, Any]] = []
    for ip, replica in ordered:
        target: dict[str, Any] = {
            "kind": "Pod",
            "namespace": replica.pod_namespace,
            "name": replica.pod_name,
        }
        if replica.pod_uid:
            target["uid"] = replica.pod_uid
        endpoints.append(
            {
                "addresses": [ip],
                "conditions": {
                    "ready": not replica.draining,
                    "serving": True,
                    "terminating": replica.draining,
                },
                "nodeName": replica.node_name,
                "targetRef": target,
            }
        )
    labels = routing_labels(name)
    labels[SERVICE_NAME_LABEL] = service_name(name)
    labels[ENDPOINTSLICE_MANAGED_BY_LABEL] = ENDPOINTSLICE_MANAGED_BY
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": endpoint_slice_name(name),
            "namespace": namespace,
            "labels": dict(sorted(labels.items())),
            "ownerReferences": [job_owner_reference(job)],
        },
        "addressType": "IPv4",
        "ports": _ports(http_port, grpc_port),
        "endpoints": endpoints,
    }


def _covers(live: Any, desired: Any) -> bool:
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(k in live and _covers(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(_covers(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def needs_update(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when ``live`` (the object read from the API server, or ``None``) does not already
    contain everything in ``desired`` (a builder's output).

    Dicts compare as "live ⊇ desired" (server-added fields such as ``clusterIP``,
    ``resourceVersion`` or defaulted keys are ignored); lists must match element-wise in order
    and length (so a removed endpoint is a change).
    """
    if live is None:
        return True
    for key in ("metadata", "spec", "addressType", "ports", "endpoints"):
        if key not in desired:
            continue
        want = desired[key]
        if key == "metadata":
            want = {k: want[k] for k in ("labels", "ownerReferences") if k in want}
        if key == "endpoints" and not want:
            if live.get("endpoints"):
                return True
            continue
        if not _covers(live.get(key), want):
            return True
    return False
