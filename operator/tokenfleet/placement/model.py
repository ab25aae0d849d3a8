"""Plain-data inputs and outputs of the placement engine.

Everything here is a frozen dataclass of plain Python values, so the engine is pure and
deterministic: no wall clock (``Snapshot.now`` is the only clock), no Kubernetes objects.

Units (also repeated on each field):

* time: seconds since the Unix epoch, UTC, as ``float`` (``now``, ``departure_time``,
  ``observed_at``); durations in seconds.
* memory: MiB.  Node power (baseline, per replica): W.  Tank power and heat: kW.
* energy: kWh.  Costs: currency units per kWh (the objective is in the same currency per hour).
* temperatures: °C.  State of charge: percent 0..100.  Flow: L/min.  Bandwidth: Mbit/s.
* hysteresis: percent.  For kW / °C / seconds limits the band is ``limit * percent / 100``;
  for state of charge (already a percentage) the band is ``percent`` percentage points.

Semantics the solvers and the independent checker share (documented here, implemented twice):

* Tank power: IT load after the plan ≤ ``power_capacity_kw * (1 - safety_margin_percent/100)``.
  IT load after the plan = background + Σ planned replica watts on the tank's nodes / 1000, where
  background = ``max(it_load_kw - Σ current replica W on the tank / 1000, Σ baseline W / 1000)``
  (``it_load_kw`` is the measured load, which includes the replicas currently placed; when it is
  unknown the background is the sum of baselines).
* Tank heat: heat ≈ IT power; IT load after the plan ≤ thermal capacity =
  ``min(heat_rejection_kw, flow/60 * density * specific_heat * (max_return_temp_c - supply))``,
  flow = measured flow if known else design flow, supply = measured supply if known else
  ``max_supply_temp_c``.
* Vehicle energy: with ``h = (departure_time - now)/3600`` and the battery capacity ``E`` kWh,
  ``(charger_kw - draw_kw) * h ≥ (target_soc - soc)/100 * E`` (charger power counts only when
  plugged in), where ``draw_kw`` is the sum of the vehicle's planned replica watts / 1000.
* Pool energy: ``energy_used_today_kwh + Σ_vehicles draw_kw * h_today ≤ daily_energy_budget_kwh``,
  ``h_today`` = hours from ``now`` to the earlier of the departure and the next UTC midnight.
* A stale or missing reading blocks *new* work on that node or tank; it does not by itself evict.
  A vehicle value that is missing (``None``) while a rule needs it makes the vehicle ineligible
  (placements on it are evicted): unknown never counts as good.
* Hysteresis: an existing placement stays while its values are within the hard limits; a new
  placement needs every value beyond the hysteresis band (see each limit's band above). Hard limits
  are never exceeded by either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Target = Literal["Rack", "Vehicle"]
"""Kind of hardware a replica runs on."""

Preference = Literal["PreferRack", "PreferVehicle", "LowestCost"]
"""Job placement preference (``InferenceJob.spec.placement.preference``)."""

LeakState = Literal["OK", "Warning", "Critical", "Unknown"]
LeakAction = Literal["Cordon", "Drain"]


class Reason(StrEnum):
    """Machine-readable reasons (CamelCase, shown in status and Events).

    Node / tank eligibility: why a node takes no (new) work or why a placement was evicted.
    Job-level: why a job is short of its target.  Plan-level: why a placement was removed.
    """

    # vehicle eligibility
    NOT_PLUGGED_IN = "NotPluggedIn"
    BELOW_RESERVE_SOC = "BelowReserveSoC"
    DEPARTURE_WITHIN_DRAIN_LEAD = "DepartureWithinDrainLead"
    INSUFFICIENT_ENERGY_FOR_TARGET = "InsufficientEnergyForTarget"
    BATTERY_TOO_HOT = "BatteryTooHot"
    COMPUTE_TOO_HOT = "ComputeTooHot"
    LOW_BANDWIDTH = "LowBandwidth"
    STALE_TELEMETRY = "StaleTelemetry"
    MISSING_TELEMETRY = "MissingTelemetry"
    TELEMETRY_UNKNOWN = "TelemetryUnknown"
    """Telemetry unknown (stale, missing, rejected) for longer than the pool's grace: drain."""
    POOL_ENERGY_BUDGET = "PoolEnergyBudget"
    UNKNOWN_POOL = "UnknownPool"
    # tank / rack eligibility
    TANK_LEAK = "TankLeak"
    TANK_CORDONED = "TankCordoned"
    TANK_POWER_BUDGET = "TankPowerBudget"
    TANK_THERMAL_HEADROOM = "TankThermalHeadroom"
    UNKNOWN_TANK = "UnknownTank"
    NODE_CORDONED = "NodeCordoned"
    # job ↔ node compatibility
    INSUFFICIENT_MEMORY = "InsufficientMemory"
    RESIDENCY = "Residency"
    OWNERSHIP = "Ownership"
    NOT_ATTESTED = "NotAttested"
    TARGET_NOT_ALLOWED = "TargetNotAllowed"
    NO_VARIANT_FOR_TARGET = "NoVariantForTarget"
    SPREAD_LIMIT = "SpreadLimit"
    LOAD_FAILED = "LoadFailed"
    """The job's model failed to load on the node; it waits out a back-off there."""
    MODEL_NOT_DELIVERABLE = "ModelNotDeliverable"
    """The car holds none of the job's vehicle variants and may not download
    one now (unplugged, link below the pool's floor, or it would not finish before departure)."""
    # job-level / plan-level
    NO_ELIGIBLE_NODE = "NoEligibleNode"
    MAX_REPLICAS = "MaxReplicas"
    JOB_REMOVED = "JobRemoved"
    VARIANT_REMOVED = "VariantRemoved"
    NODE_REMOVED = "NodeRemoved"
    SCALED_DOWN = "ScaledDown"
    PREEMPTED = "Preempted"
    NO_DEMAND = "NoDemand"
    NOT_WORTH_A_REPLICA = "NotWorthAReplica"
    """Nodes have room, but one more replica would add less value (tokens/s toward the target,
    weighted by priority) than it costs (energy, wear, fit): the job stays below its target."""


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True, slots=True)
class Tank:
    """One immersion tank (``ImmersionPod``): power budget, coolant loop, leak and cordon state."""

    name: str
    power_capacity_kw: float
    """Site power cap for the tank, kW (``spec.power.capacityKW``)."""
    max_supply_temp_c: float
    """Coolant supply temperature limit, °C."""
    max_return_temp_c: float
    """Coolant return temperature limit, °C."""
    design_flow_lpm: float
    """Design coolant flow, L/min (used when no flow is measured)."""
    heat_rejection_kw: float
    """Heat the loop can reject at most, kW."""
    region: str | None = None
    safety_margin_percent: float = 10.0
    """Percent of ``power_capacity_kw`` kept free."""
    it_load_kw: float | None = None
    """Measured IT load, kW, including the replicas currently placed; ``None`` = unknown."""
    supply_temp_c: float | None = None
    """Measured coolant supply temperature, °C; ``None`` = unknown."""
    return_temp_c: float | None = None
    """Measured coolant return temperature, °C; ``None`` = unknown."""
    flow_lpm: float | None = None
    """Measured coolant flow, L/min; ``None`` = unknown (design flow is used)."""
    specific_heat_kj_per_kg_k: float = 2.1
    """Coolant specific heat c_p, kJ/(kg·K)."""
    density_kg_per_l: float = 0.8
    """Coolant density, kg/L."""
    leak_state: LeakState = "OK"
    """``Critical`` with ``leak_action == "Drain"`` evicts everything; any state but ``OK``
    blocks new work."""
    leak_action: LeakAction = "Drain"
    cordoned: bool = False
    """Cordoned tank: no new work, existing replicas stay."""
    observed_at: float | None = None
    """Time of the tank telemetry reading, epoch s; ``None`` = never read (stale)."""
    stale_after_seconds: float = 60.0
    hysteresis_percent: float = 5.0
    """Band on power and thermal limits for new placements, percent of the limit."""
    energy_cost_per_kwh: float = 0.0
    """Site electricity cost, currency/kWh (objective only)."""


