"""Figures of a run: ``summary.json`` (deterministic: same scenario and seed, same bytes)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tokenfleet.fleetsim.ageing import relative_capacity
from tokenfleet.simulate.engine import DAY, CarTrace, Result

MT = 1e6


def _r(x: float, digits: int = 6) -> float:
    """Round to ``digits`` significant digits (stable JSON across platforms' last bits)."""
    if x == 0 or not np.isfinite(x):
        return 0.0 if x == 0 else float(x)
    return float(f"{x:.{digits}g}")


def _per_mt(cost: float, tokens: float) -> float | None:
    return _r(cost / tokens * MT) if tokens > 0 else None


def wear(result: Result) -> dict[str, dict[str, float]]:
    """Per pool: capacity lost per car-year with and without compute (BLAST-Lite, the sampled
    cars' SoC and battery-temperature traces repeated for a year)."""
    out: dict[str, dict[str, float]] = {}
    by_pool: dict[str, list[CarTrace]] = {}
    for ct in result.car_traces:
        by_pool.setdefault(ct.pool, []).append(ct)
    t0 = result.scenario.start.timestamp()
    for p in result.scenario.pools:
        traces = by_pool.get(p.name, [])[: p.ageing.sample_cars]
        if not traces:
            continue
        loss: list[float] = []
        loss_base: list[float] = []
        for ct in traces:
            t = np.asarray(ct.t) - t0
            q = relative_capacity(p.ageing.cell, t, np.asarray(ct.soc), np.asarray(ct.temp), 1.0)
            qb = relative_capacity(
                p.ageing.cell, t, np.asarray(ct.soc_base), np.asarray(ct.temp_base), 1.0
            )
            if not (np.isfinite(q) and np.isfinite(qb)):
                raise RuntimeError(f"BLAST-Lite {p.ageing.cell} gave no capacity for {ct.car}")
            loss.append((1 - q) * p.battery_kwh)
            loss_base.append((1 - qb) * p.battery_kwh)
        lc = float(np.mean(loss))
        lb = float(np.mean(loss_base))
        out[p.name] = {
            "capacity_lost_kwh_per_car_year": _r(lc),
            "capacity_lost_kwh_per_car_year_no_compute": _r(lb),
            "extra_kwh_per_car_year": _r(lc - lb),
            "extra_cost_per_car_year": _r((lc - lb) * p.ageing.cost_per_kwh_lost),
            "sample_cars": len(traces),
        }
    return out


def summarize(result: Result, baseline: Result | None = None) -> dict[str, Any]:
    """The run's figures; ``baseline`` is the racks-only run of the same scenario."""
    sc = result.scenario
    tot = result.totals
    days = sc.days
    n_cars = sum(result.pool_cars.values())
    car_days = n_cars * days
    w = wear(result)
    wear_cost = sum(
        w[p.name]["extra_cost_per_car_year"] * p.cars * days / 365.0
        for p in sc.pools
        if p.name in w
    )
    wear_kwh = sum(
        w[p.name]["extra_kwh_per_car_year"] * p.cars * days / 365.0 for p in sc.pools if p.name in w
    )
    months = days / 30.0
    dc_rate = sc.electricity.demand_charge_per_kw_month
    # the demand charge compute adds: peak with compute minus peak without (cars charging only,
    # racks idle), split between cars and racks by their compute kW at the peak
    extra_peak = max(tot.peak_kw - tot.peak_kw_no_compute, 0.0)
    comp_at_peak = tot.peak_car_compute_kw + tot.peak_rack_kw
    car_share = tot.peak_car_compute_kw / comp_at_peak if comp_at_peak > 0 else 0.0
    dc_cars = extra_peak * car_share * dc_rate * months
    dc_racks = extra_peak * (1 - car_share) * dc_rate * months
    price = sc.revenue.price_per_mtoken
    tokens = tot.tokens_car + tot.tokens_rack
    batch_demand = sum(result.batch_tokens.values())
    batch_served = sum(min(result.batch_done[k], v) for k, v in result.batch_tokens.items())
    car_cost = tot.car_compute_cost + dc_cars + wear_cost
    car_revenue = tot.tokens_car / MT * price
    out: dict[str, Any] = {
        "scenario": sc.name,
        "seed": result.seed,
        "days": days,
        "cars": n_cars,
        "tanks": result.tanks,
        "tokens": {
            "total": _r(tokens),
            "cars": _r(tot.tokens_car),
            "racks": _r(tot.tokens_rack),
            "per_day_per_1000_cars": _r(tot.tokens_car / days / n_cars * 1000) if n_cars else 0.0,
            "per_day_per_tank": _r(tot.tokens_rack / days / result.tanks) if result.tanks else 0.0,
        },
        "demand": {
            "online_share_served": _r(tot.online_served / tot.online_demand)
            if tot.online_demand
            else None,
            "batch_share_served": _r(batch_served / batch_demand) if batch_demand else None,
            "batch_tokens_demanded": _r(batch_demand),
        },
        "energy": {
            "car_compute_kwh": _r(tot.car_compute_kwh),
            "car_compute_grid_kwh": _r(tot.car_compute_grid_kwh),
            "car_charging_grid_kwh": _r(tot.car_grid_kwh),
            "car_charging_grid_kwh_no_compute": _r(tot.car_grid_kwh_base),
            "rack_grid_kwh": _r(tot.rack_grid_kwh),
            "site_peak_kw": _r(tot.peak_kw),
            "site_peak_kw_no_compute": _r(tot.peak_kw_no_compute),
            "site_over_cap_seconds": _r(tot.site_over_cap_s),
        },
        "cost": {
            "car_energy": _r(tot.car_compute_cost),
            "car_demand_charge": _r(dc_cars),
            "car_battery_wear": _r(wear_cost),
            "rack_energy": _r(tot.rack_energy_cost),
            "rack_demand_charge": _r(dc_racks),
        },
        "per_mtoken": {
            "cars": {
                "kwh": _per_mt(tot.car_compute_grid_kwh, tot.tokens_car),
                "energy": _per_mt(tot.car_compute_cost, tot.tokens_car),
                "demand_charge": _per_mt(dc_cars, tot.tokens_car),
                "battery_wear": _per_mt(wear_cost, tot.tokens_car),
                "battery_wear_kwh_capacity": _per_mt(wear_kwh, tot.tokens_car),
                "total": _per_mt(car_cost, tot.tokens_car),
            },
            "racks": {
                "kwh": _per_mt(tot.rack_grid_kwh, tot.tokens_rack),
                "energy": _per_mt(tot.rack_energy_cost, tot.tokens_rack),
                "demand_charge": _per_mt(dc_racks, tot.tokens_rack),
                "total": _per_mt(tot.rack_energy_cost + dc_racks, tot.tokens_rack),
            },
        },
        "battery_wear": w,
        "revenue": {
            "price_per_mtoken": price,
            "cars": _r(car_revenue),
            "racks": _r(tot.tokens_rack / MT * price),
            "net_per_car_per_day": _r((car_revenue - car_cost) / car_days) if car_days else None,
        },
        "safety": {
            "departures": tot.departures,
            "departures_drained_late": tot.drained_late,
            "cars_below_target_soc": tot.below_target,
            "cars_below_target_soc_no_compute": tot.below_target_base,
            "cars_below_target_soc_due_to_compute": tot.below_target_due_to_compute,
            "replica_seconds_past_drain_lead": _r(tot.hosted_past_lead_s),
            "empty_battery_events": tot.empty_battery_events,
        },
        "placement": {
            "full_plans": tot.full_plans,
            "incremental_plans": tot.incremental_plans,
            "checked_plans": tot.checked_plans,
            "replica_evictions_from_cars": tot.car_evictions,
            "replica_moves_from_cars": tot.car_moves,
            "evictions_per_car_day": _r(tot.car_evictions / car_days) if car_days else None,
            "car_utilisation": _r(tot.car_hosting_s / (n_cars * days * DAY)) if n_cars else None,
            "parked_car_utilisation": _r(tot.car_hosting_s / tot.car_present_s)
            if tot.car_present_s
            else None,
        },
    }
    if baseline is not None:
        b = baseline.totals
        b_batch = sum(min(baseline.batch_done[k], v) for k, v in baseline.batch_tokens.items())
        out["racks_only"] = {
            "tokens": _r(b.tokens_rack),
            "online_share_served": _r(b.online_served / b.online_demand)
            if b.online_demand
            else None,
            "batch_share_served": _r(b_batch / batch_demand) if batch_demand else None,
            "rack_energy_cost": _r(b.rack_energy_cost),
            "extra_tokens_with_cars": _r(tokens - b.tokens_rack),
            "extra_tokens_share": _r((tokens - b.tokens_rack) / b.tokens_rack)
            if b.tokens_rack
            else None,
        }
    return out


def dumps(summary: dict[str, Any]) -> str:
    """Strict JSON (a NaN or infinity is an error), sorted keys."""
    return json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
