"""The throughput meter against a real tritonserver: it scrapes the runtimes of the Loaded
replicas of the jobs whose daemon runs here, turns the generated-tokens counter into a rate per
job, and wakes a job only when its figure moved past the deadband."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.runtime import TritonFleet, TritonInstall, write_model_repository
from fixtures_controllers import FP16, job_view, vehicle

from tokenfleet.clock import ManualClock
from tokenfleet.controllers.fleet import FleetView
from tokenfleet.controllers.planner import Planner
from tokenfleet.controllers.settings import OperatorConfig
from tokenfleet.controllers.throughput import ThroughputMeter
from tokenfleet.serving.runtime import RuntimePool, TritonRuntime
from tokenfleet.serving.throughput import token_counters

MODEL = "meterllama-fp16"


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonFleet]:
    try:
        install = TritonInstall.discover()
    except FileNotFoundError as exc:
        pytest.fail(f"tritonserver not available: {exc}")
    root = write_model_repository(tmp_path_factory.mktemp("models"), [MODEL])
    with TritonFleet(1, Path(root), install=install) as fleet:
        yield fleet


def _planner(endpoint: str, jobs: list[Any]) -> Planner:
    config = OperatorConfig(runtime_dial_networks="127.0.0.0/8", triton_request_timeout_seconds=5)
    planner = Planner(config, FleetView(config))
    planner.fleet.node_store.replace(
        [dataclasses.replace(vehicle("rack-1"), runtime_endpoint=endpoint)]
    )
    planner.fleet.attach(
        {
            "runtime_pods_by_node": {},
            "planner_jobs": {j.key: [j] for j in jobs},
        },
        partial=True,
    )
    return planner


async def _generate(rt: TritonRuntime, tokens: int) -> None:
    await rt.generate(MODEL, "measure me", max_tokens=tokens)


async def _counter(rt: TritonRuntime, at_least: float) -> float:
    """The runtime's counter, once it shows ``at_least`` (it lags the response a moment)."""
    deadline = time.monotonic() + 5
    while True:
        value = token_counters(await rt.metrics_text()).get(MODEL, 0.0)
        if value >= at_least or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_measured_rate_per_job_with_a_deadband(triton: TritonFleet) -> None:
    endpoint = triton[0].http_endpoint
    variant = {**FP16, "tritonModelName": MODEL}
    loaded = {"node": "rack-1", "variant": "fp16", "target": "Rack", "state": "Loaded"}
    serving = job_view("serving", variants=[variant], placements=(loaded,))
    elsewhere = job_view("elsewhere", variants=[variant], placements=(loaded,))  # no daemon here
    failed = job_view("failed", variants=[variant], placements=({**loaded, "state": "Failed"},))
    planner = _planner(endpoint, [serving, elsewhere, failed])
    for key in ("ns/serving", "ns/failed"):
        planner.daemon_running(key, True)
    config = dataclasses.replace(
        planner.config, throughput_seconds=1.0, throughput_window_seconds=30.0
    )
    clock = ManualClock(wall=1000.0, mono=1000.0)
    async with RuntimePool(timeout=5.0, load_timeout=30.0) as pool:
        rt = pool.get(endpoint)
        await rt.load(MODEL)
        try:
            await _generate(rt, 5)
            base = await _counter(rt, 5)
            assert base == 5  # the test model counts what it generates, as vLLM's backend does
            meter = ThroughputMeter(planner, config, pool, clock=clock)
            event = planner.job_event("ns/serving")

            # one reading: not measured yet
            assert await meter.measure_round() == {"ns/serving": None, "ns/failed": None}
            assert meter.measured("ns/serving") is None and not event.is_set()

            # 20 tokens in 4 s (on the injected clock): 5 tokens/s, published, job woken
            for _ in range(4):
                await _generate(rt, 5)
            await _counter(rt, base + 20)
            clock.advance(4)
            rates = await meter.measure_round()
            assert rates["ns/serving"] == pytest.approx(5.0)
            assert meter.measured("ns/serving") == 5.0 and event.is_set()
            assert meter.measured("ns/elsewhere") is None  # its daemon runs in another replica
            assert meter.measured("ns/failed") is None  # a Failed placement serves nothing

            # a small change stays inside the deadband: no rewrite, no wake
            event.clear()
            await _generate(rt, 2)
            await _counter(rt, base + 22)
            clock.advance(0.2)
            rates = await meter.measure_round()
            assert rates["ns/serving"] == pytest.approx(22 / 4.2)
            assert meter.measured("ns/serving") == 5.0 and not event.is_set()

            # the load stops: once the window holds no growth the figure is 0 and goes out
            clock.advance(31)
            await meter.measure_round()
            clock.advance(1)
            assert (await meter.measure_round())["ns/serving"] == 0.0
            assert meter.measured("ns/serving") == 0.0 and event.is_set()
            assert pool.endpoints == [endpoint]
        finally:
            await rt.unload(MODEL)


async def test_disabled_meter_measures_nothing() -> None:
    config = OperatorConfig(throughput_seconds=0)
    meter = ThroughputMeter(Planner(config, FleetView(config)), config, RuntimePool())
    meter.start()
    assert not meter.enabled and meter.task is None and meter.measured("ns/a") is None


async def test_a_reloaded_model_keeps_serving_and_counting(triton: TritonFleet) -> None:
    """A reload runs the new instance before the old one is finalized: each instance has its
    own counter series (a shared one was freed under the new instance and crashed Triton)."""
    endpoint = triton[0].http_endpoint
    async with RuntimePool(timeout=5.0, load_timeout=30.0) as pool:
        rt = pool.get(endpoint)
        await rt.load(MODEL)
        try:
            await _generate(rt, 3)
            await rt.load(MODEL)  # already loaded: Triton reloads it
            for _ in range(20):  # serve and scrape while the old instance goes away
                await _generate(rt, 4)
                await rt.metrics_text()
                await asyncio.sleep(0.1)
            assert await rt.server_ready()
            assert await _counter(rt, 80) >= 80
        finally:
            await rt.unload(MODEL)
