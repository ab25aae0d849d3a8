"""InferenceJob controller: carry out the planner's decision for one job on real Triton runtimes.

One kopf daemon per job runs a level-based loop. Each pass:

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
import ipaddress
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from tokenfleet import GROUP, metrics
from tokenfleet.api.conditions import rfc3339, set_kstatus
from tokenfleet.controllers import kube
from tokenfleet.controllers.planner import (
    DRAIN_NOW,
    RUNTIME_FAILED,
    DesiredPlacement,
    JobSlice,
    NodeKey,
    Planner,
    Removal,
    get_planner,
)
from tokenfleet.controllers.poolstats import EVICTIONS
from tokenfleet.controllers.settings import OperatorConfig, get_config
from tokenfleet.controllers.snapshot import ACTIVE_STATES, JobView, job_spec
from tokenfleet.delivery.gate import GateAction, delivery_gate, delivery_refused  # [delivery]
from tokenfleet.serving.errors import (
    ModelLoadFailed,
    RoutingError,
    RuntimeUnavailable,
    ServingError,
    WaitTimeout,
)
from tokenfleet.serving.routing import (
    ReadyReplica,
    build_endpoint_slice,
    build_service,
    needs_update,
    service_name,
)
from tokenfleet.serving.runtime import ModelState, RuntimePool

log = logging.getLogger(__name__)

KIND = "InferenceJob"
#: consecutive failed observations of a Loaded replica before its runtime counts as failed
OBSERVE_FAILURES_TO_FAIL = 2

_POOL: RuntimePool | None = None


def runtime_pool(config: OperatorConfig | None = None) -> RuntimePool:
    """The operator-wide Triton client pool (bounded concurrency towards the runtimes)."""
    global _POOL
    if _POOL is None:
        config = config or get_config()
        _POOL = RuntimePool(
            timeout=config.triton_request_timeout_seconds,
            load_timeout=config.load_timeout_seconds,
            max_concurrency=config.triton_concurrency,
            per_endpoint_concurrency=4,
            metrics_offset=config.runtime_metrics_port - config.runtime_http_port,
        )
    return _POOL


def _now() -> str:
    return rfc3339(datetime.now(UTC))


def _short(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Entry:
    """One record entry (``status.placements[]``), kept in memory by the job's worker."""

    node: str
    variant: str
    target: str
    state: str
    since: str
    pool: str | None = None
    tank: str | None = None
    reason: str | None = None
    message: str | None = None
    # not persisted:
    failed_at: float | None = None
    removal_wanted_at: float | None = None
    observe_failures: int = 0
    needs_load: bool = False
    needs_unload: bool = False
    placed: tuple[str | None, str | None] | None = None  # [model delivery hook] reason, message

    @property
    def key(self) -> NodeKey:
        return (self.node, self.variant)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "target": self.target}
        if self.pool:
            out["pool"] = self.pool
        if self.tank:
            out["tank"] = self.tank
        out.update(variant=self.variant, state=self.state, since=self.since)
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = _short(self.message, 1024)
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Entry | None:
        node, variant, state = raw.get("node"), raw.get("variant"), raw.get("state")
        if not node or not variant or state not in ("Loading", "Loaded", "Unloading", "Failed"):
            return None
        return cls(
            node=str(node),
            variant=str(variant),
            target=str(raw.get("target") or "Rack"),
            state=str(state),
            since=str(raw.get("since") or _now()),
            pool=raw.get("pool"),
            tank=raw.get("tank"),
            reason=raw.get("reason"),
            message=raw.get("message"),
            failed_at=time.monotonic() if state == "Failed" else None,
        )

    def set_state(self, state: str, reason: str | None, message: str | None = None) -> None:
        if state != self.state:
            self.since = _now()
        self.state = state
        self.reason = reason
        self.message = message


