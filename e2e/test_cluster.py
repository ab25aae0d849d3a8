"""The local control plane itself: real API server, scheduler, KCM and kwok; CRDs with CEL rules."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster.fleet import (
    COMPONENTS,
    POD_CIDR,
    POOL_LABEL,
    REGION_LABEL,
    REPO,
    ROLE_LABEL,
    TANK_LABEL,
    TELEMETRY_KEYS,
    TELEMETRY_PREFIX,
    VEHICLE_TAINT_KEY,
    Fleet,
    _pid_alive,
    _port_listening,
    versions,
)

CRD_DIR = REPO / "crds"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)


def in_pod_cidr(ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(POD_CIDR)


def test_server_and_client_report_pinned_version(fleet: Fleet) -> None:
    out = json.loads(fleet.kubectl("version", "-o", "json").stdout)
    pinned = versions()["K8S_VERSION"]
    assert out["serverVersion"]["gitVersion"] == pinned
    assert out["clientVersion"]["gitVersion"] == pinned


def test_fleet_nodes_ready_with_contract_labels_taints_and_telemetry(fleet: Fleet) -> None:
    nodes = fleet.core_v1().list_node(label_selector="type=kwok").items
    vehicles = [n for n in nodes if n.metadata.labels.get(ROLE_LABEL) == "vehicle"]
    racks = [n for n in nodes if n.metadata.labels.get(ROLE_LABEL) == "rack"]
    assert len(vehicles) >= fleet.vehicles and len(racks) >= fleet.racks
    assert {v.metadata.labels[POOL_LABEL] for v in vehicles} >= {
        fleet.pool_name(i) for i in range(fleet.pools)
    }
    assert {r.metadata.labels[TANK_LABEL] for r in racks} >= {
        fleet.tank_name(i) for i in range(fleet.tanks)
    }
    for node in nodes:
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name
        assert REGION_LABEL in node.metadata.labels
    for vehicle in vehicles:
        taints = [(t.key, t.value, t.effect) for t in vehicle.spec.taints or []]
        assert (VEHICLE_TAINT_KEY, "true", "NoSchedule") in taints
        annotations = vehicle.metadata.annotations
        assert all(TELEMETRY_PREFIX + key in annotations for key in TELEMETRY_KEYS)
        assert 0 <= float(annotations[TELEMETRY_PREFIX + "soc-percent"]) <= 100
        assert annotations[TELEMETRY_PREFIX + "observed-at"].endswith("Z")
    for rack in racks:
        assert not [t for t in rack.spec.taints or [] if t.key == VEHICLE_TAINT_KEY]
        assert rack.status.allocatable["memory"].endswith("Gi")
    plugged = [
        v for v in vehicles if v.metadata.annotations[TELEMETRY_PREFIX + "plugged-in"] == "true"
    ]
    assert len(plugged) > len(vehicles) / 2


def _pods(fleet: Fleet, namespace: str, selector: str) -> list[Any]:
    return list(fleet.core_v1().list_namespaced_pod(namespace, label_selector=selector).items)


def test_deployment_lands_on_rack_nodes_only(fleet: Fleet, namespace: str) -> None:
    replicas = 8
    deployment: Any = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]},
            },
        },
    }
    client.AppsV1Api(fleet.api_client()).create_namespaced_deployment(namespace, deployment)

    def all_running() -> bool:
        pods = _pods(fleet, namespace, "app=web")
        return len(pods) == replicas and all(
            p.status.phase == "Running" and p.status.pod_ip for p in pods
        )

    wait_for(all_running, 60, f"{replicas} pods Running")
    nodes = {n.metadata.name: n for n in fleet.core_v1().list_node().items}
    for pod in _pods(fleet, namespace, "app=web"):
        node = nodes[pod.spec.node_name]
        assert node.metadata.labels[ROLE_LABEL] == "rack", pod.spec.node_name
        assert in_pod_cidr(pod.status.pod_ip)


def test_daemonset_tolerating_vehicle_taint_runs_on_vehicles_and_racks(
    fleet: Fleet, namespace: str
) -> None:
    """What the operator's runtime DaemonSet needs: kwok runs pods on both kinds of node."""
    mark = f"ds-{uuid.uuid4().hex[:6]}"
    names = [f"{mark}-veh-0", f"{mark}-veh-1", f"{mark}-rack-0"]
    fleet.add_vehicle(names[0], labels={"e2e/ds": mark})
    fleet.add_vehicle(names[1], labels={"e2e/ds": mark}, telemetry={"plugged-in": "false"})
    fleet.add_rack(names[2], labels={"e2e/ds": mark})
    daemonset: Any = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "runtime"},
        "spec": {
            "selector": {"matchLabels": {"app": "runtime"}},
            "template": {
                "metadata": {"labels": {"app": "runtime"}},
                "spec": {
                    "nodeSelector": {"e2e/ds": mark},
                    "tolerations": [
                        {"key": VEHICLE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [{"name": "triton", "image": "example.invalid/triton:1"}],
                },
            },
        },
    }
    try:
        client.AppsV1Api(fleet.api_client()).create_namespaced_daemon_set(namespace, daemonset)

        def all_running() -> bool:
            pods = _pods(fleet, namespace, "app=runtime")
            return len(pods) == 3 and all(
                p.status.phase == "Running" and p.status.pod_ip for p in pods
            )

        wait_for(all_running, 60, "3 DaemonSet pods Running")
        pods = _pods(fleet, namespace, "app=runtime")
        assert sorted(p.spec.node_name for p in pods) == sorted(names)
        assert all(in_pod_cidr(p.status.pod_ip) for p in pods)
        assert len({p.status.pod_ip for p in pods}) == 3
    finally:
        for name in names:
            fleet.remove_node(name)


def test_add_patch_and_remove_vehicle(fleet: Fleet) -> None:
    name = f"vehicle-e2e-{uuid.uuid4().hex[:6]}"
    spec = fleet.add_vehicle(
        name, pool="pool-e2e", telemetry={"soc-percent": "12.5"}, annotations={"x/y": "z"}
    )
    node = fleet.core_v1().read_node(name)
    assert node.metadata.labels[POOL_LABEL] == "pool-e2e"
    assert node.metadata.annotations[TELEMETRY_PREFIX + "soc-percent"] == "12.5"
    assert node.metadata.annotations["x/y"] == "z"
    assert spec.annotations[TELEMETRY_PREFIX + "soc-percent"] == "12.5"

    fleet.set_telemetry(name, soc_percent="80", plugged_in="false")
    node = fleet.core_v1().read_node(name)
    assert node.metadata.annotations[TELEMETRY_PREFIX + "soc-percent"] == "80"
    assert node.metadata.annotations[TELEMETRY_PREFIX + "plugged-in"] == "false"
    fleet.patch_node(name, annotations={"x/y": None})
    assert "x/y" not in fleet.core_v1().read_node(name).metadata.annotations

    fleet.remove_node(name)
    with pytest.raises(ApiException) as exc:
        fleet.core_v1().read_node(name)
    assert exc.value.status == 404


def _apply_crd(fleet: Fleet, manifest: Any) -> None:
    ext = client.ApiextensionsV1Api(fleet.api_client())
    try:
        ext.create_custom_resource_definition(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
    name = manifest["metadata"]["name"]

    def established() -> bool:
        crd = ext.read_custom_resource_definition(name)
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, 30, f"CRD {name} Established")


def test_api_server_enforces_cel_rule_of_a_crd(fleet: Fleet, namespace: str) -> None:
    """Self-contained: proves the real API server evaluates x-kubernetes-validations."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "celchecks.e2e.tokenfleet.io"},
        "spec": {
            "group": "e2e.tokenfleet.io",
            "scope": "Namespaced",
            "names": {"plural": "celchecks", "singular": "celcheck", "kind": "CelCheck"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.min <= self.max",
                                            "message": "min must not exceed max",
                                            "fieldPath": ".min",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    _apply_crd(fleet, crd)
    objects = client.CustomObjectsApi(fleet.api_client())

    def create(lo: int, hi: int) -> Any:
        body = {
            "apiVersion": "e2e.tokenfleet.io/v1",
            "kind": "CelCheck",
            "metadata": {"name": f"c-{lo}-{hi}"},
            "spec": {"min": lo, "max": hi},
        }
        return objects.create_namespaced_custom_object(
            "e2e.tokenfleet.io", "v1", namespace, "celchecks", body
        )

    create(1, 2)
    with pytest.raises(ApiException) as exc:
        create(3, 1)
    assert exc.value.status == 422
    body = str(exc.value.body)
    assert "spec.min: Invalid value" in body, body
    assert "min must not exceed max" in body, body


def _project_crds() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d.get("kind") == "CustomResourceDefinition"]


def _inference_job(name: str, lo: int, hi: int) -> dict[str, Any]:
    return {
        "apiVersion": "tokenfleet.io/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "tinyllama", "repositoryUri": "file:///models/tinyllama"},
            "variants": [
                {
                    "name": "int4",
                    "precision": "INT4",
                    "memoryMiB": 2048,
                    "tokensPerSecond": 40.0,
                    "watts": 60.0,
                    "targets": ["Rack", "Vehicle"],
                }
            ],
            "replicas": {"min": lo, "max": hi},
            "placement": {"targets": ["Rack", "Vehicle"], "preference": "PreferRack"},
        },
    }


@pytest.mark.skipif(
    not any(d["spec"]["names"]["kind"] == "InferenceJob" for d in _project_crds()),
    reason="crds/ holds no InferenceJob CRD yet (generated by `tokenfleet crds`)",
)
def test_project_crds_install_and_reject_replicas_min_above_max(
    fleet: Fleet, namespace: str
) -> None:
    fleet.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
    for crd in _project_crds():
        _apply_crd(fleet, crd)  # already there: waits for Established
    objects = client.CustomObjectsApi(fleet.api_client())
    create = objects.create_namespaced_custom_object
    ok: Any = create(
        "tokenfleet.io", "v1alpha1", namespace, "inferencejobs", _inference_job("ok", 1, 3)
    )
    assert ok["spec"]["replicas"] == {"min": 1, "max": 3}
    with pytest.raises(ApiException) as exc:
        create("tokenfleet.io", "v1alpha1", namespace, "inferencejobs", _inference_job("bad", 3, 1))
    assert exc.value.status == 422, exc.value.body
    message = json.loads(str(exc.value.body))["message"]
    assert "spec.replicas" in message, message
    assert "replicas.min must be less than or equal to replicas.max" in message, message


def test_cluster_up_down_cli_leaves_nothing_behind(tmp_path: Path) -> None:
    """`make cluster-up` / `make cluster-down` code path: no process, no listening port left."""
    state_dir = tmp_path / "cluster"
    cmd = [sys.executable, "-m", "e2e.cluster.fleet"]
    up = subprocess.run(
        [*cmd, "up", "--state-dir", str(state_dir), "--vehicles", "4", "--racks", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if up.returncode != 0:  # do not leave a half-started fleet behind
        subprocess.run([*cmd, "down", "--state-dir", str(state_dir)], cwd=REPO, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((state_dir / "state.json").read_text())
    pids: dict[str, int] = state["pids"]
    ports: dict[str, int] = state["ports"]
    try:
        assert set(pids) == set(COMPONENTS)
        assert all(_pid_alive(pid) for pid in pids.values())
        for name in ("etcd", "apiserver", "kcm", "scheduler", "kwok"):
            assert _port_listening(ports[name]), name
        nodes = subprocess.run(
            [str(REPO / ".bin" / "kubectl"), "--kubeconfig", str(state_dir / "kubeconfig"), "get",
             "nodes", "--no-headers"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.splitlines()  # fmt: skip
        assert len(nodes) == 6 and all(" Ready " in line for line in nodes), nodes
    finally:
        down = subprocess.run(
            [*cmd, "down", "--state-dir", str(state_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [name for name, pid in pids.items() if _pid_alive(pid)]
    assert not [name for name, port in ports.items() if _port_listening(port)]
    assert not (state_dir / "state.json").exists()
    again = subprocess.run(
        [*cmd, "down", "--state-dir", str(state_dir)], cwd=REPO, capture_output=True, timeout=60
    )
    assert again.returncode == 0
