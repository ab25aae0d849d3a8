"""When the agent writes: deadband + heartbeat (pure, clock passed in).

10,000 cars must not flood the API server, so a reading is published only when it differs
meaningfully from the last *published* one (slow drift accumulates until it crosses the band),
when a discrete signal changes (plugged-in, departure, target SoC: immediately), when a value
appears or disappears, or when ``max_silence_seconds`` passed since the last write (heartbeat:
refreshes ``observed-at`` so the operator does not judge the car stale).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from tokenfleet.agent.signals import Sample, VehicleSignals

__all__ = ["DEFAULT_DEADBAND", "Deadband", "Decision", "decide"]


@dataclass(frozen=True, slots=True)
class Deadband:
    """Thresholds. A numeric change publishes when ``|new - old| >= threshold``."""

    soc_percent: float = 1.0
    battery_temp_c: float = 1.0
    compute_temp_c: float = 1.0
    charger_power_kw: float = 0.5
    bandwidth_fraction: float = 0.1
    """Relative band for bandwidth (10 %), at least ``bandwidth_min_mbps``."""
    bandwidth_min_mbps: float = 1.0
    max_silence_seconds: float = 60.0
    """Heartbeat: publish at least this often. Keep it well below the pools' staleAfterSeconds."""


@dataclass(frozen=True, slots=True)
class Decision:
    publish: bool
    reasons: tuple[str, ...]
    """Why (e.g. ``("soc_percent",)``, ``("heartbeat",)``, ``("first",)``); empty when not."""


DEFAULT_DEADBAND = Deadband()

_IMMEDIATE = ("plugged_in", "departure_time", "target_soc_percent")


def decide(
    last: Sample | None,
    last_published_at: datetime | None,
    current: Sample,
    now: datetime,
    band: Deadband = DEFAULT_DEADBAND,
) -> Decision:
    """Publish ``current``? ``last``/``last_published_at``: the last successful write (``None``
    before the first). The heartbeat needs a newer sample (``observed_at`` advanced): the agent
    never refreshes the time of data it has not seen again."""
    if last is None or last_published_at is None:
        return Decision(True, ("first",))
    reasons: list[str] = []
    for f in fields(VehicleSignals):
        old, new = getattr(last.signals, f.name), getattr(current.signals, f.name)
        if old == new:
            continue
        if old is None or new is None or f.name in _IMMEDIATE:
            reasons.append(f.name)
            continue
        if f.name == "bandwidth_mbps":
            threshold = max(band.bandwidth_min_mbps, abs(old) * band.bandwidth_fraction)
        else:
            threshold = getattr(band, f.name)
        if abs(new - old) >= threshold:
            reasons.append(f.name)
    if (
        not reasons
        and current.observed_at > last.observed_at
        and (now - last_published_at).total_seconds() >= band.max_silence_seconds
    ):
        reasons.append("heartbeat")
    return Decision(bool(reasons), tuple(reasons))
