"""The pydantic models: examples load, bad specs are refused with the field named, defaults hold."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from tokenfleet.api import (
    API_VERSION,
    GROUP,
    VERSION,
    ImmersionPod,
    ImmersionPodSpec,
    ImmersionPodStatus,
    InferenceJob,
    InferenceJobSpec,
    InferenceJobStatus,
    LeakAction,
    LeakSeverity,
    PlacementState,
    Preference,
    Target,
    TelemetrySource,
    VehiclePool,
    VehiclePoolSpec,
    VehiclePoolStatus,
    parse_immersionpod_spec,
    parse_inferencejob_spec,
    parse_status,
    parse_vehiclepool_spec,
    wire_name,
)
from tokenfleet.api.batch import InferenceBatch  # issue-14

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml")) + sorted(
    (ROOT / "examples" / "dev").glob("*.yaml")  # issue-13: the dev fleet's
)
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
KIND_MODELS: dict[str, type[BaseModel]] = {
    "ImmersionPod": ImmersionPod,
    "VehiclePool": VehiclePool,
    "InferenceJob": InferenceJob,
    "InferenceBatch": InferenceBatch,  # issue-14
}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def minimal_job() -> dict[str, Any]:
    return {
        "model": {"name": "llama-3.1-8b-instruct", "repositoryUri": "s3://models/llama"},
        "variants": [
            {
                "name": "fp16",
                "precision": "FP16",
                "memoryMiB": 20480,
                "tokensPerSecond": 2400,
                "watts": 350,
                "targets": ["Rack"],
            }
        ],
    }


def minimal_pool() -> dict[str, Any]:
    return {
        "nodeSelector": {"tokenfleet.io/pool": "depot"},
        "region": "eu-central",
        "ownership": "fleet-ops",
    }


def minimal_tank() -> dict[str, Any]:
    return {
        "site": "giga-berlin",
        "region": "eu-central",
        "nodeSelector": {"tokenfleet.io/tank": "t7"},
        "power": {"capacityKW": 180},
        "coolant": {
            "maxSupplyTempC": 40,
            "maxReturnTempC": 55,
            "designFlowLitersPerMinute": 480,
            "heatRejectionKW": 200,
        },
        "telemetry": {"source": "NodeAnnotations"},
    }


def test_group_version() -> None:
    assert (GROUP, VERSION, API_VERSION) == ("tokenfleet.io", "v1alpha1", "tokenfleet.io/v1alpha1")


def test_examples_cover_the_four_cases() -> None:
    kinds = [load(p)["kind"] for p in EXAMPLES]
    assert kinds.count("ImmersionPod") >= 1
    assert kinds.count("VehiclePool") >= 1
    assert kinds.count("InferenceJob") >= 2
    precisions = {
        v["precision"]: v["targets"]
        for p in EXAMPLES
        if load(p)["kind"] == "InferenceJob"
        for v in load(p)["spec"]["variants"]
    }
    assert precisions["INT4"] == ["Vehicle"]
    assert "Rack" in precisions["FP16"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_round_trips(path: Path) -> None:
    data = load(path)
    obj = KIND_MODELS[data["kind"]].model_validate(data)
    wire = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    # Everything the example says survives on the wire, in the example's own spelling.
    assert _subset(data["spec"], wire["spec"]), wire["spec"]
    assert KIND_MODELS[data["kind"]].model_validate(wire) == obj


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _subset(v, big[k]) for k, v in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(small) == len(big)
            and all(_subset(a, b) for a, b in zip(small, big, strict=True))
        )
    return bool(small == big)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_refused_naming_the_field(path: Path) -> None:
    data = load(path)
    notes = data["metadata"]["annotations"]
    field = notes["test.tokenfleet.io/field"]
    with pytest.raises(ValidationError) as caught:
        KIND_MODELS[data["kind"]].model_validate(data)
    text = str(caught.value)
    assert notes["test.tokenfleet.io/message"] in text
    leaf = field.rsplit(".", 1)[-1].split("[")[0]
    assert leaf in text, f"{leaf!r} not named in:\n{text}"


def _error(model: type[BaseModel], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value)


def test_min_replicas_above_max() -> None:
    text = _error(InferenceJobSpec, {**minimal_job(), "replicas": {"min": 5, "max": 2}})
    assert "replicas\n" in text
    assert "replicas.min must be less than or equal to replicas.max" in text


def test_state_of_charge_140_percent() -> None:
    text = _error(VehiclePoolSpec, {**minimal_pool(), "battery": {"minStateOfChargePercent": 140}})
    assert "battery.minStateOfChargePercent" in text
    assert "less than or equal to 100" in text


def test_target_state_of_charge_140_percent() -> None:
    text = _error(
        VehiclePoolSpec, {**minimal_pool(), "battery": {"targetStateOfChargePercent": 140}}
    )
    assert "battery.targetStateOfChargePercent" in text


def test_reserve_above_target() -> None:
    battery = {"minStateOfChargePercent": 90, "targetStateOfChargePercent": 80}
    text = _error(VehiclePoolSpec, {**minimal_pool(), "battery": battery})
    assert "battery.minStateOfChargePercent must be less than or equal to" in text


@pytest.mark.parametrize(
    ("model", "data", "where"),
    [
        (InferenceJobSpec, {**minimal_job(), "gpuCount": 2}, "gpuCount"),
        (VehiclePoolSpec, {**minimal_pool(), "battery": {"minSoc": 20}}, "battery.minSoc"),
        (ImmersionPodSpec, {**minimal_tank(), "power": {"capacityKw": 180}}, "power.capacityKw"),
    ],
)
def test_unknown_field_is_refused_by_name(
    model: type[BaseModel], data: dict[str, Any], where: str
) -> None:
    text = _error(model, data)
    assert where in text
    assert "Extra inputs are not permitted" in text


def test_empty_variant_list() -> None:
    text = _error(InferenceJobSpec, {**minimal_job(), "variants": []})
    assert "variants must list at least one variant" in text


def test_duplicate_variant_names() -> None:
    job = minimal_job()
    job["variants"] = job["variants"] * 2
    assert "variants[].name must be unique" in _error(InferenceJobSpec, job)


def test_duplicate_targets() -> None:
    job = minimal_job()
    job["variants"][0]["targets"] = ["Rack", "Rack"]
    text = _error(InferenceJobSpec, job)
    assert "variants.0.targets" in text
    assert "duplicate" in text


def test_supply_not_below_return() -> None:
    tank = minimal_tank()
    tank["coolant"]["maxSupplyTempC"] = 60
    assert "coolant.maxSupplyTempC must be lower than coolant.maxReturnTempC" in _error(
        ImmersionPodSpec, tank
    )


def test_redfish_needs_endpoint() -> None:
    tank = {**minimal_tank(), "telemetry": {"source": "Redfish"}}
    assert "telemetry.redfish is required" in _error(ImmersionPodSpec, tank)


def test_poll_interval_below_staleness() -> None:
    tank = {
        **minimal_tank(),
        "telemetry": {
            "source": "NodeAnnotations",
            "pollIntervalSeconds": 60,
            "staleAfterSeconds": 60,
        },
    }
    assert "telemetry.pollIntervalSeconds must be lower than" in _error(ImmersionPodSpec, tank)


def test_no_variant_allowed_on_the_placement_targets() -> None:
    job = {**minimal_job(), "placement": {"targets": ["Vehicle"]}}
    assert "at least one variant must allow one of placement.targets" in _error(
        InferenceJobSpec, job
    )


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"priority": 1001}, "priority"),
        ({"model": {"name": "x", "repositoryUri": "not a uri"}}, "model.repositoryUri"),
        ({"replicas": {"min": -1}}, "replicas.min"),
        ({"placement": {"preference": "Cheapest"}}, "placement.preference"),
    ],
)
def test_bounds_and_enums(patch: dict[str, Any], where: str) -> None:
    assert where in _error(InferenceJobSpec, {**minimal_job(), **patch})


def test_bad_variant_fields_are_named() -> None:
    job = minimal_job()
    job["variants"][0].update(precision="FP8", sha256="abc", memoryMiB=0)
    text = _error(InferenceJobSpec, job)
    for where in ("variants.0.precision", "variants.0.sha256", "variants.0.memoryMiB"):
        assert where in text


def test_defaults_match_the_contract() -> None:
    tank = parse_immersionpod_spec(minimal_tank())
    assert tank.power.safety_margin_percent == 10
    assert tank.coolant.specific_heat_kj_per_kg_k == 2.1
    assert tank.coolant.density_kg_per_liter == 0.8
    assert tank.telemetry.source is TelemetrySource.NODE_ANNOTATIONS
    assert tank.telemetry.poll_interval_seconds == 15
    assert tank.telemetry.stale_after_seconds == 60
    assert tank.leak_policy.action is LeakAction.DRAIN
    assert tank.cordoned is False
    assert tank.hysteresis_percent == 5

    pool = parse_vehiclepool_spec(minimal_pool())
    assert pool.battery.require_plugged_in is True
    assert pool.battery.min_state_of_charge_percent <= pool.battery.target_state_of_charge_percent
    assert pool.drain_lead_seconds == 900
    assert pool.disconnect_grace_seconds == 120
    assert pool.stale_after_seconds == 300
    assert pool.hysteresis_percent == 2

    job = parse_inferencejob_spec(minimal_job())
    assert job.priority == 100
    assert job.placement.spread.max_replicas_per_node == 1
    assert job.placement.targets == [Target.RACK, Target.VEHICLE]
    assert job.placement.preference is Preference.PREFER_RACK
    assert job.placement.require_attestation is False
    assert (job.replicas.min, job.replicas.max) == (1, 1)
    assert job.triton_model_name(job.variants[0]) == "llama-3.1-8b-instruct-fp16"
    assert job.variant("fp16") is job.variants[0]
    assert job.variant("int4") is None


def test_defaults_are_not_shared_between_instances() -> None:
    a = parse_inferencejob_spec(minimal_job())
    a.placement.targets.append(Target.RACK)
    assert parse_inferencejob_spec(minimal_job()).placement.targets == [Target.RACK, Target.VEHICLE]


def test_snake_case_names_are_accepted_too() -> None:
    spec = InferenceJobSpec.model_validate(
        {**minimal_job(), "placement": {"require_attestation": True}}
    )
    assert spec.placement.require_attestation is True
    assert "requireAttestation" in spec.to_wire()["placement"]


def test_parse_accepts_any_mapping() -> None:
    """kopf hands the spec over as a read-only Mapping, not a dict."""
    frozen = MappingProxyType({**minimal_job(), "model": MappingProxyType(minimal_job()["model"])})
    assert parse_inferencejob_spec(frozen).model.name == "llama-3.1-8b-instruct"


def test_wire_names() -> None:
    cases = {
        "capacity_kw": "capacityKW",
        "heat_rejection_kw": "heatRejectionKW",
        "max_return_temp_c": "maxReturnTempC",
        "specific_heat_kj_per_kg_k": "specificHeatKJPerKgK",
        "daily_energy_budget_kwh": "dailyEnergyBudgetKWh",
        "energy_cost_per_kwh": "energyCostPerKWh",
        "memory_mib": "memoryMiB",
        "min_bandwidth_mbps": "minBandwidthMbps",
        "repository_uri": "repositoryUri",
        "triton_model_name": "tritonModelName",
        "it_load_kw": "itLoadKW",
    }
    assert {k: wire_name(k) for k in cases} == cases


def test_status_is_permissive() -> None:
    """Partial status parses; keys written by others (kopf) are ignored; to_wire drops None."""
    status = parse_status(
        InferenceJobStatus,
        {
            "observedGeneration": 3,
            "placements": [
                {"node": "van-0042", "target": "Vehicle", "variant": "int4", "state": "Loading"}
            ],
            "kopf": {"progress": {}},
        },
    )
    assert status.placements is not None
    assert status.placements[0].state is PlacementState.LOADING
    assert status.to_wire() == {
        "observedGeneration": 3,
        "placements": [
            {"node": "van-0042", "target": "Vehicle", "variant": "int4", "state": "Loading"}
        ],
    }
    assert parse_status(ImmersionPodStatus, None).to_wire() == {}
    pool = parse_status(VehiclePoolStatus, {"vehicles": {"eligible": 3}})
    assert pool.vehicles is not None and pool.vehicles.eligible == 3


def test_status_still_checks_values() -> None:
    with pytest.raises(ValidationError, match="readyReplicas"):
        parse_status(InferenceJobStatus, {"readyReplicas": -1})
    with pytest.raises(ValidationError, match=r"placements\.0\.state"):
        parse_status(
            InferenceJobStatus,
            {"placements": [{"node": "n", "target": "Rack", "variant": "v", "state": "Up"}]},
        )


def test_readme_examples_are_valid() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    manifests = [yaml.safe_load(b) for b in blocks if "apiVersion: tokenfleet.io/" in b]
    assert manifests
    for data in manifests:
        KIND_MODELS[data["kind"]].model_validate(data)


def test_battery_capacity_default_and_bounds() -> None:
    assert parse_vehiclepool_spec(minimal_pool()).battery.capacity_kwh == 60
    pool = {**minimal_pool(), "battery": {"capacityKWh": 75}}
    assert parse_vehiclepool_spec(pool).battery.capacity_kwh == 75
    for bad in (4, 301):
        pool = {**minimal_pool(), "battery": {"capacityKWh": bad}}
        assert "battery.capacityKWh" in _error(VehiclePoolSpec, pool)


def test_pool_energy_day_is_a_date() -> None:
    status = parse_status(
        VehiclePoolStatus,
        {"energyUsedTodayKWh": 1.25, "energyDay": "2026-11-25", "evictions": []},
    )
    assert status.to_wire() == {
        "energyUsedTodayKWh": 1.25,
        "energyDay": "2026-11-25",
        "evictions": [],
    }
    with pytest.raises(ValidationError, match="energyDay"):
        parse_status(VehiclePoolStatus, {"energyDay": "yesterday"})


def test_leak_latch_policy_and_status() -> None:
    """leakPolicy.latchOn (Warning|Critical, default Critical) and status.leakLatch."""
    assert parse_immersionpod_spec(minimal_tank()).leak_policy.latch_on is LeakSeverity.CRITICAL
    tank = parse_immersionpod_spec({**minimal_tank(), "leakPolicy": {"latchOn": "Warning"}})
    assert tank.leak_policy.latch_on is LeakSeverity.WARNING
    assert tank.leak_policy.action is LeakAction.DRAIN
    with pytest.raises(ValidationError, match=r"leakPolicy\.latchOn"):
        parse_immersionpod_spec({**minimal_tank(), "leakPolicy": {"latchOn": "OK"}})
    wire = {
        "leakState": "OK",
        "leakLatch": {
            "state": "Critical",
            "latchedAt": "2026-11-25T12:00:15Z",
            "message": "detectors: FloatSwitch1=Critical",
        },
    }
    status = parse_status(ImmersionPodStatus, wire)
    assert status.leak_latch is not None and status.leak_latch.state is LeakSeverity.CRITICAL
    assert status.to_wire() == wire
    for latch, field in (
        ({"state": "OK", "latchedAt": "2026-11-25T12:00:15Z"}, "state"),
        ({"state": "Warning"}, "latchedAt"),
    ):
        with pytest.raises(ValidationError, match=rf"leakLatch\.{field}"):
            parse_status(ImmersionPodStatus, {"leakLatch": latch})
