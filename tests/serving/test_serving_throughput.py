"""Measured tokens/s (pure): the generated-tokens counter out of a scrape, rates over a window
with counter resets, a job's sum over its replicas, and the status deadband."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.serving.throughput import (
    GENERATED_TOKENS_METRIC,
    TokenRateMeter,
    job_rates,
    should_publish,
    token_counters,
)

SCRAPE = """\
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model="tinyllama-fp16",version="1"} 120
vllm:generation_tokens_total{model="tinyllama-fp16",version="2",instance="b"} 20
vllm:generation_tokens_total{model="tinyllama-fp16",version="2",instance="c"} 10
vllm:generation_tokens_total{model="qwen \\"q\\"-int4",version="1"} 7
vllm:generation_tokens_total{version="1"} 99
vllm:prompt_tokens_total{model="tinyllama-fp16",version="1"} 500
nv_inference_count{model="tinyllama-int4",version="1"} 15
"""


def test_token_counters_per_model_summed_over_versions_and_instances() -> None:
    counters = token_counters(SCRAPE)
    # a sample without a model label is nobody's; other families are not tokens generated;
    # a model without the counter is absent, not 0 (its runtime does not measure it)
    assert counters == {"tinyllama-fp16": 150.0, 'qwen "q"-int4': 7.0}
    assert token_counters(SCRAPE, "vllm:prompt_tokens_total") == {"tinyllama-fp16": 500.0}
    assert token_counters("nv_cpu_utilization 0.5\n") == {}
    assert GENERATED_TOKENS_METRIC == "vllm:generation_tokens_total"
    with pytest.raises(ValueError, match="bad metrics line"):
        token_counters('vllm:generation_tokens_total{model="x"\n')


def test_rate_over_the_window() -> None:
    meter = TokenRateMeter(window_seconds=10)
    key = ("127.0.0.1:8000", "tinyllama-fp16")
    assert meter.rate(key, 0.0) is None  # never read
    meter.observe(key, 100, now=0.0)
    assert meter.rate(key, 0.0) is None  # one reading is no rate
    meter.observe(key, 140, now=2.0)
    assert meter.rate(key, 2.0) == pytest.approx(20.0)
    meter.observe(key, 200, now=4.0)
    assert meter.rate(key, 4.0) == pytest.approx(25.0)  # (200 - 100) / 4
    meter.observe(key, 200, now=13.0)  # readings before 3.0 leave the window
    assert meter.rate(key, 13.0) == pytest.approx(0.0)  # (200 - 200) / 9: the load stopped
    assert meter.rate(key, 30.0) is None  # nothing read for a window: no longer measured


def test_a_counter_reset_is_not_negative_tokens() -> None:
    meter = TokenRateMeter(window_seconds=60)
    meter.observe("k", 1000, now=0.0)
    meter.observe("k", 30, now=10.0)  # the runtime restarted: 30 new tokens, not -970
    assert meter.rate("k", 10.0) == pytest.approx(3.0)
    meter.observe("k", 90, now=20.0)
    assert meter.rate("k", 20.0) == pytest.approx(4.5)  # (30 + 60) / 20


def test_same_instant_keeps_the_newest_reading_and_retain_forgets() -> None:
    meter = TokenRateMeter(window_seconds=60)
    meter.observe("a", 0, now=0.0)
    meter.observe("a", 10, now=5.0)
    meter.observe("a", 20, now=5.0)
    assert meter.rate("a", 5.0) == pytest.approx(4.0)
    meter.observe("b", 1, now=5.0)
    meter.retain(["b"])
    assert len(meter) == 1 and meter.rate("a", 5.0) is None


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        TokenRateMeter(window_seconds=0)
    meter = TokenRateMeter(window_seconds=1)
    with pytest.raises(ValueError, match="counter 'k'"):
        meter.observe("k", -1, now=0.0)
    with pytest.raises(ValueError, match="counter 'k'"):
        meter.observe("k", math.nan, now=0.0)


@given(
    st.lists(
        st.tuples(st.floats(0.01, 5), st.integers(0, 10_000), st.booleans()),
        min_size=2,
        max_size=40,
    )
)
def test_rates_are_never_negative_and_count_every_token(
    steps: list[tuple[float, int, bool]],
) -> None:
    """Whatever the counter does (grows, or restarts and reads less than before), the rate over a
    window covering every reading is the tokens generated (resets undone) over the elapsed time."""
    meter = TokenRateMeter(window_seconds=1e9)
    now, raw, generated = 0.0, 0, 0
    meter.observe("k", raw, now)
    for dt, amount, reset in steps:
        now += dt
        # a reset shows only as a counter that went down (as for Prometheus' rate())
        raw = amount if reset and amount < raw else raw + amount
        generated += amount
        meter.observe("k", raw, now)
    rate = meter.rate("k", now)
    assert rate is not None and rate >= 0
    assert rate == pytest.approx(generated / now)


def test_a_job_sums_its_replicas_and_shares_a_shared_model() -> None:
    rates = {("rt1", "m-fp16"): 30.0, ("rt2", "m-fp16"): 10.0, ("rt3", "m-int4"): None}
    replicas = {
        "ns/a": [("rt1", "m-fp16"), ("rt2", "m-fp16")],
        "ns/b": [("rt3", "m-int4")],  # its only runtime has no reading yet
        "ns/c": [],  # nothing loaded
        "ns/d": [("rt2", "m-fp16"), ("rt3", "m-int4")],  # shares rt2's model with ns/a
    }
    out = job_rates(replicas, rates.get)
    assert out["ns/a"] == pytest.approx(30.0 + 10.0 / 2)
    assert out["ns/b"] is None and out["ns/c"] is None
    assert out["ns/d"] == pytest.approx(10.0 / 2)


@pytest.mark.parametrize(
    ("published", "measured", "write"),
    [
        (None, None, False),
        (None, 0.0, True),  # measured for the first time
        (12.0, None, True),  # no longer measured: the figure goes
        (0.0, 0.0, False),  # at rest: nothing to write
        (0.0, 0.4, True),  # load began
        (3.0, 0.0, True),  # load stopped
        (100.0, 109.0, False),  # noise inside 10 %
        (100.0, 111.0, True),
        (5.0, 5.9, False),  # inside 1 token/s
        (5.0, 6.5, True),
    ],
)
def test_deadband(published: float | None, measured: float | None, write: bool) -> None:
    assert should_publish(published, measured) is write
