"""Benchmark: unplug-to-moved latency, and the operator's API writes per minute at rest.

Runs against the real local fleet (kube-apiserver + KCM + scheduler + kwok from e2e/cluster, real
``tritonserver`` processes from e2e/runtime, the operator as ``tokenfleet run``), so it needs
``make cluster-build`` and ``make triton-venv``. Prints one JSON document.

1. **Unplug latency**: a vehicle-only job with ``--replicas`` replicas on ``--cars`` cars (one
   tritonserver each). ``--unplugs`` times: unplug a car that serves a replica (its node
   annotation ``plugged-in: false``, as the node agent writes it) and measure, from the moment
   the API server accepted that write,

   * ``replacement_loaded_s``: until the job's decision record shows the replacement Loaded,
   * ``old_unloaded_s``: until the old replica is gone from the record *and* the old runtime no
     longer has the model (Triton's repository index, polled on loopback),

   while sampling the job's ready replicas (``min_ready_replicas`` shows make-before-break).
   The car is plugged back in afterwards so it can take a later replica.
2. **API writes at rest**: ``apiserver_request_total`` (mutating verbs) is read from the API
   server's /metrics before and after ``--idle-seconds`` with nothing changing, once with the
   operator running and once with it stopped (the other writers: KCM, scheduler, kwok
   heartbeats); the difference on the resources the operator writes (its jobs, tanks, pools,
   Services, EndpointSlices, Events) is the operator's. The operator's own
   ``tokenfleet_api_writes_total`` (its controllers' writes, kopf's excluded) is reported too.

``--background-vehicles N`` adds N kwok vehicles without a runtime in other pools, so the
planner works over a larger fleet than the cars that serve.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from e2e.cluster.fleet import Fleet  # noqa: E402
from e2e.operator_kit import VEHICLE_INT4, VEHICLE_MODEL, OperatorProcess, Rig, wait_for  # noqa: E402

from tokenfleet.controllers.vehiclepool import INTERVAL_SECONDS as POOL_STATUS_INTERVAL_SECONDS  # noqa: E402

MUTATING = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
#: what the operator may write (its RBAC); leases/nodes are kwok's heartbeats and the control
#: plane's leader election, so their with/without difference is heartbeat jitter, not ours
OPERATOR_RESOURCES = {
    "inferencejobs",
    "inferencejobs/status",
    "immersionpods",
    "immersionpods/status",
    "vehiclepools",
    "vehiclepools/status",
    "services",
    "endpointslices",
    "events",
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(_pct(values, 0.50), 3),
        "p99": round(_pct(values, 0.99), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def _apiserver_writes(fleet: Fleet) -> dict[str, float]:
    """Mutating requests served so far, keyed ``VERB resource[/subresource]``."""
    from prometheus_client.parser import text_string_to_metric_families

    ctx = ssl.create_default_context(cafile=str(fleet.ca_file))
    req = urllib.request.Request(
        f"{fleet.server}/metrics", headers={"Authorization": f"Bearer {fleet.token}"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if not s.name.endswith("_total") or s.labels.get("verb") not in MUTATING:
                continue
            res = s.labels.get("resource", "")
            if s.labels.get("subresource"):
                res += "/" + s.labels["subresource"]
            key = f"{s.labels['verb']} {res}"
            out[key] = out.get(key, 0.0) + float(s.value)
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    keys = set(after) | set(before)
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(keys)}


def _per_minute(delta: dict[str, float], seconds: float) -> dict[str, float]:
    return {k: round(v * 60.0 / seconds, 2) for k, v in delta.items() if v}


def _settled(rig: Rig, job: str, victim: str, replicas: int) -> bool:
    placements = rig.placements(job, state=None)
    loaded = [p for p in placements if p["state"] == "Loaded"]
    return (
        len(placements) == replicas
        and len(loaded) == replicas
        and victim not in {p["node"] for p in placements}
    )


def measure_unplugs(rig: Rig, job: str, unplugs: int, replicas: int) -> dict[str, Any]:
    loaded_s: list[float] = []
    unloaded_s: list[float] = []
    min_ready = replicas
    for i in range(unplugs):
        placed = sorted(p["node"] for p in rig.placements(job))
        victim = placed[i % len(placed)]
        ready_samples: list[int] = []
        stop = threading.Event()

        def sample(stop: threading.Event = stop, out: list[int] = ready_samples) -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    out.append(int(rig.status(job).get("readyReplicas") or 0))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rig.set_telemetry(victim, plugged_in="false")
        t0 = time.monotonic()
        t_loaded: float | None = None
        t_unloaded: float | None = None
        deadline = t0 + 60
        while time.monotonic() < deadline and (t_loaded is None or t_unloaded is None):
            placements = rig.placements(job, state=None)
            now = time.monotonic()
            if t_loaded is None and any(
                p["state"] == "Loaded" and p["node"] not in placed for p in placements
            ):
                t_loaded = now
            if (
                t_unloaded is None
                and victim not in {p["node"] for p in placements}
                and VEHICLE_MODEL not in rig.loaded_models(victim)
            ):
                t_unloaded = time.monotonic()
            time.sleep(0.02)
        stop.set()
        sampler.join(5)
        if t_loaded is None or t_unloaded is None:
            raise AssertionError(f"unplug #{i + 1} of {victim} did not complete in 60 s")
        loaded_s.append(t_loaded - t0)
        unloaded_s.append(t_unloaded - t0)
        if ready_samples:
            min_ready = min(min_ready, min(ready_samples))
        wait_for(
            lambda victim=victim: _settled(rig, job, victim, replicas),
            60,
            f"job to settle after unplug #{i + 1}",
        )
        rig.set_telemetry(victim, plugged_in="true")
        time.sleep(0.5)
    return {
        "unplugs": unplugs,
        "replacement_loaded_s": _summary(loaded_s),
        "old_unloaded_s": _summary(unloaded_s),
        "min_ready_replicas_during_moves": min_ready,
        "target_replicas": replicas,
    }


def measure_idle_writes(
    fleet: Fleet, op: OperatorProcess, seconds: float, settle: Callable[[], None]
) -> dict[str, Any]:
    settle()
    own_before = op.metric("tokenfleet_api_writes_total")
    plans_before = op.metric("tokenfleet_plans_total")
    cpu_before = _cpu_seconds(op)
    before = _apiserver_writes(fleet)
    time.sleep(seconds)
    after = _apiserver_writes(fleet)
    cpu_after = _cpu_seconds(op)
    own_after = op.metric("tokenfleet_api_writes_total")
    plans_after = op.metric("tokenfleet_plans_total")
    with_operator = _delta(after, before)
    op.stop()
    before = _apiserver_writes(fleet)
    time.sleep(seconds)
    after = _apiserver_writes(fleet)
    without = _delta(after, before)
    operator_only = {
        k: with_operator.get(k, 0.0) - without.get(k, 0.0)
        for k in with_operator
        if k.split(" ", 1)[1] in OPERATOR_RESOURCES
    }
    return {
        "idle_seconds": seconds,
        "operator_writes_per_minute": round(
            sum(v for v in operator_only.values() if v > 0) * 60.0 / seconds, 2
        ),
        "operator_writes_per_minute_by_resource": _per_minute(
            {k: v for k, v in operator_only.items() if v > 0}, seconds
        ),
        "cluster_writes_per_minute_with_operator": _per_minute(with_operator, seconds),
        "cluster_writes_per_minute_without_operator": _per_minute(without, seconds),
        "operator_controller_writes_counted_in_process": own_after - own_before,
        "operator_plans_per_minute": round((plans_after - plans_before) * 60.0 / seconds, 2),
        "operator_cpu_seconds_per_minute": round((cpu_after - cpu_before) * 60.0 / seconds, 3),
    }


def _cpu_seconds(op: OperatorProcess) -> float:
    """User+system CPU of the operator process (Linux /proc), seconds."""
    assert op.process is not None
    fields = Path(f"/proc/{op.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / float(os.sysconf("SC_CLK_TCK"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unplugs", type=int, default=20)
    parser.add_argument("--cars", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--background-vehicles", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="3 unplugs, 10 s idle, no fleet")
    args = parser.parse_args(argv)
    if args.smoke:
        args.unplugs, args.idle_seconds, args.background_vehicles = 3, 10.0, 0

    work = Path(tempfile.mkdtemp(prefix="tokenfleet-bench-"))
    fleet = Fleet(
        work / "fleet",
        vehicles=args.background_vehicles,
        pools=2,
        racks=0,
        tanks=1,
        die_with_parent=True,
        log=lambda m: print(f">> {m}", file=sys.stderr, flush=True),
    )
    fleet.start()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    rig: Rig | None = None
    op: OperatorProcess | None = None
    try:
        fleet.core_v1().create_namespace({"metadata": {"name": namespace}})
        rig = Rig(fleet, namespace, work)
        rig.start_tritons(args.cars, [VEHICLE_MODEL])
        pool = rig.create_pool("pool")
        for i in range(args.cars):
            rig.add_vehicle(f"car{i}", i, pool)
        rig.wait_runtime_pods()
        # the operator with its production defaults (debounce 0.5 s, resync 30 s)
        op = OperatorProcess(
            fleet,
            [namespace],
            work / "operator.log",
            env={
                "TOKENFLEET_PLAN_DEBOUNCE_SECONDS": "",
                "TOKENFLEET_PLAN_RESYNC_SECONDS": "",
                "TOKENFLEET_JOB_RESYNC_SECONDS": "",
            },
            verbose=False,
        )
        op.start()
        job = "bench"
        rig.create_job(
            job,
            [VEHICLE_INT4],
            replicas=(args.replicas, args.replicas),
            target_tps=20 * args.replicas,
        )
        rig.wait_ready(job, args.replicas)
        result: dict[str, Any] = {
            "fleet": {
                "cars_with_runtime": args.cars,
                "background_vehicles": args.background_vehicles,
                "replicas": args.replicas,
                "tritonservers": args.cars,
            }
        }
        result["unplug"] = measure_unplugs(rig, job, args.unplugs, args.replicas)
        bench_rig = rig

        def settle() -> None:
            # the job is quiet, and two VehiclePool status periods pass so the pools' counts
            # and evictions from the last unplug are written before the idle window opens
            bench_rig.wait_ready(job, args.replicas)
            time.sleep(2 * POOL_STATUS_INTERVAL_SECONDS + 1)

        result["idle_api_writes"] = measure_idle_writes(fleet, op, args.idle_seconds, settle)
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if op is not None:
            op.stop()
        if rig is not None:
            rig.cleanup()
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
