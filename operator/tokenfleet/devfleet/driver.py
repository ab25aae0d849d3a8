"""``tokenfleet devfleet``: drive a (local) fleet's cars, tanks and site cap from :class:`DevFleet`.

Every tick (``--interval`` wall seconds) the driver

1. reads where replicas run (one LIST of InferenceJobs: ``status.placements`` and the variants'
   watts), which is the compute load of each car and the IT load of each tank;
2. advances the :class:`~tokenfleet.devfleet.model.DevFleet` to now and logs what changed
   (arrivals, departures, the site cap);
3. publishes through the real paths:

   * **agent cars** (``--agent-dir``; by default every car with a runtime, i.e. with the
     ``tokenfleet.io/runtime-endpoint`` annotation): the car's signal document is written to
     ``DIR/<node>.json`` (atomically) and a real ``tokenfleet agent --source json:DIR/<node>.json``
     process (started by ``make dev``, one per such car) publishes it on the Node;
   * **the bulk** (every other selected car): the same :class:`~tokenfleet.agent.runner.Agent`
     code runs in this process, one per car, over an in-memory source: same decision code and
     heartbeat, a wider deadband (:data:`BULK_DEADBAND`), the same strategic-merge patch of the
     Node's annotations, without a process each;
   * **tanks** (``--tank NAME``): the ImmersionPod's Redfish endpoint must be the dev tank
     simulator on loopback; its control endpoint ``PATCH /_sim/tanks/{unitId}`` gets the coolant
     loop's heat, supply, return and flow;
   * **site cap**: each tank's ``spec.power.capacityKW`` is patched to its normal value (kept in the
     annotation ``devfleet.tokenfleet.io/normal-capacity-kw``) times the site cap factor.

A departed car stays a Node (kwok keeps it Ready); it reports ``plugged-in: false``, no charger
power and no departure time until it comes back.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenfleet.agent.deadband import Deadband
from tokenfleet.agent.publisher import node_annotation_patcher
from tokenfleet.agent.runner import Agent
from tokenfleet.agent.signals import Sample, signals_from_mapping
from tokenfleet.devfleet.model import Change, DevFleet, DevFleetConfig
from tokenfleet.telemetry.vehicle import POOL_LABEL, RUNTIME_ENDPOINT_ANNOTATION, parse_time

__all__ = [
    "MemorySource",
    "add_devfleet_arguments",
    "load_from_jobs",
    "run_devfleet",
    "write_document",
]

log = logging.getLogger("tokenfleet.devfleet")

GROUP = "tokenfleet.io"
VERSION = "v1alpha1"
NORMAL_CAPACITY_ANNOTATION = "devfleet.tokenfleet.io/normal-capacity-kw"
BULK_DEADBAND = Deadband(soc_percent=5.0, battery_temp_c=3.0, compute_temp_c=3.0)
"""The bulk's deadband: at 60x a charging car gains 1 % SoC every few seconds; 200 cars patch their
Nodes 26.6 times a second at the agent's 1 % / 1 °C band, 7.7 at this one (5 minutes of the
model, first writes included)."""


class MemorySource:
    """A signal source over a document in memory (the bulk cars' gateways)."""

    def __init__(self) -> None:
        self.doc: dict[str, object] = {}

    def read(self) -> Sample:
        signals, problems = signals_from_mapping(self.doc)
        stamp = self.doc.get("observed-at")
        observed = parse_time(stamp) if isinstance(stamp, str) else None
        return Sample(signals, observed or datetime.now(UTC), problems)


def write_document(path: Path, doc: Mapping[str, object]) -> None:
    """Write a car's signal document atomically (the agent never reads half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({k: v for k, v in doc.items() if v is not None}), encoding="utf-8")
    os.replace(tmp, path)


def load_from_jobs(jobs: Iterable[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """(watts per node, kW per tank) of the replicas in InferenceJobs' ``status.placements``
    that are Loading, Loaded or Unloading (pure)."""
    per_node: dict[str, float] = {}
    per_tank: dict[str, float] = {}
    for job in jobs:
        watts = {}
        for v in (job.get("spec") or {}).get("variants") or ():
            with contextlib.suppress(TypeError, ValueError):
                watts[str(v.get("name"))] = float(v.get("watts") or 0.0)
        for p in (job.get("status") or {}).get("placements") or ():
            if p.get("state") not in ("Loading", "Loaded", "Unloading"):
                continue
            w = watts.get(str(p.get("variant")), 0.0)
            node = str(p.get("node"))
            per_node[node] = per_node.get(node, 0.0) + w
            if p.get("tank"):
                tank = str(p["tank"])
                per_tank[tank] = per_tank.get(tank, 0.0) + w / 1000.0
    return per_node, per_tank


def _loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Tank:
    name: str
    sim_url: str
    unit: str
    normal_kw: float


@dataclass
class Driver:
    """The tick loop's state (see the module docstring)."""

    api: Any
    fleet: DevFleet
    agent_dir: Path | None
    agent_cars: set[str]
    tanks: list[_Tank]
    band: Deadband = field(default_factory=lambda: BULK_DEADBAND)
    clock: Callable[[], float] = time.time
    bulk: dict[str, tuple[MemorySource, Agent]] = field(default_factory=dict)
    patches: int = 0
    errors: int = 0
    _cap_factor: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api)
        self.custom: Any = client.CustomObjectsApi(self.api)
        for car in self.fleet.by_name:
            if car in self.agent_cars:
                continue
            source = MemorySource()
            self.bulk[car] = (source, Agent(source, node_annotation_patcher(core, car), self.band))

    def tick(self) -> list[Change]:
        try:
            jobs = self.custom.list_cluster_custom_object(GROUP, VERSION, "inferencejobs")["items"]
        except Exception as error:  # API briefly away: the fleet goes on without a load reading
            log.warning("cannot list InferenceJobs: %s", error)
            jobs = []
        per_node, per_tank = load_from_jobs(jobs)
        changes = self.fleet.advance(self.clock(), per_node, per_tank)
        for change in changes:
            # beside real agents' cars, the bulk's comings and goings (200 cars: ~2 a second at
            # 60x) only at DEBUG
            bulk = bool(self.agent_cars) and change.subject in self.bulk
            level = logging.DEBUG if bulk else logging.INFO
            log.log(level, "%s %s: %s", change.subject, change.kind.lower(), change.detail)
        for car in self.fleet.by_name:
            doc = self.fleet.car_document(car)
            if car in self.agent_cars:
                assert self.agent_dir is not None
                write_document(self.agent_dir / f"{car}.json", doc)
            else:
                source, agent = self.bulk[car]
                source.doc = doc
                result = agent.step()
                self.patches += int(result.published)
                self.errors += int(result.error is not None)
        for tank in self.tanks:
            self._publish_tank(tank)
        return changes

    def _publish_tank(self, tank: _Tank) -> None:
        reading = self.fleet.tank_reading(tank.name)
        body = json.dumps(
            {
                "heat_kw": reading.heat_kw,
                "supply_c": reading.supply_c,
                "return_c": reading.return_c,
                "flow_lpm": reading.flow_lpm,
            }
        ).encode()
        request = urllib.request.Request(
            f"{tank.sim_url}/_sim/tanks/{tank.unit}",
            data=body,
            method="PATCH",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except OSError as error:
            self.errors += 1
            log.warning("tank %s: cannot reach its simulator: %s", tank.name, error)
        factor = self.fleet.site_cap_kw() / self.fleet.cfg.site_cap_kw
        if self._cap_factor.get(tank.name) == factor:
            return
        cap = round(tank.normal_kw * factor, 3)
        patch = {"spec": {"power": {"capacityKW": cap}}}
        try:
            self.custom.patch_cluster_custom_object(
                GROUP, VERSION, "immersionpods", tank.name, patch
            )
        except Exception as error:
            self.errors += 1
            log.warning("tank %s: cannot set the site cap: %s", tank.name, error)
            return
        self._cap_factor[tank.name] = factor


def _tank(custom: Any, name: str) -> _Tank:
    obj = custom.get_cluster_custom_object(GROUP, VERSION, "immersionpods", name)
    spec = obj.get("spec") or {}
    redfish = (spec.get("telemetry") or {}).get("redfish") or {}
    url = str(redfish.get("endpoint") or "").rstrip("/")
    if not _loopback_url(url):
        raise SystemExit(
            f"tokenfleet devfleet: --tank {name}: spec.telemetry.redfish.endpoint {url!r} is not a "
            f"loopback dev tank simulator"
        )
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    normal = annotations.get(NORMAL_CAPACITY_ANNOTATION)
    if normal is None:
        normal = str((spec.get("power") or {}).get("capacityKW") or 0)
        custom.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "immersionpods",
            name,
            {"metadata": {"annotations": {NORMAL_CAPACITY_ANNOTATION: normal}}},
        )
    return _Tank(name, url, str(redfish.get("unitId") or name), float(normal))


