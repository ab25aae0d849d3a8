"""The tokenfleet API (group ``tokenfleet.io``, version ``v1alpha1``) as pydantic v2 models.

These classes are the single source of truth: ``tokenfleet crds`` generates ``crds/`` from them.
Python attributes are snake_case, the wire is camelCase with units in the names (``capacityKW``,
``maxReturnTempC``, ``memoryMiB``). Attribute docstrings become the CRD descriptions
(``kubectl explain``).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

from tokenfleet.api.base import CelRule, StatusModel, WireModel, unique_items

GROUP = "tokenfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# ---------------------------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------------------------

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
"""A DNS-1123 label: variant names, pools, tanks."""
NodeName = Annotated[str, Field(min_length=1, max_length=253)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
ShortText = Annotated[str, Field(min_length=1, max_length=128)]
Reason = Annotated[str, Field(min_length=1, max_length=1024, pattern=CONDITION_REASON)]
Message = Annotated[str, Field(max_length=32768)]
TritonName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
Sha256 = Annotated[str, Field(min_length=64, max_length=64, pattern=r"^[a-f0-9]{64}$")]
NodeSelector = Annotated[dict[str, LabelValue], Field(min_length=1, max_length=32)]

MAX_CONDITIONS = 16
MAX_VARIANTS = 16
MAX_REPLICAS = 256
MAX_PLACEMENTS = 2 * MAX_REPLICAS
MAX_REASONS = 32

_SET = {"x-kubernetes-list-type": "set"}
_MAP_BY_TYPE = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
_MAP_BY_REASON = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["reason"]}


# ---------------------------------------------------------------------------------------------
# Enums (CamelCase values on the wire)
# ---------------------------------------------------------------------------------------------


class Target(StrEnum):
    """Where a replica runs: an immersion-cooled rack or a parked vehicle."""

    RACK = "Rack"
    VEHICLE = "Vehicle"


class Precision(StrEnum):
    """Numeric precision of a model variant."""

    FP32 = "FP32"
    FP16 = "FP16"
    BF16 = "BF16"
    INT8 = "INT8"
    INT4 = "INT4"


class Preference(StrEnum):
    """Which hardware the placement prefers when both can serve."""

    PREFER_RACK = "PreferRack"
    PREFER_VEHICLE = "PreferVehicle"
    LOWEST_COST = "LowestCost"


class TelemetrySource(StrEnum):
    """Where the tank's power and coolant readings come from."""

    REDFISH = "Redfish"
    NODE_ANNOTATIONS = "NodeAnnotations"


class RedfishAuthMethod(StrEnum):
    """How the operator authenticates to a Redfish service (DMTF DSP0266 §13)."""

    BASIC = "Basic"
    """HTTP Basic authentication on every request."""
    SESSION = "Session"
    """A session from ``POST /redfish/v1/SessionService/Sessions``; its ``X-Auth-Token`` is sent
    on every request and renewed when the service answers 401."""


class LeakAction(StrEnum):
    """What the operator does to the tank's nodes when a leak detector reports Critical."""

    CORDON = "Cordon"
    DRAIN = "Drain"


class LeakState(StrEnum):
    """Worst leak detector state of a tank (Redfish DetectorState), Unknown without telemetry."""

    OK = "OK"
    WARNING = "Warning"
    CRITICAL = "Critical"
    UNKNOWN = "Unknown"


class LeakSeverity(StrEnum):
    """A leak detector state that counts as a leak (Redfish DetectorState Warning or Critical)."""

    WARNING = "Warning"
    CRITICAL = "Critical"


class PlacementState(StrEnum):
    """Lifecycle of one replica on one node."""

    LOADING = "Loading"
    LOADED = "Loaded"
    UNLOADING = "Unloading"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    """metav1.ConditionStatus."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# ---------------------------------------------------------------------------------------------
# Shared status types
# ---------------------------------------------------------------------------------------------


class Condition(StatusModel):
    """metav1.Condition: one aspect of the object's state."""

    type: Annotated[str, Field(min_length=1, max_length=316, pattern=CONDITION_TYPE)]
    """CamelCase condition type, e.g. Ready, Reconciling, Stalled."""
    status: ConditionStatus
    """True, False or Unknown."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation the condition was computed from."""
    last_transition_time: datetime
    """When status last changed (RFC 3339)."""
    reason: Reason
    """CamelCase, machine-readable cause of the last transition."""
    message: Message = ""
    """Human-readable details."""


