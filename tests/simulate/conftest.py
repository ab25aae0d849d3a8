"""Small scenarios for the simulator tests (seconds, not minutes)."""

from __future__ import annotations

from typing import Any

import pytest


def one_car(**pool: Any) -> dict[str, Any]:
    """One car, one Vehicle-only model, no racks: the closed-form case."""
    p: dict[str, Any] = {
        "name": "solo",
        "cars": 1,
        "battery_kwh": 60,
        "charger_kw": 5,
        "charge_efficiency": 0.9,
        "reserve_soc_percent": 20,
        "target_soc_percent": 80,
        "initial_soc_percent": {"mean": 50},
        "drain_lead_seconds": 900,
        "compute": {"memory_mib": 8192},
        "stays": [
            {
                "arrive_hour": {"mean": 1.0},
                "depart_hour": {"mean": 9.0},
                "trip_kwh": {"mean": 10.0},
            }
        ],
        "ageing": {"sample_cars": 1},
    }
    p.update(pool)
    return {
        "name": "one-car",
        "days": 1,
        "electricity": {"tou": [{"from_hour": 0, "price_per_kwh": 0.10}], "site_cap_kw": 100},
        "pools": [p],
        "models": [
            {
                "name": "m",
                "variants": [
                    {
                        "name": "int4",
                        "precision": "INT4",
                        "memory_mib": 6144,
                        "tokens_per_second": 20,
                        "watts": 100,
                        "targets": ["Vehicle"],
                    }
                ],
            }
        ],
        "demand": {
            "online": [
                {
                    "name": "web",
                    "model": "m",
                    "latency_class": "Standard",
                    "tokens_per_second_by_hour": [1000] * 24,
                }
            ]
        },
    }


def small_fleet(cars: int = 30, days: int = 2) -> dict[str, Any]:
    """Two pools, one tank, online + batch demand, a demand-response event."""
    return {
        "name": "small",
        "days": days,
        "seed": 3,
        "electricity": {
            "tou": [
                {"from_hour": 0, "price_per_kwh": 0.1},
                {"from_hour": 16, "price_per_kwh": 0.3},
            ],
            "demand_charge_per_kw_month": 10,
            "site_cap_kw": 2000,
            "dr_events": [{"day": 0, "start_hour": 20, "hours": 2, "cap_kw": 800}],
        },
        "revenue": {"price_per_mtoken": 0.2},
        "pools": [
            {
                "name": "vans",
                "cars": cars,
                "battery_kwh": 75,
                "charger_kw": 11,
                "target_soc_percent": 90,
                "compute": {"memory_mib": 8192},
                "stays": [
                    {
                        "arrive_hour": {"mean": 18, "std": 1},
                        "depart_hour": {"mean": 7, "std": 0.5},
                        "trip_kwh": {"mean": 35, "std": 8, "min": 5},
                    }
                ],
                "ageing": {"sample_cars": 1},
            },
            {
                "name": "taxis",
                "cars": cars // 2,
                "battery_kwh": 60,
                "charger_kw": 7.4,
                "target_soc_percent": 80,
                "drain_lead_seconds": 600,
                "compute": {"memory_mib": 8192},
                "stays": [
                    {
                        "arrive_hour": {"mean": 22, "std": 1},
                        "depart_hour": {"mean": 6, "std": 0.5},
                        "trip_kwh": {"mean": 30, "std": 5, "min": 5},
                    },
                    {
                        "arrive_hour": {"mean": 13, "std": 0.5},
                        "depart_hour": {"mean": 14.5, "std": 0.25},
                        "trip_kwh": {"mean": 20, "std": 5, "min": 5},
                    },
                ],
                "ageing": {"sample_cars": 1},
            },
        ],
        "tanks": [
            {
                "name": "tank-a",
                "capacity_kw": 12,
                "racks": 2,
                "rack_memory_mib": 327680,
                "rack_baseline_watts": 500,
                "coolant": {"design_flow_lpm": 100, "heat_rejection_kw": 14},
            }
        ],
        "models": [
            {
                "name": "llm",
                "max_replicas_per_rack": 4,
                "variants": [
                    {
                        "name": "fp16",
                        "precision": "FP16",
                        "memory_mib": 40960,
                        "tokens_per_second": 1000,
                        "watts": 700,
                        "targets": ["Rack"],
                    },
                    {
                        "name": "int4",
                        "precision": "INT4",
                        "memory_mib": 6144,
                        "tokens_per_second": 35,
                        "watts": 200,
                        "targets": ["Vehicle"],
                    },
                ],
            }
        ],
        "demand": {
            "online": [
                {
                    "name": "chat",
                    "model": "llm",
                    "latency_class": "Interactive",
                    "tokens_per_second_by_hour": [3000] * 8 + [6000] * 12 + [3000] * 4,
                },
                {
                    "name": "docs",
                    "model": "llm",
                    "latency_class": "Standard",
                    "tokens_per_second_by_hour": [1500] * 24,
                },
            ],
            "batch": [
                {
                    "name": "eval",
                    "model": "llm",
                    "tokens_per_window": 2.0e8,
                    "window": {"start_hour": 19, "end_hour": 6},
                    "preference": "PreferVehicle",
                }
            ],
        },
    }


@pytest.fixture
def one_car_data() -> dict[str, Any]:
    return one_car()
