"""Scenario files: the examples parse; bad ones are refused with the field named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from tests.simulate.conftest import one_car, small_fleet

from tokenfleet.simulate.scenario import ScenarioError, load_scenario, parse_scenario

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "scenarios").glob("*.yaml"))


def test_there_are_three_examples_and_they_parse() -> None:
    assert len(EXAMPLES) >= 3
    for p in EXAMPLES:
        sc = load_scenario(p)
        assert sc.pools and sc.models


def _bad(data: dict[str, Any], field: str) -> str:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(data)
    assert field in str(exc.value), str(exc.value)
    return str(exc.value)


def test_errors_name_the_field() -> None:
    d = one_car()
    d["pools"][0]["charger_kw"] = -1
    _bad(d, "pools.0.charger_kw")
    d = one_car()
    d["pools"][0]["chargr_kw"] = 5
    _bad(d, "pools.0.chargr_kw")
    d = one_car()
    d["pools"][0]["stays"][0]["arrive_hour"]["mean"] = 99
    _bad(d, "pools.0.stays.0.arrive_hour.mean")
    d = one_car()
    d["demand"]["online"][0]["tokens_per_second_by_hour"] = [1.0] * 23
    _bad(d, "demand.online.0.tokens_per_second_by_hour")
    d = one_car()
    d["demand"]["online"][0]["latency_class"] = "Fast"
    _bad(d, "demand.online.0.latency_class")
    d = one_car()
    d["electricity"]["tou"] = [{"from_hour": 5, "price_per_kwh": 0.1}]
    _bad(d, "electricity.tou")
    d = one_car()
    d["start"] = "2026-06-01T05:00:00Z"
    _bad(d, "start")


def test_cross_field_rules() -> None:
    d = one_car(reserve_soc_percent=90)
    _bad(d, "reserve_soc_percent must be <= target_soc_percent")
    d = one_car()
    d["demand"]["online"][0]["model"] = "nope"
    _bad(d, "demand.online.0.model")
    d = copy.deepcopy(small_fleet())
    d["electricity"]["dr_events"][0]["day"] = 5
    _bad(d, "electricity.dr_events.0.day")


def test_not_yaml_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not YAML"):
        load_scenario(p)
