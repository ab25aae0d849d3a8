"""What the live view shows, from what the operator already publishes (pure).

Inputs are the raw objects as the API returns them: ImmersionPods, VehiclePools and
InferenceJobs (their ``status``), the operator's Events on them, and two rates the caller
measures (tokens/s out of the gateway by target). Nothing here asks the operator anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tokenfleet.placement.model import Reason

__all__ = ["MOVE_REASONS", "build_state", "event_row"]

MOVE_REASONS = frozenset(
    {str(r) for r in Reason}
    | {"ReplicaPlaced", "ReplicaLoaded", "Preempted", "ScaledDown", "NodeRemoved", "RuntimeFailed"}
)
"""Event reasons shown as moves (any Event on an InferenceJob is shown; these are highlighted)."""


def _ready(obj: Mapping[str, Any]) -> str:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return str(c.get("status"))
    return "Unknown"


def _num(value: Any) -> float | None:
    try:
        return None if value is None else round(float(value), 3)
    except (TypeError, ValueError):
        return None


def _reason_counts(value: Any) -> dict[str, int]:
    """A status ReasonCounts list (``[{reason, count}]``) as ``{reason: count}``."""
    if isinstance(value, Mapping):
        return {str(k): int(v) for k, v in value.items()}
    out: dict[str, int] = {}
    for item in value or ():
        if isinstance(item, Mapping) and item.get("reason"):
            out[str(item["reason"])] = int(item.get("count") or 0)
    return out


def event_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One Event (as a dict from the API, camelCase) as a row of the moves list."""
    involved = event.get("involvedObject") or {}
    when = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
    return {
        "time": str(when),
        "type": str(event.get("type") or ""),
        "reason": str(event.get("reason") or ""),
        "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
        "message": str(event.get("message") or ""),
        "count": int(event.get("count") or 1),
    }


def build_state(
    tanks: Iterable[Mapping[str, Any]],
    pools: Iterable[Mapping[str, Any]],
    jobs: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    tokens_per_second: Mapping[str, float],
    *,
    now: str,
    max_events: int = 40,
) -> dict[str, Any]:
    """The JSON document ``/live/state`` serves."""
    tank_rows = []
    it_kw = 0.0
    for t in tanks:
        st = t.get("status") or {}
        spec = t.get("spec") or {}
        load = _num(st.get("itLoadKW"))
        it_kw += load or 0.0
        tank_rows.append(
            {
                "name": t["metadata"]["name"],
                "ready": _ready(t),
                "capacityKW": _num((spec.get("power") or {}).get("capacityKW")),
                "itLoadKW": load,
                "powerHeadroomKW": _num(st.get("powerHeadroomKW")),
                "thermalHeadroomKW": _num(st.get("thermalHeadroomKW")),
                "supplyTempC": _num(st.get("supplyTempC")),
                "returnTempC": _num(st.get("returnTempC")),
                "leak": st.get("leakState"),
            }
        )
    pool_rows = []
    energy_kwh = 0.0
    for p in pools:
        st = p.get("status") or {}
        vehicles = st.get("vehicles") or {}
        energy = _num(st.get("energyUsedTodayKWh"))
        energy_kwh += energy or 0.0
        pool_rows.append(
            {
                "name": p["metadata"]["name"],
                "ready": _ready(p),
                "total": vehicles.get("total"),
                "eligible": vehicles.get("eligible"),
                "serving": vehicles.get("serving"),
                "ineligible": _reason_counts(st.get("ineligible")),
                "energyUsedTodayKWh": energy,
            }
        )
    job_rows = []
    for j in jobs:
        st = j.get("status") or {}
        meta = j["metadata"]
        throughput = (j.get("spec") or {}).get("throughput") or {}
        job_rows.append(
            {
                "name": f"{meta.get('namespace', '')}/{meta['name']}",
                "ready": _ready(j),
                "desiredReplicas": st.get("desiredReplicas"),
                "readyReplicas": st.get("readyReplicas"),
                "servedTokensPerSecond": _num(st.get("servedTokensPerSecond")),
                "target": _num(throughput.get("targetTokensPerSecond")),
                "replicas": [
                    {
                        "node": p.get("node"),
                        "target": p.get("target"),
                        "where": p.get("tank") or p.get("pool") or "",
                        "variant": p.get("variant"),
                        "state": p.get("state"),
                        "reason": p.get("reason") or "",
                        "since": p.get("since") or "",
                    }
                    for p in st.get("placements") or ()
                ],
            }
        )
    tanks, pools, jobs = list(tanks), list(pools), list(jobs)
    # Events of objects that exist now (a deleted and re-created job's old Events are not its)
    uids = {(o.get("metadata") or {}).get("uid") for o in (*tanks, *pools, *jobs)} - {None}
    current = [
        e
        for e in events
        if not uids or (e.get("involvedObject") or {}).get("uid") in (uids | {None})
    ]
    rows = sorted((event_row(e) for e in current), key=lambda r: r["time"], reverse=True)
    for row in rows:
        row["move"] = row["reason"] in MOVE_REASONS or " moved to " in row["message"]
    return {
        "now": now,
        "tokensPerSecond": {k: round(v, 1) for k, v in sorted(tokens_per_second.items())},
        "tokensPerSecondTotal": round(sum(tokens_per_second.values()), 1),
        "itLoadKW": round(it_kw, 3),
        "poolEnergyTodayKWh": round(energy_kwh, 4),
        "tanks": sorted(tank_rows, key=lambda r: r["name"]),
        "pools": sorted(pool_rows, key=lambda r: r["name"]),
        "jobs": sorted(job_rows, key=lambda r: r["name"]),
        "events": rows[:max_events],
    }