@dataclass(frozen=True, slots=True)
class RackNode:
    """A server in a tank."""

    name: str
    tank: str
    memory_mib: int
    """Memory available for model replicas (node allocatable), MiB."""
    accelerator: str | None = None
    """Accelerator class label (informational; variants do not yet name one)."""
    baseline_watts: float = 0.0
    """Idle draw of the node, W (counts toward the tank load)."""
    region: str | None = None
    """Residency region from the NodeRestriction trust label; ``None`` fails any residency rule."""
    attested: bool = False
    cordoned: bool = False
    """Node unschedulable: no new work."""


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """A ``VehiclePool``'s battery, thermal, connectivity and energy policy."""

    name: str
    min_soc_percent: float
    """Reserve floor, percent."""
    target_soc_percent: float
    """Default SoC the driver needs at departure, percent (a vehicle's own value wins)."""
    region: str | None = None
    ownership: str | None = None
    """Owner of the pool's vehicles (matched against ``Job.ownership``)."""
    require_plugged_in: bool = True
    max_battery_temp_c: float = 45.0
    max_compute_temp_c: float = 85.0
    min_bandwidth_mbps: float = 0.0
    drain_lead_seconds: float = 900.0
    """Replicas must be gone this long before departure, s."""
    daily_energy_budget_kwh: float | None = None
    """Energy the pool may spend on inference per UTC day, kWh; ``None`` = unlimited."""
    energy_used_today_kwh: float = 0.0
    """Energy already spent today, kWh (``status.energyUsedTodayKWh``)."""
    energy_cost_per_kwh: float = 0.0
    wear_cost_per_kwh: float = 0.0
    stale_after_seconds: float = 300.0
    hysteresis_percent: float = 2.0
    """Band for new placements: SoC in percentage points, temperatures/lead time in percent."""
    battery_capacity_kwh: float = 60.0
    """Usable battery capacity, kWh (``spec.battery.capacityKWh``; a vehicle's own value wins)."""
    unknown_grace_seconds: float = 300.0
    """A car whose telemetry is unknown keeps its replicas this long, then drains them
    (``TelemetryUnknown``); it takes no new work meanwhile."""
    max_future_skew_seconds: float = 30.0
    """A reading stamped further than this ahead of ``now`` is unknown (clock skew allowance)."""


