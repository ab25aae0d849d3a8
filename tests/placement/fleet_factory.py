"""Small hand-made fleets for the placement tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tokenfleet.placement.model import (
    Job,
    Placement,
    Plan,
    PoolPolicy,
    RackNode,
    Snapshot,
    Tank,
    Variant,
    VehicleNode,
)

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z; daytime, far from midnight

FP16 = Variant("fp16", memory_mib=16384, tokens_per_second=300.0, watts=500.0,
               targets=frozenset({"Rack"}), precision="FP16")  # fmt: skip
INT4 = Variant("int4", memory_mib=4096, tokens_per_second=25.0, watts=80.0,
               targets=frozenset({"Vehicle"}), precision="INT4")  # fmt: skip


def tank(**kw: Any) -> Tank:
    base: dict[str, Any] = dict(
        name="tank-a",
        region="eu-central",
        power_capacity_kw=100.0,
        safety_margin_percent=10.0,
        it_load_kw=10.0,
        max_supply_temp_c=40.0,
        max_return_temp_c=50.0,
        supply_temp_c=32.0,
        return_temp_c=40.0,
        design_flow_lpm=600.0,
        flow_lpm=600.0,
        heat_rejection_kw=120.0,
        observed_at=NOW - 5,
    )
    base.update(kw)
    return Tank(**base)


def rack(name: str = "rack-1", **kw: Any) -> RackNode:
    base: dict[str, Any] = dict(
        name=name,
        tank="tank-a",
        memory_mib=81920,
        baseline_watts=300.0,
        region="eu-central",
        attested=True,
    )
    base.update(kw)
    return RackNode(**base)


def pool(**kw: Any) -> PoolPolicy:
    base: dict[str, Any] = dict(
        name="pool-a",
        region="eu-central",
        ownership="fleet-ops",
        min_soc_percent=20.0,
        target_soc_percent=80.0,
        require_plugged_in=True,
        max_battery_temp_c=45.0,
        max_compute_temp_c=85.0,
        min_bandwidth_mbps=10.0,
        drain_lead_seconds=900.0,
        daily_energy_budget_kwh=100.0,
        energy_used_today_kwh=0.0,
        energy_cost_per_kwh=0.2,
        wear_cost_per_kwh=0.05,
        hysteresis_percent=2.0,
        battery_capacity_kwh=60.0,
    )
    base.update(kw)
    return PoolPolicy(**base)


def car(name: str = "car-1", **kw: Any) -> VehicleNode:
    base: dict[str, Any] = dict(
        name=name,
        pool="pool-a",
        memory_mib=16384,
        region="eu-central",
        attested=True,
        soc_percent=70.0,
        plugged_in=True,
        charger_kw=11.0,
        battery_temp_c=25.0,
        compute_temp_c=50.0,
        departure_time=NOW + 8 * 3600,
        target_soc_percent=80.0,
        bandwidth_mbps=100.0,
        observed_at=NOW - 10,
    )
    base.update(kw)
    return VehicleNode(**base)


def job(name: str = "ns/job", **kw: Any) -> Job:
    base: dict[str, Any] = dict(
        name=name,
        target_tokens_per_second=25.0,
        variants=(FP16, INT4),
        min_replicas=1,
        max_replicas=4,
        priority=100,
        targets=frozenset({"Rack", "Vehicle"}),
        preference="PreferRack",
    )
    base.update(kw)
    return Job(**base)


def vehicle_only(**kw: Any) -> Snapshot:
    """One car in one pool, one vehicle-only job wanting one INT4 replica."""
    j = job(**{"targets": frozenset({"Vehicle"}), **kw.pop("job", {})})
    return Snapshot(
        now=NOW,
        pools=(pool(**kw.pop("pool", {})),),
        vehicles=(car(**kw.pop("car", {})),),
        jobs=(j,),
        **kw,
    )


def rack_only(**kw: Any) -> Snapshot:
    """One rack node in one tank, one rack-only job wanting one FP16 replica."""
    j = job(
        **{"targets": frozenset({"Rack"}), "target_tokens_per_second": 300.0, **kw.pop("job", {})}
    )
    return Snapshot(
        now=NOW,
        tanks=(tank(**kw.pop("tank", {})),),
        racks=(rack(**kw.pop("rack", {})),),
        jobs=(j,),
        **kw,
    )


def with_load_of(snapshot: Snapshot, p: Plan) -> Snapshot:
    """The world once ``p`` took effect: its assignments are current, tank loads include them."""
    variants = {(j.name, v.name): v for j in snapshot.jobs for v in j.variants}
    tank_of = {r.name: r.tank for r in snapshot.racks}

    def kw_by_tank(ps: tuple[Placement, ...]) -> dict[str, float]:
        out: dict[str, float] = {}
        for a in ps:
            t = tank_of.get(a.node)
            v = variants.get((a.job, a.variant))
            if t is not None and v is not None:
                out[t] = out.get(t, 0.0) + v.watts * a.replicas / 1000.0
        return out

    old, new = kw_by_tank(snapshot.placements), kw_by_tank(p.assignments)

    def bump(t: Tank) -> Tank:
        if t.it_load_kw is None:
            return t
        return replace(t, it_load_kw=t.it_load_kw - old.get(t.name, 0.0) + new.get(t.name, 0.0))

    return replace(snapshot, placements=p.assignments, tanks=tuple(bump(t) for t in snapshot.tanks))
