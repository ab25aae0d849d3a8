"""What the operator does with a replica whose node has a model cache (pure).

A node that publishes ``tokenfleet.io/model-cache`` loads a model only once its cache reports it
Ready *for the variant's digest*: verified, then renamed into the runtime's repository. Until then
the replica stays Loading (reason Fetching/Verifying/WaitingForFetch); a cache that refused the
model fails the replica with reason VerificationFailed (digest mismatch, missing or bad signature)
or ModelDeliveryFailed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tokenfleet.delivery.report import CacheReport, CacheState

__all__ = ["GateAction", "GateDecision", "delivery_gate", "delivery_refused", "gate"]

VERIFICATION_FAILED = "VerificationFailed"
DELIVERY_FAILED = "ModelDeliveryFailed"
_VERIFY_REASONS = frozenset(
    {"DigestMismatch", "NoDigest", "DigestUnreadable", "SignatureMissing", "SignatureInvalid"}
)


class GateAction(StrEnum):
    LOAD = "Load"
    WAIT = "Wait"
    REFUSE = "Refuse"


@dataclass(frozen=True, slots=True)
class GateDecision:
    action: GateAction
    reason: str | None = None
    message: str | None = None


def gate(report: CacheReport | None, model: str, sha256: str | None) -> GateDecision:
    """May the operator ask the runtime to load ``model`` (variant digest ``sha256``) now?"""
    if report is None:
        return GateDecision(GateAction.LOAD)  # no cache: the repository is managed elsewhere
    entry = report.models.get(model)
    if entry is None:
        return GateDecision(GateAction.WAIT, "Fetching", "waiting for the node's model cache")
    if sha256 is not None and not entry.matches(sha256):
        return GateDecision(
            GateAction.WAIT, "Fetching", f"the cache holds another build ({entry.digest}…)"
        )
    if entry.state is CacheState.READY:
        return GateDecision(GateAction.LOAD, "Verified", None)
    if entry.state is CacheState.FAILED:
        reason = VERIFICATION_FAILED if entry.reason in _VERIFY_REASONS else DELIVERY_FAILED
        message = f"{entry.reason or 'Failed'}: {entry.message or 'refused by the model cache'}"
        return GateDecision(GateAction.REFUSE, reason, message)
    if entry.state is CacheState.FETCHING:
        progress = f"{entry.bytes}/{entry.total} B" if entry.total else f"{entry.bytes} B"
        return GateDecision(GateAction.WAIT, "Fetching", f"fetching from the store: {progress}")
    if entry.state is CacheState.VERIFYING:
        return GateDecision(
            GateAction.WAIT, "Verifying", "verifying the variant digest (and signature)"
        )
    return GateDecision(
        GateAction.WAIT, "WaitingForFetch", f"{entry.reason}: {entry.message or ''}".strip()
    )


def delivery_gate(
    report: CacheReport | None, model: str, job_spec: Mapping[str, Any], variant: str
) -> GateDecision:
    """:func:`gate` for a job's variant: only jobs delivered from the store (``s3://``) wait for
    the cache; others load from the repository as it is (managed outside tokenfleet)."""
    uri = str((job_spec.get("model") or {}).get("repositoryUri") or "")
    if not uri.startswith("s3://"):
        return GateDecision(GateAction.LOAD)
    sha = next(
        (v.get("sha256") for v in job_spec.get("variants") or () if v.get("name") == variant),
        None,
    )
    return gate(report, model, str(sha) if sha else None)


def delivery_refused(reason: str) -> None:
    """Count a replica the operator failed because the cache refused its model."""
    from tokenfleet.metrics import MODEL_REFUSED

    MODEL_REFUSED.labels(reason=reason).inc()
