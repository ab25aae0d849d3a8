"""The chart's RBAC against what the operator's code calls: no verb beyond need.

The need is derived from the code: every resource a kopf handler of the operator watches or
indexes (list, watch), every kind whose handlers patch (kopf's finalizers, annotations and
status: patch, ``/status`` patch), the direct API calls in ``controllers/kube.py`` (read -> get,
create -> create, patch -> patch, ``list_node`` -> list and watch: the node watch), kopf's
Events (create) and, with HA, kopf's peering (list, watch, patch, and create by
``tokenfleet run --peering``). The rendered ClusterRole/Roles must
grant exactly that: no delete, update, secrets, CRD or namespace reads.
"""

from __future__ import annotations

import re
from typing import Any

import kopf
import pytest
import yaml

from e2e.chart_kit import CHART, KUBE_VERSION, helm
from e2e.cluster.fleet import REPO, Fleet
from tokenfleet.controllers.main import load_controllers

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)

#: kube.py's client calls -> (group, resource)
_KUBE_KINDS = {
    "service": ("", "services"),
    "endpoint_slice": ("discovery.k8s.io", "endpointslices"),
    "secret": ("", "secrets"),
    "event": ("", "events"),
}
#: granted in the operator's own (release) namespace only, by the "-secrets" Role
OWN_NAMESPACE_ONLY = {("", "secrets", "get")}
_VERBS = {"read": "get", "create": "create", "patch": "patch"}


def cluster_scoped() -> set[tuple[str, str]]:
    scoped = {("", "nodes")}
    for path in (REPO / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["scope"] == "Cluster":
            scoped.add((crd["spec"]["group"], crd["spec"]["names"]["plural"]))
    return scoped


def needed(ha: bool, peering: str) -> set[Rule]:
    """What the code calls (see the module docstring)."""
    load_controllers()
    registry = kopf.get_default_registry()
    rules: set[Rule] = set()
    for attr in ("_watching", "_indexing", "_changing", "_spawning"):
        for handler in getattr(registry, attr).get_all_handlers():
            selector = handler.selector
            group = selector.group or ""
            plural = str(selector.plural or selector.any_name)  # kopf keeps the name as given
            rules |= {(group, plural, "list"), (group, plural, "watch")}
            if attr in ("_changing", "_spawning"):  # finalizers, progress, status
                rules |= {(group, plural, "patch"), (group, f"{plural}/status", "patch")}
    source = (REPO / "operator/tokenfleet/controllers/kube.py").read_text()
    for verb, kind in re.findall(r"\.(read|create|patch)_namespaced_(\w+?)\b", source):
        if kind == "custom_object_status":
            rules.add(("tokenfleet.io", "inferencejobs/status", "patch"))
        else:
            group, resource = _KUBE_KINDS[kind]
            rules.add((group, resource, _VERBS[verb]))
    if re.search(r"\.list_node\(", source):  # the node watch: a LIST, then WATCH on it
        rules |= {("", "nodes", "list"), ("", "nodes", "watch")}
    rules.add(("", "events", "create"))
    if ha:
        rules |= {("kopf.dev", peering, v) for v in ("list", "watch", "patch", "create")}
    return rules


def split(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the other Roles, the release namespace's Secrets Role)."""
    roles = [d for d in docs if d["kind"] == "Role"]
    (secrets,) = [r for r in roles if r["metadata"]["name"] == "tf-tokenfleet-secrets"]
    assert secrets["metadata"]["namespace"] == "tokenfleet-system"
    assert granted(secrets) == OWN_NAMESPACE_ONLY
    (binding,) = [
        d
        for d in docs
        if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "tf-tokenfleet-secrets"
    ]
    assert binding["roleRef"]["name"] == "tf-tokenfleet-secrets"
    return [
        r
        for r in roles
        if r is not secrets and not r["metadata"]["name"].endswith("-cluster-events")
    ], secrets


def render(fleet: Fleet, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "tf", str(CHART), "-n", "tokenfleet-system", "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(fleet, *args, stdout_only=True)) if d]


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


def is_operators(doc: dict[str, Any]) -> bool:
    """The operator's own RBAC object (the gateway has its own, checked in test_chart.py)."""
    return bool(doc["metadata"]["name"] == "tf-tokenfleet")


@pytest.mark.parametrize("replicas", [1, 2])
def test_cluster_role_grants_exactly_what_the_code_calls(fleet: Fleet, replicas: int) -> None:
    docs = render(fleet, f"operator.replicas={replicas}")
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and is_operators(d)]
    others, _ = split(docs)
    assert others == []
    have = granted(role)
    need = needed(replicas > 1, "clusterkopfpeerings") - OWN_NAMESPACE_ONLY
    assert have - need == set(), f"granted beyond need: {sorted(have - need)}"
    assert need - have == set(), f"needed but not granted: {sorted(need - have)}"
    verbs = {verb for _, _, verb in have}
    assert not verbs & {"delete", "deletecollection", "update", "escalate", "bind", "impersonate"}
    resources = {resource for _, resource, _ in have}
    assert not resources & {"secrets", "customresourcedefinitions", "namespaces", "configmaps"}
    assert ("", "secrets", "get") in needed(False, "")  # derived from kube.read_secret


def test_watch_namespaces_gives_roles_and_a_cluster_role_for_cluster_kinds_only(
    fleet: Fleet,
) -> None:
    docs = render(fleet, "operator.replicas=2", "operator.watchNamespaces={ml,edge}")
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole" and is_operators(d)]
    others, _ = split(docs)
    roles = {d["metadata"]["namespace"]: d for d in others}
    bindings = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "tf-tokenfleet"
    }
    # the watched namespaces and the release's (runtime pods, always watched)
    assert set(roles) == set(bindings) == {"ml", "edge", "tokenfleet-system"}
    need = needed(True, "kopfpeerings") - OWN_NAMESPACE_ONLY
    scoped = cluster_scoped()
    cluster_need = {r for r in need if (r[0], r[1].split("/")[0]) in scoped}
    assert granted(cluster_role) == cluster_need
    for ns, role in roles.items():
        assert granted(role) == need - cluster_need, ns
        assert bindings[ns]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "tf-tokenfleet",
        }
        assert bindings[ns]["subjects"][0]["namespace"] == "tokenfleet-system"
    # Events about cluster-scoped objects go to `default` (controllers/events.py)
    (events,) = [
        d
        for d in docs
        if d["metadata"]["name"] == "tf-tokenfleet-cluster-events" and d["kind"] == "Role"
    ]
    assert events["metadata"]["namespace"] == "default"
    assert granted(events) == {("", "events", "create")}
    # no namespaced kind at cluster scope: services elsewhere stay out of reach
    assert not {r for r in granted(cluster_role) if r[1] in ("services", "endpointslices", "pods")}


def test_rbac_create_false_renders_no_rbac(fleet: Fleet) -> None:
    docs = render(fleet, "rbac.create=false", "operator.watchNamespaces={ml}")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
