"""The gateway's Prometheus metrics, in a registry of their own (one per gateway)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics", "JobMetrics"]

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
        self.upstream_stale_resends = Counter(
            "tokenfleet_gateway_upstream_stale_resends",
            "Requests sent again on a fresh connection after a kept-alive one to the runtime "
            "closed before answering (not a retry on another replica)",
            registry=r,
        )
        self.in_flight = Gauge(
            "tokenfleet_gateway_in_flight_requests",
            "Requests being served now",
            ["namespace", "job"],
            registry=r,
        )
        #: each job's labelled children, resolved once (``labels()`` takes a lock and builds a
        #: key per call: too much for every request). Bounded by the jobs ever seen, as the
        #: registry's own children are.
        self._jobs: dict[tuple[str, str], JobMetrics] = {}
        self._refused: dict[int, Counter] = {}

    def job(self, namespace: str, name: str) -> JobMetrics:
        """The labelled children of one job."""
        key = (namespace, name)
        found = self._jobs.get(key)
        if found is None:
            found = self._jobs[key] = JobMetrics(self, namespace, name)
        return found

    def refused(self, code: int) -> Counter:
        """The request counter of a code answered before the request named a job (401, 429,
        400...): job and namespace empty."""
        child = self._refused.get(code)
        if child is None:
            child = self._refused[code] = self.requests.labels("", "", str(code))
        return child


class JobMetrics:
    """One job's metric children: requests by code, TTFT, latency, in flight, tokens by target."""

    __slots__ = (
        "_codes",
        "_metrics",
        "_targets",
        "in_flight",
        "latency",
        "name",
        "namespace",
        "ttft",
    )

    def __init__(self, metrics: GatewayMetrics, namespace: str, name: str) -> None:
        self._metrics = metrics
        self.namespace = namespace
        self.name = name
        self.in_flight = metrics.in_flight.labels(namespace, name)
        self.latency = metrics.latency.labels(namespace, name)
        self.ttft = metrics.ttft.labels(namespace, name)
        self._codes: dict[int, Counter] = {}
        self._targets: dict[str, Counter] = {}

    def requests(self, code: int) -> Counter:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._metrics.requests.labels(
                self.namespace, self.name, str(code)
            )
        return child

    def tokens_out(self, target: str) -> Counter:
        child = self._targets.get(target)
        if child is None:
            child = self._targets[target] = self._metrics.tokens_out.labels(
                self.namespace, self.name, target
            )
        return child
