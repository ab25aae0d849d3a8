"""Eligibility of nodes and tanks, and the array form of a snapshot the solvers work on.

Scalar rules (one node at a time) live here so the full plan and the incremental path share
them; the independent checker (:mod:`tokenfleet.placement.checker`) re-derives them on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tokenfleet.placement.model import (
    Job,
    PoolPolicy,
    RackNode,
    Reason,
    Snapshot,
    Tank,
    Target,
    Variant,
    VehicleNode,
)

FloatArr = npt.NDArray[np.float64]
IntArr = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

REASONS: tuple[Reason, ...] = tuple(Reason)
"""Reason codes: ``code = index + 1``; code 0 means "no objection"."""
CODE: dict[Reason, int] = {r: i + 1 for i, r in enumerate(REASONS)}
INF = math.inf
EPS = 1e-9
POOL_PRICE = 0.05
"""Heuristic tie-break: currency per kWh of a budgeted pool's energy."""


def reason_of(code: int) -> Reason:
    return REASONS[code - 1]


def seconds_to_next_utc_midnight(now: float) -> float:
    """Seconds from ``now`` (epoch s) to the next 00:00 UTC."""
    return 86400.0 - (now % 86400.0)


@dataclass(frozen=True, slots=True)
class NodeState:
    """Eligibility of one node.

    ``hard`` is the reason the node may keep nothing (``None`` = may keep), ``new`` the reason it
    may take no new work (``None`` = may take new).  Energy caps are kW of replica draw a
    vehicle can carry (``inf`` for racks): ``energy_hard_kw`` for what it keeps,
    ``energy_new_kw`` once a new replica lands.  ``hours_today`` converts vehicle draw (kW) to
    today's pool energy (kWh).
    """

    hard: Reason | None
    new: Reason | None
    energy_hard_kw: float = INF
    energy_new_kw: float = INF
    hours_today: float = 0.0
    cost_per_kwh: float = 0.0
    next_change: float = INF
    """Earliest time (epoch s) at which this state changes by time alone (the drain-lead band
    or limit, stale telemetry); the energy rule's moment depends on the draw, see
    :func:`energy_deadline`."""
    need_kwh: float = 0.0
    """Energy the battery still needs by departure, kWh (vehicles)."""
    band_kwh: float = 0.0
    """Hysteresis band on that need for new work, kWh."""
    charger_kw: float = 0.0
    departure: float = INF


def time_arrays(fleet: Fleet) -> tuple[FloatArr, FloatArr, FloatArr, FloatArr, FloatArr]:
    """``fleet.time_arrays``, built from the node states on first use."""
    if fleet.time_arrays is None:
        sts = fleet.node_states
        fleet.time_arrays = (
            np.array([st.next_change for st in sts], dtype=np.float64),
            np.array([st.need_kwh for st in sts], dtype=np.float64),
            np.array([st.band_kwh for st in sts], dtype=np.float64),
            np.array([st.charger_kw for st in sts], dtype=np.float64),
            np.array([st.departure for st in sts], dtype=np.float64),
        )
    return fleet.time_arrays


def energy_deadline(need_kwh: float, charger_kw: float, departure: float, draw_kw: float) -> float:
    """When ``(charger - draw) * hours_left >= need`` stops holding (epoch s; inf: never)."""
    if need_kwh <= 0 or draw_kw <= EPS:  # (a node emptied by add/remove keeps a float residue)
        return INF
    if charger_kw - draw_kw <= 0:
        return -INF
    return departure - 3600.0 * need_kwh / (charger_kw - draw_kw)