Conditions = Annotated[
    list[Condition],
    Field(max_length=MAX_CONDITIONS, json_schema_extra=_MAP_BY_TYPE),
]


class ReasonCount(StatusModel):
    """How many objects are in a state for a reason."""

    reason: Reason
    count: Annotated[int, Field(ge=0)]


ReasonCounts = Annotated[
    list[ReasonCount],
    Field(max_length=MAX_REASONS, json_schema_extra=_MAP_BY_REASON),
]


# ---------------------------------------------------------------------------------------------
# ImmersionPod (cluster-scoped): one tank or container of immersion-cooled servers
# ---------------------------------------------------------------------------------------------


class PowerSpec(WireModel):
    """Electrical budget of the tank."""

    capacity_kw: Annotated[float, Field(gt=0, le=10000)]
    """Site power capacity available to the tank's IT load, kW (a peak-shaving controller may
    lower it)."""
    safety_margin_percent: Annotated[float, Field(ge=0, le=50)] = 10
    """Share of capacityKW kept free, percent."""


class CoolantSpec(WireModel):
    """Limits of the tank's coolant loop."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.maxSupplyTempC < self.maxReturnTempC",
            message="coolant.maxSupplyTempC must be lower than coolant.maxReturnTempC",
            field_path=".maxSupplyTempC",
            check=lambda c: c.max_supply_temp_c < c.max_return_temp_c,
        ),
    )

    max_supply_temp_c: Annotated[float, Field(ge=0, le=100)]
    """Highest acceptable coolant supply (inlet) temperature, °C."""
    max_return_temp_c: Annotated[float, Field(ge=0, le=100)]
    """Highest acceptable coolant return (outlet) temperature, °C."""
    design_flow_liters_per_minute: Annotated[float, Field(gt=0, le=100000)]
    """Design coolant flow, L/min."""
    heat_rejection_kw: Annotated[float, Field(gt=0, le=10000)]
    """Heat the loop can reject at design conditions, kW."""
    specific_heat_kj_per_kg_k: Annotated[float, Field(gt=0, le=10)] = 2.1
    """Coolant specific heat, kJ/(kg·K) (dielectric fluids ~2.1)."""
    density_kg_per_liter: Annotated[float, Field(gt=0, le=3)] = 0.8
    """Coolant density, kg/L."""


class RedfishSpec(WireModel):
    """A DMTF Redfish ThermalEquipment/ImmersionUnits endpoint."""

    endpoint: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")]
    """Base URL of the Redfish service, e.g. https://tank-07-bmc.example:443."""
    unit_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^/\s]+$")]
    """ImmersionUnits/{unitId}."""
    connector_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/\s]+$")] = "1"
    """PrimaryCoolantConnectors/{connectorId}."""
    credentials_secret_name: Name | None = None
    """Secret in the operator's namespace (the chart's release namespace) with `username` and
    `password` keys for an endpoint that needs authentication, and optionally `ca.crt`, a PEM
    bundle of the CAs to trust for an https endpoint. Read on every poll, so a rotated Secret is
    used from the next poll on."""
    auth_method: RedfishAuthMethod = RedfishAuthMethod.BASIC
    """How the credentials are used: Basic (HTTP basic auth) or Session (a Redfish session's
    X-Auth-Token). Ignored without credentialsSecretName."""
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 5
    """Per-request timeout, seconds."""


