"""The gateway's per-request shortcuts give exactly what the plain code gave (pure)."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import generate_latest

from tokenfleet.gateway import api
from tokenfleet.gateway.main import loop_factory
from tokenfleet.gateway.metrics import GatewayMetrics

TEXTS = ["", "hello", ' "quoted" \\ back', "ünïcödé ✓ 🚗", "line\nbreak\ttab"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("finish", [None, "stop", "length"])
@pytest.mark.parametrize("first", [True, False])
def test_chat_chunks_are_byte_for_byte_the_plain_ones(
    text: str, finish: str | None, first: bool
) -> None:
    enc = api.ChunkEncoder("chat", "chatcmpl-abc", "team/chat", created=1_700_000_000)
    plain = api.chat_chunk(
        "chatcmpl-abc", "team/chat", text, finish, first=first, created=1_700_000_000
    )
    assert enc.chunk(text, finish, first=first) == api.sse(plain)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("finish", [None, "stop"])
def test_completion_chunks_are_byte_for_byte_the_plain_ones(text: str, finish: str | None) -> None:
    enc = api.ChunkEncoder("completion", "cmpl-1", 'we"ird', created=5)
    plain = api.completion_chunk("cmpl-1", 'we"ird', text, finish, created=5)
    assert enc.chunk(text, finish) == api.sse(plain)
    event = json.loads(enc.chunk(text, finish)[len(b"data: ") :])
    assert event["choices"][0]["text"] == text


def test_usage_chunk_and_created_shared_by_the_stream() -> None:
    enc = api.ChunkEncoder("chat", "chatcmpl-x", "m")
    usage = json.loads(enc.usage(3, 7)[len(b"data: ") :])
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    assert usage["choices"] == [] and usage["created"] == enc.created
    assert json.loads(enc.chunk("a", None)[len(b"data: ") :])["created"] == enc.created


def test_ids_are_unique_and_shaped_as_openai_s() -> None:
    ids = {api.new_id("chat") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("chatcmpl-") and len(i) == len("chatcmpl-") + 24 for i in ids)
    assert api.new_id("completion").startswith("cmpl-")


def test_job_metric_children_are_cached_and_exported() -> None:
    metrics = GatewayMetrics()
    jm = metrics.job("team-a", "chat")
    assert metrics.job("team-a", "chat") is jm
    assert jm.requests(200) is jm.requests(200)
    jm.requests(200).inc()
    jm.requests(503).inc(2)
    jm.tokens_out("Vehicle").inc(12)
    metrics.refused(401).inc()
    text = generate_latest(metrics.registry).decode()
    assert 'tokenfleet_gateway_requests_total{code="200",job="chat",namespace="team-a"} 1.0' in text
    assert 'tokenfleet_gateway_requests_total{code="503",job="chat",namespace="team-a"} 2.0' in text
    assert 'tokenfleet_gateway_requests_total{code="401",job="",namespace=""} 1.0' in text
    assert (
        'tokenfleet_gateway_tokens_out_total{job="chat",namespace="team-a",target="Vehicle"} 12.0'
        in text
    )
    # a refused request names no job: no in-flight or latency series for an empty job
    assert 'tokenfleet_gateway_in_flight_requests{job="",namespace=""}' not in text


def test_event_loop_choice() -> None:
    name, factory = loop_factory("auto")
    assert name == "uvloop"  # a dependency: installed wherever tokenfleet is
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
    name, factory = loop_factory("asyncio")
    loop = factory()
    try:
        assert name == "asyncio" and isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()
    with pytest.raises(ValueError, match="--event-loop"):
        loop_factory("trio")
