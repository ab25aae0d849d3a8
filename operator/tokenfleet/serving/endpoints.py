"""Where a node's Triton runtime listens (pure functions over plain Kubernetes dicts).

Resolution order for control traffic (load/unload/health/metrics):

1. the node annotation ``tokenfleet.io/runtime-endpoint: HOST:PORT`` (Triton's HTTP port) —
   it wins; used behind NAT/VPN and by the local fleet on 127.0.0.1. A malformed value is an
   error (:class:`~tokenfleet.serving.errors.EndpointError`), never silently skipped;
2. else the runtime pod on that node: ``status.podIP`` with Triton's HTTP port (8000).

Objects are wire-format dicts (camelCase keys), as kopf hands them over.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tokenfleet.serving.errors import EndpointError

__all__ = [
    "RUNTIME_ENDPOINT_ANNOTATION",
    "TRITON_GRPC_PORT",
    "TRITON_HTTP_PORT",
    "TRITON_METRICS_PORT",
    "RuntimeEndpoint",
    "format_host_port",
    "parse_host_port",
    "pick_runtime_pod",
    "pod_is_ready",
    "resolve_runtime_endpoint",
]

RUNTIME_ENDPOINT_ANNOTATION = "tokenfleet.io/runtime-endpoint"
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")


def parse_host_port(value: str) -> tuple[str, int]:
    """Strictly parse ``HOST:PORT`` and return ``(host, port)``.

    HOST is an IPv4 address, a bracketed IPv6 address (``[::1]:8000``, returned without
    brackets) or an RFC 1123 DNS name (≤ 253 chars). PORT is 1-65535 in plain decimal digits.
    No scheme, path, userinfo, whitespace or empty parts. Raises :class:`EndpointError`.
    """
    if not isinstance(value, str):
        raise EndpointError(
            f"runtime endpoint must be a string HOST:PORT, got {type(value).__name__}"
        )
    if value != value.strip() or not value or any(c.isspace() for c in value):
        raise EndpointError(f"runtime endpoint {value!r}: whitespace or empty, want HOST:PORT")
    if "/" in value or "@" in value or "?" in value or "#" in value:
        raise EndpointError(f"runtime endpoint {value!r}: want HOST:PORT (no scheme, path or user)")
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise EndpointError(f"runtime endpoint {value!r}: want [IPv6]:PORT")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise EndpointError(f"runtime endpoint {value!r}: bad IPv6 address {host!r}") from exc
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise EndpointError(f"runtime endpoint {value!r}: want HOST:PORT")
        if ":" in host:
            raise EndpointError(f"runtime endpoint {value!r}: bracket IPv6 hosts as [addr]:PORT")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError as exc:
                raise EndpointError(
                    f"runtime endpoint {value!r}: bad IPv4 address {host!r}"
                ) from exc
        elif len(host) > 253 or not _HOSTNAME_RE.match(host):
            raise EndpointError(f"runtime endpoint {value!r}: bad host name {host!r}")
    if not _PORT_RE.match(port_text):
        raise EndpointError(f"runtime endpoint {value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise EndpointError(f"runtime endpoint {value!r}: port {port} out of range 1-65535")
    return host, port


def format_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, bracketing IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class RuntimeEndpoint:
    """A resolved runtime address.

    ``source`` says where it came from: ``"annotation"`` (the node annotation) or ``"pod"``
    (the runtime pod's IP; ``pod_name``/``pod_namespace`` set).
    """

    host: str
    port: int
    source: Literal["annotation", "pod"]
    pod_name: str | None = None
    pod_namespace: str | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` of Triton's HTTP port (what :class:`TritonRuntime` takes)."""
        return format_host_port(self.host, self.port)

    @property
    def metrics_url(self) -> str:
        """Triton's metrics URL by the HTTP+2 convention (8000 -> 8002)."""
        return f"http://{format_host_port(self.host, self.port + 2)}/metrics"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata") or {}
    return meta if isinstance(meta, Mapping) else {}


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Pod is Running, not terminating, has a podIP and its ``Ready`` condition is True."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    if _meta(pod).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def pick_runtime_pod(node_name: str, pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The runtime pod to use on ``node_name`` among ``pods`` (already filtered to runtime pods).

    Only pods with ``spec.nodeName == node_name``, a ``status.podIP`` and no deletion
    timestamp count; ready ones win, then the newest ``creationTimestamp``, then the name
    (deterministic). ``None`` if there is none.
    """
    candidates = [
        p
        for p in pods
        if (p.get("spec") or {}).get("nodeName") == node_name
        and (p.get("status") or {}).get("podIP")
        and not _meta(p).get("deletionTimestamp")
    ]
    if not candidates:
        return None

    def key(p: Mapping[str, Any]) -> tuple[bool, str, str]:
        meta = _meta(p)
        return (
            pod_is_ready(p),
            str(meta.get("creationTimestamp") or ""),
            str(meta.get("name") or ""),
        )

    return max(candidates, key=key)


def resolve_runtime_endpoint(
    node: Mapping[str, Any],
    runtime_pod: Mapping[str, Any] | None = None,
    *,
    port: int = TRITON_HTTP_PORT,
) -> RuntimeEndpoint | None:
    """Resolve the runtime control endpoint of ``node`` (a Node dict).

    The annotation ``tokenfleet.io/runtime-endpoint`` wins (parsed strictly; a malformed value
    raises :class:`EndpointError`). Otherwise ``runtime_pod`` (the runtime pod on that node,
    e.g. from :func:`pick_runtime_pod`) gives ``status.podIP``:``port``; a pod bound to another
    node or a malformed podIP raises :class:`EndpointError`. Returns ``None`` when neither is
    available (no runtime yet on that node).
    """
    node_meta = _meta(node)
    annotations = node_meta.get("annotations") or {}
    raw = annotations.get(RUNTIME_ENDPOINT_ANNOTATION)
    node_name = str(node_meta.get("name") or "")
    if raw is not None:
        try:
            host, ann_port = parse_host_port(raw)
        except EndpointError as exc:
            raise EndpointError(
                f"node {node_name!r} annotation {RUNTIME_ENDPOINT_ANNOTATION}: {exc}"
            ) from exc
        return RuntimeEndpoint(host, ann_port, "annotation")
    if runtime_pod is None:
        return None
    pod_meta = _meta(runtime_pod)
    pod_node = (runtime_pod.get("spec") or {}).get("nodeName")
    if pod_node is not None and node_name and pod_node != node_name:
        raise EndpointError(
            f"runtime pod {pod_meta.get('name')!r} runs on {pod_node!r}, not on node {node_name!r}"
        )
    pod_ip = (runtime_pod.get("status") or {}).get("podIP")
    if not pod_ip:
        return None
    try:
        ip = ipaddress.ip_address(str(pod_ip))
    except ValueError as exc:
        raise EndpointError(f"runtime pod {pod_meta.get('name')!r}: bad podIP {pod_ip!r}") from exc
    if not 1 <= port <= 65535:
        raise EndpointError(f"port {port} out of range 1-65535")
    return RuntimeEndpoint(
        str(ip),
        port,
        "pod",
        pod_name=str(pod_meta.get("name")) if pod_meta.get("name") else None,
        pod_namespace=str(pod_meta.get("namespace")) if pod_meta.get("namespace") else None,
    )