class TelemetrySpec(WireModel):
    """How the operator reads the tank."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.source != 'Redfish' || has(self.redfish)",
            message="telemetry.redfish is required when telemetry.source is Redfish",
            field_path=".redfish",
            reason="FieldValueRequired",
            check=lambda t: t.source != TelemetrySource.REDFISH or t.redfish is not None,
        ),
        CelRule(
            rule="self.pollIntervalSeconds < self.staleAfterSeconds",
            message="telemetry.pollIntervalSeconds must be lower than telemetry.staleAfterSeconds",
            field_path=".pollIntervalSeconds",
            check=lambda t: t.poll_interval_seconds < t.stale_after_seconds,
        ),
    )

    source: TelemetrySource
    """Redfish (polled over HTTP) or NodeAnnotations."""
    redfish: RedfishSpec | None = None
    """Required when source is Redfish."""
    poll_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 15
    """How often the endpoint is polled, seconds."""
    stale_after_seconds: Annotated[int, Field(ge=1, le=86400)] = 60
    """A reading older than this counts as unknown (no headroom), seconds."""


class LeakPolicy(WireModel):
    """Reaction to a Critical leak detector."""

    action: LeakAction = LeakAction.DRAIN
    """Cordon (keep replicas, place nothing new) or Drain (also move replicas away)."""
    latch_on: LeakSeverity = LeakSeverity.CRITICAL
    """Detector state that latches the leak: Critical, or Warning (Warning or Critical). A latched
    tank stays cordoned (and drained under Drain) after the detectors read OK again, until a
    person clears it: kubectl annotate immersionpod <name> tokenfleet.io/leak-acknowledged=<note>.
    A live Warning below the latch level still cordons while it lasts."""


class ImmersionPodSpec(WireModel):
    """Desired state of an immersion tank."""

    site: ShortText
    """Factory or site the tank is at, e.g. giga-berlin."""
    region: ShortText
    """Data-residency region, matched against node-restriction.kubernetes.io/tokenfleet-region."""
    node_selector: NodeSelector
    """Labels that select the tank's nodes (usually tokenfleet.io/tank: <name>)."""
    power: PowerSpec
    coolant: CoolantSpec
    telemetry: TelemetrySpec
    leak_policy: LeakPolicy = Field(default_factory=LeakPolicy)
    cordoned: bool = False
    """When true, nothing new is placed on the tank (maintenance)."""
    hysteresis_percent: Annotated[float, Field(ge=0, le=50)] = 5
    """Headroom band, percent of capacity, that must be crossed before replicas move."""


class LeakLatch(StatusModel):
    """A latched leak: kept until a person acknowledges it (annotation
    tokenfleet.io/leak-acknowledged), accepted only while every detector reads OK."""

    state: LeakSeverity
    """Worst detector state read since the leak latched."""
    latched_at: datetime
    """When the leak was first read (RFC 3339)."""
    message: Annotated[str, Field(max_length=1024)] = ""
    """The detectors that read the leak."""