def telemetry_unknown(v: VehicleNode, pool: PoolPolicy, now: float) -> Reason | None:
    """Why the car's telemetry counts as unknown at ``now`` (``None``: known enough).

    ``StaleTelemetry`` when the reading's time is unknown, older than the pool's staleness limit
    or further ahead than its clock-skew allowance (then no value of it is used);
    ``MissingTelemetry`` when a value a rule needs is unknown (SoC, temperatures, departure,
    plugged-in when required, bandwidth when a floor is set, charger power when plugged in).
    """
    observed = v.observed_at
    if (
        observed is None
        or now - observed > pool.stale_after_seconds
        or observed - now > pool.max_future_skew_seconds
    ):
        return Reason.STALE_TELEMETRY
    if (
        v.soc_percent is None
        or v.battery_temp_c is None
        or v.compute_temp_c is None
        or v.departure_time is None
        or (pool.require_plugged_in and v.plugged_in is None)
        or (pool.min_bandwidth_mbps > 0 and v.bandwidth_mbps is None)
        or (v.plugged_in is True and v.charger_kw is None)
    ):
        return Reason.MISSING_TELEMETRY
    return None


class _Verdict:
    """The first reason a node may keep nothing (``hard``) and take nothing new (``new``)."""

    def __init__(self) -> None:
        self.hard: Reason | None = None
        self.new: Reason | None = None

    def fail(self, reason: Reason, is_hard: bool) -> None:
        if is_hard and self.hard is None:
            self.hard = reason
        if self.new is None:
            self.new = reason

    def limit(self, reason: Reason, beyond_limit: bool, within_band: bool) -> None:
        """A rule with a hard limit and a hysteresis band before it (new work only)."""
        if beyond_limit:
            self.fail(reason, True)
        elif within_band:
            self.fail(reason, False)


def _vehicle_times(
    v: VehicleNode, pool: PoolPolicy, now: float, unknown: Reason | None, vd: _Verdict
) -> float:
    """The unknown-telemetry verdict (grace) and the earliest moment the verdict changes by time
    alone (see :func:`vehicle_state`)."""
    times: list[float] = []
    if unknown is not None:
        vd.fail(unknown, False)
        since = v.unknown_since
        if since is not None:
            times.append(since + pool.unknown_grace_seconds)
            if now - since >= pool.unknown_grace_seconds:
                vd.fail(Reason.TELEMETRY_UNKNOWN, True)
    if v.observed_at is not None:
        times.append(v.observed_at + pool.stale_after_seconds)
        times.append(v.observed_at - pool.max_future_skew_seconds)
    dep = v.departure_time
    if dep is not None and unknown is not Reason.STALE_TELEMETRY:
        h = pool.hysteresis_percent
        times.append(dep - pool.drain_lead_seconds * (1 + h / 100))
        times.append(dep - pool.drain_lead_seconds)
    return min((t for t in times if t >= now), default=INF)


def _vehicle_limits(v: VehicleNode, pool: PoolPolicy, now: float, vd: _Verdict) -> None:
    """The known values' rules: plugged in, reserve SoC, drain lead, temperatures, bandwidth,
    cordon (each with its hysteresis band for new work)."""
    h = pool.hysteresis_percent
    if pool.require_plugged_in and v.plugged_in is False:
        vd.fail(Reason.NOT_PLUGGED_IN, True)
    soc = v.soc_percent
    if soc is not None:
        vd.limit(
            Reason.BELOW_RESERVE_SOC, soc < pool.min_soc_percent, soc < pool.min_soc_percent + h
        )
    if v.departure_time is not None:
        lead = v.departure_time - now
        vd.limit(
            Reason.DEPARTURE_WITHIN_DRAIN_LEAD,
            lead <= pool.drain_lead_seconds,
            lead <= pool.drain_lead_seconds * (1 + h / 100),
        )
    for temp, limit, reason in (
        (v.battery_temp_c, pool.max_battery_temp_c, Reason.BATTERY_TOO_HOT),
        (v.compute_temp_c, pool.max_compute_temp_c, Reason.COMPUTE_TOO_HOT),
    ):
        if temp is not None:
            vd.limit(reason, temp > limit, temp > limit - abs(limit) * h / 100)
    if pool.min_bandwidth_mbps > 0 and v.bandwidth_mbps is not None:
        bw = v.bandwidth_mbps
        vd.limit(
            Reason.LOW_BANDWIDTH,
            bw < pool.min_bandwidth_mbps,
            bw < pool.min_bandwidth_mbps * (1 + h / 100),
        )
    if v.cordoned:
        vd.fail(Reason.NODE_CORDONED, False)


