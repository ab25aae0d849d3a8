"""What placement must know about model delivery (pure; the planner calls it per plan).

For every job delivered from the store (``model.repositoryUri`` ``s3://``) and every node whose
model cache reports (``tokenfleet.io/model-cache``; nodes without a cache are not constrained):

* **warm**: ``(node, variant)`` whose build (digest) the node already holds — placement
  prefers them, so a move there is a load, not a download;
* **fetch_blocked**: cars that hold none of the job's vehicle variants and may not download one
  now (:func:`tokenfleet.delivery.rules.may_fetch`: plugged in, link at or above the pool's
  ``delivery.minBandwidthMbps``, and size / bandwidth x margin ends before departure less the
  drain lead). A car where the job already has a replica is never blocked here (its other rules
  decide), so nothing is evicted by this. The size is what the cache reported for that build
  (while fetching: the bytes still missing), else the variant's ``memoryMiB`` as the estimate of
  its weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tokenfleet.delivery.report import CacheReport
from tokenfleet.delivery.rules import FetchWindow, may_fetch
from tokenfleet.delivery.wants import pool_window
from tokenfleet.telemetry.node import NodeInfo, selector_matches

__all__ = ["DeliveryTerms", "delivery_terms"]

MIB = 1 << 20
_ACTIVE = frozenset({"Loading", "Loaded"})


class _Pool(Protocol):
    @property
    def spec(self) -> Mapping[str, Any]: ...


class _Job(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def spec(self) -> Mapping[str, Any]: ...
    @property
    def placements(self) -> tuple[Mapping[str, Any], ...]: ...


@dataclass(frozen=True, slots=True)
class DeliveryTerms:
    fetch_blocked: frozenset[str] = frozenset()
    warm: frozenset[tuple[str, str]] = frozenset()


def _window(info: NodeInfo, pools: Sequence[Mapping[str, Any]]) -> FetchWindow:
    reading = info.vehicle
    floor, margin, lead, plugged = float("inf"), 150.0, 900.0, True
    for spec in pools:
        if selector_matches(spec.get("nodeSelector") or {}, info.labels):
            floor, margin, lead, plugged = pool_window(spec)
            break
    departure = reading.departure_time if reading is not None else None
    return FetchWindow(
        plugged_in=reading.plugged_in if reading is not None else None,
        bandwidth_mbps=reading.bandwidth_mbps if reading is not None else None,
        departure_time=departure.timestamp() if departure is not None else None,
        drain_lead_seconds=lead,
        min_bandwidth_mbps=floor,
        require_plugged_in=plugged,
        margin_percent=margin,
    )


def _size(report: CacheReport, model: str, sha: str | None, memory_mib: int) -> int:
    entry = report.models.get(model)
    if entry is not None and entry.matches(sha) and entry.total:
        return max(entry.total - entry.bytes, 0)
    return memory_mib * MIB


def delivery_terms(
    now: float,
    nodes: Iterable[NodeInfo],
    pools: Iterable[_Pool],
    jobs: Iterable[_Job],
) -> dict[str, DeliveryTerms]:
    """Per job key, its delivery terms (jobs without any are left out)."""
    cached = [(n, n.model_cache) for n in nodes if n.model_cache is not None and not n.deleting]
    if not cached:
        return {}
    pool_specs = [dict(p.spec) for p in pools]
    windows: dict[str, FetchWindow] = {}
    out: dict[str, DeliveryTerms] = {}
    for job in jobs:
        spec = job.spec
        model = spec.get("model") or {}
        if not str(model.get("repositoryUri") or "").startswith("s3://"):
            continue
        variants = []
        for v in spec.get("variants") or ():
            if not v.get("name"):
                continue
            triton = str(v.get("tritonModelName") or f"{model.get('name')}-{v['name']}")
            variants.append(
                (
                    str(v["name"]),
                    triton,
                    v.get("sha256"),
                    frozenset(v.get("targets") or ()),
                    int(v.get("memoryMiB") or 0),
                )
            )
        occupied = {str(p.get("node")) for p in job.placements if p.get("state") in _ACTIVE}
        warm: set[tuple[str, str]] = set()
        blocked: set[str] = set()
        for info, report in cached:
            assert report is not None
            kind = "Vehicle" if info.is_vehicle else "Rack"
            runnable = [v for v in variants if kind in v[3]]
            held = [v for v in runnable if report.holds(v[1], v[2])]
            warm.update((info.name, v[0]) for v in held)
            if kind != "Vehicle" or held or not runnable or info.name in occupied:
                continue
            window = windows.get(info.name)
            if window is None:
                window = windows[info.name] = _window(info, pool_specs)
            if not any(
                may_fetch(window, _size(report, v[1], v[2], v[4]), now).ok for v in runnable
            ):
                blocked.add(info.name)
        if warm or blocked:
            out[job.key] = DeliveryTerms(frozenset(blocked), frozenset(warm))
    return out
