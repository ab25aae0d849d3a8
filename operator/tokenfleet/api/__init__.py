"""The tokenfleet API: pydantic models of ImmersionPod, VehiclePool and InferenceJob.

Group ``tokenfleet.io``, version ``v1alpha1``. ``tokenfleet crds`` renders ``crds/`` from these.
"""

from collections.abc import Mapping
from typing import Any

from tokenfleet.api.base import CelRule, StatusModel, WireModel, wire_name
from tokenfleet.api.kinds import (
    CATEGORY,
    IMMERSIONPOD,
    IMMERSIONPODS,
    INFERENCEJOB,
    INFERENCEJOBS,
    KINDS,
    VEHICLEPOOL,
    VEHICLEPOOLS,
    KindInfo,
    PrinterColumn,
    parse_spec,
    parse_status,
)
from tokenfleet.api.models import (
    API_VERSION,
    GROUP,
    VERSION,
    BatteryPolicy,
    Condition,
    ConditionStatus,
    CoolantSpec,
    ImmersionPod,
    ImmersionPodSpec,
    ImmersionPodStatus,
    InferenceJob,
    InferenceJobSpec,
    InferenceJobStatus,
    LeakAction,
    LeakLatch,
    LeakPolicy,
    LeakSeverity,
    LeakState,
    ModelRef,
    PlacementPolicy,
    PlacementRecord,
    PlacementState,
    PoolCapacity,
    PowerSpec,
    Precision,
    Preference,
    ReasonCount,
    RedfishSpec,
    Replicas,
    Spread,
    Target,
    TelemetrySource,
    TelemetrySpec,
    Throughput,
    Variant,
    VariantSignature,
    VehicleCounts,
    VehiclePool,
    VehiclePoolSpec,
    VehiclePoolStatus,
)


def parse_immersionpod_spec(spec: Mapping[str, Any]) -> ImmersionPodSpec:
    """kopf ``spec`` (a Mapping) -> ImmersionPodSpec; raises pydantic.ValidationError."""
    return parse_spec(ImmersionPodSpec, spec)


def parse_vehiclepool_spec(spec: Mapping[str, Any]) -> VehiclePoolSpec:
    """kopf ``spec`` (a Mapping) -> VehiclePoolSpec; raises pydantic.ValidationError."""
    return parse_spec(VehiclePoolSpec, spec)


def parse_inferencejob_spec(spec: Mapping[str, Any]) -> InferenceJobSpec:
    """kopf ``spec`` (a Mapping) -> InferenceJobSpec; raises pydantic.ValidationError."""
    return parse_spec(InferenceJobSpec, spec)


__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "IMMERSIONPOD",
    "IMMERSIONPODS",
    "INFERENCEJOB",
    "INFERENCEJOBS",
    "KINDS",
    "VEHICLEPOOL",
    "VEHICLEPOOLS",
    "VERSION",
    "BatteryPolicy",
    "CelRule",
    "Condition",
    "ConditionStatus",
    "CoolantSpec",
    "ImmersionPod",
    "ImmersionPodSpec",
    "ImmersionPodStatus",
    "InferenceJob",
    "InferenceJobSpec",
    "InferenceJobStatus",
    "KindInfo",
    "LeakAction",
    "LeakLatch",
    "LeakPolicy",
    "LeakSeverity",
    "LeakState",
    "ModelRef",
    "PlacementPolicy",
    "PlacementRecord",
    "PlacementState",
    "PoolCapacity",
    "PowerSpec",
    "Precision",
    "Preference",
    "PrinterColumn",
    "ReasonCount",
    "RedfishSpec",
    "Replicas",
    "Spread",
    "StatusModel",
    "Target",
    "TelemetrySource",
    "TelemetrySpec",
    "Throughput",
    "Variant",
    "VariantSignature",
    "VehicleCounts",
    "VehiclePool",
    "VehiclePoolSpec",
    "VehiclePoolStatus",
    "WireModel",
    "parse_immersionpod_spec",
    "parse_inferencejob_spec",
    "parse_spec",
    "parse_status",
    "parse_vehiclepool_spec",
    "wire_name",
]