def _vehicle_energy(
    v: VehicleNode, pool: PoolPolicy, now: float, vd: _Verdict, cost: float, next_change: float
) -> NodeState:
    """The energy rule on known values: ``(charger - draw) * hours >= need`` gives
    ``draw <= charger - need / hours`` (and the band for new work)."""
    assert v.soc_percent is not None and v.departure_time is not None
    soc, dep = v.soc_percent, v.departure_time
    h = pool.hysteresis_percent
    lead = dep - now
    hours = max(lead, 0.0) / 3600.0
    if hours <= 0:
        return NodeState(
            vd.hard or Reason.DEPARTURE_WITHIN_DRAIN_LEAD, vd.new, 0.0, 0.0, 0.0, cost, next_change
        )
    charger = (v.charger_kw or 0.0) if v.plugged_in else 0.0
    capacity = (
        v.battery_capacity_kwh
        if v.battery_capacity_kwh is not None
        else (pool.battery_capacity_kwh)
    )
    target = v.target_soc_percent if v.target_soc_percent is not None else pool.target_soc_percent
    need_kwh = (target - soc) / 100.0 * capacity
    e_hard = charger - need_kwh / hours
    e_new = charger - (need_kwh + h / 100.0 * capacity) / hours
    hours_today = min(lead, seconds_to_next_utc_midnight(now)) / 3600.0
    band = h / 100.0 * capacity
    return NodeState(
        vd.hard, vd.new, e_hard, e_new, hours_today, cost, next_change, need_kwh, band, charger,
        dep,
    )  # fmt: skip


def vehicle_state(v: VehicleNode, pool: PoolPolicy | None, now: float) -> NodeState:
    """Eligibility of a vehicle under its pool's policy at ``now`` (see model docstring).

    Unknown is not bad: a car whose telemetry is unknown (:func:`telemetry_unknown`) takes no
    new work but keeps what it hosts until ``pool.unknown_grace_seconds`` after
    ``v.unknown_since``, then must drain (``TelemetryUnknown``). Known values still apply their
    rules (a known too-hot car drains at once); a stale reading's values are not used at all.
    ``next_change`` is the earliest moment this verdict changes by time alone (drain-lead band
    and limit, the reading going stale or a future-stamped one coming into the skew allowance,
    the unknown grace running out).
    """
    if pool is None:
        return NodeState(Reason.UNKNOWN_POOL, Reason.UNKNOWN_POOL)
    cost = pool.energy_cost_per_kwh + pool.wear_cost_per_kwh
    vd = _Verdict()
    unknown = telemetry_unknown(v, pool, now)
    next_change = _vehicle_times(v, pool, now, unknown, vd)
    if unknown is Reason.STALE_TELEMETRY:
        if v.cordoned:
            vd.fail(Reason.NODE_CORDONED, False)
        return NodeState(vd.hard, vd.new, INF, 0.0, 0.0, cost, next_change)
    _vehicle_limits(v, pool, now, vd)
    if unknown is not None or v.soc_percent is None or v.departure_time is None:
        # the energy rule is not judged on unknown values: keep (until the grace), nothing new
        return NodeState(vd.hard, vd.new, INF, 0.0, 0.0, cost, next_change)
    return _vehicle_energy(v, pool, now, vd, cost, next_change)


