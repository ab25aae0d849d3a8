"""Per-pool daily accounting (pure): energy tokenfleet's replicas drew and replicas evicted.

A :class:`PoolTally` is the running account of one VehiclePool for one UTC day. The VehiclePool
timer (``vehiclepool.py``) keeps it in the pool's kopf memo and advances it every tick:

* **energy**: the watts of the replicas ``Loaded`` on the pool's vehicles (their variants'
  declared ``watts``) integrated over time, left-rectangle: the draw seen at one tick counts
  until the next one. The part of an interval before UTC midnight belongs to the previous day and
  is dropped with it.
* **evictions**: replicas removed from the pool's vehicles, by reason. The job daemons
  (``inferencejob.py``) record each removal in the operator's :class:`EvictionLedger` (in memory,
  stamped with its UTC day) where they count ``tokenfleet_moves_total``; the timer takes them
  into the tally.

The tally is stored in ``status.energyUsedTodayKWh`` / ``status.energyDay`` /
``status.evictions``. After a restart it starts from that status when ``energyDay`` is today
(else from zero), so the day continues; the time the operator was down is not counted (nothing
observed it), and at most the write deadband of energy is lost. Energy is written only when it
moved by :data:`ENERGY_DEADBAND_KWH` and at most every :data:`ENERGY_WRITE_MIN_SECONDS`; a new day
and a new eviction are written at once. A pool where nothing serves makes no writes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from typing import Any, Final

from tokenfleet.clock import SYSTEM_CLOCK, Clock

__all__ = [
    "ENERGY_DEADBAND_KWH",
    "ENERGY_WRITE_MIN_SECONDS",
    "EvictionLedger",
    "PoolTally",
    "advance",
    "tally_fields",
    "tally_from_status",
    "tally_write_due",
    "utc_day",
]

ENERGY_DEADBAND_KWH: Final = 0.05
ENERGY_WRITE_MIN_SECONDS: Final = 60.0
MAX_REASONS: Final = 32
_JOULES_PER_KWH: Final = 3.6e6


def utc_day(now: datetime) -> str:
    """The UTC calendar day of ``now``, ``YYYY-MM-DD``."""
    return now.astimezone(UTC).date().isoformat()


def _midnight(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)


@dataclass(frozen=True)
class PoolTally:
    """One pool's account for ``day`` (UTC)."""

    day: str
    energy_kwh: float = 0.0
    evictions: Mapping[str, int] = field(default_factory=dict)
    watts: float = 0.0
    """Draw seen at the last tick, W (counts until the next tick)."""
    at: datetime | None = None
    """Time of the last tick (``None``: nothing to integrate yet)."""
    energy_written_at: datetime | None = None
    """When energy was last written (or the tally was loaded from status)."""


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _counts(raw: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in raw or ():
        if not isinstance(item, Mapping) or not item.get("reason"):
            continue
        try:
            count = int(item.get("count") or 0)
        except (TypeError, ValueError):
            continue
        if count > 0:
            counts[str(item["reason"])] = counts.get(str(item["reason"]), 0) + count
    return counts


def tally_from_status(status: Mapping[str, Any], now: datetime) -> PoolTally:
    """The tally a (re)started operator continues: the stored one if it is today's, else zero."""
    day = utc_day(now)
    if str(status.get("energyDay") or "") != day:
        return PoolTally(day=day, at=now, energy_written_at=now)
    return PoolTally(
        day=day,
        energy_kwh=_num(status.get("energyUsedTodayKWh")) or 0.0,
        evictions=_counts(status.get("evictions")),
        at=now,
        energy_written_at=now,
    )


def advance(
    tally: PoolTally,
    *,
    now: datetime,
    watts: float,
    evicted: Iterable[tuple[str, str, int]] = (),
) -> PoolTally:
    """The tally at ``now``: the previous draw integrated since the last tick (only the part of
    today), ``watts`` the draw from now on, ``evicted`` ``(day, reason, count)`` added when of
    today. A new UTC day starts from zero."""
    day = utc_day(now)
    gained = 0.0
    if tally.at is not None and tally.watts > 0:
        start = tally.at if day == tally.day else max(tally.at, _midnight(now))
        gained = tally.watts * max(0.0, (now - start).total_seconds()) / _JOULES_PER_KWH
    if day == tally.day:
        energy, counts = tally.energy_kwh + gained, Counter(tally.evictions)
    else:
        energy, counts = gained, Counter()
    for when, reason, count in evicted:
        if when == day and count > 0:
            counts[reason] += count
    return replace(
        tally,
        day=day,
        energy_kwh=energy,
        evictions=dict(counts),
        watts=max(0.0, watts),
        at=now,
    )


def tally_fields(tally: PoolTally) -> dict[str, Any]:
    """The status fields of a tally (wire names)."""
    ranked = sorted(tally.evictions.items(), key=lambda rc: (-rc[1], rc[0]))[:MAX_REASONS]
    return {
        "energyUsedTodayKWh": round(tally.energy_kwh, 3),
        "energyDay": tally.day,
        "evictions": [{"reason": r, "count": n} for r, n in ranked],
    }


def tally_write_due(stored: Mapping[str, Any], tally: PoolTally, now: datetime) -> bool:
    """True when the stored status should take the tally now: another day, other evictions, no
    energy stored yet, or energy off by the deadband and not written within the minimum
    interval."""
    fields = tally_fields(tally)
    if str(stored.get("energyDay") or "") != tally.day:
        return True
    if _counts(stored.get("evictions")) != _counts(fields["evictions"]):
        return True
    if stored.get("evictions") is None:
        return True
    energy = _num(stored.get("energyUsedTodayKWh"))
    if energy is None:
        return True
    if abs(tally.energy_kwh - energy) < ENERGY_DEADBAND_KWH:
        return False
    last = tally.energy_written_at
    return last is None or (now - last).total_seconds() >= ENERGY_WRITE_MIN_SECONDS


class EvictionLedger:
    """Removals from pools' vehicles not yet taken into a tally: pool -> (day, reason) -> n."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._pending: dict[str, Counter[tuple[str, str]]] = {}

    def record(self, pool: str, reason: str, now: datetime | None = None) -> None:
        day = utc_day(now or self.clock.now())
        self._pending.setdefault(pool, Counter())[(day, reason)] += 1

    def take(self, pool: str) -> list[tuple[str, str, int]]:
        """``(day, reason, count)`` recorded for ``pool`` since the last take (and forget them)."""
        pending = self._pending.pop(pool, None)
        return [(day, reason, n) for (day, reason), n in sorted((pending or {}).items())]

    def forget(self, pool: str) -> None:
        self._pending.pop(pool, None)
