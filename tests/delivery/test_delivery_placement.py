"""Placement with model delivery: the engine's warm-node preference and fetch-blocked cars, and
the planner's terms computed from Node annotations (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenfleet.delivery.placement import delivery_terms
from tokenfleet.delivery.report import CacheEntry, CacheReport, CacheState, encode_report
from tokenfleet.placement import plan
from tokenfleet.placement.checker import check_plan
from tokenfleet.placement.model import Job, Placement, PoolPolicy, Snapshot, Variant, VehicleNode
from tokenfleet.telemetry.node import parse_node

NOW = 1_800_000_000.0
SHA = "ab" * 32
INT4 = Variant("int4", 6000, 20.0, 60.0, frozenset({"Vehicle"}), "INT4")


def _car(name: str, memory_gib: int = 32) -> VehicleNode:
    return VehicleNode(
        name,
        "pool",
        memory_gib * 1024,
        region="eu",
        attested=True,
        soc_percent=80.0,
        plugged_in=True,
        charger_kw=11.0,
        battery_temp_c=25.0,
        compute_temp_c=45.0,
        departure_time=NOW + 8 * 3600,
        target_soc_percent=60.0,
        bandwidth_mbps=300.0,
        observed_at=NOW,
    )


def _snapshot(job: Job, placements: tuple[Placement, ...] = ()) -> Snapshot:
    pool = PoolPolicy("pool", min_soc_percent=20, target_soc_percent=60)
    cars = (_car("car-a", 32), _car("car-b", 64))
    return Snapshot(NOW, pools=(pool,), vehicles=cars, jobs=(job,), placements=placements)


def _job(**kw: Any) -> Job:
    return Job("ns/j", 20.0, (INT4,), 0, 1, targets=frozenset({"Vehicle"}), **kw)


def test_the_engine_prefers_the_car_that_holds_the_model() -> None:
    cold = plan(_snapshot(_job()))
    assert [a.node for a in cold.assignments] == ["car-a"]  # tighter fit wins a tie
    warm = plan(_snapshot(_job(warm=frozenset({("car-b", "int4")}))))
    assert [a.node for a in warm.assignments] == ["car-b"]
    assert not check_plan(_snapshot(_job(warm=frozenset({("car-b", "int4")}))), warm)


def test_fetch_blocked_cars_get_no_new_replica_and_say_why() -> None:
    snap = _snapshot(_job(fetch_blocked=frozenset({"car-a"})))
    result = plan(snap)
    assert [a.node for a in result.assignments] == ["car-b"]
    both = _snapshot(_job(fetch_blocked=frozenset({"car-a", "car-b"})))
    none = plan(both)
    assert none.assignments == ()
    shortfall = next(s for s in none.job_shortfalls if s.job == "ns/j")
    assert "ModelNotDeliverable" in {str(r) for r, _ in shortfall.reasons}


@dataclass(frozen=True)
class _View:
    key: str = "ns/j"
    spec: dict[str, Any] = field(default_factory=dict)
    placements: tuple[dict[str, Any], ...] = ()


def _node(name: str, bandwidth: str, report: CacheReport | None) -> Any:
    annotations = {
        "telemetry.tokenfleet.io/plugged-in": "true",
        "telemetry.tokenfleet.io/bandwidth-mbps": bandwidth,
        "telemetry.tokenfleet.io/departure-time": "2030-01-01T00:00:00Z",
    }
    if report is not None:
        annotations["tokenfleet.io/model-cache"] = encode_report(report)
    return parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {"tokenfleet.io/role": "vehicle", "tokenfleet.io/pool": "pool"},
                "annotations": annotations,
            },
            "status": {"allocatable": {"memory": "32Gi"}},
        }
    )


def test_delivery_terms_from_node_annotations() -> None:
    spec = {
        "model": {"name": "tiny", "repositoryUri": "s3://models/tiny"},
        "variants": [{"name": "int4", "memoryMiB": 6000, "targets": ["Vehicle"], "sha256": SHA}],
    }
    pool = _View(
        spec={"nodeSelector": {"tokenfleet.io/pool": "pool"}, "delivery": {"minBandwidthMbps": 50}}
    )
    holding = CacheReport(1 << 34, 1, {"tiny-int4": CacheEntry(CacheState.READY, SHA[:16])})
    empty = CacheReport(1 << 34, 0, {})
    nodes = [
        _node("holder", "10", holding),  # slow, but holds the model: warm, never blocked
        _node("slow", "10", empty),  # below the pool's 50 Mbit/s: blocked
        _node("fast", "400", empty),  # may download
        _node("nocache", "1", None),  # no cache on the node: not constrained
    ]
    terms = delivery_terms(NOW, nodes, [pool], [_View(spec=spec)])
    assert terms["ns/j"].warm == frozenset({("holder", "int4")})
    assert terms["ns/j"].fetch_blocked == frozenset({"slow"})
    # a car where the job already has a replica is never blocked (nothing is evicted by this)
    occupied = _View(spec=spec, placements=({"node": "slow", "state": "Loading"},))
    assert delivery_terms(NOW, nodes, [pool], [occupied])["ns/j"].fetch_blocked == frozenset()
    # a job not delivered from the store has no terms
    other = _View(spec={**spec, "model": {"name": "tiny", "repositoryUri": "file:///m"}})
    assert delivery_terms(NOW, nodes, [pool], [other]) == {}
    # an unreadable report holds nothing (never "no cache")
    garbled = parse_node(
        {
            "metadata": {
                "name": "g",
                "labels": {"tokenfleet.io/role": "rack"},
                "annotations": {"tokenfleet.io/model-cache": "{oops"},
            }
        }
    )
    assert garbled.model_cache == CacheReport(0, 0, {})
