"""Prometheus metrics of the operator (prometheus-client, default registry).

Names follow the Prometheus conventions: ``tokenfleet_`` prefix, base units in the name
(``_seconds``, ``_kilowatts``), ``_total`` for counters, no unit-less ratios hidden in gauges.
Controllers import the objects below; :func:`serve` starts the HTTP endpoint.

Every series of the operator is defined here (the gateway, a separate process, has its own in
:mod:`tokenfleet.gateway.metrics`), and so are those of the node-side model cache
(``tokenfleet modelcache``, another process): they live in their own registry,
:data:`MODELCACHE_REGISTRY`, which only that process serves. The telemetry series:

=============================================  =======  ======================================
name                                           type     labels
=============================================  =======  ======================================
tokenfleet_telemetry_rejected_total            counter  kind (vehicle|tank), field, problem
tokenfleet_telemetry_age_seconds               gauge    kind (tank|vehiclepool), name
tokenfleet_telemetry_poll_total                counter  tank, result (ok|error)
tokenfleet_tank_headroom_kilowatts             gauge    tank, resource (power|thermal)
tokenfleet_tank_it_load_kilowatts              gauge    tank
tokenfleet_tank_leak_detected                  gauge    tank (1 = Warning/Critical)
tokenfleet_vehiclepool_vehicles                gauge    pool, state (total|eligible|serving)
tokenfleet_vehiclepool_ineligible_vehicles     gauge    pool, reason
=============================================  =======  ======================================

Label cardinality: ``field`` and ``problem`` are bounded enums; vehicles are never a label
(``tokenfleet_telemetry_age_seconds{kind="vehiclepool"}`` is the oldest fresh-or-not reading
in the pool). A series whose value becomes unknown is removed, not set to a guess.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tokenfleet.api.models import PlacementState, Target

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


# ---- telemetry --------------------------------------------------------------------------------

TELEMETRY_REJECTED: Final = Counter(
    "tokenfleet_telemetry_rejected",
    "Telemetry fields rejected as unknown (missing, unparsable, out of range, non-finite, stale).",
    ["kind", "field", "problem"],
)
TELEMETRY_AGE: Final = Gauge(
    "tokenfleet_telemetry_age_seconds",
    "Age of the latest telemetry reading (tank), or of the oldest vehicle reading (vehiclepool).",
    ["kind", "name"],
)
TELEMETRY_POLLS: Final = Counter(
    "tokenfleet_telemetry_poll",
    "Redfish polls of an immersion tank by result.",
    ["tank", "result"],
)
TANK_HEADROOM: Final = Gauge(
    "tokenfleet_tank_headroom_kilowatts",
    "Tank headroom in kW (power: limit minus IT load; thermal: heat limit minus heat).",
    ["tank", "resource"],
)
TANK_IT_LOAD: Final = Gauge(
    "tokenfleet_tank_it_load_kilowatts", "Measured IT load of a tank in kW.", ["tank"]
)
TANK_LEAK: Final = Gauge(
    "tokenfleet_tank_leak_detected",
    "1 when a tank's leak detectors report Warning/Critical.",
    ["tank"],
)
POOL_VEHICLES: Final = Gauge(
    "tokenfleet_vehiclepool_vehicles", "Vehicles in a pool by state.", ["pool", "state"]
)
POOL_INELIGIBLE: Final = Gauge(
    "tokenfleet_vehiclepool_ineligible_vehicles",
    "Vehicles of a pool that cannot take new work, by reason.",
    ["pool", "reason"],
)


# ---- model delivery ---------------------------------------------------------------------------

MODEL_REFUSED: Final = Counter(
    "tokenfleet_model_delivery_refused",
    "Replicas failed because the node's model cache refused the model (VerificationFailed: "
    "digest mismatch or no digest; ModelDeliveryFailed: not in the store, over the disk budget)",
    ["reason"],
)

#: the node-side model cache's series (``tokenfleet modelcache`` serves this registry only)
MODELCACHE_REGISTRY: Final = CollectorRegistry(auto_describe=True)
MODELCACHE_BYTES_FETCHED: Final = Counter(
    "tokenfleet_modelcache_fetched_bytes",
    "Bytes of model files fetched from the object store",
    registry=MODELCACHE_REGISTRY,
)
MODELCACHE_HITS: Final = Counter(
    "tokenfleet_modelcache_hits",
    "Replicas placed on this node whose model was already cached",
    registry=MODELCACHE_REGISTRY,
)
MODELCACHE_MISSES: Final = Counter(
    "tokenfleet_modelcache_misses",
    "Replicas placed on this node whose model had to be fetched",
    registry=MODELCACHE_REGISTRY,
)
MODELCACHE_VERIFICATION_FAILURES: Final = Counter(
    "tokenfleet_modelcache_verification_failures",
    "Fetched models refused because their digest did not match the variant's sha256",
    registry=MODELCACHE_REGISTRY,
)
MODELCACHE_EVICTIONS: Final = Counter(
    "tokenfleet_modelcache_evictions",
    "Models evicted (least recently used) for the disk budget",
    registry=MODELCACHE_REGISTRY,
)
MODELCACHE_USED_BYTES: Final = Gauge(
    "tokenfleet_modelcache_used_bytes",
    "Bytes of verified models on disk",
    registry=MODELCACHE_REGISTRY,
)


def clear_gauge(gauge: Gauge, *labels: str) -> None:
    """Remove a labelled series if present (unknown values are not exported as numbers)."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


# ---- a job's series ---------------------------------------------------------------------------


def record_job_status(namespace: str, job: str, status: Mapping[str, Any]) -> None:
    """The job's gauges from the status it just wrote (wire names)."""
    READY_REPLICAS.labels(namespace=namespace, job=job).set(status.get("readyReplicas") or 0)
    DESIRED_REPLICAS.labels(namespace=namespace, job=job).set(status.get("desiredReplicas") or 0)
    SERVED_TOKENS.labels(namespace=namespace, job=job).set(
        status.get("servedTokensPerSecond") or 0.0
    )
    counts: dict[tuple[str, str], int] = {}
    for p in status.get("placements") or ():
        k = (str(p.get("target")), str(p.get("state")))
        counts[k] = counts.get(k, 0) + 1
    for target in Target:
        for state in PlacementState:
            PLACEMENTS.labels(
                namespace=namespace, job=job, target=target.value, state=state.value
            ).set(counts.get((target.value, state.value), 0))


def forget_job(namespace: str, job: str) -> None:
    """Drop a deleted job's series."""
    for target in Target:
        for state in PlacementState:
            clear_gauge(PLACEMENTS, namespace, job, target.value, state.value)
    for gauge in (READY_REPLICAS, DESIRED_REPLICAS, SERVED_TOKENS):
        clear_gauge(gauge, namespace, job)


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
