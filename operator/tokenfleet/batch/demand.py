"""The batch demand hook (pure): tokens/s the dispatcher asks of a job whose batch deadline is
at risk, published as the InferenceJob annotation ``tokenfleet.io/batch-tokens-per-second`` and
added by the operator to the job's throughput target (so placement adds replicas, racks when cars
are not enough, within ``replicas.max``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["BATCH_TPS_ANNOTATION", "MAX_BATCH_TPS", "batch_demand"]

BATCH_TPS_ANNOTATION = "tokenfleet.io/batch-tokens-per-second"
MAX_BATCH_TPS = 100_000_000.0


def batch_demand(annotations: Mapping[str, Any] | None) -> float:
    """The annotation's tokens/s; 0 when absent, unparsable, negative or not finite."""
    raw = (annotations or {}).get(BATCH_TPS_ANNOTATION)
    try:
        value = float(str(raw))
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(value) or value <= 0:
        return 0.0
    return min(value, MAX_BATCH_TPS)