@dataclass
class JobWorker:
    """Applies one job's slice of the fleet plan (one per InferenceJob, driven by its daemon)."""

    planner: Planner
    config: OperatorConfig
    body: kopf.Body
    namespace: str
    name: str
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    record: list[Entry] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_status: dict[str, Any] | None = None
    live_service: dict[str, Any] | None = None
    live_slice: dict[str, Any] | None = None
    routing_loaded: bool = False
    deleted: bool = False
    swept: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    # ---- helpers --------------------------------------------------------------------------

    def _view(self) -> JobView:
        meta = self.body.get("metadata") or {}
        return JobView(
            namespace=self.namespace,
            name=self.name,
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            spec=dict(self.body.get("spec") or {}),
        )

    def _triton_name(self, variant: str) -> str:
        try:
            spec = job_spec(self._view())
        except Exception:
            spec = None
        if spec is not None:
            v = spec.variant(variant)
            if v is not None:
                return spec.triton_model_name(v)
            return f"{spec.model.name}-{variant}"
        model = (self.body.get("spec") or {}).get("model") or {}
        return f"{model.get('name', self.name)}-{variant}"

    def _tokens_per_second(self, variant: str) -> float:
        for v in (self.body.get("spec") or {}).get("variants") or ():
            if v.get("name") == variant:
                try:
                    return float(v.get("tokensPerSecond") or 0.0)
                except (TypeError, ValueError):
                    return 0.0
        return 0.0

    def _event(self, type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(Exception):
            kopf.event(self.body, type=type_, reason=reason, message=_short(message))

    def _shared_elsewhere(self, node: str, model: str) -> bool:
        """Another job's record holds the same Triton model on that node: do not unload it."""
        for view in self.planner.jobs():
            if view.key == self.key:
                continue
            for p in view.placements:
                if p.get("node") == node and p.get("state") in ("Loading", "Loaded"):
                    spec_model = (view.spec.get("model") or {}).get("name")
                    names = {
                        v.get("tritonModelName") or f"{spec_model}-{v.get('name')}"
                        for v in view.spec.get("variants") or ()
                        if v.get("name") == p.get("variant")
                    }
                    if model in names:
                        return True
        return False

    def _runtime(self, node: str) -> Any | None:
        endpoint = self.planner.runtime_endpoint(node)
        if endpoint is None:
            return None
        try:
            return runtime_pool(self.config).get(endpoint)
        except ServingError:
            return None

    # ---- the pass --------------------------------------------------------------------------

    def load_record(self) -> None:
        raw = (self.body.get("status") or {}).get("placements") or ()
        entries = [e for e in (Entry.from_wire(r) for r in raw) if e is not None]
        # A duplicated (node, variant) in the record collapses to one entry (most alive wins).
        rank = {"Loaded": 0, "Loading": 1, "Unloading": 2, "Failed": 3}
        unique: dict[NodeKey, Entry] = {}
        for e in sorted(entries, key=lambda e: rank[e.state]):
            unique.setdefault(e.key, e)
        self.record = sorted(unique.values(), key=lambda e: e.key)
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
            self._prune_failed(slice_)
            await self._publish(slice_)
            return "ok"

    async def _observe(self) -> None:
        async def one(entry: Entry) -> None:
            if entry.state not in ("Loading", "Loaded", "Unloading"):
                return
            runtime = self._runtime(entry.node)
            if runtime is None:
                if entry.state == "Unloading":
                    entry.state = "Gone"  # no runtime left to unload from
                return
            model = self._triton_name(entry.variant)
            try:
                status = await runtime.model_status(model)
                metrics.TRITON_REQUESTS.labels(operation="status", result="ok").inc()
            except ServingError as exc:
                metrics.TRITON_REQUESTS.labels(operation="status", result="error").inc()
                entry.observe_failures += 1
                if entry.state == "Loaded" and entry.observe_failures >= OBSERVE_FAILURES_TO_FAIL:
                    entry.set_state("Failed", RUNTIME_FAILED, str(exc))
                    entry.failed_at = time.monotonic()
                    self.planner.report_runtime_failure(entry.node, str(exc))
                    self._event(
                        "Warning",
                        RUNTIME_FAILED,
                        f"runtime of replica {entry.variant} on {entry.node} failed: {exc}",
                    )
                return
            entry.observe_failures = 0
            state = status.state
            if entry.state == "Loading":
                if state is ModelState.READY:
                    entry.set_state("Loaded", entry.reason or "Loaded", entry.message)
                    entry.needs_load = False
                elif state is ModelState.LOADING:
                    entry.needs_load = False
                elif state is ModelState.UNAVAILABLE and status.reason not in ("", "unloaded"):
                    entry.set_state("Failed", "LoadFailed", status.reason)
                    entry.failed_at = time.monotonic()
                    # the model's failure, not the runtime's: this job backs off this node only
                    self.planner.report_load_failure(self.key, entry.node, status.reason)
                else:
                    entry.needs_load = True  # e.g. after a restart mid-load
            elif entry.state == "Loaded":
                if state in (ModelState.READY, ModelState.LOADING):
                    return
                # the runtime lost the model (restarted, or someone unloaded it): load again
                entry.set_state("Loading", "Reloading", f"model was {state.value} on the runtime")
                entry.needs_load = True
                self._event(
                    "Warning",
                    "ReplicaLost",
                    f"replica {entry.variant} on {entry.node} was {state.value}; reloading",
                )
            elif entry.state == "Unloading":
                if state in (ModelState.READY, ModelState.LOADING):
                    entry.needs_unload = True  # e.g. killed before the unload call: again
                elif state is ModelState.UNLOADING:
                    entry.needs_unload = False
                else:
                    entry.state = "Gone"

        await asyncio.gather(*(one(e) for e in self.record))
        before = len(self.record)
        self.record = [e for e in self.record if e.state != "Gone"]
        if len(self.record) != before:
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
        nodes = [n.name for n in self.planner.nodes() if not n.deleting]

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
                key = (node, variant)
                if key in recorded:
                    continue
                want = slice_.desired.get(key)
                if want is not None:
                    entry = Entry(
                        node=node,
                        variant=variant,
                        target=want.target,
                        pool=want.pool,
                        tank=want.tank,
                        state="Loaded",
                        since=_now(),
                        reason="Adopted",
                        message="found loaded on the runtime without a record entry",
                    )
                    self.record.append(entry)
                    self.logger.info("adopted %s on %s", row.name, node)
                elif not self._shared_elsewhere(node, row.name):
                    self.logger.info("unloading orphan %s on %s", row.name, node)
                    with contextlib.suppress(ServingError):
                        await runtime.unload(row.name)
                        self._event(
                            "Normal",
                            "OrphanUnloaded",
                            f"unloaded {row.name} on {node}: loaded without a record entry",
                        )

        await asyncio.gather(*(one(n) for n in nodes))
        self.record.sort(key=lambda e: e.key)

    def _active(self) -> dict[NodeKey, Entry]:
        return {e.key: e for e in self.record if e.state in ACTIVE_STATES}

    def _removal(self, slice_: JobSlice, entry: Entry) -> Removal:
        removal = slice_.removals.get(entry.key)
        if removal is not None:
            return removal
        if self.planner.node(entry.node) is None:
            return Removal("NodeRemoved")
        if self.planner.runtime_failed(entry.node):
            return Removal(RUNTIME_FAILED)
        return Removal("ScaledDown")

    async def _drain_unsafe(self, slice_: JobSlice) -> None:
        victims = [
            e
            for e in self._active().values()
            if e.key not in slice_.desired and self._removal(slice_, e).reason in DRAIN_NOW
        ]
        if victims:
            await self._unload(victims, slice_, drain=True)

    async def _add(self, slice_: JobSlice) -> None:
        active = self._active()
        new: list[Entry] = []
        moved_from: dict[str, list[str]] = {}
        for key, removal in slice_.removals.items():
            if removal.moved_to:
                moved_from.setdefault(removal.moved_to, []).append(f"{key[0]} ({removal.reason})")
        for key, want in sorted(slice_.desired.items()):
            if key in active:
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
            sources = moved_from.get(want.node)
            entry = Entry(
                node=want.node,
                variant=want.variant,
                target=want.target,
                pool=want.pool,
                tank=want.tank,
                state="Loading",
                since=_now(),
                reason="Replacement" if sources else "Placed",
                message=("replaces " + ", ".join(sources)) if sources else None,
                needs_load=True,
            )
            self.record.append(entry)
            new.append(entry)
        self.record.sort(key=lambda e: e.key)
        pending = [e for e in self.record if e.state == "Loading" and e.needs_load]
        if not pending:
            return
        if new:
            await self._write_status(slice_)  # write-ahead: the record knows before Triton does
        await asyncio.gather(*(self._load(e) for e in pending))
        # routing first: a replica counts in status.readyReplicas only once it is in the slice
        await self._publish(slice_)

    async def _load(self, entry: Entry) -> None:
        runtime = self._runtime(entry.node)
        model = self._triton_name(entry.variant)
        if runtime is None:
            entry.set_state("Failed", "NoRuntime", f"no runtime endpoint on node {entry.node}")
            entry.failed_at = time.monotonic()
            self.planner.report_load_failure(self.key, entry.node, "no runtime endpoint")
            return
        if not self._delivered(entry, model):  # [model delivery hook] verified first
            return
        start = time.perf_counter()
        try:
            await runtime.load(model)
            await runtime.wait_loaded(model, timeout=self.config.load_timeout_seconds)
        except (ModelLoadFailed, WaitTimeout, RuntimeUnavailable, ServingError) as exc:
            metrics.TRITON_REQUESTS.labels(operation="load", result="error").inc()
            entry.set_state("Failed", "LoadFailed", str(exc))
            entry.failed_at = time.monotonic()
            entry.needs_load = False
            # fails this replica and this job only; the runtime is failed by its own health
            # (the prober and _observe), never by a model that does not load
            self.planner.report_load_failure(self.key, entry.node, _short(str(exc)))
            self._event(
                "Warning",
                "LoadFailed",
                f"loading {model} on {entry.node} failed: {_short(str(exc))}",
            )
            return
        metrics.TRITON_REQUESTS.labels(operation="load", result="ok").inc()
        self.planner.load_succeeded(self.key, entry.node)
        entry.needs_load = False
        entry.set_state("Loaded", entry.reason, entry.message)
        self.logger.info(
            "loaded %s on %s in %.2fs (%s)",
            model,
            entry.node,
            time.perf_counter() - start,
            entry.reason,
        )
        if entry.reason == "Replacement":
            self._event(
                "Normal", "ReplicaLoaded", f"{model} ready on {entry.node}: {entry.message}"
            )

    def _delivered(self, entry: Entry, model: str) -> bool:
        """[model delivery hook] On a node with a model cache, load only what it verified:
        wait (reason Fetching/Verifying/WaitingForFetch), or fail a refused model."""
        info = self.planner.node(entry.node)
        spec = self.body.get("spec") or {}
        decision = delivery_gate(info.model_cache if info else None, model, spec, entry.variant)
        if decision.action is GateAction.LOAD:
            entry.reason, entry.message = entry.placed or (entry.reason, entry.message)
            return True
        entry.placed = entry.placed or (entry.reason, entry.message)
        if decision.action is GateAction.WAIT:
            entry.reason, entry.message, entry.needs_load = decision.reason, decision.message, True
            return False
        entry.set_state("Failed", decision.reason, decision.message)
        entry.failed_at, entry.needs_load = time.monotonic(), False
        self.planner.report_load_failure(self.key, entry.node, str(decision.message))
        delivery_refused(str(decision.reason))
        self._event("Warning", str(decision.reason), f"{model} on {entry.node}: {decision.message}")
        return False

    async def _remove_replaced(self, slice_: JobSlice) -> None:
        """Make-before-break: remove placements the plan dropped once replacements settled."""
        stuck = [e for e in self.record if e.state == "Unloading" and e.needs_unload]
        if stuck:
            await self._unload(stuck, slice_, drain=True)
        victims = [e for e in self._active().values() if e.key not in slice_.desired]
        if not victims:
            return
        loading = any(e.state == "Loading" for e in self.record)
        now = time.monotonic()
        ready_now: list[Entry] = []
        for e in victims:
            if e.removal_wanted_at is None:
                e.removal_wanted_at = now
            waited = now - e.removal_wanted_at
            if not loading or waited >= self.config.replacement_timeout_seconds:
                ready_now.append(e)
        if ready_now:
            await self._unload(ready_now, slice_, drain=False)

    async def _unload(self, victims: list[Entry], slice_: JobSlice, *, drain: bool) -> None:
        removals: dict[NodeKey, Removal] = {}
        draining = False  # a replica leaves the ready set now: give its clients the drain time
        for e in victims:
            if e.state == "Unloading":  # resumed from the record: keep its recorded reason
                removals[e.key] = Removal(e.reason or "ScaledDown")
                e.needs_unload = False
                continue
            removal = removals[e.key] = self._removal(slice_, e)
            draining = draining or removal.reason != RUNTIME_FAILED
            e.set_state(
                "Unloading",
                removal.reason,
                f"moved to {removal.moved_to}" if removal.moved_to else "removed by the plan",
            )
        # out of the ready set (draining in the EndpointSlice) and recorded as Unloading before
        # the runtime hears of it; new requests go elsewhere, those in flight finish (Triton's
        # unload waits for them), then the replica unloads
        await self._publish(slice_)
        if draining and self.config.drain_seconds > 0:
            await asyncio.sleep(self.config.drain_seconds)

        async def one(e: Entry) -> None:
            removal = removals[e.key]
            model = self._triton_name(e.variant)
            runtime = self._runtime(e.node)
            if runtime is not None and not self._shared_elsewhere(e.node, model):
                try:
                    await runtime.unload(model)
                    await runtime.wait_unloaded(model, timeout=self.config.unload_timeout_seconds)
                    metrics.TRITON_REQUESTS.labels(operation="unload", result="ok").inc()
                except ServingError as exc:
                    metrics.TRITON_REQUESTS.labels(operation="unload", result="error").inc()
                    if not drain and self.planner.node(e.node) is not None:
                        self.logger.warning("unloading %s on %s failed: %s", model, e.node, exc)
                        return  # stays Unloading; retried on the next pass
            e.state = "Gone"
            verb = "moved" if removal.moved_to else "removed"
            where = f" to {removal.moved_to}" if removal.moved_to else ""
            metrics.MOVES.labels(reason=removal.reason).inc()
            if e.pool:  # the pool's status.evictions (VehiclePool timer)
                EVICTIONS.record(e.pool, removal.reason)
            self._event(
                "Normal" if removal.reason not in DRAIN_NOW else "Warning",
                removal.reason,
                f"replica {e.variant} on {e.node} {verb}{where}: {removal.reason}"
                + (" (drained)" if drain else ""),
            )
            self.logger.info(
                "replica %s on %s %s%s: %s", e.variant, e.node, verb, where, removal.reason
            )

        await asyncio.gather(*(one(e) for e in victims))
        self.record = [e for e in self.record if e.state != "Gone"]
        await self._publish(slice_)

    def _prune_failed(self, slice_: JobSlice) -> None:
        now = time.monotonic()
        keep: list[Entry] = []
        for e in self.record:
            if (
                e.state == "Failed"
                and e.key not in slice_.desired
                and now - (e.failed_at or now) >= self.config.runtime_failure_backoff_seconds
            ):
                continue
            keep.append(e)
        self.record = keep

    # ---- publishing -------------------------------------------------------------------------

    def _job_ref(self) -> dict[str, Any]:
        meta = self.body.get("metadata") or {}
        return {
            "apiVersion": self.body.get("apiVersion") or f"{GROUP}/v1alpha1",
            "kind": self.body.get("kind") or KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": meta.get("uid")},
        }

    def _ready_replicas(self) -> list[ReadyReplica]:
        """Loaded replicas (ready) and Unloading ones (draining) with a routable runtime pod."""
        replicas: list[ReadyReplica] = []
        for e in self.record:
            if e.state not in ("Loaded", "Unloading"):
                continue
            pod = self.planner.runtime_pod(e.node)
            if pod is None or not pod.pod_ip:
                continue
            try:
                ip = ipaddress.ip_address(pod.pod_ip)
            except ValueError:
                continue
            if not isinstance(ip, ipaddress.IPv4Address) or ip.is_loopback or ip.is_link_local:
                continue
            draining = e.state == "Unloading"
            replicas.append(ReadyReplica(e.node, pod.name, pod.namespace, str(ip), None, draining))
        return replicas

    async def _publish_routing(self) -> None:
        ref = self._job_ref()
        if not self.routing_loaded:
            svc_name = service_name(self.name)
            self.live_service = await kube.read_service(self.namespace, svc_name)
            self.live_slice = await kube.read_endpoint_slice(
                self.namespace, f"{svc_name}-tokenfleet"
            )
            self.routing_loaded = True
        ports = {"http_port": self.config.runtime_http_port}
        ports["grpc_port"] = self.config.runtime_grpc_port
        service = build_service(ref, **ports)
        if needs_update(self.live_service, service):
            self.live_service = await kube.apply_service(service, self.live_service is not None)
        try:
            eps = build_endpoint_slice(ref, self._ready_replicas(), **ports)
        except RoutingError as exc:
            self.logger.warning("EndpointSlice not built: %s", exc)
            return
        if needs_update(self.live_slice, eps):
            self.live_slice = await kube.apply_endpoint_slice(eps, self.live_slice is not None)

    async def _publish(self, slice_: JobSlice | None) -> None:
        try:
            await self._publish_routing()
        except Exception as exc:  # routing is retried on the next pass; status still goes out
            self.routing_loaded = False
            self.logger.warning("publishing the Service/EndpointSlice failed: %s", exc)
        await self._write_status(slice_)

    def _status(self, slice_: JobSlice | None, invalid: str | None = None) -> dict[str, Any]:
        meta = self.body.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        previous = self.last_status or dict(self.body.get("status") or {})
        loaded = [e for e in self.record if e.state == "Loaded"]
        ready = len(loaded)
        served = round(sum(self._tokens_per_second(e.variant) for e in loaded), 3)
        desired = slice_.desired_replicas if slice_ is not None else None
        loading = sum(1 for e in self.record if e.state == "Loading")
        unloading = sum(1 for e in self.record if e.state == "Unloading")
        failed = sum(1 for e in self.record if e.state == "Failed")
        active = {e.key for e in self.record if e.state in ACTIVE_STATES}
        min_replicas = int(((self.body.get("spec") or {}).get("replicas") or {}).get("min", 1))
        reconciling = False
        stalled = False
        is_ready: bool | str
        if invalid is not None:
            is_ready, reason, message, stalled = False, "InvalidSpec", invalid, True
        elif slice_ is None:
            is_ready, reason, message = "Unknown", "Planning", "waiting for the fleet plan"
            reconciling = True
        else:
            assert desired is not None
            in_sync = active == set(slice_.desired) and not loading and not unloading
            reconciling = not in_sync
            if desired == 0 and (min_replicas > 0 or slice_.shortfall_reason):
                is_ready = False
                reason = slice_.shortfall_reason or "NoEligibleNode"
                message = slice_.shortfall_message or "no node can take a replica"
                stalled = True
                reconciling = False
                load_failure = self.planner.load_failure(self.key)
                if reason == "LoadFailed" and load_failure is not None:
                    node, backoff = load_failure
                    message = _short(
                        f"the model failed to load (retried after a back-off): on {node}: "
                        f"{backoff.message}"
                    )
            elif reconciling:
                is_ready = ready >= desired and desired > 0
                reason = "Moving" if unloading or (ready and loading) else "Placing"
                message = (
                    f"{ready}/{desired} replicas loaded, {loading} loading, {unloading} unloading"
                )
            elif slice_.shortfall_reason:
                is_ready = ready >= max(min_replicas, 1)
                reason = "BelowTarget"
                message = slice_.shortfall_message or slice_.shortfall_reason
                stalled = ready < min_replicas
            else:
                is_ready = True
                reason = "Serving"
                message = f"{ready}/{desired} replicas loaded"
            if failed and not stalled and not reconciling and reason == "Serving":
                message += f" ({failed} failed placements awaiting retry elsewhere)"
        conditions = set_kstatus(
            previous.get("conditions"),
            ready=is_ready,
            reason=reason,
            message=message,
            reconciling=reconciling,
            stalled=stalled,
            observed_generation=generation,
        )
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": conditions,
            "readyReplicas": ready,
            "placements": [e.to_wire() for e in self.record],
            "servedTokensPerSecond": served,
            "serviceName": service_name(self.name),
            "shortfallReason": (slice_.shortfall_reason if slice_ is not None else None),
        }
        if desired is not None:
            status["desiredReplicas"] = desired
        elif previous.get("desiredReplicas") is not None:
            status["desiredReplicas"] = previous["desiredReplicas"]
        return status

    async def _write_status(self, slice_: JobSlice | None, invalid: str | None = None) -> None:
        if self.deleted:
            return
        status = self._status(slice_, invalid)
        current = self.last_status
        if current is None:
            current = dict(self.body.get("status") or {})
        if _same_status(current, status):
            self.last_status = status
            return
        patch = dict(status)
        # a merge patch deletes with null: clear fields we no longer set
        for k in ("shortfallReason", "desiredReplicas"):
            if status.get(k) is None:
                patch[k] = None
        await kube.patch_job_status(self.namespace, self.name, patch)
        self.last_status = status
        self._metrics(status)

    def _metrics(self, status: Mapping[str, Any]) -> None:
        ns, job = self.namespace, self.name
        metrics.READY_REPLICAS.labels(namespace=ns, job=job).set(status.get("readyReplicas") or 0)
        metrics.DESIRED_REPLICAS.labels(namespace=ns, job=job).set(
            status.get("desiredReplicas") or 0
        )
        metrics.SERVED_TOKENS.labels(namespace=ns, job=job).set(
            status.get("servedTokensPerSecond") or 0.0
        )
        counts: dict[tuple[str, str], int] = {}
        for p in status.get("placements") or ():
            k = (str(p.get("target")), str(p.get("state")))
            counts[k] = counts.get(k, 0) + 1
        for target in ("Rack", "Vehicle"):
            for state in ("Loading", "Loaded", "Unloading", "Failed"):
                metrics.PLACEMENTS.labels(namespace=ns, job=job, target=target, state=state).set(
                    counts.get((target, state), 0)
                )

    async def unload_all(self) -> None:
        """The job is being deleted: unload every replica it recorded (best effort)."""
        async with self.lock:
            self.deleted = True

            async def one(e: Entry) -> None:
                runtime = self._runtime(e.node)
                model = self._triton_name(e.variant)
                if runtime is None or self._shared_elsewhere(e.node, model):
                    return
                with contextlib.suppress(ServingError):
                    await runtime.unload(model)
                    await runtime.wait_unloaded(model, timeout=self.config.unload_timeout_seconds)

            await asyncio.gather(*(one(e) for e in self.record if e.state != "Failed"))
            self.record = []


