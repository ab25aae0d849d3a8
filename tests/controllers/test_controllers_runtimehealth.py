"""The runtime health prober: which runtimes it probes, which jobs it wakes."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

from fixtures_controllers import job_view, vehicle
from prometheus_client import REGISTRY

from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.nodes import RuntimePod
from tokenfleet.controllers.planner import Planner
from tokenfleet.controllers.runtimehealth import (
    ProbeResult,
    ProbeTarget,
    RuntimeProber,
    jobs_by_node,
    jobs_to_wake,
    probe_targets,
)
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.serving.runtime import RuntimePool
from tokenfleet.telemetry.node import NodeInfo


def _p(node: str, state: str, variant: str = "int4") -> dict[str, Any]:
    return {"node": node, "variant": variant, "target": "Vehicle", "state": state}


def test_only_active_placements_of_live_jobs_count() -> None:
    a = job_view("a", placements=(_p("car-1", "Loaded"), _p("car-2", "Failed")))
    b = job_view("b", placements=(_p("car-2", "Loading"), _p("car-3", "Unloading")))
    c = job_view("c", placements=(_p("car-1", "Loaded"),))  # no daemon here (e.g. paused)
    d = job_view("d", placements=({"variant": "int4", "state": "Loaded"},))  # no node
    placed = jobs_by_node([a, b, c, d], live={"ns/a", "ns/b", "ns/d"})
    assert placed == {
        "car-1": frozenset({"ns/a"}),
        "car-2": frozenset({"ns/b"}),
        "car-3": frozenset({"ns/b"}),
    }
    assert jobs_by_node([a, b], live=()) == {}


def test_targets_one_per_endpoint_skipping_undialable_nodes() -> None:
    placed = {
        "car-1": {"ns/a"},
        "car-2": {"ns/b"},
        "car-3": {"ns/c"},  # no runtime (or the dial policy forbids it)
        "car-4": {"ns/d"},  # a malformed address
        "rack-1": {"ns/e"},  # the same runtime as car-1, spelled differently
    }
    endpoints = {
        "car-1": "127.0.0.1:8000",
        "car-2": "127.0.0.2:8000",
        "car-4": "http://127.0.0.1:8000/",
        "rack-1": "127.0.0.1:08000",
    }
    targets = probe_targets(placed, endpoints.get)
    assert targets == [
        ProbeTarget("127.0.0.1:8000", ("car-1", "rack-1"), frozenset({"ns/a", "ns/e"})),
        ProbeTarget("127.0.0.2:8000", ("car-2",), frozenset({"ns/b"})),
    ]
    assert probe_targets({}, endpoints.get) == []


def test_wake_exactly_the_jobs_on_failed_runtimes() -> None:
    targets = [
        ProbeTarget("127.0.0.1:1", ("car-1",), frozenset({"ns/a", "ns/b"})),
        ProbeTarget("127.0.0.1:2", ("car-2",), frozenset({"ns/b", "ns/c"})),
        ProbeTarget("127.0.0.1:3", ("car-3",), frozenset({"ns/d"})),
        ProbeTarget("127.0.0.1:4", ("car-4",), frozenset({"ns/e"})),
    ]
    results = {
        "127.0.0.1:1": ProbeResult.UNREACHABLE,
        "127.0.0.1:2": ProbeResult.READY,
        "127.0.0.1:3": ProbeResult.NOT_READY,
        # 127.0.0.1:4 not probed (no result): nothing to say about it
    }
    assert jobs_to_wake(targets, results) == {"ns/a", "ns/b", "ns/d"}
    assert jobs_to_wake(targets, dict.fromkeys(results, ProbeResult.READY)) == frozenset()


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _planner(nodes: list[NodeInfo], jobs: list[Any], pods: list[RuntimePod]) -> Planner:
    config = OperatorConfig(runtime_dial_networks="127.0.0.0/8", triton_request_timeout_seconds=2)
    planner = Planner(config, FleetView(config))
    by_node: dict[str, list[RuntimePod]] = {}
    for pod in pods:
        by_node.setdefault(pod.node, []).append(pod)
    planner.fleet.node_store.replace(nodes)
    planner.fleet.attach(
        {
            "runtime_pods_by_node": by_node,
            "planner_jobs": {j.key: [j] for j in jobs},
        },
        partial=True,
    )
    return planner


def _count(result: str) -> float:
    value = REGISTRY.get_sample_value("tokenfleet_runtime_probes_total", {"result": result})
    return value or 0.0


async def test_a_refused_runtime_wakes_its_jobs_only() -> None:
    dead = f"127.0.0.1:{_refused_port()}"
    nodes = [
        dataclasses.replace(vehicle("car-1"), runtime_endpoint=dead),
        # a kwok-like pod address, outside the dial networks: never dialled, never probed
        dataclasses.replace(vehicle("car-2"), runtime_endpoint=None),
    ]
    pods = [RuntimePod("rt", "runtime-car-2", "car-2", "10.244.0.7", True, False)]
    jobs = [
        job_view("a", placements=(_p("car-1", "Loaded"),)),
        job_view("b", placements=(_p("car-2", "Loaded"),)),
        job_view("c", placements=(_p("car-1", "Failed"),)),
        job_view("d", placements=(_p("car-1", "Loading"),)),  # its daemon is not running here
    ]
    planner = _planner(nodes, jobs, pods)
    for key in ("ns/a", "ns/b", "ns/c"):
        planner.daemon_running(key, True)
    events = {key: planner.job_event(key) for key in ("ns/a", "ns/b", "ns/c", "ns/d")}
    before = _count("unreachable")
    async with RuntimePool(timeout=2) as pool:
        prober = RuntimeProber(planner, planner.config, pool=pool)
        results = await prober.probe_round()
        assert results == {dead: ProbeResult.UNREACHABLE}
        assert pool.endpoints == [dead]  # the pod address was never dialled
    assert {k for k, e in events.items() if e.is_set()} == {"ns/a"}
    assert _count("unreachable") == before + 1
    assert REGISTRY.get_sample_value("tokenfleet_failing_runtimes") == 1
    assert list(prober.failing) == [dead]

    # the placement is Failed now (the daemon's doing): the runtime is no longer probed
    planner.fleet.attach({**planner.fleet.indexes, "planner_jobs": {}}, partial=True)
    assert await prober.probe_round() == {}
    assert REGISTRY.get_sample_value("tokenfleet_failing_runtimes") == 0
    await prober.stop()


async def test_a_paused_operator_probes_nothing() -> None:
    dead = f"127.0.0.1:{_refused_port()}"
    nodes = [dataclasses.replace(vehicle("car-1"), runtime_endpoint=dead)]
    planner = _planner(nodes, [job_view("a", placements=(_p("car-1", "Loaded"),))], [])
    planner.daemon_running("ns/a", True)
    planner.daemon_running("ns/a", False)  # kopf stopped the daemon (peering paused us)
    async with RuntimePool(timeout=2) as pool:
        prober = RuntimeProber(planner, planner.config, pool=pool)
        assert await prober.probe_round() == {}
        assert pool.endpoints == []
    assert not planner.job_event("ns/a").is_set()


def test_disabled_prober_starts_no_task() -> None:
    config = OperatorConfig(runtime_probe_seconds=0)
    prober = RuntimeProber(Planner(config, FleetView(config)), config, RuntimePool())
    prober.start()
    assert not prober.enabled and prober.task is None
