"""The operator context: everything one operator process holds, built once and passed in.

``tokenfleet run`` builds one :class:`OperatorContext` (:meth:`OperatorContext.build`) and hands
it to kopf as the memo (``kopf.run(memo=operator_memo(context))``). kopf gives every handler a
(shallow) copy of that memo, so each handler reaches the same context with
``context_of(memo)``; nothing process-wide lives in a module global.

:meth:`OperatorContext.start` and :meth:`OperatorContext.stop` (called by the one startup and the
one cleanup handler in :mod:`tokenfleet.controllers.lifecycle`) start and stop the background
parts in the order written there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import kopf

from tokenfleet.clock import SYSTEM_CLOCK, Clock
from tokenfleet.controllers.events import EventPoster
from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.kube import KubeWriter
from tokenfleet.controllers.nodes import parse_node_counted
from tokenfleet.controllers.nodesignals import NodeSignals
from tokenfleet.controllers.nodewatch import NODE_SELECTOR, NodeWatch
from tokenfleet.controllers.planner import Planner
from tokenfleet.controllers.poolstats import EvictionLedger
from tokenfleet.controllers.runtimehealth import RuntimeProber
from tokenfleet.controllers.settings import OperatorConfig, apply_kopf_settings
from tokenfleet.controllers.throughput import ThroughputMeter
from tokenfleet.controllers.watchfilter import WatchFilter
from tokenfleet.serving.runtime import RuntimePool

if TYPE_CHECKING:
    from tokenfleet.controllers.jobworker import JobWorker

MEMO_KEY: Final = "tokenfleet"
"""The key of the operator context in kopf's memo."""


class HttpSession:
    """One aiohttp session for every Redfish poll of the process (opened on first use)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class OperatorContext:
    """The operator's parts (see the module docstring)."""

    config: OperatorConfig
    clock: Clock
    kube: KubeWriter
    fleet: FleetView
    planner: Planner
    runtimes: RuntimePool
    prober: RuntimeProber
    throughput: ThroughputMeter
    """Each job's served tokens/s measured at its runtimes (``status.measuredTokensPerSecond``)."""
    http: HttpSession
    watches: WatchFilter
    node_watch: NodeWatch
    """The list-and-watch of the tokenfleet Nodes into ``fleet.node_store``."""
    evictions: EvictionLedger
    """Removals from pools' vehicles, written by the job workers, read by the pool timers."""
    workers: dict[str, JobWorker] = field(default_factory=dict)
    """The job workers by ``namespace/name`` (one per InferenceJob daemon)."""
    events: EventPoster | None = None
    """Bound to the event loop in :meth:`start` (``None`` before)."""

    @classmethod
    def build(cls, config: OperatorConfig, clock: Clock = SYSTEM_CLOCK) -> OperatorContext:
        """Every part, wired; nothing started (no task, no connection)."""
        kube = KubeWriter(clock)
        fleet = FleetView(config)
        planner = Planner(config, fleet, kube=kube, clock=clock)
        context: OperatorContext | None = None

        def poster() -> EventPoster | None:
            return context.events if context is not None else None

        node_watch = NodeWatch(
            kube=kube,
            store=fleet.node_store,
            parse=parse_node_counted,
            on_changes=NodeSignals(planner, fleet.node_store, poster),
            gather_seconds=config.node_watch_gather_seconds,
        )
        runtimes = RuntimePool(
            timeout=config.triton_request_timeout_seconds,
            load_timeout=config.load_timeout_seconds,
            max_concurrency=config.triton_concurrency,
            per_endpoint_concurrency=4,
            metrics_offset=config.runtime_metrics_port - config.runtime_http_port,
            monotonic=clock.monotonic,
        )
        context = cls(
            config=config,
            clock=clock,
            kube=kube,
            fleet=fleet,
            planner=planner,
            runtimes=runtimes,
            prober=RuntimeProber(planner, config, runtimes, clock=clock),
            throughput=ThroughputMeter(planner, config, runtimes, clock=clock),
            http=HttpSession(),
            watches=WatchFilter(),
            node_watch=node_watch,
            evictions=EvictionLedger(clock),
        )
        return context

    async def start(
        self,
        settings: kopf.OperatorSettings,
        indexes: Mapping[str, Any],
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        """In this order: kopf's settings, the Event poster, the fleet view on kopf's indexes,
        the node watch, the planner, the runtime prober, the throughput meter. (The job daemons
        start when kopf runs them.)"""
        apply_kopf_settings(settings, self.config)
        logger.info("tokenfleet settings: %s", dataclasses.asdict(self.config))
        self.events = EventPoster(self.kube, self.clock, asyncio.get_running_loop())
        self.fleet.attach(indexes)
        self.node_watch.start(asyncio.get_running_loop())
        logger.info("node watch started (labelSelector %s)", NODE_SELECTOR)
        self.planner.start()
        logger.info("fleet planner started (indexes: %s)", sorted(self.fleet.index_ids))
        self.prober.start()
        if self.prober.enabled:
            logger.info("runtime prober started (every %gs)", self.prober.interval)
        else:
            logger.info("runtime prober disabled (TOKENFLEET_RUNTIME_PROBE_SECONDS=0)")
        meter = self.throughput
        meter.start()
        if meter.enabled:
            logger.info(
                "throughput meter started (every %gs, %gs window, counter %s)",
                meter.interval,
                self.config.throughput_window_seconds,
                self.config.throughput_metric,
            )
        else:
            logger.info("throughput meter disabled (TOKENFLEET_THROUGHPUT_SECONDS=0)")

    async def stop(self) -> None:
        """In this order: the node watch, the prober and the throughput meter (they use the
        runtime pool), the planner, the runtime pool, the Redfish HTTP session, then the Events
        still being posted."""
        self.node_watch.stop()
        await self.prober.stop()
        await self.throughput.stop()
        await self.planner.stop()
        with contextlib.suppress(Exception):
            await self.runtimes.close()
        await self.http.close()
        if self.events is not None:
            await self.events.close()


def operator_memo(context: OperatorContext) -> kopf.Memo:
    """kopf's memo for ``kopf.run(memo=...)``: the context under :data:`MEMO_KEY`."""
    return kopf.Memo({MEMO_KEY: context})


def context_of(memo: Mapping[str, Any] | None) -> OperatorContext:
    """The operator context from a handler's ``memo``."""
    context = (memo or {}).get(MEMO_KEY)
    if not isinstance(context, OperatorContext):
        raise RuntimeError(
            "no tokenfleet operator context in kopf's memo: run the operator with "
            "`tokenfleet run` (kopf.run(memo=operator_memo(OperatorContext.build(config))))"
        )
    return context
