"""What failed, and for how long it is avoided (pure: the time comes from the clock).

* a **runtime** that failed (unreachable, lost its models) takes no new work for
  ``runtime_failure_backoff_seconds`` and its placements are re-placed;
* a job's model that failed to **load** on a node makes that job (only) avoid that node for a
  back-off: ``runtime_failure_backoff_seconds``, doubled per failure in a row up to 8x; a new
  spec generation of the job starts over.

The planner records into one :class:`FailureLedger` (it also wakes itself for a replan) and reads
it when it builds the engine's snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tokenfleet.clock import Clock

#: a (job, node) back-off grows by this factor per consecutive load failure, up to MAX_FACTOR
LOAD_BACKOFF_FACTOR: Final = 2.0
LOAD_BACKOFF_MAX_FACTOR: Final = 8.0

JobNode = tuple[str, str]
"""(job ``namespace/name``, node)."""


@dataclass(frozen=True)
class LoadBackoff:
    """A job's model failed to load on a node: the job avoids that node until ``until``
    (monotonic s); ``failures`` in a row; ``message`` is the runtime's own text."""

    until: float
    failures: int
    message: str


class FailureLedger:
    """Failed runtimes and the load back-offs of (job, node) pairs."""

    def __init__(self, backoff_seconds: float, clock: Clock) -> None:
        self.backoff_seconds = backoff_seconds
        self.clock = clock
        self._failed_until: dict[str, float] = {}
        self._load_failures: dict[JobNode, LoadBackoff] = {}

    # ---- runtimes -------------------------------------------------------------------------------

    def runtime_failure(self, node: str) -> bool:
        """Record that the node's runtime failed; ``True`` when it was not failed already."""
        now = self.clock.monotonic()
        first = self._failed_until.get(node, 0.0) < now
        self._failed_until[node] = now + self.backoff_seconds
        return first

    def runtime_failed(self, node: str) -> bool:
        return self._failed_until.get(node, 0.0) > self.clock.monotonic()

    def failed_runtimes(self) -> frozenset[str]:
        """The nodes whose runtime is failed now (one clock reading for all)."""
        now = self.clock.monotonic()
        return frozenset(n for n, until in self._failed_until.items() if until > now)

    # ---- loads ----------------------------------------------------------------------------------

    def load_failure(self, job: str, node: str, why: str) -> LoadBackoff:
        """Record a failed load of the job's model on ``node``; returns its back-off."""
        previous = self._load_failures.get((job, node))
        failures = previous.failures + 1 if previous is not None else 1
        factor = min(LOAD_BACKOFF_FACTOR ** (failures - 1), LOAD_BACKOFF_MAX_FACTOR)
        until = self.clock.monotonic() + self.backoff_seconds * factor
        backoff = self._load_failures[(job, node)] = LoadBackoff(until, failures, why)
        return backoff

    def load_succeeded(self, job: str, node: str) -> None:
        """A load of the job's model on ``node`` worked: its back-off there starts over."""
        self._load_failures.pop((job, node), None)

    def load_failed(self, job: str, node: str) -> bool:
        """The job is in its load back-off on ``node``."""
        backoff = self._load_failures.get((job, node))
        return backoff is not None and backoff.until > self.clock.monotonic()

    def latest_load_failure(self, job: str) -> tuple[str, LoadBackoff] | None:
        """The job's latest load failure still in back-off, as (node, back-off)."""
        now = self.clock.monotonic()
        live = [(n, b) for (j, n), b in self._load_failures.items() if j == job and b.until > now]
        return max(live, key=lambda nb: nb[1].until) if live else None

    def avoid_nodes(
        self, generations: Mapping[str, int], previous: Mapping[str, int]
    ) -> dict[str, frozenset[str]]:
        """job -> nodes in its load back-off. ``generations``: each live job's spec generation;
        ``previous``: as of the last plan (a new generation, or a job gone, starts over)."""
        for job, node in list(self._load_failures):
            changed = previous.get(job, generations.get(job)) != generations.get(job)
            if changed or job not in generations:
                self._load_failures.pop((job, node), None)
        now = self.clock.monotonic()
        avoid: dict[str, set[str]] = {}
        for (job, node), backoff in self._load_failures.items():
            if backoff.until > now:
                avoid.setdefault(job, set()).add(node)
        return {job: frozenset(nodes) for job, nodes in avoid.items()}
