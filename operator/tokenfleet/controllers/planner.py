"""The fleet planner: ONE placement decision for the whole fleet, recomputed on change.

Placement is fleet-wide (jobs compete for the same nodes and tank budgets), so a single
background task owns it:

* kopf indexes hold the picture (nodes + runtime pods from ``nodes.py``; tanks, pools and jobs
  here), so a plan costs no API call;
* watch events that matter (a node's parsed facts changed, a tank's or pool's spec/status
  changed, a job's spec changed or it was deleted) *signal* the planner; it debounces
  (``plan_debounce_seconds``) and also replans every ``plan_resync_seconds`` (staleness is a
  matter of time, not of events);
* a single-node change with an unchanged rest replans incrementally (``replan_node``);
  anything else runs the full heuristic ``plan``;
* the result is cut into one :class:`JobSlice` per job, and the job's daemon
  (``inferencejob.py``) is woken when its slice changed. The daemons do the Triton work.

Current placements fed to the engine are the planner's own previous assignments (stable: an
unchanged input moves nothing); on a cold start they come from each job's ``status.placements``
(the decision record), so a restart recomputes the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import kopf

from tokenfleet import GROUP, metrics
from tokenfleet.batch.demand import batch_demand  # issue-14
from tokenfleet.controllers import events, kube
from tokenfleet.controllers.nodes import RuntimePod, index_values
from tokenfleet.controllers.settings import OperatorConfig, get_config
from tokenfleet.controllers.snapshot import (
    JobView,
    NodeSite,
    PoolView,
    SnapshotParts,
    TankView,
    build_snapshot,
)
from tokenfleet.controllers.unknown import TimeVerdict, UnknownTelemetry
from tokenfleet.placement import (
    JobShortfall,
    Placement,
    Plan,
    Reason,
    plan,
    replan_due,
    replan_node,
)
from tokenfleet.serving.endpoints import (
    dial_allowed,
    format_host_port,
    parse_host_port,
    parse_networks,
)
from tokenfleet.telemetry.metrics import TELEMETRY_REJECTED
from tokenfleet.telemetry.node import NodeInfo
from tokenfleet.telemetry.vehicle import OBSERVED_AT

log = logging.getLogger(__name__)

#: eviction reason the operator adds when a runtime failed (not an engine reason)
RUNTIME_FAILED = "RuntimeFailed"
#: eviction reasons where the old node is unsafe *now*: unload first, then re-place (drain)
DRAIN_NOW = frozenset(
    {
        str(Reason.NODE_REMOVED),
        str(Reason.TANK_LEAK),
        str(Reason.BATTERY_TOO_HOT),
        str(Reason.COMPUTE_TOO_HOT),
        str(Reason.TELEMETRY_UNKNOWN),
        RUNTIME_FAILED,
    }
)

NodeKey = tuple[str, str]  # (node, variant)
NodeKeyJob = tuple[str, str]  # (job, node)
#: a (job, node) back-off grows by this factor per consecutive load failure, up to MAX_FACTOR
LOAD_BACKOFF_FACTOR = 2.0
LOAD_BACKOFF_MAX_FACTOR = 8.0


@dataclass(frozen=True)
class LoadBackoff:
    """A job's model failed to load on a node: the job avoids that node until ``until``
    (monotonic s); ``failures`` in a row; ``message`` is the runtime's own text."""

    until: float
    failures: int
    message: str


@dataclass(frozen=True)
class DesiredPlacement:
    node: str
    variant: str
    target: str
    pool: str | None
    tank: str | None
    replicas: int = 1


@dataclass(frozen=True)
class Removal:
    reason: str
    moved_to: str | None = None


@dataclass(frozen=True)
class JobSlice:
    """What the planner wants for one job."""

    desired: Mapping[NodeKey, DesiredPlacement]
    removals: Mapping[NodeKey, Removal]
    desired_replicas: int
    shortfall_reason: str | None
    shortfall_message: str | None
    plan_id: int

    def same_decision(self, other: JobSlice | None) -> bool:
        return (
            other is not None
            and dict(self.desired) == dict(other.desired)
            and self.desired_replicas == other.desired_replicas
            and self.shortfall_reason == other.shortfall_reason
        )


