"""The fleet planner: ONE placement decision for the whole fleet, recomputed on change.

Placement is fleet-wide (jobs compete for the same nodes and tank budgets), so a single
background task owns it:

* the node watch and kopf indexes hold the picture, read through the :class:`FleetView`
  (``fleet.py``), so a plan costs no API call; the first plan waits for both (``wait_ready``);
* watch events that matter (``watches.py``: a node's parsed facts changed, a tank's or pool's
  spec/status changed, a job's spec changed or it was deleted) *signal* the planner; it plans at
  once after a quiet spell and gathers what comes while it plans or within
  ``plan_debounce_seconds`` after, and a full plan at most every
  ``plan_full_min_interval_seconds`` (``plancadence.py``); it also replans every
  ``plan_resync_seconds`` (staleness is a matter of time, not of events);
* which Nodes changed is read off the snapshots: up to ``plan_incremental_max_nodes`` changed
  Nodes with an unchanged rest replan incrementally (one ``replan_node`` step each; none:
  ``replan_due``), and so does the resync unless a job is short or a full plan is due
  (``plan_full_resync_seconds``); anything else runs the full heuristic ``plan``;
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tokenfleet import metrics
from tokenfleet.clock import SYSTEM_CLOCK, Clock
from tokenfleet.controllers.failures import FailureLedger, LoadBackoff
from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.kube import KubeWriter
from tokenfleet.controllers.plancadence import Cadence, Mode, changed_nodes, choose
from tokenfleet.controllers.replicas import RUNTIME_FAILED, NodeKey
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.snapshot import (
    JobView,
    NodeSite,
    RecordCache,
    SnapshotParts,
    build_snapshot,
)
from tokenfleet.controllers.unknown import TimeVerdict, UnknownTelemetry
from tokenfleet.delivery.placement import delivery_terms
from tokenfleet.delivery.prefetch import prefetch_targets
from tokenfleet.metrics import TELEMETRY_REJECTED
from tokenfleet.placement import (
    Job,
    JobShortfall,
    Placement,
    Plan,
    Reason,
    Snapshot,
    plan,
    replan_due,
    replan_node,
)
from tokenfleet.telemetry.node import NodeInfo
from tokenfleet.telemetry.vehicle import OBSERVED_AT

log = logging.getLogger(__name__)

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

    def __init__(
        self,
        config: OperatorConfig,
        fleet: FleetView,
        *,
        kube: KubeWriter | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.kube = kube
        self.clock = clock
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._kopf_ready = False
        self._nodes_synced = asyncio.Event()
        self._signals = _Signals()
        self._plan: Plan | None = None
        self._snapshot: Snapshot | None = None
        """The snapshot ``_plan`` was computed from (which Nodes changed since is read off it)."""
        self._cadence = Cadence(
            debounce=config.plan_debounce_seconds,
            full_min_interval=config.plan_full_min_interval_seconds,
            full_resync=config.plan_full_resync_seconds,
        )
        self._sites: dict[str, NodeSite] = {}
        self._records = RecordCache()
        """Each Node's engine record, rebuilt only when its parsed record changed."""
        self._slices: dict[str, JobSlice] = {}
        self._prefetch: dict[str, tuple[tuple[str, str], ...]] = {}
        """Per job key, the status.prefetch this process last wrote (model delivery)."""
        self._job_events: dict[str, asyncio.Event] = {}
        self._daemons: dict[str, int] = {}  # job -> its daemons running here (0 or 1, briefly 2)
        self.failures = FailureLedger(config.runtime_failure_backoff_seconds, clock)
        self._generations: dict[str, int] = {}
        self._plan_id = 0
        self._task: asyncio.Task[None] | None = None
        self.last_plan_monotonic: float | None = None
        self.last_error: str | None = None
        self._unknown = UnknownTelemetry()
        self._tank_readings: dict[str, float] = {}

    # ---- wiring ---------------------------------------------------------------------------

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
        self._kopf_ready = True
        self._ready_if_known()

    def mark_nodes_synced(self) -> None:
        """Called by the node watch once its first list is applied (the Nodes are known)."""
        self._nodes_synced.set()
        self._ready_if_known()

    async def wait_nodes_synced(self) -> None:
        """Until the node watch listed the Nodes: before that an absent Node is "not known yet",
        not "gone" (kopf's own indexes are filled before any handler runs; the node watch's
        list is not, so the job daemons wait for it here)."""
        await self._nodes_synced.wait()

    def _ready_if_known(self) -> None:
        if self._kopf_ready and self._nodes_synced.is_set() and not self._ready.is_set():
            self._ready.set()
            self.signal("startup", full=True)

    async def wait_ready(self) -> None:
        """Until a resource handler ran (kopf runs none while peering pauses the operator) and
        the node watch listed the Nodes: the first plan runs on a complete picture."""
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
        """A runtime failed (unreachable, lost its models): no new work there for
        ``runtime_failure_backoff_seconds`` and its placements are re-placed."""
        if self.failures.runtime_failure(node):
            log.warning("runtime on node %s failed (%s): re-placing its replicas", node, why)
        self.signal("runtime-failed", full=True)

    def runtime_failed(self, node: str) -> bool:
        return self.failures.runtime_failed(node)

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
        """The job's model failed to load on ``node``: that replica and that job only (see
        :mod:`~tokenfleet.controllers.failures`); the runtime and other jobs are untouched."""
        backoff = self.failures.load_failure(job, node, why)
        log.warning(
            "job %s: model failed to load on %s (%s): retry there in %.0f s",
            job,
            node,
            why,
            backoff.until - self.clock.monotonic(),
        )
        self.signal("load-failed", full=True)

    def load_succeeded(self, job: str, node: str) -> None:
        self.failures.load_succeeded(job, node)

    def load_failed(self, job: str, node: str) -> bool:
        return self.failures.load_failed(job, node)

    def load_failure(self, job: str) -> tuple[str, LoadBackoff] | None:
        return self.failures.latest_load_failure(job)

    # ---- planning -----------------------------------------------------------------------------

    def _next_wake(self) -> tuple[float, str]:
        """Seconds until the next unprompted plan and why: the plan's ``next_deadline`` (a time
        threshold of a placed replica's node; re-checked incrementally) or the resync."""
        resync = self.config.plan_resync_seconds
        deadline = self._plan.next_deadline if self._plan is not None else None
        if deadline is not None and deadline - self.clock.time() < resync:
            return max(deadline - self.clock.time(), 0.0), "deadline"
        return resync, "resync"

    def _needs_full(self) -> bool:
        """What was signalled so far can only be planned in full."""
        signals = self._signals
        return signals.full or len(signals.nodes) > self.config.plan_incremental_max_nodes

    async def _gather(self) -> None:
        """Wait as :class:`~tokenfleet.controllers.plancadence.Cadence` says (what is signalled
        meanwhile joins this plan): once, and once more if a change that needs a full plan came
        in while waiting."""
        needs_full = self._needs_full()
        delay = self._cadence.delay(self.clock.monotonic(), needs_full=needs_full)
        if delay > 0:
            await asyncio.sleep(delay)
        if not needs_full and self._needs_full():
            delay = self._cadence.delay(self.clock.monotonic(), needs_full=True)
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.sleep(0)  # changes already handed to the loop (a batch of events) join

    async def _run(self) -> None:
        await self._ready.wait()
        while True:
            timeout, trigger = self._next_wake()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                self.signal(trigger)
            await self._gather()
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
        failed = self.failures.failed_runtimes()
        for info in nodes:
            if info.name in failed:
                unusable[info.name] = RUNTIME_FAILED
            elif self.fleet.runtime_endpoint_of(info.name, info) is None:
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

    def _with_job_terms(
        self, snapshot: Snapshot, now: float, nodes: Sequence[NodeInfo], jobs: Sequence[JobView]
    ) -> Snapshot:
        """The snapshot's jobs with what this process knows beyond the objects: the nodes where
        their loads failed (avoided), and the cars that may not download their model now and
        the nodes whose model cache holds it (model delivery)."""
        avoid = self.failures.avoid_nodes({j.key: j.generation for j in jobs}, self._generations)
        terms = delivery_terms(now, nodes, self.fleet.pools(), jobs)
        if not avoid and not terms:
            return snapshot

        def one(job: Job) -> Job:
            if job.name in avoid:
                job = dataclasses.replace(job, avoid_nodes=avoid[job.name])
            term = terms.get(job.name)
            if term is not None:
                job = dataclasses.replace(job, fetch_blocked=term.fetch_blocked, warm=term.warm)
            return job

        return dataclasses.replace(snapshot, jobs=tuple(one(j) for j in snapshot.jobs))

    async def replan(self, signals: _Signals) -> None:
        start = self.clock.monotonic()
        now = self.clock.time()
        nodes = self.fleet.nodes()
        jobs = self.fleet.jobs()
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
            tanks=self.fleet.tanks(),
            pools=self.fleet.pools(),
            jobs=jobs,
            current=current if self._plan is not None else None,
            unusable_nodes=unusable,
            tank_readings=self._tank_readings,
            cache=self._records,
        )
        parts.snapshot, verdicts = self._unknown.observe(parts.snapshot)
        await _report_time_verdicts(verdicts, self.kube)
        parts.snapshot = self._with_job_terms(parts.snapshot, now, nodes, jobs)
        previous = self._plan
        snapshot = parts.snapshot
        choice = choose(
            has_previous=previous is not None,
            full_signalled=signals.full,
            same_placements=previous is not None
            and not forced
            and tuple(sorted(map(_pkey, snapshot.placements)))
            == tuple(sorted(map(_pkey, previous.assignments))),
            changed=changed_nodes(self._snapshot, snapshot),
            max_nodes=self.config.plan_incremental_max_nodes,
            holding=frozenset(a.node for a in previous.assignments)
            if previous is not None
            else frozenset(),
            deadline_passed=previous is not None
            and previous.next_deadline is not None
            and previous.next_deadline <= now,
            # a job short of its target: the resync looks for room in full (an incremental
            # step re-places only what it evicted)
            full_due=self._cadence.full_due(self.clock.monotonic())
            or (
                "resync" in signals.triggers
                and previous is not None
                and bool(previous.job_shortfalls)
            ),
        )
        if previous is not None and choice.mode is Mode.NODES:
            result, stepped = await asyncio.to_thread(
                _replan_nodes, snapshot, previous, choice.nodes
            )
        elif previous is not None and choice.mode is Mode.DUE:
            # time alone crossed a threshold (drain lead, charge by departure, stale reading)
            result = await asyncio.to_thread(replan_due, snapshot, previous)
            stepped = result.solver == INCREMENTAL_SOLVER
        else:
            result = await asyncio.to_thread(plan, snapshot)
            stepped = False
        # the engine falls back to a full plan when its cache cannot serve a step
        mode = "incremental" if stepped else "full"
        self._cadence.planned(
            self.clock.monotonic(), full=mode == "full", took=self.clock.monotonic() - start
        )
        self._plan = result
        self._snapshot = snapshot
        self._sites = parts.sites
        self._plan_id += 1
        elapsed = self.clock.monotonic() - start
        metrics.PLAN_DURATION.labels(mode=mode).observe(elapsed)
        for trigger in signals.triggers or {"unknown"}:
            metrics.PLANS.labels(trigger=trigger).inc()
        self.last_plan_monotonic = self.clock.monotonic()
        generations = {j.key: j.generation for j in jobs}
        self._publish(parts, result, forced, {j.key for j in jobs if not j.deleting})
        await self._write_prefetch(now, nodes, jobs, result)
        # a spec change the decision does not depend on still wakes the job (observedGeneration)
        for key, generation in generations.items():
            if self._generations.get(key, generation) != generation:
                self.kick_jobs([key])
        self._generations = generations
        log.debug(
            "plan %d (%s, %s, %d nodes, %.3fs, triggers=%s): %d assignments, %d added, %d evicted",
            self._plan_id,
            mode,
            choice.why or choice.mode.value,
            len(choice.nodes),
            elapsed,
            sorted(signals.triggers),
            len(result.assignments),
            len(result.added),
            len(result.evictions),
        )

    async def _write_prefetch(
        self, now: float, nodes: Sequence[NodeInfo], jobs: Sequence[JobView], result: Plan
    ) -> None:
        """Ask cars likely to be chosen to fetch a store-delivered job's model ahead of a move
        (:func:`tokenfleet.delivery.prefetch.prefetch_targets`, written to the job's
        ``status.prefetch`` when it changed; the nodes this plan just placed it on are left
        out)."""
        if self.kube is None:
            return
        placed: dict[str, list[dict[str, str]]] = {}
        for a in result.assignments:
            placed.setdefault(a.job, []).append({"node": a.node, "state": "Loading"})
        views = [
            dataclasses.replace(j, placements=(*j.placements, *placed.get(j.key, ())))
            for j in jobs
            if not j.deleting
            and str((j.spec.get("model") or {}).get("repositoryUri") or "").startswith("s3://")
        ]
        targets = prefetch_targets(now, nodes, self.fleet.pools(), views)
        log.debug("prefetch: %d store-delivered jobs, asks %s", len(views), targets)
        for job in views:
            want = targets.get(job.key, ())
            if self._prefetch.get(job.key) == want:
                continue
            records = [{"node": n, "variant": v} for n, v in want] or None
            try:
                await self.kube.patch_job_status(job.namespace, job.name, {"prefetch": records})
            except Exception as exc:  # best effort: the next plan tries again
                log.debug("writing status.prefetch of %s failed: %s", job.key, exc)
                continue
            self._prefetch[job.key] = want
            log.info("job %s: asked %d cars to prefetch %s", job.key, len(want), want)
        for key in set(self._prefetch) - {j.key for j in views}:
            del self._prefetch[key]

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