def rack_state(r: RackNode, tank: Tank | None, now: float) -> NodeState:
    """Eligibility of a rack node (node- and tank-level flags; tank capacity is separate)."""
    if tank is None:
        return NodeState(Reason.UNKNOWN_TANK, Reason.UNKNOWN_TANK)
    cost = tank.energy_cost_per_kwh
    if tank.leak_state == "Critical" and tank.leak_action == "Drain":
        return NodeState(Reason.TANK_LEAK, Reason.TANK_LEAK, cost_per_kwh=cost)
    new: Reason | None = None
    if tank.leak_state != "OK":
        new = Reason.TANK_LEAK
    elif tank.cordoned:
        new = Reason.TANK_CORDONED
    elif r.cordoned:
        new = Reason.NODE_CORDONED
    elif tank.observed_at is None or now - tank.observed_at > tank.stale_after_seconds:
        new = Reason.STALE_TELEMETRY
    elif (tank.supply_temp_c is not None and tank.supply_temp_c > tank.max_supply_temp_c) or (
        tank.return_temp_c is not None and tank.return_temp_c >= tank.max_return_temp_c
    ):
        new = Reason.TANK_THERMAL_HEADROOM
    return NodeState(None, new, cost_per_kwh=cost)


def thermal_capacity_kw(tank: Tank) -> float:
    """Heat the loop can reject now, kW (= IT load it can carry)."""
    flow = tank.flow_lpm if tank.flow_lpm is not None else tank.design_flow_lpm
    supply = tank.supply_temp_c if tank.supply_temp_c is not None else tank.max_supply_temp_c
    delta = max(tank.max_return_temp_c - supply, 0.0)
    loop = flow / 60.0 * tank.density_kg_per_l * tank.specific_heat_kj_per_kg_k * delta
    return min(tank.heat_rejection_kw, loop)


@dataclass(frozen=True, slots=True)
class TankCaps:
    """kW free for replicas on a tank under the hard limit and for new placements (band)."""

    free_hard_kw: float
    free_new_kw: float
    hard_reason: Reason
    new_reason: Reason


def tank_caps(tank: Tank, background_kw: float) -> TankCaps:
    power = tank.power_capacity_kw * (1 - tank.safety_margin_percent / 100)
    thermal = thermal_capacity_kw(tank)
    band = 1 - tank.hysteresis_percent / 100
    hard_reason = Reason.TANK_POWER_BUDGET if power <= thermal else Reason.TANK_THERMAL_HEADROOM
    new_reason = (
        Reason.TANK_POWER_BUDGET if power * band <= thermal * band else Reason.TANK_THERMAL_HEADROOM
    )
    return TankCaps(
        min(power, thermal) - background_kw,
        min(power, thermal) * band - background_kw,
        hard_reason,
        new_reason,
    )


@dataclass
class JobInfo:
    """Per-job data the solvers use."""

    job: Job
    index: int
    weight: float
    """Value per token/s (``value_per_token_per_second * priority / 100``)."""
    ranked: dict[str, list[Variant]]
    """Variants allowed per target, best first (tokens/s desc, memory asc)."""
    variants: dict[str, Variant]
    preferred: Target | None
    policy_key: tuple[object, ...] = ()
    """Jobs with equal keys have identical node-policy masks (targets, residency, ...)."""


def job_info(job: Job, index: int, value_per_tps: float) -> JobInfo:
    ranked: dict[str, list[Variant]] = {}
    for t in ("Rack", "Vehicle"):
        if t in job.targets:
            vs = [v for v in job.variants if t in v.targets]
            vs.sort(key=lambda v: (-v.tokens_per_second, v.memory_mib, v.name))
            ranked[t] = vs
    preferred: Target | None = (
        "Rack"
        if job.preference == "PreferRack"
        else "Vehicle"
        if job.preference == "PreferVehicle"
        else None
    )
    key = (
        job.targets,
        job.regions,
        job.ownership,
        job.require_attestation,
        bool(ranked.get("Rack")),
        bool(ranked.get("Vehicle")),
        job.avoid_nodes,
        job.fetch_blocked,
    )
    return JobInfo(
        job,
        index,
        value_per_tps * job.priority / 100.0,
        ranked,
        {v.name: v for v in job.variants},
        preferred,
        key,
    )


