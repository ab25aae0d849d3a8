"""Node agent: deadband decision (pure), annotation rendering, JSON source, and the loop."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.agent.deadband import Deadband, decide
from tokenfleet.agent.publisher import STRATEGIC_MERGE, node_annotation_patcher, patch_body
from tokenfleet.agent.runner import Agent
from tokenfleet.agent.signals import Sample, VehicleSignals, annotations_for, signals_from_mapping
from tokenfleet.agent.source import JsonFileSource, SourceError, make_source
from tokenfleet.telemetry.problems import ProblemKind
from tokenfleet.telemetry.vehicle import parse_vehicle_reading

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
BASE = VehicleSignals(
    soc_percent=60.0,
    plugged_in=True,
    charger_power_kw=11.0,
    battery_temp_c=25.0,
    compute_temp_c=50.0,
    departure_time=datetime(2026, 11, 25, 17, 0, tzinfo=UTC),
    target_soc_percent=80.0,
    bandwidth_mbps=100.0,
)


def sample(at: datetime = T0, **changes: object) -> Sample:
    return Sample(replace(BASE, **changes), at)  # type: ignore[arg-type]


def test_first_reading_publishes() -> None:
    assert decide(None, None, sample(), T0).reasons == ("first",)


@pytest.mark.parametrize(
    ("changes", "publish"),
    [
        ({"soc_percent": 60.9}, False),
        ({"soc_percent": 61.0}, True),
        ({"soc_percent": 59.0}, True),
        ({"battery_temp_c": 25.99}, False),
        ({"battery_temp_c": 24.0}, True),
        ({"compute_temp_c": 50.5}, False),
        ({"compute_temp_c": 51.0}, True),
        ({"charger_power_kw": 11.4}, False),
        ({"charger_power_kw": 10.5}, True),
        ({"bandwidth_mbps": 109.0}, False),
        ({"bandwidth_mbps": 111.0}, True),
        ({"plugged_in": False}, True),
        ({"departure_time": datetime(2026, 11, 25, 17, 0, 1, tzinfo=UTC)}, True),
        ({"target_soc_percent": 80.1}, True),
        ({"soc_percent": None}, True),
        ({"departure_time": None}, True),
    ],
)
def test_deadband(changes: dict[str, object], publish: bool) -> None:
    d = decide(
        sample(), T0, sample(T0 + timedelta(seconds=5), **changes), T0 + timedelta(seconds=5)
    )
    assert d.publish is publish
    if publish:
        assert d.reasons == tuple(changes)


def test_value_appearing_publishes() -> None:
    last = sample(soc_percent=None)
    assert decide(last, T0, sample(), T0).reasons == ("soc_percent",)


def test_drift_accumulates_against_last_published() -> None:
    last = sample()
    now = T0
    for soc in (60.3, 60.6, 60.9):  # each step < 1 %, compared with the published 60.0
        now += timedelta(seconds=5)
        assert not decide(last, T0, sample(now, soc_percent=soc), now).publish
    assert decide(last, T0, sample(now, soc_percent=61.2), now).publish


def test_heartbeat_needs_silence_and_a_newer_sample() -> None:
    band = Deadband(max_silence_seconds=60)
    last = sample()
    at59 = T0 + timedelta(seconds=59)
    at60 = T0 + timedelta(seconds=60)
    assert not decide(last, T0, sample(at59), at59, band).publish
    assert decide(last, T0, sample(at60), at60, band).reasons == ("heartbeat",)
    # no new data from the car: no heartbeat, the car must go stale on the operator side
    assert not decide(last, T0, sample(T0), T0 + timedelta(hours=1), band).publish


@given(st.floats(0, 100), st.floats(0, 100))
def test_soc_deadband_property(old: float, new: float) -> None:
    d = decide(sample(soc_percent=old), T0, sample(soc_percent=new), T0)
    assert d.publish == (old != new and abs(new - old) >= 1.0)


def test_annotations_roundtrip_through_the_operator_parser() -> None:
    annotations = annotations_for(BASE, T0)
    assert annotations["telemetry.tokenfleet.io/soc-percent"] == "60"
    assert annotations["telemetry.tokenfleet.io/plugged-in"] == "true"
    assert annotations["telemetry.tokenfleet.io/observed-at"] == "2026-11-25T12:00:00Z"
    reading = parse_vehicle_reading({}, {k: v for k, v in annotations.items() if v is not None})
    assert reading.problems == ()
    assert reading.soc_percent == 60.0 and reading.departure_time == BASE.departure_time
    assert reading.observed_at == T0
    gone = annotations_for(replace(BASE, soc_percent=None, bandwidth_mbps=1234.5678), T0)
    assert gone["telemetry.tokenfleet.io/soc-percent"] is None  # deleted by the merge patch
    assert gone["telemetry.tokenfleet.io/bandwidth-mbps"] == "1234.568"
    assert patch_body(gone) == {"metadata": {"annotations": gone}}


def test_signals_from_mapping_accepts_vss_and_rejects_garbage() -> None:
    signals, problems = signals_from_mapping(
        {
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 71.5,
            "plugged-in": True,
            "battery-temp-c": "nan",
            "compute-temp-c": 1e9,
            "departure-time": "soon",
            "bandwidth-mbps": "250",
            "unrelated": "x",
        }
    )
    assert signals.soc_percent == 71.5 and signals.plugged_in is True
    assert signals.bandwidth_mbps == 250.0
    assert signals.battery_temp_c is None and signals.compute_temp_c is None
    assert signals.departure_time is None and signals.charger_power_kw is None
    assert {p.field: p.kind for p in problems} == {
        "battery-temp-c": ProblemKind.NON_FINITE,
        "compute-temp-c": ProblemKind.OUT_OF_RANGE,
        "departure-time": ProblemKind.UNPARSABLE,
    }


def test_json_file_source(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    with pytest.raises(SourceError):
        JsonFileSource(path).read()
    path.write_text("[1, 2]")
    with pytest.raises(SourceError, match="JSON object"):
        JsonFileSource(path).read()
    path.write_text("{not json")
    with pytest.raises(SourceError):
        JsonFileSource(path).read()
    path.write_text(json.dumps({"soc-percent": 40, "observed-at": "2026-11-25T11:00:00Z"}))
    got = make_source(f"json:{path}").read()
    assert got.signals.soc_percent == 40.0 and got.observed_at == T0 - timedelta(hours=1)
    path.write_text(json.dumps({"soc-percent": 41}))
    os.utime(path, (T0.timestamp(), T0.timestamp()))
    assert make_source(str(path)).read().observed_at == T0  # file mtime when no observed-at
    with pytest.raises(ValueError):
        make_source("kuksa:127.0.0.1:55555")


class FakeCoreV1:
    """Records calls (the real API is exercised in e2e)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, dict[str, object]]] = []

    def patch_node(self, name: str, body: object, **kwargs: object) -> None:
        self.calls.append((name, body, kwargs))


