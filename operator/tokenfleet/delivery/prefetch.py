"""Which cars the operator asks to fetch a job's model ahead of a placement (pure).

For every job delivered from the store (``model.repositoryUri`` ``s3://``) with a vehicle variant
that names a ``sha256`` (its first such variant in spec order), the candidates are the cars
with a model cache (``tokenfleet.io/model-cache``) in a pool whose ``delivery.prefetchPerJob``
is above 0 that

* do not already hold that build and host no replica of the job (that is a placement, not a
  prefetch),
* the job could be placed on at all: its ``spec.placement`` allows vehicles, the car's trusted
  region is one of ``regions``, its pool's owner one of ``ownership``, and it is attested when
  ``requireAttestation`` (the engine's own policy rules: a car it may never choose is not asked to
  spend its link and disk on the job), and
* may download it now (:func:`tokenfleet.delivery.rules.may_fetch`: plugged in, link at or above
  the pool's floor, size / bandwidth x margin done before departure less the drain lead).

They are ranked by how many bytes they could fetch before they must be empty (long-parked and
fast first) and taken up to ``prefetchPerJob`` per pool; the pool's cars that already hold the
build without serving it come first and stay asked (their cache then keeps it from other
prefetches), :data:`MAX_PER_JOB` in all. The answer
goes to the job's ``status.prefetch``, which each car's cache watches; the cache fetches such a
model only within its prefetch share of the disk budget and never evicts a model in use for it.
Cars are sorted once per plan; a job costs the candidates it looks at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenfleet.delivery.placement import MIB, _capacity, _Job, _Pool, _size, _variants, _window
from tokenfleet.delivery.report import CacheReport, CacheState
from tokenfleet.delivery.rules import FetchWindow, may_fetch
from tokenfleet.telemetry.node import NodeInfo, selector_matches

__all__ = ["MAX_PER_JOB", "prefetch_targets"]

MAX_PER_JOB = 32
DEFAULT_PER_JOB = 2
_ACTIVE = frozenset({"Loading", "Loaded"})


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    pool: int
    per_job: int
    capacity: float
    window: FetchWindow
    report: CacheReport
    region: str | None = None
    owner: str | None = None
    attested: bool = False


def _pool_of(info: NodeInfo, pools: Sequence[Mapping[str, Any]]) -> int | None:
    for i, spec in enumerate(pools):
        if selector_matches(spec.get("nodeSelector") or {}, info.labels):
            return i
    return None


def _candidates(
    now: float, nodes: Iterable[NodeInfo], specs: Sequence[Mapping[str, Any]]
) -> list[_Candidate]:
    """Cars with a cache in a pool that prefetches and that may download something now, most
    fetchable bytes first."""
    out: list[_Candidate] = []
    for info in nodes:
        report = info.model_cache
        if report is None or info.deleting or not info.is_vehicle:
            continue
        pool = _pool_of(info, specs)
        if pool is None:
            continue
        per_job = int((specs[pool].get("delivery") or {}).get("prefetchPerJob", DEFAULT_PER_JOB))
        if per_job <= 0:
            continue
        window = _window(info, specs)
        capacity = _capacity(window, now)
        if capacity > 0:
            owner = specs[pool].get("ownership")
            out.append(
                _Candidate(
                    info.name,
                    pool,
                    per_job,
                    capacity,
                    window,
                    report,
                    info.region,
                    str(owner) if owner else None,
                    info.attested,
                )
            )
    out.sort(key=lambda c: (-c.capacity, c.name))
    return out


def _holders(candidates: list[_Candidate]) -> dict[tuple[str, str], list[_Candidate]]:
    """Per build ``(model, digest prefix)``, the candidate cars holding it."""
    out: dict[tuple[str, str], list[_Candidate]] = {}
    for c in candidates:
        for model, entry in c.report.models.items():
            if entry.state is CacheState.READY:
                out.setdefault((model, entry.digest), []).append(c)
    return out


@dataclass(frozen=True, slots=True)
class _Policy:
    """The node rules of a job's ``spec.placement`` that decide whether a car may host it."""

    vehicles: bool
    regions: frozenset[str]
    ownership: frozenset[str]
    attestation: bool

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> _Policy:
        policy = spec.get("placement") or {}
        return cls(
            vehicles="Vehicle" in (policy.get("targets") or ("Rack", "Vehicle")),
            regions=frozenset(str(r) for r in policy.get("regions") or ()),
            ownership=frozenset(str(o) for o in policy.get("ownership") or ()),
            attestation=bool(policy.get("requireAttestation", False)),
        )

    def allows(self, c: _Candidate) -> bool:
        """Residency, ownership (an unknown owner fails, as in the engine) and attestation."""
        if self.regions and c.region not in self.regions:
            return False
        if self.ownership and c.owner not in self.ownership:
            return False
        return c.attested or not self.attestation


def _for_job(
    now: float,
    job: _Job,
    candidates: list[_Candidate],
    holders: Mapping[tuple[str, str], list[_Candidate]],
) -> list[tuple[str, str]]:
    spec = job.spec
    if not str((spec.get("model") or {}).get("repositoryUri") or "").startswith("s3://"):
        return []
    variant = next((v for v in _variants(spec) if "Vehicle" in v.targets and v.sha), None)
    policy = _Policy.of(spec)
    if variant is None or not policy.vehicles:
        return []
    occupied = {str(p.get("node")) for p in job.placements if p.get("state") in _ACTIVE}
    estimate = variant.memory_mib * MIB
    taken: dict[int, int] = {}
    chosen: list[tuple[str, str]] = []
    # spare cars that hold it already stay asked (their cache keeps it from other prefetches)
    # and count for their pool
    for c in holders.get(variant.key, ()):
        if c.name not in occupied and taken.get(c.pool, 0) < c.per_job and policy.allows(c):
            taken[c.pool] = taken.get(c.pool, 0) + 1
            chosen.append((c.name, variant.name))
    for c in candidates:
        if c.capacity < estimate or len(chosen) >= MAX_PER_JOB:
            break  # sorted: no later car can fetch the whole build either
        if c.name in occupied or taken.get(c.pool, 0) >= c.per_job or not policy.allows(c):
            continue
        if c.report.holds(variant.triton, variant.sha):
            continue
        size = _size(c.report, variant.triton, variant.sha, variant.memory_mib)
        if may_fetch(c.window, size, now).ok:
            taken[c.pool] = taken.get(c.pool, 0) + 1
            chosen.append((c.name, variant.name))
    return chosen


def prefetch_targets(
    now: float, nodes: Iterable[NodeInfo], pools: Iterable[_Pool], jobs: Iterable[_Job]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """Per job key, the ``(node, variant)`` pairs to prefetch (jobs with none are left out)."""
    candidates = _candidates(now, nodes, [dict(p.spec) for p in pools])
    if not candidates:
        return {}
    holders = _holders(candidates)
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for job in jobs:
        chosen = _for_job(now, job, candidates, holders)
        if chosen:
            out[job.key] = tuple(chosen)
    return out
