"""kopf settings, config from the environment, namespaces, metrics helpers."""

from __future__ import annotations

import argparse
import logging

import kopf
import pytest
from prometheus_client import REGISTRY

from tokenfleet import metrics
from tokenfleet.clock import SYSTEM_CLOCK
from tokenfleet.controllers.jobstatus import same_status as _same_status
from tokenfleet.controllers.main import _namespaces
from tokenfleet.controllers.replicas import from_wire
from tokenfleet.controllers.settings import FINALIZER, OperatorConfig, apply_kopf_settings


def test_kopf_settings_keep_state_out_of_status() -> None:
    settings = kopf.OperatorSettings()
    apply_kopf_settings(settings, OperatorConfig())
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.finalizer == FINALIZER == "tokenfleet.io/finalizer"
    assert settings.posting.level == logging.WARNING
    assert settings.watching.server_timeout == 300 and isinstance(
        settings.watching.server_timeout, int
    )
    assert settings.watching.client_timeout and settings.watching.client_timeout > 300
    assert settings.watching.label_selectors["pods"] == "app.kubernetes.io/name=tokenfleet-runtime"
    assert settings.peering.lifetime == 60


def test_peering_lifetime_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFLEET_PEERING_LIFETIME_SECONDS", "8")
    settings = kopf.OperatorSettings()
    apply_kopf_settings(settings, OperatorConfig.from_env())
    assert settings.peering.lifetime == 8 and isinstance(settings.peering.lifetime, int)


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFLEET_PLAN_DEBOUNCE_SECONDS", "0.1")
    monkeypatch.setenv("TOKENFLEET_TRITON_CONCURRENCY", "3")
    monkeypatch.setenv("TOKENFLEET_JOB_RESYNC_SECONDS", "not-a-number")
    config = OperatorConfig.from_env(runtime_namespace="rt")
    assert config.plan_debounce_seconds == 0.1
    assert config.triton_concurrency == 3
    assert config.job_resync_seconds == OperatorConfig().job_resync_seconds
    assert config.runtime_namespace == "rt"
    assert config.runtime_probe_seconds == 5.0


def test_runtime_probe_seconds_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFLEET_RUNTIME_PROBE_SECONDS", "0")
    assert OperatorConfig.from_env().runtime_probe_seconds == 0.0
    monkeypatch.setenv("TOKENFLEET_RUNTIME_PROBE_SECONDS", "2.5")
    assert OperatorConfig.from_env().runtime_probe_seconds == 2.5


def test_namespaces_include_the_runtime_namespace() -> None:
    config = OperatorConfig()
    args = argparse.Namespace(namespace=["a", "b"], all_namespaces=False)
    assert _namespaces(args, config) == (False, ["a", "b", "tokenfleet-system"])
    args = argparse.Namespace(namespace=[], all_namespaces=True)
    assert _namespaces(args, config) == (True, [])


def test_reconcile_timer_counts_results() -> None:
    def count(result: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "tokenfleet_reconciles_total", {"kind": "Test", "result": result}
            )
            or 0.0
        )

    with metrics.reconcile_timer("Test") as outcome:
        outcome["result"] = "noop"
    with pytest.raises(RuntimeError), metrics.reconcile_timer("Test"):
        raise RuntimeError("boom")
    assert count("noop") == 1 and count("error") == 1


def test_record_entries_round_trip_and_reject_garbage() -> None:
    raw = {
        "node": "car-1",
        "target": "Vehicle",
        "pool": "p",
        "variant": "int4",
        "state": "Loaded",
        "since": "2026-11-25T12:00:00Z",
        "reason": "Placed",
    }
    entry = from_wire(raw, SYSTEM_CLOCK)
    assert entry is not None and entry.to_wire() == raw
    assert from_wire({**raw, "state": "Exploded"}, SYSTEM_CLOCK) is None
    assert from_wire({**raw, "node": ""}, SYSTEM_CLOCK) is None


def test_same_status_ignores_nothing_it_sets() -> None:
    current = {"readyReplicas": 1, "shortfallReason": "X", "extra": 1}
    assert _same_status(current, {"readyReplicas": 1, "shortfallReason": "X"})
    assert not _same_status(current, {"readyReplicas": 2, "shortfallReason": "X"})
    assert not _same_status(current, {"readyReplicas": 1, "shortfallReason": None})


def test_runtime_ports_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # the chart passes runtime.httpPort/grpcPort/metricsPort as these
    default = OperatorConfig.from_env()
    assert (default.runtime_http_port, default.runtime_grpc_port) == (8000, 8001)
    assert default.runtime_metrics_port == 8002
    monkeypatch.setenv("TOKENFLEET_RUNTIME_HTTP_PORT", "9000")
    monkeypatch.setenv("TOKENFLEET_RUNTIME_GRPC_PORT", "9001")
    monkeypatch.setenv("TOKENFLEET_RUNTIME_METRICS_PORT", "9102")
    config = OperatorConfig.from_env()
    assert (config.runtime_http_port, config.runtime_grpc_port) == (9000, 9001)
    assert config.runtime_metrics_port == 9102


def test_runtime_pods_are_found_by_the_configured_label_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kopf

    from tokenfleet.controllers.context import OperatorContext, operator_memo
    from tokenfleet.controllers.indexes import runtime_pods_by_node

    monkeypatch.setenv("TOKENFLEET_RUNTIME_POD_LABEL", "example.com/runtime=triton")
    config = OperatorConfig.from_env()
    memo = operator_memo(OperatorContext.build(config))
    settings = kopf.OperatorSettings()
    apply_kopf_settings(settings, config)
    assert settings.watching.label_selectors["pods"] == "example.com/runtime=triton"

    def pod(labels: dict[str, str]) -> kopf.Body:
        return kopf.Body(
            {
                "metadata": {"namespace": "rt", "name": "p", "labels": labels},
                "spec": {"nodeName": "car-1"},
                "status": {"podIP": "127.0.0.1"},
            }
        )

    ours = {"example.com/runtime": "triton"}
    found = runtime_pods_by_node(body=pod(ours), labels=ours, memo=memo)
    assert found is not None and found["car-1"].name == "p"
    default = {"app.kubernetes.io/name": "tokenfleet-runtime"}
    assert runtime_pods_by_node(body=pod(default), labels=default, memo=memo) is None
