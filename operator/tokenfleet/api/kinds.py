"""The three kinds: names, scope, models and printer columns (what `tokenfleet crds` renders)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from tokenfleet.api.base import StatusModel, WireModel
from tokenfleet.api.batch import InferenceBatchSpec, InferenceBatchStatus
from tokenfleet.api.models import (
    GROUP,
    ImmersionPodSpec,
    ImmersionPodStatus,
    InferenceJobSpec,
    InferenceJobStatus,
    VehiclePoolSpec,
    VehiclePoolStatus,
)

CATEGORY = "tokenfleet"

IMMERSIONPODS = "immersionpods"
VEHICLEPOOLS = "vehiclepools"
INFERENCEJOBS = "inferencejobs"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            out["priority"] = self.priority
        return out


READY = PrinterColumn(
    "Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Ready condition"
)
REASON = PrinterColumn(
    "Reason",
    "string",
    '.status.conditions[?(@.type=="Ready")].reason',
    "Reason of the Ready condition",
    priority=1,
)
AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: Literal["Cluster", "Namespaced"]
    spec_model: type[WireModel]
    status_model: type[StatusModel]
    description: str
    columns: tuple[PrinterColumn, ...]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


IMMERSIONPOD = KindInfo(
    kind="ImmersionPod",
    plural=IMMERSIONPODS,
    singular="immersionpod",
    short_names=("imp",),
    scope="Cluster",
    spec_model=ImmersionPodSpec,
    status_model=ImmersionPodStatus,
    description=(
        "ImmersionPod declares an immersion-cooled tank or container of servers at a factory "
        "site: its nodes, power budget, coolant loop limits, telemetry source and leak policy."
    ),
    columns=(
        READY,
        PrinterColumn("Load-kW", "number", ".status.itLoadKW", "Measured IT load, kW"),
        PrinterColumn("Headroom-kW", "number", ".status.powerHeadroomKW", "Power headroom, kW"),
        PrinterColumn("Return-C", "number", ".status.returnTempC", "Coolant return, °C"),
        PrinterColumn("Site", "string", ".spec.site", "Site", priority=1),
        PrinterColumn("Capacity-kW", "number", ".spec.power.capacityKW", "Capacity", priority=1),
        PrinterColumn(
            "Thermal-kW", "number", ".status.thermalHeadroomKW", "Thermal headroom", priority=1
        ),
        PrinterColumn("Leak", "string", ".status.leakState", "Leak state", priority=1),
        PrinterColumn(
            "Latched",
            "string",
            ".status.leakLatch.state",
            "Latched leak (cleared by the tokenfleet.io/leak-acknowledged annotation)",
            priority=1,
        ),
        PrinterColumn("Replicas", "integer", ".status.replicas", "Replicas hosted", priority=1),
        REASON,
        AGE,
    ),
)

VEHICLEPOOL = KindInfo(
    kind="VehiclePool",
    plural=VEHICLEPOOLS,
    singular="vehiclepool",
    short_names=("vpool",),
    scope="Cluster",
    spec_model=VehiclePoolSpec,
    status_model=VehiclePoolStatus,
    description=(
        "VehiclePool declares a segment of parked or charging electric vehicles that serve "
        "models: its nodes, region, ownership and battery, thermal and connectivity policy."
    ),
    columns=(
        READY,
        PrinterColumn("Eligible", "integer", ".status.vehicles.eligible", "Eligible vehicles"),
        PrinterColumn("Serving", "integer", ".status.vehicles.serving", "Vehicles serving"),
        PrinterColumn(
            "Total", "integer", ".status.vehicles.total", "Vehicles selected", priority=1
        ),
        PrinterColumn("Region", "string", ".spec.region", "Region", priority=1),
        PrinterColumn(
            "Energy-kWh", "number", ".status.energyUsedTodayKWh", "Energy today", priority=1
        ),
        REASON,
        AGE,
    ),
)

INFERENCEJOB = KindInfo(
    kind="InferenceJob",
    plural=INFERENCEJOBS,
    singular="inferencejob",
    short_names=("infjob",),
    scope="Namespaced",
    spec_model=InferenceJobSpec,
    status_model=InferenceJobStatus,
    description=(
        "InferenceJob declares a model to serve with Triton on tokenfleet's racks and vehicles: "
        "its variants, throughput target, replica bounds, placement policy and priority."
    ),
    columns=(
        READY,
        PrinterColumn("Desired", "integer", ".status.desiredReplicas", "Desired replicas"),
        PrinterColumn("Available", "integer", ".status.readyReplicas", "Ready replicas"),
        PrinterColumn(
            "Tokens/s", "number", ".status.servedTokensPerSecond", "Served tokens/s estimate"
        ),
        PrinterColumn(
            "Measured",
            "number",
            ".status.measuredTokensPerSecond",
            "Served tokens/s measured at the runtimes",
            priority=1,
        ),
        PrinterColumn("Model", "string", ".spec.model.name", "Model", priority=1),
        PrinterColumn("Priority", "integer", ".spec.priority", "Priority", priority=1),
        PrinterColumn(
            "Shortfall", "string", ".status.shortfallReason", "Why below target", priority=1
        ),
        AGE,
    ),
)

# InferenceBatch (its models live in tokenfleet.api.batch)
INFERENCEBATCHES = "inferencebatches"
INFERENCEBATCH = KindInfo(
    kind="InferenceBatch",
    plural=INFERENCEBATCHES,
    singular="inferencebatch",
    short_names=("infbatch",),
    scope="Namespaced",
    spec_model=InferenceBatchSpec,
    status_model=InferenceBatchStatus,
    description=(
        "InferenceBatch declares an OpenAI-format batch of inference requests (a JSONL file in "
        "an object store) that an InferenceJob's replicas serve by a deadline; tokenfleet "
        "dispatcher fills idle racks and cars with it and writes the results back to the store."
    ),
    columns=(
        READY,
        PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase"),
        PrinterColumn(
            "Completed", "integer", ".status.requestCounts.completed", "Requests answered"
        ),
        PrinterColumn("Total", "integer", ".status.requestCounts.total", "Requests in the input"),
        PrinterColumn(
            "Failed", "integer", ".status.requestCounts.failed", "Requests failed", priority=1
        ),
        PrinterColumn("Job", "string", ".spec.jobName", "InferenceJob serving it", priority=1),
        PrinterColumn(
            "ETA", "string", ".status.estimatedCompletionTime", "Expected completion", priority=1
        ),
        PrinterColumn("Expires", "string", ".status.expiresAt", "End of the window", priority=1),
        REASON,
        AGE,
    ),
)

KINDS: tuple[KindInfo, ...] = (IMMERSIONPOD, VEHICLEPOOL, INFERENCEJOB, INFERENCEBATCH)

M = TypeVar("M", bound=WireModel)


def parse_spec(model: type[M], spec: Mapping[str, Any]) -> M:
    """Validate a kopf ``spec`` (any Mapping, e.g. ``kopf.Spec``) into ``model``.

    Raises ``pydantic.ValidationError`` whose messages name the offending wire field.
    """
    return model.model_validate(_plain(spec))


def parse_status(model: type[M], status: Mapping[str, Any] | None) -> M:
    """Validate a (possibly partial, possibly empty) status mapping into ``model``."""
    return model.model_validate(_plain(status or {}))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
