"""Benchmark: what the gateway adds to a request, how much it carries, and failed requests while
replicas move.

Runs against the real local fleet (kube-apiserver + KCM + scheduler + kwok from e2e/cluster, real
``tritonserver`` processes from e2e/runtime, the operator as ``tokenfleet run`` and one
``tokenfleet gateway`` process), all on 127.0.0.1; needs ``make cluster-build`` and
``make triton-venv``. Prints one JSON document with ``--json`` (a summary line otherwise).

1. **Overhead**: a one-replica job of an unpaced model (no per-token sleep, so the runtime's
   time is small and the gateway's share shows). ``--requests`` non-streaming requests of
   ``--max-tokens`` tokens, one at a time, alternating straight to the replica's runtime
   (Triton ``/generate``) and through the gateway (``/v1/completions``), with the same raw
   aiohttp client: ``direct_p50_ms``/``direct_p99_ms``, ``gateway_p50_ms``/``gateway_p99_ms``
   and ``overhead_p99_ms`` (gateway p99 minus direct p99).
2. **Saturation**: ``--concurrency`` clients through the gateway for ``--saturate-seconds`` on
   a two-replica unpaced job: ``requests_per_second`` completed by the one gateway process.
3. **Moves**: a two-replica car job of the paced model (100 tokens/s per stream) on
   ``--cars`` cars under a constant load of ``--workers`` official-``openai``-client threads
   (streaming chat and completions alternating, each checked complete); ``--moves`` times a car
   that serves a replica unplugs, the replica moves (make-before-break, drained) and the car
   plugs back in: ``failed_requests_during_moves`` and the requests completed meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from e2e.cluster.fleet import Fleet  # noqa: E402
from e2e.gateway_kit import GatewayProcess, Load, create_api_key  # noqa: E402
from e2e.operator_kit import VEHICLE_INT4, OperatorProcess, Rig, wait_for  # noqa: E402
from e2e.runtime import TokenModelSpec, TritonFleet, spec_for, write_model_repository  # noqa: E402

KEY = "sk-bench-0123456789abcdef"
PACED = "tinyllama-int4"  # 100 tokens/s per stream (e2e/runtime/repository.py RATES)
FAST = "fastllama-int4"  # no pacing


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def measure_overhead(
    runtime: str, gateway_url: str, job: str, requests: int, max_tokens: int
) -> dict[str, float]:
    direct: list[float] = []
    through: list[float] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    direct_body = {"text_input": "bench prompt", "max_tokens": max_tokens}
    gateway_body = {"model": job, "prompt": "bench prompt", "max_tokens": max_tokens}
    async with aiohttp.ClientSession() as s:

        async def one(url: str, body: dict[str, Any], hdrs: dict[str, str]) -> float:
            t0 = time.perf_counter()
            async with s.post(url, json=body, headers=hdrs) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status}")
            return (time.perf_counter() - t0) * 1000.0

        direct_url = f"http://{runtime}/v2/models/{FAST}/generate"
        gateway_completions = f"{gateway_url}/completions"
        for _ in range(20):  # warm both paths (connections, first-call costs)
            await one(direct_url, direct_body, {})
            await one(gateway_completions, gateway_body, headers)
        for _ in range(requests):
            direct.append(await one(direct_url, direct_body, {}))
            through.append(await one(gateway_completions, gateway_body, headers))
    return {
        "requests_each": requests,
        "direct_p50_ms": round(_pct(direct, 0.5), 3),
        "direct_p99_ms": round(_pct(direct, 0.99), 3),
        "gateway_p50_ms": round(_pct(through, 0.5), 3),
        "gateway_p99_ms": round(_pct(through, 0.99), 3),
        "overhead_p50_ms": round(_pct(through, 0.5) - _pct(direct, 0.5), 3),
        "overhead_p99_ms": round(_pct(through, 0.99) - _pct(direct, 0.99), 3),
    }


async def measure_saturation(
    gateway_url: str, job: str, concurrency: int, seconds: float
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": job, "prompt": "bench", "max_tokens": 1}
    done = 0
    failed = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def worker() -> None:
            nonlocal done, failed
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                async with s.post(f"{gateway_url}/completions", json=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                        latencies.append((time.perf_counter() - t0) * 1000.0)
                    else:
                        failed += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    return {
        "requests_per_second": round(done / elapsed, 1),
        "saturation_concurrency": concurrency,
        "saturation_seconds": round(elapsed, 1),
        "saturation_p50_ms": round(_pct(latencies, 0.5), 2),
        "saturation_p99_ms": round(_pct(latencies, 0.99), 2),
        "saturation_non_200": failed,
    }


def _settled(rig: Rig, job: str, victim: str, replicas: int) -> bool:
    placements = rig.placements(job, state=None)
    loaded = [p for p in placements if p["state"] == "Loaded"]
    return (
        len(placements) == replicas
        and len(loaded) == replicas
        and victim not in {p["node"] for p in placements}
    )


def measure_moves(
    rig: Rig, gateway: GatewayProcess, job: str, moves: int, workers: int
) -> dict[str, Any]:
    move_s: list[float] = []
    with Load(gateway.url, KEY, (job,), workers=workers, max_tokens=8) as load:
        wait_for(lambda: load.ok >= workers * 2, 60, "the load to get going")
        ok_before = load.ok
        t_start = time.monotonic()
        for i in range(moves):
            placed = sorted(p["node"] for p in rig.placements(job))
            victim = placed[i % len(placed)]
            t0 = time.monotonic()
            rig.set_telemetry(victim, plugged_in="false")
            wait_for(
                lambda victim=victim: _settled(rig, job, victim, 2),
                90,
                f"move #{i + 1} away from {victim}",
            )
            move_s.append(time.monotonic() - t0)
            rig.set_telemetry(victim, plugged_in="true")
            time.sleep(0.5)
        elapsed = time.monotonic() - t_start
        ok_during = load.ok - ok_before
    retries = gateway.metric("tokenfleet_gateway_retries_total")
    return {
        "moves": moves,
        "failed_requests_during_moves": len(load.failures),
        "failures_sample": load.failures[:5],
        "requests_completed_during_moves": ok_during,
        "moves_seconds": round(elapsed, 1),
        "move_settled_p50_s": round(_pct(move_s, 0.5), 2),
        "move_settled_max_s": round(max(move_s), 2),
        "load_workers": workers,
        "load_latency_p50_ms": round(_pct(load.latencies, 0.5) * 1000.0, 1),
        "load_latency_p99_ms": round(_pct(load.latencies, 0.99) * 1000.0, 1),
        "gateway_retries": retries,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--saturate-seconds", type=float, default=10.0)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--cars", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="50 requests, 3 s, 2 moves")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.saturate_seconds, args.moves = 50, 3.0, 2
    if args.cars < 3:
        parser.error("--cars must be at least 3 (two replicas and a spare)")

    work = Path(tempfile.mkdtemp(prefix="tokenfleet-bench-gw-"))
    fleet = Fleet(
        work / "fleet",
        vehicles=0,
        pools=1,
        racks=0,
        tanks=1,
        die_with_parent=True,
        log=lambda m: print(f">> {m}", file=sys.stderr, flush=True),
    )
    fleet.start()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    rig: Rig | None = None
    op: OperatorProcess | None = None
    gateway: GatewayProcess | None = None
    try:
        fleet.core_v1().create_namespace({"metadata": {"name": namespace}})
        rig = Rig(fleet, namespace, work)
        fast = spec_for(FAST)
        repo = write_model_repository(
            work / "models",
            {
                PACED: None,
                FAST: TokenModelSpec(
                    precision=fast.precision, hidden_size=fast.hidden_size, seed=fast.seed
                ),
            },
        )
        rig.tritons = TritonFleet(args.cars, repo).start(timeout=90)
        pool = rig.create_pool("pool")
        for i in range(args.cars):
            rig.add_vehicle(f"car{i}", i, pool)
        rig.wait_runtime_pods()
        op = OperatorProcess(fleet, [namespace], work / "operator.log", verbose=False)
        op.start()
        rig.create_job("fast1", [VEHICLE_INT4], replicas=(1, 1), target_tps=20, model="fastllama")
        rig.create_job("fast2", [VEHICLE_INT4], replicas=(2, 2), target_tps=40, model="fastllama")
        rig.wait_ready("fast1", 1)
        rig.wait_ready("fast2", 2)
        create_api_key(rig.core, namespace, "bench-key", KEY)
        gateway = GatewayProcess(
            fleet.env(), work / "gateway.log", namespaces=(namespace,), requests_per_second=1e6
        )
        gateway.start()
        gw = gateway
        wait_for(
            lambda: gw.metric("tokenfleet_gateway_in_flight_requests") == 0,
            10,
            "gateway metrics",
        )
        (node,) = [p["node"] for p in rig.placements("fast1")]
        runtime = rig.endpoint(rig.node_runtime[node])
        result: dict[str, Any] = {
            "machine": {"cpus": _cpus(), "load_avg_1m": _load()},
            "fleet": {"cars": args.cars, "runtimes": args.cars},
        }
        # the gateway must see the job's slice before measuring
        wait_for(lambda: _gateway_serves(gw, "fast1"), 30, "the gateway to route fast1")
        result.update(
            asyncio.run(
                measure_overhead(runtime, gateway.url, "fast1", args.requests, args.max_tokens)
            )
        )
        result.update(
            asyncio.run(
                measure_saturation(gateway.url, "fast2", args.concurrency, args.saturate_seconds)
            )
        )
        for job in ("fast1", "fast2"):
            rig.custom.delete_namespaced_custom_object(
                "tokenfleet.io", "v1alpha1", namespace, "inferencejobs", job
            )
        rig.create_job("moves", [VEHICLE_INT4], replicas=(2, 2), target_tps=40)
        rig.wait_ready("moves", 2, timeout=120)
        wait_for(lambda: _gateway_serves(gw, "moves"), 30, "the gateway to route moves")
        result.update(measure_moves(rig, gateway, "moves", args.moves, args.workers))
        result["machine"]["load_avg_1m_after"] = _load()
    finally:
        if gateway is not None:
            gateway.stop()
        if op is not None:
            op.stop()
        if rig is not None:
            with contextlib.suppress(Exception):
                rig.cleanup()
        fleet.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        keys = (
            "direct_p99_ms",
            "gateway_p99_ms",
            "overhead_p99_ms",
            "requests_per_second",
            "failed_requests_during_moves",
        )
        print(" ".join(f"{k}={result[k]}" for k in keys))
    return 0


def _gateway_serves(gateway: GatewayProcess, job: str) -> bool:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{gateway.url}/completions",
        data=json.dumps({"model": job, "prompt": "x", "max_tokens": 1}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _load() -> float:
    return round(float(Path("/proc/loadavg").read_text().split()[0]), 2)


if __name__ == "__main__":
    sys.exit(main())