class ImmersionPodStatus(StatusModel):
    """Observed state of an immersion tank."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions | None = None
    it_load_kw: float | None = None
    """Measured IT load, kW."""
    power_headroom_kw: float | None = None
    """capacityKW less the safety margin less the IT load, kW (negative when over)."""
    thermal_headroom_kw: float | None = None
    """Heat the coolant loop can still reject, kW."""
    supply_temp_c: float | None = None
    """Coolant supply temperature, °C."""
    return_temp_c: float | None = None
    """Coolant return temperature, °C."""
    flow_liters_per_minute: float | None = None
    """Measured coolant flow, L/min."""
    leak_state: LeakState | None = None
    """Worst leak detector state of the last reading (live, not latched)."""
    leak_latch: LeakLatch | None = None
    """Set when a leak latched; the tank stays cordoned until it is acknowledged."""
    last_reading_time: datetime | None = None
    """Time of the last telemetry reading."""
    telemetry_age_seconds: Annotated[int, Field(ge=0)] | None = None
    """Age of the last reading when status was written, seconds."""
    nodes: Annotated[int, Field(ge=0)] | None = None
    """Nodes selected by the tank."""
    replicas: Annotated[int, Field(ge=0)] | None = None
    """Model replicas hosted in the tank."""


# ---------------------------------------------------------------------------------------------
# VehiclePool (cluster-scoped): a fleet segment of parked / charging EVs
# ---------------------------------------------------------------------------------------------


class BatteryPolicy(WireModel):
    """What the fleet allows the battery to give to compute."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.minStateOfChargePercent <= self.targetStateOfChargePercent",
            message=(
                "battery.minStateOfChargePercent must be less than or equal to "
                "battery.targetStateOfChargePercent"
            ),
            field_path=".minStateOfChargePercent",
            check=lambda b: b.min_state_of_charge_percent <= b.target_state_of_charge_percent,
        ),
    )

    min_state_of_charge_percent: Annotated[float, Field(ge=0, le=100)] = 30
    """Reserve floor: below this state of charge a vehicle serves nothing, percent."""
    target_state_of_charge_percent: Annotated[float, Field(ge=0, le=100)] = 80
    """State of charge the vehicle must still reach by departure, percent (a vehicle's
    telemetry.tokenfleet.io/target-soc-percent overrides it)."""
    require_plugged_in: bool = True
    """Only vehicles connected to a charger serve."""
    max_battery_temp_c: Annotated[float, Field(ge=-40, le=80)] = 45
    """Pack temperature above which a vehicle stops serving, °C."""
    daily_energy_budget_kwh: Annotated[float, Field(ge=0, le=100000)] | None = None
    """Energy the pool may spend on compute per day, kWh (unset: unlimited)."""
    energy_cost_per_kwh: Annotated[float, Field(ge=0, le=100)] = 0
    """Energy price used by placement, currency units per kWh."""
    wear_cost_per_kwh: Annotated[float, Field(ge=0, le=100)] = 0
    """Battery wear cost of cycling, currency units per kWh of throughput."""
    capacity_kwh: Annotated[float, Field(ge=5, le=300)] = 60
    """Usable pack capacity of the pool's vehicles, kWh (sizes the energy a vehicle still needs
    to reach its target state of charge by departure)."""


class DeliveryPolicy(WireModel):
    """When the pool's vehicles may download model weights from the object store."""

    min_bandwidth_mbps: Annotated[float, Field(ge=0, le=100000)] = 20
    """A vehicle downloads a model only while its link (telemetry bandwidth-mbps) is at least
    this, Mbit/s (and, when battery.requirePluggedIn, only while plugged in)."""
    fetch_time_margin_percent: Annotated[float, Field(ge=100, le=1000)] = 150
    """A download starts only if size / bandwidth x this percentage ends before the vehicle's
    departure less drainLeadSeconds, percent."""
    prefetch_per_job: Annotated[int, Field(ge=0, le=16)] = 2
    """At most this many of the pool's cars are asked to fetch a store-delivered job's vehicle
    variant ahead of a placement (InferenceJob status.prefetch); 0 turns prefetching off."""


class VehiclePoolSpec(WireModel):
    """Desired state of a vehicle pool."""

    node_selector: NodeSelector
    """Labels that select the pool's vehicles (usually tokenfleet.io/pool: <name>)."""
    region: ShortText
    """Data-residency region, matched against node-restriction.kubernetes.io/tokenfleet-region."""
    ownership: Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)]
    """Who owns the vehicles, e.g. fleet-ops (InferenceJob placement.ownership filters on it)."""
    battery: BatteryPolicy = Field(default_factory=BatteryPolicy)
    drain_lead_seconds: Annotated[int, Field(ge=0, le=86400)] = 900
    """Replicas leave a vehicle this long before its predicted departure, seconds."""
    max_compute_temp_c: Annotated[float, Field(ge=0, le=125)] = 85
    """Onboard computer temperature above which a vehicle stops serving, °C."""
    min_bandwidth_mbps: Annotated[float, Field(ge=0, le=100000)] = 10
    """Connectivity floor, Mbit/s."""
    disconnect_grace_seconds: Annotated[int, Field(ge=0, le=3600)] = 120
    """How long a vehicle may be unreachable before its replicas are re-placed, seconds."""
    stale_after_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    """A telemetry reading older than this counts as unknown, seconds."""
    unknown_grace_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    """A vehicle whose telemetry is unknown (missing, rejected, stale or stamped in the future)
    takes no new work but keeps its replicas this long, then they drain (TelemetryUnknown),
    seconds."""
    hysteresis_percent: Annotated[float, Field(ge=0, le=50)] = 2
    """State-of-charge / temperature band that must be crossed before replicas move, percent."""
    cordoned: bool = False
    """When true, nothing new is placed on the pool's vehicles."""
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    """When the vehicles may download model weights (model delivery)."""


