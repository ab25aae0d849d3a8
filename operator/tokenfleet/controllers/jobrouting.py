"""A job's Service and EndpointSlice: where gateways find its replicas.

The job's worker calls :meth:`JobRouting.publish` after each step that changes its record: the
selector-less Service and the EndpointSlice listing every Loaded replica as ready and every
Unloading one as draining (``serving``/``terminating``, not ``ready``), each written only when it
changed (the live objects are read once, then tracked).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, Final

import kopf

from tokenfleet import GROUP, VERSION
from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.kube import KubeWriter
from tokenfleet.controllers.replicas import ROUTED, UNLOADING, Replica
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.serving.errors import RoutingError
from tokenfleet.serving.routing import (
    ReadyReplica,
    build_endpoint_slice,
    build_service,
    needs_update,
    service_name,
)

KIND: Final = "InferenceJob"


def ready_replicas(record: Iterable[Replica], fleet: FleetView) -> list[ReadyReplica]:
    """Loaded replicas (ready) and Unloading ones (draining) with a routable runtime pod."""
    ready: list[ReadyReplica] = []
    for e in record:
        if e.state not in ROUTED:
            continue
        pod = fleet.runtime_pod(e.node)
        if pod is None or not pod.pod_ip:
            continue
        try:
            ip = ipaddress.ip_address(pod.pod_ip)
        except ValueError:
            continue
        if not isinstance(ip, ipaddress.IPv4Address) or ip.is_loopback or ip.is_link_local:
            continue
        draining = e.state is UNLOADING
        ready.append(ReadyReplica(e.node, pod.name, pod.namespace, str(ip), None, draining))
    return ready


class JobRouting:
    """One job's Service and EndpointSlice, as last written."""

    def __init__(
        self,
        kube: KubeWriter,
        config: OperatorConfig,
        body: kopf.Body,
        namespace: str,
        name: str,
    ) -> None:
        self.kube = kube
        self.config = config
        self.body = body
        self.namespace = namespace
        self.name = name
        self.live_service: dict[str, Any] | None = None
        self.live_slice: dict[str, Any] | None = None
        self.loaded = False

    def forget_live(self) -> None:
        """Read the live objects again before the next write (after a failed one)."""
        self.loaded = False

    def _job_ref(self) -> dict[str, Any]:
        meta = self.body.get("metadata") or {}
        return {
            "apiVersion": self.body.get("apiVersion") or f"{GROUP}/{VERSION}",
            "kind": self.body.get("kind") or KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": meta.get("uid")},
        }

    async def publish(
        self,
        record: Iterable[Replica],
        fleet: FleetView,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        ref = self._job_ref()
        if not self.loaded:
            svc_name = service_name(self.name)
            self.live_service = await self.kube.read_service(self.namespace, svc_name)
            self.live_slice = await self.kube.read_endpoint_slice(
                self.namespace, f"{svc_name}-tokenfleet"
            )
            self.loaded = True
        ports = {
            "http_port": self.config.runtime_http_port,
            "grpc_port": self.config.runtime_grpc_port,
        }
        service = build_service(ref, **ports)
        if needs_update(self.live_service, service):
            self.live_service = await self.kube.apply_service(
                service, self.live_service is not None
            )
        try:
            eps = build_endpoint_slice(ref, ready_replicas(record, fleet), **ports)
        except RoutingError as exc:
            logger.warning("EndpointSlice not built: %s", exc)
            return
        if needs_update(self.live_slice, eps):
            self.live_slice = await self.kube.apply_endpoint_slice(eps, self.live_slice is not None)
