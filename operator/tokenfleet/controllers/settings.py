"""Operator-wide settings: kopf configuration and the tunables of tokenfleet's own loops.

kopf keeps its bookkeeping (handler progress, last-handled spec) in annotations under
``tokenfleet.io/``: the status schemas are strict, so anything kopf wrote to ``status`` would be
pruned. Routine handler logs are not posted as Events (``posting.level = WARNING``); the controllers
post Events explicitly for the things a user acts on (moves, rejected telemetry, stalls).

Every tunable has an environment variable (``TOKENFLEET_<NAME>``), so tests can shorten intervals
without a rebuild; ``tokenfleet run`` flags win over the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from tokenfleet import GROUP

FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP
FIELD_MANAGER = "tokenfleet-operator"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(f"TOKENFLEET_{name}")
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        logging.getLogger(__name__).warning("ignoring TOKENFLEET_%s=%r: not a number", name, raw)
        return default


def _env_str(name: str, default: str) -> str:
    raw = os.environ.get(f"TOKENFLEET_{name}")
    return default if raw is None or raw.strip() == "" else raw.strip()


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """tokenfleet's own knobs (kopf's are set in :func:`configure`)."""

    #: debounce window of the fleet planner after a relevant change (seconds)
    plan_debounce_seconds: float = 0.5
    #: the planner replans at least this often even with no signal (seconds); incrementally
    #: unless a job is short of its target or plan_full_resync_seconds passed
    plan_resync_seconds: float = 30.0
    #: a change that needs a full plan waits until this long after the last full plan (changes
    #: meanwhile are gathered into it): a storm of changes costs at most one full plan per this
    plan_full_min_interval_seconds: float = 2.0
    #: a full plan at least this often, changes or not (seconds)
    plan_full_resync_seconds: float = 300.0
    #: at most this many changed Nodes are re-planned incrementally (one step each); more take
    #: a full plan
    plan_incremental_max_nodes: int = 32
    #: the node watch, after a Node event it had to wait for, waits this long before it reads
    #: on, so a large fleet's status reports are read a few at a time rather than each in its
    #: own wake-up (CPU); a change that follows another event this closely is seen up to this
    #: much later (seconds; 0: off)
    node_watch_gather_seconds: float = 0.2
    #: each job re-checks its runtimes (readiness, adoption) at least this often (seconds)
    job_resync_seconds: float = 30.0
    #: how long a load may take before the placement is marked Failed (seconds)
    load_timeout_seconds: float = 120.0
    #: how long an unload may take before the operator gives up waiting (seconds)
    unload_timeout_seconds: float = 30.0
    #: drain: a replica the plan removes stays in its EndpointSlice as serving/terminating (not
    #: ready: gateways send it no new requests) this long before the unload call; requests in
    #: flight then finish inside Triton's unload, bounded by unload_timeout_seconds (seconds)
    drain_seconds: float = 1.0
    #: timeout of one request to a Triton runtime (seconds)
    triton_request_timeout_seconds: float = 10.0
    #: concurrent requests to Triton runtimes, operator-wide
    triton_concurrency: int = 16
    #: the runtime health prober checks the readiness of every runtime hosting an active
    #: placement this often, and wakes the jobs placed there when one fails (seconds; 0: off)
    runtime_probe_seconds: float = 5.0
    #: a runtime that failed is not used for new placements for this long (seconds)
    runtime_failure_backoff_seconds: float = 60.0
    #: make-before-break: how long an old replica on a still-safe node waits for its replacement
    replacement_timeout_seconds: float = 300.0
    #: namespace of the runtime DaemonSet's pods
    runtime_namespace: str = "tokenfleet-system"
    #: label (key=value) that marks runtime pods
    runtime_pod_label: str = "app.kubernetes.io/name=tokenfleet-runtime"
    #: Triton HTTP port on runtime pods (EndpointSlice port and pod-address control traffic)
    runtime_http_port: int = 8000
    #: Triton gRPC port on runtime pods (the job Service's and EndpointSlice's ``grpc`` port)
    runtime_grpc_port: int = 8001
    #: Triton metrics port on runtime pods; a runtime endpoint HOST:PORT has its metrics on
    #: HOST:(PORT + runtime_metrics_port - runtime_http_port)
    runtime_metrics_port: int = 8002
    #: comma-separated CIDRs the operator may send control traffic to; empty: anywhere. The local
    #: fleet and the tests set 127.0.0.0/8, so a fake (kwok) pod address is never dialled.
    runtime_dial_networks: str = ""
    #: kopf watch timeouts (seconds)
    watch_server_timeout_seconds: float = 300.0
    watch_client_timeout_seconds: float = 330.0
    #: API request timeout (seconds)
    request_timeout_seconds: float = 30.0
    #: kopf peering (HA): a replica silent this long is presumed dead and a standby takes over
    peering_lifetime_seconds: float = 60.0
    #: measured served tokens/s: every runtime hosting a Loaded replica has its generated-tokens
    #: counter scraped this often (seconds; 0: off, and status.measuredTokensPerSecond stays
    #: absent), and the rate is taken over the window (seconds)
    throughput_seconds: float = 15.0
    throughput_window_seconds: float = 60.0
    #: the runtimes' counter of generated tokens, labelled by Triton model (Triton's vLLM backend)
    throughput_metric: str = "vllm:generation_tokens_total"

    @classmethod
    def from_env(cls, **overrides: Any) -> OperatorConfig:
        d = cls()
        values: dict[str, Any] = {
            "plan_debounce_seconds": _env_float("PLAN_DEBOUNCE_SECONDS", d.plan_debounce_seconds),
            "plan_resync_seconds": _env_float("PLAN_RESYNC_SECONDS", d.plan_resync_seconds),
            "plan_full_min_interval_seconds": _env_float(
                "PLAN_FULL_MIN_INTERVAL_SECONDS", d.plan_full_min_interval_seconds
            ),
            "plan_full_resync_seconds": _env_float(
                "PLAN_FULL_RESYNC_SECONDS", d.plan_full_resync_seconds
            ),
            "plan_incremental_max_nodes": int(
                _env_float("PLAN_INCREMENTAL_MAX_NODES", d.plan_incremental_max_nodes)
            ),
            "node_watch_gather_seconds": _env_float(
                "NODE_WATCH_GATHER_SECONDS", d.node_watch_gather_seconds
            ),
            "job_resync_seconds": _env_float("JOB_RESYNC_SECONDS", d.job_resync_seconds),
            "load_timeout_seconds": _env_float("LOAD_TIMEOUT_SECONDS", d.load_timeout_seconds),
            "unload_timeout_seconds": _env_float(
                "UNLOAD_TIMEOUT_SECONDS", d.unload_timeout_seconds
            ),
            "drain_seconds": _env_float("DRAIN_SECONDS", d.drain_seconds),
            "triton_request_timeout_seconds": _env_float(
                "TRITON_REQUEST_TIMEOUT_SECONDS", d.triton_request_timeout_seconds
            ),
            "triton_concurrency": int(_env_float("TRITON_CONCURRENCY", d.triton_concurrency)),
            "runtime_probe_seconds": _env_float("RUNTIME_PROBE_SECONDS", d.runtime_probe_seconds),
            "runtime_failure_backoff_seconds": _env_float(
                "RUNTIME_FAILURE_BACKOFF_SECONDS", d.runtime_failure_backoff_seconds
            ),
            "replacement_timeout_seconds": _env_float(
                "REPLACEMENT_TIMEOUT_SECONDS", d.replacement_timeout_seconds
            ),
            "runtime_namespace": _env_str("RUNTIME_NAMESPACE", d.runtime_namespace),
            "runtime_pod_label": _env_str("RUNTIME_POD_LABEL", d.runtime_pod_label),
            "runtime_http_port": int(_env_float("RUNTIME_HTTP_PORT", d.runtime_http_port)),
            "runtime_grpc_port": int(_env_float("RUNTIME_GRPC_PORT", d.runtime_grpc_port)),
            "runtime_metrics_port": int(_env_float("RUNTIME_METRICS_PORT", d.runtime_metrics_port)),
            "runtime_dial_networks": _env_str("RUNTIME_DIAL_NETWORKS", d.runtime_dial_networks),
            "watch_server_timeout_seconds": _env_float(
                "WATCH_SERVER_TIMEOUT_SECONDS", d.watch_server_timeout_seconds
            ),
            "watch_client_timeout_seconds": _env_float(
                "WATCH_CLIENT_TIMEOUT_SECONDS", d.watch_client_timeout_seconds
            ),
            "request_timeout_seconds": _env_float(
                "REQUEST_TIMEOUT_SECONDS", d.request_timeout_seconds
            ),
            "peering_lifetime_seconds": _env_float(
                "PEERING_LIFETIME_SECONDS", d.peering_lifetime_seconds
            ),
            "throughput_seconds": _env_float("THROUGHPUT_SECONDS", d.throughput_seconds),
            "throughput_window_seconds": _env_float(
                "THROUGHPUT_WINDOW_SECONDS", d.throughput_window_seconds
            ),
            "throughput_metric": _env_str("THROUGHPUT_METRIC", d.throughput_metric),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def runtime_label_key(self) -> str:
        return self.runtime_pod_label.partition("=")[0]

    @property
    def runtime_label_value(self) -> str:
        return self.runtime_pod_label.partition("=")[2]

    def is_runtime_pod(self, labels: Mapping[str, str]) -> bool:
        """The pod carries :attr:`runtime_pod_label` (the one spelling of the runtime pod)."""
        return labels.get(self.runtime_label_key) == self.runtime_label_value


def apply_kopf_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's knobs, as tokenfleet wants them (separate from the handler, so tests can use it)."""
    # Progress and diff-base in annotations: the status schema is strict (no status.kopf).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX, v1=False
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration", v1=False
    )
    settings.persistence.finalizer = FINALIZER
    # Watches: the server closes a watch after server_timeout; the client gives up a bit later,
    # so a silently dead stream (kopf#698/#204) is re-established instead of hanging forever.
    settings.watching.server_timeout = int(config.watch_server_timeout_seconds)  # API wants an int
    settings.watching.client_timeout = config.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = config.request_timeout_seconds
    settings.networking.connect_timeout = 10
    # Only runtime pods matter: filter the pod watch server-side.
    settings.watching.label_selectors["pods"] = config.runtime_pod_label
    # Events: explicit ones from the controllers (kopf.event) always go out; routine handler
    # logs ("Handler succeeded") would be one API write per handler run, so only warnings+.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "tokenfleet-operator"
    # Our resources are known at start; scanning CRDs/namespaces would need cluster-wide list RBAC.
    settings.scanning.disabled = True
    # Short first retries for temporary errors (a runtime restarting), bounded at 60 s.
    settings.queueing.error_delays = (1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 60)
    settings.execution.max_workers = 8
    settings.background.cancellation_polling = 5
    # HA: keep-alives every few seconds under the lifetime; a SIGKILLed leader is replaced after it.
    settings.peering.lifetime = max(2, int(config.peering_lifetime_seconds))
