"""Tank reactions: the coolant return climbs near its limit (less heat the loop can reject) or the
site power cap is lowered -> replicas shed to fit and come back when it cools / the cap returns;
a temperature oscillating around the threshold does not thrash them (hysteresis)."""

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

# 10 kW per replica, so a few °C of coolant decide how many fit.
FP16 = RACK_FP16 | {"watts": 10000}

# Loop capacity = flow/60 * density * c_p * (maxReturn - supply) = 8.4 kW per °C below 45 °C;
# background = the 3 racks' baseline 3.6 kW. Keeping 3 replicas needs supply <= 41.0 °C,
# adding the 3rd back needs the 20 % band: supply <= 40.0 °C; 2 replicas fit up to 42.19 °C.
COOL, WARM_OK, HOT = 32.0, 40.4, 41.6


def _loaded(rig: Rig, job: str) -> list[str]:
    return sorted(p["node"] for p in rig.placements(job))


def _settled(rig: Rig, job: str, n: int) -> list[str] | None:
    st = rig.status(job)
    placements = st.get("placements") or []
    loaded = [p["node"] for p in placements if p.get("state") == "Loaded"]
    if len(loaded) != n or len(placements) != n or st.get("desiredReplicas") != n:
        return None
    return sorted(loaded)


def _set_coolant(rig: Rig, tank: str, supply: float) -> None:
    assert rig.sim is not None
    rig.sim.set(tank, supply_c=supply, return_c=supply + 3.0)


def _wait_supply(rig: Rig, tank: str, supply: float) -> None:
    wait_for(
        lambda: rig.tank_status(tank).get("supplyTempC") == supply,
        20,
        f"{tank} status to report supply {supply} °C",
        describe=lambda: rig.tank_status(tank),
    )


def test_tank_sheds_and_recovers_without_thrash(rig: Rig, operator: OperatorProcess) -> None:
    rig.start_tritons(3, [RACK_MODEL])
    rig.start_sim([])
    tank = rig.create_tank(
        "tank",
        coolant={"maxSupplyTempC": 43, "maxReturnTempC": 45},
        hysteresisPercent=20,
    )
    for i in range(3):
        rig.add_rack(f"rack{i}", i, tank)
    rig.wait_runtime_pods()
    rig.create_job("heat", [FP16], replicas=(1, 3), target_tps=120, targets=["Rack"])
    rig.wait_ready("heat", 3)

    # Warm but within the hard limit: nothing moves.
    _set_coolant(rig, tank, WARM_OK)
    _wait_supply(rig, tank, WARM_OK)
    time.sleep(2)
    assert len(_loaded(rig, "heat")) == 3

    # Return temperature climbs near the limit: the loop rejects less heat -> shed one.
    _set_coolant(rig, tank, HOT)
    kept = wait_for(
        lambda: _settled(rig, "heat", 2),
        40,
        "one replica shed for thermal headroom",
        describe=lambda: rig.status("heat"),
    )
    shed = wait_for(
        lambda: [e for e in rig.events("heat") if e["reason"] == "TankThermalHeadroom"],
        20,
        "a TankThermalHeadroom Event",
        describe=lambda: rig.events("heat"),
    )
    assert "removed" in shed[0]["message"] or "moved" in shed[0]["message"]
    moves_after_shed = operator.metric("tokenfleet_moves_total", reason="TankThermalHeadroom")
    assert moves_after_shed == 1
    st = rig.status("heat")
    assert st["shortfallReason"] == "TankThermalHeadroom", st
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in st["conditions"])

    # The temperature oscillates around the threshold: no thrash (no re-add, no further shed).
    seen: set[tuple[str, ...]] = set()
    for _ in range(4):
        for supply in (WARM_OK, HOT):
            _set_coolant(rig, tank, supply)
            _wait_supply(rig, tank, supply)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                placements = rig.placements("heat", state=None)
                seen.add(tuple(sorted(f"{p['node']}:{p['state']}" for p in placements)))
                time.sleep(0.2)
    assert seen == {tuple(f"{n}:Loaded" for n in kept)}, seen
    assert operator.metric("tokenfleet_moves_total", reason="TankThermalHeadroom") == 1

    # It cools: the replica comes back.
    _set_coolant(rig, tank, COOL)
    wait_for(
        lambda: _settled(rig, "heat", 3),
        40,
        "the shed replica to come back after cooling",
        describe=lambda: rig.status("heat"),
    )
    rig.wait_ready("heat", 3)

    # The site power cap is lowered (peak shaving): 30 kW * 0.9 - 3.6 kW leaves room for 2.
    rig.custom.patch_cluster_custom_object(
        GROUP, VERSION, "immersionpods", tank, {"spec": {"power": {"capacityKW": 30}}}
    )
    wait_for(
        lambda: _settled(rig, "heat", 2),
        40,
        "one replica shed for the lowered power cap",
        describe=lambda: rig.status("heat"),
    )
    wait_for(
        lambda: [e for e in rig.events("heat") if e["reason"] == "TankPowerBudget"],
        20,
        "a TankPowerBudget Event",
        describe=lambda: rig.events("heat"),
    )
    assert rig.status("heat")["shortfallReason"] == "TankPowerBudget"

    # The cap is raised again: back to 3.
    rig.custom.patch_cluster_custom_object(
        GROUP, VERSION, "immersionpods", tank, {"spec": {"power": {"capacityKW": 100}}}
    )
    rig.wait_ready("heat", 3, timeout=60)
