"""The indexed ``delivery_terms`` gives exactly what the former per-job x per-node scan gave
(that scan is kept here as the reference), over random fleets: cars plugged in or not, links
above and below the floor, departures near and far, caches holding, fetching or refused."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tokenfleet.delivery.placement import MIB, DeliveryTerms, delivery_terms
from tokenfleet.delivery.report import CacheEntry, CacheReport, CacheState, encode_report
from tokenfleet.delivery.rules import FetchWindow, may_fetch
from tokenfleet.delivery.wants import pool_window
from tokenfleet.telemetry.node import NodeInfo, parse_node, selector_matches

NOW = 1_800_000_000.0
_ACTIVE = frozenset({"Loading", "Loaded"})


@dataclass(frozen=True)
class _View:
    key: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    placements: tuple[Mapping[str, Any], ...] = ()


# ---- the former implementation (reference) ----------------------------------------------------


def _window(info: NodeInfo, pools: Sequence[Mapping[str, Any]]) -> FetchWindow:
    reading = info.vehicle
    floor, margin, lead, plugged = float("inf"), 150.0, 900.0, True
    for spec in pools:
        if selector_matches(spec.get("nodeSelector") or {}, info.labels):
            floor, margin, lead, plugged = pool_window(spec)
            break
    departure = reading.departure_time if reading is not None else None
    return FetchWindow(
        plugged_in=reading.plugged_in if reading is not None else None,
        bandwidth_mbps=reading.bandwidth_mbps if reading is not None else None,
        departure_time=departure.timestamp() if departure is not None else None,
        drain_lead_seconds=lead,
        min_bandwidth_mbps=floor,
        require_plugged_in=plugged,
        margin_percent=margin,
    )


def _size(report: CacheReport, model: str, sha: str | None, memory_mib: int) -> int:
    entry = report.models.get(model)
    if entry is not None and entry.matches(sha) and entry.total:
        return max(entry.total - entry.bytes, 0)
    return memory_mib * MIB


def reference_terms(
    now: float,
    nodes: Iterable[NodeInfo],
    pools: Iterable[Any],
    jobs: Iterable[Any],
) -> dict[str, DeliveryTerms]:
    """Per job key, its delivery terms (jobs without any are left out)."""
    cached = [(n, n.model_cache) for n in nodes if n.model_cache is not None and not n.deleting]
    if not cached:
        return {}
    pool_specs = [dict(p.spec) for p in pools]
    windows: dict[str, FetchWindow] = {}
    out: dict[str, DeliveryTerms] = {}
    for job in jobs:
        spec = job.spec
        model = spec.get("model") or {}
        if not str(model.get("repositoryUri") or "").startswith("s3://"):
            continue
        variants = []
        for v in spec.get("variants") or ():
            if not v.get("name"):
                continue
            triton = str(v.get("tritonModelName") or f"{model.get('name')}-{v['name']}")
            variants.append(
                (
                    str(v["name"]),
                    triton,
                    v.get("sha256"),
                    frozenset(v.get("targets") or ()),
                    int(v.get("memoryMiB") or 0),
                )
            )
        occupied = {str(p.get("node")) for p in job.placements if p.get("state") in _ACTIVE}
        warm: set[tuple[str, str]] = set()
        blocked: set[str] = set()
        for info, report in cached:
            assert report is not None
            kind = "Vehicle" if info.is_vehicle else "Rack"
            runnable = [v for v in variants if kind in v[3]]
            held = [v for v in runnable if report.holds(v[1], v[2])]
            warm.update((info.name, v[0]) for v in held)
            if kind != "Vehicle" or held or not runnable or info.name in occupied:
                continue
            window = windows.get(info.name)
            if window is None:
                window = windows[info.name] = _window(info, pool_specs)
            if not any(
                may_fetch(window, _size(report, v[1], v[2], v[4]), now).ok for v in runnable
            ):
                blocked.add(info.name)
        if warm or blocked:
            out[job.key] = DeliveryTerms(frozenset(blocked), frozenset(warm))
    return out


# ---- random fleets ----------------------------------------------------------------------------

SHAS = [f"{i:02x}" * 32 for i in range(4)]


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _report(rng: random.Random) -> CacheReport:
    models: dict[str, CacheEntry] = {}
    for model in ("m-int4", "m-fp16", "n-int4"):
        roll = rng.random()
        sha = rng.choice(SHAS)[:16]
        if roll < 0.3:
            models[model] = CacheEntry(CacheState.READY, sha, 100, 100)
        elif roll < 0.45:
            total = rng.choice([10, 500, 8000]) * MIB
            models[model] = CacheEntry(CacheState.FETCHING, sha, total // 2, total)
        elif roll < 0.5:
            models[model] = CacheEntry(CacheState.FAILED, sha, 0, 7000 * MIB, "CacheBudgetExceeded")
    return CacheReport(1 << 34, 0, models)


def _fleet(rng: random.Random, n: int) -> list[NodeInfo]:
    nodes = []
    for i in range(n):
        vehicle = rng.random() < 0.8
        annotations: dict[str, str] = {}
        if rng.random() < 0.85:
            annotations["tokenfleet.io/model-cache"] = encode_report(_report(rng))
        labels = {"tokenfleet.io/role": "vehicle" if vehicle else "rack"}
        if vehicle:
            labels["tokenfleet.io/pool"] = rng.choice(["p1", "p2", "nopool"])
            t = "telemetry.tokenfleet.io/"
            if rng.random() < 0.9:
                annotations[t + "plugged-in"] = rng.choice(["true", "true", "false"])
            if rng.random() < 0.9:
                annotations[t + "bandwidth-mbps"] = str(rng.choice([0, 5, 20, 50, 100, 400]))
            if rng.random() < 0.9:
                annotations[t + "departure-time"] = _rfc3339(
                    NOW + rng.choice([-100, 600, 1000, 2000, 3600, 8 * 3600])
                )
        nodes.append(
            parse_node(
                {
                    "metadata": {"name": f"n{i}", "labels": labels, "annotations": annotations},
                    "status": {"allocatable": {"memory": "32Gi"}},
                }
            )
        )
    return nodes


def _jobs(rng: random.Random, names: list[str]) -> list[_View]:
    jobs = []
    for j in range(6):
        variants = []
        for v, triton in (("int4", "m-int4"), ("fp16", "m-fp16")):
            if rng.random() < 0.8:
                variant: dict[str, Any] = {
                    "name": v,
                    "tritonModelName": triton,
                    "memoryMiB": rng.choice([0, 10, 600, 6000, 20000]),
                    "targets": rng.choice([["Vehicle"], ["Rack"], ["Vehicle", "Rack"]]),
                }
                if rng.random() < 0.9:
                    variant["sha256"] = rng.choice(SHAS)
                variants.append(variant)
        uri = "s3://b/m" if rng.random() < 0.9 else "file:///m"
        placements = tuple(
            {"node": rng.choice(names), "state": rng.choice(["Loading", "Loaded", "Failed"])}
            for _ in range(rng.randrange(3))
        )
        spec = {"model": {"name": "m", "repositoryUri": uri}, "variants": variants}
        jobs.append(_View(f"ns/j{j}", spec, placements))
    return jobs


POOLS = [
    _View(
        "p1", {"nodeSelector": {"tokenfleet.io/pool": "p1"}, "delivery": {"minBandwidthMbps": 50}}
    ),
    _View(
        "p2",
        {
            "nodeSelector": {"tokenfleet.io/pool": "p2"},
            "drainLeadSeconds": 300,
            "delivery": {"minBandwidthMbps": 0, "fetchTimeMarginPercent": 300},
            "battery": {"requirePluggedIn": False},
        },
    ),
]


def test_indexed_terms_equal_the_former_scan_on_random_fleets() -> None:
    compared = blocked = warm = 0
    for seed in range(60):
        rng = random.Random(seed)
        nodes = _fleet(rng, rng.randrange(1, 40))
        jobs = _jobs(rng, [n.name for n in nodes])
        got = delivery_terms(NOW, nodes, POOLS, jobs)
        want = reference_terms(NOW, nodes, POOLS, jobs)
        assert got == want, seed
        compared += len(want)
        blocked += sum(len(t.fetch_blocked) for t in want.values())
        warm += sum(len(t.warm) for t in want.values())
    # the random fleets exercise both halves (a test that compares empty dicts proves nothing)
    assert compared > 100 and blocked > 100 and warm > 50, (compared, blocked, warm)
