"""Site conditions in virtual time: ambient temperature, electricity prices, power cap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DAY = 86400.0
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Ambient:
    """Daily sinusoid: ``mean_c ± amplitude_c``, warmest at ``peak_hour``."""

    mean_c: float = 15.0
    amplitude_c: float = 5.0
    peak_hour: float = 15.0

    def at(self, t: float) -> float:
        h = (t % DAY) / HOUR
        return self.mean_c + self.amplitude_c * math.cos((h - self.peak_hour) / 24.0 * 2 * math.pi)


@dataclass(frozen=True, slots=True)
class TimeOfUse:
    """Energy price per kWh by hour of day: ``periods`` are ``(from_hour, price)`` sorted by
    hour, the first starting at 0."""

    periods: tuple[tuple[float, float], ...]

    def price(self, t: float) -> float:
        h = (t % DAY) / HOUR
        price = self.periods[0][1]
        for start, p in self.periods:
            if h >= start:
                price = p
        return price

    def boundaries(self, start: float, end: float) -> list[float]:
        """Epoch times in ``[start, end)`` where the price changes."""
        out: list[float] = []
        day = math.floor(start / DAY) * DAY
        while day < end:
            for h, _ in self.periods:
                t = day + h * HOUR
                if start <= t < end:
                    out.append(t)
            day += DAY
        return out


@dataclass(frozen=True, slots=True)
class DemandResponse:
    """A demand-response event: the site cap is ``cap_kw`` over ``[start, end)`` (epoch s)."""

    start: float
    end: float
    cap_kw: float


@dataclass(frozen=True, slots=True)
class SiteCap:
    """The site's grid connection cap and its demand-response events."""

    cap_kw: float
    events: Sequence[DemandResponse] = ()

    def cap_at(self, t: float) -> float:
        cap = self.cap_kw
        for ev in self.events:
            if ev.start <= t < ev.end:
                cap = min(cap, ev.cap_kw)
        return cap

    def factor_at(self, t: float) -> float:
        """The cap now over the normal cap (1.0 outside events)."""
        return self.cap_at(t) / self.cap_kw if self.cap_kw > 0 else 0.0
