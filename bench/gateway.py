"""Benchmark: what the gateway adds to a request, how much it carries, and failed requests while
replicas move.

Runs against the real local fleet (kube-apiserver + KCM + scheduler + kwok from e2e/cluster, real
``tritonserver`` processes from e2e/runtime, the operator as ``tokenfleet run`` and one
``tokenfleet gateway`` process), all on 127.0.0.1; needs ``make cluster-build`` and
``make triton-venv``. Prints one JSON document with ``--json`` (a summary line otherwise).

1. **Overhead**: a one-replica job of an unpaced model (no per-token sleep, so the runtime's
   time is small and the gateway's share shows). ``--rounds`` rounds of ``--requests``
   non-streaming requests of ``--max-tokens`` tokens, one at a time, interleaved request by
   request straight to the replica's runtime (Triton ``/generate``) and through the gateway
   (``/v1/completions``), the order turned round every request (ABBA), by one aiohttp client
   session (one process, idle otherwise), after a warm-up that is not counted. Each figure is
   the median over the rounds of that round's percentile: ``direct_p50_ms``/``direct_p99_ms``,
   ``gateway_p50_ms``/``gateway_p99_ms``, ``overhead_p50_ms``/``overhead_p99_ms`` (gateway minus
   direct), and ``gateway_cpu_ms_per_request`` (the gateway process's CPU time over the
   requests it served: what the gateway costs, much less sensitive to a busy machine than the
   latencies). ``--compare-gateway PATH`` runs a second gateway from another checkout's
   ``tokenfleet`` executable (that checkout's ``operator/`` first on ``PYTHONPATH``, so a
   worktree sharing another's venv still runs its own code) against the same fleet and
   interleaves it into the same rounds:
   its figures come as ``baseline_*``, with ``overhead_p99_ratio`` (ours / baseline's).
2. **Saturation**: ``--concurrency`` clients through the gateway for ``--saturate-seconds`` on
   a two-replica unpaced job: ``requests_per_second`` completed by the one gateway process,
   and ``saturation_gateway_cpu_percent``, its CPU use meanwhile (near 100: the gateway was the
   bottleneck; well below: the client or the runtimes were).
3. **Moves**: a two-replica car job of the paced model (100 tokens/s per stream) on
   ``--cars`` cars under a constant load of ``--workers`` official-``openai``-client threads
   (streaming chat and completions alternating, each checked complete); ``--moves`` times a car
   that serves a replica unplugs, the replica moves (make-before-break, drained) and the car
   plugs back in: ``failed_requests_during_moves`` and the requests completed meanwhile.

``--phases`` picks phases (default all three; ``--phases overhead`` takes about a minute and a
half). ``machine`` gives the CPUs and the 1-minute load average before and after: on a shared
machine compare the ratio against a baseline of the same run, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Route:
    """One way to the runtime under test: straight, or through a gateway process."""

    name: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    pid: int | None = None  # the gateway process (CPU accounting)


async def measure_overhead(
    runtime: str,
    gateways: list[tuple[str, GatewayProcess]],
    job: str,
    requests: int,
    rounds: int,
    max_tokens: int,
    warmup: int = 50,
) -> dict[str, Any]:
    paths = [
        Route(
            "direct",
            f"http://{runtime}/v2/models/{FAST}/generate",
            {"text_input": "bench prompt", "max_tokens": max_tokens},
            {},
        )
    ]
    for name, gw in gateways:
        assert gw.process is not None
        paths.append(
            Route(
                name,
                f"{gw.url}/completions",
                {"model": job, "prompt": "bench prompt", "max_tokens": max_tokens},
                {"Authorization": f"Bearer {KEY}"},
                gw.process.pid,
            )
        )
    per_round: list[dict[str, float]] = []
    async with aiohttp.ClientSession() as s:

        async def one(p: Route) -> float:
            t0 = time.perf_counter()
            async with s.post(p.url, json=p.body, headers=p.headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{p.url}: HTTP {r.status}")
            return (time.perf_counter() - t0) * 1000.0

        for i in range(warmup):  # connections, first-call costs: not counted
            for p in paths if i % 2 == 0 else paths[::-1]:
                await one(p)
        for _ in range(rounds):
            samples: dict[str, list[float]] = {p.name: [] for p in paths}
            cpu0 = {p.name: _cpu_seconds(p.pid) for p in paths if p.pid is not None}
            for i in range(requests):
                for p in paths if i % 2 == 0 else paths[::-1]:
                    samples[p.name].append(await one(p))
            figures: dict[str, float] = {}
            for p in paths:
                figures[f"{p.name}_p50_ms"] = _pct(samples[p.name], 0.5)
                figures[f"{p.name}_p99_ms"] = _pct(samples[p.name], 0.99)
                if p.pid is not None:
                    cpu = _cpu_seconds(p.pid) - cpu0[p.name]
                    figures[f"{p.name}_cpu_ms_per_request"] = cpu * 1000.0 / requests
            for p in paths[1:]:
                prefix = "" if p.name == "gateway" else f"{p.name}_"
                for q in ("p50", "p99"):
                    figures[f"{prefix}overhead_{q}_ms"] = (
                        figures[f"{p.name}_{q}_ms"] - figures[f"direct_{q}_ms"]
                    )
            per_round.append(figures)
    out: dict[str, Any] = {"requests_each_per_round": requests, "rounds": rounds}
    for key in per_round[0]:
        out[key] = round(statistics.median(r[key] for r in per_round), 3)
    if "baseline_overhead_p99_ms" in out:
        base = out["baseline_overhead_p99_ms"]
        out["overhead_p99_ratio"] = round(out["overhead_p99_ms"] / base, 3) if base > 0 else None
        base_cpu = out["baseline_cpu_ms_per_request"]
        out["cpu_per_request_ratio"] = round(out["gateway_cpu_ms_per_request"] / base_cpu, 3)
    out["overhead_rounds"] = [{k: round(v, 3) for k, v in r.items()} for r in per_round]
    return out


async def measure_saturation(
    gateway: GatewayProcess, job: str, concurrency: int, seconds: float
) -> dict[str, float]:
    gateway_url = gateway.url
    assert gateway.process is not None
    pid = gateway.process.pid
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
        cpu0 = _cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds(pid) - cpu0
    return {
        "requests_per_second": round(done / elapsed, 1),
        "saturation_concurrency": concurrency,
        "saturation_seconds": round(elapsed, 1),
        "saturation_p50_ms": round(_pct(latencies, 0.5), 2),
        "saturation_p99_ms": round(_pct(latencies, 0.99), 2),
        "saturation_non_200": failed,
        "saturation_gateway_cpu_percent": round(100.0 * cpu / elapsed, 1),
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


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, set[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per path and round (overhead)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="overhead rounds (median taken)")
    parser.add_argument(
        "--phases",
        default="overhead,saturation,moves",
        help="comma-separated, of overhead, saturation, moves (default: %(default)s)",
    )
    parser.add_argument(
        "--compare-gateway",
        type=Path,
        default=None,
        metavar="TOKENFLEET",
        help="another checkout's tokenfleet executable (e.g. main's .venv/bin/tokenfleet):"
        " its gateway is measured in the same overhead rounds, as baseline_*",
    )
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--saturate-seconds", type=float, default=10.0)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--cars", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="50 requests, 3 s, 2 moves")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.rounds, args.saturate_seconds, args.moves = 50, 2, 3.0, 2
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = phases - {"overhead", "saturation", "moves"}
    if unknown:
        parser.error(f"--phases: unknown phase(s) {sorted(unknown)}")
    if args.compare_gateway is not None and not args.compare_gateway.is_file():
        parser.error(f"--compare-gateway: no such executable {args.compare_gateway}")
    if (args.requests < 100 and not args.smoke) or args.rounds < 1:
        parser.error("--requests must be at least 100 (a p99 needs them), --rounds at least 1")
    if args.cars < 3:
        parser.error("--cars must be at least 3 (two replicas and a spare)")
    return args, phases


def main(argv: list[str] | None = None) -> int:
    args, phases = _parse_args(argv)

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
    baseline: GatewayProcess | None = None
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
            {**fleet.env(), **_checkout_env(REPO / ".venv" / "bin" / "tokenfleet")},
            work / "gateway.log",
            namespaces=(namespace,),
            requests_per_second=1e6,
        )
        gateway.start()
        if args.compare_gateway is not None:
            baseline = GatewayProcess(
                {**fleet.env(), **_checkout_env(args.compare_gateway)},
                work / "baseline-gateway.log",
                namespaces=(namespace,),
                requests_per_second=1e6,
                executable=args.compare_gateway,
            )
            baseline.start()
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
            "phases": sorted(phases),
        }
        gateways = [("gateway", gateway)]
        result["gateway_source"] = gateway.env.get("PYTHONPATH", "(installed)")
        if baseline is not None:
            gateways.append(("baseline", baseline))
            result["baseline_executable"] = str(args.compare_gateway)
            result["baseline_source"] = baseline.env.get("PYTHONPATH", "(installed)")
        # the gateways must see the job's slice before measuring
        for _, g in gateways:
            wait_for(lambda g=g: _gateway_serves(g, "fast1"), 30, "the gateway to route fast1")
        result.update(_run_phases(args, phases, rig, runtime, gateways, namespace))
        result["machine"]["load_avg_1m_after"] = _load()
    finally:
        for g in (gateway, baseline):
            if g is not None:
                g.stop()
        if op is not None:
            op.stop()
        if rig is not None:
            with contextlib.suppress(Exception):
                rig.cleanup()
        fleet.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_summary(result))
    return 0


def _run_phases(
    args: argparse.Namespace,
    phases: set[str],
    rig: Rig,
    runtime: str,
    gateways: list[tuple[str, GatewayProcess]],
    namespace: str,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    gateway = gateways[0][1]
    if "overhead" in phases:
        result.update(
            asyncio.run(
                measure_overhead(
                    runtime, gateways, "fast1", args.requests, args.rounds, args.max_tokens
                )
            )
        )
    if "saturation" in phases:
        wait_for(lambda: _gateway_serves(gateway, "fast2"), 30, "the gateway to route fast2")
        result.update(
            asyncio.run(
                measure_saturation(gateway, "fast2", args.concurrency, args.saturate_seconds)
            )
        )
    if "moves" in phases:
        for job in ("fast1", "fast2"):
            rig.custom.delete_namespaced_custom_object(
                "tokenfleet.io", "v1alpha1", namespace, "inferencejobs", job
            )
        rig.create_job("moves", [VEHICLE_INT4], replicas=(2, 2), target_tps=40)
        rig.wait_ready("moves", 2, timeout=120)
        wait_for(lambda: _gateway_serves(gateway, "moves"), 30, "the gateway to route moves")
        result.update(measure_moves(rig, gateway, "moves", args.moves, args.workers))
    return result


def _summary(result: dict[str, Any]) -> str:
    """The figures a reader wants first, with what they mean."""
    lines = [
        f"machine: {result['machine']['cpus']} CPUs, load average"
        f" {result['machine']['load_avg_1m']} before / {result['machine'].get('load_avg_1m_after')}"
        " after (a busy machine inflates every latency; compare ratios)"
    ]
    if "overhead_p99_ms" in result:
        lines.append(
            f"one request at a time, median of {result['rounds']} rounds of"
            f" {result['requests_each_per_round']} each: direct p50/p99"
            f" {result['direct_p50_ms']}/{result['direct_p99_ms']} ms, through the gateway"
            f" {result['gateway_p50_ms']}/{result['gateway_p99_ms']} ms: added p99"
            f" {result['overhead_p99_ms']} ms (aim <= 2), gateway CPU"
            f" {result['gateway_cpu_ms_per_request']} ms per request"
        )
    if "baseline_overhead_p99_ms" in result:
        lines.append(
            f"baseline gateway ({result['baseline_executable']}): p50/p99"
            f" {result['baseline_p50_ms']}/{result['baseline_p99_ms']} ms, added p99"
            f" {result['baseline_overhead_p99_ms']} ms, CPU"
            f" {result['baseline_cpu_ms_per_request']} ms per request; ours/baseline: added"
            f" p99 x{result['overhead_p99_ratio']}, CPU x{result['cpu_per_request_ratio']}"
        )
    if "requests_per_second" in result:
        lines.append(
            f"saturation: {result['requests_per_second']} requests/s through one gateway"
            f" ({result['saturation_concurrency']} clients), gateway CPU"
            f" {result['saturation_gateway_cpu_percent']}%"
        )
    if "failed_requests_during_moves" in result:
        lines.append(
            f"moves: {result['failed_requests_during_moves']} failed requests over"
            f" {result['moves']} moves ({result['requests_completed_during_moves']} completed)"
        )
    return "\n".join(lines)


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


def _checkout_env(executable: Path) -> dict[str, str]:
    """What makes a checkout's ``.venv/bin/tokenfleet`` run that checkout's code: its
    ``operator/`` first on ``PYTHONPATH`` (a worktree's venv may be a link to another checkout's,
    with tokenfleet installed editable from there; the path is taken as given, links unresolved).
    Nothing for an executable outside a checkout."""
    source = executable.parent.parent.parent / "operator"
    if executable.parent.parent.name != ".venv" or not (source / "tokenfleet").is_dir():
        return {}
    return {"PYTHONPATH": str(source)}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _load() -> float:
    return round(float(Path("/proc/loadavg").read_text().split()[0]), 2)


if __name__ == "__main__":
    sys.exit(main())