def _same_status(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    for k, v in new.items():
        if current.get(k) != v:
            return False
    return all(current.get(k) is None for k in ("shortfallReason",) if new.get(k) is None)


# ---- kopf wiring ------------------------------------------------------------------------------

_WORKERS: dict[str, JobWorker] = {}


def _worker(body: kopf.Body, namespace: str, name: str, logger: Any, planner: Planner) -> JobWorker:
    key = f"{namespace}/{name}"
    worker = _WORKERS.get(key)
    if worker is None or worker.body is not body:
        worker = JobWorker(
            planner=planner,
            config=get_config(),
            body=body,
            namespace=namespace,
            name=name,
            logger=logger,
        )
        worker.load_record()
        _WORKERS[key] = worker
    return worker


@kopf.daemon(GROUP, "inferencejobs", id="placements", cancellation_timeout=5.0)
async def job_daemon(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Keep one job's replicas where the fleet plan wants them (see the module docstring)."""
    planner = get_planner()
    planner.mark_ready()
    ns = str(namespace or "")
    worker = _worker(body, ns, name, logger, planner)
    planner.daemon_running(worker.key, True)
    try:
        await _daemon_loop(worker, planner, body, stopped, logger)
    finally:
        planner.daemon_running(worker.key, False)


async def _daemon_loop(
    worker: JobWorker,
    planner: Planner,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
) -> None:
    wake = planner.job_event(worker.key)
    backoff = 1.0
    while not stopped:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        wake.clear()
        try:
            with metrics.reconcile_timer(KIND) as outcome:
                outcome["result"] = await worker.reconcile()
            backoff = 1.0
            timeout = worker.config.job_resync_seconds
            if any(
                e.state in ("Loading", "Unloading") or e.observe_failures for e in worker.record
            ):
                timeout = min(timeout, 1.0)  # in flight, or a runtime just missed a check
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("reconcile of %s failed: %s", worker.key, exc)
            timeout = backoff
            backoff = min(backoff * 2, 30.0)
        waiters = [
            asyncio.ensure_future(wake.wait()),
            asyncio.ensure_future(stopped.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


@kopf.on.delete(GROUP, "inferencejobs", id="unload")
async def job_deleted(
    body: kopf.Body, name: str, namespace: str | None, logger: kopf.Logger, **_: Any
) -> None:
    """Unload the job's replicas from their runtimes; Service/EndpointSlice go by ownerRef GC."""
    planner = get_planner()
    ns = str(namespace or "")
    key = f"{ns}/{name}"
    worker = _WORKERS.pop(key, None)
    if worker is None:
        worker = JobWorker(
            planner=planner, config=get_config(), body=body, namespace=ns, name=name, logger=logger
        )
        worker.load_record()
    await worker.unload_all()
    planner.forget_job(key)
    planner.signal("job", full=True)
    for labels in _metric_label_sets(ns, name):
        with contextlib.suppress(KeyError):
            metrics.PLACEMENTS.remove(*labels)
    for gauge in (metrics.READY_REPLICAS, metrics.DESIRED_REPLICAS, metrics.SERVED_TOKENS):
        with contextlib.suppress(KeyError):
            gauge.remove(ns, name)
    logger.info("unloaded the replicas of %s", key)


def _metric_label_sets(ns: str, name: str) -> Iterable[tuple[str, str, str, str]]:
    for target in ("Rack", "Vehicle"):
        for state in ("Loading", "Loaded", "Unloading", "Failed"):
            yield (ns, name, target, state)


@kopf.on.cleanup()
async def close_runtime_pool(**_: Any) -> None:
    global _POOL
    if _POOL is not None:
        with contextlib.suppress(Exception):
            await _POOL.close()
        _POOL = None


__all__ = ["DesiredPlacement", "Entry", "JobWorker", "job_daemon", "job_deleted", "runtime_pool"]
