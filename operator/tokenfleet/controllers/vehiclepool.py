"""VehiclePool status: vehicles total / eligible / serving, why the rest are not, capacity.

A kopf timer per VehiclePool (every :data:`INTERVAL_SECONDS`) aggregates the pool's vehicles from
the node indexes (selected by ``spec.nodeSelector``; no LIST) and patches status only when the
aggregate changed. Eligibility is the placement engine's own rule
(:func:`tokenfleet.placement.state.vehicle_state`, fed the same ``PoolPolicy`` the planner builds
with :func:`tokenfleet.controllers.snapshot.pool_of`), so the reasons here are exactly the ones the
planner acts on: a vehicle counts as *eligible* when it may take new work (``state.new is None``),
otherwise it is counted under that reason (``NotPluggedIn``, ``BelowReserveSoC``,
``DepartureWithinDrainLead``, ``BatteryTooHot``, ``ComputeTooHot``, ``LowBandwidth``,
``StaleTelemetry``, ``MissingTelemetry``, ``NodeCordoned``, ...).

*Serving* vehicles host at least one ``Loaded`` replica according to the InferenceJobs' decision
record (``status.placements``), from the ``serving_by_node`` index (``nodes.py``).
``capacity.memoryMiB`` is the allocatable memory of the eligible vehicles,
``capacity.tokensPerSecond`` the tokens/s of the replicas loaded on the pool's vehicles.

``energyUsedTodayKWh`` / ``energyDay`` / ``evictions`` are the pool's daily account
(:mod:`tokenfleet.controllers.poolstats`): the watts of those loaded replicas integrated tick by
tick, and the removals the job daemons recorded, kept in the pool's memo, continued from status
after a restart, reset on the first tick of a new UTC day and written with a deadband (the
planner feeds ``energyUsedTodayKWh`` to the engine's daily energy budget).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

import kopf
from pydantic import ValidationError

from tokenfleet.api.conditions import set_kstatus
from tokenfleet.api.models import GROUP, VERSION
from tokenfleet.controllers import events
from tokenfleet.controllers.context import context_of
from tokenfleet.controllers.nodes import ServingReplica, select_nodes, serving_from_job
from tokenfleet.controllers.poolstats import (
    PoolTally,
    advance,
    tally_fields,
    tally_from_status,
    tally_write_due,
)
from tokenfleet.controllers.snapshot import PoolView, pool_of, vehicle_node
from tokenfleet.metrics import POOL_INELIGIBLE, POOL_VEHICLES, TELEMETRY_AGE, clear_gauge
from tokenfleet.placement.model import PoolPolicy
from tokenfleet.placement.state import vehicle_state
from tokenfleet.telemetry.node import NodeInfo, NodeRole

__all__ = [
    "INTERVAL_SECONDS",
    "ServingReplica",
    "pool_status",
    "pool_watts",
    "serving_from_job",
    "status_changed",
    "vehicle_node",
]

INTERVAL_SECONDS: Final = 10.0
_TALLY: Final = "tokenfleet_pool_tally"
MAX_REASONS: Final = 32


def pool_status(
    *,
    policy: PoolPolicy,
    cordoned: bool,
    generation: int | None,
    conditions: Iterable[Mapping[str, Any]] | None,
    nodes: Sequence[NodeInfo],
    serving: Mapping[str, Iterable[ServingReplica]],
    now: datetime,
) -> tuple[dict[str, Any], float | None]:
    """The pool's status fields (pure) and the age in seconds of its oldest vehicle reading."""
    now_s = now.timestamp()
    total = eligible = serving_count = 0
    memory = 0
    tokens = 0.0
    reasons: Counter[str] = Counter()
    oldest: float | None = None
    for info in nodes:
        if info.deleting or not info.is_vehicle:
            continue
        total += 1
        vehicle = vehicle_node(info, policy.name)
        state = vehicle_state(vehicle, policy, now_s)
        if state.new is None:
            eligible += 1
            memory += vehicle.memory_mib
        else:
            reasons[state.new.value] += 1
        replicas = list(serving.get(info.name, ()))
        if any(r.replicas > 0 for r in replicas):
            serving_count += 1
            tokens += sum(r.tokens_per_second for r in replicas)
        if vehicle.observed_at is not None:
            age = max(0.0, now_s - vehicle.observed_at)
            oldest = age if oldest is None else max(oldest, age)
    ineligible = [
        {"reason": reason, "count": count}
        for reason, count in sorted(reasons.items(), key=lambda rc: (-rc[1], rc[0]))
    ][:MAX_REASONS]

    if cordoned:
        ready = (False, "Cordoned", "spec.cordoned is true: no new placements")
    elif total == 0:
        ready = (False, "NoVehicles", "no node matches spec.nodeSelector")
    elif eligible == 0:
        top = ", ".join(f"{r['reason']}={r['count']}" for r in ineligible[:3])
        ready = (False, "NoEligibleVehicles", f"0/{total} vehicles eligible ({top})")
    else:
        ready = (True, "VehiclesEligible", f"{eligible}/{total} vehicles eligible")
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "vehicles": {"total": total, "eligible": eligible, "serving": serving_count},
        "ineligible": ineligible,
        "capacity": {"memoryMiB": memory, "tokensPerSecond": round(tokens, 2)},
        "conditions": set_kstatus(  # Ready; a valid spec is never Stalled
            conditions,
            ready=ready[0],
            reason=ready[1],
            message=ready[2],
            observed_generation=generation,
            now=now,
        ),
    }
    return status, oldest


