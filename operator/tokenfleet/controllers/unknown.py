"""Since when each car's telemetry has been unknown (pure; the planner owns one instance).

Unknown is not bad (DESIGN.md "Trust"): a car whose reading is missing, rejected, stale or
stamped in the future takes no new work, but keeps its replicas until its pool's
``unknownGraceSeconds`` ran out, counted from the first plan that saw it unknown. The engine
judges that from :attr:`~tokenfleet.placement.model.VehicleNode.unknown_since`, which
:meth:`UnknownTelemetry.observe` fills in.

The record lives in the operator's memory: after a restart the grace starts again (a restart never
shortens it, so it never drains on a guess). :meth:`observe` also returns the changes of each car's
*time* verdict (stale / future-stamped / fresh again), so the planner can post an Event and count
``tokenfleet_telemetry_rejected_total`` for readings rejected by age, which parsing alone cannot
see (a reading that does not parse gets its Event when the Node changes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tokenfleet.placement.model import PoolPolicy, Snapshot, VehicleNode
from tokenfleet.placement.state import telemetry_unknown
from tokenfleet.telemetry.problems import ProblemKind

__all__ = ["TimeVerdict", "UnknownTelemetry", "time_verdict"]


@dataclass(frozen=True, slots=True)
class TimeVerdict:
    """Why a car's ``observed-at`` is rejected at ``now`` (``kind`` is ``Stale`` for too old or
    absent, ``OutOfRange`` for too far ahead), with a message naming the limit."""

    node: str
    kind: ProblemKind
    message: str


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_verdict(v: VehicleNode, pool: PoolPolicy, now: float) -> TimeVerdict | None:
    """The rejection of the reading's time at ``now`` (``None``: its age is acceptable)."""
    observed = v.observed_at
    if observed is None:
        return None  # a missing/unparsable observed-at is a parse problem, reported as such
    age = now - observed
    if age > pool.stale_after_seconds:
        return TimeVerdict(
            v.name,
            ProblemKind.STALE,
            f"observed-at {_stamp(observed)} is {age:.0f} s old, over the pool's "
            f"staleAfterSeconds={pool.stale_after_seconds:g}",
        )
    if -age > pool.max_future_skew_seconds:
        return TimeVerdict(
            v.name,
            ProblemKind.OUT_OF_RANGE,
            f"observed-at {_stamp(observed)} is {-age:.0f} s in the future, over the "
            f"{pool.max_future_skew_seconds:g} s clock-skew allowance",
        )
    return None


class UnknownTelemetry:
    """node -> epoch s since when its telemetry is unknown, and the last time verdict per node."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}
        self._verdicts: dict[str, TimeVerdict] = {}

    def since(self, node: str) -> float | None:
        return self._since.get(node)

    def observe(self, snapshot: Snapshot) -> tuple[Snapshot, list[TimeVerdict]]:
        """The snapshot with every vehicle's ``unknown_since`` set, and the time verdicts that
        are new since the previous call (a car that became stale or future-stamped)."""
        now = snapshot.now
        pools: Mapping[str, PoolPolicy] = {p.name: p for p in snapshot.pools}
        since: dict[str, float] = {}
        verdicts: dict[str, TimeVerdict] = {}
        fresh: list[TimeVerdict] = []
        vehicles: list[VehicleNode] = []
        for v in snapshot.vehicles:
            pool = pools.get(v.pool)
            if pool is None or telemetry_unknown(v, pool, now) is None:
                vehicles.append(v)
                continue
            first = self._since.get(v.name, now)
            since[v.name] = first
            vehicles.append(dataclasses.replace(v, unknown_since=first))
            verdict = time_verdict(v, pool, now)
            if verdict is not None:
                verdicts[v.name] = verdict
                previous = self._verdicts.get(v.name)
                if previous is None or previous.kind != verdict.kind:
                    fresh.append(verdict)
        self._since = since
        self._verdicts = verdicts
        return dataclasses.replace(snapshot, vehicles=tuple(vehicles)), fresh
