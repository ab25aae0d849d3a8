"""Benchmark: the operator at fleet scale (N kwok cars + 16 racks, 3 jobs of 50 replicas).

Per size in ``--sizes`` (default 1000,5000): starts the real local control plane (kube-apiserver,
KCM, scheduler, etcd and kwok from e2e/cluster, ``make cluster-build``) with N Nodes — N - R
background vehicles in pools without a VehiclePool (parsed and planned over, never chosen) and
16 racks, plus R = ``--runtime-cars`` cars of one VehiclePool with a runtime endpoint each — and
3 InferenceJobs of 50 replicas (vehicle-only, one replica per car). The runtimes are
:mod:`bench.scalekit.runtimes` (Triton's model-control protocol, one process, loopback): the
bench times the operator, not model loads. Then, with the operator (``tokenfleet run``, its
production intervals) as a separate process:

* ``start_to_first_plan_s``: process start until its first plan (``tokenfleet_plans_total``),
  and ``cpu_s_to_first_plan`` the operator's CPU seconds until then (the fairer figure on a
  loaded machine); ``start_to_ready_s``: until every job lists 50 Loaded placements;
* ``reaction_p50_s`` / ``reaction_p99_s``: ``--unplugs`` times, a serving car's
  ``plugged-in`` telemetry set to false (as the node agent writes it) until a placement on
  another car is listed in the job's status (any state); plugged back in after each;
* ``plan_full_p50_s`` … ``plan_incremental_p99_s``: from the operator's
  ``tokenfleet_plan_duration_seconds`` histogram (interpolated within its buckets, as
  Prometheus' ``histogram_quantile``), over the whole run;
* ``settle_before_unplugs`` / ``settle_before_rest``: before the unplugs and before the rest
  window the bench waits (at most ``--settle-timeout``, progress on stderr) until every kwok Node
  is Ready and the operator ran no change-triggered plan (any trigger but its resync and
  deadlines) for ``--quiet-seconds``; how long that took and whether it settled;
* after the unplugs settle, a rest window of ``--rest-seconds`` (default 600) with nothing
  changing but kwok's heartbeats: ``cpu_s_per_min_rest`` (the operator's user+system CPU;
  ``cpu_s_per_min_rest_event_loop`` its main thread's, ``..._other_threads`` the rest's: the
  node watch, the plan workers, the metrics server),
  ``writes_per_min_rest`` (``apiserver_request_total`` mutating verbs on the resources the
  operator writes — jobs, tanks, pools and their status, Services, EndpointSlices — so kwok's
  Node/Lease/Pod writes are not counted; Events are counted by their source, the operator's
  and kopf's, as the node controller posts Events too), ``rss_mib_end_of_rest`` and, when the
  rest window is 600 s or more, ``rss_mib_10min``; ``rss_mib_peak`` (VmHWM);
  ``plans_full_rest`` / ``plans_incremental_rest``: plans the operator ran in the rest window;
* the machine's load average at the start and the end of each run.

``--profile-rest`` samples the operator with py-spy (``pip install py-spy`` into the venv) over
the rest window, collapsed stacks per thread into ``profile-rest-N.txt`` in the work folder
(printed on stderr): where the CPU at rest goes. ``--operator PATH`` runs another checkout's
``tokenfleet`` (e.g. main's ``.venv/bin/tokenfleet``) for a side-by-side figure; ``--label``
names it in the JSON. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.unplug import OPERATOR_RESOURCES, _apiserver_writes, _delta, _pct  # noqa: E402
from e2e.cluster.fleet import Fleet, NodeSpec, big_fleet_lease_seconds  # noqa: E402
from e2e.operator_kit import (  # noqa: E402
    HEALTHY_VEHICLE,
    VEHICLE_INT4,
    OperatorProcess,
    Rig,
    rfc3339,
    wait_for,
)

JOBS = 3
REPLICAS = 50


class _Fleet(Fleet):
    """The fleet with its Nodes created after the control plane is up, with a readiness wait
    sized for a loaded machine (the e2e fleet's wait is 1 s per 20 Nodes, at least 60 s)."""

    def default_nodes(self) -> list[NodeSpec]:
        return []

    def create_default_nodes(self, timeout: float) -> None:
        specs = Fleet.default_nodes(self)
        self.log(f"creating {len(specs)} nodes ({self.vehicles} vehicles, {self.racks} racks)")
        self.create_nodes(specs)
        self.wait_nodes_ready([n.name for n in specs], timeout=timeout)


class _Operator(OperatorProcess):
    """``tokenfleet run`` from a chosen executable (another checkout's, for a comparison)."""

    def __init__(self, executable: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executable = executable

    @property
    def argv(self) -> list[str]:
        return [str(self.executable), *super().argv[1:]]


def _cpu_seconds(stat: Path) -> float:
    """User+system CPU seconds from a ``/proc`` ``stat`` file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def _proc_stat(pid: int) -> tuple[float, float, float]:
    """(CPU seconds user+system, RSS MiB, peak RSS MiB) of a process."""
    cpu = _cpu_seconds(Path(f"/proc/{pid}/stat"))
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024.0
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024.0
    return cpu, rss, hwm


def _loop_thread_cpu(pid: int) -> float:
    """CPU seconds (user+system) of a process's main thread: the operator's event loop (its
    other threads are the node watch, the plan workers and the metrics server)."""
    return _cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))


def _histogram_quantiles(text: str, name: str, mode: str) -> dict[str, float | int]:
    """p50/p99 of one ``mode`` of a Prometheus histogram (linear within buckets)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: list[tuple[float, float]] = []
    count = 0.0
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.labels.get("mode") != mode:
                continue
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), float(s.value)))
            elif s.name.endswith("_count"):
                count = float(s.value)
            elif s.name.endswith("_sum"):
                total = float(s.value)
    buckets.sort()
    out: dict[str, float | int] = {"count": int(count)}
    if not count:
        return out
    for q, key in ((0.5, "p50"), (0.99, "p99")):
        rank = q * count
        lower_le, lower_n = 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                if le == float("inf"):
                    out[key] = lower_le
                else:
                    span = n - lower_n
                    frac = (rank - lower_n) / span if span else 1.0
                    out[key] = round(lower_le + (le - lower_le) * frac, 4)
                break
            lower_le, lower_n = le, n
    out["mean"] = round(total / count, 4)
    return out


