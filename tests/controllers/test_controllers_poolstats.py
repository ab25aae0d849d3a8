"""A VehiclePool's daily account (pure): energy integration, day rollover, restart, evictions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from tokenfleet.controllers.context import OperatorContext, context_of, operator_memo
from tokenfleet.controllers.nodes import ServingReplica
from tokenfleet.controllers.poolstats import (
    ENERGY_DEADBAND_KWH,
    EvictionLedger,
    PoolTally,
    advance,
    tally_fields,
    tally_from_status,
    tally_write_due,
    utc_day,
)
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.vehiclepool import pool_watts, vehiclepool_status
from tokenfleet.telemetry.node import parse_node

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def ticks(tally: PoolTally, watts: float, seconds: int, step: int = 10) -> PoolTally:
    at = tally.at or T0
    for i in range(step, seconds + 1, step):
        tally = advance(tally, now=at + timedelta(seconds=i), watts=watts)
    return tally


def test_watts_integrate_to_kwh_from_the_next_tick() -> None:
    tally = tally_from_status({}, T0)
    assert tally.day == "2026-11-25" and tally.energy_kwh == 0
    tally = advance(tally, now=T0, watts=1200.0)
    assert tally.energy_kwh == 0  # the draw seen now counts from now on
    tally = ticks(tally, 1200.0, 3600)
    assert tally.energy_kwh == pytest.approx(1.2)
    # a replica unloads: the draw seen at the last tick still covers its interval, then nothing
    tally = advance(tally, now=T0 + timedelta(seconds=3610), watts=0.0)
    assert tally.energy_kwh == pytest.approx(1.2 + 1200 * 10 / 3.6e6)
    assert ticks(tally, 0.0, 600).energy_kwh == tally.energy_kwh


def test_no_replicas_no_growth_and_no_writes() -> None:
    tally = advance(tally_from_status({}, T0), now=T0, watts=0.0)
    stored = tally_fields(tally)
    assert stored == {"energyUsedTodayKWh": 0.0, "energyDay": "2026-11-25", "evictions": []}
    later = ticks(tally, 0.0, 6 * 3600)
    assert later.energy_kwh == 0
    assert not tally_write_due(stored, later, later.at or T0)


def test_day_rollover_keeps_only_the_part_after_midnight() -> None:
    before = datetime(2026, 11, 25, 23, 59, 55, tzinfo=UTC)
    tally = PoolTally(
        day="2026-11-25", energy_kwh=7.5, evictions={"NotPluggedIn": 2}, watts=3600.0, at=before
    )
    after = advance(tally, now=before + timedelta(seconds=10), watts=3600.0)
    assert after.day == "2026-11-26"
    assert after.energy_kwh == pytest.approx(3600 * 5 / 3.6e6)  # 5 s of the new day
    assert after.evictions == {}
    stored = tally_fields(tally)
    assert tally_write_due(stored, after, after.at or before)  # the new day is written at once
    # evictions recorded yesterday and taken after midnight are yesterday's: dropped
    late = advance(
        after,
        now=before + timedelta(seconds=20),
        watts=0.0,
        evicted=[("2026-11-25", "BelowReserveSoC", 1), ("2026-11-26", "NotPluggedIn", 1)],
    )
    assert late.evictions == {"NotPluggedIn": 1}


def test_restart_continues_today_and_resets_an_old_day() -> None:
    stored = {
        "energyUsedTodayKWh": 4.25,
        "energyDay": "2026-11-25",
        "evictions": [{"reason": "NotPluggedIn", "count": 3}],
    }
    tally = tally_from_status(stored, T0)
    assert (tally.energy_kwh, dict(tally.evictions)) == (4.25, {"NotPluggedIn": 3})
    # the first tick after the restart integrates nothing (downtime unobserved), then continues
    tally = ticks(advance(tally, now=T0, watts=600.0), 600.0, 600)
    assert tally.energy_kwh == pytest.approx(4.25 + 0.1)
    assert tally.energy_kwh - 4.25 >= ENERGY_DEADBAND_KWH
    assert tally_write_due(stored, tally, tally.at or T0)
    fresh = tally_from_status(stored, T0 + timedelta(days=1))
    assert (fresh.day, fresh.energy_kwh, dict(fresh.evictions)) == ("2026-11-26", 0.0, {})
    assert tally_write_due(stored, fresh, T0 + timedelta(days=1))
    garbage = tally_from_status({"energyDay": "2026-11-25", "energyUsedTodayKWh": "NaN"}, T0)
    assert garbage.energy_kwh == 0.0


def test_energy_write_deadband_and_minimum_interval() -> None:
    tally = advance(tally_from_status({}, T0), now=T0, watts=2000.0)
    stored = tally_fields(tally)
    assert tally_write_due({}, tally, T0)  # nothing stored yet
    tally = ticks(tally, 2000.0, 60)  # 60 s x 2 kW = 0.033 kWh: inside the deadband
    assert not tally_write_due(stored, tally, tally.at or T0)
    tally = ticks(tally, 2000.0, 60)  # 0.067 kWh, 120 s after loading: due
    assert tally_write_due(stored, tally, tally.at or T0)
    # written 30 s ago: wait for the minimum interval even past the deadband
    recent = PoolTally(
        day=tally.day, energy_kwh=1.0, at=T0, energy_written_at=T0 - timedelta(seconds=30)
    )
    assert not tally_write_due(stored, recent, T0)
    assert tally_write_due(stored, recent, T0 + timedelta(seconds=30))


def test_evictions_are_counted_and_written_at_once() -> None:
    ledger = EvictionLedger()
    ledger.record("vans", "NotPluggedIn", T0)
    ledger.record("vans", "NotPluggedIn", T0)
    ledger.record("vans", "BatteryTooHot", T0)
    ledger.record("cars", "NodeRemoved", T0)
    taken = ledger.take("vans")
    assert taken == [
        ("2026-11-25", "BatteryTooHot", 1),
        ("2026-11-25", "NotPluggedIn", 2),
    ]
    assert ledger.take("vans") == []
    tally = tally_from_status({}, T0)
    stored = tally_fields(tally)
    tally = advance(tally, now=T0 + timedelta(seconds=1), watts=0.0, evicted=taken)
    assert tally_fields(tally)["evictions"] == [
        {"reason": "NotPluggedIn", "count": 2},
        {"reason": "BatteryTooHot", "count": 1},
    ]
    assert tally_write_due(stored, tally, T0 + timedelta(seconds=1))
    ledger.forget("cars")
    assert ledger.take("cars") == []


def _car(name: str) -> Any:
    return parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "vans"},
            },
            "status": {"allocatable": {"memory": "8Gi"}},
        }
    )


def test_pool_watts_sums_the_loaded_replicas_on_the_pools_vehicles() -> None:
    serving = {
        "car-1": [ServingReplica("ns/a", 2, 40.0, 120.0), ServingReplica("ns/b", 1, 5.0, 30.0)],
        "elsewhere": [ServingReplica("ns/a", 1, 20.0, 60.0)],
    }
    assert pool_watts([_car("car-1"), _car("car-2")], serving) == 150.0
    assert pool_watts([_car("car-2")], serving) == 0.0


SPEC = {
    "nodeSelector": {"tokenfleet.io/pool": "vans"},
    "region": "eu",
    "ownership": "fleet-ops",
}


def _tick(status: dict[str, Any], memo: kopf.Memo, serving: dict[str, Any]) -> dict[str, Any]:
    patch = kopf.Patch()
    car = _car("car-1")
    context_of(memo).fleet.node_store.replace([car])
    context_of(memo).fleet.attach(
        {
            "serving_by_node": serving,
        },
        partial=True,
    )
    asyncio.run(
        vehiclepool_status(
            name="vans",
            body=kopf.Body({}),
            spec=kopf.Spec(kopf.Body({"spec": SPEC})),
            status=kopf.Status(kopf.Body({"status": status})),
            meta=kopf.Meta(kopf.Body({"metadata": {"uid": "u-vans", "generation": 1}})),
            memo=memo,
            patch=patch,
        )
    )
    return dict(patch.get("status") or {})


def test_timer_writes_the_account_on_change_only() -> None:
    context = OperatorContext.build(OperatorConfig())
    memo = operator_memo(context)
    serving = {"car-1": [ServingReplica("ns/a", 1, 20.0, 60.0)]}
    first = _tick({}, memo, serving)
    today = utc_day(datetime.now(UTC))
    assert first["energyDay"] == today and first["energyUsedTodayKWh"] == 0.0
    assert first["evictions"] == [] and first["vehicles"]["serving"] == 1
    status = first
    assert _tick(status, memo, serving) == {}  # 60 W for a few ms: inside the deadband
    context.evictions.record("vans", "NotPluggedIn")
    second = _tick(status, memo, serving)
    assert second["evictions"] == [{"reason": "NotPluggedIn", "count": 1}]
    assert "vehicles" not in second  # only the account changed
    assert _tick(status | second, memo, serving) == {}
    # a restarted operator (empty memo) continues from status, nothing to write
    restarted = operator_memo(OperatorContext.build(OperatorConfig()))
    assert _tick(status | second, restarted, serving) == {}