class VehicleCounts(StatusModel):
    """Vehicles selected by the pool."""

    total: Annotated[int, Field(ge=0)] | None = None
    eligible: Annotated[int, Field(ge=0)] | None = None
    """Vehicles that pass every eligibility rule now."""
    serving: Annotated[int, Field(ge=0)] | None = None
    """Vehicles hosting at least one replica."""


class PoolCapacity(StatusModel):
    """Aggregate capacity of the eligible vehicles."""

    memory_mib: Annotated[int, Field(ge=0)] | None = None
    tokens_per_second: Annotated[float, Field(ge=0)] | None = None


class VehiclePoolStatus(StatusModel):
    """Observed state of a vehicle pool."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions | None = None
    vehicles: VehicleCounts | None = None
    ineligible: ReasonCounts | None = None
    """Vehicles not eligible, counted by reason (e.g. NotPluggedIn, LowStateOfCharge)."""
    capacity: PoolCapacity | None = None
    energy_used_today_kwh: Annotated[float, Field(ge=0)] | None = None
    """Energy spent on compute since midnight UTC, kWh (the watts of the replicas loaded on the
    pool's vehicles, integrated over time)."""
    energy_day: date | None = None
    """UTC day (YYYY-MM-DD) that energyUsedTodayKWh and evictions count."""
    evictions: ReasonCounts | None = None
    """Replicas moved off the pool's vehicles on energyDay, counted by reason."""


# ---------------------------------------------------------------------------------------------
# InferenceJob (namespaced): a model to serve
# ---------------------------------------------------------------------------------------------

Targets = Annotated[
    list[Target],
    Field(min_length=1, max_length=2, json_schema_extra=_SET),
    AfterValidator(unique_items),
]


class ModelRef(WireModel):
    """The model to serve."""

    name: TritonName
    """Model name; the Triton model of a variant is <name>-<variant> unless tritonModelName is
    set."""
    repository_uri: Annotated[
        str, Field(min_length=4, max_length=2048, pattern=r"^[a-z][a-z0-9+.-]*://[^\s]+$")
    ]
    """Where the model repository lives (s3://, gs://, https://, file://)."""


SIGNATURE_PATH = r"^(\.?[A-Za-z0-9_-][A-Za-z0-9_.-]*)(/\.?[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"
"""A relative object key: '/'-separated segments, none of them '.' or '..'."""
SignaturePath = Annotated[str, Field(min_length=1, max_length=512, pattern=SIGNATURE_PATH)]
PemPublicKey = Annotated[
    str, Field(min_length=1, max_length=4096, pattern=r"-----BEGIN PUBLIC KEY-----")
]
PemCertificates = Annotated[
    str, Field(min_length=1, max_length=16384, pattern=r"-----BEGIN CERTIFICATE-----")
]


class VariantSignature(WireModel):
    """An OpenSSF model-signing signature of the variant's files, verified offline (no
    Sigstore keyless: no network) with a public key or a certificate chain."""

    path: SignaturePath = "model.sig"
    """Object key of the signature bundle (written by `model_signing sign key` or
    `model_signing sign certificate`), relative to model.repositoryUri/<triton model name>/. The
    model cache fetches it next to the files but keeps it out of the model directory: it is not
    installed into the runtime's repository and not part of sha256."""
    public_key: PemPublicKey | None = None
    """PEM public key (elliptic curve P-256, P-384 or P-521) of the private key that signed the
    bundle. A public key is not a secret: it is written here, not in a Secret."""
    certificate_chain: PemCertificates | None = None
    """PEM certificates (the platform's signing CA, and intermediates) that the bundle's signing
    certificate must chain to; the certificate must allow digital signatures or code signing.
    Every certificate the chain issues is trusted: use a CA dedicated to model signing."""

    cel_rules = (
        CelRule(
            "has(self.publicKey) != has(self.certificateChain)",
            "signature names exactly one of publicKey and certificateChain",
            check=lambda s: (s.public_key is None) != (s.certificate_chain is None),
            field_path=".publicKey",
            reason="FieldValueRequired",
        ),
    )


class Variant(WireModel):
    """One build of the model, with the figures placement uses."""

    name: Name
    """Unique within the job, e.g. fp16 or int4."""
    precision: Precision
    memory_mib: Annotated[int, Field(ge=1, le=1048576)]
    """Memory one replica needs, MiB."""
    tokens_per_second: Annotated[float, Field(gt=0, le=1000000)]
    """Throughput of one replica, tokens/s."""
    watts: Annotated[float, Field(gt=0, le=100000)]
    """Power one replica draws while serving, W."""
    targets: Targets
    """Hardware this variant may run on."""
    sha256: Sha256 | None = None
    """SHA-256 digest of the variant's model directory: sha256 of the sorted
    '<file sha256>  <relative path>' lines (tokenfleet modelcache digest DIR prints it). A node
    with a model cache loads the variant only after the files fetched from
    model.repositoryUri/<triton model name>/ match it (and refuses a variant without one)."""
    signature: VariantSignature | None = None
    """A model-signing signature the node's model cache verifies, with sha256, before the
    runtime may load the variant (a missing or bad signature is refused like a digest
    mismatch)."""
    triton_model_name: TritonName | None = None
    """Name in the Triton repository (default: <model.name>-<variant.name>)."""


class Throughput(WireModel):
    """Throughput goal."""

    target_tokens_per_second: Annotated[float, Field(ge=0, le=100000000)] | None = None
    """Aggregate tokens/s to serve; replicas are added until reached, within replicas.max
    (unset: replicas.min)."""


class Replicas(WireModel):
    """Bounds on the number of replicas."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.min <= self.max",
            message="replicas.min must be less than or equal to replicas.max",
            field_path=".min",
            check=lambda r: r.min <= r.max,
        ),
    )

    min: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    """Fewest replicas (0 allows scale to zero)."""
    max: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    """Most replicas."""


class Spread(WireModel):
    """Limits that spread replicas for resilience."""

    max_replicas_per_node: Annotated[int, Field(ge=1, le=64)] = 1
    max_replicas_per_tank: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None
    """Unset: no limit."""
    max_replicas_per_pool: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None
    """Unset: no limit."""


class PlacementPolicy(WireModel):
    """Where replicas may go."""

    targets: Targets = [Target.RACK, Target.VEHICLE]
    """Hardware the job may use at all."""
    preference: Preference = Preference.PREFER_RACK
    regions: Annotated[
        list[ShortText],
        Field(max_length=32, json_schema_extra=_SET),
        AfterValidator(unique_items),
    ] = []
    """Residency: allowed regions (empty: any)."""
    ownership: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)]],
        Field(max_length=32, json_schema_extra=_SET),
        AfterValidator(unique_items),
    ] = []
    """Allowed vehicle pool owners (empty: any)."""
    require_attestation: bool = False
    """Only nodes labelled node-restriction.kubernetes.io/tokenfleet-attested=true."""
    spread: Spread = Field(default_factory=Spread)


def _variant_names_unique(variants: list[Variant]) -> bool:
    names = [v.name for v in variants]
    return len(names) == len(set(names))


def triton_model_name(model: str, variant: str, override: str | None = None) -> str:
    """The one rule for a variant's Triton model name: ``tritonModelName``, else
    ``<model.name>-<variant.name>``."""
    return override or f"{model}-{variant}"


class InferenceJobSpec(WireModel):
    """Desired state of an inference job."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="size(self.variants) >= 1",
            message="variants must list at least one variant",
            field_path=".variants",
            reason="FieldValueRequired",
            check=lambda s: len(s.variants) >= 1,
        ),
        CelRule(
            rule="self.variants.all(v, self.variants.exists_one(w, w.name == v.name))",
            message="variants[].name must be unique",
            field_path=".variants",
            check=lambda s: _variant_names_unique(s.variants),
        ),
        CelRule(
            rule=(
                "size(self.variants) == 0 || !has(self.placement) || "
                "self.variants.exists(v, v.targets.exists(t, t in self.placement.targets))"
            ),
            message="at least one variant must allow one of placement.targets",
            field_path=".placement.targets",
            check=lambda s: (
                not s.variants
                or any(t in s.placement.targets for v in s.variants for t in v.targets)
            ),
        ),
    )

    model: ModelRef
    variants: Annotated[list[Variant], Field(max_length=MAX_VARIANTS)]
    """Builds of the model, at least one, names unique."""
    throughput: Throughput = Field(default_factory=Throughput)
    replicas: Replicas = Field(default_factory=Replicas)
    placement: PlacementPolicy = Field(default_factory=PlacementPolicy)
    priority: Annotated[int, Field(ge=0, le=1000)] = 100
    """Higher priority jobs are placed first and may displace lower ones."""

    def triton_model_name(self, variant: Variant) -> str:
        """The Triton model name of ``variant`` (its override or <model.name>-<variant.name>)."""
        return triton_model_name(self.model.name, variant.name, variant.triton_model_name)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


