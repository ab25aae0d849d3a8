"""Physical models: energy conservation, SoC bounds, charge limit, temperatures, stays."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tokenfleet.fleetsim.cars import CarFleet, CarSpec
from tokenfleet.fleetsim.schedule import DAY, Normal, StayPattern, make_stays
from tokenfleet.fleetsim.site import Ambient, DemandResponse, SiteCap, TimeOfUse
from tokenfleet.fleetsim.tanks import TankLoop, TankLoopSpec, spec_steady

START = 1_780_272_000.0  # 2026-06-01 00:00 UTC, a Monday


def fleet(n: int = 4, **kw: float) -> CarFleet:
    spec = CarSpec(battery_kwh=60.0, charger_kw=7.0, charge_efficiency=0.9, **kw)
    f = CarFleet([spec] * n, ambient_c=20.0)
    for i in range(n):
        f.arrive(i, 0.0, 20.0)
    return f


def test_energy_is_conserved_every_step() -> None:
    f = fleet(4)
    f.soc[:] = [10.0, 50.0, 79.9, 80.0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        before = f.soc * f.battery_kwh / 100.0
        compute = rng.uniform(0, 9000, size=4)  # up to more than the charger gives
        e = f.advance(float(rng.uniform(1, 900)), compute, 20.0, float(rng.uniform(0.3, 1.0)))
        after = f.soc * f.battery_kwh / 100.0
        np.testing.assert_allclose(after - before, e.battery_kwh, atol=1e-9)
        np.testing.assert_allclose(e.grid_kwh * 0.9, e.battery_kwh + e.compute_kwh, atol=1e-9)


def test_soc_stays_within_bounds_and_stops_at_the_charge_limit() -> None:
    f = fleet(2)
    f.soc[:] = [70.0, 5.0]
    for _ in range(100):
        f.advance(600.0, np.array([0.0, 20000.0]), 20.0)
        assert (f.soc >= 0).all() and (f.soc <= 100).all()
        assert f.soc[0] <= 80.0 + 1e-9
    assert f.soc[0] == pytest.approx(80.0)
    assert f.soc[1] == 0.0 and f.empty_events > 0


def test_charging_rate_is_charger_minus_compute() -> None:
    f = fleet(1)
    f.soc[:] = 20.0
    f.advance(3600.0, np.array([300.0]), 20.0)
    # 7 kW * 0.9 = 6.3 kW on the DC bus, 0.3 kW to compute: 6.0 kWh into 60 kWh = 10 points
    assert f.soc[0] == pytest.approx(30.0)
    assert f.grid_kwh[0] == pytest.approx(7.0)


def test_away_cars_neither_charge_nor_compute_and_departure_returns_soc() -> None:
    f = fleet(2)
    f.soc[:] = 40.0
    assert f.depart(1) == 40.0
    e = f.advance(3600.0, np.array([100.0, 0.0]), 20.0)
    assert f.soc[1] == 40.0 and e.grid_kwh[1] == 0.0 and e.compute_kwh[1] == 0.0
    f.arrive(1, 12.0, 20.0)
    assert f.soc[1] == pytest.approx(20.0)


def test_temperatures_follow_load_and_ambient() -> None:
    f = fleet(2)
    for _ in range(50):
        f.advance(600.0, np.array([0.0, 500.0]), 25.0)
    assert f.compute_temp[1] > f.compute_temp[0] + 30  # 500 W * 0.08 °C/W = 40 °C rise
    assert f.battery_temp[0] >= 25.0 - 1e-9


def test_stays_are_sorted_disjoint_in_horizon_and_seeded() -> None:
    pats = [
        StayPattern(Normal(18, 1), Normal(7, 0.5), Normal(30, 5, 0)),
        StayPattern(Normal(12, 0.5), Normal(13.5, 0.2), Normal(10, 2, 0), frozenset({0, 1, 2})),
    ]
    a = make_stays(np.random.default_rng(5), pats, 50, START, 7)
    b = make_stays(np.random.default_rng(5), pats, 50, START, 7)
    assert a == b
    for stays in a:
        assert stays
        for s in stays:
            assert s.depart > s.arrive and s.depart > START and s.arrive < START + 7 * DAY
            assert s.trip_kwh >= 0
        for x, y in itertools.pairwise(stays):
            assert y.arrive >= x.depart + 900


def test_weekend_stay_runs_to_monday() -> None:
    sat = StayPattern(Normal(18), Normal(55), Normal(20), frozenset({5}))
    (stays,) = make_stays(np.random.default_rng(0), [sat], 1, START, 7)
    # the weekend before the start (parked at the start) and the one inside the week
    assert [(s.arrive - START, s.depart - START) for s in stays] == [
        (-2 * DAY + 18 * 3600, 7 * 3600),
        (5 * DAY + 18 * 3600, 7 * DAY + 7 * 3600),
    ]


def test_site_prices_caps_and_ambient() -> None:
    tou = TimeOfUse(((0, 0.1), (16, 0.3)))
    assert tou.price(START + 15.9 * 3600) == 0.1 and tou.price(START + 16 * 3600) == 0.3
    assert tou.boundaries(START, START + DAY) == [START, START + 16 * 3600]
    cap = SiteCap(1000.0, (DemandResponse(START + 3600, START + 7200, 400.0),))
    assert cap.factor_at(START) == 1.0 and cap.factor_at(START + 3600) == 0.4
    amb = Ambient(15, 5, 15)
    assert amb.at(START + 15 * 3600) == pytest.approx(20.0)


def test_tank_coolant_follows_it_load() -> None:
    spec = TankLoopSpec(design_flow_lpm=300.0)
    s, r = spec_steady(spec, 20.0, 84.0)  # 300 L/min * 0.8 kg/L * 2.1 kJ/kgK = 8.4 kW/K
    assert s == 32.0 and r == pytest.approx(42.0)
    loop = TankLoop.at_rest(spec, 20.0, 0.0)
    loop.advance(600.0, 20.0, 84.0)
    assert 32.0 < loop.return_c < 42.0