#: the Events' ``source.component`` of the operator's own (tokenfleet's) and kopf's Events
OPERATOR_EVENT_SOURCES = {"tokenfleet-operator", "kopf"}


def _operator_events(fleet: Fleet, since: datetime) -> int:
    """Events created since ``since`` by the operator: the API server's request counter does
    not tell writers apart, and the control plane's own Events (the node controller's
    ``RegisteredNode`` for every new Node) would be counted as the operator's."""
    raw = fleet.core_v1().list_event_for_all_namespaces(_preload_content=False)
    count = 0
    for event in json.loads(raw.data).get("items") or ():
        source = (event.get("source") or {}).get("component") or event.get("reportingComponent")
        created = (event.get("metadata") or {}).get("creationTimestamp") or ""
        if source in OPERATOR_EVENT_SOURCES and created:
            when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            if when >= since:
                count += 1
    return count


#: plans triggered by time alone (not by a change): they go on at rest
TIME_TRIGGERS = frozenset({"resync", "deadline"})


def _change_plans(op: OperatorProcess) -> float:
    """Plans the operator ran because something changed (not its resync or a deadline)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(op.metrics_text()):
        if family.name not in ("tokenfleet_plans", "tokenfleet_plans_total"):
            continue
        for s in family.samples:
            if s.name == "tokenfleet_plans_total" and s.labels.get("trigger") not in TIME_TRIGGERS:
                total += float(s.value)
    return total


def _ready_count(fleet: Fleet) -> tuple[int, int]:
    """(Ready, all) kwok Nodes (one raw list from the API server's cache)."""
    response = fleet.core_v1().list_node(
        label_selector="type=kwok", resource_version="0", _preload_content=False
    )
    items = json.loads(response.data)["items"]
    ready = sum(
        1
        for node in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (node.get("status") or {}).get("conditions") or ()
        )
    )
    return ready, len(items)


