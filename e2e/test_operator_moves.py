"""Vehicle reactions: a car unplugs, its SoC drops under the reserve, its departure enters the
drain lead -> its replica moves make-before-break (the job stays at target throughout) and an
Event names the reason. Unsafe-now cases (node deleted, runtime killed, car too hot) drain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    VEHICLE_INT4,
    VEHICLE_MODEL,
    OperatorProcess,
    Rig,
    TargetWatch,
    operator_fixture,
    rfc3339,
    rig_fixture,
    wait_for,
)
from tokenfleet.api.models import GROUP, VERSION


def _placed(rig: Rig, job: str) -> set[str]:
    return {p["node"] for p in rig.placements(job)}


def _settled_without(rig: Rig, job: str, victim: str, replicas: int) -> set[str] | None:
    st = rig.status(job)
    placements = st.get("placements") or []
    nodes = {p["node"] for p in placements if p.get("state") == "Loaded"}
    busy = [p for p in placements if p.get("state") in ("Loading", "Unloading")]
    if victim in nodes or busy or len(nodes) != replicas:
        return None
    return nodes


def _pool_evictions(rig: Rig, pool: str) -> dict[str, int]:
    obj = rig.custom.get_cluster_custom_object(GROUP, VERSION, "vehiclepools", pool)
    return {e["reason"]: e["count"] for e in (obj.get("status") or {}).get("evictions") or ()}


def _move(
    rig: Rig, job: str, victim: str, reason: str, change: dict[str, str], replicas: int = 2
) -> tuple[set[str], TargetWatch]:
    before = _placed(rig, job)
    assert victim in before
    with TargetWatch(rig, job) as watch:
        rig.set_telemetry(victim, **change)
        after = wait_for(
            lambda: _settled_without(rig, job, victim, replicas),
            60,
            f"replica on {victim} to move away ({reason})",
            describe=lambda: rig.status(job).get("placements"),
        )
        # the EndpointSlice follows
        wait_for(
            lambda: set(rig.slice_addresses(job)) == after,
            20,
            "EndpointSlice to list the new placement",
            describe=lambda: rig.slice_addresses(job),
        )
    assert not watch.errors, watch.errors[:3]
    assert len(watch.samples) > 5
    assert watch.min_ready >= replicas, f"ready replicas fell to {watch.min_ready} ({reason})"
    assert watch.min_endpoints >= replicas, (
        f"EndpointSlice dipped to {watch.min_endpoints} endpoints during {reason}"
    )
    # the old runtime no longer has the model; the new one serves it
    assert VEHICLE_MODEL not in rig.loaded_models(victim)
    (new,) = after - before
    assert VEHICLE_MODEL in rig.loaded_models(new)
    assert len(rig.generate(new, VEHICLE_MODEL, "hello there", 4)) == 4
    events = wait_for(
        lambda: [e for e in rig.events(job) if e["reason"] == reason and victim in e["message"]],
        20,
        f"an Event with reason {reason} naming {victim}",
        describe=lambda: rig.events(job),
    )
    assert new in events[0]["message"], events
    return after, watch


def test_vehicle_moves_make_before_break(rig: Rig, operator: OperatorProcess) -> None:
    rig.start_tritons(4, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    cars = [rig.add_vehicle(f"car{i}", i, pool) for i in range(4)]
    rig.wait_runtime_pods()
    rig.create_job("tokens", [VEHICLE_INT4], replicas=(2, 2), target_tps=40, targets=["Vehicle"])
    rig.wait_ready("tokens", 2)

    # 1. a car unplugs
    victim = sorted(_placed(rig, "tokens"))[0]
    _move(rig, "tokens", victim, "NotPluggedIn", {"plugged_in": "false"})
    rig.set_telemetry(victim, plugged_in="true")
    # the pool's status counts today's evictions by reason (VehiclePool timer, 10 s)
    evictions = wait_for(
        lambda: _pool_evictions(rig, pool).get("NotPluggedIn"),
        30,
        f"VehiclePool {pool} status.evictions to list NotPluggedIn",
        describe=lambda: _pool_evictions(rig, pool),
    )
    assert evictions == 1

    # 2. a car's state of charge drops under the pool's reserve (30 %)
    victim = sorted(_placed(rig, "tokens"))[0]
    _move(rig, "tokens", victim, "BelowReserveSoC", {"soc_percent": "25"})

    # 3. a car's departure comes within the drain lead (900 s)
    victim = sorted(_placed(rig, "tokens"))[0]
    soon = rfc3339(datetime.now(UTC) + timedelta(seconds=600))
    _move(rig, "tokens", victim, "DepartureWithinDrainLead", {"departure_time": soon})

    st = rig.wait_ready("tokens", 2)
    assert {p["node"] for p in st["placements"]} <= set(cars)
    assert operator.metric("tokenfleet_moves_total", reason="NotPluggedIn") == 1
    assert operator.metric("tokenfleet_moves_total", reason="BelowReserveSoC") == 1
    assert operator.metric("tokenfleet_moves_total", reason="DepartureWithinDrainLead") == 1


def _wait_moved(rig: Rig, job: str, victim: str, what: str) -> set[str]:
    return wait_for(
        lambda: _settled_without(rig, job, victim, 1),
        60,
        f"replica on {victim} to be re-placed ({what})",
        describe=lambda: rig.status(job).get("placements"),
    )


def _event(rig: Rig, job: str, reason: str, victim: str) -> dict[str, Any]:
    events = wait_for(
        lambda: [e for e in rig.events(job) if e["reason"] == reason and victim in e["message"]],
        20,
        f"an Event with reason {reason} naming {victim}",
        describe=lambda: rig.events(job),
    )
    return events[0]


def test_unsafe_nodes_drain_runtime_failure_node_loss_and_heat(
    rig: Rig, operator: OperatorProcess
) -> None:
    rig.start_tritons(4, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    for i in range(4):
        rig.add_vehicle(f"car{i}", i, pool)
    rig.wait_runtime_pods()
    rig.create_job("solo", [VEHICLE_INT4], replicas=(1, 1), target_tps=20, targets=["Vehicle"])
    rig.wait_ready("solo", 1)

    # a car runs hot: compute above the pool's 85 C limit -> drained and re-placed
    (victim,) = _placed(rig, "solo")
    rig.set_telemetry(victim, compute_temp_c="95")
    _wait_moved(rig, "solo", victim, "ComputeTooHot")
    _event(rig, "solo", "ComputeTooHot", victim)
    assert VEHICLE_MODEL not in rig.loaded_models(victim)

    # the runtime on the serving node dies -> RuntimeFailed, re-placed on a live runtime
    (victim,) = _placed(rig, "solo")
    assert rig.tritons is not None
    rig.tritons[rig.node_runtime[victim]].kill()
    after = _wait_moved(rig, "solo", victim, "runtime killed")
    _event(rig, "solo", "RuntimeFailed", victim)
    (new,) = after
    assert VEHICLE_MODEL in rig.loaded_models(new)

    # the node disappears -> NodeRemoved, re-placed
    victim = new
    rig.fleet.remove_node(victim)
    rig.nodes.remove(victim)
    after = _wait_moved(rig, "solo", victim, "node deleted")
    _event(rig, "solo", "NodeRemoved", victim)
    (new,) = after
    assert VEHICLE_MODEL in rig.loaded_models(new)
    rig.wait_ready("solo", 1)
