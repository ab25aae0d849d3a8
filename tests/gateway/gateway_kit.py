"""Helpers of the gateway tests: the Kubernetes dicts the gateway's watches deliver (plain data,
as the API server returns it) and a handle on a running gateway."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from e2e.runtime import TritonFleet

from tokenfleet.gateway.keys import API_KEY_LABEL, RATE_ANNOTATION, KeyStore
from tokenfleet.gateway.server import Gateway
from tokenfleet.gateway.table import RoutingTable
from tokenfleet.serving.endpoints import RUNTIME_ENDPOINT_ANNOTATION

MODELS = ("gwllama-fp16", "gwllama-int4")
NAMESPACE = "team-a"
KEY = "sk-team-a-0123456789"
OTHER_KEY = "sk-team-b-0123456789"


def job_dict(
    name: str, namespace: str, placements: list[tuple[str, str, str]], model: str = "gwllama"
) -> dict[str, Any]:
    """An InferenceJob as the API server returns it; placements are (node, variant, target)."""
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "model": {"name": model},
            "variants": [
                {"name": "fp16", "tokensPerSecond": 400},
                {"name": "int4", "tokensPerSecond": 100},
            ],
        },
        "status": {
            "serviceName": name,
            "placements": [
                {"node": n, "variant": v, "target": t, "state": "Loaded"} for n, v, t in placements
            ],
        },
    }


def slice_dict(job: str, namespace: str, endpoints: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """The operator's EndpointSlice; endpoints are (node, pod IP, ready)."""
    return {
        "metadata": {
            "name": f"{job}-tokenfleet",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": job},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "nodeName": node,
                "conditions": {"ready": ready, "serving": True, "terminating": not ready},
            }
            for node, ip, ready in endpoints
        ],
    }


def node_dict(name: str, endpoint: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {RUNTIME_ENDPOINT_ANNOTATION: endpoint}}}


def secret_dict(name: str, namespace: str, key: str, rate: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {API_KEY_LABEL: "true"}}
    if rate is not None:
        meta["annotations"] = {RATE_ANNOTATION: str(rate)}
    return {"metadata": meta, "data": {"key": base64.b64encode(key.encode()).decode()}}


@dataclass
class GatewayUnderTest:
    gateway: Gateway
    table: RoutingTable
    keys: KeyStore
    url: str
    fleet: TritonFleet

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client import generate_latest
        from prometheus_client.parser import text_string_to_metric_families

        text = generate_latest(self.gateway.metrics.registry).decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total
