"""``examples/dev/``: the dev fleet's tank, pool and example jobs, as ``make dev`` applies them.

The files are plain manifests for the dev fleet (``kubectl apply -f examples/dev/`` works on a
running ``make dev``); ``make dev`` creates the ImmersionPod and the VehiclePool from them before
its nodes, and the InferenceJobs once its own job ``tinyllama`` is Ready. It changes only what
depends on how it was started, and says so in its log:

* the tank's ``spec.telemetry.redfish.endpoint`` is the dev tank simulator's URL
  (``http://127.0.0.1:8089`` unless ``TANK_PORT`` or ``--tank-port`` moved it);
* the pool's ``battery.capacityKWh`` and ``drainLeadSeconds`` follow ``SCALE`` (the files hold
  the values for the default 60x);
* every object gets the dev rig's label, so that Ctrl-C, or the next ``make dev`` after a
  SIGKILL, removes it.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster.fleet import REPO

DEV_EXAMPLES = REPO / "examples" / "dev"
GROUP = "tokenfleet.io"
VERSION = "v1alpha1"
PLURALS = {"ImmersionPod": "immersionpods", "VehiclePool": "vehiclepools"}


def documents(kind: str, directory: Path = DEV_EXAMPLES) -> list[dict[str, Any]]:
    """The ``kind`` objects of ``directory``'s YAML files, in file name order."""
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                out.append(doc)
    return out


def _one(kind: str, directory: Path) -> dict[str, Any]:
    docs = documents(kind, directory)
    if len(docs) != 1:
        raise ValueError(f"{directory}: expected one {kind}, found {len(docs)}")
    return copy.deepcopy(docs[0])


def _labelled(doc: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    metadata = doc.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    return doc


class DevExamples:
    """Creates ``examples/dev/`` on a dev :class:`~e2e.operator_kit.Rig`."""

    def __init__(
        self,
        rig: Any,
        *,
        battery_kwh: float,
        drain_lead_seconds: int,
        log: Callable[[str], None],
        directory: Path = DEV_EXAMPLES,
    ) -> None:
        from e2e.operator_kit import RIG_LABEL

        self.rig = rig
        self.battery_kwh = battery_kwh
        self.drain_lead_seconds = drain_lead_seconds
        self.log = log
        self.directory = directory
        self.labels = {RIG_LABEL: str(rig.id)}
        self.jobs: list[str] = []

    def _create_cluster_object(self, doc: dict[str, Any]) -> str:
        plural = PLURALS[doc["kind"]]
        name = str(doc["metadata"]["name"])
        self.rig.custom.create_cluster_custom_object(
            GROUP, VERSION, plural, _labelled(doc, self.labels)
        )
        self.rig.cluster_objects.append((plural, name))
        return name

    def create_tank(self) -> str:
        """The ImmersionPod, read from the rig's tank simulator (``start_sim`` first)."""
        sim = self.rig.sim
        assert sim is not None, "start_sim first"
        doc = _one("ImmersionPod", self.directory)
        name = str(doc["metadata"]["name"])
        redfish = doc["spec"]["telemetry"]["redfish"]
        if redfish.get("endpoint") != sim.url:
            self.log(f"ImmersionPod {name}: redfish.endpoint {sim.url} (the tank simulator)")
            redfish["endpoint"] = sim.url
        unit = str(redfish.get("unitId") or name)
        sim.add(unit)
        # the racks' measured load at rest until devfleet drives the loop
        sim.set(unit, heat_kw=1.0, supply_c=32.0, return_c=38.0, flow_lpm=300.0)
        return self._create_cluster_object(doc)

    def create_pool(self) -> str:
        doc = _one("VehiclePool", self.directory)
        spec = doc["spec"]
        spec["battery"]["capacityKWh"] = self.battery_kwh
        spec["drainLeadSeconds"] = self.drain_lead_seconds
        return self._create_cluster_object(doc)

    def apply_jobs(self) -> list[str]:
        """Create the InferenceJobs in the rig's namespace; returns their names."""
        for doc in documents("InferenceJob", self.directory):
            doc = _labelled(copy.deepcopy(doc), self.labels)
            doc["metadata"]["namespace"] = self.rig.namespace
            self.rig.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.rig.namespace, "inferencejobs", doc
            )
            self.jobs.append(str(doc["metadata"]["name"]))
        return list(self.jobs)

    def not_ready(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """job -> why it is not Ready (its Stalled/Reconciling message), for the jobs not Ready."""
        out: dict[str, str] = {}
        for name in self.jobs if names is None else names:
            try:
                status = self.rig.status(name) or {}
            except Exception as error:  # the API blinked: not Ready yet
                out[name] = type(error).__name__
                continue
            conds = {c.get("type"): c for c in status.get("conditions") or ()}
            if (conds.get("Ready") or {}).get("status") == "True":
                continue
            why = conds.get("Stalled") or conds.get("Reconciling") or conds.get("Ready") or {}
            out[name] = f"{why.get('reason', '?')}: {why.get('message', '')}".strip()
        return out

    def wait_ready(self, timeout: float) -> dict[str, str]:
        """Wait up to ``timeout`` s for the example jobs to be Ready; returns those that are not."""
        deadline = time.monotonic() + timeout
        missing = self.not_ready()
        while missing and time.monotonic() < deadline:
            time.sleep(0.5)
            missing = self.not_ready()
        return missing


def remove_labelled_jobs(custom: Any, namespace: str, selector: str) -> list[str]:
    """Delete the InferenceJobs of ``namespace`` matching ``selector``, finalizers first (no
    operator may be left to remove them); returns their names."""
    from kubernetes.client.exceptions import ApiException

    names: list[str] = []
    items = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferencejobs", label_selector=selector
    )["items"]
    for job in items:
        name = str(job["metadata"]["name"])
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferencejobs", name,
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )  # fmt: skip
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferencejobs", name)
        names.append(name)
    return names
