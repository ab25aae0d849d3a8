"""An InferenceJob's status, composed from its record and the plan's decision (pure).

:func:`readiness` picks the kstatus conditions (Ready, and Reconciling/Stalled only while true)
from the facts, one small function per case; :func:`job_status` builds the whole status. Field
names are the Python names of the API's :class:`InferenceJobStatus` (:class:`JobStatusFields`,
checked by mypy) and are written out in that model's wire spelling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypedDict

from tokenfleet.api.conditions import set_kstatus
from tokenfleet.api.models import InferenceJobStatus
from tokenfleet.controllers.replicas import (
    FAILED,
    HOLDING,
    LOADING,
    SERVING,
    UNLOADING,
    NodeKey,
    Replica,
    short,
)

#: the wire name of each InferenceJobStatus field (the API model is the one spelling)
_WIRE: Final = {name: f.alias or name for name, f in InferenceJobStatus.model_fields.items()}
#: fields a merge patch must clear with null when the status no longer sets them
CLEARED_WHEN_UNSET: Final = ("shortfallReason", "desiredReplicas", "measuredTokensPerSecond")


class JobStatusFields(TypedDict, total=False):
    """The fields of ``InferenceJobStatus`` by their Python names (a misspelt key fails mypy;
    a test checks they are the model's)."""

    observed_generation: int
    conditions: list[dict[str, Any]]
    desired_replicas: int
    ready_replicas: int
    placements: list[dict[str, Any]]
    served_tokens_per_second: float
    measured_tokens_per_second: float | None
    service_name: str
    shortfall_reason: str | None
    prefetch: list[dict[str, str]] | None
    """Written by the planner on its own (``Planner._write_prefetch``), never by the job worker."""


def to_wire(fields: JobStatusFields) -> dict[str, Any]:
    """``fields`` under their wire names (camelCase, as the API model spells them)."""
    return {_WIRE[name]: value for name, value in fields.items()}


class Decision(Protocol):
    """What the plan decided for the job (the planner's ``JobSlice``)."""

    @property
    def desired(self) -> Mapping[NodeKey, Any]: ...

    @property
    def desired_replicas(self) -> int: ...

    @property
    def shortfall_reason(self) -> str | None: ...

    @property
    def shortfall_message(self) -> str | None: ...


@dataclass(frozen=True)
class Counts:
    """How many of the job's replicas are in each state."""

    ready: int = 0
    loading: int = 0
    unloading: int = 0
    failed: int = 0

    @classmethod
    def of(cls, record: Sequence[Replica]) -> Counts:
        return cls(
            ready=sum(1 for r in record if r.state in SERVING),
            loading=sum(1 for r in record if r.state is LOADING),
            unloading=sum(1 for r in record if r.state is UNLOADING),
            failed=sum(1 for r in record if r.state is FAILED),
        )


@dataclass(frozen=True)
class Readiness:
    """The kstatus conditions: Ready's value, reason and message, Reconciling and Stalled."""

    ready: bool | str
    reason: str
    message: str
    reconciling: bool = False
    stalled: bool = False


PLANNING: Final = Readiness("Unknown", "Planning", "waiting for the fleet plan", reconciling=True)


def invalid_spec(error: str) -> Readiness:
    return Readiness(False, "InvalidSpec", error, stalled=True)


def cannot_place(decision: Decision, load_failure: tuple[str, str] | None) -> Readiness:
    """The plan gives the job no replica although it must have some: Stalled."""
    reason = decision.shortfall_reason or "NoEligibleNode"
    message = decision.shortfall_message or "no node can take a replica"
    if reason == "LoadFailed" and load_failure is not None:
        node, why = load_failure
        message = short(f"the model failed to load (retried after a back-off): on {node}: {why}")
    return Readiness(False, reason, message, stalled=True)


def converging(counts: Counts, desired: int) -> Readiness:
    """Replicas are being loaded, moved or removed: Reconciling."""
    moving = counts.unloading or (counts.ready and counts.loading)
    message = (
        f"{counts.ready}/{desired} replicas loaded, {counts.loading} loading, "
        f"{counts.unloading} unloading"
    )
    ready = counts.ready >= desired and desired > 0
    return Readiness(ready, "Moving" if moving else "Placing", message, reconciling=True)


def below_target(decision: Decision, counts: Counts, min_replicas: int) -> Readiness:
    """In sync with a plan that cannot reach the throughput target: Stalled below the floor."""
    reason = decision.shortfall_reason or ""
    message = decision.shortfall_message or reason
    return Readiness(
        counts.ready >= max(min_replicas, 1),
        "BelowTarget",
        message,
        stalled=counts.ready < min_replicas,
    )


def serving(counts: Counts, desired: int) -> Readiness:
    message = f"{counts.ready}/{desired} replicas loaded"
    if counts.failed:
        message += f" ({counts.failed} failed placements awaiting retry elsewhere)"
    return Readiness(True, "Serving", message)


def readiness(
    *,
    invalid: str | None,
    decision: Decision | None,
    counts: Counts,
    in_sync: bool,
    min_replicas: int,
    load_failure: tuple[str, str] | None = None,
) -> Readiness:
    """Which case the job is in (``load_failure``: the node and message of its latest load
    failure still in back-off)."""
    if invalid is not None:
        return invalid_spec(invalid)
    if decision is None:
        return PLANNING
    if decision.desired_replicas == 0 and (min_replicas > 0 or decision.shortfall_reason):
        return cannot_place(decision, load_failure)
    if not in_sync:
        return converging(counts, decision.desired_replicas)
    if decision.shortfall_reason:
        return below_target(decision, counts, min_replicas)
    return serving(counts, decision.desired_replicas)


def in_sync(record: Sequence[Replica], decision: Decision) -> bool:
    """The record holds exactly what the plan wants, nothing loading or unloading."""
    holding = {r.key for r in record if r.state in HOLDING}
    counts = Counts.of(record)
    return holding == set(decision.desired) and not counts.loading and not counts.unloading


def job_status(
    *,
    generation: int,
    previous: Mapping[str, Any],
    record: Sequence[Replica],
    decision: Decision | None,
    invalid: str | None,
    min_replicas: int,
    tokens_per_second: Callable[[str], float],
    service_name: str,
    load_failure: tuple[str, str] | None = None,
    measured_tokens_per_second: float | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The job's status (wire names). ``previous``: the status last written or read;
    ``measured_tokens_per_second``: the throughput meter's figure (``None``: not measured)."""
    counts = Counts.of(record)
    state = readiness(
        invalid=invalid,
        decision=decision,
        counts=counts,
        in_sync=decision is not None and in_sync(record, decision),
        min_replicas=min_replicas,
        load_failure=load_failure,
    )
    conditions = set_kstatus(
        previous.get("conditions"),
        ready=state.ready,
        reason=state.reason,
        message=state.message,
        reconciling=state.reconciling,
        stalled=state.stalled,
        observed_generation=generation,
        now=now,
    )
    served = sum(tokens_per_second(r.variant) for r in record if r.state in SERVING)
    fields = JobStatusFields(
        observed_generation=generation,
        conditions=conditions,
        ready_replicas=counts.ready,
        placements=[r.to_wire() for r in record],
        served_tokens_per_second=round(served, 3),
        measured_tokens_per_second=measured_tokens_per_second,
        service_name=service_name,
        shortfall_reason=decision.shortfall_reason if decision is not None else None,
    )
    if decision is not None:
        fields["desired_replicas"] = decision.desired_replicas
    elif previous.get(_WIRE["desired_replicas"]) is not None:
        fields["desired_replicas"] = int(previous[_WIRE["desired_replicas"]])
    return to_wire(fields)


def same_status(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """``new`` says nothing ``current`` does not (so no write is needed)."""
    for k, v in new.items():
        if current.get(k) != v:
            return False
    return all(
        current.get(k) is None
        for k in ("shortfallReason", "measuredTokensPerSecond")
        if new.get(k) is None
    )


def merge_patch(status: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that writes ``status``: fields it no longer sets are cleared with null."""
    patch = dict(status)
    for k in CLEARED_WHEN_UNSET:
        if status.get(k) is None:
            patch[k] = None
    return patch
