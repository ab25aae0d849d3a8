"""The job worker: carry out the planner's decision for one job on real Triton runtimes.

One worker per InferenceJob (driven by its kopf daemon in ``inferencejob.py``) runs a
level-based pass:

1. **observe** every recorded placement on its runtime (model state through tritonclient aio);
2. **drain** placements the plan removed from nodes that are unsafe *now* (node gone, leak,
   too hot, runtime failed): unload first;
3. **load** new placements: the record gets a ``Loading`` entry first (write-ahead, so a crash
   can neither forget nor duplicate it), then the load, then readiness, then ``Loaded``;
4. **make-before-break**: only when no replacement is still loading are the placements the plan
   removed (moves, sheds) taken out of the EndpointSlice, marked ``Unloading``, unloaded and
   dropped; a replacement that never gets ready releases them after a bounded wait;
5. **publish** the ready replicas in the job's EndpointSlice behind its selector-less Service,
   and the status (desired/ready replicas, placements, kstatus conditions) — each written only
   when it changed.

``status.placements`` is the decision record. On a restart the daemon starts from it, observes
every runtime and converges: a ``Loading`` entry whose model is READY becomes ``Loaded``, one
whose model is absent is loaded again, an ``Unloading`` one is finished, and a model of this job
found loaded on a runtime without a record entry is adopted when the plan wants it there and
unloaded otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from tokenfleet import metrics
from tokenfleet.clock import SYSTEM_CLOCK, Clock
from tokenfleet.controllers import jobstatus, replicas
from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.jobrouting import JobRouting
from tokenfleet.controllers.jobspec import raw_variant, tokens_per_second, triton_name
from tokenfleet.controllers.kube import KubeWriter
from tokenfleet.controllers.planner import (
    DRAIN_NOW,
    JobSlice,
    Planner,
    Removal,
)
from tokenfleet.controllers.poolstats import EvictionLedger
from tokenfleet.controllers.replicas import (
    FAILED,
    HOLDING,
    LOADING,
    RUNTIME_FAILED,
    UNLOADING,
    NodeKey,
    Observed,
    Replica,
    short,
)
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.snapshot import JobView, job_spec
from tokenfleet.delivery.gate import GateAction, delivery_gate, delivery_refused
from tokenfleet.serving.errors import (
    ModelLoadFailed,
    RuntimeUnavailable,
    ServingError,
    WaitTimeout,
)
from tokenfleet.serving.routing import service_name
from tokenfleet.serving.runtime import ModelState, RuntimePool, TritonRuntime

log = logging.getLogger(__name__)

#: consecutive failed observations of a Loaded replica before its runtime counts as failed
OBSERVE_FAILURES_TO_FAIL = 2


@dataclass
class JobWorker:
    """Applies one job's slice of the fleet plan (one per InferenceJob, driven by its daemon).

    It keeps the order of the I/O steps; what a replica's state becomes is
    :mod:`~tokenfleet.controllers.replicas`, what the status says is
    :mod:`~tokenfleet.controllers.jobstatus`.
    """

    planner: Planner
    config: OperatorConfig
    body: kopf.Body
    namespace: str
    name: str
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    runtimes: RuntimePool
    kube: KubeWriter
    evictions: EvictionLedger
    clock: Clock = SYSTEM_CLOCK
    measured: Callable[[str], float | None] = lambda _job: None
    """The throughput meter's tokens/s for a job key (``ThroughputMeter.measured``)."""
    record: list[Replica] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_status: dict[str, Any] | None = None
    routing: JobRouting = field(init=False)
    deleted: bool = False
    swept: bool = False

    def __post_init__(self) -> None:
        self.routing = JobRouting(self.kube, self.config, self.body, self.namespace, self.name)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def fleet(self) -> FleetView:
        return self.planner.fleet

    # ---- helpers --------------------------------------------------------------------------

    @property
    def _spec(self) -> dict[str, Any]:
        return dict(self.body.get("spec") or {})

    def _view(self) -> JobView:
        meta = self.body.get("metadata") or {}
        return JobView(
            namespace=self.namespace,
            name=self.name,
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            spec=self._spec,
        )

    def _triton_name(self, variant: str) -> str:
        return triton_name(self._spec, variant, default_model=self.name)

    def _event(self, type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(Exception):
            kopf.event(self.body, type=type_, reason=reason, message=short(message))

    def _shared_elsewhere(self, node: str, model: str) -> bool:
        """Another job's record holds the same Triton model on that node: do not unload it."""
        for view in self.fleet.jobs():
            if view.key == self.key:
                continue
            for p in view.placements:
                if p.get("node") != node or p.get("state") not in HOLDING:
                    continue
                variant = p.get("variant")
                if variant is None or raw_variant(view.spec, str(variant)) is None:
                    continue
                if triton_name(view.spec, str(variant), default_model=view.name) == model:
                    return True
        return False

    def _runtime(self, node: str) -> TritonRuntime | None:
        endpoint = self.fleet.runtime_endpoint(node)
        if endpoint is None:
            return None
        try:
            return self.runtimes.get(endpoint)
        except ServingError:
            return None

    def _drop_gone(self) -> bool:
        """Drop the replicas no longer on their runtime; ``True`` when any was."""
        before = len(self.record)
        self.record = [e for e in self.record if not e.gone]
        return len(self.record) != before

    # ---- the pass --------------------------------------------------------------------------

    def load_record(self) -> None:
        raw = (self.body.get("status") or {}).get("placements") or ()
        self.record = replicas.read_record(raw, self.clock)
        self.last_status = None

    async def reconcile(self) -> str:
        """One level-based pass. Returns the reconcile result label."""
        async with self.lock:
            if self.deleted:
                return "noop"
            try:
                job_spec(self._view())
            except Exception as exc:
                await self._write_status(None, invalid=str(exc).splitlines()[0])
                return "stalled"
            slice_ = self.planner.slice_for(self.key)
            if slice_ is not None and self.swept:
                # a placement the plan just made is recorded (Loading) at once, not after the
                # observation of every runtime the job is on (tens of them: most of the time
                # from an unplug to its replacement being listed)
                await self._write_ahead_early(slice_)
            await self._observe()
            if slice_ is None:
                await self._publish(None)
                return "ok"
            if not self.swept:
                await self._sweep(slice_)
                self.swept = True
            await self._drain_unsafe(slice_)
            await self._add(slice_)
            await self._publish(slice_)
            await self._remove_replaced(slice_)
            self.record = replicas.prune_failed(
                self.record,
                slice_.desired,
                backoff=self.config.runtime_failure_backoff_seconds,
                now=self.clock.monotonic(),
            )
            await self._publish(slice_)
            return "ok"

    async def _observe_one(self, entry: Replica) -> None:
        if entry.state not in replicas.ON_RUNTIME:
            return
        runtime = self._runtime(entry.node)
        if runtime is None:
            replicas.observed_without_runtime(entry)
            return
        try:
            status = await runtime.model_status(self._triton_name(entry.variant))
        except ServingError as exc:
            metrics.TRITON_REQUESTS.labels(operation="status", result="error").inc()
            outcome = replicas.observed_error(
                entry, str(exc), failures_to_fail=OBSERVE_FAILURES_TO_FAIL, clock=self.clock
            )
            self._after_observation(entry, outcome, str(exc))
            return
        metrics.TRITON_REQUESTS.labels(operation="status", result="ok").inc()
        outcome = replicas.observed(entry, status, clock=self.clock)
        why = status.reason if outcome is Observed.LOAD_FAILED else status.state.value
        self._after_observation(entry, outcome, why)

    def _after_observation(self, entry: Replica, outcome: Observed, why: str) -> None:
        if outcome is Observed.RUNTIME_FAILED:
            self.planner.report_runtime_failure(entry.node, why)
            self._event(
                "Warning",
                RUNTIME_FAILED,
                f"runtime of replica {entry.variant} on {entry.node} failed: {why}",
            )
        elif outcome is Observed.LOAD_FAILED:
            # the model's failure, not the runtime's: this job backs off this node only
            self.planner.report_load_failure(self.key, entry.node, why)
        elif outcome is Observed.LOST:
            self._event(
                "Warning",
                "ReplicaLost",
                f"replica {entry.variant} on {entry.node} was {why}; reloading",
            )

    async def _observe(self) -> None:
        await asyncio.gather(*(self._observe_one(e) for e in self.record))
        if self._drop_gone():
            await self._write_status(None)

    async def _sweep(self, slice_: JobSlice) -> None:
        """Once per daemon start: this job's models loaded on runtimes but not in the record are
        adopted (the plan wants them there) or unloaded (it does not)."""
        try:
            spec = job_spec(self._view())
        except Exception:
            return
        names = {spec.triton_model_name(v): v.name for v in spec.variants}
        recorded = {e.key for e in self.record}
        nodes = [n.name for n in self.fleet.nodes() if not n.deleting]

        async def one(node: str) -> None:
            runtime = self._runtime(node)
            if runtime is None:
                return
            try:
                index = await runtime.repository_index()
            except ServingError:
                return
            for row in index:
                variant = names.get(row.name)
                if variant is None or row.state is not ModelState.READY:
                    continue
                if (node, variant) not in recorded:
                    await self._adopt_or_unload(slice_, runtime, node, variant, row.name)

        await asyncio.gather(*(one(n) for n in nodes))
        self.record.sort(key=lambda e: e.key)

    async def _adopt_or_unload(
        self, slice_: JobSlice, runtime: TritonRuntime, node: str, variant: str, model: str
    ) -> None:
        want = slice_.desired.get((node, variant))
        if want is not None:
            self.record.append(
                replicas.adopted_replica(
                    node=node,
                    variant=variant,
                    target=want.target,
                    pool=want.pool,
                    tank=want.tank,
                    clock=self.clock,
                )
            )
            self.logger.info("adopted %s on %s", model, node)
        elif not self._shared_elsewhere(node, model):
            self.logger.info("unloading orphan %s on %s", model, node)
            with contextlib.suppress(ServingError):
                await runtime.unload(model)
                self._event(
                    "Normal",
                    "OrphanUnloaded",
                    f"unloaded {model} on {node}: loaded without a record entry",
                )

    def _holding(self) -> dict[NodeKey, Replica]:
        return {e.key: e for e in self.record if e.state in HOLDING}

    def _removal(self, slice_: JobSlice, entry: Replica) -> Removal:
        removal = slice_.removals.get(entry.key)
        if removal is not None:
            return removal
        if self.fleet.node(entry.node) is None:
            return Removal("NodeRemoved")
        if self.planner.runtime_failed(entry.node):
            return Removal(RUNTIME_FAILED)
        return Removal("ScaledDown")

    async def _write_ahead_early(self, slice_: JobSlice) -> None:
        """Record the plan's new placements before this pass observes the runtimes: only when
        nothing is to be drained first (unsafe now) and the plan wants a placement the record
        lacks (:meth:`_new_replicas` records them, written here; the load comes later in the
        pass). If the write fails the record is as it was, so the pass's own write-ahead
        happens."""
        holding = self._holding()
        if all(key in holding for key in slice_.desired):
            return
        if any(
            e.key not in slice_.desired and self._removal(slice_, e).reason in DRAIN_NOW
            for e in holding.values()
        ):
            return
        before = list(self.record)
        if not self._new_replicas(slice_):
            return
        try:
            await self._write_status(slice_)
        except BaseException:
            self.record = before
            raise

    async def _drain_unsafe(self, slice_: JobSlice) -> None:
        victims = [
            e
            for e in self._holding().values()
            if e.key not in slice_.desired and self._removal(slice_, e).reason in DRAIN_NOW
        ]
        if victims:
            await self._unload(victims, slice_, drain=True)

    def _new_replicas(self, slice_: JobSlice) -> list[Replica]:
        """Record a Loading replica for each placement the plan wants that the record lacks."""
        holding = self._holding()
        moved_from: dict[str, list[str]] = {}
        for key, removal in slice_.removals.items():
            if removal.moved_to:
                moved_from.setdefault(removal.moved_to, []).append(f"{key[0]} ({removal.reason})")
        new: list[Replica] = []
        for key, want in sorted(slice_.desired.items()):
            if key in holding:
                continue
            if self.planner.runtime_failed(want.node) or self.planner.load_failed(
                self.key, want.node
            ):
                # failed since this plan (e.g. by this very pass's observation): the replan it
                # triggered re-places the replica; a load here would wait out its timeout on a
                # hung runtime first
                continue
            # a Failed/Unloading entry for the same key is replaced by the new attempt
            self.record = [e for e in self.record if e.key != key]
            entry = replicas.new_replica(
                node=want.node,
                variant=want.variant,
                target=want.target,
                pool=want.pool,
                tank=want.tank,
                clock=self.clock,
                sources=moved_from.get(want.node),
            )
            self.record.append(entry)
            new.append(entry)
        self.record.sort(key=lambda e: e.key)
        return new

    async def _add(self, slice_: JobSlice) -> None:
        new = self._new_replicas(slice_)
        pending = [e for e in self.record if e.state is LOADING and e.needs_load]
        if not pending:
            return
        if new:
            await self._write_status(slice_)  # write-ahead: the record knows before Triton does
        await asyncio.gather(*(self._load(e) for e in pending))
        # routing first: a replica counts in status.readyReplicas only once it is in the slice
        await self._publish(slice_)

    async def _load(self, entry: Replica) -> None:
        runtime = self._runtime(entry.node)
        model = self._triton_name(entry.variant)
        if runtime is None:
            message = f"no runtime endpoint on node {entry.node}"
            entry.fail(replicas.NO_RUNTIME, message, clock=self.clock)
            self.planner.report_load_failure(self.key, entry.node, "no runtime endpoint")
            return
        if not self._delivered(entry, model):  # the node's model cache verifies first
            return
        start = self.clock.monotonic()
        try:
            await runtime.load(model)
            await runtime.wait_loaded(model, timeout=self.config.load_timeout_seconds)
        except (ModelLoadFailed, WaitTimeout, RuntimeUnavailable, ServingError) as exc:
            metrics.TRITON_REQUESTS.labels(operation="load", result="error").inc()
            entry.fail(replicas.LOAD_FAILED, str(exc), clock=self.clock)
            # fails this replica and this job only; the runtime is failed by its own health
            # (the prober and _observe), never by a model that does not load
            self.planner.report_load_failure(self.key, entry.node, short(str(exc)))
            self._event(
                "Warning",
                replicas.LOAD_FAILED,
                f"loading {model} on {entry.node} failed: {short(str(exc))}",
            )
            return
        metrics.TRITON_REQUESTS.labels(operation="load", result="ok").inc()
        self.planner.load_succeeded(self.key, entry.node)
        replicas.loaded(entry, clock=self.clock)
        self.logger.info(
            "loaded %s on %s in %.2fs (%s)",
            model,
            entry.node,
            self.clock.monotonic() - start,
            entry.reason,
        )
        if entry.reason == replicas.REPLACEMENT:
            self._event(
                "Normal", "ReplicaLoaded", f"{model} ready on {entry.node}: {entry.message}"
            )
        else:  # a Normal Event per placement (a replacement has its own above)
            where = entry.tank or entry.pool or entry.target
            self._event("Normal", "ReplicaPlaced", f"{model} ready on {entry.node} ({where})")

    def _delivered(self, entry: Replica, model: str) -> bool:
        """On a node with a model cache, load only what the cache verified: wait (reason
        Fetching/Verifying/WaitingForFetch), or fail a refused model (Warning Event)."""
        info = self.fleet.node(entry.node)
        decision = delivery_gate(
            info.model_cache if info else None, model, self._spec, entry.variant
        )
        if decision.action is GateAction.LOAD:
            entry.reason, entry.message = entry.placed or (entry.reason, entry.message)
            return True
        entry.placed = entry.placed or (entry.reason, entry.message)
        if decision.action is GateAction.WAIT:
            entry.reason, entry.message, entry.needs_load = decision.reason, decision.message, True
            return False
        entry.fail(str(decision.reason), str(decision.message), clock=self.clock)
        self.planner.report_load_failure(self.key, entry.node, str(decision.message))
        delivery_refused(str(decision.reason))
        self._event("Warning", str(decision.reason), f"{model} on {entry.node}: {decision.message}")
        return False

    async def _remove_replaced(self, slice_: JobSlice) -> None:
        """Make-before-break: remove placements the plan dropped once replacements settled."""
        stuck = [e for e in self.record if e.state is UNLOADING and e.needs_unload]
        if stuck:
            await self._unload(stuck, slice_, drain=True)
        victims = [e for e in self._holding().values() if e.key not in slice_.desired]
        if not victims:
            return
        due = replicas.due_for_removal(
            victims,
            replacement_loading=any(e.state is LOADING for e in self.record),
            timeout=self.config.replacement_timeout_seconds,
            now=self.clock.monotonic(),
        )
        if due:
            await self._unload(due, slice_, drain=False)

    def _begin_unload(
        self, victims: Sequence[Replica], slice_: JobSlice
    ) -> tuple[dict[NodeKey, Removal], bool]:
        """Mark the victims Unloading (those resumed from the record keep their reason); returns
        the removal of each and whether any leaves the ready set now (its clients get the drain
        time)."""
        removals: dict[NodeKey, Removal] = {}
        draining = False
        for e in victims:
            if e.state is UNLOADING:  # resumed from the record: keep its recorded reason
                removals[e.key] = Removal(e.reason or "ScaledDown")
                e.needs_unload = False
                continue
            removal = removals[e.key] = self._removal(slice_, e)
            draining = draining or removal.reason != RUNTIME_FAILED
            replicas.unloading(e, removal.reason, removal.moved_to, clock=self.clock)
        return removals, draining

    async def _unload(self, victims: list[Replica], slice_: JobSlice, *, drain: bool) -> None:
        removals, draining = self._begin_unload(victims, slice_)
        # out of the ready set (draining in the EndpointSlice) and recorded as Unloading before
        # the runtime hears of it; new requests go elsewhere, those in flight finish (Triton's
        # unload waits for them), then the replica unloads
        await self._publish(slice_)
        if draining and self.config.drain_seconds > 0:
            await asyncio.sleep(self.config.drain_seconds)
        await asyncio.gather(*(self._unload_one(e, removals[e.key], drain) for e in victims))
        self._drop_gone()
        await self._publish(slice_)

    async def _unload_one(self, e: Replica, removal: Removal, drain: bool) -> None:
        model = self._triton_name(e.variant)
        runtime = self._runtime(e.node)
        if runtime is not None and not self._shared_elsewhere(e.node, model):
            try:
                await runtime.unload(model)
                await runtime.wait_unloaded(model, timeout=self.config.unload_timeout_seconds)
                metrics.TRITON_REQUESTS.labels(operation="unload", result="ok").inc()
            except ServingError as exc:
                metrics.TRITON_REQUESTS.labels(operation="unload", result="error").inc()
                if not drain and self.fleet.node(e.node) is not None:
                    self.logger.warning("unloading %s on %s failed: %s", model, e.node, exc)
                    return  # stays Unloading; retried on the next pass
        e.gone = True
        verb = "moved" if removal.moved_to else "removed"
        where = f" to {removal.moved_to}" if removal.moved_to else ""
        metrics.MOVES.labels(reason=removal.reason).inc()
        if e.pool:  # the pool's status.evictions (VehiclePool timer)
            self.evictions.record(e.pool, removal.reason)
        self._event(
            "Normal" if removal.reason not in DRAIN_NOW else "Warning",
            removal.reason,
            f"replica {e.variant} on {e.node} {verb}{where}: {removal.reason}"
            + (" (drained)" if drain else ""),
        )
        self.logger.info(
            "replica %s on %s %s%s: %s", e.variant, e.node, verb, where, removal.reason
        )

    # ---- publishing -------------------------------------------------------------------------

    async def _publish(self, slice_: JobSlice | None) -> None:
        try:
            await self.routing.publish(self.record, self.fleet, self.logger)
        except Exception as exc:  # routing is retried on the next pass; status still goes out
            self.routing.forget_live()
            self.logger.warning("publishing the Service/EndpointSlice failed: %s", exc)
        await self._write_status(slice_)

    def _status(self, slice_: JobSlice | None, invalid: str | None = None) -> dict[str, Any]:
        meta = self.body.get("metadata") or {}
        spec = self._spec
        failure = self.planner.load_failure(self.key)
        return jobstatus.job_status(
            generation=int(meta.get("generation") or 0),
            previous=self.last_status or dict(self.body.get("status") or {}),
            record=self.record,
            decision=slice_,
            invalid=invalid,
            min_replicas=int((spec.get("replicas") or {}).get("min", 1)),
            tokens_per_second=lambda variant: tokens_per_second(spec, variant),
            service_name=service_name(self.name),
            load_failure=None if failure is None else (failure[0], failure[1].message),
            measured_tokens_per_second=self.measured(self.key),
            now=self.clock.now(),
        )

    async def _write_status(self, slice_: JobSlice | None, invalid: str | None = None) -> None:
        if self.deleted:
            return
        status = self._status(slice_, invalid)
        current = self.last_status
        if current is None:
            current = dict(self.body.get("status") or {})
        if jobstatus.same_status(current, status):
            self.last_status = status
            return
        await self.kube.patch_job_status(self.namespace, self.name, jobstatus.merge_patch(status))
        self.last_status = status
        metrics.record_job_status(self.namespace, self.name, status)

    async def unload_all(self) -> None:
        """The job is being deleted: unload every replica it recorded (best effort)."""
        async with self.lock:
            self.deleted = True

            async def one(e: Replica) -> None:
                runtime = self._runtime(e.node)
                model = self._triton_name(e.variant)
                if runtime is None or self._shared_elsewhere(e.node, model):
                    return
                with contextlib.suppress(ServingError):
                    await runtime.unload(model)
                    await runtime.wait_unloaded(model, timeout=self.config.unload_timeout_seconds)

            await asyncio.gather(*(one(e) for e in self.record if e.state is not FAILED))
            self.record = []