@dataclass
class _Signals:
    triggers: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    full: bool = False


class Planner:
    """The one planner of this operator process (see the module docstring)."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.indices: Mapping[str, Any] = {}
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._signals = _Signals()
        self._plan: Plan | None = None
        self._sites: dict[str, NodeSite] = {}
        self._slices: dict[str, JobSlice] = {}
        self._job_events: dict[str, asyncio.Event] = {}
        self._daemons: dict[str, int] = {}  # job -> its daemons running here (0 or 1, briefly 2)
        self._failed_until: dict[str, float] = {}
        self._load_failures: dict[NodeKeyJob, LoadBackoff] = {}
        self._generations: dict[str, int] = {}
        self._plan_id = 0
        self._task: asyncio.Task[None] | None = None
        self.last_plan_monotonic: float | None = None
        self.last_error: str | None = None
        # an invalid TOKENFLEET_RUNTIME_DIAL_NETWORKS stops the operator at start, naming it
        self._dial_networks = parse_networks(config.runtime_dial_networks)
        self._refused_dials: set[str] = set()
        self._unknown = UnknownTelemetry()
        self._tank_readings: dict[str, float] = {}

    # ---- wiring ---------------------------------------------------------------------------

    def attach(self, indices: Mapping[str, Any]) -> None:
        self.indices = indices

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tokenfleet-planner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def mark_ready(self) -> None:
        """Called from resource handlers: kopf runs them only once every index is populated."""
        if not self._ready.is_set():
            self._ready.set()
            self.signal("startup", full=True)

    async def wait_ready(self) -> None:
        """Until a resource handler ran (kopf runs none while peering pauses the operator)."""
        await self._ready.wait()

    def daemon_running(self, key: str, running: bool) -> None:
        """A job's daemon started or stopped here (kopf stops them all while paused)."""
        count = self._daemons.get(key, 0) + (1 if running else -1)
        if count > 0:
            self._daemons[key] = count
        else:
            self._daemons.pop(key, None)

    @property
    def daemon_jobs(self) -> frozenset[str]:
        """Jobs whose daemon runs in this process now."""
        return frozenset(self._daemons)

    def signal(self, trigger: str, *, node: str | None = None, full: bool = False) -> None:
        self._signals.triggers.add(trigger)
        if node is not None:
            self._signals.nodes.add(node)
        if full:
            self._signals.full = True
        self._wake.set()

    def job_event(self, key: str) -> asyncio.Event:
        event = self._job_events.get(key)
        if event is None:
            event = self._job_events[key] = asyncio.Event()
        return event

    def forget_job(self, key: str) -> None:
        self._job_events.pop(key, None)
        self._slices.pop(key, None)

    def kick_jobs(self, keys: Iterable[str]) -> None:
        """Wake these job daemons without a replan (e.g. a runtime pod changed its address)."""
        for key in keys:
            event = self._job_events.get(key)
            if event is not None:
                event.set()

    def slice_for(self, key: str) -> JobSlice | None:
        return self._slices.get(key)

    def site_of(self, node: str) -> NodeSite | None:
        return self._sites.get(node)

    def report_runtime_failure(self, node: str, why: str) -> None:
        """A runtime failed (load failed, runtime unreachable, model dropped): no new work there
        for ``runtime_failure_backoff_seconds`` and its placements are re-placed."""
        until = time.monotonic() + self.config.runtime_failure_backoff_seconds
        first = self._failed_until.get(node, 0.0) < time.monotonic()
        self._failed_until[node] = until
        if first:
            log.warning("runtime on node %s failed (%s): re-placing its replicas", node, why)
        self.signal("runtime-failed", full=True)

    def runtime_failed(self, node: str) -> bool:
        return self._failed_until.get(node, 0.0) > time.monotonic()

    def record_tank_reading(self, tank: str, observed_at: float) -> None:
        """The tank's poller read it (epoch s of the reading): the planner judges the tank's
        freshness by this, as ``status.lastReadingTime`` is refreshed only with a deadband."""
        first = tank not in self._tank_readings
        self._tank_readings[tank] = observed_at
        if first:
            self.signal("tank", full=True)

    def forget_tank(self, tank: str) -> None:
        self._tank_readings.pop(tank, None)

    def report_load_failure(self, job: str, node: str, why: str) -> None:
        """The job's model failed to load on ``node``: that replica and that job only. The job
        avoids the node for a back-off (``runtime_failure_backoff_seconds``, doubled per failure
        in a row up to 8x); the runtime and every other job's replicas there are untouched."""
        now = time.monotonic()
        previous = self._load_failures.get((job, node))
        failures = previous.failures + 1 if previous is not None else 1
        factor = min(LOAD_BACKOFF_FACTOR ** (failures - 1), LOAD_BACKOFF_MAX_FACTOR)
        until = now + self.config.runtime_failure_backoff_seconds * factor
        self._load_failures[(job, node)] = LoadBackoff(until, failures, why)
        log.warning(
            "job %s: model failed to load on %s (%s): retry there in %.0f s",
            job,
            node,
            why,
            until - now,
        )
        self.signal("load-failed", full=True)

    def load_succeeded(self, job: str, node: str) -> None:
        """A load of the job's model on ``node`` worked: its back-off there starts over."""
        self._load_failures.pop((job, node), None)

    def load_failed(self, job: str, node: str) -> bool:
        """The job is in its load back-off on ``node``."""
        backoff = self._load_failures.get((job, node))
        return backoff is not None and backoff.until > time.monotonic()

    def load_failure(self, job: str) -> tuple[str, LoadBackoff] | None:
        """The job's latest load failure still in back-off, as (node, back-off)."""
        now = time.monotonic()
        live = [(n, b) for (j, n), b in self._load_failures.items() if j == job and b.until > now]
        return max(live, key=lambda nb: nb[1].until) if live else None

    def _avoid_nodes(self, generations: Mapping[str, int]) -> dict[str, frozenset[str]]:
        """job -> nodes in its load back-off (a new spec generation of a job starts over)."""
        now = time.monotonic()
        for job, node in list(self._load_failures):
            changed = self._generations.get(job, generations.get(job)) != generations.get(job)
            if changed or job not in generations:
                self._load_failures.pop((job, node), None)
        avoid: dict[str, set[str]] = {}
        for (job, node), backoff in self._load_failures.items():
            if backoff.until > now:
                avoid.setdefault(job, set()).add(node)
        return {job: frozenset(nodes) for job, nodes in avoid.items()}

    # ---- the index views --------------------------------------------------------------------

    def _index(self, name: str) -> Mapping[str, Iterable[Any]]:
        index = self.indices.get(name)
        return index if index is not None else {}

    def nodes(self) -> list[NodeInfo]:
        return list(index_values(self._index("nodes_by_name")))

    def node(self, name: str) -> NodeInfo | None:
        store = self._index("nodes_by_name").get(name)
        return next(iter(store), None) if store is not None else None

    def jobs_serving_on(self, node: str) -> set[str]:
        """Jobs (``namespace/name``) with a Loaded replica on ``node``: the ones whose
        EndpointSlice lists that node's runtime pod."""
        store = self._index("serving_by_node").get(node)
        return {r.job for r in store} if store is not None else set()

    def runtime_pods(self, node: str) -> list[RuntimePod]:
        store = self._index("runtime_pods_by_node").get(node)
        return list(store) if store is not None else []

    def jobs(self) -> list[JobView]:
        return list(index_values(self._index("planner_jobs")))

    def job_views(self) -> dict[str, JobView]:
        return {j.key: j for j in self.jobs()}

    def runtime_endpoint(self, node: str) -> str | None:
        """HOST:PORT of the node's Triton HTTP port: the annotation wins, else the runtime pod.

        ``None`` (no runtime) also when the dial policy forbids the address.
        """
        info = self.node(node)
        if info is not None and info.runtime_endpoint:
            endpoint = info.runtime_endpoint
        else:
            pod = self.runtime_pod(node)
            if pod is None or not pod.pod_ip:
                return None
            endpoint = format_host_port(pod.pod_ip, self.config.runtime_http_port)
        if not dial_allowed(parse_host_port(endpoint)[0], self._dial_networks):
            if node not in self._refused_dials:
                self._refused_dials.add(node)
                log.warning(
                    "not dialling %s for node %s: outside the runtime dial networks %s",
                    endpoint,
                    node,
                    self.config.runtime_dial_networks,
                )
            return None
        return endpoint

    def runtime_pod(self, node: str) -> RuntimePod | None:
        pods = [p for p in self.runtime_pods(node) if p.pod_ip and not p.deleting]
        if not pods:
            return None
        return max(pods, key=lambda p: (p.ready, p.name))

    # ---- planning -----------------------------------------------------------------------------

    def _next_wake(self) -> tuple[float, str]:
        """Seconds until the next unprompted plan and why: the plan's ``next_deadline`` (a time
        threshold of a placed replica's node; re-checked incrementally) or the resync."""
        resync = self.config.plan_resync_seconds
        deadline = self._plan.next_deadline if self._plan is not None else None
        if deadline is not None and deadline - time.time() < resync:
            return max(deadline - time.time(), 0.0), "deadline"
        return resync, "resync"

    async def _run(self) -> None:
        await self._ready.wait()
        while True:
            timeout, trigger = self._next_wake()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                self.signal(trigger, full=trigger == "resync")
            await asyncio.sleep(self.config.plan_debounce_seconds)
            self._wake.clear()
            signals, self._signals = self._signals, _Signals()
            try:
                with metrics.reconcile_timer("FleetPlan"):
                    await self.replan(signals)
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one bad plan kill the planner; keep old slices
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("fleet plan failed; keeping the previous decision")
                await asyncio.sleep(min(5.0, self.config.plan_resync_seconds))

    def _unusable_nodes(self, nodes: Iterable[NodeInfo]) -> dict[str, str]:
        unusable: dict[str, str] = {}
        for info in nodes:
            if self.runtime_failed(info.name):
                unusable[info.name] = RUNTIME_FAILED
            elif self.runtime_endpoint(info.name) is None:
                unusable[info.name] = "NoRuntime"
        return unusable

    def _current(self, jobs: Iterable[JobView]) -> dict[str, list[Placement]]:
        """Previous assignments per job (jobs new since then fall back to their record)."""
        current: dict[str, list[Placement]] = {}
        if self._plan is None:
            return current
        keys = {j.key for j in jobs}
        for key in keys:
            if key in self._slices:
                current[key] = []
        for a in self._plan.assignments:
            if a.job in current:
                current[a.job].append(a)
        return current

    async def replan(self, signals: _Signals) -> None:
        start = time.perf_counter()
        now = time.time()
        nodes = self.nodes()
        jobs = self.jobs()
        unusable = self._unusable_nodes(nodes)
        current = self._current(jobs)
        failed = {n for n, why in unusable.items() if why == RUNTIME_FAILED}
        forced: dict[str, dict[NodeKey, Removal]] = {}
        if failed:
            for key, placements in current.items():
                kept = []
                for p in placements:
                    if p.node in failed:
                        forced.setdefault(key, {})[(p.node, p.variant)] = Removal(RUNTIME_FAILED)
                    else:
                        kept.append(p)
                current[key] = kept
        parts = build_snapshot(
            now=now,
            nodes=nodes,
            tanks=index_values(self._index("planner_tanks")),
            pools=index_values(self._index("planner_pools")),
            jobs=jobs,
            current=current if self._plan is not None else None,
            unusable_nodes=unusable,
            tank_readings=self._tank_readings,
        )
        parts.snapshot, verdicts = self._unknown.observe(parts.snapshot)
        await _report_time_verdicts(verdicts)
        avoid = self._avoid_nodes({j.key: j.generation for j in jobs})
        if avoid:
            parts.snapshot = dataclasses.replace(
                parts.snapshot,
                jobs=tuple(
                    dataclasses.replace(j, avoid_nodes=avoid[j.name]) if j.name in avoid else j
                    for j in parts.snapshot.jobs
                ),
            )
        previous = self._plan
        incremental = (
            previous is not None
            and not signals.full
            and len(signals.nodes) <= 1
            and signals.triggers <= {"node", "deadline"}
            and (len(signals.nodes) == 1 or signals.triggers == {"deadline"})
            and not forced
            and tuple(sorted(map(_pkey, parts.snapshot.placements)))
            == tuple(sorted(map(_pkey, previous.assignments)))
        )
        snapshot = parts.snapshot
        if incremental and previous is not None and signals.nodes:
            node_name = next(iter(signals.nodes))
            result = await asyncio.to_thread(replan_node, snapshot, previous, node_name)
            mode = "incremental"
        elif incremental and previous is not None:
            # time alone crossed a threshold (drain lead, charge by departure, stale reading)
            result = await asyncio.to_thread(replan_due, snapshot, previous)
            mode = "incremental"
        else:
            result = await asyncio.to_thread(plan, snapshot)
            mode = "full"
        self._plan = result
        self._sites = parts.sites
        self._plan_id += 1
        elapsed = time.perf_counter() - start
        metrics.PLAN_DURATION.labels(mode=mode).observe(elapsed)
        for trigger in signals.triggers or {"unknown"}:
            metrics.PLANS.labels(trigger=trigger).inc()
        self.last_plan_monotonic = time.monotonic()
        generations = {j.key: j.generation for j in jobs}
        self._publish(parts, result, forced, {j.key for j in jobs if not j.deleting})
        # a spec change the decision does not depend on still wakes the job (observedGeneration)
        for key, generation in generations.items():
            if self._generations.get(key, generation) != generation:
                self.kick_jobs([key])
        self._generations = generations
        log.debug(
            "plan %d (%s, %.3fs, triggers=%s): %d assignments, %d added, %d evicted",
            self._plan_id,
            mode,
            elapsed,
            sorted(signals.triggers),
            len(result.assignments),
            len(result.added),
            len(result.evictions),
        )

    def _publish(
        self,
        parts: SnapshotParts,
        result: Plan,
        forced: Mapping[str, Mapping[NodeKey, Removal]],
        live_jobs: set[str],
    ) -> None:
        desired: dict[str, dict[NodeKey, DesiredPlacement]] = {k: {} for k in live_jobs}
        for a in result.assignments:
            site = parts.sites.get(a.node, NodeSite("Rack"))
            desired.setdefault(a.job, {})[(a.node, a.variant)] = DesiredPlacement(
                node=a.node,
                variant=a.variant,
                target=site.target,
                pool=site.pool,
                tank=site.tank,
                replicas=a.replicas,
            )
        removals: dict[str, dict[NodeKey, Removal]] = {}
        for ev in result.evictions:
            removals.setdefault(ev.job, {})[(ev.node, ev.variant)] = Removal(
                str(ev.reason), ev.moved_to
            )
        for key, forced_removals in forced.items():
            removals.setdefault(key, {}).update(forced_removals)
        shortfalls = {s.job: s for s in result.job_shortfalls}
        for key in live_jobs | set(desired):
            if key in parts.invalid_jobs:
                new = JobSlice({}, {}, 0, "InvalidSpec", parts.invalid_jobs[key], self._plan_id)
            else:
                want = desired.get(key, {})
                shortfall = shortfalls.get(key)
                new = JobSlice(
                    desired=want,
                    removals=removals.get(key, {}),
                    desired_replicas=sum(d.replicas for d in want.values()),
                    shortfall_reason=_shortfall_reason(shortfall),
                    shortfall_message=(
                        f"serving {shortfall.served_tokens_per_second:g} of "
                        f"{shortfall.target_tokens_per_second:g} tokens/s with "
                        f"{shortfall.replicas} replicas: "
                        + ", ".join(f"{r}={n}" for r, n in shortfall.reasons[:5])
                        if shortfall
                        else None
                    ),
                    plan_id=self._plan_id,
                )
            old = self._slices.get(key)
            if old is not None and new.same_decision(old):
                # keep the removal reasons of the decision being carried out
                new = JobSlice(
                    new.desired,
                    {**old.removals, **new.removals},
                    new.desired_replicas,
                    new.shortfall_reason,
                    new.shortfall_message,
                    old.plan_id,
                )
                self._slices[key] = new
                continue
            if old is not None:
                # a removal still being carried out keeps its reason (e.g. Preempted) until the
                # replica is gone, even when a later plan no longer lists it as an eviction
                carried = {k: r for k, r in old.removals.items() if k not in new.desired}
                if carried:
                    new = replace(new, removals={**carried, **new.removals})
            self._slices[key] = new
            self.job_event(key).set()
        for key in list(self._slices):
            if key not in live_jobs and key not in desired:
                self._slices.pop(key, None)


