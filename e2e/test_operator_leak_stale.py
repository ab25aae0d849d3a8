"""A leak reading cordons the tank (Drain policy: its replicas move; Cordon policy: they stay,
nothing new lands there); stale tank telemetry stops new placements there without evicting."""

from __future__ import annotations

import time

from e2e.operator_kit import (  # noqa: F401  (fixtures)
    GROUP,
    RACK_FP16,
    RACK_MODEL,
    VERSION,
    OperatorProcess,
    Rig,
    operator_fixture,
    rig_fixture,
    wait_for,
)


def _tank_condition(rig: Rig, name: str, type_: str) -> str | None:
    for c in (rig.tank_status(name) or {}).get("conditions") or ():
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def test_leak_drains_or_cordons_the_tank(rig: Rig, operator: OperatorProcess) -> None:
    rig.start_tritons(2, [RACK_MODEL])
    rig.start_sim([])
    drain_tank = rig.create_tank("wet", leakPolicy={"action": "Drain"})
    # keep the replica off the Cordon-policy tank at first: it has no reading yet (stale)
    cordon_tank = rig.create_tank(
        "dry", leakPolicy={"action": "Cordon"}, sim_fields={"http_status": 503}
    )
    racks = {
        drain_tank: rig.add_rack("wet0", 0, drain_tank),
        cordon_tank: rig.add_rack("dry0", 1, cordon_tank),
    }
    rig.wait_runtime_pods()
    rig.create_job("wet", [RACK_FP16], replicas=(1, 1), target_tps=40, targets=["Rack"])
    st = rig.wait_ready("wet", 1)
    assert st["placements"][0]["node"] == racks[drain_tank]
    assert rig.sim is not None
    rig.sim.set(cordon_tank, http_status=200)
    wait_for(
        lambda: _tank_condition(rig, cordon_tank, "TelemetryFresh") == "True",
        30,
        f"{cordon_tank} telemetry fresh",
        describe=lambda: rig.tank_status(cordon_tank),
    )

    # A critical leak under the Drain policy: the tank is cordoned and its replica moves.
    rig.sim.set_leak(drain_tank, "Moisture1", "Critical")
    wait_for(
        lambda: _tank_condition(rig, drain_tank, "Cordoned") == "True",
        30,
        f"{drain_tank} Cordoned after the leak reading",
        describe=lambda: rig.tank_status(drain_tank),
    )
    wait_for(
        lambda: (
            [(p["node"], p["state"]) for p in rig.placements("wet", state=None)]
            == [(racks[cordon_tank], "Loaded")]
        ),
        40,
        "the replica to leave the leaking tank",
        describe=lambda: rig.status("wet"),
    )
    wait_for(
        lambda: [
            e
            for e in rig.events("wet")
            if e["reason"] == "TankLeak" and racks[drain_tank] in e["message"]
        ],
        20,
        "a TankLeak Event naming the drained node",
        describe=lambda: rig.events("wet"),
    )
    assert RACK_MODEL not in rig.loaded_models(racks[drain_tank])

    # A critical leak under the Cordon policy: cordoned, the replica stays, nothing new lands.
    rig.sim.set_leak(cordon_tank, "Moisture1", "Critical")
    wait_for(
        lambda: _tank_condition(rig, cordon_tank, "Cordoned") == "True",
        30,
        f"{cordon_tank} Cordoned after the leak reading",
        describe=lambda: rig.tank_status(cordon_tank),
    )
    rig.scale_job("wet", 2, tokens_per_replica=40)
    wait_for(
        lambda: (
            (job := rig.job("wet"))["status"].get("observedGeneration")
            == job["metadata"]["generation"]
        ),
        20,
        "the scale-up to be observed",
        describe=lambda: rig.status("wet"),
    )
    time.sleep(3)
    st = rig.status("wet")
    assert [p["node"] for p in st["placements"]] == [racks[cordon_tank]], st
    assert st["placements"][0]["state"] == "Loaded"
    assert st["desiredReplicas"] == 1 and st["shortfallReason"], st
    assert RACK_MODEL in rig.loaded_models(racks[cordon_tank])


def test_stale_telemetry_blocks_new_placements_without_evicting(
    rig: Rig, operator: OperatorProcess
) -> None:
    rig.start_tritons(2, [RACK_MODEL])
    rig.start_sim([])
    tank = rig.create_tank("tank", telemetry={"staleAfterSeconds": 4})
    rig.add_rack("rack0", 0, tank)
    rig.add_rack("rack1", 1, tank)
    rig.wait_runtime_pods()
    rig.create_job("stale", [RACK_FP16], replicas=(1, 1), target_tps=40, targets=["Rack"])
    first = rig.wait_ready("stale", 1)["placements"][0]["node"]

    # The tank's Redfish endpoint stops answering: its last reading ages past staleAfterSeconds.
    assert rig.sim is not None
    rig.sim.set(tank, http_status=500)
    wait_for(
        lambda: _tank_condition(rig, tank, "TelemetryFresh") == "False",
        30,
        "TelemetryFresh=False",
        describe=lambda: rig.tank_status(tank),
    )
    time.sleep(5)
    rig.scale_job("stale", 2, tokens_per_replica=40)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        st = rig.status("stale")
        placements = st.get("placements") or []
        # nothing new placed on a guess, and the existing replica is not evicted on a guess
        assert [(p["node"], p["state"]) for p in placements] == [(first, "Loaded")], st
        time.sleep(0.3)
    st = rig.status("stale")
    assert st["desiredReplicas"] == 1 and st["shortfallReason"] == "StaleTelemetry", st
    assert RACK_MODEL in rig.loaded_models(first)

    # Telemetry comes back: the second replica is placed.
    rig.sim.set(tank, http_status=200)
    rig.wait_ready("stale", 2, timeout=60)
