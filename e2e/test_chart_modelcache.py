"""The chart's model cache: a `modelcache` container next to tritonserver in both runtime
DaemonSets (sharing the model volume; tritonserver reads it only), Pod Security `restricted`
(checked by the real API server's PodSecurity admission), RBAC equal to the calls
``tokenfleet modelcache`` makes (derived from its source), and the identity policy: with a real
pod-bound ServiceAccount token the cache may change its own Node's ``tokenfleet.io/model-cache``
annotation and nothing else, on no other Node."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.chart_kit import CHART, KUBE_VERSION, helm
from e2e.cluster.fleet import REPO, Fleet

Rule = tuple[str, str, str]
RUNNER = REPO / "operator/tokenfleet/delivery/runner.py"
ANNOTATION = "tokenfleet.io/model-cache"
ENABLED = ("modelCache.enabled=true", "modelCache.storeSecret=model-store")


def render(fleet: Fleet, *sets: str, namespace: str = "tokenfleet-system") -> list[dict[str, Any]]:
    args = ["template", "tf", str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(fleet, *args, stdout_only=True)) if d]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(ds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}


def test_the_cache_runs_next_to_tritonserver_on_racks_and_cars(fleet: Fleet) -> None:
    docs = render(fleet, *ENABLED, "modelCache.vehicles.budgetGiB=12")
    for role, budget, size in (("rack", "200", "205824Mi"), ("vehicle", "12", "13312Mi")):
        ds = named(docs, "DaemonSet", f"tf-tokenfleet-runtime-{role}")
        pod = ds["spec"]["template"]["spec"]
        by_name = containers(ds)
        assert list(by_name) == ["tritonserver", "modelcache"]
        triton, cache = by_name["tritonserver"], by_name["modelcache"]
        # tritonserver serves the cache's repository/, read-only; no token
        assert {"name": "models", "mountPath": "/models", "subPath": "repository",
                "readOnly": True} in triton["volumeMounts"]  # fmt: skip
        assert all(m["name"] != "modelcache-token" for m in triton["volumeMounts"])
        args = cache["args"]
        assert args[0] == "modelcache"
        assert f"--budget-gib={budget}" in args
        assert "--repository=/var/lib/tokenfleet/cache/repository" in args
        assert "--state-dir=/var/lib/tokenfleet/cache/state" in args  # same volume: one rename
        assert "--store-secret=tokenfleet-system/model-store" in args
        assert "--prefetch-percent=50" in args
        assert {"name": "models", "mountPath": "/var/lib/tokenfleet/cache"} in cache["volumeMounts"]
        env = {e["name"]: e for e in cache["env"]}
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        # the budget bounds the volume too (plus 1 GiB)
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["models"]["emptyDir"] == {"sizeLimit": size}
        # the cache's own identity, as a pod-bound projected token for that container only
        assert pod["serviceAccountName"] == "tf-tokenfleet-modelcache"
        assert pod["automountServiceAccountToken"] is False
        sources = volumes["modelcache-token"]["projected"]["sources"]
        assert sources[0]["serviceAccountToken"]["path"] == "token"
        for c in (triton, cache):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert cache["securityContext"]["readOnlyRootFilesystem"] is True
        assert all("hostPath" not in v for v in pod["volumes"])
    # off by default: no container, no identity
    plain = render(fleet)
    for ds in (d for d in plain if d["kind"] == "DaemonSet" and "runtime" in d["metadata"]["name"]):
        assert list(containers(ds)) == ["tritonserver"]
    assert not [d for d in plain if "modelcache" in d["metadata"]["name"]]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("modelCache.enabled=true",), "modelCache.storeSecret is required"),
        (
            (*ENABLED, "runtime.modelVolume.type=persistentVolumeClaim",
             "runtime.modelVolume.claimName=m"),
            "modelCache.enabled needs a local runtime.modelRepository",
        ),
        ((*ENABLED, "runtime.modelRepository=s3://b/m"), "needs a local runtime.modelRepository"),
        ((*ENABLED, "modelCache.racks.budgetGiB=0"), "/modelCache/racks/budgetGiB"),
        ((*ENABLED, "modelCache.typo=1"), "additional properties 'typo' not allowed"),
        ((*ENABLED, "modelCache.prefetchPercent=101"), "/modelCache/prefetchPercent"),
    ],
)  # fmt: skip
def test_bad_model_cache_values_are_refused_naming_the_key(
    fleet: Fleet, sets: tuple[str, ...], message: str
) -> None:
    args = ["template", "tf", str(CHART), "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    out = helm(fleet, *args, check=False)
    assert message in out, out


# ---- RBAC: exactly what the code calls -------------------------------------------------------


def needed() -> tuple[set[Rule], set[Rule]]:
    """(cluster rules, rules in the release namespace) from ``delivery/runner.py``: every
    Mirror (list + watch of its kind), the store Secret read (get), the Node annotation patch.
    An API call the derivation does not know fails here, so a new call cannot slip past RBAC."""
    source = RUNNER.read_text()
    cluster: set[Rule] = set()
    own: set[Rule] = set()
    for call in re.findall(r"\b(?:core|custom)\.(\w+)\b", source):
        if call == "list_node":
            cluster |= {("", "nodes", "list"), ("", "nodes", "watch")}
        elif call == "list_cluster_custom_object":
            for plural in re.findall(r'plural="(\w+)"', source):
                cluster |= {("tokenfleet.io", plural, "list"), ("tokenfleet.io", plural, "watch")}
        elif call == "read_namespaced_secret":
            own.add(("", "secrets", "get"))
        else:
            raise AssertionError(f"runner.py calls {call}: add it to this derivation and RBAC")
    if "node_annotation_patcher(" in source:  # agent/publisher.py: patch_node
        cluster.add(("", "nodes", "patch"))
    return cluster, own


def granted(role: dict[str, Any]) -> set[Rule]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_rbac_grants_exactly_what_the_cache_calls(fleet: Fleet) -> None:
    docs = render(fleet, *ENABLED)
    cluster, own = needed()
    assert ("tokenfleet.io", "inferencejobs", "watch") in cluster  # the derivation sees them
    role = named(docs, "ClusterRole", "tf-tokenfleet-modelcache")
    assert granted(role) == cluster
    secrets = named(docs, "Role", "tf-tokenfleet-modelcache")
    assert secrets["metadata"]["namespace"] == "tokenfleet-system"
    assert granted(secrets) == own
    assert [r["resourceNames"] for r in secrets["rules"]] == [["model-store"]]  # that one only
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = named(docs, kind, "tf-tokenfleet-modelcache")
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "tf-tokenfleet-modelcache",
                "namespace": "tokenfleet-system",
            }
        ]


# ---- on the real API server --------------------------------------------------------------------


@pytest.fixture
def release_namespace(fleet: Fleet) -> Iterator[str]:
    namespace = f"mc-{uuid.uuid4().hex[:6]}"
    fleet.core_v1().create_namespace(
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
    try:
        yield namespace
    finally:
        fleet.core_v1().delete_namespace(namespace)


def _apply(fleet: Fleet, docs: list[dict[str, Any]]) -> Callable[[], None]:
    text = yaml.safe_dump_all(docs)
    fleet.kubectl("apply", "-f", "-", stdin=text)
    return lambda: fleet.kubectl("delete", "--ignore-not-found", "-f", "-", stdin=text, check=False)


def _as_token(fleet: Fleet, token: str) -> Any:
    config: Any = client.Configuration()
    config.host = fleet.server
    config.ssl_ca_cert = str(fleet.ca_file)
    config.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(config))


def _refused(call: Callable[[], Any]) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status in (403, 422), info.value
    return info.value


def test_on_the_api_server_the_cache_pod_passes_restricted_and_speaks_only_for_its_node(
    fleet: Fleet, release_namespace: str, tmp_path: Path
) -> None:
    ns = release_namespace
    suffix = ns.removeprefix("mc-")
    car, other = f"mc-car-{suffix}", f"mc-other-{suffix}"
    fleet.add_vehicle(car, pool=f"pool-{suffix}")
    fleet.add_vehicle(other, pool=f"pool-{suffix}")
    docs = render(fleet, *ENABLED, namespace=ns)
    identity = [
        d
        for d in docs
        if "modelcache" in d["metadata"]["name"]
        and d["kind"]
        in (
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        )
    ]
    assert len(identity) == 7
    # cluster-scoped names carry the release name: unique per test run
    for d in identity:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding") or "Admission" in d["kind"]:
            d["metadata"]["name"] = d["metadata"]["name"].replace("tf-", f"tf{suffix}-", 1)
        if d["kind"] == "ClusterRoleBinding":
            d["roleRef"]["name"] = d["roleRef"]["name"].replace("tf-", f"tf{suffix}-", 1)
        if d["kind"] == "ValidatingAdmissionPolicyBinding":
            d["spec"]["policyName"] = d["spec"]["policyName"].replace("tf-", f"tf{suffix}-", 1)
    undo = _apply(fleet, identity)
    api = fleet.core_v1()
    try:
        api.create_namespaced_secret(
            ns, {"metadata": {"name": "model-store"}, "stringData": {"accessKeyId": "k"}}
        )
        api.create_namespaced_secret(ns, {"metadata": {"name": "other"}, "stringData": {"a": "b"}})
        # the car runtime pod (its template, pinned to the car) as the API server admits it:
        # PodSecurity `restricted` enforced on the namespace
        ds = named(docs, "DaemonSet", "tf-tokenfleet-runtime-vehicle")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"runtime-{suffix}", "namespace": ns},
            "spec": {**ds["spec"]["template"]["spec"], "nodeName": car},
        }
        pod["spec"].pop("affinity", None)
        created = api.create_namespaced_pod(ns, pod)
        # a token bound to that pod (as the kubelet's projected volume asks for)
        token = fleet.kubectl(
            "create", "token", "tf-tokenfleet-modelcache", "-n", ns,
            "--bound-object-kind", "Pod", "--bound-object-name", created.metadata.name,
            "--bound-object-uid", created.metadata.uid, "--duration=3600s",
        ).stdout.strip()  # fmt: skip
        cache = _as_token(fleet, token)
        report = '{"v":1,"budget":1,"used":0,"models":{}}'

        def own_report() -> None:
            cache.patch_node(car, {"metadata": {"annotations": {ANNOTATION: report}}})

        own_report()  # its own Node's report: accepted
        assert api.read_node(car).metadata.annotations[ANNOTATION] == report

        # what it reads: its Node by field selector, the store Secret; not another Secret
        nodes = cache.list_node(field_selector=f"metadata.name={car}").items
        assert [n.metadata.name for n in nodes] == [car]
        assert cache.read_namespaced_secret("model-store", ns).data
        _refused(lambda: cache.read_namespaced_secret("other", ns))

        # the policy is enforced once the API server has loaded it: wait for the first refusal
        def another_nodes_report() -> None:
            cache.patch_node(other, {"metadata": {"annotations": {ANNOTATION: report}}})

        deadline = time.monotonic() + 30
        while True:
            try:
                another_nodes_report()
            except ApiException as exc:
                assert exc.status in (403, 422), exc
                assert "only its own Node" in str(exc.body), exc.body
                break
            fleet.kubectl("annotate", "node", other, f"{ANNOTATION}-")
            assert time.monotonic() < deadline, "the modelcache identity policy never took effect"
            time.sleep(1)
        assert ANNOTATION not in (api.read_node(other).metadata.annotations or {})

        # on its own Node, nothing but that annotation
        for patch in (
            {"metadata": {"annotations": {"telemetry.tokenfleet.io/soc-percent": "99"}}},
            {"metadata": {"annotations": {"tokenfleet.io/runtime-endpoint": "127.0.0.1:1"}}},
            {"metadata": {"labels": {"tokenfleet.io/role": "rack"}}},
            {"spec": {"unschedulable": True}},
        ):
            exc = _refused(lambda patch=patch: cache.patch_node(car, patch))
            assert "tokenfleet.io/model-cache" in str(exc.body), exc.body
        node = api.read_node(car)
        assert node.metadata.labels["tokenfleet.io/role"] == "vehicle"
        assert not node.spec.unschedulable
        assert "tokenfleet.io/runtime-endpoint" not in node.metadata.annotations

        # a token not bound to a pod (no node in it) may change no Node at all
        unbound = _as_token(
            fleet,
            fleet.kubectl(
                "create", "token", "tf-tokenfleet-modelcache", "-n", ns, "--duration=600s"
            ).stdout.strip(),
        )
        _refused(lambda: unbound.patch_node(car, {"metadata": {"annotations": {ANNOTATION: "{}"}}}))
        own_report()  # and the bound one still may
    finally:
        undo()
        fleet.remove_node(car, wait=False)
        fleet.remove_node(other, wait=False)
