"""Seeded stay patterns: when cars arrive, when they leave, what the trip in between costs.

A pool's day is a list of :class:`StayPattern` (a depot van: one overnight stay; a commuter: one
stay at work on weekdays; a taxi: a night stay and a midday break). Each car draws its own times
from the patterns' normal distributions every day, so no two cars (or days) are alike, and the
same seed gives the same fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DAY = 86400.0
HOUR = 3600.0
MIN_GAP_SECONDS = 900.0
"""A car is away at least this long between two stays (shorter gaps drop the later stay)."""


@dataclass(frozen=True, slots=True)
class Normal:
    """A normal distribution clipped to ``[low, high]``."""

    mean: float
    std: float = 0.0
    low: float = -np.inf
    high: float = np.inf

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        x = (
            rng.normal(self.mean, self.std, size=shape)
            if self.std > 0
            else np.full(shape, self.mean)
        )
        return np.clip(x, self.low, self.high)


@dataclass(frozen=True, slots=True)
class StayPattern:
    """One parked stay per active day.  Hours are hours since the arrival day's midnight (site
    time = UTC here); a departure hour whose mean is not after the arrival's mean is on the next
    day, and one above 24 runs on into later days (Saturday 18:00 to Monday 07:00: 55)."""

    arrive_hour: Normal
    depart_hour: Normal
    trip_kwh: Normal
    """Energy the trip before this arrival took out of the battery, kWh."""
    weekdays: frozenset[int] = frozenset(range(7))
    """Days (0 = Monday) on which the stay starts."""


@dataclass(frozen=True, slots=True)
class Stay:
    """One parked, plugged-in stay: ``arrive`` and ``depart`` in epoch s."""

    arrive: float
    depart: float
    trip_kwh: float


def make_stays(
    rng: np.random.Generator,
    patterns: Sequence[StayPattern],
    n_cars: int,
    start: float,
    days: int,
) -> list[list[Stay]]:
    """Per car, its stays overlapping ``[start, start + days)`` in time order.

    ``start`` must be a UTC midnight.  Draws are made pattern by pattern for the whole
    ``(n_cars, days + 3)`` grid (days -2 and -1 included, so a car can be parked at
    ``start``), which keeps the fleet identical for a seed whatever is done with it afterwards."""
    end = start + days * DAY
    raw: list[list[Stay]] = [[] for _ in range(n_cars)]
    n_days = days + 3  # days -2 and -1: stays that began before the start
    for pat in patterns:
        a_h = pat.arrive_hour.sample(rng, (n_cars, n_days))
        d_h = pat.depart_hour.sample(rng, (n_cars, n_days))
        trip = np.maximum(pat.trip_kwh.sample(rng, (n_cars, n_days)), 0.0)
        overnight = pat.depart_hour.mean <= pat.arrive_hour.mean
        for d in range(n_days):
            day0 = start + (d - 2) * DAY
            weekday = int(((day0 // DAY) + 3) % 7)  # 1970-01-01 was a Thursday
            if weekday not in pat.weekdays:
                continue
            for c in range(n_cars):
                arrive = day0 + float(a_h[c, d]) * HOUR
                depart = day0 + float(d_h[c, d]) * HOUR + (DAY if overnight else 0.0)
                if depart <= arrive + MIN_GAP_SECONDS or depart <= start or arrive >= end:
                    continue
                raw[c].append(Stay(arrive, depart, float(trip[c, d])))
    out: list[list[Stay]] = []
    for stays in raw:
        stays.sort(key=lambda s: (s.arrive, s.depart))
        kept: list[Stay] = []
        for s in stays:
            if kept and s.arrive < kept[-1].depart + MIN_GAP_SECONDS:
                continue
            kept.append(s)
        out.append(kept)
    return out
