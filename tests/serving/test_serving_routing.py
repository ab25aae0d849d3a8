"""Per-job Service and EndpointSlice builders (pure)."""

from __future__ import annotations

import copy
import dataclasses
import random
import re
from typing import Any

import pytest

from tokenfleet.serving import (
    ReadyReplica,
    RoutingError,
    build_endpoint_slice,
    build_service,
    endpoint_slice_name,
    needs_update,
    service_name,
)

JOB: dict[str, Any] = {
    "apiVersion": "tokenfleet.io/v1alpha1",
    "kind": "InferenceJob",
    "metadata": {"name": "chat", "namespace": "team-a", "uid": "uid-123", "generation": 4},
    "spec": {},
}
OWNER = {
    "apiVersion": "tokenfleet.io/v1alpha1",
    "kind": "InferenceJob",
    "name": "chat",
    "uid": "uid-123",
    "controller": True,
    "blockOwnerDeletion": True,
}


def _replica(node: str, ip: str, pod: str | None = None) -> ReadyReplica:
    return ReadyReplica(
        node_name=node,
        pod_name=pod or f"runtime-{node}",
        pod_namespace="tokenfleet",
        pod_ip=ip,
        pod_uid=f"uid-{node}",
    )


REPLICAS = [
    _replica("rack-2", "10.0.2.9"),
    _replica("ev-17", "10.0.7.3"),
    _replica("rack-10", "10.0.1.4"),
]


def test_service_shape() -> None:
    svc = build_service(JOB)
    assert svc == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "chat",
            "namespace": "team-a",
            "labels": {"app.kubernetes.io/managed-by": "tokenfleet", "tokenfleet.io/job": "chat"},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "type": "ClusterIP",
            "ports": [
                {"name": "http", "port": 8000, "protocol": "TCP", "targetPort": 8000},
                {"name": "grpc", "port": 8001, "protocol": "TCP", "targetPort": 8001},
            ],
        },
    }
    assert "selector" not in svc["spec"]


def test_endpoint_slice_shape_and_order() -> None:
    es = build_endpoint_slice(JOB, REPLICAS)
    assert es["apiVersion"] == "discovery.k8s.io/v1"
    assert es["kind"] == "EndpointSlice"
    assert es["metadata"]["name"] == endpoint_slice_name("chat") == "chat-tokenfleet"
    assert es["metadata"]["namespace"] == "team-a"
    assert es["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "tokenfleet",
        "endpointslice.kubernetes.io/managed-by": "operator.tokenfleet.io",
        "kubernetes.io/service-name": "chat",
        "tokenfleet.io/job": "chat",
    }
    assert es["metadata"]["ownerReferences"] == [OWNER]
    assert es["addressType"] == "IPv4"
    assert es["ports"] == [
        {"name": "http", "port": 8000, "protocol": "TCP"},
        {"name": "grpc", "port": 8001, "protocol": "TCP"},
    ]
    assert [e["nodeName"] for e in es["endpoints"]] == ["ev-17", "rack-10", "rack-2"]
    assert es["endpoints"][0] == {
        "addresses": ["10.0.7.3"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": "ev-17",
        "targetRef": {
            "kind": "Pod",
            "namespace": "tokenfleet",
            "name": "runtime-ev-17",
            "uid": "uid-ev-17",
        },
    }


def test_output_is_deterministic_regardless_of_input_order() -> None:
    expected = build_endpoint_slice(JOB, REPLICAS)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = REPLICAS[:]
        rng.shuffle(shuffled)
        assert build_endpoint_slice(JOB, shuffled) == expected
    assert build_service(JOB) == build_service(copy.deepcopy(JOB))


def test_duplicate_pod_ip_collapses_and_empty_is_empty() -> None:
    dup = [*REPLICAS, _replica("rack-2", "10.0.2.9")]
    assert build_endpoint_slice(JOB, dup) == build_endpoint_slice(JOB, REPLICAS)
    assert build_endpoint_slice(JOB, [])["endpoints"] == []


def test_draining_replicas_are_serving_terminating_not_ready() -> None:
    leaving = dataclasses.replace(_replica("ev-9", "10.0.9.9"), draining=True)
    eps = build_endpoint_slice(JOB, [*REPLICAS, leaving])["endpoints"]
    conditions = {e["nodeName"]: e["conditions"] for e in eps}
    assert conditions["ev-9"] == {"ready": False, "serving": True, "terminating": True}
    assert conditions["rack-2"] == {"ready": True, "serving": True, "terminating": False}
    # a ready replica and a draining one on the same runtime pod: the endpoint stays ready
    same_pod = dataclasses.replace(REPLICAS[0], draining=True)
    both = build_endpoint_slice(JOB, [same_pod, *REPLICAS])
    assert both == build_endpoint_slice(JOB, REPLICAS)
    # a drain is a change the operator writes
    assert needs_update(
        build_endpoint_slice(JOB, REPLICAS),
        build_endpoint_slice(JOB, [dataclasses.replace(r, draining=True) for r in REPLICAS]),
    )


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "127.9.9.9", "169.254.1.1", "224.0.0.1", "0.0.0.0", "::1", "fd00::1", "x"]
)
def test_addresses_the_api_server_rejects_are_refused(ip: str) -> None:
    with pytest.raises(RoutingError):
        build_endpoint_slice(JOB, [_replica("n1", ip)])