async def _report_time_verdicts(verdicts: Iterable[TimeVerdict]) -> None:
    """A Warning Event on the Node and ``tokenfleet_telemetry_rejected_total`` for each car whose
    reading just became unknown by its time (too old, or stamped too far in the future)."""
    for verdict in verdicts:
        TELEMETRY_REJECTED.labels("vehicle", OBSERVED_AT, verdict.kind.value).inc()
        message = f"telemetry treated as unknown: {verdict.message}"
        log.warning("node %s: %s", verdict.node, message)
        try:
            await kube.post_node_event(verdict.node, "TelemetryRejected", message)
        except Exception as exc:  # an Event is best effort; the metric and the log are not
            log.debug("posting an Event on node %s failed: %s", verdict.node, exc)


def _shortfall_reason(shortfall: JobShortfall | None) -> str | None:
    """The engine's dominant reason; for the catch-all NoEligibleNode, the most counted node
    reason instead (e.g. StaleTelemetry), which is what a user can act on."""
    if shortfall is None:
        return None
    if shortfall.reason == Reason.NO_ELIGIBLE_NODE:
        # nodes the job could never use (other targets, regions, owners) say nothing about why
        # it is short now; the most counted condition of the others does (e.g. StaleTelemetry)
        for reason, _count in shortfall.reasons:
            if reason not in _POLICY_MISMATCH:
                return str(reason)
    return str(shortfall.reason)


