#!/usr/bin/env python3
"""Model delivery benchmark.

    bench/delivery.py --json           all parts; stdout is one JSON object
    bench/delivery.py --json --no-store   skip the part that needs .bin/weed
    bench/delivery.py --json --terms-only  only part 3 (no store, no simulated day)

1. ``store``: the node cache against the real object store (SeaweedFS ``weed mini`` on
   loopback, ``.bin/weed`` or $TOKENFLEET_WEED_BIN): time until a model is verified and in the
   runtime's repository, cold (fetch + verify + rename) vs cached (a hit), and the bytes moved.
   The runtime's own load time (the same in both cases) is not included.
2. ``day``: a simulated fleet day of moves through the real placement engine
   (``tokenfleet.placement.plan``): cars plug in and leave on a daily schedule with jitter,
   three jobs keep replicas on the plugged-in cars, each car's cache keeps what fits its budget
   (LRU). Every replica newly placed on a car is a cache hit (its cache holds the build: a
   load) or a miss (a download). Reported per day: moves, hit ratio, bytes moved per placement;
   the same run without the engine's warm-node preference for comparison. Aim: >= 90 % hits
   after the first day.
3. ``terms``: the planner's model-delivery terms (``tokenfleet.delivery.placement.
   delivery_terms``: warm nodes and fetch-blocked cars per job) on every plan, at
   ``--terms-nodes`` nodes that all publish a cache report (80 % cars) and ``--terms-jobs``
   store-delivered jobs: seconds per call (median of ``--terms-repeat``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT))

from tokenfleet.delivery.lru import CachedModel, plan_evictions  # noqa: E402
from tokenfleet.delivery.rules import FetchWindow, may_fetch  # noqa: E402
from tokenfleet.placement import plan  # noqa: E402
from tokenfleet.placement.model import (  # noqa: E402
    Job,
    Placement,
    PoolPolicy,
    Snapshot,
    Variant,
    VehicleNode,
)

GIB = 1 << 30
MIB = 1 << 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- 1. the real store ------------------------------------------------------------------------


async def _store_part(size_mib: int) -> dict[str, Any]:
    from e2e.delivery_kit import upload_variant
    from e2e.objstore import ObjectStoreServer

    from tokenfleet.delivery.cache import ModelCache, WantedModel
    from tokenfleet.store import ObjectStore

    with tempfile.TemporaryDirectory() as tmp, ObjectStoreServer(Path(tmp) / "s3") as store:
        sha = upload_variant(store, "bench", "m", "bench-int4", ballast_bytes=size_mib * MIB)
        cache = ModelCache(
            repository=Path(tmp) / "repo",
            state_dir=Path(tmp) / "state",
            budget_bytes=4 * size_mib * MIB,
            store_factory=lambda: ObjectStore(store.store_config()),
            clock=time.time,
        )
        want = WantedModel("bench-int4", "s3://bench/m", sha)
        cache.observe_wanted([want])
        t0 = time.perf_counter()
        entry = await cache.ensure(want, lambda: None)
        cold = time.perf_counter() - t0
        assert entry.state.value == "Ready", entry
        moved_cold = cache.metrics.bytes_fetched
        cache.observe_wanted([])
        cache.observe_wanted([want])
        t0 = time.perf_counter()
        await cache.ensure(want, lambda: None)
        warm = time.perf_counter() - t0
        return {
            "model_mib": size_mib,
            "cold_to_installed_s": round(cold, 3),
            "cached_to_installed_s": round(warm, 5),
            "bytes_moved_cold": moved_cold,
            "bytes_moved_cached": cache.metrics.bytes_fetched - moved_cold,
            "throughput_mib_s_cold": round(moved_cold / MIB / cold, 1),
        }


# ---- 2. a simulated day of moves ------------------------------------------------------------

STEP_S = 900.0
DAY = 86400.0


@dataclass
class Car:
    name: str
    windows: list[tuple[float, float]]
    """Plugged-in [start, end) seconds of the day."""
    bandwidth: float
    cache: dict[str, float] = field(default_factory=dict)
    """model -> last used (s)."""

    def window_at(self, t: float) -> tuple[float, float] | None:
        day = (t // DAY) * DAY
        for a, b in self.windows:
            if day + a <= t < day + b:
                return day + a, day + b
        return None


def _cars(rng: random.Random, n: int) -> list[Car]:
    cars = []
    for i in range(n):
        # depot night charging, some with a midday stop too
        night = (rng.uniform(17.5, 20.5) * 3600, DAY)
        early = (0.0, rng.uniform(5.0, 7.5) * 3600)
        windows = [early, night]
        if rng.random() < 0.4:
            start = rng.uniform(10.5, 13.0) * 3600
            windows.append((start, start + rng.uniform(1.5, 3.0) * 3600))
        cars.append(Car(f"car-{i:03d}", sorted(windows), rng.choice([50.0, 100.0, 300.0])))
    return cars


JOBS = (("chat", 6, 6144), ("code", 4, 4096), ("embed", 3, 2048))  # name, replicas, MiB


def _simulate(
    days: int, n_cars: int, budget_models: int, warm_pref: bool, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    cars = _cars(rng, n_cars)
    pool = PoolPolicy("pool", min_soc_percent=20, target_soc_percent=60, drain_lead_seconds=900)
    variants = {
        name: Variant(f"{name}-int4", mib, 20.0, 60.0, frozenset({"Vehicle"}), "INT4")
        for name, _, mib in JOBS
    }
    budget = budget_models * max(mib for _, _, mib in JOBS) * MIB
    previous: list[Placement] = []
    per_day: list[dict[str, float]] = [{"moves": 0, "hits": 0, "bytes": 0} for _ in range(days)]
    t = 0.0
    while t < days * DAY:
        jitter = {c.name: rng.uniform(-600, 600) for c in cars}
        vehicles, windows = [], {}
        for c in cars:
            w = c.window_at(t + jitter[c.name])
            plugged = w is not None
            departure = (w[1] - jitter[c.name]) if w else t + 3600
            vehicles.append(
                VehicleNode(
                    c.name,
                    "pool",
                    32 * 1024,
                    region="eu",
                    attested=True,
                    soc_percent=80.0,
                    plugged_in=plugged,
                    charger_kw=11.0,
                    battery_temp_c=25.0,
                    compute_temp_c=45.0,
                    departure_time=1e9 + departure,
                    target_soc_percent=60.0,
                    bandwidth_mbps=c.bandwidth,
                    observed_at=1e9 + t,
                )
            )
            windows[c.name] = FetchWindow(plugged, c.bandwidth, 1e9 + departure, 900.0, 20.0)
        jobs = []
        for name, replicas, mib in JOBS:
            v = variants[name]
            warm = (
                frozenset((c.name, v.name) for c in cars if name in c.cache)
                if warm_pref
                else frozenset()
            )
            occupied = {p.node for p in previous if p.job == name}
            blocked = frozenset(
                c.name
                for c in cars
                if name not in c.cache
                and c.name not in occupied
                and not may_fetch(windows[c.name], mib * MIB, 1e9 + t).ok
            )
            jobs.append(
                Job(
                    name,
                    20.0 * replicas,
                    (v,),
                    min_replicas=0,
                    max_replicas=replicas,
                    targets=frozenset({"Vehicle"}),
                    preference="PreferVehicle",
                    fetch_blocked=blocked,
                    warm=warm,
                )
            )
        snap = Snapshot(
            now=1e9 + t,
            pools=(pool,),
            vehicles=tuple(vehicles),
            jobs=tuple(jobs),
            placements=tuple(previous),
        )
        result = plan(snap)
        before = {(p.job, p.node) for p in previous}
        day = int(t // DAY)
        for a in result.assignments:
            car = next(c for c in cars if c.name == a.node)
            if (a.job, a.node) in before:
                car.cache[a.job] = t
                continue
            per_day[day]["moves"] += 1
            if a.job in car.cache:
                per_day[day]["hits"] += 1
            else:
                mib = next(m for n, _, m in JOBS if n == a.job)
                per_day[day]["bytes"] += mib * MIB
                in_use = {p.job for p in result.assignments if p.node == car.name}
                evict = plan_evictions(
                    [
                        CachedModel(
                            m, next(x for n, _, x in JOBS if n == m) * MIB, last, m in in_use
                        )
                        for m, last in car.cache.items()
                    ],
                    mib * MIB,
                    budget,
                )
                for m in evict.evict:
                    car.cache.pop(m, None)
            car.cache[a.job] = t
        previous = [Placement(a.job, a.node, a.variant, a.replicas) for a in result.assignments]
        t += STEP_S
    out = []
    for i, d in enumerate(per_day):
        moves = int(d["moves"])
        out.append(
            {
                "day": i + 1,
                "moves_onto_cars": moves,
                "hit_ratio": round(d["hits"] / moves, 3) if moves else None,
                "bytes_moved_per_placement": int(d["bytes"] / moves) if moves else 0,
            }
        )
    after = [d for d in per_day[1:]]
    moves_after = sum(d["moves"] for d in after)
    hits_after = sum(d["hits"] for d in after)
    return {
        "days": out,
        "hit_ratio_after_first_day": round(hits_after / moves_after, 3) if moves_after else None,
    }


def _terms_part(n_nodes: int, n_jobs: int, repeat: int, seed: int) -> dict[str, Any]:
    from tokenfleet.delivery.placement import delivery_terms
    from tokenfleet.delivery.report import CacheEntry, CacheReport, CacheState, encode_report
    from tokenfleet.telemetry.node import parse_node

    rng = random.Random(seed)
    now = 1_800_000_000.0
    models = [f"m{i}-int4" for i in range(n_jobs)]
    shas = {m: f"{i:064x}" for i, m in enumerate(models)}
    nodes = []
    for i in range(n_nodes):
        car = rng.random() < 0.8
        held = {
            m: CacheEntry(CacheState.READY, shas[m][:16], 100, 100)
            for m in rng.sample(models, min(2, len(models)))
        }
        annotations = {"tokenfleet.io/model-cache": encode_report(CacheReport(1 << 34, 0, held))}
        labels = {"tokenfleet.io/role": "vehicle" if car else "rack"}
        if car:
            labels["tokenfleet.io/pool"] = "pool"
            t = "telemetry.tokenfleet.io/"
            annotations[t + "plugged-in"] = rng.choice(["true", "false"])
            annotations[t + "bandwidth-mbps"] = str(rng.choice([5, 50, 400]))
            annotations[t + "departure-time"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + rng.choice([1800, 4 * 3600, 9 * 3600]))
            )
        body = {
            "metadata": {"name": f"n{i}", "labels": labels, "annotations": annotations},
            "status": {"allocatable": {"memory": "32Gi"}},
        }
        nodes.append(parse_node(body))

    @dataclass(frozen=True)
    class _View:
        key: str
        spec: dict[str, Any] = field(default_factory=dict)
        placements: tuple[dict[str, Any], ...] = ()

    pools = [_View("pool", {"nodeSelector": {"tokenfleet.io/pool": "pool"}})]
    jobs = [
        _View(
            f"ns/j{j}",
            {
                "model": {"name": f"m{j}", "repositoryUri": "s3://models/m"},
                "variants": [
                    {
                        "name": "int4",
                        "memoryMiB": 6000,
                        "targets": ["Vehicle", "Rack"],
                        "sha256": shas[m],
                    }
                ],
            },
            tuple({"node": f"n{rng.randrange(n_nodes)}", "state": "Loaded"} for _ in range(3)),
        )
        for j, m in enumerate(models)
    ]
    times = []
    terms: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        terms = delivery_terms(now, nodes, pools, jobs)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "nodes": n_nodes,
        "jobs": n_jobs,
        "seconds_per_call_median": round(times[len(times) // 2], 4),
        "seconds_per_call_max": round(times[-1], 4),
        "warm_pairs": sum(len(t.warm) for t in terms.values()),
        "fetch_blocked_pairs": sum(len(t.fetch_blocked) for t in terms.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--no-store", action="store_true", help="skip the real-store part")
    ap.add_argument("--model-mib", type=int, default=64)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--cars", type=int, default=40)
    ap.add_argument("--budget-models", type=int, default=2, help="cache budget, in models")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--terms-only", action="store_true", help="only the delivery-terms part")
    ap.add_argument("--terms-nodes", type=int, default=10000)
    ap.add_argument("--terms-jobs", type=int, default=100)
    ap.add_argument("--terms-repeat", type=int, default=5)
    args = ap.parse_args()
    result: dict[str, Any] = {"bench": "delivery"}
    log(f">> terms: {args.terms_nodes} nodes with a cache, {args.terms_jobs} jobs")
    result["terms"] = _terms_part(args.terms_nodes, args.terms_jobs, args.terms_repeat, args.seed)
    if args.terms_only:
        print(json.dumps(result) if args.json else json.dumps(result, indent=2))
        return 0
    if not args.no_store:
        log(f">> store: cold vs cached, {args.model_mib} MiB model")
        result["store"] = asyncio.run(_store_part(args.model_mib))
    log(f">> day: {args.cars} cars, {args.days} days, budget {args.budget_models} models")
    t0 = time.perf_counter()
    result["day"] = _simulate(args.days, args.cars, args.budget_models, True, args.seed)
    result["day_without_warm_preference"] = _simulate(
        args.days, args.cars, args.budget_models, False, args.seed
    )
    result["day_elapsed_s"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
