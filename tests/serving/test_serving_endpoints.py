"""Runtime endpoint resolution (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tokenfleet.serving import (
    RUNTIME_ENDPOINT_ANNOTATION,
    EndpointError,
    parse_host_port,
    pick_runtime_pod,
    resolve_runtime_endpoint,
)
from tokenfleet.serving.endpoints import format_host_port


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("10.244.3.7:1", ("10.244.3.7", 1)),
        ("triton.node-a.svc:65535", ("triton.node-a.svc", 65535)),
        ("localhost:8000", ("localhost", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("[fd00::5]:9000", ("fd00::5", 9000)),
    ],
)
def test_parse_host_port_accepts(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected
    assert format_host_port(*expected) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        " 127.0.0.1:8000",
        "127.0.0.1:8000 ",
        "127.0.0.1",
        ":8000",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:+80",
        "127.0.0.1:80x",
        "127.0.0.1:-1",
        "127.0.0.1:123456",
        "300.1.1.1:8000",
        "1.2.3:8000",
        "http://127.0.0.1:8000",
        "127.0.0.1:8000/v2",
        "user@127.0.0.1:8000",
        "::1:8000",
        "[::1]8000",
        "[nothex]:8000",
        "bad_host:8000",
        "-bad.example:8000",
        "a..b:8000",
        "a b:8000",
        "127.0.0.1:8000\n",
    ],
)
def test_parse_host_port_rejects_garbage(value: str) -> None:
    with pytest.raises(EndpointError):
        parse_host_port(value)


def test_parse_host_port_rejects_non_strings() -> None:
    with pytest.raises(EndpointError, match="must be a string"):
        parse_host_port(8000)  # type: ignore[arg-type]


def _node(name: str = "node-a", annotation: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": {"other": "x"}}
    if annotation is not None:
        meta["annotations"][RUNTIME_ENDPOINT_ANNOTATION] = annotation
    return {"metadata": meta}


def _pod(
    name: str,
    node: str = "node-a",
    ip: str | None = "10.1.0.5",
    ready: bool = True,
    created: str = "2026-01-01T00:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "tokenfleet", "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "spec": {"nodeName": node}, "status": status}


def test_annotation_wins_over_pod() -> None:
    ep = resolve_runtime_endpoint(_node(annotation="127.0.0.1:41000"), _pod("rt-1"))
    assert ep is not None
    assert ep.source == "annotation"
    assert ep.address == "127.0.0.1:41000"
    assert ep.metrics_url == "http://127.0.0.1:41002/metrics"
    assert ep.pod_name is None


def test_garbage_annotation_is_an_error_naming_the_node() -> None:
    with pytest.raises(
        EndpointError, match=r"node 'node-a' annotation tokenfleet\.io/runtime-endp"
    ):
        resolve_runtime_endpoint(_node(annotation="http://10.0.0.1:8000"), _pod("rt-1"))


def test_pod_ip_with_triton_http_port() -> None:
    ep = resolve_runtime_endpoint(_node(), _pod("rt-1", ip="10.1.0.5"))
    assert ep is not None
    assert (ep.source, ep.address, ep.pod_name, ep.pod_namespace) == (
        "pod",
        "10.1.0.5:8000",
        "rt-1",
        "tokenfleet",
    )
    assert ep.metrics_url == "http://10.1.0.5:8002/metrics"
    custom = resolve_runtime_endpoint(_node(), _pod("rt-1"), port=9000)
    assert custom is not None and custom.address == "10.1.0.5:9000"


def test_no_runtime_yet_is_none() -> None:
    assert resolve_runtime_endpoint(_node()) is None
    assert resolve_runtime_endpoint({}) is None
    assert resolve_runtime_endpoint(_node(), _pod("rt-1", ip=None)) is None


def test_pod_on_another_node_or_bad_ip_is_an_error() -> None:
    with pytest.raises(EndpointError, match="runs on 'node-b'"):
        resolve_runtime_endpoint(_node(), _pod("rt-1", node="node-b"))
    with pytest.raises(EndpointError, match="bad podIP"):
        resolve_runtime_endpoint(_node(), _pod("rt-1", ip="10.1.0.300"))


def test_pick_runtime_pod_prefers_ready_then_newest() -> None:
    pods = [
        _pod("old-ready", created="2026-01-01T00:00:00Z"),
        _pod("new-unready", created="2026-01-03T00:00:00Z", ready=False),
        _pod("new-ready", created="2026-01-02T00:00:00Z"),
        _pod("terminating", created="2026-01-04T00:00:00Z", deleting=True),
        _pod("other-node", node="node-b", created="2026-01-05T00:00:00Z"),
        _pod("no-ip", ip=None, created="2026-01-06T00:00:00Z"),
    ]
    chosen = pick_runtime_pod("node-a", pods)
    assert chosen is not None and chosen["metadata"]["name"] == "new-ready"
    assert pick_runtime_pod("node-a", list(reversed(pods))) is chosen
    only_unready = pick_runtime_pod("node-a", [pods[1], pods[3]])
    assert only_unready is not None and only_unready["metadata"]["name"] == "new-unready"
    assert pick_runtime_pod("node-c", pods) is None
