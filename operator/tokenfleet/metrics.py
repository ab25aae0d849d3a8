"""Prometheus metrics of the operator (prometheus-client, default registry).

Names follow the Prometheus conventions: ``tokenfleet_`` prefix, base units in the name
(``_seconds``, ``_kilowatts``), ``_total`` for counters, no unit-less ratios hidden in gauges.
Controllers import the objects below; :func:`serve` starts the HTTP endpoint.

Telemetry series (tank headroom, eligible vehicles per pool, telemetry age, rejected readings)
live in :mod:`tokenfleet.telemetry.metrics` (same default registry, served by :func:`serve`):
``tokenfleet_tank_headroom_kilowatts{tank,resource}``,
``tokenfleet_vehiclepool_vehicles{pool,state}``, ``tokenfleet_telemetry_age_seconds{kind,name}``,
``tokenfleet_telemetry_rejected_total{kind,field,problem}``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

RECONCILES = Counter(
    "tokenfleet_reconciles_total",
    "Reconciles by kind and result (ok, error, stalled, noop).",
    ["kind", "result"],
)
RECONCILE_DURATION = Histogram(
    "tokenfleet_reconcile_duration_seconds",
    "Duration of one reconcile by kind and result.",
    ["kind", "result"],
    buckets=_DURATION_BUCKETS,
)
PLAN_DURATION = Histogram(
    "tokenfleet_plan_duration_seconds",
    "Duration of one fleet placement plan (snapshot build + solve).",
    ["mode"],
    buckets=_DURATION_BUCKETS,
)
PLACEMENTS = Gauge(
    "tokenfleet_placements",
    "Placements recorded in InferenceJob status, by job, target and state.",
    ["namespace", "job", "target", "state"],
)
DESIRED_REPLICAS = Gauge(
    "tokenfleet_desired_replicas",
    "Replicas the planner wants for a job.",
    ["namespace", "job"],
)
READY_REPLICAS = Gauge(
    "tokenfleet_ready_replicas",
    "Replicas loaded and ready on their runtime, by job.",
    ["namespace", "job"],
)
MOVES = Counter(
    "tokenfleet_moves_total",
    "Replicas moved or shed, by reason (the reason named in the Event).",
    ["reason"],
)
SERVED_TOKENS = Gauge(
    "tokenfleet_served_tokens_per_second",
    "Estimated tokens/s served by a job's ready replicas (sum of their variants' rates).",
    ["namespace", "job"],
)
TRITON_REQUESTS = Counter(
    "tokenfleet_triton_requests_total",
    "Requests to Triton runtimes by operation and result.",
    ["operation", "result"],
)
API_WRITES = Counter(
    "tokenfleet_api_writes_total",
    "Writes to the Kubernetes API made by tokenfleet's controllers (kopf's own not included).",
    ["resource", "verb"],
)
RUNTIME_PROBES = Counter(
    "tokenfleet_runtime_probes_total",
    "Readiness probes of Triton runtimes hosting active placements, by result "
    "(ready, not_ready: answered but not ready, unreachable: refused, reset or timed out).",
    ["result"],
)
FAILING_RUNTIMES = Gauge(
    "tokenfleet_failing_runtimes",
    "Runtimes hosting active placements whose last readiness probe failed.",
)
PLANS = Counter(
    "tokenfleet_plans_total",
    "Fleet plans computed, by trigger.",
    ["trigger"],
)
TANK_LEAK_LATCHED = Gauge(
    "tokenfleet_tank_leak_latched",
    "1 while a tank's leak is latched (status.leakLatch; cordoned until acknowledged), else 0.",
    ["tank"],
)
TANK_LEAK_ACKNOWLEDGEMENTS = Counter(
    "tokenfleet_tank_leak_acknowledgements_total",
    "Leak acknowledgements (tokenfleet.io/leak-acknowledged annotation) by result "
    "(cleared, refused, notLatched).",
    ["tank", "result"],
)


@contextlib.contextmanager
def reconcile_timer(kind: str) -> Iterator[dict[str, str]]:
    """Time one reconcile; the body may set ``result`` in the yielded dict (default ``ok``).

    An exception marks the reconcile ``error`` and propagates.
    """
    outcome = {"result": "ok"}
    start = time.perf_counter()
    try:
        yield outcome
    except BaseException:
        outcome["result"] = "error"
        raise
    finally:
        elapsed = time.perf_counter() - start
        RECONCILES.labels(kind=kind, result=outcome["result"]).inc()
        RECONCILE_DURATION.labels(kind=kind, result=outcome["result"]).observe(elapsed)


BUILD_INFO = Gauge(
    "tokenfleet_build_info",
    "Always 1; the running operator's version and its Python and kopf versions as labels.",
    ["version", "python", "kopf"],
)


def record_build_info() -> None:
    """Set ``tokenfleet_build_info{version,python,kopf} 1`` (called by ``tokenfleet run``)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from tokenfleet import __version__

    try:
        kopf_version = version("kopf")
    except PackageNotFoundError:  # pragma: no cover - kopf is a dependency
        kopf_version = "unknown"
    BUILD_INFO.labels(__version__, platform.python_version(), kopf_version).set(1)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Expose the default registry over HTTP (a daemon thread). Port 0 disables it."""
    if port > 0:
        start_http_server(port, addr=address)