def pool_watts(nodes: Iterable[NodeInfo], serving: Mapping[str, Iterable[ServingReplica]]) -> float:
    """Declared draw of the replicas loaded on the pool's vehicles now, W."""
    return sum(r.watts for info in nodes if info.is_vehicle for r in serving.get(info.name, ()))


def _conditions_key(conditions: Any) -> list[tuple[Any, ...]]:
    return sorted(
        tuple(c.get(k) for k in ("type", "status", "reason", "message", "observedGeneration"))
        for c in conditions or ()
        if isinstance(c, Mapping)
    )


def status_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when any field this controller owns differs from the stored status."""
    for key, value in desired.items():
        if key == "conditions":
            if _conditions_key(current.get(key)) != _conditions_key(value):
                return True
        elif current.get(key) != value:
            return True
    return False


def _export(name: str, status: Mapping[str, Any], oldest: float | None, seen: set[str]) -> set[str]:
    for state in ("total", "eligible", "serving"):
        POOL_VEHICLES.labels(name, state).set(status["vehicles"][state])
    reasons = {r["reason"] for r in status["ineligible"]}
    for r in status["ineligible"]:
        POOL_INELIGIBLE.labels(name, r["reason"]).set(r["count"])
    for gone in seen - reasons:
        clear_gauge(POOL_INELIGIBLE, name, gone)
    if oldest is None:
        clear_gauge(TELEMETRY_AGE, "vehiclepool", name)
    else:
        TELEMETRY_AGE.labels("vehiclepool", name).set(oldest)
    return reasons


@kopf.timer(GROUP, VERSION, "vehiclepools", interval=INTERVAL_SECONDS, id="vehiclepool_status")
async def vehiclepool_status(
    name: str,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Aggregate the pool's vehicles; patch status only when it changed."""
    if meta.get("deletionTimestamp"):
        return
    context = context_of(memo)
    generation = meta.get("generation")
    gen = int(generation) if generation is not None else None
    view = PoolView(
        name=name,
        uid=str(meta.get("uid", "")),
        generation=gen or 0,
        spec=dict(spec),
        status=dict(status),
    )
    try:
        policy, selector, cordoned = pool_of(view)
    except (ValidationError, ValueError, TypeError) as error:
        message = str(error).splitlines()[0][:1000]
        # a permanent failure until the spec changes: Stalled (kstatus Failed, Argo Degraded)
        conditions = set_kstatus(
            status.get("conditions"),
            ready=False,
            reason="InvalidSpec",
            message=message,
            stalled=True,
            observed_generation=gen,
            now=context.clock.now(),
        )
        if _conditions_key(conditions) != _conditions_key(status.get("conditions")):
            events.post(context.events, body, "Warning", "InvalidSpec", message)
            patch.status["observedGeneration"] = gen
            patch.status["conditions"] = conditions
        return
    fleet = context.fleet
    if not fleet.nodes_synced:
        return  # the node watch has not listed the Nodes yet: no count of an unknown fleet
    nodes = select_nodes(
        selector, by_name=fleet.nodes_by_name, by_pool=fleet.nodes_by_pool, role=NodeRole.VEHICLE
    )
    now = context.clock.now()
    serving = fleet.serving_by_node
    desired, oldest = pool_status(
        policy=policy,
        cordoned=cordoned,
        generation=gen,
        conditions=status.get("conditions"),
        nodes=nodes,
        serving=serving,
        now=now,
    )
    seen = memo.get("tokenfleet_pool_reasons")
    memo["tokenfleet_pool_reasons"] = _export(
        name, desired, oldest, seen if isinstance(seen, set) else set()
    )
    tally = memo.get(_TALLY)
    if not isinstance(tally, PoolTally):
        tally = tally_from_status(status, now)
    tally = advance(
        tally, now=now, watts=pool_watts(nodes, serving), evicted=context.evictions.take(name)
    )
    changed = status_changed(status, desired)
    if changed or tally_write_due(status, tally, now):
        # the account rides along with any write; on its own it waits for its deadband
        fields = tally_fields(tally)
        for key, value in ({**desired, **fields} if changed else fields).items():
            patch.status[key] = value
        tally = replace(tally, energy_written_at=now)
    memo[_TALLY] = tally


@kopf.on.delete(GROUP, VERSION, "vehiclepools", optional=True, id="vehiclepool_forget")
def vehiclepool_forget(name: str, memo: kopf.Memo, **_: Any) -> None:
    for state in ("total", "eligible", "serving"):
        clear_gauge(POOL_VEHICLES, name, state)
    seen = memo.get("tokenfleet_pool_reasons")
    for reason in seen if isinstance(seen, set) else ():
        clear_gauge(POOL_INELIGIBLE, name, reason)
    clear_gauge(TELEMETRY_AGE, "vehiclepool", name)
    context_of(memo).evictions.forget(name)
