"""Reading an InferenceJob's spec as kopf hands it (a raw mapping, possibly invalid) — pure.

The parsed :class:`~tokenfleet.api.models.InferenceJobSpec` is the API; these readers serve the
places that must work on any spec the API server stored (an invalid one too): a variant's Triton
model name (the API's one rule, :func:`~tokenfleet.api.models.triton_model_name`) and its
declared figures (tokens/s and watts per replica).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tokenfleet.api.models import triton_model_name


def raw_variant(spec: Mapping[str, Any], variant: str) -> Mapping[str, Any] | None:
    """The variant named ``variant`` in ``spec.variants``."""
    for v in spec.get("variants") or ():
        if isinstance(v, Mapping) and v.get("name") == variant:
            return v
    return None


def triton_name(spec: Mapping[str, Any], variant: str, *, default_model: str) -> str:
    """The Triton model name of ``variant`` (``default_model`` when the spec names no model)."""
    model = (spec.get("model") or {}).get("name") or default_model
    found = raw_variant(spec, variant)
    override = found.get("tritonModelName") if found is not None else None
    return triton_model_name(str(model), variant, str(override) if override else None)


def _positive(value: Any) -> float:
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def variant_figures(variant: Mapping[str, Any]) -> tuple[float, float]:
    """(tokens/s, watts) a replica of the variant declares; 0 for a missing or bad figure."""
    return _positive(variant.get("tokensPerSecond")), _positive(variant.get("watts"))


def tokens_per_second(spec: Mapping[str, Any], variant: str) -> float:
    """The declared tokens/s of one replica of ``variant`` (0 when unknown)."""
    found = raw_variant(spec, variant)
    return variant_figures(found)[0] if found is not None else 0.0
