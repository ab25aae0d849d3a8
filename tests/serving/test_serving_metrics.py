"""Prometheus text parsing of Triton's metrics (pure)."""

from __future__ import annotations

import pytest

from tokenfleet.serving import parse_metrics
from tokenfleet.serving.runtime import default_metrics_url

TEXT = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="tinyllama-fp16",version="1"} 12
nv_inference_request_success{model="tinyllama-fp16",version="2"} 3
nv_inference_request_success{model="tinyllama-int4",version="1"} 4
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="tinyllama-fp16",reason="OTHER",version="1"} 1
nv_inference_request_failure{model="tinyllama-fp16",reason="BACKEND",version="1"} 2
# TYPE nv_inference_count counter
nv_inference_count{model="tinyllama-fp16",version="1"} 15
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="tinyllama-fp16",version="1"} 33730
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="tinyllama-fp16",version="1"} 0
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.25
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 25276510208
# TYPE nv_cpu_memory_used_bytes gauge
nv_cpu_memory_used_bytes 979873792
nv_pinned_memory_pool_used_bytes 0
weird_label{path="a\\\\b",quote="say \\"hi\\"",nl="x\\ny"} NaN 1700000000000
"""


def test_parse_triton_metrics() -> None:
    m = parse_metrics(TEXT)
    assert m.cpu_memory_used_bytes == 979873792
    assert m.cpu_memory_total_bytes == 25276510208
    assert m.cpu_utilization == 0.25
    assert m.pinned_memory_used_bytes == 0
    fp16 = m.models["tinyllama-fp16"]
    assert fp16.request_success == 15  # summed over versions
    assert fp16.request_failure == 3  # summed over reasons
    assert fp16.inference_count == 15
    assert fp16.request_duration_us == 33730
    assert m.models["tinyllama-int4"].request_success == 4
    assert list(m.models) == ["tinyllama-fp16", "tinyllama-int4"]
    assert m.samples['nv_inference_count{model="tinyllama-fp16",version="1"}'] == 15
    weird = m.samples['weird_label{nl="x\ny",path="a\\b",quote="say "hi""}']
    assert weird != weird  # NaN


def test_memory_not_sampled_yet_is_none() -> None:
    m = parse_metrics(
        "nv_cpu_memory_total_bytes 0\nnv_cpu_memory_used_bytes 0\nnv_cpu_utilization 0\n"
    )
    assert m.cpu_memory_used_bytes is None
    assert m.cpu_memory_total_bytes is None
    assert m.cpu_utilization is None
    assert parse_metrics("").models == {}


@pytest.mark.parametrize(
    "text", ['nv_x{model="a" 1\n', "nv_x 1 2 3\n", "nv_x abc\n", "1bad 3\n", "nv_x{a=b} 1\n"]
)
def test_garbage_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_metrics(text)


def test_default_metrics_url_is_http_port_plus_two() -> None:
    assert default_metrics_url("127.0.0.1:41000") == "http://127.0.0.1:41002/metrics"
    assert default_metrics_url("10.1.0.5:8000") == "http://10.1.0.5:8002/metrics"
    assert default_metrics_url("[fd00::1]:8000") == "http://[fd00::1]:8002/metrics"


def test_metrics_url_follows_the_configured_port_offset() -> None:
    # the chart's runtime.metricsPort - runtime.httpPort (e.g. 9000 / 9102)
    assert default_metrics_url("10.1.0.5:9000", 102) == "http://10.1.0.5:9102/metrics"
    assert default_metrics_url("127.0.0.1:41000", -1) == "http://127.0.0.1:40999/metrics"
    from tokenfleet.serving import EndpointError

    with pytest.raises(EndpointError, match="metrics port 70000"):
        default_metrics_url("10.1.0.5:65000", 5000)


async def test_pool_clients_use_the_pool_metrics_offset() -> None:
    from tokenfleet.serving.runtime import RuntimePool

    async with RuntimePool(metrics_offset=102) as pool:
        assert pool.get("10.1.0.5:9000").metrics_url == "http://10.1.0.5:9102/metrics"
        explicit = pool.get("10.1.0.6:9000", metrics_url="http://10.1.0.6:1/metrics")
        assert explicit.metrics_url == "http://10.1.0.6:1/metrics"
