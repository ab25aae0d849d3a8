"""The few direct Kubernetes API calls the controllers make (official client, run in threads).

kopf does the watching, except for Nodes (:meth:`KubeWriter.list_nodes`, the list and watch of
:mod:`tokenfleet.controllers.nodewatch`); the rest are writes: a job's status, its Service and
EndpointSlice. Each is a single request, run with :func:`asyncio.to_thread` so the event loop
never blocks, and counted in ``tokenfleet_api_writes_total``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from tokenfleet import GROUP, VERSION, metrics
from tokenfleet.clock import SYSTEM_CLOCK, Clock
from tokenfleet.controllers.settings import FIELD_MANAGER

MERGE_PATCH = "application/merge-patch+json"


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _count(resource: str, verb: str) -> None:
    metrics.API_WRITES.labels(resource=resource, verb=verb).inc()


def api_client() -> kubernetes.client.ApiClient:
    """A new ApiClient: in-cluster config when available, else $KUBECONFIG."""
    configuration = kubernetes.client.Configuration()
    config: Any = kubernetes.config  # type: ignore[attr-defined]
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(client_configuration=configuration)
    client: Any = kubernetes.client.ApiClient(configuration)
    client.user_agent = "tokenfleet-operator"
    return client  # type: ignore[no-any-return]


class KubeWriter:
    """The operator's one Kubernetes client for its own writes (built into the operator context;
    the ApiClient is made on first use: in-cluster config when available, else $KUBECONFIG)."""

    def __init__(
        self, clock: Clock = SYSTEM_CLOCK, client: kubernetes.client.ApiClient | None = None
    ) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._client: kubernetes.client.ApiClient | None = client

    def api_client(self) -> kubernetes.client.ApiClient:
        with self._lock:
            if self._client is None:
                self._client = api_client()
            return self._client

    def _api(self, cls: Any) -> Any:
        """An API class bound to the shared client, untyped: the stubs lack ``_content_type``
        and ``_preload_content`` (raw JSON avoids the client's slow model deserialisation)."""
        return cls(self.api_client())

    def list_nodes(self, **kwargs: Any) -> Any:
        """LIST Nodes, or WATCH them with ``watch=True`` (blocking: the node watch's thread
        calls it); the raw response, undecoded (``kwargs`` as for ``CoreV1Api.list_node``)."""
        kwargs.setdefault("_preload_content", False)
        return self._api(kubernetes.client.CoreV1Api).list_node(**kwargs)

    async def post_node_event(
        self, node: str, reason: str, message: str, type_: str = "Warning"
    ) -> None:
        """A core/v1 Event about a Node (where ``kubectl describe node`` finds it, see
        :mod:`tokenfleet.controllers.events`), for code outside a kopf handler's context (the
        planner), where ``kopf.event`` has no posting queue."""
        from tokenfleet.controllers.events import CLUSTER_EVENTS_NAMESPACE, cluster_event

        node_body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}
        instance = os.environ.get("POD_ID") or os.environ.get("HOSTNAME", "tokenfleet")
        now = self.clock.now()
        event = cluster_event(node_body, type_, reason, message, now=now, instance=instance)
        await self.create_event(CLUSTER_EVENTS_NAMESPACE, event)

    async def patch_job_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch ``status`` of an InferenceJob (the status subresource)."""

        def call() -> dict[str, Any]:
            api = self._api(kubernetes.client.CustomObjectsApi)
            result: dict[str, Any] = api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                "inferencejobs",
                name,
                {"status": status},
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
            )
            return result

        _count("inferencejobs/status", "patch")
        return await asyncio.to_thread(call)

    async def _read(
        self, read: Callable[..., Any], namespace: str, name: str
    ) -> dict[str, Any] | None:
        """GET one object; ``None`` when it does not exist."""

        def call() -> dict[str, Any] | None:
            try:
                return _json(read(name, namespace, _preload_content=False))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return await asyncio.to_thread(call)

    async def _create_or_patch(
        self,
        kind: str,
        create: Callable[..., Any],
        patch_fn: Callable[..., Any],
        body: dict[str, Any],
        patch: dict[str, Any],
        exists: bool,
    ) -> dict[str, Any]:
        """Create ``body`` (unless known to exist), else merge-patch it with ``patch``."""
        namespace = body["metadata"]["namespace"]
        name = body["metadata"]["name"]

        def call() -> dict[str, Any]:
            if not exists:
                try:
                    return _json(
                        create(namespace, body, field_manager=FIELD_MANAGER, _preload_content=False)
                    )
                except ApiException as exc:
                    if exc.status != 409:
                        raise
            return _json(
                patch_fn(
                    name,
                    namespace,
                    patch,
                    field_manager=FIELD_MANAGER,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
            )

        _count(kind, "patch" if exists else "create")
        return await asyncio.to_thread(call)

    async def read_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._read(
            self._api(kubernetes.client.CoreV1Api).read_namespaced_service, namespace, name
        )

    async def read_endpoint_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        api = self._api(kubernetes.client.DiscoveryV1Api)
        return await self._read(api.read_namespaced_endpoint_slice, namespace, name)

    async def apply_service(self, body: dict[str, Any], exists: bool) -> dict[str, Any]:
        """Create the Service, or patch its labels/ports/ownerReferences when it exists."""
        api = self._api(kubernetes.client.CoreV1Api)
        patch = {"metadata": body["metadata"], "spec": {"ports": body["spec"]["ports"]}}
        return await self._create_or_patch(
            "services",
            api.create_namespaced_service,
            api.patch_namespaced_service,
            body,
            patch,
            exists,
        )

    async def apply_endpoint_slice(self, body: dict[str, Any], exists: bool) -> dict[str, Any]:
        """Create the EndpointSlice, or replace its endpoints/ports/labels when it exists."""
        api = self._api(kubernetes.client.DiscoveryV1Api)
        patch = {
            "metadata": {
                "labels": body["metadata"]["labels"],
                "ownerReferences": body["metadata"]["ownerReferences"],
            },
            "ports": body["ports"],
            "endpoints": body["endpoints"],
        }
        return await self._create_or_patch(
            "endpointslices",
            api.create_namespaced_endpoint_slice,
            api.patch_namespaced_endpoint_slice,
            body,
            patch,
            exists,
        )

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """GET one Secret (a tank's Redfish credentials; the chart grants ``get`` on Secrets in the
        operator's own namespace only). ``None`` when it does not exist."""
        return await self._read(
            self._api(kubernetes.client.CoreV1Api).read_namespaced_secret, namespace, name
        )

    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one core/v1 Event (see :mod:`tokenfleet.controllers.events`)."""

        def call() -> dict[str, Any]:
            api = self._api(kubernetes.client.CoreV1Api)
            return _json(api.create_namespaced_event(namespace, body, _preload_content=False))

        _count("events", "create")
        return await asyncio.to_thread(call)
