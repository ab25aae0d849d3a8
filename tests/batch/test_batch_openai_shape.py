"""An InferenceBatch as OpenAI's Batch object (what /v1/batches answers), checked with the
official client's own model."""

from __future__ import annotations

from openai.types import Batch

from tokenfleet.gateway.batches import openai_batch


def obj(phase: str | None, **status: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": "batch-abc",
            "creationTimestamp": "2026-12-02T10:00:00Z",
            "annotations": {
                "tokenfleet.io/openai-endpoint": "/v1/completions",
                "tokenfleet.io/openai-input-file": "file-1",
                "tokenfleet.io/openai-metadata": '{"team": "a"}',
            },
        },
        "spec": {"jobName": "j"},
        "status": {"phase": phase, **status} if phase else {},
    }


def test_new_batch_is_validating() -> None:
    batch = Batch.model_validate(openai_batch(obj(None)))
    assert (batch.id, batch.status, batch.endpoint) == (
        "batch-abc",
        "validating",
        "/v1/completions",
    )
    assert batch.input_file_id == "file-1" and batch.metadata == {"team": "a"}
    assert batch.output_file_id is None and batch.created_at == 1796205600


def test_completed_batch_has_its_files_and_counts() -> None:
    done = obj(
        "Completed",
        requestCounts={"total": 3, "completed": 2, "failed": 1},
        finishedAt="2026-12-02T10:05:00Z",
        startedAt="2026-12-02T10:00:01Z",
        expiresAt="2026-12-03T10:00:00Z",
    )
    batch = Batch.model_validate(openai_batch(done))
    assert batch.status == "completed"
    assert (batch.output_file_id, batch.error_file_id) == ("batch-abc-output", "batch-abc-errors")
    assert batch.request_counts is not None and batch.request_counts.failed == 1
    assert batch.completed_at == 1796205900 and batch.failed_at is None


def test_failed_batch_names_the_cause() -> None:
    failed = obj(
        "Failed",
        conditions=[
            {"type": "Ready", "status": "False", "reason": "InputNotFound", "message": "m"}
        ],
    )
    batch = Batch.model_validate(openai_batch(failed))
    assert batch.status == "failed" and batch.errors is not None
    assert batch.errors.data is not None and batch.errors.data[0].code == "InputNotFound"
