"""Every transition of a replica's state machine (controllers/replicas.py), without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from tokenfleet.api.models import PlacementRecord, PlacementState
from tokenfleet.clock import ManualClock
from tokenfleet.controllers import replicas
from tokenfleet.controllers.replicas import Observed, Replica
from tokenfleet.serving.runtime import ModelState, ModelStatus

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def clock() -> ManualClock:
    return ManualClock(T0, 100.0)


def replica(state: PlacementState, **kw: Any) -> Replica:
    return Replica(
        node="car-1",
        variant="int4",
        target="Vehicle",
        state=state,
        since="2026-11-25T12:00:00Z",
        **kw,
    )


def status(state: ModelState, reason: str = "") -> ModelStatus:
    return ModelStatus("chat-int4", state, reason)


# ---- Loading ------------------------------------------------------------------------------------


def test_loading_becomes_loaded_when_the_model_is_ready() -> None:
    c = clock()
    r = replica(PlacementState.LOADING, reason="Placed", needs_load=True)
    assert replicas.observed(r, status(ModelState.READY), clock=c) is Observed.NOTHING
    assert r.state is PlacementState.LOADED and r.reason == "Placed" and not r.needs_load
    assert r.since == "2026-11-18T11:06:40Z"  # the state changed: since moves


def test_loading_keeps_waiting_while_the_runtime_loads() -> None:
    r = replica(PlacementState.LOADING, needs_load=True)
    assert replicas.observed(r, status(ModelState.LOADING), clock=clock()) is Observed.NOTHING
    assert r.state is PlacementState.LOADING and not r.needs_load


def test_loading_fails_when_the_runtime_reports_a_load_error() -> None:
    c = clock()
    r = replica(PlacementState.LOADING, needs_load=True)
    outcome = replicas.observed(r, status(ModelState.UNAVAILABLE, "no such file"), clock=c)
    assert outcome is Observed.LOAD_FAILED
    assert (r.state, r.reason, r.message) == (PlacementState.FAILED, "LoadFailed", "no such file")
    assert r.failed_at == 100.0 and not r.needs_load


@pytest.mark.parametrize(
    "model", [status(ModelState.ABSENT), status(ModelState.UNAVAILABLE, "unloaded")]
)
def test_loading_loads_again_when_the_model_is_absent(model: ModelStatus) -> None:
    r = replica(PlacementState.LOADING)
    assert replicas.observed(r, model, clock=clock()) is Observed.NOTHING
    assert r.state is PlacementState.LOADING and r.needs_load


# ---- Loaded -------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [ModelState.READY, ModelState.LOADING])
def test_loaded_stays_while_the_model_is_there(state: ModelState) -> None:
    r = replica(PlacementState.LOADED, observe_failures=1)
    assert replicas.observed(r, status(state), clock=clock()) is Observed.NOTHING
    assert r.state is PlacementState.LOADED and r.observe_failures == 0


def test_loaded_reloads_a_model_the_runtime_lost() -> None:
    r = replica(PlacementState.LOADED)
    assert replicas.observed(r, status(ModelState.UNAVAILABLE), clock=clock()) is Observed.LOST
    assert (r.state, r.reason) == (PlacementState.LOADING, "Reloading") and r.needs_load
    assert r.message == "model was UNAVAILABLE on the runtime"


def test_loaded_fails_after_enough_missed_observations() -> None:
    c = clock()
    r = replica(PlacementState.LOADED)
    assert replicas.observed_error(r, "refused", failures_to_fail=2, clock=c) is Observed.NOTHING
    assert r.state is PlacementState.LOADED and r.observe_failures == 1
    outcome = replicas.observed_error(r, "refused", failures_to_fail=2, clock=c)
    assert outcome is Observed.RUNTIME_FAILED
    assert (r.state, r.reason, r.message) == (PlacementState.FAILED, "RuntimeFailed", "refused")


def test_a_missed_observation_does_not_fail_a_loading_replica() -> None:
    r = replica(PlacementState.LOADING)
    for _ in range(3):
        replicas.observed_error(r, "refused", failures_to_fail=2, clock=clock())
    assert r.state is PlacementState.LOADING and r.observe_failures == 3
    assert replicas.in_flight([r])


# ---- Unloading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [ModelState.READY, ModelState.LOADING])
def test_unloading_unloads_again_a_model_still_there(state: ModelState) -> None:
    r = replica(PlacementState.UNLOADING)
    replicas.observed(r, status(state), clock=clock())
    assert r.needs_unload and not r.gone


def test_unloading_waits_while_the_runtime_unloads() -> None:
    r = replica(PlacementState.UNLOADING, needs_unload=True)
    replicas.observed(r, status(ModelState.UNLOADING), clock=clock())
    assert not r.needs_unload and not r.gone


@pytest.mark.parametrize("state", [ModelState.UNAVAILABLE, ModelState.ABSENT])
def test_unloading_is_gone_once_the_model_is(state: ModelState) -> None:
    r = replica(PlacementState.UNLOADING)
    replicas.observed(r, status(state), clock=clock())
    assert r.gone


def test_without_a_runtime_only_an_unloading_replica_is_gone() -> None:
    for state in PlacementState:
        r = replica(state)
        replicas.observed_without_runtime(r)
        assert r.gone is (state is PlacementState.UNLOADING)


def test_a_failed_replica_is_not_changed_by_an_observation() -> None:
    r = replica(PlacementState.FAILED, reason="LoadFailed")
    assert replicas.observed(r, status(ModelState.READY), clock=clock()) is Observed.NOTHING
    assert r.state is PlacementState.FAILED


# ---- new, loaded, unloading, pruned -------------------------------------------------------------


def test_a_new_replica_is_loading_and_says_what_it_replaces() -> None:
    c = clock()
    placed = replicas.new_replica(
        node="car-1", variant="int4", target="Vehicle", pool="p", tank=None, clock=c
    )
    assert (placed.state, placed.reason, placed.message) == (PlacementState.LOADING, "Placed", None)
    assert placed.needs_load
    moved = replicas.new_replica(
        node="car-2",
        variant="int4",
        target="Vehicle",
        pool="p",
        tank=None,
        clock=c,
        sources=["car-1 (NotPluggedIn)"],
    )
    assert (moved.reason, moved.message) == ("Replacement", "replaces car-1 (NotPluggedIn)")
    replicas.loaded(moved, clock=c)
    assert moved.state is PlacementState.LOADED and moved.reason == "Replacement"


def test_an_adopted_replica_is_loaded() -> None:
    r = replicas.adopted_replica(
        node="r1", variant="fp16", target="Rack", pool=None, tank="t", clock=clock()
    )
    assert (r.state, r.reason) == (PlacementState.LOADED, "Adopted")


def test_unloading_says_where_the_replica_moved() -> None:
    c = clock()
    r = replica(PlacementState.LOADED)
    replicas.unloading(r, "NotPluggedIn", "car-2", clock=c)
    assert (r.state, r.reason, r.message) == (
        PlacementState.UNLOADING,
        "NotPluggedIn",
        "moved to car-2",
    )
    s = replica(PlacementState.LOADED)
    replicas.unloading(s, "ScaledDown", None, clock=c)
    assert s.message == "removed by the plan"


def test_make_before_break_waits_for_the_replacement_up_to_a_timeout() -> None:
    old = replica(PlacementState.LOADED)
    assert replicas.due_for_removal([old], replacement_loading=True, timeout=10, now=5.0) == []
    assert old.removal_wanted_at == 5.0
    assert replicas.due_for_removal([old], replacement_loading=True, timeout=10, now=14.0) == []
    assert replicas.due_for_removal([old], replacement_loading=True, timeout=10, now=15.0) == [old]
    fresh = replica(PlacementState.LOADED)
    assert replicas.due_for_removal([fresh], replacement_loading=False, timeout=10, now=5) == [
        fresh
    ]


def test_failed_replicas_are_pruned_after_their_back_off_unless_wanted() -> None:
    failed = replica(PlacementState.FAILED, failed_at=100.0)
    loaded = replica(PlacementState.LOADED)
    record = [failed, loaded]
    assert replicas.prune_failed(record, [], backoff=60, now=159.0) == record
    assert replicas.prune_failed(record, [], backoff=60, now=160.0) == [loaded]
    assert replicas.prune_failed(record, [failed.key], backoff=60, now=500.0) == record


# ---- the record ---------------------------------------------------------------------------------


def test_the_record_round_trips_in_the_api_spelling() -> None:
    raw = {
        "node": "car-1",
        "target": "Vehicle",
        "pool": "p",
        "variant": "int4",
        "state": "Loaded",
        "since": "2026-11-25T12:00:00Z",
        "reason": "Placed",
        "message": "x" * 2000,
    }
    r = replicas.from_wire(raw, clock())
    assert r is not None
    wire = r.to_wire()
    assert wire == {**raw, "message": "x" * 1021 + "..."}
    PlacementRecord.model_validate(wire)  # what the API server would accept
    assert set(wire) <= {f.alias for f in PlacementRecord.model_fields.values()}


def test_reading_the_record_drops_garbage_and_collapses_duplicates() -> None:
    def raw(node: str, state: str) -> dict[str, str]:
        return {"node": node, "variant": "int4", "state": state, "target": "Vehicle"}

    record = replicas.read_record(
        [
            raw("car-2", "Failed"),
            raw("car-1", "Unloading"),
            raw("car-1", "Loaded"),
            raw("car-1", "Exploded"),
            {"variant": "int4", "state": "Loaded"},
        ],
        clock(),
    )
    assert [(r.node, r.state) for r in record] == [
        ("car-1", PlacementState.LOADED),
        ("car-2", PlacementState.FAILED),
    ]
    assert record[1].failed_at == 100.0  # a Failed entry read back starts its back-off now


def test_state_groups_spell_the_api_states() -> None:
    assert {"Loading", "Loaded"} == replicas.HOLDING
    assert {"Loading", "Loaded", "Unloading"} == replicas.ON_RUNTIME
    assert {"Loaded", "Unloading"} == replicas.ROUTED
    assert "Loaded" in replicas.SERVING  # raw status strings are members too