def add_devfleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cars",
        default="tokenfleet.io/role=vehicle",
        help="label selector of the car Nodes to drive (default: %(default)s)",
    )
    parser.add_argument(
        "--agent-dir",
        default=None,
        help="write the signal documents of the cars with a runtime endpoint here, for real "
        "`tokenfleet agent --source json:DIR/<node>.json` processes (default: drive every car "
        "in-process)",
    )
    parser.add_argument(
        "--tank", action="append", default=[], help="an ImmersionPod to drive (repeatable)"
    )
    parser.add_argument("--scale", type=float, default=60.0, help="virtual s per wall s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=1.0, help="wall seconds per tick")
    parser.add_argument("--period-hours", type=float, default=4.0, help="a car's stay cycle")
    parser.add_argument("--away-hours", type=float, default=0.5, help="away part of a cycle")
    parser.add_argument("--duration", type=float, default=0.0, help="wall seconds (0: forever)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG)")


def run_devfleet(args: argparse.Namespace) -> int:
    """Entry point of ``tokenfleet devfleet``."""
    from kubernetes import client, config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("tokenfleet.agent").setLevel(logging.WARNING)
    config.load_kube_config(config_file=args.kubeconfig)
    api = client.ApiClient()
    core: Any = client.CoreV1Api(api)
    nodes = core.list_node(label_selector=args.cars).items
    cars = sorted(n.metadata.name for n in nodes)
    if not cars:
        print(f"tokenfleet devfleet: no Node matches --cars {args.cars!r}", flush=True)
        return 2
    agent_cars: set[str] = set()
    agent_dir = Path(args.agent_dir) if args.agent_dir else None
    if agent_dir is not None:
        agent_dir.mkdir(parents=True, exist_ok=True)
        agent_cars = {
            n.metadata.name
            for n in nodes
            if RUNTIME_ENDPOINT_ANNOTATION in (n.metadata.annotations or {})
        }
    custom: Any = client.CustomObjectsApi(api)
    tanks = [_tank(custom, name) for name in args.tank]
    cfg = DevFleetConfig(
        seed=args.seed,
        scale=args.scale,
        period_hours=args.period_hours,
        away_hours=args.away_hours,
    )
    pools = {n.metadata.name: (n.metadata.labels or {}).get(POOL_LABEL, "") for n in nodes}
    groups = [pools[c] for c in cars]
    fleet = DevFleet(cars, [t.name for t in tanks], cfg, time.time(), groups=groups)
    driver = Driver(api, fleet, agent_dir, agent_cars, tanks)
    log.info(
        "driving %d cars (%d through real agents in %s), %d tanks, at %gx (a virtual hour every"
        " %.0f s); the dev pool's battery.capacityKWh is %.3f",
        len(cars),
        len(agent_cars),
        agent_dir,
        len(tanks),
        args.scale,
        3600 / args.scale,
        fleet.pool_battery_kwh(),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    while not stop.is_set():
        driver.tick()
        if deadline is not None and time.monotonic() >= deadline:
            break
        stop.wait(args.interval)
    log.info("stopped: %d bulk patches, %d errors", driver.patches, driver.errors)
    return 0
