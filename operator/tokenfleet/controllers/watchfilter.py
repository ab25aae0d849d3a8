"""The dedupe state of the watch handlers (pure): the last facts the planner read per object.

The handlers in :mod:`tokenfleet.controllers.watches` reduce each watch event to the facts the
planner reads and ask :class:`WatchFilter` whether they changed; only a change wakes the planner.
(Nodes are deduplicated by their own watch: :class:`~tokenfleet.controllers.nodestore.NodeStore`.)
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from tokenfleet.telemetry.node import NodeInfo

_F = TypeVar("_F", bound=Hashable)

#: what the planner reads of a tank's status (a change of any replans)
TANK_STATUS_KEYS: Final = (
    "itLoadKW",
    "supplyTempC",
    "returnTempC",
    "flowLitersPerMinute",
    "leakState",
    "leakLatch",
    "lastReadingTime",
)
#: what the planner reads of a pool's status
POOL_STATUS_KEYS: Final = ("energyUsedTodayKWh",)


@dataclass(frozen=True)
class Change(Generic[_F]):
    """An object's facts changed: what they were (``None``: first seen since start or delete)."""

    previous: _F | None

    @property
    def first(self) -> bool:
        return self.previous is None


@dataclass
class Seen(Generic[_F]):
    """The last facts seen per object of one kind."""

    last: dict[str, _F] = field(default_factory=dict)

    def observe(self, key: str, facts: _F, *, deleted: bool = False) -> Change[_F] | None:
        """``None`` when ``facts`` are the ones last seen; else the change (and remember them,
        or forget the object when ``deleted``)."""
        previous = self.last.get(key)
        if previous == facts:
            return None
        if deleted:
            self.last.pop(key, None)
        else:
            self.last[key] = facts
        return Change(previous)

    def forget(self, key: str) -> bool:
        """Forget the object; ``True`` when it had been seen."""
        return self.last.pop(key, None) is not None


class WatchFilter:
    """The dedupe state of the watch handlers (one per operator, in its context)."""

    def __init__(self) -> None:
        self.tanks: Seen[tuple[Any, ...]] = Seen()
        self.pools: Seen[tuple[Any, ...]] = Seen()
        self.jobs: Seen[tuple[Any, ...]] = Seen()
        self.pods: Seen[tuple[Any, ...]] = Seen()


def problems_of(info: NodeInfo | None) -> frozenset[str]:
    """The rejected telemetry fields of a node, described (pure)."""
    if info is None:
        return frozenset()
    problems = list(info.problems)
    if info.vehicle is not None:
        problems.extend(info.vehicle.problems)
    return frozenset(p.describe() for p in problems)