def _settle(
    fleet: Fleet, op: OperatorProcess, what: str, *, timeout: float, quiet: float
) -> dict[str, Any]:
    """Wait until every kwok Node is Ready and the operator ran no change-triggered plan for
    ``quiet`` seconds (bounded by ``timeout``; progress on stderr every 10 s). Returns how long
    it took, whether it settled, and the Ready count at the end."""
    log = lambda m: print(f">> {m}", file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.monotonic()
    last_report = t0
    plans = _change_plans(op)
    changed_at = t0
    ready, total = _ready_count(fleet)
    while True:
        now = time.monotonic()
        count = _change_plans(op)
        if count != plans:
            plans, changed_at = count, now
        ready, total = _ready_count(fleet)
        if ready == total and now - changed_at >= quiet:
            settled = True
            break
        if now - t0 > timeout:
            settled = False
            log(f"{what}: NOT settled after {timeout:.0f} s ({ready}/{total} Nodes Ready)")
            break
        if now - last_report >= 10:
            log(
                f"{what}: {ready}/{total} Nodes Ready, last change-triggered plan "
                f"{now - changed_at:.1f} s ago ({plans:.0f} so far)"
            )
            last_report = now
        time.sleep(1.0)
    took = round(time.monotonic() - t0, 1)
    log(f"{what}: settled={settled} after {took} s ({ready}/{total} Nodes Ready)")
    return {"settle_s": took, "settled": settled, "ready": ready, "nodes": total}


def _listed(rig: Rig, job: str) -> list[dict[str, Any]]:
    return list(rig.status(job).get("placements") or ())


def _all_loaded(rig: Rig, jobs: list[str]) -> bool:
    return all(
        sum(1 for p in _listed(rig, j) if p.get("state") == "Loaded") >= REPLICAS for j in jobs
    )


#: placement states that hold (or are about to hold) a replica: a new placement is one of these
ACTIVE_STATES = frozenset({"Loading", "Loaded"})


def _active_nodes(rig: Rig, job: str) -> set[str]:
    return {p["node"] for p in _listed(rig, job) if p.get("state") in ACTIVE_STATES}


def _unplugs(
    rig: Rig, jobs: list[str], count: int, marks: list[tuple[float, str]] | None = None
) -> list[float]:
    """Per unplug: until a placement of the job on another car is listed Loading or Loaded
    (the car just plugged back in may still be listed Unloading by another job when this starts:
    it counts once it is active again); then until no job lists the victim and all are Loaded
    again, before plugging it back in."""
    reactions: list[float] = []
    for i in range(count):
        job = jobs[i % len(jobs)]
        before = _active_nodes(rig, job)
        victim = sorted(before)[i % len(before)]
        if marks is not None:
            marks.append((time.time(), victim))
        rig.set_telemetry(victim, plugged_in="false")
        t0 = time.monotonic()
        deadline = t0 + 60
        while time.monotonic() < deadline:
            if _active_nodes(rig, job) - before:
                reactions.append(time.monotonic() - t0)
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"unplug #{i + 1} of {victim}: no new placement in 60 s")
        wait_for(
            lambda victim=victim: (
                all(victim not in {p["node"] for p in _listed(rig, j)} for j in jobs)
                and _all_loaded(rig, jobs)
            ),
            120,
            f"every job to settle after unplug #{i + 1}",
        )
        rig.set_telemetry(victim, plugged_in="true")
    return reactions


def _stamp(record: dict[str, Any]) -> float | None:
    with contextlib.suppress(Exception):
        return datetime.fromisoformat(str(record["timestamp"])).timestamp()
    return None


