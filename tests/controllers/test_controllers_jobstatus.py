"""Every case of an InferenceJob's status (controllers/jobstatus.py), without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tokenfleet.api.conditions import get_condition
from tokenfleet.api.models import InferenceJobStatus, PlacementState
from tokenfleet.controllers import jobstatus
from tokenfleet.controllers.jobstatus import Counts, JobStatusFields, Readiness, readiness
from tokenfleet.controllers.replicas import NodeKey, Replica

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Plan:
    desired: Mapping[NodeKey, Any] = field(default_factory=dict)
    desired_replicas: int = 0
    shortfall_reason: str | None = None
    shortfall_message: str | None = None


def plan(*nodes: str, reason: str | None = None, message: str | None = None) -> Plan:
    return Plan({(n, "int4"): object() for n in nodes}, len(nodes), reason, message)


def rep(node: str, state: PlacementState) -> Replica:
    return Replica(node, "int4", "Vehicle", state, "2026-11-25T11:00:00Z")


def case(**kw: Any) -> Readiness:
    defaults: dict[str, Any] = {
        "invalid": None,
        "decision": plan("car-1"),
        "counts": Counts(ready=1),
        "in_sync": True,
        "min_replicas": 1,
    }
    return readiness(**{**defaults, **kw})


def test_an_invalid_spec_is_stalled() -> None:
    assert case(invalid="spec.replicas: bad") == Readiness(
        False, "InvalidSpec", "spec.replicas: bad", stalled=True
    )


def test_before_the_first_plan_the_job_is_planning() -> None:
    assert case(decision=None) == Readiness(
        "Unknown", "Planning", "waiting for the fleet plan", reconciling=True
    )


def test_no_replica_where_one_is_needed_is_stalled_with_the_plans_reason() -> None:
    short = plan(reason="StaleTelemetry", message="serving 0 of 40 tokens/s")
    assert case(decision=short, counts=Counts()) == Readiness(
        False, "StaleTelemetry", "serving 0 of 40 tokens/s", stalled=True
    )
    assert case(decision=plan(), counts=Counts()) == Readiness(
        False, "NoEligibleNode", "no node can take a replica", stalled=True
    )
    # replicas.min 0 and nothing short: not stalled, just serving nothing
    assert case(decision=plan(), counts=Counts(), min_replicas=0).reason == "Serving"


def test_a_load_failure_names_the_node_and_the_runtimes_message() -> None:
    state = case(
        decision=plan(reason="LoadFailed", message="m"),
        counts=Counts(),
        load_failure=("car-1", "model file missing"),
    )
    assert state.reason == "LoadFailed" and state.stalled
    assert state.message == (
        "the model failed to load (retried after a back-off): on car-1: model file missing"
    )


def test_converging_is_placing_or_moving() -> None:
    placing = case(decision=plan("car-1", "car-2"), counts=Counts(loading=2), in_sync=False)
    assert placing == Readiness(
        False, "Placing", "0/2 replicas loaded, 2 loading, 0 unloading", reconciling=True
    )
    moving = case(decision=plan("car-2"), counts=Counts(ready=1, unloading=1), in_sync=False)
    assert moving == Readiness(
        True, "Moving", "1/1 replicas loaded, 0 loading, 1 unloading", reconciling=True
    )
    swapping = case(
        decision=plan("car-1", "car-2"), counts=Counts(ready=1, loading=1), in_sync=False
    )
    assert swapping.reason == "Moving" and swapping.ready is False


def test_below_target_is_ready_above_the_floor_and_stalled_below_it() -> None:
    short = plan("car-1", reason="InsufficientCapacity", message="serving 20 of 80 tokens/s")
    assert case(decision=short, counts=Counts(ready=1)) == Readiness(
        True, "BelowTarget", "serving 20 of 80 tokens/s"
    )
    below = case(decision=short, counts=Counts(ready=1), min_replicas=2)
    assert below == Readiness(False, "BelowTarget", "serving 20 of 80 tokens/s", stalled=True)


def test_serving_counts_failed_placements_awaiting_retry() -> None:
    assert case() == Readiness(True, "Serving", "1/1 replicas loaded")
    with_failed = case(counts=Counts(ready=1, failed=2))
    assert (
        with_failed.message == "1/1 replicas loaded (2 failed placements awaiting retry elsewhere)"
    )


def test_in_sync_means_the_record_holds_exactly_the_plan() -> None:
    want = plan("car-1")
    assert jobstatus.in_sync([rep("car-1", PlacementState.LOADED)], want)
    assert not jobstatus.in_sync([rep("car-1", PlacementState.LOADING)], want)
    assert not jobstatus.in_sync(
        [rep("car-1", PlacementState.LOADED), rep("car-2", PlacementState.UNLOADING)], want
    )
    assert jobstatus.in_sync(
        [rep("car-1", PlacementState.LOADED), rep("car-2", PlacementState.FAILED)], want
    )


def test_status_fields_are_the_api_models() -> None:
    assert set(JobStatusFields.__annotations__) == set(InferenceJobStatus.model_fields)


def test_the_whole_status_is_what_the_api_accepts() -> None:
    record = [rep("car-1", PlacementState.LOADED), rep("car-2", PlacementState.FAILED)]
    status = jobstatus.job_status(
        generation=3,
        previous={},
        record=record,
        decision=plan("car-1"),
        invalid=None,
        min_replicas=1,
        tokens_per_second=lambda variant: 20.0,
        service_name="chat-tokenfleet",
        now=NOW,
    )
    InferenceJobStatus.model_validate(status)
    assert status["observedGeneration"] == 3 and status["readyReplicas"] == 1
    assert status["desiredReplicas"] == 1 and status["servedTokensPerSecond"] == 20.0
    assert [p["state"] for p in status["placements"]] == ["Loaded", "Failed"]
    assert status["serviceName"] == "chat-tokenfleet" and status["shortfallReason"] is None
    ready = get_condition(status["conditions"], "Ready")
    assert ready is not None and ready["reason"] == "Serving"
    assert ready["lastTransitionTime"] == "2026-11-25T12:00:00Z"
    assert get_condition(status["conditions"], "Reconciling") is None


def test_without_a_plan_the_last_desired_count_is_kept() -> None:
    kept = jobstatus.job_status(
        generation=1,
        previous={"desiredReplicas": 4},
        record=[],
        decision=None,
        invalid="bad",
        min_replicas=1,
        tokens_per_second=lambda variant: 0.0,
        service_name="s",
        now=NOW,
    )
    assert kept["desiredReplicas"] == 4
    fresh = jobstatus.job_status(
        generation=1,
        previous={},
        record=[],
        decision=None,
        invalid=None,
        min_replicas=1,
        tokens_per_second=lambda variant: 0.0,
        service_name="s",
        now=NOW,
    )
    assert "desiredReplicas" not in fresh
    assert jobstatus.merge_patch(fresh)["desiredReplicas"] is None  # cleared on the server
