"""The runtime health prober: a crashed Triton runtime is noticed in seconds, not at a resync.

Without it, a runtime that dies is only noticed when its jobs' daemons next observe their
placements (``job_resync_seconds``, 30 s in production). One asyncio task per operator (started
and stopped with the planner by the operator context), every ``runtime_probe_seconds``:

* takes every runtime that hosts at least one active placement (Loading, Loaded, Unloading) of
  a job whose daemon runs in this process. Like the planner, it starts only once kopf ran a
  resource handler (``Planner.wait_ready``); and as kopf stops every daemon while peering pauses
  the operator, a standby replica probes nothing and wakes nothing;
* asks each one ``GET /v2/health/ready`` through the operator's :class:`RuntimePool` (its
  concurrency bounds), at the address and under the dial policy of
  ``Planner.runtime_endpoint`` (a node whose runtime may not be dialled is not probed);
* wakes exactly the jobs with placements on a node whose runtime failed the probe (refused,
  reset, timed out, or answered not ready). Their daemons observe at once and fail over by their
  own path (``OBSERVE_FAILURES_TO_FAIL``, then drain or make-before-break). The prober changes no
  placement and posts no Event; a runtime that answers again is simply not reported.

Metrics: ``tokenfleet_runtime_probes_total{result}`` and ``tokenfleet_failing_runtimes``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from tokenfleet import metrics
from tokenfleet.clock import SYSTEM_CLOCK, Clock
from tokenfleet.controllers.periodic import PeriodicTask
from tokenfleet.controllers.planner import Planner
from tokenfleet.controllers.replicas import ON_RUNTIME
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.snapshot import JobView
from tokenfleet.serving.endpoints import format_host_port, parse_host_port
from tokenfleet.serving.errors import RuntimeUnavailable, ServingError
from tokenfleet.serving.runtime import RuntimePool

log = logging.getLogger(__name__)


class ProbeResult(enum.StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"  # answered, but not ready (e.g. shutting down)
    UNREACHABLE = "unreachable"  # refused, reset or timed out


@dataclass(frozen=True)
class ProbeTarget:
    """One runtime to probe and what hangs on it."""

    endpoint: str
    nodes: tuple[str, ...]
    jobs: frozenset[str]


# ---- pure logic --------------------------------------------------------------------------------


def jobs_by_node(jobs: Iterable[JobView], live: Collection[str]) -> dict[str, frozenset[str]]:
    """node -> the jobs (``namespace/name``) with an active placement there, among ``live`` jobs
    (those whose daemon runs here)."""
    out: dict[str, set[str]] = {}
    for job in jobs:
        if job.key not in live:
            continue
        for p in job.placements:
            node = p.get("node")
            if node and p.get("state") in ON_RUNTIME:
                out.setdefault(str(node), set()).add(job.key)
    return {node: frozenset(keys) for node, keys in out.items()}


def probe_targets(
    placed: Mapping[str, Collection[str]], endpoint_of: Callable[[str], str | None]
) -> list[ProbeTarget]:
    """The runtimes to probe: one per endpoint of a node in ``placed``, sorted by endpoint.

    ``endpoint_of`` gives a node's runtime address (``None``: no runtime, or one the dial policy
    forbids; such nodes are skipped). Nodes sharing an endpoint are probed once.
    """
    nodes: dict[str, list[str]] = {}
    jobs: dict[str, set[str]] = {}
    for node in sorted(placed):
        raw = endpoint_of(node)
        if raw is None:
            continue
        try:
            endpoint = format_host_port(*parse_host_port(raw))
        except ServingError:
            continue
        nodes.setdefault(endpoint, []).append(node)
        jobs.setdefault(endpoint, set()).update(placed[node])
    return [ProbeTarget(ep, tuple(nodes[ep]), frozenset(jobs[ep])) for ep in sorted(nodes)]


def jobs_to_wake(
    targets: Iterable[ProbeTarget], results: Mapping[str, ProbeResult]
) -> frozenset[str]:
    """The jobs placed on a runtime whose probe failed (``results`` by endpoint)."""
    wake: set[str] = set()
    for t in targets:
        result = results.get(t.endpoint)
        if result is not None and result is not ProbeResult.READY:
            wake |= t.jobs
    return frozenset(wake)


# ---- the prober --------------------------------------------------------------------------------


class RuntimeProber:
    """The one runtime health prober of this operator process (see the module docstring)."""

    def __init__(
        self,
        planner: Planner,
        config: OperatorConfig,
        pool: RuntimePool,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.planner = planner
        self.config = config
        self.pool = pool
        self.clock = clock
        self._failing: dict[str, str] = {}  # endpoint -> why, as of the last round
        self.periodic = PeriodicTask(
            "tokenfleet-runtime-prober",
            config.runtime_probe_seconds,
            self.probe_round,
            clock=clock,
            logger=log,
            label="runtime probe",
            wait_ready=planner.wait_ready,
        )

    @property
    def interval(self) -> float:
        return self.periodic.interval

    @property
    def enabled(self) -> bool:
        return self.periodic.enabled

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self.periodic.task

    @property
    def last_round_monotonic(self) -> float | None:
        return self.periodic.last_round_monotonic

    @property
    def failing(self) -> Mapping[str, str]:
        return dict(self._failing)

    def start(self) -> None:
        self.periodic.start()

    async def stop(self) -> None:
        await self.periodic.stop()
        self._failing = {}
        metrics.FAILING_RUNTIMES.set(0)

    def _endpoint(self, node: str) -> str | None:
        try:
            return self.planner.fleet.runtime_endpoint(node)
        except ServingError:  # a malformed annotation: no runtime to probe
            return None

    async def probe_round(self) -> dict[str, ProbeResult]:
        """Probe once; wake the jobs on failed runtimes. Returns the results by endpoint."""
        placed = jobs_by_node(self.planner.fleet.jobs(), self.planner.daemon_jobs)
        targets = probe_targets(placed, self._endpoint)
        if not targets:
            self._report({}, {})
            return {}
        pool = self.pool
        timeout = min(self.config.triton_request_timeout_seconds, max(1.0, self.interval))

        async def one(target: ProbeTarget) -> tuple[ProbeResult, str]:
            try:
                ready = await pool.get(target.endpoint).server_ready(timeout)
            except RuntimeUnavailable as exc:
                return ProbeResult.UNREACHABLE, exc.message
            if ready:
                return ProbeResult.READY, ""
            return ProbeResult.NOT_READY, "answered not ready"

        outcomes = await asyncio.gather(*(one(t) for t in targets))
        results = {t.endpoint: r for t, (r, _) in zip(targets, outcomes, strict=True)}
        for result, _ in outcomes:
            metrics.RUNTIME_PROBES.labels(result=str(result)).inc()
        wake = jobs_to_wake(targets, results)
        if wake:
            self.planner.kick_jobs(sorted(wake))
        failing = {
            t.endpoint: f"{r}: {why}"
            for t, (r, why) in zip(targets, outcomes, strict=True)
            if r is not ProbeResult.READY
        }
        self._report({t.endpoint: t for t in targets}, failing)
        return results

    def _report(self, targets: Mapping[str, ProbeTarget], failing: Mapping[str, str]) -> None:
        for endpoint, why in failing.items():
            t = targets[endpoint]
            if endpoint not in self._failing:
                log.warning(
                    "runtime %s of node %s failed its readiness probe (%s): waking %s",
                    endpoint,
                    ", ".join(t.nodes),
                    why,
                    ", ".join(sorted(t.jobs)),
                )
        for endpoint in self._failing:
            if endpoint not in failing and endpoint in targets:
                log.info("runtime %s answers its readiness probe again", endpoint)
        self._failing = dict(failing)
        metrics.FAILING_RUNTIMES.set(len(self._failing))