_POLICY_MISMATCH = frozenset(
    {
        Reason.TARGET_NOT_ALLOWED,
        Reason.NO_VARIANT_FOR_TARGET,
        Reason.RESIDENCY,
        Reason.OWNERSHIP,
        Reason.NOT_ATTESTED,
        Reason.UNKNOWN_POOL,
        Reason.UNKNOWN_TANK,
    }
)


def _pkey(p: Placement) -> tuple[str, str, str, int]:
    return (p.job, p.node, p.variant, p.replicas)


# ---- the process-wide planner and its kopf wiring ---------------------------------------------

_PLANNER: Planner | None = None


def get_planner() -> Planner:
    global _PLANNER
    if _PLANNER is None:
        _PLANNER = Planner(get_config())
    return _PLANNER


def reset_planner() -> None:
    """Forget the process-wide planner (tests that run the operator several times in-process)."""
    global _PLANNER
    _PLANNER = None


@kopf.on.startup()
async def start_planner(logger: kopf.Logger, **kwargs: Any) -> None:
    planner = get_planner()
    # kopf passes every index as a keyword argument; they are live views.
    planner.attach({k: v for k, v in kwargs.items() if isinstance(v, Mapping)})
    planner.start()
    logger.info("fleet planner started (indexes: %s)", sorted(planner.indices))


