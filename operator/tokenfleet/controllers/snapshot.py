"""From the operator's in-memory picture (kopf indexes) to the placement engine's plain data.

Pure functions: no kopf, no Kubernetes client, no clock (``now`` is passed in), so the mapping is
unit-tested without a cluster. The controllers hold the views below in kopf indexes:

* :class:`TankView` / :class:`PoolView` / :class:`JobView` — spec and status dicts of the three
  kinds (``planner.py`` indexes them);
* :class:`~tokenfleet.telemetry.node.NodeInfo` — parsed Nodes (``nodes.py``, TELEMETRY).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tokenfleet.api import (
    InferenceJobSpec,
    parse_immersionpod_spec,
    parse_inferencejob_spec,
    parse_vehiclepool_spec,
)
from tokenfleet.controllers.replicas import HOLDING
from tokenfleet.placement import (
    Job,
    Placement,
    PoolPolicy,
    RackNode,
    Snapshot,
    Spread,
    Tank,
    Variant,
    VehicleNode,
)
from tokenfleet.placement.model import LeakState
from tokenfleet.telemetry.node import NodeInfo, selector_matches
from tokenfleet.telemetry.vehicle import MAX_FUTURE_SKEW_SECONDS, parse_time


@dataclass(frozen=True)
class ClusterView:
    """A cluster-scoped tokenfleet object as the planner's indexes hold it."""

    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    deleting: bool = False


class TankView(ClusterView):
    """An ImmersionPod."""


class PoolView(ClusterView):
    """A VehiclePool."""


@dataclass(frozen=True)
class JobView:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    placements: tuple[Mapping[str, Any], ...] = ()
    deleting: bool = False
    batch_tokens_per_second: float = 0.0
    """Added to the target while a batch's deadline is at risk (annotation
    ``tokenfleet.io/batch-tokens-per-second``, written by the dispatcher)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NodeSite:
    """Where a node sits, as the engine sees it (what status.placements records)."""

    target: str  # Rack | Vehicle
    pool: str | None = None
    tank: str | None = None


@dataclass
class SnapshotParts:
    """A snapshot plus what was left out and why (for Events and logs)."""

    snapshot: Snapshot
    sites: dict[str, NodeSite] = field(default_factory=dict)
    invalid_jobs: dict[str, str] = field(default_factory=dict)
    invalid_tanks: dict[str, str] = field(default_factory=dict)
    invalid_pools: dict[str, str] = field(default_factory=dict)


def _num(value: Any) -> float | None:
    """A finite float, or None (status fields the telemetry side wrote; never trust blindly)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        parsed = parse_time(value)
        return parsed.timestamp() if parsed is not None else None
    return None


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


_SPEC_CACHE: dict[tuple[str, str, int], Any] = {}


def _cached(kind: str, uid: str, generation: int, parse: Callable[[Any], Any], spec: Any) -> Any:
    """Parse a spec once per (uid, generation); a validation error is cached too."""
    key = (kind, uid, generation)
    if uid and key in _SPEC_CACHE:
        hit = _SPEC_CACHE[key]
        if isinstance(hit, Exception):
            raise hit
        return hit
    try:
        parsed = parse(dict(spec))
    except (ValidationError, ValueError, TypeError) as exc:
        if uid:
            _SPEC_CACHE[key] = exc
        raise
    if uid:
        if len(_SPEC_CACHE) > 4096:
            _SPEC_CACHE.clear()
        _SPEC_CACHE[key] = parsed
    return parsed


def job_spec(view: JobView) -> InferenceJobSpec:
    """The job's parsed spec (pydantic; raises ValidationError/ValueError when invalid)."""
    spec: InferenceJobSpec = _cached(
        "job", view.uid, view.generation, parse_inferencejob_spec, view.spec
    )
    return spec


