"""A Critical leak latches: the tank stays cordoned (and drained) after its detectors read OK
again, across an operator restart, until a person acknowledges it with one kubectl command
(``kubectl annotate immersionpod <name> tokenfleet.io/leak-acknowledged=<note>``), which the
operator accepts only while every detector reads OK."""

from __future__ import annotations

import time
from typing import Any

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

ACK = "tokenfleet.io/leak-acknowledged"


def _cond(rig: Rig, name: str, type_: str) -> tuple[str, str, str] | None:
    for c in rig.tank_status(name).get("conditions") or ():
        if c.get("type") == type_:
            return str(c["status"]), str(c["reason"]), str(c.get("message", ""))
    return None


def _annotations(rig: Rig, name: str) -> dict[str, str]:
    return dict((rig.tank(name).get("metadata") or {}).get("annotations") or {})


def _tank_events(rig: Rig, name: str, reason: str) -> list[Any]:
    """Events on the (cluster-scoped) ImmersionPod, whatever namespace they were posted in."""
    items = rig.core.list_event_for_all_namespaces(
        field_selector=f"involvedObject.name={name},reason={reason}"
    ).items
    return list(items)


def _placed(rig: Rig, job: str) -> list[tuple[str, str]]:
    return sorted((p["node"], p["state"]) for p in rig.placements(job, state=None))


def _annotate(rig: Rig, tank: str, note: str) -> None:
    """What the person runs (the real kubectl, as documented)."""
    rig.fleet.kubectl("annotate", "immersionpod", tank, f"{ACK}={note}")


def test_leak_latches_until_acknowledged(rig: Rig, operator: OperatorProcess) -> None:
    rig.start_tritons(2, [RACK_MODEL])
    sim = rig.start_sim([])
    wet = rig.create_tank("wet", leakPolicy={"action": "Drain"})
    # the other tank has no reading at first (stale), so the replica starts in the wet tank
    dry = rig.create_tank("dry", sim_fields={"http_status": 503})
    wet0, dry0 = rig.add_rack("wet0", 0, wet), rig.add_rack("dry0", 1, dry)
    rig.wait_runtime_pods()
    rig.create_job("latch", [RACK_FP16], replicas=(1, 1), target_tps=40, targets=["Rack"])
    assert [p["node"] for p in rig.wait_ready("latch", 1)["placements"]] == [wet0]
    sim.set(dry, http_status=200)
    wait_for(
        lambda: (_cond(rig, dry, "Ready") or ("",))[0] == "True",
        60,
        f"{dry} Ready",
        describe=lambda: rig.tank_status(dry),
    )

    # 1. A Critical reading latches and drains the tank (Drain policy).
    sim.set_leak(wet, "FloatSwitch1", "Critical")
    latch = wait_for(
        lambda: rig.tank_status(wet).get("leakLatch"),
        60,
        f"{wet} leakLatch",
        describe=lambda: rig.tank_status(wet),
    )
    assert latch["state"] == "Critical" and latch["message"] == "detectors: FloatSwitch1=Critical"
    wait_for(
        lambda: _placed(rig, "latch") == [(dry0, "Loaded")],
        90,
        "the replica to leave the leaking tank",
        describe=lambda: rig.status("latch"),
    )
    assert wait_for(lambda: _tank_events(rig, wet, "LeakLatched"), 30, "LeakLatched Event")

    # 2. The sensor dries: the latch holds, the tank stays cordoned, also across a restart.
    sim.set_leak(wet, "FloatSwitch1", "OK")
    wait_for(
        lambda: rig.tank_status(wet).get("leakState") == "OK",
        60,
        f"{wet} detectors OK",
        describe=lambda: rig.tank_status(wet),
    )
    status = rig.tank_status(wet)
    assert status["leakLatch"] == latch
    cordoned = _cond(rig, wet, "Cordoned")
    assert cordoned is not None and cordoned[:2] == ("True", "LeakLatched"), cordoned
    assert f"kubectl annotate immersionpod {wet} {ACK}=" in cordoned[2]
    assert _cond(rig, wet, "Ready")[:2] == ("False", "LeakLatched")  # type: ignore[index]
    assert _cond(rig, wet, "LeakDetected")[:2] == ("False", "NoLeak")  # type: ignore[index]
    operator.kill()
    operator.start(timeout=90)
    rig.scale_job(
        "latch", 2, tokens_per_replica=40
    )  # room for a replica in each tank, were the wet one usable
    wait_for(
        lambda: (
            (job := rig.job("latch"))["status"].get("observedGeneration")
            == job["metadata"]["generation"]
        ),
        60,
        "the scale-up to be observed",
        describe=lambda: rig.status("latch"),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert _placed(rig, "latch") == [(dry0, "Loaded")], rig.status("latch")
        assert rig.tank_status(wet).get("leakLatch") == latch
        time.sleep(0.5)
    st = rig.status("latch")
    assert st["desiredReplicas"] == 1 and st["shortfallReason"], st
    assert RACK_MODEL not in rig.loaded_models(wet0)

    # 3. Acknowledged while a detector reads Critical: refused (Warning Event), latch kept, and
    #    the annotation is removed (a refused acknowledgement must be given again).
    sim.set_leak(wet, "Moisture1", "Critical")
    wait_for(lambda: rig.tank_status(wet).get("leakState") == "Critical", 60, "Critical again")
    _annotate(rig, wet, "alice-too-early")
    refused = wait_for(
        lambda: _tank_events(rig, wet, "LeakAcknowledgementRefused"),
        60,
        "LeakAcknowledgementRefused Event",
    )
    assert [e.type for e in refused] == ["Warning"]
    assert "'alice-too-early' refused" in refused[0].message
    assert "still read Critical" in refused[0].message
    wait_for(lambda: ACK not in _annotations(rig, wet), 60, "the refused annotation removed")
    assert rig.tank_status(wet)["leakLatch"] == latch
    assert not _tank_events(rig, wet, "LeakLatchCleared")
    assert _placed(rig, "latch") == [(dry0, "Loaded")]

    # 4. Every detector OK, then acknowledged: the latch clears, the annotation is gone, an
    #    Event names the note, and placements return to the tank.
    sim.set_leak(wet, "Moisture1", "OK")
    wait_for(lambda: rig.tank_status(wet).get("leakState") == "OK", 60, "OK again")
    assert rig.tank_status(wet)["leakLatch"] == latch
    _annotate(rig, wet, "alice-inspected-dry")
    wait_for(
        lambda: "leakLatch" not in rig.tank_status(wet),
        60,
        "the latch cleared",
        describe=lambda: rig.tank_status(wet),
    )
    wait_for(lambda: ACK not in _annotations(rig, wet), 60, "the annotation removed")
    cleared = wait_for(
        lambda: _tank_events(rig, wet, "LeakLatchCleared"), 60, "LeakLatchCleared Event"
    )
    assert [e.type for e in cleared] == ["Normal"]
    assert "'alice-inspected-dry'" in cleared[0].message
    assert len(_tank_events(rig, wet, "LeakAcknowledgementRefused")) == 1
    assert _cond(rig, wet, "Cordoned")[:2] == ("False", "NotCordoned")  # type: ignore[index]
    placed = rig.wait_ready("latch", 2, timeout=120)["placements"]
    assert sorted(p["node"] for p in placed) == sorted([wet0, dry0])
    assert RACK_MODEL in rig.loaded_models(wet0)
