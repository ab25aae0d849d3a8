"""Prefetch: which cars the operator asks to fetch a job's model ahead of a placement, and what
a node's cache reads from the job's status.prefetch (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tokenfleet.delivery.cache import WantedModel
from tokenfleet.delivery.prefetch import MAX_PER_JOB, prefetch_targets
from tokenfleet.delivery.report import CacheEntry, CacheReport, CacheState, encode_report
from tokenfleet.delivery.wants import prefetch_on
from tokenfleet.telemetry.node import NodeInfo, parse_node

NOW = 1_800_000_000.0
SHA = "cd" * 32
EMPTY = CacheReport(1 << 34, 0, {})


@dataclass(frozen=True)
class _View:
    key: str = "ns/j"
    spec: dict[str, Any] = field(default_factory=dict)
    placements: tuple[dict[str, Any], ...] = ()


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _car(
    name: str,
    *,
    pool: str = "pool",
    bandwidth: float = 400,
    plugged: bool = True,
    parked_s: float = 8 * 3600,
    report: CacheReport | None = EMPTY,
    labels: dict[str, str] | None = None,
) -> NodeInfo:
    t = "telemetry.tokenfleet.io/"
    annotations = {
        t + "plugged-in": "true" if plugged else "false",
        t + "bandwidth-mbps": str(bandwidth),
        t + "departure-time": _rfc3339(NOW + parked_s),
    }
    if report is not None:
        annotations["tokenfleet.io/model-cache"] = encode_report(report)
    return parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {
                    "tokenfleet.io/role": "vehicle",
                    "tokenfleet.io/pool": pool,
                    **(labels or {}),
                },
                "annotations": annotations,
            },
            "status": {"allocatable": {"memory": "32Gi"}},
        }
    )


def _pool(name: str = "pool", owner: str = "fleet-ops", **delivery: Any) -> _View:
    return _View(
        name,
        {
            "nodeSelector": {"tokenfleet.io/pool": name},
            "ownership": owner,
            "delivery": {"minBandwidthMbps": 100, **delivery},
        },
    )


SPEC: dict[str, Any] = {
    "model": {"name": "tiny", "repositoryUri": "s3://models/tiny"},
    "variants": [
        {"name": "fp16", "memoryMiB": 14000, "targets": ["Rack"], "sha256": "ee" * 32},
        {"name": "int4", "memoryMiB": 6000, "targets": ["Vehicle"], "sha256": SHA},
    ],
}


def test_plugged_in_fast_long_parked_cars_of_the_pool_are_asked_and_the_best_first() -> None:
    cars = [
        _car("fast-long"),
        _car("fast-short", parked_s=1800),  # 6000 MiB at 400 Mbit/s x 1.5 = 189 s; lead 900 s
        _car("slow", bandwidth=40),  # below the pool's 100 Mbit/s floor
        _car("unplugged", plugged=False),
        _car("leaving", parked_s=960),  # 60 s after the drain lead: cannot finish
        _car("placed"),  # hosts a replica already: a placement, not a prefetch
        _car("nocache", report=None),  # no cache on the car
        _car("elsewhere", pool="other"),  # a pool that does not prefetch
    ]
    job = _View(spec=SPEC, placements=({"node": "placed", "state": "Loaded"},))
    pools = [_pool(prefetchPerJob=2), _pool("other", prefetchPerJob=0)]
    targets = prefetch_targets(NOW, cars, pools, [job])
    assert targets == {"ns/j": (("fast-long", "int4"), ("fast-short", "int4"))}
    # per pool: one car asked
    one = prefetch_targets(NOW, cars, [_pool(prefetchPerJob=1)], [job])
    assert one == {"ns/j": (("fast-long", "int4"),)}


def test_spare_cars_that_hold_the_build_stay_asked_and_count_for_their_pool() -> None:
    holding = CacheReport(1 << 34, 1, {"tiny-int4": CacheEntry(CacheState.READY, SHA[:16])})
    cars = [_car("warm", report=holding), _car("cold-a"), _car("cold-b")]
    targets = prefetch_targets(NOW, cars, [_pool(prefetchPerJob=2)], [_View(spec=SPEC)])
    assert targets == {"ns/j": (("warm", "int4"), ("cold-a", "int4"))}
    # a car serving the job holds it too, but is no spare: it does not count
    serving = _View(spec=SPEC, placements=({"node": "warm", "state": "Loaded"},))
    targets = prefetch_targets(NOW, cars, [_pool(prefetchPerJob=1)], [serving])
    assert targets == {"ns/j": (("cold-a", "int4"),)}


def test_no_prefetch_for_jobs_not_from_the_store_or_without_a_vehicle_digest() -> None:
    cars = [_car("a")]
    local = {**SPEC, "model": {"name": "tiny", "repositoryUri": "file:///m"}}
    unsigned = {**SPEC, "variants": [{"name": "int4", "memoryMiB": 10, "targets": ["Vehicle"]}]}
    jobs = [_View("ns/local", local), _View("ns/unsigned", unsigned)]
    assert prefetch_targets(NOW, cars, [_pool()], jobs) == {}


def test_the_answer_is_bounded() -> None:
    cars = [_car(f"c{i:03d}") for i in range(100)]
    targets = prefetch_targets(NOW, cars, [_pool(prefetchPerJob=16)], [_View(spec=SPEC)])
    assert len(targets["ns/j"]) == 16
    pools = [_pool(f"p{i}", prefetchPerJob=16) for i in range(4)]
    many = [_car(f"c{i:03d}", pool=f"p{i % 4}") for i in range(100)]
    assert len(prefetch_targets(NOW, many, pools, [_View(spec=SPEC)])["ns/j"]) == MAX_PER_JOB


def test_the_cache_reads_its_prefetch_asks_less_what_replicas_want() -> None:
    job = {
        "spec": SPEC,
        "status": {
            "prefetch": [
                {"node": "car-a", "variant": "int4"},
                {"node": "car-b", "variant": "int4"},
                {"node": "car-a", "variant": "gone"},
            ]
        },
    }
    assert prefetch_on("car-a", [job]) == [WantedModel("tiny-int4", "s3://models/tiny", SHA)]
    assert prefetch_on("car-c", [job]) == []
    placed = [WantedModel("tiny-int4", "s3://models/tiny", SHA)]
    assert prefetch_on("car-a", [job], placed) == []
    local = {**job, "spec": {**SPEC, "model": {"name": "tiny", "repositoryUri": "/m"}}}
    assert prefetch_on("car-a", [local]) == []


def test_only_cars_the_job_could_be_placed_on_are_asked() -> None:
    """Residency, ownership, attestation and targets of the job's spec.placement, as the engine
    applies them: a car it may never choose is not asked to spend its link and disk."""
    trust = "node-restriction.kubernetes.io/tokenfleet-"
    eu, us = {trust + "region": "eu-west"}, {trust + "region": "us-east"}
    cars = [
        _car("eu-ops", labels={**eu, trust + "attested": "true"}),
        _car("eu-plain", labels=eu),
        _car("us-ops", labels={**us, trust + "attested": "true"}),
        _car("eu-rental", pool="rental", labels={**eu, trust + "attested": "true"}),
        _car("nowhere"),  # no trusted region label: fails any residency rule
    ]
    pools = [_pool(prefetchPerJob=16), _pool("rental", owner="rentals", prefetchPerJob=16)]

    def asked(**placement: Any) -> set[str]:
        job = _View(spec={**SPEC, "placement": placement})
        return {n for n, _ in prefetch_targets(NOW, cars, pools, [job]).get("ns/j", ())}

    everyone = {"eu-ops", "eu-plain", "us-ops", "eu-rental", "nowhere"}
    assert asked() == everyone
    assert asked(regions=["eu-west"]) == {"eu-ops", "eu-plain", "eu-rental"}
    assert asked(ownership=["fleet-ops"]) == {"eu-ops", "eu-plain", "us-ops", "nowhere"}
    assert asked(requireAttestation=True) == {"eu-ops", "us-ops", "eu-rental"}
    assert asked(regions=["eu-west"], ownership=["fleet-ops"], requireAttestation=True) == {
        "eu-ops"
    }
    assert asked(targets=["Rack"]) == set()
    # a spare car that holds the build stays asked only if the job could go there
    holding = CacheReport(1 << 34, 1, {"tiny-int4": CacheEntry(CacheState.READY, SHA[:16])})
    warm = [_car("warm-us", report=holding, labels=us), _car("cold-eu", labels=eu)]
    job = _View(spec={**SPEC, "placement": {"regions": ["eu-west"]}})
    assert prefetch_targets(NOW, warm, [_pool(prefetchPerJob=2)], [job]) == {
        "ns/j": (("cold-eu", "int4"),)
    }
