"""A real local Kubernetes control plane with a simulated tokenfleet fleet.

Starts etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager and kube-scheduler (the
multi-call ``.bin/kcp`` built by ``e2e/cluster/build.sh`` from ``k8s.io/kubernetes``) and kwok, all
on 127.0.0.1 with freshly picked ports, then creates kwok Nodes for vehicles and rack nodes with the
labels, taints, capacity and telemetry annotations of the node contract (CONTRACTS.md).

Command line (``make cluster-up`` / ``make cluster-down``)::

    python -m e2e.cluster.fleet up [--vehicles 200 --pools 2 --racks 16 --tanks 2]
                                   [--state-dir .cluster]
    python -m e2e.cluster.fleet down [--state-dir .cluster]
    python -m e2e.cluster.fleet status [--state-dir .cluster]

Python (the pytest fixture in e2e/conftest.py uses the same code path)::

    fleet = Fleet(state_dir, vehicles=20, racks=4)
    fleet.start()
    ...  # fleet.kubeconfig, fleet.add_vehicle(...), fleet.remove_node(...), fleet.kubectl(...)
    fleet.stop()

Nothing here ever dials a pod, Service or node address: kwok's node and pod IPs are data only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = REPO / ".bin"
DEFAULT_STATE_DIR = REPO / ".cluster"
VERSIONS_FILE = Path(__file__).resolve().parent / "versions.env"

# Node contract (CONTRACTS.md "Node contract", DESIGN.md "Telemetry contract").
ROLE_LABEL = "tokenfleet.io/role"
POOL_LABEL = "tokenfleet.io/pool"
TANK_LABEL = "tokenfleet.io/tank"
ACCELERATOR_LABEL = "tokenfleet.io/accelerator"
REGION_LABEL = "node-restriction.kubernetes.io/tokenfleet-region"
ATTESTED_LABEL = "node-restriction.kubernetes.io/tokenfleet-attested"
VEHICLE_TAINT_KEY = "tokenfleet.io/vehicle"
BASELINE_WATTS_ANNOTATION = "tokenfleet.io/baseline-watts"
RUNTIME_ENDPOINT_ANNOTATION = "tokenfleet.io/runtime-endpoint"
TELEMETRY_PREFIX = "telemetry.tokenfleet.io/"
TELEMETRY_KEYS = (
    "soc-percent",
    "plugged-in",
    "charger-power-kw",
    "battery-temp-c",
    "compute-temp-c",
    "departure-time",
    "target-soc-percent",
    "bandwidth-mbps",
    "observed-at",
)
# kwok manages exactly the nodes that carry this annotation (its documented convention).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"  # kwok hands pod IPs out of this range; data only, never dialled
NODE_IP_BASE = (10, 250)  # node InternalIPs 10.250.x.y; data only, never dialled
ADMIN_USER = "tokenfleet-admin"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

# Debian's etcd 3.4.23 lacks watch progress requests, so the API server refuses "watch-list"
# streams; client-go >= 1.35 (kwok, KCM, scheduler) asks for them first and falls back to LIST.
# Skip the failing round trip (client-go reads KUBE_FEATURE_<gate> from the environment).
CLIENT_GO_ENV = {"KUBE_FEATURE_WatchListClient": "false"}

Log = Callable[[str], None]


def _default_log(message: str) -> None:
    print(f">> {message}", flush=True)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC timestamp with second precision, e.g. ``2026-05-01T12:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decimal(value: float, digits: int = 1) -> str:
    """A plain decimal string (no exponent, no unit) as the telemetry contract requires."""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def versions() -> dict[str, str]:
    """The pins in e2e/cluster/versions.env."""
    pins: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def vehicle_telemetry(
    rng: random.Random, now: datetime | None = None, *, plugged_in: bool | None = None
) -> dict[str, str]:
    """Realistic initial telemetry annotations of one parked vehicle, as the node agent writes them.

    SoC 20-95 %, plugged in about 85 % of the time (charging at 7.4/11/22 kW when plugged), battery
    15-35 degC, onboard computer 35-65 degC, departure 2-14 h ahead, target SoC 80 or 90 %,
    50-500 Mbit/s, observed now.
    """
    now = now or datetime.now(UTC)
    plugged = rng.random() < 0.85 if plugged_in is None else plugged_in
    charger_kw = rng.choice((7.4, 11.0, 22.0)) if plugged else 0.0
    departure = now + timedelta(minutes=rng.randint(120, 14 * 60))
    values = {
        "soc-percent": decimal(rng.uniform(20.0, 95.0)),
        "plugged-in": "true" if plugged else "false",
        "charger-power-kw": decimal(charger_kw),
        "battery-temp-c": decimal(rng.uniform(15.0, 35.0)),
        "compute-temp-c": decimal(rng.uniform(35.0, 65.0)),
        "departure-time": rfc3339(departure),
        "target-soc-percent": rng.choice(("80", "90")),
        "bandwidth-mbps": decimal(rng.uniform(50.0, 500.0)),
        "observed-at": rfc3339(now),
    }
    return {TELEMETRY_PREFIX + key: value for key, value in values.items()}


@dataclass
class NodeSpec:
    """One simulated (kwok) node."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    capacity: dict[str, str] = field(default_factory=dict)
    internal_ip: str = ""

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", **self.capacity}
        annotations = {KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE, **self.annotations}
        labels = {
            "type": "kwok",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **self.labels,
        }
        addresses = [{"type": "Hostname", "address": self.name}]
        if self.internal_ip:
            addresses.insert(0, {"type": "InternalIP", "address": self.internal_ip})
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": annotations},
            "spec": {"taints": list(self.taints)},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "addresses": addresses,
                "phase": "Running",
            },
        }


