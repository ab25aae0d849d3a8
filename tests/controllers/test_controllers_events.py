"""Events about cluster-scoped objects: shaped so `kubectl describe` finds them."""

from __future__ import annotations

from datetime import UTC, datetime

from tokenfleet.controllers.events import CLUSTER_EVENTS_NAMESPACE, cluster_event


def test_cluster_event_has_no_involved_namespace_and_lives_in_default() -> None:
    body = {
        "apiVersion": "tokenfleet.io/v1alpha1",
        "kind": "ImmersionPod",
        "metadata": {"name": "tank-07", "uid": "u-1"},
    }
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    event = cluster_event(body, "Warning", "LeakDetected", "x" * 5000, now=now, instance="pod-a")
    # the apiserver accepts an empty involvedObject.namespace only in default or kube-system,
    # and kubectl describe of a cluster-scoped object looks for exactly that
    assert CLUSTER_EVENTS_NAMESPACE == "default"
    assert event["metadata"] == {"generateName": "tank-07.", "namespace": "default"}
    assert event["involvedObject"] == {
        "apiVersion": "tokenfleet.io/v1alpha1",
        "kind": "ImmersionPod",
        "name": "tank-07",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"], len(event["message"])) == (
        "Warning",
        "LeakDetected",
        1024,
    )
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-12-02T10:00:00Z"
    assert event["source"] == {"component": "tokenfleet-operator"}
    assert event["reportingInstance"] == "pod-a"


def test_node_event_omits_missing_fields() -> None:
    event = cluster_event(
        {"kind": "Node", "metadata": {"name": "ev-1"}},
        "Warning",
        "TelemetryRejected",
        "m",
        now=datetime(2026, 1, 1, tzinfo=UTC),
        instance="h",
    )
    assert event["involvedObject"] == {"kind": "Node", "name": "ev-1"}
