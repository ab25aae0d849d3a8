"""The Helm chart: lint, values schema, CRDs equal to crds/, and a real install on the fleet."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from e2e.cluster.fleet import POD_CIDR, REPO, ROLE_LABEL, VEHICLE_TAINT_KEY, Fleet, versions

CHART = REPO / "charts" / "tokenfleet"
RELEASE = "tf"
NAMESPACE = "tokenfleet-system"
KUBE_VERSION = versions()["K8S_VERSION"]
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-tokenfleet"


def helm(fleet: Fleet, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(fleet.helm_path), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=fleet.env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result


def render(fleet: Fleet, *sets: str) -> list[dict[str, Any]]:
    # helm template assumes Kubernetes v1.20 unless told; the chart needs >= 1.29 (CEL rules).
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return [doc for doc in yaml.safe_load_all(helm(fleet, *args).stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def test_chart_lints_strict(fleet: Fleet) -> None:
    out = helm(fleet, "lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.replicas=two", "at '/operator/replicas': got string, want integer"),
        ("operator.typo=1", "at '/operator': additional properties 'typo' not allowed"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("runtime.httpPort=70000", "/runtime/httpPort"),
    ],
)
def test_values_schema_rejects_bad_values_naming_the_key(
    fleet: Fleet, value: str, message: str
) -> None:
    result = helm(
        fleet,
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        value,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_rendered_crds_equal_the_generated_ones(fleet: Fleet) -> None:
    rendered = {
        doc["metadata"]["name"]: doc for doc in by_kind(render(fleet), "CustomResourceDefinition")
    }
    generated = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        generated[doc["metadata"]["name"]] = doc
    assert (
        set(rendered)
        == set(generated)
        == {
            "immersionpods.tokenfleet.io",
            "vehiclepools.tokenfleet.io",
            "inferencejobs.tokenfleet.io",
            "inferencebatches.tokenfleet.io",
        }
    )
    for name, doc in rendered.items():
        assert doc["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert doc == generated[name], f"chart copy of {name} differs from crds/"

    assert by_kind(render(fleet, "crds.enabled=false"), "CustomResourceDefinition") == []
    unkept = by_kind(render(fleet, "crds.keep=false"), "CustomResourceDefinition")
    assert all("annotations" not in doc["metadata"] for doc in unkept)


def component(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    """Objects of ``kind`` whose ``app.kubernetes.io/component`` label is ``name``."""
    return [
        doc
        for doc in by_kind(docs, kind)
        if (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == name
    ]


def test_single_replica_is_standalone_and_ha_turns_on_peering(fleet: Fleet) -> None:
    (single,) = component(render(fleet), "Deployment", "operator")
    args = single["spec"]["template"]["spec"]["containers"][0]["args"]
    assert single["spec"]["strategy"] == {"type": "Recreate"}
    assert "--all-namespaces" in args
    assert f"--runtime-namespace={NAMESPACE}" in args  # where the chart's runtime pods run
    assert not any(a.startswith("--peering") for a in args)

    docs = render(fleet, "operator.replicas=2", "operator.watchNamespaces={ml,edge}")
    (ha,) = component(docs, "Deployment", "operator")
    args = ha["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=tokenfleet" in args
    env = ha["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    assert "--namespace=ml" in args and "--namespace=edge" in args
    assert "--all-namespaces" not in args
    # watchNamespaces: kopf's namespaced peering, granted by a Role in each watched namespace
    # (e2e/test_chart_rbac.py checks every rule against the code)
    for role in [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "tf-tokenfleet"]:
        (peering_rule,) = [rule for rule in role["rules"] if "kopf.dev" in rule["apiGroups"]]
        assert peering_rule["resources"] == ["kopfpeerings"]
        assert {"list", "watch", "patch", "create"} <= set(peering_rule["verbs"])
    # kopf's peering CRDs come with HA (the operator creates the peering objects itself).
    kopf_crds = {
        doc["metadata"]["name"]: doc["spec"]["scope"]
        for doc in by_kind(docs, "CustomResourceDefinition")
        if doc["spec"]["group"] == "kopf.dev"
    }
    assert kopf_crds == {
        "clusterkopfpeerings.kopf.dev": "Cluster",
        "kopfpeerings.kopf.dev": "Namespaced",
    }
    no_crds = render(fleet, "operator.replicas=2", "crds.enabled=false")
    assert by_kind(no_crds, "CustomResourceDefinition") == []


def test_gateway_deployment_service_and_its_own_service_account(fleet: Fleet) -> None:
    docs = render(fleet, "gateway.replicas=3", "gateway.dialNetworks=10.0.0.0/8")
    (dep,) = component(docs, "Deployment", "gateway")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    assert spec["serviceAccountName"] == f"{RELEASE}-tokenfleet-gateway"
    (container,) = spec["containers"]
    assert container["args"][:3] == ["gateway", "--address=0.0.0.0", "--port=8080"]
    assert "--dial-networks=10.0.0.0/8" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (svc,) = component(docs, "Service", "gateway")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    (role,) = [
        r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-gateway")
    ]
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}  # read-only
    off = render(fleet, "gateway.enabled=false")
    assert component(off, "Deployment", "gateway") == []
    assert component(off, "Service", "gateway") == []
    bad = helm(
        fleet, "template", RELEASE, str(CHART), "--set", "gateway.requestsPerSecond=0", check=False
    )
    assert bad.returncode != 0 and "requestsPerSecond" in bad.stderr


def test_helm_install_runs_operator_on_racks_and_runtimes_on_every_fleet_node(
    fleet: Fleet,
) -> None:
    helm(
        fleet,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--take-ownership",  # earlier tests may have applied crds/ directly
        "--wait",
        "--timeout",
        "180s",
    )
    api = fleet.core_v1()
    try:
        nodes = api.list_node(label_selector=ROLE_LABEL).items
        vehicles = {n.metadata.name for n in nodes if n.metadata.labels[ROLE_LABEL] == "vehicle"}
        racks = {n.metadata.name for n in nodes if n.metadata.labels[ROLE_LABEL] == "rack"}
        assert vehicles and racks

        def runtime_pods() -> list[Any]:
            return [
                p
                for p in api.list_namespaced_pod(
                    NAMESPACE, label_selector="app.kubernetes.io/name=tokenfleet-runtime"
                ).items
                if p.status.phase == "Running"
            ]

        wait_for(
            lambda: len(runtime_pods()) == len(vehicles | racks),
            120,
            f"{len(vehicles | racks)} Running runtime pods",
        )
        placed = {p.spec.node_name for p in runtime_pods()}
        assert placed == vehicles | racks, "one runtime per rack and vehicle node"
        import ipaddress

        for pod in runtime_pods():
            assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)

        operator_pods = api.list_namespaced_pod(
            NAMESPACE, label_selector="app.kubernetes.io/component=operator"
        ).items
        assert len(operator_pods) == 1
        (op,) = operator_pods
        assert op.status.phase == "Running"
        # The vehicle taint keeps the operator itself off the cars.
        assert op.spec.node_name not in vehicles
        assert not any(t.key == VEHICLE_TAINT_KEY for t in (op.spec.tolerations or []))

        # The ServiceAccount's RBAC: what the operator needs and nothing destructive.
        def can_i(*what: str) -> bool:
            res = fleet.kubectl("auth", "can-i", *what, f"--as={SERVICE_ACCOUNT}", check=False)
            return res.stdout.strip() == "yes"

        assert can_i("patch", "inferencejobs.tokenfleet.io", "--subresource=status", "-n", "ml")
        assert can_i("watch", "nodes")
        assert can_i("create", "endpointslices.discovery.k8s.io", "-n", "ml")
        assert can_i("create", "events", "-n", "ml")
        assert not can_i("delete", "nodes")
        assert not can_i("create", "pods", "-n", "ml")
        assert not can_i("get", "secrets", "-n", "ml")
        # the gateway's own account reads keys and routing, and writes nothing
        gateway = f"--as=system:serviceaccount:{NAMESPACE}:{RELEASE}-tokenfleet-gateway"
        for what in (("list", "secrets", "-n", "ml"), ("watch", "endpointslices.discovery.k8s.io")):
            assert (
                fleet.kubectl("auth", "can-i", *what, gateway, check=False).stdout.strip() == "yes"
            )
        for what in (("create", "secrets", "-n", "ml"), ("patch", "nodes")):
            assert (
                fleet.kubectl("auth", "can-i", *what, gateway, check=False).stdout.strip() == "no"
            )

        assert not can_i("delete", "services", "-n", "kube-system")
        assert not can_i("update", "services", "-n", "ml")
        assert not can_i("list", "customresourcedefinitions.apiextensions.k8s.io")
    finally:
        helm(fleet, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s")

    # crds.keep: the CRDs (and every user's resources) survive the uninstall.
    crds = json.loads(fleet.kubectl("get", "crd", "-o", "json").stdout)["items"]
    names = {c["metadata"]["name"] for c in crds}
    assert {"inferencejobs.tokenfleet.io", "vehiclepools.tokenfleet.io"} <= names
    wait_for(
        lambda: (
            not api.list_namespaced_pod(
                NAMESPACE, label_selector="app.kubernetes.io/name=tokenfleet-runtime"
            ).items
        ),
        120,
        "the chart's runtime pods to be deleted",
    )
