"""Serving: the Triton runtime client, runtime endpoint resolution and per-job routing.

Public API (import from the submodules or from here):

- :mod:`tokenfleet.serving.runtime`: ``TritonRuntime``, ``RuntimePool``, ``ModelState``,
  ``ModelStatus``, ``RuntimeMetrics``, ``parse_metrics``, ``default_metrics_url``;
- :mod:`tokenfleet.serving.endpoints`: ``parse_host_port``, ``dial_allowed``, ``parse_networks``,
  ``RUNTIME_ENDPOINT_ANNOTATION``;
- :mod:`tokenfleet.serving.routing`: ``build_service``, ``build_endpoint_slice``,
  ``ReadyReplica``, ``needs_update``, ``service_name``, ``endpoint_slice_name``;
- :mod:`tokenfleet.serving.errors`: ``ServingError`` and its subclasses.
"""

from tokenfleet.serving.endpoints import (
    RUNTIME_ENDPOINT_ANNOTATION,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
    dial_allowed,
    parse_host_port,
    parse_networks,
)
from tokenfleet.serving.errors import (
    EndpointError,
    InferenceFailed,
    ModelLoadFailed,
    ModelUnloadFailed,
    RoutingError,
    RuntimeUnavailable,
    ServingError,
    WaitTimeout,
)
from tokenfleet.serving.routing import (
    ReadyReplica,
    build_endpoint_slice,
    build_service,
    endpoint_slice_name,
    needs_update,
    service_name,
)
from tokenfleet.serving.runtime import (
    ModelState,
    ModelStatus,
    RuntimeMetrics,
    RuntimePool,
    TritonRuntime,
    parse_metrics,
)

__all__ = [
    "RUNTIME_ENDPOINT_ANNOTATION",
    "TRITON_GRPC_PORT",
    "TRITON_HTTP_PORT",
    "TRITON_METRICS_PORT",
    "EndpointError",
    "InferenceFailed",
    "ModelLoadFailed",
    "ModelState",
    "ModelStatus",
    "ModelUnloadFailed",
    "ReadyReplica",
    "RoutingError",
    "RuntimeMetrics",
    "RuntimePool",
    "RuntimeUnavailable",
    "ServingError",
    "TritonRuntime",
    "WaitTimeout",
    "build_endpoint_slice",
    "build_service",
    "dial_allowed",
    "endpoint_slice_name",
    "needs_update",
    "parse_host_port",
    "parse_metrics",
    "parse_networks",
    "service_name",
]