def tank_of(view: TankView, reading_at: float | None = None) -> Tank:
    """The engine's tank. ``reading_at`` (epoch s): the time of the latest reading the tank's
    poller holds in memory; the status ``lastReadingTime`` is refreshed only with a deadband, so
    the later of the two is the reading's time."""
    spec = _cached("tank", view.uid, view.generation, parse_immersionpod_spec, view.spec)
    status = view.status
    leak = status.get("leakState")
    leak_state: LeakState = leak if leak in ("OK", "Warning", "Critical", "Unknown") else "Unknown"
    # A latched leak (status.leakLatch, kept until acknowledged) counts as a live one, so the
    # leak policy (Cordon / Drain) holds after the detectors read OK again.
    latch = status.get("leakLatch")
    latched = latch.get("state") if isinstance(latch, Mapping) else None
    if latched == "Critical" or (latched == "Warning" and leak_state != "Critical"):
        leak_state = latched
    return Tank(
        name=view.name,
        power_capacity_kw=float(spec.power.capacity_kw),
        safety_margin_percent=float(spec.power.safety_margin_percent),
        max_supply_temp_c=float(spec.coolant.max_supply_temp_c),
        max_return_temp_c=float(spec.coolant.max_return_temp_c),
        design_flow_lpm=float(spec.coolant.design_flow_liters_per_minute),
        heat_rejection_kw=float(spec.coolant.heat_rejection_kw),
        specific_heat_kj_per_kg_k=float(spec.coolant.specific_heat_kj_per_kg_k),
        density_kg_per_l=float(spec.coolant.density_kg_per_liter),
        region=str(spec.region),
        it_load_kw=_num(status.get("itLoadKW")),
        supply_temp_c=_num(status.get("supplyTempC")),
        return_temp_c=_num(status.get("returnTempC")),
        flow_lpm=_num(status.get("flowLitersPerMinute")),
        leak_state=leak_state,
        leak_action=str(spec.leak_policy.action.value),  # type: ignore[arg-type]
        cordoned=bool(spec.cordoned) or view.deleting,
        observed_at=_latest(_epoch(status.get("lastReadingTime")), reading_at),
        stale_after_seconds=float(spec.telemetry.stale_after_seconds),
        hysteresis_percent=float(spec.hysteresis_percent),
    )


def _energy_today(status: Mapping[str, Any], now: float | None) -> float:
    """``status.energyUsedTodayKWh``, or 0 when ``status.energyDay`` names another UTC day than
    ``now`` (the VehiclePool timer has not reset it yet)."""
    day = status.get("energyDay")
    if now is not None and day and str(day) != datetime.fromtimestamp(now, UTC).date().isoformat():
        return 0.0
    return _num(status.get("energyUsedTodayKWh")) or 0.0


def pool_of(view: PoolView, now: float | None = None) -> tuple[PoolPolicy, Mapping[str, str], bool]:
    """(policy, nodeSelector, cordoned) of a VehiclePool (``now``, epoch s: energy of another
    day than now's counts as 0)."""
    spec = _cached("pool", view.uid, view.generation, parse_vehiclepool_spec, view.spec)
    battery = spec.battery
    policy = PoolPolicy(
        name=view.name,
        min_soc_percent=float(battery.min_state_of_charge_percent),
        target_soc_percent=float(battery.target_state_of_charge_percent),
        region=str(spec.region),
        ownership=str(spec.ownership),
        require_plugged_in=bool(battery.require_plugged_in),
        max_battery_temp_c=float(battery.max_battery_temp_c),
        max_compute_temp_c=float(spec.max_compute_temp_c),
        min_bandwidth_mbps=float(spec.min_bandwidth_mbps),
        drain_lead_seconds=float(spec.drain_lead_seconds),
        daily_energy_budget_kwh=(
            None
            if battery.daily_energy_budget_kwh is None
            else float(battery.daily_energy_budget_kwh)
        ),
        # read only against a budget: without one, today's figure (written every minute while
        # cars serve) would make each write a change of the pool and a full plan for nothing
        energy_used_today_kwh=(
            0.0 if battery.daily_energy_budget_kwh is None else _energy_today(view.status, now)
        ),
        energy_cost_per_kwh=float(battery.energy_cost_per_kwh),
        wear_cost_per_kwh=float(battery.wear_cost_per_kwh),
        stale_after_seconds=float(spec.stale_after_seconds),
        hysteresis_percent=float(spec.hysteresis_percent),
        battery_capacity_kwh=float(battery.capacity_kwh),
        unknown_grace_seconds=float(spec.unknown_grace_seconds),
        max_future_skew_seconds=MAX_FUTURE_SKEW_SECONDS,
    )
    cordoned = bool(getattr(spec, "cordoned", False)) or view.deleting
    return policy, dict(spec.node_selector), cordoned