def test_job_identity_required() -> None:
    with pytest.raises(RoutingError, match=r"metadata\.uid"):
        build_service({"metadata": {"name": "x", "namespace": "y"}})


def test_long_or_odd_job_names_give_valid_service_names() -> None:
    assert service_name("chat-7") == "chat-7"
    for job in ["a" * 80, "7b.chat.model", "llm.v2", "x" * 63 + ".y"]:
        name = service_name(job)
        assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
        assert service_name(job) == name
    assert service_name("a" * 80) != service_name("a" * 81)
    long_job = {**JOB, "metadata": {**JOB["metadata"], "name": "b" * 100}}
    es = build_endpoint_slice(long_job, REPLICAS)
    assert all(len(v) <= 63 for v in es["metadata"]["labels"].values())


def _as_live(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns: server-set fields added."""
    live = copy.deepcopy(obj)
    live["metadata"].update(
        resourceVersion="42", uid="svc-uid", creationTimestamp="2026-01-01T00:00:00Z"
    )
    live["metadata"]["labels"]["extra"] = "kept"
    if live["kind"] == "Service":
        live["spec"].update(clusterIP="10.96.0.12", sessionAffinity="None")
    return live


def test_needs_update() -> None:
    svc, es = build_service(JOB), build_endpoint_slice(JOB, REPLICAS)
    assert needs_update(None, svc)
    assert not needs_update(_as_live(svc), svc)
    assert not needs_update(_as_live(es), es)
    assert needs_update(_as_live(es), build_endpoint_slice(JOB, REPLICAS[:2]))
    assert needs_update(
        _as_live(es), build_endpoint_slice(JOB, [*REPLICAS, _replica("n", "10.9.9.9")])
    )
    moved = [_replica("rack-2", "10.0.2.10"), *REPLICAS[1:]]
    assert needs_update(_as_live(es), build_endpoint_slice(JOB, moved))
    empty = build_endpoint_slice(JOB, [])
    assert needs_update(_as_live(es), empty)
    assert not needs_update(_as_live(empty), empty)
    live_null = _as_live(empty)
    live_null["endpoints"] = None  # the API server drops an empty list
    assert not needs_update(live_null, empty)
    relabelled = _as_live(svc)
    relabelled["metadata"]["labels"]["tokenfleet.io/job"] = "other"
    assert needs_update(relabelled, svc)
    unowned = _as_live(svc)
    unowned["metadata"]["ownerReferences"] = []
    assert needs_update(unowned, svc)


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@pytest.mark.parametrize("job_name", ["chat", "b" * 100, "llm.v2"])
def test_labels_pass_kubernetes_validation(job_name: str) -> None:
    # The API server's own rules (a "/" in a label value once slipped through: caught by a
    # server-side dry run against the local kube-apiserver, which both objects now pass).
    job = {**JOB, "metadata": {**JOB["metadata"], "name": job_name}}
    for obj in (build_service(job), build_endpoint_slice(job, REPLICAS)):
        for key, value in obj["metadata"]["labels"].items():
            prefix, _, name = key.rpartition("/")
            assert len(name) <= 63 and _LABEL_NAME.match(name), key
            assert len(prefix) <= 253, key
            assert len(value) <= 63 and _LABEL_VALUE.match(value), (key, value)
        limit = 63 if obj["kind"] == "Service" else 253  # DNS-1035 label / DNS subdomain
        assert len(obj["metadata"]["name"]) <= limit


def test_service_and_slice_carry_the_configured_runtime_ports() -> None:
    svc = build_service(JOB, http_port=9000, grpc_port=9001)
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 9000, 9000),
        ("grpc", 9001, 9001),
    ]
    es = build_endpoint_slice(JOB, REPLICAS, http_port=9000, grpc_port=9001)
    assert [(p["name"], p["port"]) for p in es["ports"]] == [("http", 9000), ("grpc", 9001)]
