"""The chart's batch side: the dispatcher's Deployment (off by default; Pod Security
`restricted`), its own ServiceAccount and exactly the RBAC its code calls, and the gateway's
batch RBAC (only with ``batch.gateway.filesUri``), both derived from the code:

* the dispatcher: every kind :func:`tokenfleet.batch.watch.standard_kinds` lists (list, watch)
  and every direct API call in ``operator/tokenfleet/batch/*.py`` (``patch_`` -> patch,
  ``read_`` -> get, ``create_`` -> create; a custom object's plural from the call);
* the gateway: the InferenceBatch calls in ``operator/tokenfleet/gateway/batches.py``.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from typing import Any

import pytest
import yaml

from e2e.chart_kit import CHART, KUBE_VERSION, helm
from e2e.cluster.fleet import REPO, Fleet

Rule = tuple[str, str, str]
GROUP = "tokenfleet.io"
NS = "tokenfleet-system"
DISPATCHER = "tf-tokenfleet-dispatcher"
_VERBS = {"read": "get", "get": "get", "create": "create", "patch": "patch", "list": "list"}
_CORE = {"secret": ("", "secrets"), "event": ("", "events")}
_PLURAL = re.compile(r'"(inferencebatches|inferencejobs|vehiclepools|immersionpods)"')
_CALL = re.compile(r"\.(read|get|create|patch|list|delete|replace)_namespaced_(\w+?)\(")


def _calls(path: str) -> set[Rule]:
    """Rules for the direct namespaced API calls in the files matching ``path``."""
    rules: set[Rule] = set()
    for file in REPO.glob(path):
        source = file.read_text()
        for match in _CALL.finditer(source):
            verb, kind = _VERBS.get(match.group(1)), match.group(2)
            assert verb is not None, f"{file.name}: {match.group(0)} is not in the derivation"
            if kind.startswith("custom_object"):
                plural = _PLURAL.search(source, match.end(), match.end() + 400)
                assert plural, f"{file.name}: no plural after {match.group(0)}"
                resource = plural.group(1) + ("/status" if kind.endswith("_status") else "")
                rules.add((GROUP, resource, verb))
            else:
                assert kind in _CORE, f"{file.name}: {match.group(0)} is not in the derivation"
                rules.add((*_CORE[kind], verb))
    return rules


def dispatcher_need() -> set[Rule]:
    from kubernetes import client

    from tokenfleet.batch.watch import standard_kinds

    def noop(*_: Any) -> None:
        return None

    handlers = (noop, noop)
    kinds = standard_kinds(
        client.ApiClient(),
        (),
        batches=handlers,
        jobs=handlers,
        slices=handlers,
        nodes=handlers,
        pools=handlers,
    )
    rules: set[Rule] = set()
    for kind in kinds:
        name = kind.list_call.__name__
        if "custom_object" in name:
            group, resource = GROUP, kind.kwargs["plural"]
        elif "endpoint_slice" in name:
            group, resource = "discovery.k8s.io", "endpointslices"
        elif name == "list_node":
            group, resource = "", "nodes"
        else:
            raise AssertionError(f"{name} is not in the derivation")
        rules |= {(group, resource, "list"), (group, resource, "watch")}
    return rules | _calls("operator/tokenfleet/batch/*.py")


def gateway_batch_need() -> set[Rule]:
    return _calls("operator/tokenfleet/gateway/batches.py")


def _args(sets: tuple[str, ...]) -> list[str]:
    args = ["template", "tf", str(CHART), "-n", NS, "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return args


def render(fleet: Fleet, *sets: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(helm(fleet, *_args(sets), stdout_only=True)) if d]


def refused(fleet: Fleet, *sets: str) -> str:
    """helm's error for values it must refuse (fails the test if it renders)."""
    result = subprocess.run(
        [str(fleet.helm_path), *_args(sets)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, f"rendered: {sets}"
    return result.stderr


def granted(role: dict[str, Any]) -> set[Rule]:
    out: set[Rule] = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    out.add((group, resource, verb))
    return out


def named(docs: list[dict[str, Any]], kind: str, prefix: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]


def test_the_derivation_sees_the_calls() -> None:
    need = dispatcher_need()
    assert (GROUP, "inferencebatches/status", "patch") in need
    assert (GROUP, "inferencebatches", "patch") in need  # the finalizer
    assert ("", "secrets", "get") in need and ("", "events", "create") in need
    assert gateway_batch_need() == {
        (GROUP, "inferencebatches", v) for v in ("create", "get", "list", "patch")
    }


def test_off_by_default(fleet: Fleet) -> None:
    docs = render(fleet)
    assert named(docs, "Deployment", DISPATCHER) == []
    assert named(docs, "ServiceAccount", DISPATCHER) == []
    assert [d for d in docs if "gateway-batches" in d["metadata"]["name"]] == []
    (gateway,) = named(docs, "Deployment", "tf-tokenfleet-gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert not [a for a in container["args"] if a.startswith("--files-uri")]
    assert "envFrom" not in container


def test_dispatcher_deployment_and_exactly_the_rbac_its_code_calls(fleet: Fleet) -> None:
    docs = render(fleet, "batch.dispatcher.enabled=true", "batch.dispatcher.cleanupSeconds=30")
    (dep,) = named(docs, "Deployment", DISPATCHER)
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == DISPATCHER
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (container,) = spec["containers"]
    assert container["args"][0] == "dispatcher"
    assert "--cleanup-seconds=30" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--namespace")]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    (account,) = named(docs, "ServiceAccount", DISPATCHER)
    assert account["metadata"]["namespace"] == NS
    roles = named(docs, "ClusterRole", DISPATCHER)
    assert {r["metadata"]["name"] for r in roles} == {DISPATCHER, f"{DISPATCHER}-fleet"}
    have = set().union(*(granted(r) for r in roles))
    need = dispatcher_need()
    assert have - need == set(), f"granted beyond need: {sorted(have - need)}"
    assert need - have == set(), f"needed but not granted: {sorted(need - have)}"
    for binding in named(docs, "ClusterRoleBinding", DISPATCHER):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": DISPATCHER, "namespace": NS}
        ]
    # the operator's and the gateway's roles did not grow
    for doc in named(docs, "ClusterRole", "tf-tokenfleet"):
        if not doc["metadata"]["name"].startswith(DISPATCHER):
            assert (GROUP, "inferencebatches", "patch") not in granted(doc)


def test_one_watch_namespace_confines_the_secrets_to_it(fleet: Fleet) -> None:
    docs = render(fleet, "batch.dispatcher.enabled=true", "batch.dispatcher.watchNamespace=batches")
    (dep,) = named(docs, "Deployment", DISPATCHER)
    assert "--namespace=batches" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    (cluster,) = named(docs, "ClusterRole", DISPATCHER)
    (role,) = named(docs, "Role", DISPATCHER)
    assert role["metadata"]["namespace"] == "batches"
    (binding,) = named(docs, "RoleBinding", DISPATCHER)
    assert binding["metadata"]["namespace"] == "batches"
    assert binding["roleRef"]["kind"] == "Role"
    need = dispatcher_need()
    cluster_kinds = {("", "nodes"), (GROUP, "vehiclepools")}
    assert granted(cluster) == {r for r in need if (r[0], r[1]) in cluster_kinds}
    assert granted(role) == {r for r in need if (r[0], r[1]) not in cluster_kinds}


def test_gateway_batch_endpoints_and_their_rbac(fleet: Fleet) -> None:
    sets = ("batch.gateway.filesUri=s3://api-files/v1", "batch.gateway.storeSecret=files-store")
    docs = render(fleet, *sets)
    (gateway,) = named(docs, "Deployment", "tf-tokenfleet-gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert "--files-uri=s3://api-files/v1" in container["args"]
    assert "--batch-secret=tokenfleet-batch-store" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "files-store"}}]
    (role,) = named(docs, "ClusterRole", "tf-tokenfleet-gateway-batches")
    assert granted(role) == gateway_batch_need()
    (binding,) = named(docs, "ClusterRoleBinding", "tf-tokenfleet-gateway-batches")
    assert binding["subjects"][0]["name"] == "tf-tokenfleet-gateway"
    # the gateway's read-only role is unchanged
    (read,) = [r for r in named(docs, "ClusterRole", "tf-tokenfleet-gateway") if r is not role]
    assert {v for rule in read["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    # per watched namespace: Roles there, no ClusterRole
    scoped = render(fleet, *sets, "gateway.watchNamespaces={a,b}")
    assert named(scoped, "ClusterRole", "tf-tokenfleet-gateway-batches") == []
    roles = named(scoped, "Role", "tf-tokenfleet-gateway-batches")
    assert {r["metadata"]["namespace"] for r in roles} == {"a", "b"}
    assert all(granted(r) == gateway_batch_need() for r in roles)
    # the store Secret is required with filesUri; a bad URI is refused by the schema
    assert "batch.gateway.storeSecret" in refused(fleet, "batch.gateway.filesUri=s3://api-files/v1")
    assert "filesUri" in refused(fleet, "batch.gateway.filesUri=http://x/y")
    assert "cleanupSeconds" in refused(fleet, "batch.dispatcher.cleanupSeconds=0")


@pytest.mark.timeout(120)
def test_dispatcher_pod_passes_pod_security_restricted(fleet: Fleet) -> None:
    """The rendered pod, created (server-side dry run) in a namespace enforcing `restricted`."""
    (dep,) = named(render(fleet, "batch.dispatcher.enabled=true"), "Deployment", DISPATCHER)
    core = fleet.core_v1()
    ns = f"psa-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        {
            "metadata": {
                "name": ns,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            }
        }
    )
    try:
        template = dep["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "dispatcher", "labels": template["metadata"]["labels"]},
            "spec": {**template["spec"], "serviceAccountName": "default"},
        }
        core.create_namespaced_pod(ns, pod, dry_run="All")  # refused (403) if not restricted
        privileged = {
            **pod,
            "spec": {
                **pod["spec"],
                "containers": [
                    {**pod["spec"]["containers"][0], "securityContext": {"privileged": True}}
                ],
            },
        }
        from kubernetes.client.exceptions import ApiException

        with pytest.raises(ApiException) as refused:  # the check can fail
            core.create_namespaced_pod(ns, privileged, dry_run="All")
        assert refused.value.status == 403
    finally:
        core.delete_namespace(ns)