def job_of(view: JobView) -> Job:
    spec = job_spec(view)
    variants = tuple(
        Variant(
            name=v.name,
            memory_mib=int(v.memory_mib),
            tokens_per_second=float(v.tokens_per_second),
            watts=float(v.watts),
            targets=frozenset(str(t.value) for t in v.targets),  # type: ignore[misc]
            precision=str(v.precision.value),
        )
        for v in spec.variants
    )
    policy = spec.placement
    target_tps = spec.throughput.target_tokens_per_second
    return Job(
        name=view.key,
        target_tokens_per_second=(float(target_tps) if target_tps is not None else 0.0)
        + view.batch_tokens_per_second,  # a batch's deadline at risk
        variants=variants,
        min_replicas=int(spec.replicas.min),
        max_replicas=int(spec.replicas.max),
        priority=int(spec.priority),
        targets=frozenset(str(t.value) for t in policy.targets),  # type: ignore[misc]
        preference=str(policy.preference.value),  # type: ignore[arg-type]
        regions=frozenset(str(r) for r in policy.regions),
        ownership=frozenset(str(o) for o in policy.ownership),
        require_attestation=bool(policy.require_attestation),
        spread=Spread(
            max_replicas_per_node=int(policy.spread.max_replicas_per_node),
            max_replicas_per_tank=policy.spread.max_replicas_per_tank,
            max_replicas_per_pool=policy.spread.max_replicas_per_pool,
        ),
    )


def recorded_placements(view: JobView) -> list[Placement]:
    """The job's live placements from its decision record (status.placements)."""
    counts: dict[tuple[str, str], int] = {}
    for entry in view.placements:
        if entry.get("state") in HOLDING and entry.get("node") and entry.get("variant"):
            key = (str(entry["node"]), str(entry["variant"]))
            counts[key] = counts.get(key, 0) + 1
    return [
        Placement(job=view.key, node=node, variant=variant, replicas=n)
        for (node, variant), n in sorted(counts.items())
    ]


def vehicle_node(
    info: NodeInfo, pool: str, *, cordoned: bool = False, unknown_since: float | None = None
) -> VehicleNode:
    """The placement engine's view of a vehicle node: the one mapping the planner's snapshot and
    the VehiclePool status share, so both judge eligibility with the same
    :func:`tokenfleet.placement.state.vehicle_state`. ``cordoned`` adds to the node's own
    unschedulable / not-Ready flags."""
    r = info.vehicle
    return VehicleNode(
        name=info.name,
        pool=pool,
        memory_mib=info.allocatable_memory_mib or 0,
        accelerator=info.accelerator,
        region=info.region,
        attested=info.attested,
        soc_percent=r.soc_percent if r else None,
        plugged_in=r.plugged_in if r else None,
        charger_kw=r.charger_power_kw if r else None,
        battery_temp_c=r.battery_temp_c if r else None,
        compute_temp_c=r.compute_temp_c if r else None,
        departure_time=r.departure_time.timestamp() if r and r.departure_time else None,
        target_soc_percent=r.target_soc_percent if r else None,
        bandwidth_mbps=r.bandwidth_mbps if r else None,
        observed_at=r.observed_at.timestamp() if r and r.observed_at else None,
        cordoned=cordoned or info.unschedulable or info.ready is False,
        unknown_since=unknown_since,
    )