@kopf.on.cleanup()
async def stop_planner(**_: Any) -> None:
    if _PLANNER is not None:
        await _PLANNER.stop()


def raise_if_ended(task: asyncio.Task[Any] | None, what: str) -> None:
    """For a liveness probe: fail when a background task that should run forever has ended."""
    if task is not None and task.done():
        raise RuntimeError(f"{what} task ended: {task.exception() if not task.cancelled() else ''}")


@kopf.on.probe(id="planner")
def planner_probe(**_: Any) -> dict[str, Any]:
    planner = get_planner()
    raise_if_ended(planner.task, "planner")
    age = (
        None
        if planner.last_plan_monotonic is None
        else round(time.monotonic() - planner.last_plan_monotonic, 3)
    )
    return {"lastPlanAgeSeconds": age, "lastError": planner.last_error}


# ---- indexes of the three kinds --------------------------------------------------------------


def _status(body: kopf.Body) -> dict[str, Any]:
    return dict(body.get("status") or {})


_View = TypeVar("_View", TankView, PoolView)


def _cluster_view(cls: type[_View], body: kopf.Body, name: str, meta: kopf.Meta) -> _View:
    return cls(
        name=name,
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=dict(body.get("spec") or {}),
        status=_status(body),
        deleting=meta.get("deletionTimestamp") is not None,
    )


