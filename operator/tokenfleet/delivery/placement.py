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

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tokenfleet.delivery.report import DIGEST_PREFIX, CacheReport, CacheState
from tokenfleet.delivery.rules import FetchWindow, NoFetch, may_fetch
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


def _capacity(window: FetchWindow, now: float) -> float:
    """The most bytes the car may start downloading now (:func:`may_fetch` solved for the
    size): ``-1`` when it may download nothing (not plugged in, link unknown or below the
    floor, departure unknown)."""
    if may_fetch(window, 1, now).reason in _SIZE_FREE_REASONS:
        return -1.0
    bw = window.bandwidth_mbps
    if bw is None or window.departure_time is None:
        return -1.0
    available = window.departure_time - window.drain_lead_seconds - now
    if available < 0 or bw <= 0:
        return -1.0
    return available * bw * 1e6 / 8.0 * 100.0 / window.margin_percent


_SIZE_FREE_REASONS = frozenset(
    {NoFetch.NOT_PLUGGED_IN, NoFetch.UNKNOWN_LINK, NoFetch.LOW_BANDWIDTH}
)


@dataclass(frozen=True, slots=True)
class _Variant:
    name: str
    triton: str
    sha: str | None
    targets: frozenset[str]
    memory_mib: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.triton, (self.sha or "")[:DIGEST_PREFIX])


class _Index:
    """What every node's cache reports, indexed once per plan: the holders of each build, the
    cars with a download of a build under way, and each car's download capacity (sorted, so
    the cars that cannot fetch ``size`` bytes are a prefix)."""

    def __init__(
        self, now: float, cached: list[tuple[NodeInfo, CacheReport]], pools: list[dict[str, Any]]
    ) -> None:
        self.now = now
        self.holders: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        self.partial: dict[tuple[str, str], list[str]] = {}
        self.reports: dict[str, CacheReport] = {}
        self.windows: dict[str, FetchWindow] = {}
        capacities: list[tuple[float, str]] = []
        for info, report in cached:
            self.reports[info.name] = report
            for model, entry in report.models.items():
                key = (model, entry.digest)
                if entry.state is CacheState.READY:
                    self.holders.setdefault(key, []).append((info.name, info.is_vehicle))
                elif info.is_vehicle and entry.total:
                    self.partial.setdefault(key, []).append(info.name)
            if info.is_vehicle:
                window = self.windows[info.name] = _window(info, pools)
                capacities.append((_capacity(window, now), info.name))
        capacities.sort()
        self._caps = [c for c, _ in capacities]
        self._cars = [n for _, n in capacities]
        self._blocked: dict[int, frozenset[str]] = {}

    def cannot_fetch(self, size: int) -> frozenset[str]:
        """Cars that may not start a download of ``size`` bytes now (memoized per size)."""
        if size <= 0:
            return frozenset()
        out = self._blocked.get(size)
        if out is None:
            out = self._blocked[size] = frozenset(
                self._cars[: bisect.bisect_left(self._caps, float(size))]
            )
        return out


def _variants(spec: Mapping[str, Any]) -> list[_Variant]:
    model = spec.get("model") or {}
    out = []
    for v in spec.get("variants") or ():
        if not v.get("name"):
            continue
        triton = str(v.get("tritonModelName") or f"{model.get('name')}-{v['name']}")
        sha = v.get("sha256")
        out.append(
            _Variant(
                str(v["name"]),
                triton,
                str(sha) if sha else None,
                frozenset(v.get("targets") or ()),
                int(v.get("memoryMiB") or 0),
            )
        )
    return out


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
    """Per job key, its delivery terms (jobs without any are left out).

    One pass over the nodes builds an index (holders per build, downloads under way, cars by
    download capacity); each job then costs its variants' holders, its placements and the cars
    with a partial download of its build, not a pass over the fleet."""
    cached: list[tuple[NodeInfo, CacheReport]] = [
        (n, n.model_cache) for n in nodes if n.model_cache is not None and not n.deleting
    ]
    if not cached:
        return {}
    index = _Index(now, cached, [dict(p.spec) for p in pools])
    out: dict[str, DeliveryTerms] = {}
    for job in jobs:
        spec = job.spec
        if not str((spec.get("model") or {}).get("repositoryUri") or "").startswith("s3://"):
            continue
        variants = _variants(spec)
        warm: set[tuple[str, str]] = set()
        held_cars: set[str] = set()
        for v in variants:
            if v.sha is None:
                continue
            for node, is_vehicle in index.holders.get(v.key, ()):
                if ("Vehicle" if is_vehicle else "Rack") in v.targets:
                    warm.add((node, v.name))
                    if is_vehicle:
                        held_cars.add(node)
        blocked: frozenset[str] = frozenset()
        runnable = [v for v in variants if "Vehicle" in v.targets]
        if runnable:
            occupied = {str(p.get("node")) for p in job.placements if p.get("state") in _ACTIVE}
            base = index.cannot_fetch(min(v.memory_mib for v in runnable) * MIB)
            exempt = held_cars | occupied
            # a car with part of a build fetched needs less: judged one by one (the old way)
            partial = {n for v in runnable if v.sha for n in index.partial.get(v.key, ())}
            for name in partial - exempt:
                report = index.reports[name]
                if any(
                    may_fetch(
                        index.windows[name], _size(report, v.triton, v.sha, v.memory_mib), now
                    ).ok
                    for v in runnable
                ):
                    exempt.add(name)
                elif name not in base:
                    base = base | {name}
            blocked = base - exempt if exempt & base else base
        if warm or blocked:
            out[job.key] = DeliveryTerms(blocked, frozenset(warm))
    return out