def _owner(
    info: NodeInfo, candidates: Iterable[tuple[str, Mapping[str, str]]], label: str | None
) -> str | None:
    """The tank/pool whose nodeSelector matches the node (first by name), else its label."""
    for name, selector in candidates:
        if selector and selector_matches(selector, info.labels):
            return name
    return label


_Record = RackNode | VehicleNode


def _record(
    info: NodeInfo,
    tank_selectors: Sequence[tuple[str, Mapping[str, str]]],
    pool_selectors: Sequence[tuple[str, Mapping[str, str]]],
    cordoned_pools: Collection[str],
    unusable: Mapping[str, str],
    since: Mapping[str, float],
) -> tuple[_Record | None, NodeSite | None]:
    """One Node's engine record and site (``None``: no tank/pool owns it)."""
    memory = info.allocatable_memory_mib or 0
    blocked = info.unschedulable or info.ready is False or info.name in unusable
    if info.is_rack:
        tank = _owner(info, tank_selectors, info.tank)
        if tank is None:
            return None, None
        rack = RackNode(
            name=info.name,
            tank=tank,
            memory_mib=memory,
            accelerator=info.accelerator,
            baseline_watts=info.baseline_watts,
            region=info.region,
            attested=info.attested,
            cordoned=blocked,
        )
        return rack, NodeSite("Rack", tank=tank)
    if info.is_vehicle:
        pool = _owner(info, pool_selectors, info.pool)
        if pool is None:
            return None, None
        car = vehicle_node(
            info,
            pool,
            cordoned=blocked or pool in cordoned_pools,
            unknown_since=since.get(info.name),
        )
        return car, NodeSite("Vehicle", pool=pool)
    return None, None


_Cached = tuple[NodeInfo, tuple[bool, float | None], "_Record | None", "NodeSite | None"]


class RecordCache:
    """The engine record of each Node from the previous :func:`build_snapshot`, reused while
    the Node's parsed record is the same object (the node watch keeps the held object when an
    event changes nothing; a changed Node is a new object) and nothing else it depends on
    changed: the tank and pool selectors and cordoned pools (all records rebuilt when they
    differ), its own unusable flag and unknown-since. An incremental plan at 5,000 Nodes then
    builds the records of the changed Nodes only, not 5,000 (pure; no clock: a record holds no
    time of its own, the engine judges ages against ``Snapshot.now``)."""

    def __init__(self) -> None:
        self._terms: object = None
        self._built: dict[str, _Cached] = {}

    def begin(self, terms: object) -> Mapping[str, _Cached]:
        """Start a build under ``terms``; returns the previous build's records to reuse (none
        when the terms changed). What this build does not :meth:`keep` is forgotten."""
        previous = self._built if terms == self._terms else {}
        self._terms = terms
        self._built = {}
        return previous

    def keep(self, name: str, entry: _Cached) -> None:
        self._built[name] = entry


def _jobs_and_placements(
    jobs: Iterable[JobView],
    current: Mapping[str, Iterable[Placement]] | None,
    parts: SnapshotParts,
) -> tuple[list[Job], list[Placement]]:
    """The valid jobs (an invalid one is recorded in ``parts``) and their current placements:
    the planner's previous assignments, else the job's status record."""
    job_objs: list[Job] = []
    placements: list[Placement] = []
    for jv in sorted(jobs, key=lambda j: j.key):
        if jv.deleting:
            continue
        try:
            job_objs.append(job_of(jv))
        except (ValidationError, ValueError, TypeError) as exc:
            parts.invalid_jobs[jv.key] = str(exc).splitlines()[0]
            continue
        if current is not None and jv.key in current:
            placements.extend(current[jv.key])
        else:
            placements.extend(recorded_placements(jv))
    return job_objs, placements


