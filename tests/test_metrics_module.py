"""Every Prometheus series is defined in :mod:`tokenfleet.metrics` (the gateway, a separate
process with its own per-instance registry, keeps :mod:`tokenfleet.gateway.metrics`)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "operator" / "tokenfleet"
ALLOWED = {PACKAGE / "metrics.py", PACKAGE / "gateway" / "metrics.py"}
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


def metric_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus_client"):
            found |= {a.name for a in node.names if a.name in METRIC_TYPES}
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in METRIC_TYPES
            and isinstance(node.value, ast.Name)
            and node.value.id == "prometheus_client"
        ):
            found.add(node.attr)
    return found


def test_no_metric_is_defined_outside_the_metrics_module() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(found)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in ALLOWED and (found := metric_imports(path))
    }
    assert offenders == {}


def test_the_model_delivery_series_are_there() -> None:
    from prometheus_client import REGISTRY

    from tokenfleet import metrics

    operator_names = {m.name for m in REGISTRY.collect()}
    assert "tokenfleet_model_delivery_refused" in operator_names
    cache_names = {m.name for m in metrics.MODELCACHE_REGISTRY.collect()}
    assert {
        "tokenfleet_modelcache_fetched_bytes",
        "tokenfleet_modelcache_hits",
        "tokenfleet_modelcache_misses",
        "tokenfleet_modelcache_verification_failures",
        "tokenfleet_modelcache_evictions",
        "tokenfleet_modelcache_used_bytes",
    } <= cache_names
    # the cache's series stay off the operator's endpoint
    assert not {n for n in operator_names if n.startswith("tokenfleet_modelcache_")}
