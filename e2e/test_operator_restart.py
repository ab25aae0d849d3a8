"""The operator (``tokenfleet run`` subprocess) is SIGKILLed mid-reconcile and restarted: it
converges from its decision record with no duplicate and no lost placement; a model found on a
runtime without a record entry is adopted or unloaded."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from e2e.cluster.fleet import Fleet
from e2e.operator_kit import (  # noqa: F401  (fixtures)
    VEHICLE_INT4,
    VEHICLE_MODEL,
    OperatorProcess,
    Rig,
    rig_fixture,
    wait_for,
)

REPLICAS = 2


def _consistent(rig: Rig, job: str) -> dict[str, object] | None:
    """Record == runtimes == EndpointSlice, REPLICAS Loaded, nothing in flight."""
    st = rig.status(job)
    placements = st.get("placements") or []
    nodes = [p["node"] for p in placements]
    if len(nodes) != REPLICAS or any(p["state"] != "Loaded" for p in placements):
        return None
    if len(set(nodes)) != len(nodes):
        return None
    serving = {n for n in rig.nodes if VEHICLE_MODEL in rig.loaded_models(n)}
    if serving != set(nodes):
        return None
    if set(rig.slice_addresses(job)) != set(nodes):
        return None
    return {"nodes": sorted(nodes), "ready": st.get("readyReplicas")}


def _describe(rig: Rig, job: str) -> str:
    runtimes = {n: sorted(rig.loaded_models(n)) for n in rig.nodes}
    return json.dumps(
        {
            "placements": rig.status(job).get("placements"),
            "runtimes": runtimes,
            "slice": rig.slice_addresses(job),
        },
        indent=1,
    )


def _kill_when_busy(
    rig: Rig,
    op: OperatorProcess,
    job: str,
    wanted: frozenset[str] = frozenset({"Loading", "Unloading"}),
    timeout: float = 20,
) -> str:
    """SIGKILL the operator as soon as the record shows a replica in one of ``wanted``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {p["state"] for p in rig.placements(job, state=None)}
        busy = states & wanted
        if busy:
            op.kill(signal.SIGKILL)
            return "+".join(sorted(busy))
        time.sleep(0.02)
    op.kill(signal.SIGKILL)
    return "settled"


def _load_orphan(rig: Rig, node: str) -> None:
    endpoint = rig.endpoint(rig.node_runtime[node])
    req = urllib.request.Request(
        f"http://{endpoint}/v2/repository/models/{VEHICLE_MODEL}/load", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def test_sigkill_mid_reconcile_converges_without_duplicates_or_losses(
    rig: Rig, fleet: Fleet, namespace: str, tmp_path: Path
) -> None:
    rig.start_tritons(4, [VEHICLE_MODEL])
    pool = rig.create_pool("pool")
    cars = [rig.add_vehicle(f"car{i}", i, pool) for i in range(4)]
    rig.wait_runtime_pods()
    op = OperatorProcess(fleet, [namespace], tmp_path / "operator.log")
    op.start()
    try:
        rig.create_job("crash", [VEHICLE_INT4], replicas=(REPLICAS, REPLICAS), target_tps=40)
        first = _kill_when_busy(rig, op, "crash")  # killed during the very first placement
        op.start()
        wait_for(
            lambda: _consistent(rig, "crash"),
            60,
            "convergence after kill #1",
            describe=lambda: _describe(rig, "crash"),
        )
        phases = [first]
        unplugged: str | None = None
        orphan: str | None = None
        for round_ in range(4):
            placed = sorted(p["node"] for p in rig.placements("crash"))
            if unplugged is not None:
                rig.set_telemetry(unplugged, plugged_in="true")
            unplugged = placed[round_ % len(placed)]
            rig.set_telemetry(unplugged, plugged_in="false")
            wanted = frozenset({"Unloading"} if round_ % 2 == 0 else {"Loading"})
            phases.append(_kill_when_busy(rig, op, "crash", wanted))
            if round_ == 1:
                # While the operator is down, a model shows up on a runtime with no record entry.
                recorded = {p["node"] for p in rig.placements("crash", state=None)}
                spare = next(c for c in cars if c not in recorded and c != unplugged)
                _load_orphan(rig, spare)
                orphan = spare
            op.start()
            result = wait_for(
                lambda: _consistent(rig, "crash"),
                60,
                f"convergence after kill #{round_ + 2} ({phases[-1]})",
                describe=lambda: _describe(rig, "crash"),
            )
            assert unplugged not in result["nodes"], result  # type: ignore[operator]
        assert op.starts == 6
        busy_kills = [p for p in phases if p != "settled"]
        assert len(busy_kills) >= 3, f"too few kills landed mid-reconcile: {phases}"
        rig.wait_ready("crash", REPLICAS)
        # The orphan was unloaded (the plan did not want a replica there) and said so.
        assert orphan is not None
        assert VEHICLE_MODEL not in rig.loaded_models(orphan) or orphan in {
            p["node"] for p in rig.placements("crash")
        }
        assert any(
            e["reason"] == "OrphanUnloaded" and orphan in e["message"] for e in rig.events("crash")
        ) or orphan in {p["node"] for p in rig.placements("crash")}, rig.events("crash")
        assert op.alive()
        print("kill phases:", phases)
    finally:
        op.stop()
