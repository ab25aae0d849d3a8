"""The dispatcher's view of the fleet (pure: Kubernetes dicts in, :class:`Slot` lists out).

Replicas come from the job's EndpointSlices exactly as the gateway routes
(:class:`~tokenfleet.gateway.table.RoutingTable`: ready endpoints only, the runtime-endpoint
annotation under the dial policy). A car's ``leave_by`` is its ``departure-time`` telemetry less
its VehiclePool's ``drainLeadSeconds``, read with the operator's own parsers
(:func:`~tokenfleet.telemetry.node.parse_node`, staleness judged at *now* with the pool's
``staleAfterSeconds``); a car that is unplugged, stale or has no departure gets no ``leave_by``
(so no new unit) and a car whose replica left the ready set is no slot at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tokenfleet.batch.core import Slot
from tokenfleet.gateway.table import RoutingTable
from tokenfleet.telemetry.node import NodeInfo, parse_node

__all__ = ["FleetView", "PoolFacts"]

DEFAULT_DRAIN_LEAD_SECONDS = 900.0
DEFAULT_STALE_AFTER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class PoolFacts:
    drain_lead_seconds: float = DEFAULT_DRAIN_LEAD_SECONDS
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS
    require_plugged_in: bool = True


def _pool_facts(obj: Mapping[str, Any]) -> PoolFacts:
    spec = obj.get("spec") or {}
    battery = spec.get("battery") or {}
    try:
        return PoolFacts(
            drain_lead_seconds=float(spec.get("drainLeadSeconds", DEFAULT_DRAIN_LEAD_SECONDS)),
            stale_after_seconds=float(spec.get("staleAfterSeconds", DEFAULT_STALE_AFTER_SECONDS)),
            require_plugged_in=bool(battery.get("requirePluggedIn", True)),
        )
    except (TypeError, ValueError):
        return PoolFacts()


@dataclass
class FleetView:
    """Jobs, EndpointSlices, Nodes and VehiclePools as last seen (fed by watch events)."""

    table: RoutingTable = field(default_factory=RoutingTable)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    pools: dict[str, PoolFacts] = field(default_factory=dict)
    watts: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def set_job(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        self.table.set_job(obj, deleted)
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if deleted:
            self.watts.pop(key, None)
            return
        model = str(((obj.get("spec") or {}).get("model") or {}).get("name") or key[1])
        watts: dict[str, float] = {}
        for v in (obj.get("spec") or {}).get("variants") or ():
            try:
                name = str(v.get("tritonModelName") or f"{model}-{v.get('name')}")
                watts[name] = float(v.get("watts") or 0.0)
            except (TypeError, ValueError):
                continue
        self.watts[key] = watts

    def set_node(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        self.table.set_node(obj, deleted)
        name = str((obj.get("metadata") or {}).get("name") or "")
        if deleted:
            self.nodes.pop(name, None)
        elif name:
            self.nodes[name] = parse_node(obj)

    def set_pool(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if deleted:
            self.pools.pop(name, None)
        elif name:
            self.pools[name] = _pool_facts(obj)

    def leave_by(self, node: str, now: float) -> float | None:
        """Departure less the drain lead (epoch s) of a car that may take work, else None."""
        info = self.nodes.get(node)
        if info is None or info.vehicle is None:
            return None
        pool = self.pools.get(info.pool or "", PoolFacts())
        reading = info.vehicle.at(datetime.fromtimestamp(now, UTC), pool.stale_after_seconds)
        if reading.stale or reading.departure_time is None:
            return None
        if pool.require_plugged_in and reading.plugged_in is not True:
            return None
        return reading.departure_time.timestamp() - pool.drain_lead_seconds

    def slots(self, namespace: str, job_name: str, now: float) -> list[Slot]:
        """The job's ready replicas as slots (cars with their ``leave_by``)."""
        job = self.table.job(namespace, job_name)
        if job is None:
            return []
        watts = self.watts.get((namespace, job_name), {})
        out: list[Slot] = []
        for r in self.table.ready_replicas(job):
            leave_by = self.leave_by(r.node, now) if r.target == "Vehicle" else None
            out.append(
                Slot(
                    key=f"{r.node}|{r.endpoint}|{r.model}",
                    node=r.node,
                    endpoint=r.endpoint,
                    model=r.model,
                    target=r.target,
                    tokens_per_second=r.tokens_per_second,
                    watts=watts.get(r.model, 0.0),
                    leave_by=leave_by,
                )
            )
        return out
