"""Since when a car's telemetry is unknown, and the time verdicts the planner reports (pure)."""

from __future__ import annotations

from dataclasses import replace

from tokenfleet.controllers.unknown import UnknownTelemetry, time_verdict
from tokenfleet.placement import PoolPolicy, Snapshot, VehicleNode
from tokenfleet.telemetry.problems import ProblemKind

NOW = 1_795_000_000.0
POOL = PoolPolicy(name="p", min_soc_percent=20.0, target_soc_percent=80.0)


def car(name: str, **kw: object) -> VehicleNode:
    values: dict[str, object] = {
        "soc_percent": 70.0,
        "plugged_in": True,
        "charger_kw": 11.0,
        "battery_temp_c": 25.0,
        "compute_temp_c": 40.0,
        "departure_time": NOW + 8 * 3600,
        "observed_at": NOW - 5,
    }
    values.update(kw)
    return VehicleNode(name=name, pool="p", memory_mib=8192, **values)  # type: ignore[arg-type]


def snap(now: float, *cars: VehicleNode) -> Snapshot:
    return Snapshot(now=now, pools=(POOL,), vehicles=cars)


def since(s: Snapshot) -> dict[str, float | None]:
    return {v.name: v.unknown_since for v in s.vehicles}


def test_unknown_since_is_the_first_plan_that_saw_it_and_clears_when_known() -> None:
    tracker = UnknownTelemetry()
    out, _ = tracker.observe(snap(NOW, car("a"), car("b", soc_percent=None)))
    assert since(out) == {"a": None, "b": NOW}
    out, _ = tracker.observe(snap(NOW + 60, car("a"), car("b", soc_percent=None)))
    assert since(out) == {"a": None, "b": NOW}  # kept: the grace counts from the first sight
    out, _ = tracker.observe(snap(NOW + 70, car("a"), car("b")))
    assert since(out) == {"a": None, "b": None}
    out, _ = tracker.observe(snap(NOW + 80, car("a"), car("b", charger_kw=None)))
    assert since(out)["b"] == NOW + 80  # a new episode starts a new grace


def test_time_verdicts_are_reported_once_per_episode() -> None:
    tracker = UnknownTelemetry()
    ahead = car("ahead", observed_at=NOW + 86400)
    old = car("old", observed_at=NOW - 10 * 365 * 86400)
    _, verdicts = tracker.observe(snap(NOW, ahead, old, car("ok")))
    kinds = {v.node: v.kind for v in verdicts}
    assert kinds == {"ahead": ProblemKind.OUT_OF_RANGE, "old": ProblemKind.STALE}
    assert "in the future" in next(v.message for v in verdicts if v.node == "ahead")
    _, verdicts = tracker.observe(snap(NOW + 10, ahead, old, car("ok")))
    assert verdicts == []  # no Event storm: one per episode
    _, verdicts = tracker.observe(snap(NOW + 20, replace(ahead, observed_at=NOW + 15), old))
    assert [v.node for v in verdicts] == []
    _, verdicts = tracker.observe(snap(NOW + 30, ahead, old))
    assert [v.node for v in verdicts] == ["ahead"]


def test_time_verdict_limits() -> None:
    assert time_verdict(car("a", observed_at=NOW + 30), POOL, NOW) is None
    assert time_verdict(car("a", observed_at=NOW - 300), POOL, NOW) is None
    assert time_verdict(car("a", observed_at=NOW - 301), POOL, NOW) is not None
    assert time_verdict(car("a", observed_at=None), POOL, NOW) is None  # a parse problem