@dataclass
class FleetState:
    """What `up` started, persisted as <state_dir>/state.json so `down` can stop exactly that."""

    state_dir: str
    ports: dict[str, int]
    pids: dict[str, int]
    server: str
    kubeconfig: str
    versions: dict[str, str]
    started_at: str


def big_fleet_lease_seconds(nodes: int) -> int:
    """The kwok Node lease of a fleet past 1,000 nodes: 120 s up to 5,000, in proportion beyond
    (kwok renews every quarter of it, so 10,000 nodes renew as many leases per second as 5,000;
    with 120 s, 10,000 did not get Ready on 2 cores)."""
    return max(120, 120 * nodes // 5000)


#: ports this process handed out (two picks in a row never give the same one)
_HANDED_OUT: set[int] = set()
#: where :func:`free_port` picks when the kernel's ephemeral range cannot be read
_BELOW_EPHEMERAL = (20000, 32767)


def _pick_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range (``ip_local_port_range``), at least 10000."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _BELOW_EPHEMERAL
    return (10000, low - 1) if low > 11000 else _BELOW_EPHEMERAL


def free_port() -> int:
    """A free loopback port for a server a test starts (given on its command line).

    Not one the kernel picks for a bind to port 0: those come from the ephemeral range, which
    every process binding to port 0 (tritonserver, SeaweedFS) and every outgoing connection draw
    from, so between this pick and the server's own bind another process could take it (it
    happened: a dev run's operator found its metrics port taken). A random port below that range
    is checked free by binding it, and never handed out twice by this process."""
    low, high = _pick_range()
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}-{high} after 1000 tries")


