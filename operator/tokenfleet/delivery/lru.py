"""Which cached models to evict so that a new one fits the node's disk budget (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CachedModel", "EvictionPlan", "plan_evictions"]


@dataclass(frozen=True, slots=True)
class CachedModel:
    """A model on disk: its size and when a replica last wanted it (epoch s)."""

    name: str
    size_bytes: int
    last_used: float
    in_use: bool = False
    """Wanted by a replica now (loaded or about to be): never evicted."""


@dataclass(frozen=True, slots=True)
class EvictionPlan:
    fits: bool
    """``False``: even evicting everything not in use leaves too little room (nothing is
    evicted then)."""
    evict: tuple[str, ...] = ()
    """Least recently used first."""


def plan_evictions(
    cached: Iterable[CachedModel], need_bytes: int, budget_bytes: int, reserved_bytes: int = 0
) -> EvictionPlan:
    """Evict least-recently-used models not in use until ``need_bytes`` fits in
    ``budget_bytes`` next to what stays (and ``reserved_bytes`` of downloads in flight)."""
    models = list(cached)
    used = sum(m.size_bytes for m in models) + reserved_bytes
    if used + need_bytes <= budget_bytes:
        return EvictionPlan(True)
    candidates = sorted((m for m in models if not m.in_use), key=lambda m: (m.last_used, m.name))
    evict: list[str] = []
    for m in candidates:
        evict.append(m.name)
        used -= m.size_bytes
        if used + need_bytes <= budget_bytes:
            return EvictionPlan(True, tuple(evict))
    return EvictionPlan(False)