@kopf.index(GROUP, "immersionpods", id="planner_tanks")
def planner_tanks(body: kopf.Body, name: str, meta: kopf.Meta, **_: Any) -> dict[str, TankView]:
    return {name: _cluster_view(TankView, body, name, meta)}


@kopf.index(GROUP, "vehiclepools", id="planner_pools")
def planner_pools(body: kopf.Body, name: str, meta: kopf.Meta, **_: Any) -> dict[str, PoolView]:
    return {name: _cluster_view(PoolView, body, name, meta)}


@kopf.index(GROUP, "inferencejobs", id="planner_jobs")
def planner_jobs(
    body: kopf.Body, name: str, namespace: str | None, meta: kopf.Meta, **_: Any
) -> dict[str, JobView]:
    placements = tuple(dict(p) for p in (_status(body).get("placements") or ()))
    view = JobView(
        namespace=str(namespace or ""),
        name=name,
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=dict(body.get("spec") or {}),
        placements=placements,
        deleting=meta.get("deletionTimestamp") is not None,
        batch_tokens_per_second=batch_demand(meta.get("annotations")),  # issue-14
    )
    return {view.key: view}


# ---- signals ----------------------------------------------------------------------------------

# The last planning-relevant facts seen per object, so heartbeats and our own status writes do
# not trigger replans.
_seen_nodes: dict[str, NodeInfo] = {}
_seen_tanks: dict[str, tuple[Any, ...]] = {}
_seen_pools: dict[str, tuple[Any, ...]] = {}
_seen_jobs: dict[str, tuple[Any, ...]] = {}
_seen_pods: dict[str, tuple[Any, ...]] = {}

