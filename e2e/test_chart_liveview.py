"""The chart's live view (``gateway.liveView.enabled``): ``--live-view`` on the gateway and exactly
the read RBAC the view's code calls, checked by rendering and on the real API server.

The need is derived from ``tokenfleet/liveview/server.py``: every ``list_cluster_custom_object``
of a tokenfleet kind and ``list_event_for_all_namespaces`` is a ``list`` on that resource,
cluster-wide. What the gateway's own ClusterRole already grants (InferenceJobs) plus the
live-view ClusterRole must cover the need; the live-view ClusterRole grants nothing else.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.chart_kit import CHART, KUBE_VERSION, helm, service_account_kubeconfig
from e2e.cluster.fleet import REPO, Fleet

Rule = tuple[str, str, str]
RELEASE = "tflv"
LIVE_VIEW_SOURCE = REPO / "operator" / "tokenfleet" / "liveview" / "server.py"


def needed() -> set[Rule]:
    """(group, resource, verb) the live view calls (see the module docstring)."""
    source = LIVE_VIEW_SOURCE.read_text()
    plurals = set(re.findall(r'list_cluster_custom_object\(GROUP, VERSION, "(\w+)"\)', source))
    plurals |= set(re.findall(r'\bcluster\("(\w+)"\)', source))  # its local list helper
    rules = {("tokenfleet.io", p, "list") for p in plurals}
    if "list_event_for_all_namespaces" in source:
        rules.add(("", "events", "list"))
    calls = set(re.findall(r"\.(\w+)\(", source)) & {
        n for n in dir(__import__("kubernetes").client.CoreV1Api) if not n.startswith("_")
    }
    assert calls <= {"list_event_for_all_namespaces"}, f"update needed() for {sorted(calls)}"
    return rules


def render(fleet: Fleet, namespace: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(fleet, *args, stdout_only=True)) if d]


def granted(role: dict[str, Any]) -> set[Rule]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def named(docs: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def gateway_args(docs: list[dict[str, Any]]) -> list[str]:
    (dep,) = named(docs, "Deployment", "-gateway")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_live_view_is_off_by_default_and_on_grants_exactly_what_it_reads(fleet: Fleet) -> None:
    need = needed()
    assert ("tokenfleet.io", "immersionpods", "list") in need and ("", "events", "list") in need
    off = render(fleet, "tokenfleet-system")
    assert "--live-view" not in gateway_args(off)
    assert named(off, "ClusterRole", "-live-view") == []
    assert named(off, "ClusterRoleBinding", "-live-view") == []
    (base,) = named(off, "ClusterRole", "-gateway")
    assert not need <= granted(base), "the gateway alone must not read what only the view needs"

    on = render(fleet, "tokenfleet-system", "gateway.liveView.enabled=true")
    assert "--live-view" in gateway_args(on)
    (base,) = named(on, "ClusterRole", "-gateway")
    (view,) = named(on, "ClusterRole", "-gateway-live-view")
    assert need <= granted(base) | granted(view)
    assert granted(view) == need - granted(base)
    (binding,) = named(on, "ClusterRoleBinding", "-gateway-live-view")
    assert binding["roleRef"]["name"] == view["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-tokenfleet-gateway",
         "namespace": "tokenfleet-system"}
    ]  # fmt: skip

    # rbac.create=false: the flag, no RBAC objects; gateway off: neither
    no_rbac = render(
        fleet, "tokenfleet-system", "gateway.liveView.enabled=true", "rbac.create=false"
    )
    assert "--live-view" in gateway_args(no_rbac)
    assert named(no_rbac, "ClusterRole", "-live-view") == []
    gone = render(
        fleet, "tokenfleet-system", "gateway.liveView.enabled=true", "gateway.enabled=false"
    )
    assert (
        named(gone, "ClusterRole", "-live-view") == []
        and named(gone, "Deployment", "-gateway") == []
    )
    bad = helm(
        fleet, "template", RELEASE, str(CHART), "--set", "gateway.liveView.enable=true", check=False
    )
    assert "liveView" in bad, bad[-500:]


def _apply_gateway_rbac(fleet: Fleet, namespace: str, docs: list[dict[str, Any]]) -> list[str]:
    """Apply the gateway's ServiceAccount and its cluster RBAC; returns what to delete after."""
    wanted = [
        d
        for d in docs
        if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
        and "-gateway" in d["metadata"]["name"]
    ]
    fleet.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(wanted))
    return [
        f"{d['kind'].lower()}/{d['metadata']['name']}"
        for d in wanted
        if d["kind"] != "ServiceAccount"
    ]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_gateway_account_reads_the_live_view_on_the_api_server_only_when_enabled(
    fleet: Fleet, tmp_path: Path, enabled: bool
) -> None:
    """The rendered RBAC on the real API server, as the gateway's ServiceAccount: the live view's
    own read (LiveView.read) succeeds with liveView.enabled, and is forbidden without it."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from e2e.operator_kit import install_crds
    from tokenfleet.liveview.server import LiveView

    install_crds(fleet)
    namespace = f"lv-{uuid.uuid4().hex[:6]}"
    fleet.kubectl("create", "namespace", namespace)
    docs = render(fleet, namespace, f"gateway.liveView.enabled={str(enabled).lower()}")
    cluster_objects = _apply_gateway_rbac(fleet, namespace, docs)
    try:
        kubeconfig = service_account_kubeconfig(
            fleet, namespace, f"{RELEASE}-tokenfleet-gateway", tmp_path / "gateway.kubeconfig"
        )
        api = config.new_client_from_config(config_file=str(kubeconfig))
        view = LiveView(api, dict)

        def read() -> dict[str, Any] | ApiException:
            try:
                return view.read()
            except ApiException as error:
                return error

        # RBAC changes reach the authorizer's cache within a moment: retry a forbidden read
        from e2e.operator_kit import wait_for

        if enabled:
            state = wait_for(
                lambda: r if isinstance(r := read(), dict) else None, 30, "the live view's read"
            )
            assert {"tanks", "pools", "jobs", "events"} <= set(state), state
        else:
            result = read()
            assert isinstance(result, ApiException) and result.status == 403, result
        # never more than reading: the account writes nothing the view could need
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as denied:
            core.create_namespaced_event(
                namespace,
                {
                    "metadata": {"generateName": "x-"},
                    "involvedObject": {"kind": "Pod", "name": "x"},
                },
            )
        assert denied.value.status == 403
    finally:
        for obj in cluster_objects:
            fleet.kubectl("delete", obj, "--ignore-not-found", check=False)
        fleet.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