def _port_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _die_with_parent() -> None:
    """preexec hook: SIGTERM the child when the test process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class FleetError(RuntimeError):
    pass


class Fleet:
    """A local control plane (etcd, kube-apiserver, KCM, scheduler, kwok) plus simulated nodes.

    ``state_dir`` holds everything (etcd data, PKI, kubeconfig, logs, state.json).
    ``die_with_parent`` makes the processes exit if the Python process that started them dies
    (used by the pytest fixture; ``make cluster-up`` leaves them running).
    """

    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        vehicles: int = 200,
        pools: int = 2,
        racks: int = 16,
        tanks: int = 2,
        bin_dir: Path | str = BIN_DIR,
        seed: int = 42,
        node_lease_seconds: int | None = None,
        node_monitor_grace_seconds: int | None = None,
        node_status_seconds: int = 300,
        kwok_parallelism: int | None = None,
        die_with_parent: bool = False,
        log: Log = _default_log,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.vehicles = vehicles
        self.pools = pools
        self.racks = racks
        self.tanks = tanks
        self.bin_dir = Path(bin_dir).resolve()
        self.rng = random.Random(seed)
        # kubelet defaults (lease 40 s, renewed every 10 s; KCM grace 50 s) up to 1,000 nodes;
        # bigger fleets renew less often so 2 cores keep up (5,000 nodes: lease 120 s, grace 180 s).
        big = vehicles + racks > 1000
        self.node_lease_seconds = node_lease_seconds or (
            big_fleet_lease_seconds(vehicles + racks) if big else 40
        )
        self.node_monitor_grace_seconds = node_monitor_grace_seconds or (
            self.node_lease_seconds * 3 // 2 if big else 50
        )
        self.node_status_seconds = node_status_seconds
        self.kwok_parallelism = kwok_parallelism or (16 if big else 8)
        self.die_with_parent = die_with_parent
        self.log = log
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token = ""
        self._api: Any = None
        self._node_counter = 0

    # ----------------------------------------------------------------- paths and addresses
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def token(self) -> str:
        if not self._token:
            self._token = (self.state_dir / "pki" / "admin.token").read_text().strip()
        return self._token

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm_path(self) -> Path:
        return self.bin_dir / "helm"

    @staticmethod
    def pool_name(index: int) -> str:
        return f"pool-{chr(ord('a') + index)}"

    @staticmethod
    def tank_name(index: int) -> str:
        return f"tank-{chr(ord('a') + index)}"

    @staticmethod
    def region_name(index: int) -> str:
        return ("eu-west", "eu-central", "us-east", "us-west")[index % 4]

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Fleet:
        """Start the control plane and create the fleet; returns once every node is Ready."""
        t0 = time.monotonic()
        self._check_binaries()
        if self.state_dir.exists():
            self._stop_recorded()  # a previous run in this dir (stale or alive) goes first
            for sub in ("etcd", "pki", "logs", "state.json", "kubeconfig", "kwok.yaml"):
                path = self.state_dir / sub
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        try:
            self._write_pki()
            self.ports = {
                name: free_port()
                for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")
            }
            self._start_etcd()
            self._save_state()
            self._start_apiserver()
            self._save_state()
            self._write_kubeconfig()
            self._wait_https("kube-apiserver", f"{self.server}/readyz", timeout=90)
            self.log(f"kube-apiserver ready at {self.server} ({time.monotonic() - t0:.1f} s)")
            self._start_kcm()
            self._start_scheduler()
            self._start_kwok()
            self._save_state()
            self._wait_https(
                "kube-controller-manager", f"https://127.0.0.1:{self.ports['kcm']}/healthz", 60
            )
            self._wait_https(
                "kube-scheduler", f"https://127.0.0.1:{self.ports['scheduler']}/healthz", 60
            )
            self._wait_http("kwok", f"http://127.0.0.1:{self.ports['kwok']}/healthz", 60)
            nodes = self.default_nodes()
            if nodes:
                self.log(
                    f"creating {self.vehicles} vehicle nodes in {self.pools} pools and "
                    f"{self.racks} rack nodes in {self.tanks} tanks"
                )
                self.create_nodes(nodes)
                self.wait_nodes_ready([n.name for n in nodes], timeout=max(60, len(nodes) / 20))
            self._wait_default_service_account(timeout=60)
        except BaseException:
            self.log(f"start failed; logs in {self.log_dir}; stopping what was started")
            self.stop()
            raise
        self.log(f"fleet ready in {time.monotonic() - t0:.1f} s; KUBECONFIG={self.kubeconfig}")
        return self

    def stop(self) -> None:
        """Stop every process this fleet started (kwok first, etcd last)."""
        self._stop_recorded()
        self._api = None

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def attach(cls, state_dir: Path | str = DEFAULT_STATE_DIR, **kwargs: Any) -> Fleet:
        """A Fleet object for a control plane that `up` (or another process) already started."""
        fleet = cls(state_dir, **kwargs)
        state = fleet.read_state()
        if state is None:
            raise FleetError(f"no fleet state in {fleet.state_dir}")
        fleet.ports = dict(state.ports)
        fleet.pids = dict(state.pids)
        return fleet

    def read_state(self) -> FleetState | None:
        path = self.state_dir / "state.json"
        if not path.exists():
            return None
        return FleetState(**json.loads(path.read_text()))

    def alive(self) -> dict[str, bool]:
        return {name: self._owned(name, pid) for name, pid in self.pids.items()}

    # ----------------------------------------------------------------- nodes
    def default_nodes(self) -> list[NodeSpec]:
        """The configured fleet: vehicles spread round-robin over pools, racks over tanks."""
        now = datetime.now(UTC)
        nodes: list[NodeSpec] = []
        for i in range(self.vehicles):
            pool = i % max(self.pools, 1)
            nodes.append(
                self.vehicle_spec(
                    f"vehicle-{self.pool_name(pool)}-{i // max(self.pools, 1):05d}",
                    pool=self.pool_name(pool),
                    region=self.region_name(pool),
                    attested=(i % 10 != 9),
                    memory=("16Gi", "32Gi", "32Gi", "64Gi")[i % 4],
                    now=now,
                )
            )
        for i in range(self.racks):
            tank = i % max(self.tanks, 1)
            nodes.append(
                self.rack_spec(
                    f"rack-{self.tank_name(tank)}-{i // max(self.tanks, 1):03d}",
                    tank=self.tank_name(tank),
                    region=self.region_name(tank),
                )
            )
        return nodes

    def _next_ip(self) -> str:
        self._node_counter += 1
        n = self._node_counter
        return f"{NODE_IP_BASE[0]}.{NODE_IP_BASE[1]}.{n // 250}.{n % 250 + 1}"

    def vehicle_spec(
        self,
        name: str,
        *,
        pool: str = "pool-a",
        region: str = "eu-west",
        attested: bool = True,
        memory: str = "32Gi",
        accelerator: str = "orin",
        telemetry: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> NodeSpec:
        """A vehicle node: role/pool/region/attested labels, the vehicle taint, telemetry.

        ``telemetry`` maps short keys (``soc-percent``...) or full annotation names to values and
        overrides the generated realistic reading.
        """
        node_labels = {
            ROLE_LABEL: "vehicle",
            POOL_LABEL: pool,
            REGION_LABEL: region,
            ACCELERATOR_LABEL: accelerator,
        }
        if attested:
            node_labels[ATTESTED_LABEL] = "true"
        node_annotations = vehicle_telemetry(self.rng, now)
        for key, value in (telemetry or {}).items():
            node_annotations[key if "/" in key else TELEMETRY_PREFIX + key] = value
        node_annotations.update(annotations or {})
        node_labels.update(labels or {})
        return NodeSpec(
            name=name,
            labels=node_labels,
            annotations=node_annotations,
            taints=[{"key": VEHICLE_TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            capacity={"cpu": "12", "memory": memory, "pods": "32"},
            internal_ip=self._next_ip(),
        )

    def rack_spec(
        self,
        name: str,
        *,
        tank: str = "tank-a",
        region: str = "eu-west",
        attested: bool = True,
        memory: str = "640Gi",
        accelerator: str = "h100",
        baseline_watts: int = 1200,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> NodeSpec:
        """A rack node in an immersion tank (no taint: ordinary workloads may land on it)."""
        node_labels = {
            ROLE_LABEL: "rack",
            TANK_LABEL: tank,
            REGION_LABEL: region,
            ACCELERATOR_LABEL: accelerator,
        }
        if attested:
            node_labels[ATTESTED_LABEL] = "true"
        node_labels.update(labels or {})
        node_annotations = {BASELINE_WATTS_ANNOTATION: str(baseline_watts)}
        node_annotations.update(annotations or {})
        return NodeSpec(
            name=name,
            labels=node_labels,
            annotations=node_annotations,
            capacity={"cpu": "96", "memory": memory, "pods": "110"},
            internal_ip=self._next_ip(),
        )

    def add_vehicle(self, name: str, *, wait: bool = True, **kwargs: Any) -> NodeSpec:
        """Create a vehicle node (kwargs as for `vehicle_spec`); waits until kwok marks it Ready."""
        spec = self.vehicle_spec(name, **kwargs)
        self.add_node(spec, wait=wait)
        return spec

    def add_rack(self, name: str, *, wait: bool = True, **kwargs: Any) -> NodeSpec:
        """Create one rack node (kwargs as for `rack_spec`); waits until kwok marks it Ready."""
        spec = self.rack_spec(name, **kwargs)
        self.add_node(spec, wait=wait)
        return spec

    def add_node(self, spec: NodeSpec, *, wait: bool = True, timeout: float = 30) -> None:
        self.create_nodes([spec])
        if wait:
            self.wait_nodes_ready([spec.name], timeout=timeout)

    def create_nodes(self, specs: Sequence[NodeSpec], *, workers: int = 16) -> None:
        """Bulk-create nodes with a thread pool (thousands in seconds)."""
        api = self.core_v1()
        t0 = time.monotonic()
        done = 0

        def create(spec: NodeSpec) -> None:
            api.create_node(spec.manifest())

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(create, specs):
                done += 1
                if len(specs) >= 1000 and done % 1000 == 0:
                    self.log(f"  {done}/{len(specs)} nodes created")
        if len(specs) > 1:
            self.log(f"  created {len(specs)} nodes in {time.monotonic() - t0:.1f} s")

    def remove_node(self, name: str, *, wait: bool = True, timeout: float = 30) -> None:
        """Delete a node (as if the vehicle left for good); waits until it is gone."""
        from kubernetes.client.exceptions import ApiException

        api = self.core_v1()
        try:
            api.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + timeout
        while wait and time.monotonic() < deadline:
            try:
                api.read_node(name)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(0.2)
        if wait:
            raise FleetError(f"node {name} still present after {timeout} s")

    def patch_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> None:
        """Merge-patch labels/annotations of a node (a value of None removes the key)."""
        metadata: dict[str, Any] = {}
        if labels:
            metadata["labels"] = dict(labels)
        if annotations:
            metadata["annotations"] = dict(annotations)
        if metadata:
            self.core_v1().patch_node(name, {"metadata": metadata})

    def set_telemetry(self, name: str, observed_at: datetime | None = None, **values: str) -> None:
        """Write telemetry annotations as the node agent would (``soc_percent="55"`` etc.);
        ``observed-at`` is set to now unless given."""
        annotations: dict[str, str | None] = {
            TELEMETRY_PREFIX + key.replace("_", "-"): value for key, value in values.items()
        }
        annotations[TELEMETRY_PREFIX + "observed-at"] = rfc3339(observed_at or datetime.now(UTC))
        self.patch_node(name, annotations=annotations)

    def wait_nodes_ready(self, names: Iterable[str], *, timeout: float = 60) -> None:
        """Wait until kwok reports every named node Ready (raw JSON lists: fast for thousands)."""
        pending = set(names)
        total = len(pending)
        api = self.core_v1()
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while pending:
            items: list[dict[str, Any]] = []
            if len(pending) <= 20:
                for name in list(pending):
                    with contextlib.suppress(Exception):
                        response = api.read_node(name, _preload_content=False)
                        items.append(json.loads(response.data))
            else:
                response = api.list_node(
                    label_selector="type=kwok", resource_version="0", _preload_content=False
                )
                items = json.loads(response.data)["items"]
            for node in items:
                conditions = node.get("status", {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    pending.discard(node["metadata"]["name"])
            if not pending:
                break
            if time.monotonic() > deadline:
                raise FleetError(f"{len(pending)} of {total} nodes not Ready after {timeout} s")
            if total > 100 and time.monotonic() - last_report > 5:
                self.log(f"  {total - len(pending)}/{total} nodes Ready")
                last_report = time.monotonic()
            time.sleep(0.1 if len(pending) <= 20 else 1.0)

    # ----------------------------------------------------------------- clients and tools
    def api_client(self) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` for this fleet (admin, TLS verified)."""
        from kubernetes import client

        config: Any = client.Configuration()
        config.host = self.server
        config.ssl_ca_cert = str(self.ca_file)
        config.api_key = {"authorization": f"Bearer {self.token}"}
        config.connection_pool_maxsize = 32
        return client.ApiClient(config)

    def core_v1(self) -> Any:
        from kubernetes import client

        if self._api is None:
            self._api = client.CoreV1Api(self.api_client())
        return self._api

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG pointing at this fleet and .bin/ first on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``.bin/kubectl --kubeconfig <fleet> ARGS``; output captured as text."""
        result = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and result.returncode != 0:
            raise FleetError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def listening_ports(self) -> dict[str, bool]:
        return {name: _port_listening(port) for name, port in self.ports.items()}

    # ----------------------------------------------------------------- internals
    def _check_binaries(self) -> None:
        missing = [
            str(p)
            for p in (self.bin_dir / "kcp", self.bin_dir / "kwok", self.bin_dir / "kwok-stages")
            if not p.exists()
        ]
        if missing:
            raise FleetError(f"missing {', '.join(missing)}: run `make cluster-build` first")
        if not self._etcd_binary():
            raise FleetError("etcd not found: install Debian's etcd-server")
        if not shutil.which("openssl"):
            raise FleetError("openssl not found (needed to make the cluster PKI)")

    def _etcd_binary(self) -> str:
        for candidate in (self.bin_dir / "etcd", Path("/usr/bin/etcd")):
            if candidate.exists():
                return str(candidate)
        return shutil.which("etcd") or ""

    def _write_pki(self) -> None:
        pki = self.state_dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _openssl(
            "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", "/CN=tokenfleet-local-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=pki,
        )  # fmt: skip
        (pki / "apiserver.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
            "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "authorityKeyIdentifier=keyid\n"
            "basicConstraints=critical,CA:FALSE\n"
        )
        _openssl(
            "req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr",
            "-subj", "/CN=kube-apiserver", cwd=pki,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "apiserver.crt", "-days", "3650",
            "-extfile", "apiserver.ext", cwd=pki,
        )  # fmt: skip
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-out", "sa.key", cwd=pki,
        )  # fmt: skip
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        self._token = base64.b32encode(os.urandom(20)).decode().lower()
        (pki / "admin.token").write_text(self._token + "\n")
        (pki / "tokens.csv").write_text(
            f'{self._token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )
        for path in pki.iterdir():
            path.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tokenfleet-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(
                            self.ca_file.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "tokenfleet-local",
                    "context": {"cluster": "tokenfleet-local", "user": ADMIN_USER},
                }
            ],
            "current-context": "tokenfleet-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        logfile = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            cwd=self.state_dir,
            env={**os.environ, **CLIENT_GO_ENV, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        logfile.close()
        self._procs[name] = proc
        self.pids[name] = proc.pid
        self.log(f"started {name} (pid {proc.pid}, log {self.log_dir / (name + '.log')})")

    def _kcp(self, component: str) -> list[str]:
        return [str(self.bin_dir / "kcp"), component]

    def _start_etcd(self) -> None:
        data = self.state_dir / "etcd"
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                self._etcd_binary(),
                "--name=tokenfleet",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=tokenfleet={peer}",
                "--initial-cluster-state=new",
                "--quota-backend-bytes=4294967296",
                "--snapshot-count=50000",
                "--log-level=warn",
                "--logger=zap",
            ],
            env={"ETCD_UNSUPPORTED_ARCH": "", "GOMAXPROCS": "2"},
        )
        self._wait_http("etcd", f"{client}/health", timeout=30)

    def _start_apiserver(self) -> None:
        pki = self.state_dir / "pki"
        self._spawn(
            "kube-apiserver",
            [
                *self._kcp("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--endpoint-reconciler-type=none",  # 127.0.0.1 is not a valid Endpoints address
                "--allow-privileged=true",
                # etcd 3.4.23 has no watch progress requests: with WatchList on, the API server
                # turns every watch from RV ""/"0" (kwok's, a plain `kubectl get -w`) into a
                # watch-list stream and then rejects it, so such watchers never settle.
                "--feature-gates=WatchList=false",
                "--profiling=false",
                "--event-ttl=1h",
                "--v=1",
            ],
        )

    def _component_kubeconfig(self) -> str:
        return str(self.kubeconfig)

    def _start_kcm(self) -> None:
        pki = self.state_dir / "pki"
        kubeconfig = self._component_kubeconfig()
        self._spawn(
            "kube-controller-manager",
            [
                *self._kcp("kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kcm']}",
                f"--cert-dir={self.state_dir / 'pki' / 'kcm'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
                "--controllers=*",
                f"--node-monitor-grace-period={self.node_monitor_grace_seconds}s",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self._component_kubeconfig()
        self._spawn(
            "kube-scheduler",
            [
                *self._kcp("kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={self.state_dir / 'pki' / 'scheduler'}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _write_kwok_config(self) -> Path:
        """kwok's config: worker parallelism plus the pinned upstream default stages (copied to
        .bin/kwok-stages by build.sh). Like a kubelet with leases, kwok renews each node's Lease
        every node_lease_seconds/4 (what KCM's node lifecycle controller watches) and rewrites the
        node status (Ready heartbeat) only every node_status_seconds."""
        par = self.kwok_parallelism
        docs: list[dict[str, Any]] = [
            {
                "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
                "kind": "KwokConfiguration",
                "options": {
                    "nodeLeaseParallelism": par,
                    "nodePlayStageParallelism": par,
                    "podPlayStageParallelism": par,
                },
            }
        ]
        for path in sorted((self.bin_dir / "kwok-stages").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                if doc.get("metadata", {}).get("name") == "node-heartbeat-with-lease":
                    ms = self.node_status_seconds * 1000
                    doc["spec"]["delay"] = {
                        "durationMilliseconds": ms,
                        "jitterDurationMilliseconds": ms + ms // 10,
                    }
                docs.append(doc)
        path = self.state_dir / "kwok.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path

    def _start_kwok(self) -> None:
        config = self._write_kwok_config()
        self._spawn(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--config={config}",
                f"--kubeconfig={self._component_kubeconfig()}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}",
                f"--cidr={POD_CIDR}",
                f"--node-ip={NODE_IP_BASE[0]}.{NODE_IP_BASE[1]}.255.254",
                f"--node-lease-duration-seconds={self.node_lease_seconds}",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
            ],
        )

    def _check_alive(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise FleetError(f"{name} exited with {proc.returncode}; log tail:\n{tail}")

    def _wait_http(self, name: str, url: str, timeout: float) -> None:
        self._wait_url(name, url, timeout, None, {})

    def _wait_https(self, name: str, url: str, timeout: float) -> None:
        if url.startswith(self.server):
            context = ssl.create_default_context(cafile=str(self.ca_file))
        else:  # KCM/scheduler serve a self-signed cert on loopback; only /healthz is read
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {self.token}"}
        self._wait_url(name, url, timeout, context, headers)

    def _wait_url(
        self,
        name: str,
        url: str,
        timeout: float,
        context: ssl.SSLContext | None,
        headers: Mapping[str, str],
    ) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                request = urllib.request.Request(url, headers=dict(headers))
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise FleetError(f"{name} not healthy at {url} after {timeout} s: {last}")

    def _wait_default_service_account(self, timeout: float) -> None:
        from kubernetes.client.exceptions import ApiException

        api = self.core_v1()
        deadline = time.monotonic() + timeout
        while True:
            try:
                api.read_namespaced_service_account("default", "default")
                return
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            self._check_alive("kube-controller-manager")
            time.sleep(0.2)

    def _save_state(self) -> None:
        state = FleetState(
            state_dir=str(self.state_dir),
            ports=self.ports,
            pids=self.pids,
            server=self.server if "apiserver" in self.ports else "",
            kubeconfig=str(self.kubeconfig),
            versions=versions(),
            started_at=rfc3339(datetime.now(UTC)),
        )
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        tmp.replace(self.state_dir / "state.json")
        (self.state_dir / "ports").write_text(
            "".join(f"{name}={port}\n" for name, port in self.ports.items())
        )

    def _owned(self, name: str, pid: int) -> bool:
        """True if pid is alive and is the process we started for this state dir (not a reuse)."""
        proc = self._procs.get(name)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return _pid_alive(pid) and str(self.state_dir) in _pid_cmdline(pid)

    def _stop_recorded(self) -> None:
        state = self.read_state()
        pids = dict(state.pids) if state else {}
        pids.update(self.pids)
        if state and not self.ports:
            self.ports = dict(state.ports)
        # reverse start order: kwok, scheduler, KCM, apiserver, etcd
        order = sorted(pids, key=lambda n: -COMPONENTS.index(n) if n in COMPONENTS else -99)
        for name in order:
            self._terminate(name, pids[name])
        self.pids = {}
        self._procs = {}
        if (self.state_dir / "state.json").exists():
            (self.state_dir / "state.json").unlink()

    def _terminate(self, name: str, pid: int, timeout: float = 15) -> None:
        if not self._owned(name, pid):
            self._procs.pop(name, None)
            return
        proc = self._procs.get(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    break
            elif not _pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            self.log(f"{name} (pid {pid}) ignored SIGTERM for {timeout} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if proc is not None:
                proc.wait(5)
        # the process group (each component is a session leader) must be empty too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.log(f"stopped {name} (pid {pid})")


# --------------------------------------------------------------------------- command line
def _cmd_up(args: argparse.Namespace) -> int:
    fleet = Fleet(
        args.state_dir,
        vehicles=args.vehicles,
        pools=args.pools,
        racks=args.racks,
        tanks=args.tanks,
        node_lease_seconds=args.node_lease_seconds,
        node_monitor_grace_seconds=args.node_monitor_grace_seconds,
        node_status_seconds=args.node_status_seconds,
        kwok_parallelism=args.kwok_parallelism,
    )
    fleet.start()
    print(f"export KUBECONFIG={fleet.kubeconfig}")
    print(f"{fleet.kubectl_path} get nodes")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    fleet = Fleet(args.state_dir)
    state = fleet.read_state()
    if state is None:
        print(f">> no fleet recorded in {fleet.state_dir}; nothing to stop")
        return 0
    fleet.ports = dict(state.ports)
    fleet.stop()
    still = [
        f"{name}:{port}" for name, port in fleet.listening_ports().items() if _port_listening(port)
    ]
    if still:
        print(f">> WARNING: still listening after stop: {', '.join(still)}", file=sys.stderr)
        return 1
    print(f">> fleet in {fleet.state_dir} stopped; nothing left listening")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        fleet = Fleet.attach(args.state_dir)
    except FleetError as exc:
        print(exc)
        return 1
    for name, alive in fleet.alive().items():
        print(f"{name:26} pid {fleet.pids[name]:>7}  {'running' if alive else 'DEAD'}")
    for name, port in fleet.ports.items():
        print(f"port {name:21} {port:>7}  {'listening' if _port_listening(port) else 'closed'}")
    return 0 if all(fleet.alive().values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster.fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        if name == "up":
            p.add_argument("--vehicles", type=int, default=int(os.environ.get("VEHICLES", 200)))
            p.add_argument("--pools", type=int, default=int(os.environ.get("POOLS", 2)))
            p.add_argument("--racks", type=int, default=int(os.environ.get("RACKS", 16)))
            p.add_argument("--tanks", type=int, default=int(os.environ.get("TANKS", 2)))
            p.add_argument(
                "--node-lease-seconds",
                type=int,
                default=int(os.environ.get("NODE_LEASE", 0)),
                help="kwok node Lease duration (renewed every 1/4); 0: 40, or 120 above 1000 nodes",
            )
            p.add_argument(
                "--node-monitor-grace-seconds",
                type=int,
                default=int(os.environ.get("NODE_GRACE", 0)),
                help="KCM --node-monitor-grace-period; 0: 50, or 1.5 x lease above 1000 nodes",
            )
            p.add_argument(
                "--node-status-seconds", type=int, default=int(os.environ.get("NODE_STATUS", 300))
            )
            p.add_argument(
                "--kwok-parallelism",
                type=int,
                default=int(os.environ.get("KWOK_PARALLELISM", 0)),
                help="kwok node/lease/pod workers; 0: 8, or 16 above 1000 nodes",
            )
    args = parser.parse_args(argv)
    handler = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.command]
    try:
        return handler(args)
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
