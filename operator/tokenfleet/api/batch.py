"""InferenceBatch (namespaced): an OpenAI-format batch of requests served by an InferenceJob.

The input is a JSONL file in an S3-compatible object store, one request a line in the OpenAI
batch format (``custom_id``, ``method``, ``url``, ``body``). ``tokenfleet dispatcher`` (outside
the operator's event loop) splits it into work units, leases each unit to one of the job's
ready replicas, and writes ``output.jsonl`` and ``errors.jsonl`` under ``spec.output.uri``;
its progress (a manifest and per-unit results) lives in the store next to them, not in etcd.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from tokenfleet.api.base import CelRule, StatusModel, WireModel
from tokenfleet.api.models import Conditions, Name

S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\s]*$"

MIN_COMPLETION_WINDOW_SECONDS = 60
MAX_COMPLETION_WINDOW_SECONDS = 7 * 86400


class BatchPhase(StrEnum):
    """The lifecycle of a batch (OpenAI's batch statuses, CamelCase)."""

    VALIDATING = "Validating"
    """The input is being read and checked."""
    IN_PROGRESS = "InProgress"
    """Requests are being served."""
    FINALIZING = "Finalizing"
    """Every request has its result; the output and error files are being written."""
    COMPLETED = "Completed"
    """Every input line is answered in the output or the error file."""
    FAILED = "Failed"
    """The batch could not run (e.g. its input is missing or unreadable)."""
    EXPIRED = "Expired"
    """The completion window ended first: the output holds what finished, the error file the
    rest."""
    CANCELLING = "Cancelling"
    """spec.cancel was set: in-flight requests are abandoned, partial results written."""
    CANCELLED = "Cancelled"
    """Cancelled: the output holds what finished, the error file the rest."""


TERMINAL_PHASES = frozenset(
    {BatchPhase.COMPLETED, BatchPhase.FAILED, BatchPhase.EXPIRED, BatchPhase.CANCELLED}
)


class BatchPriority(StrEnum):
    """How batch work shares replicas with online (gateway) traffic."""

    BACKGROUND = "Background"
    """Fill what online traffic leaves idle: a replica's batch requests in flight are halved
    whenever its tokens/s falls well below the declared figure (online load), and grow back
    one by one while it keeps pace."""
    STANDARD = "Standard"
    """A fixed number of batch requests in flight per replica (dispatcher setting)."""


class BatchInput(WireModel):
    """Where the requests are."""

    uri: Annotated[str, Field(min_length=8, max_length=2048, pattern=S3_URI)]
    """s3://bucket/key of a JSONL file, one OpenAI batch request a line
    ({"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/completions",
    "body"})."""


class BatchOutput(WireModel):
    """Where the results go."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.uri.endsWith('/')",
            message="output.uri must end with '/' (a prefix: output.jsonl and errors.jsonl go "
            "under it)",
            field_path=".uri",
            check=lambda o: o.uri.endswith("/"),
        ),
    )

    uri: Annotated[str, Field(min_length=8, max_length=2048, pattern=S3_URI)]
    """s3://bucket/prefix/ (ending in '/'): the dispatcher writes output.jsonl (one result a
    line), errors.jsonl (one error a line) and its progress (.state/) under it."""


class InferenceBatchSpec(WireModel):
    """Desired state of an inference batch."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.jobName == oldSelf.jobName",
            message="jobName is immutable",
            field_path=".jobName",
            check=lambda _: True,  # transition rules: only the API server has oldSelf
        ),
        CelRule(
            rule="self.input.uri == oldSelf.input.uri && self.output.uri == oldSelf.output.uri",
            message="input.uri and output.uri are immutable",
            field_path=".input.uri",
            check=lambda _: True,
        ),
        CelRule(
            rule="!has(oldSelf.cancel) || !oldSelf.cancel || self.cancel",
            message="cancel cannot be unset once true",
            field_path=".cancel",
            check=lambda _: True,
        ),
    )

    job_name: Name
    """The InferenceJob (same namespace) whose replicas serve the requests; a request's
    ``body.model`` is ignored."""
    input: BatchInput
    output: BatchOutput
    credentials_secret_name: Name
    """Secret (same namespace) with the store's credentials: keys AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, and optionally AWS_ENDPOINT_URL (default: the dispatcher's
    --s3-endpoint) and AWS_REGION."""
    completion_window_seconds: Annotated[
        int, Field(ge=MIN_COMPLETION_WINDOW_SECONDS, le=MAX_COMPLETION_WINDOW_SECONDS)
    ] = 86400
    """Time from creation by which every request is to be answered, seconds (OpenAI: 24h).
    After it the batch is Expired: finished results are kept, the rest are listed in the error
    file."""
    priority: BatchPriority = BatchPriority.BACKGROUND
    """Background (yield to online traffic) or Standard."""
    cancel: bool = False
    """Set to true to cancel: nothing new is sent, partial results are written (Cancelled)."""


class RequestCounts(StatusModel):
    """Requests of the batch by outcome."""

    total: Annotated[int, Field(ge=0)] = 0
    """Lines of the input file."""
    completed: Annotated[int, Field(ge=0)] = 0
    """Lines answered with a result."""
    failed: Annotated[int, Field(ge=0)] = 0
    """Lines answered with an error (malformed, refused, expired or cancelled)."""


class BatchTokens(StatusModel):
    """Tokens of the committed results."""

    input: Annotated[int, Field(ge=0)] = 0
    output: Annotated[int, Field(ge=0)] = 0


class BatchEnergy(StatusModel):
    """Energy of the committed results by target (replica watts x serving time), kWh."""

    rack_kwh: Annotated[float, Field(ge=0)] = 0
    vehicle_kwh: Annotated[float, Field(ge=0)] = 0


class InferenceBatchStatus(StatusModel):
    """Observed state of an inference batch (written by tokenfleet dispatcher)."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions | None = None
    phase: BatchPhase | None = None
    request_counts: RequestCounts | None = None
    tokens: BatchTokens | None = None
    energy: BatchEnergy | None = None
    expires_at: datetime | None = None
    """creationTimestamp + completionWindowSeconds."""
    estimated_completion_time: datetime | None = None
    """When the last request is expected to be answered at the current pace (ETA)."""
    deadline_at_risk: bool | None = None
    """The ETA is past expiresAt: the dispatcher asks the job for more tokens/s (annotation
    tokenfleet.io/batch-tokens-per-second on the InferenceJob)."""
    requested_tokens_per_second: Annotated[float, Field(ge=0)] | None = None
    """Tokens/s the batch asked of its job to finish in time (0 when not at risk)."""
    output_uri: Annotated[str, Field(max_length=2048)] | None = None
    """The results, one JSON line per answered request (OpenAI batch output format)."""
    error_uri: Annotated[str, Field(max_length=2048)] | None = None
    """The errors, one JSON line per failed request, with a reason."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reissued_requests: Annotated[int, Field(ge=0)] | None = None
    """Requests sent again because their replica left (a car unplugged or departed, a replica
    moved) or their lease expired."""


class InferenceBatch(WireModel):
    """An OpenAI-format batch of inference requests served by an InferenceJob."""

    api_version: Literal["tokenfleet.io/v1alpha1"]
    kind: Literal["InferenceBatch"]
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: InferenceBatchSpec
    status: InferenceBatchStatus | None = None