def test_patcher_forces_strategic_merge() -> None:
    api = FakeCoreV1()
    node_annotation_patcher(api, "car-7")({"telemetry.tokenfleet.io/soc-percent": "5"})
    ((name, body, kwargs),) = api.calls
    assert name == "car-7"
    assert body == {"metadata": {"annotations": {"telemetry.tokenfleet.io/soc-percent": "5"}}}
    assert kwargs["_content_type"] == STRATEGIC_MERGE


def test_agent_loop_writes_only_on_change_and_retries_failures(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    clock = [T0]
    writes: list[Mapping[str, str | None]] = []
    fail = [False]

    def patcher(annotations: Mapping[str, str | None]) -> None:
        if fail[0]:
            raise ConnectionError("apiserver down")
        writes.append(dict(annotations))

    def gateway(soc: float, at: datetime) -> None:
        path.write_text(json.dumps({"soc-percent": soc, "observed-at": at.isoformat()}))

    agent = Agent(JsonFileSource(path), patcher, Deadband(max_silence_seconds=60), lambda: clock[0])
    assert agent.step().error is not None and not writes  # no file yet: nothing written
    for i, soc in enumerate([50.0, 50.2, 50.4, 50.6, 50.8]):
        clock[0] = T0 + timedelta(seconds=5 * i)
        gateway(soc, clock[0])
        agent.step()
    assert len(writes) == 1  # first only: 0.8 % drift stays within the band
    clock[0] += timedelta(seconds=5)
    gateway(51.0, clock[0])
    fail[0] = True
    assert agent.step().error == "ConnectionError: apiserver down"
    fail[0] = False
    assert agent.step().published  # retried on the next tick
    assert writes[-1]["telemetry.tokenfleet.io/soc-percent"] == "51"
    clock[0] += timedelta(seconds=61)
    gateway(51.0, clock[0])
    assert agent.step().decision is not None
    assert writes[-1]["telemetry.tokenfleet.io/observed-at"] == clock[0].strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert agent.writes == 3
