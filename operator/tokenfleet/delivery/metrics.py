"""Prometheus metrics of the node-side model cache (``tokenfleet modelcache`` process)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

__all__ = [
    "BYTES_FETCHED",
    "CACHE_HITS",
    "CACHE_MISSES",
    "EVICTIONS",
    "MODEL_REFUSED",
    "USED_BYTES",
    "VERIFICATION_FAILURES",
]

BYTES_FETCHED: Final = Counter(
    "tokenfleet_modelcache_fetched_bytes", "Bytes of model files fetched from the object store"
)
CACHE_HITS: Final = Counter(
    "tokenfleet_modelcache_hits", "Replicas placed on this node whose model was already cached"
)
CACHE_MISSES: Final = Counter(
    "tokenfleet_modelcache_misses", "Replicas placed on this node whose model had to be fetched"
)
VERIFICATION_FAILURES: Final = Counter(
    "tokenfleet_modelcache_verification_failures",
    "Fetched models refused because their digest did not match the variant's sha256",
)
EVICTIONS: Final = Counter(
    "tokenfleet_modelcache_evictions", "Models evicted (least recently used) for the disk budget"
)
USED_BYTES: Final = Gauge("tokenfleet_modelcache_used_bytes", "Bytes of verified models on disk")

# the operator's side
MODEL_REFUSED: Final = Counter(
    "tokenfleet_model_delivery_refused",
    "Replicas failed because the node's model cache refused the model (VerificationFailed: "
    "digest mismatch or no digest; ModelDeliveryFailed: not in the store, over the disk budget)",
    ["reason"],
)