@dataclass(frozen=True, slots=True)
class VehicleNode:
    """A parked EV serving as a node.  Telemetry values are ``None`` when missing or unparsable."""

    name: str
    pool: str
    memory_mib: int
    """Memory available for model replicas, MiB."""
    accelerator: str | None = None
    region: str | None = None
    """Residency region from the NodeRestriction trust label."""
    attested: bool = False
    soc_percent: float | None = None
    plugged_in: bool | None = None
    charger_kw: float | None = None
    """Charger power delivered now, kW."""
    battery_temp_c: float | None = None
    compute_temp_c: float | None = None
    departure_time: float | None = None
    """Predicted departure, epoch s."""
    target_soc_percent: float | None = None
    """SoC needed at departure, percent (``None`` = the pool's)."""
    bandwidth_mbps: float | None = None
    observed_at: float | None = None
    """Time of the reading, epoch s; age = ``now - observed_at``."""
    battery_capacity_kwh: float | None = None
    """Usable battery capacity, kWh (``None`` = the pool's default)."""
    cordoned: bool = False
    unknown_since: float | None = None
    """Epoch s since when the operator has seen this car's telemetry unknown (``None``: not
    unknown, or not tracked: then the grace never expires)."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One build of a job's model (``spec.variants[]``)."""

    name: str
    memory_mib: int
    """Memory per replica, MiB."""
    tokens_per_second: float
    """Throughput per replica, tokens/s."""
    watts: float
    """Power per replica, W."""
    targets: frozenset[Target]
    precision: str = "FP16"


@dataclass(frozen=True, slots=True)
class Spread:
    """Spread limits per job.  ``None`` = unlimited."""

    max_replicas_per_node: int = 1
    max_replicas_per_tank: int | None = None
    max_replicas_per_pool: int | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """An ``InferenceJob``: ``name`` is ``namespace/name``."""

    name: str
    target_tokens_per_second: float
    """Throughput target, tokens/s."""
    variants: tuple[Variant, ...]
    min_replicas: int = 0
    max_replicas: int = 1
    priority: int = 100
    """0..1000; the objective weight is ``priority / 100``."""
    targets: frozenset[Target] = frozenset({"Rack", "Vehicle"})
    preference: Preference = "PreferRack"
    regions: frozenset[str] = frozenset()
    """Allowed residency regions; empty = any."""
    ownership: frozenset[str] = frozenset()
    """Allowed hardware owners; empty = any.  A car passes only when its pool's owner is one of
    them (a pool without an owner fails: unknown never counts as good); racks always pass."""
    require_attestation: bool = False
    spread: Spread = field(default_factory=Spread)
    avoid_nodes: frozenset[str] = frozenset()
    """Nodes this job may not use now (its model failed to load there: per-job back-off)."""
    fetch_blocked: frozenset[str] = frozenset()
    """Cars that would have to download the job's model and may not now: no
    new replica there (existing ones are never listed)."""
    warm: frozenset[tuple[str, str]] = frozenset()
    """``(node, variant)`` whose model the node's cache already holds: a
    replica there is a load, not a download, and is preferred (tie-break bonus)."""