async def _report_time_verdicts(verdicts: Iterable[TimeVerdict], kube: KubeWriter | None) -> None:
    """A Warning Event on the Node and ``tokenfleet_telemetry_rejected_total`` for each car whose
    reading just became unknown by its time (too old, or stamped too far in the future)."""
    for verdict in verdicts:
        TELEMETRY_REJECTED.labels("vehicle", OBSERVED_AT, verdict.kind.value).inc()
        message = f"telemetry treated as unknown: {verdict.message}"
        log.warning("node %s: %s", verdict.node, message)
        if kube is None:
            continue
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


INCREMENTAL_SOLVER = "heuristic-incremental"
"""``Plan.solver`` of an incremental step (anything else: the engine planned in full)."""


def _replan_nodes(snapshot: Snapshot, previous: Plan, names: Sequence[str]) -> tuple[Plan, bool]:
    """One ``replan_node`` step per changed Node, each over the new snapshot (a step re-checks
    only its Node, so after the last one every changed Node is re-checked); and whether every
    step was incremental (else the engine planned in full on the way)."""
    result = previous
    incremental = True
    for name in names:
        result = replan_node(snapshot, result, name)
        incremental = incremental and result.solver == INCREMENTAL_SOLVER
    return result, incremental


def _pkey(p: Placement) -> tuple[str, str, str, int]:
    return (p.job, p.node, p.variant, p.replicas)


def raise_if_ended(task: asyncio.Task[Any] | None, what: str) -> None:
    """For a liveness probe: fail when a background task that should run forever has ended."""
    if task is not None and task.done():
        raise RuntimeError(f"{what} task ended: {task.exception() if not task.cancelled() else ''}")