def _reaction_parts(op: OperatorProcess, marks: list[tuple[float, str]]) -> dict[str, Any]:
    """With ``--verbose-operator``: per unplug, from the patch to the node watch's hand-over of
    the Node's change and to the end of the next plan (the operator's debug log)."""
    records = [r for r in op.log_records() if _stamp(r) is not None]
    seen: list[float] = []
    planned: list[float] = []
    for start, victim in marks:
        change = next(
            (
                _stamp(r)
                for r in records
                if (_stamp(r) or 0) >= start
                and str(r.get("message", "")).startswith("node records changed")
                and victim in str(r.get("message"))
            ),
            None,
        )
        plan_end = next(
            (
                _stamp(r)
                for r in records
                if (_stamp(r) or 0) >= (change or start)
                and str(r.get("message", "")).startswith("plan ")
            ),
            None,
        )
        if change is not None:
            seen.append(change - start)
        if plan_end is not None:
            planned.append(plan_end - start)
    return {
        "to_node_change_s": [round(x, 3) for x in seen],
        "to_plan_end_s": [round(x, 3) for x in planned],
    }


def _profile(args: argparse.Namespace, pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """With ``--profile-rest``: py-spy samples the operator (not pausing it, idle threads left
    out, so the samples are where its CPU goes) for the rest window, collapsed stacks to ``out``
    (the py-spy process's own CPU is not the operator's)."""
    if not args.profile_rest:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print(f">> --profile-rest: no {spy} (pip install py-spy); not profiling", file=sys.stderr)
        return None
    argv = [str(spy), "record", "-p", str(pid), "-d", str(int(args.rest_seconds))]
    argv += ["-r", "100", "--nonblocking", "--threads", "-f", "raw", "-o", str(out)]
    print(f">> profiling the rest window into {out}", file=sys.stderr, flush=True)
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_size(args: argparse.Namespace, size: int, work: Path) -> dict[str, Any]:
    log = lambda m: print(f">> {m}", file=sys.stderr, flush=True)  # noqa: E731
    load_start = os.getloadavg()
    runtime_cars = args.runtime_cars
    fleet = _Fleet(
        work / f"fleet-{size}",
        vehicles=max(size - runtime_cars, 0),
        pools=4,
        racks=16,
        tanks=2,
        die_with_parent=True,
        log=log,
        # the big-fleet lease at every size: with the kubelet's 40 s lease, kwok on a loaded
        # 2-core machine misses renewals and Nodes flap NotReady (real changes to replan on)
        node_lease_seconds=big_fleet_lease_seconds(size),
        node_monitor_grace_seconds=big_fleet_lease_seconds(size) * 3 // 2,
    )
    fleet.start()
    runtimes: subprocess.Popen[bytes] | None = None
    fleet_ready_timeout = max(600.0, size / 4)
    op: _Operator | None = None
    rig: Rig | None = None
    try:
        fleet.create_default_nodes(fleet_ready_timeout)
        runtimes = subprocess.Popen(
            [sys.executable, "-m", "bench.scalekit.runtimes", "--count", str(runtime_cars)],
            stdout=subprocess.PIPE,
            cwd=str(REPO),
            start_new_session=True,
        )
        assert runtimes.stdout is not None
        endpoints: list[str] = json.loads(runtimes.stdout.readline())["endpoints"]
        namespace = f"scale-{uuid.uuid4().hex[:6]}"
        fleet.core_v1().create_namespace({"metadata": {"name": namespace}})
        rig = Rig(fleet, namespace, work)
        pool = rig.create_pool("pool", staleAfterSeconds=3600)
        specs = []
        now = datetime.now(UTC)
        healthy = {
            **HEALTHY_VEHICLE,
            "departure-time": rfc3339(now + timedelta(hours=8)),
            "observed-at": rfc3339(now),
        }
        for i, endpoint in enumerate(endpoints):
            name = rig.name(f"car{i:04d}")
            spec = fleet.vehicle_spec(
                name,
                pool=pool,
                region=rig.region,
                telemetry=healthy,
                labels={"tokenfleet.io/bench": rig.id},
                annotations={"tokenfleet.io/runtime-endpoint": endpoint},
            )
            specs.append(spec)
            rig.nodes.append(name)
        fleet.create_nodes(specs)
        fleet.wait_nodes_ready([s.name for s in specs], timeout=fleet_ready_timeout)
        jobs = [
            rig.create_job(
                f"job{j}",
                [VEHICLE_INT4],
                replicas=(REPLICAS, REPLICAS),
                target_tps=REPLICAS * float(VEHICLE_INT4["tokensPerSecond"]),
                targets=["Vehicle"],
            )
            for j in range(JOBS)
        ]
        op = _Operator(
            Path(args.operator),
            fleet,
            [namespace],
            work / f"operator-{size}.log",
            env={
                # production intervals (debounce 0.5 s, resyncs 30 s)
                "TOKENFLEET_PLAN_DEBOUNCE_SECONDS": "",
                "TOKENFLEET_PLAN_RESYNC_SECONDS": "",
                "TOKENFLEET_JOB_RESYNC_SECONDS": "",
            },
            verbose=args.verbose_operator,
        )
        t0 = time.monotonic()
        op.start(timeout=600)
        first_plan = wait_for(
            lambda: (
                time.monotonic() if op is not None and op.metric("tokenfleet_plans_total") else None
            ),
            900,
            "the operator's first plan",
            interval=0.1,
        )
        start_to_first_plan = first_plan - t0
        assert op.process is not None
        cpu_to_first_plan, _, _ = _proc_stat(op.process.pid)
        log(f"first plan {start_to_first_plan:.1f} s after the operator started")
        wait_for(lambda: _all_loaded(rig, jobs) or None, 900, "every job Loaded", interval=0.5)
        start_to_ready = time.monotonic() - t0
        settle_before_unplugs = _settle(
            fleet, op, "before the unplugs", timeout=args.settle_timeout, quiet=args.quiet_seconds
        )
        marks: list[tuple[float, str]] = []
        reactions = _unplugs(rig, jobs, args.unplugs, marks)
        time.sleep(args.settle_seconds)
        settle_before_rest = _settle(
            fleet, op, "before the rest", timeout=args.settle_timeout, quiet=args.quiet_seconds
        )
        plans_full0 = _histogram_quantiles(
            op.metrics_text(), "tokenfleet_plan_duration_seconds", "full"
        ).get("count", 0)
        plans_inc0 = _histogram_quantiles(
            op.metrics_text(), "tokenfleet_plan_duration_seconds", "incremental"
        ).get("count", 0)
        assert op.process is not None
        pid = op.process.pid
        own_before = op.metric("tokenfleet_api_writes_total")
        cpu0, _, _ = _proc_stat(pid)
        loop0 = _loop_thread_cpu(pid)
        writes0 = _apiserver_writes(fleet)
        rest_from = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        profiler = _profile(args, pid, work / f"profile-rest-{size}.txt")
        time.sleep(args.rest_seconds)
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
        writes1 = _apiserver_writes(fleet)
        events = _operator_events(fleet, rest_from)
        cpu1, rss, hwm = _proc_stat(pid)
        loop1 = _loop_thread_cpu(pid)
        own_after = op.metric("tokenfleet_api_writes_total")
        delta = _delta(writes1, writes0)
        ours = {
            k: v
            for k, v in delta.items()
            if k.split(" ", 1)[1] in OPERATOR_RESOURCES - {"events"} and v > 0
        }
        if events:
            ours["POST events"] = float(events)
        per_min = 60.0 / args.rest_seconds
        text = op.metrics_text()
        full = _histogram_quantiles(text, "tokenfleet_plan_duration_seconds", "full")
        incremental = _histogram_quantiles(text, "tokenfleet_plan_duration_seconds", "incremental")
        result: dict[str, Any] = {
            "nodes": size + 16,
            "cars": size,
            "racks": 16,
            "runtime_cars": runtime_cars,
            "jobs": JOBS,
            "replicas_per_job": REPLICAS,
            "start_to_first_plan_s": round(start_to_first_plan, 2),
            "cpu_s_to_first_plan": round(cpu_to_first_plan, 2),
            "start_to_ready_s": round(start_to_ready, 2),
            "rest_seconds": args.rest_seconds,
            "rss_mib_end_of_rest": round(rss, 1),
            "rss_mib_peak": round(hwm, 1),
            "cpu_s_per_min_rest": round((cpu1 - cpu0) * per_min, 3),
            "cpu_s_per_min_rest_event_loop": round((loop1 - loop0) * per_min, 3),
            "cpu_s_per_min_rest_other_threads": round(
                ((cpu1 - cpu0) - (loop1 - loop0)) * per_min, 3
            ),
            "writes_per_min_rest": round(sum(ours.values()) * per_min, 2),
            "writes_per_min_rest_by_resource": {k: round(v * per_min, 2) for k, v in ours.items()},
            "operator_counted_writes_per_min_rest": round((own_after - own_before) * per_min, 2),
            "unplugs": len(reactions),
            "reaction_p50_s": round(_pct(reactions, 0.5), 3),
            "reaction_p99_s": round(_pct(reactions, 0.99), 3),
            "reaction_max_s": round(max(reactions), 3) if reactions else None,
            "plan_full_p50_s": full.get("p50"),
            "plan_full_p99_s": full.get("p99"),
            "plan_full_count": full.get("count"),
            "plan_incremental_p50_s": incremental.get("p50"),
            "plan_incremental_p99_s": incremental.get("p99"),
            "plan_incremental_count": incremental.get("count"),
            "plans_full_rest": int(full.get("count", 0)) - int(plans_full0),
            "plans_incremental_rest": int(incremental.get("count", 0)) - int(plans_inc0),
            "settle_before_unplugs": settle_before_unplugs,
            "settle_before_rest": settle_before_rest,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        }
        if args.verbose_operator:
            result["reaction_parts"] = _reaction_parts(op, marks)
        if args.rest_seconds >= 600:
            result["rss_mib_10min"] = result["rss_mib_end_of_rest"]
        log(json.dumps(result))
        # jobs deleted while the operator runs (its finalizers), before the fleet goes
        for job in jobs:
            with contextlib.suppress(Exception):
                rig.custom.delete_namespaced_custom_object(
                    "tokenfleet.io", "v1alpha1", namespace, "inferencejobs", job
                )
        return result
    finally:
        if op is not None:
            op.stop()
        if runtimes is not None and runtimes.poll() is None:
            runtimes.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                runtimes.wait(10)
        fleet.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="cars per run, comma-separated")
    parser.add_argument("--rest-seconds", type=float, default=600.0)
    parser.add_argument("--settle-seconds", type=float, default=45.0)
    parser.add_argument("--unplugs", type=int, default=20)
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=600.0,
        help="at most this long, before the unplugs and before the rest, for every kwok Node "
        "Ready and no change-triggered plan for --quiet-seconds",
    )
    parser.add_argument("--quiet-seconds", type=float, default=10.0)
    parser.add_argument(
        "--verbose-operator",
        action="store_true",
        help="the operator logs at debug level; the JSON gets reaction_parts (not for figures)",
    )
    parser.add_argument(
        "--profile-rest",
        action="store_true",
        help="py-spy (in the venv) samples the operator over the rest window; collapsed stacks "
        "to profile-rest-N.txt in the work folder (for profiling, not for figures)",
    )
    parser.add_argument("--runtime-cars", type=int, default=200)
    parser.add_argument("--operator", default=str(REPO / ".venv" / "bin" / "tokenfleet"))
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--json", action="store_true", help="print JSON (the only output)")
    parser.add_argument(
        "--smoke", action="store_true", help="200 cars (60 with a runtime), 3 unplugs, 20 s rest"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.rest_seconds, args.unplugs = "200", 20.0, 3
        args.runtime_cars, args.settle_seconds = 60, 15.0
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    if args.runtime_cars <= REPLICAS:
        # one replica of a job per car: 50 cars per job, and a spare for the moves
        parser.error(f"--runtime-cars must be more than {REPLICAS}")
    work = Path(tempfile.mkdtemp(prefix="tokenfleet-scale-"))
    print(f">> work folder {work}", file=sys.stderr, flush=True)
    results = {"operator": args.label, "executable": args.operator, "sizes": {}}
    for size in sizes:
        results["sizes"][str(size)] = run_size(args, size, work)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
