"""The chart as a platform team installs it: Pod Security `restricted`, cars offline, the values
surface that reaches the pods and the operator.

Runs against the session's real control plane; kwok "runs" the pods on its nodes, so a pod that
admission accepts and the scheduler places becomes Running and Ready, and `helm --wait` judges the
workloads' real status objects.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import yaml

from e2e.chart_kit import CHART, KUBE_VERSION, helm
from e2e.cluster.fleet import Fleet
from e2e.operator_kit import wait_for
from tokenfleet.controllers.settings import OperatorConfig

PSA_LABEL = "e2e.tokenfleet.io/psa"


def render(fleet: Fleet, *sets: str, namespace: str = "tokenfleet-system") -> list[dict[str, Any]]:
    args = ["template", "tf", str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(fleet, *args, stdout_only=True)) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def is_runtime_set(doc: dict[str, Any]) -> bool:
    """A Triton runtime DaemonSet (the node agent is another DaemonSet)."""
    return bool(
        doc["kind"] == "DaemonSet" and doc["metadata"]["name"].startswith("tf-tokenfleet-runtime-")
    )


def container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def env_of(doc: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(doc).get("env", [])}


# ------------------------------------------------------------------------------- rendering


def test_runtime_sets_are_split_by_role_with_their_own_update_strategy(fleet: Fleet) -> None:
    docs = render(fleet)
    racks = one(docs, "DaemonSet", "tf-tokenfleet-runtime-rack")
    cars = one(docs, "DaemonSet", "tf-tokenfleet-runtime-vehicle")
    for ds, role in ((racks, "rack"), (cars, "vehicle")):
        term = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert term == {"key": "tokenfleet.io/role", "operator": "In", "values": [role]}
        # the operator finds runtime pods by this label; the sets' selectors must not overlap
        labels = ds["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tokenfleet-runtime"
        assert ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
            f"runtime-{role}"
        )
    assert racks["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert cars["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
    assert "tolerations" not in racks["spec"]["template"]["spec"]
    assert cars["spec"]["template"]["spec"]["tolerations"][0]["key"] == "tokenfleet.io/vehicle"
    only_racks = render(fleet, "runtime.vehicles.enabled=false")
    assert [d["metadata"]["name"] for d in only_racks if is_runtime_set(d)] == [
        "tf-tokenfleet-runtime-rack"
    ]


def test_node_agent_is_opt_in_and_runs_with_the_cars_own_identity(fleet: Fleet) -> None:
    # off by default: it reads the kubelet's credentials from the host (hostPath, root), which
    # Pod Security `restricted` and `baseline` forbid; the identity policy is on by default
    docs = render(fleet)
    assert not [d for d in docs if d["metadata"]["name"] == "tf-tokenfleet-node-agent"]
    assert [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    agent = one(render(fleet, "nodeAgent.enabled=true"), "DaemonSet", "tf-tokenfleet-node-agent")
    pod = agent["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # no cluster identity of its own
    assert pod["nodeSelector"] == {"tokenfleet.io/role": "vehicle"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container(agent)["securityContext"]["allowPrivilegeEscalation"] is False
    assert "--kubeconfig=/var/lib/rancher/k3s/agent/kubelet.kubeconfig" in container(agent)["args"]
    assert {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}[
        "kubelet-credentials"
    ] == "/var/lib/rancher/k3s/agent"


def test_runtime_pods_default_to_pod_security_restricted(fleet: Fleet) -> None:
    for ds in (d for d in render(fleet) if is_runtime_set(d)):
        pod = ds["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        ctx = container(ds)["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert all("hostPath" not in v for v in pod["volumes"])
        assert {"name": "models", "emptyDir": {}} in pod["volumes"]
        assert pod["automountServiceAccountToken"] is False


def test_model_volume_types(fleet: Fleet) -> None:
    def runtime(*sets: str) -> dict[str, Any]:
        return one(render(fleet, *sets), "DaemonSet", "tf-tokenfleet-runtime-rack")

    remote = runtime("runtime.modelRepository=s3://bucket/models")
    assert "--model-repository=s3://bucket/models" in container(remote)["args"]
    assert [v["name"] for v in remote["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    pvc = runtime(
        "runtime.modelVolume.type=persistentVolumeClaim", "runtime.modelVolume.claimName=m"
    )
    (models,) = [v for v in pvc["spec"]["template"]["spec"]["volumes"] if v["name"] == "models"]
    assert models == {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "m", "readOnly": True},
    }
    host = runtime("runtime.modelVolume.type=hostPath")
    (models,) = [v for v in host["spec"]["template"]["spec"]["volumes"] if v["name"] == "models"]
    assert models["hostPath"] == {"path": "/var/lib/tokenfleet/models", "type": "Directory"}
    sized = runtime("runtime.modelVolume.sizeLimit=20Gi")
    (models,) = [v for v in sized["spec"]["template"]["spec"]["volumes"] if v["name"] == "models"]
    assert models == {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}}
    none = runtime("runtime.modelVolume.type=none")
    assert [v["name"] for v in none["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    missing = helm(
        fleet,
        "template",
        "tf",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "runtime.modelVolume.type=persistentVolumeClaim",
        check=False,
    )
    assert "runtime.modelVolume.claimName is required" in missing


def test_runtime_values_surface_reaches_the_pods(fleet: Fleet) -> None:
    docs = render(
        fleet,
        "runtime.racks.gpus=2",
        "runtime.gpuResourceName=nvidia.com/gpu",
        "runtime.runtimeClassName=nvidia",
        "runtime.imagePullSecrets[0].name=ngc",
        "runtime.env[0].name=AWS_REGION",
        "runtime.env[0].value=eu-west-1",
        "runtime.racks.nodeSelector.site=plant-7",
        "runtime.vehicles.tolerations[0].key=ev",
        "runtime.vehicles.tolerations[0].operator=Exists",
        "runtime.vehicles.resources.limits.memory=6Gi",
        "runtime.securityContext.readOnlyRootFilesystem=true",
    )
    racks = one(docs, "DaemonSet", "tf-tokenfleet-runtime-rack")
    cars = one(docs, "DaemonSet", "tf-tokenfleet-runtime-vehicle")
    assert container(racks)["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert container(racks)["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert container(cars)["resources"] == {"limits": {"memory": "6Gi"}}
    for ds in (racks, cars):
        pod = ds["spec"]["template"]["spec"]
        assert pod["runtimeClassName"] == "nvidia"
        assert pod["imagePullSecrets"] == [{"name": "ngc"}]
        assert container(ds)["env"] == [{"name": "AWS_REGION", "value": "eu-west-1"}]
        assert container(ds)["securityContext"]["readOnlyRootFilesystem"] is True
    assert racks["spec"]["template"]["spec"]["nodeSelector"] == {"site": "plant-7"}
    assert cars["spec"]["template"]["spec"]["tolerations"] == [{"key": "ev", "operator": "Exists"}]


def test_every_runtime_port_reaches_the_runtimes_and_the_operator(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(
        fleet, "runtime.httpPort=9000", "runtime.grpcPort=9001", "runtime.metricsPort=9102"
    )
    env = env_of(one(docs, "Deployment", "tf-tokenfleet"))
    assert env["TOKENFLEET_RUNTIME_HTTP_PORT"] == "9000"
    assert env["TOKENFLEET_RUNTIME_GRPC_PORT"] == "9001"
    assert env["TOKENFLEET_RUNTIME_METRICS_PORT"] == "9102"
    # the operator finds the runtime pods by the label the chart gives them (one spelling)
    key, _, value = env["TOKENFLEET_RUNTIME_POD_LABEL"].partition("=")
    for ds in (d for d in docs if is_runtime_set(d)):
        assert ds["spec"]["template"]["metadata"]["labels"][key] == value
        args = container(ds)["args"]
        assert {"--http-port=9000", "--grpc-port=9001", "--metrics-port=9102"} <= set(args)
        ports = {p["name"]: p["containerPort"] for p in container(ds)["ports"]}
        assert ports == {"http": 9000, "grpc": 9001, "metrics": 9102}
    # the operator's config reads exactly these variables
    import os

    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("TOKENFLEET_")})
        config = OperatorConfig.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert (config.runtime_http_port, config.runtime_grpc_port) == (9000, 9001)
    assert config.runtime_metrics_port == 9102


def test_operator_ha_extras(fleet: Fleet) -> None:
    single = render(fleet)
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    docs = render(fleet, "operator.replicas=2", "operator.peeringLifetimeSeconds=20")
    deployment = one(docs, "Deployment", "tf-tokenfleet")
    assert env_of(deployment)["TOKENFLEET_PEERING_LIFETIME_SECONDS"] == "20"
    assert "strategy" not in deployment["spec"]  # rolling: the standby keeps watch meanwhile
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert container(deployment)["readinessProbe"]["httpGet"]["path"] == "/healthz"
    pdb = one(docs, "PodDisruptionBudget", "tf-tokenfleet")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_schema_types_the_security_and_scheduling_values(fleet: Fleet) -> None:
    for value, message in (
        ("runtime.securityContext.privileged=yes", "/runtime/securityContext/privileged"),
        ("podSecurityContext.runAsUser=-1", "/podSecurityContext/runAsUser"),
        ("runtime.vehicles.tolerations[0].operator=Maybe", "/runtime/vehicles/tolerations/0"),
        ("runtime.racks.gpus=-1", "/runtime/racks/gpus"),
        ("runtime.modelVolume.type=nfs", "/runtime/modelVolume/type"),
        ("runtime.vehicles.updateStrategy.type=Always", "/runtime/vehicles/updateStrategy/type"),
        ("runtime.resources.limits.memory=true", "/runtime/resources/limits/memory"),
        ("securityContext.typo=1", "additional properties 'typo' not allowed"),
    ):
        out = helm(
            fleet,
            "template",
            "tf",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            value,
            check=False,
        )
        assert message in out, (value, out[-600:])


# --------------------------------------------------------------------- against the apiserver


def _runtime_not_ready(fleet: Fleet, node: str, namespace: str) -> None:
    """A car whose runtime is NotReady while the car itself is still registered (out of range,
    asleep, on a weak link: normal for cars): its runtime pod's Ready condition goes False. (A car
    whose node goes unreachable is tainted and drops out of the DaemonSet's desired count by
    itself; a reachable car with a NotReady runtime is what used to block `helm --wait`.)"""
    api = fleet.core_v1()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for pod in api.list_namespaced_pod(namespace, field_selector=f"spec.nodeName={node}").items:
        conditions = [
            {
                "type": c.type,
                "status": "False" if c.type in ("Ready", "ContainersReady") else c.status,
                "lastTransitionTime": now,
            }
            for c in pod.status.conditions
        ]
        api.patch_namespaced_pod_status(
            pod.metadata.name, namespace, {"status": {"conditions": conditions}}
        )


def test_restricted_namespace_install_and_upgrade_with_a_third_of_the_cars_offline(
    fleet: Fleet,
) -> None:
    # a letter first: helm's --set reads a tag like "289489" or "1e5000" as a number
    tag = "t" + uuid.uuid4().hex[:6]
    namespace = f"psa-{tag}"
    release = f"psa{tag}"
    api = fleet.core_v1()
    api.create_namespace(
        {
            "metadata": {
                "name": namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            }
        }
    )
    racks = [f"psa-rack-{tag}-{i}" for i in range(3)]
    cars = [f"psa-car-{tag}-{i}" for i in range(6)]
    labels = {PSA_LABEL: tag}
    fleet.create_nodes(
        [fleet.rack_spec(n, tank=f"tank-{tag}", labels=labels) for n in racks]
        + [fleet.vehicle_spec(n, pool=f"pool-{tag}", labels=labels) for n in cars]
    )
    fleet.wait_nodes_ready(racks + cars)
    scope = [
        f"runtime.racks.nodeSelector.e2e\\.tokenfleet\\.io/psa={tag}",
        f"runtime.vehicles.nodeSelector.e2e\\.tokenfleet\\.io/psa={tag}",
        f"nodeSelector.e2e\\.tokenfleet\\.io/psa={tag}",
        "crds.enabled=false",
        f"operator.watchNamespaces={{{namespace}}}",
    ]
    sets = [a for s in scope for a in ("--set", s)]

    def daemonsets() -> dict[str, dict[str, Any]]:
        out = fleet.kubectl("get", "daemonsets", "-n", namespace, "-o", "json").stdout
        return {d["metadata"]["name"]: d["status"] for d in json.loads(out)["items"]}

    try:
        started = time.monotonic()
        helm(
            fleet,
            "install",
            release,
            str(CHART),
            "-n",
            namespace,
            *sets,
            "--wait",
            "--timeout",
            "180s",
        )
        install_s = time.monotonic() - started
        status = daemonsets()
        assert status[f"{release}-tokenfleet-runtime-rack"]["numberReady"] == len(racks), status
        assert status[f"{release}-tokenfleet-runtime-vehicle"]["numberReady"] == len(cars), status
        pods = api.list_namespaced_pod(namespace).items
        # every runtime, the operator and the gateway's replicas (2 by default) pass `restricted`
        assert len(pods) == len(racks) + len(cars) + 1 + 2
        assert sum("gateway" in (p.metadata.name or "") for p in pods) == 2
        assert all(p.status.phase == "Running" for p in pods)

        # A third of the cars' runtimes go NotReady (a normal state for cars).
        offline = cars[: len(cars) // 3]
        for car in offline:
            _runtime_not_ready(fleet, car, namespace)
        vehicle_ds = f"{release}-tokenfleet-runtime-vehicle"
        wait_for(
            lambda: daemonsets()[vehicle_ds].get("numberReady") == len(cars) - len(offline),
            60,
            "the offline cars' runtimes to be NotReady",
            describe=daemonsets,
        )
        time.sleep(3)  # still so (nothing marks them Ready again)
        status = daemonsets()[vehicle_ds]
        assert status["desiredNumberScheduled"] == len(cars), status
        assert status["numberReady"] == len(cars) - len(offline), status
        # An operator-only change: --wait judges the operator and the racks, not the cars.

        started = time.monotonic()
        helm(
            fleet,
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            *sets,
            "--set",
            "operator.verbose=true",
            "--wait",
            "--timeout",
            "120s",
        )
        upgrade_s = time.monotonic() - started
        # The same upgrade with car readiness counted (maxUnavailable 1) cannot pass: the test
        # measures what the default buys.
        strict = helm(
            fleet,
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            *sets,
            "--set",
            "operator.verbose=true",
            "--set",
            "runtime.vehicles.updateStrategy.rollingUpdate.maxUnavailable=1",
            "--wait",
            "--timeout",
            "20s",
            check=False,
        )
        assert "context deadline exceeded" in strict or "timed out" in strict, strict[-500:]
        assert daemonsets()[vehicle_ds]["numberReady"] == len(cars) - len(offline)
        print(
            f"\nrestricted install --wait {install_s:.1f} s; upgrade --wait with "
            f"{len(offline)}/{len(cars)} cars offline {upgrade_s:.1f} s"
        )
    finally:
        helm(
            fleet, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s", check=False
        )
        for node in racks + cars:
            fleet.remove_node(node, wait=False)
        api.delete_namespace(namespace)
