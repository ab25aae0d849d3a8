"""Redfish ImmersionUnit client against the simulator over real loopback HTTP, and headroom math."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from e2e.sim.tank import TankSimulator
from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.telemetry.immersion import (
    Headroom,
    Health,
    LeakState,
    RedfishClient,
    RedfishError,
    TankReading,
    compute_headroom,
    power_headroom_kw,
    thermal_capacity_kw,
    unit_url,
)
from tokenfleet.telemetry.problems import ProblemKind, TelemetryProblem


@pytest.fixture
async def sim() -> AsyncIterator[TankSimulator]:
    async with TankSimulator(["tank-a", "tank-b"]) as simulator:
        yield simulator


async def read(sim: TankSimulator, unit: str = "tank-a", **kwargs: float) -> TankReading:
    async with RedfishClient(sim.url, unit, timeout_s=kwargs.pop("timeout_s", 2.0)) as client:
        return await client.read()


async def test_good_reading(sim: TankSimulator) -> None:
    r = await read(sim)
    assert r.problems == ()
    assert r.unit_id == "tank-a"
    assert r.cooling_capacity_watts == 150_000.0
    assert r.specific_heat_kj_per_kg_k == 2.1
    assert r.health is Health.OK
    assert (r.supply_temp_c, r.return_temp_c, r.flow_lpm, r.heat_removed_kw) == (
        32.0,
        40.0,
        300.0,
        60.0,
    )
    assert r.leak_state is LeakState.OK
    assert {d.name for d in r.leak_detectors} == {"Moisture1", "FloatSwitch1"}
    assert r.observed_at.tzinfo is not None


async def test_endpoint_with_service_root_path(sim: TankSimulator) -> None:
    async with RedfishClient(sim.url + "/redfish/v1/", "tank-b") as client:
        assert (await client.read()).problems == ()


@pytest.mark.parametrize(
    ("fields", "field", "raw", "kind"),
    [
        ({"supply_c": float("nan")}, "SupplyTemperatureCelsius", "nan", ProblemKind.NON_FINITE),
        ({"supply_c": "NaN"}, "SupplyTemperatureCelsius", "NaN", ProblemKind.NON_FINITE),
        ({"return_c": 1e9}, "ReturnTemperatureCelsius", "1000000000.0", ProblemKind.OUT_OF_RANGE),
        ({"flow_lpm": -3}, "FlowLitersPerMinute", "-3", ProblemKind.OUT_OF_RANGE),
        ({"heat_kw": "garbage"}, "HeatRemovedkW", "garbage", ProblemKind.UNPARSABLE),
        ({"heat_kw": None}, "HeatRemovedkW", None, ProblemKind.MISSING),
        ({"heat_kw": True}, "HeatRemovedkW", "True", ProblemKind.UNPARSABLE),
        ({"missing": ["FlowLitersPerMinute"]}, "FlowLitersPerMinute", None, ProblemKind.MISSING),
        ({"missing": ["Reading:HeatRemovedkW"]}, "HeatRemovedkW", None, ProblemKind.MISSING),
        ({"capacity_watts": float("inf")}, "CoolingCapacityWatts", "inf", ProblemKind.NON_FINITE),
        ({"specific_heat": 0}, "Coolant.SpecificHeatkJoulesPerKgK", "0", ProblemKind.OUT_OF_RANGE),
        ({"missing": ["Coolant"]}, "Coolant.SpecificHeatkJoulesPerKgK", None, ProblemKind.MISSING),
        ({"health": "Fine"}, "Status.Health", "Fine", ProblemKind.UNPARSABLE),
        ({"missing": ["Status"]}, "Status.Health", None, ProblemKind.MISSING),
    ],
)
async def test_bad_field_is_rejected_alone(
    sim: TankSimulator, fields: dict[str, object], field: str, raw: str | None, kind: ProblemKind
) -> None:
    sim.set("tank-a", **fields)
    r = await read(sim)
    assert r.problems == (TelemetryProblem(field, raw, kind),)
    values = {
        "SupplyTemperatureCelsius": r.supply_temp_c,
        "ReturnTemperatureCelsius": r.return_temp_c,
        "FlowLitersPerMinute": r.flow_lpm,
        "HeatRemovedkW": r.heat_removed_kw,
        "CoolingCapacityWatts": r.cooling_capacity_watts,
        "Coolant.SpecificHeatkJoulesPerKgK": r.specific_heat_kj_per_kg_k,
        "Status.Health": r.health,
    }
    assert values.pop(field) is None
    assert all(v is not None for v in values.values())
    assert r.leak_state is LeakState.OK


@pytest.mark.parametrize("inline", [False, True])
@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"M1": "OK", "F1": "OK"}, LeakState.OK),
        ({"M1": "Warning", "F1": "OK"}, LeakState.WARNING),
        ({"M1": "Warning", "F1": "Critical"}, LeakState.CRITICAL),
        ({"M1": "garbage", "F1": "OK"}, LeakState.UNKNOWN),
        ({"M1": "garbage", "F1": "Warning"}, LeakState.WARNING),
        ({}, LeakState.UNKNOWN),
    ],
)
async def test_leak_states(
    sim: TankSimulator, inline: bool, states: dict[str, str], expected: LeakState
) -> None:
    sim.set("tank-a", leak=states, inline_detectors=inline)
    r = await read(sim)
    assert r.leak_state is expected
    assert r.leak_state.is_leak == (expected in (LeakState.WARNING, LeakState.CRITICAL))


async def test_leak_detectors_unreadable_is_unknown_not_ok(sim: TankSimulator) -> None:
    sim.set("tank-a", missing=["LeakDetectors"])
    r = await read(sim)
    assert r.leak_state is LeakState.UNKNOWN
    assert [p.field for p in r.problems] == ["LeakDetectors"]
    assert r.supply_temp_c == 32.0


async def test_http_error_raises_clear_error(sim: TankSimulator) -> None:
    sim.set("tank-a", http_status=503)
    with pytest.raises(RedfishError, match=r"HTTP 503"):
        await read(sim)


async def test_unknown_unit_raises(sim: TankSimulator) -> None:
    with pytest.raises(RedfishError, match=r"HTTP 404.*tank-zzz|tank-zzz.*HTTP 404"):
        await read(sim, "tank-zzz")


async def test_timeout_raises(sim: TankSimulator) -> None:
    sim.set("tank-a", delay_seconds=2.0)
    with pytest.raises(RedfishError, match="timed out"):
        await read(sim, timeout_s=0.3)


async def test_connection_refused_raises() -> None:
    async with TankSimulator(["t"]) as s:
        url = s.url
    with pytest.raises(RedfishError, match=r"ClientConnectorError|Cannot connect"):
        async with RedfishClient(url, "t", timeout_s=1.0) as client:
            await client.read()


def test_unit_url() -> None:
    assert unit_url("http://127.0.0.1:1", "a b") == (
        "http://127.0.0.1:1/redfish/v1/ThermalEquipment/ImmersionUnits/a%20b"
    )
    assert unit_url("http://h:1/redfish/v1/", "u").endswith(
        "/redfish/v1/ThermalEquipment/ImmersionUnits/u"
    )
    with pytest.raises(ValueError):
        unit_url("ftp://h/", "u")


# --- headroom math --------------------------------------------------------------------------


def reading(**kwargs: object) -> TankReading:
    from datetime import UTC, datetime

    base: dict[str, object] = {
        "unit_id": "t",
        "observed_at": datetime(2026, 1, 1, tzinfo=UTC),
        "supply_temp_c": 30.0,
        "return_temp_c": 40.0,
        "flow_lpm": 300.0,
        "heat_removed_kw": 50.0,
    }
    base.update(kwargs)
    return TankReading(**base)  # type: ignore[arg-type]


SPEC = {
    "capacity_kw": 100.0,
    "safety_margin_percent": 10.0,
    "heat_rejection_kw": 120.0,
    "max_return_temp_c": 50.0,
    "density_kg_per_l": 0.8,
    "specific_heat_kj_per_kg_k": 2.1,
}


def test_headroom_worked_example() -> None:
    # thermal capacity: 300/60 * 0.8 * 2.1 * (50 - 30) = 168 kW, limited to 120 by heat rejection
    h = compute_headroom(reading(), **SPEC)
    assert h == Headroom(
        it_load_kw=50.0,
        power_limit_kw=90.0,
        power_headroom_kw=40.0,
        thermal_capacity_kw=pytest.approx(168.0),  # type: ignore[arg-type]
        heat_limit_kw=120.0,
        thermal_headroom_kw=70.0,
    )
    # low flow: capacity 100/60*0.8*2.1*20 = 56 kW < 120
    h = compute_headroom(reading(flow_lpm=100.0), **SPEC)
    assert h.heat_limit_kw == pytest.approx(56.0)
    assert h.thermal_headroom_kw == pytest.approx(6.0)


def test_headroom_from_flow_when_heat_unknown() -> None:
    # heat = 300/60 * 0.8 * 2.1 * (40 - 30) = 84 kW
    h = compute_headroom(reading(heat_removed_kw=None), **SPEC)
    assert h.it_load_kw == pytest.approx(84.0)
    assert h.power_headroom_kw == pytest.approx(6.0)
    # measured c_p wins over the spec's
    h = compute_headroom(reading(heat_removed_kw=None, specific_heat_kj_per_kg_k=1.05), **SPEC)
    assert h.it_load_kw == pytest.approx(42.0)


def test_headroom_unknown_is_none_never_a_guess() -> None:
    h = compute_headroom(reading(heat_removed_kw=None, return_temp_c=None), **SPEC)
    assert h.it_load_kw is None and h.power_headroom_kw is None and h.thermal_headroom_kw is None
    assert h.power_limit_kw == 90.0
    h = compute_headroom(reading(flow_lpm=None), **SPEC)
    assert (
        h.thermal_capacity_kw is None and h.heat_limit_kw is None and h.thermal_headroom_kw is None
    )
    assert h.power_headroom_kw == 40.0


def test_supply_above_max_return_means_no_thermal_capacity() -> None:
    h = compute_headroom(reading(supply_temp_c=55.0, return_temp_c=60.0), **SPEC)
    assert h.thermal_capacity_kw == 0.0 and h.thermal_headroom_kw == -50.0


@given(
    st.floats(0, 10_000),
    st.floats(0, 100),
    st.floats(0, 20_000),
)
def test_power_headroom_properties(capacity: float, margin: float, load: float) -> None:
    h = power_headroom_kw(capacity, margin, load)
    assert math.isfinite(h)
    assert h <= capacity - load + 1e-9
    assert power_headroom_kw(capacity, margin, load + 1) < h


@given(
    st.floats(0, 10_000),
    st.floats(0.1, 3),
    st.floats(0.1, 10),
    st.floats(-40, 150),
    st.floats(-40, 150),
)
def test_thermal_capacity_nonnegative_and_monotone(
    flow: float, rho: float, cp: float, max_return: float, supply: float
) -> None:
    c = thermal_capacity_kw(flow, rho, cp, max_return, supply)
    assert c >= 0
    assert thermal_capacity_kw(flow * 2, rho, cp, max_return, supply) >= c