class PlacementRecord(StatusModel):
    """One replica's placement: the decision record."""

    node: NodeName
    target: Target
    pool: Name | None = None
    """VehiclePool, when target is Vehicle."""
    tank: Name | None = None
    """ImmersionPod, when target is Rack."""
    variant: Name
    state: PlacementState
    since: datetime | None = None
    """When the replica entered its current state."""
    reason: Reason | None = None
    """Why the replica is here or in this state (CamelCase)."""
    message: Annotated[str, Field(max_length=1024)] | None = None


class PrefetchRecord(StatusModel):
    """A car asked to fetch a variant ahead of any placement there (model delivery)."""

    node: NodeName
    variant: Annotated[str, Field(min_length=1, max_length=63)]


MAX_PREFETCH = 32


class InferenceJobStatus(StatusModel):
    """Observed state of an inference job."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions | None = None
    desired_replicas: Annotated[int, Field(ge=0)] | None = None
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    placements: Annotated[list[PlacementRecord], Field(max_length=MAX_PLACEMENTS)] | None = None
    """Every replica the operator placed and its state."""
    served_tokens_per_second: Annotated[float, Field(ge=0)] | None = None
    """Estimated tokens/s of the Loaded replicas."""
    measured_tokens_per_second: Annotated[float, Field(ge=0)] | None = None
    """Tokens/s the job's replicas generated, measured at their runtimes (a generated-tokens
    counter on Triton's metrics port, `vllm:generation_tokens_total` by default) over the
    operator's measurement window; absent when no replica's runtime exports the counter."""
    service_name: Annotated[str, Field(max_length=63)] | None = None
    """Service that fronts the Loaded replicas."""
    shortfall_reason: Annotated[str, Field(max_length=1024)] | None = None
    """Why the job serves less than desired, if it does."""
    prefetch: Annotated[list[PrefetchRecord], Field(max_length=MAX_PREFETCH)] | None = None
    """Cars whose model cache the operator asked to fetch this (store-delivered) job's vehicle
    variant before a replica is placed there, so that a later move is a load, not a download:
    plugged-in cars that may download it now (link at or above the pool's floor, done before
    departure), longest-parked and fastest first, at most their pool's
    `delivery.prefetchPerJob` each."""


# ---------------------------------------------------------------------------------------------
# Whole objects (used to load manifests; the operator receives spec/status from kopf)
# ---------------------------------------------------------------------------------------------


class _Object(WireModel):
    api_version: Literal["tokenfleet.io/v1alpha1"]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ImmersionPod(_Object):
    """An immersion-cooled tank or container of servers at a factory site."""

    kind: Literal["ImmersionPod"]
    spec: ImmersionPodSpec
    status: ImmersionPodStatus | None = None


class VehiclePool(_Object):
    """A segment of parked or charging electric vehicles that serve models."""

    kind: Literal["VehiclePool"]
    spec: VehiclePoolSpec
    status: VehiclePoolStatus | None = None


class InferenceJob(_Object):
    """A model to serve on tokenfleet's racks and vehicles."""

    kind: Literal["InferenceJob"]
    spec: InferenceJobSpec
    status: InferenceJobStatus | None = None
