"""A latched leak (status.leakLatch) reaches the placement engine as a live leak (pure)."""

from __future__ import annotations

from dataclasses import replace

from fixtures_controllers import FP16, NOW, job_view, pool_view, rack, tank_view

from tokenfleet.controllers.snapshot import TankView, build_snapshot
from tokenfleet.placement import Placement, Reason, plan

LATCH = {"state": "Critical", "latchedAt": "2026-11-25T11:00:00Z", "message": "detectors: M=C"}


def _tank(action: str, status: dict[str, object]) -> TankView:
    view = tank_view(status=status)
    spec = {**view.spec, "leakPolicy": {"action": action}}
    return replace(view, uid=f"tank-{action}-{sorted(status)}", spec=spec)


def _plan(tank: TankView, placed: bool) -> object:
    job = job_view(variants=[FP16], replicas=(1, 2), target=80)
    current = {"ns/chat": [Placement("ns/chat", "rack-1", "fp16")]} if placed else None
    parts = build_snapshot(
        now=NOW.timestamp(),
        nodes=[rack("rack-1"), rack("rack-2")],
        tanks=[tank],
        pools=[pool_view()],
        jobs=[job],
        current=current,
    )
    return parts


def test_latch_counts_as_the_latched_leak_state() -> None:
    cases = [
        ({"leakState": "OK", "leakLatch": LATCH}, "Critical"),
        ({"leakState": "Unknown", "leakLatch": LATCH}, "Critical"),
        ({"leakState": "OK", "leakLatch": {**LATCH, "state": "Warning"}}, "Warning"),
        ({"leakState": "Critical", "leakLatch": {**LATCH, "state": "Warning"}}, "Critical"),
        ({"leakState": "Unknown", "leakLatch": {**LATCH, "state": "Warning"}}, "Warning"),
        ({"leakState": "OK", "leakLatch": None}, "OK"),
        ({"leakState": "OK", "leakLatch": {"state": "Soggy"}}, "OK"),
    ]
    for status, expected in cases:
        parts = _plan(_tank("Drain", status), placed=False)
        (tank,) = parts.snapshot.tanks  # type: ignore[attr-defined]
        assert tank.leak_state == expected, status


def test_latched_drain_tank_moves_replicas_and_takes_nothing_new() -> None:
    parts = _plan(_tank("Drain", {"leakState": "OK", "leakLatch": LATCH}), placed=True)
    result = plan(parts.snapshot)  # type: ignore[attr-defined]
    assert result.assignments == ()
    assert [(e.node, e.reason) for e in result.evictions] == [("rack-1", Reason.TANK_LEAK)]


def test_latched_cordon_tank_keeps_replicas_and_takes_nothing_new() -> None:
    parts = _plan(_tank("Cordon", {"leakState": "OK", "leakLatch": LATCH}), placed=True)
    result = plan(parts.snapshot)  # type: ignore[attr-defined]
    assert [(a.node, a.variant) for a in result.assignments] == [("rack-1", "fp16")]
    assert result.added == () and result.evictions == ()


def test_without_the_latch_the_same_tank_takes_work() -> None:
    parts = _plan(_tank("Drain", {"leakState": "OK"}), placed=True)
    result = plan(parts.snapshot)  # type: ignore[attr-defined]
    assert sorted(a.node for a in result.assignments) == ["rack-1", "rack-2"]
    assert result.evictions == ()