_TANK_STATUS_KEYS = (
    "itLoadKW",
    "supplyTempC",
    "returnTempC",
    "flowLitersPerMinute",
    "leakState",
    "leakLatch",
    "lastReadingTime",
)


@kopf.on.event("nodes", labels={"tokenfleet.io/role": kopf.PRESENT})
def node_changed(
    name: str,
    type: str | None,  # noqa: A002
    body: kopf.Body,
    nodes_by_name: Any = None,
    memo: Any = None,
    **_: Any,
) -> None:
    planner = get_planner()
    planner.mark_ready()
    if type == "DELETED":
        if _seen_nodes.pop(name, None) is not None:
            planner.signal("node", node=name, full=True)
        return
    info = planner.node(name)
    if info is None:
        return
    previous = _seen_nodes.get(name)
    if previous is not None and previous == info:
        return
    _seen_nodes[name] = info
    _report_problems(name, body, info, previous, memo)
    planner.signal("node", node=name, full=previous is None)


def _problems(info: NodeInfo | None) -> frozenset[str]:
    if info is None:
        return frozenset()
    problems = list(info.problems)
    if info.vehicle is not None:
        problems.extend(info.vehicle.problems)
    return frozenset(p.describe() for p in problems)


def _report_problems(
    name: str, body: kopf.Body, info: NodeInfo, previous: NodeInfo | None, memo: Any = None
) -> None:
    """A Warning Event on the Node when its set of rejected telemetry fields changes (the
    values are ignored as unknown; ``tokenfleet_telemetry_rejected_total`` counts them)."""
    now, before = _problems(info), _problems(previous)
    if now and now != before:
        message = "ignored telemetry (treated as unknown): " + "; ".join(sorted(now))
        log.warning("node %s: %s", name, message)
        with contextlib.suppress(Exception):
            # a Node is cluster-scoped: posted so that `kubectl describe node` shows it
            events.post(memo, body, "Warning", "TelemetryRejected", message[:1000])


