"""tokenfleet.api.conditions on raw status dicts."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tokenfleet.api import Condition, InferenceJobStatus
from tokenfleet.api.conditions import (
    get_condition,
    is_true,
    kstatus,
    remove_condition,
    rfc3339,
    set_condition,
    set_kstatus,
)

T0 = datetime(2026, 11, 25, 11, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def cond(type_: str, status: str, **extra: object) -> dict[str, object]:
    """A stored condition as the API server returns it."""
    return {
        "type": type_,
        "status": status,
        "reason": "Stored",
        "message": "",
        "lastTransitionTime": "2026-11-25T10:00:00Z",
        **extra,
    }


def test_new_condition_is_appended_with_all_fields() -> None:
    result = set_condition(
        None, "Ready", True, "Serving", "3/3 loaded", observed_generation=4, now=T0
    )
    assert result == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Serving",
            "message": "3/3 loaded",
            "lastTransitionTime": "2026-11-25T11:00:00Z",
            "observedGeneration": 4,
        }
    ]
    # The dict is a valid metav1.Condition for the status model.
    assert Condition.model_validate(result[0]).status == "True"
    InferenceJobStatus.model_validate({"conditions": result})


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], "Ready", True, "Serving", "2/3", observed_generation=1, now=T0)
    second = set_condition(first, "Ready", "True", "Serving", "3/3", observed_generation=2, now=T1)
    assert second[0]["lastTransitionTime"] == "2026-11-25T11:00:00Z"
    assert second[0]["message"] == "3/3"
    assert second[0]["observedGeneration"] == 2


def test_flip_sets_a_new_transition_time() -> None:
    first = set_condition([], "Ready", True, "Serving", now=T0)
    second = set_condition(first, "Ready", False, "NoEligibleNodes", "all cars left", now=T1)
    assert second[0]["status"] == "False"
    assert second[0]["reason"] == "NoEligibleNodes"
    assert second[0]["lastTransitionTime"] == "2026-11-25T11:05:00Z"
    third = set_condition(second, "Ready", "Unknown", "TelemetryStale", now=T1 + timedelta(1))
    assert third[0]["lastTransitionTime"] == "2026-11-26T11:05:00Z"


def test_unchanged_condition_gives_an_equal_list_so_no_patch_is_needed() -> None:
    first = set_condition([], "Ready", True, "Serving", "ok", observed_generation=3, now=T0)
    first = set_condition(first, "Reconciling", True, "Placing", now=T0)
    again = set_condition(first, "Ready", True, "Serving", "ok", observed_generation=3, now=T1)
    assert again == first


def test_input_is_not_mutated_and_order_is_kept() -> None:
    stored = [
        cond("Reconciling", "True", reason="Placing"),
        cond("Ready", "False", reason="Pending", observedGeneration=1),
    ]
    before = copy.deepcopy(stored)
    result = set_condition(stored, "Ready", True, "Serving", now=T0)
    assert stored == before
    assert [c["type"] for c in result] == ["Reconciling", "Ready"]
    # observedGeneration is carried over when the caller does not give one.
    assert result[1]["observedGeneration"] == 1
    assert result[1]["lastTransitionTime"] == "2026-11-25T11:00:00Z"


def test_duplicate_types_in_stored_status_are_collapsed() -> None:
    stored = [cond("Ready", "True", reason="A"), cond("Ready", "False", reason="B")]
    result = set_condition(stored, "Ready", True, "A", now=T0)
    assert len(result) == 1
    assert result[0]["lastTransitionTime"] == "2026-11-25T10:00:00Z"


def test_missing_transition_time_is_filled() -> None:
    result = set_condition([{"type": "Ready", "status": "True"}], "Ready", True, "Serving", now=T0)
    assert result[0]["lastTransitionTime"] == "2026-11-25T11:00:00Z"


@pytest.mark.parametrize("reason", ["", "not camel", "Has-Dash", "9Lives"])
def test_reason_must_be_camel_case(reason: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        set_condition([], "Ready", True, reason)


def test_status_must_be_a_condition_status() -> None:
    with pytest.raises(ValueError, match="True, False or Unknown"):
        set_condition([], "Ready", "yes", "Serving")


def test_long_messages_are_truncated() -> None:
    result = set_condition([], "Ready", False, "Failed", "x" * 40000, now=T0)
    assert len(result[0]["message"]) == 32768


def test_rfc3339_is_utc_seconds() -> None:
    cet = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=cet)) == "2026-11-25T11:00:00Z"
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2026, 11, 25))
    assert rfc3339().endswith("Z")


def test_get_remove_is_true() -> None:
    conditions = set_condition([], "Ready", True, "Serving", now=T0)
    conditions = set_condition(conditions, "Stalled", False, "Fine", now=T0)
    assert is_true(conditions, "Ready")
    assert not is_true(conditions, "Stalled")
    assert not is_true(None, "Ready")
    found = get_condition(conditions, "Ready")
    assert found is not None and found["reason"] == "Serving"
    found["reason"] = "Changed"
    assert conditions[0]["reason"] == "Serving"
    assert get_condition(conditions, "Nope") is None
    assert [c["type"] for c in remove_condition(conditions, "Stalled")] == ["Ready"]


def test_set_kstatus_abnormal_true() -> None:
    busy = set_kstatus(
        [],
        ready=False,
        reason="Placing",
        message="2/3",
        reconciling=True,
        observed_generation=5,
        now=T0,
    )
    assert {c["type"]: c["status"] for c in busy} == {"Ready": "False", "Reconciling": "True"}
    stuck = set_kstatus(busy, ready=False, reason="NoCapacity", stalled=True, now=T1)
    assert {c["type"]: c["status"] for c in stuck} == {"Ready": "False", "Stalled": "True"}
    # Ready stayed False: its transition time is kept.
    ready = get_condition(stuck, "Ready")
    assert ready is not None
    assert (ready["lastTransitionTime"], ready["reason"]) == ("2026-11-25T11:00:00Z", "NoCapacity")
    done = set_kstatus(stuck, ready=True, reason="Serving", now=T1)
    assert [c["type"] for c in done] == ["Ready"]


READY = {"type": "Ready", "status": "True"}
NOT_READY = {"type": "Ready", "status": "False"}
STALLED = {"type": "Stalled", "status": "True"}
RECONCILING = {"type": "Reconciling", "status": "True"}


@pytest.mark.parametrize(
    ("generation", "status", "expected"),
    [
        (2, {"observedGeneration": 1, "conditions": [READY]}, "InProgress"),
        (2, {"observedGeneration": 2, "conditions": [READY]}, "Current"),
        (2, {"observedGeneration": 2, "conditions": [NOT_READY]}, "InProgress"),
        (2, {"observedGeneration": 2, "conditions": [NOT_READY, STALLED]}, "Failed"),
        (2, {"observedGeneration": 2, "conditions": [READY, RECONCILING]}, "InProgress"),
        (2, None, "InProgress"),
        (None, {"conditions": [READY]}, "Current"),
    ],
)
def test_kstatus(generation: int | None, status: dict[str, object] | None, expected: str) -> None:
    assert kstatus(generation, status) == expected