@dataclass
class Fleet:
    """Array form of a snapshot's nodes, tanks and pools (index order: racks, then vehicles)."""

    names: list[str]
    index: dict[str, int]
    is_vehicle: BoolArr
    mem_cap: FloatArr
    region: IntArr
    owner: IntArr
    attested: BoolArr
    tank: IntArr
    """Tank index, or ``n_tanks`` (a sentinel slot with infinite room) for vehicles."""
    pool: IntArr
    """Pool index, or ``n_pools`` (sentinel) for racks."""
    hard_code: IntArr
    new_code: IntArr
    energy_hard: FloatArr
    energy_new: FloatArr
    hours_today: FloatArr
    cost: FloatArr
    tank_names: list[str]
    tank_free_hard: FloatArr
    tank_free_new: FloatArr
    tank_hard_reason: list[Reason]
    tank_new_reason: list[Reason]
    pool_names: list[str]
    pool_free_hard: FloatArr
    pool_free_new: FloatArr
    region_ids: dict[str, int]
    owner_ids: dict[str, int]
    jobs: dict[str, JobInfo]
    node_states: list[NodeState] = field(default_factory=list)
    pool_price: FloatArr = field(default_factory=lambda: np.zeros(1))
    """Tie-break price per kWh of a pool's daily budget (0 where the pool has no budget)."""
    n_racks: int = 0
    """Racks occupy indices ``[0, n_racks)``, vehicles the rest."""
    mem_max: float = 1.0
    popularity: FloatArr = field(default_factory=lambda: np.zeros(0))
    """Per node, 0..1: how many jobs' policies admit it (scarce special nodes score higher);
    the greedy steers flexible jobs away from popular nodes."""
    pool_kw_ref: FloatArr = field(default_factory=lambda: np.zeros(0))
    """Per pool (+ sentinel), the demand-weighted mean kW of a vehicle replica (empty: unset)."""
    pool_h_ref: FloatArr = field(default_factory=lambda: np.zeros(0))
    """Per pool (+ sentinel), the mean hours to today's end of its eligible cars."""
    now: float = 0.0
    """The snapshot time the node states were derived at."""
    tank_next_change: float = INF
    """Earliest time a tank's telemetry turns stale (new rack work stops there)."""
    time_arrays: tuple[FloatArr, FloatArr, FloatArr, FloatArr, FloatArr] | None = None
    """Per node (next_change, need_kwh, band_kwh, charger_kw, departure) from the node states
    (see :class:`NodeState`), for the incremental chain; built on first use."""
    inputs: tuple[object, ...] = ()
    """(tanks, pools, jobs, weights) of the snapshot: an incremental step needs them unchanged."""
    compat: dict[tuple[object, ...], IntArr] = field(default_factory=dict)
    """:func:`compat_codes` per policy class (:attr:`JobInfo.policy_key`), computed once per
    fleet (:func:`compat_of`) and shared by every pass over it.  Read-only."""
    warm: dict[tuple[str, str], FloatArr] = field(default_factory=dict)
    """Per (job, variant) with ``Job.warm`` entries, 1.0 on the nodes holding it (see
    :func:`~tokenfleet.placement.greedy.warm_mask`).  Read-only."""


def current_watts(snapshot: Snapshot) -> dict[str, float]:
    """Watts of the snapshot's current placements per node (unknown job/variant = 0 W)."""
    variants = {(j.name, v.name): v for j in snapshot.jobs for v in j.variants}
    out: dict[str, float] = {}
    for p in snapshot.placements:
        var = variants.get((p.job, p.variant))
        if var is not None:
            out[p.node] = out.get(p.node, 0.0) + var.watts * p.replicas
    return out


