"""The gateway's Prometheus metrics, in a registry of their own (one per gateway)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    """Requests by job and code, TTFT and latency, tokens out by target, retries, in flight."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tokenfleet_gateway_requests",
            "Requests answered, by job and HTTP status code (499: the caller went away)",
            ["namespace", "job", "code"],
            registry=r,
        )
        self.ttft = Histogram(
            "tokenfleet_gateway_time_to_first_token_seconds",
            "From the request's arrival to its first token leaving the gateway",
            ["namespace", "job"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "tokenfleet_gateway_request_duration_seconds",
            "From the request's arrival to its last byte",
            ["namespace", "job"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_out = Counter(
            "tokenfleet_gateway_tokens_out",
            "Completion tokens delivered, by job and the serving replica's target",
            ["namespace", "job", "target"],
            registry=r,
        )
        self.retries = Counter(
            "tokenfleet_gateway_retries",
            "Requests retried on another replica after failing before their first byte",
            ["namespace", "job", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tokenfleet_gateway_in_flight_requests",
            "Requests being served now",
            ["namespace", "job"],
            registry=r,
        )
