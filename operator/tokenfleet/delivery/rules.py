"""May a node start downloading a model now? (pure; the operator and the cache share it)

A rack always may. A car may only while it is plugged in (when its pool requires it for
serving, it requires it for downloading too), when its link (``bandwidth-mbps``) is at or above
the pool's ``delivery.minBandwidthMbps``, and when the download finishes before the car must be
empty: ``now + fetch_seconds <= departure - drainLeadSeconds``, where ``fetch_seconds =
bytes * 8 / (bandwidth * 1e6) * delivery.fetchTimeMarginPercent/100`` (size / bandwidth, with a
margin). Unknown values never count as good.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["FetchVerdict", "FetchWindow", "NoFetch", "fetch_seconds", "may_fetch"]


class NoFetch(StrEnum):
    """Why a download is not started (CamelCase reasons, shown in status and Events)."""

    NOT_PLUGGED_IN = "FetchNotPluggedIn"
    LOW_BANDWIDTH = "FetchLowBandwidth"
    DEPARTS_BEFORE_FETCH = "FetchWouldNotFinish"
    UNKNOWN_LINK = "FetchLinkUnknown"


@dataclass(frozen=True, slots=True)
class FetchWindow:
    """What a car's telemetry and its pool say about downloading (``None`` = unknown)."""

    plugged_in: bool | None
    bandwidth_mbps: float | None
    departure_time: float | None
    """Epoch s."""
    drain_lead_seconds: float
    min_bandwidth_mbps: float
    require_plugged_in: bool = True
    margin_percent: float = 150.0


@dataclass(frozen=True, slots=True)
class FetchVerdict:
    ok: bool
    reason: NoFetch | None = None
    message: str = ""
    seconds: float = 0.0
    """Estimated download time (0 for racks and for nothing left to fetch)."""


def fetch_seconds(size_bytes: int, bandwidth_mbps: float, margin_percent: float = 100.0) -> float:
    """Seconds to move ``size_bytes`` over ``bandwidth_mbps`` Mbit/s, times the margin."""
    if size_bytes <= 0:
        return 0.0
    if bandwidth_mbps <= 0:
        return float("inf")
    return size_bytes * 8.0 / (bandwidth_mbps * 1e6) * margin_percent / 100.0


def may_fetch(window: FetchWindow | None, size_bytes: int, now: float) -> FetchVerdict:
    """The verdict for downloading ``size_bytes`` more bytes now. ``window`` ``None`` = a rack
    (always allowed)."""
    if window is None or size_bytes <= 0:
        return FetchVerdict(True)
    if window.require_plugged_in and window.plugged_in is not True:
        return FetchVerdict(False, NoFetch.NOT_PLUGGED_IN, "the car is not plugged in")
    bw = window.bandwidth_mbps
    if bw is None:
        return FetchVerdict(False, NoFetch.UNKNOWN_LINK, "the car's bandwidth is unknown")
    if bw < window.min_bandwidth_mbps:
        return FetchVerdict(
            False,
            NoFetch.LOW_BANDWIDTH,
            f"link {bw:g} Mbit/s is below the pool's download floor "
            f"{window.min_bandwidth_mbps:g} Mbit/s",
        )
    seconds = fetch_seconds(size_bytes, bw, window.margin_percent)
    if window.departure_time is None:
        return FetchVerdict(
            False, NoFetch.DEPARTS_BEFORE_FETCH, "the car's departure time is unknown", seconds
        )
    available = window.departure_time - window.drain_lead_seconds - now
    if seconds > available:
        return FetchVerdict(
            False,
            NoFetch.DEPARTS_BEFORE_FETCH,
            f"download of {size_bytes} B needs {seconds:.0f} s at {bw:g} Mbit/s; "
            f"{max(available, 0.0):.0f} s left before departure less the drain lead",
            seconds,
        )
    return FetchVerdict(True, None, "", seconds)