def build_fleet(snapshot: Snapshot) -> Fleet:
    """Compile a snapshot into arrays (O(nodes + tanks + pools + placements))."""
    now = snapshot.now
    tanks = {t.name: t for t in snapshot.tanks}
    pools = {p.name: p for p in snapshot.pools}
    tank_names = [t.name for t in snapshot.tanks]
    tank_idx = {n: i for i, n in enumerate(tank_names)}
    pool_names = [p.name for p in snapshot.pools]
    pool_idx = {n: i for i, n in enumerate(pool_names)}
    nt, npool = len(tank_names), len(pool_names)
    region_ids: dict[str, int] = {}
    owner_ids: dict[str, int] = {}

    def rid(r: str | None) -> int:
        if r is None:
            return -1
        return region_ids.setdefault(r, len(region_ids))

    def oid(o: str | None) -> int:
        if o is None:
            return -1
        return owner_ids.setdefault(o, len(owner_ids))

    n_nodes = len(snapshot.racks) + len(snapshot.vehicles)
    names: list[str] = []
    is_vehicle = np.zeros(n_nodes, dtype=np.bool_)
    mem_cap = np.zeros(n_nodes)
    region = np.full(n_nodes, -1, dtype=np.int64)
    owner = np.full(n_nodes, -1, dtype=np.int64)
    attested = np.zeros(n_nodes, dtype=np.bool_)
    tank_of = np.full(n_nodes, nt, dtype=np.int64)
    pool_of = np.full(n_nodes, npool, dtype=np.int64)
    hard_code = np.zeros(n_nodes, dtype=np.int64)
    new_code = np.zeros(n_nodes, dtype=np.int64)
    energy_hard = np.full(n_nodes, INF)
    energy_new = np.full(n_nodes, INF)
    hours_today = np.zeros(n_nodes)
    cost = np.zeros(n_nodes)
    states: list[NodeState] = []
    baseline_kw = np.zeros(nt + 1)
    i = 0
    for r in snapshot.racks:
        st = rack_state(r, tanks.get(r.tank), now)
        names.append(r.name)
        mem_cap[i] = r.memory_mib
        region[i] = rid(r.region)
        attested[i] = r.attested
        t = tank_idx.get(r.tank, nt)
        tank_of[i] = t
        baseline_kw[t] += r.baseline_watts / 1000.0
        _fill_state(i, st, hard_code, new_code, energy_hard, energy_new, hours_today, cost)
        states.append(st)
        i += 1
    for v in snapshot.vehicles:
        pool = pools.get(v.pool)
        st = vehicle_state(v, pool, now)
        names.append(v.name)
        is_vehicle[i] = True
        mem_cap[i] = v.memory_mib
        region[i] = rid(v.region)
        owner[i] = oid(pool.ownership if pool is not None else None)
        attested[i] = v.attested
        pool_of[i] = pool_idx.get(v.pool, npool)
        _fill_state(i, st, hard_code, new_code, energy_hard, energy_new, hours_today, cost)
        states.append(st)
        i += 1
    index = {n: k for k, n in enumerate(names)}
    # tank background load and capacities
    placed_kw = np.zeros(nt + 1)
    for node, w in current_watts(snapshot).items():
        k = index.get(node)
        if k is not None:
            placed_kw[tank_of[k]] += w / 1000.0
    tank_free_hard = np.full(nt + 1, INF)
    tank_free_new = np.full(nt + 1, INF)
    hard_reasons: list[Reason] = []
    new_reasons: list[Reason] = []
    for t_i, tk in enumerate(snapshot.tanks):
        base = float(baseline_kw[t_i])
        background = (
            max(tk.it_load_kw - float(placed_kw[t_i]), base) if tk.it_load_kw is not None else base
        )
        caps = tank_caps(tk, background)
        tank_free_hard[t_i] = caps.free_hard_kw
        tank_free_new[t_i] = caps.free_new_kw
        hard_reasons.append(caps.hard_reason)
        new_reasons.append(caps.new_reason)
    pool_free_hard = np.full(npool + 1, INF)
    pool_free_new = np.full(npool + 1, INF)
    for p_i, p in enumerate(snapshot.pools):
        if p.daily_energy_budget_kwh is not None:
            left = p.daily_energy_budget_kwh - p.energy_used_today_kwh
            pool_free_hard[p_i] = left
            pool_free_new[p_i] = left - p.daily_energy_budget_kwh * p.hysteresis_percent / 100
    pool_price = np.zeros(npool + 1)
    for p_i, p in enumerate(snapshot.pools):
        if p.daily_energy_budget_kwh is not None:
            pool_price[p_i] = POOL_PRICE
    value = snapshot.weights.value_per_token_per_second
    jobs = {j.name: job_info(j, k, value) for k, j in enumerate(snapshot.jobs)}
    tank_next = min(
        (
            tk.observed_at + tk.stale_after_seconds
            for tk in snapshot.tanks
            if tk.observed_at is not None and tk.observed_at + tk.stale_after_seconds >= now
        ),
        default=INF,
    )
    fleet = Fleet(
        names,
        index,
        is_vehicle,
        mem_cap,
        region,
        owner,
        attested,
        tank_of,
        pool_of,
        hard_code,
        new_code,
        energy_hard,
        energy_new,
        hours_today,
        cost,
        tank_names,
        tank_free_hard,
        tank_free_new,
        hard_reasons,
        new_reasons,
        pool_names,
        pool_free_hard,
        pool_free_new,
        region_ids,
        owner_ids,
        jobs,
        states,
        pool_price,
        len(snapshot.racks),
        float(mem_cap.max()) if n_nodes else 1.0,
    )
    fleet.now = now
    fleet.tank_next_change = tank_next
    fleet.inputs = (snapshot.tanks, snapshot.pools, snapshot.jobs, snapshot.weights)
    return fleet


