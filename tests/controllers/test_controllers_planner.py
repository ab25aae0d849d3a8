"""The fleet planner over in-memory indexes: slices, removal reasons, runtime failures."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import fixtures_controllers
import pytest
from fixtures_controllers import INT4, NOW, job_view, pool_view, vehicle
from prometheus_client import REGISTRY

from tokenfleet.clock import ManualClock
from tokenfleet.controllers import planner as planner_mod
from tokenfleet.controllers.fleet import FleetView, IndexId
from tokenfleet.controllers.nodes import ServingReplica
from tokenfleet.controllers.planner import Planner, _Signals
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.snapshot import JobView
from tokenfleet.telemetry.node import NodeInfo


def _index(items: Iterable[Any], key: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def new_planner(config: OperatorConfig, clock: ManualClock | None = None) -> Planner:
    clock = clock or ManualClock(NOW.timestamp(), 1000.0)
    return Planner(config, FleetView(config), clock=clock)


class Fleet:
    def __init__(self, nodes: list[NodeInfo], jobs: list[JobView]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.jobs = jobs
        self.pools = [pool_view()]
        self.clock = ManualClock(NOW.timestamp(), 1000.0)
        self.planner = new_planner(OperatorConfig(), self.clock)
        self.refresh()

    def refresh(self) -> None:
        self.planner.fleet.node_store.replace(self.nodes.values())
        self.planner.fleet.attach(
            {
                "runtime_pods_by_node": {},
                "planner_tanks": {},
                "planner_pools": _index(self.pools, lambda p: p.name),
                "planner_jobs": _index(self.jobs, lambda j: j.key),
            },
            partial=True,
        )

    async def replan(self, *, node: str | None = None, full: bool = True) -> None:
        self.refresh()
        signals = _Signals(triggers={"node"} if node else {"test"}, full=full)
        if node:
            signals.nodes.add(node)
        await self.planner.replan(signals)


async def test_slices_desired_and_job_event() -> None:
    fleet = Fleet([vehicle(f"car-{i}") for i in range(3)], [job_view(replicas=(2, 2), target=40)])
    event = fleet.planner.job_event("ns/chat")
    await fleet.replan()
    slice_ = fleet.planner.slice_for("ns/chat")
    assert slice_ is not None and slice_.desired_replicas == 2
    assert {d.target for d in slice_.desired.values()} == {"Vehicle"}
    assert all(d.pool == "pool-a" for d in slice_.desired.values())
    assert event.is_set()
    # an unchanged fleet replans to the same decision and does not wake the job
    event.clear()
    await fleet.replan()
    assert not event.is_set()
    assert (
        fleet.planner.slice_for("ns/chat") == slice_
        or fleet.planner.slice_for("ns/chat").desired == slice_.desired
    )  # type: ignore[union-attr]


async def test_unplug_moves_with_reason_and_destination_incrementally() -> None:
    fleet = Fleet([vehicle(f"car-{i}") for i in range(3)], [job_view(replicas=(1, 1), target=20)])
    await fleet.replan()
    slice_ = fleet.planner.slice_for("ns/chat")
    assert slice_ is not None
    ((victim, _),) = slice_.desired
    before = (
        REGISTRY.get_sample_value("tokenfleet_plan_duration_seconds_count", {"mode": "incremental"})
        or 0.0
    )
    fleet.nodes[victim] = vehicle(victim, plugged_in="false")
    await fleet.replan(node=victim, full=False)
    after = REGISTRY.get_sample_value(
        "tokenfleet_plan_duration_seconds_count", {"mode": "incremental"}
    )
    assert after == before + 1
    moved = fleet.planner.slice_for("ns/chat")
    assert moved is not None
    ((new, _),) = moved.desired
    assert new != victim
    removal = moved.removals[(victim, "int4")]
    assert removal.reason == "NotPluggedIn" and removal.moved_to == new


async def test_runtime_failure_evicts_and_blocks_the_node() -> None:
    fleet = Fleet([vehicle(f"car-{i}") for i in range(2)], [job_view(replicas=(1, 1), target=20)])
    await fleet.replan()
    slice_ = fleet.planner.slice_for("ns/chat")
    assert slice_ is not None
    ((victim, _),) = slice_.desired
    fleet.planner.report_runtime_failure(victim, "connection refused")
    assert fleet.planner.runtime_failed(victim)
    await fleet.replan()
    moved = fleet.planner.slice_for("ns/chat")
    assert moved is not None
    assert victim not in {n for n, _ in moved.desired}
    assert moved.removals[(victim, "int4")].reason == "RuntimeFailed"


async def test_a_load_failure_backs_off_that_job_on_that_node_only() -> None:
    jobs = [
        job_view("ghost", replicas=(1, 1), target=20),
        job_view("chat", replicas=(1, 1), target=20),
    ]
    fleet = Fleet([vehicle("car-1")], jobs)
    await fleet.replan()
    assert {k for k in fleet.planner.slice_for("ns/chat").desired} == {("car-1", "int4")}  # type: ignore[union-attr]
    fleet.planner.report_load_failure("ns/ghost", "car-1", "failed to load 'ghost': no such model")
    assert fleet.planner.load_failed("ns/ghost", "car-1")
    assert not fleet.planner.load_failed("ns/chat", "car-1")
    assert not fleet.planner.runtime_failed("car-1")  # the runtime is not blamed
    await fleet.replan()
    ghost = fleet.planner.slice_for("ns/ghost")
    chat = fleet.planner.slice_for("ns/chat")
    assert ghost is not None and chat is not None
    assert not ghost.desired and ghost.shortfall_reason == "LoadFailed"
    assert set(chat.desired) == {("car-1", "int4")} and not chat.removals
    node, backoff = fleet.planner.load_failure("ns/ghost")  # type: ignore[misc]
    assert node == "car-1" and "no such model" in backoff.message
    # back-off doubles per failure in a row: 60 s, then 120 s
    base = OperatorConfig().runtime_failure_backoff_seconds
    assert backoff.until == fleet.clock.monotonic() + base
    fleet.planner.report_load_failure("ns/ghost", "car-1", "again")
    assert fleet.planner.load_failure("ns/ghost")[1].until == fleet.clock.monotonic() + 2 * base  # type: ignore[index]
    fleet.clock.advance(2 * base + 1)
    assert not fleet.planner.load_failed("ns/ghost", "car-1")
    # a new spec generation starts over
    fleet.planner.report_load_failure("ns/ghost", "car-1", "third")
    fleet.jobs[0] = dataclasses.replace(fleet.jobs[0], generation=2)
    await fleet.replan()
    assert not fleet.planner.load_failed("ns/ghost", "car-1")


async def test_node_without_runtime_takes_no_work_and_shortfall_names_reason() -> None:
    car = dataclasses.replace(vehicle("car-1"), runtime_endpoint=None)
    fleet = Fleet([car], [job_view(replicas=(1, 1), target=20)])
    await fleet.replan()
    slice_ = fleet.planner.slice_for("ns/chat")
    assert slice_ is not None and not slice_.desired
    assert slice_.shortfall_reason == "NodeCordoned"


async def test_invalid_job_gets_an_invalid_spec_slice() -> None:
    fleet = Fleet([vehicle("car-1")], [job_view(spec_patch={"variants": []})])
    await fleet.replan()
    slice_ = fleet.planner.slice_for("ns/chat")
    assert slice_ is not None and slice_.shortfall_reason == "InvalidSpec"
    assert slice_.desired_replicas == 0


async def test_spec_change_with_the_same_decision_still_wakes_the_job() -> None:
    fleet = Fleet([vehicle("car-1")], [job_view(replicas=(1, 1), target=20)])
    await fleet.replan()
    event = fleet.planner.job_event("ns/chat")
    event.clear()
    await fleet.replan()
    assert not event.is_set()
    fleet.jobs = [job_view(replicas=(1, 1), target=20, generation=2, spec_patch={"priority": 7})]
    await fleet.replan()
    assert event.is_set()  # so status.observedGeneration catches up


def test_shortfall_reason_skips_nodes_the_job_could_never_use() -> None:
    from tokenfleet.placement import JobShortfall, Reason

    def short(*reasons: tuple[Reason, int]) -> JobShortfall:
        return JobShortfall("ns/j", Reason.NO_ELIGIBLE_NODE, 0, 40, 0, tuple(reasons))

    pick = planner_mod._shortfall_reason
    assert pick(None) is None
    assert pick(short((Reason.TARGET_NOT_ALLOWED, 200), (Reason.STALE_TELEMETRY, 2))) == (
        "StaleTelemetry"
    )
    assert pick(short((Reason.RESIDENCY, 3))) == "NoEligibleNode"
    tank = JobShortfall("ns/j", Reason.TANK_THERMAL_HEADROOM, 40, 80, 1, ())
    assert pick(tank) == "TankThermalHeadroom"


async def test_dial_policy_refuses_addresses_outside_its_networks() -> None:
    loopback_car = dataclasses.replace(vehicle("car-1"), runtime_endpoint="127.0.0.1:41000")
    pod_ip_car = dataclasses.replace(vehicle("car-2"), runtime_endpoint="10.244.0.9:8000")
    fleet = Fleet([loopback_car, pod_ip_car], [job_view(replicas=(2, 2), target=40)])
    fleet.planner = new_planner(OperatorConfig(runtime_dial_networks="127.0.0.0/8"))
    await fleet.replan()
    assert fleet.planner.fleet.runtime_endpoint("car-1") == "127.0.0.1:41000"
    assert fleet.planner.fleet.runtime_endpoint("car-2") is None
    slice_ = fleet.planner.slice_for("ns/chat")
    assert slice_ is not None
    assert {node for node, _ in slice_.desired} == {"car-1"}, "never place where it can't dial"


def test_invalid_dial_networks_stop_the_planner_naming_the_value() -> None:
    from tokenfleet.serving.errors import EndpointError

    with pytest.raises(EndpointError, match="bad network 'loopback'"):
        FleetView(OperatorConfig(runtime_dial_networks="loopback"))


def test_periodic_timer_successes_are_not_logged_but_failures_are() -> None:
    import logging

    from tokenfleet.controllers.main import QuietPeriodicSuccess

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    quiet = QuietPeriodicSuccess()
    assert not quiet.filter(record(logging.INFO, "Timer 'immersionpod_telemetry' succeeded."))
    assert quiet.filter(record(logging.ERROR, "Timer 'immersionpod_telemetry' failed with X"))
    # issue #13: kopf's routine handler successes are dropped too; what changed is logged
    assert not quiet.filter(record(logging.INFO, "Handler 'job_changed' succeeded."))
    assert not quiet.filter(record(logging.INFO, "Creation is processed: 1 succeeded; 0 failed."))
    assert quiet.filter(record(logging.INFO, "Updating is processed: 0 succeeded; 1 failed."))
    assert quiet.filter(record(logging.INFO, "replica int4 on car-1 moved to car-2: Departure"))


def test_a_runtime_pod_change_kicks_only_the_jobs_served_on_its_node() -> None:
    planner = new_planner(OperatorConfig())
    served = {
        "car-1": [ServingReplica("ns/chat", 1, 20.0), ServingReplica("ns/code", 2, 40.0)],
        "car-2": [ServingReplica("ns/docs", 1, 20.0)],
    }
    planner.fleet.attach({IndexId.SERVING_BY_NODE: served}, partial=True)
    events = {k: planner.job_event(k) for k in ("ns/chat", "ns/code", "ns/docs")}
    assert planner.fleet.jobs_serving_on("car-1") == {"ns/chat", "ns/code"}
    assert planner.fleet.jobs_serving_on("car-9") == set()
    planner.kick_jobs(planner.fleet.jobs_serving_on("car-1"))
    assert {k for k, e in events.items() if e.is_set()} == {"ns/chat", "ns/code"}


async def test_liveness_fails_only_when_a_background_task_has_ended() -> None:
    async def crash() -> None:
        raise ValueError("boom")

    planner_mod.raise_if_ended(None, "planner")  # not started yet: alive
    running = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(running)
    planner_mod.raise_if_ended(task, "planner")
    task.cancel()
    crashed = asyncio.ensure_future(crash())
    with contextlib.suppress(ValueError):
        await crashed
    with pytest.raises(RuntimeError, match="runtime prober task ended: boom"):
        planner_mod.raise_if_ended(crashed, "runtime prober")


async def test_a_higher_priority_job_preempts_with_reason_preempted() -> None:
    big = [{**INT4, "memoryMiB": 20000}]  # one replica fills the car

    def job_view(name: str, **kw: Any) -> JobView:
        return fixtures_controllers.job_view(name, variants=big, **kw)

    low = job_view("low", replicas=(1, 1), target=20, spec_patch={"priority": 10})
    fleet = Fleet([vehicle("car-0")], [low])
    await fleet.replan()
    first = fleet.planner.slice_for("ns/low")
    assert first is not None and first.desired_replicas == 1
    high = job_view("high", replicas=(1, 1), target=20, spec_patch={"priority": 1000})
    fleet.jobs = [low, high]
    await fleet.replan()
    won = fleet.planner.slice_for("ns/high")
    lost = fleet.planner.slice_for("ns/low")
    assert won is not None and won.desired_replicas == 1
    assert lost is not None and lost.desired_replicas == 0
    assert lost.removals[("car-0", "int4")].reason == "Preempted"
    # a later plan that no longer lists the eviction keeps the reason until the replica is gone
    # (a new car: the low job's decision changes, its old replica is still being moved)
    fleet.nodes["car-1"] = vehicle("car-1")
    await fleet.replan()
    again = fleet.planner.slice_for("ns/low")
    assert again is not None and set(again.desired) == {("car-1", "int4")}
    assert again.removals[("car-0", "int4")].reason == "Preempted"


async def test_a_deadline_wakes_the_planner_and_rechecks_without_an_event() -> None:
    # car-0 enters its drain lead (900 s, band 918 s) 40 s from now; nothing will report it
    soon = vehicle("car-0", departure_time=fixtures_controllers.rfc(NOW + timedelta(seconds=940)))
    fleet = Fleet([soon, vehicle("car-1")], [job_view(replicas=(2, 2), target=40)])
    await fleet.replan()
    first = fleet.planner.slice_for("ns/chat")
    assert first is not None and {n for n, _ in first.desired} == {"car-0", "car-1"}
    timeout, why = fleet.planner._next_wake()
    assert why == "deadline" and 0 < timeout <= 22
    fleet.clock.advance(120)
    fleet.refresh()
    await fleet.planner.replan(_Signals(triggers={"deadline"}))
    after = fleet.planner.slice_for("ns/chat")
    assert after is not None and {n for n, _ in after.desired} == {"car-1"}
    assert after.removals[("car-0", "int4")].reason == "DepartureWithinDrainLead"


def _plans(mode: str) -> float:
    return (
        REGISTRY.get_sample_value("tokenfleet_plan_duration_seconds_count", {"mode": mode}) or 0.0
    )


async def test_several_changed_nodes_in_one_window_replan_incrementally_in_one_plan() -> None:
    cars = [vehicle(f"car-{i}") for i in range(6)]
    jobs = [job_view("a", replicas=(1, 1), target=20), job_view("b", replicas=(1, 1), target=20)]
    fleet = Fleet(cars, jobs)
    await fleet.replan()
    victims = set()
    for key in ("ns/a", "ns/b"):
        slice_ = fleet.planner.slice_for(key)
        assert slice_ is not None
        ((node, _),) = slice_.desired
        victims.add(node)
    assert len(victims) == 1  # both on one car (the first in name order)
    # it unplugs, and every other car but one turns NotReady, before the planner runs: one
    # plan, one step per changed Node (the idle ones first), nothing in full
    for victim in victims:
        fleet.nodes[victim] = vehicle(victim, plugged_in="false")
    spare = "car-5"
    idle = {n for n in fleet.nodes if n not in victims and n != spare}
    for name in idle:
        fleet.nodes[name] = dataclasses.replace(fleet.nodes[name], ready=False)
    full, incremental = _plans("full"), _plans("incremental")
    fleet.refresh()
    signals = _Signals(triggers={"node"})
    signals.nodes.update({*victims, *idle})
    await fleet.planner.replan(signals)
    assert (_plans("full"), _plans("incremental")) == (full, incremental + 1)
    for key in ("ns/a", "ns/b"):
        moved = fleet.planner.slice_for(key)
        assert moved is not None
        assert set(moved.desired) == {(spare, "int4")}  # not on a car that just went NotReady
        assert {r.reason for r in moved.removals.values()} == {"NotPluggedIn"}


async def test_a_node_change_nobody_signalled_is_rechecked_by_the_next_plan() -> None:
    fleet = Fleet([vehicle(f"car-{i}") for i in range(3)], [job_view(replicas=(1, 1), target=20)])
    await fleet.replan()
    slice_ = fleet.planner.slice_for("ns/chat")
    assert slice_ is not None
    assert set(slice_.desired) == {("car-0", "int4")}
    # car-1 lost its runtime endpoint (no Node signal names it), then car-0 unplugs: the plan
    # reads both changes off the snapshot, so the replica does not move to car-1
    fleet.nodes["car-1"] = dataclasses.replace(fleet.nodes["car-1"], runtime_endpoint=None)
    fleet.nodes["car-0"] = vehicle("car-0", plugged_in="false")
    incremental = _plans("incremental")
    await fleet.replan(node="car-0", full=False)
    assert _plans("incremental") == incremental + 1
    moved = fleet.planner.slice_for("ns/chat")
    assert moved is not None and set(moved.desired) == {("car-2", "int4")}


async def test_the_resync_is_incremental_unless_a_job_is_short_or_a_full_plan_is_due() -> None:
    fleet = Fleet([vehicle("car-0"), vehicle("car-1")], [job_view(replicas=(1, 1), target=20)])
    await fleet.replan()
    full, incremental = _plans("full"), _plans("incremental")
    await fleet.planner.replan(_Signals(triggers={"resync"}))
    assert (_plans("full"), _plans("incremental")) == (full, incremental + 1)
    fleet.clock.mono += OperatorConfig().plan_full_resync_seconds
    await fleet.planner.replan(_Signals(triggers={"resync"}))
    assert _plans("full") == full + 1
    # a job short of its target: the resync looks for room in full
    short = Fleet([vehicle("car-0")], [job_view(replicas=(2, 2), target=40)])
    await short.replan()
    assert short.planner.slice_for("ns/chat").shortfall_reason is not None  # type: ignore[union-attr]
    full = _plans("full")
    await short.planner.replan(_Signals(triggers={"resync"}))
    assert _plans("full") == full + 1


async def test_a_burst_of_node_signals_is_planned_once_after_the_first() -> None:
    config = dataclasses.replace(OperatorConfig(), plan_debounce_seconds=0.05)
    clock = ManualClock(NOW.timestamp(), 1000.0)
    planner = Planner(config, FleetView(config), clock=clock)
    planned: list[_Signals] = []

    async def record(signals: _Signals) -> None:
        planned.append(signals)
        planner._cadence.planned(clock.monotonic(), full=signals.full)

    planner.replan = record  # type: ignore[method-assign]
    planner.start()
    try:
        planner.mark_ready()
        planner.mark_nodes_synced()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if planned:
                break
        # the start is planned at once (the leading edge); a burst of four Node changes that
        # arrive one by one right after it is gathered into one plan
        assert len(planned) == 1 and planned[0].triggers == {"startup"}
        for i in range(4):
            planner.signal("node", node=f"car-{i}")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
    finally:
        await planner.stop()
    assert len(planned) == 2
    assert planned[1].nodes == {f"car-{i}" for i in range(4)} and not planned[1].full


async def test_a_pool_change_is_full_only_when_the_engine_sees_the_pool_differ() -> None:
    fleet = Fleet([vehicle("car-0"), vehicle("car-1")], [job_view(replicas=(1, 1), target=20)])
    await fleet.replan()
    full, incremental = _plans("full"), _plans("incremental")
    # today's energy, written every minute while cars serve: without a budget nothing reads it
    fleet.pools = [dataclasses.replace(fleet.pools[0], status={"energyUsedTodayKWh": 1.25})]
    fleet.refresh()
    await fleet.planner.replan(_Signals(triggers={"pool"}))
    assert (_plans("full"), _plans("incremental")) == (full, incremental + 1)
    # a spec change (a new generation): the engine plans in full itself
    spec = {**fleet.pools[0].spec, "minBandwidthMbps": 5}
    fleet.pools = [dataclasses.replace(fleet.pools[0], spec=spec, generation=2)]
    fleet.refresh()
    await fleet.planner.replan(_Signals(triggers={"pool"}))
    assert (_plans("full"), _plans("incremental")) == (full + 1, incremental + 1)