@dataclass(frozen=True, slots=True)
class Placement:
    """``replicas`` replicas of ``job``'s ``variant`` on ``node`` (current or planned)."""

    job: str
    node: str
    variant: str
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class ObjectiveWeights:
    """Objective = Σ_jobs value * priority/100 * min(served, target) [per token/s]
    - Σ replicas kW * (energy + wear cost per kWh) - move_cost * removed replicas
    + preference_bonus * replicas on the job's preferred target.  Units: currency per hour."""

    value_per_token_per_second: float = 1.0
    move_cost: float = 5.0
    """Per replica removed from its current node (eviction or move)."""
    preference_bonus: float = 1.0
    """Per replica on the job's preferred target (PreferRack / PreferVehicle)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one decision needs.  ``now`` is the only clock (epoch s)."""

    now: float
    tanks: tuple[Tank, ...] = ()
    racks: tuple[RackNode, ...] = ()
    pools: tuple[PoolPolicy, ...] = ()
    vehicles: tuple[VehicleNode, ...] = ()
    jobs: tuple[Job, ...] = ()
    placements: tuple[Placement, ...] = ()
    """Current placements (from InferenceJob status)."""
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights)


# ---------------------------------------------------------------------------------------------
# outputs


@dataclass(frozen=True, slots=True)
class Eviction:
    """A current placement the plan removes, with why.  ``moved_to`` names the node that took
    the replica over when the plan re-places it elsewhere (a move), else ``None``."""

    job: str
    node: str
    variant: str
    replicas: int
    reason: Reason
    moved_to: str | None = None


@dataclass(frozen=True, slots=True)
class JobShortfall:
    """A job below its throughput target (or min replicas) after the plan."""

    job: str
    reason: Reason
    """Dominant reason (the one counted most among the nodes the job could not use)."""
    served_tokens_per_second: float
    target_tokens_per_second: float
    replicas: int
    reasons: tuple[tuple[Reason, int], ...] = ()
    """Counts of nodes rejected per reason, largest first."""


@dataclass(frozen=True, slots=True)
class UnusedNode:
    """A node the plan leaves without replicas, with why."""

    node: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class Plan:
    """The placement decision.

    ``assignments``: every placement in the new plan (kept and new).  ``added``: those not in the
    snapshot's current placements.  ``evictions``: current placements removed, each with a reason.
    ``objective``: the plan's objective value (see :class:`ObjectiveWeights`), currency/hour.
    """

    assignments: tuple[Placement, ...]
    added: tuple[Placement, ...] = ()
    evictions: tuple[Eviction, ...] = ()
    job_shortfalls: tuple[JobShortfall, ...] = ()
    unused_nodes: tuple[UnusedNode, ...] = ()
    objective: float = 0.0
    solver: str = "heuristic"
    bound: float | None = None
    """Best proven upper bound on the objective (MILP only)."""
    next_deadline: float | None = None
    """Epoch s by which the plan must be recomputed because time alone changes what holds: the
    earliest drain-lead / charge-by-departure / stale-telemetry threshold of a node, the next
    UTC midnight (energy day) or the end of the incremental chain; ``None`` = no such moment."""
    cache: object | None = field(default=None, compare=False, repr=False)
    """Solver state reused by :func:`replan_node`; opaque."""

    def served_tokens_per_second(self, job: str, snapshot: Snapshot) -> float:
        """Throughput this plan serves for ``job``, tokens/s (uncapped)."""
        variants = {
            v.name: v.tokens_per_second for j in snapshot.jobs if j.name == job for v in j.variants
        }
        return sum(
            variants.get(a.variant, 0.0) * a.replicas for a in self.assignments if a.job == job
        )