def build_snapshot(
    *,
    now: float,
    nodes: Iterable[NodeInfo],
    tanks: Iterable[TankView],
    pools: Iterable[PoolView],
    jobs: Iterable[JobView],
    current: Mapping[str, Iterable[Placement]] | None = None,
    unusable_nodes: Mapping[str, str] | None = None,
    unknown_since: Mapping[str, float] | None = None,
    tank_readings: Mapping[str, float] | None = None,
    cache: RecordCache | None = None,
) -> SnapshotParts:
    """The engine's snapshot of the fleet now.

    ``current``: the current placements per job key (the planner's previous plan); jobs missing
    from it use their status record. ``unusable_nodes``: node -> why it takes no new work (no
    runtime endpoint, runtime failed): such nodes are passed as cordoned. ``cache``: the
    engine records of the previous call, reused for a Node whose record object, tank/pool
    selectors, cordoned pools and own terms are the same (:class:`RecordCache`).
    """
    unusable = unusable_nodes or {}
    since = unknown_since or {}
    parts = SnapshotParts(snapshot=Snapshot(now=now))

    tank_objs: list[Tank] = []
    tank_selectors: list[tuple[str, Mapping[str, str]]] = []
    for tv in sorted(tanks, key=lambda t: t.name):
        try:
            tank_objs.append(tank_of(tv, (tank_readings or {}).get(tv.name)))
            tank_selectors.append((tv.name, dict(tv.spec.get("nodeSelector") or {})))
        except (ValidationError, ValueError, TypeError) as exc:
            parts.invalid_tanks[tv.name] = str(exc).splitlines()[0]

    pool_objs: list[PoolPolicy] = []
    pool_selectors: list[tuple[str, Mapping[str, str]]] = []
    cordoned_pools: set[str] = set()
    for pv in sorted(pools, key=lambda p: p.name):
        try:
            policy, selector, cordoned = pool_of(pv, now)
        except (ValidationError, ValueError, TypeError) as exc:
            parts.invalid_pools[pv.name] = str(exc).splitlines()[0]
            continue
        pool_objs.append(policy)
        pool_selectors.append((pv.name, selector))
        if cordoned:
            cordoned_pools.add(pv.name)

    terms = (
        tuple((name, tuple(sorted(sel.items()))) for name, sel in tank_selectors),
        tuple((name, tuple(sorted(sel.items()))) for name, sel in pool_selectors),
        frozenset(cordoned_pools),
    )
    records = cache.begin(terms) if cache is not None else None
    racks: list[RackNode] = []
    vehicles: list[VehicleNode] = []
    for info in sorted(nodes, key=lambda n: n.name):
        if info.role is None or info.deleting:
            continue  # gone (or never ours): its placements are evicted as NodeRemoved
        own = (info.name in unusable, since.get(info.name))
        entry = records.get(info.name) if records is not None else None
        if entry is None or entry[0] is not info or entry[1] != own:
            built = _record(info, tank_selectors, pool_selectors, cordoned_pools, unusable, since)
            entry = (info, own, *built)
        if cache is not None:
            cache.keep(info.name, entry)
        record, site = entry[2], entry[3]
        if isinstance(record, RackNode):
            racks.append(record)
        elif record is not None:
            vehicles.append(record)
        if site is not None:
            parts.sites[info.name] = site

    job_objs, placements = _jobs_and_placements(jobs, current, parts)
    parts.snapshot = Snapshot(
        now=now,
        tanks=tuple(tank_objs),
        racks=tuple(racks),
        pools=tuple(pool_objs),
        vehicles=tuple(vehicles),
        jobs=tuple(job_objs),
        placements=tuple(placements),
    )
    return parts
