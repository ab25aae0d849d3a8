"""The chart's packaged observability: the PrometheusRule checked and unit-tested with Prometheus'
own `promtool` (extracted by `make promtool` into .bin/ from Debian's package), the Grafana
dashboard and the PodMonitor, and every metric they use exported by the operator."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from e2e.chart_kit import CHART, KUBE_VERSION, helm
from e2e.cluster.fleet import BIN_DIR, REPO, Fleet

PROMTOOL = BIN_DIR / "promtool"
RULE_TESTS = REPO / "e2e" / "promtool" / "tokenfleet-rules.test.yaml"
ALERTS = {
    "TokenfleetOperatorDown",
    "TokenfleetPlansFailing",
    "TokenfleetRuntimesFailing",
    "TokenfleetTankLeakLatched",
    "TokenfleetJobBelowTarget",
    "TokenfleetTankTelemetryStale",
}


def render(fleet: Fleet, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "tf", str(CHART), "-n", "tokenfleet-system", "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(fleet, *args, stdout_only=True)) if d]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} missing: run `make promtool`")
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def rules_file(fleet: Fleet, tmp_path: Path) -> Path:
    (rule,) = [
        d for d in render(fleet, "prometheus.rules.enabled=true") if d["kind"] == "PrometheusRule"
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def exported_metrics() -> set[str]:
    """Every series name the operator exports (controllers loaded, build_info recorded)."""
    from tokenfleet import metrics
    from tokenfleet.controllers.main import load_controllers

    load_controllers()
    metrics.record_build_info()
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(tokenfleet_[a-z_]+)\b", expr))


def test_rules_pass_promtool_check_and_unit_tests(fleet: Fleet, tmp_path: Path) -> None:
    rules = rules_file(fleet, tmp_path)
    spec = yaml.safe_load(rules.read_text())
    assert {r["alert"] for g in spec["groups"] for r in g["rules"]} == ALERTS
    checked = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout + checked.stderr
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr
    # every alert has at least one test that expects it to fire
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == ALERTS


def test_a_broken_rule_fails_promtool(fleet: Fleet, tmp_path: Path) -> None:
    """The check can fail: a rule with a typo'd function is rejected."""
    rules = rules_file(fleet, tmp_path)
    rules.write_text(rules.read_text().replace("absent(", "absnt(", 1))
    checked = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert checked.returncode != 0


def test_rules_and_dashboard_use_only_exported_metrics(fleet: Fleet, tmp_path: Path) -> None:
    exported = exported_metrics()
    spec = yaml.safe_load(rules_file(fleet, tmp_path).read_text())
    used = {m for g in spec["groups"] for r in g["rules"] for m in metric_names(r["expr"])}
    dashboard = json.loads((CHART / "dashboards" / "tokenfleet.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    assert len(exprs) >= 15
    for expr in exprs:
        used |= metric_names(expr)
    missing = used - exported
    assert not missing, f"not exported by the operator: {sorted(missing)}"
    titles = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert titles == {"Fleet", "Jobs", "Tanks", "Pools and moves"}


def test_dashboard_configmap_podmonitor_and_servicemonitor(fleet: Fleet) -> None:
    assert not [
        d for d in render(fleet) if d["kind"] in ("ConfigMap", "PodMonitor", "PrometheusRule")
    ]
    docs = render(
        fleet,
        "grafana.dashboards.enabled=true",
        "prometheus.podmonitor.enabled=true",
        "prometheus.servicemonitor.enabled=true",
    )
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["tokenfleet.json"])["uid"] == "tokenfleet-overview"
    (pm,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "tokenfleet-runtime",
        "app.kubernetes.io/instance": "tf",
    }
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
