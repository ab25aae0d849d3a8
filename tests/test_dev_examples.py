"""examples/dev/ targets the dev fleet that ``make dev`` builds (names, labels, region, owner,
the tank simulator's port), and ``make dev``'s run-time changes to it are only the documented ones.
That the objects become Ready on the dev fleet is e2e/test_dev.py's check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e import dev
from e2e.dev_examples import DEV_EXAMPLES, DevExamples, documents
from e2e.operator_kit import RIG_LABEL


def test_examples_dev_target_the_dev_rig() -> None:
    (tank,) = documents("ImmersionPod")
    (pool,) = documents("VehiclePool")
    jobs = documents("InferenceJob")
    assert len(jobs) >= 2
    region, owner = f"region-{dev.DEV_RIG}", f"owner-{dev.DEV_RIG}"
    for doc in (tank, pool):
        # make dev's cleanup finds cluster objects by this suffix, its nodes by these selectors
        assert doc["metadata"]["name"].endswith(f"-{dev.DEV_RIG}")
        assert doc["spec"]["region"] == region
    assert tank["spec"]["nodeSelector"] == {"tokenfleet.io/tank": tank["metadata"]["name"]}
    assert pool["spec"]["nodeSelector"] == {"tokenfleet.io/pool": pool["metadata"]["name"]}
    assert pool["spec"]["ownership"] == owner
    default_port = dev._arguments([]).tank_port
    redfish = tank["spec"]["telemetry"]["redfish"]
    assert redfish["endpoint"] == f"http://127.0.0.1:{default_port}"
    assert redfish["unitId"] == tank["metadata"]["name"]
    names = {j["metadata"]["name"] for j in jobs}
    assert dev.DEV_JOB not in names
    for job in jobs:
        placement = job["spec"]["placement"]
        assert placement["regions"] == [region]
        assert placement.get("ownership", [owner]) == [owner]
        # below the dev job's priority: the examples never take tinyllama's place
        assert job["spec"]["priority"] < 100
    targets = {t for j in jobs for v in j["spec"]["variants"] for t in v["targets"]}
    assert targets == {"Rack", "Vehicle"}


class _Sim:
    url = "http://127.0.0.1:4242"

    def __init__(self) -> None:
        self.units: list[str] = []

    def add(self, unit: str) -> None:
        self.units.append(unit)

    def set(self, unit: str, **_: float) -> None:
        assert unit in self.units


class _Custom:
    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    def create_cluster_custom_object(self, _g: str, _v: str, plural: str, body: Any) -> None:
        self.created.append((plural, body))

    def create_namespaced_custom_object(
        self, _g: str, _v: str, ns: str, plural: str, body: Any
    ) -> None:
        assert body["metadata"]["namespace"] == ns
        self.created.append((plural, body))


class _Rig:
    id = "dev"
    namespace = "ns-1"

    def __init__(self) -> None:
        self.sim = _Sim()
        self.custom = _Custom()
        self.cluster_objects: list[tuple[str, str]] = []


def test_make_dev_changes_only_the_endpoint_the_scale_and_the_label() -> None:
    rig = _Rig()
    said: list[str] = []
    ex = DevExamples(rig, battery_kwh=7.5, drain_lead_seconds=13, log=said.append)
    tank, pool = ex.create_tank(), ex.create_pool()
    jobs = ex.apply_jobs()
    (tank_doc,) = documents("ImmersionPod")
    created = {body["metadata"]["name"]: body for _, body in rig.custom.created}
    spec = created[tank]["spec"]
    assert spec["telemetry"]["redfish"]["endpoint"] == _Sim.url
    spec["telemetry"]["redfish"]["endpoint"] = tank_doc["spec"]["telemetry"]["redfish"]["endpoint"]
    assert spec == tank_doc["spec"]  # nothing else changed
    assert any(_Sim.url in line for line in said)  # and the log says so
    assert created[pool]["spec"]["battery"]["capacityKWh"] == 7.5
    assert created[pool]["spec"]["drainLeadSeconds"] == 13
    assert rig.sim.units == [tank]
    assert set(jobs) == {d["metadata"]["name"] for d in documents("InferenceJob")}
    for body in created.values():
        assert body["metadata"]["labels"][RIG_LABEL] == "dev"
    assert sorted(rig.cluster_objects) == sorted([("immersionpods", tank), ("vehiclepools", pool)])


def test_a_second_tank_file_is_refused_by_name(tmp_path: Any) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(
            (DEV_EXAMPLES / "immersionpod-dev-tank.yaml").read_text()
        )
    ex = DevExamples(_Rig(), battery_kwh=5, drain_lead_seconds=20, log=print, directory=tmp_path)
    with pytest.raises(ValueError, match="expected one ImmersionPod, found 2"):
        ex.create_tank()


def test_record_run_records_processes_started_a_moment_ago(tmp_path: Path) -> None:
    """Read right after Popen returns, a child's /proc/PID/cmdline is sometimes still empty (its
    exec has not set up the new argv): the record must not leave such a child out (it would
    outlive the next make dev's reaping after a SIGKILL)."""
    procs = [
        subprocess.Popen(["sleep", "30"], start_new_session=True) for _ in range(3)
    ]  # fmt: skip
    try:
        for _ in range(40):
            procs.append(subprocess.Popen(["sleep", "30"], start_new_session=True))
            dev.record_run(tmp_path, [p.pid for p in procs])
            recorded = json.loads((tmp_path / dev.RUN_FILE).read_text())["children"]
            assert sorted(c["pid"] for c in recorded) == sorted(p.pid for p in procs)
            assert all(c["cmdline"] == "sleep 30 " for c in recorded), recorded
    finally:
        for p in procs:
            p.kill()
            p.wait()
