"""The agent loop: read the source, decide, patch. ``tokenfleet agent`` runs :func:`run_agent`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenfleet.agent.deadband import DEFAULT_DEADBAND, Deadband, Decision, decide
from tokenfleet.agent.publisher import Patcher, node_annotation_patcher
from tokenfleet.agent.signals import Sample, annotations_for
from tokenfleet.agent.source import SignalSource, SourceError, make_source

__all__ = ["Agent", "StepResult", "add_agent_arguments", "run_agent"]

log = logging.getLogger("tokenfleet.agent")


@dataclass(frozen=True, slots=True)
class StepResult:
    decision: Decision | None
    """``None`` when the source could not be read."""
    published: bool
    error: str | None = None


class Agent:
    """One node's publisher. Not thread-safe; call :meth:`step` from one loop."""

    def __init__(
        self,
        source: SignalSource,
        patcher: Patcher,
        band: Deadband = DEFAULT_DEADBAND,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = source
        self.patcher = patcher
        self.band = band
        self.clock = clock
        self.last: Sample | None = None
        self.last_published_at: datetime | None = None
        self.writes = 0

    def step(self) -> StepResult:
        """Read once; publish if the deadband/heartbeat says so. Never raises on I/O errors."""
        try:
            sample = self.source.read()
        except SourceError as error:
            log.warning("cannot read signals: %s", error)
            return StepResult(None, False, str(error))
        for problem in sample.problems:
            log.warning("rejected signal %s", problem.describe())
        now = self.clock()
        decision = decide(self.last, self.last_published_at, sample, now, self.band)
        if not decision.publish:
            return StepResult(decision, False)
        try:
            self.patcher(annotations_for(sample.signals, sample.observed_at))
        except Exception as error:  # API down, conflict, forbidden: retry next tick
            log.warning("patching the node failed (%s); retrying next tick", error)
            return StepResult(decision, False, f"{type(error).__name__}: {error}")
        self.last, self.last_published_at = sample, now
        self.writes += 1
        log.info("published (%s)", ", ".join(decision.reasons))
        return StepResult(decision, True)

    def run(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            stop.wait(interval_s)


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME"),
        help="this node's name (default: $NODE_NAME, from the downward API)",
    )
    parser.add_argument("--source", required=True, help="signal source: json:/path/to/gateway.json")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reads")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="max seconds between writes")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster)")
    parser.add_argument("--once", action="store_true", help="one step, then exit")


def run_agent(args: argparse.Namespace) -> int:
    """Entry point of ``tokenfleet agent``."""
    from kubernetes import client, config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.node:
        log.error("--node or $NODE_NAME is required")
        return 2
    if args.kubeconfig:
        config.load_kube_config(config_file=args.kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    api: Any = client.CoreV1Api()
    agent = Agent(
        make_source(args.source),
        node_annotation_patcher(api, args.node),
        Deadband(max_silence_seconds=args.heartbeat),
    )
    if args.once:
        result = agent.step()
        return 0 if result.error is None else 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.run(args.interval, stop)
    return 0
