"""The gateway against real tritonservers, called with the official ``openai`` client."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from gateway_kit import KEY, NAMESPACE, OTHER_KEY, GatewayUnderTest, slice_dict
from tokenfleet.gateway.keys import KeyStore

pytestmark = pytest.mark.triton


def client(gw: GatewayUnderTest, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.url, api_key=key, max_retries=0, timeout=30)


async def test_chat_and_completion_streaming_and_not(gw: GatewayUnderTest) -> None:
    async with client(gw) as c:
        chat = await c.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "tell me about cars"}],
            max_tokens=12,
            temperature=0,
        )
        assert chat.object == "chat.completion"
        assert chat.model == "chat"
        text = chat.choices[0].message.content or ""
        assert chat.choices[0].message.role == "assistant"
        assert chat.choices[0].finish_reason == "length"
        assert len(text.split()) == 12
        assert chat.usage is not None
        assert chat.usage.completion_tokens == 12
        assert chat.usage.prompt_tokens == 5  # "user: tell me about cars"
        assert chat.usage.total_tokens == 17

        # streaming: the same tokens, one chunk each, then finish and usage
        stream = await c.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "tell me about cars"}],
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: list[str] = []
        finishes: list[str] = []
        usage = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)
        assert finishes == ["length"]
        assert usage is not None and usage.completion_tokens == 12
        # the rack (fp16) and the car (int4) are different models: compare with whichever
        # served; both runs are deterministic for temperature 0
        assert len("".join(pieces).split()) == 12

        comp = await c.completions.create(model="chat", prompt="once upon", max_tokens=7, seed=3)
        assert comp.object == "text_completion"
        assert len(comp.choices[0].text.split()) == 7
        assert comp.usage is not None and comp.usage.prompt_tokens == 2
        chunks = [
            ch
            async for ch in await c.completions.create(
                model="chat", prompt="once upon", max_tokens=7, seed=3, stream=True
            )
        ]
        assert len(chunks) == 8  # 7 tokens + the finish chunk
        assert chunks[-1].choices[0].finish_reason == "length"
        streamed = "".join(ch.choices[0].text for ch in chunks)
        assert len(streamed.split()) == 7

        models = await c.models.list()
        assert [m.id for m in models.data] == ["chat"]  # not team-b's job
        assert models.data[0].owned_by == NAMESPACE
    assert gw.metric("tokenfleet_gateway_requests_total", job="chat", code="200") == 4
    assert gw.metric("tokenfleet_gateway_tokens_out_total", job="chat") == 12 + 12 + 7 + 7
    assert gw.metric("tokenfleet_gateway_time_to_first_token_seconds_count", job="chat") == 4
    assert gw.metric("tokenfleet_gateway_in_flight_requests", job="chat") == 0


async def test_same_replica_same_seed_same_text(gw: GatewayUnderTest) -> None:
    # only the rack ready: deterministic for a seed through the gateway
    gw.table.set_slice(
        slice_dict("chat", NAMESPACE, [("node-a", "10.0.0.1", True), ("node-b", "10.0.0.2", False)])
    )
    async with client(gw) as c:
        texts = [
            (
                await c.completions.create(
                    model="chat", prompt="x y", max_tokens=9, temperature=0.9, seed=s
                )
            )
            .choices[0]
            .text
            for s in (1, 1, 2)
        ]
    assert texts[0] == texts[1] != texts[2]
    assert gw.metric("tokenfleet_gateway_tokens_out_total", job="chat", target="Vehicle") == 0


async def test_errors_are_openai_shaped(gw: GatewayUnderTest) -> None:
    async with client(gw, key="sk-wrong") as c:
        with pytest.raises(openai.AuthenticationError) as auth:
            await c.completions.create(model="chat", prompt="hi", max_tokens=2)
    assert auth.value.status_code == 401
    assert auth.value.body == {
        "message": "incorrect API key provided",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    async with client(gw) as c:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await c.completions.create(model="team-b/other", prompt="hi", max_tokens=2)
        assert denied.value.status_code == 403
        assert isinstance(denied.value.body, dict)
        assert denied.value.body["code"] == "permission_denied"
        assert denied.value.body["param"] == "model"
        # team-b's job by its bare name is simply not in team-a's namespace
        with pytest.raises(openai.NotFoundError) as foreign:
            await c.completions.create(model="other", prompt="hi", max_tokens=2)
        assert isinstance(foreign.value.body, dict)
        assert foreign.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError) as unknown:
            await c.chat.completions.create(
                model="no-such-job", messages=[{"role": "user", "content": "hi"}]
            )
        assert unknown.value.status_code == 404
        assert isinstance(unknown.value.body, dict)
        assert "no-such-job" in unknown.value.body["message"]
        with pytest.raises(openai.BadRequestError) as bad:
            await c.completions.create(model="chat", prompt="hi", max_tokens=100_000)
        assert isinstance(bad.value.body, dict)
        assert bad.value.body["param"] == "max_tokens"
        assert "max_tokens" in bad.value.body["message"]
    # no key at all
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gw.url}/completions", json={"model": "chat", "prompt": "x"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "invalid_api_key"
        async with s.post(
            f"{gw.url}/completions",
            data=b"{not json",
            headers={"Authorization": f"Bearer {KEY}"},
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "invalid_json"
    # a job without a ready replica: waits replica_wait_seconds (0.5 here) for one, then 503
    gw.table.set_slice(slice_dict("chat", NAMESPACE, []))
    async with client(gw) as c:
        t0 = time.monotonic()
        with pytest.raises(openai.InternalServerError) as unavailable:
            await c.completions.create(model="chat", prompt="hi", max_tokens=2)
        assert time.monotonic() - t0 >= 0.5
        # a replica that becomes ready while the request waits serves it
        ready = slice_dict("chat", NAMESPACE, [("node-a", "10.0.0.1", True)])
        asyncio.get_running_loop().call_later(0.2, gw.table.set_slice, ready)
        gw.table.set_slice(slice_dict("chat", NAMESPACE, []))
        late = await c.completions.create(model="chat", prompt="hi", max_tokens=2)
        assert late.usage is not None and late.usage.completion_tokens == 2
    assert unavailable.value.status_code == 503
    assert unavailable.value.response.headers["Retry-After"] == "1"
    assert isinstance(unavailable.value.body, dict)
    assert unavailable.value.body["code"] == "no_ready_replica"
    assert gw.metric("tokenfleet_gateway_requests_total", job="chat", code="503") == 1


async def test_flood_over_the_rate_limit_gets_429(gw: GatewayUnderTest) -> None:
    from gateway_kit import secret_dict

    gw.keys.set_secret(secret_dict("key-b", "team-b", OTHER_KEY, rate=2))  # burst 4
    async with client(gw, key=OTHER_KEY) as c:

        async def one() -> int:
            try:
                await c.completions.create(model="other", prompt="hi", max_tokens=1)
                return 200
            except openai.RateLimitError as exc:
                assert isinstance(exc.body, dict)
                assert exc.body["code"] == "rate_limit_exceeded"
                assert exc.body["type"] == "requests"
                assert int(exc.response.headers["Retry-After"]) >= 1
                return 429

        codes = await asyncio.gather(*(one() for _ in range(12)))
    assert codes.count(200) in (4, 5)  # the burst (plus at most one refill)
    assert codes.count(429) == 12 - codes.count(200)
    # team-a's key is not limited by team-b's flood
    async with client(gw) as c:
        await c.completions.create(model="chat", prompt="hi", max_tokens=1)


async def test_weighted_least_outstanding_work(gw: GatewayUnderTest) -> None:
    # 20 concurrent requests of 40 tokens: the rack (400 tok/s) takes ~4x the car's (100 tok/s)
    async with client(gw) as c:
        await asyncio.gather(
            *(c.completions.create(model="chat", prompt=f"p{i}", max_tokens=40) for i in range(20))
        )
    rack = gw.metric("tokenfleet_gateway_tokens_out_total", job="chat", target="Rack")
    car = gw.metric("tokenfleet_gateway_tokens_out_total", job="chat", target="Vehicle")
    assert rack + car == 800
    # strictly by score, 16 requests go to the rack and 4 to the car when all 20 arrive before
    # any finishes; on a loaded machine arrivals spread out, so allow for that
    assert car > 0 and rack >= 2 * car, (rack, car)


async def test_retry_once_when_the_replica_vanished(gw: GatewayUnderTest) -> None:
    # The car's model is unloaded behind the gateway's back while the slice still lists it
    # ready (the watch has not caught up): requests that pick it are retried on the rack.
    from tokenfleet.serving import RuntimePool

    async with RuntimePool() as pool:
        car = pool.get(gw.fleet.endpoints[1])
        await car.unload("gwllama-int4")
        await car.wait_unloaded("gwllama-int4", timeout=30)
        try:
            async with client(gw) as c:
                results = await asyncio.gather(
                    *(
                        c.completions.create(model="chat", prompt="x", max_tokens=3)
                        for _ in range(6)
                    ),
                    *(
                        c.chat.completions.create(
                            model="chat",
                            messages=[{"role": "user", "content": "x"}],
                            max_tokens=3,
                            stream=True,
                        )
                        for _ in range(2)
                    ),
                )
                for stream in results[6:]:  # a stream's request is counted once it has ended
                    async for _ in stream:  # type: ignore[union-attr]
                        pass
            assert len(results) == 8
            retries = gw.metric("tokenfleet_gateway_retries_total", job="chat")
            assert retries >= 1
            for _ in range(100):  # the count lands just after the last byte: wait (bounded)
                if gw.metric("tokenfleet_gateway_requests_total", job="chat", code="200") >= 8:
                    break
                await asyncio.sleep(0.05)
            assert gw.metric("tokenfleet_gateway_requests_total", job="chat", code="200") == 8
            assert gw.metric("tokenfleet_gateway_tokens_out_total", target="Vehicle") == 0
        finally:
            await car.load("gwllama-int4")
            await car.wait_loaded("gwllama-int4", timeout=30)


def test_key_store_rate_and_rotation() -> None:
    from gateway_kit import secret_dict

    now = [0.0]
    store = KeyStore(default_rate=1.0, clock=lambda: now[0])
    store.set_secret(secret_dict("k", "ns", "sk-1", rate=1))
    key = store.lookup("sk-1")
    assert key is not None and key.namespace == "ns"
    assert [store.admit(key) for _ in range(3)] == [0.0, 0.0, 1.0]
    now[0] = 1.0
    assert store.admit(key) == 0.0
    store.set_secret(secret_dict("k", "ns", "sk-2"))  # rotated
    assert store.lookup("sk-1") is None and store.lookup("sk-2") is not None
    store.set_secret(secret_dict("k", "ns", "sk-2"), deleted=True)
    assert store.lookup("sk-2") is None
    assert json.dumps(store.keys) == "{}"