def _signal_on_change(
    trigger: str,
    seen: dict[str, tuple[Any, ...]],
    name: str,
    type_: str | None,
    meta: kopf.Meta,
    status_facts: Iterable[Any],
) -> None:
    """Replan when what the planner reads of a tank or pool changed (not on its own writes)."""
    planner = get_planner()
    planner.mark_ready()
    facts = (
        type_ == "DELETED",
        meta.get("generation"),
        meta.get("deletionTimestamp") is not None,
        *status_facts,
    )
    if seen.get(name) == facts:
        return
    seen[name] = facts
    if type_ == "DELETED":
        seen.pop(name, None)
    planner.signal(trigger, full=True)


@kopf.on.event(GROUP, "immersionpods")
def tank_changed(
    name: str,
    type: str | None,  # noqa: A002
    body: kopf.Body,
    meta: kopf.Meta,
    **_: Any,
) -> None:
    status = body.get("status") or {}
    facts = (status.get(k) for k in _TANK_STATUS_KEYS)
    _signal_on_change("tank", _seen_tanks, name, type, meta, facts)


@kopf.on.event(GROUP, "vehiclepools")
def pool_changed(
    name: str,
    type: str | None,  # noqa: A002
    body: kopf.Body,
    meta: kopf.Meta,
    **_: Any,
) -> None:
    status = body.get("status") or {}
    facts = (status.get("energyUsedTodayKWh"),)
    _signal_on_change("pool", _seen_pools, name, type, meta, facts)


@kopf.on.event(GROUP, "inferencejobs")
def job_changed(
    name: str,
    namespace: str | None,
    type: str | None,  # noqa: A002
    meta: kopf.Meta,
    **_: Any,
) -> None:
    planner = get_planner()
    planner.mark_ready()
    key = f"{namespace}/{name}"
    facts = (type == "DELETED", meta.get("generation"), meta.get("deletionTimestamp") is not None)
    if _seen_jobs.get(key) == facts:
        return
    _seen_jobs[key] = facts
    if type == "DELETED":
        _seen_jobs.pop(key, None)
    planner.signal("job", full=True)


@kopf.on.event("pods", labels={"app.kubernetes.io/name": "tokenfleet-runtime"})
def runtime_pod_changed(
    name: str,
    namespace: str | None,
    type: str | None,  # noqa: A002
    body: kopf.Body,
    **_: Any,
) -> None:
    """A runtime pod appeared, moved, became (un)ready or vanished: endpoints may change."""
    planner = get_planner()
    planner.mark_ready()
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    key = f"{namespace}/{name}"
    facts = (
        type == "DELETED",
        spec.get("nodeName"),
        status.get("podIP"),
        ready,
        (body.get("metadata") or {}).get("deletionTimestamp") is not None,
    )
    if _seen_pods.get(key) == facts:
        return
    first = key not in _seen_pods
    _seen_pods[key] = facts
    if type == "DELETED":
        _seen_pods.pop(key, None)
    # A node that just got its runtime can take work: replan. Otherwise only endpoints move,
    # and only in the slices of the jobs served on that node.
    if first or type == "DELETED":
        planner.signal("runtime", full=True)
    if spec.get("nodeName"):
        planner.kick_jobs(planner.jobs_serving_on(str(spec["nodeName"])))
