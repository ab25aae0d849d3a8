"""The batch demand hook: the dispatcher's annotation raises the job's throughput target as the
placement engine sees it."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from tokenfleet.batch.demand import BATCH_TPS_ANNOTATION, batch_demand
from tokenfleet.controllers.snapshot import job_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controllers"))
from fixtures_controllers import job_view


def test_annotation_parsing() -> None:
    assert batch_demand({BATCH_TPS_ANNOTATION: "120.5"}) == 120.5
    for bad in (None, "", "lots", "-3", "nan", "inf"):
        assert batch_demand({BATCH_TPS_ANNOTATION: bad}) == 0.0
    assert batch_demand(None) == 0.0


def test_demand_adds_to_the_target_the_engine_plans_for() -> None:
    view = job_view(target=40)
    assert job_of(view).target_tokens_per_second == 40
    assert job_of(replace(view, batch_tokens_per_second=60)).target_tokens_per_second == 100