def _fill_state(
    i: int,
    st: NodeState,
    hard_code: IntArr,
    new_code: IntArr,
    energy_hard: FloatArr,
    energy_new: FloatArr,
    hours_today: FloatArr,
    cost: FloatArr,
) -> None:
    hard_code[i] = CODE[st.hard] if st.hard is not None else 0
    new_code[i] = CODE[st.new] if st.new is not None else 0
    energy_hard[i] = st.energy_hard_kw
    energy_new[i] = st.energy_new_kw
    hours_today[i] = st.hours_today
    cost[i] = st.cost_per_kwh


def node_popularity(fleet: Fleet) -> FloatArr:
    """How many jobs may use each node (policy and eligibility), scaled to 0..1."""
    counts: dict[tuple[object, ...], tuple[int, JobInfo]] = {}
    for info in fleet.jobs.values():
        n, first = counts.get(info.policy_key, (0, info))
        counts[info.policy_key] = (n + 1, first)
    pop = np.zeros(len(fleet.names))
    for n, info in counts.values():
        pop += n * (compat_of(fleet, info) == 0)
    pop *= fleet.new_code == 0
    top = float(pop.max()) if len(pop) else 0.0
    return pop / top if top > 0 else pop


def compat_of(fleet: Fleet, info: JobInfo) -> IntArr:
    """:func:`compat_codes`, cached on the fleet per policy class (do not mutate the result)."""
    c = fleet.compat.get(info.policy_key)
    if c is None:
        c = compat_codes(fleet, info)
        fleet.compat[info.policy_key] = c
    return c


