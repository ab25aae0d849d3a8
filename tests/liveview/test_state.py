"""The live view's document, from objects as the API returns them (pure)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tokenfleet.gateway.metrics import GatewayMetrics
from tokenfleet.liveview.page import PAGE
from tokenfleet.liveview.server import LiveView, tokens_by_target
from tokenfleet.liveview.state import build_state

TANK = {
    "metadata": {"name": "tank-a"},
    "spec": {"power": {"capacityKW": 100}},
    "status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "itLoadKW": 3.5,
        "powerHeadroomKW": 86.5,
        "thermalHeadroomKW": 110.2,
        "supplyTempC": 32,
        "returnTempC": 32.4,
        "leakState": "OK",
    },
}
POOL = {
    "metadata": {"name": "vans"},
    "status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "vehicles": {"total": 4, "eligible": 2, "serving": 2},
        "ineligible": [
            {"reason": "NotPluggedIn", "count": 1},
            {"reason": "DepartureSoon", "count": 1},
        ],
        "energyUsedTodayKWh": 0.25,
    },
}
JOB = {
    "metadata": {"name": "tinyllama", "namespace": "default"},
    "spec": {"throughput": {"targetTokensPerSecond": 880}},
    "status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "desiredReplicas": 4,
        "readyReplicas": 3,
        "placements": [
            {"node": "car-1", "target": "Vehicle", "pool": "vans", "variant": "int4",
             "state": "Loading", "reason": "Replacement"},
            {"node": "rack-0", "target": "Rack", "tank": "tank-a", "variant": "fp16",
             "state": "Loaded"},
        ],
    },
}  # fmt: skip
MOVE = {
    "involvedObject": {"kind": "InferenceJob", "name": "tinyllama"},
    "type": "Normal",
    "reason": "DepartureSoon",
    "message": "replica int4 on car-0 moved to car-1: DepartureSoon (drained)",
    "lastTimestamp": "2026-01-01T00:00:05Z",
}
PLACED = {
    "involvedObject": {"kind": "InferenceJob", "name": "tinyllama"},
    "type": "Normal",
    "reason": "ReplicaPlaced",
    "message": "tinyllama-fp16 ready on rack-0 (tank-a)",
    "metadata": {"creationTimestamp": "2026-01-01T00:00:01Z"},
}


def test_state_has_tanks_pools_replicas_moves_and_rates() -> None:
    state = build_state(
        [TANK], [POOL], [JOB], [PLACED, MOVE], {"Rack": 120.0, "Vehicle": 8.04}, now="t"
    )
    assert state["tokensPerSecondTotal"] == 128.0
    assert state["itLoadKW"] == 3.5 and state["poolEnergyTodayKWh"] == 0.25
    (tank,) = state["tanks"]
    assert tank["powerHeadroomKW"] == 86.5 and tank["ready"] == "True"
    (pool,) = state["pools"]
    assert (pool["eligible"], pool["serving"]) == (2, 2)
    assert pool["ineligible"] == {"NotPluggedIn": 1, "DepartureSoon": 1}
    (job,) = state["jobs"]
    assert job["name"] == "default/tinyllama" and job["target"] == 880.0
    assert [(r["node"], r["where"], r["state"]) for r in job["replicas"]] == [
        ("car-1", "vans", "Loading"),
        ("rack-0", "tank-a", "Loaded"),
    ]
    # newest first; both are moves
    assert [e["reason"] for e in state["events"]] == ["DepartureSoon", "ReplicaPlaced"]
    assert all(e["move"] for e in state["events"])


def test_events_of_a_deleted_object_are_not_shown() -> None:
    job = {**JOB, "metadata": {**JOB["metadata"], "uid": "new"}}  # type: ignore[dict-item]
    old = {**MOVE, "involvedObject": {**MOVE["involvedObject"], "uid": "old"}}  # type: ignore[dict-item]
    new = {**PLACED, "involvedObject": {**PLACED["involvedObject"], "uid": "new"}}  # type: ignore[dict-item]
    state = build_state([], [], [job], [old, new], {}, now="t")
    assert [e["reason"] for e in state["events"]] == ["ReplicaPlaced"]


def test_empty_cluster_is_an_empty_view() -> None:
    state = build_state([], [], [], [], {}, now="t")
    assert state["tanks"] == state["pools"] == state["jobs"] == state["events"] == []
    assert state["tokensPerSecondTotal"] == 0


def test_tokens_per_second_from_the_gateway_counter() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    clock = [0.0]
    view = LiveView.__new__(LiveView)
    view.tokens_total = lambda: tokens_by_target(metrics.registry)
    view.clock = lambda: clock[0]
    view.window_s = 10.0
    view.samples = []
    assert view.rates() == {}
    metrics.tokens_out.labels("default", "tinyllama", "Rack").inc(300)
    metrics.tokens_out.labels("default", "tinyllama", "Vehicle").inc(20)
    clock[0] = 2.0
    assert view.rates() == {"Rack": 150.0, "Vehicle": 10.0}


def test_page_is_self_contained() -> None:
    assert "/live/state" in PAGE and 'id="moves"' in PAGE
    assert "http://" not in PAGE and "https://" not in PAGE
