"""The generated CRDs, read back from the committed YAML in crds/.

Structural (type everywhere, no $ref/anyOf/title, bounded lists and strings), names, printer
columns, CEL rules, the contract's field names, examples valid against the schema, and
`tokenfleet crds --check` catching drift.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tokenfleet.api import KINDS, WireModel
from tokenfleet.api.crdgen import crds_command, render_all
from tokenfleet.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml")) + sorted(
    (ROOT / "examples" / "dev").glob("*.yaml")  # issue-13: the dev fleet's
)
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))

Schema = dict[str, Any]


def load_crd(plural: str) -> Schema:
    data = yaml.safe_load((CRDS / f"tokenfleet.io_{plural}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def crd_by_kind() -> dict[str, Schema]:
    return {info.kind: load_crd(info.plural) for info in KINDS}


def root_schema(crd: Schema) -> Schema:
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def nodes(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")


def at(schema: Schema, path: str) -> Schema:
    """The schema node of a dotted wire path (``spec.battery.minStateOfChargePercent``)."""
    node = schema
    for part in path.split("."):
        while part.endswith("[]"):
            part = part[:-2]
            node = node["properties"][part]["items"]
            part = ""
        if part:
            node = node["properties"][part]
    return node


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------

ALL_CRDS = [info.plural for info in KINDS]


def test_one_file_per_kind() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == [
        "tokenfleet.io_immersionpods.yaml",
        "tokenfleet.io_inferencebatches.yaml",
        "tokenfleet.io_inferencejobs.yaml",
        "tokenfleet.io_vehiclepools.yaml",
    ]


@pytest.mark.parametrize("plural", ALL_CRDS)
def test_schema_is_structural_and_bounded(plural: str) -> None:
    root = root_schema(load_crd(plural))
    assert root["type"] == "object"
    assert {k: root["properties"][k]["type"] for k in ("apiVersion", "kind", "metadata")} == {
        "apiVersion": "string",
        "kind": "string",
        "metadata": "object",
    }
    assert root["required"] == ["spec"]
    problems: list[str] = []
    walked = 0
    for top in ("spec", "status"):
        for path, node in nodes(root["properties"][top], top):
            walked += 1
            problems += _structural_problems(path, node) + _bound_problems(path, node)
    assert walked > 30
    assert not problems, "\n".join(problems)


def _structural_problems(path: str, node: dict[str, Any]) -> list[str]:
    """What makes a schema node not structural (Kubernetes' rules)."""
    problems: list[str] = []
    for banned in ("$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const"):
        if banned in node:
            problems.append(f"{path}: has {banned}")
    if "uniqueItems" in node:
        problems.append(f"{path}: uniqueItems (use x-kubernetes-list-type: set)")
    kind = node.get("type")
    if kind not in ("object", "array", "string", "integer", "number", "boolean"):
        problems.append(f"{path}: type {kind!r}")
    extra = node.get("additionalProperties")
    if isinstance(extra, bool):
        problems.append(f"{path}: boolean additionalProperties")
    if isinstance(extra, dict) and "properties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if kind == "object" and "properties" not in node and extra is None:
        problems.append(f"{path}: object with neither properties nor a value schema")
    for required in node.get("required", []):
        if required not in node.get("properties", {}):
            problems.append(f"{path}: required {required!r} is not a property")
    return problems


def _bound_problems(path: str, node: dict[str, Any]) -> list[str]:
    """Unbounded lists, strings and maps (CEL cost), and defaults the API server rejects."""
    problems: list[str] = []
    kind = node.get("type")
    if kind == "array" and "maxItems" not in node:
        problems.append(f"{path}: array without maxItems")
    if kind == "string" and not ({"enum", "format"} & node.keys()) and "maxLength" not in node:
        problems.append(f"{path}: free string without maxLength")
    if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
        problems.append(f"{path}: map without maxProperties")
    if node.get("nullable") and "default" in node:
        problems.append(f"{path}: nullable with a default")
    if kind == "object" and isinstance(node.get("default"), dict):
        # The API server checks a default against CEL as written (before nested
        # defaulting), so an object default must spell out its fields' defaults.
        for name, sub in node.get("properties", {}).items():
            if "default" in sub and node["default"].get(name) != sub["default"]:
                problems.append(f"{path}: default lacks {name}={sub['default']!r}")
    return problems


@pytest.mark.parametrize("plural", ALL_CRDS)
def test_names_scope_subresource(plural: str) -> None:
    info = next(k for k in KINDS if k.plural == plural)
    crd = load_crd(plural)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.tokenfleet.io"
    spec = crd["spec"]
    assert spec["group"] == "tokenfleet.io"
    assert spec["names"]["kind"] == info.kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["listKind"] == f"{info.kind}List"
    assert spec["names"]["categories"] == ["tokenfleet"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_short_names_and_scope() -> None:
    crds = crd_by_kind()
    assert {k: c["spec"]["names"]["shortNames"] for k, c in crds.items()} == {
        "ImmersionPod": ["imp"],
        "VehiclePool": ["vpool"],
        "InferenceJob": ["infjob"],
        "InferenceBatch": ["infbatch"],
    }
    assert {k: c["spec"]["scope"] for k, c in crds.items()} == {
        "ImmersionPod": "Cluster",
        "VehiclePool": "Cluster",
        "InferenceJob": "Namespaced",
        "InferenceBatch": "Namespaced",
    }


@pytest.mark.parametrize("plural", ALL_CRDS)
def test_printer_columns(plural: str) -> None:
    crd = load_crd(plural)
    (version,) = crd["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert names[0] == "Ready"
    assert columns[0]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert names[-1] == "Age" and columns[-1]["jsonPath"] == ".metadata.creationTimestamp"
    default_figures = [c for c in columns[1:-1] if not c.get("priority")]
    wide = [c for c in columns if c.get("priority") == 1]
    assert 2 <= len(default_figures) <= 3, names
    assert wide, "nothing extra under -o wide"
    root = root_schema(crd)
    for column in columns:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            continue
        # Resolve the JSONPath in the schema and check the column type matches the field's.
        dotted = path[1:].replace('[?(@.type=="Ready")]', "[]")
        node = at(root, dotted)
        assert node["type"] == column["type"], (path, node["type"], column["type"])


# ---------------------------------------------------------------------------------------------
# CEL rules
# ---------------------------------------------------------------------------------------------

EXPECTED_RULES = {
    ("InferenceJob", "spec.replicas"): (".min", "self.min <= self.max"),
    ("InferenceJob", "spec"): (".variants", "size(self.variants) >= 1"),
    ("VehiclePool", "spec.battery"): (
        ".minStateOfChargePercent",
        "self.minStateOfChargePercent <= self.targetStateOfChargePercent",
    ),
    ("ImmersionPod", "spec.coolant"): (
        ".maxSupplyTempC",
        "self.maxSupplyTempC < self.maxReturnTempC",
    ),
}


def all_rules() -> dict[tuple[str, str], list[Schema]]:
    found: dict[tuple[str, str], list[Schema]] = {}
    for kind, crd in crd_by_kind().items():
        for path, node in nodes(root_schema(crd), ""):
            for rule in node.get("x-kubernetes-validations", []):
                found.setdefault((kind, path.lstrip(".")), []).append(rule)
    return found


def test_cel_rules_are_in_the_crds() -> None:
    found = all_rules()
    for (kind, path), (field_path, rule) in EXPECTED_RULES.items():
        rules = {r["rule"]: r for r in found[(kind, path)]}
        assert rule in rules, (kind, path, list(rules))
        assert rules[rule]["fieldPath"] == field_path
    spec_rules = [r["rule"] for r in found[("InferenceJob", "spec")]]
    assert any("exists_one" in r and "name" in r for r in spec_rules), "variant names unique"


def test_every_cel_rule_names_its_field() -> None:
    for (kind, path), rules in all_rules().items():
        for rule in rules:
            assert rule["message"] and rule["fieldPath"].startswith("."), (kind, path, rule)
            leaf = rule["fieldPath"].rsplit(".", 1)[-1]
            assert leaf in rule["message"], (kind, path, rule)
            # fieldPath must point at a real property below the rule's node.
            root = root_schema(crd_by_kind()[kind])
            target = f"{path}{rule['fieldPath']}".lstrip(".")
            assert at(root, target)["type"]


def test_cel_rules_come_from_the_models() -> None:
    """Every CelRule declared on a model is in a CRD, and nothing else is."""
    declared = set()
    stack: list[type[WireModel]] = [WireModel]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        declared.update((r.rule, r.message) for r in cls.__dict__.get("cel_rules", ()))
    in_crds = {(r["rule"], r["message"]) for rules in all_rules().values() for r in rules}
    assert declared == in_crds
    assert len(declared) >= 7


# ---------------------------------------------------------------------------------------------
# The contract's field names
# ---------------------------------------------------------------------------------------------

CONTRACT = {
    "ImmersionPod": [
        "spec.site",
        "spec.region",
        "spec.nodeSelector",
        "spec.power.capacityKW",
        "spec.power.safetyMarginPercent",
        "spec.coolant.maxSupplyTempC",
        "spec.coolant.maxReturnTempC",
        "spec.coolant.designFlowLitersPerMinute",
        "spec.coolant.heatRejectionKW",
        "spec.coolant.specificHeatKJPerKgK",
        "spec.coolant.densityKgPerLiter",
        "spec.telemetry.source",
        "spec.telemetry.redfish.endpoint",
        "spec.telemetry.redfish.unitId",
        "spec.telemetry.redfish.connectorId",
        "spec.telemetry.pollIntervalSeconds",
        "spec.telemetry.staleAfterSeconds",
        "spec.leakPolicy.action",
        "spec.leakPolicy.latchOn",
        "spec.cordoned",
        "spec.hysteresisPercent",
        "status.observedGeneration",
        "status.conditions",
        "status.itLoadKW",
        "status.powerHeadroomKW",
        "status.thermalHeadroomKW",
        "status.supplyTempC",
        "status.returnTempC",
        "status.flowLitersPerMinute",
        "status.leakState",
        "status.leakLatch.state",
        "status.leakLatch.latchedAt",
        "status.leakLatch.message",
        "status.lastReadingTime",
        "status.telemetryAgeSeconds",
        "status.nodes",
        "status.replicas",
    ],
    "VehiclePool": [
        "spec.nodeSelector",
        "spec.region",
        "spec.ownership",
        "spec.battery.minStateOfChargePercent",
        "spec.battery.targetStateOfChargePercent",
        "spec.battery.requirePluggedIn",
        "spec.battery.maxBatteryTempC",
        "spec.battery.dailyEnergyBudgetKWh",
        "spec.battery.energyCostPerKWh",
        "spec.battery.wearCostPerKWh",
        "spec.drainLeadSeconds",
        "spec.maxComputeTempC",
        "spec.minBandwidthMbps",
        "spec.disconnectGraceSeconds",
        "spec.staleAfterSeconds",
        "spec.hysteresisPercent",
        "status.observedGeneration",
        "status.conditions",
        "status.vehicles.total",
        "status.vehicles.eligible",
        "status.vehicles.serving",
        "status.ineligible[].reason",
        "status.ineligible[].count",
        "status.capacity.memoryMiB",
        "status.capacity.tokensPerSecond",
        "status.energyUsedTodayKWh",
        "status.evictions[].reason",
        "status.evictions[].count",
    ],
    "InferenceJob": [
        "spec.model.name",
        "spec.model.repositoryUri",
        "spec.variants[].name",
        "spec.variants[].precision",
        "spec.variants[].memoryMiB",
        "spec.variants[].tokensPerSecond",
        "spec.variants[].watts",
        "spec.variants[].targets",
        "spec.variants[].sha256",
        "spec.variants[].tritonModelName",
        "spec.throughput.targetTokensPerSecond",
        "spec.replicas.min",
        "spec.replicas.max",
        "spec.placement.targets",
        "spec.placement.preference",
        "spec.placement.regions",
        "spec.placement.ownership",
        "spec.placement.requireAttestation",
        "spec.placement.spread.maxReplicasPerNode",
        "spec.placement.spread.maxReplicasPerTank",
        "spec.placement.spread.maxReplicasPerPool",
        "spec.priority",
        "status.observedGeneration",
        "status.conditions",
        "status.desiredReplicas",
        "status.readyReplicas",
        "status.placements[].node",
        "status.placements[].target",
        "status.placements[].pool",
        "status.placements[].tank",
        "status.placements[].variant",
        "status.placements[].state",
        "status.placements[].since",
        "status.placements[].reason",
        "status.servedTokensPerSecond",
        "status.serviceName",
        "status.shortfallReason",
    ],
}


@pytest.mark.parametrize("kind", sorted(CONTRACT))
def test_contract_field_names(kind: str) -> None:
    root = root_schema(crd_by_kind()[kind])
    missing = []
    for path in CONTRACT[kind]:
        try:
            at(root, path)
        except KeyError:
            missing.append(path)
    assert not missing


def test_contract_enums_and_defaults() -> None:
    crds = {k: root_schema(c) for k, c in crd_by_kind().items()}
    job, tank, pool = crds["InferenceJob"], crds["ImmersionPod"], crds["VehiclePool"]
    assert at(job, "spec.variants[].precision")["enum"] == ["FP32", "FP16", "BF16", "INT8", "INT4"]
    assert at(job, "spec.variants[].targets")["items"]["enum"] == ["Rack", "Vehicle"]
    assert at(job, "spec.placement.preference")["enum"] == [
        "PreferRack",
        "PreferVehicle",
        "LowestCost",
    ]
    assert at(job, "status.placements[].state")["enum"] == [
        "Loading",
        "Loaded",
        "Unloading",
        "Failed",
    ]
    assert at(tank, "spec.telemetry.source")["enum"] == ["Redfish", "NodeAnnotations"]
    assert at(tank, "spec.leakPolicy.action")["enum"] == ["Cordon", "Drain"]
    assert at(tank, "status.leakState")["enum"] == ["OK", "Warning", "Critical", "Unknown"]
    assert at(tank, "spec.leakPolicy.latchOn")["enum"] == ["Warning", "Critical"]
    assert at(tank, "status.leakLatch.state")["enum"] == ["Warning", "Critical"]
    assert at(tank, "status.leakLatch")["required"] == ["state", "latchedAt"]
    defaults = {
        ("ImmersionPod", "spec.power.safetyMarginPercent"): 10,
        ("ImmersionPod", "spec.coolant.specificHeatKJPerKgK"): 2.1,
        ("ImmersionPod", "spec.coolant.densityKgPerLiter"): 0.8,
        ("ImmersionPod", "spec.telemetry.redfish.connectorId"): "1",
        ("ImmersionPod", "spec.telemetry.pollIntervalSeconds"): 15,
        ("ImmersionPod", "spec.telemetry.staleAfterSeconds"): 60,
        ("ImmersionPod", "spec.leakPolicy.action"): "Drain",
        ("ImmersionPod", "spec.leakPolicy"): {"action": "Drain", "latchOn": "Critical"},
        ("ImmersionPod", "spec.leakPolicy.latchOn"): "Critical",
        ("ImmersionPod", "spec.cordoned"): False,
        ("ImmersionPod", "spec.hysteresisPercent"): 5,
        ("VehiclePool", "spec.battery.requirePluggedIn"): True,
        ("VehiclePool", "spec.drainLeadSeconds"): 900,
        ("VehiclePool", "spec.disconnectGraceSeconds"): 120,
        ("VehiclePool", "spec.staleAfterSeconds"): 300,
        ("VehiclePool", "spec.hysteresisPercent"): 2,
        ("InferenceJob", "spec.priority"): 100,
        ("InferenceJob", "spec.placement.spread.maxReplicasPerNode"): 1,
        ("InferenceJob", "spec.replicas"): {"min": 1, "max": 1},
        ("InferenceJob", "spec.placement"): {
            "targets": ["Rack", "Vehicle"],
            "preference": "PreferRack",
            "regions": [],
            "ownership": [],
            "requireAttestation": False,
            "spread": {"maxReplicasPerNode": 1},
        },
    }
    for (kind, path), value in defaults.items():
        assert at(crds[kind], path).get("default") == value, path
    assert (at(job, "spec.priority")["minimum"], at(job, "spec.priority")["maximum"]) == (0, 1000)
    soc = at(pool, "spec.battery.minStateOfChargePercent")
    assert (soc["minimum"], soc["maximum"]) == (0, 100)
    selector = at(tank, "spec.nodeSelector")
    assert selector["maxProperties"] == 32 and selector["additionalProperties"]["type"] == "string"


@pytest.mark.parametrize("kind", ["ImmersionPod", "VehiclePool", "InferenceJob"])
def test_conditions_are_a_list_map_in_metav1_shape(kind: str) -> None:
    conditions = at(root_schema(crd_by_kind()[kind]), "status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert item["properties"]["observedGeneration"]["minimum"] == 0
    assert item["properties"]["reason"]["maxLength"] == 1024
    assert item["properties"]["message"]["maxLength"] == 32768


# ---------------------------------------------------------------------------------------------
# Examples against the schema (jsonschema, after OpenAPI 3.0 -> JSON Schema draft 4)
# ---------------------------------------------------------------------------------------------


def to_draft4(node: Schema) -> Schema:
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    out.pop("default", None)
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in node:
        out["properties"] = {k: to_draft4(v) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = to_draft4(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_draft4(node["additionalProperties"])
    return out


def unknown_fields(value: Any, schema: Schema, path: str) -> list[str]:
    """What the API server would prune (and, with strict field validation, refuse)."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            elif not (path == "" and key == "metadata"):
                found += unknown_fields(sub, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, sub in value.items():
            found += unknown_fields(sub, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, sub in enumerate(value):
            found += unknown_fields(sub, schema["items"], f"{path}[{i}]")
    return [f.lstrip(".") for f in found]


def schema_errors(obj: Schema) -> list[str]:
    root = root_schema(crd_by_kind()[obj["kind"]])
    validator = jsonschema.Draft4Validator(to_draft4(root))
    errors = [
        ".".join(str(p) for p in e.absolute_path) + ": " + e.message
        for e in validator.iter_errors(obj)
    ]
    return errors + [f"{f}: unknown field" for f in unknown_fields(obj, root, "")]


def test_draft4_conversion_keeps_exclusive_minimum_meaning() -> None:
    root = root_schema(crd_by_kind()["InferenceJob"])
    memory = at(root, "spec.variants[].memoryMiB")
    assert jsonschema.Draft4Validator(to_draft4(memory)).is_valid(1)
    assert not jsonschema.Draft4Validator(to_draft4(memory)).is_valid(0)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_against_the_crd(path: Path) -> None:
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert schema_errors(obj) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_against_the_crd(path: Path) -> None:
    """Schema-level mistakes fail the schema at the annotated field; CEL ones are left to CEL."""
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    notes = obj["metadata"]["annotations"]
    field = notes["test.tokenfleet.io/field"]
    errors = schema_errors(obj)
    if notes["test.tokenfleet.io/rejected-by"] == "schema":
        dotted = field.replace("[", ".").replace("]", "")
        assert any(e.startswith(dotted + ":") for e in errors), errors
    else:
        assert notes["test.tokenfleet.io/rejected-by"] == "cel"
        assert errors == []
        rules = [r for rules in all_rules().values() for r in rules]
        assert notes["test.tokenfleet.io/message"] in [r["message"] for r in rules]


def test_schema_rejects_what_the_model_rejects_on_bounds() -> None:
    obj = yaml.safe_load((ROOT / "examples" / "vehiclepool-depot.yaml").read_text())
    bad = copy.deepcopy(obj)
    bad["spec"]["battery"]["targetStateOfChargePercent"] = 140
    assert any("targetStateOfChargePercent" in e for e in schema_errors(bad))


# ---------------------------------------------------------------------------------------------
# Generation and --check
# ---------------------------------------------------------------------------------------------


def test_generation_is_deterministic() -> None:
    assert render_all() == render_all()
    assert list(render_all()) == sorted(render_all())


def test_committed_crds_match_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert crds_command(out_dir=str(CRDS), check=True) == 0, capsys.readouterr().err


def test_check_names_the_drifted_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crds"
    assert cli_main(["crds", "--out", str(out)]) == 0
    assert cli_main(["crds", "--out", str(out), "--check"]) == 0
    capsys.readouterr()

    edited = out / "tokenfleet.io_vehiclepools.yaml"
    edited.write_text(edited.read_text().replace("maxItems: 32", "maxItems: 33", 1))
    assert cli_main(["crds", "--out", str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert str(edited) in err and "differs" in err
    assert "inferencejobs" not in err

    assert cli_main(["crds", "--out", str(out)]) == 0
    assert cli_main(["crds", "--out", str(out), "--check"]) == 0
    capsys.readouterr()

    missing = out / "tokenfleet.io_immersionpods.yaml"
    missing.unlink()
    assert cli_main(["crds", "--out", str(out), "--check"]) == 1
    assert f"{missing}: missing" in capsys.readouterr().err

    assert cli_main(["crds", "--out", str(out)]) == 0
    extra = out / "tokenfleet.io_oldthings.yaml"
    extra.write_text("kind: CustomResourceDefinition\n")
    capsys.readouterr()
    assert cli_main(["crds", "--out", str(out), "--check"]) == 1
    assert f"{extra}: not generated" in capsys.readouterr().err

    # Writing removes the stale file of our group.
    assert cli_main(["crds", "--out", str(out)]) == 0
    assert not extra.exists()


def test_check_on_a_missing_directory_fails(tmp_path: Path) -> None:
    assert crds_command(out_dir=str(tmp_path / "nope"), check=True) == 1


def test_installed_command(tmp_path: Path) -> None:
    """The console script (`tokenfleet crds --check`) as CI runs it, in a subprocess."""
    script = Path(sys.executable).parent / "tokenfleet"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tokenfleet.cli"]
    ok = subprocess.run(
        [*command, "crds", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    out = tmp_path / "crds"
    subprocess.run([*command, "crds", "--out", str(out)], check=True, capture_output=True)
    (out / "tokenfleet.io_inferencejobs.yaml").write_text("edited\n")
    bad = subprocess.run(
        [*command, "crds", "--out", str(out), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "tokenfleet.io_inferencejobs.yaml" in bad.stderr
