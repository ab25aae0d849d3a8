"""When the planner plans and how: the leading edge, gathering a burst, the full-plan rate, and
which Nodes changed between two snapshots (``controllers/plancadence.py``)."""

from __future__ import annotations

import dataclasses

from tokenfleet.controllers.plancadence import DUTY, Cadence, Mode, changed_nodes, choose
from tokenfleet.placement import RackNode, Snapshot, VehicleNode


def _car(name: str, soc: float = 80.0, *, cordoned: bool = False) -> VehicleNode:
    return VehicleNode(
        name=name, pool="pool-a", memory_mib=32768, soc_percent=soc, cordoned=cordoned
    )


def _snap(*cars: VehicleNode, racks: tuple[RackNode, ...] = (), now: float = 0.0) -> Snapshot:
    return Snapshot(now=now, racks=racks, vehicles=tuple(cars))


# ---- which Nodes changed ---------------------------------------------------------------------


def test_changed_nodes_names_the_records_that_differ_and_ignores_time() -> None:
    before = _snap(_car("a"), _car("b"), _car("c"), now=0.0)
    after = _snap(_car("a"), _car("b", soc=20.0), _car("c", cordoned=True), now=30.0)
    assert changed_nodes(before, after) == frozenset({"b", "c"})
    assert changed_nodes(before, dataclasses.replace(before, now=60.0)) == frozenset()


def test_changed_nodes_is_none_when_the_set_of_nodes_differs() -> None:
    before = _snap(_car("a"), _car("b"))
    assert changed_nodes(None, before) is None
    assert changed_nodes(before, _snap(_car("a"), _car("b"), _car("c"))) is None  # one came
    assert changed_nodes(before, _snap(_car("a"))) is None  # one went
    assert changed_nodes(before, _snap(_car("a"), _car("x"))) is None  # another one
    rack = RackNode(name="b", tank="tank-a", memory_mib=1)
    assert changed_nodes(before, _snap(_car("a"), racks=(rack,))) is None  # changed kind


# ---- full or incremental ---------------------------------------------------------------------


def _choose(**overrides: object) -> object:
    args: dict[str, object] = {
        "has_previous": True,
        "full_signalled": False,
        "same_placements": True,
        "changed": frozenset({"b", "a"}),
        "max_nodes": 2,
        "full_due": False,
    }
    args.update(overrides)
    return choose(**args)  # type: ignore[arg-type]


def test_changed_nodes_replan_incrementally_one_step_each_in_name_order() -> None:
    choice = _choose()
    assert choice.mode is Mode.NODES and choice.nodes == ("a", "b")  # type: ignore[attr-defined]
    assert _choose(changed=frozenset()).mode is Mode.DUE  # type: ignore[attr-defined]
    assert _choose(changed=frozenset(), deadline_passed=True).mode is Mode.DUE  # type: ignore[attr-defined]
    assert _choose(changed=frozenset({"a"}), deadline_passed=True).nodes == ("a",)  # type: ignore[attr-defined]


def test_the_one_changed_node_with_replicas_goes_last_after_every_record_is_renewed() -> None:
    # "a" holds replicas: its step re-places them, so "b"'s and "c"'s records are renewed first
    choice = _choose(changed=frozenset({"a", "b", "c"}), max_nodes=8, holding=frozenset({"a", "z"}))
    assert choice.mode is Mode.NODES and choice.nodes == ("b", "c", "a")  # type: ignore[attr-defined]


def test_a_full_plan_when_the_engine_cannot_step() -> None:
    for overrides in (
        {"has_previous": False},
        {"full_signalled": True},
        {"full_due": True},
        {"same_placements": False},
        {"changed": None},  # a Node came or went
        {"changed": frozenset({"a", "b", "c"})},  # more than max_nodes
        {"holding": frozenset({"a", "b"})},  # two changed Nodes hold replicas
        {"deadline_passed": True},  # two changed Nodes and the first step re-checks deadlines
    ):
        assert _choose(**overrides).mode is Mode.FULL, overrides  # type: ignore[attr-defined]


# ---- when ------------------------------------------------------------------------------------


def test_the_first_change_after_a_quiet_spell_is_planned_at_once() -> None:
    cadence = Cadence(debounce=0.5, full_min_interval=2.0, full_resync=300.0)
    assert cadence.delay(100.0, needs_full=True) == 0.0  # never planned
    cadence.planned(100.0, full=True)
    assert cadence.delay(101.0, needs_full=False) == 0.0  # quiet for longer than the debounce
    cadence.planned(101.0, full=False)
    # within the debounce after a plan: wait for the rest of it (a burst joins one plan)
    assert abs(cadence.delay(101.2, needs_full=False) - 0.3) < 1e-9


def test_full_plans_are_rate_bounded_and_incremental_ones_are_not() -> None:
    cadence = Cadence(debounce=0.5, full_min_interval=2.0, full_resync=300.0)
    cadence.planned(100.0, full=True)
    assert abs(cadence.delay(100.5, needs_full=True) - 1.5) < 1e-9
    assert cadence.delay(100.5, needs_full=False) == 0.0
    cadence.planned(100.6, full=False)  # an incremental plan does not restart the full interval
    assert abs(cadence.delay(101.5, needs_full=True) - 0.5) < 1e-9
    assert cadence.delay(102.0, needs_full=True) == 0.0


def test_a_full_plan_is_due_by_time_alone() -> None:
    cadence = Cadence(debounce=0.5, full_min_interval=2.0, full_resync=300.0)
    assert not cadence.full_due(0.0)  # the first plan is full anyway
    cadence.planned(10.0, full=True)
    cadence.planned(200.0, full=False)
    assert not cadence.full_due(309.0)
    assert cadence.full_due(310.0)


def test_the_gap_after_a_plan_follows_its_duration_up_to_the_debounce() -> None:
    cadence = Cadence(debounce=0.5, full_min_interval=2.0, full_resync=300.0)
    cadence.planned(100.0, full=False, took=0.05)  # a cheap incremental plan
    assert abs(cadence.delay(100.0, needs_full=False) - DUTY * 0.05) < 1e-9
    cadence.planned(200.0, full=False, took=1.0)  # a slow one: the debounce bounds the gap
    assert abs(cadence.delay(200.0, needs_full=False) - 0.5) < 1e-9
