"""A Node body parsed into the frozen :class:`NodeInfo` the indexes hold (pure, no kopf)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from tokenfleet.delivery.report import MODEL_CACHE_ANNOTATION, CacheReport, decode_report
from tokenfleet.serving.endpoints import format_host_port, parse_host_port
from tokenfleet.serving.errors import EndpointError
from tokenfleet.telemetry.problems import ProblemKind, TelemetryProblem, raw_text
from tokenfleet.telemetry.vehicle import (
    ACCELERATOR_LABEL,
    ATTESTED_LABEL,
    BASELINE_WATTS_ANNOTATION,
    POOL_LABEL,
    REGION_LABEL,
    ROLE_LABEL,
    RUNTIME_ENDPOINT_ANNOTATION,
    TANK_LABEL,
    VehicleReading,
    parse_vehicle_reading,
)

__all__ = [
    "MAX_BASELINE_WATTS",
    "NodeFields",
    "NodeInfo",
    "NodeRole",
    "node_fields",
    "parse_node",
    "parse_quantity_mib",
    "selector_matches",
]

MAX_BASELINE_WATTS: Final = 1_000_000.0

_SUFFIXES: Final[Mapping[str, Decimal]] = {
    "Ki": Decimal(1024),
    "Mi": Decimal(1024**2),
    "Gi": Decimal(1024**3),
    "Ti": Decimal(1024**4),
    "Pi": Decimal(1024**5),
    "Ei": Decimal(1024**6),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


class NodeRole(StrEnum):
    """Value of the ``tokenfleet.io/role`` label."""

    VEHICLE = "vehicle"
    RACK = "rack"


def parse_quantity_mib(value: object) -> int | None:
    """A Kubernetes memory quantity (``32Gi``, ``33554432Ki``, ``1e9``, ``500M``) in whole MiB
    (floored); ``None`` when absent, unparsable or negative."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text:
        return None
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, multiplier = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, multiplier = text, Decimal(1)
    try:
        amount = Decimal(number) * multiplier
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return int(amount // Decimal(1024**2))


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Equality-based label selector (``nodeSelector``): every pair must be present.

    An empty/absent selector matches everything."""
    return all(labels.get(key) == value for key, value in (selector or {}).items())


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the operator needs to know about one tokenfleet Node (``tokenfleet.io/role`` set).

    ``vehicle`` is the parsed (not yet staleness-judged) reading for vehicles, ``None`` for
    racks: judge it with ``info.vehicle.at(now, pool.staleAfterSeconds)``. ``problems`` covers
    node-level fields (allocatable memory, baseline watts, role), not vehicle telemetry.
    """

    name: str
    role: NodeRole | None
    """``None`` when the role label has an unknown value (the node is then never used)."""
    pool: str | None
    """``tokenfleet.io/pool`` label (vehicles)."""
    tank: str | None
    """``tokenfleet.io/tank`` label (racks)."""
    allocatable_memory_mib: int | None
    """``status.allocatable.memory``; ``None`` if unknown (then no capacity)."""
    accelerator: str | None
    """``tokenfleet.io/accelerator`` label."""
    baseline_watts: float
    """``tokenfleet.io/baseline-watts`` annotation (default 0; invalid → 0 with a problem)."""
    region: str | None
    """Trusted ``node-restriction.kubernetes.io/tokenfleet-region`` label."""
    attested: bool
    """Trusted ``node-restriction.kubernetes.io/tokenfleet-attested`` label == "true"."""
    runtime_endpoint: str | None
    """``tokenfleet.io/runtime-endpoint`` (``HOST:PORT``) if set and well-formed."""
    unschedulable: bool
    """``spec.unschedulable`` (cordoned by an admin)."""
    ready: bool | None
    """The node's ``Ready`` condition: True/False, ``None`` when absent or Unknown."""
    deleting: bool
    """``metadata.deletionTimestamp`` is set."""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """All labels (read-only), for nodeSelector matching."""
    vehicle: VehicleReading | None = None
    problems: tuple[TelemetryProblem, ...] = ()
    model_cache: CacheReport | None = None
    """The node's model cache report (``tokenfleet.io/model-cache``); ``None``
    when the node has no model cache (or its report is unreadable)."""

    @property
    def is_vehicle(self) -> bool:
        return self.role is NodeRole.VEHICLE

    @property
    def is_rack(self) -> bool:
        return self.role is NodeRole.RACK


def _endpoint(value: object) -> str | None:
    """The runtime endpoint annotation, strictly ``HOST:PORT`` (else ``None``: a problem)."""
    if not isinstance(value, str):
        return None
    try:
        return format_host_port(*parse_host_port(value))
    except EndpointError:
        return None


def _ready(status: Mapping[str, Any]) -> bool | None:
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            state = condition.get("status")
            return True if state == "True" else False if state == "False" else None
    return None


NodeFields = tuple[Any, ...]
"""What :func:`parse_node` reads of a Node body, raw (:func:`node_fields`)."""


def node_fields(body: Mapping[str, Any]) -> NodeFields:
    """The raw parts of a Node body that :func:`parse_node` reads (name, labels, annotations,
    deletion, ``spec.unschedulable``, allocatable memory, the Ready condition's status), for a
    cheap comparison before parsing: two bodies with equal fields parse to equal records, so a
    watch event whose fields equal the last one's (a heartbeat, a kubelet/kwok status field,
    ``managedFields``) need not be parsed at all. Keep in step with :func:`parse_node`."""
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    ready = None
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            ready = condition.get("status")
            break
    return (
        metadata.get("name"),
        metadata.get("labels"),
        metadata.get("annotations"),
        metadata.get("deletionTimestamp") is not None,
        (body.get("spec") or {}).get("unschedulable", False),
        (status.get("allocatable") or {}).get("memory"),
        ready,
    )


def parse_node(body: Mapping[str, Any]) -> NodeInfo:
    """Parse a Node body (dict or kopf Body). Pure; never raises on bad label/annotation values."""
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    spec: Mapping[str, Any] = body.get("spec") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
    problems: list[TelemetryProblem] = []

    role_raw = labels.get(ROLE_LABEL)
    try:
        role: NodeRole | None = NodeRole(role_raw) if role_raw is not None else None
    except ValueError:
        role = None
    if role is None:
        problems.append(TelemetryProblem(ROLE_LABEL, raw_text(role_raw), ProblemKind.UNPARSABLE))

    memory_raw = (status.get("allocatable") or {}).get("memory")
    memory = parse_quantity_mib(memory_raw)
    if memory is None:
        kind = ProblemKind.MISSING if memory_raw is None else ProblemKind.UNPARSABLE
        problems.append(TelemetryProblem("allocatable.memory", raw_text(memory_raw), kind))

    baseline = 0.0
    baseline_raw = annotations.get(BASELINE_WATTS_ANNOTATION)
    if baseline_raw is not None:
        try:
            baseline = float(baseline_raw)
        except ValueError:
            problems.append(
                TelemetryProblem(
                    BASELINE_WATTS_ANNOTATION, raw_text(baseline_raw), ProblemKind.UNPARSABLE
                )
            )
        else:
            if not math.isfinite(baseline) or not 0 <= baseline <= MAX_BASELINE_WATTS:
                kind = (
                    ProblemKind.NON_FINITE
                    if not math.isfinite(baseline)
                    else (ProblemKind.OUT_OF_RANGE)
                )
                problems.append(
                    TelemetryProblem(BASELINE_WATTS_ANNOTATION, raw_text(baseline_raw), kind)
                )
                baseline = 0.0

    endpoint_raw = annotations.get(RUNTIME_ENDPOINT_ANNOTATION)
    endpoint = _endpoint(endpoint_raw)
    if endpoint_raw is not None and endpoint is None:
        problems.append(
            TelemetryProblem(
                RUNTIME_ENDPOINT_ANNOTATION, raw_text(endpoint_raw), ProblemKind.UNPARSABLE
            )
        )

    def label(key: str) -> str | None:
        value = labels.get(key, "").strip()
        return value or None

    return NodeInfo(
        name=str(metadata.get("name", "")),
        role=role,
        pool=label(POOL_LABEL),
        tank=label(TANK_LABEL),
        allocatable_memory_mib=memory,
        accelerator=label(ACCELERATOR_LABEL),
        baseline_watts=baseline,
        region=label(REGION_LABEL),
        attested=labels.get(ATTESTED_LABEL, "").strip().lower() == "true",
        runtime_endpoint=endpoint,
        unschedulable=bool(spec.get("unschedulable", False)),
        ready=_ready(status),
        deleting=metadata.get("deletionTimestamp") is not None,
        labels=MappingProxyType(labels),
        vehicle=parse_vehicle_reading(labels, annotations) if role is NodeRole.VEHICLE else None,
        problems=tuple(problems),
        model_cache=_model_cache(annotations.get(MODEL_CACHE_ANNOTATION)),
    )


def _model_cache(raw: str | None) -> CacheReport | None:
    """A present but unreadable report holds nothing (never "no cache")."""
    if raw is None:
        return None
    return decode_report(raw) or CacheReport(0, 0, {})