def compat_codes(fleet: Fleet, info: JobInfo) -> IntArr:
    """Per node, the first job-policy objection (target, residency, ownership, attestation,
    load back-off), 0 where the job may use the node at all (capacity aside)."""
    job = info.job
    n = len(fleet.names)
    code = np.zeros(n, dtype=np.int64)
    if job.avoid_nodes:
        avoid = [fleet.index[x] for x in job.avoid_nodes if x in fleet.index]
        code[avoid] = CODE[Reason.LOAD_FAILED]
    if job.fetch_blocked:
        blocked = [fleet.index[x] for x in job.fetch_blocked if x in fleet.index]
        code[blocked] = CODE[Reason.MODEL_NOT_DELIVERABLE]
    if job.require_attestation:
        code[~fleet.attested] = CODE[Reason.NOT_ATTESTED]
    if job.ownership:
        ids = [fleet.owner_ids[o] for o in job.ownership if o in fleet.owner_ids]
        # unknown never counts as good: a car whose pool names no owner fails too; racks
        # (site hardware, no owner) always pass
        bad = fleet.is_vehicle & ~np.isin(fleet.owner, ids)
        code[bad] = CODE[Reason.OWNERSHIP]
    if job.regions:
        ids = [fleet.region_ids[r] for r in job.regions if r in fleet.region_ids]
        code[~np.isin(fleet.region, ids)] = CODE[Reason.RESIDENCY]
    for t, is_v in (("Rack", False), ("Vehicle", True)):
        group = fleet.is_vehicle == is_v
        if t not in job.targets:
            code[group] = CODE[Reason.TARGET_NOT_ALLOWED]
        elif not info.ranked.get(t):
            code[group] = CODE[Reason.NO_VARIANT_FOR_TARGET]
    return code


def compat_scalar(fleet: Fleet, info: JobInfo, k: int) -> Reason | None:
    """:func:`compat_codes` for one node."""
    job = info.job
    t = "Vehicle" if fleet.is_vehicle[k] else "Rack"
    if t not in job.targets:
        return Reason.TARGET_NOT_ALLOWED
    if not info.ranked.get(t):
        return Reason.NO_VARIANT_FOR_TARGET
    if job.regions:
        r = int(fleet.region[k])
        if r < 0 or not any(fleet.region_ids.get(x) == r for x in job.regions):
            return Reason.RESIDENCY
    if job.ownership:
        o = int(fleet.owner[k])
        if fleet.is_vehicle[k] and not any(fleet.owner_ids.get(x) == o for x in job.ownership):
            return Reason.OWNERSHIP
    if job.require_attestation and not fleet.attested[k]:
        return Reason.NOT_ATTESTED
    if job.avoid_nodes and fleet.names[k] in job.avoid_nodes:
        return Reason.LOAD_FAILED
    if job.fetch_blocked and fleet.names[k] in job.fetch_blocked:
        return Reason.MODEL_NOT_DELIVERABLE
    return None


def pool_references(fleet: Fleet) -> None:
    """Fill ``fleet.pool_kw_ref`` / ``pool_h_ref``: the demand-weighted mean kW of a vehicle
    replica and each pool's mean stay (hours counted toward today's budget) of eligible cars."""
    nr = fleet.n_racks
    num = 0.0
    den = 0.0
    for info in fleet.jobs.values():
        vs = info.ranked.get("Vehicle")
        if not vs:
            continue
        v = vs[0]
        want = min(
            float(info.job.max_replicas),
            info.job.target_tokens_per_second / max(v.tokens_per_second, EPS),
        )
        num += want * v.watts / 1000.0
        den += want
    kw_ref = num / den if den > 0 else 0.0
    n_pools = len(fleet.pool_free_new)
    h_ref = np.zeros(n_pools)
    ok = fleet.new_code[nr:] == 0
    pools = fleet.pool[nr:][ok]
    hrs = fleet.hours_today[nr:][ok]
    if pools.size:
        sums = np.bincount(pools, weights=hrs, minlength=n_pools)
        cnt = np.bincount(pools, minlength=n_pools)
        h_ref = np.where(cnt > 0, sums / np.maximum(cnt, 1), 0.0)
    fleet.pool_kw_ref = np.full(n_pools, kw_ref)
    fleet.pool_h_ref = h_ref
