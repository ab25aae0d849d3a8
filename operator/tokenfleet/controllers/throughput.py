"""The throughput meter: each job's served tokens/s, measured at its runtimes, in its status.

``status.servedTokensPerSecond`` is the declared figure (the Loaded replicas' ``tokensPerSecond``
summed); ``status.measuredTokensPerSecond`` is what the replicas really generated. One asyncio
task per operator (a part of the operator context, started and stopped with it), every
``throughput_seconds``:

* takes the Loaded and Unloading (draining, still finishing requests) placements of the jobs
  whose daemon runs in this process, and their runtimes' addresses under the dial policy
  (``FleetView.runtime_endpoint``);
* scrapes each runtime's Triton metrics once (``GET /metrics`` through the operator's
  :class:`RuntimePool`, the same port the leak tracking reads) and reads the generated-tokens
  counter (``throughput_metric``, Triton's vLLM backend's ``vllm:generation_tokens_total`` by
  default) of each placed Triton model;
* turns the readings into rates over ``throughput_window_seconds``
  (:class:`~tokenfleet.serving.throughput.TokenRateMeter`) and sums them per job;
* when a job's figure moved past the deadband (10 % and 1 token/s; reaching or leaving 0 always
  counts), records it and wakes that job's daemon, which writes it with its next status
  (``ThroughputMeter.measured(key)``). At rest the figure stays 0 and nothing is written.

A runtime that cannot be scraped contributes nothing until it can again; a job none of whose
runtimes exports the counter has no measured figure (``None``), never a declared one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from tokenfleet.clock import SYSTEM_CLOCK, Clock
from tokenfleet.controllers.periodic import PeriodicTask
from tokenfleet.controllers.planner import Planner
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.snapshot import job_spec
from tokenfleet.serving.endpoints import format_host_port, parse_host_port
from tokenfleet.serving.errors import ServingError
from tokenfleet.serving.runtime import RuntimePool
from tokenfleet.serving.throughput import (
    TokenRateMeter,
    job_rates,
    should_publish,
    token_counters,
)

log = logging.getLogger(__name__)

#: placement states whose replica generates tokens (Unloading: draining its last requests)
MEASURED_STATES = frozenset({"Loaded", "Unloading"})

Series = tuple[str, str]  # (runtime endpoint, Triton model name)


class ThroughputMeter:
    """The one throughput meter of this operator process (see the module docstring)."""

    def __init__(
        self,
        planner: Planner,
        config: OperatorConfig,
        runtimes: RuntimePool,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.planner = planner
        self.config = config
        self._runtimes = runtimes
        self._clock = clock.monotonic
        self._meter = TokenRateMeter(max(config.throughput_window_seconds, 1e-3))
        self._published: dict[str, float | None] = {}
        self.periodic = PeriodicTask(
            "tokenfleet-throughput-meter",
            config.throughput_seconds,
            self.measure_round,
            clock=clock,
            logger=log,
            label="throughput",
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

    def measured(self, job: str) -> float | None:
        """The job's published measured tokens/s (``None``: not measured)."""
        return self._published.get(job)

    def start(self) -> None:
        self.periodic.start()

    async def stop(self) -> None:
        await self.periodic.stop()

    def _endpoint(self, node: str) -> str | None:
        try:
            raw = self.planner.fleet.runtime_endpoint(node)
            return None if raw is None else format_host_port(*parse_host_port(raw))
        except ServingError:
            return None

    def _replicas(self) -> dict[str, list[Series]]:
        """job -> the (runtime, Triton model) series of its measured placements."""
        live = self.planner.daemon_jobs
        out: dict[str, list[Series]] = {}
        for view in self.planner.fleet.jobs():
            if view.key not in live:
                continue
            try:
                spec = job_spec(view)
            except Exception:  # an invalid spec has no replicas to measure
                continue
            series = out.setdefault(view.key, [])
            for p in view.placements:
                if p.get("state") not in MEASURED_STATES:
                    continue
                variant = spec.variant(str(p.get("variant")))
                endpoint = self._endpoint(str(p.get("node")))
                if variant is not None and endpoint is not None:
                    series.append((endpoint, spec.triton_model_name(variant)))
        return out

    async def measure_round(self) -> dict[str, float | None]:
        """Scrape once, update the rates; wake the jobs whose figure moved. Returns the rates."""
        replicas = self._replicas()
        endpoints = sorted({ep for series in replicas.values() for ep, _ in series})
        pool = self._runtimes
        metric = self.config.throughput_metric

        async def scrape(endpoint: str) -> tuple[str, Mapping[str, float] | None, float]:
            try:
                counters = token_counters(await pool.get(endpoint).metrics_text(), metric)
            except (ServingError, ValueError) as exc:
                log.debug("throughput: runtime %s not scraped: %s", endpoint, exc)
                return endpoint, None, self._clock()
            return endpoint, counters, self._clock()

        scraped = await asyncio.gather(*(scrape(ep) for ep in endpoints))
        wanted = {s for series in replicas.values() for s in series}
        for endpoint, counters, at in scraped:
            for model, count in (counters or {}).items():
                if (endpoint, model) in wanted:
                    self._meter.observe((endpoint, model), count, at)
        self._meter.retain(wanted)
        now = self._clock()
        rates = job_rates(replicas, lambda key: self._meter.rate(key, now))
        self._publish(rates)
        return rates

    def _publish(self, rates: Mapping[str, float | None]) -> None:
        kick: list[str] = []
        for job, rate in rates.items():
            figure = None if rate is None else round(max(rate, 0.0), 1)
            if should_publish(self._published.get(job), figure):
                self._published[job] = figure
                kick.append(job)
        for job in [j for j in self._published if j not in rates]:
            del self._published[job]  # deleted, or its daemon runs elsewhere now
        if kick:
            self.planner.kick_jobs(sorted(kick))
