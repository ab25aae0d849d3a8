"""TritonRuntime / RuntimePool against real tritonservers (two servers per session)."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from pathlib import Path

import pytest
from e2e.runtime import TritonFleet, TritonInstall, TritonServer

from conftest import BROKEN, SLOW
from tokenfleet.serving import (
    EndpointError,
    InferenceFailed,
    ModelLoadFailed,
    ModelState,
    RuntimePool,
    RuntimeUnavailable,
    TritonRuntime,
)

pytestmark = pytest.mark.triton


async def gen(rt: TritonRuntime, model: str, prompt: str, max_tokens: int) -> list[str]:
    """The generated tokens (words) of one non-streaming generate call."""
    return (await rt.generate(model, prompt, max_tokens)).tokens


async def test_load_ready_generate_unload_gone(
    triton_fleet: TritonFleet, pool: RuntimePool, capsys: pytest.CaptureFixture[str]
) -> None:
    model = "cyclellama-fp16"
    runtimes = [pool.get(ep) for ep in triton_fleet.endpoints]
    for rt in runtimes:
        assert await rt.is_live()
        assert await rt.is_ready()
        assert await rt.model_state(model) is ModelState.ABSENT

    t0 = time.monotonic()
    await asyncio.gather(*(rt.load(model) for rt in runtimes))
    load_s = time.monotonic() - t0
    await asyncio.gather(*(rt.wait_loaded(model, timeout=10) for rt in runtimes))
    for rt in runtimes:
        assert await rt.model_state(model) is ModelState.READY
        assert await rt.is_model_ready(model)

    prompt = "the quick brown fox"
    latencies = []
    outputs = []
    for rt in runtimes:
        for _ in range(10):
            t = time.monotonic()
            outputs.append(await gen(rt, model, prompt, 16))
            latencies.append(time.monotonic() - t)
    first = outputs[0]
    assert len(first) == 16
    assert all(isinstance(t, str) and t for t in first)
    assert len(set(first)) > 1, "the generator should not emit one token forever"
    assert all(o == first for o in outputs), "same prompt, same model: same tokens on any server"
    assert await gen(runtimes[0], model, "hello there", 16) != first
    assert await gen(runtimes[0], model, prompt, 4) == first[:4]
    assert await gen(runtimes[0], model, prompt, 0) == []

    t0 = time.monotonic()
    await asyncio.gather(*(rt.unload(model) for rt in runtimes))
    unload_call_s = time.monotonic() - t0
    await asyncio.gather(*(rt.wait_unloaded(model, timeout=15) for rt in runtimes))
    unload_s = time.monotonic() - t0
    for rt in runtimes:
        status = await rt.model_status(model)
        assert status.state is ModelState.UNAVAILABLE
        assert status.reason == "unloaded"
        assert not await rt.is_model_ready(model)
        with pytest.raises(InferenceFailed, match=r"unknown model|not ready|not found"):
            await gen(rt, model, prompt, 4)
    with capsys.disabled():
        print(
            f"\n[serving figures] load x2 concurrent {load_s:.3f}s; generate(16 tokens) "
            f"p50 {statistics.median(latencies) * 1000:.2f}ms "
            f"max {max(latencies) * 1000:.2f}ms (n={len(latencies)}); unload call "
            f"{unload_call_s:.3f}s, gone after {unload_s:.2f}s"
        )


async def test_variants_are_distinct_models(triton_fleet: TritonFleet, pool: RuntimePool) -> None:
    rt = pool.get(triton_fleet.endpoints[1])
    await asyncio.gather(rt.load("tinyllama-fp16"), rt.load("tinyllama-int4"))
    try:
        fp16 = await gen(rt, "tinyllama-fp16", "one two three", 12)
        int4 = await gen(rt, "tinyllama-int4", "one two three", 12)
        assert len(fp16) == len(int4) == 12
        assert fp16 != int4
        index = {s.name: s.state for s in await rt.repository_index()}
        assert index["tinyllama-fp16"] is ModelState.READY
        assert index["tinyllama-int4"] is ModelState.READY
    finally:
        # No wait: waiting for UNLOADING to end is covered by the load/unload cycle test.
        await asyncio.gather(rt.unload("tinyllama-fp16"), rt.unload("tinyllama-int4"))


async def test_load_missing_model_gives_tritons_message(
    triton_fleet: TritonFleet, pool: RuntimePool
) -> None:
    rt = pool.get(triton_fleet.endpoints[0])
    with pytest.raises(ModelLoadFailed) as info:
        await rt.load("no-such-model")
    assert info.value.model == "no-such-model"
    assert info.value.endpoint == triton_fleet.endpoints[0]
    assert "failed to load 'no-such-model'" in info.value.message
    assert "failed to poll from model repository" in info.value.message
    assert await rt.model_state("no-such-model") is ModelState.ABSENT


async def test_load_of_a_model_whose_initialize_raises(
    triton_fleet: TritonFleet, pool: RuntimePool
) -> None:
    rt = pool.get(triton_fleet.endpoints[1])
    with pytest.raises(ModelLoadFailed, match=r"tokenizer\.json missing") as info:
        await rt.load(BROKEN)
    assert info.value.model == BROKEN
    status = await rt.model_status(BROKEN)
    assert status.state is ModelState.UNAVAILABLE
    assert "tokenizer.json missing" in status.reason
    with pytest.raises(ModelLoadFailed, match=r"tokenizer\.json missing"):
        await rt.wait_loaded(BROKEN, timeout=5)


async def test_bad_inference_input_is_inference_failed(
    triton_fleet: TritonFleet, pool: RuntimePool
) -> None:
    rt = pool.get(triton_fleet.endpoints[0])
    await rt.load("tinyllama-int4")
    try:
        with pytest.raises(InferenceFailed, match=r"max_tokens must be in 0\.\.512"):
            await gen(rt, "tinyllama-int4", "one", 100_000)
        assert len(await gen(rt, "tinyllama-int4", "one", 3)) == 3  # still serving
    finally:
        await rt.unload("tinyllama-int4")


async def test_killed_server_gives_runtime_unavailable_within_timeout(
    triton_install: TritonInstall, model_repository: Path
) -> None:
    model = "killllama-fp16"
    with TritonServer(model_repository, install=triton_install) as server:
        async with RuntimePool(timeout=1.0, load_timeout=10.0) as pool:
            rt = pool.get(server.http_endpoint)
            await rt.load(model)
            tokens = await gen(rt, model, "three", 4)
            assert len(tokens) == 4

            # A hung runtime (SIGSTOP): every call gives up after the 1 s timeout.
            os.killpg(server.pid or 0, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(RuntimeUnavailable, match=r"timed out after 1\.0s"):
                    await gen(rt, model, "three", 4)
                assert 0.9 < time.monotonic() - t0 < 2.5
                t0 = time.monotonic()
                assert not await rt.is_live()
                assert time.monotonic() - t0 < 2.5
                # the health probe's own timeout bounds it, not the client's
                t0 = time.monotonic()
                with pytest.raises(RuntimeUnavailable, match=r"ready timed out after 0\.3s"):
                    await rt.server_ready(timeout=0.3)
                assert time.monotonic() - t0 < 1.0
            finally:
                os.killpg(server.pid or 0, signal.SIGCONT)
            assert await rt.is_live()
            assert await rt.server_ready()

            # A crashed runtime: connection refused, reported at once.
            server.kill()
            assert not server.running
            for call in (
                lambda: gen(rt, model, "three", 4),
                lambda: rt.load(model),
                lambda: rt.unload(model),
                lambda: rt.model_state(model),
                lambda: rt.metrics(),
                lambda: rt.server_ready(),
            ):
                t0 = time.monotonic()
                with pytest.raises(RuntimeUnavailable) as info:
                    await call()
                assert time.monotonic() - t0 < 1.5
                assert info.value.endpoint == server.http_endpoint
            assert not await rt.is_live()
            assert not await rt.is_ready()

            # Recovery on the same endpoint: the same client works again, the model is gone
            # until loaded again, and it generates the same tokens as before the crash.
            before = server.http_endpoint
            server.restart()
            assert server.http_endpoint == before
            assert await rt.is_live()
            assert await rt.model_state(model) is ModelState.ABSENT
            await rt.load(model)
            assert await gen(rt, model, "three", 4) == tokens


async def test_concurrency_bounds_are_respected(
    triton_fleet: TritonFleet, pool: RuntimePool
) -> None:
    # SLOW: 10 ms per token, 2 instances, so server-side calls overlap.
    loaded = [pool.get(ep) for ep in triton_fleet.endpoints]
    await asyncio.gather(*(rt.load(SLOW) for rt in loaded))
    try:
        # Per endpoint: 2 slots, 8 calls of ~60 ms each.
        async with RuntimePool(per_endpoint_concurrency=2, max_concurrency=64) as bounded:
            rt = bounded.get(triton_fleet.endpoints[0])
            results = await asyncio.gather(
                *(gen(rt, SLOW, f"request {i + 1}", 6) for i in range(8))
            )
            assert all(len(r) == 6 for r in results)
            assert rt.stats.high_water == 2
            assert rt.stats.in_flight == 0

        # Global: 3 slots shared by two endpoints with 3 slots each.
        async with RuntimePool(per_endpoint_concurrency=3, max_concurrency=3) as bounded:
            runtimes = [bounded.get(ep) for ep in triton_fleet.endpoints]
            calls = [gen(rt, SLOW, f"request {i + 1}", 6) for i in range(6) for rt in runtimes]
            assert len(await asyncio.gather(*calls)) == 12
            assert bounded.global_stats.high_water == 3
            assert bounded.global_stats.in_flight == 0
            assert all(bounded.stats(ep).high_water <= 3 for ep in triton_fleet.endpoints)
    finally:
        # Unload without waiting (2.3 s for two instances): no other test uses SLOW.
        await asyncio.gather(*(rt.unload(SLOW) for rt in loaded))


async def test_metrics_are_parsed(triton_fleet: TritonFleet, pool: RuntimePool) -> None:
    model = "metricllama-fp16"
    server = triton_fleet[1]
    rt = pool.get(server.http_endpoint)
    assert rt.metrics_url == server.metrics_url  # HTTP port + 2 convention
    await rt.load(model)
    try:
        for _ in range(5):
            await gen(rt, model, "seven seven", 3)
        # Triton counts a request as a success after the response has gone out,
        # so the last one can lag the client by a moment: wait for it, bounded.
        deadline = time.monotonic() + 5
        m = await rt.metrics()
        while m.models[model].request_success < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            m = await rt.metrics()
        assert m.models[model].request_success == 5
        assert m.models[model].request_failure == 0
        assert m.models[model].inference_count == 5
        assert m.models[model].request_duration_us > 0
        assert m.samples[f'nv_inference_count{{model="{model}",version="1"}}'] == 5
        # CPU memory appears after Triton's first CPU-metrics poll (2 s interval).
        deadline = time.monotonic() + 5
        used = await rt.memory_bytes()
        while used is None and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            used = await rt.memory_bytes()
        assert used is not None and used > 0
        total = (await rt.metrics()).cpu_memory_total_bytes
        assert total is not None and used <= total
    finally:
        await rt.unload(model)


async def test_pool_caches_validates_and_closes(triton_fleet: TritonFleet) -> None:
    ep = triton_fleet.endpoints[0]
    pool = RuntimePool()
    rt = pool.get(ep)
    assert pool.get(ep) is rt
    assert pool.endpoints == [ep]
    with pytest.raises(EndpointError):
        pool.get("http://127.0.0.1:8000")
    assert await rt.is_live()
    await pool.discard(ep)
    assert pool.endpoints == []
    with pytest.raises(RuntimeUnavailable, match="closed"):
        await rt.model_state("tinyllama-fp16")
    rt2 = pool.get(ep)
    assert rt2 is not rt and await rt2.is_live()
    await pool.close()
    with pytest.raises(RuntimeError):
        pool.get(ep)


async def test_standalone_runtime_context_manager(triton_fleet: TritonFleet) -> None:
    async with TritonRuntime(triton_fleet.endpoints[1], timeout=2.0) as rt:
        meta = await rt.server_metadata()
        assert meta["name"] == "triton"
        assert meta["version"].startswith("2.")
